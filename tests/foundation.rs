//! The foundation, end to end against the local control plane: the CRDs, the
//! examples reaching Ready, what kubectl shows, what the API server refuses, the
//! tenant namespace and the finalizer.

mod common;

use common::*;

#[test]
fn every_crd_is_established_and_reachable_by_short_name_and_category() {
    for crd in [
        "organizations.tenure.dev",
        "entitlements.tenure.dev",
        "entitlementclasses.tenure.dev",
        "lifecyclepolicies.tenure.dev",
        "retentionholds.tenure.dev",
        "dataexports.tenure.dev",
    ] {
        let object = get_json(&["crd", crd]).unwrap();
        let established = condition(&object, "Established").map(|c| c["status"].clone());
        assert_eq!(established, Some("True".into()), "{crd} is not Established");
    }
    kubectl_ok(&["get", "org,ent,entclass,lcp,hold,dex", "-A"]);
    let by_category = kubectl_ok(&["get", "tenure", "-A"]);
    assert!(
        by_category.contains("entitlementclass.tenure.dev/plugin"),
        "{by_category}"
    );
}

#[test]
fn examples_apply_in_one_go_and_every_object_reaches_ready() {
    start_controller(&[]);
    kubectl_ok(&[
        "apply",
        "-R",
        "-f",
        repo().join("examples").to_str().unwrap(),
    ]);

    let org = wait_ready(&["organization", "acme"]);
    assert_eq!(org["status"]["namespace"], "org-acme");
    assert_eq!(org["status"]["phase"], "Active");
    for entitlement in [
        "grafana-plugin",
        "staging",
        "support",
        "onboarding",
        "referral",
        "training",
    ] {
        let ent = wait_ready(&["-n", "org-acme", "entitlement", entitlement]);
        assert_eq!(ent["status"]["phase"], "Active", "{entitlement}");
    }
    wait_ready(&["lifecyclepolicy", "acme-vip"]);
    wait_ready(&["lifecyclepolicy", "global"]);
    for class in [
        "plugin",
        "environment",
        "service",
        "order",
        "affiliate",
        "education",
    ] {
        wait_ready(&["entitlementclass", class]);
    }
    wait_for(
        "the organization to count its six active entitlements",
        TIMEOUT,
        || {
            let org = get_json(&["organization", "acme"])?;
            (org["status"]["entitlements"]["active"] == 6)
                .then_some(())
                .ok_or(org["status"].to_string())
        },
    );

    let orgs = kubectl_ok(&["get", "org", "acme"]);
    assert_columns(
        &orgs,
        &["NAME", "DISPLAY", "PHASE", "ACTIVE", "PURGE-AFTER", "AGE"],
    );
    assert!(orgs.contains("Acme Corporation"), "{orgs}");
    let entitlements = kubectl_ok(&["get", "ent", "-n", "org-acme"]);
    assert_columns(
        &entitlements,
        &["NAME", "CODE", "CLASS", "ORG", "PHASE", "NEXT", "AT", "AGE"],
    );
    assert!(entitlements.contains("environment"), "{entitlements}");
}

fn assert_columns(table: &str, expected: &[&str]) {
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(header, expected, "{table}");
}

#[test]
fn kubectl_explain_documents_the_fields() {
    let explained = kubectl_ok(&["explain", "organization.spec.deletion.confirmName"]);
    assert!(
        explained.contains("Must equal `metadata.name`"),
        "{explained}"
    );
    let explained = kubectl_ok(&["explain", "entitlement.status.deadlines"]);
    assert!(explained.contains("autoCancelAt"), "{explained}");
    for (field, words) in [
        (
            "retentionhold.spec.organization",
            "every object in its tenant",
        ),
        ("entitlement.status.deadlines.finalPurgeAt", "final grace"),
        ("lifecyclepolicy.spec.locked", "minimums"),
        ("dataexport.spec.organization", "WrongNamespace"),
    ] {
        let explained = kubectl_ok(&["explain", field]);
        assert!(explained.contains(words), "{field}: {explained}");
    }
}

/// Manifests a platform engineer could get wrong, each with the words the API
/// server's refusal must contain so that they know which field to fix.
const INVALID: &[(&str, &str, &str)] = &[
    (
        "confirmName differs from the name",
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {name: invalid-a}\nspec: {deletion: {confirmName: other}}",
        "spec.deletion.confirmName must equal metadata.name",
    ),
    (
        "archived without offboarding",
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {name: invalid-b}\nspec: {lifecycle: Archived}",
        "spec.offboarding is required when spec.lifecycle is Disabled or Archived",
    ),
    (
        "skipRetention without approval",
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {name: invalid-c}\nspec: {deletion: {confirmName: invalid-c, skipRetention: true}}",
        "spec.deletion.approval is required when spec.deletion.skipRetention is true",
    ),
    (
        "an unknown lifecycle",
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {name: invalid-d}\nspec: {lifecycle: Deleted}",
        "spec.lifecycle: Unsupported value",
    ),
    (
        "an unknown offboarding reason",
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {name: invalid-e}\nspec: {lifecycle: Disabled, offboarding: {reason: Bored}}",
        "spec.offboarding.reason: Unsupported value",
    ),
    (
        "a lower-case code prefix",
        "apiVersion: tenure.dev/v1alpha1\nkind: EntitlementClass\nmetadata: {name: invalid-f}\nspec: {codePrefix: plg}",
        "spec.codePrefix",
    ),
    (
        "a six-letter code prefix",
        "apiVersion: tenure.dev/v1alpha1\nkind: EntitlementClass\nmetadata: {name: invalid-g}\nspec: {codePrefix: TOOLNG}",
        "spec.codePrefix",
    ),
    (
        "a policy scoped to a class and a product",
        "apiVersion: tenure.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: invalid-h}\nspec: {scope: {class: plugin, product: x}}",
        "spec.scope may name at most one of class, organization and product",
    ),
    (
        "negative grace days",
        "apiVersion: tenure.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: invalid-i}\nspec: {payment: {graceDays: -1}}",
        "spec.payment.graceDays",
    ),
    (
        "negative retention days",
        "apiVersion: tenure.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {name: invalid-j}\nspec: {cancellation: {dataRetentionDays: -5}}",
        "spec.cancellation.dataRetentionDays",
    ),
    (
        "a hold without a reason",
        "apiVersion: tenure.dev/v1alpha1\nkind: RetentionHold\nmetadata: {name: invalid-k}\nspec: {organization: acme}",
        "spec.reason: Required value",
    ),
    (
        "a hold on two targets",
        "apiVersion: tenure.dev/v1alpha1\nkind: RetentionHold\nmetadata: {name: invalid-l}\nspec: {reason: litigation, organization: acme, entitlement: {namespace: org-acme, name: staging}}",
        "a RetentionHold names exactly one target: spec.organization or spec.entitlement",
    ),
    (
        "a hold on nothing",
        "apiVersion: tenure.dev/v1alpha1\nkind: RetentionHold\nmetadata: {name: invalid-m}\nspec: {reason: litigation}",
        "a RetentionHold names exactly one target",
    ),
    (
        "an unknown cancellation reason",
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {name: invalid-n, namespace: default}\nspec: {class: plugin, product: x, cancellation: {reason: Whim}}",
        "spec.cancellation.reason: Unsupported value",
    ),
    (
        "a malformed pinned code",
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {name: invalid-o, namespace: default}\nspec: {class: plugin, product: x, code: PLG-1}",
        "spec.code",
    ),
    (
        "an end before the start",
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {name: invalid-p, namespace: default}\nspec: {class: plugin, product: x, startsAt: '2027-01-01T00:00:00Z', endsAt: '2026-01-01T00:00:00Z'}",
        "spec.endsAt must be after spec.startsAt",
    ),
    (
        "an entitlement without a class",
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {name: invalid-q, namespace: default}\nspec: {product: x}",
        "spec.class: Required value",
    ),
    (
        "secret values without secrets",
        "apiVersion: tenure.dev/v1alpha1\nkind: DataExport\nmetadata: {name: invalid-r, namespace: default}\nspec: {organization: acme, includeSecretValues: true}",
        "spec.includeSecretValues requires spec.includeSecrets",
    ),
];

#[test]
fn invalid_manifests_are_refused_with_a_message_naming_the_field() {
    for (case, manifest, expected) in INVALID {
        let out = kubectl_with_stdin(&["create", "--dry-run=server", "-f", "-"], Some(manifest));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{case}: the API server accepted it");
        assert!(
            stderr.contains(expected),
            "{case}: expected {expected:?} in the refusal, got: {stderr}"
        );
    }
}

/// Applies `manifest` and returns the API server's refusal, failing if it was accepted.
fn refusal(manifest: &str) -> String {
    let out = kubectl_with_stdin(&["apply", "-f", "-"], Some(manifest));
    assert!(!out.status.success(), "accepted: {manifest}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn class_code_and_namespace_cannot_change_once_set() {
    let name = unique("immutable");
    let entitlement = |class: &str, code: &str| {
        format!(
            "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {{name: {name}, namespace: default}}\nspec: {{class: {class}, product: x, code: {code}}}"
        )
    };
    // An imported code of its own, so that reruns never share one.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let code = format!("IMP-2026{:02}{:04}", nanos % 12 + 1, nanos % 10_000);
    apply(&entitlement("plugin", &code));
    assert!(refusal(&entitlement("service", &code)).contains("spec.class is immutable"));
    assert!(refusal(&entitlement("plugin", "IMP-2026010000")).contains("spec.code is immutable"));
    let without_code = format!(
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {{name: {name}, namespace: default}}\nspec: {{class: plugin, product: x}}"
    );
    assert!(refusal(&without_code).contains("spec.code is immutable"));

    let org = unique("immutable-ns");
    let organization = |namespace: &str| {
        format!(
            "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {{name: {org}}}\nspec: {{namespace: {namespace}}}"
        )
    };
    apply(&organization(&format!("tenant-{org}")));
    assert!(
        refusal(&organization(&format!("other-{org}")))
            .contains("spec.namespace is immutable once set")
    );
}

#[test]
fn a_locked_policy_stays_locked_and_its_retention_only_grows() {
    let name = unique("locked");
    let policy = |locked: bool, retention: i64| {
        format!(
            "apiVersion: tenure.dev/v1alpha1\nkind: LifecyclePolicy\nmetadata: {{name: {name}}}\nspec: {{scope: {{product: {name}}}, locked: {locked}, cancellation: {{dataRetentionDays: {retention}}}, organization: {{disabledRetentionDays: {retention}}}}}"
        )
    };
    apply(&policy(true, 400));
    assert!(refusal(&policy(false, 400)).contains("spec.locked cannot be unset once it is true"));
    let shrink = refusal(&policy(true, 100));
    assert!(
        shrink.contains(
            "spec.cancellation.dataRetentionDays of a locked policy can grow but never shrink"
        ),
        "{shrink}"
    );
    assert!(
        shrink.contains(
            "spec.organization.disabledRetentionDays of a locked policy can grow but never shrink"
        ),
        "{shrink}"
    );
    apply(&policy(true, 500));

    let out = kubectl(&["delete", "lifecyclepolicy", &name]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a locked policy was deleted");
    assert!(
        stderr.contains("is locked (spec.locked: true, a retention lock) and cannot be deleted"),
        "{stderr}"
    );
    assert!(
        get_json(&["lifecyclepolicy", &name]).is_ok(),
        "the locked policy is gone"
    );
}

#[test]
fn the_tenant_namespace_is_created_labelled_and_a_foreign_one_is_never_adopted() {
    start_controller(&[]);
    let org = unique("tenant");
    apply(&format!(
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {{name: {org}}}\nspec: {{displayName: Tenant}}"
    ));
    wait_ready(&["organization", &org]);
    let namespace = get_json(&["namespace", &format!("org-{org}")]).unwrap();
    assert_eq!(
        namespace["metadata"]["labels"]["tenure.dev/organization"],
        org.as_str()
    );

    let squatter = unique("squatter");
    kubectl_ok(&["create", "namespace", &format!("org-{squatter}")]);
    apply(&format!(
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {{name: {squatter}}}\nspec: {{}}"
    ));
    let stalled = wait_for(
        "the organization to stall on a namespace it does not own",
        TIMEOUT,
        || {
            let object = get_json(&["organization", &squatter])?;
            condition(&object, "Stalled")
                .filter(|c| c["status"] == "True")
                .cloned()
                .ok_or(object["status"].to_string())
        },
    );
    assert_eq!(stalled["reason"], "NamespaceNotOwned");
    assert!(
        stalled["message"]
            .as_str()
            .unwrap()
            .contains("never adopts"),
        "{stalled}"
    );
    let namespace = get_json(&["namespace", &format!("org-{squatter}")]).unwrap();
    assert!(
        namespace["metadata"]["labels"]
            .get("tenure.dev/organization")
            .is_none(),
        "the namespace was changed"
    );
}

#[test]
fn deleting_an_unpurged_organization_is_held_and_explained() {
    start_controller(&[]);
    let org = unique("keep");
    apply(&format!(
        "apiVersion: tenure.dev/v1alpha1\nkind: Organization\nmetadata: {{name: {org}}}\nspec: {{}}"
    ));
    wait_for("the finalizer", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        (object["metadata"]["finalizers"][0] == "tenure.dev/cleanup")
            .then_some(())
            .ok_or(object["metadata"].to_string())
    });
    kubectl_ok(&["delete", "organization", &org, "--wait=false"]);
    let blocked = wait_for("DeletionBlocked", TIMEOUT, || {
        let object = get_json(&["organization", &org])?;
        condition(&object, "DeletionBlocked")
            .cloned()
            .ok_or(object["status"].to_string())
    });
    assert!(
        blocked["message"]
            .as_str()
            .unwrap()
            .contains("Offboard it instead"),
        "{blocked}"
    );
    wait_for("a DeletionBlocked Event", TIMEOUT, || {
        let events = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={org},reason=DeletionBlocked"),
        ]);
        events
            .contains("DeletionBlocked")
            .then_some(())
            .ok_or(events)
    });
    assert!(
        get_json(&["organization", &org]).is_ok(),
        "the organization was deleted"
    );
}

#[test]
fn an_entitlement_waits_for_its_class_and_starts_on_time() {
    start_controller(&[]);
    let class = unique("late-class");
    let name = unique("late");
    let starts_at = (chrono::Utc::now() + chrono::TimeDelta::seconds(8))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    apply(&format!(
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {{name: {name}, namespace: default}}\nspec: {{class: {class}, product: x, startsAt: '{starts_at}'}}"
    ));
    let stalled = wait_for("ClassNotFound", TIMEOUT, || {
        let object = get_json(&["-n", "default", "entitlement", &name])?;
        condition(&object, "Stalled")
            .cloned()
            .ok_or(object["status"].to_string())
    });
    assert_eq!(stalled["reason"], "ClassNotFound");

    apply(&format!(
        "apiVersion: tenure.dev/v1alpha1\nkind: EntitlementClass\nmetadata: {{name: {class}}}\nspec: {{codePrefix: {}}}",
        unique_prefix()
    ));
    let pending = wait_ready(&["-n", "default", "entitlement", &name]);
    assert_eq!(
        pending["status"]["phase"], "Pending",
        "starts at {starts_at}"
    );
    wait_for("the entitlement to start", TIMEOUT, || {
        let object = get_json(&["-n", "default", "entitlement", &name])?;
        (object["status"]["phase"] == "Active")
            .then_some(())
            .ok_or(object["status"].to_string())
    });
    assert!(
        chrono::Utc::now() >= starts_at.parse::<chrono::DateTime<chrono::Utc>>().unwrap(),
        "started early"
    );
}
