//! The promise tenure exists for, end to end: nothing under a hold is deleted,
//! every purge is announced a full final grace ahead, nothing tenure does not
//! own is deleted or counted, and no tenant reaches another's data.

mod common;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// An Active organization, its namespace created, and no final grace for it.
fn active_organization(prefix: &str) -> (String, String) {
    let org = unique(prefix);
    without_final_grace(&org);
    apply_organization(&org, json!({"displayName": "Data Safety", "taxId": "NL-1"}));
    wait_phase(&["organization", &org], "Active");
    (org.clone(), format!("org-{org}"))
}

/// Archives the organization, as of 400 days ago: its retention is long over.
fn archive_long_ago(org: &str) {
    apply_organization(
        org,
        json!({"displayName": "Data Safety", "taxId": "NL-1", "lifecycle": "Archived",
               "offboarding": {"reason": "CustomerRequest", "ticket": "CS-1", "effectiveAt": ago(400)}}),
    );
}

fn entitlement(namespace: &str, name: &str, spec: Value) {
    let base = json!({"class": "service", "product": "data-safety"});
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": namespace},
            "spec": merged(base, spec),
        })
        .to_string(),
    );
}

fn config_map(namespace: &str, name: &str, labels: Value) {
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": name, "namespace": namespace, "labels": labels},
            "data": {"records": "42"},
        })
        .to_string(),
    );
}

fn hold(name: &str, target: Value) {
    let spec = merged(json!({"reason": "litigation", "ticket": "LEGAL-1"}), target);
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "RetentionHold",
            "metadata": {"name": name}, "spec": spec,
        })
        .to_string(),
    );
}

/// Waits for a condition of `type_` with `reason` on the object; returns it.
fn wait_reason(args: &[&str], type_: &str, reason: &str) -> Value {
    wait_for(&format!("{type_}={reason} on {args:?}"), TIMEOUT, || {
        let object = get_json(args)?;
        condition(&object, type_)
            .filter(|c| c["reason"] == reason)
            .map(|_| object.clone())
            .ok_or(object["status"].to_string())
    })
}

fn message<'a>(object: &'a Value, type_: &str) -> &'a str {
    condition(object, type_).unwrap()["message"]
        .as_str()
        .unwrap()
}

fn exists(args: &[&str]) -> bool {
    get_json(args).is_ok()
}

fn wait_gone(args: &[&str]) {
    wait_for(
        &format!("{args:?} to be gone"),
        TIMEOUT,
        || match get_json(args) {
            Err(_) => Ok(()),
            Ok(object) => Err(object["metadata"].to_string()),
        },
    );
}

/// A ValidatingAdmissionPolicy refusing to delete `namespace`: the purge's
/// delete is refused, so the organization stays Purging with its namespace
/// in place (deleted again when dropped).
struct NamespaceDeleteRefused(String);

impl NamespaceDeleteRefused {
    fn new(namespace: &str) -> Self {
        let name = unique("keep-namespace");
        apply(
            &json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicy",
                "metadata": {"name": name},
                "spec": {
                    "failurePolicy": "Fail",
                    "matchConstraints": {"resourceRules": [{
                        "apiGroups": [""], "apiVersions": ["v1"],
                        "operations": ["DELETE"], "resources": ["namespaces"],
                    }]},
                    "validations": [{
                        "expression": format!("oldObject.metadata.name != '{namespace}'"),
                        "message": "this test keeps the namespace",
                        "reason": "Forbidden",
                    }],
                },
            })
            .to_string(),
        );
        apply(
            &json!({
                "apiVersion": "admissionregistration.k8s.io/v1", "kind": "ValidatingAdmissionPolicyBinding",
                "metadata": {"name": name},
                "spec": {"policyName": name, "validationActions": ["Deny"]},
            })
            .to_string(),
        );
        // The policy is in force once a dry-run delete is refused.
        wait_for("the delete to be refused", TIMEOUT, || {
            let out = kubectl(&["delete", "namespace", namespace, "--dry-run=server"]);
            (!out.status.success())
                .then_some(())
                .ok_or("still allowed".to_string())
        });
        Self(name)
    }
}

impl NamespaceDeleteRefused {
    /// Lifts the refusal and waits until the API server lets `namespace` be
    /// deleted again.
    fn lift(self, namespace: &str) {
        drop(self);
        wait_for("the delete to be allowed again", TIMEOUT, || {
            let out = kubectl(&["delete", "namespace", namespace, "--dry-run=server"]);
            out.status
                .success()
                .then_some(())
                .ok_or(String::from_utf8_lossy(&out.stderr).into_owned())
        });
    }
}

impl Drop for NamespaceDeleteRefused {
    fn drop(&mut self) {
        let _ = kubectl(&["delete", "validatingadmissionpolicybinding", &self.0]);
        let _ = kubectl(&["delete", "validatingadmissionpolicy", &self.0]);
    }
}

// ---------------------------------------------------------------------------
// Holds
// ---------------------------------------------------------------------------

#[test]
fn a_hold_on_an_entitlement_blocks_its_organizations_purge() {
    start_controller(&[]);
    let (org, namespace) = active_organization("held-seat");
    let seat = unique("seat");
    entitlement(&namespace, &seat, json!({"organization": org}));
    wait_phase(&["-n", &namespace, "entitlement", &seat], "Active");
    let evidence = unique("evidence");
    hold(
        &evidence,
        json!({"entitlement": {"namespace": namespace, "name": seat}}),
    );

    archive_long_ago(&org);
    let blocked = wait_reason(&["organization", &org], "PurgeBlocked", "Held");
    assert!(
        message(&blocked, "PurgeBlocked").contains(&format!("{evidence} (on Entitlement")),
        "{}",
        message(&blocked, "PurgeBlocked")
    );
    assert_eq!(blocked["status"]["phase"], "Archived");
    assert_eq!(blocked["status"]["holds"], json!([evidence]));
    assert!(exists(&["namespace", &namespace]));

    kubectl_ok(&["delete", "retentionhold", &evidence]);
    wait_phase(&["organization", &org], "Purged");
}

#[test]
fn an_organizations_hold_covers_every_entitlement_and_object_in_its_namespace_and_says_so() {
    start_controller(&[]);
    let (org, namespace) = active_organization("held-org");
    // A standalone entitlement in the tenant namespace, its retention long
    // over and no final grace: only the hold keeps its data.
    let standalone = unique("standalone");
    config_map(
        &namespace,
        "standalone-data",
        json!({"tenure.dev/entitlement": standalone}),
    );
    let legal = unique("legal");
    hold(&legal, json!({"organization": org}));
    let covering = wait_for("the hold's coverage", TIMEOUT, || {
        let object = get_json(&["retentionhold", &legal])?;
        (object["status"]["covers"].as_array().map(Vec::len) == Some(2))
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(condition(&covering, "Ready").unwrap()["status"], "True");
    entitlement(
        &namespace,
        &standalone,
        json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
               "policy": {"purge": {"finalGraceDays": 0}}}),
    );
    let args = ["-n", namespace.as_str(), "entitlement", standalone.as_str()];
    let blocked = wait_reason(&args, "PurgeBlocked", "Held");
    assert_eq!(blocked["status"]["phase"], "Cancelled");
    assert!(blocked["status"]["deadlines"]["finalPurgeAt"].is_null());
    assert!(exists(&["-n", &namespace, "configmap", "standalone-data"]));
    let covers = wait_for("the entitlement in the coverage", TIMEOUT, || {
        let object = get_json(&["retentionhold", &legal])?;
        let covers = object["status"]["covers"].clone();
        (covers.as_array().map(Vec::len) == Some(3))
            .then_some(covers)
            .ok_or(object["status"].to_string())
    });
    assert_eq!(
        covers,
        json!([
            format!("Organization/{org}"),
            format!("Namespace/{namespace}"),
            format!("Entitlement/{namespace}/{standalone}"),
        ])
    );

    kubectl_ok(&["delete", "retentionhold", &legal]);
    wait_phase(&args, "Purged");
    wait_gone(&["-n", &namespace, "configmap", "standalone-data"]);
}

#[test]
fn a_hold_placed_while_purging_before_the_namespace_delete_was_sent_stops_the_purge() {
    start_controller(&[]);
    let (org, namespace) = active_organization("stopped");
    let seat = unique("seat");
    entitlement(&namespace, &seat, json!({"organization": org}));
    let seat_args = ["-n", namespace.as_str(), "entitlement", seat.as_str()];
    wait_phase(&seat_args, "Active");
    let refused = NamespaceDeleteRefused::new(&namespace);

    archive_long_ago(&org);
    // Purging is recorded; the delete is refused, a permanent error: Stalled.
    let stalled = wait_reason(&["organization", &org], "Stalled", "Forbidden");
    assert_eq!(stalled["status"]["phase"], "Purging");
    assert!(exists(&["namespace", &namespace]));

    // Flipped back while purging: refused, and nothing is provisioned again.
    apply_organization(&org, json!({"displayName": "Data Safety", "taxId": "NL-1"}));
    let flipped = wait_reason(
        &["organization", &org],
        "LifecycleChangeRefused",
        "PurgeStarted",
    );
    assert_eq!(flipped["status"]["phase"], "Purging");
    let seat_now = wait_phase(&seat_args, "Cancelled");
    assert_eq!(seat_now["status"]["cancelled"]["by"], "Organization");
    archive_long_ago(&org);

    // A hold before the delete went through stops the purge.
    let late = unique("late-hold");
    hold(&late, json!({"organization": org}));
    let back = wait_reason(&["organization", &org], "PurgeBlocked", "Held");
    assert_eq!(back["status"]["phase"], "Archived");
    assert!(back["status"]["namespaceDeletedAt"].is_null());
    let events: Vec<&str> = back["status"]["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"].as_str().unwrap())
        .collect();
    assert!(events.contains(&"PurgeDeferred"), "{events:?}");
    refused.lift(&namespace);
    assert!(exists(&["namespace", &namespace]));

    kubectl_ok(&["delete", "retentionhold", &late]);
    wait_phase(&["organization", &org], "Purged");
}

#[test]
fn a_hold_turns_every_delete_into_retain_and_a_purged_entitlement_never_deletes_what_appears_later()
{
    start_controller(&[]);
    let class = unique("deprovisioned");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": class},
            "spec": {"codePrefix": unique_prefix(), "downstream": [
                {"apiVersion": "v1", "kind": "ConfigMap", "onSuspend": "Retain", "onCancel": "Delete", "onPurge": "Delete"},
            ]},
        })
        .to_string(),
    );
    let namespace = unique("held-downstream");
    kubectl_ok(&["create", "namespace", &namespace]);
    let name = unique("env");
    config_map(&namespace, "work", json!({"tenure.dev/entitlement": name}));
    let legal = unique("legal");
    hold(
        &legal,
        json!({"entitlement": {"namespace": namespace, "name": name}}),
    );
    entitlement(
        &namespace,
        &name,
        json!({"class": class, "cancellation": {"reason": "CustomerRequest"},
               "policy": {"purge": {"finalGraceDays": 0}, "cancellation": {"dataRetentionDays": 0}}}),
    );
    let args = ["-n", namespace.as_str(), "entitlement", name.as_str()];
    let held = wait_reason(&args, "DeletionHeld", "Held");
    assert_eq!(held["status"]["phase"], "Cancelled");
    assert!(message(&held, "DeletionHeld").contains(&legal));
    assert!(exists(&["-n", &namespace, "configmap", "work"]));

    kubectl_ok(&["delete", "retentionhold", &legal]);
    wait_phase(&args, "Purged");
    wait_gone(&["-n", &namespace, "configmap", "work"]);

    // Restored from a backup after the purge: reported, never deleted.
    config_map(
        &namespace,
        "restored",
        json!({"tenure.dev/entitlement": name}),
    );
    let reported = wait_reason(&args, "CreatedAfterPurge", "NotDeleted");
    assert!(message(&reported, "CreatedAfterPurge").contains("ConfigMap restored"));
    assert!(exists(&["-n", &namespace, "configmap", "restored"]));
}

#[test]
fn a_hold_whose_target_does_not_exist_is_not_ready_and_still_protects_it_when_it_appears() {
    start_controller(&[]);
    let org = unique("future");
    let early = unique("early");
    hold(&early, json!({"organization": org}));
    let waiting = wait_reason(&["retentionhold", &early], "Ready", "TargetNotFound");
    let ready = condition(&waiting, "Ready").unwrap();
    assert_eq!(ready["status"], "False");
    assert!(
        ready["message"]
            .as_str()
            .unwrap()
            .contains("spec.organization")
    );

    without_final_grace(&org);
    apply_organization(
        &org,
        json!({"lifecycle": "Archived",
               "offboarding": {"reason": "CustomerRequest", "effectiveAt": ago(400)}}),
    );
    let blocked = wait_reason(&["organization", &org], "PurgeBlocked", "Held");
    assert_eq!(blocked["status"]["phase"], "Archived");
    wait_reason(&["retentionhold", &early], "Ready", "InForce");
}

// ---------------------------------------------------------------------------
// Final grace and locks
// ---------------------------------------------------------------------------

#[test]
fn a_locked_policy_is_a_floor_that_no_level_can_shorten() {
    start_controller(&[]);
    let (class, _) = new_class("locked-floor");
    let lock = unique("legal-floor");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": lock},
            "spec": {"scope": {"class": class}, "locked": true,
                     "cancellation": {"dataRetentionDays": 400}, "purge": {"finalGraceDays": 10}},
        })
        .to_string(),
    );
    let name = unique("tenant-written");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "class": class, "product": "floor",
                "cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(100)},
                "policy": {"cancellation": {"dataRetentionDays": 1}, "purge": {"finalGraceDays": 0}},
            },
        })
        .to_string(),
    );
    let args = ["-n", "default", "entitlement", name.as_str()];
    let kept = wait_phase(&args, "Cancelled");
    let retention = &kept["status"]["effectivePolicy"]["cancellation.dataRetentionDays"];
    assert_eq!(retention["value"], 400);
    assert_eq!(retention["from"], format!("LifecyclePolicy/{lock}"));
    assert_eq!(
        retention["raisedFrom"],
        json!({"value": 1, "from": "Entitlement"})
    );
    let grace = &kept["status"]["effectivePolicy"]["purge.finalGraceDays"];
    assert_eq!(grace["value"], 10);
    let purge_after: chrono::DateTime<Utc> = kept["status"]["deadlines"]["purgeAfter"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        purge_after > Utc::now() + TimeDelta::days(299),
        "{purge_after}"
    );
}

#[test]
fn the_organizations_purge_waits_for_the_locked_retention_of_an_entitlement_in_its_namespace() {
    start_controller(&[]);
    let (org, namespace) = active_organization("locked-ent");
    let product = unique("audited");
    let lock = unique("audit-floor");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": lock},
            "spec": {"scope": {"product": product}, "locked": true,
                     "cancellation": {"dataRetentionDays": 500}},
        })
        .to_string(),
    );
    let audited = unique("audited");
    entitlement(
        &namespace,
        &audited,
        json!({"organization": org, "product": product}),
    );
    wait_phase(&["-n", &namespace, "entitlement", &audited], "Active");
    archive_long_ago(&org);
    let kept = wait_for("the locked retention", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        object["status"]["retentionLockedBy"]
            .is_object()
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    let locked = &kept["status"]["retentionLockedBy"];
    assert_eq!(locked["entitlement"], format!("{namespace}/{audited}"));
    assert_eq!(locked["policy"], format!("LifecyclePolicy/{lock}"));
    assert_eq!(kept["status"]["purgeAfter"], locked["until"]);
    assert_eq!(kept["status"]["phase"], "Archived");
    assert!(exists(&["namespace", &namespace]));
}

#[test]
fn an_organizations_guards_keep_its_entitlements_from_being_purged_on_their_own() {
    start_controller(&[]);
    let (org, namespace) = active_organization("guarded");
    // The organization, archived today, keeps its data a year ...
    apply_organization(
        &org,
        json!({"lifecycle": "Archived",
               "offboarding": {"reason": "BusinessClosure", "effectiveAt": ago(0)}}),
    );
    wait_phase(&["organization", &org], "Archived");
    // ... and so the data of an entitlement cancelled long ago, with no final
    // grace of its own, which would otherwise be purged at once.
    let old = unique("old-seat");
    config_map(
        &namespace,
        "old-seat-data",
        json!({"tenure.dev/entitlement": old}),
    );
    entitlement(
        &namespace,
        &old,
        json!({"organization": org,
               "cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
               "policy": {"purge": {"finalGraceDays": 0}}}),
    );
    let args = ["-n", namespace.as_str(), "entitlement", old.as_str()];
    let waiting = wait_reason(&args, "PurgeBlocked", "OrganizationOffboarded");
    assert_eq!(waiting["status"]["phase"], "Cancelled");
    assert!(message(&waiting, "PurgeBlocked").contains(&org));
    assert!(exists(&["-n", &namespace, "configmap", "old-seat-data"]));
}

#[test]
fn a_correction_of_effective_at_to_a_later_date_moves_every_deadline_later() {
    start_controller(&[]);
    let org = unique("corrected");
    let archived = |effective_at: String| {
        apply_organization(
            &org,
            json!({"lifecycle": "Archived",
                   "offboarding": {"reason": "CustomerRequest", "effectiveAt": effective_at}}),
        )
    };
    let first_said = ago(10);
    archived(first_said.clone());
    let first = wait_phase(&["organization", &org], "Archived");
    // Five days later than first said, to the second.
    let later = (first_said.parse::<chrono::DateTime<Utc>>().unwrap() + TimeDelta::days(5))
        .to_rfc3339_opts(SecondsFormat::Secs, true);
    archived(later.clone());
    let corrected = wait_for("the corrected dates", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        (object["status"]["archivedAt"] == later.as_str())
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    let days = |object: &Value, field: &str| {
        object["status"][field]
            .as_str()
            .unwrap()
            .parse::<chrono::DateTime<Utc>>()
            .unwrap()
    };
    assert_eq!(
        days(&corrected, "purgeAfter") - days(&first, "purgeAfter"),
        TimeDelta::days(5)
    );
}

// ---------------------------------------------------------------------------
// Ownership
// ---------------------------------------------------------------------------

#[test]
fn a_namespace_that_lost_tenures_label_is_never_purged_nor_recorded_as_purged() {
    start_controller(&[]);
    let (org, namespace) = active_organization("unlabelled");
    let refused = NamespaceDeleteRefused::new(&namespace);
    archive_long_ago(&org);
    // Purging is recorded, but the namespace stays (its delete is refused).
    wait_reason(&["organization", &org], "Stalled", "Forbidden");
    kubectl_ok(&["label", "namespace", &namespace, "tenure.dev/organization-"]);
    let stalled = wait_reason(&["organization", &org], "Stalled", "NamespaceNotOwned");
    assert_eq!(stalled["status"]["phase"], "Purging");
    assert!(stalled["status"]["tombstone"].is_null());
    refused.lift(&namespace);
    assert!(
        exists(&["namespace", &namespace]),
        "tenure deleted what it does not own"
    );

    // Someone else deletes it: still no tombstone for what tenure did not delete.
    kubectl_ok(&["delete", "namespace", &namespace, "--wait=false"]);
    let gone = wait_reason(&["organization", &org], "Stalled", "NamespaceGone");
    assert_eq!(gone["status"]["phase"], "Purging");
    assert!(gone["status"]["tombstone"].is_null());
}

#[test]
fn a_deleted_data_export_takes_its_zip_with_it() {
    start_controller(&[]);
    let (org, namespace) = active_organization("dropped-export");
    let name = unique("dropped");
    apply_data_export(&namespace, &name, &org);
    let done = wait_export(&namespace, &name, "Succeeded");
    let uri = done["status"]["artifact"]["uri"].as_str().unwrap();
    let path = std::path::PathBuf::from(uri.strip_prefix("file://").unwrap());
    assert!(path.exists());
    kubectl_ok(&[
        "delete",
        "-n",
        &namespace,
        "dataexport",
        &name,
        "--timeout=30s",
    ]);
    assert!(!path.exists(), "{} outlived its DataExport", path.display());
}

// ---------------------------------------------------------------------------
// Tenant isolation
// ---------------------------------------------------------------------------

#[test]
fn a_data_export_in_another_tenants_namespace_is_refused() {
    start_controller(&[]);
    let (victim, _) = active_organization("victim");
    let (_, intruder_namespace) = active_organization("intruder");
    let name = unique("steal");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
            "metadata": {"name": name, "namespace": intruder_namespace},
            "spec": {"organization": victim, "includeSecrets": true, "includeSecretValues": true},
        })
        .to_string(),
    );
    let refused = wait_phase(&["-n", &intruder_namespace, "dataexport", &name], "Failed");
    let stalled = condition(&refused, "Stalled").unwrap();
    assert_eq!(stalled["reason"], "WrongNamespace");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("spec.organization")
    );
    assert!(refused["status"]["artifact"].is_null());
}

#[test]
fn an_entitlement_naming_an_organization_lives_in_its_namespace() {
    start_controller(&[]);
    let (org, _) = active_organization("elsewhere");
    let name = unique("stray");
    entitlement("default", &name, json!({"organization": org}));
    let args = ["-n", "default", "entitlement", name.as_str()];
    let stalled = wait_reason(&args, "Stalled", "WrongNamespace");
    assert!(message(&stalled, "Stalled").contains("spec.organization"));
    assert!(stalled["status"]["code"].is_null(), "no code taken");
    let organization = get_json(&["organization", &org]).unwrap();
    assert_eq!(organization["status"]["entitlements"]["active"], 0);

    // And it cannot be moved out from under a hold.
    let out = kubectl_with_stdin(
        &["apply", "-f", "-"],
        Some(
            &json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
                "metadata": {"name": name, "namespace": "default"},
                "spec": {"class": "service", "product": "data-safety", "organization": "other"},
            })
            .to_string(),
        ),
    );
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("spec.organization is immutable"));
}

#[test]
fn a_selector_that_could_match_every_object_is_refused_and_binds_nothing() {
    start_controller(&[]);
    let namespace = unique("broad");
    kubectl_ok(&["create", "namespace", &namespace]);
    config_map(&namespace, "someone-elses", json!({"team": "red"}));
    let name = unique("greedy");
    entitlement(
        &namespace,
        &name,
        json!({"resources": {"selector": {"matchExpressions": [{"key": "nope", "operator": "DoesNotExist"}]}},
               "cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
               "policy": {"purge": {"finalGraceDays": 0}}}),
    );
    let args = ["-n", namespace.as_str(), "entitlement", name.as_str()];
    let stalled = wait_reason(&args, "Stalled", "InvalidSelector");
    assert!(message(&stalled, "Stalled").contains("spec.resources.selector"));
    assert!(exists(&["-n", &namespace, "configmap", "someone-elses"]));
}

#[test]
fn an_object_labelled_for_another_entitlement_is_never_bound_by_a_selector() {
    start_controller(&[]);
    let namespace = unique("labelled");
    kubectl_ok(&["create", "namespace", &namespace]);
    let other = unique("other");
    config_map(
        &namespace,
        "others-data",
        json!({"team": "blue", "tenure.dev/entitlement": other}),
    );
    config_map(&namespace, "ours", json!({"team": "blue"}));
    let name = unique("blue");
    entitlement(
        &namespace,
        &name,
        json!({"resources": {"selector": {"matchLabels": {"team": "blue"}}},
               "cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
               "policy": {"purge": {"finalGraceDays": 0}}}),
    );
    let purged = wait_phase(&["-n", &namespace, "entitlement", &name], "Purged");
    assert_eq!(purged["status"]["resources"]["deleted"], 1);
    wait_gone(&["-n", &namespace, "configmap", "ours"]);
    assert!(exists(&["-n", &namespace, "configmap", "others-data"]));
}

// ---------------------------------------------------------------------------
// Exports
// ---------------------------------------------------------------------------

#[test]
fn the_purge_removes_every_export_artifact_and_the_tombstone_says_so() {
    start_controller(&[]);
    let (org, namespace) = active_organization("exported");
    let name = unique("handover");
    apply_data_export(&namespace, &name, &org);
    let done = wait_export(&namespace, &name, "Succeeded");
    let path = done["status"]["artifact"]["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap()
        .to_string();
    assert!(std::path::Path::new(&path).exists());

    archive_long_ago(&org);
    let purged = wait_phase(&["organization", &org], "Purged");
    assert_eq!(
        purged["status"]["tombstone"]["deleted"]["ExportArtifact"],
        1
    );
    assert!(
        !std::path::Path::new(&path).exists(),
        "{path} outlived its organization"
    );
}

// ---------------------------------------------------------------------------
// Codes and classes
// ---------------------------------------------------------------------------

#[test]
fn an_imported_code_with_another_classs_prefix_is_refused() {
    start_controller(&[]);
    let name = unique("foreign-code");
    entitlement(
        "default",
        &name,
        json!({"class": "plugin", "code": "ENV-2026010001"}),
    );
    let stalled = wait_reason(
        &["-n", "default", "entitlement", &name],
        "Stalled",
        "CodePrefixMismatch",
    );
    assert!(message(&stalled, "Stalled").contains("spec.code"));
    assert!(stalled["status"]["code"].is_null());
}

#[test]
fn a_class_reusing_another_classs_prefix_hands_out_no_codes() {
    start_controller(&[]);
    let (_, prefix) = new_class("first-owner");
    // Its name sorts after the first owner's: created in the same second, the
    // older-or-first-by-name rule still gives the prefix to the first.
    let copy = unique("zz-copycat");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": copy}, "spec": {"codePrefix": prefix},
        })
        .to_string(),
    );
    let stalled = wait_reason(&["entitlementclass", &copy], "Stalled", "PrefixInUse");
    assert!(message(&stalled, "Stalled").contains("spec.codePrefix"));
    let name = unique("copied");
    entitlement("default", &name, json!({"class": copy}));
    let waiting = wait_reason(
        &["-n", "default", "entitlement", &name],
        "Stalled",
        "ClassNotUsable",
    );
    assert!(waiting["status"]["code"].is_null());
}

#[test]
fn a_class_listing_a_cluster_scoped_kind_stalls_with_its_entitlements_before_any_code_is_taken() {
    start_controller(&[]);
    let group = "gizmos.tenure-test.dev";
    apply_test_crd(group, "Gizmo", "Cluster");
    let class = unique("cluster-wide");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": class},
            "spec": {"codePrefix": unique_prefix(), "downstream": [
                {"apiVersion": format!("{group}/v1"), "kind": "Gizmo"},
            ]},
        })
        .to_string(),
    );
    let stalled = wait_reason(
        &["entitlementclass", &class],
        "Stalled",
        "ClusterScopedKind",
    );
    assert!(message(&stalled, "Stalled").contains("spec.downstream[0]"));
    let name = unique("gizmo-user");
    entitlement("default", &name, json!({"class": class}));
    wait_reason(
        &["-n", "default", "entitlement", &name],
        "Stalled",
        "ClassNotUsable",
    );
    let class = get_json(&["entitlementclass", &class]).unwrap();
    assert!(
        class["status"]["sequences"].is_null(),
        "codes were taken: {}",
        class["status"]
    );
}

#[test]
fn the_api_server_refuses_what_a_class_a_code_or_a_lock_may_never_say() {
    let refused = |manifest: Value, expected: &str| {
        let out = kubectl_with_stdin(
            &["create", "--dry-run=server", "-f", "-"],
            Some(&manifest.to_string()),
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted: {manifest}");
        assert!(stderr.contains(expected), "{expected:?} not in: {stderr}");
    };
    let class = |downstream: Value| {
        json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": unique("invalid")},
            "spec": {"codePrefix": "INV", "downstream": [downstream]},
        })
    };
    refused(
        class(json!({"apiVersion": "v1", "kind": "Namespace"})),
        "spec.downstream lists a cluster-scoped kind",
    );
    refused(
        class(json!({"apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement"})),
        "spec.downstream cannot list tenure's own kinds",
    );
    refused(
        json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": unique("month-13"), "namespace": "default"},
            "spec": {"class": "plugin", "product": "x", "code": "PLG-2026130001"},
        }),
        "spec.code",
    );

    // A locked policy's scope and final grace stay as they are.
    let name = unique("locked-scope");
    let policy = |product: &str, grace: i64| {
        json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": name},
            "spec": {"scope": {"product": product}, "locked": true, "purge": {"finalGraceDays": grace}},
        })
        .to_string()
    };
    apply(&policy(&name, 14));
    let refusal = |manifest: String| {
        let out = kubectl_with_stdin(&["apply", "-f", "-"], Some(&manifest));
        assert!(!out.status.success(), "accepted: {manifest}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    assert!(
        refusal(policy("elsewhere", 14)).contains("spec.scope of a locked policy is immutable")
    );
    assert!(
        refusal(policy(&name, 3))
            .contains("spec.purge.finalGraceDays of a locked policy can grow but never shrink")
    );
    apply(&policy(&name, 30));
}

#[test]
fn a_purge_refused_by_the_api_server_stalls_with_the_reason_instead_of_retrying_forever() {
    start_controller(&[]);
    let (org, namespace) = active_organization("refused");
    let _refused = NamespaceDeleteRefused::new(&namespace);
    archive_long_ago(&org);
    let stalled = wait_reason(&["organization", &org], "Stalled", "Forbidden");
    assert!(message(&stalled, "Stalled").contains("ClusterRole"));
    assert_eq!(condition(&stalled, "Ready").unwrap()["status"], "False");
    assert!(exists(&["namespace", &namespace]));
}
