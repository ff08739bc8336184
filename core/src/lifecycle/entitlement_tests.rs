//! Unit and property tests of the entitlement lifecycle core.
//!
//! The tests play the controller: they call `decide` at increasing instants and
//! write each decision back into the status the next call reads, as the
//! reconciler does with server-side apply.

use super::*;
use crate::lifecycle::scenario::{day, events, hours, reason};

use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

use crate::api::entitlement::{Cancellation, EntitlementFacts, Payment, Reactivation, Trial};
use crate::api::organization::OrganizationPhase;
use crate::api::policy::PolicyRules;
use crate::lifecycle::hold::HoldTarget;
use crate::lifecycle::policy::{self, Subject};
use EntitlementPhase::{Active, Cancelled, Expired, Pending, Purged, Suspended, Trialing};

// ---------------------------------------------------------------------------
// The world the controller sees, and the controller's loop
// ---------------------------------------------------------------------------

/// The effective policy for entitlement-level overrides `rules` over the built-in
/// defaults, with no LifecyclePolicy objects around.
fn effective(rules: Value) -> Effective {
    let rules: PolicyRules = serde_json::from_value(rules).expect("valid policy rules");
    policy::resolve(&[], &Subject::default(), Some(&rules))
}

fn entitlement() -> EntitlementSpec {
    EntitlementSpec {
        class: "plugin".into(),
        product: "grafana-enterprise".into(),
        ..Default::default()
    }
}

fn payment_failed(at: Time) -> Option<Payment> {
    Some(Payment { failed_at: at })
}

fn cancellation(reason: OffboardingReason, effective_at: Option<Time>) -> Option<Cancellation> {
    Some(Cancellation {
        reason,
        notes: None,
        effective_at,
    })
}

fn trial(started_at: Option<Time>, converted_at: Option<Time>) -> Option<Trial> {
    Some(Trial {
        started_at,
        converted_at,
    })
}

fn reactivation(requested_at: Time) -> Option<Reactivation> {
    Some(Reactivation {
        requested_at,
        reference: Some("order-4711".into()),
    })
}

/// Folds a decision into the status, as the controller writes it back.
fn fold(recorded: Option<EntitlementStatus>, decision: &Decision) -> EntitlementStatus {
    let mut status = recorded.unwrap_or_default();
    decision.write_to(&mut status);
    status
}

/// One entitlement, its organization's standing, its policy and its status,
/// decided over and over like the reconciler does.
struct World {
    spec: EntitlementSpec,
    created: Time,
    organization: Standing,
    organization_purge: Option<OrganizationPurge>,
    holds: Vec<Hold>,
    policy: Effective,
    status: Option<EntitlementStatus>,
}

impl World {
    /// An entitlement created on day 0 under `rules`, in an Active organization.
    fn new(spec: EntitlementSpec, rules: Value) -> Self {
        Self {
            spec,
            created: day(0),
            organization: Standing::Active,
            organization_purge: None,
            holds: Vec::new(),
            policy: effective(rules),
            status: None,
        }
    }

    fn input(&self, now: Time) -> Input<'_> {
        Input {
            spec: &self.spec,
            created: self.created,
            organization: &self.organization,
            organization_purge: self.organization_purge.as_ref(),
            retention_locked: false,
            holds: &self.holds,
            recorded: self.status.as_ref(),
            policy: &self.policy,
            now,
        }
    }

    /// The reconciler runs at `now`: decide, and write the decision to status.
    fn reconcile(&mut self, now: Time) -> Decision {
        let decision = decide(&self.input(now));
        self.status = Some(fold(self.status.take(), &decision));
        decision
    }

    fn status(&self) -> &EntitlementStatus {
        self.status.as_ref().expect("decided at least once")
    }

    fn deadlines(&self) -> Deadlines {
        self.status().deadlines.clone().unwrap_or_default()
    }
}

/// The ReactivationRefused condition of a decision, if any.
fn refusal_of(decision: &Decision) -> Option<Extra> {
    decision
        .extra
        .iter()
        .find(|extra| extra.type_ == REACTIVATION_REFUSED)
        .cloned()
}

// ---------------------------------------------------------------------------
// Start
// ---------------------------------------------------------------------------

#[test]
fn a_future_start_is_pending_until_it_comes_then_active() {
    let mut world = World::new(
        EntitlementSpec {
            starts_at: Some(day(10)),
            ..entitlement()
        },
        json!({}),
    );

    let created = world.reconcile(day(0));
    assert_eq!(created.phase, Pending);
    assert_eq!(created.verdict.reason, "NotStarted");
    assert_eq!(
        created.next,
        Some(NextTransition {
            phase: Active,
            at: day(10)
        })
    );
    assert_eq!(created.wake_at, Some(day(10)));
    assert_eq!(events(&created.history), vec![(day(0), "Created")]);

    let still = world.reconcile(day(10) - hours(1));
    assert_eq!(still.phase, Pending);
    assert!(still.history.is_empty());

    let started = world.reconcile(day(10));
    assert_eq!(started.phase, Active);
    assert_eq!(started.phase_since, day(10));
    assert_eq!(events(&started.history), vec![(day(10), "Activated")]);
    assert_eq!(started.deadlines, None);
    assert_eq!(started.next, None, "perpetual: nothing is scheduled");
    assert_eq!(started.wake_at, None);
}

#[test]
fn without_a_start_date_access_begins_at_creation() {
    let mut world = World::new(entitlement(), json!({}));
    let decision = world.reconcile(day(0) + hours(1));
    assert_eq!(decision.phase, Active);
    assert_eq!(decision.phase_since, day(0));
    assert_eq!(events(&decision.history), vec![(day(0), "Activated")]);
}

// ---------------------------------------------------------------------------
// Payment
// ---------------------------------------------------------------------------

#[test]
fn a_payment_failure_suspends_then_cancels_when_the_grace_runs_out() {
    let mut world = World::new(entitlement(), json!({"payment": {"graceDays": 14}}));
    world.reconcile(day(1));
    world.spec.payment = payment_failed(day(5));

    let suspended = world.reconcile(day(5) + hours(2));
    assert_eq!(suspended.phase, Suspended);
    assert_eq!(suspended.verdict.reason, "PaymentFailed");
    assert_eq!(suspended.phase_since, day(5), "dated to the failed charge");
    assert_eq!(events(&suspended.history), vec![(day(5), "Suspended")]);
    assert_eq!(world.deadlines().auto_cancel_at, Some(day(19)));
    assert_eq!(
        suspended.next,
        Some(NextTransition {
            phase: Cancelled,
            at: day(19)
        })
    );
    assert_eq!(suspended.wake_at, Some(day(19)));

    let cancelled = world.reconcile(day(19));
    assert_eq!(cancelled.phase, Cancelled);
    assert_eq!(cancelled.verdict.reason, "NonPayment");
    assert_eq!(
        cancelled.cancelled,
        Some(CancellationRecord {
            at: day(19),
            reason: "NonPayment".into(),
            by: CancelledBy::PaymentGrace,
        })
    );
    assert_eq!(events(&cancelled.history), vec![(day(19), "Cancelled")]);
    assert_eq!(cancelled.history[0].reason, "NonPayment");
    assert_eq!(world.deadlines().auto_cancel_at, None);
    assert_eq!(world.deadlines().purge_after, Some(day(19 + 365)));
}

#[test]
fn a_recovered_payment_resumes_access_when_the_recovery_is_observed() {
    let mut world = World::new(entitlement(), json!({}));
    world.spec.payment = payment_failed(day(5));
    assert_eq!(world.reconcile(day(6)).phase, Suspended);

    world.spec.payment = None;
    let resumed = world.reconcile(day(8));
    assert_eq!(resumed.phase, Active);
    assert_eq!(resumed.phase_since, day(8));
    assert_eq!(events(&resumed.history), vec![(day(8), "Resumed")]);
    assert_eq!(resumed.deadlines, None);
    assert_eq!(resumed.cancelled, None);
}

#[test]
fn a_payment_recovered_after_the_auto_cancel_does_not_revive_it() {
    let mut world = World::new(entitlement(), json!({}));
    world.spec.payment = payment_failed(day(5));
    world.reconcile(day(6));
    assert_eq!(world.reconcile(day(36)).phase, Cancelled);

    world.spec.payment = None;
    let later = world.reconcile(day(40));
    assert_eq!(
        later.phase, Cancelled,
        "only a reactivation lifts a cancellation"
    );
    assert_eq!(later.phase_since, day(35));
    assert_eq!(later.verdict.reason, "NonPayment");
    assert_eq!(later.cancelled.as_ref().map(|c| c.at), Some(day(35)));
    assert!(later.history.is_empty());
    assert_eq!(world.deadlines().purge_after, Some(day(35 + 365)));
}

// ---------------------------------------------------------------------------
// Expiry and renewal
// ---------------------------------------------------------------------------

#[test]
fn past_its_end_it_is_expired_for_the_expiry_grace() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(30)),
            ..entitlement()
        },
        json!({"expiry": {"graceDays": 10}}),
    );
    world.reconcile(day(1));
    let expired = world.reconcile(day(31));
    assert_eq!(expired.phase, Expired);
    assert_eq!(expired.phase_since, day(30));
    assert_eq!(events(&expired.history), vec![(day(30), "Expired")]);
    assert_eq!(world.deadlines().expiry_grace_ends_at, Some(day(40)));
    assert_eq!(
        expired.next,
        Some(NextTransition {
            phase: Cancelled,
            at: day(40)
        })
    );
}

#[test]
fn moving_ends_at_forward_inside_the_expiry_grace_renews_it() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(30)),
            ..entitlement()
        },
        json!({"expiry": {"graceDays": 10}}),
    );
    world.reconcile(day(31));
    world.spec.ends_at = Some(day(400));
    let renewed = world.reconcile(day(35));
    assert_eq!(renewed.phase, Active);
    assert_eq!(renewed.phase_since, day(35));
    assert_eq!(events(&renewed.history), vec![(day(35), "Renewed")]);
    assert_eq!(renewed.deadlines, None);
    assert_eq!(
        renewed.next.map(|n| (n.phase, n.at)),
        Some((Expired, day(400)))
    );
}

#[test]
fn after_the_expiry_grace_it_is_cancelled_not_renewed_and_a_late_renewal_does_not_revive_it() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(30)),
            ..entitlement()
        },
        json!({"expiry": {"graceDays": 10}}),
    );
    world.reconcile(day(31));
    let cancelled = world.reconcile(day(40));
    assert_eq!(cancelled.phase, Cancelled);
    assert_eq!(cancelled.verdict.reason, "NotRenewed");
    assert_eq!(
        cancelled.cancelled,
        Some(CancellationRecord {
            at: day(40),
            reason: "NotRenewed".into(),
            by: CancelledBy::ExpiryGrace,
        })
    );

    world.spec.ends_at = Some(day(400));
    let sticky = world.reconcile(day(45));
    assert_eq!(sticky.phase, Cancelled, "a cancellation stays cancelled");
    assert_eq!(sticky.verdict.reason, "NotRenewed");
    assert_eq!(sticky.phase_since, day(40));
    assert_eq!(world.deadlines().purge_after, Some(day(40 + 365)));
}

// ---------------------------------------------------------------------------
// Cancellation, retention and purge
// ---------------------------------------------------------------------------

#[test]
fn a_cancellation_sets_portal_reactivation_and_purge_deadlines_from_the_defaults() {
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::CustomerRequest, Some(day(10))),
            ..entitlement()
        },
        json!({}),
    );
    assert_eq!(world.reconcile(day(9)).next.map(|n| n.at), Some(day(10)));
    let cancelled = world.reconcile(day(10));
    assert_eq!(cancelled.phase, Cancelled);
    assert_eq!(cancelled.verdict.reason, "CustomerRequest");
    assert_eq!(
        cancelled.cancelled,
        Some(CancellationRecord {
            at: day(10),
            reason: "CustomerRequest".into(),
            by: CancelledBy::Request,
        })
    );
    assert_eq!(
        world.deadlines(),
        Deadlines {
            portal_visible_until: Some(day(100)),
            reactivation_deadline: Some(day(100)),
            purge_after: Some(day(375)),
            // Retention, then the final grace of 7 days for review.
            final_purge_at: Some(day(382)),
            ..Default::default()
        }
    );
    assert_eq!(
        cancelled.next,
        Some(NextTransition {
            phase: Purged,
            at: day(382)
        })
    );
    // The first purge reminder, 7 days before the purge.
    assert_eq!(cancelled.wake_at, Some(day(375)));
}

#[test]
fn a_cancellation_without_effective_at_is_dated_when_first_observed_and_keeps_that_date() {
    let mut world = World::new(entitlement(), json!({}));
    world.reconcile(day(3));
    world.spec.cancellation = cancellation(OffboardingReason::SwitchingProvider, None);

    let first = world.reconcile(day(7) + hours(5));
    assert_eq!(first.phase, Cancelled);
    assert_eq!(first.phase_since, day(7) + hours(5));
    assert_eq!(
        first.cancelled.as_ref().map(|c| c.at),
        Some(day(7) + hours(5))
    );
    let deadlines = world.deadlines();
    assert_eq!(deadlines.purge_after, Some(day(7 + 365) + hours(5)));

    for later in [day(8), day(50), day(200)] {
        let again = world.reconcile(later);
        assert_eq!(again.phase, Cancelled);
        assert_eq!(again.phase_since, day(7) + hours(5));
        assert_eq!(
            again.cancelled.as_ref().map(|c| c.at),
            Some(day(7) + hours(5))
        );
        assert_eq!(world.deadlines(), deadlines, "the deadlines do not move");
        assert!(again.history.is_empty());
    }
}

#[test]
fn past_purge_after_it_is_purged_and_stays_purged_whatever_the_spec_says() {
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::CustomerRequest, Some(day(10))),
            ..entitlement()
        },
        json!({}),
    );
    world.reconcile(day(11));
    assert_eq!(
        world.reconcile(day(375)).phase,
        Cancelled,
        "the final grace runs"
    );
    let purged = world.reconcile(day(382));
    assert_eq!(purged.phase, Purged);
    assert_eq!(purged.verdict.reason, "RetentionEnded");
    assert_eq!(events(&purged.history), vec![(day(382), "Purged")]);
    assert_eq!(purged.next, None);
    assert_eq!(purged.wake_at, None);
    let deadlines = world.deadlines();

    // Someone re-applies an old manifest, then tries to win the customer back.
    world.spec.cancellation = None;
    world.spec.ends_at = Some(day(2000));
    world.spec.reactivation = reactivation(day(380));
    world.organization = Standing::Active;
    assert_eq!(
        deadlines.reactivation_deadline, None,
        "it cannot be honoured"
    );
    for now in [day(381), day(1000), day(5000)] {
        let again = world.reconcile(now);
        assert_eq!(again.phase, Purged);
        assert_eq!(again.phase_since, day(382));
        assert!(again.history.is_empty());
        assert_eq!(
            refusal_of(&again).map(|r| r.reason),
            Some("AlreadyPurged".into())
        );
        assert_eq!(again.wake_at, None);
        assert_eq!(world.deadlines(), deadlines);
    }
}

#[test]
fn a_cancellation_backdated_beyond_retention_is_announced_on_first_sight_and_purged_a_full_final_grace_later()
 {
    // The controller sees this entitlement for the first time today (day 0); it
    // exists since day -500 and was cancelled 400 days ago.
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::BusinessClosure, Some(day(-400))),
            ..entitlement()
        },
        json!({}),
    );
    world.created = day(-500);
    let announced = world.reconcile(day(0));
    assert_eq!(announced.phase, Cancelled);
    assert_eq!(
        events(&announced.history),
        vec![(day(-500), "Activated"), (day(-400), "Cancelled")]
    );
    assert_eq!(announced.history[1].reason, "BusinessClosure");
    assert_eq!(world.deadlines().purge_after, Some(day(-35)));
    assert_eq!(world.deadlines().final_purge_at, Some(day(7)));
    assert_eq!(
        announced.next,
        Some(NextTransition {
            phase: Purged,
            at: day(7)
        })
    );
    assert_eq!(world.reconcile(day(7) - hours(1)).phase, Cancelled);
    let purged = world.reconcile(day(7));
    assert_eq!(purged.phase, Purged);
    assert_eq!(events(&purged.history), vec![(day(7), "Purged")]);
    assert_eq!(purged.next, None);
}

#[test]
fn without_a_final_grace_a_cancellation_backdated_beyond_retention_is_purged_on_first_sight() {
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::BusinessClosure, Some(day(-400))),
            ..entitlement()
        },
        json!({"purge": {"finalGraceDays": 0}}),
    );
    world.created = day(-500);
    let decision = world.reconcile(day(0));
    assert_eq!(decision.phase, Purged);
    assert_eq!(
        events(&decision.history),
        vec![
            (day(-500), "Activated"),
            (day(-400), "Cancelled"),
            (day(0), "Purged"),
        ]
    );
}

#[test]
fn a_retention_cut_never_purges_sooner_than_the_change_plus_the_longer_final_grace() {
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::CustomerRequest, Some(day(0))),
            ..entitlement()
        },
        json!({"purge": {"finalGraceDays": 30}}),
    );
    world.reconcile(day(1));
    assert_eq!(world.deadlines().final_purge_at, Some(day(395)));
    // On day 100 one edit cuts the retention to 10 days and the grace to 0.
    world.policy = effective(
        json!({"cancellation": {"dataRetentionDays": 10}, "purge": {"finalGraceDays": 0}}),
    );
    let cut = world.reconcile(day(100));
    assert_eq!(cut.phase, Cancelled, "not purged at once");
    assert_eq!(world.deadlines().final_purge_at, Some(day(130)));
    assert_eq!(world.reconcile(day(129)).phase, Cancelled);
    assert_eq!(
        world.deadlines().final_purge_at,
        Some(day(130)),
        "it stands"
    );
    assert_eq!(world.reconcile(day(130)).phase, Purged);
}

#[test]
fn an_entitlement_of_an_offboarded_organization_waits_for_the_organizations_purge() {
    let mut world = World::new(
        EntitlementSpec {
            organization: Some("acme".into()),
            cancellation: cancellation(OffboardingReason::CustomerRequest, Some(day(0))),
            ..entitlement()
        },
        json!({"cancellation": {"dataRetentionDays": 10}}),
    );
    world.organization_purge = Some(OrganizationPurge {
        name: "acme".into(),
        phase: OrganizationPhase::Archived,
        extend_until: None,
        final_purge_at: None,
    });
    let waiting = world.reconcile(day(100));
    assert_eq!(waiting.phase, Cancelled);
    assert_eq!(waiting.next, None);
    assert_eq!(world.deadlines().final_purge_at, None);
    let blocked = waiting
        .extra
        .iter()
        .find(|e| e.type_ == "PurgeBlocked")
        .unwrap();
    assert_eq!(blocked.reason, "OrganizationOffboarded");
    assert!(blocked.message.contains("acme"), "{}", blocked.message);

    // Back to Active, but with retention extended: never before extendUntil.
    world.organization_purge = Some(OrganizationPurge {
        phase: OrganizationPhase::Active,
        extend_until: Some(day(200)),
        ..world.organization_purge.clone().unwrap()
    });
    world.reconcile(day(101));
    assert_eq!(world.deadlines().purge_after, Some(day(200)));
    assert_eq!(world.deadlines().final_purge_at, Some(day(207)));
}

#[test]
fn an_import_created_today_with_a_cancellation_in_the_past_starts_its_story_cancelled() {
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::Other, Some(day(-10))),
            ..entitlement()
        },
        json!({}),
    );
    let decision = world.reconcile(day(0));
    assert_eq!(decision.phase, Cancelled);
    assert_eq!(decision.phase_since, day(-10));
    assert_eq!(events(&decision.history), vec![(day(-10), "Cancelled")]);
}

// ---------------------------------------------------------------------------
// Reactivation
// ---------------------------------------------------------------------------

fn cancelled_on_day_10(rules: Value) -> World {
    let mut world = World::new(
        EntitlementSpec {
            cancellation: cancellation(OffboardingReason::CustomerRequest, Some(day(10))),
            ..entitlement()
        },
        rules,
    );
    assert_eq!(world.reconcile(day(11)).phase, Cancelled);
    world
}

#[test]
fn a_reactivation_inside_the_window_reactivates_it() {
    let mut world = cancelled_on_day_10(json!({}));
    world.spec.reactivation = reactivation(day(50));
    let back = world.reconcile(day(50) + hours(1));
    assert_eq!(back.phase, Active);
    assert_eq!(back.phase_since, day(50));
    assert_eq!(events(&back.history), vec![(day(50), "Reactivated")]);
    assert_eq!(refusal_of(&back), None);
    assert_eq!(back.deadlines, None);
    assert_eq!(
        back.cancelled.map(|c| c.at),
        Some(day(10)),
        "the lifted cancellation stays on record"
    );
    // And it stays Active on later reconciles.
    assert_eq!(world.reconcile(day(300)).phase, Active);
    assert_eq!(world.reconcile(day(1000)).phase, Active);
}

#[test]
fn a_hold_keeps_a_cancelled_entitlement_from_its_purge_and_its_lifting_restarts_the_final_grace() {
    let mut world = cancelled_on_day_10(json!({"cancellation": {"dataRetentionDays": 30}}));
    world.holds = vec![Hold {
        name: "litigation".into(),
        reason: "court order".into(),
        ticket: Some("LEGAL-2".into()),
        until: None,
        target: HoldTarget::Entitlement {
            namespace: "org-acme".into(),
            name: "seat".into(),
        },
    }];
    let held = world.reconcile(day(11));
    assert_eq!(events(&held.history), vec![(day(11), "HoldPlaced")]);
    assert_eq!(held.holds, vec!["litigation".to_string()]);
    // Retention ends on day 40; the hold keeps the data.
    let overdue = world.reconcile(day(60));
    assert_eq!(overdue.phase, Cancelled);
    assert_eq!(overdue.next, None);
    assert!(
        overdue
            .extra
            .iter()
            .any(|e| e.type_ == "PurgeBlocked" && e.reason == "Held")
    );

    world.holds.clear();
    let lifted = world.reconcile(day(61));
    assert_eq!(events(&lifted.history), vec![(day(61), "HoldLifted")]);
    assert_eq!(lifted.phase, Cancelled, "never straight to deletion");
    assert_eq!(
        lifted.next,
        Some(NextTransition {
            phase: Purged,
            at: day(68)
        }),
        "a full final grace of 7 days from the lifting"
    );
    assert_eq!(world.reconcile(day(68)).phase, Purged);
}

#[test]
fn a_reactivation_removed_from_spec_once_honoured_does_not_cancel_again() {
    let mut world = cancelled_on_day_10(json!({}));
    world.spec.reactivation = reactivation(day(50));
    assert_eq!(world.reconcile(day(51)).phase, Active);
    // A GitOps manifest that never had the reactivation is synced again.
    world.spec.reactivation = None;
    let later = world.reconcile(day(60));
    assert_eq!(later.phase, Active);
    assert_eq!(later.history, vec![]);
    assert_eq!(world.status().reactivated_at, Some(day(50)));
}

#[test]
fn a_reactivation_on_the_last_day_of_the_window_is_still_honoured() {
    let mut world = cancelled_on_day_10(json!({"cancellation": {"reactivationWindowDays": 30}}));
    world.spec.reactivation = reactivation(day(40));
    let back = world.reconcile(day(41));
    assert_eq!(back.phase, Active);
    assert_eq!(refusal_of(&back), None);
}

#[test]
fn a_reactivation_after_the_window_is_refused_naming_the_deadline() {
    let mut world = cancelled_on_day_10(json!({}));
    world.spec.reactivation = reactivation(day(100) + hours(1));
    let refused = world.reconcile(day(101));
    assert_eq!(refused.phase, Cancelled);
    assert_eq!(refused.phase_since, day(10));
    assert!(refused.history.is_empty());
    let refusal = refusal_of(&refused).expect("a refusal condition");
    assert_eq!(refusal.type_, REACTIVATION_REFUSED);
    assert!(refusal.status);
    assert_eq!(refusal.reason, "WindowClosed");
    assert!(
        refusal
            .message
            .contains(&format!("the reactivation deadline was {}", day(100))),
        "{}",
        refusal.message
    );
    assert_eq!(world.deadlines().reactivation_deadline, Some(day(100)));
}

#[test]
fn a_reactivation_is_refused_when_the_policy_does_not_allow_it() {
    let mut world = cancelled_on_day_10(json!({"cancellation": {"allowReactivation": false}}));
    assert_eq!(world.deadlines().reactivation_deadline, None);
    world.spec.reactivation = reactivation(day(12));
    let refused = world.reconcile(day(13));
    assert_eq!(refused.phase, Cancelled);
    let refusal = refusal_of(&refused).expect("a refusal condition");
    assert_eq!(refusal.type_, REACTIVATION_REFUSED);
    assert_eq!(refusal.reason, "NotAllowed");
    assert!(
        refusal
            .message
            .contains("cancellation.allowReactivation is false (from Entitlement)"),
        "{}",
        refusal.message
    );
}

#[test]
fn moving_a_cancellation_that_took_effect_into_the_future_does_not_revive_it() {
    let mut world = cancelled_on_day_10(json!({"cancellation": {"allowReactivation": false}}));
    world.spec.cancellation = cancellation(OffboardingReason::CustomerRequest, Some(day(50)));
    let moved = world.reconcile(day(20));
    assert_eq!(moved.phase, Cancelled, "not revived");
    assert!(moved.history.is_empty(), "no Reactivated in the history");
    assert_eq!(moved.cancelled.as_ref().map(|c| c.at), Some(day(10)));
    let refused = moved
        .extra
        .iter()
        .find(|e| e.type_ == "CorrectionRefused")
        .expect("said");
    assert_eq!(refused.reason, "CancellationTookEffect");
    // An earlier date is a correction that applies.
    world.spec.cancellation = cancellation(OffboardingReason::CustomerRequest, Some(day(5)));
    let earlier = world.reconcile(day(21));
    assert_eq!(earlier.cancelled.map(|c| c.at), Some(day(5)));
    assert!(earlier.extra.iter().all(|e| e.type_ != "CorrectionRefused"));
}

#[test]
fn a_reactivation_requested_before_the_cancellation_is_refused_saying_why() {
    let mut world = cancelled_on_day_10(json!({}));
    world.spec.reactivation = reactivation(day(5));
    let decision = world.reconcile(day(12));
    assert_eq!(decision.phase, Cancelled);
    let refusal = refusal_of(&decision).expect("never silent");
    assert_eq!(refusal.reason, "RequestedBeforeCancellation");
    assert!(
        refusal.message.contains("requestedAt"),
        "{}",
        refusal.message
    );
}

#[test]
fn a_reactivated_entitlement_past_its_end_date_expires_anew_from_the_reactivation() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(30)),
            ..entitlement()
        },
        json!({"expiry": {"graceDays": 10}}),
    );
    assert_eq!(world.reconcile(day(41)).phase, Cancelled);
    world.spec.reactivation = reactivation(day(50));
    let decision = world.reconcile(day(51));
    assert_eq!(decision.phase, Expired);
    assert_eq!(decision.phase_since, day(50));
    assert_eq!(world.deadlines().expiry_grace_ends_at, Some(day(60)));
}

#[test]
fn a_second_cancellation_after_a_reactivation_keeps_its_own_date() {
    // A cancellation without effectiveAt is dated by status. After it was lifted
    // and a later grace ran out, that date is no longer in status; the old,
    // voided payment failure must not come back and backdate the cancellation.
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(100)),
            payment: payment_failed(day(10)),
            cancellation: cancellation(OffboardingReason::CustomerRequest, None),
            reactivation: reactivation(day(20)),
            ..entitlement()
        },
        json!({}),
    );
    assert_eq!(world.reconcile(day(0)).phase, Cancelled);
    assert_eq!(world.reconcile(day(21)).phase, Active);
    assert_eq!(world.reconcile(day(101)).phase, Expired);
    let second = world.reconcile(day(131));
    assert_eq!(second.phase, Cancelled);
    assert_eq!(second.verdict.reason, "NotRenewed");
    assert_eq!(refusal_of(&second), None, "the reactivation was used up");
    let deadlines = world.deadlines();
    assert_eq!(deadlines.purge_after, Some(day(130 + 365)));

    let again = world.reconcile(day(140));
    assert_eq!(again.phase, Cancelled);
    assert_eq!(again.verdict.reason, "NotRenewed");
    assert_eq!(again.phase_since, day(130));
    assert_eq!(
        world.deadlines(),
        deadlines,
        "the deadlines do not move back"
    );
}

#[test]
fn an_archival_after_a_reactivation_is_not_backdated_by_what_the_reactivation_voided() {
    let mut world = World::new(
        EntitlementSpec {
            payment: payment_failed(day(10)),
            cancellation: cancellation(OffboardingReason::CustomerRequest, None),
            reactivation: reactivation(day(20)),
            ..entitlement()
        },
        json!({}),
    );
    assert_eq!(world.reconcile(day(0)).phase, Cancelled);
    assert_eq!(world.reconcile(day(21)).phase, Active);
    world.organization = Standing::Archived {
        since: day(50),
        reason: OffboardingReason::BusinessClosure,
        ticket: None,
    };
    for now in [day(51), day(60)] {
        let decision = world.reconcile(now);
        assert_eq!(decision.phase, Cancelled);
        assert_eq!(decision.verdict.reason, "BusinessClosure");
        assert_eq!(decision.phase_since, day(50));
        assert_eq!(world.deadlines().purge_after, Some(day(50 + 365)));
    }
}

// ---------------------------------------------------------------------------
// The organization's standing
// ---------------------------------------------------------------------------

#[test]
fn a_disabled_organization_suspends_it_and_enabling_it_again_gives_access_back() {
    let mut world = World::new(entitlement(), json!({}));
    world.reconcile(day(1));
    world.organization = Standing::Disabled { since: day(5) };
    let suspended = world.reconcile(day(6));
    assert_eq!(suspended.phase, Suspended);
    assert_eq!(suspended.verdict.reason, "OrganizationDisabled");
    assert_eq!(suspended.phase_since, day(5));
    assert_eq!(suspended.deadlines, None, "no payment grace runs");
    assert_eq!(suspended.next, None);

    world.organization = Standing::Active;
    let resumed = world.reconcile(day(9));
    assert_eq!(resumed.phase, Active);
    assert_eq!(events(&resumed.history), vec![(day(9), "Resumed")]);
}

#[test]
fn enabling_the_organization_again_lands_on_what_the_entitlements_own_facts_say() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(15)),
            ..entitlement()
        },
        json!({}),
    );
    world.organization = Standing::Disabled { since: day(5) };
    assert_eq!(world.reconcile(day(6)).phase, Suspended);
    assert_eq!(
        world.reconcile(day(16)).phase,
        Suspended,
        "Disabled wins over Expired"
    );

    world.organization = Standing::Active;
    let expired = world.reconcile(day(20));
    assert_eq!(expired.phase, Expired);
    assert_eq!(expired.phase_since, day(15));
    assert_eq!(events(&expired.history), vec![(day(15), "Expired")]);
    assert_eq!(world.deadlines().expiry_grace_ends_at, Some(day(45)));
}

#[test]
fn an_archived_organization_cancels_it_with_the_organizations_reason() {
    let mut world = World::new(entitlement(), json!({}));
    world.reconcile(day(1));
    world.organization = Standing::Archived {
        since: day(5),
        reason: OffboardingReason::BusinessClosure,
        ticket: Some("OPS-12".into()),
    };
    let cancelled = world.reconcile(day(6));
    assert_eq!(cancelled.phase, Cancelled);
    assert_eq!(cancelled.verdict.reason, "BusinessClosure");
    assert!(cancelled.verdict.message.contains("ticket OPS-12"));
    assert_eq!(
        cancelled.cancelled,
        Some(CancellationRecord {
            at: day(5),
            reason: "BusinessClosure".into(),
            by: CancelledBy::Organization,
        })
    );
    assert_eq!(world.deadlines().reactivation_deadline, None);
    assert_eq!(world.deadlines().purge_after, Some(day(5 + 365)));

    world.spec.reactivation = reactivation(day(7));
    let refused = world.reconcile(day(8));
    assert_eq!(refused.phase, Cancelled);
    assert_eq!(
        refusal_of(&refused).map(|r| r.reason),
        Some("OrganizationArchived".into())
    );
}

#[test]
fn a_reactivation_does_not_bring_back_an_entitlement_of_an_archived_organization() {
    let mut world = cancelled_on_day_10(json!({}));
    world.organization = Standing::Archived {
        since: day(20),
        reason: OffboardingReason::ContractBreach,
        ticket: None,
    };
    world.reconcile(day(21));
    world.spec.reactivation = reactivation(day(30));
    let decision = world.reconcile(day(31));
    assert_eq!(decision.phase, Cancelled);
    assert_eq!(
        refusal_of(&decision).map(|r| r.reason),
        Some("OrganizationArchived".into())
    );
}

#[test]
fn unarchiving_the_organization_lifts_the_cancellation_it_caused() {
    let mut world = World::new(entitlement(), json!({}));
    world.organization = Standing::Archived {
        since: day(5),
        reason: OffboardingReason::Other,
        ticket: None,
    };
    assert_eq!(world.reconcile(day(6)).phase, Cancelled);
    world.organization = Standing::Active;
    let back = world.reconcile(day(8));
    assert_eq!(back.phase, Active);
    assert_eq!(events(&back.history), vec![(day(8), "Reactivated")]);
}

// ---------------------------------------------------------------------------
// Renewal reminders
// ---------------------------------------------------------------------------

#[test]
fn renewal_reminders_fire_once_each_and_the_controller_wakes_for_the_next() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(40)),
            ..entitlement()
        },
        json!({}),
    );
    let first = world.reconcile(day(0));
    assert_eq!(first.reminder, None);
    assert_eq!(first.wake_at, Some(day(10)), "30 days before the end");

    let mut sent = Vec::new();
    let mut wakes = Vec::new();
    for now in [
        day(10),
        day(10) + hours(1),
        day(20),
        day(33),
        day(35),
        day(39),
    ] {
        let decision = world.reconcile(now);
        if let Some(reminder) = decision.reminder {
            sent.push((now, reminder.due_at));
        }
        wakes.push(decision.wake_at);
    }
    assert_eq!(
        sent,
        vec![(day(10), day(10)), (day(33), day(33)), (day(39), day(39))]
    );
    assert_eq!(
        wakes,
        [33, 33, 33, 39, 39, 40].map(|d| Some(day(d))).to_vec(),
        "the last wake is the end itself"
    );
    assert_eq!(world.status().last_reminder_at, Some(day(39)));

    let expired = world.reconcile(day(40));
    assert_eq!(expired.phase, Expired);
    assert_eq!(expired.reminder, None);
}

#[test]
fn the_reminder_says_how_long_access_has_left() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(40)),
            ..entitlement()
        },
        json!({}),
    );
    let decision = world.reconcile(day(39) + hours(6));
    let reminder = decision.reminder.expect("the one-day reminder");
    assert_eq!(reminder.due_at, day(39));
    assert!(
        reminder.message.contains("in 0 days (18 hours)"),
        "{}",
        reminder.message
    );
}

#[test]
fn a_late_controller_sends_only_the_latest_due_reminder() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(40)),
            ..entitlement()
        },
        json!({}),
    );
    world.reconcile(day(0));
    let late = world.reconcile(day(34));
    assert_eq!(late.reminder.map(|r| r.due_at), Some(day(33)));
    assert_eq!(late.wake_at, Some(day(39)));
    assert_eq!(world.reconcile(day(36)).reminder, None);
}

#[test]
fn a_renewal_after_the_reminders_starts_a_new_round() {
    let mut world = World::new(
        EntitlementSpec {
            ends_at: Some(day(40)),
            ..entitlement()
        },
        json!({"notifications": {"reminderDays": [7]}}),
    );
    assert_eq!(
        world.reconcile(day(33)).reminder.map(|r| r.due_at),
        Some(day(33))
    );
    world.spec.ends_at = Some(day(400));
    let renewed = world.reconcile(day(35));
    assert_eq!(renewed.reminder, None);
    assert_eq!(renewed.wake_at, Some(day(393)));
    assert_eq!(
        world.reconcile(day(393)).reminder.map(|r| r.due_at),
        Some(day(393))
    );
}

// ---------------------------------------------------------------------------
// Trials
// ---------------------------------------------------------------------------

/// A trial started on day 0 under a 14-day trial policy.
fn on_trial() -> World {
    World::new(
        EntitlementSpec {
            trial: trial(Some(day(0)), None),
            ..entitlement()
        },
        json!({"trial": {"days": 14}}),
    )
}

#[test]
fn a_trial_is_trialing_until_it_ends_and_says_when() {
    let mut world = on_trial();
    let trialing = world.reconcile(day(0) + hours(1));
    assert_eq!(trialing.phase, Trialing);
    assert_eq!(trialing.verdict.reason, "Trialing");
    assert_eq!(events(&trialing.history), vec![(day(0), "TrialStarted")]);
    assert_eq!(world.deadlines().trial_ends_at, Some(day(14)));
    assert_eq!(
        trialing.next,
        Some(NextTransition {
            phase: Expired,
            at: day(14)
        })
    );
    let message = &trialing.verdict.message;
    assert!(
        message.contains(&format!("on trial until {}", day(14))),
        "{message}"
    );
    assert!(message.contains(&day(44).to_string()), "{message}");
    assert_eq!(trialing.wake_at, Some(day(7)), "the first trial reminder");
}

#[test]
fn a_converted_trial_is_active_from_the_conversion() {
    let mut world = on_trial();
    world.reconcile(day(1));
    world.spec.trial = trial(Some(day(0)), Some(day(5)));
    let converted = world.reconcile(day(5) + hours(3));
    assert_eq!(converted.phase, Active);
    assert_eq!(converted.phase_since, day(5), "dated to the conversion");
    assert_eq!(events(&converted.history), vec![(day(5), "Converted")]);
    assert_eq!(converted.deadlines, None);
    assert_eq!(converted.next, None);
    assert_eq!(converted.wake_at, None);
    let history = &world.status().history;
    assert_eq!(
        events(history),
        vec![(day(0), "TrialStarted"), (day(5), "Converted")]
    );
    // Applied afterwards, the same facts tell the same story.
    let mut imported = on_trial();
    imported.spec.trial = trial(Some(day(0)), Some(day(5)));
    let fresh = imported.reconcile(day(30));
    assert_eq!(fresh.phase, Active);
    assert_eq!(
        events(&fresh.history),
        vec![(day(0), "TrialStarted"), (day(5), "Converted")]
    );
}

#[test]
fn a_trial_not_converted_expires_then_is_cancelled_and_purged_like_an_expiry() {
    let mut world = on_trial();
    world.reconcile(day(0));
    let expired = world.reconcile(day(14));
    assert_eq!(expired.phase, Expired);
    assert_eq!(expired.verdict.reason, "TrialEnded");
    assert_eq!(events(&expired.history), vec![(day(14), "Expired")]);
    assert_eq!(world.deadlines().expiry_grace_ends_at, Some(day(44)));
    assert_eq!(world.deadlines().trial_ends_at, None);
    assert!(
        expired
            .verdict
            .message
            .contains("unless spec.trial.convertedAt is set"),
        "{}",
        expired.verdict.message
    );
    let cancelled = world.reconcile(day(44));
    assert_eq!(cancelled.phase, Cancelled);
    assert_eq!(cancelled.verdict.reason, TRIAL_NOT_CONVERTED);
    assert_eq!(
        cancelled.cancelled,
        Some(CancellationRecord {
            at: day(44),
            reason: TRIAL_NOT_CONVERTED.into(),
            by: CancelledBy::ExpiryGrace,
        })
    );
    assert_eq!(world.deadlines().purge_after, Some(day(44 + 365)));
    assert_eq!(world.deadlines().final_purge_at, Some(day(44 + 365 + 7)));
    let purged = world.reconcile(day(44 + 365 + 7));
    assert_eq!(purged.phase, Purged);
    assert_eq!(
        events(&world.status().history),
        vec![
            (day(0), "TrialStarted"),
            (day(14), "Expired"),
            (day(44), "Cancelled"),
            (day(416), "Purged"),
        ]
    );
}

#[test]
fn a_conversion_inside_the_expiry_grace_revives_it_and_after_the_cancellation_only_a_reactivation_does()
 {
    let mut world = on_trial();
    world.reconcile(day(15));
    world.spec.trial = trial(Some(day(0)), Some(day(20)));
    let revived = world.reconcile(day(20) + hours(1));
    assert_eq!(revived.phase, Active);
    assert_eq!(events(&revived.history), vec![(day(20), "Converted")]);

    let mut late = on_trial();
    late.reconcile(day(44));
    late.spec.trial = trial(Some(day(0)), Some(day(50)));
    let sticky = late.reconcile(day(50));
    assert_eq!(
        sticky.phase, Cancelled,
        "a conversion after the cancellation"
    );
    assert_eq!(sticky.verdict.reason, TRIAL_NOT_CONVERTED);
    late.spec.reactivation = reactivation(day(51));
    let back = late.reconcile(day(51));
    assert_eq!(back.phase, Active);
    assert_eq!(events(&back.history), vec![(day(51), "Reactivated")]);
    assert_eq!(back.next, None, "the trial is over");
}

#[test]
fn trial_reminders_come_7_and_1_days_before_its_end_once_each() {
    let mut world = on_trial();
    let mut sent = Vec::new();
    for now in [
        day(0),
        day(7),
        day(7) + hours(1),
        day(10),
        day(13),
        day(13) + hours(2),
        day(14),
    ] {
        let decision = world.reconcile(now);
        if let Some(reminder) = decision.reminder {
            assert_eq!(reminder.kind, NoticeKind::TrialReminder);
            assert_eq!(reminder.kind.reason(), "TrialReminder");
            sent.push((now, reminder.due_at));
        }
    }
    assert_eq!(sent, vec![(day(7), day(7)), (day(13), day(13))]);
    assert_eq!(world.status().last_trial_reminder_at, Some(day(13)));
    assert_eq!(world.status().last_reminder_at, None, "no renewal reminder");

    let mut converted = on_trial();
    converted.spec.trial = trial(Some(day(0)), Some(day(3)));
    assert_eq!(converted.reconcile(day(7)).reminder, None);
}

#[test]
fn without_spec_trial_a_trial_policy_changes_nothing_and_without_trial_days_there_is_no_trial() {
    let mut plain = World::new(
        EntitlementSpec {
            ends_at: Some(day(40)),
            ..entitlement()
        },
        json!({"trial": {"days": 14}}),
    );
    let decision = plain.reconcile(day(20));
    assert_eq!(decision.phase, Active);
    assert_eq!(events(&decision.history), vec![(day(0), "Activated")]);
    assert_eq!(decision.deadlines, None);
    assert_eq!(
        decision.next.map(|n| (n.phase, n.at)),
        Some((Expired, day(40)))
    );
    assert_eq!(decision.wake_at, Some(day(33)), "the renewal reminder");

    let mut no_days = on_trial();
    no_days.policy = effective(json!({}));
    let decision = no_days.reconcile(day(20));
    assert_eq!(
        decision.phase, Active,
        "trial.days 0: spec.trial is ignored"
    );
    assert_eq!(decision.next, None);
}

#[test]
fn a_trial_without_started_at_starts_with_access_and_a_backdated_one_is_dated() {
    let mut world = World::new(
        EntitlementSpec {
            starts_at: Some(day(3)),
            trial: trial(None, None),
            ..entitlement()
        },
        json!({"trial": {"days": 14}}),
    );
    assert_eq!(world.reconcile(day(0)).phase, Pending);
    assert_eq!(world.reconcile(day(3)).phase, Trialing);
    assert_eq!(world.deadlines().trial_ends_at, Some(day(17)));

    let mut backdated = on_trial();
    backdated.spec.trial = trial(Some(day(-10)), None);
    let decision = backdated.reconcile(day(0));
    assert_eq!(decision.phase, Trialing);
    assert_eq!(events(&decision.history), vec![(day(-10), "TrialStarted")]);
    assert_eq!(backdated.deadlines().trial_ends_at, Some(day(4)));
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// A random entitlement: policy, facts and organization standing fixed, and the
/// instants at which the controller happens to reconcile it.
#[derive(Clone, Debug)]
struct Case {
    rules: Value,
    spec: EntitlementSpec,
    created: Time,
    organization: Standing,
    nows: Vec<Time>,
    /// A RetentionHold on the entitlement: placed, and maybe lifted (deleted).
    hold: Option<(Time, Option<Time>)>,
}

impl Case {
    /// Whether the hold exists (and so is in force) at `now`.
    fn held_at(&self, now: Time) -> bool {
        self.hold
            .is_some_and(|(placed, lifted)| placed <= now && lifted.is_none_or(|l| now < l))
    }

    /// The RetentionHolds covering the entitlement at `now`.
    fn holds_at(&self, now: Time) -> Vec<Hold> {
        let hold = Hold {
            name: "legal".into(),
            reason: "litigation".into(),
            ticket: None,
            until: None,
            target: HoldTarget::Entitlement {
                namespace: "default".into(),
                name: "seat".into(),
            },
        };
        self.held_at(now).then_some(hold).into_iter().collect()
    }
}

/// An instant around day 0: whole days most of the time, so that facts and
/// deadlines often fall on the same instant.
fn instant() -> impl Strategy<Value = Time> {
    (-200i64..300, prop_oneof![3 => Just(0i64), 1 => 1i64..24]).prop_map(|(d, h)| day(d) + hours(h))
}

/// Some days of grace, retention or window: now and then none, or a few, so
/// that deadlines collide.
fn days() -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(0i64), 1 => 1i64..10, 4 => 10i64..400]
}

fn rules() -> impl Strategy<Value = Value> {
    (
        days(),
        days(),
        days(),
        prop_oneof![1 => days(), 3 => 200i64..800],
        prop::bool::weighted(0.85),
        prop_oneof![1 => days(), 2 => 60i64..400],
        prop::collection::vec(0i64..60, 0..4),
        days(),
        prop_oneof![1 => Just(0i64), 2 => 1i64..60],
    )
        .prop_map(
            |(payment, expiry, portal, retention, allow, window, reminders, grace, trial)| {
                json!({
                    "payment": {"graceDays": payment},
                    "expiry": {"graceDays": expiry},
                    "cancellation": {
                        "portalVisibilityDays": portal,
                        "dataRetentionDays": retention,
                        "allowReactivation": allow,
                        "reactivationWindowDays": window,
                    },
                    "notifications": {"reminderDays": reminders, "trialReminderDays": [7, 1]},
                    "purge": {"finalGraceDays": grace},
                    "trial": {"days": trial},
                })
            },
        )
}

fn standing() -> impl Strategy<Value = Standing> {
    prop_oneof![
        3 => Just(Standing::Active),
        1 => instant().prop_map(|since| Standing::Disabled { since }),
        1 => (instant(), reason(), prop::option::of(Just("OPS-1".to_string())))
            .prop_map(|(since, reason, ticket)| Standing::Archived { since, reason, ticket }),
    ]
}

fn spec() -> impl Strategy<Value = EntitlementSpec> {
    (
        prop::option::of(instant()),
        prop::option::of(instant()),
        prop::option::weighted(0.4, instant()),
        prop::option::weighted(0.5, (reason(), prop::option::of(instant()))),
        prop::option::weighted(0.2, instant()),
        prop::option::weighted(
            0.4,
            (prop::option::of(instant()), prop::option::of(instant())),
        ),
    )
        .prop_map(
            |(starts_at, ends_at, failed_at, cancel, requested_at, trial_facts)| {
                // CEL: endsAt must be after startsAt.
                let ends_at = match (starts_at, ends_at) {
                    (Some(starts), Some(ends)) if ends <= starts => {
                        Some(starts + TimeDelta::days(1))
                    }
                    (_, ends) => ends,
                };
                EntitlementSpec {
                    starts_at,
                    ends_at,
                    payment: failed_at.and_then(payment_failed),
                    cancellation: cancel.and_then(|(reason, at)| cancellation(reason, at)),
                    reactivation: requested_at.and_then(reactivation),
                    trial: trial_facts.and_then(|(started, converted)| trial(started, converted)),
                    ..entitlement()
                }
            },
        )
}

/// The instants the controller reconciles at: from creation on, increasing,
/// sometimes days apart, sometimes hours.
fn nows(created: Time) -> impl Strategy<Value = Vec<Time>> {
    let step = prop_oneof![
        3 => (1i64..60).prop_map(TimeDelta::days),
        1 => (60i64..200).prop_map(TimeDelta::days),
        1 => (1i64..48).prop_map(hours),
    ];
    (0i64..300, prop::collection::vec(step, 0..14)).prop_map(move |(first, steps)| {
        let mut now = created + TimeDelta::days(first);
        let mut nows = vec![now];
        for step in steps {
            now += step;
            nows.push(now);
        }
        nows
    })
}

fn case() -> impl Strategy<Value = Case> {
    let hold = prop::option::weighted(
        0.3,
        (
            instant(),
            prop::option::of((1i64..200).prop_map(TimeDelta::days)),
        )
            .prop_map(|(placed, lifted_after)| (placed, lifted_after.map(|d| placed + d))),
    );
    let facts = (
        rules(),
        spec(),
        (-50i64..50).prop_map(day),
        standing(),
        hold,
    );
    let case = facts.prop_flat_map(|(rules, spec, created, organization, hold)| {
        nows(created).prop_map(move |nows| Case {
            rules: rules.clone(),
            spec: spec.clone(),
            created,
            organization: organization.clone(),
            nows,
            hold,
        })
    });
    let win_back = prop_oneof![
        (-3i64..150).prop_map(|days| (false, TimeDelta::days(days))),
        (1i64..60 * 24).prop_map(|h| (true, hours(h))),
    ];
    (case, prop::option::weighted(0.5, win_back)).prop_map(|(mut case, win_back)| {
        // A win-back some time after the first cancellation, or after the
        // controller first saw it cancelled (a run without one tells both), so
        // that it often falls around its window and is seen being honoured.
        if let Some((after_seen, delay)) = win_back {
            case.spec.reactivation = None;
            let (_, steps) = case.run();
            let first = steps.iter().find_map(|step| {
                let cancelled = step.decision.cancelled.as_ref()?;
                let seen = step.decision.phase == Cancelled;
                seen.then_some(if after_seen { step.now } else { cancelled.at })
            });
            case.spec.reactivation = first.map(|at| at + delay).and_then(reactivation);
        }
        case
    })
}

/// The same case with every fact dated in spec: a cancellation without
/// effectiveAt gets the instant the controller first saw it.
fn dated(case: impl Strategy<Value = Case>) -> impl Strategy<Value = Case> {
    case.prop_map(|mut case| {
        if let Some(cancellation) = case.spec.cancellation.as_mut() {
            cancellation.effective_at.get_or_insert(case.nows[0]);
        }
        case
    })
}

/// One reconcile of a run: when, what status it read, what it decided.
struct Step {
    now: Time,
    before: Option<EntitlementStatus>,
    decision: Decision,
}

impl Case {
    fn world(&self) -> World {
        World {
            spec: self.spec.clone(),
            created: self.created,
            organization: self.organization.clone(),
            organization_purge: None,
            holds: Vec::new(),
            policy: effective(self.rules.clone()),
            status: None,
        }
    }

    /// Reconciles at every instant of the case, facts unchanged.
    fn run(&self) -> (World, Vec<Step>) {
        let mut world = self.world();
        let steps = self
            .nows
            .iter()
            .map(|&now| {
                world.holds = self.holds_at(now);
                let before = world.status.clone();
                let decision = world.reconcile(now);
                Step {
                    now,
                    before,
                    decision,
                }
            })
            .collect();
        (world, steps)
    }
}

/// The phase changes a fixed set of facts can make as time passes, between two
/// reconciles (which may be far apart, so intermediate phases can be skipped).
fn allowed(
    from: EntitlementPhase,
    to: EntitlementPhase,
    reactivation: bool,
    converted: bool,
) -> bool {
    match (from, to) {
        _ if from == to => true,
        // Nothing purged comes back.
        (Purged, _) => false,
        (_, Purged) => true,
        (Pending, _) => true,
        (Trialing, Active) => converted || reactivation,
        (Trialing, Suspended | Expired | Cancelled) => true,
        // A conversion dated inside the expiry grace after the trial, or a
        // reactivation after the trial's cancellation (which converts it).
        (Expired, Active) => converted || reactivation,
        (Active, Suspended | Expired | Cancelled) => true,
        // A payment failure or a disabled organization outranks expiry.
        (Expired, Suspended | Cancelled) => true,
        (Suspended, Cancelled) => true,
        // Only a reactivation lifts a cancellation; it may land in any phase
        // that the facts after it say (not started yet, expired anew, ...).
        (Cancelled, Pending | Active | Suspended | Expired) => reactivation,
        // The facts are fixed: no recovery, no renewal, no restart.
        _ => false,
    }
}

/// 256 cases per property keep the suite at a few seconds in debug builds;
/// `PROPTEST_CASES=20000` explores further.
fn config() -> Config {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|n| n.parse().ok());
    Config {
        cases: cases.unwrap_or(256),
        failure_persistence: None,
        ..Config::default()
    }
}

fn deadline_fields(d: &Option<Deadlines>) -> [(&'static str, Option<Time>); 5] {
    let d = d.clone().unwrap_or_default();
    [
        ("autoCancelAt", d.auto_cancel_at),
        ("expiryGraceEndsAt", d.expiry_grace_ends_at),
        ("portalVisibleUntil", d.portal_visible_until),
        ("reactivationDeadline", d.reactivation_deadline),
        ("purgeAfter", d.purge_after),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// 1. Between two reconciles of unchanged facts, the phase only moves the
    /// way API.md lets it, and every change is told in the history.
    #[test]
    fn phases_only_move_along_allowed_transitions(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let Some(before) = step.before.as_ref() else { continue };
            let from = before.phase.expect("decided before");
            let to = step.decision.phase;
            prop_assert!(
                allowed(
                    from,
                    to,
                    case.spec.reactivation.is_some(),
                    case.spec.trial.as_ref().is_some_and(|t| t.converted_at.is_some()),
                ),
                "{from:?} -> {to:?} at {}", step.now
            );
            if from != to {
                // A hold placed or lifted at the same reconcile is noted too.
                let last = step.decision.history.iter().rev().find(|e| e.reason != "RetentionHold");
                prop_assert!(last.is_some(), "{from:?} -> {to:?} without a history entry");
                prop_assert_eq!(last.map(|e| e.at), Some(step.decision.phase_since));
            }
        }
    }

    /// 2b. Nothing is purged before a full final grace after its purge was
    /// announced in status (`deadlines.finalPurgeAt`), nor before that date.
    #[test]
    fn purged_only_a_full_final_grace_after_the_announcement(case in case()) {
        let (world, steps) = case.run();
        let grace = world.policy.days(keys::FINAL_GRACE_DAYS);
        let mut announced_since: Option<Time> = None;
        for step in &steps {
            let decision = &step.decision;
            let announced = decision.deadlines.as_ref().and_then(|d| d.final_purge_at);
            if decision.phase == Purged && step.before.as_ref().and_then(|s| s.phase) != Some(Purged) {
                let since = announced_since.unwrap_or(step.now);
                prop_assert!(step.now >= since + grace, "purged at {}, announced at {since}", step.now);
                prop_assert!(announced.is_some_and(|at| step.now >= at));
            }
            announced_since = match announced {
                Some(_) => announced_since.or(Some(step.now)),
                None => None,
            };
        }
    }

    /// 2d. Status never advertises a reactivation deadline that can no longer
    /// be honoured: none once purged, never past the end of the retention.
    #[test]
    fn the_reactivation_deadline_is_one_that_can_still_be_honoured(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let Some(deadlines) = step.decision.deadlines.as_ref() else { continue };
            let Some(deadline) = deadlines.reactivation_deadline else { continue };
            prop_assert_ne!(step.decision.phase, Purged);
            prop_assert!(deadlines.purge_after.is_some_and(|after| deadline <= after));
        }
    }

    /// 2e. Deadlines, `next` and the Ready message tell one story whichever
    /// causes overlap: a cancellation ahead from a running grace is at one of
    /// the deadlines listed, and the message names that date and no later
    /// deadline that will not come into play.
    #[test]
    fn deadlines_next_and_the_message_tell_the_same_story(case in case()) {
        let (world, steps) = case.run();
        for step in &steps {
            let decision = &step.decision;
            if !matches!(decision.phase, Suspended | Expired) {
                continue;
            }
            let deadlines = decision.deadlines.clone().unwrap_or_default();
            let graces: Vec<Time> = [deadlines.auto_cancel_at, deadlines.expiry_grace_ends_at]
                .into_iter()
                .flatten()
                .collect();
            let message = &decision.verdict.message;
            if let Some(next) = decision.next.as_ref().filter(|n| n.phase == Cancelled) {
                // Or a cancellation dated ahead by a fact: requested, or the
                // organization's archival.
                let requested = case.spec.cancellation.as_ref().and_then(|c| c.effective_at);
                let archived = match case.organization {
                    Standing::Archived { since, .. } => Some(since),
                    _ => None,
                };
                prop_assert!(
                    graces.contains(&next.at) || [requested, archived].contains(&Some(next.at)),
                    "next {} is no deadline: {deadlines:?}", next.at
                );
                prop_assert!(message.contains(&next.at.to_string()), "{message} (next {})", next.at);
            }
            // (A fact the message names may fall on a deadline: a grace of 0.)
            let trial_ends = trial_of(&world.input(step.now)).map(|(ends, _)| ends);
            let facts = [case.spec.ends_at, case.spec.payment.as_ref().map(|p| p.failed_at), trial_ends];
            let earliest = graces.iter().min().copied();
            for grace in graces
                .iter()
                .filter(|at| Some(**at) != earliest)
                .filter(|at| !facts.contains(&Some(**at)))
            {
                prop_assert!(!message.contains(&grace.to_string()), "{message} names {grace}");
            }
        }
    }

    /// 2c. Nothing is purged while a hold covering it is in force, no purge
    /// date runs then, and nothing bound is deleted.
    #[test]
    fn nothing_is_purged_or_deleted_while_a_hold_is_in_force(case in case()) {
        let (world, steps) = case.run();
        let deprovision = world.policy.flag(keys::DEPROVISION_ON_CANCEL);
        for step in steps.iter().filter(|s| case.held_at(s.now)) {
            let decision = &step.decision;
            let newly_purged = decision.phase == Purged
                && step.before.as_ref().and_then(|s| s.phase) != Some(Purged);
            prop_assert!(!newly_purged, "purged at {} under a hold", step.now);
            if decision.phase == Cancelled {
                prop_assert_eq!(decision.deadlines.as_ref().and_then(|d| d.final_purge_at), None);
            }
            let everything = crate::api::class::DownstreamKind {
                on_cancel: crate::api::class::CancelAction::Delete,
                ..Default::default()
            };
            let held = !decision.holds.is_empty();
            prop_assert!(held);
            let wanted = crate::lifecycle::downstream::desired(decision.phase, &everything, deprovision, held);
            prop_assert!(!matches!(
                wanted,
                crate::lifecycle::downstream::Desired::Deleted | crate::lifecycle::downstream::Desired::Deprovisioned
            ));
        }
    }

    /// 2. Nothing is purged before its deadline, and the deadline is the
    /// retention after the cancellation.
    #[test]
    fn purged_never_before_purge_after(case in case()) {
        let (world, steps) = case.run();
        let retention = world.policy.days(keys::DATA_RETENTION_DAYS);
        for step in &steps {
            let decision = &step.decision;
            if decision.phase != Purged {
                continue;
            }
            let purge_after = decision.deadlines.as_ref().and_then(|d| d.purge_after);
            let cancelled = decision.cancelled.as_ref();
            prop_assert!(purge_after.is_some(), "Purged without purgeAfter");
            prop_assert!(cancelled.is_some(), "Purged without a cancellation");
            prop_assert!(step.now >= purge_after.unwrap(), "purged at {} before {purge_after:?}", step.now);
            prop_assert_eq!(purge_after, cancelled.map(|c| c.at + retention));
            prop_assert!(decision.phase_since >= purge_after.unwrap());
        }
    }

    /// 3. A reactivation lifts a cancellation only inside its window, when the
    /// policy allows it, and before the data is gone.
    #[test]
    fn a_reactivation_is_honoured_only_inside_its_window(case in case()) {
        let (world, steps) = case.run();
        let window = world.policy.days(keys::REACTIVATION_WINDOW_DAYS);
        let retention = world.policy.days(keys::DATA_RETENTION_DAYS);
        let allowed = world.policy.flag(keys::ALLOW_REACTIVATION);
        for step in &steps {
            let Some(before) = step.before.as_ref() else { continue };
            let lifted = before.phase == Some(Cancelled)
                && !matches!(step.decision.phase, Cancelled | Purged);
            if !lifted {
                continue;
            }
            let cancelled = before.cancelled.as_ref().expect("Cancelled has a record");
            let requested = case.spec.reactivation.as_ref().map(|r| r.requested_at);
            prop_assert!(requested.is_some(), "lifted without a reactivation");
            let requested = requested.unwrap();
            prop_assert!(allowed, "lifted although allowReactivation is false");
            prop_assert!(
                cancelled.at < requested && requested <= cancelled.at + window,
                "requested at {requested}, cancelled at {}, window {window}", cancelled.at
            );
            prop_assert!(requested < cancelled.at + retention);
            prop_assert!(requested <= step.now, "honoured before it was requested");
            prop_assert!(cancelled.by != CancelledBy::Organization);
        }
    }

    /// 4. The decision is a pure function of its input.
    #[test]
    fn the_same_input_gives_the_same_decision(case in case()) {
        let mut world = case.world();
        for &now in &case.nows {
            let once = decide(&world.input(now));
            let twice = decide(&world.input(now));
            prop_assert_eq!(&once, &twice);
            world.reconcile(now);
        }
    }

    /// 5. With the facts unchanged, a deadline that stays in status never moves
    /// earlier.
    #[test]
    fn deadlines_never_move_back_without_a_spec_change(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let Some(before) = step.before.as_ref() else { continue };
            let old = deadline_fields(&before.deadlines);
            let new = deadline_fields(&step.decision.deadlines);
            for ((name, old), (_, new)) in old.into_iter().zip(new) {
                if let (Some(old), Some(new)) = (old, new) {
                    prop_assert!(new >= old, "{name} moved from {old} back to {new} at {}", step.now);
                }
            }
            if let (Some(old), Some(new)) = (before.cancelled.as_ref(), step.decision.cancelled.as_ref()) {
                prop_assert!(new.at >= old.at, "the cancellation moved back from {} to {}", old.at, new.at);
            }
        }
    }

    /// 6. What is scheduled lies ahead, and the controller wakes for it.
    #[test]
    fn the_next_transition_lies_ahead_and_the_controller_wakes_for_it(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let decision = &step.decision;
            if let Some(next) = &decision.next {
                prop_assert!(next.at > step.now);
                prop_assert_ne!(next.phase, decision.phase);
                prop_assert!(decision.wake_at.is_some_and(|wake| wake <= next.at));
            }
            if let Some(wake) = decision.wake_at {
                prop_assert!(wake > step.now);
            }
        }
    }

    /// 7. Nothing is provided to an entitlement of an Archived organization,
    /// and nothing of a Disabled one is in use.
    #[test]
    fn the_organizations_standing_bounds_the_phase(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let phase = step.decision.phase;
            match case.organization {
                Standing::Archived { since, .. } if step.now >= since => {
                    prop_assert!(matches!(phase, Cancelled | Purged), "{phase:?} under an Archived org");
                }
                Standing::Disabled { since } if step.now >= since => {
                    prop_assert!(!matches!(phase, Active | Trialing | Expired), "{phase:?} under a Disabled org");
                }
                _ => {}
            }
        }
    }

    /// 8. Re-applying the manifest (status lost, facts dated in spec) lands in
    /// the same phase, with the same deadlines; except that the purge is
    /// announced anew (status kept when it was first shown), so a restore
    /// never purges sooner, only later.
    #[test]
    fn a_restore_without_status_lands_in_the_same_phase(case in dated(case())) {
        let (world, steps) = case.run();
        let final_purge_at = |d: &Decision| d.deadlines.as_ref().and_then(|d| d.final_purge_at);
        let without_final = |d: &Decision| d.deadlines.clone().map(|d| Deadlines { final_purge_at: None, ..d });
        for step in &steps {
            let holds = case.holds_at(step.now);
            let fresh = decide(&Input { recorded: None, holds: &holds, ..world.input(step.now) });
            let was = &step.decision;
            match was.phase {
                Purged => prop_assert!(matches!(fresh.phase, Purged | Cancelled), "at {}", step.now),
                _ => prop_assert_eq!(fresh.phase, was.phase, "at {}", step.now),
            }
            if was.phase != Purged {
                prop_assert_eq!(without_final(&fresh), without_final(was));
                prop_assert!(final_purge_at(&fresh) >= final_purge_at(was), "a restore purges sooner");
            }
            prop_assert_eq!(&fresh.cancelled, &was.cancelled);
        }
    }

    /// 8b. A restore keeping the facts tenure kept in the entitlement's
    /// annotation (status lost) lands in the same phase as a re-sync that
    /// kept status, whatever the history, dated or not.
    #[test]
    fn a_restore_from_the_kept_facts_lands_in_the_same_phase(case in case()) {
        let (world, steps) = case.run();
        for step in &steps {
            let Some(before) = step.before.as_ref() else { continue };
            let restored = EntitlementFacts::remembered(before).restored();
            let holds = case.holds_at(step.now);
            let fresh = decide(&Input { recorded: Some(&restored), holds: &holds, ..world.input(step.now) });
            prop_assert_eq!(fresh.phase, step.decision.phase, "at {}", step.now);
            prop_assert_eq!(&fresh.cancelled, &step.decision.cancelled);
            prop_assert_eq!(
                fresh.deadlines.as_ref().and_then(|d| d.final_purge_at),
                step.decision.deadlines.as_ref().and_then(|d| d.final_purge_at)
            );
        }
    }

    /// 9. The history reads forward in time and never tells of the future.
    #[test]
    fn the_history_reads_forward_in_time(case in case()) {
        let (world, steps) = case.run();
        let last = steps.last().map(|s| s.now);
        let history = &world.status().history;
        for pair in history.windows(2) {
            prop_assert!(pair[0].at <= pair[1].at, "{:?} after {:?}", pair[1], pair[0]);
        }
        for step in &steps {
            for entry in &step.decision.history {
                prop_assert!(entry.at <= step.now);
            }
        }
        prop_assert!(history.last().map(|e| e.at) <= last);
    }
}
