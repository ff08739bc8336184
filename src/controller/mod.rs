//! The shell around the pure core: it reads what the cluster holds, asks
//! `lifecycle` what to do, does it, and reports it. Every reconcile reads as
//! its steps: dereference (from the [`index`]) -> decide (the core) -> act ->
//! report (status, then Events) -> requeue at the next deadline.
//!
//! - [`context`]: what reconcilers share; backoff, Stalled, requeue.
//! - [`error`], [`events`]: what can fail, and every Event reason.
//! - [`index`]: the one cache per kind, fed by the only watch of it.
//! - [`organization`], [`entitlement`], [`export`], [`acceptance`],
//!   [`webhook`]: one reconciler per kind (acceptance: classes, policies
//!   and holds).
//! - [`downstream`], [`purge`], [`codes`]: what the reconcilers act with.
//! - [`deletes`], [`discovery`], [`status`]: the guards around every delete,
//!   what the API server serves, status and finalizer writes.
//! - [`skew`]: the host's clock against the API server's.

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
pub mod skew;
pub mod status;
pub mod webhook;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use futures::StreamExt;
use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use tracing::{info, warn};

use crate::api::{EntitlementClass, LifecyclePolicy, RetentionHold};
use crate::clock::Clock;
use crate::endpoints::{self, Endpoints};
use crate::leadership::{Fence, Leadership, LeaseSettings};
use crate::metrics::Metrics;
use context::Context;
use error::Error;
use export::ExportSettings;

/// How the controller runs: the flags of `tenure run`.
pub struct Settings {
    pub clock: Clock,
    pub exports: ExportSettings,
    /// Reconciles run at once, per kind.
    pub concurrency: u16,
    /// The label selector of the Organizations and Entitlements this
    /// instance acts on (`--shard-selector`); None: all of them.
    pub shard: Option<String>,
    /// The leader Lease's own client, with no bound on requests in flight:
    /// a renewal never waits behind the reconciles' requests.
    pub lease_client: Client,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// The Lease this process campaigns for (None: it leads alone).
    pub lease: Option<LeaseSettings>,
}

/// Fills the caches, then, once this process leads, runs every controller
/// until SIGTERM or SIGINT and lets in-flight reconciles finish. Fails if
/// leadership is lost: the process must stop acting at once.
pub async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
    let metrics = Arc::new(Metrics::new());
    let (index, mut feeds) = index::index();
    feeds.organizations.only(settings.shard.as_deref());
    feeds.entitlements.only(settings.shard.as_deref());
    let index = Arc::new(index);
    let endpoints = Arc::new(Endpoints {
        metrics: metrics.clone(),
        index: index.clone(),
        ready: AtomicBool::new(false),
    });
    endpoints::serve(settings.metrics_addr, endpoints.clone()).await?;
    let reporter = Reporter {
        controller: "tenure".into(),
        instance: std::env::var("POD_NAME").ok(),
    };
    let context = Arc::new(Context {
        recorder: Recorder::new(client.clone(), reporter),
        client: client.clone(),
        clock: settings.clock,
        index,
        code_allocation: codes::Allocation::default(),
        failures: context::Failures::default(),
        downstream_kinds: discovery::Kinds::default(),
        bound_caches: downstream::BoundCaches::default(),
        exports: settings.exports,
        concurrency: settings.concurrency,
        sharded: settings.shard.is_some(),
        metrics: metrics.clone(),
        deliveries: webhook::Deliveries::default(),
        fence: Fence::default(),
    });
    info!(now = %context.clock.now(), "tenure controller starting");
    skew::compare_with_api_server(&client, &metrics).await;

    // Every controller subscribes before the watches start, so none misses a
    // change; reconciles start once every cache has its first full list and
    // this process leads.
    let organizations = organization::controller(&context, &mut feeds);
    let entitlements = entitlement::controller(&context, &mut feeds);
    let classes = acceptance::controller::<EntitlementClass>(&context, &mut feeds);
    let policies = acceptance::controller::<LifecyclePolicy>(&context, &mut feeds);
    let holds = acceptance::controller::<RetentionHold>(&context, &mut feeds);
    let exports = export::controller(&context, &mut feeds);
    let webhooks = webhook::controller(&context, &mut feeds);
    let (deliver, delivering) = tokio::sync::watch::channel(false);
    tokio::spawn(feeds.run(client.clone(), delivering));
    context.index.wait_until_ready().await?;
    endpoints.set_ready();

    let mut leadership = match settings.lease {
        Some(lease) => {
            Leadership::campaign(settings.lease_client, lease, metrics, context.fence.clone())
        }
        None => Leadership::alone(&metrics, &context.fence),
    };
    tokio::select! {
        leading = leadership.acquired() => if !leading {
            anyhow::bail!("could not take up the leader Lease acquired: stopping, so that a standby takes it")
        },
        _ = terminated() => {
            leadership.resign().await;
            info!("tenure controller stopped on standby");
            return Ok(());
        }
    }
    let _ = deliver.send(true);
    let entitlements = entitlement::watch_bound_objects(entitlements, &context).await;
    let controllers = futures::future::join(
        futures::future::join3(
            organization::run(organizations, context.clone()),
            entitlement::run(entitlements, context.clone()),
            acceptance::run(classes, context.clone()),
        ),
        futures::future::join4(
            acceptance::run(policies, context.clone()),
            acceptance::run(holds, context.clone()),
            export::run(exports, context.clone()),
            webhook::run(webhooks, context.clone()),
        ),
    );
    tokio::select! {
        _ = controllers => {}
        _ = leadership.lost() => {
            anyhow::bail!("lost the leader Lease: stopping at once, so that only the new leader acts")
        }
    }
    leadership.resign().await;
    info!("tenure controller stopped");
    Ok(())
}

/// SIGTERM or SIGINT (the controllers listen for them too, once running).
async fn terminated() {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut term) = signal(SignalKind::terminate()) else {
        return tokio::signal::ctrl_c().await.unwrap_or_default();
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
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
