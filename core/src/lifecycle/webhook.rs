//! What a LifecycleWebhook delivers and how each event is told: which
//! history entries it selects, which of them are still to send, and the
//! signed CloudEvent each becomes.
//!
//! Delivery reads `status.history` (where reminders and the final
//! confirmation are kept too), so what is pending survives any crash: the
//! history is written before anything is sent, and an object records the
//! ids delivered to a webhook in its annotation
//! `delivered.tenure.dev/<webhook>` only after the receiver answered 2xx.
//! A crash in between sends an event again, with the same `id`: at least
//! once, never lost while the entry is in the history.

use std::collections::HashSet;

use chrono::{DateTime, SecondsFormat, Utc};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::api::common::HistoryEntry;
use crate::api::webhook::LifecycleWebhookSpec;
use crate::api::{Entitlement, Organization};

type Time = DateTime<Utc>;

/// The annotation on an Organization or Entitlement listing the ids of its
/// history entries delivered to the webhook `name`.
pub const DELIVERED_ANNOTATION_PREFIX: &str = "delivered.tenure.dev/";

pub fn delivered_annotation(webhook: &str) -> String {
    format!("{DELIVERED_ANNOTATION_PREFIX}{webhook}")
}

/// The header carrying the signature: `sha256=<hex HMAC-SHA256 of the body>`.
pub const SIGNATURE_HEADER: &str = "X-Tenure-Signature";

/// The object an event is about, as a webhook filters and tells it.
#[derive(Clone, Debug, PartialEq)]
pub struct About {
    /// `Organization` or `Entitlement`.
    pub kind: &'static str,
    pub namespace: Option<String>,
    pub name: String,
    /// Part of every event's id: a recreated object's events are new.
    pub uid: String,
    /// The organization (itself, or the one an entitlement names).
    pub organization: Option<String>,
    /// The entitlement's class.
    pub class: Option<String>,
}

/// What an event's data tells of its object besides the entry.
pub type Details = serde_json::Map<String, Value>;

impl About {
    pub fn organization(organization: &Organization) -> Self {
        let name = organization.metadata.name.clone().unwrap_or_default();
        Self {
            kind: "Organization",
            namespace: None,
            organization: Some(name.clone()),
            name,
            uid: organization.metadata.uid.clone().unwrap_or_default(),
            class: None,
        }
    }

    pub fn entitlement(entitlement: &Entitlement) -> Self {
        Self {
            kind: "Entitlement",
            namespace: entitlement.metadata.namespace.clone(),
            name: entitlement.metadata.name.clone().unwrap_or_default(),
            uid: entitlement.metadata.uid.clone().unwrap_or_default(),
            organization: entitlement.spec.organization.clone(),
            class: Some(entitlement.spec.class.clone()),
        }
    }

    /// `Entitlement/org-acme/grafana`, `Organization/acme`.
    pub fn describe(&self) -> String {
        match &self.namespace {
            Some(namespace) => format!("{}/{namespace}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }

    /// The CloudEvents `source`: the object's API path.
    fn source(&self) -> String {
        let plural = format!("{}s", self.kind.to_lowercase());
        match &self.namespace {
            Some(namespace) => format!(
                "/apis/tenure.dev/v1alpha1/namespaces/{namespace}/{plural}/{}",
                self.name
            ),
            None => format!("/apis/tenure.dev/v1alpha1/{plural}/{}", self.name),
        }
    }
}

/// An organization as its events tell it now: lifecycle, tax ID, external
/// ids, offboarding ticket and reason, phase, deadlines, tombstone.
pub fn organization_details(organization: &Organization) -> Details {
    let status = organization.status.as_ref();
    let offboarding = organization.spec.offboarding.as_ref();
    let mut details = Details::new();
    insert(
        &mut details,
        "lifecycle",
        json!(organization.spec.lifecycle),
    );
    insert(&mut details, "taxId", json!(organization.spec.tax_id));
    insert(
        &mut details,
        "externalIds",
        json!(organization.spec.external_ids),
    );
    insert(
        &mut details,
        "ticket",
        json!(offboarding.and_then(|o| o.ticket.clone())),
    );
    insert(
        &mut details,
        "offboardingReason",
        json!(offboarding.map(|o| o.reason)),
    );
    insert(&mut details, "phase", json!(status.and_then(|s| s.phase)));
    if let Some(status) = status {
        let deadlines = json!({
            "disabledAt": status.disabled_at,
            "archivedAt": status.archived_at,
            "reactivationDeadline": status.reactivation_deadline,
            "purgeAfter": status.purge_after,
            "finalPurgeAt": status.final_purge_at,
        });
        insert(&mut details, "deadlines", without_nulls(deadlines));
        insert(&mut details, "tombstone", json!(status.tombstone));
    }
    details
}

/// An entitlement as its events tell it now: product, code, phase, the
/// cancellation asked for, deadlines.
pub fn entitlement_details(entitlement: &Entitlement) -> Details {
    let status = entitlement.status.as_ref();
    let spec = &entitlement.spec;
    let mut details = Details::new();
    insert(&mut details, "product", json!(spec.product));
    insert(
        &mut details,
        "code",
        json!(status.and_then(|s| s.code.clone())),
    );
    insert(&mut details, "phase", json!(status.and_then(|s| s.phase)));
    insert(&mut details, "cancellation", json!(spec.cancellation));
    insert(
        &mut details,
        "deadlines",
        json!(status.and_then(|s| s.deadlines.clone())),
    );
    details
}

fn insert(details: &mut Details, key: &str, value: Value) {
    let empty = value.is_null() || value.as_object().is_some_and(|o| o.is_empty());
    if !empty {
        details.insert(key.into(), value);
    }
}

fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(map) => map.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        other => other,
    }
}

/// The CloudEvents `type` of a history entry: `dev.tenure.<kind>.<event>`,
/// the event in snake case (`dev.tenure.organization.purge_reminder`).
pub fn event_type(kind: &str, event: &str) -> String {
    let mut snake = String::new();
    for (i, c) in event.chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            snake.push('_');
        }
        snake.extend(c.to_lowercase());
    }
    format!("dev.tenure.{}.{snake}", kind.to_lowercase())
}

/// A stable id for one history entry of one object: the same entry always
/// has the same id, so that a receiver can drop one sent twice.
pub fn event_id(uid: &str, entry: &HistoryEntry) -> String {
    let mut hash = Sha256::new();
    for part in [
        uid,
        &entry.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        &entry.event,
        &entry.reason,
        &entry.message,
    ] {
        hash.update(part.as_bytes());
        hash.update([0]);
    }
    hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Whether the webhook wants events of type `type_` (history event `event`)
/// about `about`.
pub fn selects(spec: &LifecycleWebhookSpec, about: &About, type_: &str, event: &str) -> bool {
    let wanted = |pattern: &String| match pattern.strip_suffix('*') {
        Some(prefix) => type_.starts_with(prefix),
        None => pattern == type_ || pattern == event,
    };
    let of_class = |class: &String| about.class.as_ref() == Some(class);
    let of_organization = |name: &String| about.organization.as_ref() == Some(name);
    (spec.events.is_empty() || spec.events.iter().any(wanted))
        && (spec.classes.is_empty() || about.class.is_none() || spec.classes.iter().any(of_class))
        && (spec.organizations.is_empty() || spec.organizations.iter().any(of_organization))
}

/// One event to deliver.
#[derive(Clone, Debug, PartialEq)]
pub struct Pending<'h> {
    pub id: String,
    pub type_: String,
    pub entry: &'h HistoryEntry,
}

/// When an entry was written (for entries written before tenure kept that:
/// when it took effect).
fn recorded(entry: &HistoryEntry) -> Time {
    entry.recorded_at.unwrap_or(entry.at)
}

/// The entries of `history` the webhook still has to deliver, in the order
/// they were recorded: selected, not among `delivered`, and recorded from
/// `since` on (a fact learnt late is sent when it is learnt, dated when it
/// took effect).
pub fn pending<'h>(
    spec: &LifecycleWebhookSpec,
    about: &About,
    history: &'h [HistoryEntry],
    delivered: &HashSet<String>,
    since: Time,
) -> Vec<Pending<'h>> {
    let mut once = HashSet::new();
    let mut entries: Vec<&HistoryEntry> = history.iter().filter(|e| recorded(e) >= since).collect();
    entries.sort_by_key(|entry| recorded(entry));
    entries
        .into_iter()
        .map(|entry| Pending {
            id: event_id(&about.uid, entry),
            type_: event_type(about.kind, &entry.event),
            entry,
        })
        .filter(|p| !delivered.contains(&p.id))
        .filter(|p| selects(spec, about, &p.type_, &p.entry.event))
        // An entry written twice over (a clock set back) is one event.
        .filter(|p| once.insert(p.id.clone()))
        .collect()
}

/// The ids an object's annotation lists.
pub fn parse_delivered(annotation: Option<&str>) -> HashSet<String> {
    annotation
        .into_iter()
        .flat_map(|value| value.split(','))
        .filter(|id| !id.is_empty())
        .map(String::from)
        .collect()
}

/// The annotation's new value: the ids delivered that the history still
/// holds, in its order (an entry that left the bounded history can never be
/// pending again, so its id is dropped).
pub fn delivered_value(uid: &str, history: &[HistoryEntry], delivered: &HashSet<String>) -> String {
    history
        .iter()
        .map(|entry| event_id(uid, entry))
        .filter(|id| delivered.contains(id))
        .collect::<Vec<_>>()
        .join(",")
}

/// The CloudEvents 1.0 JSON (structured mode) of one event.
pub fn cloud_event(about: &About, details: &Details, event: &Pending) -> Value {
    let entry = event.entry;
    let mut data = Details::new();
    data.insert("kind".into(), json!(about.kind));
    data.insert("name".into(), json!(about.name));
    insert(&mut data, "namespace", json!(about.namespace));
    insert(&mut data, "organization", json!(about.organization));
    insert(&mut data, "class", json!(about.class));
    data.insert("event".into(), json!(entry.event));
    data.insert("reason".into(), json!(entry.reason));
    data.insert("message".into(), json!(entry.message));
    data.extend(details.clone());
    let mut event_json = json!({
        "specversion": "1.0",
        "id": event.id,
        "source": about.source(),
        "type": event.type_,
        "time": entry.at.to_rfc3339_opts(SecondsFormat::AutoSi, true),
        "datacontenttype": "application/json",
        "data": data,
    });
    if let Some(organization) = &about.organization {
        event_json["subject"] = json!(organization);
    }
    event_json
}

/// The value of [`SIGNATURE_HEADER`] for `body` signed with `key`.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::scenario::day;

    fn entry(at: Time, event: &str) -> HistoryEntry {
        HistoryEntry {
            at,
            event: event.into(),
            reason: "Because".into(),
            message: format!("{event} happened"),
            recorded_at: Some(at),
        }
    }

    fn entitlement_about(class: &str, organization: &str) -> About {
        About {
            kind: "Entitlement",
            namespace: Some(format!("org-{organization}")),
            name: "grafana".into(),
            uid: "uid-1".into(),
            organization: Some(organization.into()),
            class: Some(class.into()),
        }
    }

    #[test]
    fn types_are_the_kind_and_the_event_in_snake_case() {
        assert_eq!(
            event_type("Entitlement", "Cancelled"),
            "dev.tenure.entitlement.cancelled"
        );
        assert_eq!(
            event_type("Organization", "PurgeReminder"),
            "dev.tenure.organization.purge_reminder"
        );
    }

    #[test]
    fn an_entry_keeps_its_id_and_a_recreated_object_gets_new_ones() {
        let cancelled = entry(day(3), "Cancelled");
        assert_eq!(event_id("a", &cancelled), event_id("a", &cancelled.clone()));
        assert_ne!(event_id("a", &cancelled), event_id("b", &cancelled));
        assert_ne!(
            event_id("a", &cancelled),
            event_id("a", &entry(day(4), "Cancelled"))
        );
        assert_eq!(event_id("a", &cancelled).len(), 32);
    }

    #[test]
    fn pending_is_what_was_not_delivered_since_the_webhook_began_in_history_order() {
        let spec = LifecycleWebhookSpec::default();
        let about = entitlement_about("service", "acme");
        let history = [
            entry(day(1), "Activated"),
            entry(day(5), "Suspended"),
            entry(day(9), "Cancelled"),
        ];
        let delivered = HashSet::from([event_id("uid-1", &history[1])]);
        let events: Vec<_> = pending(&spec, &about, &history, &delivered, day(2))
            .into_iter()
            .map(|p| p.entry.event.clone())
            .collect();
        assert_eq!(events, ["Cancelled"]);
        assert_eq!(
            delivered_value("uid-1", &history, &delivered),
            event_id("uid-1", &history[1])
        );
    }

    #[test]
    fn a_fact_learnt_late_is_sent_when_recorded_after_what_was_sent_before() {
        let spec = LifecycleWebhookSpec::default();
        let about = entitlement_about("service", "acme");
        let backdated = HistoryEntry {
            recorded_at: Some(day(10)),
            ..entry(day(1), "Cancelled")
        };
        // The history reads in time order; the backdated entry sits first.
        let history = [backdated, entry(day(5), "Suspended")];
        let events: Vec<_> = pending(&spec, &about, &history, &HashSet::new(), day(2))
            .into_iter()
            .map(|p| p.entry.event.clone())
            .collect();
        assert_eq!(events, ["Suspended", "Cancelled"]);
        let twice = [entry(day(5), "Suspended"), entry(day(5), "Suspended")];
        assert_eq!(
            pending(&spec, &about, &twice, &HashSet::new(), day(2)).len(),
            1
        );
    }

    #[test]
    fn filters_by_type_prefix_event_class_and_organization() {
        let about = entitlement_about("service", "acme");
        let type_ = "dev.tenure.entitlement.cancelled";
        let spec = |value: Value| -> LifecycleWebhookSpec {
            serde_json::from_value(merged(value)).unwrap()
        };
        fn merged(value: Value) -> Value {
            let mut base = json!({"url": "http://x", "secretRef": {"namespace": "n", "name": "s"}});
            base.as_object_mut()
                .unwrap()
                .extend(value.as_object().unwrap().clone());
            base
        }
        let selected = |value: Value| selects(&spec(value), &about, type_, "Cancelled");
        assert!(selected(json!({})));
        assert!(selected(json!({"events": ["dev.tenure.entitlement.*"]})));
        assert!(selected(json!({"events": ["Cancelled"]})));
        assert!(!selected(json!({"events": ["dev.tenure.organization.*"]})));
        assert!(selected(json!({"classes": ["service"]})));
        assert!(!selected(json!({"classes": ["plugin"]})));
        assert!(!selected(json!({"organizations": ["globex"]})));
        let organization = About {
            kind: "Organization",
            class: None,
            ..about.clone()
        };
        let spec = spec(json!({"classes": ["plugin"]}));
        assert!(selects(
            &spec,
            &organization,
            "dev.tenure.organization.disabled",
            "Disabled"
        ));
    }

    #[test]
    fn a_cloud_event_names_its_object_organization_and_time() {
        let about = entitlement_about("service", "acme");
        let cancelled = entry(day(3), "Cancelled");
        let pending = Pending {
            id: event_id(&about.uid, &cancelled),
            type_: event_type(about.kind, &cancelled.event),
            entry: &cancelled,
        };
        let event = cloud_event(&about, &Details::new(), &pending);
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(
            event["source"],
            "/apis/tenure.dev/v1alpha1/namespaces/org-acme/entitlements/grafana"
        );
        assert_eq!(event["subject"], "acme");
        assert_eq!(event["time"], "2026-01-04T00:00:00Z");
        assert_eq!(event["data"]["reason"], "Because");
        assert_eq!(event["data"]["class"], "service");
    }

    #[test]
    fn the_signature_is_the_rfc_4231_hmac_sha256() {
        // RFC 4231, test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
