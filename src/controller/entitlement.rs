//! Entitlement reconciler, as its steps: dereference (class, organization,
//! holds, policies from the index; the core checks them), take a code
//! (stored at once), decide (the core; re-decided on live holds before any
//! delete), act (govern the bound objects) and report (status, the facts a
//! restore needs, Events), then requeue at the next deadline.

use std::sync::Arc;

use futures::StreamExt;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::DynamicObject;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::store::Writer;
use kube::runtime::reflector::{ObjectRef, reflector};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::acceptance::class_refusal;
use super::context::{Context, decide_again, reconciled, retry_later};
use super::deletes::live_holds;
use super::discovery::Served;
use super::downstream::{self, Governing};
use super::error::Result;
use super::events::{Events, Reason, record};
use super::index::{Feeds, PolicyScopes, covers_entitlement};
use super::status::{Applied, apply_status, apply_status_if_unchanged, remove_finalizer};
use super::{codes, log_outcomes, matters};
use crate::api::class::DownstreamKind;
use crate::api::entitlement::{EntitlementFacts, EntitlementPurgePlan, EntitlementStatus};
use crate::api::{
    ENTITLEMENT_LABEL, Entitlement, EntitlementClass, EntitlementPhase, FACTS_ANNOTATION, FINALIZER,
};
use crate::lifecycle::conditions::{Extra, Verdict, conditions, newly_set};
use crate::lifecycle::downstream::{ChangeAction, Outcome, deletes, outcome_conditions};
use crate::lifecycle::entitlement::{Decision, Input, PolicyView, decide};
use crate::lifecycle::hold::Hold;
use crate::lifecycle::policy::Subject;
use crate::lifecycle::references::{self, Found, References};

/// The Entitlement controller: a class, an organization, a hold or a policy
/// appearing, changing or going away re-decides exactly the entitlements it
/// can affect.
pub fn controller(context: &Arc<Context>, feeds: &mut Feeds) -> Controller<Entitlement> {
    let index = &context.index;
    let (by_class, by_organization, by_hold, by_policy) =
        (index.clone(), index.clone(), index.clone(), index.clone());
    let scopes = PolicyScopes::default();
    Controller::for_shared_stream(
        feeds.entitlements.subscribe_to(matters::own),
        index.entitlements(),
    )
    .watches_shared_stream(
        feeds.classes.subscribe_to(matters::class_usability),
        move |class| by_class.entitlements_of_class(&class.name_any()),
    )
    .watches_shared_stream(
        feeds
            .organizations
            .subscribe_to(matters::organization_standing),
        move |org| by_organization.entitlements_of(&org),
    )
    .watches_shared_stream(feeds.holds.subscribe(), move |hold| {
        let covered = by_hold.covered_entitlements(&hold);
        covered
            .iter()
            .map(|e| ObjectRef::from_obj(e.as_ref()))
            .collect::<Vec<_>>()
    })
    .watches_shared_stream(feeds.policies.subscribe(), move |policy| {
        let concerns = scopes.changed(&policy);
        by_policy
            .entitlements()
            .state()
            .iter()
            .filter(|e| concerns(&Subject::of_entitlement(e)))
            .map(|e| ObjectRef::from_obj(e.as_ref()))
            .collect::<Vec<_>>()
    })
    .with_config(context.controller_config())
    .shutdown_on_signal()
}

/// A labelled object of a kind some class governs appearing or changing
/// wakes its entitlement: a workload created while it is paused is paused
/// then, not at the next deadline. The kinds are those the classes list when
/// the controller starts; objects bound only by a selector are governed at
/// the entitlement's next reconcile.
pub async fn watch_bound_objects(
    mut controller: Controller<Entitlement>,
    context: &Context,
) -> Controller<Entitlement> {
    let mut kinds: Vec<DownstreamKind> = context
        .index
        .classes()
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
        // One watch fills the cache first and then wakes the entitlement,
        // so that its reconcile reads what woke it. It runs in a task of
        // its own: a controller whose reconciles all wait for the cache to
        // fill stops polling its triggers, so it must not be the one
        // driving the watch.
        let api = Api::<DynamicObject>::all_with(context.client.clone(), &resource);
        // A kind tenure may not list gets no cache, rather than one that
        // never fills: its entitlements stall (Forbidden) naming the kind.
        let probe = api.list_metadata(&ListParams::default().limit(1)).await;
        if let Err(kube::Error::Api(status)) = probe
            && status.code == 403
        {
            tracing::warn!(kind = %kind.kind, "tenure may not list a downstream kind: its entitlements stall until it may");
            continue;
        }
        let writer = Writer::new(resource.clone());
        let cache = writer.as_reader();
        let labelled = watcher(api, watcher::Config::default().labels(ENTITLEMENT_LABEL))
            .default_backoff()
            .modify(|object| object.metadata.managed_fields = None);
        let (changed, changes) = futures::channel::mpsc::unbounded();
        let kind_name = kind.kind.clone();
        let watch = reflector(writer, labelled).touched_objects();
        tokio::spawn(watch.for_each(move |touched| {
            match touched {
                Ok(object) => {
                    let _ = changed.unbounded_send(Ok(object));
                }
                Err(error) => {
                    tracing::warn!(%error, kind = %kind_name, "watch failed; it is retried with backoff")
                }
            }
            futures::future::ready(())
        }));
        controller = controller.watches_stream_with(changes, bound_to, resource);
        context.bound_caches.insert(&kind, cache);
    }
    controller
}

/// The entitlement a labelled object is bound to.
fn bound_to(object: DynamicObject) -> Option<ObjectRef<Entitlement>> {
    let entitlement = object.labels().get(ENTITLEMENT_LABEL)?;
    Some(ObjectRef::new(entitlement).within(&object.namespace()?))
}

pub async fn run(controller: Controller<Entitlement>, context: Arc<Context>) {
    log_outcomes(
        "Entitlement",
        controller.run(
            |entitlement, context| reconciled(entitlement, context.clone(), reconcile),
            retry_later,
            context,
        ),
    )
    .await;
}

async fn reconcile(entitlement: Arc<Entitlement>, context: Arc<Context>) -> Result<Action> {
    let api = entitlement_api(&context, &entitlement);
    if entitlement.metadata.deletion_timestamp.is_some() {
        let note = format!(
            "entitlement {}/{} deleted",
            entitlement.namespace().unwrap_or_default(),
            entitlement.name_any()
        );
        record(&context, entitlement.as_ref(), Reason::Deleted, note).await;
        remove_finalizer(&api, entitlement.as_ref()).await?;
        return Ok(Action::await_change());
    }
    let mut known = Known::of(&entitlement);
    let (class, references) = match dereference(&context, &entitlement).await? {
        Dereferenced::Found(class, references) => (class, references),
        Dereferenced::Stalled(verdict) => {
            return stall(&context, &api, &entitlement, &known, verdict).await;
        }
        // Its organization's first status wakes it; the requeue is for an
        // organization whose first reconcile leaves it without a standing.
        Dereferenced::WaitingQuietly => return Ok(Action::requeue(QUIET_WAIT)),
    };
    // A code taken now is written with the rest of the status, over the
    // version it was taken for: if the cached copy was behind (its code
    // already written), the write is refused and the code skipped, never
    // reused, and the newer version decided on its own.
    let mut code_taken_on = None;
    if known.code().is_none() {
        match take_code(&context, &entitlement).await? {
            Taken::Code(code) => {
                context.metrics.code_allocated(&entitlement.spec.class);
                known.status.get_or_insert_default().code = Some(code);
                code_taken_on = entitlement.resource_version();
            }
            Taken::Refused(verdict) => {
                return stall(&context, &api, &entitlement, &known, verdict).await;
            }
        }
    }
    let Some((decision, version)) =
        decided(&context, &api, &entitlement, &class, &references, &known).await?
    else {
        return Ok(decide_again());
    };
    let governed = act(&context, &entitlement, &class, &decision, &known).await?;
    let version = version.or(code_taken_on);
    let written = report(
        &context,
        &api,
        &entitlement,
        &decision,
        governed,
        &known,
        version,
    )
    .await?;
    Ok(match written {
        true => context.wake_at(decision.wake_at),
        false => decide_again(),
    })
}

fn entitlement_api(context: &Context, entitlement: &Entitlement) -> Api<Entitlement> {
    Api::namespaced(
        context.client.clone(),
        &entitlement.namespace().unwrap_or_default(),
    )
}

/// What tenure knows of the entitlement: its status, or, restored without
/// status (from its manifest and metadata), the facts tenure kept in its
/// annotation, so that it lands where it was.
struct Known {
    facts: Option<EntitlementFacts>,
    status: Option<EntitlementStatus>,
}

impl Known {
    fn of(entitlement: &Entitlement) -> Self {
        Self {
            facts: EntitlementFacts::of(entitlement),
            status: entitlement.known_status(),
        }
    }

    fn code(&self) -> Option<&str> {
        self.status.as_ref()?.code.as_deref()
    }

    /// Purged, as recorded: its purge plan is kept as the record of what went.
    fn purged(&self) -> Option<&EntitlementStatus> {
        self.status
            .as_ref()
            .filter(|s| s.phase == Some(EntitlementPhase::Purged))
    }
}

enum Dereferenced {
    Found(Arc<EntitlementClass>, References),
    Stalled(Verdict),
    /// See [`references::waits_quietly`].
    WaitingQuietly,
}

/// How long a new entitlement waits for its organization's first reconcile
/// before it reports the wait.
const QUIET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Finds the class and organizations the entitlement refers to in the index,
/// and asks the core whether they can be used.
async fn dereference(context: &Context, entitlement: &Entitlement) -> Result<Dereferenced> {
    let class = context.index.class(&entitlement.spec.class);
    let refusal = match &class {
        Some(class) => class_refusal(context, class).await?,
        None => None,
    };
    let organization = entitlement
        .spec
        .organization
        .as_deref()
        .and_then(|name| context.index.organization(name));
    let tenant = context
        .index
        .organization_owning(&entitlement.namespace().unwrap_or_default());
    let found = Found {
        entitlement,
        class: class.as_deref(),
        class_refusal: refusal.as_ref(),
        organization: organization.as_deref(),
        tenant: tenant.as_deref(),
    };
    let checked = references::check(&found);
    if let Err(verdict) = &checked
        && references::waits_quietly(&found, verdict)
    {
        return Ok(Dereferenced::WaitingQuietly);
    }
    Ok(match (checked, class) {
        (Ok(references), Some(class)) => Dereferenced::Found(class, references),
        (Err(verdict), _) => Dereferenced::Stalled(verdict),
        (Ok(_), None) => unreachable!("references::check refuses a missing class"),
    })
}

/// Stuck until a reference appears or spec changes: says why, and waits.
async fn stall(
    context: &Context,
    api: &Api<Entitlement>,
    entitlement: &Entitlement,
    known: &Known,
    verdict: Verdict,
) -> Result<Action> {
    let generation = entitlement.metadata.generation;
    let mut status = known.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    status.conditions = conditions(
        &status.conditions,
        &verdict,
        &[],
        generation,
        context.clock.now(),
    );
    let stored = entitlement.status.as_ref();
    apply_status(api, &entitlement.name_any(), stored, &status).await?;
    Ok(Action::await_change())
}

enum Taken {
    Code(String),
    Refused(Verdict),
}

/// Takes the entitlement's code: `spec.code` for an import (unless another
/// entitlement holds it), or the next of its class.
async fn take_code(context: &Context, entitlement: &Entitlement) -> Result<Taken> {
    let class = &entitlement.spec.class;
    Ok(match &entitlement.spec.code {
        Some(code) => match context.index.code_holder(code, entitlement) {
            Some(holder) => Taken::Refused(crate::lifecycle::codes::in_use(code, &holder)),
            None => {
                codes::reserve(context, class, code).await?;
                Taken::Code(code.clone())
            }
        },
        None => {
            let created = context.created_at(entitlement);
            match codes::next(context, class, created).await? {
                Some(code) => Taken::Code(code),
                None => Taken::Refused(crate::lifecycle::codes::exhausted(class, created)),
            }
        }
    })
}

/// The core's decision. One that deletes is made again on the entitlement's
/// latest version and on the holds as the API server has them now, not as
/// the watch cache last saw them; the version it was made on is returned, so
/// that the status recording it is written only over that version. None:
/// the entitlement changed meanwhile.
async fn decided(
    context: &Context,
    api: &Api<Entitlement>,
    entitlement: &Entitlement,
    class: &EntitlementClass,
    references: &References,
    known: &Known,
) -> Result<Option<(Decision, Option<String>)>> {
    let policies = context.index.all_policies();
    let policies: Vec<_> = policies.iter().map(Arc::as_ref).collect();
    let policy = PolicyView::of(&policies, entitlement);
    let created = context.created_at(entitlement);
    let now = context.clock.now();
    let deciding = |holds: &[Hold]| {
        decide(&Input {
            spec: &entitlement.spec,
            created,
            organization: &references.standing,
            organization_purge: references.organization_purge.as_ref(),
            retention_locked: policy.retention_locked,
            holds,
            recorded: known.status.as_ref(),
            policy: &policy.effective,
            now,
        })
    };
    let decision = deciding(&context.index.holds_covering_entitlement(entitlement));
    let downstream = &class.spec.downstream;
    if !deletes(
        decision.phase,
        downstream,
        decision.deprovision,
        !decision.holds.is_empty(),
    ) {
        return Ok(Some((decision, None)));
    }
    let fresh = api.get(&entitlement.name_any()).await?;
    if fresh.resource_version() != entitlement.resource_version() {
        return Ok(None);
    }
    let live = live_holds(context, |h| covers_entitlement(h, entitlement)).await?;
    Ok(Some((deciding(&live), fresh.resource_version())))
}

/// What the entitlement's bound objects became, and the purge plan its
/// status shows: counted while the purge is announced, kept once Purged.
struct Governed {
    outcome: Outcome,
    purge_plan: Option<EntitlementPurgePlan>,
}

/// Brings what the entitlement governs to what its phase wants; a purge is
/// recorded only once the data is gone.
async fn act(
    context: &Context,
    entitlement: &Entitlement,
    class: &EntitlementClass,
    decision: &Decision,
    known: &Known,
) -> Result<Governed> {
    let downstream = &class.spec.downstream;
    let purged = known.purged();
    let governing = Governing {
        phase: decision.phase,
        deprovision: decision.deprovision,
        held: !decision.holds.is_empty(),
        purged_since: purged.and_then(|s| s.phase_since),
        recorded: known.status.as_ref().and_then(|s| s.resources.as_ref()),
    };
    let outcome = downstream::govern(context, entitlement, downstream, governing).await?;
    let purge_plan = match (decision.announces_purge(), purged) {
        (true, _) => Some(EntitlementPurgePlan {
            objects: downstream::purge_plan(context, entitlement, downstream).await?,
        }),
        (false, Some(purged)) => purged.purge_plan.clone(),
        (false, None) => None,
    };
    Ok(Governed {
        outcome,
        purge_plan,
    })
}

/// Writes status (over `version` when the decision deletes), keeps the
/// facts a restore needs, then records Events: a crash before the write
/// repeats them (a crash just after it loses an unsent reminder, whose
/// sending the write recorded; see `organization::record_events`). False:
/// the entitlement changed since it was read.
async fn report(
    context: &Context,
    api: &Api<Entitlement>,
    entitlement: &Entitlement,
    decision: &Decision,
    governed: Governed,
    known: &Known,
    version: Option<String>,
) -> Result<bool> {
    let generation = entitlement.metadata.generation;
    let mut extra = decision.extra.clone();
    extra.extend(outcome_conditions(
        &governed.outcome,
        decision.phase,
        &decision.holds,
    ));
    let mut status = known.status.clone().unwrap_or_default();
    status.observed_generation = generation;
    decision.write_to(&mut status);
    status.resources = Some(governed.outcome.counts.clone());
    status.purge_plan = governed.purge_plan;
    status.conditions = conditions(
        &status.conditions,
        &decision.verdict,
        &extra,
        generation,
        context.clock.now(),
    );
    let name = entitlement.name_any();
    let stored = entitlement.status.as_ref();
    let applied = apply_status_if_unchanged(api, &name, version.as_deref(), stored, &status);
    let written_as = match applied.await? {
        Applied::Stale => return Ok(false),
        Applied::Done(written_as) => written_as,
    };
    remember(api, entitlement, known, &status, written_as).await?;
    let new_conditions = newly_set(
        &extra,
        known.status.as_ref().map(|s| s.conditions.as_slice()),
    );
    record_events(
        context,
        entitlement,
        decision,
        &governed.outcome,
        new_conditions,
    );
    let announced = known.status.as_ref().and_then(|s| s.next.as_ref());
    let announced: Vec<_> = announced.map(|next| next.at).into_iter().collect();
    context.count_transitions::<Entitlement>(&decision.history, &announced);
    Ok(true)
}

/// Keeps the facts a restore needs in the entitlement's annotation, and
/// tenure's finalizer on it. The finalizer list is written over a version
/// (the one the status write left, `written_as`), so that no finalizer
/// someone added meanwhile is lost; a change meanwhile (a webhook recording
/// its deliveries) is read again once. The annotation alone needs no
/// version.
async fn remember(
    api: &Api<Entitlement>,
    entitlement: &Entitlement,
    known: &Known,
    status: &EntitlementStatus,
    written_as: Option<String>,
) -> Result<()> {
    let facts = EntitlementFacts::remembered(status);
    let finalized = entitlement.finalizers().iter().any(|f| f == FINALIZER);
    if finalized && known.facts.as_ref() == Some(&facts) {
        return Ok(());
    }
    let json = serde_json::to_string(&facts).unwrap_or_default();
    let name = entitlement.name_any();
    let params = PatchParams::default();
    if finalized {
        let patch = serde_json::json!({"metadata": {"annotations": {FACTS_ANNOTATION: json}}});
        api.patch(&name, &params, &Patch::Merge(&patch)).await?;
        return Ok(());
    }
    let mut finalizers = entitlement.finalizers().to_vec();
    let mut version = written_as.or_else(|| entitlement.resource_version());
    for read_again in [true, false] {
        if !finalizers.iter().any(|f| f == FINALIZER) {
            finalizers.push(FINALIZER.to_string());
        }
        let patch = serde_json::json!({"metadata": {
            "annotations": {FACTS_ANNOTATION: &json},
            "finalizers": &finalizers,
            "resourceVersion": version,
        }});
        match api.patch(&name, &params, &Patch::Merge(&patch)).await {
            Err(kube::Error::Api(status)) if status.code == 409 && read_again => {
                let fresh = api.get(&name).await?;
                finalizers = fresh.finalizers().to_vec();
                version = fresh.resource_version();
            }
            written => return Ok(written.map(|_| ())?),
        }
    }
    Ok(())
}

/// Records an Event for each change to a bound object, lifecycle event,
/// reminder and newly set condition, in the background.
fn record_events(
    context: &Context,
    entitlement: &Entitlement,
    decision: &Decision,
    outcome: &Outcome,
    new_conditions: Vec<&Extra>,
) {
    let mut events = Events::about(entitlement);
    for change in &outcome.changes {
        let reason = match change.action {
            ChangeAction::Paused => Reason::Paused,
            ChangeAction::Resumed => Reason::Resumed,
            ChangeAction::Deprovisioned => Reason::Deprovisioned,
            ChangeAction::TornDown => Reason::TornDown,
        };
        events.add(reason, change.describe());
    }
    events.history(&decision.history);
    if let Some(notice) = &decision.reminder {
        events.add(Reason::Notice(notice.kind), notice.message.clone());
    }
    for extra in new_conditions {
        events.add(Reason::Condition(&extra.type_), extra.message.clone());
    }
    events.send(context);
}
