//! What counts as the export `purge.requireExport` waits for: only a
//! complete one whose artifact still exists. Each test runs a controller of
//! its own (an export kept no time at all; one that may not read Secrets).

mod common;

use std::sync::Mutex;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

/// Each test runs its own controller: one test at a time.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// An Active organization whose purge, once archived long ago, waits only for
/// an export; returns its name and namespace.
fn organization_requiring_an_export(prefix: &str) -> (String, String) {
    let org = unique(prefix);
    requiring_an_export(&org);
    apply_organization(&org, json!({}));
    wait_phase(&["organization", &org], "Active");
    (org.clone(), format!("org-{org}"))
}

fn archive_long_ago(org: &str) {
    let long_ago = (Utc::now() - TimeDelta::days(400)).to_rfc3339_opts(SecondsFormat::Secs, true);
    apply_organization(
        org,
        json!({"lifecycle": "Archived",
               "offboarding": {"reason": "CustomerRequest", "effectiveAt": long_ago}}),
    );
}

/// Waits until the organization's status lists the export as succeeded,
/// and returns the organization then.
fn seen_by_organization(org: &str, export: &str) -> Value {
    wait_for("the organization to see the export", TIMEOUT, || {
        let object = get_json(&["organization", org])?;
        (object["status"]["exports"] == json!([export]))
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    })
}

#[test]
fn an_export_whose_artifact_expired_does_not_count_for_require_export() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let _controller = Controller::spawn(&["--export-keep-days", "0"], "tenure-export-expired");
    let (org, namespace) = organization_requiring_an_export("expired-export");
    let name = unique("gone-already");
    apply_data_export(&namespace, &name, &org);
    let expired = wait_for("the artifact to expire", TIMEOUT, || {
        let object = get_json(&["-n", &namespace, "dataexport", &name])?;
        condition(&object, "Ready")
            .filter(|c| c["reason"] == "ArtifactExpired")
            .map(|_| object.clone())
            .ok_or(object["status"].to_string())
    });
    let uri = expired["status"]["artifact"]["uri"].as_str().unwrap();
    assert!(!std::path::Path::new(uri.strip_prefix("file://").unwrap()).exists());

    archive_long_ago(&org);
    wait_for("the archival", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        (object["status"]["phase"] == "Archived")
            .then_some(())
            .ok_or(object["status"].to_string())
    });
    let organization = seen_by_organization(&org, &name);
    let blocked = condition(&organization, "PurgeBlocked").expect("the purge waits");
    assert_eq!(blocked["reason"], "AwaitingExport");
    assert_eq!(organization["status"]["phase"], "Archived");
}

#[test]
fn an_export_that_left_out_kinds_it_may_not_read_is_incomplete_and_does_not_count() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    // A controller that may do everything but read Secrets.
    let user = unique("no-secrets");
    let core = [
        "configmaps",
        "namespaces",
        "events",
        "services",
        "persistentvolumeclaims",
        "pods",
        "serviceaccounts",
        "endpoints",
        "limitranges",
        "resourcequotas",
        "replicationcontrollers",
        "podtemplates",
    ];
    apply(
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": {"name": user},
            "rules": [
                {"apiGroups": [""], "resources": core, "verbs": ["*"]},
                // Every other group it uses ("*" would include the core one).
                {"apiGroups": [
                    "tenure.dev", "apps", "batch", "networking.k8s.io", "events.k8s.io",
                    "coordination.k8s.io", "discovery.k8s.io", "policy", "autoscaling",
                    "rbac.authorization.k8s.io", "storage.k8s.io", "apiextensions.k8s.io",
                ], "resources": ["*"], "verbs": ["*"]},
            ],
        })
        .to_string(),
    );
    apply(
        &json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": {"name": user},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": user},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
        })
        .to_string(),
    );
    let restricted = kubeconfig_as(&user);
    let _controller = Controller::spawn_with_env(
        &[],
        &[("KUBECONFIG", restricted.to_str().unwrap())],
        "tenure-export-no-secrets",
    );
    let (org, namespace) = organization_requiring_an_export("incomplete-export");
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        "database",
        "-n",
        &namespace,
        "--from-literal=password=hunter2",
    ]);
    let name = unique("partial");
    apply_data_export(&namespace, &name, &org);
    let done = wait_for("the export", TIMEOUT, || {
        let object = get_json(&["-n", &namespace, "dataexport", &name])?;
        (object["status"]["phase"] == "Succeeded")
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    let incomplete = condition(&done, "Incomplete").expect("said to be incomplete");
    assert_eq!(incomplete["reason"], "KindsNotReadable");
    assert!(
        incomplete["message"].as_str().unwrap().contains("Secret"),
        "{incomplete}"
    );

    archive_long_ago(&org);
    let organization = seen_by_organization(&org, &name);
    wait_for("the purge to wait for a complete export", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        condition(&object, "PurgeBlocked")
            .filter(|c| c["reason"] == "AwaitingExport")
            .map(|_| ())
            .ok_or(object["status"].to_string())
    });
    assert_ne!(organization["status"]["phase"], "Purged");
}
