//! A controller killed mid-way (SIGKILL) and started again: what it had done
//! stands, and it finishes the rest.

mod common;

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::json;

/// Each test runs its own controllers: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

#[test]
fn codes_stay_unique_and_assigned_once_when_the_controller_is_killed_mid_way() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let (class, prefix) = new_class("restart-class");
    let batch = unique("restart");
    create_batch(&class, &batch, 200);

    // A small bound slows it down, so that the kill lands mid-way.
    let first = Controller::spawn(&["--concurrency", "2"], "tenure-restart-first");
    wait_for("some codes", Duration::from_secs(60), || {
        let codes = codes_of_batch(&batch)?;
        (codes.len() >= 40)
            .then_some(())
            .ok_or(format!("{} codes", codes.len()))
    });
    first.kill();
    // Read after the kill: nothing changes until the restart.
    let assigned_before = codes_of_batch(&batch).unwrap();
    assert!(
        assigned_before.len() < 200,
        "the kill came too late to test anything"
    );

    let _second = Controller::spawn(&[], "tenure-restart-second");
    let all = wait_for("200 codes", Duration::from_secs(120), || {
        let codes = codes_of_batch(&batch)?;
        (codes.len() == 200)
            .then_some(codes.clone())
            .ok_or(format!("{} codes", codes.len()))
    });
    for (name, code) in &assigned_before {
        assert_eq!(&all[name], code, "the code of {name} changed");
    }
    let distinct: BTreeSet<&String> = all.values().collect();
    assert_eq!(distinct.len(), 200, "codes repeat");
    for code in all.values() {
        assert!(code.starts_with(&format!("{prefix}-")), "{code}");
    }
}

#[test]
fn a_controller_killed_while_the_namespace_is_deleted_still_ends_with_one_correct_tombstone() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let org = unique("killed");
    let namespace = format!("org-{org}");
    let organization = |spec: serde_json::Value| {
        let base = json!({"displayName": "Killed Inc.", "taxId": "US-99"});
        apply_organization(&org, merged(base, spec));
    };
    let org_args = ["organization", org.as_str()];
    // No final grace for this organization: the purge starts once retention is over.
    without_final_grace(&org);
    let first = Controller::spawn(&[], "tenure-purge-first");
    organization(json!({}));
    wait_phase(&org_args, "Active");
    // A finalizer of someone else's keeps the namespace Terminating until the
    // test lets it go: the window in which the controller dies.
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "slow-to-delete", "namespace": namespace, "finalizers": ["test.tenure.dev/slow"]},
            "data": {"k": "v"},
        })
        .to_string(),
    );
    let effective_at =
        (Utc::now() - TimeDelta::days(400)).to_rfc3339_opts(SecondsFormat::Secs, true);
    organization(json!({
        "lifecycle": "Archived",
        "offboarding": {"reason": "CustomerRequest", "ticket": "CS-77", "effectiveAt": effective_at},
    }));
    let purging = wait_phase(&org_args, "Purging");
    let plan = purging["status"]["purgePlan"].clone();
    assert_eq!(plan["objects"]["ConfigMap"], 1, "ours: {plan}");
    assert_eq!(plan["system"]["ConfigMap"], 1, "kube-root-ca.crt: {plan}");
    wait_for("the namespace to terminate", TIMEOUT, || {
        let ns = get_json(&["namespace", &namespace])?;
        ns["metadata"]["deletionTimestamp"]
            .is_string()
            .then_some(())
            .ok_or(ns["status"].to_string())
    });
    first.kill();

    // While it is down, the namespace finishes deleting.
    kubectl_ok(&[
        "patch",
        "configmap",
        "slow-to-delete",
        "-n",
        &namespace,
        "--type=merge",
        "-p",
        r#"{"metadata":{"finalizers":null}}"#,
    ]);
    wait_for("the namespace to be gone", TIMEOUT, || {
        match get_json(&["namespace", &namespace]) {
            Err(_) => Ok(()),
            Ok(_) => Err("still there".into()),
        }
    });

    // Enabling it again is refused once the purge started.
    organization(json!({
        "lifecycle": "Active",
        "offboarding": {"reason": "CustomerRequest", "ticket": "CS-77", "effectiveAt": effective_at},
    }));
    let second = Controller::spawn(&[], "tenure-purge-second");
    let purged = wait_phase(&org_args, "Purged");
    let tombstone = purged["status"]["tombstone"].clone();
    assert_eq!(tombstone["name"], org.as_str());
    assert_eq!(tombstone["displayName"], "Killed Inc.");
    assert_eq!(tombstone["taxId"], "US-99");
    assert_eq!(tombstone["reason"], "CustomerRequest");
    assert_eq!(tombstone["ticket"], "CS-77");
    assert_eq!(tombstone["offboardedAt"], effective_at.as_str());
    assert_eq!(
        tombstone["deleted"]["ConfigMap"], 1,
        "not doubled: {tombstone}"
    );
    assert_eq!(tombstone["system"]["ConfigMap"], 1, "{tombstone}");
    assert_eq!(tombstone["deleted"]["Namespace"], 1);
    assert_eq!(tombstone["exportProvided"], false);
    let refused = condition(&purged, "LifecycleChangeRefused").cloned();
    assert_eq!(
        refused.map(|c| c["reason"].clone()),
        Some("PurgeStarted".into())
    );
    let purged_entries = purged["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["event"] == "Purged")
        .count();
    assert_eq!(purged_entries, 1);

    // Another restart rewrites nothing, and the namespace is not recreated.
    second.kill();
    let _third = Controller::spawn(&[], "tenure-purge-third");
    // The customer's record changes afterwards: the tombstone does not.
    kubectl_ok(&[
        "patch",
        "organization",
        &org,
        "--type=merge",
        "-p",
        r#"{"spec":{"displayName":"Renamed Later"}}"#,
    ]);
    let later = wait_phase(&org_args, "Purged");
    assert_eq!(
        later["status"]["tombstone"], tombstone,
        "the tombstone was rewritten"
    );
    assert!(
        get_json(&["namespace", &namespace]).is_err(),
        "namespace came back"
    );

    // Once Purged, the Organization may be deleted: its finalizer lets go.
    kubectl_ok(&["delete", "organization", &org, "--timeout=30s"]);
}
