//! DataExport end to end: a disabled organization's data as a ZIP on the
//! controller's filesystem, checked file by file, and refused once purged.

mod common;

use std::io::Read;

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

const SECRET_VALUE: &str = "hunter2-never-exported";
const INVOICE_AMOUNT: &str = "1,234.50 EUR";
const INVOICE_MEMO: &str = "paid \"late\",\nby wire";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_disabled_organizations_export_holds_every_object_with_matching_checksums_and_no_secret_value()
{
    start_controller(&[]);
    let org = unique("exported");
    let namespace = format!("org-{org}");
    apply_organization(
        &org,
        json!({"displayName": "Exported Ltd", "taxId": "DE-1"}),
    );
    wait_phase(&["organization", &org], "Active");
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "settings", "namespace": namespace},
            "data": {"plan": "gold", "seats": "12"},
        })
        .to_string(),
    );
    apply(
        &json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "invoice-2031-12", "namespace": namespace},
            "data": {"amount": INVOICE_AMOUNT, "memo": INVOICE_MEMO},
        })
        .to_string(),
    );
    apply(
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "database", "namespace": namespace},
            "stringData": {"password": SECRET_VALUE},
        })
        .to_string(),
    );
    // A Service: Kubernetes derives its Endpoints and EndpointSlices.
    apply(
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "web", "namespace": namespace},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]},
        })
        .to_string(),
    );
    let seat = unique("seat");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": seat, "namespace": namespace},
            "spec": {"organization": org, "class": "service", "product": "support"},
        })
        .to_string(),
    );
    wait_phase(&["-n", &namespace, "entitlement", &seat], "Active");
    apply_organization(
        &org,
        json!({"displayName": "Exported Ltd", "taxId": "DE-1", "lifecycle": "Disabled",
               "offboarding": {"reason": "NonPayment", "ticket": "FIN-9"}}),
    );
    wait_phase(&["organization", &org], "Disabled");
    // What Kubernetes and tenure make by themselves is there to be left out.
    wait_system_objects(&namespace, true);
    wait_for(
        "the Endpoints and EndpointSlice of Service web",
        TIMEOUT,
        || {
            get_json(&["-n", &namespace, "endpoints", "web"])?;
            let slices = get_json(&[
                "-n",
                &namespace,
                "endpointslices",
                "-l",
                "kubernetes.io/service-name=web",
            ])?;
            let found = slices["items"].as_array().is_some_and(|i| !i.is_empty());
            found.then_some(()).ok_or(slices.to_string())
        },
    );

    let name = unique("export");
    apply_data_export(&namespace, &name, &org);
    let done = wait_export(&namespace, &name, "Succeeded");
    let artifact = &done["status"]["artifact"];
    let path = artifact["uri"]
        .as_str()
        .unwrap()
        .strip_prefix("file://")
        .unwrap()
        .to_string();
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(artifact["sizeBytes"], bytes.len() as i64);
    assert_eq!(artifact["sha256"], hex(&Sha256::digest(&bytes)).as_str());
    assert!(done["status"]["expiresAt"].is_string());

    let mut archive = zip::ZipArchive::new(std::io::Cursor::new(bytes)).unwrap();
    assert_eq!(artifact["files"], archive.len() as i64);
    let mut contents = std::collections::BTreeMap::new();
    for i in 0..archive.len() {
        let mut file = archive.by_index(i).unwrap();
        let mut content = Vec::new();
        file.read_to_end(&mut content).unwrap();
        contents.insert(file.name().unwrap().to_string(), content);
    }
    for (file, content) in &contents {
        let text = String::from_utf8_lossy(content);
        assert!(!text.contains(SECRET_VALUE), "a Secret value in {file}");
        assert!(
            !text.contains("aHVudGVyMi1uZXZlci1leHBvcnRlZA"),
            "a Secret value (base64) in {file}"
        );
        if file.ends_with(".json") {
            serde_json::from_slice::<Value>(content).unwrap_or_else(|e| panic!("{file}: {e}"));
        }
    }
    let manifest: Value = serde_json::from_slice(&contents["manifest.json"]).unwrap();
    assert_eq!(manifest["organization"], org.as_str());
    for file in manifest["files"].as_array().unwrap() {
        let name = file["name"].as_str().unwrap();
        let content = &contents[name];
        assert_eq!(file["sizeBytes"], content.len() as i64, "{name}");
        assert_eq!(
            file["sha256"],
            hex(&Sha256::digest(content)).as_str(),
            "{name}"
        );
    }
    assert_eq!(manifest["counts"]["Organization"], 1);
    assert_eq!(manifest["counts"]["Entitlement"], 1);
    assert!(contents.contains_key(&format!("json/Organization/cluster/{org}.json")));
    assert!(
        contents.contains_key(&format!("json/Secret/{namespace}/database.json")),
        "keys only"
    );

    // Opened as the customer opens it: every entry dated the export time...
    let opened = ExportZip::of(&done);
    let exported_at = opened.exported_at();
    assert!(
        exported_at > Utc::now() - TimeDelta::hours(1),
        "{exported_at}"
    );
    opened.assert_every_entry_dated(exported_at);
    // ... a row per key of each ConfigMap, its value in a cell of its own ...
    let value = |rows: &[std::collections::BTreeMap<String, String>], name: &str, key: &str| {
        let row = rows
            .iter()
            .find(|r| r["name"] == name && r["key"] == key)
            .unwrap_or_else(|| panic!("no {name}/{key} in {rows:?}"));
        (row["value"].clone(), row["encoding"].clone())
    };
    let configmaps = opened.csv("csv/ConfigMap.csv");
    assert_eq!(
        value(&configmaps, "invoice-2031-12", "amount"),
        (INVOICE_AMOUNT.to_string(), String::new())
    );
    assert_eq!(
        value(&configmaps, "invoice-2031-12", "memo").0,
        INVOICE_MEMO,
        "quotes, a comma and a line break survive"
    );
    assert_eq!(value(&configmaps, "settings", "plan").0, "gold");
    assert_eq!(value(&configmaps, "settings", "seats").0, "12");
    // ... a Secret's keys without their values (includeSecrets only) ...
    let secrets = opened.csv("csv/Secret.csv");
    assert_eq!(value(&secrets, "database", "password").0, "");
    // ... and nothing Kubernetes or tenure made by themselves.
    assert!(
        opened
            .files
            .contains_key(&format!("json/Service/{namespace}/web.json"))
    );
    for system in [
        "kube-root-ca.crt",
        "json/ServiceAccount/",
        "tenure-access-disabled",
        "json/Endpoints/",
        "json/EndpointSlice/",
        "csv/ServiceAccount.csv",
        "csv/NetworkPolicy.csv",
        "csv/Endpoints.csv",
        "csv/EndpointSlice.csv",
    ] {
        assert!(opened.named(system).is_empty(), "{system} in the ZIP");
    }
    assert!(
        configmaps.iter().all(|r| r["name"] != "kube-root-ca.crt"),
        "{configmaps:?}"
    );
    assert_eq!(
        manifest["counts"]["ConfigMap"], 2,
        "settings and the invoice"
    );
    for kind in [
        "ServiceAccount",
        "NetworkPolicy",
        "Endpoints",
        "EndpointSlice",
    ] {
        assert!(manifest["counts"][kind].is_null(), "{kind}: {manifest}");
    }
    let entitlements = String::from_utf8_lossy(&contents["csv/Entitlement.csv"]).to_string();
    // Suspended: the organization is Disabled.
    assert!(
        entitlements.contains(&seat) && entitlements.contains(",Suspended,"),
        "{entitlements}"
    );

    wait_for("the export in the organization's status", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        (object["status"]["exports"] == json!([name]))
            .then_some(())
            .ok_or(object["status"]["exports"].to_string())
    });
}

#[test]
fn an_export_of_a_purged_organization_is_refused() {
    start_controller(&[]);
    let org = unique("gone");
    without_final_grace(&org);
    let long_ago = (Utc::now() - TimeDelta::days(400)).to_rfc3339_opts(SecondsFormat::Secs, true);
    apply_organization(
        &org,
        json!({"lifecycle": "Archived", "offboarding": {"reason": "CustomerRequest", "effectiveAt": long_ago}}),
    );
    wait_phase(&["organization", &org], "Purged");
    let name = unique("too-late");
    apply_data_export("default", &name, &org);
    let refused = wait_export("default", &name, "Failed");
    let stalled = condition(&refused, "Stalled").expect("a Stalled condition");
    assert_eq!(stalled["reason"], "OrganizationPurged");
    assert!(refused["status"]["artifact"].is_null());
}

#[test]
fn a_purge_that_requires_an_export_waits_for_one_and_the_tombstone_says_so() {
    start_controller(&[]);
    let org = unique("export-first");
    let namespace = format!("org-{org}");
    requiring_an_export(&org);
    apply_organization(&org, json!({"displayName": "Export First"}));
    wait_phase(&["organization", &org], "Active");
    let long_ago = (Utc::now() - TimeDelta::days(400)).to_rfc3339_opts(SecondsFormat::Secs, true);
    apply_organization(
        &org,
        json!({"displayName": "Export First", "lifecycle": "Archived",
               "offboarding": {"reason": "CustomerRequest", "ticket": "CS-5", "effectiveAt": long_ago}}),
    );
    let waiting = wait_phase(&["organization", &org], "Archived");
    let blocked = condition(&waiting, "PurgeBlocked").expect("the purge waits");
    assert_eq!(blocked["reason"], "AwaitingExport");

    wait_system_objects(&namespace, true);
    let name = unique("handover");
    apply_data_export(&namespace, &name, &org);
    wait_export(&namespace, &name, "Succeeded");
    let purged = wait_phase(&["organization", &org], "Purged");
    let tombstone = &purged["status"]["tombstone"];
    assert_eq!(tombstone["exportProvided"], true);
    assert_eq!(purged["status"]["exports"], json!([name]));
    // What the customer had, and apart from it what Kubernetes and tenure
    // had made by themselves.
    assert_eq!(
        tombstone["deleted"],
        json!({"DataExport": 1, "ExportArtifact": 1, "Namespace": 1}),
        "{tombstone}"
    );
    assert_eq!(
        tombstone["system"],
        json!({"ConfigMap": 1, "ServiceAccount": 1, "NetworkPolicy": 1}),
        "{tombstone}"
    );
}
