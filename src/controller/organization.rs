//! Organization reconciler: the tenant namespace, the finalizer that keeps an
//! unpurged organization from being deleted, and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicySpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams, Preconditions};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::status::{apply_status, ensure_finalizer, remove_finalizer};
use super::{
    Context, Result, created_at, holds_where, log_outcomes, purge, record, record_history,
    requeue_at, retry_later,
};
use crate::api::export::ExportPhase;
use crate::api::{DataExport, LifecyclePolicy, RetentionHold};
use crate::api::{
    Entitlement, EntitlementPhase, ORGANIZATION_LABEL, Organization, OrganizationPhase,
    organization::EntitlementCounts,
};
use crate::lifecycle::conditions::{Extra, Verdict, conditions, has_condition};
use crate::lifecycle::organization::{Hold, Input, PurgeStep, decide};
use crate::lifecycle::policy::{Subject, resolve, scope_matches};

pub async fn run(context: Arc<Context>) {
    let organizations = Api::<Organization>::all(context.client.clone());
    let namespaces = Api::<Namespace>::all(context.client.clone());
    let entitlements = Api::<Entitlement>::all(context.client.clone());
    let controller = Controller::new(organizations, watcher::Config::default());
    let by_policy = controller.store();
    let controller = controller
        // A tenant namespace changing (or vanishing) wakes its organization.
        .watches(
            namespaces,
            watcher::Config::default().labels(ORGANIZATION_LABEL),
            |namespace| {
                namespace
                    .labels()
                    .get(ORGANIZATION_LABEL)
                    .map(|org| ObjectRef::new(org))
            },
        )
        // Entitlement counts in status follow the entitlements' phases.
        .watches(entitlements, watcher::Config::default(), |entitlement| {
            entitlement.spec.organization.as_deref().map(ObjectRef::new)
        })
        // An export succeeding counts for the purge and the tombstone.
        .watches(
            Api::<DataExport>::all(context.client.clone()),
            watcher::Config::default(),
            |export| Some(ObjectRef::new(&export.spec.organization)),
        )
        // A hold placed, lifted or lapsing re-decides its organization.
        .watches(
            Api::<RetentionHold>::all(context.client.clone()),
            watcher::Config::default(),
            |hold| hold.spec.organization.as_deref().map(ObjectRef::new),
        )
        // A policy change re-decides the organizations it applies to.
        .watches(
            Api::<LifecyclePolicy>::all(context.client.clone()),
            watcher::Config::default(),
            move |policy| {
                let scope = policy.spec.scope.clone();
                by_policy
                    .state()
                    .iter()
                    .filter(|org| {
                        let name = org.name_any();
                        let subject = Subject {
                            organization: Some(&name),
                            ..Subject::default()
                        };
                        scope_matches(scope.as_ref(), &subject)
                    })
                    .map(|org| ObjectRef::from_obj(org.as_ref()))
                    .collect::<Vec<_>>()
            },
        )
        .shutdown_on_signal();
    log_outcomes(
        "Organization",
        controller.run(reconcile, retry_later, context),
    )
    .await;
}

/// The namespace an organization owns: the one already recorded, else
/// `spec.namespace`, else `org-<name>`.
pub fn tenant_namespace(organization: &Organization) -> String {
    organization
        .status
        .as_ref()
        .and_then(|s| s.namespace.clone())
        .or_else(|| organization.spec.namespace.clone())
        .unwrap_or_else(|| format!("org-{}", organization.name_any()))
}

async fn reconcile(organization: Arc<Organization>, context: Arc<Context>) -> Result<Action> {
    let api = Api::<Organization>::all(context.client.clone());
    let name = organization.name_any();
    let current = organization.status.clone();
    let deleting = organization.metadata.deletion_timestamp.is_some();
    if deleting && current.as_ref().and_then(|s| s.phase) == Some(OrganizationPhase::Purged) {
        remove_finalizer(&api, organization.as_ref()).await?;
        return Ok(Action::await_change());
    }
    if !deleting {
        ensure_finalizer(&api, organization.as_ref()).await?;
    }

    let now = context.clock.now();
    let namespace = tenant_namespace(&organization);
    let mut namespace_state = observe_namespace(&context, &name, &namespace).await?;
    let policies = context.policies.state();
    let policies: Vec<&LifecyclePolicy> = policies.iter().map(Arc::as_ref).collect();
    let subject = Subject {
        organization: Some(&name),
        ..Subject::default()
    };
    let effective = resolve(&policies, &subject, None);
    let holds = holds_on(&context, &name);
    // Succeeded exports are facts the purge and the tombstone depend on: the
    // core reads them as part of what status records.
    // Once the purge started they are kept as they were: the namespace
    // holding them is going.
    let mut observed = current.clone().unwrap_or_default();
    let purge_started = matches!(
        observed.phase,
        Some(OrganizationPhase::Purging | OrganizationPhase::Purged)
    );
    if !purge_started {
        observed.exports = succeeded_exports(&context, &name, &namespace).await?;
    }
    let created = created_at(&context, organization.as_ref());
    let decision = decide(&Input {
        name: &name,
        spec: &organization.spec,
        created,
        recorded: Some(&observed),
        policy: &effective,
        holds: &holds,
        namespace_exists: matches!(
            namespace_state,
            NamespaceState::Owned | NamespaceState::Terminating
        ),
        now,
    });

    // The namespace is provisioned while the organization lives, never again
    // once its purge has started.
    let purge_started = matches!(
        decision.phase,
        OrganizationPhase::Purging | OrganizationPhase::Purged
    );
    if namespace_state == NamespaceState::Missing && !purge_started {
        create_namespace(&context, &organization, &namespace).await?;
        namespace_state = NamespaceState::Owned;
    }
    if namespace_state == NamespaceState::Owned && !purge_started {
        set_access(&context, &organization, &namespace, decision.access_revoked).await?;
    }

    let mut status = current.clone().unwrap_or_default();
    status.exports = observed.exports.clone();
    status.namespace = Some(namespace.clone());
    status.observed_generation = organization.metadata.generation;
    status.entitlements = Some(count_entitlements(&context, &name));
    decision.write_to(&mut status);
    let starting_purge = decision.phase == OrganizationPhase::Purging
        && current.as_ref().and_then(|s| s.phase) != Some(OrganizationPhase::Purging);
    match &decision.purge {
        PurgeStep::Plan => status.purge_plan = Some(purge::plan(&context, &namespace).await?),
        // What the purge deletes is counted once, as it starts, and recorded
        // before anything is deleted: that count is what the tombstone says.
        PurgeStep::DeleteNamespace if starting_purge => {
            status.purge_plan = Some(purge::plan(&context, &namespace).await?)
        }
        _ => {}
    }

    let verdict = match &namespace_state {
        NamespaceState::NotOwned(owner) => Verdict::stalled(
            "NamespaceNotOwned",
            match owner {
                Some(other) => format!(
                    "namespace {namespace} belongs to organization {other} (label {ORGANIZATION_LABEL}); set spec.namespace to another name"
                ),
                None => format!(
                    "namespace {namespace} exists without label {ORGANIZATION_LABEL}={name}; tenure never adopts a namespace it did not create: label it, or set spec.namespace to another name"
                ),
            },
        ),
        NamespaceState::Terminating if !purge_started => Verdict::reconciling(
            "NamespaceTerminating",
            format!(
                "tenant namespace {namespace} is being deleted; it is created again once it is gone"
            ),
        ),
        _ => decision.verdict.clone(),
    };
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
        &verdict,
        &extra,
        organization.metadata.generation,
        now,
    );
    let written = apply_status(&api, &name, current.as_ref(), &status).await?;

    // Recorded first, done second: a purge resumed after a crash starts here.
    if decision.purge == PurgeStep::DeleteNamespace {
        purge::delete_namespace(&context, &name, &namespace).await?;
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

/// Names of the organization's succeeded DataExports, newest first.
async fn succeeded_exports(
    context: &Context,
    organization: &str,
    namespace: &str,
) -> Result<Vec<String>> {
    let exports = Api::<DataExport>::namespaced(context.client.clone(), namespace)
        .list(&ListParams::default())
        .await?;
    let mut succeeded: Vec<(Option<chrono::DateTime<chrono::Utc>>, String)> = exports
        .items
        .iter()
        .filter(|e| e.spec.organization == organization)
        .filter_map(|e| {
            let status = e.status.as_ref()?;
            (status.phase == Some(ExportPhase::Succeeded))
                .then(|| (status.completed_at, e.name_any()))
        })
        .collect();
    succeeded.sort_by(|a, b| b.cmp(a));
    Ok(succeeded
        .into_iter()
        .take(EXPORTS_LIMIT)
        .map(|(_, name)| name)
        .collect())
}

/// The RetentionHolds naming the organization.
fn holds_on(context: &Context, organization: &str) -> Vec<Hold> {
    holds_where(context, |h| {
        h.spec.organization.as_deref() == Some(organization)
    })
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

#[derive(Clone, Debug, PartialEq, Eq)]
enum NamespaceState {
    Missing,
    Owned,
    /// Ours, but being deleted.
    Terminating,
    /// The namespace exists without our label, or with another organization's.
    NotOwned(Option<String>),
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
            NamespaceState::Terminating
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

fn count_entitlements(context: &Context, organization: &str) -> EntitlementCounts {
    let mut counts = EntitlementCounts::default();
    for entitlement in context.entitlements.state() {
        if entitlement.spec.organization.as_deref() != Some(organization) {
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
