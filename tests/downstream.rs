//! What an entitlement governs, end to end: workloads paused on a payment
//! failure and restored exactly, bound objects torn down at the purge, unbound
//! ones never touched, and a class that binds a CRD-defined kind.

mod common;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn deployment(namespace: &str, name: &str, replicas: i64, bound_to: Option<&str>) -> Value {
    let labels = match bound_to {
        Some(entitlement) => json!({"app": name, "tenure.dev/entitlement": entitlement}),
        None => json!({"app": name}),
    };
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{"name": "app", "image": "registry.example/app:1"}]},
            },
        },
    })
}

fn get(namespace: &str, kind: &str, name: &str) -> Result<Value, String> {
    get_json(&["-n", namespace, kind, name])
}

/// Waits until `check` holds for the object, and returns it.
fn wait_object(
    namespace: &str,
    kind: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    wait_for(&format!("{kind} {name}: {what}"), TIMEOUT, || {
        let object = get(namespace, kind, name)?;
        check(&object)
            .then_some(object.clone())
            .ok_or(format!("{}", object["spec"]))
    })
}

fn patch(namespace: &str, name: &str, patch: &str, kind: &str) {
    kubectl_ok(&[
        "patch",
        "-n",
        namespace,
        "entitlement",
        name,
        &format!("--type={kind}"),
        "-p",
        patch,
    ]);
}

#[test]
fn workloads_pause_on_a_payment_failure_resume_exactly_and_are_torn_down_at_the_purge() {
    start_controller(&[]);
    let namespace = unique("env");
    kubectl_ok(&["create", "namespace", &namespace]);
    let env = unique("staging");
    apply(&deployment(&namespace, "web", 3, Some(&env)).to_string());
    apply(&deployment(&namespace, "other", 2, None).to_string());
    apply(
        &json!({
            "apiVersion": "batch/v1", "kind": "CronJob",
            "metadata": {"name": "nightly", "namespace": namespace, "labels": {"tenure.dev/entitlement": env}},
            "spec": {
                "schedule": "0 3 * * *",
                "jobTemplate": {"spec": {"template": {"spec": {
                    "restartPolicy": "Never",
                    "containers": [{"name": "job", "image": "registry.example/job:1"}],
                }}}},
            },
        })
        .to_string(),
    );
    apply(
        &json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": "data", "namespace": namespace, "labels": {"tenure.dev/entitlement": env}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
        })
        .to_string(),
    );
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": env, "namespace": namespace},
            "spec": {"class": "environment", "product": "staging"},
        })
        .to_string(),
    );
    let args = ["-n", namespace.as_str(), "entitlement", env.as_str()];
    let active = wait_phase(&args, "Active");
    assert_eq!(
        active["status"]["resources"],
        json!({"bound": 3, "paused": 0, "deprovisioned": 0, "deleted": 0})
    );

    // Payment fails: the workloads pause, the rest stays as it is.
    patch(
        &namespace,
        &env,
        &json!({"spec": {"payment": {"failedAt": ago(1)}}}).to_string(),
        "merge",
    );
    let suspended = wait_for("two workloads paused", TIMEOUT, || {
        let object = get_json(&args)?;
        (object["status"]["phase"] == "Suspended" && object["status"]["resources"]["paused"] == 2)
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(suspended["status"]["resources"]["bound"], 3);
    let web = get(&namespace, "deployment", "web").unwrap();
    assert_eq!(web["spec"]["replicas"], 0);
    assert_eq!(
        web["metadata"]["annotations"]["tenure.dev/paused-replicas"],
        "3"
    );
    assert_eq!(
        get(&namespace, "cronjob", "nightly").unwrap()["spec"]["suspend"],
        true
    );
    let other = get(&namespace, "deployment", "other").unwrap();
    assert_eq!(
        other["spec"]["replicas"], 2,
        "an unbound workload is never touched"
    );
    assert!(other["metadata"]["annotations"]["tenure.dev/paused-replicas"].is_null());

    // A workload deployed while suspended is paused as it appears.
    apply(&deployment(&namespace, "late", 2, Some(&env)).to_string());
    let late = wait_object(&namespace, "deployment", "late", "paused", |o| {
        o["spec"]["replicas"] == 0
    });
    assert_eq!(
        late["metadata"]["annotations"]["tenure.dev/paused-replicas"],
        "2"
    );

    // Payment recovered: exactly what was there comes back.
    patch(
        &namespace,
        &env,
        r#"[{"op": "remove", "path": "/spec/payment"}]"#,
        "json",
    );
    let web = wait_object(&namespace, "deployment", "web", "3 replicas again", |o| {
        o["spec"]["replicas"] == 3
    });
    assert!(web["metadata"]["annotations"]["tenure.dev/paused-replicas"].is_null());
    wait_object(&namespace, "cronjob", "nightly", "resumed", |o| {
        o["spec"]["suspend"] == false
            && o["metadata"]["annotations"]["tenure.dev/paused-suspend"].is_null()
    });
    wait_object(&namespace, "deployment", "late", "2 replicas again", |o| {
        o["spec"]["replicas"] == 2
    });
    let resumed = wait_phase(&args, "Active");
    assert_eq!(resumed["status"]["resources"]["paused"], 0);

    // Cancelled long ago, retention long over: the bound objects go, PVC included.
    patch(
        &namespace,
        &env,
        &json!({"spec": {
            "cancellation": {"reason": "CustomerRequest", "effectiveAt": ago(400)},
            "policy": {"purge": {"finalGraceDays": 0}},
        }})
        .to_string(),
        "merge",
    );
    let purged = wait_phase(&args, "Purged");
    assert_eq!(
        purged["status"]["resources"],
        json!({"bound": 0, "paused": 0, "deprovisioned": 0, "deleted": 4})
    );
    for (kind, name) in [
        ("deployment", "web"),
        ("cronjob", "nightly"),
        ("persistentvolumeclaim", "data"),
    ] {
        wait_for(
            &format!("{kind} {name} to be gone"),
            TIMEOUT,
            || match get(&namespace, kind, name) {
                Err(_) => Ok(()),
                Ok(object) => Err(object["metadata"].to_string()),
            },
        );
    }
    assert_eq!(
        get(&namespace, "deployment", "other").unwrap()["spec"]["replicas"],
        2
    );
    kubectl_ok(&["get", "-n", &namespace, "entitlement", &env]);
}

#[test]
fn a_custom_class_binds_a_crd_defined_kind_by_selector_and_tears_it_down() {
    start_controller(&[]);
    let group = "widgets.tenure-test.dev";
    apply_test_crd(group, "Widget", "Namespaced");
    let class = unique("widgets");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": class},
            "spec": {"codePrefix": unique_prefix(), "downstream": [
                {"apiVersion": format!("{group}/v1"), "kind": "Widget", "onSuspend": "Retain", "onCancel": "Retain", "onPurge": "Delete"},
            ]},
        })
        .to_string(),
    );
    let namespace = unique("widgets");
    kubectl_ok(&["create", "namespace", &namespace]);
    let widget = |name: &str, team: &str| {
        apply(
            &json!({
                "apiVersion": format!("{group}/v1"), "kind": "Widget",
                "metadata": {"name": name, "namespace": namespace, "labels": {"team": team}},
                "size": 3,
            })
            .to_string(),
        )
    };
    widget("ours", "blue");
    widget("theirs", "red");
    let name = unique("gadget");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {
                "class": class, "product": "widgets",
                "resources": {"selector": {"matchLabels": {"team": "blue"}}},
                "cancellation": {"reason": "ServiceDiscontinued", "effectiveAt": ago(400)},
                "policy": {"purge": {"finalGraceDays": 0}},
            },
        })
        .to_string(),
    );
    let purged = wait_phase(&["-n", &namespace, "entitlement", &name], "Purged");
    assert_eq!(purged["status"]["resources"]["deleted"], 1);
    wait_for("the bound widget to be gone", TIMEOUT, || {
        match get(&namespace, "widget", "ours") {
            Err(_) => Ok(()),
            Ok(_) => Err("still there".into()),
        }
    });
    get(&namespace, "widget", "theirs").expect("the unbound widget stays");
}
