//! The chart installed for real on the local cluster's node (hack/node/node):
//! the image hack/image builds, imported into the node's containerd, both
//! replicas Ready through their probes under Pod Security `restricted`, a
//! lifecycle run through the installed controller, the leader's process
//! SIGKILLed and the standby taking over with no code handed out twice, and
//! /metrics read from the pod.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::json;

const NAMESPACE: &str = "tenure-node";
/// Named apart from the chart's ServiceAccount the other tests run as.
const RELEASE: &str = "tenure-node";
const LEASE_SECONDS: f64 = 6.0;

/// Uninstalls the release when the test ends, however it ends: its
/// controllers must not act during the other tests.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = Command::new(repo().join(".cluster/bin/helm"))
            .args(["uninstall", RELEASE, "--namespace", NAMESPACE, "--wait"])
            .env("KUBECONFIG", kubeconfig())
            .output();
        let selector = format!("app.kubernetes.io/instance={RELEASE}");
        let _ = kubectl(&[
            "wait",
            "--for=delete",
            "pod",
            "-n",
            NAMESPACE,
            "-l",
            &selector,
            "--timeout=60s",
        ]);
    }
}

/// Runs a script of the repository's, without the CARGO_* variables of this
/// test process (a cargo it runs would see another build and rebuild).
fn run(program: &str, args: &[&str]) {
    let inherited = std::env::vars().filter(|(name, _)| !name.starts_with("CARGO"));
    let out = Command::new(repo().join(program))
        .args(args)
        .current_dir(repo())
        .env_clear()
        .envs(inherited)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .unwrap_or_else(|e| panic!("{program} runs: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn pods() -> Vec<serde_json::Value> {
    let selector = format!("app.kubernetes.io/instance={RELEASE}");
    let list = get_json(&["-n", NAMESPACE, "pods", "-l", &selector]).unwrap();
    list["items"].as_array().cloned().unwrap_or_default()
}

fn ready(pod: &serde_json::Value) -> bool {
    pod["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|c| c["type"] == "Ready" && c["status"] == "True")
}

fn lease() -> serde_json::Value {
    get_json(&["-n", NAMESPACE, "lease", RELEASE]).unwrap()
}

fn holder() -> Option<String> {
    lease()["spec"]["holderIdentity"].as_str().map(String::from)
}

fn lease_time(lease: &serde_json::Value, field: &str) -> DateTime<Utc> {
    lease["spec"][field].as_str().unwrap().parse().unwrap()
}

/// /metrics of a pod, through the API server's proxy to the pod's port.
fn metrics_of(pod: &str) -> Result<String, String> {
    let path = format!("/api/v1/namespaces/{NAMESPACE}/pods/{pod}:8080/proxy/metrics");
    let out = kubectl(&["get", "--raw", &path]);
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).to_string()),
        false => Err(String::from_utf8_lossy(&out.stderr).to_string()),
    }
}

/// The host process of the pod's controller (containers are processes on
/// this machine): found by the POD_NAME in its environment.
fn controller_pid(pod: &str) -> Option<u32> {
    let wanted = format!("POD_NAME={pod}");
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let cmdline = std::fs::read(entry.path().join("cmdline")).ok()?;
            if !cmdline.starts_with(b"/tenure\0run") {
                return None;
            }
            let environ = std::fs::read(entry.path().join("environ")).ok()?;
            environ
                .split(|b| *b == 0)
                .any(|var| var == wanted.as_bytes())
                .then_some(pid)
        })
}

#[test]
fn the_chart_runs_on_the_node_and_its_standby_takes_over_from_a_killed_leader() {
    let version = helm(&["show", "chart", "charts/tenure"])
        .lines()
        .find_map(|line| line.strip_prefix("appVersion: "))
        .map(|v| v.trim_matches('"').to_string())
        .expect("the chart's appVersion");
    let archive = repo().join(format!(".cluster/images/tenure-{version}.oci.tar"));
    run("hack/image", &[archive.to_str().unwrap()]);
    run("hack/node/node", &["import", archive.to_str().unwrap()]);

    apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NAMESPACE, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }}})
        .to_string(),
    );
    let _installed = Installed;
    helm(&[
        "install",
        RELEASE,
        "charts/tenure",
        "--namespace",
        NAMESPACE,
        "--values",
        "tests/node-values.yaml",
    ]);

    // Both replicas Ready through their readiness probes, one leading.
    let names = wait_for("two Ready replicas", Duration::from_secs(180), || {
        let pods = pods();
        let ready: Vec<String> = pods
            .iter()
            .filter(|p| ready(p))
            .filter_map(|p| p["metadata"]["name"].as_str().map(String::from))
            .collect();
        (ready.len() == 2)
            .then_some(ready)
            .ok_or(format!("{pods:?}"))
    });
    let leader = wait_for("a leader", Duration::from_secs(60), || {
        holder()
            .filter(|h| names.contains(h))
            .ok_or(format!("{:?}", lease()))
    });
    let standby = names.iter().find(|n| **n != leader).unwrap().clone();

    // A lifecycle through the installed controller.
    let (class, prefix) = new_class("on-node");
    let before = unique("node-before");
    create_batch(&class, &before, 20);
    let codes_before = all_coded(&before, 20);
    let metrics = wait_for("the leader's metrics", Duration::from_secs(30), || {
        metrics_of(&leader)
    });
    assert_eq!(
        metric_sample(&metrics, "tenure_leader"),
        Some(1.0),
        "{metrics}"
    );
    let allocated = format!("tenure_codes_allocated_total{{class=\"{class}\"}}");
    // At least one per entitlement: a code taken for a copy that was behind
    // is skipped, never reused (a gap), and counts as allocated.
    assert!(
        metric_sample(&metrics, &allocated).is_some_and(|n| n >= 20.0),
        "{metrics}"
    );
    let standby_metrics = metrics_of(&standby).unwrap();
    assert_eq!(metric_sample(&standby_metrics, "tenure_leader"), Some(0.0));

    // SIGKILL the leader's process: the standby takes over once the Lease
    // runs out, and the killed container comes back as a standby.
    let held = lease();
    let pid = controller_pid(&leader).expect("the leader's process on this host");
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status();
    assert!(killed.is_ok_and(|s| s.success()));
    let after = unique("node-after");
    create_batch(&class, &after, 20);
    wait_for("the standby leading", Duration::from_secs(60), || {
        (holder().as_deref() == Some(standby.as_str()))
            .then_some(())
            .ok_or(format!("{:?}", lease()))
    });
    let waited = (lease_time(&lease(), "acquireTime") - lease_time(&held, "renewTime"))
        .num_milliseconds() as f64
        / 1000.0;
    println!("the standby took over {waited:.1} s after the killed leader's last renewal");
    assert!(waited <= LEASE_SECONDS + 2.0, "took over after {waited} s");

    let codes_after = all_coded(&after, 20);
    assert_eq!(codes_of_batch(&before).unwrap(), codes_before);
    let every: BTreeSet<&String> = codes_before.values().chain(codes_after.values()).collect();
    assert_eq!(every.len(), 40, "a code was handed out twice");
    assert!(every.iter().all(|code| code.starts_with(&prefix)));
    let failing = format!("{after}-0");
    kubectl_ok(&[
        "patch",
        "-n",
        "default",
        "entitlement",
        &failing,
        "--type=merge",
        "-p",
        &json!({"spec": {"payment": {"failedAt": Utc::now().to_rfc3339()}}}).to_string(),
    ]);
    wait_phase(&["-n", "default", "entitlement", &failing], "Suspended");

    wait_for(
        "the killed replica back, Ready",
        Duration::from_secs(120),
        || {
            let pod = get_json(&["-n", NAMESPACE, "pod", &leader])?;
            let restarts = pod["status"]["containerStatuses"][0]["restartCount"].as_i64();
            (restarts >= Some(1) && ready(&pod))
                .then_some(())
                .ok_or(pod["status"].to_string())
        },
    );
    let metrics = metrics_of(&leader).unwrap();
    assert_eq!(
        metric_sample(&metrics, "tenure_leader"),
        Some(0.0),
        "back as a standby"
    );
}
