//! Organization reconciler: the tenant namespace, the finalizer that keeps an
//! unpurged organization from being deleted, and status.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::status::{apply_status, ensure_finalizer, remove_finalizer};
use super::{Context, Result, log_outcomes, record, retry_later};
use crate::api::{
    Entitlement, EntitlementPhase, ORGANIZATION_LABEL, Organization, OrganizationLifecycle,
    OrganizationPhase, OrganizationStatus, organization::EntitlementCounts,
};
use crate::lifecycle::conditions::{Extra, Verdict, conditions};

pub async fn run(context: Arc<Context>) {
    let organizations = Api::<Organization>::all(context.client.clone());
    let namespaces = Api::<Namespace>::all(context.client.clone());
    let entitlements = Api::<Entitlement>::all(context.client.clone());
    let controller = Controller::new(organizations, watcher::Config::default())
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

    let namespace = tenant_namespace(&organization);
    let verdict = match ensure_namespace(&context, &organization, &namespace).await? {
        NamespaceState::Terminating => Verdict::reconciling(
            "NamespaceTerminating",
            format!(
                "tenant namespace {namespace} is being deleted; it is created again once it is gone"
            ),
        ),
        NamespaceState::Owned => Verdict::ready(
            phase_of(&organization).reason(),
            format!("tenant namespace {namespace} is ready"),
        ),
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
    };
    let deletion_blocked = deleting.then(|| Extra {
        type_: "DeletionBlocked".into(),
        status: true,
        reason: "NotPurged".into(),
        message: format!(
            "organization {name} is not Purged: deleting it now would lose the customer's record and its tombstone. \
             Offboard it instead (spec.lifecycle: Archived, then spec.deletion); it can be deleted once status.phase is Purged"
        ),
    });

    let mut status = current.clone().unwrap_or_default();
    status.phase = Some(phase_of(&organization));
    record_standing_since(&organization, &mut status, context.clock.now());
    status.namespace = Some(namespace);
    status.observed_generation = organization.metadata.generation;
    status.entitlements = Some(count_entitlements(&context, &name));
    status.conditions = conditions(
        &status.conditions,
        &verdict,
        deletion_blocked.as_slice(),
        organization.metadata.generation,
        context.clock.now(),
    );
    if apply_status(&api, &name, current.as_ref(), &status).await?
        && let Some(blocked) = deletion_blocked
        && !has_condition(current.as_ref(), "DeletionBlocked")
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
    Ok(Action::await_change())
}

fn has_condition(status: Option<&OrganizationStatus>, type_: &str) -> bool {
    status.is_some_and(|s| s.conditions.iter().any(|c| c.type_ == type_))
}

/// Records when the organization was disabled or archived: the offboarding's
/// effectiveAt, or when first observed. Cleared when it is Active again.
fn record_standing_since(
    organization: &Organization,
    status: &mut OrganizationStatus,
    now: chrono::DateTime<chrono::Utc>,
) {
    let since = organization
        .spec
        .offboarding
        .as_ref()
        .and_then(|o| o.effective_at)
        .unwrap_or(now);
    match organization.spec.lifecycle {
        OrganizationLifecycle::Active => {
            status.disabled_at = None;
            status.archived_at = None;
        }
        OrganizationLifecycle::Disabled => {
            status.disabled_at.get_or_insert(since);
            status.archived_at = None;
        }
        OrganizationLifecycle::Archived => {
            status.archived_at.get_or_insert(since);
        }
    }
}

fn phase_of(organization: &Organization) -> OrganizationPhase {
    match organization.spec.lifecycle {
        OrganizationLifecycle::Active => OrganizationPhase::Active,
        OrganizationLifecycle::Disabled => OrganizationPhase::Disabled,
        OrganizationLifecycle::Archived => OrganizationPhase::Archived,
    }
}

impl OrganizationPhase {
    fn reason(self) -> &'static str {
        match self {
            Self::Active => "Active",
            Self::Disabled => "Disabled",
            Self::Archived => "Archived",
            Self::PurgeScheduled => "PurgeScheduled",
            Self::Purging => "Purging",
            Self::Purged => "Purged",
        }
    }
}

enum NamespaceState {
    Owned,
    /// Ours, but being deleted: it can be created again only once it is gone.
    Terminating,
    /// The namespace exists without our label, or with another organization's.
    NotOwned(Option<String>),
}

async fn ensure_namespace(
    context: &Context,
    organization: &Organization,
    namespace: &str,
) -> Result<NamespaceState> {
    let api = Api::<Namespace>::all(context.client.clone());
    let name = organization.name_any();
    if let Some(existing) = api.get_opt(namespace).await? {
        return Ok(match existing.labels().get(ORGANIZATION_LABEL) {
            Some(owner) if *owner == name && existing.metadata.deletion_timestamp.is_some() => {
                NamespaceState::Terminating
            }
            Some(owner) if *owner == name => NamespaceState::Owned,
            owner => NamespaceState::NotOwned(owner.cloned()),
        });
    }
    let new = Namespace {
        metadata: ObjectMeta {
            name: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                ORGANIZATION_LABEL.to_string(),
                name.clone(),
            )])),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &new).await {
        Ok(_) => {
            record(
                context,
                organization,
                EventType::Normal,
                "NamespaceCreated",
                format!("created tenant namespace {namespace}"),
            )
            .await;
            Ok(NamespaceState::Owned)
        }
        // Also when someone created it between our read and our create (409):
        // the retry decides with what is there then.
        Err(e) => Err(e.into()),
    }
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
