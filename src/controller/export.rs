//! DataExport reconciler: writes the organization's data as a ZIP to the
//! export directory, reports it in status, and deletes it when it expires.
//! Refused once the organization's purge has started: there is nothing left
//! that the customer could be sure is complete.

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
use object_store::{ObjectStoreExt, WriteMultipart};

use super::status::apply_status;
use super::{Context, Error, Result, log_outcomes, purge, record, requeue_at, retry_later};
use crate::api::export::{Artifact, DataExportStatus, ExportFormat, ExportPhase};
use crate::api::{DataExport, OrganizationPhase};
use crate::export::{Options, ZipExport, digest};
use crate::lifecycle::conditions::{Verdict, conditions};

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
        let key = format!("{}/{namespace}/{name}.zip", self.prefix);
        ObjectPath::from(key.trim_start_matches('/'))
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
    log_outcomes(
        "DataExport",
        controller.run(reconcile, retry_later, context),
    )
    .await;
}

async fn reconcile(export: Arc<DataExport>, context: Arc<Context>) -> Result<Action> {
    let namespace = export.namespace().unwrap_or_default();
    let name = export.name_any();
    let api = Api::<DataExport>::namespaced(context.client.clone(), &namespace);
    let now = context.clock.now();
    let current = export.status.clone();
    let mut status = current.clone().unwrap_or_default();
    status.observed_generation = export.metadata.generation;
    let generation = export.metadata.generation;
    let set = |status: &mut DataExportStatus, phase, verdict: Verdict| {
        status.phase = Some(phase);
        status.conditions = conditions(&status.conditions, &verdict, &[], generation, now);
    };

    match status.phase {
        Some(ExportPhase::Succeeded) => {
            let Some(expires_at) = status.expires_at else {
                return Ok(Action::await_change());
            };
            if expires_at > now {
                return Ok(requeue_at(&context.clock, expires_at));
            }
            let uri = status
                .artifact
                .as_ref()
                .map(|a| a.uri.clone())
                .unwrap_or_default();
            if let Some(path) = uri.strip_prefix("file://") {
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(error) => return Err(Error::Export(error.to_string())),
                }
            }
            // The key is the one recorded, whatever the prefix is now.
            let uploaded = uri
                .strip_prefix("s3://")
                .and_then(|rest| rest.split_once('/'));
            if let (Some(bucket), Some((bucket_name, key))) = (&context.exports.bucket, uploaded)
                && bucket_name == bucket.name
            {
                match bucket.store.delete(&ObjectPath::from(key)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(error) => return Err(Error::Export(error.to_string())),
                }
            }
            set(
                &mut status,
                ExportPhase::Succeeded,
                Verdict::ready(
                    "ArtifactExpired",
                    format!("the ZIP was deleted at {expires_at}, when it expired"),
                ),
            );
            apply_status(&api, &name, current.as_ref(), &status).await?;
            return Ok(Action::await_change());
        }
        Some(ExportPhase::Failed) => return Ok(Action::await_change()),
        _ => {}
    }

    let org_name = &export.spec.organization;
    let Some(organization) = context.organizations.get(&ObjectRef::new(org_name)) else {
        set(
            &mut status,
            ExportPhase::Pending,
            Verdict::stalled(
                "OrganizationNotFound",
                format!("spec.organization names Organization {org_name:?}, which does not exist"),
            ),
        );
        apply_status(&api, &name, current.as_ref(), &status).await?;
        return Ok(Action::await_change());
    };
    let org_phase = organization.status.as_ref().and_then(|s| s.phase);
    if matches!(
        org_phase,
        Some(OrganizationPhase::Purging | OrganizationPhase::Purged)
    ) {
        set(
            &mut status,
            ExportPhase::Failed,
            Verdict::stalled(
                "OrganizationPurged",
                format!(
                    "organization {org_name} is {:?}: its data is being or has been deleted, so no export can be complete",
                    org_phase.unwrap_or_default()
                ),
            ),
        );
        apply_status(&api, &name, current.as_ref(), &status).await?;
        return Ok(Action::await_change());
    }

    // Recorded before the work starts: a controller killed meanwhile starts
    // the export again from the beginning, overwriting the partial file.
    set(
        &mut status,
        ExportPhase::Running,
        Verdict::reconciling(
            "Exporting",
            "listing and writing the organization's objects",
        ),
    );
    status.objects_exported = Some(0);
    apply_status(&api, &name, current.as_ref(), &status).await?;
    let mut reported = status.clone();

    let tenant_namespace = super::organization::tenant_namespace(&organization);
    let dir = context.exports.dir.join(&namespace);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Export(format!("{}: {e}", dir.display())))?;
    let path = dir.join(format!("{name}.zip"));
    let partial = dir.join(format!("{name}.zip.partial"));
    let file = std::fs::File::create(&partial)
        .map_err(|e| Error::Export(format!("{}: {e}", partial.display())))?;
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
        serde_json::to_value(organization.as_ref()).unwrap_or_default(),
    )
    .map_err(io)?;
    zip.finish_kind("Organization").map_err(io)?;
    for entitlement in context.entitlements.state() {
        if entitlement.spec.organization.as_deref() == Some(org_name.as_str()) {
            zip.add(
                "Entitlement",
                serde_json::to_value(entitlement.as_ref()).unwrap_or_default(),
            )
            .map_err(io)?;
        }
    }
    zip.finish_kind("Entitlement").map_err(io)?;
    for resource in purge::namespaced_kinds(&context).await? {
        if resource.kind == "Secret" && !options.include_secrets {
            continue;
        }
        let objects = Api::<DynamicObject>::namespaced_with(
            context.client.clone(),
            &tenant_namespace,
            &resource,
        );
        let mut params = ListParams::default().limit(PAGE);
        loop {
            let page = match objects.list(&params).await {
                Ok(page) => page,
                Err(kube::Error::Api(status)) if matches!(status.code, 403..=405) => break,
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
        // Progress for people watching a long export, a kind at a time.
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
    std::fs::rename(&partial, &path).map_err(io)?;
    let (sha256, size_bytes) = digest(std::fs::File::open(&path).map_err(io)?).map_err(io)?;

    let uri = match &context.exports.bucket {
        Some(bucket) => {
            let key = bucket.key(&namespace, &name);
            bucket.upload(&path, &key).await?;
            std::fs::remove_file(&path).map_err(io)?;
            format!("s3://{}/{key}", bucket.name)
        }
        None => format!(
            "file://{}",
            std::path::absolute(&path).map_err(io)?.display()
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
    let message =
        format!("{objects} objects in {files} files, {size_bytes} bytes; kept until {expires_at}");
    set(
        &mut status,
        ExportPhase::Succeeded,
        Verdict::ready("Succeeded", message.clone()),
    );
    status.objects_exported = Some(objects);
    apply_status(&api, &name, Some(&reported), &status).await?;
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
