//! Status writing: server-side apply of the whole status with one field
//! manager, and only when it changed.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::context::Context;
use super::error::{Error, Result};
use crate::api::class::EntitlementClassStatus;
use crate::api::entitlement::EntitlementStatus;
use crate::api::webhook::LifecycleWebhookStatus;
use crate::api::{
    DataExport, DataExportStatus, Entitlement, EntitlementClass, LifecyclePolicy,
    LifecyclePolicyStatus, LifecycleWebhook, Organization, OrganizationStatus, RetentionHold,
    RetentionHoldStatus,
};
use crate::lifecycle::conditions::{Extra, READY, RECONCILING, STALLED, Verdict, conditions};

/// The one field manager every status write uses.
pub const FIELD_MANAGER: &str = "tenure";

/// A kind whose status keeps `observedGeneration` and kstatus `conditions`:
/// every kind of tenure's.
pub trait WithStatus:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static
{
    type Status: Default + Clone + PartialEq + Serialize + Send + Sync;
    fn status(&self) -> Option<&Self::Status>;
    fn observed(status: &mut Self::Status) -> (&mut Option<i64>, &mut Vec<Condition>);
    /// The API to write this object's status through.
    fn api(&self, client: Client) -> Api<Self>;
}

/// Every status here keeps its own `observedGeneration` and `conditions`.
macro_rules! with_status {
    ($($kind:ty => $status:ty, $api:ident;)*) => {$(
        impl WithStatus for $kind {
            type Status = $status;
            fn status(&self) -> Option<&Self::Status> {
                self.status.as_ref()
            }
            fn observed(status: &mut Self::Status) -> (&mut Option<i64>, &mut Vec<Condition>) {
                (&mut status.observed_generation, &mut status.conditions)
            }
            fn api(&self, client: Client) -> Api<Self> {
                with_status!(@api $api, self, client)
            }
        }
    )*};
    (@api cluster, $self:ident, $client:ident) => { Api::all($client) };
    (@api namespaced, $self:ident, $client:ident) => {
        Api::namespaced($client, &$self.namespace().unwrap_or_default())
    };
}

with_status! {
    Organization => OrganizationStatus, cluster;
    Entitlement => EntitlementStatus, namespaced;
    EntitlementClass => EntitlementClassStatus, cluster;
    LifecyclePolicy => LifecyclePolicyStatus, cluster;
    RetentionHold => RetentionHoldStatus, cluster;
    DataExport => DataExportStatus, namespaced;
    LifecycleWebhook => LifecycleWebhookStatus, cluster;
}

/// Writes `verdict` into the conditions of the object as the API server has it
/// now (read afresh, so that no stale copy overwrites the rest of its status),
/// keeping its other conditions (e.g. Stalled for an error retrying cannot fix).
pub async fn write_verdict<K: WithStatus>(
    object: &K,
    context: &Context,
    verdict: &Verdict,
) -> Result<()> {
    let api = object.api(context.client.clone());
    let Some(fresh) = api.get_opt(&object.name_any()).await? else {
        return Ok(());
    };
    let generation = fresh.meta().generation;
    let current = fresh.status().cloned();
    let mut status = current.clone().unwrap_or_default();
    let (observed_generation, status_conditions) = K::observed(&mut status);
    *observed_generation = generation;
    let others: Vec<Extra> = status_conditions
        .iter()
        .filter(|c| ![READY, RECONCILING, STALLED].contains(&c.type_.as_str()))
        .map(|c| Extra {
            type_: c.type_.clone(),
            status: c.status == "True",
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect();
    *status_conditions = conditions(
        status_conditions,
        verdict,
        &others,
        generation,
        context.clock.now(),
    );
    let version = fresh.resource_version();
    // Changed meanwhile (Stale): the next reconcile says it again.
    apply_status_if_unchanged(
        &api,
        &fresh.name_any(),
        version.as_deref(),
        current.as_ref(),
        &status,
    )
    .await
    .map(|_| ())
}

/// Applies `status` to the object `name` unless it equals `current`. The whole
/// status is sent: fields left out are removed, as the field manager owns them.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    status: &S,
) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    apply_status_if_unchanged(api, name, None, current, status)
        .await
        .map(|_| ())
}

/// What became of a status write guarded by the resourceVersion it was
/// decided on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Applied {
    /// Status is as wanted: written (the object's new resourceVersion), or
    /// it already was (None).
    Done(Option<String>),
    /// Refused (409 Conflict): the object changed since it was read, and
    /// nothing was written; the newer version is decided on its own.
    Stale,
}

/// Like [`apply_status`], and when `resource_version` is given the API server
/// refuses the write (409 Conflict) if the object changed since it was read:
/// for status that carries state of its own, such as code sequences, which a
/// stale copy must never overwrite.
pub async fn apply_status_if_unchanged<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    current: Option<&S>,
    status: &S,
) -> Result<Applied>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(Applied::Done(None));
    }
    let mut patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    if let Some(version) = resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    tracing::debug!(kind = %K::kind(&()), name, "writing status");
    let written = api
        .patch_status(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&patch),
        )
        .await;
    match written.map_err(Error::from) {
        Ok(written) => Ok(Applied::Done(written.resource_version())),
        Err(error) if error.is_conflict() => Ok(Applied::Stale),
        Err(error) => Err(error),
    }
}

/// Adds the finalizer unless present, with optimistic concurrency on the
/// object's resourceVersion so that a concurrent change is never overwritten.
/// The object's new resourceVersion when it was written.
pub async fn ensure_finalizer<K>(api: &Api<K>, object: &K) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == crate::api::FINALIZER) {
        return Ok(None);
    }
    finalizers.push(crate::api::FINALIZER.to_string());
    patch_finalizers(api, object, finalizers).await
}

/// Removes the finalizer, letting the API server complete a deletion.
pub async fn remove_finalizer<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let finalizers: Vec<String> = object
        .meta()
        .finalizers
        .iter()
        .flatten()
        .filter(|f| *f != crate::api::FINALIZER)
        .cloned()
        .collect();
    patch_finalizers(api, object, finalizers).await.map(|_| ())
}

/// Writes `finalizers`, refused if the object changed since it was read; the
/// object's new resourceVersion.
async fn patch_finalizers<K>(
    api: &Api<K>,
    object: &K,
    finalizers: Vec<String>,
) -> Result<Option<String>>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let name = meta.name.as_deref().ok_or(Error::Unnamed("object"))?;
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": meta.resource_version }
    });
    tracing::debug!(kind = %K::kind(&()), name, "writing finalizers");
    let written = api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(written.resource_version())
}
