//! What Argo CD and Flux make of tenure's objects: real objects driven into
//! every phase, read with kubectl, judged by the Argo CD health checks in
//! argocd/resource_customizations (run in gopher-lua, the VM Argo CD embeds)
//! and by kstatus (sigs.k8s.io/cli-utils, what Flux's health checks use),
//! both through the helper hack/health/build builds. Also: a spec change the
//! controller has not observed yet (the controller is stopped meanwhile), and
//! the Argo CD-style health_test.yaml fixtures, statically.
//!
//! `TENURE_WRITE_HEALTH_FIXTURES=1 cargo test --test health` rewrites the
//! fixtures (testdata/*.yaml and health_test.yaml) from the objects captured.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

/// The health helper, built (once, cached by its sources) by hack/health/build.
fn helper() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo().join("hack/health/build"))
            .stderr(Stdio::inherit())
            .output()
            .expect("hack/health/build runs");
        assert!(out.status.success(), "hack/health/build failed");
        PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    })
}

/// Runs the helper with `args`, `input` on stdin; its stdout.
fn run_helper(args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new(helper())
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the health helper runs");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "health {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn customizations() -> PathBuf {
    repo().join("argocd/resource_customizations/tenure.dev")
}

/// What Argo CD's health check for `kind` says of `object`: {status, message}.
fn argo_cd(kind: &str, object: &Value) -> Value {
    let script = customizations().join(kind).join("health.lua");
    let out = run_helper(&["lua", script.to_str().unwrap(), "-"], &object.to_string());
    serde_json::from_str(&out).unwrap()
}

/// What kstatus' status.Compute says of `object`: {status, message, conditions}.
fn kstatus(object: &Value) -> Value {
    serde_json::from_str(&run_helper(&["kstatus", "-"], &object.to_string())).unwrap()
}

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn ahead(days: i64) -> String {
    ago(-days)
}

/// One observed object and what both tools must make of it.
struct Seen {
    kind: &'static str,
    fixture: &'static str,
    object: Value,
}

/// Asserts that Argo CD's health is `argo` and kstatus' result `flux` for
/// `object`, and returns it for the fixtures. The message is checked too:
/// a Degraded one carries the Stalled condition's reason and message, a
/// phase's starts with the phase, an unobserved change names the generation.
fn judged(
    kind: &'static str,
    fixture: &'static str,
    object: Value,
    argo: &str,
    flux: &str,
) -> Seen {
    let health = argo_cd(kind, &object);
    let computed = kstatus(&object);
    let context = format!(
        "{kind} {fixture}: Argo CD {health}, kstatus {computed}, status {}",
        object["status"]
    );
    assert_eq!(health["status"], argo, "Argo CD health of {context}");
    assert_eq!(computed["status"], flux, "kstatus of {context}");
    let message = health["message"].as_str().unwrap_or_default();
    let generation = &object["metadata"]["generation"];
    let observed = &object["status"]["observedGeneration"];
    if object["status"].is_null() {
        assert!(message.starts_with("Waiting for tenure"), "{context}");
    } else if generation != observed {
        assert!(
            message.contains(&format!(
                "generation {generation} (status describes generation {observed})"
            )),
            "{context}"
        );
    } else if let Some(stalled) = condition(&object, "Stalled").filter(|c| c["status"] == "True") {
        let expected = format!(
            "{}: {}",
            stalled["reason"].as_str().unwrap(),
            stalled["message"].as_str().unwrap()
        );
        assert_eq!(message, expected, "{context}");
    } else if let Some(phase) = object["status"]["phase"].as_str() {
        assert!(message.starts_with(&format!("{phase}: ")), "{context}");
    }
    Seen {
        kind,
        fixture,
        object,
    }
}

fn wait_condition_reason(args: &[&str], type_: &str, reason: &str) -> Value {
    wait_for(&format!("{type_} {reason} on {args:?}"), TIMEOUT, || {
        let object = get_json(args)?;
        let current = object["status"]["observedGeneration"] == object["metadata"]["generation"];
        (current && condition(&object, type_).is_some_and(|c| c["reason"] == reason))
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    })
}

fn organization(name: &str, spec: Value) {
    apply_organization(
        name,
        merged(
            json!({"displayName": "Health Check Ltd", "taxId": "HC-1"}),
            spec,
        ),
    );
}

fn entitlement(namespace: &str, name: &str, spec: Value) {
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": namespace},
            "spec": merged(json!({"class": "service", "product": "health"}), spec),
        })
        .to_string(),
    );
}

fn hold(name: &str, spec: Value) {
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "RetentionHold",
            "metadata": {"name": name},
            "spec": merged(json!({"reason": "litigation", "ticket": "LEGAL-1"}), spec),
        })
        .to_string(),
    );
}

/// A LifecycleWebhook whose key is `secret` in the chart's namespace,
/// posting to a port nobody listens on, unless `spec` says otherwise.
fn webhook(name: &str, secret: &str, spec: Value) {
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecycleWebhook",
            "metadata": {"name": name},
            "spec": merged(json!({
                "url": "http://127.0.0.1:1/refused",
                "secretRef": {"namespace": CHART_NAMESPACE, "name": secret},
            }), spec),
        })
        .to_string(),
    );
}

fn data_export(namespace: &str, name: &str, organization: &str) {
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"organization": organization},
        })
        .to_string(),
    );
}

fn org(name: &str) -> [&str; 2] {
    ["organization", name]
}

fn ent_args(name: &str) -> [&str; 4] {
    ["-n", "default", "entitlement", name]
}

fn patch(args: &[&str], merge_patch: Value) {
    let mut all = vec!["patch"];
    all.extend_from_slice(args);
    let merge_patch = merge_patch.to_string();
    all.extend_from_slice(&["--type=merge", "-p", &merge_patch]);
    kubectl_ok(&all);
}

#[test]
fn every_phase_of_every_kind_is_what_argo_cd_and_kstatus_users_expect() {
    let controller = Controller::spawn(&[], "tenure-health");
    let mut seen = Vec::new();

    // Organizations: one per phase, and one purged with a finalizer of
    // someone else's keeping its namespace Terminating: Purging, then Purged.
    let active = unique("health-active");
    let tenant = format!("org-{active}");
    let disabled = unique("health-disabled");
    let archived = unique("health-archived");
    let scheduled = unique("health-scheduled");
    let purged = unique("health-purged");
    without_final_grace(&purged);
    organization(&active, json!({}));
    organization(
        &disabled,
        json!({"lifecycle": "Disabled", "offboarding": {"reason": "NonPayment", "ticket": "FIN-1"}}),
    );
    organization(
        &archived,
        json!({"lifecycle": "Archived", "offboarding": {"reason": "CustomerRequest", "ticket": "CS-1"}}),
    );
    organization(
        &scheduled,
        json!({"lifecycle": "Disabled", "offboarding": {"reason": "NonPayment", "ticket": "FIN-2", "effectiveAt": ago(200)}}),
    );
    organization(&purged, json!({}));

    // Entitlements, standalone in namespace default, one per phase, and two
    // that stall: one in the wrong namespace, one of a class that does not exist.
    let ent = |phase: &str| unique(&format!("health-{}", phase.to_lowercase()));
    let pending = ent("Pending");
    let ent_active = ent("Active");
    let suspended = ent("Suspended");
    let expired = ent("Expired");
    let cancelled = ent("Cancelled");
    let ent_purged = ent("Purged");
    let wrong_namespace = ent("WrongNamespace");
    let no_class = ent("NoClass");
    entitlement("default", &pending, json!({"startsAt": ahead(30)}));
    entitlement("default", &ent_active, json!({}));
    entitlement(
        "default",
        &suspended,
        json!({"payment": {"failedAt": ago(1)}}),
    );
    entitlement(
        "default",
        &expired,
        json!({"startsAt": ago(60), "endsAt": ago(1)}),
    );
    entitlement(
        "default",
        &cancelled,
        json!({"cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(1)}}),
    );
    entitlement(
        "default",
        &ent_purged,
        json!({
            "startsAt": ago(800),
            "cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
            "policy": {"purge": {"finalGraceDays": 0}},
        }),
    );
    entitlement("default", &wrong_namespace, json!({"organization": active}));
    entitlement(
        "default",
        &no_class,
        json!({"class": unique("no-such-class")}),
    );

    // Holds: in force, lapsed, and one whose target does not exist (yet).
    let in_force = unique("health-in-force");
    let lapsed = unique("health-lapsed");
    let no_target = unique("health-no-target");
    hold(&in_force, json!({"organization": active}));
    hold(&lapsed, json!({"organization": active, "until": ago(1)}));
    hold(&no_target, json!({"organization": unique("nobody")}));

    // Webhooks: one with nothing to deliver, and three with an organization's
    // events waiting: suspended, its key missing, its receiver refusing.
    let key = unique("health-key");
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &key,
        "-n",
        CHART_NAMESPACE,
        "--from-literal=key=k",
    ]);
    let hooked = unique("health-hooked");
    let idle = unique("health-idle");
    let suspended_hook = unique("health-suspended");
    let keyless = unique("health-keyless");
    let refused = unique("health-refused");
    webhook(&idle, &key, json!({"organizations": [unique("nobody")]}));
    webhook(
        &suspended_hook,
        &key,
        json!({"organizations": [hooked], "suspend": true}),
    );
    webhook(
        &keyless,
        &unique("no-such-key"),
        json!({"organizations": [hooked]}),
    );
    webhook(&refused, &key, json!({"organizations": [hooked]}));
    for name in [&idle, &suspended_hook, &keyless, &refused] {
        wait_for(&format!("webhook {name} to begin"), TIMEOUT, || {
            let object = get_json(&["lifecyclewebhook", name])?;
            (!object["status"]["since"].is_null())
                .then_some(())
                .ok_or(object["status"].to_string())
        });
    }
    organization(
        &hooked,
        json!({"lifecycle": "Disabled", "offboarding": {"reason": "NonPayment", "ticket": "FIN-4"}}),
    );

    let object = wait_phase(&org(&active), "Active");
    seen.push(judged(
        "Organization",
        "active",
        object,
        "Healthy",
        "Current",
    ));
    let object = wait_phase(&org(&disabled), "Disabled");
    seen.push(judged(
        "Organization",
        "disabled",
        object,
        "Suspended",
        "Current",
    ));
    let object = wait_phase(&org(&archived), "Archived");
    seen.push(judged(
        "Organization",
        "archived",
        object,
        "Suspended",
        "Current",
    ));
    let object = wait_phase(&org(&scheduled), "PurgeScheduled");
    seen.push(judged(
        "Organization",
        "purge_scheduled",
        object,
        "Suspended",
        "Current",
    ));

    // DataExports: one that succeeds in the tenant namespace, one that fails
    // elsewhere.
    let exported = unique("health-export");
    let misplaced = unique("health-misplaced");
    data_export(&tenant, &exported, &active);
    data_export("default", &misplaced, &active);
    let object = wait_export(&tenant, &exported, "Succeeded");
    seen.push(judged(
        "DataExport",
        "succeeded",
        object,
        "Healthy",
        "Current",
    ));
    let object = wait_condition_reason(
        &["-n", "default", "dataexport", &misplaced],
        "Stalled",
        "WrongNamespace",
    );
    assert_eq!(object["status"]["phase"], "Failed");
    seen.push(judged("DataExport", "failed", object, "Degraded", "Failed"));

    for (name, phase, fixture, argo) in [
        (&pending, "Pending", "pending", "Progressing"),
        (&ent_active, "Active", "active", "Healthy"),
        (&suspended, "Suspended", "suspended", "Suspended"),
        (&expired, "Expired", "expired", "Suspended"),
        (&cancelled, "Cancelled", "cancelled", "Suspended"),
        (&ent_purged, "Purged", "purged", "Healthy"),
    ] {
        let object = wait_phase(&ent_args(name), phase);
        seen.push(judged("Entitlement", fixture, object, argo, "Current"));
    }
    let object = wait_condition_reason(&ent_args(&wrong_namespace), "Stalled", "WrongNamespace");
    seen.push(judged(
        "Entitlement",
        "stalled_wrong_namespace",
        object,
        "Degraded",
        "Failed",
    ));
    let object = wait_condition_reason(&ent_args(&no_class), "Stalled", "ClassNotFound");
    seen.push(judged(
        "Entitlement",
        "stalled_class_not_found",
        object,
        "Degraded",
        "Failed",
    ));

    let object = wait_condition_reason(&["retentionhold", &in_force], "Ready", "InForce");
    seen.push(judged(
        "RetentionHold",
        "in_force",
        object,
        "Healthy",
        "Current",
    ));
    let object = wait_condition_reason(&["retentionhold", &lapsed], "Ready", "Lapsed");
    seen.push(judged(
        "RetentionHold",
        "lapsed",
        object,
        "Suspended",
        "Current",
    ));
    let object = wait_condition_reason(&["retentionhold", &no_target], "Ready", "TargetNotFound");
    assert_eq!(condition(&object, "Ready").unwrap()["status"], "False");
    seen.push(judged(
        "RetentionHold",
        "target_not_found",
        object,
        "Progressing",
        "InProgress",
    ));

    for (name, reason, fixture, argo, flux) in [
        (&idle, "Delivered", "delivered", "Healthy", "Current"),
        (
            &suspended_hook,
            "Suspended",
            "suspended",
            "Suspended",
            "InProgress",
        ),
        (
            &keyless,
            "SecretNotFound",
            "secret_not_found",
            "Degraded",
            "InProgress",
        ),
        (
            &refused,
            "DeliveryFailed",
            "delivery_failed",
            "Degraded",
            "InProgress",
        ),
    ] {
        let object = wait_condition_reason(&["lifecyclewebhook", name], "Ready", reason);
        seen.push(judged("LifecycleWebhook", fixture, object, argo, flux));
    }
    for name in [&idle, &suspended_hook, &keyless, &refused] {
        kubectl_ok(&["delete", "lifecyclewebhook", name]);
    }

    // The purge: Purging (Reconciling=True) while the namespace is held up
    // by a finalizer, then Purged once it is gone.
    let purged_args = org(&purged);
    wait_phase(&purged_args, "Active");
    let purged_namespace = format!("org-{purged}");
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "slow-to-delete", "namespace": purged_namespace, "finalizers": ["test.tenure.dev/slow"]},
        })
        .to_string(),
    );
    organization(
        &purged,
        json!({"lifecycle": "Archived", "offboarding": {"reason": "CustomerRequest", "ticket": "CS-2", "effectiveAt": ago(400)}}),
    );
    let object = wait_for("the purge to wait for the namespace", TIMEOUT, || {
        let object = get_json(&purged_args)?;
        let current = object["status"]["observedGeneration"] == object["metadata"]["generation"];
        (current && condition(&object, "Reconciling").is_some_and(|c| c["status"] == "True"))
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(object["status"]["phase"], "Purging");
    seen.push(judged(
        "Organization",
        "purging",
        object,
        "Progressing",
        "InProgress",
    ));
    patch(
        &["configmap", "slow-to-delete", "-n", &purged_namespace],
        json!({"metadata": {"finalizers": null}}),
    );
    let object = wait_phase(&purged_args, "Purged");
    seen.push(judged(
        "Organization",
        "purged",
        object,
        "Healthy",
        "Current",
    ));

    // A spec change the controller has not observed: it is stopped, the
    // change is applied (metadata.generation moves past
    // status.observedGeneration), and an object is created that it has never
    // seen. Then it starts again and catches up.
    assert!(controller.terminate().success());
    patch(
        &["organization", &active],
        json!({"spec": {"lifecycle": "Disabled", "offboarding": {"reason": "NonPayment", "ticket": "FIN-3"}}}),
    );
    patch(
        &ent_args(&ent_active),
        json!({"spec": {"payment": {"failedAt": ago(1)}}}),
    );
    patch(
        &["retentionhold", &in_force],
        json!({"spec": {"ticket": "LEGAL-2"}}),
    );
    let unseen = ent("Unseen");
    entitlement("default", &unseen, json!({}));
    let changed = |args: &[&str]| {
        let object = get_json(args).unwrap();
        assert_eq!(
            object["metadata"]["generation"].as_i64(),
            object["status"]["observedGeneration"]
                .as_i64()
                .map(|g| g + 1),
            "{args:?}: the change is not observed"
        );
        object
    };
    let object = changed(&org(&active));
    assert_eq!(object["status"]["phase"], "Active", "status as it was");
    seen.push(judged(
        "Organization",
        "spec_change_not_observed",
        object,
        "Progressing",
        "InProgress",
    ));
    let object = changed(&ent_args(&ent_active));
    assert_eq!(object["status"]["phase"], "Active", "status as it was");
    // `kubectl wait --for=condition=Ready` skips a Ready condition of an
    // older generation: it waits too.
    let waited = kubectl(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=2s",
        "-n",
        "default",
        &format!("entitlement/{ent_active}"),
    ]);
    assert!(!waited.status.success(), "kubectl wait returned at once");
    seen.push(judged(
        "Entitlement",
        "spec_change_not_observed",
        object,
        "Progressing",
        "InProgress",
    ));
    let object = changed(&["retentionhold", &in_force]);
    seen.push(judged(
        "RetentionHold",
        "spec_change_not_observed",
        object,
        "Progressing",
        "InProgress",
    ));
    // kstatus has nothing to go on without status (no observedGeneration,
    // no conditions) and calls it Current; the Argo CD check waits for it.
    let object = get_json(&ent_args(&unseen)).unwrap();
    assert!(object["status"].is_null(), "{}", object["status"]);
    seen.push(judged(
        "Entitlement",
        "no_status",
        object,
        "Progressing",
        "Current",
    ));

    let _controller = Controller::spawn(&[], "tenure-health-restarted");
    let object = wait_phase(&org(&active), "Disabled");
    judged("Organization", "", object, "Suspended", "Current");
    kubectl_ok(&[
        "wait",
        "--for=condition=Ready",
        "--timeout=60s",
        "-n",
        "default",
        &format!("entitlement/{ent_active}"),
    ]);
    let object = wait_phase(&ent_args(&ent_active), "Suspended");
    judged("Entitlement", "", object, "Suspended", "Current");
    let object = wait_condition_reason(&["retentionhold", &in_force], "Ready", "InForce");
    judged("RetentionHold", "", object, "Healthy", "Current");
    let object = wait_phase(&ent_args(&unseen), "Active");
    judged("Entitlement", "", object, "Healthy", "Current");

    if std::env::var_os("TENURE_WRITE_HEALTH_FIXTURES").is_some() {
        write_fixtures(&seen);
    }
}

/// A captured object without what only describes this cluster's copy of it.
fn fixture(object: &Value) -> Value {
    let mut object = object.clone();
    let metadata = object["metadata"].as_object_mut().unwrap();
    for noise in [
        "managedFields",
        "uid",
        "resourceVersion",
        "creationTimestamp",
    ] {
        metadata.remove(noise);
    }
    if let Some(annotations) = metadata
        .get_mut("annotations")
        .and_then(Value::as_object_mut)
    {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        if annotations.is_empty() {
            metadata.remove("annotations");
        }
    }
    object
}

/// Every kind with an Argo CD health check.
const KINDS: [&str; 5] = [
    "Organization",
    "Entitlement",
    "DataExport",
    "RetentionHold",
    "LifecycleWebhook",
];

/// Writes each kind's testdata/<fixture>.yaml and its health_test.yaml, the
/// expected health being what the live objects were asserted to be.
fn write_fixtures(seen: &[Seen]) {
    for kind in KINDS {
        let dir = customizations().join(kind);
        let mut tests = String::from("tests:\n");
        for seen in seen.iter().filter(|s| s.kind == kind) {
            let object = fixture(&seen.object);
            let yaml = run_helper(&["yaml", "-"], &object.to_string());
            let path = format!("testdata/{}.yaml", seen.fixture);
            std::fs::write(dir.join(&path), yaml).unwrap();
            let health = argo_cd(kind, &object);
            tests.push_str(&format!(
                "- healthStatus:\n    status: {}\n    message: {}\n  inputPath: {path}\n",
                health["status"].as_str().unwrap(),
                health["message"],
            ));
        }
        std::fs::write(dir.join("health_test.yaml"), tests).unwrap();
    }
}

/// The Argo CD-style health tests (health_test.yaml beside each health.lua,
/// its fixtures captured from real objects) pass: no cluster needed.
#[test]
fn the_argo_cd_health_tests_pass_on_the_captured_fixtures() {
    let mut files = Vec::new();
    for kind in KINDS {
        let dir = customizations().join(kind);
        let tests = dir.join("health_test.yaml");
        assert!(tests.exists(), "{} exists", tests.display());
        let listed = std::fs::read_to_string(&tests).unwrap();
        for entry in std::fs::read_dir(dir.join("testdata")).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            assert!(
                listed.contains(&format!("inputPath: testdata/{name}\n")),
                "{kind}: testdata/{name} is in health_test.yaml"
            );
        }
        files.push(tests.to_str().unwrap().to_string());
    }
    let out = Command::new(helper())
        .arg("test")
        .args(&files)
        .output()
        .expect("the health helper runs");
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{report}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for status in ["Healthy", "Progressing", "Suspended", "Degraded"] {
        assert!(
            report.contains(&format!(": {status}\n")),
            "{status} is tested: {report}"
        );
    }
}
