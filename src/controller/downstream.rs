//! The objects an entitlement governs, through the dynamic API: found live by
//! the binding label or `spec.resources.selector`, then paused, resumed or
//! deleted as the pure core says. Nothing unbound is ever changed, and nothing
//! is deleted without being re-read and found still bound right before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::pinned_kind;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::{Context, Result};
use crate::api::class::DownstreamKind;
use crate::api::entitlement::ResourceCounts;
use crate::api::{ENTITLEMENT_LABEL, Entitlement, EntitlementPhase};
use crate::lifecycle::downstream::{
    Desired, Paused, desired, pause_patch, paused, pausing, resume_patch, selector_matches,
};

/// The API resources of the kinds classes list, found once by discovery.
#[derive(Default)]
pub struct Kinds(Mutex<HashMap<(String, String), ApiResource>>);

impl Kinds {
    /// The resource serving `apiVersion`/`kind`, or None when the API server
    /// does not serve it (a CRD not installed yet).
    pub async fn resolve(
        &self,
        context: &Context,
        kind: &DownstreamKind,
    ) -> Result<Option<ApiResource>> {
        let key = (kind.api_version.clone(), kind.kind.clone());
        if let Some(known) = self.0.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(Some(known));
        }
        let (group, version) = match kind.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", kind.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
        match pinned_kind(&context.client, &gvk).await {
            Ok((resource, _)) => {
                if let Ok(mut known) = self.0.lock() {
                    known.insert(key, resource.clone());
                }
                Ok(Some(resource))
            }
            Err(kube::Error::Api(status)) if status.code == 404 => Ok(None),
            Err(kube::Error::Discovery(_)) => Ok(None),
            Err(error) => Err(error.into()),
        }
    }
}

/// What governing the downstream objects did, for status, a condition and Events.
#[derive(Debug, Default)]
pub struct Governed {
    pub counts: ResourceCounts,
    /// One line per change made, e.g. `paused Deployment web (3 replicas)`.
    pub changes: Vec<String>,
    /// Workloads changed by hand while paused, left as they are.
    pub overridden: Vec<String>,
    /// Kinds the class lists that the API server does not serve.
    pub unserved: Vec<String>,
}

/// Brings every bound object to what `phase` wants; `recorded` carries the
/// deprovisioned and deleted counts of earlier reconciles.
pub async fn govern(
    context: &Context,
    entitlement: &Entitlement,
    kinds: &[DownstreamKind],
    phase: EntitlementPhase,
    deprovision_on_cancel: bool,
    recorded: Option<&ResourceCounts>,
) -> Result<Governed> {
    let mut governed = Governed {
        counts: ResourceCounts {
            deprovisioned: recorded.map_or(0, |r| r.deprovisioned),
            deleted: recorded.map_or(0, |r| r.deleted),
            ..ResourceCounts::default()
        },
        ..Governed::default()
    };
    let namespace = entitlement.namespace().unwrap_or_default();
    for kind in kinds {
        let Some(resource) = context.downstream_kinds.resolve(context, kind).await? else {
            governed
                .unserved
                .push(format!("{}/{}", kind.api_version, kind.kind));
            continue;
        };
        let api =
            Api::<DynamicObject>::namespaced_with(context.client.clone(), &namespace, &resource);
        let want = desired(phase, kind, deprovision_on_cancel);
        let how = pausing(&kind.api_version, &kind.kind);
        for object in bound(&api, entitlement).await? {
            let name = object.name_any();
            let label = format!("{} {name}", kind.kind);
            let value = serde_json::to_value(&object).unwrap_or_default();
            match (want, how) {
                (Desired::Deprovisioned | Desired::Deleted, _) => {
                    if delete_if_bound(&api, entitlement, &name).await? {
                        if want == Desired::Deleted {
                            governed.counts.deleted += 1;
                            governed.changes.push(format!("deleted {label}"));
                        } else {
                            governed.counts.deprovisioned += 1;
                            governed
                                .changes
                                .push(format!("deprovisioned (deleted) {label}"));
                        }
                    }
                    continue;
                }
                (Desired::Paused, Some(how)) => {
                    if let Some(patch) = pause_patch(&value, how) {
                        patch_object(&api, &object, patch).await?;
                        governed.changes.push(format!("paused {label}"));
                        governed.counts.paused += 1;
                    } else {
                        match paused(&value, how) {
                            Paused::Yes => governed.counts.paused += 1,
                            Paused::Overridden => governed.overridden.push(label),
                            Paused::No => {}
                        }
                    }
                }
                (Desired::Running, Some(how)) => {
                    if let Some(patch) = resume_patch(&value, how) {
                        patch_object(&api, &object, patch).await?;
                        governed.changes.push(format!("resumed {label}"));
                    }
                }
                (_, None) => {}
            }
            governed.counts.bound += 1;
        }
    }
    Ok(governed)
}

/// The objects bound to the entitlement: labelled with its name, or matching
/// its selector.
async fn bound(api: &Api<DynamicObject>, entitlement: &Entitlement) -> Result<Vec<DynamicObject>> {
    let name = entitlement.name_any();
    let labelled = ListParams::default().labels(&format!("{ENTITLEMENT_LABEL}={name}"));
    let mut objects: BTreeMap<String, DynamicObject> = api
        .list(&labelled)
        .await?
        .items
        .into_iter()
        .map(|o| (o.uid().unwrap_or_default(), o))
        .collect();
    if let Some(selector) = selector_of(entitlement) {
        for object in api.list(&ListParams::default()).await?.items {
            if selector_matches(selector, object.labels()) {
                objects.insert(object.uid().unwrap_or_default(), object);
            }
        }
    }
    Ok(objects.into_values().collect())
}

fn selector_of(
    entitlement: &Entitlement,
) -> Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector> {
    entitlement.spec.resources.as_ref()?.selector.as_ref()
}

fn still_bound(entitlement: &Entitlement, object: &DynamicObject) -> bool {
    object.labels().get(ENTITLEMENT_LABEL) == Some(&entitlement.name_any())
        || selector_of(entitlement).is_some_and(|s| selector_matches(s, object.labels()))
}

/// Re-reads the object and deletes exactly it (uid precondition) if it is
/// still bound; true when it was deleted now.
async fn delete_if_bound(
    api: &Api<DynamicObject>,
    entitlement: &Entitlement,
    name: &str,
) -> Result<bool> {
    let Some(live) = api.get_opt(name).await? else {
        return Ok(false);
    };
    if !still_bound(entitlement, &live) || live.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &params).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(false),
        Err(error) => Err(error.into()),
    }
}

/// A merge patch, refused if the object changed since it was read.
async fn patch_object(
    api: &Api<DynamicObject>,
    object: &DynamicObject,
    mut patch: Value,
) -> Result<()> {
    patch["metadata"]["resourceVersion"] = object.resource_version().into();
    api.patch(
        &object.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}
