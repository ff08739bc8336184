//! The 97-day offboarding path on a clock that runs ten days a second:
//! disabled, 90 days of retention, a confirmed hard delete, 7 days of final
//! grace, the purge and its tombstone.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::json;

const ORIGIN: &str = "2032-01-01T00:00:00Z";

/// Starts this binary's controller (once) on a clock that runs ten days a
/// second from ORIGIN, and returns an instant before it started: its clock
/// never reads more than ORIGIN plus ten days per real second since then.
fn controller_spawned() -> Instant {
    static SPAWNED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *SPAWNED.get_or_init(|| {
        let before = Instant::now();
        start_controller(&["--clock-start", ORIGIN, "--clock-rate", "864000"]);
        before
    })
}

#[test]
fn disabled_for_90_days_confirmed_and_7_days_of_grace_later_purged_with_a_tombstone() {
    let spawned = controller_spawned();
    let origin: DateTime<Utc> = ORIGIN.parse().unwrap();
    let real_seconds_until = |days: i64| Duration::from_secs_f64(days as f64 / 10.0);
    let at = |days: i64| {
        (origin + TimeDelta::days(days)).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    let org = unique("ninety-seven");
    let namespace = format!("org-{org}");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": unique("confirm-first")},
            "spec": {"scope": {"organization": org}, "purge": {"requireConfirmation": true}},
        })
        .to_string(),
    );
    let organization = |deletion: serde_json::Value| {
        apply(
            &json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
                "metadata": {"name": org},
                "spec": {
                    "displayName": "Ninety-Seven Ltd", "taxId": "GB-97",
                    "lifecycle": "Disabled",
                    "offboarding": {"reason": "NonPayment", "ticket": "FIN-97", "effectiveAt": ORIGIN},
                    "deletion": deletion,
                },
            })
            .to_string(),
        )
    };
    organization(serde_json::Value::Null);
    let org_args = ["organization", org.as_str()];
    let disabled = wait_phase(&org_args, "Disabled");
    assert_eq!(disabled["status"]["purgeAfter"], at(90).as_str());
    assert_eq!(
        condition(&disabled, "PurgeBlocked").unwrap()["reason"],
        "AwaitingConfirmation"
    );
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "customer-data", "namespace": namespace},
            "data": {"invoices": "97"},
        })
        .to_string(),
    );

    // The hard delete is confirmed early; the retention still runs its 90 days.
    organization(json!({"confirmName": org}));
    let scheduled = wait_phase(&org_args, "PurgeScheduled");
    assert!(
        spawned.elapsed() >= real_seconds_until(90),
        "scheduled before day 90"
    );
    assert_eq!(scheduled["status"]["finalPurgeAt"], at(97).as_str());
    // The customer's ConfigMap, and apart from it what Kubernetes and tenure
    // made by themselves: kube-root-ca.crt, the default ServiceAccount, the
    // deny-all NetworkPolicy of a Disabled organization.
    let plan = &scheduled["status"]["purgePlan"];
    assert_eq!(plan["objects"], json!({"ConfigMap": 1}), "{plan}");
    assert_eq!(
        plan["system"],
        json!({"ConfigMap": 1, "ServiceAccount": 1, "NetworkPolicy": 1}),
        "{plan}"
    );
    kubectl_ok(&["get", "configmap", "customer-data", "-n", &namespace]);

    let purged = wait_for("the purge", Duration::from_secs(60), || {
        let object = get_json(&org_args)?;
        (object["status"]["phase"] == "Purged")
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert!(
        spawned.elapsed() >= real_seconds_until(97),
        "purged before day 97"
    );
    let tombstone = &purged["status"]["tombstone"];
    assert_eq!(tombstone["reason"], "NonPayment");
    assert_eq!(tombstone["ticket"], "FIN-97");
    assert_eq!(tombstone["offboardedAt"], ORIGIN);
    assert_eq!(
        tombstone["deleted"],
        json!({"ConfigMap": 1, "Namespace": 1}),
        "{tombstone}"
    );
    assert_eq!(tombstone["system"], plan["system"], "{tombstone}");
    let history: Vec<(String, String)> = purged["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["event"].as_str().unwrap().into(),
                e["at"].as_str().unwrap().into(),
            )
        })
        .collect();
    let when = |event: &str| {
        history
            .iter()
            .find(|(e, _)| e == event)
            .map(|(_, at)| at.clone())
            .unwrap_or_else(|| panic!("no {event} in {history:?}"))
    };
    assert_eq!(when("Disabled"), ORIGIN);
    assert_eq!(when("PurgeScheduled"), at(90));
    assert_eq!(when("Purging"), at(97));
    when("Purged");
    assert!(
        get_json(&["namespace", &namespace]).is_err(),
        "the namespace is still there"
    );
}

/// The controller's clock now, as this test binary reads it: ORIGIN plus ten
/// days per real second since the controller was spawned, at most.
fn simulated_now_at_most(spawned: Instant) -> DateTime<Utc> {
    let origin: DateTime<Utc> = ORIGIN.parse().unwrap();
    origin + TimeDelta::milliseconds((spawned.elapsed().as_secs_f64() * 864_000_000.0) as i64)
}

#[test]
fn a_disabling_scheduled_ahead_revokes_access_exactly_at_effective_at_after_its_reminders() {
    let spawned = controller_spawned();
    let org = unique("scheduled");
    let namespace = format!("org-{org}");
    // Sixty simulated days ahead: six real seconds.
    let effective_at = (simulated_now_at_most(spawned) + TimeDelta::days(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    apply_organization(
        &org,
        json!({
            "displayName": "Scheduled Ltd",
            "lifecycle": "Disabled",
            "offboarding": {"reason": "NonPayment", "ticket": "FIN-20", "effectiveAt": effective_at},
        }),
    );
    let org_args = ["organization", org.as_str()];
    let announced = wait_for("the scheduled disabling announced", TIMEOUT, || {
        let object = get_json(&org_args)?;
        (object["status"]["next"]["phase"] == "Disabled")
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(
        announced["status"]["phase"], "Active",
        "{}",
        announced["status"]
    );
    assert_eq!(announced["status"]["next"]["at"], effective_at.as_str());
    assert!(announced["status"]["disabledAt"].is_null());
    // Messages tell times as people read them: 2032-01-24 05:00:39 UTC.
    let said = effective_at.replace('T', " ").replace('Z', " UTC");
    let scheduled = condition(&announced, "OffboardingScheduled").expect("the condition");
    assert!(
        scheduled["message"].as_str().unwrap().contains(&said),
        "{scheduled}"
    );
    assert!(
        get_json(&["networkpolicy", "-n", &namespace, "tenure-access-disabled"]).is_err(),
        "access is revoked before effectiveAt"
    );

    let disabled = wait_phase(&org_args, "Disabled");
    let history = &disabled["status"]["history"];
    let disabling = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "Disabled")
        .unwrap_or_else(|| panic!("{history}"));
    assert_eq!(
        disabling["at"],
        effective_at.as_str(),
        "disabled exactly then"
    );
    assert_eq!(disabled["status"]["disabledAt"], effective_at.as_str());
    wait_for("the deny-all NetworkPolicy", TIMEOUT, || {
        get_json(&["networkpolicy", "-n", &namespace, "tenure-access-disabled"])
    });
    // Reminders went out before: the 30-day one at once, then as many of
    // the 7- and 3-day ones as the controller saw (each once).
    let reminders = wait_for("the offboarding reminders", TIMEOUT, || {
        let reasons = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={org},reason=OffboardingReminder"),
            "-o",
            "jsonpath={.items[*].note}{.items[*].message}",
        ]);
        (!reasons.is_empty())
            .then_some(reasons.clone())
            .ok_or(reasons)
    });
    assert!(reminders.contains(&said), "{reminders}");
}
