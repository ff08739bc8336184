//! Types shared by several kinds.

use chrono::{DateTime, Utc};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Why a customer or an entitlement was offboarded or cancelled.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum OffboardingReason {
    CustomerRequest,
    BusinessClosure,
    SwitchingProvider,
    NonPayment,
    ContractBreach,
    ServiceDiscontinued,
    Other,
}

/// One lifecycle event, as kept in `status.history` (newest last, at most 50).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
pub struct HistoryEntry {
    /// When the event took effect (it may be backdated to the fact that caused it).
    pub at: DateTime<Utc>,
    /// What happened, e.g. `Activated`, `Suspended`, `Archived`.
    pub event: String,
    /// Why it happened, CamelCase, e.g. `PaymentFailed`.
    pub reason: String,
    /// A sentence for people.
    pub message: String,
    /// When tenure wrote it: later than `at` for a fact learnt late (a
    /// backdated cancellation). LifecycleWebhooks deliver from this.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_at: Option<DateTime<Utc>>,
}

/// `status.history` keeps this many entries, newest last.
pub const HISTORY_LIMIT: usize = 50;

/// Appends `new`, recorded `now`, to `history`, keeping the newest
/// [`HISTORY_LIMIT`] entries.
pub fn append_history(history: &mut Vec<HistoryEntry>, new: &[HistoryEntry], now: DateTime<Utc>) {
    history.extend(new.iter().cloned().map(|entry| HistoryEntry {
        recorded_at: Some(now),
        ..entry
    }));
    // A fact learnt late (a backdated cancellation) goes where it happened,
    // before what was noted since: the history reads forward in time.
    history.sort_by_key(|entry| entry.at);
    let overflow = history.len().saturating_sub(HISTORY_LIMIT);
    history.drain(..overflow);
}
