//! The objects an entitlement governs, through the dynamic API: found live by
//! the binding label or `spec.resources.selector`, then paused, resumed or
//! deleted as the pure core says. Nothing unbound is ever changed, and nothing
//! is deleted without being re-read and found still bound, and the holds
//! re-read live, right before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, Preconditions};
use kube::core::{ApiResource, DynamicObject, GroupVersionKind};
use kube::discovery::{Scope, pinned_kind};
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::{Context, Result, no_live_hold};
use crate::api::class::{DownstreamKind, PurgeAction};
use crate::api::entitlement::ResourceCounts;
use crate::api::{ENTITLEMENT_LABEL, Entitlement, EntitlementPhase};
use crate::lifecycle::conditions::from_time;
use crate::lifecycle::downstream::{
    Desired, KindScope, Outcome, Paused, binds, desired, pause_patch, paused, pausing, resume_patch,
};

/// What discovery says of a kind a class lists.
#[derive(Clone, Debug)]
pub enum Served {
    Namespaced(ApiResource),
    ClusterScoped,
    /// Not served (a CRD not installed yet).
    No,
}

impl Served {
    pub fn scope(&self) -> KindScope {
        match self {
            Served::Namespaced(_) => KindScope::Namespaced,
            Served::ClusterScoped => KindScope::Cluster,
            Served::No => KindScope::NotServed,
        }
    }
}

/// What discovery found for the kinds classes list, kept once found.
#[derive(Default)]
pub struct Kinds(Mutex<HashMap<(String, String), Served>>);

impl Kinds {
    /// How the API server serves `apiVersion`/`kind`.
    pub async fn resolve(&self, context: &Context, kind: &DownstreamKind) -> Result<Served> {
        let key = (kind.api_version.clone(), kind.kind.clone());
        if let Some(known) = self.0.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(known);
        }
        let (group, version) = match kind.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", kind.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
        let served = match pinned_kind(&context.client, &gvk).await {
            Ok((resource, capabilities)) => match capabilities.scope {
                Scope::Namespaced => Served::Namespaced(resource),
                Scope::Cluster => Served::ClusterScoped,
            },
            // Not kept: the kind may be served later.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Served::No),
            Err(kube::Error::Discovery(_)) => return Ok(Served::No),
            Err(error) => return Err(error.into()),
        };
        if let Ok(mut known) = self.0.lock() {
            known.insert(key, served.clone());
        }
        Ok(served)
    }

    /// The scope of each kind `downstream` lists, in order.
    pub async fn scopes(
        &self,
        context: &Context,
        downstream: &[DownstreamKind],
    ) -> Result<Vec<KindScope>> {
        let mut scopes = Vec::with_capacity(downstream.len());
        for kind in downstream {
            scopes.push(self.resolve(context, kind).await?.scope());
        }
        Ok(scopes)
    }
}

/// How the entitlement's phase bears on its bound objects.
pub struct Governing<'a> {
    pub phase: EntitlementPhase,
    /// Whether a cancellation deletes what `onCancel: Delete` names.
    pub deprovision: bool,
    /// A hold is in force: every delete becomes retain.
    pub held: bool,
    /// Purged since then: objects created later are never deleted.
    pub purged_since: Option<DateTime<Utc>>,
    /// The deprovisioned and deleted counts of earlier reconciles.
    pub recorded: Option<&'a ResourceCounts>,
}

/// Brings every bound object to what the phase wants.
pub async fn govern(
    context: &Context,
    entitlement: &Entitlement,
    kinds: &[DownstreamKind],
    how: Governing<'_>,
) -> Result<Outcome> {
    let mut governed = Outcome {
        counts: ResourceCounts {
            deprovisioned: how.recorded.map_or(0, |r| r.deprovisioned),
            deleted: how.recorded.map_or(0, |r| r.deleted),
            ..ResourceCounts::default()
        },
        ..Outcome::default()
    };
    for kind in kinds {
        let Some((api, objects)) = bound_of_kind(context, entitlement, kind).await? else {
            governed
                .unserved
                .push(format!("{}/{}", kind.api_version, kind.kind));
            continue;
        };
        let want = desired(how.phase, kind, how.deprovision, how.held);
        let pause = pausing(&kind.api_version, &kind.kind);
        for object in objects {
            let name = object.name_any();
            let label = format!("{} {name}", kind.kind);
            let value = serde_json::to_value(&object).unwrap_or_default();
            match (want, pause) {
                (Desired::Deleted, _) if created_after(context, &object, how.purged_since) => {
                    governed.after_purge.push(label);
                }
                (Desired::Deprovisioned | Desired::Deleted, _) => {
                    if delete_if_bound(context, &api, entitlement, &name).await? {
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
                (Desired::Retained, _) => governed.retained.push(label),
                (Desired::Paused, Some(pause)) => {
                    if let Some(patch) = pause_patch(&value, pause) {
                        patch_object(&api, &object, patch).await?;
                        governed.changes.push(format!("paused {label}"));
                        governed.counts.paused += 1;
                    } else {
                        match paused(&value, pause) {
                            Paused::Yes => governed.counts.paused += 1,
                            Paused::Overridden => governed.overridden.push(label),
                            Paused::No => {}
                        }
                    }
                }
                (Desired::Running, Some(pause)) => {
                    if let Some(patch) = resume_patch(&value, pause) {
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

/// What the entitlement's purge would delete now, by kind: the review its
/// final grace is for.
pub async fn purge_plan(
    context: &Context,
    entitlement: &Entitlement,
    kinds: &[DownstreamKind],
) -> Result<BTreeMap<String, i64>> {
    let mut plan = BTreeMap::new();
    for kind in kinds.iter().filter(|k| k.on_purge == PurgeAction::Delete) {
        if let Some((_, objects)) = bound_of_kind(context, entitlement, kind).await?
            && !objects.is_empty()
        {
            *plan.entry(kind.kind.clone()).or_default() += objects.len() as i64;
        }
    }
    Ok(plan)
}

/// Whether `object` was created after the entitlement was purged (or in the
/// same second: then it is kept, the safe side).
fn created_after(
    context: &Context,
    object: &DynamicObject,
    purged_since: Option<DateTime<Utc>>,
) -> bool {
    let created = object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| context.clock.observed(from_time(t)));
    matches!((created, purged_since), (Some(created), Some(purged)) if created >= purged)
}

/// The API of `kind` in the entitlement's namespace and the objects of it
/// bound to the entitlement; None when the kind is not served.
async fn bound_of_kind(
    context: &Context,
    entitlement: &Entitlement,
    kind: &DownstreamKind,
) -> Result<Option<(Api<DynamicObject>, Vec<DynamicObject>)>> {
    let Served::Namespaced(resource) = context.downstream_kinds.resolve(context, kind).await?
    else {
        return Ok(None);
    };
    let namespace = entitlement.namespace().unwrap_or_default();
    let api = Api::<DynamicObject>::namespaced_with(context.client.clone(), &namespace, &resource);
    let objects = bound(&api, entitlement).await?;
    Ok(Some((api, objects)))
}

/// The objects bound to the entitlement: labelled with its name, or matching
/// its selector and labelled for no other entitlement.
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
            if binds(&name, Some(selector), object.labels()) {
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

/// Re-reads the object and the holds, and deletes exactly it (uid
/// precondition) if it is still bound and no hold covers the entitlement;
/// true when it was deleted now.
async fn delete_if_bound(
    context: &Context,
    api: &Api<DynamicObject>,
    entitlement: &Entitlement,
    name: &str,
) -> Result<bool> {
    let Some(live) = api.get_opt(name).await? else {
        return Ok(false);
    };
    let bound_now = binds(
        &entitlement.name_any(),
        selector_of(entitlement),
        live.labels(),
    );
    if !bound_now || live.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    // Every entitlement that binds the object (another's selector may match
    // it too) keeps it while a hold covers that entitlement.
    let namespace = entitlement.namespace().unwrap_or_default();
    let binders: Vec<(String, Option<String>)> = context
        .entitlements
        .state()
        .iter()
        .filter(|e| e.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|e| binds(&e.name_any(), selector_of(e), live.labels()))
        .map(|e| (e.name_any(), e.spec.organization.clone()))
        .chain([(
            entitlement.name_any(),
            entitlement.spec.organization.clone(),
        )])
        .collect();
    no_live_hold(context, context.clock.now(), |hold| {
        binders.iter().any(|(name, organization)| {
            hold.covers_entitlement(&namespace, name, organization.as_deref())
        })
    })
    .await?;
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
