//! `kubectl tenure`, run as a person runs it: through kubectl, which finds
//! the plugin on PATH, against the local control plane; and `simulate`
//! offline on scenarios whose dates are known.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

use chrono::{SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

/// A directory holding `kubectl-tenure`, a symlink to the tenure binary, as
/// `make plugin` installs it.
fn plugin_dir() -> PathBuf {
    let dir = repo().join(".cluster/plugin");
    std::fs::create_dir_all(&dir).unwrap();
    let link = dir.join("kubectl-tenure");
    if std::fs::read_link(&link).ok() != Some(PathBuf::from(env!("CARGO_BIN_EXE_tenure"))) {
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_tenure"), &link).unwrap();
    }
    dir
}

/// `kubectl tenure <args>`: kubectl runs the plugin it finds on PATH.
fn kubectl_tenure(args: &[&str]) -> Output {
    let path = format!(
        "{}:{}",
        plugin_dir().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    Command::new(repo().join(".cluster/bin/kubectl"))
        .arg("tenure")
        .args(args)
        .env("PATH", path)
        .env("KUBECONFIG", kubeconfig())
        .output()
        .expect("kubectl runs")
}

/// The standard output of a command that succeeded (the test fails
/// otherwise, showing its standard error).
fn succeeded(out: Output, what: &[&str]) -> String {
    assert!(
        out.status.success(),
        "{what:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn tenure_ok(args: &[&str]) -> String {
    succeeded(kubectl_tenure(args), args)
}

/// The plugin binary itself, offline (no cluster, no kubectl).
fn simulate(args: &[&str]) -> Output {
    let mut all = vec!["simulate"];
    all.extend_from_slice(args);
    Command::new(plugin_dir().join("kubectl-tenure"))
        .args(all)
        .current_dir(repo())
        .env_remove("KUBECONFIG")
        .output()
        .expect("the plugin runs")
}

fn simulate_ok(args: &[&str]) -> String {
    succeeded(simulate(args), args)
}

fn ago(days: i64) -> String {
    (Utc::now() - TimeDelta::days(days)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The transitions of `name` in a `simulate -o json` report, as (date, event).
fn transitions_of(report: &Value, name: &str) -> Vec<(String, String)> {
    report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == name)
        .map(|t| {
            (
                t["decidedAt"].as_str().unwrap()[..10].to_string(),
                t["event"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(items: &[(&str, &str)]) -> Vec<(String, String)> {
    items
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

#[test]
fn simulate_shows_the_97_days_from_disabling_an_unpaid_organization_to_its_purge() {
    let args = [
        "-f",
        "scenarios/unpaid-organization.yaml",
        "--from",
        "2027-01-01",
        "--until",
        "1y",
    ];
    let text = simulate_ok(&args);
    for line in [
        "Organization globex",
        "  2027-01-01 00:00  Disabled ",
        "  2027-04-01 00:00  PurgeScheduled ",
        "  2027-04-08 00:00  Purged ",
        "At the end: 1 Entitlement Deleted, 1 Organization Purged.",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let report: Value = serde_json::from_str(&simulate_ok(&json_args)).unwrap();
    assert_eq!(
        transitions_of(&report, "globex"),
        pairs(&[
            ("2027-01-01", "Disabled"),
            ("2027-04-01", "PurgeScheduled"),
            ("2027-04-01", "PurgeReminder"),
            ("2027-04-07", "PurgeReminder"),
            ("2027-04-08", "Purging"),
            ("2027-04-08", "Purged"),
            ("2027-04-08", "FinalConfirmation"),
        ])
    );
    assert_eq!(
        transitions_of(&report, "analytics"),
        pairs(&[("2027-01-01", "Suspended"), ("2027-04-08", "Deleted")])
    );
}

#[test]
fn simulate_shows_a_scheduled_offboarding_its_reminders_and_the_final_confirmation() {
    let report: Value = serde_json::from_str(&simulate_ok(&[
        "-f",
        "scenarios/scheduled-offboarding.yaml",
        "--from",
        "2027-01-01",
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(
        transitions_of(&report, "initech"),
        pairs(&[
            ("2027-01-30", "OffboardingReminder"),
            ("2027-02-22", "OffboardingReminder"),
            ("2027-02-26", "OffboardingReminder"),
            ("2027-03-01", "Archived"),
            ("2028-02-29", "PurgeScheduled"),
            ("2028-02-29", "PurgeReminder"),
            ("2028-03-06", "PurgeReminder"),
            ("2028-03-07", "Purging"),
            ("2028-03-07", "Purged"),
            ("2028-03-07", "FinalConfirmation"),
        ])
    );
    assert_eq!(
        transitions_of(&report, "tps-reports"),
        pairs(&[
            ("2027-01-01", "Activated"),
            ("2027-03-01", "Cancelled"),
            ("2028-03-07", "Deleted"),
        ])
    );
    let confirmation = report["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["event"] == "FinalConfirmation")
        .unwrap();
    let said = confirmation["message"].as_str().unwrap();
    assert!(
        said.contains("tax ID US-12-3456789") && said.contains("Namespace 1"),
        "{said}"
    );
}

#[test]
fn simulate_shows_the_30_day_payment_grace_and_the_365_day_retention() {
    let out = simulate_ok(&[
        "-f",
        "scenarios/failed-payment.yaml",
        "--from",
        "2027-01-01",
        "--until",
        "2y",
        "-o",
        "yaml",
    ]);
    let report: Value = serde_yaml::from_str(&out).unwrap();
    assert_eq!(
        transitions_of(&report, "gift-card"),
        pairs(&[
            ("2027-01-01", "Activated"),
            ("2027-01-10", "Suspended"),
            ("2027-02-09", "Cancelled"),
            ("2028-02-09", "PurgeReminder"),
            ("2028-02-15", "PurgeReminder"),
            ("2028-02-16", "Purged"),
        ])
    );
}

#[test]
fn simulate_shows_a_14_day_trial_its_reminders_its_conversion_and_its_lapse() {
    let args = [
        "-f",
        "scenarios/trial.yaml",
        "--from",
        "2027-01-01",
        "--until",
        "2y",
    ];
    let text = simulate_ok(&args);
    for line in [
        "Entitlement shop/trial-converted",
        "  2027-01-01 00:00  TrialStarted         on trial until 2027-01-15",
        "  2027-01-10 00:00  Converted ",
        "  2027-01-15 00:00  Expired              TrialEnded: ",
        "  2027-02-14 00:00  Cancelled            TrialNotConverted: ",
        "  2028-02-21 00:00  Purged ",
        "At the end: 1 Entitlement Active, 1 Entitlement Purged.",
    ] {
        assert!(text.contains(line), "{line:?} missing from:\n{text}");
    }
    let mut json_args = args.to_vec();
    json_args.extend(["-o", "json"]);
    let report: Value = serde_json::from_str(&simulate_ok(&json_args)).unwrap();
    assert_eq!(
        transitions_of(&report, "trial-converted"),
        pairs(&[
            ("2027-01-01", "TrialStarted"),
            ("2027-01-08", "TrialReminder"),
            ("2027-01-10", "Converted"),
        ])
    );
    assert_eq!(
        transitions_of(&report, "trial-lapsed"),
        pairs(&[
            ("2027-01-01", "TrialStarted"),
            ("2027-01-08", "TrialReminder"),
            ("2027-01-14", "TrialReminder"),
            ("2027-01-15", "Expired"),
            ("2027-02-14", "Cancelled"),
            ("2028-02-14", "PurgeReminder"),
            ("2028-02-20", "PurgeReminder"),
            ("2028-02-21", "Purged"),
        ])
    );
}

#[test]
fn simulate_keeps_a_held_purge_until_the_hold_lapses_and_a_full_final_grace_after() {
    let report: Value = serde_json::from_str(&simulate_ok(&[
        "-f",
        "scenarios/legal-hold.yaml",
        "--from",
        "2027-01-01",
        "-o",
        "json",
    ]))
    .unwrap();
    let archive = transitions_of(&report, "archive");
    assert_eq!(
        archive.last(),
        Some(&("2028-07-07".to_string(), "Purged".to_string()))
    );
    assert!(archive.contains(&("2028-06-30".to_string(), "HoldLifted".to_string())));
}

#[test]
fn simulate_stops_at_until_and_reads_directories() {
    let text = simulate_ok(&[
        "-f",
        "scenarios",
        "--from",
        "2027-01-01",
        "--until",
        "2027-03-01",
    ]);
    assert!(text.contains("2027-02-09 00:00  Cancelled"), "{text}");
    assert!(!text.contains("PurgeScheduled"), "{text}");
    let examples = simulate_ok(&["-f", "examples", "--from", "2026-12-04"]);
    assert!(
        examples.contains("6 Entitlement Active, 1 Organization Active"),
        "{examples}"
    );
}

#[test]
fn simulate_names_the_file_and_field_of_a_manifest_it_cannot_read() {
    let dir = std::env::temp_dir().join(unique("bad-manifests"));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: tenure.dev/v1alpha1\nkind: Entitlement\nmetadata: {name: x, namespace: y}\nspec: {class: plugin}\n",
    )
    .unwrap();
    let out = simulate(&["-f", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let error = String::from_utf8_lossy(&out.stderr);
    assert!(
        error.contains("bad.yaml: document 1 (Entitlement x)"),
        "{error}"
    );
    assert!(error.contains("product"), "{error}");
    let usage = simulate(&["-f", bad.to_str().unwrap(), "--until", "soon"]);
    assert_eq!(usage.status.code(), Some(2), "a usage error");
    let error = String::from_utf8_lossy(&usage.stderr);
    assert!(
        error.contains("--until") && error.contains("\"soon\""),
        "{error}"
    );
}

/// An organization disabled 85 days ago: its retention (90 days) ends in 5
/// days, and its purge comes a 7-day final grace later, in 12 days.
fn disabled_organization(name: &str) {
    apply_organization(
        name,
        json!({
            "displayName": "Plugin test", "taxId": "BR-42",
            "lifecycle": "Disabled",
            "offboarding": {"reason": "NonPayment", "ticket": "FIN-9", "effectiveAt": ago(85)},
        }),
    );
}

/// Waits until the organization's purge is dated (`status.finalPurgeAt`).
fn purge_dated(org: &str) {
    wait_for(&format!("the purge of {org} to be dated"), TIMEOUT, || {
        let o = get_json(&["organization", org])?;
        o["status"]["finalPurgeAt"]
            .as_str()
            .map(String::from)
            .ok_or(o["status"].to_string())
    });
}

fn entitlement_in(org: &str, name: &str, class: &str) {
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": format!("org-{org}")},
            "spec": {"organization": org, "class": class, "product": "support"},
        })
        .to_string(),
    );
}

#[test]
fn status_tells_an_organizations_story_and_what_comes_next() {
    start_controller(&[]);
    let org = unique("story");
    disabled_organization(&org);
    let namespace = format!("org-{org}");
    wait_phase(&["organization", &org], "Disabled");
    let seat = unique("seat");
    apply(
        &json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": format!("{seat}-web"), "namespace": namespace,
                         "labels": {"app": "web", "tenure.dev/entitlement": seat}},
            "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                     "template": {"metadata": {"labels": {"app": "web"}},
                                  "spec": {"containers": [{"name": "web", "image": "registry.example/web:1"}]}}},
        })
        .to_string(),
    );
    entitlement_in(&org, &seat, "environment");
    wait_for("the environment's Deployment to be paused", TIMEOUT, || {
        let e = get_json(&["-n", &namespace, "entitlement", &seat])?;
        (e["status"]["phase"] == "Suspended" && e["status"]["resources"]["paused"] == 1)
            .then_some(())
            .ok_or(e["status"].to_string())
    });

    let text = tenure_ok(&["status", &format!("org/{org}")]);
    for expected in [
        format!("Organization {org}"),
        "phase:        Disabled".to_string(),
        "What happened".to_string(),
        "Disabled             access revoked (NonPayment)".to_string(),
        "in 5 days       the data retention ends (purgeAfter)".to_string(),
        "in 12 days      the purge deletes namespace".to_string(),
        format!("{namespace} and everything in it"),
        "organization.disabledRetentionDays    90        LifecyclePolicy/global".to_string(),
        seat.clone(),
    ] {
        assert!(
            text.contains(&expected),
            "{expected:?} missing from:\n{text}"
        );
    }
    assert!(text.lines().all(|l| l.chars().count() <= 80), "{text}");
    // Deadlines ahead in order.
    let retention = text.find("(purgeAfter)").unwrap();
    let purge = text.find("(finalPurgeAt)").unwrap();
    assert!(retention < purge, "{text}");

    let ent = tenure_ok(&["status", &format!("ent/{seat}"), "-n", &namespace]);
    assert!(ent.contains("phase:        Suspended"), "{ent}");
    assert!(ent.contains("OrganizationDisabled"), "{ent}");
    assert!(
        ent.contains(&format!(
            "in 12 days      deleted with namespace {namespace}"
        )),
        "{ent}"
    );
    assert!(ent.contains("class:        environment"), "{ent}");
    assert!(
        ent.contains(&format!("Deployment {seat}-web: now paused by tenure")),
        "{ent}"
    );
    assert!(
        ent.contains("then Cancelled: paused; Purged: deleted"),
        "what becomes of it in the phases ahead: {ent}"
    );

    let json: Value =
        serde_json::from_str(&tenure_ok(&["status", &format!("org/{org}"), "-o", "json"])).unwrap();
    assert_eq!(json["phase"], "Disabled");
    let fields: Vec<&str> = json["ahead"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields.last(), Some(&"finalPurgeAt"), "{json}");

    let missing = kubectl_tenure(&["status", "org/no-such-organization"]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("not found"),
        "{}",
        String::from_utf8_lossy(&missing.stderr)
    );
}

/// The line of `object` in a purge queue's text, and the lines under it up
/// to the next blank line.
fn queue_entry(text: &str, object: &str) -> Option<String> {
    let at = text
        .find(&format!("{object}\n"))
        .or_else(|| text.find(&format!("{object}  (")))?;
    let start = text[..at].rfind('\n').map_or(0, |n| n + 1);
    let rest = &text[start..];
    Some(rest[..rest.find("\n\n").unwrap_or(rest.len())].to_string())
}

#[test]
fn the_purge_queue_lists_announced_purges_and_a_hold_moves_one_to_blocked_until_released() {
    start_controller(&[]);
    let org = unique("queued");
    disabled_organization(&org);
    let object = format!("org/{org}");
    purge_dated(&org);

    let queue = tenure_ok(&["purge-queue", "--within", "30d"]);
    let entry =
        queue_entry(&queue, &object).unwrap_or_else(|| panic!("{object} missing:\n{queue}"));
    assert!(entry.contains("in 12 days"), "{entry}");
    assert!(
        entry.contains(&format!("namespace org-{org} and everything in it")),
        "{entry}"
    );
    // The command is copied whole: a long one continues on the next line.
    let command = entry.replace(" \\\n            ", "");
    assert!(
        command.contains(&format!(
            "kubectl tenure hold {object} --reason <why> --until "
        )),
        "{entry}"
    );
    let sooner = tenure_ok(&["purge-queue", "--within", "5d"]);
    assert!(queue_entry(&sooner, &object).is_none(), "{sooner}");

    let placed = tenure_ok(&[
        "hold",
        &object,
        "--reason",
        "litigation",
        "--ticket",
        "LEGAL-1",
        "--until",
        "90d",
    ]);
    let hold = placed
        .split_whitespace()
        .find_map(|w| w.strip_prefix("retentionhold.tenure.dev/"))
        .unwrap_or_else(|| panic!("{placed}"))
        .trim_end_matches(':')
        .to_string();
    let blocked = wait_for("the hold to block the purge", TIMEOUT, || {
        let queue = tenure_ok(&["purge-queue", "-o", "json"]);
        let queue: Value = serde_json::from_str(&queue).map_err(|e| e.to_string())?;
        queue["blocked"]
            .as_array()
            .and_then(|b| b.iter().find(|e| e["object"] == object.as_str()).cloned())
            .ok_or_else(|| "not blocked yet".to_string())
    });
    assert!(
        blocked["blockedBy"].as_str().unwrap().starts_with("Held"),
        "{blocked}"
    );
    assert!(blocked.get("purgeAt").is_none(), "{blocked}");
    let status = tenure_ok(&["status", &object]);
    assert!(
        status.contains(&format!("unblock: kubectl tenure release {hold}")),
        "{status}"
    );
    assert!(status.contains("litigation, ticket LEGAL-1"), "{status}");

    let released = tenure_ok(&["release", &hold]);
    assert!(released.contains("final grace"), "{released}");
    wait_for("the purge to be announced again", TIMEOUT, || {
        let queue = tenure_ok(&["purge-queue"]);
        queue_entry(&queue, &object)
            .filter(|e| e.contains("in 12 days") || e.contains("in 7 days"))
            .ok_or(queue)
    });
}

#[test]
fn confirm_delete_writes_the_confirmation_a_purge_waits_for() {
    start_controller(&[]);
    let org = unique("confirm");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": unique("confirmed")},
            "spec": {"scope": {"organization": org}, "purge": {"requireConfirmation": true}},
        })
        .to_string(),
    );
    disabled_organization(&org);
    let object = format!("org/{org}");
    wait_for("the purge to wait for a confirmation", TIMEOUT, || {
        let status = tenure_ok(&["status", &object]);
        status
            .contains(&format!("unblock: kubectl tenure confirm-delete {object}"))
            .then_some(())
            .ok_or(status)
    });
    let queue = tenure_ok(&["purge-queue"]);
    let entry = queue_entry(&queue, &object).unwrap_or_else(|| panic!("{queue}"));
    assert!(entry.contains("AwaitingConfirmation"), "{entry}");

    let out = tenure_ok(&[
        "confirm-delete",
        &object,
        "--approved-by",
        "cfo@example.com",
        "--reference",
        "FIN-9",
    ]);
    assert!(
        out.contains("hard delete confirmed by cfo@example.com (FIN-9)"),
        "{out}"
    );
    let confirmed = get_json(&["organization", &org]).unwrap();
    assert_eq!(confirmed["spec"]["deletion"]["confirmName"], org.as_str());
    assert_eq!(
        confirmed["spec"]["deletion"]["approval"]["by"],
        "cfo@example.com"
    );
    purge_dated(&org);

    let entitlement = kubectl_tenure(&["confirm-delete", "ent/x"]);
    assert_ne!(entitlement.status.code(), Some(0));
}

#[test]
fn simulate_live_answers_what_a_new_policy_would_do_without_applying_it() {
    start_controller(&[]);
    let org = unique("whatif");
    disabled_organization(&org);
    purge_dated(&org);
    let policy_name = unique("what-if");
    let policy = std::env::temp_dir().join(format!("{policy_name}.yaml"));
    std::fs::write(
        &policy,
        json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
            "metadata": {"name": policy_name},
            "spec": {"scope": {"organization": org}, "organization": {"disabledRetentionDays": 365}},
        })
        .to_string(),
    )
    .unwrap();
    let live = |extra: &[&str]| {
        let mut args = vec!["simulate", "--live", "--until", "30d", "-o", "json"];
        args.extend_from_slice(extra);
        let report: Value = serde_json::from_str(&tenure_ok(&args)).unwrap();
        transitions_of(&report, &org)
            .into_iter()
            .map(|(_, event)| event)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        live(&[]),
        [
            "PurgeScheduled",
            "PurgeReminder",
            "PurgeReminder",
            "Purging",
            "Purged",
            "FinalConfirmation"
        ]
    );
    // With the policy, nothing happens in the next 30 days; and it was not applied.
    assert_eq!(
        live(&["-f", policy.to_str().unwrap()]),
        Vec::<String>::new()
    );
    assert!(get_json(&["lcp", &policy_name]).is_err());
}

#[test]
fn completions_and_help_speak_as_the_kubectl_plugin() {
    let help = tenure_ok(&["--help"]);
    assert!(help.contains("Usage: kubectl tenure"), "{help}");
    let bash = tenure_ok(&["completion", "bash"]);
    assert!(bash.contains("purge-queue"), "{bash}");
}
