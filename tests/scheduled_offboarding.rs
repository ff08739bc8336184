//! An offboarding scheduled ahead (`offboarding.effectiveAt` in the future)
//! on a clock that runs ten days a second: the organization stays Active
//! with its reminders until then, and is disabled exactly at it. A binary of
//! its own, so that its controller's clock starts when this test does.

mod common;

use std::time::Instant;

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use serde_json::json;

const ORIGIN: &str = "2034-01-01T00:00:00Z";

/// The controller's clock now, as this test binary reads it: ORIGIN plus ten
/// days per real second since the controller was spawned, at most.
fn simulated_now_at_most(spawned: Instant) -> DateTime<Utc> {
    let origin: DateTime<Utc> = ORIGIN.parse().unwrap();
    origin + TimeDelta::milliseconds((spawned.elapsed().as_secs_f64() * 864_000_000.0) as i64)
}

#[test]
fn a_disabling_scheduled_ahead_revokes_access_exactly_at_effective_at_after_its_reminders() {
    let spawned = Instant::now();
    start_controller(&["--clock-start", ORIGIN, "--clock-rate", "864000"]);
    let org = unique("scheduled");
    let namespace = format!("org-{org}");
    // Sixty simulated days ahead: six real seconds.
    let effective_at = (simulated_now_at_most(spawned) + TimeDelta::days(60))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    apply_organization(
        &org,
        json!({
            "displayName": "Scheduled Ltd",
            "lifecycle": "Disabled",
            "offboarding": {"reason": "NonPayment", "ticket": "FIN-20", "effectiveAt": effective_at},
        }),
    );
    let org_args = ["organization", org.as_str()];
    let announced = wait_for("the scheduled disabling announced", TIMEOUT, || {
        let object = get_json(&org_args)?;
        (object["status"]["next"]["phase"] == "Disabled")
            .then_some(object.clone())
            .ok_or(object["status"].to_string())
    });
    assert_eq!(
        announced["status"]["phase"], "Active",
        "{}",
        announced["status"]
    );
    assert_eq!(announced["status"]["next"]["at"], effective_at.as_str());
    assert!(announced["status"]["disabledAt"].is_null());
    // Messages tell times as people read them: 2032-01-24 05:00:39 UTC.
    let said = effective_at.replace('T', " ").replace('Z', " UTC");
    let scheduled = condition(&announced, "OffboardingScheduled").expect("the condition");
    assert!(
        scheduled["message"].as_str().unwrap().contains(&said),
        "{scheduled}"
    );
    assert!(
        get_json(&["networkpolicy", "-n", &namespace, "tenure-access-disabled"]).is_err(),
        "access is revoked before effectiveAt"
    );

    let disabled = wait_phase(&org_args, "Disabled");
    let history = &disabled["status"]["history"];
    let disabling = history
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "Disabled")
        .unwrap_or_else(|| panic!("{history}"));
    assert_eq!(
        disabling["at"],
        effective_at.as_str(),
        "disabled exactly then"
    );
    assert_eq!(disabled["status"]["disabledAt"], effective_at.as_str());
    wait_for("the deny-all NetworkPolicy", TIMEOUT, || {
        get_json(&["networkpolicy", "-n", &namespace, "tenure-access-disabled"])
    });
    // Reminders went out before: the 30-day one at once, then as many of
    // the 7- and 3-day ones as the controller saw (each once).
    let reminders = wait_for("the offboarding reminders", TIMEOUT, || {
        let reasons = kubectl_ok(&[
            "get",
            "events",
            "-A",
            "--field-selector",
            &format!("involvedObject.name={org},reason=OffboardingReminder"),
            "-o",
            "jsonpath={.items[*].note}{.items[*].message}",
        ]);
        (!reasons.is_empty())
            .then_some(reasons.clone())
            .ok_or(reasons)
    });
    assert!(reminders.contains(&said), "{reminders}");
}
