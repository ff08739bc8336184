//! DataExport decisions without I/O: whether an export may run at all, which
//! one counts for `purge.requireExport`, and where an artifact may be deleted.
//!
//! An export hands one tenant its own data, so it runs only in that tenant's
//! namespace; and tenure deletes artifacts only where it writes them, so that
//! a status edited by hand can never point a delete elsewhere.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};

use super::conditions::Verdict;
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
                format!(
                    "spec.organization names Organization {organization_name:?}, which does not exist"
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
}
