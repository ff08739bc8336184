//! Status writing: server-side apply of the whole status with one field
//! manager, and only when it changed.

use kube::api::{Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{FIELD_MANAGER, Result};

/// Applies `status` to the object `name` unless it equals `current`. The whole
/// status is sent: fields left out are removed, as the field manager owns them.
pub async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    current: Option<&S>,
    status: &S,
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    apply_status_if_unchanged(api, name, None, current, status).await
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
) -> Result<bool>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize + PartialEq,
{
    if current == Some(status) {
        return Ok(false);
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
    api.patch_status(
        name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(true)
}

/// Adds the finalizer unless present, with optimistic concurrency on the
/// object's resourceVersion so that a concurrent change is never overwritten.
pub async fn ensure_finalizer<K>(api: &Api<K>, object: &K) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let mut finalizers = meta.finalizers.clone().unwrap_or_default();
    if finalizers.iter().any(|f| f == crate::api::FINALIZER) {
        return Ok(());
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
    patch_finalizers(api, object, finalizers).await
}

async fn patch_finalizers<K>(api: &Api<K>, object: &K, finalizers: Vec<String>) -> Result<()>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
{
    let meta = object.meta();
    let name = meta
        .name
        .as_deref()
        .ok_or(super::Error::Unnamed("object"))?;
    let patch = serde_json::json!({
        "metadata": { "finalizers": finalizers, "resourceVersion": meta.resource_version }
    });
    tracing::debug!(kind = %K::kind(&()), name, "writing finalizers");
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Whether the API server refused a write because the object changed meanwhile.
pub fn is_conflict(error: &super::Error) -> bool {
    matches!(error, super::Error::Kube(kube::Error::Api(status)) if status.code == 409)
}
