//! Unit and property tests of the organization lifecycle core.
//!
//! The tests play the controller: they call `decide` at increasing instants,
//! write each decision back into the status the next call reads (as the
//! reconciler does with server-side apply), write the purge plan the shell
//! measures, and let the tenant namespace disappear some time after the purge
//! asked for its deletion.

use super::*;
use crate::lifecycle::scenario::{day, events, hours, reason};

use std::collections::BTreeMap;

use chrono::TimeDelta;
use proptest::prelude::*;
use proptest::test_runner::Config;
use serde_json::{Value, json};

use crate::api::common::OffboardingReason;
use crate::api::organization::{Approval, DeletionRequest, Offboarding, PurgePlan, Retention};
use crate::api::policy::{LifecyclePolicy, LifecyclePolicySpec, PolicyRules, PolicyScope};
use crate::lifecycle::conditions::Progress;
use crate::lifecycle::hold::HoldTarget;
use crate::lifecycle::policy::{self, Subject};
use OrganizationLifecycle as Lifecycle;
use OrganizationPhase::{Active, Archived, Disabled, PurgeScheduled, Purged, Purging};

// ---------------------------------------------------------------------------
// The world the controller sees, and the controller's loop
// ---------------------------------------------------------------------------

const NAME: &str = "acme";
const NAMESPACE: &str = "org-acme";

/// The effective policy of organization `acme` under a LifecyclePolicy scoped
/// to it with `rules`, over the built-in defaults.
fn effective(rules: Value) -> Effective {
    let rules: PolicyRules = serde_json::from_value(rules).expect("valid policy rules");
    let policy = LifecyclePolicy::new(
        "acme-offboarding",
        LifecyclePolicySpec {
            scope: Some(PolicyScope {
                organization: Some(NAME.into()),
                ..Default::default()
            }),
            rules,
            locked: None,
        },
    );
    let subject = Subject {
        organization: Some(NAME),
        ..Default::default()
    };
    policy::resolve(&[&policy], &subject, None)
}

fn organization() -> OrganizationSpec {
    OrganizationSpec {
        display_name: Some("Acme Corp".into()),
        tax_id: Some("12.345.678/0001-90".into()),
        billing_entity: Some("BR".into()),
        ..Default::default()
    }
}

fn offboarding(
    reason: OffboardingReason,
    ticket: Option<&str>,
    effective_at: Option<Time>,
) -> Option<Offboarding> {
    Some(Offboarding {
        reason,
        ticket: ticket.map(Into::into),
        notes: None,
        effective_at,
    })
}

fn disabled(ticket: Option<&str>, effective_at: Option<Time>) -> OrganizationSpec {
    OrganizationSpec {
        lifecycle: Lifecycle::Disabled,
        offboarding: offboarding(OffboardingReason::NonPayment, ticket, effective_at),
        ..organization()
    }
}

fn archived(ticket: Option<&str>, effective_at: Option<Time>) -> OrganizationSpec {
    OrganizationSpec {
        lifecycle: Lifecycle::Archived,
        offboarding: offboarding(OffboardingReason::CustomerRequest, ticket, effective_at),
        ..organization()
    }
}

/// `spec.deletion` confirming the hard delete, without skipping retention.
fn confirmed() -> Option<DeletionRequest> {
    Some(DeletionRequest {
        confirm_name: NAME.into(),
        skip_retention: None,
        approval: None,
    })
}

/// `spec.deletion` confirming the hard delete and skipping retention, approved.
fn confirmed_skipping_retention() -> Option<DeletionRequest> {
    Some(DeletionRequest {
        confirm_name: NAME.into(),
        skip_retention: Some(true),
        approval: Some(Approval {
            by: "dpo@example.com".into(),
            reference: Some("LEGAL-9".into()),
        }),
    })
}

fn hold(name: &str, ticket: Option<&str>, until: Option<Time>) -> Hold {
    Hold {
        name: name.into(),
        reason: "litigation".into(),
        ticket: ticket.map(Into::into),
        until,
        target: HoldTarget::Organization {
            name: NAME.into(),
            namespace: Some(NAMESPACE.into()),
        },
    }
}

/// What the shell measures for `status.purgePlan`: a fixed dry run.
fn plan() -> PurgePlan {
    PurgePlan {
        objects: BTreeMap::from([("ConfigMap".to_string(), 3)]),
        system: system(),
        namespaces: vec!["org-acme".into()],
        uncounted: Vec::new(),
    }
}

/// What Kubernetes made in the namespace by itself, counted apart.
fn system() -> BTreeMap<String, i64> {
    BTreeMap::from([
        ("ConfigMap".to_string(), 1),
        ("ServiceAccount".to_string(), 1),
    ])
}

/// What the tombstone of a purge of [`plan`] says was deleted.
fn deleted() -> BTreeMap<String, i64> {
    BTreeMap::from([("ConfigMap".to_string(), 3), ("Namespace".to_string(), 1)])
}

/// One organization, its policy, holds and namespace, and its status, decided
/// over and over like the reconciler does.
struct World {
    spec: OrganizationSpec,
    created: Time,
    policy: Effective,
    holds: Vec<Hold>,
    namespace: Namespace,
    /// A DataExport succeeded and its artifact still exists.
    export_available: bool,
    /// Locked retentions: the organization's own, and its entitlements'.
    locked_archived: Option<LockedRetention>,
    entitlement_locks: Vec<EntitlementLock>,
    /// What the shell would measure now if it measured the purge plan.
    measured: PurgePlan,
    /// Objects left under the tenant namespace after it is gone.
    remnants: BTreeMap<String, i64>,
    status: Option<OrganizationStatus>,
}

impl World {
    /// An organization created a year before day 0, under `rules`.
    fn new(spec: OrganizationSpec, rules: Value) -> Self {
        Self {
            spec,
            created: day(-365),
            policy: effective(rules),
            holds: Vec::new(),
            namespace: Namespace::Owned,
            export_available: false,
            locked_archived: None,
            entitlement_locks: Vec::new(),
            measured: plan(),
            remnants: BTreeMap::new(),
            status: None,
        }
    }

    fn input(&self, now: Time) -> Input<'_> {
        Input {
            name: NAME,
            spec: &self.spec,
            created: self.created,
            recorded: self.status.as_ref(),
            policy: &self.policy,
            holds: &self.holds,
            locked_archived: self.locked_archived.as_ref(),
            locked_disabled: None,
            entitlement_locks: &self.entitlement_locks,
            namespace_name: NAMESPACE,
            namespace: &self.namespace,
            export_available: self.export_available,
            remnants: &self.remnants,
            deleting: false,
            now,
        }
    }

    /// The reconciler runs at `now`: decide, write the decision to status, and
    /// measure the purge plan while it runs its final grace and once more as
    /// the purge starts (what it counts then is what the tombstone says).
    fn reconcile(&mut self, now: Time) -> Decision {
        let decision = decide(&self.input(now));
        let mut status = self.status.take().unwrap_or_default();
        decision.write_to(&mut status);
        if matches!(
            decision.purge,
            PurgeStep::Plan | PurgeStep::DeleteNamespace { freeze_plan: true }
        ) {
            status.purge_plan = Some(self.measured.clone());
        }
        // Recorded first, done second: the delete is sent after the write,
        // and its being sent reported once it was accepted.
        if deletes(&decision) {
            self.namespace = Namespace::Terminating { by_purge: true };
            status.namespace_deleted_at.get_or_insert(now);
        }
        self.status = Some(status);
        decision
    }

    fn status(&self) -> &OrganizationStatus {
        self.status.as_ref().expect("decided at least once")
    }

    /// A DataExport of the organization succeeded.
    fn exported(&mut self, name: &str) {
        let status = self.status.get_or_insert_with(Default::default);
        status.exports.insert(0, name.into());
        self.export_available = true;
    }
}

/// Whether the decision deletes the tenant namespace.
fn deletes(decision: &Decision) -> bool {
    matches!(decision.purge, PurgeStep::DeleteNamespace { .. })
}

fn names(history: &[HistoryEntry]) -> Vec<&str> {
    history.iter().map(|e| e.event.as_str()).collect()
}

/// The extra condition of type `type_`, if the decision sets it.
fn condition<'a>(decision: &'a Decision, type_: &str) -> Option<&'a Extra> {
    decision.extra.iter().find(|e| e.type_ == type_)
}

fn blocked_by(decision: &Decision) -> Option<&str> {
    condition(decision, "PurgeBlocked").map(|e| e.reason.as_str())
}

fn refused(decision: &Decision) -> bool {
    condition(decision, "LifecycleChangeRefused")
        .is_some_and(|e| e.status && e.reason == "PurgeStarted")
}

// ---------------------------------------------------------------------------
// The whole way: disabled, confirmed, purged
// ---------------------------------------------------------------------------

#[test]
fn the_97_day_path_disabled_awaits_confirmation_and_is_purged_a_final_grace_after_it() {
    let mut world = World::new(
        disabled(Some("FIN-77"), None),
        json!({"purge": {"requireConfirmation": true}}),
    );

    // Day 0: disabled, access revoked, data kept 90 days (the default).
    let day0 = world.reconcile(day(0));
    assert_eq!(day0.phase, Disabled);
    assert!(day0.access_revoked);
    assert_eq!(day0.disabled_at, Some(day(0)));
    assert_eq!(day0.purge_after, Some(day(90)));
    assert_eq!(day0.portal_visible_until, Some(day(90)));
    assert_eq!(
        day0.final_purge_at, None,
        "no purge is scheduled without a confirmation"
    );
    assert_eq!(events(&day0.history), vec![(day(0), "Disabled")]);
    assert_eq!(day0.history[0].reason, "NonPayment");
    assert!(day0.history[0].message.contains("FIN-77"));
    assert_eq!(day0.purge, PurgeStep::None);

    // Day 90: retention is over, but the purge awaits the typed confirmation.
    let day90 = world.reconcile(day(90));
    assert_eq!(
        day90.phase, Disabled,
        "the phase is unchanged while it waits"
    );
    assert_eq!(blocked_by(&day90), Some("AwaitingConfirmation"));
    let blocked = condition(&day90, "PurgeBlocked").unwrap();
    assert!(blocked.status);
    assert!(blocked.message.contains("spec.deletion.confirmName"));
    assert_eq!(day90.final_purge_at, None);
    assert_eq!(day90.purge, PurgeStep::None);
    assert!(day90.history.is_empty());
    assert_eq!(world.status().purge_plan, None);

    // Day 95: confirmed; the final grace runs from the confirmation.
    world.spec.deletion = confirmed();
    let day95 = world.reconcile(day(95));
    assert_eq!(day95.phase, PurgeScheduled);
    assert_eq!(day95.deletion_confirmed_at, Some(day(95)));
    assert_eq!(day95.purge_after, Some(day(90)));
    assert_eq!(day95.final_purge_at, Some(day(102)));
    assert_eq!(day95.reactivation_deadline, Some(day(102)));
    assert_eq!(day95.purge, PurgeStep::Plan);
    assert_eq!(blocked_by(&day95), None);
    // The purge reminder a day before it (the 7-day one went with the
    // announcement).
    assert_eq!(day95.wake_at, Some(day(101)));
    let kinds: Vec<NoticeKind> = day95.notices.iter().map(|n| n.kind).collect();
    assert_eq!(kinds, [NoticeKind::PurgeReminder]);
    assert_eq!(events(&day95.history), vec![(day(95), "PurgeScheduled")]);
    assert_eq!(
        world.status().purge_plan,
        Some(plan()),
        "the plan is up for review"
    );
    assert_eq!(world.status().final_purge_at, Some(day(102)));

    let before = world.reconcile(day(102) - hours(1));
    assert_eq!(before.phase, PurgeScheduled);
    assert!(before.history.is_empty());

    // Day 102: the purge starts and asks for the namespace to be deleted.
    let day102 = world.reconcile(day(102));
    assert_eq!(day102.phase, Purging);
    assert!(deletes(&day102), "{:?}", day102.purge);
    assert_eq!(day102.verdict.progress, Progress::Reconciling);
    assert!(day102.access_revoked);
    assert_eq!(events(&day102.history), vec![(day(102), "Purging")]);

    // The namespace takes a while to go; then the tombstone, once.
    let waiting = world.reconcile(day(102) + hours(1));
    assert_eq!(waiting.phase, Purging);
    assert!(!deletes(&waiting), "the delete was sent: it waits");
    assert!(waiting.history.is_empty());

    world.namespace = Namespace::Missing;
    let gone = world.reconcile(day(102) + hours(3));
    assert_eq!(gone.phase, Purged);
    let expected = Tombstone {
        name: NAME.into(),
        display_name: Some("Acme Corp".into()),
        tax_id: Some("12.345.678/0001-90".into()),
        created_at: day(-365),
        offboarded_at: Some(day(0)),
        reason: Some(OffboardingReason::NonPayment),
        ticket: Some("FIN-77".into()),
        export_provided: false,
        purged_at: day(102) + hours(3),
        deleted: deleted(),
        system: system(),
    };
    assert_eq!(gone.purge, PurgeStep::WriteTombstone(expected.clone()));
    assert_eq!(world.status().tombstone, Some(expected.clone()));
    assert_eq!(events(&gone.history), vec![(day(102) + hours(3), "Purged")]);
    assert_eq!(gone.history[0].reason, "NonPayment");
    assert!(gone.history[0].message.contains("FIN-77"));
    assert!(gone.verdict.ready);

    // Later decisions never rewrite it, whatever the spec says.
    world.spec.display_name = Some("Acme Renamed".into());
    world.spec.tax_id = None;
    world.spec.deletion = None;
    world.spec.offboarding = offboarding(OffboardingReason::Other, Some("OPS-1"), None);
    for (n, lifecycle) in [
        (150, Lifecycle::Disabled),
        (200, Lifecycle::Archived),
        (300, Lifecycle::Active),
    ] {
        world.spec.lifecycle = lifecycle;
        let later = world.reconcile(day(n));
        assert_eq!(later.phase, Purged);
        assert_eq!(later.purge, PurgeStep::None);
        assert!(later.history.is_empty());
        assert_eq!(later.wake_at, None);
        assert_eq!(world.status().tombstone, Some(expected.clone()));
    }
    assert_eq!(
        names(&world.status().history),
        vec![
            "Disabled",
            "PurgeScheduled",
            "PurgeReminder",
            "PurgeReminder",
            "Purging",
            "Purged",
            "FinalConfirmation"
        ]
    );
}

// ---------------------------------------------------------------------------
// Deadlines
// ---------------------------------------------------------------------------

#[test]
fn an_archived_org_is_purged_after_its_data_retention_and_the_final_grace() {
    let mut world = World::new(
        archived(Some("CS-12"), Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}}),
    );

    // Seen two days late: dated to the effective date.
    let seen = world.reconcile(day(2));
    assert_eq!(seen.phase, Archived);
    assert!(seen.access_revoked);
    assert_eq!(seen.archived_at, Some(day(0)));
    assert_eq!(seen.disabled_at, None);
    assert_eq!(seen.purge_after, Some(day(30)));
    assert_eq!(seen.final_purge_at, Some(day(37)));
    assert_eq!(seen.reactivation_deadline, Some(day(37)));
    assert_eq!(seen.wake_at, Some(day(30)));
    assert_eq!(events(&seen.history), vec![(day(0), "Archived")]);
    assert_eq!(seen.history[0].reason, "CustomerRequest");
    assert!(seen.history[0].message.contains("CS-12"));

    assert_eq!(world.reconcile(day(30) - hours(1)).phase, Archived);

    let due = world.reconcile(day(30));
    assert_eq!(due.phase, PurgeScheduled);
    assert_eq!(due.purge, PurgeStep::Plan);
    // The purge reminder a day before it (the 7-day one is due now).
    assert_eq!(due.wake_at, Some(day(36)));
    assert_eq!(events(&due.history), vec![(day(30), "PurgeScheduled")]);

    assert_eq!(world.reconcile(day(37) - hours(1)).phase, PurgeScheduled);
    let purging = world.reconcile(day(37));
    assert_eq!(purging.phase, Purging);
    assert!(deletes(&purging), "{:?}", purging.purge);
    assert_eq!(events(&purging.history), vec![(day(37), "Purging")]);
}

#[test]
fn a_disabled_org_is_kept_for_disabled_retention_days_not_data_retention_days() {
    let mut world = World::new(
        disabled(None, None),
        json!({
            "organization": {"disabledRetentionDays": 14},
            "cancellation": {"dataRetentionDays": 400},
            "purge": {"finalGraceDays": 2},
        }),
    );
    let decision = world.reconcile(day(0));
    assert_eq!(decision.purge_after, Some(day(14)));
    assert_eq!(decision.final_purge_at, Some(day(16)));
}

#[test]
fn a_controller_back_after_the_final_purge_date_tells_the_whole_story_and_starts_the_purge() {
    let mut world = World::new(
        archived(None, None),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}}),
    );
    world.reconcile(day(0));
    let late = world.reconcile(day(50));
    assert_eq!(late.phase, Purging);
    assert_eq!(
        events(&late.history),
        vec![(day(30), "PurgeScheduled"), (day(37), "Purging")]
    );
    assert_eq!(
        world.status().purge_plan,
        Some(plan()),
        "the plan is counted as the purge starts, before anything is deleted"
    );
}

#[test]
fn a_purge_first_seen_long_overdue_still_gets_a_full_final_grace_for_review() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}}),
    );
    let first_sight = world.reconcile(day(400));
    assert_eq!(first_sight.phase, PurgeScheduled);
    assert_eq!(first_sight.final_purge_at, Some(day(407)));
    assert_eq!(world.reconcile(day(406)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(407)).phase, Purging);
}

#[test]
fn retention_extend_until_pushes_purge_after_and_the_purge_with_it() {
    let rules = json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}});
    let mut world = World::new(archived(None, Some(day(0))), rules.clone());
    world.spec.retention = Some(Retention {
        extend_until: Some(day(100)),
    });
    let seen = world.reconcile(day(1));
    assert_eq!(seen.purge_after, Some(day(100)));
    assert_eq!(seen.final_purge_at, Some(day(107)));
    assert_eq!(seen.wake_at, Some(day(100)));

    assert_eq!(
        world.reconcile(day(37)).phase,
        Archived,
        "the retention alone would purge now"
    );
    assert_eq!(world.reconcile(day(100)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(107) - hours(1)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(107)).phase, Purging);

    // An extension that ends before the retention changes nothing.
    let mut world = World::new(archived(None, Some(day(0))), rules);
    world.spec.retention = Some(Retention {
        extend_until: Some(day(10)),
    });
    assert_eq!(world.reconcile(day(1)).purge_after, Some(day(30)));
}

#[test]
fn skip_retention_with_approval_and_confirmation_purges_after_only_the_final_grace() {
    let mut world = World::new(
        archived(Some("CS-3"), Some(day(0))),
        json!({"purge": {"requireConfirmation": true, "finalGraceDays": 7}}),
    );
    let seen = world.reconcile(day(0));
    assert_eq!(
        seen.purge_after,
        Some(day(365)),
        "the built-in data retention"
    );
    assert_eq!(blocked_by(&seen), Some("AwaitingConfirmation"));

    world.spec.deletion = confirmed_skipping_retention();
    let confirmed = world.reconcile(day(10));
    assert_eq!(confirmed.phase, PurgeScheduled);
    assert_eq!(confirmed.deletion_confirmed_at, Some(day(10)));
    assert_eq!(confirmed.purge_after, Some(day(10)));
    assert_eq!(confirmed.final_purge_at, Some(day(17)));
    assert_eq!(confirmed.purge, PurgeStep::Plan);

    assert_eq!(world.reconcile(day(17) - hours(1)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(17)).phase, Purging);
}

#[test]
fn skip_retention_without_approval_does_not_skip_it() {
    let mut world = World::new(archived(None, Some(day(0))), json!({}));
    world.spec.deletion = Some(DeletionRequest {
        approval: None,
        ..confirmed_skipping_retention().unwrap()
    });
    let decision = world.reconcile(day(10));
    assert_eq!(decision.phase, Archived);
    assert_eq!(decision.purge_after, Some(day(365)));
    assert_eq!(decision.final_purge_at, Some(day(372)));
}

#[test]
fn skip_retention_still_waits_for_extend_until() {
    let mut world = World::new(archived(None, Some(day(0))), json!({}));
    world.spec.retention = Some(Retention {
        extend_until: Some(day(50)),
    });
    world.spec.deletion = confirmed_skipping_retention();
    let decision = world.reconcile(day(10));
    assert_eq!(decision.purge_after, Some(day(50)));
    assert_eq!(decision.final_purge_at, Some(day(57)));
    assert_eq!(decision.phase, Archived);
}

// ---------------------------------------------------------------------------
// Holds
// ---------------------------------------------------------------------------

#[test]
fn a_hold_placed_on_an_org_scheduled_for_purge_blocks_it_and_keeps_it_archived() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(31)).phase, PurgeScheduled);
    assert_eq!(world.status().purge_plan, Some(plan()));

    world.holds = vec![hold("legal", Some("LEGAL-1"), None)];
    let held = world.reconcile(day(33));
    assert_eq!(held.phase, Archived);
    assert_eq!(blocked_by(&held), Some("Held"));
    assert!(
        condition(&held, "PurgeBlocked")
            .unwrap()
            .message
            .contains("legal")
    );
    assert_eq!(held.final_purge_at, None);
    assert_eq!(held.reactivation_deadline, None);
    assert_eq!(held.purge, PurgeStep::None);
    assert_eq!(held.holds, vec!["legal"]);
    assert_eq!(
        held.wake_at, None,
        "a hold without until waits for its removal"
    );
    assert_eq!(names(&held.history), vec!["HoldPlaced", "PurgeDeferred"]);
    let placed = &held.history[0];
    assert_eq!(
        (placed.at, placed.reason.as_str()),
        (day(33), "RetentionHold")
    );
    assert!(placed.message.contains("legal") && placed.message.contains("LEGAL-1"));
    assert_eq!(world.status().holds, vec!["legal"]);
    assert_eq!(
        world.status().purge_plan,
        None,
        "nothing is up for review while held"
    );

    let much_later = world.reconcile(day(400));
    assert_eq!(much_later.phase, Archived);
    assert_eq!(much_later.purge, PurgeStep::None);
    assert!(much_later.history.is_empty());
}

#[test]
fn a_hold_on_an_entitlement_in_the_namespace_blocks_the_organizations_purge() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.holds = vec![Hold {
        target: HoldTarget::Entitlement {
            namespace: NAMESPACE.into(),
            name: "seat".into(),
        },
        ..hold("seat-evidence", Some("LEGAL-5"), None)
    }];
    let held = world.reconcile(day(60));
    assert_eq!(held.phase, Archived);
    assert_eq!(blocked_by(&held), Some("Held"));
    let message = &condition(&held, "PurgeBlocked").unwrap().message;
    assert!(
        message.contains("seat-evidence (on Entitlement org-acme/seat)"),
        "{message}"
    );
}

#[test]
fn the_organizations_purge_waits_for_the_latest_locked_retention_of_an_entitlement_in_it() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    let lock = |entitlement: &str, cancelled_at: Option<Time>, days: i64| EntitlementLock {
        entitlement: format!("{NAMESPACE}/{entitlement}"),
        cancelled_at,
        retention: Some(LockedRetention {
            minimum: TimeDelta::days(days),
            policy: "LifecyclePolicy/legal".into(),
        }),
        final_grace: None,
    };
    world.entitlement_locks = vec![
        lock("short", Some(day(-100)), 120),
        lock("audited", None, 400),
    ];
    let archived = world.reconcile(day(1));
    assert_eq!(archived.purge_after, Some(day(400)));
    let locked_by = world.status().retention_locked_by.clone().unwrap();
    assert_eq!(locked_by.entitlement, "org-acme/audited");
    assert_eq!(locked_by.policy, "LifecyclePolicy/legal");
    assert_eq!(
        world.reconcile(day(60)).phase,
        Archived,
        "not purged on day 37"
    );
    assert_eq!(world.reconcile(day(400)).phase, PurgeScheduled);
}

#[test]
fn a_locked_final_grace_of_an_entitlement_in_the_namespace_delays_the_organizations_purge() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.entitlement_locks = vec![EntitlementLock {
        entitlement: format!("{NAMESPACE}/audited"),
        cancelled_at: None,
        retention: None,
        final_grace: Some(TimeDelta::days(21)),
    }];
    assert_eq!(world.reconcile(day(1)).final_purge_at, Some(day(51)));
}

#[test]
fn an_approved_skip_of_the_retention_after_the_archival_moves_the_purge_to_the_confirmation() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 365}}),
    );
    assert_eq!(world.reconcile(day(1)).final_purge_at, Some(day(372)));
    world.spec.deletion = confirmed_skipping_retention();
    let skipped = world.reconcile(day(10));
    assert_eq!(skipped.purge_after, Some(day(10)));
    assert_eq!(
        skipped.final_purge_at,
        Some(day(17)),
        "the confirmation plus the final grace"
    );
    assert_eq!(world.reconcile(day(17)).phase, Purging);
}

#[test]
fn skip_retention_never_skips_a_locked_retention() {
    let mut world = World::new(
        OrganizationSpec {
            deletion: confirmed_skipping_retention(),
            ..archived(None, Some(day(0)))
        },
        json!({"cancellation": {"dataRetentionDays": 365}}),
    );
    world.locked_archived = Some(LockedRetention {
        minimum: TimeDelta::days(200),
        policy: "LifecyclePolicy/legal".into(),
    });
    let decided = world.reconcile(day(10));
    assert_eq!(
        decided.purge_after,
        Some(day(200)),
        "the lock, not the confirmation"
    );
}

#[test]
fn a_correction_of_effective_at_moves_the_deadlines_later_at_once_and_earlier_only_after_a_full_grace()
 {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(1));
    assert_eq!(world.reconcile(day(31)).final_purge_at, Some(day(37)));
    // The offboarding really took effect on day 20: every deadline follows.
    world.spec.offboarding.as_mut().unwrap().effective_at = Some(day(20));
    let later = world.reconcile(day(32));
    assert_eq!(later.archived_at, Some(day(20)));
    assert_eq!(later.purge_after, Some(day(50)));
    assert_eq!(later.final_purge_at, Some(day(57)));
    assert_eq!(later.phase, Archived, "no longer due");
    assert_eq!(world.reconcile(day(50)).final_purge_at, Some(day(57)));
    // Corrected back to day 0 on day 52: earlier, but a full grace from the change.
    world.spec.offboarding.as_mut().unwrap().effective_at = Some(day(0));
    let earlier = world.reconcile(day(52));
    assert_eq!(earlier.purge_after, Some(day(30)));
    assert_eq!(
        earlier.final_purge_at,
        Some(day(57)),
        "min(old, change + grace)"
    );
    assert_eq!(world.reconcile(day(56)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(57)).phase, Purging);
}

#[test]
fn a_deliberate_retention_cut_reaches_an_organization_already_scheduled_after_a_full_grace() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 365}, "purge": {"finalGraceDays": 10}}),
    );
    world.reconcile(day(1));
    assert_eq!(world.reconcile(day(365)).final_purge_at, Some(day(375)));
    world.policy = effective(
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 2}}),
    );
    let cut = world.reconcile(day(366));
    assert_eq!(
        cut.final_purge_at,
        Some(day(375)),
        "never later than announced"
    );

    // Cut during the retention, on day 100: earlier, by the old grace of 10 days.
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 365}, "purge": {"finalGraceDays": 10}}),
    );
    world.reconcile(day(1));
    assert_eq!(world.status().final_purge_at, Some(day(375)));
    world.policy = effective(
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 2}}),
    );
    let cut = world.reconcile(day(100));
    assert_eq!(cut.final_purge_at, Some(day(110)));
    assert_eq!(cut.phase, PurgeScheduled);
    assert_eq!(
        world.reconcile(day(105)).final_purge_at,
        Some(day(110)),
        "it stands"
    );
    assert_eq!(world.reconcile(day(110)).phase, Purging);
}

#[test]
fn a_hold_on_a_disabled_org_first_seen_long_overdue_keeps_it_disabled() {
    let mut world = World::new(disabled(Some("FIN-1"), Some(day(0))), json!({}));
    world.holds = vec![hold("dispute", None, None)];
    let seen = world.reconcile(day(300));
    assert_eq!(seen.phase, Disabled);
    assert!(seen.access_revoked);
    assert_eq!(seen.purge_after, Some(day(90)));
    assert_eq!(seen.final_purge_at, None);
    assert_eq!(blocked_by(&seen), Some("Held"));
    assert_eq!(
        events(&seen.history),
        vec![(day(0), "Disabled"), (day(300), "HoldPlaced")],
        "newest last"
    );
}

#[test]
fn a_hold_outranks_a_missing_confirmation_and_export() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"purge": {"requireConfirmation": true, "requireExport": true}}),
    );
    world.holds = vec![hold("legal", None, None)];
    assert_eq!(blocked_by(&world.reconcile(day(400))), Some("Held"));
    world.holds.clear();
    assert_eq!(
        blocked_by(&world.reconcile(day(401))),
        Some("AwaitingConfirmation")
    );
    world.spec.deletion = confirmed();
    assert_eq!(
        blocked_by(&world.reconcile(day(402))),
        Some("AwaitingExport")
    );
}

#[test]
fn holds_add_up_and_lifting_the_last_restarts_the_full_final_grace_from_the_lift() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}}),
    );
    world.holds = vec![
        hold("legal", Some("LEGAL-1"), None),
        hold("dispute", Some("CS-9"), None),
    ];
    let placed = world.reconcile(day(10));
    assert_eq!(placed.holds, vec!["dispute", "legal"]);
    assert_eq!(
        names(&placed.history),
        vec!["Archived", "HoldPlaced", "HoldPlaced"]
    );
    assert!(placed.history[1].message.contains("CS-9"));
    assert!(placed.history[2].message.contains("LEGAL-1"));

    let overdue = world.reconcile(day(40));
    assert_eq!(overdue.phase, Archived);
    assert_eq!(blocked_by(&overdue), Some("Held"));

    // One of two lifted: still held, no grace runs.
    world.holds.retain(|h| h.name != "legal");
    let one = world.reconcile(day(50));
    assert_eq!(one.phase, Archived);
    assert_eq!(blocked_by(&one), Some("Held"));
    assert_eq!(one.holds, vec!["dispute"]);
    assert_eq!(one.last_hold_lifted_at, None);
    assert_eq!(one.final_purge_at, None);
    assert_eq!(events(&one.history), vec![(day(50), "HoldLifted")]);
    assert!(one.history[0].message.contains("legal"));

    // The last lifted: the full final grace from the lift, never straight to deletion.
    world.holds.clear();
    let last = world.reconcile(day(60));
    assert_eq!(last.last_hold_lifted_at, Some(day(60)));
    assert_eq!(last.phase, PurgeScheduled);
    assert_eq!(last.final_purge_at, Some(day(67)));
    assert_eq!(last.purge, PurgeStep::Plan);
    assert_eq!(blocked_by(&last), None);
    assert_eq!(
        events(&last.history),
        vec![(day(60), "HoldLifted"), (day(60), "PurgeScheduled")]
    );
    assert!(world.status().holds.is_empty());

    assert_eq!(world.reconcile(day(67) - hours(1)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(67)).phase, Purging);
}

#[test]
fn a_hold_with_until_lapses_by_itself_and_the_controller_wakes_for_it() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 7}}),
    );
    world.holds = vec![hold("audit", Some("AUD-4"), Some(day(45)))];
    let held = world.reconcile(day(5));
    assert_eq!(held.holds, vec!["audit"]);
    assert_eq!(held.wake_at, Some(day(45)));
    assert_eq!(world.reconcile(day(45) - hours(1)).phase, Archived);

    // The object is still there; it lapsed.
    let lapsed = world.reconcile(day(45));
    assert!(lapsed.holds.is_empty());
    assert_eq!(
        events(&lapsed.history),
        vec![(day(45), "HoldLifted"), (day(45), "PurgeScheduled")]
    );
    assert!(lapsed.history[0].message.contains("lapsed"));
    assert_eq!(lapsed.last_hold_lifted_at, Some(day(45)));
    assert_eq!(lapsed.phase, PurgeScheduled);
    assert_eq!(lapsed.final_purge_at, Some(day(52)));
    // The purge reminder a day before it.
    assert_eq!(lapsed.wake_at, Some(day(51)));
}

#[test]
fn a_hold_lapsing_before_the_retention_ends_wakes_the_controller_first() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.holds = vec![hold("audit", None, Some(day(20)))];
    assert_eq!(world.reconcile(day(1)).wake_at, Some(day(20)));
    let lapsed = world.reconcile(day(20));
    assert_eq!(lapsed.phase, Archived);
    assert_eq!(lapsed.purge_after, Some(day(30)));
    assert_eq!(lapsed.final_purge_at, Some(day(37)));
    assert_eq!(lapsed.wake_at, Some(day(30)));
}

// ---------------------------------------------------------------------------
// Coming back
// ---------------------------------------------------------------------------

#[test]
fn disabling_then_enabling_restores_access_and_records_enabled() {
    let mut world = World::new(organization(), json!({}));
    let active = world.reconcile(day(0));
    assert_eq!(active.phase, Active);
    assert!(!active.access_revoked);
    assert!(active.history.is_empty());

    world.spec = disabled(Some("FIN-2"), None);
    let off = world.reconcile(day(3));
    assert_eq!(off.phase, Disabled);
    assert!(off.access_revoked);

    world.spec.lifecycle = Lifecycle::Active;
    let on = world.reconcile(day(10));
    assert_eq!(on.phase, Active);
    assert!(!on.access_revoked);
    assert_eq!(on.disabled_at, None);
    assert_eq!(on.purge_after, None);
    assert_eq!(on.final_purge_at, None);
    assert_eq!(on.wake_at, None);
    assert_eq!(events(&on.history), vec![(day(10), "Enabled")]);
    assert_eq!(names(&world.status().history), vec!["Disabled", "Enabled"]);
}

#[test]
fn unarchiving_during_purge_scheduled_brings_it_back_and_drops_the_plan() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(31)).phase, PurgeScheduled);
    assert_eq!(world.status().purge_plan, Some(plan()));

    world.spec.lifecycle = Lifecycle::Active;
    let back = world.reconcile(day(32));
    assert_eq!(back.phase, Active);
    assert!(!back.access_revoked);
    assert_eq!(back.purge, PurgeStep::None);
    assert!(!refused(&back));
    assert_eq!(events(&back.history), vec![(day(32), "Unarchived")]);
    let status = world.status();
    assert_eq!(status.purge_plan, None);
    assert_eq!((status.archived_at, status.final_purge_at), (None, None));
}

#[test]
fn enabling_during_purge_scheduled_brings_it_back_and_records_enabled() {
    let mut world = World::new(disabled(None, Some(day(0))), json!({}));
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(91)).phase, PurgeScheduled);

    world.spec.lifecycle = Lifecycle::Active;
    let back = world.reconcile(day(92));
    assert_eq!(back.phase, Active);
    assert!(!back.access_revoked);
    assert_eq!(events(&back.history), vec![(day(92), "Enabled")]);
}

#[test]
fn archiving_a_disabled_org_records_archived_and_restarts_retention() {
    let mut world = World::new(
        disabled(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 365}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(92)).phase, PurgeScheduled);

    world.spec = archived(Some("CS-5"), Some(day(93)));
    let archived = world.reconcile(day(93));
    assert_eq!(archived.phase, Archived);
    assert_eq!(archived.disabled_at, Some(day(0)));
    assert_eq!(archived.archived_at, Some(day(93)));
    assert_eq!(archived.purge_after, Some(day(93 + 365)));
    assert_eq!(names(&archived.history), vec!["Archived", "PurgeDeferred"]);
    assert!(archived.history[0].message.contains("CS-5"));
}

#[test]
fn enabling_or_unarchiving_once_purging_is_refused_and_the_purge_runs_on() {
    for offboarded in [
        archived(Some("CS-7"), Some(day(0))),
        disabled(Some("FIN-7"), Some(day(0))),
    ] {
        let mut world = World::new(
            offboarded,
            json!({
                "cancellation": {"dataRetentionDays": 30},
                "organization": {"disabledRetentionDays": 30},
            }),
        );
        world.reconcile(day(0));
        assert_eq!(world.reconcile(day(37)).phase, Purging);

        world.spec.lifecycle = Lifecycle::Active;
        let refused_while_purging = world.reconcile(day(37) + hours(1));
        assert_eq!(refused_while_purging.phase, Purging);
        assert_eq!(
            world.namespace,
            Namespace::Terminating { by_purge: true },
            "the purge runs on"
        );
        assert!(refused_while_purging.access_revoked);
        assert!(refused(&refused_while_purging));
        assert!(
            refused_while_purging.history.is_empty(),
            "neither Enabled nor Unarchived"
        );

        world.namespace = Namespace::Missing;
        let purged = world.reconcile(day(38));
        assert_eq!(purged.phase, Purged);
        assert!(matches!(purged.purge, PurgeStep::WriteTombstone(_)));
        assert!(refused(&purged));

        let after = world.reconcile(day(60));
        assert_eq!(after.phase, Purged);
        assert!(after.access_revoked);
        assert!(refused(&after));
        assert!(after.history.is_empty());
        assert!(world.status().tombstone.is_some());
    }
}

#[test]
fn objects_outliving_the_deleted_namespace_are_deleted_with_it_again_before_the_tombstone() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 0}}),
    );
    world.reconcile(day(0));
    assert!(deletes(&world.reconcile(day(30))));
    world.namespace = Namespace::Missing;
    world.remnants = BTreeMap::from([("ConfigMap".into(), 2), ("Entitlement".into(), 1)]);

    let remnants = world.reconcile(day(30) + hours(1));
    assert_eq!(remnants.phase, Purging);
    assert_eq!(remnants.purge, PurgeStep::RecreateNamespace);
    assert_eq!(remnants.verdict.reason, "NamespaceRemnants");
    assert!(
        remnants
            .verdict
            .message
            .contains("ConfigMap: 2, Entitlement: 1"),
        "{}",
        remnants.verdict.message
    );
    assert!(remnants.history.is_empty());
    assert_eq!(world.status().tombstone, None);

    // Under a hold, nothing is deleted again: the hold's verdict stands.
    world.holds = vec![hold("legal", None, None)];
    let held = world.reconcile(day(30) + hours(2));
    assert_eq!(held.purge, PurgeStep::None);
    assert_eq!(held.verdict.reason, "Held");
    world.holds.clear();

    // Created again and deleted again: the tombstone once nothing is left.
    world.namespace = Namespace::Owned;
    let deleted_at = world.status().namespace_deleted_at;
    assert!(deleted_at.is_some());
    // A hold placed once it is created again keeps it: still the purge,
    // its first deletion's date and plan kept, nothing deleted.
    // Closed to traffic meanwhile, and woken when a hold with an end lapses.
    let plan = world.status().purge_plan.clone();
    world.holds = vec![hold("legal", None, Some(day(40)))];
    let kept = world.reconcile(day(30) + hours(2) + TimeDelta::minutes(30));
    assert_eq!(kept.phase, Purging);
    assert_eq!(kept.purge, PurgeStep::None);
    assert_eq!(kept.verdict.reason, "Held");
    assert_eq!(blocked_by(&kept), Some("Held"));
    assert!(kept.govern_access && kept.access_revoked);
    assert_eq!(kept.wake_at, Some(day(40)));
    assert_eq!(world.status().namespace_deleted_at, deleted_at);
    assert_eq!(world.status().purge_plan, plan);
    world.holds.clear();
    assert!(deletes(&world.reconcile(day(30) + hours(3))));
    assert_eq!(world.status().namespace_deleted_at, deleted_at);
    world.namespace = Namespace::Missing;
    world.remnants.clear();
    let purged = world.reconcile(day(30) + hours(4));
    assert_eq!(purged.phase, Purged);
    assert!(matches!(purged.purge, PurgeStep::WriteTombstone(_)));
    assert_eq!(
        events(&purged.history),
        vec![(day(30) + hours(4), "Purged")]
    );
}

#[test]
fn unarchiving_to_disabled_once_purging_is_refused_too() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(37)).phase, Purging);
    world.spec.lifecycle = Lifecycle::Disabled;
    let purging = world.reconcile(day(38));
    assert_eq!(purging.phase, Purging);
    assert!(refused(&purging));
    world.namespace = Namespace::Missing;
    assert!(refused(&world.reconcile(day(39))));
    assert!(refused(&world.reconcile(day(40))));
}

#[test]
fn keeping_the_offboarded_lifecycle_while_purging_is_not_a_refused_change() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    assert!(!refused(&world.reconcile(day(37))));
    assert!(!refused(&world.reconcile(day(38))));
    world.namespace = Namespace::Missing;
    assert!(!refused(&world.reconcile(day(39))));
    assert!(!refused(&world.reconcile(day(40))));
}

// ---------------------------------------------------------------------------
// Export
// ---------------------------------------------------------------------------

#[test]
fn require_export_blocks_the_purge_until_a_data_export_succeeded() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"requireExport": true}}),
    );
    let seen = world.reconcile(day(1));
    assert_eq!(blocked_by(&seen), Some("AwaitingExport"));
    assert!(
        condition(&seen, "PurgeBlocked")
            .unwrap()
            .message
            .contains("DataExport")
    );

    let overdue = world.reconcile(day(60));
    assert_eq!(overdue.phase, Archived);
    assert_eq!(overdue.final_purge_at, None);
    assert_eq!(blocked_by(&overdue), Some("AwaitingExport"));

    world.exported("acme-export-1");
    let exported = world.reconcile(day(61));
    assert_eq!(blocked_by(&exported), None);
    assert!(matches!(exported.phase, PurgeScheduled | Purging));
    let mut at = day(61);
    while world.status().phase != Some(Purging) {
        at += TimeDelta::days(1);
        world.reconcile(at);
    }
    world.namespace = Namespace::Missing;
    match world.reconcile(at + hours(1)).purge {
        PurgeStep::WriteTombstone(tombstone) => assert!(tombstone.export_provided),
        other => panic!("expected the tombstone, got {other:?}"),
    }
}

#[test]
fn an_export_during_retention_lets_the_purge_run_on_time() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"requireExport": true}}),
    );
    assert_eq!(blocked_by(&world.reconcile(day(1))), Some("AwaitingExport"));
    world.exported("acme-export-1");
    let exported = world.reconcile(day(2));
    assert_eq!(blocked_by(&exported), None);
    assert_eq!(exported.phase, Archived);
    assert_eq!(exported.final_purge_at, Some(day(37)));
    assert_eq!(exported.wake_at, Some(day(30)));
    assert_eq!(world.reconcile(day(30)).phase, PurgeScheduled);
    assert_eq!(world.reconcile(day(37)).phase, Purging);
}

// ---------------------------------------------------------------------------
// Resuming a purge
// ---------------------------------------------------------------------------

#[test]
fn a_purge_resumed_after_restarts_deletes_the_namespace_again_and_counts_the_frozen_plan_once() {
    let mut world = World::new(
        archived(Some("CS-8"), Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    world.reconcile(day(30));
    assert_eq!(world.reconcile(day(37)).phase, Purging);
    assert_eq!(world.status().purge_plan, Some(plan()));

    // The namespace is being deleted: a second measure would count less, but
    // the plan recorded as the purge started is what the tombstone says.
    world.measured = PurgePlan {
        objects: BTreeMap::from([("ConfigMap".to_string(), 1)]),
        system: BTreeMap::new(),
        namespaces: vec!["org-acme".into()],
        uncounted: Vec::new(),
    };
    for h in 1..=4 {
        // Each reconcile is a fresh controller (a restart) reading the status,
        // killed before its delete was sent.
        world.namespace = Namespace::Owned;
        let resumed = world.reconcile(day(37) + hours(h));
        assert_eq!(resumed.phase, Purging);
        assert_eq!(
            resumed.purge,
            PurgeStep::DeleteNamespace { freeze_plan: false },
            "asked again, idempotently"
        );
        assert!(resumed.history.is_empty());
        assert_eq!(world.status().purge_plan, Some(plan()));
        assert_eq!(world.status().tombstone, None);
    }

    // A crash between deciding Purged and writing it: nothing was written.
    world.namespace = Namespace::Missing;
    let lost = decide(&world.input(day(38)));
    assert_eq!(lost.phase, Purged);

    let purged = world.reconcile(day(38) + hours(1));
    assert_eq!(purged.phase, Purged);
    let tombstone = world.status().tombstone.clone().expect("written");
    assert_eq!(
        tombstone.deleted,
        deleted(),
        "the frozen plan, counted once"
    );
    assert_eq!(tombstone.purged_at, day(38) + hours(1));
    assert_eq!(tombstone.ticket.as_deref(), Some("CS-8"));

    for h in 2..6 {
        let again = world.reconcile(day(38) + hours(h));
        assert_eq!(again.phase, Purged);
        assert_eq!(again.purge, PurgeStep::None);
        assert_eq!(world.status().tombstone.as_ref(), Some(&tombstone));
    }
    let purged_entries = world
        .status()
        .history
        .iter()
        .filter(|e| e.event == "Purged")
        .count();
    assert_eq!(purged_entries, 1);
}

#[test]
fn a_tombstone_already_written_is_never_replaced_by_a_later_decision() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    world.reconcile(day(37));
    world.namespace = Namespace::Missing;
    world.reconcile(day(38));
    let first = world.status().tombstone.clone().unwrap();

    // Even a decision carrying another tombstone does not overwrite it.
    let mut other = first.clone();
    other.purged_at = day(99);
    let mut decision = decide(&world.input(day(99)));
    decision.purge = PurgeStep::WriteTombstone(other);
    let mut status = world.status().clone();
    decision.write_to(&mut status);
    assert_eq!(status.tombstone, Some(first));
}

#[test]
fn a_hold_placed_after_the_namespace_delete_was_sent_is_noted_and_cannot_stop_it() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(37)).phase, Purging);
    assert_eq!(
        world.namespace,
        Namespace::Terminating { by_purge: true },
        "the delete was sent"
    );
    world.holds = vec![hold("late", None, None)];
    let noted = world.reconcile(day(38));
    assert_eq!(noted.phase, Purging);
    assert_eq!(names(&noted.history), vec!["HoldPlaced"]);
    assert!(
        noted.verdict.message.contains("cannot stop"),
        "{}",
        noted.verdict.message
    );
    // Gone: the export ZIPs are kept while the hold is in force, and the
    // tombstone waits for them.
    world.namespace = Namespace::Missing;
    let kept = world.reconcile(day(39));
    assert_eq!(kept.phase, Purging);
    assert!(!matches!(kept.purge, PurgeStep::WriteTombstone(_)));
    assert!(kept.verdict.message.contains("export ZIPs are kept"));
    world.holds.clear();
    assert_eq!(world.reconcile(day(40)).phase, Purged);
}

#[test]
fn a_hold_placed_while_purging_before_the_namespace_delete_was_sent_stops_the_purge() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(37)).phase, Purging);
    // Killed between recording Purging and sending the delete (so its being
    // sent was never recorded); a hold arrives.
    world.namespace = Namespace::Owned;
    world.status.as_mut().unwrap().namespace_deleted_at = None;
    world.holds = vec![hold("legal", Some("LEGAL-4"), None)];
    let stopped = world.reconcile(day(38));
    assert_eq!(stopped.phase, Archived);
    assert!(!deletes(&stopped));
    assert_eq!(blocked_by(&stopped), Some("Held"));
    assert_eq!(stopped.final_purge_at, None);
    assert_eq!(world.status().namespace_deleted_at, None);
    assert_eq!(names(&stopped.history), vec!["HoldPlaced", "PurgeDeferred"]);

    // Lifted: the final grace runs again in full before anything is deleted.
    world.holds.clear();
    let lifted = world.reconcile(day(50));
    assert_eq!(lifted.phase, PurgeScheduled);
    assert_eq!(lifted.final_purge_at, Some(day(57)));
    assert_eq!(world.reconcile(day(57)).phase, Purging);
}

#[test]
fn a_namespace_that_lost_tenures_label_is_never_deleted_nor_recorded_as_purged() {
    let mut world = World::new(
        archived(None, Some(day(0))),
        json!({"cancellation": {"dataRetentionDays": 30}}),
    );
    world.reconcile(day(0));
    assert_eq!(world.reconcile(day(31)).phase, PurgeScheduled);
    world.namespace = Namespace::NotOwned(None);
    let waiting = world.reconcile(day(37));
    assert_eq!(waiting.phase, PurgeScheduled, "the purge does not start");
    assert_eq!(waiting.verdict.reason, "NamespaceNotOwned");
    assert_eq!(waiting.verdict.progress, Progress::Stalled);
    assert!(!deletes(&waiting));

    // Lost once the purge started: Stalled, never Purged.
    world.namespace = Namespace::Owned;
    assert_eq!(world.reconcile(day(38)).phase, Purging);
    // Lost right before the delete, which the live re-read then refused:
    // its being sent was never recorded.
    world.namespace = Namespace::NotOwned(None);
    world.status.as_mut().unwrap().namespace_deleted_at = None;
    let refused = world.reconcile(day(39));
    assert_eq!(refused.phase, Purging);
    assert_eq!(refused.verdict.reason, "NamespaceNotOwned");
    assert!(!deletes(&refused));
    // Someone else deletes it: still no tombstone for what tenure did not delete.
    world.namespace = Namespace::Missing;
    let gone = world.reconcile(day(40));
    assert_eq!(gone.phase, Purging);
    assert_eq!(gone.verdict.reason, "NamespaceGone");
    assert!(world.status().tombstone.is_none());
}

// ---------------------------------------------------------------------------
// Properties
// ---------------------------------------------------------------------------

/// A change of spec, at some instant.
#[derive(Clone, Debug)]
enum Fact {
    Lifecycle(Lifecycle, Option<Offboarding>),
    ExtendUntil(Option<Time>),
    Deletion(Option<DeletionRequest>),
}

/// A RetentionHold object: created, maybe lapsing by `until`, maybe deleted.
#[derive(Clone, Debug)]
struct HoldFact {
    hold: Hold,
    placed: Time,
    removed: Option<Time>,
}

#[derive(Clone, Debug)]
struct Case {
    rules: Value,
    /// Spec changes, in time order.
    facts: Vec<(Time, Fact)>,
    holds: Vec<HoldFact>,
    /// When a DataExport of the organization succeeded.
    exported_at: Option<Time>,
    /// The reconciles: when, and whether the status write was lost (a crash
    /// between deciding and writing).
    nows: Vec<(Time, bool)>,
    /// How many reconciles after the first recorded purge step the namespace is gone.
    namespace_gone_after: usize,
}

/// An instant in days `range`: whole days most of the time, so that facts and
/// deadlines often fall on the same instant.
fn instant(range: std::ops::Range<i64>) -> impl Strategy<Value = Time> {
    (range, prop_oneof![3 => Just(0i64), 1 => 1i64..24]).prop_map(|(d, h)| day(d) + hours(h))
}

/// Days of retention or grace, 0..400: now and then none, often a few, so
/// that deadlines collide.
fn days() -> impl Strategy<Value = i64> {
    prop_oneof![1 => Just(0i64), 2 => 1i64..10, 2 => 10i64..60, 1 => 60i64..400]
}

fn rules() -> impl Strategy<Value = Value> {
    (
        days(),
        days(),
        days(),
        days(),
        prop::bool::weighted(0.4),
        prop::bool::weighted(0.25),
    )
        .prop_map(|(disabled, data, portal, grace, confirmation, export)| {
            json!({
                "organization": {"disabledRetentionDays": disabled},
                "cancellation": {"dataRetentionDays": data, "portalVisibilityDays": portal},
                "purge": {
                    "requireConfirmation": confirmation,
                    "finalGraceDays": grace,
                    "requireExport": export,
                },
            })
        })
}

fn fact() -> impl Strategy<Value = (Time, Fact)> {
    let lifecycle = prop_oneof![
        1 => Just(Lifecycle::Active),
        2 => Just(Lifecycle::Disabled),
        2 => Just(Lifecycle::Archived),
    ];
    let change = (
        instant(0..300),
        lifecycle,
        reason(),
        prop::option::of(Just("OPS-1")),
        prop::option::weighted(0.4, 0i64..120),
    )
        .prop_map(|(at, lifecycle, reason, ticket, backdated)| {
            let offboarding = match lifecycle {
                Lifecycle::Active => None,
                _ => offboarding(reason, ticket, backdated.map(|d| at - TimeDelta::days(d))),
            };
            (at, Fact::Lifecycle(lifecycle, offboarding))
        });
    let extend = (
        instant(0..300),
        prop::option::weighted(0.7, instant(0..600)),
    )
        .prop_map(|(at, until)| (at, Fact::ExtendUntil(until)));
    let deletion = (
        instant(0..400),
        prop::option::weighted(0.8, prop::bool::weighted(0.4)),
    )
        .prop_map(|(at, request)| {
            let request = request.map(|skip| match skip {
                true => confirmed_skipping_retention().unwrap(),
                false => confirmed().unwrap(),
            });
            (at, Fact::Deletion(request))
        });
    prop_oneof![4 => change, 1 => extend, 2 => deletion]
}

fn hold_fact() -> impl Strategy<Value = HoldFact> {
    (
        instant(0..400),
        prop::option::weighted(0.4, -10i64..200),
        prop::option::weighted(0.6, 0i64..200),
        prop::option::of(Just("LEGAL-1")),
    )
        .prop_map(|(placed, until, removed, ticket)| HoldFact {
            hold: hold("hold", ticket, until.map(|d| placed + TimeDelta::days(d))),
            placed,
            removed: removed.map(|d| placed + TimeDelta::days(d)),
        })
}

/// The instants the controller reconciles at, increasing, sometimes days
/// apart, sometimes hours; now and then a write is lost.
fn nows() -> impl Strategy<Value = Vec<(Time, bool)>> {
    let step = prop_oneof![
        3 => (1i64..30).prop_map(TimeDelta::days),
        1 => (30i64..150).prop_map(TimeDelta::days),
        2 => (1i64..48).prop_map(hours),
    ];
    (
        instant(0..3),
        prop::collection::vec((step, prop::bool::weighted(0.1)), 3..30),
    )
        .prop_map(|(first, steps)| {
            let mut now = first;
            let mut nows = vec![(now, false)];
            for (step, lost) in steps {
                now += step;
                nows.push((now, lost));
            }
            nows
        })
}

fn case() -> impl Strategy<Value = Case> {
    (
        rules(),
        prop::collection::vec(fact(), 0..6),
        prop::collection::vec(hold_fact(), 0..3),
        prop::option::weighted(0.3, instant(0..400)),
        nows(),
        1usize..4,
    )
        .prop_map(
            |(rules, mut facts, mut holds, exported_at, nows, namespace_gone_after)| {
                facts.sort_by_key(|(at, _)| *at);
                for (i, fact) in holds.iter_mut().enumerate() {
                    fact.hold.name = format!("hold-{i}");
                }
                Case {
                    rules,
                    facts,
                    holds,
                    exported_at,
                    nows,
                    namespace_gone_after,
                }
            },
        )
}

/// One reconcile of a run: what it saw, what it decided, what it wrote.
struct Step {
    now: Time,
    spec: OrganizationSpec,
    holds: Vec<Hold>,
    namespace: Namespace,
    before: Option<OrganizationStatus>,
    decision: Decision,
    written: bool,
    after: Option<OrganizationStatus>,
}

impl Step {
    fn before_phase(&self) -> Option<OrganizationPhase> {
        self.before.as_ref().and_then(|s| s.phase)
    }

    /// This reconcile decided that the purge starts now.
    fn starts_purge(&self) -> bool {
        self.decision.phase == Purging && self.before_phase() != Some(Purging)
    }

    fn held(&self) -> bool {
        self.holds.iter().any(|h| h.in_force(self.now))
    }
}

impl Case {
    fn spec_at(&self, now: Time) -> OrganizationSpec {
        let mut spec = organization();
        for (_, fact) in self.facts.iter().take_while(|(at, _)| *at <= now) {
            match fact {
                Fact::Lifecycle(lifecycle, offboarding) => {
                    spec.lifecycle = *lifecycle;
                    spec.offboarding = offboarding.clone();
                }
                Fact::ExtendUntil(until) => {
                    spec.retention = until.map(|until| Retention {
                        extend_until: Some(until),
                    })
                }
                Fact::Deletion(request) => spec.deletion = request.clone(),
            }
        }
        spec
    }

    /// The RetentionHold objects that exist at `now` (in force or lapsed).
    fn holds_at(&self, now: Time) -> Vec<Hold> {
        self.holds
            .iter()
            .filter(|h| h.placed <= now && h.removed.is_none_or(|removed| removed > now))
            .map(|h| h.hold.clone())
            .collect()
    }

    fn world(&self) -> World {
        World::new(organization(), self.rules.clone())
    }

    /// Reconciles at every instant of the case, with the facts of that instant.
    fn run(&self) -> (World, Vec<Step>) {
        let mut world = self.world();
        let mut deleting_since = None;
        let mut steps = Vec::new();
        for (i, &(now, lost)) in self.nows.iter().enumerate() {
            world.spec = self.spec_at(now);
            world.holds = self.holds_at(now);
            // Sent after the write of step k, the delete takes a while.
            world.namespace = match deleting_since {
                Some(k) if i >= k + self.namespace_gone_after => Namespace::Missing,
                Some(_) => Namespace::Terminating { by_purge: true },
                None => Namespace::Owned,
            };
            if let (Some(status), Some(at)) = (world.status.as_mut(), self.exported_at)
                && now >= at
                && status.exports.is_empty()
            {
                status.exports.push("acme-export-1".into());
                world.export_available = true;
            }
            let before = world.status.clone();
            let decision = if lost {
                decide(&world.input(now))
            } else {
                world.reconcile(now)
            };
            // Recorded first, done second: the deletion starts once written.
            if !lost && deletes(&decision) {
                deleting_since.get_or_insert(i + 1);
            }
            steps.push(Step {
                now,
                spec: world.spec.clone(),
                holds: world.holds.clone(),
                namespace: world.namespace.clone(),
                before,
                decision,
                written: !lost,
                after: world.status.clone(),
            });
        }
        (world, steps)
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

proptest! {
    #![proptest_config(config())]

    /// 1. The purge starts only when nothing holds it, at or after
    /// `finalPurgeAt`, which lies a full final grace after `purgeAfter`, the
    /// confirmation and the last hold lifted; never before `purgeAfter` nor
    /// `retention.extendUntil`.
    #[test]
    fn the_purge_starts_only_unheld_and_a_full_final_grace_after_its_causes(case in case()) {
        let (world, steps) = case.run();
        let grace = world.policy.days(keys::FINAL_GRACE_DAYS);
        for (i, step) in steps.iter().enumerate() {
            if !step.starts_purge() {
                continue;
            }
            let d = &step.decision;
            let now = step.now;
            prop_assert!(!step.held(), "the purge starts at {now} under a hold in force");
            prop_assert!(step.spec.lifecycle != Lifecycle::Active, "an Active org purged at {now}");
            prop_assert_eq!(d.purge.clone(), PurgeStep::DeleteNamespace { freeze_plan: true });
            prop_assert!(d.holds.is_empty());
            let final_purge_at = d.final_purge_at.expect("Purging has finalPurgeAt");
            let purge_after = d.purge_after.expect("Purging has purgeAfter");
            prop_assert!(now >= final_purge_at, "purging at {now} before finalPurgeAt {final_purge_at}");
            prop_assert!(now >= purge_after, "purging at {now} before purgeAfter {purge_after}");
            prop_assert!(final_purge_at >= purge_after + grace);
            if let Some(lifted) = d.last_hold_lifted_at {
                prop_assert!(final_purge_at >= lifted + grace);
            }
            if let Some(confirmed) = d.deletion_confirmed_at {
                prop_assert!(final_purge_at >= confirmed + grace);
            }
            if let Some(until) = step.spec.retention.as_ref().and_then(|r| r.extend_until) {
                prop_assert!(now >= until && purge_after >= until, "purging at {now} before extendUntil {until}");
            }
            // Independently of what the decision says: a full grace after
            // every recorded reconcile that saw a hold in force ...
            for earlier in steps[..i].iter().filter(|s| s.written && s.held()) {
                prop_assert!(
                    now >= earlier.now + grace,
                    "purging at {now}, held at {} with a final grace of {grace}", earlier.now
                );
            }
            // ... and after the (recorded) confirmation it purges under.
            if step.spec.deletion.is_some() {
                let confirmed = steps[..i]
                    .iter()
                    .rev()
                    .filter(|s| s.written)
                    .take_while(|s| s.spec.deletion.is_some())
                    .last()
                    .map_or(now, |s| s.now);
                prop_assert!(now >= confirmed + grace, "purging at {now}, confirmed at {confirmed}");
            }
        }
    }

    /// 2. Nothing is scheduled for the purge while a hold is in force, without
    /// the confirmation policy asks for, or without the export it asks for; and
    /// with confirmation required and never given, nothing is purged at all.
    #[test]
    fn nothing_is_scheduled_for_the_purge_while_something_blocks_it(case in case()) {
        let (world, steps) = case.run();
        let confirmation = world.policy.flag(keys::REQUIRE_CONFIRMATION);
        let export = world.policy.flag(keys::REQUIRE_EXPORT);
        for step in &steps {
            let d = &step.decision;
            if d.phase == PurgeScheduled || step.starts_purge() {
                prop_assert!(!step.held(), "{:?} at {} under a hold", d.phase, step.now);
                prop_assert!(!confirmation || step.spec.deletion.is_some(), "{:?} unconfirmed", d.phase);
                prop_assert!(
                    !export || step.before.as_ref().is_some_and(|s| !s.exports.is_empty()),
                    "{:?} without an export", d.phase
                );
                prop_assert_eq!(blocked_by(d), None);
            }
            if let Some(reason) = blocked_by(d) {
                prop_assert!(matches!(d.phase, Disabled | Archived), "blocked ({reason}) in {:?}", d.phase);
                prop_assert_eq!(d.final_purge_at, None);
                prop_assert_eq!(d.purge.clone(), PurgeStep::None);
            }
            if step.held() && !matches!(step.before_phase(), Some(Purging | Purged)) {
                prop_assert!(!matches!(d.phase, PurgeScheduled | Purging | Purged), "{:?} while held", d.phase);
            }
        }
        let never_confirmed = steps.iter().all(|s| s.spec.deletion.is_none());
        if confirmation && never_confirmed {
            for step in &steps {
                prop_assert!(
                    matches!(step.decision.phase, Active | Disabled | Archived),
                    "{:?} at {} although never confirmed", step.decision.phase, step.now
                );
            }
        }
    }

    /// 3. Purged only after Purging was recorded and the namespace is gone,
    /// with a tombstone counting the plan recorded as the purge started.
    #[test]
    fn purged_only_after_purging_was_recorded_and_the_namespace_is_gone(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let d = &step.decision;
            if let PurgeStep::WriteTombstone(tombstone) = &d.purge {
                prop_assert_eq!(d.phase, Purged);
                prop_assert_eq!(step.before_phase(), Some(Purging));
                prop_assert_eq!(&step.namespace, &Namespace::Missing);
                prop_assert_eq!(&tombstone.deleted, &deleted());
                prop_assert_eq!(tombstone.purged_at, step.now);
                prop_assert_eq!(tombstone.name.as_str(), NAME);
                prop_assert!(tombstone.offboarded_at.is_some());
                prop_assert_eq!(names(&d.history).last().copied(), Some("Purged"));
            }
            if d.phase == Purged && step.before_phase() != Some(Purged) {
                prop_assert!(matches!(d.purge, PurgeStep::WriteTombstone(_)), "Purged without a tombstone at {}", step.now);
            }
            if step.starts_purge() {
                prop_assert_eq!(d.purge.clone(), PurgeStep::DeleteNamespace { freeze_plan: true });
                if step.written {
                    let after = step.after.as_ref().unwrap();
                    prop_assert_eq!(after.purge_plan.as_ref(), Some(&plan()), "the plan is recorded as the purge starts");
                }
            }
        }
    }

    /// 4. At most one tombstone, never changed once written; once started, the
    /// purge runs to its end, and it always can.
    #[test]
    fn one_tombstone_never_changed_and_a_started_purge_runs_to_its_end(case in case()) {
        let (mut world, steps) = case.run();
        let mut tombstone: Option<Tombstone> = None;
        let mut started = false;
        for step in &steps {
            let d = &step.decision;
            if started {
                prop_assert!(matches!(d.phase, Purging | Purged), "{:?} after the purge started", d.phase);
                if step.spec.lifecycle == Lifecycle::Active {
                    prop_assert!(refused(d), "enabling after the purge started is not refused");
                }
            }
            if let Some(first) = &tombstone {
                prop_assert_eq!(d.phase, Purged);
                prop_assert_eq!(d.purge.clone(), PurgeStep::None);
                prop_assert_eq!(d.wake_at, None);
                let now = step.after.as_ref().and_then(|s| s.tombstone.as_ref());
                prop_assert_eq!(now, Some(first), "the tombstone changed at {}", step.now);
            }
            if step.written {
                let after = step.after.as_ref().unwrap();
                started |= matches!(after.phase, Some(Purging | Purged));
                if tombstone.is_none() {
                    tombstone = after.tombstone.clone();
                }
            }
        }
        let history = &world.status().history;
        for event in ["Purging", "Purged"] {
            prop_assert!(history.iter().filter(|e| e.event == event).count() <= 1, "{event} twice");
        }
        if world.status().phase == Some(Purging) {
            // Once nothing holds it (a hold keeps the export ZIPs).
            let last = steps.last().unwrap().now;
            world.holds.clear();
            world.reconcile(last + hours(1));
            world.namespace = Namespace::Missing;
            prop_assert_eq!(world.reconcile(last + hours(2)).phase, Purged);
            prop_assert!(world.status().tombstone.is_some());
        }
    }

    /// 4b. Nothing is deleted before the announced `finalPurgeAt`, nor while a
    /// hold covering the organization is in force; and an announced purge
    /// never moves earlier than the moment it moved plus a full final grace.
    #[test]
    fn no_delete_early_or_held_and_no_announced_purge_moves_earlier_without_a_full_grace(case in case()) {
        let (world, steps) = case.run();
        let grace = world.policy.days(keys::FINAL_GRACE_DAYS);
        for step in steps.iter().filter(|s| s.written) {
            let d = &step.decision;
            if deletes(d) {
                prop_assert!(!step.held(), "a delete at {} under a hold in force", step.now);
                let announced = d.final_purge_at.expect("a delete has its announced date");
                prop_assert!(step.now >= announced, "a delete at {} before {announced}", step.now);
            }
            let before = step.before.as_ref().and_then(|s| s.final_purge_at);
            if let (Some(before), Some(now)) = (before, d.final_purge_at)
                && now < before
            {
                prop_assert!(now >= step.now + grace, "moved from {before} to {now} at {}", step.now);
            }
        }
    }

    /// 5. The decision is a pure function of its input.
    #[test]
    fn the_same_input_gives_the_same_decision(case in case()) {
        let mut world = case.world();
        for &(now, _) in &case.nows {
            world.spec = case.spec_at(now);
            world.holds = case.holds_at(now);
            let once = decide(&world.input(now));
            let twice = decide(&world.input(now));
            prop_assert_eq!(&once, &twice);
            world.reconcile(now);
        }
    }

    /// 6. Before the purge starts, the deadlines are what API.md says:
    /// `purgeAfter` is the retention after the offboarding (or the approved
    /// confirmation, skipping it), never before `extendUntil`; `finalPurgeAt`
    /// the latest of `purgeAfter`, the confirmation and the last hold lifted,
    /// plus the final grace. Access is revoked exactly while offboarded.
    #[test]
    fn the_deadlines_follow_the_policy_and_the_facts(case in case()) {
        let (world, steps) = case.run();
        let grace = world.policy.days(keys::FINAL_GRACE_DAYS);
        for step in &steps {
            let d = &step.decision;
            if matches!(d.phase, Purging | Purged) && !step.starts_purge() {
                prop_assert!(d.access_revoked);
                continue;
            }
            prop_assert_eq!(d.access_revoked, step.spec.lifecycle != Lifecycle::Active);
            let Some(offboarded) = d.archived_at.or(d.disabled_at) else {
                prop_assert_eq!(d.phase, Active);
                prop_assert_eq!((d.purge_after, d.final_purge_at), (None, None));
                continue;
            };
            let retention = match step.spec.lifecycle {
                Lifecycle::Archived => world.policy.days(keys::DATA_RETENTION_DAYS),
                _ => world.policy.days(keys::DISABLED_RETENTION_DAYS),
            };
            let skip = step.spec.deletion.as_ref().is_some_and(|r| r.skip_retention == Some(true));
            let retained = match (skip, d.deletion_confirmed_at) {
                (true, Some(confirmed)) => confirmed,
                _ => offboarded + retention,
            };
            let extend = step.spec.retention.as_ref().and_then(|r| r.extend_until);
            prop_assert_eq!(d.purge_after, Some(extend.map_or(retained, |until| retained.max(until))));
            if let Some(final_purge_at) = d.final_purge_at {
                let due = [d.purge_after, d.deletion_confirmed_at, d.last_hold_lifted_at]
                    .into_iter()
                    .flatten()
                    .max()
                    .unwrap();
                // At least a grace after what made it due, and after it was
                // first shown (so never less than a grace from the first sight).
                prop_assert!(final_purge_at >= due + grace);
                prop_assert_eq!(d.reactivation_deadline, Some(final_purge_at));
            }
        }
    }

    /// 7. Before the purge the controller wakes for what lies ahead, never for
    /// the past. (A starting purge may wake at its due `finalPurgeAt`, at once:
    /// one more look at the namespace being deleted.)
    #[test]
    fn the_controller_wakes_for_the_next_deadline(case in case()) {
        let (_, steps) = case.run();
        for step in &steps {
            let d = &step.decision;
            if let Some(wake) = d.wake_at
                && !step.starts_purge()
            {
                prop_assert!(wake > step.now, "wakes at {wake}, decided at {}", step.now);
            }
            let lapsing = step.holds.iter().filter(|h| h.in_force(step.now)).filter_map(|h| h.until);
            for until in lapsing.filter(|_| !matches!(d.phase, Purging | Purged)) {
                prop_assert!(d.wake_at.is_some_and(|wake| wake <= until), "does not wake for a hold lapsing at {until}");
            }
            if d.phase == PurgeScheduled {
                prop_assert!(d.wake_at.is_some_and(|wake| Some(wake) <= d.final_purge_at));
            }
            if matches!(d.phase, Disabled | Archived) && blocked_by(d).is_none() {
                prop_assert!(d.wake_at.is_some_and(|wake| Some(wake) <= d.purge_after.max(d.final_purge_at)));
            }
        }
    }
}
