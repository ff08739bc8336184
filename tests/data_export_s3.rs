//! The DataExport S3 sink against a real S3-compatible server (s3s-fs, built
//! by hack/cluster from crates.io) on loopback: the ZIP is uploaded, and what
//! the server hands back is the export status describes.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use object_store::ObjectStoreExt;
use object_store::aws::AmazonS3Builder;
use object_store::path::Path;
use serde_json::json;
use sha2::{Digest, Sha256};

const ACCESS_KEY: &str = "tenure-test";
const SECRET_KEY: &str = "tenure-test-secret";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn an_export_is_uploaded_to_an_s3_compatible_bucket() {
    let root = repo().join(".cluster").join(unique("s3"));
    std::fs::create_dir_all(root.join("exports")).unwrap();
    let port = free_port().to_string();
    let _server = Process(
        Command::new(repo().join(".cluster/bin/s3s-fs"))
            .args(["--host", "127.0.0.1", "--port", &port])
            .args(["--access-key", ACCESS_KEY, "--secret-key", SECRET_KEY])
            .arg(&root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("s3s-fs starts (hack/cluster up builds it)"),
    );
    let endpoint = format!("http://127.0.0.1:{port}");
    wait_for("the S3 server to listen", Duration::from_secs(30), || {
        std::net::TcpStream::connect(("127.0.0.1", port.parse::<u16>().unwrap()))
            .map_err(|e| e.to_string())
    });
    let env = [
        ("AWS_ACCESS_KEY_ID", ACCESS_KEY),
        ("AWS_SECRET_ACCESS_KEY", SECRET_KEY),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
    ];
    let controller = Controller::spawn_with_env(
        &["--export-url", "s3://exports/customers"],
        &env,
        "tenure-data-export-s3",
    );

    let org = unique("uploaded");
    let namespace = format!("org-{org}");
    apply_organization(&org, json!({"displayName": "Uploaded GmbH"}));
    wait_phase(&["organization", &org], "Active");
    let name = unique("to-s3");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"organization": org},
        })
        .to_string(),
    );
    let done = wait_for("the upload", TIMEOUT, || {
        let object = get_json(&["-n", &namespace, "dataexport", &name])?;
        (object["status"]["phase"] == "Succeeded")
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    let artifact = &done["status"]["artifact"];
    let key = format!("customers/{namespace}/{name}.zip");
    assert_eq!(artifact["uri"], format!("s3://exports/{key}").as_str());

    let store = AmazonS3Builder::new()
        .with_bucket_name("exports")
        .with_access_key_id(ACCESS_KEY)
        .with_secret_access_key(SECRET_KEY)
        .with_region("us-east-1")
        .with_endpoint(&endpoint)
        .with_allow_http(true)
        .build()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bytes = runtime.block_on(async {
        store
            .get(&Path::from(key.as_str()))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
    });
    assert_eq!(artifact["sizeBytes"], bytes.len() as i64);
    let sha256: String = Sha256::digest(&bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(artifact["sha256"], sha256.as_str());
    let archive = zip::ZipArchive::new(std::io::Cursor::new(bytes.to_vec())).unwrap();
    assert!(
        archive
            .file_names()
            .any(|name| name.is_ok_and(|n| n == "manifest.json"))
    );

    // Kept for no days at all: the upload is deleted as soon as it is done.
    drop(controller);
    let _short_lived = Controller::spawn_with_env(
        &[
            "--export-url",
            "s3://exports/customers",
            "--export-keep-days",
            "0",
        ],
        &env,
        "tenure-data-export-s3-expiring",
    );
    let expiring = unique("expiring");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "DataExport",
            "metadata": {"name": expiring, "namespace": namespace},
            "spec": {"organization": org},
        })
        .to_string(),
    );
    wait_for("the expired artifact", TIMEOUT, || {
        let object = get_json(&["-n", &namespace, "dataexport", &expiring])?;
        (condition(&object, "Ready").map(|c| c["reason"].clone()) == Some("ArtifactExpired".into()))
            .then_some(())
            .ok_or(object["status"].to_string())
    });
    let gone = Path::from(format!("customers/{namespace}/{expiring}.zip"));
    let lookup = runtime.block_on(async { store.head(&gone).await });
    assert!(
        matches!(lookup, Err(object_store::Error::NotFound { .. })),
        "{lookup:?}"
    );
    let _ = std::fs::remove_dir_all(&root);
}
