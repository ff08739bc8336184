//! A DataExport opened as the customer opens it, made by a controller whose
//! clock is simulated (years ahead of the wall clock): the ZIP's entries are
//! dated by the controller's clock, its CSVs hold the values, and nothing
//! Kubernetes or tenure made by themselves is in it.

mod common;

use chrono::{DateTime, Utc};
use common::*;
use serde_json::json;

/// Years ahead of any wall clock this runs on; the clock runs at real speed.
const ORIGIN: &str = "2033-06-15T08:30:00Z";

#[test]
fn an_export_is_dated_by_the_controllers_clock_and_holds_only_what_the_customer_made() {
    start_controller(&["--clock-start", ORIGIN, "--clock-rate", "1"]);
    let origin: DateTime<Utc> = ORIGIN.parse().unwrap();
    let org = unique("dated");
    let namespace = format!("org-{org}");
    // Disabled, and never purged: its hard delete is never confirmed.
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": unique("never-confirmed")},
            "spec": {"scope": {"organization": org}, "purge": {"requireConfirmation": true}},
        })
        .to_string(),
    );
    apply_organization(
        &org,
        json!({"displayName": "Dated Ltd", "lifecycle": "Disabled",
               "offboarding": {"reason": "NonPayment", "ticket": "FIN-1", "effectiveAt": ORIGIN}}),
    );
    wait_phase(&["organization", &org], "Disabled");
    wait_system_objects(&namespace, true);
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "invoice-2033-06", "namespace": namespace},
            "data": {"amount": "4,200.00 GBP", "due": "2033-07-01"},
        })
        .to_string(),
    );

    let name = unique("export");
    apply_data_export(&namespace, &name, &org);
    let done = wait_export(&namespace, &name, "Succeeded");
    let opened = ExportZip::of(&done);
    let exported_at = opened.exported_at();
    assert!(
        exported_at >= origin && exported_at < origin + chrono::TimeDelta::hours(1),
        "the controller's clock, not the wall clock: {exported_at}"
    );
    opened.assert_every_entry_dated(exported_at);

    let invoice: Vec<(String, String)> = opened
        .csv("csv/ConfigMap.csv")
        .into_iter()
        .filter(|row| row["name"] == "invoice-2033-06")
        .map(|row| (row["key"].clone(), row["value"].clone()))
        .collect();
    assert_eq!(
        invoice,
        [
            ("amount".to_string(), "4,200.00 GBP".to_string()),
            ("due".to_string(), "2033-07-01".to_string()),
        ]
    );
    for system in [
        "kube-root-ca.crt",
        "ServiceAccount",
        "tenure-access-disabled",
        "NetworkPolicy",
    ] {
        assert!(
            opened.named(system).is_empty(),
            "{system} in the ZIP: {:?}",
            opened.files.keys()
        );
    }
}
