//! The organization lifecycle as a pure function: from Active through
//! Disabled or Archived, the retention period, holds and confirmation, the
//! final grace and the purge, to the tombstone.
//!
//! The purge is where data is destroyed, so the rules are strict: it is never
//! due before `purgeAfter` (never before `retention.extendUntil`, nor before
//! the locked retention of any entitlement in the namespace), never while a
//! hold covers the organization or anything in its namespace, never without
//! confirmation or an export when policy asks for one, and always after a
//! full final grace counted from the last of those (see [`super::purge`]).
//! Each step is recorded in status before it is carried out, so that a
//! controller killed at any point resumes where it was; the tombstone is
//! written only once a namespace tenure itself deleted is gone.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};

use super::conditions::{Extra, Verdict};
pub use super::hold::Hold;
use super::hold::{HoldState, hold_state};
use super::notices::{self, Notice, NoticeKind, time_left};
use super::policy::{Effective, Subject, keys, locked_floor, recorded_days};
use super::purge::{Announced, Schedule, final_purge_at};
use crate::api::common::{HistoryEntry, append_history};
use crate::api::entitlement::EffectiveValue;
use crate::api::entitlement::EntitlementPhase;
use crate::api::organization::EntitlementCounts;
use crate::api::organization::{
    OrganizationLifecycle, OrganizationNext, OrganizationPhase, OrganizationSpec,
    OrganizationStatus, RetentionLock, Tombstone,
};
use crate::api::{Entitlement, LifecyclePolicy, ORGANIZATION_LABEL, PURGE_ANNOTATION};

type Time = DateTime<Utc>;

/// The tenant namespace as the controller found it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Namespace {
    Missing,
    /// Labelled for this organization.
    Owned,
    /// Ours, and being deleted: by the purge (it marked the namespace before
    /// deleting it), or by someone else.
    Terminating {
        by_purge: bool,
    },
    /// It exists without our label, or with another organization's (named).
    NotOwned(Option<String>),
}

/// A locked retention: a minimum a locked LifecyclePolicy sets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LockedRetention {
    pub minimum: TimeDelta,
    /// `LifecyclePolicy/<name>`.
    pub policy: String,
}

/// The locked retention of an entitlement in the tenant namespace.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EntitlementLock {
    /// `<namespace>/<name>`.
    pub entitlement: String,
    /// When it was cancelled; None: it ends with the organization, so its
    /// retention runs from the offboarding.
    pub cancelled_at: Option<Time>,
    /// Its locked data retention, if a locked policy sets one.
    pub retention: Option<LockedRetention>,
    /// Its locked final grace, if a locked policy sets one: the namespace
    /// holding its data is deleted no sooner.
    pub final_grace: Option<TimeDelta>,
}

/// The organization's rules: its effective policy, and the locked minimums
/// of its own retention, archived and disabled.
pub struct PolicyView {
    pub effective: Effective,
    pub locked_archived: Option<LockedRetention>,
    pub locked_disabled: Option<LockedRetention>,
}

impl PolicyView {
    pub fn of(policies: &[&LifecyclePolicy], name: &str) -> Self {
        let subject = Subject::of_organization(name);
        let floor = |key| {
            locked_floor(policies, &subject, key)
                .map(|(minimum, policy)| LockedRetention { minimum, policy })
        };
        PolicyView {
            effective: super::policy::resolve(policies, &subject, None),
            locked_archived: floor(keys::DATA_RETENTION_DAYS),
            locked_disabled: floor(keys::DISABLED_RETENTION_DAYS),
        }
    }
}

/// Everything the organization lifecycle depends on.
#[derive(Clone, Debug)]
pub struct Input<'a> {
    pub name: &'a str,
    pub spec: &'a OrganizationSpec,
    /// When the Organization was created (on the controller's clock).
    pub created: Time,
    pub recorded: Option<&'a OrganizationStatus>,
    pub policy: &'a Effective,
    /// The locked minimums of the organization's own retention, archived
    /// (`cancellation.dataRetentionDays`) and disabled
    /// (`organization.disabledRetentionDays`): `skipRetention` cannot skip them.
    pub locked_archived: Option<&'a LockedRetention>,
    pub locked_disabled: Option<&'a LockedRetention>,
    /// Locked retentions (and final graces) of the entitlements in the
    /// tenant namespace.
    pub entitlement_locks: &'a [EntitlementLock],
    /// Every RetentionHold covering the organization (on it, or on an
    /// entitlement in its namespace), in force or lapsed.
    pub holds: &'a [Hold],
    /// The tenant namespace's name, and what the controller found there.
    pub namespace_name: &'a str,
    pub namespace: &'a Namespace,
    /// Whether a DataExport of the organization succeeded whose artifact
    /// still exists: what `purge.requireExport` waits for.
    pub export_available: bool,
    /// Objects, by kind, still stored under the tenant namespace after it
    /// is gone: what its deletion missed (the namespace controller can read
    /// a custom resource as absent while the API server starts,
    /// kubernetes/kubernetes#93790). Counted by the controller only before
    /// it writes the tombstone; empty otherwise.
    pub remnants: &'a BTreeMap<String, i64>,
    /// Whether the Organization is being deleted (its finalizer holds it).
    pub deleting: bool,
    pub now: Time,
}

/// What the purge needs from the controller in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PurgeStep {
    /// Nothing to delete.
    None,
    /// The final grace runs: keep `status.purgePlan` up to date for review.
    Plan,
    /// Purging: mark and delete the tenant namespace (again, if a previous
    /// attempt was cut short), after a live look for holds. `freeze_plan`: the
    /// purge starts now, so count what it deletes once more and record that
    /// before anything is deleted.
    DeleteNamespace { freeze_plan: bool },
    /// The namespace tenure deleted is gone, but objects stored under it
    /// outlived it ([`Input::remnants`]): create it again, labelled and
    /// marked for the purge, and delete it (after a live look for holds), so
    /// that Kubernetes deletes them with it.
    RecreateNamespace,
    /// The namespace tenure deleted is gone: delete the organization's export
    /// artifacts (after a live look for holds), then write this tombstone and
    /// phase Purged, once.
    WriteTombstone(Tombstone),
}

impl PurgeStep {
    /// Whether `status.purgePlan` is counted now: during the final grace,
    /// and once more as the purge starts (that count is what the tombstone
    /// says).
    pub fn counts_plan(&self) -> bool {
        matches!(
            self,
            PurgeStep::Plan | PurgeStep::DeleteNamespace { freeze_plan: true }
        )
    }
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
    pub purge_announced_at: Option<Time>,
    pub retention_locked_by: Option<RetentionLock>,
    pub namespace_deleted_at: Option<Time>,
    pub effective_policy: BTreeMap<String, EffectiveValue>,
    /// Names of the holds in force.
    pub holds: Vec<String>,
    /// Whether access to the tenant namespace is revoked (deny-all NetworkPolicy).
    pub access_revoked: bool,
    /// Whether to create the tenant namespace: it is missing and the purge has
    /// not started.
    pub provision_namespace: bool,
    /// Whether to bring access to the tenant namespace to `access_revoked`:
    /// it is ours and not being purged.
    pub govern_access: bool,
    /// The namespace status records as the organization's: only once it owns
    /// it, since the isolation checks of entitlements and exports trust it.
    pub namespace: Option<String>,
    pub purge: PurgeStep,
    /// What happens next by itself, and when (`status.next`).
    pub next: Option<OrganizationNext>,
    /// Reminders or the final confirmation to send now; written to the
    /// history after the transitions.
    pub notices: Vec<Notice>,
    pub last_offboarding_reminder_at: Option<Time>,
    pub last_purge_reminder_at: Option<Time>,
    /// New history entries, oldest first; each also becomes an Event.
    pub history: Vec<HistoryEntry>,
    pub verdict: Verdict,
    pub extra: Vec<Extra>,
    /// When to decide again by itself.
    pub wake_at: Option<Time>,
    /// The `now` it was decided at: when its history entries are recorded.
    pub decided_at: Time,
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
        status.purge_announced_at = self.purge_announced_at;
        status.retention_locked_by = self.retention_locked_by.clone();
        status.namespace_deleted_at = self.namespace_deleted_at;
        status.effective_policy = self.effective_policy.clone();
        status.holds = self.holds.clone();
        status.next = self.next.clone();
        status.last_offboarding_reminder_at = self.last_offboarding_reminder_at;
        status.last_purge_reminder_at = self.last_purge_reminder_at;
        if let Some(namespace) = &self.namespace {
            status.namespace = Some(namespace.clone());
        }
        if matches!(
            self.phase,
            OrganizationPhase::Active | OrganizationPhase::Disabled | OrganizationPhase::Archived
        ) {
            status.purge_plan = None;
        }
        if let PurgeStep::WriteTombstone(tombstone) = &self.purge {
            status.tombstone.get_or_insert_with(|| tombstone.clone());
        }
        let notices = self.notices.iter().map(Notice::history_entry);
        let history: Vec<HistoryEntry> = self.history.iter().cloned().chain(notices).collect();
        append_history(&mut status.history, &history, self.decided_at);
    }
}

/// What keeps a due purge from being scheduled.
enum Blocker {
    Held(Vec<String>),
    AwaitingConfirmation,
    AwaitingExport,
}

/// Decides the organization's lifecycle at `input.now`, and what becomes of
/// its namespace and of a delete that came too early.
pub fn decide(input: &Input) -> Decision {
    // An offboarding scheduled for later is not in force yet: decide on the
    // spec in force now, and announce what comes when.
    let scheduled = scheduled_offboarding(input);
    let in_force = scheduled.as_ref().map(|s| Input {
        spec: &s.spec_now,
        ..input.clone()
    });
    let mut decision = lifecycle(in_force.as_ref().unwrap_or(input));
    announce(input, scheduled.as_ref(), &mut decision);
    // Access is governed in a namespace of the organization's own, except
    // one the purge is deleting (or deleted): a namespace kept while
    // Purging (created again for remnants, then held) stays closed.
    let governed = match decision.phase {
        OrganizationPhase::Purged => false,
        OrganizationPhase::Purging => decision.purge == PurgeStep::None,
        _ => true,
    };
    decision.govern_access = *input.namespace == Namespace::Owned && governed;
    let ours = matches!(
        input.namespace,
        Namespace::Owned | Namespace::Terminating { .. }
    );
    if decision.provision_namespace || ours {
        decision.namespace = Some(input.namespace_name.to_string());
    }
    if input.deleting {
        decision.extra.push(deletion_blocked(input.name));
    }
    decision
}

/// An offboarding whose `effectiveAt` is still ahead: the phase it leads
/// to, when, and the spec in force until then (Active, or Disabled for an
/// organization already disabled that is to be archived).
struct ScheduledOffboarding {
    phase: OrganizationPhase,
    at: Time,
    spec_now: OrganizationSpec,
}

fn scheduled_offboarding(input: &Input) -> Option<ScheduledOffboarding> {
    let recorded = input.recorded;
    let purge_started = recorded.is_some_and(|s| {
        s.tombstone.is_some()
            || matches!(
                s.phase,
                Some(OrganizationPhase::Purging | OrganizationPhase::Purged)
            )
    });
    if purge_started {
        return None;
    }
    let at = input
        .spec
        .offboarding
        .as_ref()?
        .effective_at
        .filter(|at| *at > input.now)?;
    // Only an offboarding that has not taken effect yet is scheduled: once
    // it has, a later effectiveAt is a correction of its date (the dates
    // move, access stays revoked), never a way back to Active.
    let took_effect = |at: Option<Time>| at.is_some_and(|at| at <= input.now);
    let disabled = took_effect(recorded.and_then(|s| s.disabled_at));
    let archived = took_effect(recorded.and_then(|s| s.archived_at));
    let mut spec_now = input.spec.clone();
    let phase = match input.spec.lifecycle {
        OrganizationLifecycle::Active => return None,
        OrganizationLifecycle::Disabled if disabled || archived => return None,
        OrganizationLifecycle::Archived if archived => return None,
        OrganizationLifecycle::Disabled => {
            spec_now.lifecycle = OrganizationLifecycle::Active;
            OrganizationPhase::Disabled
        }
        OrganizationLifecycle::Archived => {
            if disabled {
                // Disabled since then (recorded), archived later: its data
                // is kept at least until the archive, whose retention then
                // runs, so the disabled retention cannot purge it first.
                spec_now.lifecycle = OrganizationLifecycle::Disabled;
                let retention = spec_now.retention.get_or_insert_with(Default::default);
                retention.extend_until = retention.extend_until.max(Some(at));
            } else {
                spec_now.lifecycle = OrganizationLifecycle::Active;
            }
            if let Some(offboarding) = spec_now.offboarding.as_mut() {
                offboarding.effective_at = None;
            }
            OrganizationPhase::Archived
        }
    };
    Some(ScheduledOffboarding {
        phase,
        at,
        spec_now,
    })
}

/// Announces what comes next: a scheduled offboarding (`status.next`, a
/// condition, reminders ahead of it), the reminders before a purge, and
/// the final confirmation once the tombstone is written.
fn announce(input: &Input, scheduled: Option<&ScheduledOffboarding>, decision: &mut Decision) {
    let recorded = input.recorded;
    let now = input.now;
    decision.last_offboarding_reminder_at = recorded.and_then(|s| s.last_offboarding_reminder_at);
    decision.last_purge_reminder_at = recorded.and_then(|s| s.last_purge_reminder_at);
    let reason = offboarding_reason(input.spec);
    if let Some(scheduled) = scheduled {
        let at = scheduled.at;
        let what = match scheduled.phase {
            OrganizationPhase::Disabled => "access is revoked (Disabled)",
            _ => "the organization is archived (Archived)",
        };
        let own_next = decision.next.take().filter(|next| next.at < at);
        decision.next = own_next.or(Some(OrganizationNext {
            phase: scheduled.phase,
            at,
        }));
        decision.extra.push(Extra {
            type_: OFFBOARDING_SCHEDULED.into(),
            status: true,
            reason: format!("{:?}At", scheduled.phase),
            message: with_ticket(
                input.spec,
                format!(
                    "{what} at {at}, as spec.offboarding.effectiveAt says ({reason}); until then it stays {:?}",
                    decision.phase
                ),
            ),
        });
        let due = notices::reminders(
            at,
            &input.policy.day_list(keys::OFFBOARDING_REMINDER_DAYS),
            decision.last_offboarding_reminder_at,
            now,
        );
        decision.last_offboarding_reminder_at = due.sent;
        decision.notices.extend(due.notice(
            NoticeKind::OffboardingReminder,
            now,
            with_ticket(
                input.spec,
                format!("{what} at {at}, {} ({reason})", time_left(at, now)),
            ),
        ));
        decision.wake_at = [decision.wake_at, Some(at), due.upcoming]
            .into_iter()
            .flatten()
            .min();
    }
    if let PurgeStep::WriteTombstone(tombstone) = &decision.purge {
        decision.notices.push(Notice::final_confirmation(
            now,
            final_confirmation(tombstone),
        ));
        return;
    }
    let offboarded = matches!(
        decision.phase,
        OrganizationPhase::Disabled
            | OrganizationPhase::Archived
            | OrganizationPhase::PurgeScheduled
    );
    if let Some(purge_at) = decision.final_purge_at.filter(|_| offboarded) {
        let due = notices::reminders(
            purge_at,
            &input.policy.day_list(keys::PURGE_REMINDER_DAYS),
            decision.last_purge_reminder_at,
            now,
        );
        decision.last_purge_reminder_at = due.sent;
        decision.notices.extend(due.notice(
            NoticeKind::PurgeReminder,
            now,
            format!(
                "namespace {} and everything in it is purged at {purge_at}, {}: ask for an export before then",
                input.namespace_name,
                time_left(purge_at, now)
            ),
        ));
        decision.wake_at = decision.wake_at.into_iter().chain(due.upcoming).min();
    }
}

/// The tombstone as the customer is told it.
fn final_confirmation(tombstone: &Tombstone) -> String {
    let mut said = format!("purged {} at {}", tombstone.name, tombstone.purged_at);
    if let Some(display_name) = &tombstone.display_name {
        said.push_str(&format!(" ({display_name})"));
    }
    if let Some(tax_id) = &tombstone.tax_id {
        said.push_str(&format!(", tax ID {tax_id}"));
    }
    said.push_str(&format!("; created {}", tombstone.created_at));
    if let Some(offboarded_at) = tombstone.offboarded_at {
        said.push_str(&format!(", offboarded {offboarded_at}"));
    }
    if let Some(reason) = tombstone.reason {
        said.push_str(&format!(" ({reason:?})"));
    }
    if let Some(ticket) = &tombstone.ticket {
        said.push_str(&format!(", ticket {ticket}"));
    }
    let deleted: Vec<String> = tombstone
        .deleted
        .iter()
        .map(|(kind, count)| format!("{kind} {count}"))
        .collect();
    let deleted = match deleted.is_empty() {
        true => "nothing counted".to_string(),
        false => deleted.join(", "),
    };
    let export = match tombstone.export_provided {
        true => "an export was provided",
        false => "no export was provided",
    };
    format!("{said}; deleted: {deleted}; {export}")
}

/// The condition of an organization whose offboarding is scheduled ahead.
pub const OFFBOARDING_SCHEDULED: &str = "OffboardingScheduled";

/// The condition of an organization deleted before it was Purged: its
/// finalizer keeps it, and says how to offboard it instead.
fn deletion_blocked(name: &str) -> Extra {
    Extra {
        type_: DELETION_BLOCKED.into(),
        status: true,
        reason: "NotPurged".into(),
        message: format!(
            "organization {name} is not Purged: deleting it now would lose the customer's record and its tombstone. \
             Offboard it instead (spec.lifecycle: Archived, then spec.deletion); it can be deleted once status.phase is Purged"
        ),
    }
}

/// The condition an organization deleted too early carries.
pub const DELETION_BLOCKED: &str = "DeletionBlocked";

/// The lifecycle itself: phase, dates, the purge's step and what to tell.
fn lifecycle(input: &Input) -> Decision {
    let recorded = input.recorded;
    let holds = hold_state(
        input.holds,
        recorded.map(|s| s.holds.as_slice()).unwrap_or_default(),
        recorded.and_then(|s| s.last_hold_lifted_at),
        input.now,
    );
    let recorded_phase = recorded.and_then(|s| s.phase);
    // Once the purge started it runs to its end: a tombstone is final.
    if recorded.is_some_and(|s| s.tombstone.is_some())
        || recorded_phase == Some(OrganizationPhase::Purged)
    {
        return finished(input, holds);
    }
    match recorded {
        // A hold that came before the namespace delete was sent stops the
        // purge: back to before it, blocked, as any held purge. Once the
        // delete was seen, the purge stays the purge (a namespace created
        // again for its remnants is not a fresh start).
        Some(recorded)
            if recorded_phase == Some(OrganizationPhase::Purging)
                && (!(holds.held() && *input.namespace == Namespace::Owned)
                    || recorded.namespace_deleted_at.is_some()) =>
        {
            purging(input, recorded, holds)
        }
        _ => scheduled(input, holds),
    }
}

/// The offboarding facts: when the organization was disabled and archived.
/// `offboarding.effectiveAt` is a fact in spec: a correction of it moves the
/// dates (and every deadline after them), later or earlier.
fn standing_dates(input: &Input) -> (Option<Time>, Option<Time>) {
    let spec = input.spec;
    let recorded = input.recorded;
    let effective_at = spec.offboarding.as_ref().and_then(|o| o.effective_at);
    let since = |recorded_at: Option<Time>| effective_at.or(recorded_at).or(Some(input.now));
    match spec.lifecycle {
        OrganizationLifecycle::Active => (None, None),
        OrganizationLifecycle::Disabled => (since(recorded.and_then(|s| s.disabled_at)), None),
        OrganizationLifecycle::Archived => (
            recorded.and_then(|s| s.disabled_at),
            since(recorded.and_then(|s| s.archived_at)),
        ),
    }
}

/// The decision before the purge starts (or after a hold stopped it).
fn scheduled(input: &Input, holds: HoldState) -> Decision {
    use OrganizationPhase::*;
    let now = input.now;
    let spec = input.spec;
    let recorded = input.recorded;
    let policy = input.policy;
    let (disabled_at, archived_at) = standing_dates(input);
    let deletion_confirmed_at = spec.deletion.as_ref().map(|_| {
        recorded
            .and_then(|s| s.deletion_confirmed_at)
            .unwrap_or(now)
    });
    let mut decision = active(
        input,
        &holds,
        disabled_at,
        archived_at,
        deletion_confirmed_at,
    );
    let Some(offboarded_at) = archived_at.or(disabled_at) else {
        return back_to_active(input, decision);
    };

    let lifecycle_phase = match spec.lifecycle {
        OrganizationLifecycle::Disabled => Disabled,
        _ => Archived,
    };
    decision.access_revoked = true;
    decision.portal_visible_until = Some(offboarded_at + policy.days(keys::PORTAL_VISIBILITY_DAYS));
    let (purge_after, locked_by) = retention_end(input, offboarded_at, deletion_confirmed_at);
    decision.purge_after = Some(purge_after);
    decision.retention_locked_by = locked_by;

    let blocker = purge_blocker(input, &holds);
    let (due_at, schedule) = purge_due(input, &holds, purge_after, deletion_confirmed_at);
    let final_purge_at = schedule.at;

    // The purge starts only on a namespace tenure owns and finds in place.
    let namespace_ready = *input.namespace == Namespace::Owned;
    let phase = match &blocker {
        Some(_) => lifecycle_phase,
        None if now < due_at => lifecycle_phase,
        None if now < final_purge_at || !namespace_ready => PurgeScheduled,
        None => Purging,
    };
    decision.phase = phase;
    if blocker.is_none() {
        decision.final_purge_at = Some(final_purge_at);
        decision.purge_announced_at = Some(schedule.since);
        decision.reactivation_deadline = Some(final_purge_at);
        // Past both, the purge waits only for the namespace: its watch wakes us.
        let next = [due_at, final_purge_at].into_iter().find(|at| now < *at);
        decision.wake_at = decision.wake_at.into_iter().chain(next).min();
        decision.next = match phase {
            Disabled | Archived => Some((PurgeScheduled, due_at)),
            PurgeScheduled => Some((Purging, final_purge_at)),
            _ => None,
        }
        .filter(|(_, at)| now < *at)
        .map(|(phase, at)| OrganizationNext { phase, at });
    }
    let recorded_phase = recorded.and_then(|s| s.phase).unwrap_or(Active);
    decision.history.extend(offboarding_history(
        input,
        recorded_phase,
        phase,
        offboarded_at,
        purge_after,
        due_at,
        final_purge_at,
    ));
    // Newest last: a backdated event goes before the holds noted now.
    decision.history.sort_by_key(|entry| entry.at);
    decision.verdict = namespace_verdict(input, false)
        .unwrap_or_else(|| offboarded_verdict(input, phase, purge_after, final_purge_at));
    decision.purge = match phase {
        Purging => PurgeStep::DeleteNamespace { freeze_plan: true },
        PurgeScheduled => PurgeStep::Plan,
        _ => PurgeStep::None,
    };
    if let Some(blocker) = blocker {
        decision.extra.push(blocked(blocker, purge_after));
    }
    decision
}

/// An organization neither disabled nor archived: active, and active again
/// (Enabled, Unarchived) when it was offboarded before its purge began.
fn back_to_active(input: &Input, mut decision: Decision) -> Decision {
    let recorded = input.recorded;
    if recorded
        .and_then(|s| s.phase)
        .is_some_and(|p| p != OrganizationPhase::Active)
    {
        let event = if recorded.is_some_and(|s| s.archived_at.is_some()) {
            "Unarchived"
        } else {
            "Enabled"
        };
        decision.history.push(entry(
            event,
            "Active",
            "the organization is active again".into(),
            input.now,
        ));
    }
    decision.verdict = namespace_verdict(input, false).unwrap_or(decision.verdict);
    decision
}

/// An active organization's decision: what every phase starts from.
fn active(
    input: &Input,
    holds: &HoldState,
    disabled_at: Option<Time>,
    archived_at: Option<Time>,
    deletion_confirmed_at: Option<Time>,
) -> Decision {
    Decision {
        phase: OrganizationPhase::Active,
        disabled_at,
        archived_at,
        deletion_confirmed_at,
        last_hold_lifted_at: holds.last_lifted_at,
        portal_visible_until: None,
        reactivation_deadline: None,
        purge_after: None,
        final_purge_at: None,
        purge_announced_at: None,
        retention_locked_by: None,
        namespace_deleted_at: None,
        effective_policy: input.policy.0.clone(),
        holds: holds.in_force.clone(),
        access_revoked: false,
        provision_namespace: *input.namespace == Namespace::Missing,
        govern_access: false,
        namespace: None,
        purge: PurgeStep::None,
        next: None,
        notices: Vec::new(),
        decided_at: input.now,
        last_offboarding_reminder_at: None,
        last_purge_reminder_at: None,
        history: holds.history.clone(),
        verdict: Verdict::ready("Active", "the organization is active"),
        extra: Vec::new(),
        wake_at: holds.next_lapse,
    }
}

/// What keeps a due purge from being scheduled, if anything.
fn purge_blocker(input: &Input, holds: &HoldState) -> Option<Blocker> {
    let policy = input.policy;
    if holds.held() {
        Some(Blocker::Held(holds.described.clone()))
    } else if policy.flag(keys::REQUIRE_CONFIRMATION) && input.spec.deletion.is_none() {
        Some(Blocker::AwaitingConfirmation)
    } else if policy.flag(keys::REQUIRE_EXPORT) && !input.export_available {
        Some(Blocker::AwaitingExport)
    } else {
        None
    }
}

/// When the purge is due (the retention's end, the confirmation, the last
/// hold lifted, whichever is last), and its final purge date.
fn purge_due(
    input: &Input,
    holds: &HoldState,
    purge_after: Time,
    deletion_confirmed_at: Option<Time>,
) -> (Time, Schedule) {
    let policy = input.policy;
    let due_at = [
        Some(purge_after),
        deletion_confirmed_at,
        holds.last_lifted_at,
    ]
    .into_iter()
    .flatten()
    .max()
    .unwrap_or(purge_after);
    // A locked final grace of an entitlement in the namespace counts too: the
    // namespace holding its data goes no sooner.
    let final_grace = input
        .entitlement_locks
        .iter()
        .filter_map(|e| e.final_grace)
        .fold(policy.days(keys::FINAL_GRACE_DAYS), TimeDelta::max);
    let schedule = final_purge_at(due_at, final_grace, announced(input.recorded), input.now);
    (due_at, schedule)
}

/// `purgeAfter`: the end of the retention (or the confirmation, when an
/// approved `skipRetention` skips it, but never a locked retention), never
/// before `retention.extendUntil`, nor before the locked retention of any
/// entitlement in the namespace; with the entitlement that holds it there.
fn retention_end(
    input: &Input,
    offboarded_at: Time,
    deletion_confirmed_at: Option<Time>,
) -> (Time, Option<RetentionLock>) {
    let spec = input.spec;
    let (retention, locked) = match spec.lifecycle {
        OrganizationLifecycle::Archived => (
            input.policy.days(keys::DATA_RETENTION_DAYS),
            input.locked_archived,
        ),
        _ => (
            input.policy.days(keys::DISABLED_RETENTION_DAYS),
            input.locked_disabled,
        ),
    };
    let skip_retention = spec
        .deletion
        .as_ref()
        .is_some_and(|d| d.skip_retention == Some(true) && d.approval.is_some());
    let own = match (skip_retention, deletion_confirmed_at) {
        (true, Some(confirmed)) => {
            let locked_end = locked.map(|l| offboarded_at + l.minimum);
            locked_end.map_or(confirmed, |end| end.max(confirmed))
        }
        _ => offboarded_at + retention,
    };
    let extend_until = spec.retention.as_ref().and_then(|r| r.extend_until);
    let own = extend_until.map_or(own, |until| own.max(until));
    let latest_lock = input
        .entitlement_locks
        .iter()
        .filter_map(|e| {
            let lock = e.retention.as_ref()?;
            Some(RetentionLock {
                entitlement: e.entitlement.clone(),
                policy: lock.policy.clone(),
                until: e.cancelled_at.unwrap_or(offboarded_at) + lock.minimum,
            })
        })
        .filter(|lock| lock.until > own)
        .max_by(|a, b| {
            a.until
                .cmp(&b.until)
                .then_with(|| b.entitlement.cmp(&a.entitlement))
        });
    match latest_lock {
        Some(lock) => (lock.until, Some(lock)),
        None => (own, None),
    }
}

/// The purge as the last decision announced it, if it did.
fn announced(recorded: Option<&OrganizationStatus>) -> Option<Announced> {
    let recorded = recorded?;
    Announced::from_status(
        recorded.final_purge_at,
        recorded.purge_announced_at,
        recorded_days(&recorded.effective_policy, keys::FINAL_GRACE_DAYS),
        [
            recorded.purge_after,
            recorded.deletion_confirmed_at,
            recorded.last_hold_lifted_at,
        ],
    )
}

/// History entries for how the phase moved since the last decision.
fn offboarding_history(
    input: &Input,
    previous: OrganizationPhase,
    phase: OrganizationPhase,
    offboarded_at: Time,
    purge_after: Time,
    due_at: Time,
    final_purge_at: Time,
) -> Vec<HistoryEntry> {
    use OrganizationPhase::*;
    let now = input.now;
    let lifecycle_phase = match input.spec.lifecycle {
        OrganizationLifecycle::Disabled => Disabled,
        _ => Archived,
    };
    let reason = offboarding_reason(input.spec);
    let mut steps: Vec<(&str, Time)> = Vec::new();
    // Archived is told whenever it is new, also from Disabled or from a
    // PurgeScheduled of a Disabled organization.
    let newly_offboarded = match lifecycle_phase {
        Archived => input.recorded.and_then(|s| s.archived_at).is_none(),
        _ => previous == Active,
    };
    if newly_offboarded {
        steps.push((
            if lifecycle_phase == Archived {
                "Archived"
            } else {
                "Disabled"
            },
            offboarded_at,
        ));
    }
    if previous != phase {
        if matches!(previous, PurgeScheduled | Purging) && matches!(phase, Disabled | Archived) {
            steps.push(("PurgeDeferred", now));
        }
        if matches!(phase, PurgeScheduled | Purging) && !matches!(previous, PurgeScheduled) {
            steps.push(("PurgeScheduled", due_at));
        }
        if phase == Purging {
            steps.push(("Purging", final_purge_at));
        }
    }
    steps
        .into_iter()
        .map(|(event, at)| {
            let message = match event {
                "Archived" => with_ticket(
                    input.spec,
                    format!("offboarded ({reason}); data is kept until {purge_after}"),
                ),
                "Disabled" => with_ticket(
                    input.spec,
                    format!("access revoked ({reason}); data is kept until {purge_after}"),
                ),
                "PurgeDeferred" => {
                    "the purge is on hold; the final grace runs again in full once nothing blocks it"
                        .into()
                }
                "PurgeScheduled" => {
                    format!("the purge runs at {final_purge_at}; review status.purgePlan")
                }
                _ => "the purge started".into(),
            };
            entry(event, &reason, message, at.min(now))
        })
        .collect()
}

/// What the conditions say of an offboarded organization not yet purging, or
/// starting to.
fn offboarded_verdict(
    input: &Input,
    phase: OrganizationPhase,
    purge_after: Time,
    final_purge_at: Time,
) -> Verdict {
    use OrganizationPhase::*;
    let disabled = input.spec.lifecycle == OrganizationLifecycle::Disabled;
    let to_stop = if disabled {
        "set spec.lifecycle to Active, or place a RetentionHold"
    } else {
        "unarchive (spec.lifecycle: Active), or place a RetentionHold"
    };
    let reason = offboarding_reason(input.spec);
    match phase {
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
            format!("{phase:?}"),
            with_ticket(
                input.spec,
                format!(
                    "{} ({reason}); data is kept until {purge_after}",
                    if disabled {
                        "access revoked"
                    } else {
                        "offboarded"
                    }
                ),
            ),
        ),
    }
}

/// What the conditions say when the tenant namespace is not as it should be
/// (before the purge: `purging` says it once the purge started).
fn namespace_verdict(input: &Input, purge_started: bool) -> Option<Verdict> {
    let namespace = input.namespace_name;
    let name = input.name;
    match input.namespace {
        Namespace::NotOwned(owner) => Some(Verdict::stalled(
            "NamespaceNotOwned",
            match owner {
                Some(other) => format!(
                    "namespace {namespace} belongs to organization {other} (label {ORGANIZATION_LABEL}); set spec.namespace to another name"
                ),
                None if purge_started => format!(
                    "namespace {namespace} lost its label {ORGANIZATION_LABEL}={name}: tenure deletes only what it owns, so the purge waits; label it again to let the purge finish"
                ),
                None => format!(
                    "namespace {namespace} exists without label {ORGANIZATION_LABEL}={name}; tenure never adopts a namespace it did not create: label it, or set spec.namespace to another name"
                ),
            },
        )),
        Namespace::Terminating { .. } if !purge_started => Some(Verdict::reconciling(
            "NamespaceTerminating",
            format!(
                "tenant namespace {namespace} is being deleted; it is created again once it is gone"
            ),
        )),
        _ => None,
    }
}

/// The decision while Purging: the namespace is deleted, then the tombstone
/// is written, once, when the namespace tenure deleted is gone.
fn purging(input: &Input, recorded: &OrganizationStatus, holds: HoldState) -> Decision {
    let now = input.now;
    let mut decision = started(
        input,
        recorded,
        &holds,
        OrganizationPhase::Purging,
        Verdict::reconciling(
            "Purging",
            "deleting the tenant namespace and everything in it; the tombstone is written once it is gone",
        ),
    );
    match input.namespace {
        // Created again for the remnants of its deletion: deleted again,
        // the first deletion's date kept, unless a hold came meanwhile.
        Namespace::Owned if holds.held() => {
            decision.verdict = Verdict::reconciling(
                "Held",
                format!(
                    "namespace {} was created again to delete what its deletion missed; it is kept while RetentionHold {} is in force, and deleted once the hold ends",
                    input.namespace_name,
                    holds.described.join(", ")
                ),
            );
            let purge_after = recorded.purge_after.unwrap_or(now);
            let blocker = Blocker::Held(holds.described.clone());
            decision.extra.push(blocked(blocker, purge_after));
            decision.wake_at = holds.next_lapse;
        }
        Namespace::Owned => {
            decision.purge = PurgeStep::DeleteNamespace { freeze_plan: false };
        }
        Namespace::Terminating { by_purge: true } => {
            decision.namespace_deleted_at = Some(recorded.namespace_deleted_at.unwrap_or(now));
            if holds.held() {
                decision.verdict.message = format!(
                    "RetentionHold {} came after the tenant namespace's delete was sent: Kubernetes is deleting what it holds and tenure cannot stop that; the export ZIPs are kept while it is in force",
                    holds.described.join(", ")
                );
            }
        }
        Namespace::Terminating { by_purge: false } => {
            decision.verdict = Verdict::reconciling(
                "NamespaceTerminating",
                format!(
                    "namespace {} is being deleted, but not by tenure's purge: tenure will not write a tombstone for what it did not delete",
                    input.namespace_name
                ),
            );
        }
        Namespace::NotOwned(_) => {
            decision.verdict = namespace_verdict(input, true).expect("a namespace not owned");
        }
        Namespace::Missing => namespace_gone(input, recorded, &holds, &mut decision),
    }
    decision
}

/// The tenant namespace is gone: the tombstone is written for a namespace
/// tenure's own delete removed (once no hold keeps the export ZIPs, and
/// nothing stored under it is left), never for one someone else deleted.
fn namespace_gone(
    input: &Input,
    recorded: &OrganizationStatus,
    holds: &HoldState,
    decision: &mut Decision,
) {
    let now = input.now;
    match recorded.namespace_deleted_at {
        Some(_) if holds.held() => {
            decision.verdict = Verdict::reconciling(
                "Held",
                format!(
                    "the tenant namespace is gone; the organization's export ZIPs are kept while RetentionHold {} is in force, and the tombstone is written once they are deleted",
                    holds.described.join(", ")
                ),
            );
        }
        Some(_) if !input.remnants.is_empty() => {
            let remnants: Vec<String> = input
                .remnants
                .iter()
                .map(|(kind, count)| format!("{kind}: {count}"))
                .collect();
            decision.purge = PurgeStep::RecreateNamespace;
            decision.verdict = Verdict::reconciling(
                "NamespaceRemnants",
                format!(
                    "namespace {} is gone, but objects in it were not deleted with it ({}): the namespace controller can miss them while the API server starts (kubernetes/kubernetes#93790); tenure creates the namespace again and deletes it so that they go with it, and writes the tombstone once nothing of it is left",
                    input.namespace_name,
                    remnants.join(", ")
                ),
            );
        }
        Some(_) => {
            decision.phase = OrganizationPhase::Purged;
            decision.purge = PurgeStep::WriteTombstone(tombstone(input, recorded));
            decision.verdict =
                Verdict::ready("Purged", "purged; status.tombstone keeps the record");
            let reason = offboarding_reason(input.spec);
            decision.history.push(entry(
                "Purged",
                &reason,
                with_ticket(
                    input.spec,
                    "the tenant namespace and everything in it were deleted".into(),
                ),
                now,
            ));
        }
        None => {
            decision.verdict = Verdict::stalled(
                "NamespaceGone",
                format!(
                    "namespace {} was deleted, but not by tenure's purge: tenure writes no tombstone for what it did not delete",
                    input.namespace_name
                ),
            );
        }
    }
}

fn entry(event: &str, reason: &str, message: String, at: Time) -> HistoryEntry {
    HistoryEntry {
        at,
        event: event.into(),
        reason: reason.into(),
        message,
        recorded_at: None,
    }
}

fn offboarding_reason(spec: &OrganizationSpec) -> String {
    spec.offboarding
        .as_ref()
        .map_or_else(|| "Other".into(), |o| format!("{:?}", o.reason))
}

fn with_ticket(spec: &OrganizationSpec, text: String) -> String {
    match spec.offboarding.as_ref().and_then(|o| o.ticket.as_ref()) {
        Some(ticket) => format!("{text} (ticket {ticket})"),
        None => text,
    }
}

fn blocked(blocker: Blocker, purge_after: Time) -> Extra {
    let (reason, message) = match blocker {
        Blocker::Held(holds) => (
            "Held",
            format!(
                "RetentionHold {} in force: nothing is purged while a hold covers the organization or anything in its namespace; once the last is lifted the final grace runs in full",
                holds.join(", ")
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
                "purge.requireExport is true: the purge (due from {purge_after}) waits until a DataExport of the organization succeeded and its artifact still exists"
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
fn finished(input: &Input, holds: HoldState) -> Decision {
    let recorded = input.recorded.cloned().unwrap_or_default();
    started(
        input,
        &recorded,
        &holds,
        OrganizationPhase::Purged,
        Verdict::ready(
            "Purged",
            "purged; status.tombstone keeps the record, and the Organization may now be deleted",
        ),
    )
}

/// A decision once the purge started: what status recorded stands, holds
/// are noted, access stays revoked, and bringing the organization back is
/// refused.
fn started(
    input: &Input,
    recorded: &OrganizationStatus,
    holds: &HoldState,
    phase: OrganizationPhase,
    verdict: Verdict,
) -> Decision {
    let mut extra = Vec::new();
    if brings_back(input.spec, recorded) {
        extra.push(refused_after_purge_started());
    }
    Decision {
        phase,
        disabled_at: recorded.disabled_at,
        archived_at: recorded.archived_at,
        deletion_confirmed_at: recorded.deletion_confirmed_at,
        last_hold_lifted_at: holds.last_lifted_at,
        portal_visible_until: recorded.portal_visible_until,
        reactivation_deadline: recorded.reactivation_deadline,
        purge_after: recorded.purge_after,
        final_purge_at: recorded.final_purge_at,
        purge_announced_at: recorded.purge_announced_at,
        retention_locked_by: recorded.retention_locked_by.clone(),
        namespace_deleted_at: recorded.namespace_deleted_at,
        effective_policy: recorded.effective_policy.clone(),
        holds: holds.in_force.clone(),
        access_revoked: true,
        provision_namespace: false,
        govern_access: false,
        namespace: None,
        purge: PurgeStep::None,
        next: None,
        notices: Vec::new(),
        decided_at: input.now,
        last_offboarding_reminder_at: None,
        last_purge_reminder_at: None,
        history: holds.history.clone(),
        verdict,
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
        system: plan.system,
    }
}

impl Namespace {
    /// The tenant namespace `namespace` (None: missing) as organization
    /// `organization` sees it: by its label and tenure's purge mark.
    pub fn observed(
        namespace: Option<&k8s_openapi::api::core::v1::Namespace>,
        organization: &str,
    ) -> Self {
        let Some(namespace) = namespace else {
            return Namespace::Missing;
        };
        let meta = &namespace.metadata;
        let label = meta.labels.as_ref().and_then(|l| l.get(ORGANIZATION_LABEL));
        match label {
            Some(owner) if owner == organization && meta.deletion_timestamp.is_some() => {
                let marked = meta
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(PURGE_ANNOTATION));
                Namespace::Terminating {
                    by_purge: marked.map(String::as_str) == Some(organization),
                }
            }
            Some(owner) if owner == organization => Namespace::Owned,
            owner => Namespace::NotOwned(owner.cloned()),
        }
    }
}

/// How many of the entitlements in the tenant namespace are in each phase
/// (one elsewhere that names the organization stalls and is not counted).
pub fn count_entitlements<'a>(
    entitlements: impl IntoIterator<Item = &'a Entitlement>,
) -> EntitlementCounts {
    let mut counts = EntitlementCounts::default();
    for entitlement in entitlements {
        match entitlement.status.as_ref().and_then(|s| s.phase) {
            Some(EntitlementPhase::Active) => counts.active += 1,
            Some(EntitlementPhase::Trialing) => counts.trialing += 1,
            Some(EntitlementPhase::Suspended) => counts.suspended += 1,
            Some(EntitlementPhase::Expired) => counts.expired += 1,
            Some(EntitlementPhase::Cancelled) => counts.cancelled += 1,
            Some(EntitlementPhase::Purged) => counts.purged += 1,
            Some(EntitlementPhase::Pending) | None => {}
        }
    }
    counts
}

/// The locked retention of every entitlement in the tenant namespace: a
/// locked policy's data retention is a legal minimum the organization's purge
/// waits for too.
pub fn entitlement_locks<'a>(
    entitlements: impl IntoIterator<Item = &'a Entitlement>,
    policies: &[&LifecyclePolicy],
) -> Vec<EntitlementLock> {
    entitlements
        .into_iter()
        .filter_map(|e| {
            let subject = Subject::of_entitlement(e);
            let retention = locked_floor(policies, &subject, keys::DATA_RETENTION_DAYS)
                .map(|(minimum, policy)| LockedRetention { minimum, policy });
            let final_grace =
                locked_floor(policies, &subject, keys::FINAL_GRACE_DAYS).map(|(days, _)| days);
            if retention.is_none() && final_grace.is_none() {
                return None;
            }
            let status = e.status.as_ref();
            let cancelled = status.is_some_and(|s| {
                matches!(
                    s.phase,
                    Some(EntitlementPhase::Cancelled | EntitlementPhase::Purged)
                )
            });
            Some(EntitlementLock {
                entitlement: format!(
                    "{}/{}",
                    e.metadata.namespace.as_deref().unwrap_or_default(),
                    e.metadata.name.as_deref().unwrap_or_default()
                ),
                cancelled_at: status
                    .and_then(|s| s.cancelled.as_ref())
                    .filter(|_| cancelled)
                    .map(|c| c.at),
                retention,
                final_grace,
            })
        })
        .collect()
}

#[cfg(test)]
#[path = "organization_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "organization_schedule_tests.rs"]
mod schedule_tests;
