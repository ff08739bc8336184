//! DataExport reconciler: writes the organization's data as a ZIP, keeps it
//! where [`sink`] says, reports it in status, and deletes it when it
//! expires. What to do next is the core's (`lifecycle::export::step`): it
//! runs only in the organization's own namespace, and is refused (or, if
//! still running, failed) once the organization's purge has started: there
//! is nothing left that the customer could be sure is complete.

pub mod sink;
mod zip;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use kube::api::ListParams;
use kube::core::{ApiResource, DynamicObject};
use kube::runtime::controller::{Action, Controller};
use kube::{Api, ResourceExt};

pub use sink::{Bucket, ExportSettings};

use super::context::{Context, reconciled, retry_later};
use super::deletes::held_live;
use super::error::{Error, Result};
use super::events::{Reason, record};
use super::index::Feeds;
use super::status::{Applied, apply_status_if_unchanged, ensure_finalizer, remove_finalizer};
use super::{discovery, log_outcomes, matters};
use crate::api::export::{Artifact, DataExportStatus, ExportPhase};
use crate::api::{DataExport, Organization};
use crate::leadership::Fence;
use crate::lifecycle::conditions::{Extra, Verdict, conditions};
use crate::lifecycle::export::{
    ArtifactLocation, ExportInput, ExportStep, ExportedOrganization, Written, finished, may_run,
    overtaken, step,
};
use crate::lifecycle::system::is_system;
use zip::{Options, ZipExport, digest};

/// Objects are listed this many at a time, so that a large namespace is
/// never held in memory.
const PAGE: u32 = 500;

/// The DataExport controller, woken by its exports and their organizations.
pub fn controller(context: &Arc<Context>, feeds: &mut Feeds) -> Controller<DataExport> {
    let index = context.index.clone();
    // An export waiting for its organization goes on once it is observed.
    Controller::for_shared_stream(feeds.exports.subscribe_to(matters::own), index.exports())
        .watches_shared_stream(
            feeds
                .organizations
                .subscribe_to(matters::organization_namespace),
            move |organization| index.exports_of(&organization.name_any()),
        )
        .with_config(context.controller_config())
        .shutdown_on_signal()
}

pub async fn run(controller: Controller<DataExport>, context: Arc<Context>) {
    log_outcomes(
        "DataExport",
        controller.run(
            |export, context| reconciled(export, context.clone(), reconcile),
            retry_later,
            context,
        ),
    )
    .await;
}

async fn reconcile(export: Arc<DataExport>, context: Arc<Context>) -> Result<Action> {
    let organization = context.index.organization(&export.spec.organization);
    if context.sharded && organization.is_none() {
        // Another shard's organization (or none's): its instance exports
        // it, into its own export store.
        return Ok(Action::await_change());
    }
    let api = Api::<DataExport>::namespaced(context.client.clone(), &namespace_of(&export));
    if export.metadata.deletion_timestamp.is_some() {
        release(&context, &export).await?;
        remove_finalizer(&api, export.as_ref()).await?;
        return Ok(Action::await_change());
    }
    let finalized = ensure_finalizer(&api, export.as_ref()).await?;
    let namespace = namespace_of(&export);
    let dir = context.exports.absolute_dir()?;
    let now = context.clock.now();
    let next = step(&ExportInput {
        namespace: &namespace,
        organization_name: &export.spec.organization,
        organization: organization.as_deref().map(exported).as_ref(),
        status: export.status.as_ref(),
        store: &context.exports.store(&dir, &namespace),
        now,
    });
    let version = finalized.or_else(|| export.resource_version());
    let mut progress = Progress::of(&api, &export, version, &context.fence, now);
    match next {
        ExportStep::Wait => Ok(Action::await_change()),
        ExportStep::KeepUntil(at) => Ok(context.wake_at(Some(at))),
        ExportStep::Expire {
            delete,
            verdict,
            keep,
        } => {
            if let Some(artifact) = delete {
                context.fence.check("deleting the expired ZIP")?;
                context.exports.delete(&artifact).await?;
            }
            progress
                .report(ExportPhase::Succeeded, verdict, &keep)
                .await?;
            Ok(Action::await_change())
        }
        ExportStep::Refuse { phase, verdict } => {
            progress.report(phase, verdict, &[]).await?;
            Ok(Action::await_change())
        }
        ExportStep::Run => export_data(&context, &export, progress).await,
    }
}

fn namespace_of(export: &DataExport) -> String {
    export.namespace().unwrap_or_default()
}

/// The export's status as last written, and how to write the next: only
/// while this process leads, and only over the version it wrote last, so
/// that a replica that lost the Lease mid-export never overwrites what the
/// new leader reported (a Succeeded export put back to Running, or its
/// artifact replaced).
struct Progress<'a> {
    api: &'a Api<DataExport>,
    name: String,
    generation: Option<i64>,
    reported: Option<DataExportStatus>,
    /// The DataExport's resourceVersion as this reconcile last saw or wrote it.
    version: Option<String>,
    fence: &'a Fence,
    now: chrono::DateTime<chrono::Utc>,
}

impl<'a> Progress<'a> {
    fn of(
        api: &'a Api<DataExport>,
        export: &DataExport,
        version: Option<String>,
        fence: &'a Fence,
        now: chrono::DateTime<chrono::Utc>,
    ) -> Self {
        Self {
            api,
            name: export.name_any(),
            generation: export.metadata.generation,
            reported: export.status.clone(),
            version,
            fence,
            now,
        }
    }

    /// Writes what `change` makes of the status last written. Refused when
    /// the DataExport changed meanwhile (someone else wrote it: the next
    /// reconcile starts from what it holds now).
    async fn write(&mut self, change: impl FnOnce(&mut DataExportStatus)) -> Result<()> {
        let mut status = self.reported.clone().unwrap_or_default();
        status.observed_generation = self.generation;
        change(&mut status);
        self.fence.check("writing the export's status")?;
        let applied = apply_status_if_unchanged(
            self.api,
            &self.name,
            self.version.as_deref(),
            self.reported.as_ref(),
            &status,
        )
        .await?;
        match applied {
            Applied::Done(written) => self.version = written.or(self.version.take()),
            Applied::Stale => return Err(Error::Changed(format!("DataExport {}", self.name))),
        }
        self.reported = Some(status);
        Ok(())
    }

    /// Writes the phase and what the conditions say.
    async fn report(
        &mut self,
        phase: ExportPhase,
        verdict: Verdict,
        extra: &[Extra],
    ) -> Result<()> {
        self.report_with(phase, verdict, extra, |_| {}).await
    }

    /// Writes the phase, the conditions and what `change` sets, at once.
    async fn report_with(
        &mut self,
        phase: ExportPhase,
        verdict: Verdict,
        extra: &[Extra],
        change: impl FnOnce(&mut DataExportStatus),
    ) -> Result<()> {
        let (generation, now) = (self.generation, self.now);
        self.write(|status| {
            change(status);
            status.phase = Some(phase);
            status.conditions = conditions(&status.conditions, &verdict, extra, generation, now);
        })
        .await
    }
}

/// Writes the ZIP, checks the organization was not overtaken by its purge
/// meanwhile, keeps the artifact and reports it.
async fn export_data(
    context: &Context,
    export: &DataExport,
    mut progress: Progress<'_>,
) -> Result<Action> {
    // Recorded before the work starts: a controller killed meanwhile starts
    // the export again from the beginning, removing the partial file.
    let exporting = Verdict::reconciling(
        "Exporting",
        "listing and writing the organization's objects",
    );
    progress
        .report(ExportPhase::Running, exporting, &[])
        .await?;
    progress
        .write(|status| status.objects_exported = Some(0))
        .await?;
    let (partial, mut written) = write_zip(context, export, &mut progress).await?;
    if let Some(refusal) = overtaken_by_purge(context, export).await? {
        progress
            .report(ExportPhase::Failed, overtaken(refusal), &[])
            .await?;
        return Ok(Action::await_change());
    }
    let (zip, sha256) = seal(context, partial, &mut written)?;
    let zip_path = zip.0.clone();
    if context.exports.keeps_files() {
        // The file is the artifact from here on, kept whatever follows: a
        // status write that fails may still have been applied (its answer
        // lost), and then status points at it. A retry overwrites it.
        std::mem::forget(zip);
    }
    let published = context
        .exports
        .publish(
            &namespace_of(export),
            &export.name_any(),
            &zip_path,
            &context.fence,
        )
        .await?;
    let expires_at = context.clock.now() + context.exports.keep_for;
    let artifact = Artifact {
        uri: published.uri.clone(),
        sha256,
        size_bytes: written.size_bytes,
        files: written.files,
    };
    if let Err(error) = succeed(
        context,
        export,
        &mut progress,
        artifact,
        &written,
        expires_at,
    )
    .await
    {
        // Gone while it ran (404: its finalizer removed by hand): the
        // artifact goes with it. Any other failure keeps it (the write may
        // have been applied, or the DataExport changed: a deletion marks it,
        // or another leader wrote it): a retry replaces it, and the
        // DataExport's deletion removes it (`release`).
        if error.label() == "NotFound" {
            match &published.uploaded {
                Some(uploaded) => context.exports.delete(uploaded).await?,
                None => remove_artifact_file(&zip_path)?,
            }
        }
        return Err(error);
    }
    context
        .metrics
        .exported(written.size_bytes.try_into().unwrap_or_default());
    Ok(context.wake_at(Some(expires_at)))
}

/// Why the export cannot be complete, if the organization's purge started
/// while it ran (read live): the ZIP may lack what was deleted meanwhile.
async fn overtaken_by_purge(context: &Context, export: &DataExport) -> Result<Option<Verdict>> {
    let org_name = &export.spec.organization;
    let live = Api::<Organization>::all(context.client.clone())
        .get_opt(org_name)
        .await?;
    let found = live.as_ref().map(exported);
    Ok(may_run(&namespace_of(export), org_name, found.as_ref())
        .err()
        .map(|(_, refusal)| refusal))
}

/// Renames the finished partial file to `<name>.zip` and measures it: the
/// file (removed when dropped unless kept) and its SHA-256. Only while this
/// process still leads: a replica that lost the Lease does not replace the
/// ZIP the new leader wrote and reported.
fn seal(
    context: &Context,
    partial: PartialFile,
    written: &mut Written,
) -> Result<(PartialFile, String)> {
    let path = sealed_path(&partial.0);
    context.fence.check("putting the export ZIP in place")?;
    std::fs::rename(&partial.0, &path).map_err(Error::file(&path))?;
    let zip = PartialFile(path);
    let file = std::fs::File::open(&zip.0).map_err(Error::file(&zip.0))?;
    let (sha256, size_bytes) = digest(file).map_err(Error::file(&zip.0))?;
    written.size_bytes = size_bytes;
    Ok((zip, sha256))
}

/// Reports the export Succeeded with its artifact, and records the Event.
async fn succeed(
    context: &Context,
    export: &DataExport,
    progress: &mut Progress<'_>,
    artifact: Artifact,
    written: &Written,
    expires_at: chrono::DateTime<chrono::Utc>,
) -> Result<()> {
    let (verdict, incomplete) = finished(written, expires_at, &namespace_of(export));
    let message = verdict.message.clone();
    let completed_at = context.clock.now();
    progress
        .report_with(
            ExportPhase::Succeeded,
            verdict,
            incomplete.as_slice(),
            |status| {
                status.artifact = Some(artifact);
                status.completed_at = Some(completed_at);
                status.expires_at = Some(expires_at);
                status.objects_exported = Some(written.objects);
            },
        )
        .await?;
    record(context, export, Reason::ExportSucceeded, message).await;
    Ok(())
}

/// Removes an artifact file; one already gone is fine.
fn remove_artifact_file(path: &std::path::Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Error::file(path)(error)),
        _ => Ok(()),
    }
}

/// `<name>.zip.<16 hex digits>.partial`: each attempt writes a file of its
/// own, so that two replicas that both believe they lead never write into
/// one file.
fn partial_name(export: &str) -> String {
    use std::hash::{BuildHasher, Hasher};
    let attempt = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    format!("{export}.zip.{attempt:016x}.partial")
}

/// The ZIP a partial file becomes once finished: `<name>.zip`.
fn sealed_path(partial: &Path) -> PathBuf {
    partial.with_extension("").with_extension("")
}

/// The partial files of export `export` in `folder` (left by attempts cut
/// short by a kill), and the `<name>.zip.partial` of a tenure before each
/// attempt had its own.
fn partial_files(folder: &Path, export: &str) -> Result<Vec<PathBuf>> {
    let prefix = format!("{export}.zip.");
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(Error::file(folder)(error)),
    };
    let mut partial = Vec::new();
    for entry in entries {
        let entry = entry.map_err(Error::file(folder))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let attempt = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".partial"));
        let ours = |a: &str| a.len() == 16 && a.bytes().all(|b| b.is_ascii_hexdigit());
        if attempt.is_some_and(ours) || name == format!("{export}.zip.partial") {
            partial.push(entry.path());
        }
    }
    Ok(partial)
}

/// A file removed when dropped unless it was renamed away first: an export
/// cut short (an error, its DataExport deleted) leaves no partial file.
struct PartialFile(PathBuf);

impl Drop for PartialFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// The export's organization as `may_run` reads it.
fn exported(organization: &Organization) -> ExportedOrganization {
    ExportedOrganization {
        phase: organization.status.as_ref().and_then(|s| s.phase),
        tenant_namespace: organization.owned_namespace().map(String::from),
    }
}

/// A DataExport is being deleted: its ZIP goes with it (and a partial one),
/// unless a hold covers the organization whose namespace it is in, read live;
/// then the organization's purge removes it later.
async fn release(context: &Context, export: &DataExport) -> Result<()> {
    // Its ZIP's name is a successor DataExport's of the same name too.
    context.fence.check("deleting the export's ZIP")?;
    let namespace = namespace_of(export);
    if let Some(owner) = context.index.organization_owning(&namespace) {
        let covers =
            |h: &crate::lifecycle::hold::Hold| h.covers_organization(&owner.name_any(), &namespace);
        if held_live(context, context.clock.now(), covers)
            .await?
            .is_some()
        {
            return Ok(());
        }
    }
    let name = export.name_any();
    let mut artifacts = context.exports.artifact_of(&namespace, &name);
    let partial = partial_files(&context.exports.folder(&namespace), &name)?;
    artifacts.extend(partial.into_iter().map(ArtifactLocation::File));
    for artifact in artifacts {
        context.exports.delete(&artifact).await?;
    }
    if let Some(artifact) = export.status.as_ref().and_then(|s| s.artifact.as_ref()) {
        let dir = context.exports.absolute_dir()?;
        let store = context.exports.store(&dir, &namespace);
        if let Ok(location) = crate::lifecycle::export::artifact_location(&artifact.uri, &store) {
            context.exports.delete(&location).await?;
        }
    }
    Ok(())
}

/// Writes the organization, its entitlements and every object of its
/// namespace that tenure may read and the customer made (of the kinds
/// [`discovery::namespaced_kinds`] finds) into a partial file of its own
/// ([`partial_name`]), every entry dated the export time (`progress.now`,
/// the controller's clock, as in the manifest), reporting progress a kind
/// at a time.
async fn write_zip(
    context: &Context,
    export: &DataExport,
    progress: &mut Progress<'_>,
) -> Result<(PartialFile, Written)> {
    let namespace = namespace_of(export);
    let dir = context.exports.folder(&namespace);
    std::fs::create_dir_all(&dir).map_err(Error::file(&dir))?;
    // What earlier attempts left: killed ones', or a replica's that lost
    // the Lease (its rename then fails). Only while leading: a replica that
    // lost it must not remove the file the new leader is writing.
    context.fence.check("removing the export's partial files")?;
    for left in partial_files(&dir, &export.name_any())? {
        remove_artifact_file(&left)?;
    }
    let partial = PartialFile(dir.join(partial_name(&export.name_any())));
    let path = partial.0.clone();
    let file = std::fs::File::create(&path).map_err(Error::file(&path))?;
    let options = Options::of(&export.spec);
    let mut zip = ZipExport::new(std::io::BufWriter::new(file), options, progress.now);
    write_own_objects(context, export, &mut zip).map_err(Error::file(&path))?;
    let mut unreadable = Vec::new();
    for resource in discovery::namespaced_kinds(context).await? {
        if resource.kind == "Secret" && !options.include_secrets {
            continue;
        }
        if !write_kind(context, &namespace, &resource, &mut zip, &path).await? {
            unreadable.push(resource.kind.clone());
        }
        zip.finish_kind(&resource.kind)
            .map_err(Error::file(&path))?;
        // Progress for people watching a long export, a kind at a time. A
        // DataExport deleted (or changed) meanwhile ends the export here:
        // the write is refused, and the partial file goes.
        let objects = zip.objects();
        progress
            .write(|status| status.objects_exported = Some(objects))
            .await?;
    }
    let objects = zip.objects();
    let (sink, files) = zip
        .finish(&export.spec.organization)
        .map_err(Error::file(&path))?;
    let file = sink
        .into_inner()
        .map_err(|e| Error::file(&path)(e.into_error()))?;
    file.sync_all().map_err(Error::file(&path))?;
    let written = Written {
        objects,
        files,
        size_bytes: 0,
        unreadable,
    };
    Ok((partial, written))
}

/// The organization and its entitlements, those in its namespace: one
/// elsewhere naming it is not its data (and stalls).
fn write_own_objects(
    context: &Context,
    export: &DataExport,
    zip: &mut ZipExport<std::io::BufWriter<std::fs::File>>,
) -> std::io::Result<()> {
    let organization = context.index.organization(&export.spec.organization);
    let value = serde_json::to_value(organization.as_deref()).unwrap_or_default();
    zip.add("Organization", value)?;
    zip.finish_kind("Organization")?;
    for entitlement in context.index.entitlements_in(&namespace_of(export)) {
        let value = serde_json::to_value(entitlement.as_ref()).unwrap_or_default();
        zip.add("Entitlement", value)?;
    }
    zip.finish_kind("Entitlement")
}

/// Adds every object of one kind in `namespace` that the customer made (not
/// one Kubernetes or tenure made by itself: [`is_system`]), a page at a time;
/// false when tenure may not list the kind.
async fn write_kind(
    context: &Context,
    namespace: &str,
    resource: &ApiResource,
    zip: &mut ZipExport<std::io::BufWriter<std::fs::File>>,
    path: &std::path::Path,
) -> Result<bool> {
    let objects =
        Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, resource);
    let mut params = ListParams::default().limit(PAGE);
    loop {
        let page = match objects.list(&params).await {
            Ok(page) => page,
            Err(kube::Error::Api(status)) if status.code == 403 => return Ok(false),
            // Served for discovery but not listable (a virtual resource).
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 405) => return Ok(true),
            Err(error) => return Err(error.into()),
        };
        for object in page.items {
            if is_system(&resource.group, &resource.kind, &object.metadata) {
                continue;
            }
            let value = serde_json::to_value(&object).unwrap_or_default();
            zip.add(&resource.kind, value).map_err(Error::file(path))?;
        }
        match page.metadata.continue_ {
            Some(token) if !token.is_empty() => params = params.continue_token(&token),
            _ => return Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_attempt_writes_a_partial_file_of_its_own_which_becomes_the_zip() {
        let first = partial_name("acme.export");
        let second = partial_name("acme.export");
        assert_ne!(first, second, "two attempts share no file");
        assert!(first.starts_with("acme.export.zip.") && first.ends_with(".partial"));
        let folder = Path::new("/exports/org-acme");
        assert_eq!(
            sealed_path(&folder.join(&first)),
            folder.join("acme.export.zip")
        );
    }

    #[test]
    fn an_exports_partial_files_are_found_and_no_other_exports() {
        let folder = std::env::temp_dir().join(format!("tenure-partials-{}", std::process::id()));
        std::fs::create_dir_all(&folder).unwrap();
        let mine = [partial_name("a"), partial_name("a"), "a.zip.partial".into()];
        let others = [
            "a.zip".to_string(),
            partial_name("a.zip.ff"),
            partial_name("b"),
            "a.zip.notahexnumber.partial".into(),
        ];
        for name in mine.iter().chain(&others) {
            std::fs::write(folder.join(name), b"").unwrap();
        }
        let mut found = partial_files(&folder, "a").unwrap();
        found.sort();
        let mut expected: Vec<PathBuf> = mine.iter().map(|n| folder.join(n)).collect();
        expected.sort();
        std::fs::remove_dir_all(&folder).unwrap();
        assert_eq!(found, expected);
        assert!(
            partial_files(&folder, "a").unwrap().is_empty(),
            "no folder, none"
        );
    }
}
