//! A scheduled offboarding (`offboarding.effectiveAt` ahead) and what the
//! organization tells before and after it: reminders, the purge reminders
//! and the final confirmation.

use super::*;
use crate::lifecycle::scenario::day;

use proptest::prelude::*;
use serde_json::json;

use crate::api::organization::Offboarding;

const NAME: &str = "acme";
const NAMESPACE: &str = "org-acme";

fn policy() -> Effective {
    crate::lifecycle::policy::resolve(&[], &Subject::of_organization(NAME), None)
}

fn spec(lifecycle: OrganizationLifecycle, effective_at: Time) -> OrganizationSpec {
    serde_json::from_value(json!({
        "displayName": "Acme Corp", "taxId": "BR-1",
        "lifecycle": lifecycle,
        "offboarding": {"reason": "NonPayment", "ticket": "FIN-1", "effectiveAt": effective_at},
    }))
    .unwrap()
}

/// One organization decided again and again, its status kept, its
/// namespace gone once the purge deletes it.
struct Controller {
    spec: OrganizationSpec,
    policy: Effective,
    status: Option<OrganizationStatus>,
    namespace: Namespace,
}

impl Controller {
    fn new(spec: OrganizationSpec) -> Self {
        Self {
            spec,
            policy: policy(),
            status: None,
            namespace: Namespace::Owned,
        }
    }

    fn reconcile(&mut self, now: Time) -> Decision {
        let decision = decide(&Input {
            name: NAME,
            spec: &self.spec,
            created: day(-100),
            recorded: self.status.as_ref(),
            policy: &self.policy,
            locked_archived: None,
            locked_disabled: None,
            entitlement_locks: &[],
            holds: &[],
            namespace_name: NAMESPACE,
            namespace: &self.namespace,
            export_available: false,
            remnants: &BTreeMap::new(),
            deleting: false,
            now,
        });
        let mut status = self.status.take().unwrap_or_default();
        decision.write_to(&mut status);
        if matches!(decision.purge, PurgeStep::DeleteNamespace { .. }) {
            status.namespace_deleted_at.get_or_insert(now);
            self.namespace = Namespace::Missing;
        }
        self.status = Some(status);
        decision
    }

    /// Decides at `from`, then at every instant the decisions ask to be
    /// woken, until `until`: what a controller requeueing at deadlines does.
    fn run(&mut self, from: Time, until: Time) -> Vec<(Time, Decision)> {
        let mut now = from;
        let mut decisions = Vec::new();
        while now <= until {
            let decision = self.reconcile(now);
            // The namespace the purge deleted is gone: its watch wakes the
            // organization at once.
            let deleted = matches!(decision.purge, PurgeStep::DeleteNamespace { .. });
            let wake = decision.wake_at.filter(|at| *at > now);
            decisions.push((now, decision));
            if deleted {
                decisions.push((now, self.reconcile(now)));
            }
            match wake {
                Some(at) => now = at,
                None => break,
            }
        }
        decisions
    }
}

fn notices(decisions: &[(Time, Decision)]) -> Vec<(Time, &'static str)> {
    decisions
        .iter()
        .flat_map(|(now, d)| d.notices.iter().map(|n| (*now, n.kind.reason())))
        .collect()
}

#[test]
fn a_disabling_scheduled_12_days_ahead_leaves_the_organization_active_until_then() {
    let mut controller = Controller::new(spec(OrganizationLifecycle::Disabled, day(12)));
    let today = controller.reconcile(day(0));
    assert_eq!(today.phase, OrganizationPhase::Active);
    assert!(
        !today.access_revoked,
        "access is revoked only at effectiveAt"
    );
    assert_eq!(today.disabled_at, None);
    assert!(today.history.is_empty(), "{:?}", today.history);
    assert_eq!(
        today.next,
        Some(OrganizationNext {
            phase: OrganizationPhase::Disabled,
            at: day(12)
        })
    );
    let scheduled = today
        .extra
        .iter()
        .find(|e| e.type_ == OFFBOARDING_SCHEDULED)
        .expect("a condition announces it");
    assert_eq!(scheduled.reason, "DisabledAt");
    assert!(
        scheduled
            .message
            .contains("access is revoked (Disabled) at 2026-01-13")
    );
    assert!(scheduled.message.contains("FIN-1"));

    let just_before = controller.reconcile(day(12) - TimeDelta::seconds(1));
    assert_eq!(just_before.phase, OrganizationPhase::Active);
    let then = controller.reconcile(day(12));
    assert_eq!(then.phase, OrganizationPhase::Disabled);
    assert!(then.access_revoked);
    assert_eq!(then.disabled_at, Some(day(12)));
    assert_eq!(
        then.history
            .iter()
            .map(|h| (h.at, h.event.as_str()))
            .collect::<Vec<_>>(),
        vec![(day(12), "Disabled")]
    );
    assert!(then.extra.iter().all(|e| e.type_ != OFFBOARDING_SCHEDULED));
    assert_eq!(then.purge_after, Some(day(12 + 90)));
}

#[test]
fn an_archival_scheduled_while_disabled_keeps_it_disabled_until_then() {
    let mut controller = Controller::new(spec(OrganizationLifecycle::Disabled, day(0)));
    assert_eq!(
        controller.reconcile(day(0)).phase,
        OrganizationPhase::Disabled
    );
    controller.spec = spec(OrganizationLifecycle::Archived, day(20));
    let before = controller.reconcile(day(5));
    assert_eq!(before.phase, OrganizationPhase::Disabled);
    assert!(before.access_revoked);
    assert_eq!(before.disabled_at, Some(day(0)));
    assert_eq!(before.archived_at, None);
    assert!(before.history.is_empty(), "{:?}", before.history);
    assert_eq!(
        before.next.map(|n| (n.phase, n.at)),
        Some((OrganizationPhase::Archived, day(20)))
    );
    let then = controller.reconcile(day(20));
    assert_eq!(then.phase, OrganizationPhase::Archived);
    assert_eq!(then.archived_at, Some(day(20)));
}

#[test]
fn reminders_come_30_7_and_3_days_ahead_then_7_and_1_day_before_the_purge_then_the_confirmation() {
    let mut controller = Controller::new(spec(OrganizationLifecycle::Archived, day(40)));
    let decisions = controller.run(day(0), day(40 + 365 + 7 + 1));
    assert_eq!(
        notices(&decisions),
        vec![
            (day(10), "OffboardingReminder"),
            (day(33), "OffboardingReminder"),
            (day(37), "OffboardingReminder"),
            (day(405), "PurgeReminder"),
            (day(411), "PurgeReminder"),
            (day(412), "FinalConfirmation"),
        ]
    );
    let confirmation = decisions
        .iter()
        .flat_map(|(_, d)| d.notices.clone())
        .find(|n| n.kind == NoticeKind::FinalConfirmation)
        .unwrap();
    assert!(
        confirmation.message.contains("purged acme at"),
        "{}",
        confirmation.message
    );
    assert!(
        confirmation.message.contains("tax ID BR-1"),
        "{}",
        confirmation.message
    );
    let reminder = decisions
        .iter()
        .find_map(|(_, d)| d.notices.first().cloned())
        .unwrap();
    assert!(
        reminder.message.contains("in 30 days"),
        "{}",
        reminder.message
    );
}

#[test]
fn a_controller_that_comes_late_sends_only_the_latest_reminder() {
    let mut controller = Controller::new(spec(OrganizationLifecycle::Disabled, day(40)));
    let late = controller.reconcile(day(35));
    let [notice] = late.notices.as_slice() else {
        panic!("one reminder: {:?}", late.notices)
    };
    assert_eq!(notice.due_at, day(33));
    assert!(notice.message.contains("in 5 days"), "{}", notice.message);
    assert!(controller.reconcile(day(36)).notices.is_empty());
}

proptest! {
    /// Nothing is revoked before `effectiveAt`, and at it exactly, whenever
    /// the controller looks.
    #[test]
    fn access_is_revoked_exactly_at_effective_at(
        ahead in 1i64..400,
        looks in prop::collection::vec(0i64..800, 1..12),
        archive in any::<bool>(),
    ) {
        let lifecycle = match archive {
            true => OrganizationLifecycle::Archived,
            false => OrganizationLifecycle::Disabled,
        };
        let effective_at = day(ahead);
        let mut controller = Controller::new(spec(lifecycle, effective_at));
        let mut looks = looks;
        looks.sort();
        for look in looks {
            let now = day(0) + TimeDelta::hours(look * 12);
            let decision = controller.reconcile(now);
            if now < effective_at {
                prop_assert_eq!(decision.phase, OrganizationPhase::Active);
                prop_assert!(!decision.access_revoked);
                prop_assert_eq!(decision.next.map(|n| n.at), Some(effective_at));
                prop_assert!(decision.wake_at.is_some_and(|at| at <= effective_at));
            } else {
                prop_assert!(decision.access_revoked || decision.phase == OrganizationPhase::Purged);
                let status = controller.status.as_ref().unwrap();
                let offboarded_at = status.archived_at.or(status.disabled_at);
                prop_assert_eq!(offboarded_at, Some(effective_at));
            }
        }
    }
}

#[test]
fn the_offboarding_itself_is_not_touched_by_a_past_effective_at() {
    let offboarding = Offboarding {
        reason: crate::api::common::OffboardingReason::Other,
        ticket: None,
        notes: None,
        effective_at: Some(day(-3)),
    };
    let mut controller = Controller::new(OrganizationSpec {
        lifecycle: OrganizationLifecycle::Disabled,
        offboarding: Some(offboarding),
        ..OrganizationSpec::default()
    });
    let decision = controller.reconcile(day(0));
    assert_eq!(decision.phase, OrganizationPhase::Disabled);
    assert_eq!(decision.disabled_at, Some(day(-3)));
    assert!(
        decision
            .extra
            .iter()
            .all(|e| e.type_ != OFFBOARDING_SCHEDULED)
    );
}

#[test]
fn an_archive_scheduled_while_disabled_keeps_the_data_at_least_until_the_archive_and_reminds_of_the_purge()
 {
    // Disabled on day 0 (90 days of disabled retention); on day 89 the
    // archive is scheduled for day 120: the disabled retention must not
    // purge the data first, and what comes next is the archive.
    let mut controller = Controller::new(spec(OrganizationLifecycle::Disabled, day(0)));
    controller.reconcile(day(0));
    controller.spec = spec(OrganizationLifecycle::Archived, day(120));
    let decisions = controller.run(day(89), day(120 + 365 + 7 + 1));
    let purged_at = decisions
        .iter()
        .find(|(_, d)| d.phase == OrganizationPhase::Purging)
        .map(|(now, _)| *now)
        .expect("purged in the end");
    assert_eq!(
        purged_at,
        day(120 + 365 + 7),
        "purged a full retention after the archive"
    );
    let (_, day89) = &decisions[0];
    assert_eq!(day89.phase, OrganizationPhase::Disabled);
    assert_eq!(
        day89.next.as_ref().map(|n| (n.phase, n.at)),
        Some((OrganizationPhase::Archived, day(120)))
    );
    let kinds: Vec<(Time, &str)> = notices(&decisions);
    assert!(
        kinds.contains(&(day(120 + 365), "PurgeReminder")),
        "{kinds:?}"
    );
    assert!(
        kinds.contains(&(day(120 + 365 + 6), "PurgeReminder")),
        "{kinds:?}"
    );
}

#[test]
fn a_later_effective_at_after_the_offboarding_took_effect_moves_its_dates_and_keeps_access_revoked()
{
    let mut controller = Controller::new(spec(OrganizationLifecycle::Archived, day(0)));
    assert_eq!(
        controller.reconcile(day(0)).phase,
        OrganizationPhase::Archived
    );
    controller.spec = spec(OrganizationLifecycle::Archived, day(40));
    let corrected = controller.reconcile(day(10));
    assert_ne!(
        corrected.phase,
        OrganizationPhase::Active,
        "never back to Active"
    );
    assert!(corrected.access_revoked);
    assert!(
        corrected.history.iter().all(|h| h.event != "Unarchived"),
        "{:?}",
        corrected.history
    );
    assert!(
        corrected
            .extra
            .iter()
            .all(|e| e.type_ != OFFBOARDING_SCHEDULED)
    );
    assert_eq!(corrected.archived_at, Some(day(40)), "the corrected date");
}
