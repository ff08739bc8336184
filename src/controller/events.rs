//! Kubernetes Events: every reason tenure records is a variant of [`Reason`],
//! and an Event that cannot be written never holds up the lifecycle.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder};
use tracing::warn;

use super::context::Context;
use crate::api::common::HistoryEntry;
use crate::lifecycle::notices::NoticeKind;

/// Why an Event is recorded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reason<'a> {
    /// A lifecycle transition the core wrote to `status.history` (its
    /// `event`, e.g. `Suspended`, `Purged`); a Warning when customers lose
    /// access or data.
    Transition(&'a str),
    /// A condition newly set besides the kstatus ones (its type, e.g.
    /// `HoldActive`); always a Warning.
    Condition(&'a str),
    /// The entitlement's finalizer was released.
    Deleted,
    Paused,
    Resumed,
    /// Deleted when the entitlement was cancelled (`onCancel: Delete`).
    Deprovisioned,
    /// Deleted by the entitlement's purge (`onPurge: Delete`).
    TornDown,
    /// A reminder ahead of a date, or the final confirmation of a purge.
    Notice(NoticeKind),
    NamespaceCreated,
    /// The purge created the tenant namespace again, to delete what its
    /// deletion missed.
    NamespaceRecreated,
    AccessRevoked,
    AccessRestored,
    /// An organization was deleted before it was Purged.
    DeletionBlocked,
    ExportSucceeded,
}

/// Transitions after which customers lose access or data.
const WARNING_TRANSITIONS: [&str; 6] = [
    "Suspended",
    "Expired",
    "Cancelled",
    "PurgeScheduled",
    "Purging",
    "Purged",
];

impl Reason<'_> {
    /// The Event's reason field.
    pub fn as_str(&self) -> &str {
        match self {
            Reason::Transition(event) => event,
            Reason::Condition(type_) => type_,
            Reason::Deleted => "Deleted",
            Reason::Paused => "Paused",
            Reason::Resumed => "Resumed",
            Reason::Deprovisioned => "Deprovisioned",
            Reason::TornDown => "TornDown",
            Reason::Notice(kind) => kind.reason(),
            Reason::NamespaceCreated => "NamespaceCreated",
            Reason::NamespaceRecreated => "NamespaceRecreated",
            Reason::AccessRevoked => "AccessRevoked",
            Reason::AccessRestored => "AccessRestored",
            Reason::DeletionBlocked => "DeletionBlocked",
            Reason::ExportSucceeded => "ExportSucceeded",
        }
    }

    fn type_(&self) -> EventType {
        match self {
            Reason::Transition(event) if WARNING_TRANSITIONS.contains(event) => EventType::Warning,
            Reason::Condition(_) | Reason::DeletionBlocked | Reason::NamespaceRecreated => {
                EventType::Warning
            }
            Reason::Notice(NoticeKind::PurgeReminder) => EventType::Warning,
            _ => EventType::Normal,
        }
    }
}

/// Records a Kubernetes Event about `object`. An Event that cannot be written is
/// logged, not retried: it must never hold up the lifecycle.
pub async fn record<K: Resource<DynamicType = ()>>(
    context: &Context,
    object: &K,
    reason: Reason<'_>,
    note: String,
) {
    let mut events = Events::about(object);
    events.add(reason, note);
    events.publish(&context.recorder).await;
}

/// Events about one object, recorded in order, after what they tell was
/// written: [`Events::send`] records them in the background, so that a
/// reconcile does not wait for them.
pub struct Events {
    about: ObjectReference,
    events: Vec<Event>,
}

impl Events {
    pub fn about<K: Resource<DynamicType = ()>>(object: &K) -> Self {
        Self {
            about: object.object_ref(&()),
            events: Vec::new(),
        }
    }

    pub fn add(&mut self, reason: Reason<'_>, note: String) {
        self.events.push(Event {
            type_: reason.type_(),
            reason: reason.as_str().into(),
            note: Some(note),
            action: reason.as_str().into(),
            secondary: None,
        });
    }

    /// The new history entries, as one Event named for the last: facts
    /// learnt late (an entitlement created with a past payment failure)
    /// make several transitions at once, and one Event tells them in order
    /// (`status.history` keeps each).
    pub fn history(&mut self, history: &[HistoryEntry]) {
        let Some(last) = history.last() else {
            return;
        };
        let steps: Vec<String> = history
            .iter()
            .map(|entry| format!("{} ({}, at {})", entry.message, entry.reason, entry.at))
            .collect();
        self.add(
            Reason::Transition(&last.event),
            within_note_limit(steps.join("; then ")),
        );
    }

    /// Records them in the background, in order.
    pub fn send(self, context: &Context) {
        if self.events.is_empty() {
            return;
        }
        let recorder = context.recorder.clone();
        tokio::spawn(async move { self.publish(&recorder).await });
    }

    async fn publish(self, recorder: &Recorder) {
        for event in &self.events {
            tracing::debug!(
                reason = event.reason,
                name = self.about.name.as_deref(),
                "recording an Event"
            );
            if let Err(error) = recorder.publish(event, &self.about).await {
                warn!(%error, reason = event.reason, "could not record an Event");
            }
        }
    }
}

/// An Event's note is at most 1 KiB: a longer one keeps its end, the
/// transition the object is in now.
fn within_note_limit(note: String) -> String {
    const LIMIT: usize = 1024;
    if note.len() <= LIMIT {
        return note;
    }
    let mut start = note.len() - (LIMIT - "…".len());
    while !note.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &note[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(event: &str, reason: &str) -> HistoryEntry {
        serde_json::from_value(serde_json::json!({
            "event": event, "reason": reason, "message": format!("{event} because {reason}"),
            "at": "2026-01-01T00:00:00Z",
        }))
        .unwrap()
    }

    #[test]
    fn transitions_learnt_at_once_make_one_event_named_for_the_last() {
        let about = k8s_openapi::api::core::v1::ConfigMap::default();
        let mut events = Events::about(&about);
        events.history(&[
            entry("Activated", "Created"),
            entry("Suspended", "PaymentFailed"),
        ]);
        assert_eq!(events.events.len(), 1);
        let event = &events.events[0];
        assert_eq!(event.reason, "Suspended");
        assert_eq!(event.type_, EventType::Warning);
        let note = event.note.as_deref().unwrap();
        assert!(note.starts_with("Activated because Created"), "{note}");
        assert!(
            note.contains("; then Suspended because PaymentFailed"),
            "{note}"
        );
    }

    #[test]
    fn a_long_note_keeps_its_end_within_a_kibibyte() {
        let note = within_note_limit(format!("{}the end", "é".repeat(800)));
        assert!(note.len() <= 1024, "{}", note.len());
        assert!(note.ends_with("the end") && note.starts_with('…'));
    }

    #[test]
    fn losing_access_or_data_is_a_warning_and_the_rest_is_normal() {
        assert_eq!(Reason::Transition("Cancelled").type_(), EventType::Warning);
        assert_eq!(Reason::Transition("Purged").type_(), EventType::Warning);
        assert_eq!(Reason::Transition("Activated").type_(), EventType::Normal);
        assert_eq!(Reason::Condition("HoldActive").type_(), EventType::Warning);
        assert_eq!(Reason::Paused.type_(), EventType::Normal);
        assert_eq!(Reason::Transition("Reactivated").as_str(), "Reactivated");
    }
}
