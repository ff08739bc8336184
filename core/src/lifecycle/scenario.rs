//! What the core's unit and property tests share: scenario days, histories
//! read as (time, event), and random offboarding reasons.

use chrono::{DateTime, TimeDelta, Utc};
use proptest::prelude::*;

use crate::api::common::{HistoryEntry, OffboardingReason};

/// Day `n` of the scenario (day 0 is 2026-01-01, midnight UTC).
pub fn day(n: i64) -> DateTime<Utc> {
    "2026-01-01T00:00:00Z".parse::<DateTime<Utc>>().unwrap() + TimeDelta::days(n)
}

pub fn hours(n: i64) -> TimeDelta {
    TimeDelta::hours(n)
}

/// A history as (when, event) pairs.
pub fn events(history: &[HistoryEntry]) -> Vec<(DateTime<Utc>, &str)> {
    history.iter().map(|e| (e.at, e.event.as_str())).collect()
}

/// Any offboarding or cancellation reason.
pub fn reason() -> impl Strategy<Value = OffboardingReason> {
    use OffboardingReason::*;
    prop_oneof![
        Just(CustomerRequest),
        Just(BusinessClosure),
        Just(SwitchingProvider),
        Just(NonPayment),
        Just(ContractBreach),
        Just(ServiceDiscontinued),
        Just(Other),
    ]
}
