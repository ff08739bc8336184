//! The simulation on scenarios whose dates are known.

use serde_json::json;

use super::*;
use crate::lifecycle::scenario::day;

fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
    serde_json::from_value(value).expect("a valid manifest")
}

fn default_classes() -> Vec<EntitlementClass> {
    vec![object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
        "metadata": {"name": "service"}, "spec": {"codePrefix": "SVC"},
    }))]
}

fn organization(name: &str, spec: serde_json::Value) -> Organization {
    object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
        "metadata": {"name": name}, "spec": spec,
    }))
}

fn entitlement(
    org: Option<&str>,
    namespace: &str,
    name: &str,
    spec: serde_json::Value,
) -> Entitlement {
    let mut spec = spec;
    spec["class"] = json!("service");
    spec["product"] = json!("support");
    if let Some(org) = org {
        spec["organization"] = json!(org);
    }
    object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
        "metadata": {"name": name, "namespace": namespace}, "spec": spec,
    }))
}

fn policy(name: &str, spec: serde_json::Value) -> LifecyclePolicy {
    object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
        "metadata": {"name": name}, "spec": spec,
    }))
}

/// (day, event) of `name`'s transitions, as the controller acts on them.
fn timeline(outcome: &Outcome, name: &str) -> Vec<(i64, String)> {
    outcome
        .transitions
        .iter()
        .filter(|t| t.name == name)
        .map(|t| ((t.decided_at - day(0)).num_days(), t.event.clone()))
        .collect()
}

fn steps(items: &[(i64, &str)]) -> Vec<(i64, String)> {
    items.iter().map(|(d, e)| (*d, e.to_string())).collect()
}

#[test]
fn an_unpaid_organization_disabled_is_purged_97_days_later_after_its_confirmed_hard_delete() {
    let world = World {
        organizations: vec![organization(
            "acme",
            json!({
                "lifecycle": "Disabled",
                "offboarding": {"reason": "NonPayment", "ticket": "FIN-1", "effectiveAt": day(0)},
                "deletion": {"confirmName": "acme"},
            }),
        )],
        entitlements: vec![entitlement(Some("acme"), "org-acme", "support", json!({}))],
        policies: vec![policy(
            "global",
            json!({"purge": {"requireConfirmation": true}}),
        )],
        classes: default_classes(),
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(2 * 365));
    assert_eq!(
        timeline(&outcome, "acme"),
        steps(&[
            (0, "Disabled"),
            (90, "PurgeScheduled"),
            (90, "PurgeReminder"),
            (96, "PurgeReminder"),
            (97, "Purging"),
            (97, "Purged"),
            (97, "FinalConfirmation"),
        ])
    );
    assert_eq!(
        timeline(&outcome, "support"),
        steps(&[(0, "Suspended"), (97, "Deleted")])
    );
    let acme = &outcome.world.organizations[0];
    let tombstone = acme.status.as_ref().unwrap().tombstone.as_ref().unwrap();
    assert_eq!(tombstone.purged_at, day(97));
    assert!(outcome.unsettled.is_empty());
}

#[test]
fn without_its_confirmation_the_same_organization_waits_and_says_so() {
    let world = World {
        organizations: vec![organization(
            "acme",
            json!({
                "lifecycle": "Disabled",
                "offboarding": {"reason": "NonPayment", "effectiveAt": day(0)},
            }),
        )],
        policies: vec![policy(
            "global",
            json!({"purge": {"requireConfirmation": true}}),
        )],
        classes: default_classes(),
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(2 * 365));
    assert_eq!(timeline(&outcome, "acme"), steps(&[(0, "Disabled")]));
}

#[test]
fn a_failed_payment_suspends_and_cancels_after_the_30_day_grace_then_purges_after_365_days_of_retention()
 {
    let world = World {
        entitlements: vec![entitlement(
            None,
            "shop",
            "gift",
            json!({"payment": {"failedAt": day(10)}}),
        )],
        classes: default_classes(),
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(2 * 365));
    // Cancelled at day 40; retention 365 days, then the 7-day final grace.
    assert_eq!(
        timeline(&outcome, "gift"),
        steps(&[
            (0, "Activated"),
            (10, "Suspended"),
            (40, "Cancelled"),
            (40 + 365, "PurgeReminder"),
            (40 + 365 + 6, "PurgeReminder"),
            (40 + 365 + 7, "Purged")
        ])
    );
}

#[test]
fn a_hold_keeps_the_purge_until_it_lapses_and_the_final_grace_runs_again_in_full() {
    let hold: RetentionHold = object(json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "RetentionHold",
        "metadata": {"name": "legal"},
        "spec": {"entitlement": {"namespace": "shop", "name": "gift"}, "reason": "litigation", "until": day(500)},
    }));
    let world = World {
        entitlements: vec![entitlement(
            None,
            "shop",
            "gift",
            json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": day(0)}}),
        )],
        classes: default_classes(),
        holds: vec![hold],
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(2 * 365));
    let gift = timeline(&outcome, "gift");
    assert_eq!(gift.first(), Some(&(0, "Cancelled".to_string())));
    assert!(gift.contains(&(500, "HoldLifted".to_string())), "{gift:?}");
    assert_eq!(gift.last(), Some(&(507, "Purged".to_string())));
}

#[test]
fn nothing_happens_after_the_end_of_the_simulation() {
    let world = World {
        entitlements: vec![entitlement(
            None,
            "shop",
            "gift",
            json!({"payment": {"failedAt": day(10)}}),
        )],
        classes: default_classes(),
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(20));
    assert_eq!(
        timeline(&outcome, "gift"),
        steps(&[(0, "Activated"), (10, "Suspended")])
    );
}

#[test]
fn an_entitlement_whose_class_is_missing_stalls_once_naming_the_field() {
    let world = World {
        entitlements: vec![entitlement(None, "shop", "gift", json!({}))],
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(365));
    assert_eq!(timeline(&outcome, "gift"), steps(&[(0, "Stalled")]));
    assert!(outcome.transitions[0].message.contains("spec.class"));
}

#[test]
fn a_purge_that_requires_an_export_runs_while_one_is_available_and_waits_once_it_expired() {
    let organization_under = |name: &str| {
        organization(
            name,
            json!({
                "lifecycle": "Archived",
                "offboarding": {"reason": "CustomerRequest", "effectiveAt": day(0)},
            }),
        )
    };
    let export = |namespace: &str, expires: i64| -> DataExport {
        object(json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
            "metadata": {"name": "export", "namespace": namespace},
            "spec": {"organization": namespace.trim_start_matches("org-")},
            "status": {
                "phase": "Succeeded", "completedAt": day(0), "expiresAt": day(expires),
                "artifact": {"uri": "file:///x.zip", "sha256": "0", "sizeBytes": 1, "files": 1},
            },
        }))
    };
    let world = World {
        organizations: vec![organization_under("kept"), organization_under("expired")],
        policies: vec![policy(
            "global",
            json!({"purge": {"requireExport": true}, "cancellation": {"dataRetentionDays": 30}}),
        )],
        classes: default_classes(),
        exports: vec![export("org-kept", 400), export("org-expired", 10)],
        ..World::default()
    };
    let outcome = simulate(world, day(0), day(365));
    assert!(timeline(&outcome, "kept").contains(&(37, "Purged".to_string())));
    assert!(
        !timeline(&outcome, "expired")
            .iter()
            .any(|(_, e)| e == "Purged"),
        "{:?}",
        timeline(&outcome, "expired")
    );
}
