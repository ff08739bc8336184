//! The simulated clock end to end: a controller whose day lasts a second
//! reaches each deadline on time, neither early nor late.

mod common;

use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::json;

const ORIGIN: &str = "2031-01-01T00:00:00Z";

#[test]
fn at_a_day_per_second_a_grace_of_three_days_runs_out_three_seconds_after_it_starts() {
    // The controller's clock starts at ORIGIN when its process starts, which
    // is after `spawned`: so it never reads more than ORIGIN plus a day per
    // real second since `spawned`.
    let spawned = Instant::now();
    start_controller(&["--clock-start", ORIGIN, "--clock-rate", "86400"]);
    let origin: DateTime<Utc> = ORIGIN.parse().unwrap();
    let failed_at = origin + TimeDelta::days(4);
    let auto_cancel_at = failed_at + TimeDelta::days(3);
    let name = unique("fast");
    let format = |t: DateTime<Utc>| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {
                "class": "plugin", "product": "fast", "startsAt": ORIGIN,
                "payment": {"failedAt": format(failed_at)},
                "policy": {"payment": {"graceDays": 3}},
            },
        })
        .to_string(),
    );
    let args = ["-n", "default", "entitlement", name.as_str()];

    let suspended = wait_phase(&args, "Suspended");
    assert!(
        spawned.elapsed() >= Duration::from_secs(4),
        "suspended early"
    );
    assert_eq!(
        suspended["status"]["deadlines"]["autoCancelAt"],
        format(auto_cancel_at).as_str()
    );
    assert_eq!(suspended["status"]["next"]["phase"], "Cancelled");

    let cancelled = wait_for("the auto-cancel", Duration::from_secs(15), || {
        let object = get_json(&args)?;
        (object["status"]["phase"] == "Cancelled")
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert!(
        spawned.elapsed() >= Duration::from_secs(7),
        "cancelled early"
    );
    let history = cancelled["status"]["history"].as_array().unwrap();
    let last = history.last().unwrap();
    assert_eq!(last["event"], "Cancelled");
    assert_eq!(last["at"], format(auto_cancel_at).as_str());
    assert_eq!(last["reason"], "NonPayment");
}

#[test]
fn a_simulated_clock_is_named_in_every_log_line() {
    start_controller(&["--clock-start", ORIGIN, "--clock-rate", "86400"]);
    let lines = wait_for("log lines", Duration::from_secs(30), || {
        let log = std::fs::read_to_string(controller_log()).map_err(|e| e.to_string())?;
        let lines: Vec<String> = log.lines().map(String::from).collect();
        (lines.len() >= 3).then_some(lines).ok_or(log)
    });
    let named = format!("clock=\"simulated from {ORIGIN} at 86400x\"");
    // Every event (a line starting with its timestamp) says so.
    for line in lines.iter().filter(|line| line.starts_with("20")) {
        assert!(line.contains(&named), "a log line without {named}: {line}");
    }
}
