//! tenure as a platform team runs it: two replicas with one leader that
//! hand over on SIGKILL and SIGTERM without a code given twice, metrics and
//! health read over HTTP, and the chart's admission guard holding the
//! chart's ServiceAccount to what tenure needs.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::json;

fn leads(port: u16) -> bool {
    http_get(port, "/metrics")
        .is_ok_and(|(_, body)| metric_sample(&body, "tenure_leader") == Some(1.0))
}

/// A replica campaigning for `lease` in the chart's namespace, as the
/// chart's ServiceAccount, its metrics on `port`.
fn replica(lease: &str, port: u16, log: &str) -> Controller {
    let metrics = format!("127.0.0.1:{port}");
    let args = [
        "--leader-election=true",
        "--lease-name",
        lease,
        "--lease-namespace",
        CHART_NAMESPACE,
        "--lease-duration",
        &LEASE_SECONDS.to_string(),
        "--metrics-addr",
        &metrics,
    ];
    let env = [("POD_NAME", log)];
    Controller::spawn_with_env(&args, &env, log)
}

const LEASE_SECONDS: i64 = 6;

fn lease(name: &str) -> serde_json::Value {
    get_json(&["-n", CHART_NAMESPACE, "lease", name]).unwrap()
}

fn lease_time(lease: &serde_json::Value, field: &str) -> DateTime<Utc> {
    lease["spec"][field].as_str().unwrap().parse().unwrap()
}

#[test]
fn of_two_replicas_one_leads_and_the_other_takes_over_on_sigkill_and_on_sigterm() {
    let lease_name = unique("leader");
    let (port_a, port_b, port_c) = (free_port(), free_port(), free_port());
    let first = replica(&lease_name, port_a, "tenure-replica-a");
    let second = replica(&lease_name, port_b, "tenure-replica-b");

    // Both ready (caches synced), exactly one leading.
    for port in [port_a, port_b] {
        wait_for("readyz", Duration::from_secs(60), || {
            match http_get(port, "/readyz") {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        });
        assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    }
    let first_leads = wait_for("one leader", Duration::from_secs(60), || {
        match (leads(port_a), leads(port_b)) {
            (true, false) => Ok(true),
            (false, true) => Ok(false),
            both => Err(format!("leading: {both:?}")),
        }
    });
    let ((leader, leader_port), (standby, standby_port)) = match first_leads {
        true => ((first, port_a), (second, port_b)),
        false => ((second, port_b), (first, port_a)),
    };
    let (class, prefix) = new_class("failover");
    let before = unique("before-kill");
    create_batch(&class, &before, 30);
    let codes_before = all_coded(&before, 30);

    // The leader's metrics tell what it did; the standby did nothing.
    let (status, metrics) = http_get(leader_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    let reconciled = metric_sample(&metrics, "tenure_reconciles_total{kind=\"Entitlement\"}");
    assert!(reconciled.is_some_and(|n| n >= 30.0), "{metrics}");
    let allocated = format!("tenure_codes_allocated_total{{class=\"{class}\"}}");
    // At least one per entitlement: a code taken for a copy that was behind
    // is skipped, never reused (a gap), and counts as allocated.
    assert!(
        metric_sample(&metrics, &allocated).is_some_and(|n| n >= 30.0),
        "{metrics}"
    );
    assert!(
        metric_sample(
            &metrics,
            "tenure_objects{kind=\"Entitlement\",phase=\"Active\"}"
        )
        .is_some_and(|n| n >= 30.0),
        "{metrics}"
    );
    let (_, standby_metrics) = http_get(standby_port, "/metrics").unwrap();
    assert_eq!(metric_sample(&standby_metrics, "tenure_leader"), Some(0.0));
    assert_eq!(
        metric_sample(&standby_metrics, &allocated),
        None,
        "a standby acts on nothing"
    );

    // SIGKILL: the standby takes the Lease once the dead leader's runs out.
    let held = lease(&lease_name);
    let dead_holder = held["spec"]["holderIdentity"].as_str().unwrap().to_string();
    leader.kill();
    let after = unique("after-kill");
    create_batch(&class, &after, 30);
    wait_for("the standby leading", Duration::from_secs(60), || {
        leads(standby_port)
            .then_some(())
            .ok_or("not yet".to_string())
    });
    let taken = lease(&lease_name);
    assert_ne!(taken["spec"]["holderIdentity"], dead_holder.as_str());
    let last_renewal = lease_time(&held, "renewTime");
    let acquired = lease_time(&taken, "acquireTime");
    let waited = (acquired - last_renewal).num_milliseconds() as f64 / 1000.0;
    println!("taken over {waited:.1} s after the dead leader's last renewal");
    assert!(
        waited <= (LEASE_SECONDS + 2) as f64,
        "took over {waited} s after the last renewal (lease {LEASE_SECONDS} s)"
    );

    // No code twice, none lost, none changed; the new leader acts.
    let codes_after = all_coded(&after, 30);
    assert_eq!(codes_of_batch(&before).unwrap(), codes_before);
    let every: BTreeSet<&String> = codes_before.values().chain(codes_after.values()).collect();
    assert_eq!(every.len(), 60, "a code was handed out twice");
    assert!(every.iter().all(|code| code.starts_with(&prefix)));
    let suspended = format!("{after}-0");
    kubectl_ok(&[
        "patch",
        "-n",
        "default",
        "entitlement",
        &suspended,
        "--type=merge",
        "-p",
        &json!({"spec": {"payment": {"failedAt": Utc::now().to_rfc3339()}}}).to_string(),
    ]);
    wait_phase(&["-n", "default", "entitlement", &suspended], "Suspended");

    // SIGTERM: the leader hands the Lease over; a new replica leads at once.
    let _third = replica(&lease_name, port_c, "tenure-replica-c");
    wait_for(
        "the third replica ready",
        Duration::from_secs(60),
        || match http_get(port_c, "/readyz") {
            Ok((200, _)) => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
    let stopped = standby.terminate();
    assert!(
        stopped.success(),
        "the leader exits cleanly on SIGTERM: {stopped}"
    );
    wait_for("the third replica leading", Duration::from_secs(30), || {
        leads(port_c).then_some(()).ok_or("not yet".to_string())
    });
    let after_handover = lease(&lease_name);
    assert_eq!(
        after_handover["spec"]["holderIdentity"], "tenure-replica-c",
        "{after_handover}"
    );
}

#[test]
fn the_chart_guard_keeps_tenures_service_account_to_labelled_namespaces_and_pausing() {
    let as_tenure = controller_kubeconfig();
    let as_tenure = as_tenure.to_str().unwrap();
    let kubectl_as_tenure = |args: &[&str]| {
        let mut all = vec!["--kubeconfig", as_tenure];
        all.extend_from_slice(args);
        kubectl(&all)
    };
    let refusal = |out: &std::process::Output| String::from_utf8_lossy(&out.stderr).to_string();

    let foreign = unique("not-a-tenant");
    kubectl_ok(&["create", "namespace", &foreign]);
    // The policy may take a moment to be in force after it is installed:
    // probe with server-side dry runs, which admission sees as well.
    wait_for("the guard in force", Duration::from_secs(60), || {
        let out = kubectl_as_tenure(&["delete", "namespace", &foreign, "--dry-run=server"]);
        (!out.status.success() && refusal(&out).contains("tenure deletes only namespaces labelled"))
            .then_some(())
            .ok_or(format!("{out:?}"))
    });
    let out = kubectl_as_tenure(&["delete", "namespace", &foreign, "--wait=false"]);
    assert!(!out.status.success(), "deleted an unlabelled namespace");
    kubectl_ok(&["get", "namespace", &foreign]);
    // Labelling it first is refused too.
    let out = kubectl_as_tenure(&[
        "label",
        "namespace",
        &foreign,
        "tenure.dev/organization=stolen",
    ]);
    assert!(
        refusal(&out).contains("never changes the labels"),
        "{out:?}"
    );

    // A tenant namespace may go.
    let tenant = unique("tenant");
    apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {
            "name": tenant, "labels": {"tenure.dev/organization": tenant}}})
        .to_string(),
    );
    let out = kubectl_as_tenure(&["delete", "namespace", &tenant, "--dry-run=server"]);
    assert!(out.status.success(), "{}", refusal(&out));

    // A workload: replicas and tenure's annotations may change, its pod
    // template may not.
    kubectl_ok(&[
        "create",
        "deployment",
        "web",
        "-n",
        &tenant,
        "--image=example.com/web:1",
        "--replicas=2",
    ]);
    let patch = |body: serde_json::Value| {
        kubectl_as_tenure(&[
            "patch",
            "-n",
            &tenant,
            "deployment",
            "web",
            "--type=merge",
            "-p",
            &body.to_string(),
        ])
    };
    let paused = patch(json!({
        "metadata": {"annotations": {"tenure.dev/paused-replicas": "2"}},
        "spec": {"replicas": 0},
    }));
    assert!(paused.status.success(), "{}", refusal(&paused));
    let hijacked = patch(json!({"spec": {"template": {"spec": {"containers": [
        {"name": "web", "image": "example.com/miner:1"}]}}}}));
    assert!(
        refusal(&hijacked).contains("only in spec.replicas"),
        "{hijacked:?}"
    );
    let relabelled = patch(json!({"metadata": {"annotations": {"owner": "tenure"}}}));
    assert!(
        refusal(&relabelled).contains("only its own annotations"),
        "{relabelled:?}"
    );
}
