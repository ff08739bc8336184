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

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use crate::api::common::HistoryEntry;
use crate::api::{Entitlement, EntitlementClass, LifecyclePolicy, Organization, RetentionHold};
use crate::clock::Clock;
use crate::lifecycle::conditions::from_time;
use crate::lifecycle::hold::Hold;

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
}

/// The longest single wait: kube-runtime's scheduler cannot hold timers much
/// beyond half a year, so a later deadline is reached in steps, each of which
/// re-decides from fresh state.
const LONGEST_WAIT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Wake up when the clock reads `at` (in steps of at most [`LONGEST_WAIT`]).
fn requeue_at(clock: &Clock, at: chrono::DateTime<chrono::Utc>) -> Action {
    Action::requeue(clock.real_duration_until(at).min(LONGEST_WAIT))
}

/// Transient errors retry with a short delay; the next success resets it.
fn retry_later<K>(_: Arc<K>, error: &Error, _: Arc<Context>) -> Action {
    warn!(%error, "reconcile failed, retrying");
    Action::requeue(Duration::from_secs(5))
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
    .for_each(|_| futures::future::ready(()));
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

/// Logs the outcome of one reconcile of a controller's stream.
async fn log_outcomes<S, T, E>(kind: impl AsRef<str>, stream: S)
where
    S: futures::Stream<Item = Result<T, E>>,
    T: std::fmt::Debug,
    E: std::fmt::Display,
{
    let kind = kind.as_ref();
    stream
        .for_each(|outcome| async move {
            match outcome {
                Ok(object) => tracing::debug!(kind, ?object, "reconciled"),
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

/// The RetentionHolds that `covers` says apply, as the lifecycle reads them.
fn holds_where(context: &Context, covers: impl Fn(&RetentionHold) -> bool) -> Vec<Hold> {
    context
        .holds
        .state()
        .iter()
        .filter(|h| h.metadata.deletion_timestamp.is_none() && covers(h))
        .map(|h| Hold {
            name: h.metadata.name.clone().unwrap_or_default(),
            reason: h.spec.reason.clone(),
            ticket: h.spec.ticket.clone(),
            until: h.spec.until,
        })
        .collect()
}
