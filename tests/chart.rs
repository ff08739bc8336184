//! The Helm chart: it lints, renders, and the real API server accepts every
//! object it renders (a server-side dry run), defaults included.

mod common;

use std::process::Command;

use common::*;

fn helm(args: &[&str]) -> String {
    let out = Command::new(repo().join(".cluster/bin/helm"))
        .args(args)
        .current_dir(repo())
        .output()
        .expect("helm runs (hack/cluster up builds it)");
    assert!(
        out.status.success(),
        "helm {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_chart_renders_objects_the_api_server_accepts() {
    helm(&["lint", "charts/tenure"]);
    let rendered = helm(&[
        "template",
        "tenure",
        "charts/tenure",
        "--namespace",
        "tenure-system",
        "--include-crds",
    ]);
    for kind in [
        "kind: CustomResourceDefinition",
        "kind: ServiceAccount",
        "kind: ClusterRole",
        "kind: ClusterRoleBinding",
        "kind: Deployment",
        "kind: PersistentVolumeClaim",
        "kind: EntitlementClass",
        "kind: LifecyclePolicy",
        "kind: ValidatingAdmissionPolicy",
    ] {
        assert!(rendered.contains(kind), "{kind} not rendered");
    }
    let classes = rendered
        .lines()
        .filter(|line| *line == "kind: EntitlementClass")
        .count();
    assert_eq!(classes, 6, "the six default classes");

    let _ = kubectl(&["create", "namespace", "tenure-system"]);
    let out = kubectl_with_stdin(&["apply", "--dry-run=server", "-f", "-"], Some(&rendered));
    assert!(
        out.status.success(),
        "the API server refused the chart: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    let bare = helm(&[
        "template",
        "tenure",
        "charts/tenure",
        "--set",
        "installDefaults=false",
    ]);
    assert!(!bare.contains("kind: EntitlementClass"));
}
