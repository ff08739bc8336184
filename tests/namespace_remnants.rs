//! A purge whose namespace deletion missed objects stored in it, as the
//! namespace controller can while kube-apiserver starts
//! (kubernetes/kubernetes#93790): the purge deletes them before it writes the
//! tombstone, which would otherwise say deleted what is still stored.
//!
//! To leave objects behind deterministically, kube-controller-manager (whose
//! namespace controller deletes what a namespace holds) is paused with
//! SIGSTOP while the test finalizes the namespace tenure deleted, as the
//! namespace controller does once it believes the namespace empty. Its own
//! binary: no other test may run while the controller manager is paused.

mod common;

use std::process::Command;
use std::time::Duration;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

const TIMEOUT: Duration = Duration::from_secs(90);

/// kube-controller-manager stopped (SIGSTOP) until dropped (SIGCONT), so a
/// failing test never leaves it paused for the next test binary.
struct ControllerManagerPaused(String);

impl ControllerManagerPaused {
    fn now() -> Self {
        let pid_file = repo().join(".cluster/kube-controller-manager.pid");
        let pid = std::fs::read_to_string(&pid_file).expect("hack/cluster wrote its pid");
        let pid = pid.trim().to_string();
        signal("STOP", &pid);
        ControllerManagerPaused(pid)
    }
}

impl Drop for ControllerManagerPaused {
    fn drop(&mut self) {
        signal("CONT", &self.0);
    }
}

fn signal(name: &str, pid: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), pid])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{name} {pid}");
}

fn uid(object: &Value) -> String {
    object["metadata"]["uid"].as_str().unwrap().to_string()
}

#[test]
fn objects_a_namespace_deletion_missed_are_deleted_before_the_tombstone() {
    start_controller(&[]);
    let org = unique("remnants");
    let namespace = format!("org-{org}");
    without_final_grace(&org);
    apply_organization(&org, json!({"displayName": "Remnants", "taxId": "NL-2"}));
    wait_phase(&["organization", &org], "Active");
    let seat = unique("seat");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": seat, "namespace": namespace},
            "spec": {"class": "service", "product": "remnants", "organization": org},
        })
        .to_string(),
    );
    let seat_args = ["-n", namespace.as_str(), "entitlement", seat.as_str()];
    let seat_uid = uid(&wait_phase(&seat_args, "Active"));
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "customer-data", "namespace": namespace},
            "data": {"invoices": "2"},
        })
        .to_string(),
    );
    let first = get_json(&["namespace", &namespace]).unwrap();

    let paused = ControllerManagerPaused::now();
    // Archived 400 days ago: its retention is long over, and it has no final
    // grace, so the purge starts at once.
    let long_ago = (Utc::now() - TimeDelta::days(400)).to_rfc3339_opts(SecondsFormat::Secs, true);
    apply_organization(
        &org,
        json!({"displayName": "Remnants", "taxId": "NL-2", "lifecycle": "Archived",
               "offboarding": {"reason": "CustomerRequest", "effectiveAt": long_ago}}),
    );
    let deleting = wait_for("the purge's delete", TIMEOUT, || {
        let ns = get_json(&["namespace", &namespace])?;
        ns["metadata"]["deletionTimestamp"]
            .is_string()
            .then_some(ns.clone())
            .ok_or(ns["metadata"].to_string())
    });
    assert_eq!(uid(&deleting), uid(&first));
    // What the namespace controller does when it found nothing to delete.
    let mut finalized = deleting.clone();
    finalized["spec"]["finalizers"] = json!([]);
    let path = format!("/api/v1/namespaces/{namespace}/finalize");
    let out = kubectl_with_stdin(
        &["replace", "--raw", &path, "-f", "-"],
        Some(&finalized.to_string()),
    );
    assert!(out.status.success(), "{out:?}");

    // The namespace went; the Entitlement and the ConfigMap are still stored.
    // tenure creates the namespace again and deletes it; with the namespace
    // controller paused, it stays Terminating, holding them.
    let again = wait_for("the namespace created again", TIMEOUT, || {
        let ns = get_json(&["namespace", &namespace])?;
        (uid(&ns) != uid(&first) && ns["metadata"]["deletionTimestamp"].is_string())
            .then_some(ns.clone())
            .ok_or(ns["metadata"].to_string())
    });
    assert_eq!(
        again["metadata"]["labels"]["tenure.dev/organization"], org,
        "{again}"
    );
    assert_eq!(again["metadata"]["annotations"]["tenure.dev/purge"], org);
    assert_eq!(uid(&get_json(&seat_args).unwrap()), seat_uid);
    let org_now = get_json(&["organization", &org]).unwrap();
    assert_eq!(
        org_now["status"]["phase"], "Purging",
        "{}",
        org_now["status"]
    );
    assert!(org_now["status"]["tombstone"].is_null());
    wait_for("the NamespaceRecreated Event", TIMEOUT, || {
        let recreated = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={org},reason=NamespaceRecreated"),
            "-o",
            "jsonpath={.items[*].message}",
        ]);
        recreated
            .contains(&namespace)
            .then_some(())
            .ok_or(recreated)
    });

    drop(paused);
    let purged = wait_phase(&["organization", &org], "Purged");
    for kind in ["entitlements", "configmaps"] {
        let left = kubectl_ok(&["get", kind, "-n", &namespace, "-o", "name"]);
        assert!(left.trim().is_empty(), "{kind} left: {left}");
    }
    assert!(get_json(&["namespace", &namespace]).is_err());
    let tombstone = &purged["status"]["tombstone"];
    assert_eq!(tombstone["deleted"]["ConfigMap"], 1, "{tombstone}");
    assert_eq!(tombstone["deleted"]["Entitlement"], 1, "{tombstone}");
}
