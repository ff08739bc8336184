//! The shell around the pure core: one reconciler per kind, the shared context,
//! status writing, finalizers and Events.

pub mod codes;
pub mod downstream;
mod entitlement;
pub mod export;
mod organization;
mod purge;
mod reported;
mod status;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::api::common::HistoryEntry;
use crate::api::policy::PolicyScope;
use crate::api::{Entitlement, EntitlementClass, LifecyclePolicy, Organization, RetentionHold};
use crate::clock::Clock;
use crate::lifecycle::conditions::from_time;
use crate::lifecycle::hold::{Hold, HoldTarget};
use crate::lifecycle::policy::{Subject, scope_matches};

/// The one field manager every status write uses.
pub const FIELD_MANAGER: &str = "tenure";

#[derive(thiserror::Error, Debug)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("writing an export: {0}")]
    Export(String),
    #[error("{0} has no name")]
    Unnamed(&'static str),
    /// Something tenure was about to change turned out not to be its own.
    #[error("refusing to touch what tenure does not own: {0}")]
    NotOwned(String),
    /// A RetentionHold the cache had not shown yet turned up in the live
    /// re-read right before a delete: nothing was deleted, decide again.
    #[error("RetentionHold {0} appeared right before a delete; nothing was deleted")]
    HoldAppeared(String),
}

impl Error {
    /// For an error that retrying will not fix (tenure is not allowed to do
    /// something, or the object is refused): the Stalled reason and message.
    pub fn permanent(&self) -> Option<(&'static str, String)> {
        match self {
            Error::Kube(kube::Error::Api(status)) if status.code == 403 => Some((
                "Forbidden",
                format!(
                    "tenure is not allowed to do what this needs ({}); grant it in tenure's ClusterRole (the chart's rbac values)",
                    status.message
                ),
            )),
            Error::Kube(kube::Error::Api(status)) if status.code == 422 => Some((
                "Invalid",
                format!("the API server refused a write: {}", status.message),
            )),
            Error::NotOwned(what) => Some((
                "NotOwned",
                format!("refusing to touch what tenure does not own: {what}"),
            )),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What every reconciler shares.
pub struct Context {
    pub client: Client,
    pub clock: Clock,
    pub recorder: Recorder,
    /// Organizations and EntitlementClasses, read live from watches, for lookups
    /// from other kinds' reconcilers.
    pub organizations: Store<Organization>,
    pub entitlements: Store<Entitlement>,
    pub classes: Store<EntitlementClass>,
    pub policies: Store<LifecyclePolicy>,
    pub holds: Store<RetentionHold>,
    /// Where DataExports are written, and for how long they are kept.
    pub exports: export::ExportSettings,
    /// The API resources of downstream kinds, found by discovery.
    pub downstream_kinds: downstream::Kinds,
    /// Serialises code allocation per class in this process (see `codes`).
    pub code_allocation: codes::Allocation,
    /// Consecutive failures per object, for exponential backoff.
    pub failures: Failures,
}

/// Consecutive reconcile failures per object (kind/namespace/name).
#[derive(Default)]
pub struct Failures(Mutex<HashMap<String, u32>>);

impl Failures {
    /// Counts one more failure of `key`; returns how many in a row.
    fn fail(&self, key: String) -> u32 {
        let mut failures = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let count = failures.entry(key).or_default();
        *count = count.saturating_add(1);
        *count
    }

    fn succeed(&self, key: &str) {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).remove(key);
    }
}

/// The longest single wait: kube-runtime's scheduler cannot hold timers much
/// beyond half a year, so a later deadline is reached in steps, each of which
/// re-decides from fresh state.
const LONGEST_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Wake up when the clock reads `at` (in steps of at most [`LONGEST_WAIT`]).
fn requeue_at(clock: &Clock, at: chrono::DateTime<chrono::Utc>) -> Action {
    Action::requeue(clock.real_duration_until(at).min(LONGEST_WAIT))
}

/// The first retry after a failure, doubled on each failure in a row.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// The longest wait between retries.
const LONGEST_RETRY: Duration = Duration::from_secs(300);

fn failure_key<K: Resource<DynamicType = ()>>(object: &K) -> String {
    let meta = object.meta();
    format!(
        "{}/{}/{}",
        K::kind(&()),
        meta.namespace.as_deref().unwrap_or_default(),
        meta.name.as_deref().unwrap_or_default()
    )
}

/// How long to wait before the `failures`-th retry in a row.
fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    doubled.min(LONGEST_RETRY)
}

/// Transient errors retry with exponential backoff per object, from a few
/// seconds up to minutes; the next success resets it.
fn retry_later<K: Resource<DynamicType = ()>>(
    object: Arc<K>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    let failures = context.failures.fail(failure_key(object.as_ref()));
    let wait = backoff(failures);
    warn!(
        kind = %K::kind(&()),
        name = object.meta().name.as_deref(),
        namespace = object.meta().namespace.as_deref(),
        %error,
        failures,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// Runs `reconcile`, resets the object's backoff when it succeeds, and turns
/// an error retrying cannot fix into condition Stalled with its reason
/// instead of retrying it forever (it is tried again after the longest
/// backoff, in case what it needed was granted meanwhile).
async fn reconciled<K, F>(object: Arc<K>, context: Arc<Context>, reconcile: F) -> Result<Action>
where
    K: status::WithStatus,
    F: std::future::Future<Output = Result<Action>>,
{
    let key = failure_key(object.as_ref());
    match reconcile.await {
        Ok(action) => {
            context.failures.succeed(&key);
            Ok(action)
        }
        Err(error) => match error.permanent() {
            Some((reason, message)) => {
                warn!(kind = %K::kind(&()), name = object.meta().name.as_deref(), %error, "stalled");
                let verdict = crate::lifecycle::conditions::Verdict::stalled(reason, message);
                status::write_verdict(object.as_ref(), &context, &verdict).await?;
                Ok(Action::requeue(LONGEST_RETRY))
            }
            None => Err(error),
        },
    }
}

/// A reflector store fed by a watch of every object of `K`, for lookups.
fn shared_store<K>(
    client: &Client,
) -> (
    Store<K>,
    impl std::future::Future<Output = ()> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (reader, writer) = reflector::store();
    let stream = reflector::reflector(
        writer,
        watcher(Api::<K>::all(client.clone()), watcher::Config::default()),
    )
    .default_backoff()
    .touched_objects()
    .for_each(|event| {
        if let Err(error) = event {
            warn!(kind = %K::kind(&()), %error, "watch failed; it is retried with backoff");
        }
        futures::future::ready(())
    });
    (reader, stream)
}

/// Runs every controller until SIGTERM or SIGINT, then lets in-flight
/// reconciles finish.
pub async fn run(
    client: Client,
    clock: Clock,
    exports: export::ExportSettings,
) -> anyhow::Result<()> {
    let (organizations, organizations_watch) = shared_store::<Organization>(&client);
    let (entitlements, entitlements_watch) = shared_store::<Entitlement>(&client);
    let (classes, classes_watch) = shared_store::<EntitlementClass>(&client);
    let (policies, policies_watch) = shared_store::<LifecyclePolicy>(&client);
    let (holds, holds_watch) = shared_store::<RetentionHold>(&client);
    let reporter = Reporter {
        controller: "tenure".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        clock,
        organizations,
        entitlements,
        classes,
        policies,
        holds,
        code_allocation: codes::Allocation::default(),
        failures: Failures::default(),
        downstream_kinds: downstream::Kinds::default(),
        exports,
    });
    info!(now = %context.clock.now(), "tenure controller starting");

    // The lookup watches run in the background for as long as the process does;
    // reconcilers start once every store has its first full list.
    tokio::spawn(organizations_watch);
    tokio::spawn(entitlements_watch);
    tokio::spawn(classes_watch);
    tokio::spawn(policies_watch);
    tokio::spawn(holds_watch);
    context.organizations.wait_until_ready().await?;
    context.entitlements.wait_until_ready().await?;
    context.classes.wait_until_ready().await?;
    context.policies.wait_until_ready().await?;
    context.holds.wait_until_ready().await?;

    futures::future::join(
        futures::future::join3(
            organization::run(context.clone()),
            entitlement::run(context.clone()),
            reported::run::<EntitlementClass>(context.clone()),
        ),
        futures::future::join3(
            reported::run::<LifecyclePolicy>(context.clone()),
            reported::run::<RetentionHold>(context.clone()),
            export::run(context.clone()),
        ),
    )
    .await;
    info!("tenure controller stopped");
    Ok(())
}

/// Logs the outcome of one reconcile of a controller's stream; a failing
/// watch at warn, with its kind (a failed reconcile is logged by `retry_later`).
async fn log_outcomes<S, T, E>(kind: impl AsRef<str>, stream: S)
where
    S: futures::Stream<Item = Result<T, kube::runtime::controller::Error<Error, E>>>,
    T: std::fmt::Debug,
    E: std::error::Error + 'static,
{
    use kube::runtime::controller::Error as ControllerError;
    let kind = kind.as_ref();
    stream
        .for_each(|outcome| async move {
            match outcome {
                Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
                Err(ControllerError::QueueError(error)) => {
                    warn!(kind, %error, "watch failed; it is retried with backoff")
                }
                Err(error) => tracing::debug!(kind, %error, "reconcile error"),
            }
        })
        .await;
}

/// Records a Kubernetes Event about `object`. An Event that cannot be written is
/// logged, not retried: it must never hold up the lifecycle.
async fn record<K: Resource<DynamicType = ()>>(
    context: &Context,
    object: &K,
    type_: kube::runtime::events::EventType,
    reason: &str,
    note: String,
) {
    let event = kube::runtime::events::Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: reason.into(),
        secondary: None,
    };
    tracing::debug!(
        reason,
        name = object.meta().name.as_deref(),
        "recording an Event"
    );
    if let Err(error) = context
        .recorder
        .publish(&event, &object.object_ref(&()))
        .await
    {
        warn!(%error, reason, "could not record an Event");
    }
}

/// When `object` was created, on the controller's clock.
fn created_at<K: Resource>(context: &Context, object: &K) -> chrono::DateTime<chrono::Utc> {
    object.meta().creation_timestamp.as_ref().map_or_else(
        || context.clock.now(),
        |t| context.clock.observed(from_time(t)),
    )
}

/// Records each new history entry as an Event: a Warning for the `warnings`
/// events, Normal otherwise.
async fn record_history<K: Resource<DynamicType = ()>>(
    context: &Context,
    object: &K,
    history: &[HistoryEntry],
    warnings: &[&str],
) {
    for entry in history {
        let type_ = if warnings.contains(&entry.event.as_str()) {
            kube::runtime::events::EventType::Warning
        } else {
            kube::runtime::events::EventType::Normal
        };
        let note = format!("{} ({}, at {})", entry.message, entry.reason, entry.at);
        record(context, object, type_, &entry.event, note).await;
    }
}

/// The scope each LifecyclePolicy had when last seen: a policy whose scope
/// changed re-decides what its old scope matched as well as its new one.
#[derive(Default)]
struct PolicyScopes(Mutex<HashMap<String, Option<PolicyScope>>>);

impl PolicyScopes {
    /// Records the policy's scope now, and returns whether a change of it
    /// concerns `subject`: matched by the scope now or by the one before.
    fn changed(&self, policy: &LifecyclePolicy) -> impl Fn(&Subject) -> bool + use<> {
        let scope = policy.spec.scope.clone();
        let name = policy.metadata.name.clone().unwrap_or_default();
        let before = self
            .0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, scope.clone());
        move |subject| {
            scope_matches(scope.as_ref(), subject)
                || before
                    .as_ref()
                    .is_some_and(|old| scope_matches(old.as_ref(), subject))
        }
    }
}

/// The organization that owns `namespace` (its status records it), if any.
fn organization_owning(context: &Context, namespace: &str) -> Option<Arc<Organization>> {
    context
        .organizations
        .state()
        .into_iter()
        .find(|org| org.owned_namespace() == Some(namespace))
}

/// A RetentionHold as the lifecycle reads it: the organization it names is
/// looked up for its tenant namespace.
fn as_hold(context: &Context, hold: &RetentionHold) -> Hold {
    let target = match (&hold.spec.organization, &hold.spec.entitlement) {
        (Some(organization), _) => HoldTarget::Organization {
            name: organization.clone(),
            namespace: context
                .organizations
                .get(&ObjectRef::new(organization))
                .map(|o| o.tenant_namespace()),
        },
        (None, Some(entitlement)) => HoldTarget::Entitlement {
            namespace: entitlement.namespace.clone(),
            name: entitlement.name.clone(),
        },
        // The API server refuses a hold without a target.
        (None, None) => HoldTarget::Entitlement {
            namespace: String::new(),
            name: String::new(),
        },
    };
    Hold {
        name: hold.metadata.name.clone().unwrap_or_default(),
        reason: hold.spec.reason.clone(),
        ticket: hold.spec.ticket.clone(),
        until: hold.spec.until,
        target,
    }
}

/// The RetentionHolds in the cache that `covers` says apply.
fn cached_holds(context: &Context, covers: impl Fn(&Hold) -> bool) -> Vec<Hold> {
    context
        .holds
        .state()
        .iter()
        .filter(|h| h.metadata.deletion_timestamp.is_none())
        .map(|h| as_hold(context, h))
        .filter(|h| covers(h))
        .collect()
}

/// The RetentionHolds that `covers` says apply, read live from the API server:
/// what every delete checks right before it is sent, since a watch cache can
/// lag behind a hold just placed.
async fn live_holds(context: &Context, covers: impl Fn(&Hold) -> bool) -> Result<Vec<Hold>> {
    let holds = Api::<RetentionHold>::all(context.client.clone())
        .list(&kube::api::ListParams::default())
        .await?;
    Ok(holds
        .items
        .iter()
        .filter(|h| h.metadata.deletion_timestamp.is_none())
        .map(|h| as_hold(context, h))
        .filter(|h| covers(h))
        .collect())
}

/// Fails with [`Error::HoldAppeared`] if a hold in force at `now` covers what
/// is about to be deleted, read live right before the delete.
async fn no_live_hold(
    context: &Context,
    now: chrono::DateTime<chrono::Utc>,
    covers: impl Fn(&Hold) -> bool,
) -> Result<()> {
    match live_holds(context, covers)
        .await?
        .into_iter()
        .find(|h| h.in_force(now))
    {
        Some(hold) => Err(Error::HoldAppeared(hold.describe())),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_in_a_row_back_off_from_seconds_to_minutes() {
        let waits: Vec<u64> = [1, 2, 3, 8, 9, 40, u32::MAX]
            .into_iter()
            .map(|n| backoff(n).as_secs())
            .collect();
        assert_eq!(waits, [2, 4, 8, 256, 300, 300, 300]);
    }
}
