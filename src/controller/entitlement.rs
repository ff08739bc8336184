//! Entitlement reconciler: checks its references, resolves its policy, gives
//! it a code, lets the pure core decide its lifecycle, writes status, records
//! Events and requeues at the next deadline.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::status::{
    apply_status, apply_status_if_unchanged, ensure_finalizer, is_conflict, remove_finalizer,
};
use super::{
    Context, Result, codes, created_at, downstream, holds_where, log_outcomes, record,
    record_history, requeue_at, retry_later,
};
use crate::api::class::DownstreamKind;
use crate::api::entitlement::EntitlementStatus;
use crate::api::policy::PolicyScope;
use crate::api::{
    ENTITLEMENT_LABEL, Entitlement, EntitlementClass, EntitlementPhase, LifecyclePolicy,
    Organization, OrganizationLifecycle, RetentionHold,
};
use crate::lifecycle::conditions::{Extra, Verdict, conditions, has_condition};
use crate::lifecycle::entitlement::{Input, Standing, decide};
use crate::lifecycle::hold::Hold;
use crate::lifecycle::policy::{Subject, keys, resolve, scope_matches};

pub async fn run(context: Arc<Context>) {
    let entitlements = Api::<Entitlement>::all(context.client.clone());
    let controller = Controller::new(entitlements, watcher::Config::default()).shutdown_on_signal();
    let store = controller.store();
    // A class, an organization or a policy appearing, changing or going away
    // re-decides exactly the entitlements it can affect.
    let by_class = store.clone();
    let by_organization = store.clone();
    let by_policy = store.clone();
    let by_hold = store;
    // A policy whose scope changed also affects what its old scope matched.
    let last_scopes: Mutex<HashMap<String, Option<PolicyScope>>> = Mutex::default();
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
        )
        .watches(
            Api::<RetentionHold>::all(context.client.clone()),
            watcher::Config::default(),
            move |hold| {
                naming(&by_hold, |e| {
                    let on_it = hold.spec.entitlement.as_ref().is_some_and(|t| {
                        Some(t.namespace.as_str()) == e.namespace().as_deref()
                            && t.name == e.name_any()
                    });
                    on_it
                        || (hold.spec.organization.is_some()
                            && hold.spec.organization == e.spec.organization)
                })
            },
        )
        .watches(
            Api::<LifecyclePolicy>::all(context.client.clone()),
            watcher::Config::default(),
            move |policy| {
                let scope = policy.spec.scope.clone();
                let previous = last_scopes
                    .lock()
                    .map(|mut scopes| scopes.insert(policy.name_any(), scope.clone()))
                    .ok()
                    .flatten();
                naming(&by_policy, |e| {
                    let subject = subject_of(e);
                    scope_matches(scope.as_ref(), &subject)
                        || previous
                            .as_ref()
                            .is_some_and(|old| scope_matches(old.as_ref(), &subject))
                })
            },
        );
    let controller = watch_bound_objects(controller, &context).await;
    log_outcomes(
        "Entitlement",
        controller.run(reconcile, retry_later, context),
    )
    .await;
}

/// A labelled object of a kind some class governs appearing or changing
/// wakes its entitlement: a workload created while it is paused is paused
/// then, not at the next deadline. The kinds are those the classes list when
/// the controller starts; objects bound only by a selector are governed at
/// the entitlement's next reconcile.
async fn watch_bound_objects(
    mut controller: Controller<Entitlement>,
    context: &Context,
) -> Controller<Entitlement> {
    let mut kinds: Vec<DownstreamKind> = context
        .classes
        .state()
        .iter()
        .flat_map(|class| class.spec.downstream.clone())
        .collect();
    kinds.sort_by(|a, b| (&a.api_version, &a.kind).cmp(&(&b.api_version, &b.kind)));
    kinds.dedup_by(|a, b| a.api_version == b.api_version && a.kind == b.kind);
    for kind in kinds {
        let resource = match context.downstream_kinds.resolve(context, &kind).await {
            Ok(Some(resource)) => resource,
            Ok(None) => continue,
            Err(error) => {
                tracing::warn!(%error, kind = %kind.kind, "cannot watch a downstream kind");
                continue;
            }
        };
        let api = Api::<DynamicObject>::all_with(context.client.clone(), &resource);
        controller = controller.watches_with(
            api,
            resource,
            watcher::Config::default().labels(ENTITLEMENT_LABEL),
            |object| {
                let entitlement = object.labels().get(ENTITLEMENT_LABEL)?;
                Some(ObjectRef::new(entitlement).within(&object.namespace()?))
            },
        );
    }
    controller
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

fn subject_of(entitlement: &Entitlement) -> Subject<'_> {
    Subject {
        class: Some(&entitlement.spec.class),
        organization: entitlement.spec.organization.as_deref(),
        product: Some(&entitlement.spec.product),
    }
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

    // A code is assigned once: without one in the (possibly stale) copy from
    // the cache, read the entitlement afresh, and write the new code only if
    // it did not change meanwhile.
    let (entitlement, guard_version) =
        match entitlement.status.as_ref().and_then(|s| s.code.as_ref()) {
            Some(_) => (entitlement, None),
            None => {
                let fresh = api.get(&name).await?;
                let version = fresh.resource_version();
                (Arc::new(fresh), version)
            }
        };
    let now = context.clock.now();
    let current = entitlement.status.clone();
    let mut status = current.clone().unwrap_or_default();
    status.observed_generation = entitlement.metadata.generation;
    let generation = entitlement.metadata.generation;

    // Stuck until a reference appears or spec changes: say why, and wait.
    let stall = |mut status: EntitlementStatus, stalled: Verdict| {
        status.conditions = conditions(&status.conditions, &stalled, &[], generation, now);
        let (api, name, current) = (&api, &name, current.clone());
        async move {
            apply_status(api, name, current.as_ref(), &status).await?;
            Ok(Action::await_change())
        }
    };
    let (class, standing) = match check_references(&context, &entitlement) {
        Ok(found) => found,
        Err(stalled) => return stall(status, stalled).await,
    };
    let guard_version = if status.code.is_some() {
        None
    } else {
        match assign_code(&context, &entitlement).await? {
            Ok(code) => status.code = Some(code),
            Err(stalled) => return stall(status, stalled).await,
        }
        guard_version
    };

    let policies = context.policies.state();
    let policies: Vec<&LifecyclePolicy> = policies.iter().map(Arc::as_ref).collect();
    let effective = resolve(
        &policies,
        &subject_of(&entitlement),
        entitlement.spec.policy.as_ref(),
    );
    let created = created_at(&context, entitlement.as_ref());
    let holds = holds_covering(&context, &entitlement);
    let decision = decide(&Input {
        spec: &entitlement.spec,
        created,
        organization: &standing,
        holds: &holds,
        recorded: current.as_ref(),
        policy: &effective,
        now,
    });

    // What the entitlement governs follows its phase; a purge is recorded only
    // once the data is gone.
    let governed = downstream::govern(
        &context,
        &entitlement,
        &class.spec.downstream,
        decision.phase,
        effective.flag(keys::DEPROVISION_ON_CANCEL),
        current.as_ref().and_then(|s| s.resources.as_ref()),
    )
    .await?;
    let mut extra = decision.extra.clone();
    extra.extend(downstream_conditions(&governed, decision.phase));

    decision.write_to(&mut status);
    status.effective_policy = effective.0.clone();
    status.resources = Some(governed.counts.clone());
    status.conditions = conditions(
        &status.conditions,
        &decision.verdict,
        &extra,
        generation,
        now,
    );
    let new_conditions: Vec<&Extra> = extra
        .iter()
        .filter(|extra| {
            !current
                .as_ref()
                .is_some_and(|s| has_condition(&s.conditions, &extra.type_))
        })
        .collect();
    let version = guard_version.as_deref();
    match apply_status_if_unchanged(&api, &name, version, current.as_ref(), &status).await {
        // Changed since read: the new code is skipped (never reused), and the
        // newer version is decided when the watch delivers it.
        Err(error) if is_conflict(&error) => return Ok(Action::await_change()),
        other => other?,
    };

    // Events follow the status write: a crash before it repeats them, never
    // loses them.
    for change in &governed.changes {
        let reason = match change.split_whitespace().next() {
            Some("paused") => "Paused",
            Some("resumed") => "Resumed",
            Some("deprovisioned") => "Deprovisioned",
            _ => "TornDown",
        };
        record(
            &context,
            entitlement.as_ref(),
            EventType::Normal,
            reason,
            change.clone(),
        )
        .await;
    }
    record_history(
        &context,
        entitlement.as_ref(),
        &decision.history,
        &["Suspended", "Expired", "Cancelled"],
    )
    .await;
    if let Some(reminder) = &decision.reminder {
        record(
            &context,
            entitlement.as_ref(),
            EventType::Normal,
            "RenewalReminder",
            reminder.message.clone(),
        )
        .await;
    }
    for extra in new_conditions {
        record(
            &context,
            entitlement.as_ref(),
            EventType::Warning,
            &extra.type_,
            extra.message.clone(),
        )
        .await;
    }

    Ok(match decision.wake_at {
        Some(at) => requeue_at(&context.clock, at),
        None => Action::await_change(),
    })
}

/// Conditions that tell what governing the downstream objects did, or could not do.
fn downstream_conditions(governed: &downstream::Governed, phase: EntitlementPhase) -> Vec<Extra> {
    let mut extra = Vec::new();
    if !governed.overridden.is_empty() {
        extra.push(Extra {
            type_: "ManualOverride".into(),
            status: true,
            reason: "ChangedWhilePaused".into(),
            message: format!(
                "{} changed by hand while paused; tenure leaves them as they are and removes its annotation on resume",
                governed.overridden.join(", ")
            ),
        });
    }
    if !governed.unserved.is_empty() {
        extra.push(Extra {
            type_: "KindNotServed".into(),
            status: true,
            reason: "NotServed".into(),
            message: format!(
                "the class lists {}, which the API server does not serve; objects of it are not governed",
                governed.unserved.join(", ")
            ),
        });
    }
    if phase == EntitlementPhase::Cancelled && governed.counts.deprovisioned > 0 {
        extra.push(Extra {
            type_: "Deprovisioned".into(),
            status: true,
            reason: "OnCancelDelete".into(),
            message: format!(
                "{} bound objects deleted on cancellation (the class's onCancel: Delete)",
                governed.counts.deprovisioned
            ),
        });
    }
    extra
}

/// The RetentionHolds on the entitlement itself or on its organization.
fn holds_covering(context: &Context, entitlement: &Entitlement) -> Vec<Hold> {
    let namespace = entitlement.namespace().unwrap_or_default();
    let name = entitlement.name_any();
    holds_where(context, |h| {
        let on_it = h
            .spec
            .entitlement
            .as_ref()
            .is_some_and(|t| t.namespace == namespace && t.name == name);
        let on_its_org =
            h.spec.organization.is_some() && h.spec.organization == entitlement.spec.organization;
        on_it || on_its_org
    })
}

/// The entitlement's class and its organization's standing, or why they
/// cannot be found.
fn check_references(
    context: &Context,
    entitlement: &Entitlement,
) -> Result<(Arc<EntitlementClass>, Standing), Verdict> {
    let Some(class) = context
        .classes
        .get(&ObjectRef::new(&entitlement.spec.class))
    else {
        return Err(Verdict::stalled(
            "ClassNotFound",
            format!(
                "spec.class names EntitlementClass {:?}, which does not exist",
                entitlement.spec.class
            ),
        ));
    };
    let Some(org_name) = entitlement.spec.organization.as_deref() else {
        return Ok((class, Standing::Active));
    };
    let Some(org) = context.organizations.get(&ObjectRef::new(org_name)) else {
        return Err(Verdict::stalled(
            "OrganizationNotFound",
            format!("spec.organization names Organization {org_name:?}, which does not exist"),
        ));
    };
    let recorded = org.status.as_ref();
    let offboarding = org.spec.offboarding.as_ref();
    // Until the organization's reconciler records when it happened, the
    // offboarding's own date stands in; it is re-decided once recorded.
    let since = |recorded_at: Option<chrono::DateTime<chrono::Utc>>| {
        recorded_at
            .or(offboarding.and_then(|o| o.effective_at))
            .unwrap_or_else(|| context.clock.now())
    };
    let standing = match org.spec.lifecycle {
        OrganizationLifecycle::Active => Standing::Active,
        OrganizationLifecycle::Disabled => Standing::Disabled {
            since: since(recorded.and_then(|s| s.disabled_at)),
        },
        OrganizationLifecycle::Archived => Standing::Archived {
            since: since(recorded.and_then(|s| s.archived_at)),
            reason: offboarding.map_or(crate::api::common::OffboardingReason::Other, |o| o.reason),
            ticket: offboarding.and_then(|o| o.ticket.clone()),
        },
    };
    Ok((class, standing))
}

/// The entitlement's code: `spec.code` for an import (unless another
/// entitlement holds it), or the next of its class.
async fn assign_code(
    context: &Context,
    entitlement: &Entitlement,
) -> Result<Result<String, Verdict>> {
    let class = &entitlement.spec.class;
    if let Some(code) = &entitlement.spec.code {
        if let Some(holder) = codes::holder_of(context, code, entitlement) {
            return Ok(Err(Verdict::stalled(
                "CodeInUse",
                format!(
                    "spec.code {code} is already the code of entitlement {holder}; codes are unique"
                ),
            )));
        }
        codes::reserve(context, class, code).await?;
        return Ok(Ok(code.clone()));
    }
    let created = created_at(context, entitlement);
    Ok(match codes::next(context, class, created).await? {
        Some(code) => Ok(code),
        None => Err(Verdict::stalled(
            "CodesExhausted",
            format!(
                "EntitlementClass {class} handed out all {} codes of the month {}; create the entitlement with another class, or pin spec.code",
                crate::lifecycle::codes::LAST_SEQUENCE,
                crate::lifecycle::codes::month_of(created)
            ),
        )),
    })
}
