//! RetentionHolds as the lifecycle sees them: which are in force, which were
//! placed or lifted since the last decision, and when the last was lifted
//! (the final grace runs again in full from then).

use chrono::{DateTime, Utc};

use crate::api::common::HistoryEntry;

type Time = DateTime<Utc>;

/// A RetentionHold covering the object decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub name: String,
    pub reason: String,
    pub ticket: Option<String>,
    /// The hold lapses by itself then.
    pub until: Option<Time>,
}

impl Hold {
    pub fn in_force(&self, now: Time) -> bool {
        self.until.is_none_or(|until| until > now)
    }
}

/// What the holds mean at one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldState {
    /// Names of the holds in force, sorted.
    pub in_force: Vec<String>,
    /// HoldPlaced and HoldLifted entries since the last decision.
    pub history: Vec<HistoryEntry>,
    /// When the last hold in force was lifted.
    pub last_lifted_at: Option<Time>,
    /// When the next hold in force lapses by itself.
    pub next_lapse: Option<Time>,
}

/// `holds` are every hold covering the object now (in force or lapsed);
/// `before` the names in force at the last decision.
pub fn hold_state(
    holds: &[Hold],
    before: &[String],
    last_lifted_at: Option<Time>,
    now: Time,
) -> HoldState {
    let mut in_force: Vec<&Hold> = holds.iter().filter(|h| h.in_force(now)).collect();
    in_force.sort_by(|a, b| a.name.cmp(&b.name));
    let names: Vec<String> = in_force.iter().map(|h| h.name.clone()).collect();
    let entry = |event: &str, message: String| HistoryEntry {
        at: now,
        event: event.into(),
        reason: "RetentionHold".into(),
        message,
    };
    let mut history = Vec::new();
    for hold in in_force.iter().filter(|h| !before.contains(&h.name)) {
        let ticket = hold
            .ticket
            .as_deref()
            .map(|t| format!(" (ticket {t})"))
            .unwrap_or_default();
        history.push(entry(
            "HoldPlaced",
            format!(
                "RetentionHold {} placed: {}{ticket}",
                hold.name, hold.reason
            ),
        ));
    }
    for lifted in before.iter().filter(|name| !names.contains(name)) {
        let message = match holds.iter().find(|h| &h.name == lifted) {
            Some(hold) => format!(
                "RetentionHold {lifted} lapsed at {}: {}",
                hold.until.unwrap_or(now),
                hold.reason
            ),
            None => format!("RetentionHold {lifted} lifted (deleted)"),
        };
        history.push(entry("HoldLifted", message));
    }
    HoldState {
        last_lifted_at: if !before.is_empty() && names.is_empty() {
            Some(now)
        } else {
            last_lifted_at
        },
        next_lapse: in_force.iter().filter_map(|h| h.until).min(),
        in_force: names,
        history,
    }
}
