//! Entitlement reconciler: checks its references, gives it a code (stored
//! at once), lets the pure core decide its lifecycle, governs what it binds,
//! writes status, records Events and requeues at the next deadline.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::downstream::{Governing, Served};
use super::reported::class_problem_of;
use super::status::{
    apply_status, apply_status_if_unchanged, ensure_finalizer, is_conflict, remove_finalizer,
};
use super::{
    Context, PolicyScopes, Result, as_hold, cached_holds, codes, created_at, downstream,
    live_holds, log_outcomes, organization_owning, reconciled, record, record_history, requeue_at,
    retry_later,
};
use crate::api::class::DownstreamKind;
use crate::api::entitlement::{EntitlementFacts, EntitlementPurgePlan};
use crate::api::{
    ENTITLEMENT_LABEL, Entitlement, EntitlementClass, EntitlementPhase, FACTS_ANNOTATION,
    LifecyclePolicy, Organization, RetentionHold,
};
use crate::lifecycle::conditions::{Extra, Verdict, conditions, has_condition};
use crate::lifecycle::downstream::{Desired, desired, outcome_conditions, selector_problem};
use crate::lifecycle::entitlement::{
    Decision, Input, OrganizationPurge, Standing, decide, organization_view,
};
use crate::lifecycle::hold::Hold;
use crate::lifecycle::policy::{Subject, keys, locked_floor, resolve};

pub async fn run(context: Arc<Context>) {
    let entitlements = Api::<Entitlement>::all(context.client.clone());
    let controller = Controller::new(entitlements, watcher::Config::default()).shutdown_on_signal();
    let store = controller.store();
    // A class, an organization, a hold or a policy appearing, changing or
    // going away re-decides exactly the entitlements it can affect.
    let by_class = store.clone();
    let by_organization = store.clone();
    let by_policy = store.clone();
    let by_hold = store;
    let hold_context = context.clone();
    let scopes = PolicyScopes::default();
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
                let name = org.name_any();
                let namespace = org.tenant_namespace();
                naming(&by_organization, |e| {
                    e.spec.organization.as_deref() == Some(name.as_str())
                        || e.namespace().as_deref() == Some(namespace.as_str())
                })
            },
        )
        .watches(
            Api::<RetentionHold>::all(context.client.clone()),
            watcher::Config::default(),
            move |hold| {
                let hold = as_hold(&hold_context, &hold);
                naming(&by_hold, |e| covered_by(&hold, e))
            },
        )
        .watches(
            Api::<LifecyclePolicy>::all(context.client.clone()),
            watcher::Config::default(),
            move |policy| {
                let concerns = scopes.changed(&policy);
                naming(&by_policy, |e| concerns(&subject_of(e)))
            },
        );
    let controller = watch_bound_objects(controller, &context).await;
    log_outcomes(
        "Entitlement",
        controller.run(
            |entitlement, context| {
                reconciled(
                    entitlement.clone(),
                    context.clone(),
                    reconcile(entitlement, context),
                )
            },
            retry_later,
            context,
        ),
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
            Ok(Served::Namespaced(resource)) => resource,
            Ok(_) => continue,
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

/// Whether `hold` covers `entitlement`.
fn covered_by(hold: &Hold, entitlement: &Entitlement) -> bool {
    hold.covers_entitlement(
        &entitlement.namespace().unwrap_or_default(),
        &entitlement.name_any(),
        entitlement.spec.organization.as_deref(),
    )
}

/// What the entitlement refers to, found and in order.
struct References {
    class: Arc<EntitlementClass>,
    standing: Standing,
    organization_purge: Option<OrganizationPurge>,
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
    let entitlement = match entitlement.status.as_ref().and_then(|s| s.code.as_ref()) {
        Some(_) => entitlement,
        None => Arc::new(api.get(&name).await?),
    };
    let now = context.clock.now();
    let generation = entitlement.metadata.generation;
    // Restored without status (from its manifest and metadata): decided from
    // the facts tenure kept in its annotation, so it lands where it was.
    let facts: Option<EntitlementFacts> = entitlement
        .annotations()
        .get(FACTS_ANNOTATION)
        .and_then(|json| serde_json::from_str(json).ok());
    let mut current = entitlement
        .status
        .clone()
        .or_else(|| facts.as_ref().map(EntitlementFacts::restored));

    // Stuck until a reference appears or spec changes: say why, and wait.
    let stall = |verdict: Verdict| {
        let mut status = current.clone().unwrap_or_default();
        status.observed_generation = generation;
        status.conditions = conditions(&status.conditions, &verdict, &[], generation, now);
        let (api, name, current) = (&api, &name, current.clone());
        async move {
            apply_status(api, name, current.as_ref(), &status).await?;
            Ok(Action::await_change())
        }
    };
    let references = match check_references(&context, &entitlement).await? {
        Ok(found) => found,
        Err(verdict) => return stall(verdict).await,
    };
    if current.as_ref().and_then(|s| s.code.as_ref()).is_none() {
        let code = match assign_code(&context, &entitlement).await? {
            Ok(code) => code,
            Err(verdict) => return stall(verdict).await,
        };
        // Stored before anything else is done: whatever fails later, a retry
        // finds the code here and never takes another.
        let mut with_code = current.clone().unwrap_or_default();
        with_code.code = Some(code);
        let version = entitlement.resource_version();
        match apply_status_if_unchanged(
            &api,
            &name,
            version.as_deref(),
            current.as_ref(),
            &with_code,
        )
        .await
        {
            // Changed since read: the new code is skipped (never reused), and
            // the newer version is decided when the watch delivers it.
            Err(error) if is_conflict(&error) => return Ok(Action::await_change()),
            other => other?,
        };
        current = Some(with_code);
    }

    let policies = context.policies.state();
    let policies: Vec<&LifecyclePolicy> = policies.iter().map(Arc::as_ref).collect();
    let effective = resolve(
        &policies,
        &subject_of(&entitlement),
        entitlement.spec.policy.as_ref(),
    );
    let created = created_at(&context, entitlement.as_ref());
    let retention_locked = locked_floor(
        &policies,
        &subject_of(&entitlement),
        keys::DATA_RETENTION_DAYS,
    )
    .is_some();
    let deciding = |holds: &[Hold]| {
        decide(&Input {
            spec: &entitlement.spec,
            created,
            organization: &references.standing,
            organization_purge: references.organization_purge.as_ref(),
            retention_locked,
            holds,
            recorded: current.as_ref(),
            policy: &effective,
            now,
        })
    };
    let cached = cached_holds(&context, |h| covered_by(h, &entitlement));
    let mut decision = deciding(&cached);
    let downstream = &references.class.spec.downstream;
    let mut version = None;
    if deletes(&decision, downstream) {
        // A delete is decided only on the entitlement's latest version (the
        // watch brings a newer one soon) and on the holds as the API server
        // has them now, not as the watch cache last saw them; and the status
        // that records it is written only over that version.
        let fresh = api.get(&name).await?;
        if fresh.resource_version() != entitlement.resource_version() {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        version = fresh.resource_version();
        let live = live_holds(&context, |h| covered_by(h, &entitlement)).await?;
        decision = deciding(&live);
    }

    // What the entitlement governs follows its phase; a purge is recorded only
    // once the data is gone.
    let recorded_purge = current
        .as_ref()
        .filter(|s| s.phase == Some(EntitlementPhase::Purged));
    let governed = downstream::govern(
        &context,
        &entitlement,
        downstream,
        Governing {
            phase: decision.phase,
            deprovision: decision.deprovision,
            held: !decision.holds.is_empty(),
            purged_since: recorded_purge.and_then(|s| s.phase_since),
            recorded: current.as_ref().and_then(|s| s.resources.as_ref()),
        },
    )
    .await?;
    let announced = decision.phase == EntitlementPhase::Cancelled
        && decision
            .deadlines
            .as_ref()
            .is_some_and(|d| d.final_purge_at.is_some());
    let purge_plan = match (announced, recorded_purge) {
        (true, _) => Some(EntitlementPurgePlan {
            objects: downstream::purge_plan(&context, &entitlement, downstream).await?,
        }),
        (false, Some(purged)) => purged.purge_plan.clone(),
        (false, None) => None,
    };
    let mut extra = decision.extra.clone();
    extra.extend(outcome_conditions(
        &governed,
        decision.phase,
        &decision.holds,
    ));

    let mut status = current.clone().unwrap_or_default();
    status.observed_generation = generation;
    decision.write_to(&mut status);
    status.resources = Some(governed.counts.clone());
    status.purge_plan = purge_plan;
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
    match apply_status_if_unchanged(&api, &name, version.as_deref(), current.as_ref(), &status)
        .await
    {
        // Changed since read: decide again on the newer version.
        Err(error) if is_conflict(&error) => return Ok(Action::requeue(Duration::from_secs(1))),
        other => other?,
    };

    let remembered = EntitlementFacts::remembered(&status);
    if facts.as_ref() != Some(&remembered) {
        remember(&api, &name, &remembered).await?;
    }

    // Events follow the status write: a crash before it repeats them, never
    // loses them.
    report(
        &context,
        &entitlement,
        &decision,
        &governed.changes,
        new_conditions,
    )
    .await;
    Ok(match decision.wake_at {
        Some(at) => requeue_at(&context.clock, at),
        None => Action::await_change(),
    })
}

/// Keeps the facts a restore needs in the entitlement's annotation.
async fn remember(api: &Api<Entitlement>, name: &str, facts: &EntitlementFacts) -> Result<()> {
    let json = serde_json::to_string(facts).unwrap_or_default();
    let patch = serde_json::json!({"metadata": {"annotations": {FACTS_ANNOTATION: json}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Whether the decision deletes a bound object of some kind the class lists.
fn deletes(decision: &Decision, downstream: &[DownstreamKind]) -> bool {
    let held = !decision.holds.is_empty();
    downstream.iter().any(|kind| {
        matches!(
            desired(decision.phase, kind, decision.deprovision, held),
            Desired::Deprovisioned | Desired::Deleted
        )
    })
}

/// Records an Event for each change to a bound object, lifecycle event,
/// reminder and newly set condition.
async fn report(
    context: &Context,
    entitlement: &Entitlement,
    decision: &Decision,
    changes: &[String],
    new_conditions: Vec<&Extra>,
) {
    for change in changes {
        let reason = match change.split_whitespace().next() {
            Some("paused") => "Paused",
            Some("resumed") => "Resumed",
            Some("deprovisioned") => "Deprovisioned",
            _ => "TornDown",
        };
        record(
            context,
            entitlement,
            EventType::Normal,
            reason,
            change.clone(),
        )
        .await;
    }
    record_history(
        context,
        entitlement,
        &decision.history,
        &["Suspended", "Expired", "Cancelled"],
    )
    .await;
    if let Some(reminder) = &decision.reminder {
        record(
            context,
            entitlement,
            EventType::Normal,
            "RenewalReminder",
            reminder.message.clone(),
        )
        .await;
    }
    for extra in new_conditions {
        record(
            context,
            entitlement,
            EventType::Warning,
            &extra.type_,
            extra.message.clone(),
        )
        .await;
    }
}

/// The entitlement's class and its organization's standing, or why they
/// cannot be used: what spec asks for is checked first, then the class, then
/// the organization and that the entitlement lives in its namespace.
async fn check_references(
    context: &Context,
    entitlement: &Entitlement,
) -> Result<Result<References, Verdict>> {
    if let Some(problem) = entitlement
        .spec
        .resources
        .as_ref()
        .and_then(|r| r.selector.as_ref())
        .and_then(selector_problem)
    {
        return Ok(Err(Verdict::stalled("InvalidSelector", problem)));
    }
    // The class and the organization are read live when they matter: a
    // change of either triggers this reconcile through a watch of its own,
    // which may run ahead of the cache.
    let class_name = &entitlement.spec.class;
    let class = match context.classes.get(&ObjectRef::new(class_name)) {
        Some(class) => Some(class),
        None => Api::<EntitlementClass>::all(context.client.clone())
            .get_opt(class_name)
            .await?
            .map(Arc::new),
    };
    let Some(class) = class else {
        return Ok(Err(Verdict::stalled(
            "ClassNotFound",
            format!(
                "spec.class names EntitlementClass {:?}, which does not exist",
                entitlement.spec.class
            ),
        )));
    };
    if let Some(problem) = class_problem_of(context, &class).await? {
        return Ok(Err(Verdict::stalled(
            "ClassNotUsable",
            format!(
                "spec.class names EntitlementClass {}, which cannot be used: {}",
                entitlement.spec.class, problem.message
            ),
        )));
    }
    if let Some(problem) = entitlement
        .spec
        .code
        .as_deref()
        .and_then(|code| crate::lifecycle::codes::import_problem(code, &class.spec.code_prefix))
    {
        return Ok(Err(Verdict::stalled("CodePrefixMismatch", problem)));
    }
    let namespace = entitlement.namespace().unwrap_or_default();
    let Some(org_name) = entitlement.spec.organization.as_deref() else {
        // Standalone; but in a tenant namespace its data is that
        // organization's, kept by its purge guards.
        let tenant = organization_owning(context, &namespace);
        return Ok(Ok(References {
            class,
            standing: Standing::Active,
            organization_purge: tenant
                .and_then(|org| organization_view(&org))
                .map(|(_, purge)| purge),
        }));
    };
    let org = Api::<Organization>::all(context.client.clone())
        .get_opt(org_name)
        .await?;
    let Some(org) = org else {
        return Ok(Err(Verdict::stalled(
            "OrganizationNotFound",
            format!("spec.organization names Organization {org_name:?}, which does not exist"),
        )));
    };
    let Some((standing, organization_purge)) = organization_view(&org) else {
        return Ok(Err(Verdict::reconciling(
            "OrganizationNotObserved",
            format!(
                "waiting for Organization {org_name} to be observed: its standing decides this entitlement's"
            ),
        )));
    };
    let owned = org.owned_namespace();
    if owned != Some(namespace.as_str()) {
        let lives = owned.map_or_else(
            || "owns no namespace (see its conditions)".to_string(),
            |tenant| format!("keeps its data in namespace {tenant}"),
        );
        return Ok(Err(Verdict::stalled(
            "WrongNamespace",
            format!(
                "spec.organization names Organization {org_name}, which {lives}: its entitlements live there, not in {namespace}"
            ),
        )));
    }
    Ok(Ok(References {
        class,
        standing,
        organization_purge: Some(organization_purge),
    }))
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
