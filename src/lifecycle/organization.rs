//! The organization lifecycle as a pure function: from Active through
//! Disabled or Archived, the retention period, holds and confirmation, the
//! final grace and the purge, to the tombstone.
//!
//! The purge is where data is destroyed, so the rules are strict: it is never
//! due before `purgeAfter` (never before `retention.extendUntil`), never while
//! a hold is in force, never without confirmation when policy asks for one,
//! and always after a full final grace counted from the last of those. Each
//! step is recorded in status before it is carried out, so that a controller
//! killed at any point resumes where it was.

use chrono::{DateTime, Utc};

use super::conditions::{Extra, Verdict};
pub use super::hold::Hold;
use super::hold::hold_state;
use super::policy::{Effective, keys};
use crate::api::common::{HistoryEntry, append_history};
use crate::api::organization::{
    OrganizationLifecycle, OrganizationPhase, OrganizationSpec, OrganizationStatus, Tombstone,
};

type Time = DateTime<Utc>;

/// Everything the organization lifecycle depends on.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub spec: &'a OrganizationSpec,
    /// When the Organization was created (on the controller's clock).
    pub created: Time,
    pub recorded: Option<&'a OrganizationStatus>,
    pub policy: &'a Effective,
    /// Every RetentionHold naming this organization, in force or lapsed.
    pub holds: &'a [Hold],
    /// Whether the tenant namespace (one tenure owns) still exists.
    pub namespace_exists: bool,
    pub now: Time,
}

/// What the purge needs from the controller in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeStep {
    /// Nothing to delete.
    None,
    /// The final grace runs: keep `status.purgePlan` up to date for review.
    Plan,
    /// Purging: delete the tenant namespace (again, if a previous attempt was
    /// cut short) and wait until it is gone.
    DeleteNamespace,
    /// The namespace is gone: write this tombstone and phase Purged, once.
    WriteTombstone(Tombstone),
}

/// The lifecycle part of the new status, and what to do and tell.
#[derive(Clone, Debug, PartialEq)]
pub struct Decision {
    pub phase: OrganizationPhase,
    pub disabled_at: Option<Time>,
    pub archived_at: Option<Time>,
    pub deletion_confirmed_at: Option<Time>,
    pub last_hold_lifted_at: Option<Time>,
    pub portal_visible_until: Option<Time>,
    pub reactivation_deadline: Option<Time>,
    pub purge_after: Option<Time>,
    pub final_purge_at: Option<Time>,
    /// Names of the holds in force.
    pub holds: Vec<String>,
    /// Whether access to the tenant namespace is revoked (deny-all NetworkPolicy).
    pub access_revoked: bool,
    pub purge: PurgeStep,
    /// New history entries, oldest first; each also becomes an Event.
    pub history: Vec<HistoryEntry>,
    pub verdict: Verdict,
    pub extra: Vec<Extra>,
    /// When to decide again by itself.
    pub wake_at: Option<Time>,
}

impl Decision {
    /// Writes the lifecycle part of the decision into `status`. The purge plan
    /// and the tombstone are written by the controller, which measures them.
    pub fn write_to(&self, status: &mut OrganizationStatus) {
        status.phase = Some(self.phase);
        status.disabled_at = self.disabled_at;
        status.archived_at = self.archived_at;
        status.deletion_confirmed_at = self.deletion_confirmed_at;
        status.last_hold_lifted_at = self.last_hold_lifted_at;
        status.portal_visible_until = self.portal_visible_until;
        status.reactivation_deadline = self.reactivation_deadline;
        status.purge_after = self.purge_after;
        status.final_purge_at = self.final_purge_at;
        status.holds = self.holds.clone();
        if matches!(
            self.phase,
            OrganizationPhase::Active | OrganizationPhase::Disabled | OrganizationPhase::Archived
        ) {
            status.purge_plan = None;
        }
        if let PurgeStep::WriteTombstone(tombstone) = &self.purge {
            status.tombstone.get_or_insert_with(|| tombstone.clone());
        }
        append_history(&mut status.history, &self.history);
    }
}

/// What keeps a due purge from being scheduled.
enum Blocker {
    Held(Vec<String>),
    AwaitingConfirmation,
    AwaitingExport,
}

/// Decides the organization's lifecycle at `input.now`.
pub fn decide(input: &Input) -> Decision {
    use OrganizationPhase::*;
    let now = input.now;
    let spec = input.spec;
    let recorded = input.recorded;
    let recorded_phase = recorded.and_then(|s| s.phase);
    let offboarding = spec.offboarding.as_ref();
    let reason = offboarding.map(|o| format!("{:?}", o.reason));
    let ticket = offboarding.and_then(|o| o.ticket.clone());
    let with_ticket = |text: String| match &ticket {
        Some(ticket) => format!("{text} (ticket {ticket})"),
        None => text,
    };

    // Holds: which are in force, which were placed or lifted since last time.
    let hold_state = hold_state(
        input.holds,
        recorded.map(|s| s.holds.as_slice()).unwrap_or_default(),
        recorded.and_then(|s| s.last_hold_lifted_at),
        now,
    );
    let in_force = hold_state.in_force;
    let last_hold_lifted_at = hold_state.last_lifted_at;
    let mut history = hold_state.history;
    let mut note = |event: &str, reason: &str, message: String, at: Time| {
        history.push(HistoryEntry {
            at,
            event: event.into(),
            reason: reason.into(),
            message,
        })
    };

    // Once the purge started it runs to its end: a tombstone is final.
    if recorded.is_some_and(|s| s.tombstone.is_some()) || recorded_phase == Some(Purged) {
        return finished(input, in_force, history);
    }
    let standing_since = offboarding.and_then(|o| o.effective_at).unwrap_or(now);
    let (disabled_at, archived_at) = match spec.lifecycle {
        OrganizationLifecycle::Active => (None, None),
        OrganizationLifecycle::Disabled => (
            recorded
                .and_then(|s| s.disabled_at)
                .or(Some(standing_since)),
            None,
        ),
        OrganizationLifecycle::Archived => (
            recorded.and_then(|s| s.disabled_at),
            recorded
                .and_then(|s| s.archived_at)
                .or(Some(standing_since)),
        ),
    };
    let deletion_confirmed_at = spec.deletion.as_ref().map(|_| {
        recorded
            .and_then(|s| s.deletion_confirmed_at)
            .unwrap_or(now)
    });
    let policy = input.policy;
    let mut decision = Decision {
        phase: Active,
        disabled_at,
        archived_at,
        deletion_confirmed_at,
        last_hold_lifted_at,
        portal_visible_until: None,
        reactivation_deadline: None,
        purge_after: None,
        final_purge_at: None,
        holds: in_force.clone(),
        access_revoked: false,
        purge: PurgeStep::None,
        history: Vec::new(),
        verdict: Verdict::ready("Active", "the organization is active"),
        extra: Vec::new(),
        wake_at: hold_state.next_lapse,
    };

    if recorded_phase == Some(Purging) {
        decision.phase = Purging;
        decision.access_revoked = true;
        let recorded = recorded.expect("Purging was recorded");
        if brings_back(spec, recorded) {
            decision.extra.push(refused_after_purge_started());
        }
        decision.disabled_at = recorded.disabled_at;
        decision.archived_at = recorded.archived_at;
        (
            decision.purge_after,
            decision.final_purge_at,
            decision.portal_visible_until,
        ) = (
            recorded.purge_after,
            recorded.final_purge_at,
            recorded.portal_visible_until,
        );
        if input.namespace_exists {
            decision.purge = PurgeStep::DeleteNamespace;
            decision.verdict = Verdict::reconciling(
                "Purging",
                "deleting the tenant namespace and everything in it; the tombstone is written once it is gone",
            );
        } else {
            decision.phase = Purged;
            decision.purge = PurgeStep::WriteTombstone(tombstone(input, recorded));
            decision.verdict =
                Verdict::ready("Purged", "purged; status.tombstone keeps the record");
            note(
                "Purged",
                reason.as_deref().unwrap_or("Purged"),
                with_ticket("the tenant namespace and everything in it were deleted".into()),
                now,
            );
        }
        decision.history = history;
        return decision;
    }

    let lifecycle_phase = match spec.lifecycle {
        OrganizationLifecycle::Active => Active,
        OrganizationLifecycle::Disabled => Disabled,
        OrganizationLifecycle::Archived => Archived,
    };
    let Some(offboarded_at) = archived_at.or(disabled_at) else {
        // Active.
        if recorded_phase.is_some_and(|p| p != Active) {
            // From Disabled, Archived or a PurgeScheduled of either.
            let event = if recorded.is_some_and(|s| s.archived_at.is_some()) {
                "Unarchived"
            } else {
                "Enabled"
            };
            note(
                event,
                "Active",
                "the organization is active again".into(),
                now,
            );
        }
        decision.history = history;
        return decision;
    };

    decision.access_revoked = true;
    decision.portal_visible_until = Some(offboarded_at + policy.days(keys::PORTAL_VISIBILITY_DAYS));
    let retention = match spec.lifecycle {
        OrganizationLifecycle::Archived => policy.days(keys::DATA_RETENTION_DAYS),
        _ => policy.days(keys::DISABLED_RETENTION_DAYS),
    };
    let skip_retention = spec
        .deletion
        .as_ref()
        .is_some_and(|d| d.skip_retention == Some(true) && d.approval.is_some());
    let retention_end = match (skip_retention, deletion_confirmed_at) {
        (true, Some(confirmed)) => confirmed,
        _ => offboarded_at + retention,
    };
    let extend_until = spec.retention.as_ref().and_then(|r| r.extend_until);
    let purge_after = extend_until.map_or(retention_end, |until| retention_end.max(until));
    decision.purge_after = Some(purge_after);

    let blocker = if !in_force.is_empty() {
        Some(Blocker::Held(in_force.clone()))
    } else if policy.flag(keys::REQUIRE_CONFIRMATION) && spec.deletion.is_none() {
        Some(Blocker::AwaitingConfirmation)
    } else if policy.flag(keys::REQUIRE_EXPORT) && recorded.is_none_or(|s| s.exports.is_empty()) {
        Some(Blocker::AwaitingExport)
    } else {
        None
    };
    let due_at = [
        Some(purge_after),
        deletion_confirmed_at,
        last_hold_lifted_at,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(purge_after);
    // Every purge can be reviewed for the whole final grace: a purge date is
    // never earlier than a final grace after status first announced it, also
    // when backdated facts made it due long ago. An announced date only moves
    // later.
    let final_grace = policy.days(keys::FINAL_GRACE_DAYS);
    let final_purge_at = match recorded.and_then(|s| s.final_purge_at) {
        Some(announced) => announced.max(due_at + final_grace),
        None => (due_at + final_grace).max(now + final_grace),
    };

    let phase = match &blocker {
        Some(_) => lifecycle_phase,
        None if now < due_at => lifecycle_phase,
        None if now < final_purge_at => PurgeScheduled,
        None => Purging,
    };
    decision.phase = phase;
    if blocker.is_none() {
        decision.final_purge_at = Some(final_purge_at);
        decision.reactivation_deadline = Some(final_purge_at);
        let next = if now < due_at { due_at } else { final_purge_at };
        decision.wake_at = decision.wake_at.into_iter().chain([next]).min();
    }

    // History: how the phase moved since the last decision.
    let offboarding_reason = reason.clone().unwrap_or_else(|| "Other".into());
    let previous = recorded_phase.unwrap_or(Active);
    let standing_event = |event: &str, at: Time| (event.to_string(), at);
    let mut steps = Vec::new();
    // Archived is told whenever it is new, also from Disabled or from a
    // PurgeScheduled of a Disabled organization.
    let newly_offboarded = match lifecycle_phase {
        Archived => recorded.and_then(|s| s.archived_at).is_none(),
        _ => previous == Active,
    };
    if newly_offboarded {
        steps.push(match lifecycle_phase {
            Archived => standing_event("Archived", offboarded_at),
            _ => standing_event("Disabled", offboarded_at),
        });
    }
    if previous != phase {
        if matches!(previous, PurgeScheduled) && matches!(phase, Disabled | Archived) {
            steps.push(standing_event("PurgeDeferred", now));
        }
        if matches!(phase, PurgeScheduled | Purging) && !matches!(previous, PurgeScheduled) {
            steps.push(standing_event("PurgeScheduled", due_at));
        }
        if phase == Purging {
            steps.push(standing_event("Purging", final_purge_at));
        }
    }
    for (event, at) in steps {
        let message = match event.as_str() {
            "Archived" => with_ticket(format!(
                "offboarded ({offboarding_reason}); data is kept until {purge_after}"
            )),
            "Disabled" => with_ticket(format!(
                "access revoked ({offboarding_reason}); data is kept until {purge_after}"
            )),
            "PurgeDeferred" => {
                "the purge is on hold; the final grace runs again in full once nothing blocks it"
                    .into()
            }
            "PurgeScheduled" => {
                format!("the purge runs at {final_purge_at}; review status.purgePlan")
            }
            _ => "the purge started".into(),
        };
        note(&event, &offboarding_reason, message, at.min(now));
    }
    // Newest last: a backdated event goes before the holds noted now.
    history.sort_by_key(|entry| entry.at);
    decision.history = history;

    let to_stop = match lifecycle_phase {
        Disabled => "set spec.lifecycle to Active, or place a RetentionHold",
        _ => "unarchive (spec.lifecycle: Active), or place a RetentionHold",
    };
    decision.verdict = match phase {
        Purging => Verdict::reconciling(
            "Purging",
            "deleting the tenant namespace and everything in it",
        ),
        PurgeScheduled => Verdict::ready(
            "PurgeScheduled",
            format!(
                "the purge runs at {final_purge_at}: review status.purgePlan; to stop it, {to_stop}"
            ),
        ),
        _ => Verdict::ready(
            format!("{lifecycle_phase:?}"),
            with_ticket(format!(
                "{} ({offboarding_reason}); data is kept until {purge_after}",
                match lifecycle_phase {
                    Disabled => "access revoked",
                    _ => "offboarded",
                }
            )),
        ),
    };
    if phase == Purging {
        decision.purge = PurgeStep::DeleteNamespace;
    } else if phase == PurgeScheduled {
        decision.purge = PurgeStep::Plan;
    }
    if let Some(blocker) = blocker {
        decision.extra.push(blocked(blocker, purge_after));
    }
    decision
}

fn blocked(blocker: Blocker, purge_after: Time) -> Extra {
    let (reason, message) = match blocker {
        Blocker::Held(names) => (
            "Held",
            format!(
                "RetentionHold {} in force: nothing is purged while a hold covers the organization; once the last is lifted the final grace runs in full",
                names.join(", ")
            ),
        ),
        Blocker::AwaitingConfirmation => (
            "AwaitingConfirmation",
            format!(
                "purge.requireConfirmation is true: the purge (due from {purge_after}) waits for spec.deletion.confirmName"
            ),
        ),
        Blocker::AwaitingExport => (
            "AwaitingExport",
            format!(
                "purge.requireExport is true: the purge (due from {purge_after}) waits until a DataExport of the organization succeeded"
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

fn refused_after_purge_started() -> Extra {
    Extra {
        type_: "LifecycleChangeRefused".into(),
        status: true,
        reason: "PurgeStarted".into(),
        message: "the purge has started: the organization can no longer be enabled or unarchived"
            .into(),
    }
}

/// Whether spec asks to bring back an organization whose purge has started:
/// to enable it, or to unarchive it (to Active, or back to Disabled).
fn brings_back(spec: &OrganizationSpec, recorded: &OrganizationStatus) -> bool {
    match spec.lifecycle {
        OrganizationLifecycle::Active => true,
        OrganizationLifecycle::Disabled => recorded.archived_at.is_some(),
        OrganizationLifecycle::Archived => false,
    }
}

/// Purged: nothing changes any more but holds noted and a refused change.
fn finished(input: &Input, holds: Vec<String>, history: Vec<HistoryEntry>) -> Decision {
    let recorded = input.recorded.cloned().unwrap_or_default();
    let mut extra = Vec::new();
    if brings_back(input.spec, &recorded) {
        extra.push(refused_after_purge_started());
    }
    Decision {
        phase: OrganizationPhase::Purged,
        disabled_at: recorded.disabled_at,
        archived_at: recorded.archived_at,
        deletion_confirmed_at: recorded.deletion_confirmed_at,
        last_hold_lifted_at: recorded.last_hold_lifted_at,
        portal_visible_until: recorded.portal_visible_until,
        reactivation_deadline: recorded.reactivation_deadline,
        purge_after: recorded.purge_after,
        final_purge_at: recorded.final_purge_at,
        holds,
        access_revoked: true,
        purge: PurgeStep::None,
        history,
        verdict: Verdict::ready(
            "Purged",
            "purged; status.tombstone keeps the record, and the Organization may now be deleted",
        ),
        extra,
        wake_at: None,
    }
}

fn tombstone(input: &Input, recorded: &OrganizationStatus) -> Tombstone {
    let offboarding = input.spec.offboarding.as_ref();
    let plan = recorded.purge_plan.clone().unwrap_or_default();
    let mut deleted = plan.objects;
    deleted.insert("Namespace".into(), plan.namespaces.len() as i64);
    Tombstone {
        name: input.name.into(),
        display_name: input.spec.display_name.clone(),
        tax_id: input.spec.tax_id.clone(),
        created_at: input.created,
        offboarded_at: recorded.archived_at.or(recorded.disabled_at),
        reason: offboarding.map(|o| o.reason),
        ticket: offboarding.and_then(|o| o.ticket.clone()),
        export_provided: !recorded.exports.is_empty(),
        purged_at: input.now,
        deleted,
    }
}

#[cfg(test)]
#[path = "organization_tests.rs"]
mod tests;
