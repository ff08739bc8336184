//! The kinds whose status reports whether the controller accepted them and
//! what they apply to: EntitlementClass, LifecyclePolicy and RetentionHold.
//! One generic reconciler writes their observedGeneration and conditions.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::future::BoxFuture;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Api, ResourceExt};

use super::status::{WithStatus, apply_status_if_unchanged, is_conflict};
use super::{Context, Result, log_outcomes, reconciled, requeue_at, retry_later};
use crate::api::{
    Entitlement, EntitlementClass, LifecyclePolicy, Organization, RetentionHold,
    RetentionHoldStatus,
};
use crate::lifecycle::codes::{ClassPrefix, prefix_taken_by};
use crate::lifecycle::conditions::{Extra, Verdict, conditions};
use crate::lifecycle::downstream::class_problem;
use crate::lifecycle::policy;

pub trait Reported: WithStatus {
    /// What the conditions say at `now`, and when that next changes by itself.
    fn verdict(&self, context: &Context, now: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>);
    /// A verdict that needs the API server (discovery), overriding `verdict`.
    fn check<'a>(&'a self, _context: &'a Context) -> BoxFuture<'a, Result<Option<Verdict>>> {
        Box::pin(async { Ok(None) })
    }
    /// Conditions besides the kstatus ones, which may depend on other objects.
    fn extra(&self, _context: &Context) -> Vec<Extra> {
        Vec::new()
    }
    /// Fills status fields besides the conditions from what the controller sees.
    fn observe(&self, _context: &Context, _status: &mut Self::Status) {}
    /// Other kinds whose changes re-decide objects of this one.
    fn related(controller: Controller<Self>, _context: &Context) -> Controller<Self> {
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

pub async fn run<K: Reported>(context: Arc<Context>) {
    let api = Api::<K>::all(context.client.clone());
    let controller = Controller::new(api.clone(), watcher::Config::default()).shutdown_on_signal();
    let store = controller.store();
    let controller = controller.watches(api, watcher::Config::default(), move |changed| {
        K::siblings(&changed, &store.state())
    });
    let controller = K::related(controller, &context);
    log_outcomes(
        K::kind(&()).into_owned(),
        controller.run(
            |object, context| {
                reconciled(object.clone(), context.clone(), reconcile(object, context))
            },
            retry_later,
            context,
        ),
    )
    .await;
}

async fn reconcile<K: Reported>(object: Arc<K>, context: Arc<Context>) -> Result<Action> {
    let api = object.api(context.client.clone());
    let now = context.clock.now();
    let (verdict, wake_at) = match object.check(&context).await? {
        Some(problem) => (problem, None),
        None => object.verdict(&context, now),
    };
    let generation = object.meta().generation;
    let current = object.status().cloned();
    let mut status = current.clone().unwrap_or_default();
    object.observe(&context, &mut status);
    let (observed_generation, status_conditions) = K::observed(&mut status);
    *observed_generation = generation;
    let extra = object.extra(&context);
    *status_conditions = conditions(status_conditions, &verdict, &extra, generation, now);
    let version = object.resource_version().filter(|_| K::GUARDED);
    match apply_status_if_unchanged(
        &api,
        &object.name_any(),
        version.as_deref(),
        current.as_ref(),
        &status,
    )
    .await
    {
        // The newer version is on its way through the watch, and is decided then.
        Err(error) if is_conflict(&error) => return Ok(Action::await_change()),
        other => other?,
    };
    Ok(match wake_at {
        Some(at) => requeue_at(&context.clock, at),
        None => Action::await_change(),
    })
}

/// Why `class` cannot hand out codes or govern its kinds, if it cannot: its
/// prefix belongs to an older class, or it lists a cluster-scoped kind. Its
/// entitlements stall on it too, before taking a code.
pub async fn class_problem_of(
    context: &Context,
    class: &EntitlementClass,
) -> Result<Option<Verdict>> {
    let classes = context.classes.state();
    let prefixes: Vec<ClassPrefix> = classes.iter().map(|c| class_prefix(c)).collect();
    if let Some(owner) = prefix_taken_by(&class_prefix(class), &prefixes) {
        return Ok(Some(Verdict::stalled(
            "PrefixInUse",
            format!(
                "spec.codePrefix {} is already the prefix of EntitlementClass {owner}: codes are unique across classes, so this class hands out none; choose another prefix",
                class.spec.code_prefix
            ),
        )));
    }
    let scopes = context
        .downstream_kinds
        .scopes(context, &class.spec.downstream)
        .await?;
    Ok(class_problem(&class.spec.downstream, &scopes)
        .map(|message| Verdict::stalled("ClusterScopedKind", message)))
}

fn class_prefix(class: &EntitlementClass) -> ClassPrefix<'_> {
    ClassPrefix {
        name: class.metadata.name.as_deref().unwrap_or_default(),
        prefix: &class.spec.code_prefix,
        created: class
            .metadata
            .creation_timestamp
            .as_ref()
            .map(crate::lifecycle::conditions::from_time),
    }
}

impl Reported for EntitlementClass {
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
    fn verdict(&self, _: &Context, _: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
        let message = format!("codes of this class start with {}-", self.spec.code_prefix);
        (Verdict::ready("Accepted", message), None)
    }
    fn check<'a>(&'a self, context: &'a Context) -> BoxFuture<'a, Result<Option<Verdict>>> {
        Box::pin(class_problem_of(context, self))
    }
}

impl Reported for LifecyclePolicy {
    /// A policy of the same scope may start or stop conflicting with it.
    fn siblings(_changed: &Self, all: &[Arc<Self>]) -> Vec<ObjectRef<Self>> {
        all.iter()
            .map(|p| ObjectRef::from_obj(p.as_ref()))
            .collect()
    }
    fn extra(&self, context: &Context) -> Vec<Extra> {
        let policies = context.policies.state();
        let policies: Vec<&LifecyclePolicy> = policies.iter().map(Arc::as_ref).collect();
        let name = self.name_any();
        let Some(others) = policy::conflicts(&policies).remove(&name) else {
            return Vec::new();
        };
        let winner = others
            .iter()
            .chain([&name])
            .min()
            .cloned()
            .unwrap_or_default();
        let others = others
            .iter()
            .map(|other| format!("LifecyclePolicy/{other}"))
            .collect::<Vec<_>>()
            .join(", ");
        vec![Extra {
            type_: "Conflicting".into(),
            status: true,
            reason: "SameScope".into(),
            message: format!(
                "{others} has the same scope; for a field both set, LifecyclePolicy/{winner} wins because its name sorts first. Merge them, or give each its own scope"
            ),
        }]
    }
    fn verdict(&self, _: &Context, _: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
        let scope = self.spec.scope.clone().unwrap_or_default();
        let applies_to = match (scope.class, scope.organization, scope.product) {
            (Some(class), _, _) => format!("entitlements of class {class}"),
            (_, Some(organization), _) => {
                format!("organization {organization} and its entitlements")
            }
            (_, _, Some(product)) => format!("entitlements of product {product}"),
            _ => "every organization and entitlement (global)".into(),
        };
        let locked = if self.spec.locked == Some(true) {
            "; locked: its retention and final grace are minimums for all of them"
        } else {
            ""
        };
        (
            Verdict::ready("Accepted", format!("applies to {applies_to}{locked}")),
            None,
        )
    }
}

impl RetentionHold {
    /// The organization this hold names and finds, if any.
    fn organization(&self, context: &Context) -> Option<Arc<Organization>> {
        let name = self.spec.organization.as_deref()?;
        context.organizations.get(&ObjectRef::new(name))
    }

    /// The entitlement this hold names and finds, if any.
    fn entitlement(&self, context: &Context) -> Option<Arc<Entitlement>> {
        let target = self.spec.entitlement.as_ref()?;
        context
            .entitlements
            .get(&ObjectRef::new(&target.name).within(&target.namespace))
    }
}

/// The holds whose target `matches` says an object change concerns.
fn holds_naming(
    store: &Store<RetentionHold>,
    matches: impl Fn(&RetentionHold) -> bool,
) -> Vec<ObjectRef<RetentionHold>> {
    store
        .state()
        .iter()
        .filter(|h| matches(h))
        .map(|h| ObjectRef::from_obj(h.as_ref()))
        .collect()
}

impl Reported for RetentionHold {
    fn observe(&self, context: &Context, status: &mut RetentionHoldStatus) {
        let hold = super::as_hold(context, self);
        let mut covers = Vec::new();
        if let Some(organization) = self.organization(context) {
            let name = organization.name_any();
            let namespace = organization.tenant_namespace();
            covers.push(format!("Organization/{name}"));
            covers.push(format!("Namespace/{namespace}"));
        }
        if self.organization(context).is_some() || self.entitlement(context).is_some() {
            let mut entitlements: Vec<String> = context
                .entitlements
                .state()
                .iter()
                .filter(|e| {
                    hold.covers_entitlement(
                        &e.namespace().unwrap_or_default(),
                        &e.name_any(),
                        e.spec.organization.as_deref(),
                    )
                })
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
    fn verdict(&self, context: &Context, now: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
        let missing = match (&self.spec.organization, &self.spec.entitlement) {
            (Some(name), _) if self.organization(context).is_none() => Some(format!(
                "spec.organization names Organization {name}, which does not exist"
            )),
            (None, Some(target)) if self.entitlement(context).is_none() => Some(format!(
                "spec.entitlement names Entitlement {}/{}, which does not exist",
                target.namespace, target.name
            )),
            _ => None,
        };
        let lapse = self.spec.until.filter(|until| *until > now);
        if let Some(missing) = missing {
            return (
                Verdict::not_ready(
                    "TargetNotFound",
                    format!("{missing}; the hold protects it the moment it appears"),
                ),
                lapse,
            );
        }
        match self.spec.until {
            Some(until) if until <= now => (
                Verdict::ready("Lapsed", format!("the hold lapsed at {until}")),
                None,
            ),
            Some(until) => (
                Verdict::ready("InForce", format!("in force until {until}")),
                Some(until),
            ),
            None => (
                Verdict::ready("InForce", "in force until this hold is deleted"),
                None,
            ),
        }
    }
    fn related(controller: Controller<Self>, context: &Context) -> Controller<Self> {
        let by_organization = controller.store();
        let by_entitlement = controller.store();
        let organizations = context.organizations.clone();
        controller
            .watches(
                Api::<Organization>::all(context.client.clone()),
                watcher::Config::default(),
                move |organization| {
                    let name = organization.name_any();
                    holds_naming(&by_organization, |h| {
                        h.spec.organization.as_deref() == Some(name.as_str())
                    })
                },
            )
            .watches(
                Api::<Entitlement>::all(context.client.clone()),
                watcher::Config::default(),
                move |entitlement| {
                    let namespace = entitlement.namespace().unwrap_or_default();
                    let name = entitlement.name_any();
                    let named = entitlement.spec.organization.clone();
                    // Holds on it, and on the organization it names or lives in
                    // (whose coverage lists it).
                    holds_naming(&by_entitlement, |h| match &h.spec.organization {
                        Some(organization) => {
                            named.as_deref() == Some(organization.as_str())
                                || organizations
                                    .get(&ObjectRef::new(organization))
                                    .is_some_and(|o| o.tenant_namespace() == namespace)
                        }
                        None => h
                            .spec
                            .entitlement
                            .as_ref()
                            .is_some_and(|t| t.namespace == namespace && t.name == name),
                    })
                },
            )
    }
}
