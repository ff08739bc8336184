//! The shell around the pure core: it reads what the cluster holds, asks
//! `lifecycle` what to do, does it, and reports it. Every reconcile reads as
//! its steps: dereference (from the [`index`]) -> decide (the core) -> act ->
//! report (status, then Events) -> requeue at the next deadline.
//!
//! - [`context`]: what reconcilers share; backoff, Stalled, requeue.
//! - [`error`], [`events`]: what can fail, and every Event reason.
//! - [`index`]: the one cache per kind, fed by the only watch of it.
//! - [`organization`], [`entitlement`], [`export`], [`acceptance`]: one
//!   reconciler per kind (acceptance: classes, policies and holds).
//! - [`downstream`], [`purge`], [`codes`]: what the reconcilers act with.
//! - [`deletes`], [`discovery`], [`status`]: the guards around every delete,
//!   what the API server serves, status and finalizer writes.

pub mod acceptance;
pub mod codes;
pub mod context;
pub mod deletes;
pub mod discovery;
pub mod downstream;
pub mod entitlement;
pub mod error;
pub mod events;
pub mod export;
pub mod index;
pub mod matters;
pub mod organization;
pub mod purge;
pub mod status;

use std::sync::Arc;

use futures::StreamExt;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tracing::{info, warn};

use crate::api::{EntitlementClass, LifecyclePolicy, RetentionHold};
use crate::clock::Clock;
use context::Context;
use error::Error;
use export::ExportSettings;

/// Runs every controller until SIGTERM or SIGINT, then lets in-flight
/// reconciles finish.
pub async fn run(
    client: Client,
    clock: Clock,
    exports: ExportSettings,
    concurrency: u16,
) -> anyhow::Result<()> {
    let (index, mut feeds) = index::index();
    let reporter = Reporter {
        controller: "tenure".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        clock,
        index: Arc::new(index),
        code_allocation: codes::Allocation::default(),
        failures: context::Failures::default(),
        downstream_kinds: discovery::Kinds::default(),
        bound_caches: downstream::BoundCaches::default(),
        exports,
        concurrency,
    });
    info!(now = %context.clock.now(), "tenure controller starting");

    // Every controller subscribes before the watches start, so none misses a
    // change; reconciles start once every cache has its first full list.
    let organizations = organization::controller(&context, &mut feeds);
    let entitlements = entitlement::controller(&context, &mut feeds);
    let classes = acceptance::controller::<EntitlementClass>(&context, &mut feeds);
    let policies = acceptance::controller::<LifecyclePolicy>(&context, &mut feeds);
    let holds = acceptance::controller::<RetentionHold>(&context, &mut feeds);
    let exports = export::controller(&context, &mut feeds);
    tokio::spawn(feeds.run(client));
    context.index.wait_until_ready().await?;
    let entitlements = entitlement::watch_bound_objects(entitlements, &context).await;

    futures::future::join(
        futures::future::join3(
            organization::run(organizations, context.clone()),
            entitlement::run(entitlements, context.clone()),
            acceptance::run(classes, context.clone()),
        ),
        futures::future::join3(
            acceptance::run(policies, context.clone()),
            acceptance::run(holds, context.clone()),
            export::run(exports, context.clone()),
        ),
    )
    .await;
    info!("tenure controller stopped");
    Ok(())
}

/// Logs the outcome of one reconcile of a controller's stream; a failing
/// watch at warn, with its kind (a failed reconcile is logged by
/// `context::retry_later`).
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
