//! The objects an entitlement governs, through the dynamic API: found live by
//! the binding label or `spec.resources.selector`, then paused, resumed or
//! deleted as the pure core says. Nothing unbound is ever changed, and nothing
//! is deleted without being re-read and found still bound, and the holds
//! re-read live, right before.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::reflector::Store;
use kube::{Api, ResourceExt};
use serde_json::Value;

use super::context::Context;
use super::deletes::{delete_exactly, no_live_hold};
use super::discovery::Served;
use super::error::{Error, Result};
use crate::api::class::{DownstreamKind, PurgeAction};
use crate::api::entitlement::ResourceCounts;
use crate::api::{ENTITLEMENT_LABEL, Entitlement, EntitlementPhase};
use crate::lifecycle::conditions::from_time;
use crate::lifecycle::downstream::{ObjectAction, Outcome, binds, desired, object_action, pausing};

/// Caches of the objects labelled for an entitlement, of each downstream
/// kind the classes listed when the controller started: what an
/// entitlement's reconcile reads instead of listing every kind each time.
#[derive(Default)]
pub struct BoundCaches(Mutex<HashMap<(String, String), BoundCache>>);

/// A cache, and whether it holds its first full list yet.
#[derive(Clone)]
struct BoundCache {
    store: Store<DynamicObject>,
    filled: tokio::sync::watch::Receiver<bool>,
}

impl BoundCaches {
    /// Keeps `cache`; must be called within the Tokio runtime.
    pub fn insert(&self, kind: &DownstreamKind, cache: Store<DynamicObject>) {
        // One task waits for the cache to fill and tells every reconcile
        // waiting meanwhile through a watch channel, which wakes them all:
        // kube-runtime's `Store::wait_until_ready` wakes only the last of
        // several tasks waiting at once (they share one oneshot receiver,
        // which keeps one waker), and the others would hang until their
        // reconcile timed out.
        let (fill, filled) = tokio::sync::watch::channel(false);
        let store = cache.clone();
        tokio::spawn(async move {
            if store.wait_until_ready().await.is_ok() {
                let _ = fill.send(true);
            }
        });
        let key = (kind.api_version.clone(), kind.kind.clone());
        self.0.lock().unwrap_or_else(|p| p.into_inner()).insert(
            key,
            BoundCache {
                store: cache,
                filled,
            },
        );
    }

    fn of(&self, kind: &DownstreamKind) -> Option<BoundCache> {
        let key = (kind.api_version.clone(), kind.kind.clone());
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
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
            let label = format!("{} {}", kind.kind, object.name_any());
            let value = serde_json::to_value(&object).unwrap_or_default();
            let after_purge = created_after(context, &object, how.purged_since);
            match object_action(want, pause, &value, after_purge) {
                // Deleted: no longer bound.
                ObjectAction::Delete(action) => {
                    if delete_if_bound(context, &api, entitlement, &object.name_any()).await? {
                        governed.changed(action, label);
                    }
                    continue;
                }
                ObjectAction::Patch(patch, action) => {
                    patch_object(&api, &object, patch).await?;
                    governed.changed(action, label);
                }
                ObjectAction::Leave(why) => governed.left(why, label),
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
    let objects = bound(&api, context.bound_caches.of(kind), kind, entitlement).await?;
    Ok(Some((api, objects)))
}

/// The objects bound to the entitlement: labelled with its name, or matching
/// its selector and labelled for no other entitlement.
/// Objects labelled for an entitlement are read from the kind's cache when
/// there is one (what is deleted is re-read live first).
async fn bound(
    api: &Api<DynamicObject>,
    cache: Option<BoundCache>,
    kind: &DownstreamKind,
    entitlement: &Entitlement,
) -> Result<Vec<DynamicObject>> {
    let name = entitlement.name_any();
    let labelled: Vec<DynamicObject> = match cache {
        Some(cache) => {
            // Read once it holds its first full list, so that no bound
            // object counts as missing.
            let mut filled = cache.filled.clone();
            filled
                .wait_for(|filled| *filled)
                .await
                .map_err(|_| Error::WatchStopped(format!("{} {}", kind.api_version, kind.kind)))?;
            let namespace = entitlement.namespace();
            cache
                .store
                .state()
                .iter()
                .filter(|o| o.namespace() == namespace)
                .filter(|o| o.labels().get(ENTITLEMENT_LABEL) == Some(&name))
                .map(|o| o.as_ref().clone())
                .collect()
        }
        None => {
            let labelled = ListParams::default().labels(&format!("{ENTITLEMENT_LABEL}={name}"));
            api.list(&labelled).await?.items
        }
    };
    let mut objects: BTreeMap<String, DynamicObject> = labelled
        .into_iter()
        .map(|o| (o.uid().unwrap_or_default(), o))
        .collect();
    if let Some(selector) = entitlement.selector() {
        for object in api.list(&ListParams::default()).await?.items {
            if binds(&name, Some(selector), object.labels()) {
                objects.insert(object.uid().unwrap_or_default(), object);
            }
        }
    }
    Ok(objects.into_values().collect())
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
        entitlement.selector(),
        live.labels(),
    );
    if !bound_now || live.metadata.deletion_timestamp.is_some() {
        return Ok(false);
    }
    // Every entitlement that binds the object (another's selector may match
    // it too) keeps it while a hold covers that entitlement.
    let namespace = entitlement.namespace().unwrap_or_default();
    let binders: Vec<(String, Option<String>)> = context
        .index
        .binders(&namespace, live.labels())
        .iter()
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
    delete_exactly(api, &live).await
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::core::{ApiResource, GroupVersionKind};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;

    use super::*;

    #[tokio::test]
    async fn every_reconcile_waiting_for_a_bound_cache_goes_on_once_it_fills() {
        let gvk = GroupVersionKind::gvk("", "v1", "ConfigMap");
        let mut writer = Writer::<DynamicObject>::new(ApiResource::from_gvk(&gvk));
        let kind = DownstreamKind {
            api_version: "v1".into(),
            kind: "ConfigMap".into(),
            on_suspend: Default::default(),
            on_cancel: Default::default(),
            on_purge: PurgeAction::Delete,
        };
        let caches = BoundCaches::default();
        caches.insert(&kind, writer.as_reader());
        let waiting: Vec<_> = (0..8)
            .map(|_| {
                let mut filled = caches.of(&kind).unwrap().filled;
                tokio::spawn(async move { filled.wait_for(|filled| *filled).await.is_ok() })
            })
            .collect();
        // Every waiter is parked before the cache fills.
        tokio::time::sleep(Duration::from_millis(50)).await;
        writer.apply_watcher_event(&watcher::Event::Init);
        writer.apply_watcher_event(&watcher::Event::InitDone);
        for waiter in waiting {
            let woke = tokio::time::timeout(Duration::from_secs(5), waiter).await;
            assert!(woke.is_ok_and(|w| w.unwrap()), "a waiter was never woken");
        }
    }
}
