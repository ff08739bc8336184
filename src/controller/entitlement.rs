//! Entitlement reconciler: checks its references, decides its phase and
//! requeues at the next deadline.

use std::sync::Arc;

use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::status::{apply_status, ensure_finalizer, remove_finalizer};
use super::{Context, Result, log_outcomes, record, requeue_at, retry_later};
use crate::api::{Entitlement, EntitlementClass, EntitlementPhase, Organization};
use crate::lifecycle::conditions::{Verdict, conditions};

pub async fn run(context: Arc<Context>) {
    let entitlements = Api::<Entitlement>::all(context.client.clone());
    let controller = Controller::new(entitlements, watcher::Config::default()).shutdown_on_signal();
    let store = controller.store();
    // A class or an organization appearing or changing re-decides the
    // entitlements that name it.
    let by_class = store.clone();
    let by_organization = store;
    let controller = controller
        .watches(
            Api::<EntitlementClass>::all(context.client.clone()),
            watcher::Config::default(),
            move |class| naming(&by_class, |e| e.spec.class == class.name_any()),
        )
        .watches(
            Api::<Organization>::all(context.client.clone()),
            watcher::Config::default(),
            move |org| {
                naming(&by_organization, |e| {
                    e.spec.organization.as_deref() == Some(org.name_any().as_str())
                })
            },
        );
    log_outcomes(
        "Entitlement",
        controller.run(reconcile, retry_later, context),
    )
    .await;
}

fn naming(
    store: &Store<Entitlement>,
    matches: impl Fn(&Entitlement) -> bool,
) -> Vec<ObjectRef<Entitlement>> {
    store
        .state()
        .iter()
        .filter(|e| matches(e))
        .map(|e| ObjectRef::from_obj(e.as_ref()))
        .collect()
}

async fn reconcile(entitlement: Arc<Entitlement>, context: Arc<Context>) -> Result<Action> {
    let namespace = entitlement.namespace().unwrap_or_default();
    let api = Api::<Entitlement>::namespaced(context.client.clone(), &namespace);
    let name = entitlement.name_any();
    if entitlement.metadata.deletion_timestamp.is_some() {
        record(
            &context,
            entitlement.as_ref(),
            EventType::Normal,
            "Deleted",
            format!("entitlement {namespace}/{name} deleted"),
        )
        .await;
        remove_finalizer(&api, entitlement.as_ref()).await?;
        return Ok(Action::await_change());
    }
    ensure_finalizer(&api, entitlement.as_ref()).await?;

    let now = context.clock.now();
    let starts_at = entitlement.spec.starts_at;
    let pending = starts_at.is_some_and(|at| at > now);
    let phase = if pending {
        EntitlementPhase::Pending
    } else {
        EntitlementPhase::Active
    };
    let verdict = if context
        .classes
        .get(&ObjectRef::new(&entitlement.spec.class))
        .is_none()
    {
        Verdict::stalled(
            "ClassNotFound",
            format!(
                "spec.class names EntitlementClass {:?}, which does not exist",
                entitlement.spec.class
            ),
        )
    } else if let Some(org) = entitlement.spec.organization.as_deref()
        && context.organizations.get(&ObjectRef::new(org)).is_none()
    {
        Verdict::stalled(
            "OrganizationNotFound",
            format!("spec.organization names Organization {org:?}, which does not exist"),
        )
    } else if pending {
        Verdict::ready(
            "Pending",
            format!(
                "access starts at {}",
                starts_at.expect("pending has a start")
            ),
        )
    } else {
        Verdict::ready("Active", "access granted")
    };

    let current = entitlement.status.clone();
    let mut status = current.clone().unwrap_or_default();
    if status.phase != Some(phase) {
        status.phase_since = Some(match phase {
            EntitlementPhase::Active => starts_at.unwrap_or(now).min(now),
            _ => now,
        });
    }
    status.phase = Some(phase);
    status.observed_generation = entitlement.metadata.generation;
    status.conditions = conditions(
        &status.conditions,
        &verdict,
        &[],
        entitlement.metadata.generation,
        now,
    );
    apply_status(&api, &name, current.as_ref(), &status).await?;

    Ok(match starts_at {
        Some(at) if pending => requeue_at(&context.clock, at),
        _ => Action::await_change(),
    })
}
