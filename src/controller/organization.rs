//! Organization reconciler: the tenant namespace, access, the finalizer that
//! keeps an unpurged organization from being deleted, the purge, and status.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::status::{
    apply_status, apply_status_if_unchanged, ensure_finalizer, is_conflict, remove_finalizer,
};
use super::{
    Context, PolicyScopes, Result, as_hold, cached_holds, created_at, live_holds, log_outcomes,
    purge, reconciled, record, record_history, requeue_at, retry_later,
};
use crate::api::{
    DataExport, Entitlement, EntitlementPhase, LifecyclePolicy, ORGANIZATION_LABEL, Organization,
    OrganizationLifecycle, OrganizationPhase, PURGE_ANNOTATION, RetentionHold,
    organization::EntitlementCounts,
};
use crate::lifecycle::conditions::{Extra, conditions, has_condition};
use crate::lifecycle::export::available;
use crate::lifecycle::hold::Hold;
use crate::lifecycle::organization::{
    EntitlementLock, Input, LockedRetention, Namespace as NamespaceState, PurgeStep, decide,
};
use crate::lifecycle::policy::{Subject, keys, locked_floor, resolve};

pub async fn run(context: Arc<Context>) {
    let organizations = Api::<Organization>::all(context.client.clone());
    let namespaces = Api::<Namespace>::all(context.client.clone());
    let controller = Controller::new(organizations, watcher::Config::default());
    let by_policy = controller.store();
    let by_tenant_namespace = controller.store();
    let by_namespace = controller.store();
    let by_export = controller.store();
    let hold_context = context.clone();
    let scopes = PolicyScopes::default();
    let controller = controller
        // A tenant namespace changing, losing its label, or vanishing (also
        // unlabelled) wakes its organization: all namespaces are watched, and
        // found by name.
        .watches(namespaces, watcher::Config::default(), move |namespace| {
            owner_of(&by_tenant_namespace, &namespace.name_any())
        })
        // Entitlement counts and locked retentions follow the entitlements.
        .watches(
            Api::<Entitlement>::all(context.client.clone()),
            watcher::Config::default(),
            move |entitlement| owner_of(&by_namespace, &entitlement.namespace()?),
        )
        // An export succeeding or expiring counts for the purge and the tombstone.
        .watches(
            Api::<DataExport>::all(context.client.clone()),
            watcher::Config::default(),
            move |export| owner_of(&by_export, &export.namespace()?),
        )
        // A hold placed, lifted or lapsing re-decides the organization it covers.
        .watches(
            Api::<RetentionHold>::all(context.client.clone()),
            watcher::Config::default(),
            move |hold| {
                let hold = as_hold(&hold_context, &hold);
                hold_context
                    .organizations
                    .state()
                    .iter()
                    .filter(|org| {
                        hold.covers_organization(&org.name_any(), &org.tenant_namespace())
                    })
                    .map(|org| ObjectRef::from_obj(org.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        // A policy change re-decides the organizations it applies to, or
        // applied to before its scope changed; a locked one every
        // organization, since it sets minimums for their entitlements.
        .watches(
            Api::<LifecyclePolicy>::all(context.client.clone()),
            watcher::Config::default(),
            move |policy| {
                let locked = policy.spec.locked == Some(true);
                let concerns = scopes.changed(&policy);
                by_policy
                    .state()
                    .iter()
                    .filter(|org| {
                        let name = org.name_any();
                        let subject = Subject {
                            organization: Some(&name),
                            ..Subject::default()
                        };
                        locked || concerns(&subject)
                    })
                    .map(|org| ObjectRef::from_obj(org.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal();
    log_outcomes(
        "Organization",
        controller.run(
            |organization, context| {
                reconciled(
                    organization.clone(),
                    context.clone(),
                    reconcile(organization, context),
                )
            },
            retry_later,
            context,
        ),
    )
    .await;
}

/// The organization whose tenant namespace is `namespace`, if any.
fn owner_of(store: &Store<Organization>, namespace: &str) -> Option<ObjectRef<Organization>> {
    store
        .state()
        .iter()
        .find(|org| org.tenant_namespace() == namespace)
        .map(|org| ObjectRef::from_obj(org.as_ref()))
}

async fn reconcile(organization: Arc<Organization>, context: Arc<Context>) -> Result<Action> {
    let api = Api::<Organization>::all(context.client.clone());
    let name = organization.name_any();
    let deleting = organization.metadata.deletion_timestamp.is_some();
    let recorded_phase = organization.status.as_ref().and_then(|s| s.phase);
    if deleting && recorded_phase == Some(OrganizationPhase::Purged) {
        remove_finalizer(&api, organization.as_ref()).await?;
        return Ok(Action::await_change());
    }
    if !deleting {
        ensure_finalizer(&api, organization.as_ref()).await?;
    }
    // The purge's writes (Purging, the tombstone) must never come from a
    // stale copy: once offboarding is under way, decide on a fresh one and
    // write with its resourceVersion as a precondition.
    let offboarding = organization.spec.lifecycle != OrganizationLifecycle::Active
        || recorded_phase.is_some_and(|p| p != OrganizationPhase::Active);
    let organization = match offboarding {
        true => Arc::new(api.get(&name).await?),
        false => organization,
    };
    let current = organization.status.clone();
    let now = context.clock.now();
    let namespace = organization.tenant_namespace();
    let namespace_state = observe_namespace(&context, &name, &namespace).await?;
    let policies = context.policies.state();
    let policies: Vec<&LifecyclePolicy> = policies.iter().map(Arc::as_ref).collect();
    let subject = Subject {
        organization: Some(&name),
        ..Subject::default()
    };
    let effective = resolve(&policies, &subject, None);
    let floor = |key| {
        locked_floor(&policies, &subject, key)
            .map(|(minimum, policy)| LockedRetention { minimum, policy })
    };
    let (locked_archived, locked_disabled) = (
        floor(keys::DATA_RETENTION_DAYS),
        floor(keys::DISABLED_RETENTION_DAYS),
    );
    let entitlement_locks = entitlement_locks(&context, &policies, &namespace);
    // Once the purge started, the exports are kept as they were: the
    // namespace holding them is going.
    let purge_started = matches!(
        recorded_phase,
        Some(OrganizationPhase::Purging | OrganizationPhase::Purged)
    );
    let (exports, export_available) = match purge_started {
        true => (
            current
                .as_ref()
                .map(|s| s.exports.clone())
                .unwrap_or_default(),
            false,
        ),
        false => exports_of(&context, &namespace, now).await?,
    };
    let mut recorded = current.clone().unwrap_or_default();
    recorded.exports = exports;
    let created = created_at(&context, organization.as_ref());
    let deciding = |holds: &[Hold]| {
        decide(&Input {
            name: &name,
            spec: &organization.spec,
            created,
            recorded: Some(&recorded),
            policy: &effective,
            locked_archived: locked_archived.as_ref(),
            locked_disabled: locked_disabled.as_ref(),
            entitlement_locks: &entitlement_locks,
            holds,
            namespace_name: &namespace,
            namespace: &namespace_state,
            export_available,
            now,
        })
    };
    let covers = |h: &Hold| h.covers_organization(&name, &namespace);
    let mut decision = deciding(&cached_holds(&context, covers));
    if matches!(decision.purge, PurgeStep::DeleteNamespace { .. }) {
        // Recording Purging and deleting are decided on the holds as the API
        // server has them now, not as the watch cache last saw them.
        decision = deciding(&live_holds(&context, covers).await?);
    }

    if decision.provision_namespace {
        create_namespace(&context, &organization, &namespace).await?;
    }
    let purging = matches!(
        decision.phase,
        OrganizationPhase::Purging | OrganizationPhase::Purged
    );
    if namespace_state == NamespaceState::Owned && !purging {
        set_access(&context, &organization, &namespace, decision.access_revoked).await?;
    }

    // A namespace is recorded as the organization's only once it owns it: the
    // isolation checks of entitlements and exports trust this field.
    let mut status = recorded.clone();
    if decision.provision_namespace
        || matches!(
            namespace_state,
            NamespaceState::Owned | NamespaceState::Terminating { .. }
        )
    {
        status.namespace = Some(namespace.clone());
    }
    status.observed_generation = organization.metadata.generation;
    status.entitlements = Some(count_entitlements(&context, &namespace));
    decision.write_to(&mut status);
    // What the purge deletes is counted during its final grace, and once more
    // as it starts, recorded before anything is deleted: that count is what
    // the tombstone says.
    if matches!(
        decision.purge,
        PurgeStep::Plan | PurgeStep::DeleteNamespace { freeze_plan: true }
    ) {
        status.purge_plan = Some(purge::plan(&context, &name, &namespace).await?);
    }
    let mut extra = decision.extra.clone();
    let deletion_blocked = deleting.then(|| Extra {
        type_: "DeletionBlocked".into(),
        status: true,
        reason: "NotPurged".into(),
        message: format!(
            "organization {name} is not Purged: deleting it now would lose the customer's record and its tombstone. \
             Offboard it instead (spec.lifecycle: Archived, then spec.deletion); it can be deleted once status.phase is Purged"
        ),
    });
    extra.extend(deletion_blocked.clone());
    status.conditions = conditions(
        &status.conditions,
        &decision.verdict,
        &extra,
        organization.metadata.generation,
        now,
    );
    // The tombstone says the export ZIPs went: they go first (after a live
    // look for holds).
    if matches!(decision.purge, PurgeStep::WriteTombstone(_)) {
        purge::delete_artifacts(&context, &name, &namespace).await?;
    }
    let version = offboarding
        .then(|| organization.resource_version())
        .flatten();
    let written =
        match apply_status_if_unchanged(&api, &name, version.as_deref(), current.as_ref(), &status)
            .await
        {
            // Changed since it was read: decide again on a fresh copy.
            Err(error) if is_conflict(&error) => {
                return Ok(Action::requeue(Duration::from_secs(1)));
            }
            other => other?,
        };

    // Recorded first, done second: a purge resumed after a crash starts here.
    if matches!(decision.purge, PurgeStep::DeleteNamespace { .. })
        && purge::delete_namespace(&context, &name, &namespace).await?
        && status.namespace_deleted_at.is_none()
    {
        // Reported once accepted: the tombstone is written only for a
        // namespace tenure itself deleted.
        let mut deleted = status.clone();
        deleted.namespace_deleted_at = Some(now);
        apply_status(&api, &name, Some(&status), &deleted).await?;
    }
    record_history(
        &context,
        organization.as_ref(),
        &decision.history,
        &["PurgeScheduled", "Purging", "Purged"],
    )
    .await;
    if written
        && let Some(blocked) = deletion_blocked
        && !current
            .as_ref()
            .is_some_and(|s| has_condition(&s.conditions, "DeletionBlocked"))
    {
        record(
            &context,
            organization.as_ref(),
            EventType::Warning,
            "DeletionBlocked",
            blocked.message,
        )
        .await;
    }
    Ok(match decision.wake_at {
        Some(at) => requeue_at(&context.clock, at),
        None => Action::await_change(),
    })
}

/// `status.exports` keeps at most this many names.
const EXPORTS_LIMIT: usize = 20;

/// Names of the DataExports of the tenant namespace that succeeded, newest
/// first, and whether one of them still has its artifact (what
/// `purge.requireExport` waits for).
async fn exports_of(
    context: &Context,
    namespace: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(Vec<String>, bool)> {
    let exports = Api::<DataExport>::namespaced(context.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let export_available = exports
        .items
        .iter()
        .filter_map(|e| e.status.as_ref())
        .any(|status| available(status, now));
    let mut succeeded: Vec<(Option<chrono::DateTime<chrono::Utc>>, String)> = exports
        .items
        .iter()
        .filter_map(|e| {
            let status = e.status.as_ref()?;
            (status.phase == Some(crate::api::export::ExportPhase::Succeeded))
                .then(|| (status.completed_at, e.name_any()))
        })
        .collect();
    succeeded.sort_by(|a, b| b.cmp(a));
    let names = succeeded
        .into_iter()
        .take(EXPORTS_LIMIT)
        .map(|(_, name)| name)
        .collect();
    Ok((names, export_available))
}

/// The locked retention of every entitlement in the tenant namespace: a
/// locked policy's data retention is a legal minimum the organization's purge
/// waits for too.
fn entitlement_locks(
    context: &Context,
    policies: &[&LifecyclePolicy],
    namespace: &str,
) -> Vec<EntitlementLock> {
    context
        .entitlements
        .state()
        .iter()
        .filter(|e| e.namespace().as_deref() == Some(namespace))
        .filter_map(|e| {
            let subject = Subject {
                class: Some(&e.spec.class),
                organization: e.spec.organization.as_deref(),
                product: Some(&e.spec.product),
            };
            let retention = locked_floor(policies, &subject, keys::DATA_RETENTION_DAYS)
                .map(|(minimum, policy)| LockedRetention { minimum, policy });
            let final_grace =
                locked_floor(policies, &subject, keys::FINAL_GRACE_DAYS).map(|(days, _)| days);
            if retention.is_none() && final_grace.is_none() {
                return None;
            }
            let status = e.status.as_ref();
            let cancelled = status.is_some_and(|s| {
                matches!(
                    s.phase,
                    Some(EntitlementPhase::Cancelled | EntitlementPhase::Purged)
                )
            });
            Some(EntitlementLock {
                entitlement: format!("{namespace}/{}", e.name_any()),
                cancelled_at: status
                    .and_then(|s| s.cancelled.as_ref())
                    .filter(|_| cancelled)
                    .map(|c| c.at),
                retention,
                final_grace,
            })
        })
        .collect()
}

/// The deny-all NetworkPolicy that revokes access to a Disabled or Archived
/// organization's namespace.
const ACCESS_POLICY: &str = "tenure-access-disabled";

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
    match (revoked, existing) {
        (true, None) => {
            let policy = NetworkPolicy {
                metadata: ObjectMeta {
                    name: Some(ACCESS_POLICY.into()),
                    labels: Some(BTreeMap::from([(
                        ORGANIZATION_LABEL.to_string(),
                        name.clone(),
                    )])),
                    ..Default::default()
                },
                spec: Some(NetworkPolicySpec {
                    pod_selector: Some(LabelSelector::default()),
                    policy_types: Some(vec!["Ingress".into(), "Egress".into()]),
                    ..Default::default()
                }),
            };
            api.create(&PostParams::default(), &policy).await?;
            record(
                context,
                organization,
                EventType::Normal,
                "AccessRevoked",
                format!("NetworkPolicy {namespace}/{ACCESS_POLICY} denies all traffic"),
            )
            .await;
        }
        (false, Some(existing))
            if existing
                .labels()
                .get(ORGANIZATION_LABEL)
                .map(String::as_str)
                == Some(name.as_str()) =>
        {
            let params = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: existing.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            api.delete(ACCESS_POLICY, &params).await?;
            record(
                context,
                organization,
                EventType::Normal,
                "AccessRestored",
                format!("NetworkPolicy {namespace}/{ACCESS_POLICY} removed"),
            )
            .await;
        }
        _ => {}
    }
    Ok(())
}

async fn observe_namespace(
    context: &Context,
    organization: &str,
    namespace: &str,
) -> Result<NamespaceState> {
    let api = Api::<Namespace>::all(context.client.clone());
    let Some(existing) = api.get_opt(namespace).await? else {
        return Ok(NamespaceState::Missing);
    };
    Ok(match existing.labels().get(ORGANIZATION_LABEL) {
        Some(owner) if owner == organization && existing.metadata.deletion_timestamp.is_some() => {
            let marked = existing.annotations().get(PURGE_ANNOTATION);
            NamespaceState::Terminating {
                by_purge: marked.map(String::as_str) == Some(organization),
            }
        }
        Some(owner) if owner == organization => NamespaceState::Owned,
        owner => NamespaceState::NotOwned(owner.cloned()),
    })
}

async fn create_namespace(
    context: &Context,
    organization: &Organization,
    namespace: &str,
) -> Result<()> {
    let new = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                ORGANIZATION_LABEL.to_string(),
                organization.name_any(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    // Also when someone created it between our read and our create (409): the
    // error retries, and the retry decides with what is there then.
    Api::<Namespace>::all(context.client.clone())
        .create(&PostParams::default(), &new)
        .await?;
    record(
        context,
        organization,
        EventType::Normal,
        "NamespaceCreated",
        format!("created tenant namespace {namespace}"),
    )
    .await;
    Ok(())
}

/// How many of the entitlements in the tenant namespace are in each phase
/// (one elsewhere that names the organization stalls and is not counted).
fn count_entitlements(context: &Context, namespace: &str) -> EntitlementCounts {
    let mut counts = EntitlementCounts::default();
    for entitlement in context.entitlements.state() {
        if entitlement.namespace().as_deref() != Some(namespace) {
            continue;
        }
        match entitlement.status.as_ref().and_then(|s| s.phase) {
            Some(EntitlementPhase::Active) => counts.active += 1,
            Some(EntitlementPhase::Suspended) => counts.suspended += 1,
            Some(EntitlementPhase::Expired) => counts.expired += 1,
            Some(EntitlementPhase::Cancelled) => counts.cancelled += 1,
            Some(EntitlementPhase::Purged) => counts.purged += 1,
            Some(EntitlementPhase::Pending) | None => {}
        }
    }
    counts
}
