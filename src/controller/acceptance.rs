//! The reconciler of the kinds that have no lifecycle, only a verdict:
//! EntitlementClass, LifecyclePolicy and RetentionHold. One generic reconcile
//! reads what the verdict depends on, asks the core
//! (`lifecycle::acceptance`), and writes observedGeneration and conditions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kube::ResourceExt;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};

use super::context::{Context, reconciled, retry_later};
use super::error::Result;
use super::index::{Feed, Feeds, Index};
use super::status::{Applied, WithStatus, apply_status_if_unchanged};
use super::{log_outcomes, matters};
use crate::api::{EntitlementClass, LifecyclePolicy, RetentionHold, RetentionHoldStatus};
use crate::lifecycle::acceptance::{self, Judgement};
use crate::lifecycle::conditions::{Verdict, conditions};
use crate::lifecycle::policy;

pub trait Accepted: WithStatus {
    /// Reads what the verdict depends on and asks the core.
    fn judge<'a>(
        &'a self,
        context: &'a Context,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Judgement>>;
    /// Fills status fields besides the conditions from what the index holds.
    fn observe(&self, _index: &Index, _status: &mut Self::Status) {}
    /// Whether this instance writes its status: every shard judges classes
    /// and policies alike, but a hold's status lists what it covers, which
    /// only the shard holding its target sees.
    fn judged_here(&self, _context: &Context) -> bool {
        true
    }
    /// The index's cache of this kind, and the feed of its changes.
    fn cache(index: &Index) -> Store<Self>;
    fn feed(feeds: &mut Feeds) -> &mut Feed<Self>;
    /// Other kinds whose changes re-decide objects of this one.
    fn related(
        controller: Controller<Self>,
        _index: &Arc<Index>,
        _feeds: &mut Feeds,
    ) -> Controller<Self> {
        controller
    }
    /// Whether the status holds state of its own (not only conditions), so
    /// that a write from a stale copy must be refused.
    const GUARDED: bool = false;
    /// Others of the same kind whose conditions a change of `changed` may
    /// change (a policy of the same scope, a class of the same prefix).
    fn siblings(_changed: &Self, _all: &[Arc<Self>]) -> Vec<ObjectRef<Self>> {
        Vec::new()
    }
}

/// The controller of `K`, woken by its own changes, its siblings' and the
/// related kinds'.
pub fn controller<K: Accepted>(context: &Arc<Context>, feeds: &mut Feeds) -> Controller<K> {
    let store = K::cache(&context.index);
    let siblings = store.clone();
    let own = K::feed(feeds).subscribe_to(matters::own::<K>);
    let controller = Controller::for_shared_stream(own, store)
        .watches_shared_stream(K::feed(feeds).subscribe(), move |changed| {
            K::siblings(&changed, &siblings.state())
        })
        .with_config(context.controller_config())
        .shutdown_on_signal();
    K::related(controller, &context.index, feeds)
}

pub async fn run<K: Accepted>(controller: Controller<K>, context: Arc<Context>) {
    log_outcomes(
        K::kind(&()).into_owned(),
        controller.run(
            |object, context| reconciled(object, context.clone(), reconcile),
            retry_later,
            context,
        ),
    )
    .await;
}

async fn reconcile<K: Accepted>(object: Arc<K>, context: Arc<Context>) -> Result<Action> {
    if !object.judged_here(&context) {
        return Ok(Action::await_change());
    }
    let now = context.clock.now();
    let judged = object.judge(&context, now).await?;
    let generation = object.meta().generation;
    let current = object.status().cloned();
    let mut status = current.clone().unwrap_or_default();
    object.observe(&context.index, &mut status);
    let (observed_generation, status_conditions) = K::observed(&mut status);
    *observed_generation = generation;
    *status_conditions = conditions(
        status_conditions,
        &judged.verdict,
        &judged.extra,
        generation,
        now,
    );
    let version = object.resource_version().filter(|_| K::GUARDED);
    let api = object.api(context.client.clone());
    let name = object.name_any();
    let applied =
        apply_status_if_unchanged(&api, &name, version.as_deref(), current.as_ref(), &status);
    Ok(match applied.await? {
        Applied::Done(_) => context.wake_at(judged.wake_at),
        // The newer version is on its way through the watch, and is decided then.
        Applied::Stale => Action::await_change(),
    })
}

/// Why `class` cannot be used, if it cannot (see
/// [`acceptance::class_refusal`]): what its entitlements stall on too.
pub async fn class_refusal(context: &Context, class: &EntitlementClass) -> Result<Option<Verdict>> {
    let owner = context.index.prefix_owner(class);
    let scopes = context
        .downstream_kinds
        .scopes(context, &class.spec.downstream)
        .await?;
    Ok(acceptance::class_refusal(class, owner.as_deref(), &scopes))
}

impl Accepted for EntitlementClass {
    // Status keeps the code sequences, written by the code allocator too.
    const GUARDED: bool = true;
    /// Another class taking or giving up a prefix changes this one's verdict:
    /// those of the same prefix, and those stalled on a prefix in use (the
    /// class holding it may have moved to another).
    fn siblings(changed: &Self, all: &[Arc<Self>]) -> Vec<ObjectRef<Self>> {
        let waiting = |c: &EntitlementClass| {
            c.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Stalled" && c.reason == "PrefixInUse")
            })
        };
        all.iter()
            .filter(|c| c.spec.code_prefix == changed.spec.code_prefix || waiting(c))
            .map(|c| ObjectRef::from_obj(c.as_ref()))
            .collect()
    }
    fn judge<'a>(
        &'a self,
        context: &'a Context,
        _: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Judgement>> {
        Box::pin(async move {
            let refusal = class_refusal(context, self).await?;
            Ok(acceptance::class(self, refusal))
        })
    }
    fn cache(index: &Index) -> Store<Self> {
        index.classes()
    }
    fn feed(feeds: &mut Feeds) -> &mut Feed<Self> {
        &mut feeds.classes
    }
}

impl Accepted for LifecyclePolicy {
    /// A policy of the same scope may start or stop conflicting with it.
    fn siblings(_changed: &Self, all: &[Arc<Self>]) -> Vec<ObjectRef<Self>> {
        all.iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }
    fn judge<'a>(
        &'a self,
        context: &'a Context,
        _: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Judgement>> {
        let policies = context.index.all_policies();
        let policies: Vec<&LifecyclePolicy> = policies.iter().map(Arc::as_ref).collect();
        let name = self.name_any();
        let same_scope = policy::conflicts(&policies).remove(&name);
        let judged = acceptance::policy(self, &name, same_scope.as_deref());
        Box::pin(async move { Ok(judged) })
    }
    fn cache(index: &Index) -> Store<Self> {
        index.policies()
    }
    fn feed(feeds: &mut Feeds) -> &mut Feed<Self> {
        &mut feeds.policies
    }
}

/// Whether the organization or entitlement `hold` names exists.
fn target_found(hold: &RetentionHold, index: &Index) -> bool {
    match (&hold.spec.organization, &hold.spec.entitlement) {
        (Some(name), _) => index.organization(name).is_some(),
        (None, Some(target)) => index.entitlement(&target.namespace, &target.name).is_some(),
        (None, None) => false,
    }
}

impl Accepted for RetentionHold {
    /// With shards, by the one whose cache holds its target; a hold whose
    /// target no shard has is judged by none.
    fn judged_here(&self, context: &Context) -> bool {
        !context.sharded || target_found(self, &context.index)
    }

    /// `status.covers`: the organization and its namespace, and every
    /// entitlement the hold covers, once its target exists.
    fn observe(&self, index: &Index, status: &mut RetentionHoldStatus) {
        let mut covers = Vec::new();
        if let Some(organization) = self
            .spec
            .organization
            .as_deref()
            .and_then(|n| index.organization(n))
        {
            covers.push(format!("Organization/{}", organization.name_any()));
            covers.push(format!("Namespace/{}", organization.tenant_namespace()));
        }
        if target_found(self, index) {
            let mut entitlements: Vec<String> = index
                .covered_entitlements(self)
                .iter()
                .map(|e| {
                    format!(
                        "Entitlement/{}/{}",
                        e.namespace().unwrap_or_default(),
                        e.name_any()
                    )
                })
                .collect();
            entitlements.sort();
            covers.extend(entitlements);
        }
        status.covers = covers;
    }
    fn judge<'a>(
        &'a self,
        context: &'a Context,
        now: DateTime<Utc>,
    ) -> BoxFuture<'a, Result<Judgement>> {
        let judged = acceptance::hold(self, target_found(self, &context.index), now);
        Box::pin(async move { Ok(judged) })
    }
    fn cache(index: &Index) -> Store<Self> {
        index.holds()
    }
    fn feed(feeds: &mut Feeds) -> &mut Feed<Self> {
        &mut feeds.holds
    }
    /// Its target appearing or going, and an entitlement it covers.
    fn related(
        controller: Controller<Self>,
        index: &Arc<Index>,
        feeds: &mut Feeds,
    ) -> Controller<Self> {
        let (by_organization, by_entitlement) = (index.clone(), index.clone());
        controller
            .watches_shared_stream(
                feeds
                    .organizations
                    .subscribe_to(matters::organization_namespace),
                move |organization| {
                    by_organization.holds_naming_organization(&organization.name_any())
                },
            )
            .watches_shared_stream(
                feeds
                    .entitlements
                    .subscribe_to(matters::entitlement_organization),
                move |entitlement| by_entitlement.holds_listing(&entitlement),
            )
    }
}
