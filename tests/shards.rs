//! tenure spread over shards, as a platform with 100,000 entitlements runs
//! it: each instance, started with `--shard-selector`, acts only on the
//! Organizations and Entitlements whose labels match, caches only those,
//! and elects its own leader in a Lease of its own.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

const SHARD_LABEL: &str = "tenure.dev/shard";

fn organization_of_shard(name: &str, shard: &str) {
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": name, "labels": {SHARD_LABEL: shard}},
            "spec": {},
        })
        .to_string(),
    );
}

/// An entitlement of `organization`, in its namespace (which its shard's
/// instance creates), labelled for `shard`; returns its namespace and name.
fn entitlement_of_shard(organization: &str, shard: &str) -> (String, String) {
    let namespace = format!("org-{organization}");
    let entitlement = unique("seat");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": entitlement, "namespace": namespace, "labels": {SHARD_LABEL: shard}},
            "spec": {"class": "service", "product": "grafana", "organization": organization},
        })
        .to_string(),
    );
    (namespace, entitlement)
}

/// A shard's instance, leading its own Lease in the chart's namespace, its
/// metrics on `port`.
fn shard(selector: &str, port: u16, log: &str) -> Controller {
    let metrics = format!("127.0.0.1:{port}");
    let args = [
        "--shard-selector",
        selector,
        "--leader-election=true",
        "--lease-namespace",
        CHART_NAMESPACE,
        "--metrics-addr",
        &metrics,
    ];
    Controller::spawn(&args, log)
}

/// The objects of `kind` an instance caches, over every phase.
fn cached(port: u16, kind: &str) -> Result<f64, String> {
    let (_, metrics) = http_get(port, "/metrics")?;
    let series = format!("tenure_objects{{kind=\"{kind}\"");
    let total = metrics
        .lines()
        .filter(|line| line.starts_with(&series))
        .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
        .sum();
    Ok(total)
}

/// Organizations and Entitlements an instance caches.
fn customers_cached(port: u16) -> Result<(f64, f64), String> {
    Ok((cached(port, "Organization")?, cached(port, "Entitlement")?))
}

fn leases_of_shards() -> Vec<serde_json::Value> {
    let leases = get_json(&["-n", CHART_NAMESPACE, "leases"]).unwrap();
    leases["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|l| {
            l["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("tenure-shard-"))
        })
        .cloned()
        .collect()
}

#[test]
fn each_shard_acts_only_on_its_own_organizations_and_entitlements() {
    let run = unique("run");
    let (shard_a, shard_b) = (format!("a-{run}"), format!("b-{run}"));
    let (selector_a, selector_b) = (
        format!("{SHARD_LABEL}={shard_a}"),
        format!("{SHARD_LABEL}={shard_b}"),
    );
    let leases_before = leases_of_shards().len();
    let (port_a, port_b) = (free_port(), free_port());
    let _instance_a = shard(&selector_a, port_a, "tenure-shard-a");

    // B's organization first, then A's customer: once A's has converged,
    // shard A has long seen B's organization, and left it alone.
    let org_b = unique("shard-b");
    organization_of_shard(&org_b, &shard_b);
    let org_a = unique("shard-a");
    organization_of_shard(&org_a, &shard_a);
    wait_phase(&["organization", &org_a], "Active");
    let (namespace_a, entitlement_a) = entitlement_of_shard(&org_a, &shard_a);
    let active_a = wait_phase(
        &["-n", &namespace_a, "entitlement", &entitlement_a],
        "Active",
    );
    assert!(active_a["status"]["code"].is_string(), "{active_a}");
    let untouched = get_json(&["organization", &org_b]).unwrap();
    assert!(
        untouched.get("status").is_none(),
        "shard A acted on B's organization: {untouched}"
    );
    // It caches only its own, whatever else the cluster holds.
    wait_for(
        "shard A's metrics",
        Duration::from_secs(30),
        || match customers_cached(port_a)? {
            (1.0, 1.0) => Ok(()),
            other => Err(format!(
                "shard A caches {other:?} organizations and entitlements"
            )),
        },
    );

    // Shard B's instance takes its own, under a Lease of its own.
    let _instance_b = shard(&selector_b, port_b, "tenure-shard-b");
    wait_phase(&["organization", &org_b], "Active");
    let (namespace_b, entitlement_b) = entitlement_of_shard(&org_b, &shard_b);
    let active_b = wait_phase(
        &["-n", &namespace_b, "entitlement", &entitlement_b],
        "Active",
    );
    assert!(active_b["status"]["code"].is_string(), "{active_b}");
    assert_eq!(customers_cached(port_b), Ok((1.0, 1.0)));
    assert_eq!(customers_cached(port_a), Ok((1.0, 1.0)));
    let leases = wait_for("a Lease per shard", Duration::from_secs(30), || {
        let leases = leases_of_shards();
        (leases.len() == leases_before + 2)
            .then_some(leases.clone())
            .ok_or(format!("{} shard Leases", leases.len()))
    });
    let mut holders: Vec<&str> = leases
        .iter()
        .filter_map(|l| l["spec"]["holderIdentity"].as_str())
        .collect();
    holders.sort();
    holders.dedup();
    assert!(holders.len() >= 2, "one holder for both shards: {leases:?}");

    // A relabelled organization moves to the other shard's instance: A lets
    // it go, B takes it on (its entitlement stays with A until relabelled).
    kubectl_ok(&[
        "label",
        "--overwrite",
        "organization",
        &org_a,
        &format!("{SHARD_LABEL}={shard_b}"),
    ]);
    wait_for(
        "the organization moved",
        Duration::from_secs(60),
        || match (
            cached(port_a, "Organization")?,
            cached(port_b, "Organization")?,
        ) {
            (0.0, 2.0) => Ok(()),
            other => Err(format!("organizations cached by A and B: {other:?}")),
        },
    );
}

#[test]
fn a_shard_selector_the_api_server_refuses_is_named_at_start() {
    let instance = Controller::spawn(
        &["--shard-selector", "tenure.dev/shard in (a"],
        "tenure-shard-invalid",
    );
    let status = instance.wait_for_exit(Duration::from_secs(60));
    assert!(!status.success());
    let log =
        std::fs::read_to_string(repo().join(".cluster/logs/tenure-shard-invalid.log")).unwrap();
    assert!(
        log.contains("--shard-selector \"tenure.dev/shard in (a\""),
        "{log}"
    );
}
