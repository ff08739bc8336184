//! DataExport decisions without I/O: whether an export may run at all, which
//! one counts for `purge.requireExport`, and where an artifact may be deleted.
//!
//! An export hands one tenant its own data, so it runs only in that tenant's
//! namespace; and tenure deletes artifacts only where it writes them, so that
//! a status edited by hand can never point a delete elsewhere.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};

use super::conditions::{Extra, Verdict};
use crate::api::export::{DataExportStatus, ExportPhase};
use crate::api::organization::OrganizationPhase;

type Time = DateTime<Utc>;

/// The condition an export that left out kinds it may not read carries.
pub const INCOMPLETE: &str = "Incomplete";

/// The export's organization as the controller found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExportedOrganization {
    pub phase: Option<OrganizationPhase>,
    /// The namespace it owns, as its status records it (None until it owns one).
    pub tenant_namespace: Option<String>,
}

/// Whether a DataExport in `namespace` naming `organization` may run now;
/// Err: the phase it ends in and why, naming the field at fault.
pub fn may_run(
    namespace: &str,
    organization_name: &str,
    organization: Option<&ExportedOrganization>,
) -> Result<(), (ExportPhase, Verdict)> {
    let Some(organization) = organization else {
        return Err((
            ExportPhase::Pending,
            Verdict::stalled(
                "OrganizationNotFound",
                super::conditions::names_missing(
                    "spec.organization",
                    "Organization",
                    organization_name,
                ),
            ),
        ));
    };
    if let Some(phase @ (OrganizationPhase::Purging | OrganizationPhase::Purged)) =
        organization.phase
    {
        return Err((
            ExportPhase::Failed,
            Verdict::stalled(
                "OrganizationPurged",
                format!(
                    "organization {organization_name} is {phase:?}: its data is being or has been deleted, so no export can be complete"
                ),
            ),
        ));
    }
    match organization.tenant_namespace.as_deref() {
        Some(tenant) if tenant == namespace => {}
        Some(tenant) => {
            return Err((
                ExportPhase::Failed,
                Verdict::stalled(
                    "WrongNamespace",
                    format!(
                        "spec.organization names Organization {organization_name}, whose data lives in namespace {tenant}: a DataExport runs only there, not in {namespace}"
                    ),
                ),
            ));
        }
        None => {
            return Err((
                ExportPhase::Pending,
                Verdict::reconciling(
                    "OrganizationNotObserved",
                    format!(
                        "spec.organization names Organization {organization_name}, which owns no namespace yet (see its conditions)"
                    ),
                ),
            ));
        }
    }
    Ok(())
}

/// What a DataExport's reconcile does next.
#[derive(Clone, Debug, PartialEq)]
pub enum ExportStep {
    /// Done (failed, or expired and reported): nothing until spec changes.
    Wait,
    /// Succeeded: its artifact is kept until then.
    KeepUntil(Time),
    /// Expired: delete the artifact where it lies (if tenure may), then
    /// report `verdict`, keeping the conditions in `keep`.
    Expire {
        delete: Option<ArtifactLocation>,
        verdict: Verdict,
        keep: Vec<Extra>,
    },
    /// It may not run: report the phase it ends in and why.
    Refuse {
        phase: ExportPhase,
        verdict: Verdict,
    },
    /// Write the ZIP.
    Run,
}

/// A DataExport as its reconcile reads it.
#[derive(Clone, Copy, Debug)]
pub struct ExportInput<'a> {
    /// The DataExport's namespace.
    pub namespace: &'a str,
    /// `spec.organization`.
    pub organization_name: &'a str,
    pub organization: Option<&'a ExportedOrganization>,
    pub status: Option<&'a DataExportStatus>,
    /// Where tenure keeps this namespace's artifacts.
    pub store: &'a ArtifactStore<'a>,
    pub now: Time,
}

/// Decides a DataExport's next step: a finished one is kept until it
/// expires and then deleted (only where tenure writes artifacts); one not
/// started runs if [`may_run`] allows it.
pub fn step(export: &ExportInput) -> ExportStep {
    let status = export.status.cloned().unwrap_or_default();
    match status.phase {
        Some(ExportPhase::Succeeded) => return expiry(&status, export.store, export.now),
        Some(ExportPhase::Failed) => return ExportStep::Wait,
        _ => {}
    }
    match may_run(
        export.namespace,
        export.organization_name,
        export.organization,
    ) {
        Ok(()) => ExportStep::Run,
        Err((phase, verdict)) => ExportStep::Refuse { phase, verdict },
    }
}

fn expiry(status: &DataExportStatus, store: &ArtifactStore, now: Time) -> ExportStep {
    let Some(expires_at) = status.expires_at else {
        return ExportStep::Wait;
    };
    if expires_at > now {
        return ExportStep::KeepUntil(expires_at);
    }
    if status
        .conditions
        .iter()
        .any(|c| c.reason == ARTIFACT_EXPIRED)
    {
        return ExportStep::Wait;
    }
    let expired = Verdict::ready(
        ARTIFACT_EXPIRED,
        format!("the ZIP was deleted at {expires_at}, when it expired"),
    );
    let keep = incomplete_condition(status).into_iter().collect();
    match status
        .artifact
        .as_ref()
        .map(|a| artifact_location(&a.uri, store))
    {
        None => ExportStep::Expire {
            delete: None,
            verdict: expired,
            keep,
        },
        Some(Ok(location)) => ExportStep::Expire {
            delete: Some(location),
            verdict: expired,
            keep,
        },
        Some(Err(why)) => ExportStep::Expire {
            delete: None,
            verdict: Verdict::stalled(
                "ArtifactOutsideExportStore",
                format!(
                    "status.artifact.uri: {why}; tenure deletes artifacts only where it writes them, so this one is left as it is"
                ),
            ),
            keep,
        },
    }
}

/// The reason of an expired export's Ready condition.
const ARTIFACT_EXPIRED: &str = "ArtifactExpired";

/// The Incomplete condition an export already carries, kept as it is.
fn incomplete_condition(status: &DataExportStatus) -> Option<Extra> {
    status
        .conditions
        .iter()
        .find(|c| c.type_ == INCOMPLETE)
        .map(|c| Extra {
            type_: c.type_.clone(),
            status: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
}

/// What a finished export reports: the Ready verdict (its message is also
/// the Event's), and condition Incomplete when kinds could not be read.
pub fn finished(written: &Written, expires_at: Time, namespace: &str) -> (Verdict, Option<Extra>) {
    let Written {
        objects,
        files,
        size_bytes,
        unreadable,
    } = written;
    let mut message =
        format!("{objects} objects in {files} files, {size_bytes} bytes; kept until {expires_at}");
    let incomplete = (!unreadable.is_empty()).then(|| Extra {
        type_: INCOMPLETE.into(),
        status: true,
        reason: "KindsNotReadable".into(),
        message: format!(
            "tenure may not read {} in namespace {namespace}: the ZIP lacks them, so it does not count for purge.requireExport; grant tenure read access and export again",
            unreadable.join(", ")
        ),
    });
    if !unreadable.is_empty() {
        message.push_str(&format!("; incomplete: without {}", unreadable.join(", ")));
    }
    (Verdict::ready("Succeeded", message), incomplete)
}

/// What an export wrote.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub objects: i64,
    pub files: i64,
    pub size_bytes: i64,
    /// Kinds tenure may not list, left out.
    pub unreadable: Vec<String>,
}

/// Why an export that ran is not kept: its organization's purge started
/// meanwhile (`refusal` is what [`may_run`] says now).
pub fn overtaken(refusal: Verdict) -> Verdict {
    Verdict::stalled(
        refusal.reason,
        format!(
            "overtaken while it ran, so it is not complete and no ZIP is kept: {}",
            refusal.message
        ),
    )
}

/// `status.exports` of an organization keeps at most this many names.
const EXPORTS_LIMIT: usize = 20;

/// The names of the exports that succeeded, newest first (at most
/// [`EXPORTS_LIMIT`]), and whether one of them counts for
/// `purge.requireExport` at `now`.
pub fn succeeded_exports<'a>(
    exports: impl IntoIterator<Item = (&'a str, &'a DataExportStatus)>,
    now: Time,
) -> (Vec<String>, bool) {
    let mut any_available = false;
    let mut succeeded: Vec<(Option<Time>, &str)> = Vec::new();
    for (name, status) in exports {
        any_available |= available(status, now);
        if status.phase == Some(ExportPhase::Succeeded) {
            succeeded.push((status.completed_at, name));
        }
    }
    succeeded.sort_by(|a, b| b.cmp(a));
    let names = succeeded
        .into_iter()
        .take(EXPORTS_LIMIT)
        .map(|(_, name)| name.to_string())
        .collect();
    (names, any_available)
}

/// Whether an export counts for `purge.requireExport` at `now`: it succeeded,
/// is complete, and its artifact still exists.
pub fn available(status: &DataExportStatus, now: Time) -> bool {
    status.phase == Some(ExportPhase::Succeeded)
        && status.artifact.is_some()
        && status.expires_at.is_none_or(|at| at > now)
        && !status
            .conditions
            .iter()
            .any(|c| c.type_ == INCOMPLETE && c.status == "True")
}

/// Where tenure keeps the artifacts of one namespace's exports: under the
/// export directory, or the bucket's key prefix, in a folder named after the
/// namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactStore<'a> {
    /// Absolute.
    pub dir: &'a Path,
    /// Bucket name and key prefix of an S3 sink.
    pub bucket: Option<(&'a str, &'a str)>,
    /// The DataExport's namespace.
    pub namespace: &'a str,
}

/// An artifact tenure may delete.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ArtifactLocation {
    File(PathBuf),
    Object { key: String },
}

/// The artifact `uri` names, if it lies where tenure writes this namespace's
/// artifacts (a file under `<export dir>/<namespace>/`, or a key under
/// `<prefix>/<namespace>/` of the bucket); Err says why it is not deleted.
pub fn artifact_location(uri: &str, store: &ArtifactStore) -> Result<ArtifactLocation, String> {
    if let Some(path) = uri.strip_prefix("file://") {
        let path = Path::new(path);
        let folder = store.dir.join(store.namespace);
        let plain = path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        return if plain && path.starts_with(&folder) && path != folder {
            Ok(ArtifactLocation::File(path.to_path_buf()))
        } else {
            Err(format!("{uri} is not a file under {}", folder.display()))
        };
    }
    if let Some(rest) = uri.strip_prefix("s3://") {
        let under_prefix = |key: &str, prefix: &str| {
            let folder = format!("{}/{}/", prefix.trim_matches('/'), store.namespace);
            key.starts_with(folder.trim_start_matches('/'))
        };
        return match (rest.split_once('/'), store.bucket) {
            (Some((bucket, key)), Some((ours, prefix)))
                if bucket == ours
                    && under_prefix(key, prefix)
                    && !key.split('/').any(|part| part == ".." || part.is_empty()) =>
            {
                Ok(ArtifactLocation::Object { key: key.into() })
            }
            _ => Err(format!(
                "{uri} is not under the configured bucket and prefix (--export-url) and namespace {}",
                store.namespace
            )),
        };
    }
    Err(format!("{uri} is neither a file:// nor an s3:// artifact"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::export::Artifact;
    use crate::lifecycle::conditions::{Extra, conditions};
    use crate::lifecycle::scenario::day;

    fn store() -> ArtifactStore<'static> {
        ArtifactStore {
            dir: Path::new("/var/lib/tenure/exports"),
            bucket: Some(("exports", "tenure")),
            namespace: "org-a",
        }
    }

    #[test]
    fn only_artifacts_where_tenure_writes_them_may_be_deleted() {
        let store = store();
        assert_eq!(
            artifact_location("file:///var/lib/tenure/exports/org-a/x.zip", &store),
            Ok(ArtifactLocation::File(
                "/var/lib/tenure/exports/org-a/x.zip".into()
            ))
        );
        for outside in [
            "file:///etc/passwd",
            "file:///var/lib/tenure/exports/../../../etc/passwd",
            "file:///var/lib/tenure/exports/org-other/x.zip",
            "s3://exports/tenure/org-other/x.zip",
            "file:///var/lib/tenure/exports/org-a",
            "file:///var/lib/tenure/exports",
            "file:///var/lib/tenure/exports-other/x.zip",
            "file://relative/x.zip",
            "s3://other-bucket/tenure/org-a/x.zip",
            "s3://exports/elsewhere/org-a/x.zip",
            "s3://exports/tenure/../elsewhere/x.zip",
            "https://example.com/x.zip",
        ] {
            assert!(artifact_location(outside, &store).is_err(), "{outside}");
        }
        assert_eq!(
            artifact_location("s3://exports/tenure/org-a/x.zip", &store),
            Ok(ArtifactLocation::Object {
                key: "tenure/org-a/x.zip".into()
            })
        );
    }

    #[test]
    fn a_data_export_runs_only_in_its_organizations_namespace() {
        let organization = ExportedOrganization {
            phase: Some(OrganizationPhase::Active),
            tenant_namespace: Some("org-acme".into()),
        };
        assert!(may_run("org-acme", "acme", Some(&organization)).is_ok());
        let (phase, verdict) = may_run("org-globex", "acme", Some(&organization)).unwrap_err();
        assert_eq!(phase, ExportPhase::Failed);
        assert_eq!(verdict.reason, "WrongNamespace");
        assert!(verdict.message.contains("spec.organization"));
    }

    #[test]
    fn only_a_complete_export_whose_artifact_still_exists_counts() {
        let succeeded = DataExportStatus {
            phase: Some(ExportPhase::Succeeded),
            artifact: Some(Artifact::default()),
            expires_at: Some(day(7)),
            ..Default::default()
        };
        assert!(available(&succeeded, day(1)));
        assert!(!available(&succeeded, day(7)), "expired");
        let incomplete = DataExportStatus {
            conditions: conditions(
                &[],
                &Verdict::ready("Succeeded", "x"),
                &[Extra {
                    type_: INCOMPLETE.into(),
                    status: true,
                    reason: "KindsNotReadable".into(),
                    message: "Secret".into(),
                }],
                None,
                day(0),
            ),
            ..succeeded
        };
        assert!(!available(&incomplete, day(1)));
    }

    fn input<'a>(
        status: Option<&'a DataExportStatus>,
        organization: Option<&'a ExportedOrganization>,
        store: &'a ArtifactStore<'a>,
        now: Time,
    ) -> ExportInput<'a> {
        ExportInput {
            namespace: "org-a",
            organization_name: "a",
            organization,
            status,
            store,
            now,
        }
    }

    #[test]
    fn a_succeeded_export_is_kept_until_it_expires_then_deleted_where_tenure_wrote_it() {
        let store = store();
        let succeeded = DataExportStatus {
            phase: Some(ExportPhase::Succeeded),
            artifact: Some(Artifact {
                uri: "file:///var/lib/tenure/exports/org-a/x.zip".into(),
                ..Artifact::default()
            }),
            expires_at: Some(day(7)),
            ..Default::default()
        };
        assert_eq!(
            step(&input(Some(&succeeded), None, &store, day(1))),
            ExportStep::KeepUntil(day(7))
        );
        let ExportStep::Expire {
            delete, verdict, ..
        } = step(&input(Some(&succeeded), None, &store, day(7)))
        else {
            panic!("expired")
        };
        assert_eq!(
            delete,
            Some(ArtifactLocation::File(
                "/var/lib/tenure/exports/org-a/x.zip".into()
            ))
        );
        assert_eq!(verdict.reason, "ArtifactExpired");

        let elsewhere = DataExportStatus {
            artifact: Some(Artifact {
                uri: "file:///etc/passwd".into(),
                ..Artifact::default()
            }),
            ..succeeded
        };
        let ExportStep::Expire {
            delete, verdict, ..
        } = step(&input(Some(&elsewhere), None, &store, day(8)))
        else {
            panic!("expired")
        };
        assert_eq!(delete, None, "never deleted outside the export store");
        assert_eq!(verdict.reason, "ArtifactOutsideExportStore");
    }

    #[test]
    fn an_export_not_started_runs_only_for_its_organization_and_a_failed_one_waits() {
        let store = store();
        let organization = ExportedOrganization {
            phase: Some(OrganizationPhase::Active),
            tenant_namespace: Some("org-a".into()),
        };
        assert_eq!(
            step(&input(None, Some(&organization), &store, day(1))),
            ExportStep::Run
        );
        let ExportStep::Refuse { phase, verdict } = step(&input(None, None, &store, day(1))) else {
            panic!("refused")
        };
        assert_eq!(phase, ExportPhase::Pending);
        assert_eq!(verdict.reason, "OrganizationNotFound");
        let failed = DataExportStatus {
            phase: Some(ExportPhase::Failed),
            ..Default::default()
        };
        assert_eq!(
            step(&input(Some(&failed), Some(&organization), &store, day(1))),
            ExportStep::Wait
        );
    }

    #[test]
    fn an_export_missing_kinds_says_so_and_names_them() {
        let written = Written {
            objects: 3,
            files: 5,
            size_bytes: 100,
            unreadable: vec!["Secret".into()],
        };
        let (verdict, incomplete) = finished(&written, day(7), "org-a");
        assert!(verdict.message.ends_with("; incomplete: without Secret"));
        assert_eq!(incomplete.unwrap().reason, "KindsNotReadable");
    }

    #[test]
    fn an_organization_lists_its_succeeded_exports_newest_first() {
        let at = |d: i64| DataExportStatus {
            phase: Some(ExportPhase::Succeeded),
            completed_at: Some(day(d)),
            artifact: Some(Artifact::default()),
            expires_at: Some(day(d + 7)),
            ..Default::default()
        };
        let (old, new, running) = (at(1), at(2), DataExportStatus::default());
        let (names, available) = succeeded_exports(
            [("old", &old), ("new", &new), ("running", &running)],
            day(8),
        );
        assert_eq!(names, ["new", "old"]);
        assert!(available, "the newer one has not expired");
    }
}
