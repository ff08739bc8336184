//! What tenure tells Prometheus on `/metrics` (every metric is described in
//! README, "Metrics"): counters and histograms updated as reconciles run,
//! and gauges read from the index at each scrape, so that they can never
//! drift from what the caches hold.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};
use serde::Serialize;

use crate::api::common::HistoryEntry;
use crate::controller::index::Index;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    kind: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PhaseLabels {
    kind: String,
    phase: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransitionLabels {
    kind: String,
    event: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ClassLabel {
    class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabel {
    webhook: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DeliveryLabels {
    webhook: String,
    outcome: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

/// Every metric tenure exposes, registered once.
pub struct Metrics {
    registry: Registry,
    reconciles: Family<KindLabel, Counter>,
    reconcile_errors: Family<ErrorLabels, Counter>,
    reconcile_duration: Family<KindLabel, Histogram>,
    objects: Family<PhaseLabels, Gauge>,
    next_deadline: Family<KindLabel, FloatGauge>,
    deadline_lateness: Family<KindLabel, Histogram>,
    transitions: Family<TransitionLabels, Counter>,
    purges_started: Family<KindLabel, Counter>,
    purges_completed: Family<KindLabel, Counter>,
    purges_blocked: Family<ErrorLabels, Gauge>,
    codes_allocated: Family<ClassLabel, Counter>,
    export_bytes: Counter,
    webhook_deliveries: Family<DeliveryLabels, Counter>,
    webhook_backlog: Family<WebhookLabel, Gauge>,
    leader: Gauge,
    clock_skew: FloatGauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tenure");
        let reconciles = Family::default();
        registry.register("reconciles", "Reconciles run, by kind", reconciles.clone());
        let reconcile_errors = Family::default();
        registry.register(
            "reconcile_errors",
            "Reconciles that failed, by kind and error reason",
            reconcile_errors.clone(),
        );
        let reconcile_duration =
            Family::<KindLabel, Histogram>::new_with_constructor(duration_histogram as fn() -> _);
        registry.register_with_unit(
            "reconcile_duration",
            "How long a reconcile took, by kind",
            Unit::Seconds,
            reconcile_duration.clone(),
        );
        let objects = Family::default();
        registry.register(
            "objects",
            "Objects in the controller's caches, by kind and status.phase",
            objects.clone(),
        );
        let next_deadline = Family::default();
        registry.register_with_unit(
            "next_deadline_timestamp",
            "The earliest deadline announced in status, by kind (Entitlement: status.next.at; \
             Organization: status.finalPurgeAt), on the controller's clock",
            Unit::Seconds,
            next_deadline.clone(),
        );
        let deadline_lateness =
            Family::<KindLabel, Histogram>::new_with_constructor(lateness_histogram as fn() -> _);
        registry.register_with_unit(
            "deadline_lateness",
            "How long after an announced deadline its transition was acted on, in real seconds",
            Unit::Seconds,
            deadline_lateness.clone(),
        );
        let transitions = Family::default();
        registry.register(
            "transitions",
            "Lifecycle transitions written to status.history, by kind and event",
            transitions.clone(),
        );
        let purges_started = Family::default();
        registry.register(
            "purges_started",
            "Purges started: organizations entering Purging, entitlements entering Purged",
            purges_started.clone(),
        );
        let purges_completed = Family::default();
        registry.register(
            "purges_completed",
            "Purges completed: objects entering Purged",
            purges_completed.clone(),
        );
        let purges_blocked = Family::default();
        registry.register(
            "purges_blocked",
            "Objects whose due purge is blocked now (condition PurgeBlocked), by kind and reason",
            purges_blocked.clone(),
        );
        let codes_allocated = Family::default();
        registry.register(
            "codes_allocated",
            "Entitlement codes handed out, by class",
            codes_allocated.clone(),
        );
        let export_bytes = Counter::default();
        registry.register_with_unit(
            "export",
            "Bytes of DataExport ZIPs written",
            Unit::Bytes,
            export_bytes.clone(),
        );
        let webhook_deliveries = Family::default();
        registry.register(
            "webhook_deliveries",
            "LifecycleWebhook requests, by webhook and outcome (delivered, failed)",
            webhook_deliveries.clone(),
        );
        let webhook_backlog = Family::default();
        registry.register(
            "webhook_backlog",
            "Events waiting to be delivered, by LifecycleWebhook (its status.backlog)",
            webhook_backlog.clone(),
        );
        let leader = Gauge::default();
        registry.register(
            "leader",
            "1 while this process leads (reconciles and writes), 0 on standby",
            leader.clone(),
        );
        let clock_skew = FloatGauge::default();
        registry.register_with_unit(
            "clock_skew",
            "This host's clock minus the API server's, measured at start",
            Unit::Seconds,
            clock_skew.clone(),
        );
        Self {
            registry,
            reconciles,
            reconcile_errors,
            reconcile_duration,
            objects,
            next_deadline,
            deadline_lateness,
            transitions,
            purges_started,
            purges_completed,
            purges_blocked,
            codes_allocated,
            export_bytes,
            webhook_deliveries,
            webhook_backlog,
            leader,
            clock_skew,
        }
    }

    /// One reconcile of `kind`, and its error's reason if it failed.
    pub fn reconciled(&self, kind: &str, took: Duration, error: Option<&str>) {
        let label = kind_label(kind);
        self.reconciles.get_or_create(&label).inc();
        self.reconcile_duration
            .get_or_create(&label)
            .observe(took.as_secs_f64());
        if let Some(reason) = error {
            let labels = ErrorLabels {
                kind: kind.into(),
                reason: reason.into(),
            };
            self.reconcile_errors.get_or_create(&labels).inc();
        }
    }

    /// Transitions just written to an object's history. One dated at a
    /// deadline the object's status announced before (`announced`) counts
    /// how late it was acted on, in real seconds (`real_seconds` turns the
    /// clock's seconds into them).
    pub fn transitions(
        &self,
        kind: &str,
        new: &[HistoryEntry],
        announced: &[DateTime<Utc>],
        now: DateTime<Utc>,
        real_seconds: impl Fn(f64) -> f64,
    ) {
        let label = kind_label(kind);
        for entry in new {
            let labels = TransitionLabels {
                kind: kind.into(),
                event: entry.event.clone(),
            };
            self.transitions.get_or_create(&labels).inc();
            if purge_starts(kind, &entry.event) {
                self.purges_started.get_or_create(&label).inc();
            }
            if entry.event == "Purged" {
                self.purges_completed.get_or_create(&label).inc();
            }
            if entry.at <= now && announced.contains(&entry.at) {
                let late = (now - entry.at).as_seconds_f64();
                self.deadline_lateness
                    .get_or_create(&label)
                    .observe(real_seconds(late));
            }
        }
    }

    pub fn code_allocated(&self, class: &str) {
        let label = ClassLabel {
            class: class.into(),
        };
        self.codes_allocated.get_or_create(&label).inc();
    }

    pub fn exported(&self, bytes: u64) {
        self.export_bytes.inc_by(bytes);
    }

    /// One request of `webhook`: delivered (a 2xx answer) or failed.
    pub fn webhook_request(&self, webhook: &str, delivered: bool) {
        let labels = DeliveryLabels {
            webhook: webhook.into(),
            outcome: if delivered { "delivered" } else { "failed" }.into(),
        };
        self.webhook_deliveries.get_or_create(&labels).inc();
    }

    pub fn set_leader(&self, leading: bool) {
        self.leader.set(leading.into());
    }

    pub fn set_clock_skew(&self, seconds: f64) {
        self.clock_skew.set(seconds);
    }

    /// The exposition in the OpenMetrics text format, gauges read from
    /// `index` now.
    pub fn encode(&self, index: &Index) -> String {
        self.read_gauges(index);
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }

    fn read_gauges(&self, index: &Index) {
        self.objects.clear();
        self.purges_blocked.clear();
        self.next_deadline.clear();
        self.webhook_backlog.clear();
        for webhook in index.webhooks().state() {
            let label = WebhookLabel {
                webhook: webhook.metadata.name.clone().unwrap_or_default(),
            };
            let backlog = webhook.status.as_ref().map_or(0, |s| s.backlog);
            self.webhook_backlog.get_or_create(&label).set(backlog);
        }
        let organizations = index.organizations().state();
        let entitlements = index.entitlements().state();
        let exports = index.exports().state();
        for org in &organizations {
            let status = org.status.as_ref();
            self.count("Organization", status.and_then(|s| s.phase.as_ref()));
            self.blocked("Organization", status.map(|s| s.conditions.as_slice()));
        }
        for ent in &entitlements {
            let status = ent.status.as_ref();
            self.count("Entitlement", status.and_then(|s| s.phase.as_ref()));
            self.blocked("Entitlement", status.map(|s| s.conditions.as_slice()));
        }
        for export in &exports {
            self.count(
                "DataExport",
                export.status.as_ref().and_then(|s| s.phase.as_ref()),
            );
        }
        let next_purge = organizations
            .iter()
            .filter_map(|o| o.status.as_ref())
            .filter(|s| s.tombstone.is_none())
            .filter_map(|s| s.final_purge_at)
            .min();
        let next_transition = entitlements
            .iter()
            .filter_map(|e| e.status.as_ref()?.next.as_ref().map(|n| n.at))
            .min();
        for (kind, at) in [
            ("Organization", next_purge),
            ("Entitlement", next_transition),
        ] {
            if let Some(at) = at {
                let seconds = at.timestamp_millis() as f64 / 1000.0;
                self.next_deadline
                    .get_or_create(&kind_label(kind))
                    .set(seconds);
            }
        }
    }

    fn count(&self, kind: &str, phase: Option<&impl Serialize>) {
        let phase = phase
            .and_then(|p| serde_json::to_value(p).ok())
            .and_then(|v| v.as_str().map(String::from))
            .unwrap_or_else(|| "Unknown".into());
        let labels = PhaseLabels {
            kind: kind.into(),
            phase,
        };
        self.objects.get_or_create(&labels).inc();
    }

    fn blocked(&self, kind: &str, conditions: Option<&[Condition]>) {
        let blocked = conditions
            .unwrap_or_default()
            .iter()
            .find(|c| c.type_ == "PurgeBlocked" && c.status == "True");
        if let Some(condition) = blocked {
            let labels = ErrorLabels {
                kind: kind.into(),
                reason: condition.reason.clone(),
            };
            self.purges_blocked.get_or_create(&labels).inc();
        }
    }
}

fn kind_label(kind: &str) -> KindLabel {
    KindLabel { kind: kind.into() }
}

/// An organization's purge starts with Purging and ends with Purged; an
/// entitlement's is the one step to Purged.
fn purge_starts(kind: &str, event: &str) -> bool {
    match kind {
        "Organization" => event == "Purging",
        _ => event == "Purged",
    }
}

/// From 5 ms to about 80 s: a reconcile that waits on the API server.
fn duration_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.005, 2.0, 15,
    ))
}

/// From 50 ms to about 15 min: the target is under a second, and a stuck
/// queue shows as minutes.
fn lateness_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.05, 2.0, 15,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(at: &str, event: &str) -> HistoryEntry {
        HistoryEntry {
            at: at.parse().unwrap(),
            event: event.into(),
            reason: "Test".into(),
            message: String::new(),
            recorded_at: None,
        }
    }

    #[test]
    fn a_transition_at_an_announced_deadline_counts_its_lateness_in_real_seconds() {
        let metrics = Metrics::new();
        let due: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let now: DateTime<Utc> = "2026-01-01T00:00:10Z".parse().unwrap();
        let new = [
            entry("2026-01-01T00:00:00Z", "Cancelled"),
            // Backdated to a fact, not a deadline: not lateness.
            entry("2025-12-01T00:00:00Z", "Suspended"),
        ];
        metrics.transitions("Entitlement", &new, &[due], now, |s| s / 10.0);
        let text = metrics.encode(&crate::controller::index::index().0);
        assert!(
            text.contains("tenure_deadline_lateness_seconds_count{kind=\"Entitlement\"} 1"),
            "{text}"
        );
        assert!(
            text.contains("tenure_deadline_lateness_seconds_sum{kind=\"Entitlement\"} 1.0"),
            "{text}"
        );
        assert!(
            text.contains("tenure_transitions_total{kind=\"Entitlement\",event=\"Cancelled\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn an_organization_purge_starts_with_purging_and_an_entitlement_purge_with_purged() {
        let metrics = Metrics::new();
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        metrics.transitions(
            "Organization",
            &[entry("2026-01-01T00:00:00Z", "Purging")],
            &[],
            now,
            |s| s,
        );
        metrics.transitions(
            "Entitlement",
            &[entry("2026-01-01T00:00:00Z", "Purged")],
            &[],
            now,
            |s| s,
        );
        let text = metrics.encode(&crate::controller::index::index().0);
        for line in [
            "tenure_purges_started_total{kind=\"Organization\"} 1",
            "tenure_purges_started_total{kind=\"Entitlement\"} 1",
            "tenure_purges_completed_total{kind=\"Entitlement\"} 1",
        ] {
            assert!(text.contains(line), "{line} in {text}");
        }
        assert!(!text.contains("tenure_purges_completed_total{kind=\"Organization\"}"));
    }
}
