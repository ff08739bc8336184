//! Organization reconciler, as its steps: dereference (namespace,
//! entitlements, exports, policies and holds from the index), decide (the
//! core; re-decided on live holds before the namespace is deleted), act
//! (namespace, access, purge plan, export artifacts), report (status, once,
//! before the namespace delete it records), delete the namespace, record
//! Events, and requeue at the next deadline.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};

use super::context::{Context, decide_again, reconciled, retry_later};
use super::deletes::{delete_exactly, live_holds, no_live_hold};
use super::error::Result;
use super::events::{Events, Reason, record};
use super::index::{Feeds, PolicyScopes, batched};
use super::status::{
    Applied, apply_status, apply_status_if_unchanged, ensure_finalizer, remove_finalizer,
};
use super::{log_outcomes, matters, purge};
use crate::api::{
    LifecyclePolicy, ORGANIZATION_LABEL, Organization, OrganizationLifecycle, OrganizationPhase,
    OrganizationStatus, PURGE_ANNOTATION,
};
use crate::lifecycle::conditions::{conditions, newly_set};
use crate::lifecycle::export::succeeded_exports;
use crate::lifecycle::hold::Hold;
use crate::lifecycle::organization::{
    DELETION_BLOCKED, Decision, Input, Namespace as NamespaceState, OFFBOARDING_SCHEDULED,
    PolicyView, PurgeStep, count_entitlements, decide, entitlement_locks,
};
use crate::lifecycle::policy::Subject;

/// How long the entitlement changes that concern one organization are
/// gathered before it is reconciled once for all of them, and how many
/// organizations one such batch re-counts at most: during a mass change
/// each is re-counted about once a minute (500 organizations at 10 a
/// second), not once per batch.
const ENTITLEMENTS_BATCH: std::time::Duration = std::time::Duration::from_secs(5);
const ORGANIZATIONS_PER_BATCH: usize = 50;

/// The Organization controller: its tenant namespace, the entitlements and
/// exports in it, the holds covering it and the policies applying to it
/// re-decide it.
pub fn controller(context: &Arc<Context>, feeds: &mut Feeds) -> Controller<Organization> {
    let index = &context.index;
    let (by_namespace, by_entitlement, by_export, by_hold, by_policy) = (
        index.clone(),
        index.clone(),
        index.clone(),
        index.clone(),
        index.clone(),
    );
    let scopes = PolicyScopes::default();
    Controller::for_shared_stream(
        feeds.organizations.subscribe_to(matters::own),
        index.organizations(),
    )
    // A tenant namespace changing, losing its label, or vanishing (also
    // unlabelled) wakes its organization: all namespaces are watched, and
    // found by name.
    .watches_shared_stream(
        feeds.namespaces.subscribe_to(matters::namespace_ownership),
        move |namespace| by_namespace.organization_for_namespace(&namespace.name_any()),
    )
    // Entitlement counts and locked retentions follow the entitlements, a
    // batch at a time: a mass change writes each organization once.
    .reconcile_on(batched(
        feeds
            .entitlements
            .subscribe_to(matters::entitlement_standing)
            .filter_map(move |entitlement| {
                let namespace = entitlement.namespace();
                let owner = namespace.and_then(|ns| by_entitlement.organization_for_namespace(&ns));
                futures::future::ready(owner)
            }),
        ENTITLEMENTS_BATCH,
        ORGANIZATIONS_PER_BATCH,
    ))
    // An export succeeding or expiring counts for the purge and the tombstone.
    .watches_shared_stream(
        feeds.exports.subscribe_to(matters::export_outcome),
        move |export| by_export.organization_for_namespace(&export.namespace()?),
    )
    // A hold placed, lifted or lapsing re-decides the organization it covers.
    .watches_shared_stream(feeds.holds.subscribe(), move |hold| {
        by_hold.covered_organizations(&hold)
    })
    // A policy change re-decides the organizations it applies to, or
    // applied to before its scope changed; a locked one every
    // organization, since it sets minimums for their entitlements.
    .watches_shared_stream(feeds.policies.subscribe(), move |policy| {
        let locked = policy.spec.locked == Some(true);
        let concerns = scopes.changed(&policy);
        by_policy
            .organizations()
            .state()
            .iter()
            .filter(|org| locked || concerns(&Subject::of_organization(&org.name_any())))
            .map(|org| ObjectRef::from_obj(org.as_ref()))
            .collect::<Vec<_>>()
    })
    .with_config(context.controller_config())
    .shutdown_on_signal()
}

pub async fn run(controller: Controller<Organization>, context: Arc<Context>) {
    log_outcomes(
        "Organization",
        controller.run(
            |organization, context| reconciled(organization, context.clone(), reconcile),
            retry_later,
            context,
        ),
    )
    .await;
}

async fn reconcile(organization: Arc<Organization>, context: Arc<Context>) -> Result<Action> {
    let api = Api::<Organization>::all(context.client.clone());
    let deleting = organization.metadata.deletion_timestamp.is_some();
    let recorded_phase = organization.status.as_ref().and_then(|s| s.phase);
    if deleting && recorded_phase == Some(OrganizationPhase::Purged) {
        remove_finalizer(&api, organization.as_ref()).await?;
        return Ok(Action::await_change());
    }
    if !deleting {
        ensure_finalizer(&api, organization.as_ref()).await?;
    }
    let (organization, guarded) = latest_when_offboarding(&api, organization).await?;
    let known = dereference(&context, &organization);
    let decision = decided(&context, &organization, &known).await?;
    let status = act(&context, &organization, &known, &decision).await?;
    let version = guarded.then(|| organization.resource_version()).flatten();
    let current = organization.status.as_ref();
    let name = organization.name_any();
    let applied = apply_status_if_unchanged(&api, &name, version.as_deref(), current, &status);
    if applied.await? == Applied::Stale {
        // Changed since it was read: decide again on a fresh copy.
        return Ok(decide_again());
    }
    // Recorded first, done second: a purge resumed after a crash starts here.
    match decision.purge {
        PurgeStep::DeleteNamespace { .. } => {
            delete_namespace(&context, &api, &name, &known.namespace, &status).await?;
        }
        PurgeStep::RecreateNamespace => {
            recreate_namespace(&context, &organization, &known.namespace).await?;
        }
        _ => {}
    }
    record_events(&context, &organization, &decision, current);
    let announced = current.map(|s| [s.purge_after, s.reactivation_deadline, s.final_purge_at]);
    let announced: Vec<_> = announced.into_iter().flatten().flatten().collect();
    context.count_transitions::<Organization>(&decision.history, &announced);
    Ok(context.wake_at(decision.wake_at))
}

/// The purge's writes (Purging, the tombstone) must never come from a stale
/// copy: once offboarding is under way, decide on a fresh one and write with
/// its resourceVersion as a precondition (`true`).
async fn latest_when_offboarding(
    api: &Api<Organization>,
    organization: Arc<Organization>,
) -> Result<(Arc<Organization>, bool)> {
    let recorded_phase = organization.status.as_ref().and_then(|s| s.phase);
    let offboarding = organization.spec.lifecycle != OrganizationLifecycle::Active
        || recorded_phase.is_some_and(|p| p != OrganizationPhase::Active);
    Ok(match offboarding {
        true => (Arc::new(api.get(&organization.name_any()).await?), true),
        false => (organization, false),
    })
}

/// What the organization's lifecycle depends on besides itself and the holds.
struct Known {
    namespace: String,
    namespace_state: NamespaceState,
    policies: Vec<Arc<LifecyclePolicy>>,
    /// The status as it stands, with the succeeded exports as they are now.
    recorded: OrganizationStatus,
    export_available: bool,
}

fn dereference(context: &Context, organization: &Organization) -> Known {
    let index = &context.index;
    let name = organization.name_any();
    let namespace = organization.tenant_namespace();
    let namespace_state = NamespaceState::observed(index.namespace(&namespace).as_deref(), &name);
    let mut recorded = organization.status.clone().unwrap_or_default();
    // Once the purge started, the exports are kept as they were: the
    // namespace holding them is going.
    let purge_started = matches!(
        recorded.phase,
        Some(OrganizationPhase::Purging | OrganizationPhase::Purged)
    );
    let mut export_available = false;
    if !purge_started {
        let exports = index.exports_in(&namespace);
        let statuses = exports
            .iter()
            .filter_map(|e| Some((e.metadata.name.as_deref()?, e.status.as_ref()?)));
        (recorded.exports, export_available) = succeeded_exports(statuses, context.clock.now());
    }
    Known {
        namespace,
        namespace_state,
        policies: index.all_policies(),
        recorded,
        export_available,
    }
}

/// The core's decision; the one that deletes the namespace is made again
/// on the holds as the API server has them now, not as the watch cache
/// last saw them, and the one that writes the tombstone on what is still
/// stored under the namespace.
async fn decided(
    context: &Context,
    organization: &Organization,
    known: &Known,
) -> Result<Decision> {
    let name = organization.name_any();
    let policies: Vec<&LifecyclePolicy> = known.policies.iter().map(Arc::as_ref).collect();
    let policy = PolicyView::of(&policies, &name);
    let entitlements = context.index.entitlements_in(&known.namespace);
    let locks = entitlement_locks(entitlements.iter().map(Arc::as_ref), &policies);
    let none_left = BTreeMap::new();
    let deciding = |holds: &[Hold], remnants: &BTreeMap<String, i64>| {
        decide(&Input {
            name: &name,
            spec: &organization.spec,
            created: context.created_at(organization),
            recorded: Some(&known.recorded),
            policy: &policy.effective,
            locked_archived: policy.locked_archived.as_ref(),
            locked_disabled: policy.locked_disabled.as_ref(),
            entitlement_locks: &locks,
            holds,
            namespace_name: &known.namespace,
            namespace: &known.namespace_state,
            export_available: known.export_available,
            remnants,
            deleting: organization.metadata.deletion_timestamp.is_some(),
            now: context.clock.now(),
        })
    };
    let cached_holds = context
        .index
        .holds_covering_organization(&name, &known.namespace);
    let decision = deciding(&cached_holds, &none_left);
    Ok(match decision.purge {
        PurgeStep::DeleteNamespace { .. } => {
            let covers = |h: &Hold| h.covers_organization(&name, &known.namespace);
            deciding(&live_holds(context, covers).await?, &none_left)
        }
        // Before the tombstone says everything went: what is still stored
        // under the namespace, read live.
        PurgeStep::WriteTombstone(_) => {
            let remnants = purge::remnants(context, &known.namespace).await?;
            match remnants.is_empty() {
                true => decision,
                false => deciding(&cached_holds, &remnants),
            }
        }
        _ => decision,
    })
}

/// Provisions the namespace, governs access, counts the purge plan and,
/// before the tombstone, deletes the export artifacts; returns the status
/// to write.
async fn act(
    context: &Context,
    organization: &Organization,
    known: &Known,
    decision: &Decision,
) -> Result<OrganizationStatus> {
    let name = organization.name_any();
    let namespace = &known.namespace;
    if decision.provision_namespace {
        create_namespace(context, organization, namespace).await?;
    }
    if decision.govern_access {
        set_access(context, organization, namespace, decision.access_revoked).await?;
    }
    let mut status = known.recorded.clone();
    status.observed_generation = organization.metadata.generation;
    let entitlements = context.index.entitlements_in(namespace);
    status.entitlements = Some(count_entitlements(entitlements.iter().map(Arc::as_ref)));
    decision.write_to(&mut status);
    if decision.purge.counts_plan() {
        status.purge_plan = Some(purge::plan(context, &name, namespace).await?);
    }
    let generation = organization.metadata.generation;
    let now = context.clock.now();
    status.conditions = conditions(
        &status.conditions,
        &decision.verdict,
        &decision.extra,
        generation,
        now,
    );
    // The tombstone says the export ZIPs went: they go first (after a live
    // look for holds).
    if matches!(decision.purge, PurgeStep::WriteTombstone(_)) {
        purge::delete_artifacts(context, &name, namespace).await?;
    }
    Ok(status)
}

/// Deletes the tenant namespace, and once the API server accepted that,
/// records when: the tombstone is written only for a namespace tenure itself
/// deleted.
async fn delete_namespace(
    context: &Context,
    api: &Api<Organization>,
    name: &str,
    namespace: &str,
    written: &OrganizationStatus,
) -> Result<()> {
    if purge::delete_namespace(context, name, namespace).await?
        && written.namespace_deleted_at.is_none()
    {
        let mut deleted = written.clone();
        deleted.namespace_deleted_at = Some(context.clock.now());
        apply_status(api, name, Some(written), &deleted).await?;
    }
    Ok(())
}

/// Creates the tenant namespace again, labelled for the organization and
/// marked as the purge's, and deletes it like the purge did (the label and
/// the holds read live first): what its first deletion missed goes with it.
async fn recreate_namespace(
    context: &Context,
    organization: &Organization,
    namespace: &str,
) -> Result<()> {
    let name = organization.name_any();
    // A hold placed since the decision is honoured before anything is
    // created: a namespace created again under a hold would be kept (and
    // its remnants exposed to the tenant) until the hold ends.
    no_live_hold(context, context.clock.now(), |h| {
        h.covers_organization(&name, namespace)
    })
    .await?;
    let mut again = Namespace {
        metadata: labelled(namespace, &name),
        ..Default::default()
    };
    again.metadata.annotations = Some(BTreeMap::from([(PURGE_ANNOTATION.into(), name.clone())]));
    match Api::<Namespace>::all(context.client.clone())
        .create(&PostParams::default(), &again)
        .await
    {
        Ok(_) => {
            let note =
                format!("created namespace {namespace} again to delete what its deletion missed");
            record(context, organization, Reason::NamespaceRecreated, note).await;
        }
        // Created by an earlier attempt (or by someone else: the delete
        // checks the label).
        Err(kube::Error::Api(status)) if status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    purge::delete_namespace(context, &name, namespace).await?;
    Ok(())
}

/// Events follow the status write: a crash before it repeats them. They are
/// recorded in the background, so a crash right after the write loses what
/// was not sent yet; for transitions `status.history` keeps them, but a
/// reminder or the final confirmation is then not sent (its being sent is
/// recorded with the write). Making notices durable is left to the webhook
/// delivery, which needs the same record.
fn record_events(
    context: &Context,
    organization: &Organization,
    decision: &Decision,
    before: Option<&OrganizationStatus>,
) {
    let mut events = Events::about(organization);
    events.history(&decision.history);
    let before = before.map(|s| s.conditions.as_slice());
    for condition in newly_set(&decision.extra, before) {
        match condition.type_.as_str() {
            DELETION_BLOCKED => events.add(Reason::DeletionBlocked, condition.message.clone()),
            OFFBOARDING_SCHEDULED => events.add(
                Reason::Condition(OFFBOARDING_SCHEDULED),
                condition.message.clone(),
            ),
            _ => {}
        }
    }
    for notice in &decision.notices {
        events.add(Reason::Notice(notice.kind), notice.message.clone());
    }
    events.send(context);
}

/// The deny-all NetworkPolicy that revokes access to a Disabled or Archived
/// organization's namespace.
const ACCESS_POLICY: &str = crate::lifecycle::system::ACCESS_POLICY;

/// Revokes (deny-all ingress and egress) or restores access to the tenant
/// namespace. Only a NetworkPolicy carrying the organization's label is removed.
async fn set_access(
    context: &Context,
    organization: &Organization,
    namespace: &str,
    revoked: bool,
) -> Result<()> {
    let name = organization.name_any();
    let api = Api::<NetworkPolicy>::namespaced(context.client.clone(), namespace);
    let existing = api.get_opt(ACCESS_POLICY).await?;
    let ours = |policy: &NetworkPolicy| {
        policy.labels().get(ORGANIZATION_LABEL).map(String::as_str) == Some(name.as_str())
    };
    match (revoked, existing) {
        (true, None) => {
            let policy = NetworkPolicy {
                metadata: labelled(ACCESS_POLICY, &name),
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(LabelSelector::default()),
                    policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &policy).await?;
            let note = format!("NetworkPolicy {namespace}/{ACCESS_POLICY} denies all traffic");
            record(context, organization, Reason::AccessRevoked, note).await;
        }
        (false, Some(existing)) if ours(&existing) => {
            let removed = delete_exactly(&api, &existing).await?;
            if removed {
                let note = format!("NetworkPolicy {namespace}/{ACCESS_POLICY} removed");
                record(context, organization, Reason::AccessRestored, note).await;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Metadata named `name` carrying the organization's label.
fn labelled(name: &str, organization: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        labels: Some(BTreeMap::from([(
            ORGANIZATION_LABEL.to_string(),
            organization.to_string(),
        )])),
        ..Default::default()
    }
}

async fn create_namespace(
    context: &Context,
    organization: &Organization,
    namespace: &str,
) -> Result<()> {
    let new = Namespace {
        metadata: labelled(namespace, &organization.name_any()),
        ..Default::default()
    };
    // Also when someone created it between our read and our create (409): the
    // error retries, and the retry decides with what is there then.
    Api::<Namespace>::all(context.client.clone())
        .create(&PostParams::default(), &new)
        .await?;
    let note = format!("created tenant namespace {namespace}");
    record(context, organization, Reason::NamespaceCreated, note).await;
    Ok(())
}
