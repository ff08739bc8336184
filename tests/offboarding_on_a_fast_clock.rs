//! The 97-day offboarding path on a clock that runs ten days a second:
//! disabled, 90 days of retention, a confirmed hard delete, 7 days of final
//! grace, the purge and its tombstone.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::json;

const ORIGIN: &str = "2032-01-01T00:00:00Z";

#[test]
fn disabled_for_90_days_confirmed_and_7_days_of_grace_later_purged_with_a_tombstone() {
    // The controller's clock starts at ORIGIN after `spawned`: it never reads
    // more than ORIGIN plus ten days per real second since `spawned`.
    let spawned = Instant::now();
    start_controller(&["--clock-start", ORIGIN, "--clock-rate", "864000"]);
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
