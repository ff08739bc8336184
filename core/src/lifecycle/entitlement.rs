//! The entitlement lifecycle as a pure function of its facts, its effective
//! policy, what status already recorded, and `now`.
//!
//! The facts in spec (start, end, payment failure, cancellation, reactivation)
//! and the organization's standing lay out a timeline; the phase at any instant
//! follows from it. Replaying that timeline is what honours backdated facts and
//! makes a re-applied manifest land in the same phase. Two things are recorded
//! in status because spec alone cannot say them: a cancellation stays once it
//! happened even if its cause is removed later (only a reactivation lifts it),
//! and a Purged entitlement never comes back.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::conditions::{Extra, Verdict};
use super::hold::{Hold, HoldState, hold_state};
use super::notices::{self, Notice, NoticeKind, time_left};
use super::policy::{Effective, keys, recorded_days};
use super::purge::{Announced, Schedule, final_purge_at};
use crate::api::Organization;
use crate::api::common::{HistoryEntry, OffboardingReason, append_history};
use crate::api::entitlement::{
    CancellationRecord, CancelledBy, Deadlines, EffectiveValue, EntitlementPhase, EntitlementSpec,
    EntitlementStatus, NextTransition,
};
use crate::api::organization::OrganizationPhase;

type Time = DateTime<Utc>;

/// The standing of the entitlement's organization (Active for a standalone one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    Active,
    Disabled {
        since: Time,
    },
    Archived {
        since: Time,
        reason: OffboardingReason,
        ticket: Option<String>,
    },
}

/// What the entitlement's organization says about purging its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OrganizationPurge {
    pub name: String,
    /// The organization's phase. Anything but Active means it is offboarded:
    /// the data of its entitlements is then purged with the organization's,
    /// never on its own.
    pub phase: OrganizationPhase,
    /// `spec.retention.extendUntil`: nothing is purged before it.
    pub extend_until: Option<Time>,
    /// The organization's announced purge, if any.
    pub final_purge_at: Option<Time>,
}

/// The organization's standing, from what its own reconciler observed and
/// recorded (its status phase), never from its spec alone: an organization
/// whose purge has started stays gone for its entitlements whatever its spec
/// says now. None before it was first observed.
pub fn organization_view(org: &Organization) -> Option<(Standing, OrganizationPurge)> {
    use OrganizationPhase::*;
    let status = org.status.as_ref()?;
    let phase = status.phase?;
    let offboarding = org.spec.offboarding.as_ref();
    let archived = |since| Standing::Archived {
        since,
        reason: offboarding.map_or(crate::api::common::OffboardingReason::Other, |o| o.reason),
        ticket: offboarding.and_then(|o| o.ticket.clone()),
    };
    let disabled_at = status.disabled_at;
    let offboarded_at = status.archived_at.or(disabled_at);
    let standing = match phase {
        Active => Standing::Active,
        Disabled => Standing::Disabled {
            since: disabled_at?,
        },
        Archived => archived(status.archived_at?),
        PurgeScheduled => match status.archived_at {
            Some(since) => archived(since),
            None => Standing::Disabled {
                since: disabled_at?,
            },
        },
        Purging | Purged => archived(offboarded_at?),
    };
    let purge = OrganizationPurge {
        name: org.metadata.name.clone().unwrap_or_default(),
        phase,
        extend_until: org.spec.retention.as_ref().and_then(|r| r.extend_until),
        final_purge_at: status.final_purge_at,
    };
    Some((standing, purge))
}

/// The entitlement's rules: its effective policy, and whether a locked
/// policy sets a minimum data retention for it.
pub struct PolicyView {
    pub effective: Effective,
    pub retention_locked: bool,
}

impl PolicyView {
    pub fn of(
        policies: &[&crate::api::LifecyclePolicy],
        entitlement: &crate::api::Entitlement,
    ) -> Self {
        let subject = super::policy::Subject::of_entitlement(entitlement);
        PolicyView {
            effective: super::policy::resolve(policies, &subject, entitlement.spec.policy.as_ref()),
            retention_locked: super::policy::locked_floor(
                policies,
                &subject,
                keys::DATA_RETENTION_DAYS,
            )
            .is_some(),
        }
    }
}

/// Everything the lifecycle depends on.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub spec: &'a EntitlementSpec,
    /// When the entitlement was created (on the controller's clock).
    pub created: Time,
    pub organization: &'a Standing,
    /// The organization's guards on the purge (None: standalone).
    pub organization_purge: Option<&'a OrganizationPurge>,
    /// Whether a locked LifecyclePolicy sets a minimum data retention for
    /// this entitlement: then nothing is deleted on cancellation either.
    pub retention_locked: bool,
    /// Every RetentionHold covering the entitlement or its organization.
    pub holds: &'a [Hold],
    pub recorded: Option<&'a EntitlementStatus>,
    pub policy: &'a Effective,
    pub now: Time,
}

/// The lifecycle part of the new status, and what to tell people.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub phase: EntitlementPhase,
    pub phase_since: Time,
    pub deadlines: Option<Deadlines>,
    /// When the purge date in `deadlines.finalPurgeAt` was first shown.
    pub purge_announced_at: Option<Time>,
    pub next: Option<NextTransition>,
    pub cancelled: Option<CancellationRecord>,
    /// New history entries, oldest first; each also becomes an Event.
    pub history: Vec<HistoryEntry>,
    /// A reminder to send now: of the renewal, of the trial's end, or of the
    /// purge. Written to the history after the transitions.
    pub reminder: Option<Notice>,
    pub last_reminder_at: Option<Time>,
    pub last_trial_reminder_at: Option<Time>,
    pub last_purge_reminder_at: Option<Time>,
    pub reactivated_at: Option<Time>,
    /// Names of the holds in force, and when the last one was lifted.
    pub holds: Vec<String>,
    pub last_hold_lifted_at: Option<Time>,
    /// Every resolved policy value with its source (`status.effectivePolicy`).
    pub effective_policy: BTreeMap<String, EffectiveValue>,
    /// Whether a cancellation deletes what the class's `onCancel: Delete`
    /// names: policy allows it (`provisioning.deprovisionOnCancel`), and no
    /// retention (an offboarded organization's, a locked one) keeps the data;
    /// otherwise those objects get the suspension rule (paused, not deleted).
    pub deprovision: bool,
    pub verdict: Verdict,
    /// `ReactivationRefused` when a reactivation request is not honoured,
    /// `PurgeBlocked` while a hold or the organization keeps the purge from
    /// being scheduled.
    pub extra: Vec<Extra>,
    /// When to decide again: the next transition or reminder.
    pub wake_at: Option<Time>,
    /// The `now` it was decided at: when its history entries are recorded.
    pub decided_at: Time,
}

impl Decision {
    /// Whether the purge is announced: Cancelled with a final purge date,
    /// the final grace during which its plan is shown for review.
    pub fn announces_purge(&self) -> bool {
        self.phase == EntitlementPhase::Cancelled
            && self
                .deadlines
                .as_ref()
                .is_some_and(|d| d.final_purge_at.is_some())
    }

    /// Writes the lifecycle part of the decision into `status`; the history
    /// grows by the new entries (bounded, see [`append_history`]).
    pub fn write_to(&self, status: &mut EntitlementStatus) {
        status.phase = Some(self.phase);
        status.phase_since = Some(self.phase_since);
        status.deadlines = self.deadlines.clone();
        status.purge_announced_at = self.purge_announced_at;
        status.next = self.next.clone();
        status.cancelled = self.cancelled.clone();
        status.last_reminder_at = self.last_reminder_at;
        status.last_trial_reminder_at = self.last_trial_reminder_at;
        status.last_purge_reminder_at = self.last_purge_reminder_at;
        status.reactivated_at = self.reactivated_at;
        status.holds = self.holds.clone();
        status.last_hold_lifted_at = self.last_hold_lifted_at;
        status.effective_policy = self.effective_policy.clone();
        let reminder = self.reminder.iter().map(Notice::history_entry);
        let history: Vec<HistoryEntry> = self.history.iter().cloned().chain(reminder).collect();
        append_history(&mut status.history, &history, self.decided_at);
    }
}

pub const REACTIVATION_REFUSED: &str = "ReactivationRefused";

/// A cancellation on the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Cancel {
    at: Time,
    reason: String,
    by: CancelledBy,
    /// Why, for people.
    message: String,
}

/// A phase change: when, and the state from then on.
type Step = (Time, State);

/// The phase at one instant, with its reason and the cancellation behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct State {
    phase: EntitlementPhase,
    reason: String,
    cancel: Option<Cancel>,
}

/// A trial (`spec.trial`, with `trial.days` above 0) as it stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct TrialSpan {
    /// `startedAt` plus `trial.days`.
    ends_at: Time,
    /// When it was converted: `spec.trial.convertedAt`, or an honoured
    /// reactivation (a customer who comes back pays).
    converted_at: Option<Time>,
}

impl TrialSpan {
    /// Whether the trial, not converted by `t`, still decides the phase then.
    fn open_at(&self, t: Time) -> bool {
        self.converted_at.is_none_or(|c| t < c)
    }
}

/// The facts laid out in time, after a reactivation has voided what it undid.
struct Timeline {
    start: Time,
    disabled_since: Option<Time>,
    payment_failed_at: Option<Time>,
    ends_at: Option<Time>,
    trial: Option<TrialSpan>,
    /// A cancellation lifted by an honoured reactivation, and when it was lifted.
    lifted: Option<(Cancel, Time)>,
    cancel: Option<Cancel>,
    timing: PurgeTiming,
    /// When the purge of `cancel` runs: None while something blocks it.
    schedule: Option<Schedule>,
}

/// What times the purge of a cancellation.
#[derive(Clone, Debug)]
struct PurgeTiming {
    retention: TimeDelta,
    final_grace: TimeDelta,
    /// Nothing is purged before it (the organization's `extendUntil`).
    not_before: Option<Time>,
    /// The purge waits a full final grace after the last hold was lifted.
    hold_lifted_at: Option<Time>,
    /// Why the purge cannot be scheduled, if something keeps it.
    blocked: Option<PurgeBlocker>,
    /// The purge as status announced it last.
    announced: Option<Announced>,
    now: Time,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum PurgeBlocker {
    Held(Vec<String>),
    /// The organization is offboarded: the data goes with its purge.
    Organization(OrganizationPurge),
}

impl PurgeTiming {
    /// The end of the retention of a cancellation at `cancelled_at`.
    fn purge_after(&self, cancelled_at: Time) -> Time {
        let after_retention = cancelled_at + self.retention;
        self.not_before
            .map_or(after_retention, |t| t.max(after_retention))
    }

    /// When the purge of a cancellation at `cancelled_at` runs: announced a
    /// full final grace ahead (see [`final_purge_at`]); None while blocked.
    fn schedule(&self, cancelled_at: Time) -> Option<Schedule> {
        if self.blocked.is_some() {
            return None;
        }
        let due = self.purge_after(cancelled_at);
        let due = self.hold_lifted_at.map_or(due, |lifted| lifted.max(due));
        Some(final_purge_at(
            due,
            self.final_grace,
            self.announced,
            self.now,
        ))
    }
}

impl Timeline {
    fn purge_at(&self) -> Option<Time> {
        self.schedule.map(|s| s.at)
    }

    fn state_at(&self, t: Time) -> State {
        use EntitlementPhase::*;
        let state = |phase, reason: &str, cancel: Option<&Cancel>| State {
            phase,
            reason: reason.into(),
            cancel: cancel.cloned(),
        };
        if let Some(cancel) = self.cancel.as_ref().filter(|c| c.at <= t) {
            return if self.purge_at().is_some_and(|at| t >= at) {
                state(Purged, "RetentionEnded", Some(cancel))
            } else {
                state(Cancelled, &cancel.reason, Some(cancel))
            };
        }
        if let Some((cancel, _)) = self
            .lifted
            .as_ref()
            .filter(|(c, lifted_at)| c.at <= t && t < *lifted_at)
        {
            return state(Cancelled, &cancel.reason, Some(cancel));
        }
        if t < self.start {
            state(Pending, "NotStarted", None)
        } else if self.disabled_since.is_some_and(|since| since <= t) {
            state(Suspended, "OrganizationDisabled", None)
        } else if self.payment_failed_at.is_some_and(|at| at <= t) {
            state(Suspended, "PaymentFailed", None)
        } else if self.ends_at.is_some_and(|at| at <= t) {
            state(Expired, "Expired", None)
        } else if let Some(trial) = self.trial.filter(|trial| trial.open_at(t)) {
            if t < trial.ends_at {
                state(Trialing, "Trialing", None)
            } else {
                state(Expired, "TrialEnded", None)
            }
        } else {
            state(Active, "Active", None)
        }
    }

    /// Every instant at which the phase may change.
    fn boundaries(&self) -> Vec<Time> {
        let mut at = vec![self.start];
        at.extend(self.disabled_since);
        at.extend(self.payment_failed_at);
        at.extend(self.ends_at);
        if let Some(trial) = &self.trial {
            at.push(trial.ends_at);
            at.extend(trial.converted_at);
        }
        if let Some((cancel, lifted_at)) = &self.lifted {
            at.extend([cancel.at, *lifted_at]);
        }
        if let Some(cancel) = &self.cancel {
            at.push(cancel.at);
            at.extend(self.purge_at());
        }
        at.sort();
        at.dedup();
        at
    }

    /// The phase steps from the first fact (or creation) on, split into
    /// those that happened by `now` and those still ahead.
    fn past_and_future(&self, created: Time, now: Time) -> (Vec<Step>, Vec<Step>) {
        let earliest = self
            .boundaries()
            .into_iter()
            .chain([created])
            .min()
            .unwrap_or(created)
            .min(now);
        self.steps(earliest)
            .into_iter()
            .partition(|(at, _)| *at <= now)
    }

    /// The phase changes from `from` on: the state at `from`, then each change.
    fn steps(&self, from: Time) -> Vec<(Time, State)> {
        let mut steps = vec![(from, self.state_at(from))];
        for at in self.boundaries().into_iter().filter(|at| *at > from) {
            let state = self.state_at(at);
            if steps
                .last()
                .is_some_and(|(_, last)| last.phase != state.phase)
            {
                steps.push((at, state));
            }
        }
        steps
    }
}

/// Decides the entitlement's lifecycle at `input.now`.
pub fn decide(input: &Input) -> Decision {
    let recorded = input.recorded;
    let holds = hold_state(
        input.holds,
        recorded.map(|s| s.holds.as_slice()).unwrap_or_default(),
        recorded.and_then(|s| s.last_hold_lifted_at),
        input.now,
    );
    if let Some(purged) = recorded.filter(|s| s.phase == Some(EntitlementPhase::Purged)) {
        return stay_purged(purged, input, holds);
    }
    let Layout {
        timeline,
        refusal,
        reactivated_at,
    } = lay_out(input, &holds);
    let now = input.now;
    let current = timeline.state_at(now);
    let (past, future) = timeline.past_and_future(input.created, now);
    // The cancellation ahead, whichever cause brings it: what deadlines,
    // `next` and the messages all tell.
    let upcoming = future
        .iter()
        .find(|(_, state)| state.phase == EntitlementPhase::Cancelled)
        .and_then(|(_, state)| state.cancel.clone());
    let message =
        |phase, state: &State| describe(input, &timeline, upcoming.as_ref(), phase, state);
    let converted_at = timeline.trial.and_then(|t| t.converted_at);
    let entry = |at: Time, previous: Option<EntitlementPhase>, state: &State| HistoryEntry {
        at,
        event: event_name(previous, state.phase, converted_at == Some(at)).into(),
        reason: state.reason.clone(),
        message: message(state.phase, state),
        recorded_at: None,
    };
    let (phase_since, history) = phase_history(recorded, &past, &current, now, &entry);

    let deadlines = deadlines(input, &timeline, upcoming.as_ref(), &current);
    let next = future.first().map(|(at, state)| NextTransition {
        phase: state.phase,
        at: *at,
    });
    let reminded = reminders(input, &timeline, &current, deadlines.as_ref());
    let wake_at = next
        .as_ref()
        .map(|n| n.at)
        .into_iter()
        .chain(reminded.upcoming)
        .chain(holds.next_lapse)
        .min();
    let mut history = history;
    history.extend(holds.history.iter().cloned());
    let mut extra: Vec<Extra> = refusal.into_iter().collect();
    extra.extend(correction_refused(input, &current));
    if let Some(blocker) = timeline.timing.blocked.as_ref()
        && current.phase == EntitlementPhase::Cancelled
    {
        extra.push(purge_blocked(blocker));
    }
    let purge_announced_at = deadlines
        .as_ref()
        .and_then(|d| d.final_purge_at)
        .and(timeline.schedule)
        .map(|s| s.since);
    Decision {
        phase: current.phase,
        phase_since,
        deadlines,
        purge_announced_at,
        next,
        cancelled: cancellation_record(&current, &timeline),
        history,
        reminder: reminded.notice,
        decided_at: input.now,
        last_reminder_at: reminded.last_renewal,
        last_trial_reminder_at: reminded.last_trial,
        last_purge_reminder_at: reminded.last_purge,
        reactivated_at,
        holds: holds.in_force,
        last_hold_lifted_at: holds.last_lifted_at,
        effective_policy: input.policy.0.clone(),
        deprovision: deprovision(input),
        verdict: Verdict::ready(current.reason.clone(), message(current.phase, &current)),
        extra,
        wake_at,
    }
}

/// The cancellation on record: the one in force, or after a reactivation
/// the one it lifted, which remembers when a cancellation without
/// effectiveAt was first observed.
fn cancellation_record(current: &State, timeline: &Timeline) -> Option<CancellationRecord> {
    current
        .cancel
        .as_ref()
        .or(timeline.lifted.as_ref().map(|(cancel, _)| cancel))
        .map(|c| CancellationRecord {
            at: c.at,
            reason: c.reason.clone(),
            by: c.by,
        })
}

/// Since when the entitlement is in its current phase, and the history
/// entries that are new: every past step when nothing was recorded, the
/// phase changes since the recorded one, or, when a fact went away (a payment
/// recovered, the organization enabled again), the change now.
fn phase_history(
    recorded: Option<&EntitlementStatus>,
    past: &[Step],
    current: &State,
    now: Time,
    entry: &dyn Fn(Time, Option<EntitlementPhase>, &State) -> HistoryEntry,
) -> (Time, Vec<HistoryEntry>) {
    let entered_at = past.last().map_or(now, |(at, _)| *at);
    match recorded.and_then(|s| s.phase.zip(s.phase_since)) {
        None => {
            let mut previous = None;
            let history = past
                .iter()
                .map(|(at, state)| {
                    let entry = entry(*at, previous, state);
                    previous = Some(state.phase);
                    entry
                })
                .collect();
            (entered_at, history)
        }
        Some((phase, since)) if phase == current.phase => (since, Vec::new()),
        Some((phase, since)) => {
            let mut previous = Some(phase);
            let new: Vec<HistoryEntry> = past
                .iter()
                .filter(|(at, _)| *at >= since)
                .filter_map(|(at, state)| {
                    let changed = previous != Some(state.phase);
                    let entry = changed.then(|| entry(*at, previous, state));
                    previous = Some(state.phase);
                    entry
                })
                .collect();
            if new.is_empty() {
                (now, vec![entry(now, Some(phase), current)])
            } else {
                (entered_at, new)
            }
        }
    }
}

/// Whether a cancellation may delete (deprovision) bound objects.
fn deprovision(input: &Input) -> bool {
    let offboarded = input
        .organization_purge
        .is_some_and(|o| o.phase != OrganizationPhase::Active);
    input.policy.flag(keys::DEPROVISION_ON_CANCEL) && !offboarded && !input.retention_locked
}

fn purge_blocked(blocker: &PurgeBlocker) -> Extra {
    let (reason, message) = match blocker {
        PurgeBlocker::Held(holds) => (
            "Held",
            format!(
                "RetentionHold {} in force: nothing is purged while a hold covers the entitlement; once the last is lifted the final grace runs in full",
                holds.join(", ")
            ),
        ),
        PurgeBlocker::Organization(organization) => (
            "OrganizationOffboarded",
            format!(
                "organization {} is {:?}: the data of its entitlements is kept until its own purge, {}",
                organization.name,
                organization.phase,
                match organization.final_purge_at {
                    Some(at) => format!("announced for {at} (Organization status.finalPurgeAt)"),
                    None => "which is not scheduled yet (see the Organization's status)".into(),
                }
            ),
        ),
    };
    Extra {
        type_: "PurgeBlocked".into(),
        status: true,
        reason: reason.into(),
        message,
    }
}

/// Purged: nothing changes any more but the holds noted (a hold placed now
/// still keeps whatever is left from being deleted).
fn stay_purged(recorded: &EntitlementStatus, input: &Input, holds: HoldState) -> Decision {
    let purged_at = recorded.phase_since.unwrap_or(input.now);
    // A win-back recorded after the cancellation cannot bring back what was
    // deleted: it is refused, not ignored.
    let cancelled_at = recorded.cancelled.as_ref().map(|c| c.at);
    let refusal = input
        .spec
        .reactivation
        .as_ref()
        .filter(|r| cancelled_at.is_none_or(|at| r.requested_at > at))
        .map(|r| Extra {
            type_: REACTIVATION_REFUSED.into(),
            status: true,
            reason: "AlreadyPurged".into(),
            message: format!(
                "spec.reactivation (requested at {}) is refused: the data was purged at {purged_at}",
                r.requested_at
            ),
        });
    let deadlines = recorded.deadlines.clone().map(|d| Deadlines {
        reactivation_deadline: None,
        ..d
    });
    Decision {
        phase: EntitlementPhase::Purged,
        phase_since: purged_at,
        deadlines,
        purge_announced_at: recorded.purge_announced_at,
        next: None,
        cancelled: recorded.cancelled.clone(),
        history: holds.history,
        reminder: None,
        decided_at: input.now,
        last_reminder_at: recorded.last_reminder_at,
        last_trial_reminder_at: recorded.last_trial_reminder_at,
        last_purge_reminder_at: recorded.last_purge_reminder_at,
        reactivated_at: recorded.reactivated_at,
        holds: holds.in_force,
        last_hold_lifted_at: holds.last_lifted_at,
        effective_policy: input.policy.0.clone(),
        deprovision: deprovision(input),
        verdict: Verdict::ready(
            "RetentionEnded",
            format!("purged at {purged_at}; a purged entitlement stays purged"),
        ),
        extra: refusal.into_iter().collect(),
        wake_at: None,
    }
}

/// The facts laid out in time, and what became of a reactivation request.
struct Layout {
    timeline: Timeline,
    /// Why spec.reactivation, or a correction of spec, is not followed.
    refusal: Option<Extra>,
    /// The last honoured reactivation that took effect.
    reactivated_at: Option<Time>,
}

/// Lays out the facts in time and decides whether a reactivation is honoured.
fn lay_out(input: &Input, holds: &HoldState) -> Layout {
    let causes = Causes::of(input);
    let purge = purge_timing(input, holds);
    let timeline = |lifted_at: Option<Time>, lifted: Option<Cancel>| {
        let in_force = causes.in_force(lifted_at);
        Timeline {
            start: start_of(input),
            disabled_since: match input.organization {
                Standing::Disabled { since } => Some(*since),
                _ => None,
            },
            payment_failed_at: in_force.payment_failed_at,
            ends_at: in_force.ends_at,
            trial: in_force.trial,
            lifted: lifted.zip(lifted_at),
            schedule: in_force.cancel.as_ref().and_then(|c| purge.schedule(c.at)),
            cancel: in_force.cancel,
            timing: purge.clone(),
        }
    };

    // What an earlier reactivation lifted stays lifted, also once
    // spec.reactivation is removed or replaced by a later request.
    let recorded_cancel = input.recorded.and_then(|s| s.cancelled.as_ref());
    let earlier = input
        .recorded
        .and_then(|s| s.reactivated_at)
        .filter(|at| *at <= input.now);
    let earlier_lifted = earlier
        .and_then(|at| recorded_cancel.filter(|c| c.at < at))
        .map(from_record);
    let unchanged = || Layout {
        timeline: timeline(earlier, earlier_lifted.clone()),
        refusal: None,
        reactivated_at: earlier,
    };
    let first_cancel = causes.in_force(earlier).cancel;
    let (Some(request), Some(cancel)) = (input.spec.reactivation.as_ref(), first_cancel) else {
        return unchanged();
    };
    let requested_at = request.requested_at;
    if requested_at <= cancel.at {
        // Used up by an earlier cancellation it lifted: nothing to say. Never
        // honoured: it cannot lift a cancellation that came after it, and
        // that is said.
        let used = earlier.is_some_and(|at| at >= requested_at);
        return Layout {
            refusal: (!used).then(|| {
                reactivation_refused(
                    requested_at,
                    "RequestedBeforeCancellation",
                    format!(
                        "it was requested before the cancellation at {}, and a reactivation lifts only a cancellation before it; record when the customer came back in spec.reactivation.requestedAt",
                        cancel.at
                    ),
                )
            }),
            ..unchanged()
        };
    }
    match reactivation_refusal(input, &causes, &purge, &cancel, requested_at) {
        Some(refusal) => Layout {
            refusal: Some(refusal),
            ..unchanged()
        },
        None => Layout {
            timeline: timeline(Some(requested_at), Some(cancel)),
            refusal: None,
            reactivated_at: Some(requested_at).filter(|at| *at <= input.now).or(earlier),
        },
    }
}

/// Without startsAt, access began at creation, or earlier when backdated
/// facts say the entitlement was already in use then.
fn start_of(input: &Input) -> Time {
    let spec = input.spec;
    spec.starts_at.unwrap_or_else(|| {
        let cancellation = spec.cancellation.as_ref().and_then(|c| c.effective_at);
        let payment = spec.payment.as_ref().map(|p| p.failed_at);
        let reactivation = spec.reactivation.as_ref().map(|r| r.requested_at);
        let trial = spec.trial.as_ref().and_then(|t| t.started_at);
        [cancellation, payment, reactivation, trial]
            .into_iter()
            .flatten()
            .fold(input.created, DateTime::min)
    })
}

/// Every cause of a cancellation the facts hold, before a reactivation
/// lifts any of them.
struct Causes<'a> {
    spec: &'a EntitlementSpec,
    /// spec.cancellation.
    requested: Option<Cancel>,
    /// The organization's archival.
    archived: Option<Cancel>,
    /// A cancellation recorded that stays whatever spec says now.
    sticky: Option<Cancel>,
    payment_grace: TimeDelta,
    expiry_grace: TimeDelta,
    /// The trial, if there is one: when it ends, and `spec.trial.convertedAt`.
    trial: Option<(Time, Option<Time>)>,
}

/// The facts in force once a reactivation at some time undid those before it.
struct InForce {
    /// The cancellation that comes first.
    cancel: Option<Cancel>,
    payment_failed_at: Option<Time>,
    ends_at: Option<Time>,
    trial: Option<TrialSpan>,
}

impl<'a> Causes<'a> {
    fn of(input: &Input<'a>) -> Self {
        let spec = input.spec;
        let recorded_cancel = input.recorded.and_then(|s| s.cancelled.as_ref());
        let requested = spec.cancellation.as_ref().map(|c| {
            // Without effectiveAt a cancellation takes effect when first
            // observed, which status remembers.
            let first_observed = recorded_cancel
                .filter(|r| r.by == CancelledBy::Request)
                .map(|r| r.at);
            let reason = format!("{:?}", c.reason);
            Cancel {
                at: c.effective_at.or(first_observed).unwrap_or(input.now),
                message: format!("cancelled ({reason}, spec.cancellation)"),
                reason,
                by: CancelledBy::Request,
            }
        });
        // A cancellation that happened stays, even when its cause is removed
        // or its date is moved later (only a reactivation lifts it); one the
        // organization caused follows the organization instead, and an
        // earlier effectiveAt (a backdating correction) is taken from spec.
        let sticky = recorded_cancel
            .filter(|r| r.by != CancelledBy::Organization)
            .filter(|r| {
                r.by != CancelledBy::Request
                    || moved_later(input, r)
                    || spec
                        .cancellation
                        .as_ref()
                        .is_none_or(|c| c.effective_at.is_none())
            })
            .map(from_record);
        Self {
            spec,
            requested,
            archived: archived_cancel(input),
            sticky,
            payment_grace: input.policy.days(keys::PAYMENT_GRACE_DAYS),
            expiry_grace: input.policy.days(keys::EXPIRY_GRACE_DAYS),
            trial: trial_of(input),
        }
    }

    /// The facts in force, ignoring those a reactivation at `lifted_at` undid.
    fn in_force(&self, lifted_at: Option<Time>) -> InForce {
        let after = |t: &Time| lifted_at.is_none_or(|lifted| *t > lifted);
        let payment_failed_at = self
            .spec
            .payment
            .as_ref()
            .map(|p| p.failed_at)
            .filter(|t| after(t));
        // A reactivated entitlement past its end date expires anew from then on.
        let ends_at = self
            .spec
            .ends_at
            .map(|at| lifted_at.map_or(at, |lifted| at.max(lifted)));
        let auto_cancel = payment_failed_at.map(|failed| Cancel {
            at: failed + self.payment_grace,
            reason: "NonPayment".into(),
            by: CancelledBy::PaymentGrace,
            message: format!(
                "the payment grace of {} days after the failed payment at {failed} ran out",
                self.payment_grace.num_days()
            ),
        });
        let not_renewed = ends_at.map(|ends| Cancel {
            at: ends + self.expiry_grace,
            reason: "NotRenewed".into(),
            by: CancelledBy::ExpiryGrace,
            message: format!(
                "the expiry grace of {} days after the end at {ends} ran out",
                self.expiry_grace.num_days()
            ),
        });
        // The end of an expiry that began anew at the reactivation is never
        // undone by it (with no expiry grace it falls right on it).
        let not_renewed = not_renewed.filter(|c| lifted_at.is_none_or(|lifted| c.at >= lifted));
        // An honoured reactivation converts a trial: the customer came back.
        let trial = self.trial.map(|(ends_at, converted_at)| TrialSpan {
            ends_at,
            converted_at: converted_at.into_iter().chain(lifted_at).min(),
        });
        // A trial not converted before its expiry grace runs out is
        // cancelled then; a reactivation voids that cancellation with the trial.
        let not_converted = trial
            .filter(|_| lifted_at.is_none())
            .map(|trial| (trial, trial.ends_at + self.expiry_grace))
            .filter(|(trial, at)| trial.converted_at.is_none_or(|c| c >= *at))
            .map(|(trial, at)| Cancel {
                at,
                reason: TRIAL_NOT_CONVERTED.into(),
                by: CancelledBy::ExpiryGrace,
                message: format!(
                    "the expiry grace of {} days after the trial ended at {} ran out without a conversion",
                    self.expiry_grace.num_days(),
                    trial.ends_at
                ),
            });
        let cancel = [
            // On a tie the first wins: a cause still in the facts describes
            // itself better than the record of it.
            self.requested.clone().filter(|c| after(&c.at)),
            auto_cancel.filter(|c| after(&c.at)),
            not_renewed,
            not_converted,
            self.archived.clone().filter(|c| after(&c.at)),
            self.sticky.clone().filter(|c| after(&c.at)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|c| c.at);
        InForce {
            cancel,
            payment_failed_at,
            ends_at,
            trial,
        }
    }
}

/// The reason of a cancellation after a trial that was not converted.
pub const TRIAL_NOT_CONVERTED: &str = "TrialNotConverted";

/// The trial of the entitlement: when it ends and when it was converted.
/// None without `spec.trial`, or when `trial.days` is 0: a policy gives
/// trials their length, it never starts one.
fn trial_of(input: &Input) -> Option<(Time, Option<Time>)> {
    let trial = input.spec.trial.as_ref()?;
    let days = input.policy.days(keys::TRIAL_DAYS);
    if days <= TimeDelta::zero() {
        return None;
    }
    let started_at = trial.started_at.unwrap_or_else(|| start_of(input));
    Some((started_at + days, trial.converted_at))
}

/// The cancellation an archived organization imposes on its entitlements.
fn archived_cancel(input: &Input) -> Option<Cancel> {
    let Standing::Archived {
        since,
        reason,
        ticket,
    } = input.organization
    else {
        return None;
    };
    Some(Cancel {
        at: *since,
        reason: format!("{reason:?}"),
        by: CancelledBy::Organization,
        message: format!(
            "organization {} archived ({reason:?}{})",
            input.spec.organization.as_deref().unwrap_or_default(),
            ticket
                .as_deref()
                .map(|t| format!(", ticket {t}"))
                .unwrap_or_default()
        ),
    })
}

/// Condition ReactivationRefused for the request made at `requested_at`.
fn reactivation_refused(requested_at: Time, reason: &str, message: String) -> Extra {
    Extra {
        type_: REACTIVATION_REFUSED.into(),
        status: true,
        reason: reason.into(),
        message: format!("spec.reactivation (requested at {requested_at}) is refused: {message}"),
    }
}

/// Why a reactivation requested at `requested_at`, after `cancel`, is
/// refused, if it is.
fn reactivation_refusal(
    input: &Input,
    causes: &Causes,
    purge: &PurgeTiming,
    cancel: &Cancel,
    requested_at: Time,
) -> Option<Extra> {
    let policy = input.policy;
    let refused =
        |reason: &str, message: String| Some(reactivation_refused(requested_at, reason, message));
    let deadline = cancel.at + policy.days(keys::REACTIVATION_WINDOW_DAYS);
    // An organization archived by the time of the request keeps its
    // entitlements cancelled, whatever cancelled them first: lifting an earlier
    // cancellation would void the archival along with the facts before it.
    if let Some(archived) = causes.archived.as_ref().filter(|a| a.at <= requested_at) {
        refused(
            "OrganizationArchived",
            format!("{}; unarchive the organization instead", archived.message),
        )
    } else if !policy.flag(keys::ALLOW_REACTIVATION) {
        refused(
            "NotAllowed",
            format!(
                "{} is false (from {})",
                keys::ALLOW_REACTIVATION,
                policy.source(keys::ALLOW_REACTIVATION)
            ),
        )
    } else if requested_at > deadline {
        refused(
            "WindowClosed",
            format!(
                "the reactivation deadline was {deadline} ({} days after the cancellation at {})",
                policy.days(keys::REACTIVATION_WINDOW_DAYS).num_days(),
                cancel.at
            ),
        )
    } else if requested_at > purge.purge_after(cancel.at) {
        // The retention is over: the purge of the data is announced, and a
        // win-back cannot bring back what goes.
        refused(
            "AlreadyPurged",
            format!(
                "the data retention ended at {}: the data is being purged",
                purge.purge_after(cancel.at)
            ),
        )
    } else {
        None
    }
}

/// What times the purge: retention, final grace, the organization's guards,
/// holds, and the purge status announced last.
fn purge_timing(input: &Input, holds: &HoldState) -> PurgeTiming {
    let policy = input.policy;
    let final_grace = policy.days(keys::FINAL_GRACE_DAYS);
    let organization = input.organization_purge;
    let blocked = if holds.held() {
        Some(PurgeBlocker::Held(holds.described.clone()))
    } else {
        organization
            .filter(|o| o.phase != OrganizationPhase::Active)
            .map(|o| PurgeBlocker::Organization(o.clone()))
    };
    let announced = input.recorded.and_then(|recorded| {
        let deadlines = recorded.deadlines.as_ref()?;
        Announced::from_status(
            deadlines.final_purge_at,
            recorded.purge_announced_at,
            recorded_days(&recorded.effective_policy, keys::FINAL_GRACE_DAYS).or(Some(final_grace)),
            [deadlines.purge_after, recorded.last_hold_lifted_at],
        )
    });
    PurgeTiming {
        retention: policy.days(keys::DATA_RETENTION_DAYS),
        final_grace,
        not_before: organization.and_then(|o| o.extend_until),
        hold_lifted_at: holds.last_lifted_at,
        blocked,
        announced,
        now: input.now,
    }
}

/// Whether spec moved the date of a requested cancellation that already took
/// effect later: it stays as it took effect.
fn moved_later(input: &Input, record: &CancellationRecord) -> bool {
    let effective_at = input
        .spec
        .cancellation
        .as_ref()
        .and_then(|c| c.effective_at);
    record.by == CancelledBy::Request
        && record.at <= input.now
        && effective_at.is_some_and(|at| at > record.at)
}

/// The condition saying a later `cancellation.effectiveAt` is not followed.
fn correction_refused(input: &Input, current: &State) -> Option<Extra> {
    let record = input.recorded?.cancelled.as_ref()?;
    let lifted = current.cancel.as_ref().is_none_or(|c| c.at != record.at);
    (moved_later(input, record) && !lifted).then(|| Extra {
        type_: "CorrectionRefused".into(),
        status: true,
        reason: "CancellationTookEffect".into(),
        message: format!(
            "spec.cancellation.effectiveAt is later than the cancellation that took effect at {}: a cancellation that took effect stays until spec.reactivation lifts it",
            record.at
        ),
    })
}

fn from_record(record: &CancellationRecord) -> Cancel {
    Cancel {
        at: record.at,
        reason: record.reason.clone(),
        by: record.by,
        message: format!("cancelled ({})", record.reason),
    }
}

fn deadlines(
    input: &Input,
    timeline: &Timeline,
    upcoming: Option<&Cancel>,
    current: &State,
) -> Option<Deadlines> {
    use EntitlementPhase::*;
    let policy = input.policy;
    let mut deadlines = Deadlines::default();
    match current.phase {
        // The grace that runs out first, whichever cause the phase is named
        // after: the cancellation ahead.
        Suspended | Expired => {
            let ends = |by: CancelledBy| upcoming.filter(|c| c.by == by).map(|c| c.at);
            deadlines.auto_cancel_at = ends(CancelledBy::PaymentGrace);
            deadlines.expiry_grace_ends_at = ends(CancelledBy::ExpiryGrace);
        }
        Cancelled | Purged => {
            let cancel = current.cancel.as_ref()?;
            deadlines.portal_visible_until =
                Some(cancel.at + policy.days(keys::PORTAL_VISIBILITY_DAYS));
            let purge_after = timeline.timing.purge_after(cancel.at);
            // Only a deadline that can still be honoured: none once purged,
            // and never past the end of the retention.
            deadlines.reactivation_deadline = (policy.flag(keys::ALLOW_REACTIVATION)
                && cancel.by != CancelledBy::Organization
                && current.phase == Cancelled)
                .then(|| {
                    (cancel.at + policy.days(keys::REACTIVATION_WINDOW_DAYS)).min(purge_after)
                });
            deadlines.purge_after = Some(purge_after);
            deadlines.final_purge_at = timeline.purge_at();
        }
        Trialing => deadlines.trial_ends_at = timeline.trial.map(|t| t.ends_at),
        Pending | Active => {}
    }
    (deadlines != Deadlines::default()).then_some(deadlines)
}

/// The reminder due now, if one is: before `endsAt` while access lasts
/// (renewal), before `deadlines.trialEndsAt` while on trial (trial), before
/// `deadlines.finalPurgeAt` once cancelled (purge); what status keeps of the
/// reminders sent; and when the next one is due.
struct Reminded {
    notice: Option<Notice>,
    last_renewal: Option<Time>,
    last_trial: Option<Time>,
    last_purge: Option<Time>,
    upcoming: Option<Time>,
}

fn reminders(
    input: &Input,
    timeline: &Timeline,
    current: &State,
    deadlines: Option<&Deadlines>,
) -> Reminded {
    use EntitlementPhase::*;
    let recorded = input.recorded;
    let mut reminded = Reminded {
        notice: None,
        last_renewal: recorded.and_then(|s| s.last_reminder_at),
        last_trial: recorded.and_then(|s| s.last_trial_reminder_at),
        last_purge: recorded.and_then(|s| s.last_purge_reminder_at),
        upcoming: None,
    };
    let now = input.now;
    let (kind, date, days, sent) = match current.phase {
        Active | Suspended => match timeline.ends_at {
            Some(ends_at) => (
                NoticeKind::RenewalReminder,
                ends_at,
                keys::REMINDER_DAYS,
                &mut reminded.last_renewal,
            ),
            None => return reminded,
        },
        Trialing => match timeline.trial {
            Some(trial) => (
                NoticeKind::TrialReminder,
                trial.ends_at,
                keys::TRIAL_REMINDER_DAYS,
                &mut reminded.last_trial,
            ),
            None => return reminded,
        },
        Cancelled => match deadlines.and_then(|d| d.final_purge_at) {
            Some(purge_at) => (
                NoticeKind::PurgeReminder,
                purge_at,
                keys::PURGE_REMINDER_DAYS,
                &mut reminded.last_purge,
            ),
            None => return reminded,
        },
        _ => return reminded,
    };
    let due = notices::reminders(date, &input.policy.day_list(days), *sent, now);
    *sent = due.sent;
    reminded.upcoming = due.upcoming;
    reminded.notice = due.notice(
        kind,
        now,
        match kind {
            NoticeKind::RenewalReminder => {
                format!("renewal due: access ends at {date}, {}", time_left(date, now))
            }
            NoticeKind::TrialReminder => format!(
                "the trial ends at {date}, {}: access goes on once it is converted (spec.trial.convertedAt)",
                time_left(date, now)
            ),
            _ => format!(
                "the data this entitlement governs is purged at {date}, {}: ask for an export before then",
                time_left(date, now)
            ),
        },
    );
    reminded
}

/// The history's event for a change from `previous` to `phase`;
/// `converted`: the change happens when the trial is converted.
fn event_name(
    previous: Option<EntitlementPhase>,
    phase: EntitlementPhase,
    converted: bool,
) -> &'static str {
    use EntitlementPhase::*;
    match (previous, phase) {
        (None, Pending) => "Created",
        (_, Pending) => "Postponed",
        (Some(Suspended), Trialing) => "Resumed",
        (_, Trialing) => "TrialStarted",
        (Some(Trialing), Active) => "Converted",
        (Some(Expired), Active) if converted => "Converted",
        (Some(Suspended), Active) => "Resumed",
        (Some(Expired), Active) => "Renewed",
        (Some(Cancelled), Active) => "Reactivated",
        (_, Active) => "Activated",
        (_, Suspended) => "Suspended",
        (_, Expired) => "Expired",
        (_, Cancelled) => "Cancelled",
        (_, Purged) => "Purged",
    }
}

/// The cancellation ahead, if one is, and what would stop it; as a clause
/// of a sentence.
fn pending_cancel(upcoming: Option<&Cancel>) -> String {
    let Some(cancel) = upcoming else {
        return String::new();
    };
    let unless = match cancel.by {
        CancelledBy::PaymentGrace => "unless the payment is recovered (spec.payment removed)",
        CancelledBy::ExpiryGrace if cancel.reason == TRIAL_NOT_CONVERTED => {
            "unless spec.trial.convertedAt is set"
        }
        CancelledBy::ExpiryGrace => "unless spec.endsAt moves forward",
        CancelledBy::Request => "as spec.cancellation says",
        CancelledBy::Organization => "as the organization is archived",
    };
    format!("; cancelled at {} ({}) {unless}", cancel.at, cancel.reason)
}

/// A sentence for people about `state`, naming the deadline that comes next.
fn describe(
    input: &Input,
    timeline: &Timeline,
    upcoming: Option<&Cancel>,
    phase: EntitlementPhase,
    state: &State,
) -> String {
    use EntitlementPhase::*;
    match (phase, state.cancel.as_ref()) {
        (Pending, _) => format!("access starts at {}", timeline.start),
        (Trialing, _) => {
            let ends = timeline.trial.map_or(input.now, |t| t.ends_at);
            let then = match upcoming {
                Some(cancel) if cancel.reason == TRIAL_NOT_CONVERTED => format!(
                    ", and cancelled at {} ({TRIAL_NOT_CONVERTED}) when the expiry grace runs out",
                    cancel.at
                ),
                other => pending_cancel(other),
            };
            format!(
                "on trial until {ends}; Expired then unless spec.trial.convertedAt is set{then}"
            )
        }
        (Expired, _) if state.reason == "TrialEnded" => {
            let ends = timeline.trial.map_or(input.now, |t| t.ends_at);
            format!(
                "the trial ended at {ends} without a conversion{}",
                pending_cancel(upcoming)
            )
        }
        (Active, _) => match timeline.ends_at {
            Some(ends) => format!("access granted until {ends}"),
            None => "access granted, with no end date".into(),
        },
        (Suspended, _) if state.reason == "OrganizationDisabled" => format!(
            "organization {} is Disabled: access is suspended until it is enabled again{}",
            input.spec.organization.as_deref().unwrap_or_default(),
            pending_cancel(upcoming)
        ),
        (Suspended, _) => {
            let failed = timeline.payment_failed_at.unwrap_or(input.now);
            format!("payment failed at {failed}{}", pending_cancel(upcoming))
        }
        (Expired, _) => {
            let ends = timeline.ends_at.unwrap_or(input.now);
            format!("access ended at {ends}{}", pending_cancel(upcoming))
        }
        (Cancelled, Some(cancel)) => {
            let kept_until = timeline.timing.purge_after(cancel.at);
            match (&timeline.timing.blocked, timeline.purge_at()) {
                (None, Some(purge_at)) => format!(
                    "{} at {}; data is kept until {kept_until} and purged at {purge_at} (review status.purgePlan)",
                    cancel.message, cancel.at
                ),
                (Some(PurgeBlocker::Organization(organization)), _) => format!(
                    "{} at {}; data is kept until organization {} is purged",
                    cancel.message, cancel.at, organization.name
                ),
                _ => format!(
                    "{} at {}; data is kept while a RetentionHold is in force",
                    cancel.message, cancel.at
                ),
            }
        }
        (Purged, Some(cancel)) => format!(
            "retention of {} days after the cancellation at {} ended at {}; the downstream data was deleted at {}",
            timeline.timing.retention.num_days(),
            cancel.at,
            timeline.timing.purge_after(cancel.at),
            timeline.purge_at().unwrap_or(input.now)
        ),
        (Cancelled | Purged, None) => format!("{phase:?}"),
    }
}

#[cfg(test)]
#[path = "entitlement_tests.rs"]
mod tests;
