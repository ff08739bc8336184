//! kstatus conditions: `Ready` always present, `Reconciling` while work is under
//! way, `Stalled` for errors that will not fix themselves, never both.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const READY: &str = "Ready";
pub const RECONCILING: &str = "Reconciling";
pub const STALLED: &str = "Stalled";

/// What an object's conditions should say, before timestamps are attached.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    pub ready: bool,
    pub progress: Progress,
    pub reason: String,
    pub message: String,
}

/// Whether the object is done, still converging, or stuck until its spec changes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Progress {
    Done,
    Reconciling,
    Stalled,
}

impl Verdict {
    pub fn ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: true,
            progress: Progress::Done,
            reason: reason.into(),
            message: message.into(),
        }
    }

    /// Not ready, for a reason that may resolve by itself (e.g. a target that
    /// does not exist yet): neither Reconciling nor Stalled.
    pub fn not_ready(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            progress: Progress::Done,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn reconciling(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            progress: Progress::Reconciling,
            reason: reason.into(),
            message: message.into(),
        }
    }

    pub fn stalled(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            ready: false,
            progress: Progress::Stalled,
            reason: reason.into(),
            message: message.into(),
        }
    }
}

/// One condition to set, besides those a [`Verdict`] produces (e.g. `Conflicting`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Extra {
    pub type_: String,
    pub status: bool,
    pub reason: String,
    pub message: String,
}

/// The full condition list for `verdict` and `extra`, keeping each
/// lastTransitionTime from `previous` unless that condition's status flipped.
/// Conditions that no longer apply (Reconciling, Stalled, extras) are dropped.
pub fn conditions(
    previous: &[Condition],
    verdict: &Verdict,
    extra: &[Extra],
    generation: Option<i64>,
    now: DateTime<Utc>,
) -> Vec<Condition> {
    let mut wanted = vec![(
        READY.to_string(),
        verdict.ready,
        verdict.reason.clone(),
        verdict.message.clone(),
    )];
    match verdict.progress {
        Progress::Done => {}
        Progress::Reconciling => wanted.push((
            RECONCILING.into(),
            true,
            verdict.reason.clone(),
            verdict.message.clone(),
        )),
        Progress::Stalled => wanted.push((
            STALLED.into(),
            true,
            verdict.reason.clone(),
            verdict.message.clone(),
        )),
    }
    wanted.extend(extra.iter().map(|e| {
        (
            e.type_.clone(),
            e.status,
            e.reason.clone(),
            e.message.clone(),
        )
    }));

    wanted
        .into_iter()
        .map(|(type_, status, reason, message)| {
            let status = if status { "True" } else { "False" }.to_string();
            let last_transition_time = previous
                .iter()
                .find(|c| c.type_ == type_ && c.status == status)
                .map(|c| c.last_transition_time.clone())
                .unwrap_or_else(|| to_time(now));
            Condition {
                type_,
                status,
                reason,
                message,
                observed_generation: generation,
                last_transition_time,
            }
        })
        .collect()
}

/// Kubernetes' metav1.Time from the chrono instants the rest of tenure uses.
pub fn to_time(at: DateTime<Utc>) -> Time {
    Time(
        k8s_openapi::jiff::Timestamp::from_microsecond(at.timestamp_micros())
            .expect("a chrono instant is in jiff's range"),
    )
}

/// Whether `conditions` has one of `type_`.
pub fn has_condition(conditions: &[Condition], type_: &str) -> bool {
    conditions.iter().any(|c| c.type_ == type_)
}

/// The chrono instant of a Kubernetes `Time` (e.g. a creationTimestamp).
pub fn from_time(at: &Time) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(at.0.as_microsecond()).unwrap_or_default()
}

/// The extra conditions not set before (`before`): each is announced once,
/// as an Event.
pub fn newly_set<'a>(extra: &'a [Extra], before: Option<&[Condition]>) -> Vec<&'a Extra> {
    extra
        .iter()
        .filter(|e| !before.is_some_and(|before| has_condition(before, &e.type_)))
        .collect()
}

/// What a condition says of a reference to an object that does not exist:
/// the field, and what it names.
pub fn names_missing(field: &str, kind: &str, name: &str) -> String {
    format!("{field} names {kind} {name}, which does not exist")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn ready_alone_when_done() {
        let c = conditions(
            &[],
            &Verdict::ready("Provisioned", "ok"),
            &[],
            Some(3),
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(c.len(), 1);
        assert_eq!(
            (c[0].type_.as_str(), c[0].status.as_str()),
            ("Ready", "True")
        );
        assert_eq!(c[0].observed_generation, Some(3));
    }

    #[test]
    fn stalled_and_reconciling_are_never_both_set() {
        let stalled = conditions(
            &[],
            &Verdict::stalled("ClassNotFound", "x"),
            &[],
            None,
            DateTime::<Utc>::UNIX_EPOCH,
        );
        let types: Vec<_> = stalled.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Stalled"]);
        let reconciling = conditions(
            &stalled,
            &Verdict::reconciling("Creating", "x"),
            &[],
            None,
            DateTime::<Utc>::UNIX_EPOCH,
        );
        let types: Vec<_> = reconciling.iter().map(|c| c.type_.as_str()).collect();
        assert_eq!(types, ["Ready", "Reconciling"]);
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let t0 = at("2026-01-01T00:00:00Z");
        let first = conditions(&[], &Verdict::ready("A", "a"), &[], None, t0);
        let same = conditions(
            &first,
            &Verdict::ready("B", "b"),
            &[],
            None,
            t0 + TimeDelta::days(1),
        );
        assert_eq!(
            same[0].last_transition_time,
            to_time(t0),
            "reason changed, status did not"
        );
        let flipped = conditions(
            &same,
            &Verdict::reconciling("C", "c"),
            &[],
            None,
            t0 + TimeDelta::days(2),
        );
        assert_eq!(
            flipped[0].last_transition_time,
            to_time(t0 + TimeDelta::days(2))
        );
    }
}
