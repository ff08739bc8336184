//! What every reconciler shares, and how a reconcile's outcome becomes the
//! next wake-up: at the next deadline, after a backoff, or Stalled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use kube::runtime::controller::Action;
use kube::runtime::events::Recorder;
use kube::{Client, Resource};
use tracing::warn;

use super::error::{Error, Result};
use super::export::ExportSettings;
use super::index::Index;
use super::{codes, discovery, downstream, status, webhook};
use crate::api::common::HistoryEntry;
use crate::clock::Clock;
use crate::leadership::Fence;
use crate::lifecycle::conditions::{Verdict, from_time};
use crate::metrics::Metrics;

/// What every reconciler shares.
pub struct Context {
    pub client: Client,
    pub clock: Clock,
    pub recorder: Recorder,
    /// Every object of tenure's kinds and the namespaces, as the watches
    /// last delivered them.
    pub index: Arc<Index>,
    /// Where DataExports are written, and for how long they are kept.
    pub exports: ExportSettings,
    /// The API resources of downstream kinds, found by discovery.
    pub downstream_kinds: discovery::Kinds,
    /// Objects labelled for entitlements, of the kinds classes list.
    pub bound_caches: downstream::BoundCaches,
    /// Serialises code allocation per class in this process (see `codes`).
    pub code_allocation: codes::Allocation,
    /// Consecutive failures per object, for exponential backoff.
    pub failures: Failures,
    /// Reconciles run at once, per kind (`--concurrency`).
    pub concurrency: u16,
    /// This instance is one shard (`--shard-selector`): it caches only its
    /// own Organizations and Entitlements, and leaves DataExports and
    /// RetentionHolds of other shards' organizations to them.
    pub sharded: bool,
    pub metrics: Arc<Metrics>,
    /// What LifecycleWebhook deliveries share (an HTTP client, backoffs).
    pub deliveries: webhook::Deliveries,
    /// Until when this process may act as the leader: checked right before
    /// what no API server precondition guards (an export ZIP put in place or
    /// deleted, an upload completed) and every export status write.
    pub fence: Fence,
}

/// A reconcile that takes longer is given up (its steps are idempotent,
/// as after a crash) and retried with backoff, so that one waiting forever
/// never keeps a turn of `--concurrency` from the others.
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);

impl Context {
    /// How every controller runs: at most `concurrency` reconciles at once
    /// (0: no bound).
    pub fn controller_config(&self) -> kube::runtime::controller::Config {
        kube::runtime::controller::Config::default().concurrency(self.concurrency)
    }

    /// When `object` was created, on the controller's clock.
    pub fn created_at<K: Resource>(&self, object: &K) -> DateTime<Utc> {
        object
            .meta()
            .creation_timestamp
            .as_ref()
            .map_or_else(|| self.clock.now(), |t| self.clock.observed(from_time(t)))
    }

    /// Counts the transitions just written to `K`'s history, and how late
    /// each one dated at a deadline its status `announced` was acted on.
    pub fn count_transitions<K: Resource<DynamicType = ()>>(
        &self,
        history: &[HistoryEntry],
        announced: &[DateTime<Utc>],
    ) {
        let real_seconds = |simulated| self.clock.real_seconds(simulated);
        let now = self.clock.now();
        (self.metrics).transitions(&K::kind(&()), history, announced, now, real_seconds);
    }

    /// Wake up when the clock reads `at` (in steps of at most
    /// [`LONGEST_WAIT`]), or only on a change when nothing is due.
    pub fn wake_at(&self, at: Option<DateTime<Utc>>) -> Action {
        match at {
            Some(at) => Action::requeue(self.clock.real_duration_until(at).min(LONGEST_WAIT)),
            None => Action::await_change(),
        }
    }
}

/// Decide again soon: what was read changed before it was written, and the
/// newer version is decided on its own.
pub fn decide_again() -> Action {
    Action::requeue(Duration::from_secs(1))
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
pub fn backoff(failures: u32) -> Duration {
    let doubled = FIRST_RETRY.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1)));
    doubled.min(LONGEST_RETRY)
}

/// Transient errors retry with exponential backoff per object, from a few
/// seconds up to minutes; the next success resets it.
pub fn retry_later<K: Resource<DynamicType = ()>>(
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
        error = error.label(),
        message = %error,
        failures,
        retry_in = ?wait,
        "reconcile failed"
    );
    Action::requeue(wait)
}

/// Runs `reconcile` within [`RECONCILE_TIMEOUT`], resets the object's
/// backoff when it succeeds, and turns an error retrying cannot fix into
/// condition Stalled with its reason instead of retrying it forever (it is
/// tried again after the longest backoff, in case what it needed was
/// granted meanwhile).
pub async fn reconciled<K, R, F>(
    object: Arc<K>,
    context: Arc<Context>,
    reconcile: R,
) -> Result<Action>
where
    K: status::WithStatus,
    R: FnOnce(Arc<K>, Arc<Context>) -> F,
    F: std::future::Future<Output = Result<Action>>,
{
    let key = failure_key(object.as_ref());
    let started = std::time::Instant::now();
    let outcome = tokio::time::timeout(
        RECONCILE_TIMEOUT,
        reconcile(object.clone(), context.clone()),
    )
    .await
    .unwrap_or(Err(Error::TimedOut(RECONCILE_TIMEOUT)));
    let error = outcome.as_ref().err().map(Error::label);
    (context.metrics).reconciled(&K::kind(&()), started.elapsed(), error);
    match outcome {
        Ok(action) => {
            context.failures.succeed(&key);
            Ok(action)
        }
        Err(error) => match error.permanent() {
            Some((reason, message)) => {
                warn!(kind = %K::kind(&()), name = object.meta().name.as_deref(), error = error.label(), message = %error, "stalled");
                let verdict = Verdict::stalled(reason, message);
                status::write_verdict(object.as_ref(), &context, &verdict).await?;
                Ok(Action::requeue(LONGEST_RETRY))
            }
            None => Err(error),
        },
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
