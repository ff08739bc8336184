//! The Helm chart: it lints (its values checked against a schema), renders,
//! and the real API server accepts every object it renders (a server-side
//! dry run), defaults included; its RBAC has no wildcards.

mod common;

use common::*;
use serde_json::json;

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
        "kind: PodDisruptionBudget",
        "kind: Service\n",
        "kind: Role\n",
        "kind: RoleBinding",
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

#[test]
fn a_typo_in_the_values_fails_lint_and_install_naming_it() {
    let out = std::process::Command::new(repo().join(".cluster/bin/helm"))
        .args(["lint", "charts/tenure", "--set", "replicaCoutn=3"])
        .current_dir(repo())
        .output()
        .unwrap();
    assert!(!out.status.success(), "a typo passed lint");
    let said =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(said.contains("replicaCoutn"), "{said}");
}

/// One template of the chart, rendered with `extra` helm arguments.
fn render(template: &str, extra: &[&str]) -> String {
    let template = format!("templates/{template}");
    let mut args = vec![
        "template",
        "tenure",
        "charts/tenure",
        "--show-only",
        &template,
    ];
    args.extend_from_slice(extra);
    helm(&args)
}

#[test]
fn the_chart_grants_no_wildcards_and_secrets_only_when_asked() {
    let default = render("rbac.yaml", &[]);
    assert!(!default.contains('*'), "a wildcard in {default}");
    let cluster_role = default
        .split("\n---")
        .find(|d| d.contains("kind: ClusterRole\n"));
    assert!(
        !cluster_role.unwrap().contains("resources: [secrets]"),
        "Secrets granted cluster-wide by default"
    );
    // Only reading a webhook's key in tenure's own namespace.
    let keys = (default.split("\n---"))
        .find(|d| d.contains("kind: Role\n") && d.contains("resources: [secrets]"))
        .expect("a Role for webhook keys");
    assert!(
        keys.contains("namespace: default") && keys.contains("verbs: [get]"),
        "{keys}"
    );
    let secrets = render("rbac.yaml", &["--set", "rbac.secrets=true"]);
    assert!(secrets.contains("resources: [secrets]"));

    // Without Secrets, the default classes do not govern them (they would
    // stall on a kind tenure may not list).
    let defaults = render("defaults.yaml", &[]);
    assert!(!defaults.contains("kind: Secret"));
    let with_secrets = render("defaults.yaml", &["--set", "rbac.secrets=true"]);
    assert!(with_secrets.contains("kind: Secret"));
    // Kept on uninstall: classes hold their code sequences.
    let kept = defaults.matches("helm.sh/resource-policy: keep").count();
    assert_eq!(kept, 9, "every default object is kept on uninstall");
}

#[test]
fn the_controller_pod_passes_pod_security_restricted() {
    let namespace = unique("restricted");
    apply(
        &json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace, "labels": {
            "pod-security.kubernetes.io/enforce": "restricted",
            "pod-security.kubernetes.io/enforce-version": "latest",
        }}})
        .to_string(),
    );
    kubectl_ok(&["create", "serviceaccount", "tenure", "-n", &namespace]);
    let deployment = render("deployment.yaml", &["--namespace", &namespace]);
    let out = kubectl_with_stdin(
        &["create", "--dry-run=client", "-o", "json", "-f", "-"],
        Some(&deployment),
    );
    let deployment: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let template = &deployment["spec"]["template"];
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "tenure", "namespace": namespace},
        "spec": template["spec"],
    });
    let admitted = kubectl_with_stdin(
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&pod.to_string()),
    );
    assert!(
        admitted.status.success(),
        "Pod Security restricted refused the controller's pod: {}",
        String::from_utf8_lossy(&admitted.stderr)
    );
}
