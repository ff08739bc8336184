//! Facts land where they say: corrections of dates, win-backs in any order
//! and re-scoped policies give one consistent answer, end to end.

mod common;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn entitlement(name: &str, spec: Value) {
    let base = json!({"class": "plugin", "product": "facts"});
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": "default"},
            "spec": merged(base, spec),
        })
        .to_string(),
    );
}

fn ent(name: &str) -> [&str; 4] {
    ["-n", "default", "entitlement", name]
}

/// Waits for a condition of `type_` with `reason`; returns the object.
fn wait_reason(args: &[&str], type_: &str, reason: &str) -> Value {
    wait_for(&format!("{type_}={reason} on {args:?}"), TIMEOUT, || {
        let object = get_json(args)?;
        condition(&object, type_)
            .filter(|c| c["reason"] == reason)
            .map(|_| object.clone())
            .ok_or(object["status"].to_string())
    })
}

#[test]
fn moving_a_cancellation_that_took_effect_into_the_future_does_not_revive_it() {
    start_controller(&[]);
    let name = unique("moved");
    let cancelled = json!({"reason": "CustomerRequest", "effectiveAt": ago(10)});
    entitlement(
        &name,
        json!({"cancellation": cancelled, "policy": {"cancellation": {"allowReactivation": false}}}),
    );
    wait_phase(&ent(&name), "Cancelled");
    let future = (Utc::now() + TimeDelta::days(30)).to_rfc3339_opts(SecondsFormat::Secs, true);
    entitlement(
        &name,
        json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": future},
               "policy": {"cancellation": {"allowReactivation": false}}}),
    );
    let refused = wait_reason(&ent(&name), "CorrectionRefused", "CancellationTookEffect");
    assert_eq!(refused["status"]["phase"], "Cancelled");
    let events: Vec<&str> = refused["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(!events.contains(&"Reactivated"), "{events:?}");
}

#[test]
fn a_reactivation_requested_before_the_cancellation_is_refused_not_ignored() {
    start_controller(&[]);
    let name = unique("early-win-back");
    entitlement(
        &name,
        json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(5)},
               "reactivation": {"requestedAt": ago(6), "reference": "order-1"}}),
    );
    let refused = wait_reason(
        &ent(&name),
        "ReactivationRefused",
        "RequestedBeforeCancellation",
    );
    assert_eq!(refused["status"]["phase"], "Cancelled");
}

#[test]
fn a_reactivation_of_a_purged_entitlement_is_refused_and_no_deadline_is_advertised() {
    start_controller(&[]);
    let name = unique("too-late");
    entitlement(
        &name,
        json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
               "policy": {"purge": {"finalGraceDays": 0}}}),
    );
    let purged = wait_phase(&ent(&name), "Purged");
    assert!(
        purged["status"]["deadlines"]["reactivationDeadline"].is_null(),
        "{}",
        purged["status"]["deadlines"]
    );
    entitlement(
        &name,
        json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
               "policy": {"purge": {"finalGraceDays": 0}},
               "reactivation": {"requestedAt": ago(0), "reference": "order-2"}}),
    );
    let refused = wait_reason(&ent(&name), "ReactivationRefused", "AlreadyPurged");
    assert_eq!(refused["status"]["phase"], "Purged");
}

#[test]
fn an_organization_is_re_decided_when_its_policy_is_re_scoped_away() {
    start_controller(&[]);
    let org = unique("rescoped");
    let policy = unique("short-disabled");
    let scoped_to = |organization: &str| {
        apply(
            &json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
                "metadata": {"name": policy},
                "spec": {"scope": {"organization": organization},
                         "organization": {"disabledRetentionDays": 10}},
            })
            .to_string(),
        )
    };
    scoped_to(&org);
    let disabled_at = ago(1);
    apply_organization(
        &org,
        json!({"lifecycle": "Disabled",
               "offboarding": {"reason": "NonPayment", "effectiveAt": disabled_at}}),
    );
    let short = wait_phase(&["organization", &org], "Disabled");
    let days_kept = |object: &Value| {
        let at = |field: &str| {
            object["status"][field]
                .as_str()
                .unwrap()
                .parse::<chrono::DateTime<Utc>>()
                .unwrap()
        };
        (at("purgeAfter") - at("disabledAt")).num_days()
    };
    assert_eq!(days_kept(&short), 10);

    scoped_to(&unique("someone-else"));
    let default = wait_for("the default retention again", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        (days_kept(&object) == 90)
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(
        default["status"]["effectivePolicy"]["organization.disabledRetentionDays"]["from"],
        "LifecyclePolicy/global"
    );
}

/// Deletes the entitlement and creates it again from its manifest and
/// metadata, without status: what a backup restore does. Returns it as it was.
fn restore(name: &str) -> Value {
    let saved = get_json(&ent(name)).unwrap();
    kubectl_ok(&[
        "delete",
        "-n",
        "default",
        "entitlement",
        name,
        "--timeout=30s",
    ]);
    let manifest = json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
        "metadata": {
            "name": name, "namespace": "default",
            "annotations": saved["metadata"]["annotations"],
        },
        "spec": saved["spec"],
    });
    let out = kubectl_with_stdin(&["create", "-f", "-"], Some(&manifest.to_string()));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    saved
}

/// Waits until the restored entitlement (a new uid) is decided.
fn wait_restored(name: &str, before: &Value) -> Value {
    wait_for("the restored entitlement", TIMEOUT, || {
        let object = get_json(&ent(name))?;
        let restored = object["metadata"]["uid"] != before["metadata"]["uid"];
        (restored && ready_and_current(&object).is_ok())
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    })
}

#[test]
fn a_restored_entitlement_lands_where_it_was_with_its_code() {
    start_controller(&[]);
    // Cancelled when first observed (no effectiveAt), then won back.
    let won_back = unique("won-back");
    entitlement(
        &won_back,
        json!({"cancellation": {"reason": "CustomerRequest"}}),
    );
    let cancelled = wait_phase(&ent(&won_back), "Cancelled");
    let since = cancelled["status"]["cancelled"]["at"]
        .as_str()
        .unwrap()
        .to_string();
    let later = (since.parse::<chrono::DateTime<Utc>>().unwrap() + TimeDelta::seconds(1))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    entitlement(
        &won_back,
        json!({"cancellation": {"reason": "CustomerRequest"},
               "reactivation": {"requestedAt": later, "reference": "order-3"}}),
    );
    wait_phase(&ent(&won_back), "Active");
    let before = restore(&won_back);
    let after = wait_restored(&won_back, &before);
    assert_eq!(after["status"]["phase"], "Active", "{}", after["status"]);
    assert_eq!(after["status"]["code"], before["status"]["code"]);

    // Cancelled for non-payment, the payment recovered later: still cancelled.
    let unpaid = unique("unpaid");
    entitlement(
        &unpaid,
        json!({"payment": {"failedAt": ago(40)}, "startsAt": ago(100)}),
    );
    wait_phase(&ent(&unpaid), "Cancelled");
    entitlement(&unpaid, json!({"startsAt": ago(100)}));
    let kept = wait_reason(&ent(&unpaid), "Ready", "NonPayment");
    assert_eq!(kept["status"]["phase"], "Cancelled");
    let before = restore(&unpaid);
    let after = wait_restored(&unpaid, &before);
    assert_eq!(after["status"]["phase"], "Cancelled", "{}", after["status"]);
    assert_eq!(after["status"]["cancelled"]["reason"], "NonPayment");
    assert_eq!(after["status"]["code"], before["status"]["code"]);
}
