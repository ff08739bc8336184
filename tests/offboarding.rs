//! Organization offboarding end to end on the real clock, with backdated facts:
//! access revoked and restored, archived, holds, and a purge's review.

mod common;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// Applies the Organization `name` with `spec` and a display name and tax ID.
fn organization(name: &str, spec: Value) {
    let base = json!({"displayName": "Offboarding test", "taxId": "BR-123"});
    apply_organization(name, merged(base, spec));
}

fn entitlement_in(org: &str, name: &str, spec: Value) {
    let base = json!({"organization": org, "class": "service", "product": "support"});
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": format!("org-{org}")},
            "spec": merged(base, spec),
        })
        .to_string(),
    );
}

fn history_events(object: &Value) -> Vec<String> {
    object["status"]["history"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| e["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Waits for a condition of `type_` on the object and returns it.
fn wait_condition(args: &[&str], type_: &str) -> Value {
    wait_for(&format!("{type_} on {args:?}"), TIMEOUT, || {
        let object = get_json(args)?;
        condition(&object, type_)
            .cloned()
            .ok_or(object["status"].to_string())
    })
}

fn network_policy(namespace: &str) -> Result<Value, String> {
    get_json(&["-n", namespace, "networkpolicy", "tenure-access-disabled"])
}

#[test]
fn disabling_revokes_access_and_enabling_restores_exactly_what_was_there() {
    start_controller(&[]);
    let org = unique("disabled");
    let namespace = format!("org-{org}");
    organization(&org, json!({}));
    wait_phase(&["organization", &org], "Active");
    let plain = unique("plain");
    let unpaid = unique("unpaid");
    entitlement_in(&org, &plain, json!({}));
    entitlement_in(&org, &unpaid, json!({"payment": {"failedAt": ago(1)}}));
    let plain_args = ["-n", namespace.as_str(), "entitlement", plain.as_str()];
    let unpaid_args = ["-n", namespace.as_str(), "entitlement", unpaid.as_str()];
    wait_phase(&plain_args, "Active");
    let unpaid_before = wait_phase(&unpaid_args, "Suspended");

    organization(
        &org,
        json!({"lifecycle": "Disabled", "offboarding": {"reason": "NonPayment", "ticket": "FIN-7"}}),
    );
    let disabled = wait_phase(&["organization", &org], "Disabled");
    assert!(disabled["status"]["disabledAt"].is_string());
    assert!(disabled["status"]["purgeAfter"].is_string());
    let policy = wait_for("the deny-all NetworkPolicy", TIMEOUT, || {
        network_policy(&namespace)
    });
    assert_eq!(policy["spec"]["podSelector"], json!({}));
    assert_eq!(policy["spec"]["policyTypes"], json!(["Ingress", "Egress"]));
    assert!(policy["spec"]["ingress"].is_null() && policy["spec"]["egress"].is_null());
    for args in [&plain_args, &unpaid_args] {
        wait_for("OrganizationDisabled", TIMEOUT, || {
            let object = get_json(args)?;
            (condition(&object, "Ready").map(|c| c["reason"].clone())
                == Some("OrganizationDisabled".into()))
            .then_some(())
            .ok_or(object["status"].to_string())
        });
    }

    organization(&org, json!({"lifecycle": "Active", "offboarding": null}));
    let enabled = wait_phase(&["organization", &org], "Active");
    assert!(enabled["status"]["disabledAt"].is_null());
    assert_eq!(history_events(&enabled), ["Disabled", "Enabled"]);
    wait_for(
        "the NetworkPolicy to go",
        TIMEOUT,
        || match network_policy(&namespace) {
            Err(_) => Ok(()),
            Ok(_) => Err("still there".into()),
        },
    );
    wait_phase(&plain_args, "Active");
    let unpaid_after = wait_for("PaymentFailed again", TIMEOUT, || {
        let object = get_json(&unpaid_args)?;
        (condition(&object, "Ready").map(|c| c["reason"].clone()) == Some("PaymentFailed".into()))
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(
        unpaid_after["status"]["deadlines"], unpaid_before["status"]["deadlines"],
        "the payment grace is what it was"
    );
}

#[test]
fn an_archived_organization_cancels_its_entitlements_until_it_is_unarchived() {
    start_controller(&[]);
    let org = unique("archived");
    let namespace = format!("org-{org}");
    organization(&org, json!({}));
    wait_phase(&["organization", &org], "Active");
    let seat = unique("seat");
    entitlement_in(&org, &seat, json!({}));
    let seat_args = ["-n", namespace.as_str(), "entitlement", seat.as_str()];
    wait_phase(&seat_args, "Active");

    organization(
        &org,
        json!({"lifecycle": "Archived", "offboarding": {"reason": "BusinessClosure", "ticket": "CS-9"}}),
    );
    let archived = wait_phase(&["organization", &org], "Archived");
    let status = &archived["status"];
    let archived_at: chrono::DateTime<Utc> =
        status["archivedAt"].as_str().unwrap().parse().unwrap();
    let purge_after: chrono::DateTime<Utc> =
        status["purgeAfter"].as_str().unwrap().parse().unwrap();
    assert_eq!(purge_after - archived_at, TimeDelta::days(365));
    let cancelled = wait_phase(&seat_args, "Cancelled");
    assert_eq!(
        condition(&cancelled, "Ready").unwrap()["reason"],
        "BusinessClosure"
    );

    // Nothing new is provisioned for an archived organization.
    let late = unique("late");
    entitlement_in(&org, &late, json!({}));
    let refused = wait_phase(&["-n", &namespace, "entitlement", &late], "Cancelled");
    let message = condition(&refused, "Ready").unwrap()["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        message.contains("archived") && message.contains("CS-9"),
        "{message}"
    );

    organization(&org, json!({"lifecycle": "Active", "offboarding": null}));
    let back = wait_phase(&["organization", &org], "Active");
    assert_eq!(history_events(&back), ["Archived", "Unarchived"]);
    wait_phase(&seat_args, "Active");
}

#[test]
fn a_hold_keeps_an_overdue_organization_and_its_data_until_lifted_then_the_final_grace_runs_in_full()
 {
    start_controller(&[]);
    let org = unique("held");
    let namespace = format!("org-{org}");
    organization(&org, json!({}));
    wait_phase(&["organization", &org], "Active");
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "customer-data", "namespace": namespace},
            "data": {"invoices": "42"},
        })
        .to_string(),
    );
    let hold = unique("litigation");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "RetentionHold",
            "metadata": {"name": hold},
            "spec": {"organization": org, "reason": "litigation", "ticket": "LEGAL-1"},
        })
        .to_string(),
    );
    let covering = wait_for("the hold to cover the organization", TIMEOUT, || {
        let object = get_json(&["retentionhold", &hold])?;
        (object["status"]["covers"]
            .as_array()
            .is_some_and(|c| !c.is_empty()))
        .then_some(object.clone())
        .ok_or(object["status"].to_string())
    });
    assert_eq!(
        covering["status"]["covers"],
        json!([
            format!("Organization/{org}"),
            format!("Namespace/{namespace}")
        ])
    );
    wait_for("the hold in the organization's status", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        (object["status"]["holds"] == json!([hold]))
            .then_some(())
            .ok_or(object["status"].to_string())
    });

    // Archived 400 days ago: the 365 days of retention are long over.
    organization(
        &org,
        json!({"lifecycle": "Archived", "offboarding": {"reason": "ContractBreach", "ticket": "CS-3", "effectiveAt": ago(400)}}),
    );
    let blocked = wait_condition(&["organization", &org], "PurgeBlocked");
    assert_eq!(blocked["reason"], "Held");
    assert!(blocked["message"].as_str().unwrap().contains(&hold));
    let held = wait_phase(&["organization", &org], "Archived");
    assert!(
        held["status"]["finalPurgeAt"].is_null(),
        "no purge timer runs under a hold"
    );
    kubectl_ok(&["get", "configmap", "customer-data", "-n", &namespace]);

    kubectl_ok(&["delete", "retentionhold", &hold]);
    let scheduled = wait_phase(&["organization", &org], "PurgeScheduled");
    let status = &scheduled["status"];
    let lifted: chrono::DateTime<Utc> = status["lastHoldLiftedAt"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let final_purge_at: chrono::DateTime<Utc> =
        status["finalPurgeAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(
        final_purge_at - lifted,
        TimeDelta::days(7),
        "the full final grace"
    );
    assert_eq!(status["purgePlan"]["namespaces"], json!([namespace]));
    // customer-data is the customer's; kube-root-ca.crt is counted apart.
    assert_eq!(status["purgePlan"]["objects"]["ConfigMap"], 1, "{status}");
    assert_eq!(status["purgePlan"]["system"]["ConfigMap"], 1, "{status}");
    assert!(
        status["purgePlan"]["objects"]["ServiceAccount"].is_null(),
        "{status}"
    );
    let events = history_events(&scheduled);
    for event in ["HoldPlaced", "Archived", "HoldLifted", "PurgeScheduled"] {
        assert!(
            events.contains(&event.to_string()),
            "{event} missing: {events:?}"
        );
    }
    kubectl_ok(&["get", "configmap", "customer-data", "-n", &namespace]);
}
