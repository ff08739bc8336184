//! The kinds whose status (so far) only reports whether the controller accepted
//! them: EntitlementClass, LifecyclePolicy and RetentionHold. One
//! generic reconciler writes their observedGeneration and conditions.

use std::fmt::Debug;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::status::{apply_status_if_unchanged, is_conflict};
use super::{Context, Result, log_outcomes, requeue_at, retry_later};
use crate::api::{
    EntitlementClass, LifecyclePolicy, LifecyclePolicyStatus, RetentionHold, RetentionHoldStatus,
    class::EntitlementClassStatus,
};
use crate::lifecycle::conditions::{Extra, Verdict, conditions};
use crate::lifecycle::policy;

pub trait Reported:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
    type Status: Default + Clone + PartialEq + Serialize + Send + Sync;
    fn status(&self) -> Option<&Self::Status>;
    /// The API to write this object's status through.
    fn api(&self, client: Client) -> Api<Self>;
    fn observed(status: &mut Self::Status) -> (&mut Option<i64>, &mut Vec<Condition>);
    /// What the conditions say at `now`, and when that next changes by itself.
    fn verdict(&self, now: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>);
    /// Conditions besides the kstatus ones, which may depend on other objects.
    fn extra(&self, _context: &Context) -> Vec<Extra> {
        Vec::new()
    }
    /// Fills status fields besides the conditions from what the controller sees.
    fn observe(&self, _context: &Context, _status: &mut Self::Status) {}
    /// Whether the status holds state of its own (not only conditions), so
    /// that a write from a stale copy must be refused.
    const GUARDED: bool = false;
    /// Whether one object's change may change the others' conditions.
    const SIBLINGS_MATTER: bool = false;
}

pub async fn run<K: Reported>(context: Arc<Context>) {
    let api = Api::<K>::all(context.client.clone());
    let mut controller =
        Controller::new(api.clone(), watcher::Config::default()).shutdown_on_signal();
    if K::SIBLINGS_MATTER {
        let store = controller.store();
        controller = controller.watches(api, watcher::Config::default(), move |_| {
            store
                .state()
                .iter()
                .map(|object| ObjectRef::from_obj(object.as_ref()))
                .collect::<Vec<_>>()
        });
    }
    log_outcomes(
        K::kind(&()).into_owned(),
        controller.run(reconcile::<K>, retry_later, context),
    )
    .await;
}

async fn reconcile<K: Reported>(object: Arc<K>, context: Arc<Context>) -> Result<Action> {
    let api = object.api(context.client.clone());
    let now = context.clock.now();
    let (verdict, wake_at) = object.verdict(now);
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

/// Every status here keeps its own `observedGeneration` and `conditions`.
macro_rules! status_accessors {
    ($status:ty) => {
        type Status = $status;
        fn status(&self) -> Option<&Self::Status> {
            self.status.as_ref()
        }
        fn observed(status: &mut Self::Status) -> (&mut Option<i64>, &mut Vec<Condition>) {
            (&mut status.observed_generation, &mut status.conditions)
        }
    };
}

impl Reported for EntitlementClass {
    status_accessors!(EntitlementClassStatus);
    // Status keeps the code sequences, written by the code allocator too.
    const GUARDED: bool = true;
    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn verdict(&self, _: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
        let message = format!("codes of this class start with {}-", self.spec.code_prefix);
        (Verdict::ready("Accepted", message), None)
    }
}

impl Reported for LifecyclePolicy {
    status_accessors!(LifecyclePolicyStatus);
    const SIBLINGS_MATTER: bool = true;
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
    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn verdict(&self, _: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
        let scope = self.spec.scope.clone().unwrap_or_default();
        let applies_to = match (scope.class, scope.organization, scope.product) {
            (Some(class), _, _) => format!("entitlements of class {class}"),
            (_, Some(organization), _) => {
                format!("organization {organization} and its entitlements")
            }
            (_, _, Some(product)) => format!("entitlements of product {product}"),
            _ => "every organization and entitlement (global)".into(),
        };
        (
            Verdict::ready("Accepted", format!("applies to {applies_to}")),
            None,
        )
    }
}

impl Reported for RetentionHold {
    status_accessors!(RetentionHoldStatus);
    fn observe(&self, context: &Context, status: &mut RetentionHoldStatus) {
        let mut covers = Vec::new();
        if let Some(org) = self.spec.organization.as_deref()
            && let Some(organization) = context.organizations.get(&ObjectRef::new(org))
        {
            covers.push(format!("Organization/{org}"));
            let namespace = super::organization::tenant_namespace(&organization);
            covers.push(format!("Namespace/{namespace}"));
        }
        if let Some(target) = &self.spec.entitlement
            && context
                .entitlements
                .get(&ObjectRef::new(&target.name).within(&target.namespace))
                .is_some()
        {
            covers.push(format!("Entitlement/{}/{}", target.namespace, target.name));
        }
        status.covers = covers;
    }
    fn api(&self, client: Client) -> Api<Self> {
        Api::all(client)
    }
    fn verdict(&self, now: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
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
}
