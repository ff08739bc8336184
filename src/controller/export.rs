//! DataExport reconciler: writes the organization's data as a ZIP to the
//! export directory, reports it in status, and deletes it when it expires.
//! It runs only in the organization's own namespace, and is refused (or, if
//! still running, failed) once the organization's purge has started: there is
//! nothing left that the customer could be sure is complete.

use std::io::Read;
use std::path::PathBuf;
use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};
use kube::api::ListParams;
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart};

use super::status::{apply_status, ensure_finalizer, remove_finalizer};
use super::{
    Context, Error, Result, live_holds, log_outcomes, organization_owning, purge, reconciled,
    record, requeue_at, retry_later,
};
use crate::api::export::{Artifact, DataExportStatus, ExportFormat, ExportPhase};
use crate::api::{DataExport, Organization};
use crate::export::{Options, ZipExport, digest};
use crate::lifecycle::conditions::{Extra, Verdict, conditions};
use crate::lifecycle::export::{
    ArtifactLocation, ArtifactStore, ExportedOrganization, INCOMPLETE, artifact_location, may_run,
};

/// Where ZIPs go and how long they are kept.
#[derive(Clone, Debug)]
pub struct ExportSettings {
    /// Where ZIPs are written: the artifact itself, or the staging area of an
    /// upload.
    pub dir: PathBuf,
    pub keep_for: TimeDelta,
    /// Set: ZIPs are uploaded to this S3-compatible bucket.
    pub bucket: Option<Bucket>,
}

/// An S3-compatible bucket (and key prefix) for export artifacts.
#[derive(Clone, Debug)]
pub struct Bucket {
    pub name: String,
    pub prefix: String,
    pub store: Arc<AmazonS3>,
}

impl Bucket {
    /// From `s3://bucket/prefix`, with credentials, region and endpoint from the
    /// usual AWS_* environment variables (AWS_ENDPOINT for other S3 servers).
    pub fn from_url(url: &str) -> anyhow::Result<Self> {
        let rest = url.strip_prefix("s3://").ok_or_else(|| {
            anyhow::anyhow!("--export-url must look like s3://bucket/prefix, not {url:?}")
        })?;
        let (name, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let store = AmazonS3Builder::from_env().with_bucket_name(name).build()?;
        Ok(Self {
            name: name.to_string(),
            prefix: prefix.trim_matches('/').to_string(),
            store: Arc::new(store),
        })
    }

    fn key(&self, namespace: &str, name: &str) -> ObjectPath {
        ObjectPath::from(format!("{}/{name}.zip", self.namespace_prefix(namespace)))
    }

    /// Where the artifacts of one namespace's exports go.
    fn namespace_prefix(&self, namespace: &str) -> String {
        format!("{}/{namespace}", self.prefix)
            .trim_start_matches('/')
            .to_string()
    }

    /// Uploads the file in parts, never all of it in memory.
    async fn upload(&self, file: &std::path::Path, key: &ObjectPath) -> Result<()> {
        let failed = |e: object_store::Error| Error::Export(e.to_string());
        let io = |e: std::io::Error| Error::Export(e.to_string());
        let mut upload = WriteMultipart::new(self.store.put_multipart(key).await.map_err(failed)?);
        let mut reader = std::fs::File::open(file).map_err(io)?;
        let mut chunk = vec![0u8; 8 << 20];
        loop {
            let read = reader.read(&mut chunk).map_err(io)?;
            if read == 0 {
                break;
            }
            upload.wait_for_capacity(2).await.map_err(failed)?;
            upload.write(&chunk[..read]);
        }
        upload.finish().await.map_err(failed)?;
        Ok(())
    }
}

/// Objects are listed this many at a time, so that a large namespace is
/// never held in memory.
const PAGE: u32 = 500;

pub async fn run(context: Arc<Context>) {
    let api = Api::<DataExport>::all(context.client.clone());
    let controller = Controller::new(api, watcher::Config::default()).shutdown_on_signal();
    let exports = controller.store();
    // An export waiting for its organization goes on once it is observed.
    let controller = controller.watches(
        Api::<Organization>::all(context.client.clone()),
        watcher::Config::default(),
        move |organization| {
            let name = organization.name_any();
            exports
                .state()
                .iter()
                .filter(|e| e.spec.organization == name)
                .map(|e| ObjectRef::from_obj(e.as_ref()))
                .collect::<Vec<_>>()
        },
    );
    log_outcomes(
        "DataExport",
        controller.run(
            |export, context| {
                reconciled(export.clone(), context.clone(), reconcile(export, context))
            },
            retry_later,
            context,
        ),
    )
    .await;
}

impl ExportSettings {
    /// Where artifacts may be deleted: the export directory (absolute) and the
    /// bucket and prefix.
    fn store(&self) -> Result<(PathBuf, Option<(String, String)>)> {
        let dir = std::path::absolute(&self.dir).map_err(|e| Error::Export(e.to_string()))?;
        let bucket = self
            .bucket
            .as_ref()
            .map(|b| (b.name.clone(), b.prefix.clone()));
        Ok((dir, bucket))
    }
}

/// Every artifact of `namespace`'s exports, finished or partial: what a purge
/// of the organization removes.
pub async fn artifacts_of(context: &Context, namespace: &str) -> Result<Vec<ArtifactLocation>> {
    let mut artifacts = Vec::new();
    let dir = context.exports.dir.join(namespace);
    match std::fs::read_dir(&dir) {
        Ok(entries) => {
            for entry in entries {
                let entry = entry.map_err(|e| Error::Export(e.to_string()))?;
                if entry.file_type().is_ok_and(|t| t.is_file()) {
                    artifacts.push(ArtifactLocation::File(entry.path()));
                }
            }
        }
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(Error::Export(format!("{}: {error}", dir.display()))),
    }
    if let Some(bucket) = &context.exports.bucket {
        use futures::TryStreamExt;
        let prefix = ObjectPath::from(bucket.namespace_prefix(namespace));
        let listed: Vec<_> = bucket
            .store
            .list(Some(&prefix))
            .try_collect()
            .await
            .map_err(|e| Error::Export(e.to_string()))?;
        artifacts.extend(listed.into_iter().map(|object| ArtifactLocation::Object {
            key: object.location.to_string(),
        }));
    }
    artifacts.sort_by_key(|a| format!("{a:?}"));
    Ok(artifacts)
}

/// Deletes one artifact; one already gone is fine.
pub async fn delete_artifact(context: &Context, artifact: &ArtifactLocation) -> Result<()> {
    match artifact {
        ArtifactLocation::File(path) => match std::fs::remove_file(path) {
            Ok(()) => Ok(()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(error) => Err(Error::Export(format!("{}: {error}", path.display()))),
        },
        ArtifactLocation::Object { key } => {
            let Some(bucket) = &context.exports.bucket else {
                return Ok(());
            };
            match bucket.store.delete(&ObjectPath::from(key.as_str())).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(error) => Err(Error::Export(error.to_string())),
            }
        }
    }
}

/// A DataExport is being deleted: its ZIP goes with it (and a partial one),
/// unless a hold covers the organization whose namespace it is in, read live;
/// then the organization's purge removes it later.
async fn release(context: &Context, export: &DataExport) -> Result<()> {
    let namespace = export.namespace().unwrap_or_default();
    let owner = organization_owning(context, &namespace);
    if let Some(owner) = owner {
        let held = live_holds(context, |h| {
            h.covers_organization(&owner.name_any(), &namespace)
        })
        .await?
        .iter()
        .any(|h| h.in_force(context.clock.now()));
        if held {
            return Ok(());
        }
    }
    let dir = context.exports.dir.join(&namespace);
    let name = export.name_any();
    for file in [format!("{name}.zip"), format!("{name}.zip.partial")] {
        delete_artifact(context, &ArtifactLocation::File(dir.join(file))).await?;
    }
    if let Some(artifact) = export.status.as_ref().and_then(|s| s.artifact.as_ref()) {
        let (dir, bucket) = context.exports.store()?;
        if let Ok(location) =
            artifact_location(&artifact.uri, &artifact_store(&dir, &bucket, &namespace))
        {
            delete_artifact(context, &location).await?;
        }
    }
    Ok(())
}

/// A file removed when dropped unless it was renamed away first: an export
/// cut short (an error, its DataExport deleted) leaves no partial file.
struct PartialFile(PathBuf);

impl Drop for PartialFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

async fn reconcile(export: Arc<DataExport>, context: Arc<Context>) -> Result<Action> {
    let namespace = export.namespace().unwrap_or_default();
    let name = export.name_any();
    let api = Api::<DataExport>::namespaced(context.client.clone(), &namespace);
    if export.metadata.deletion_timestamp.is_some() {
        release(&context, &export).await?;
        remove_finalizer(&api, export.as_ref()).await?;
        return Ok(Action::await_change());
    }
    ensure_finalizer(&api, export.as_ref()).await?;
    let now = context.clock.now();
    let current = export.status.clone();
    let mut status = current.clone().unwrap_or_default();
    status.observed_generation = export.metadata.generation;
    let generation = export.metadata.generation;
    let set = |status: &mut DataExportStatus, phase, verdict: Verdict, extra: &[Extra]| {
        status.phase = Some(phase);
        status.conditions = conditions(&status.conditions, &verdict, extra, generation, now);
    };

    match status.phase {
        Some(ExportPhase::Succeeded) => {
            let Some(expires_at) = status.expires_at else {
                return Ok(Action::await_change());
            };
            if expires_at > now {
                return Ok(requeue_at(&context.clock, expires_at));
            }
            let incomplete: Vec<Extra> = incomplete_condition(&status).into_iter().collect();
            let verdict = match status.artifact.as_ref() {
                Some(artifact) => {
                    let (dir, bucket) = context.exports.store()?;
                    match artifact_location(
                        &artifact.uri,
                        &artifact_store(&dir, &bucket, &namespace),
                    ) {
                        Ok(location) => {
                            delete_artifact(&context, &location).await?;
                            expired(expires_at)
                        }
                        Err(why) => Verdict::stalled(
                            "ArtifactOutsideExportStore",
                            format!(
                                "status.artifact.uri: {why}; tenure deletes artifacts only where it writes them, so this one is left as it is"
                            ),
                        ),
                    }
                }
                None => expired(expires_at),
            };
            set(&mut status, ExportPhase::Succeeded, verdict, &incomplete);
            apply_status(&api, &name, current.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
        Some(ExportPhase::Failed) => return Ok(Action::await_change()),
        _ => {}
    }

    let org_name = &export.spec.organization;
    // Read live: its change wakes this export through a watch of its own.
    let organization = Api::<Organization>::all(context.client.clone())
        .get_opt(org_name)
        .await?;
    let found = organization.as_ref().map(exported);
    if let Err((phase, verdict)) = may_run(&namespace, org_name, found.as_ref()) {
        set(&mut status, phase, verdict, &[]);
        apply_status(&api, &name, current.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }
    let organization = organization.expect("may_run found it");

    // Recorded before the work starts: a controller killed meanwhile starts
    // the export again from the beginning, overwriting the partial file.
    set(
        &mut status,
        ExportPhase::Running,
        Verdict::reconciling(
            "Exporting",
            "listing and writing the organization's objects",
        ),
        &[],
    );
    status.objects_exported = Some(0);
    apply_status(&api, &name, current.as_ref(), &status).await?;
    let mut reported = status.clone();

    let dir = context.exports.dir.join(&namespace);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Export(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{name}.zip"));
    let partial = PartialFile(dir.join(format!("{name}.zip.partial")));
    let file = std::fs::File::create(&partial.0)
        .map_err(|e| Error::Export(format!("{}: {e}", partial.0.display())))?;
    let options = Options {
        json: export.spec.formats.contains(&ExportFormat::Json),
        csv: export.spec.formats.contains(&ExportFormat::Csv),
        include_secrets: export.spec.include_secrets == Some(true),
        include_secret_values: export.spec.include_secret_values == Some(true),
    };
    let mut zip = ZipExport::new(std::io::BufWriter::new(file), options);
    let io = |e: std::io::Error| Error::Export(e.to_string());

    zip.add(
        "Organization",
        serde_json::to_value(&organization).unwrap_or_default(),
    )
    .map_err(io)?;
    zip.finish_kind("Organization").map_err(io)?;
    // The organization's entitlements are those in its namespace: one
    // elsewhere naming it is not its data (and stalls).
    for entitlement in context.entitlements.state() {
        if entitlement.namespace().as_deref() == Some(namespace.as_str()) {
            zip.add(
                "Entitlement",
                serde_json::to_value(entitlement.as_ref()).unwrap_or_default(),
            )
            .map_err(io)?;
        }
    }
    zip.finish_kind("Entitlement").map_err(io)?;
    let mut unreadable = Vec::new();
    for resource in purge::namespaced_kinds(&context).await? {
        if resource.kind == "Secret" && !options.include_secrets {
            continue;
        }
        let objects =
            Api::<DynamicObject>::namespaced_with(context.client.clone(), &namespace, &resource);
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = match objects.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(status)) if status.code == 403 => {
                    unreadable.push(resource.kind.clone());
                    break;
                }
                // Served for discovery but not listable (a virtual resource).
                Err(kube::Error::Api(status)) if matches!(status.code, 404 | 405) => break,
                Err(error) => return Err(error.into()),
            };
            for object in page.items {
                zip.add(
                    &resource.kind,
                    serde_json::to_value(&object).unwrap_or_default(),
                )
                .map_err(io)?;
            }
            match page.metadata.continue_ {
                Some(token) if !token.is_empty() => params = params.continue_token(&token),
                _ => break,
            }
        }
        zip.finish_kind(&resource.kind).map_err(io)?;
        // Progress for people watching a long export, a kind at a time. A
        // DataExport deleted meanwhile ends the export here (404), and the
        // partial file goes with it.
        status.objects_exported = Some(zip.objects());
        apply_status(&api, &name, Some(&reported), &status).await?;
        reported = status.clone();
    }
    let objects = zip.objects();
    let (sink, files) = zip.finish(org_name, now).map_err(io)?;
    sink.into_inner()
        .map_err(|e| Error::Export(e.to_string()))?
        .sync_all()
        .map_err(io)?;

    // Overtaken by the purge: the ZIP may lack what was deleted meanwhile.
    let live = Api::<Organization>::all(context.client.clone())
        .get_opt(org_name)
        .await?;
    if let Err((_, verdict)) = may_run(&namespace, org_name, live.as_ref().map(exported).as_ref()) {
        let verdict = Verdict::stalled(
            verdict.reason,
            format!(
                "overtaken while it ran, so it is not complete and no ZIP is kept: {}",
                verdict.message
            ),
        );
        set(&mut status, ExportPhase::Failed, verdict, &[]);
        apply_status(&api, &name, Some(&reported), &status).await?;
        return Ok(Action::await_change());
    }
    std::fs::rename(&partial.0, &path).map_err(io)?;
    let finished = PartialFile(path.clone());
    let (sha256, size_bytes) = digest(std::fs::File::open(&path).map_err(io)?).map_err(io)?;

    let (uri, uploaded) = match &context.exports.bucket {
        Some(bucket) => {
            let key = bucket.key(&namespace, &name);
            bucket.upload(&path, &key).await?;
            let uploaded = ArtifactLocation::Object {
                key: key.to_string(),
            };
            (format!("s3://{}/{key}", bucket.name), Some(uploaded))
        }
        None => (
            format!(
                "file://{}",
                std::path::absolute(&path).map_err(io)?.display()
            ),
            None,
        ),
    };
    let completed_at = context.clock.now();
    let expires_at: DateTime<Utc> = completed_at + context.exports.keep_for;
    status.artifact = Some(Artifact {
        uri,
        sha256,
        size_bytes,
        files,
    });
    status.completed_at = Some(completed_at);
    status.expires_at = Some(expires_at);
    let mut message =
        format!("{objects} objects in {files} files, {size_bytes} bytes; kept until {expires_at}");
    let incomplete: Vec<Extra> = (!unreadable.is_empty())
        .then(|| Extra {
            type_: INCOMPLETE.into(),
            status: true,
            reason: "KindsNotReadable".into(),
            message: format!(
                "tenure may not read {} in namespace {namespace}: the ZIP lacks them, so it does not count for purge.requireExport; grant tenure read access and export again",
                unreadable.join(", ")
            ),
        })
        .into_iter()
        .collect();
    if !unreadable.is_empty() {
        message.push_str(&format!("; incomplete: without {}", unreadable.join(", ")));
    }
    set(
        &mut status,
        ExportPhase::Succeeded,
        Verdict::ready("Succeeded", message.clone()),
        &incomplete,
    );
    status.objects_exported = Some(objects);
    if let Err(error) = apply_status(&api, &name, Some(&reported), &status).await {
        // Deleted while it ran (404): the artifact goes with it (the file
        // by `finished`).
        if let Some(uploaded) = &uploaded {
            delete_artifact(&context, uploaded).await?;
        }
        return Err(error);
    }
    if context.exports.bucket.is_none() {
        // The file is the artifact now: keep it.
        std::mem::forget(finished);
    }
    record(
        &context,
        export.as_ref(),
        EventType::Normal,
        "ExportSucceeded",
        message,
    )
    .await;
    Ok(requeue_at(&context.clock, expires_at))
}

fn expired(at: DateTime<Utc>) -> Verdict {
    Verdict::ready(
        "ArtifactExpired",
        format!("the ZIP was deleted at {at}, when it expired"),
    )
}

/// The export's organization as `may_run` reads it.
fn exported(organization: &Organization) -> ExportedOrganization {
    ExportedOrganization {
        phase: organization.status.as_ref().and_then(|s| s.phase),
        tenant_namespace: organization.owned_namespace().map(String::from),
    }
}

fn artifact_store<'a>(
    dir: &'a std::path::Path,
    bucket: &'a Option<(String, String)>,
    namespace: &'a str,
) -> ArtifactStore<'a> {
    ArtifactStore {
        dir,
        bucket: bucket
            .as_ref()
            .map(|(name, prefix)| (name.as_str(), prefix.as_str())),
        namespace,
    }
}

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
