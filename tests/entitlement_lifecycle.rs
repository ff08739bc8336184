//! The entitlement lifecycle end to end against the local control plane, on
//! the real clock: facts are backdated so that every deadline lies in the past
//! or a few seconds ahead.

mod common;

use std::time::Duration;

use chrono::{DateTime, SecondsFormat, TimeDelta, Utc};
use common::*;
use serde_json::{Value, json};

fn at(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn time(value: &Value) -> DateTime<Utc> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not a time: {value}"))
}

/// Whole seconds, as the API server keeps them.
fn now() -> DateTime<Utc> {
    use chrono::SubsecRound;
    Utc::now().trunc_subsecs(0)
}

/// Creates a standalone entitlement of class plugin in namespace default.
fn entitlement(name: &str, spec: Value) {
    let mut full = json!({"class": "plugin", "product": "lifecycle-test"});
    full.as_object_mut()
        .unwrap()
        .extend(spec.as_object().unwrap().clone());
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1",
            "kind": "Entitlement",
            "metadata": {"name": name, "namespace": "default"},
            "spec": full,
        })
        .to_string(),
    );
}

fn patch(name: &str, patch: Value) {
    kubectl_ok(&[
        "patch",
        "-n",
        "default",
        "entitlement",
        name,
        "--type=merge",
        "-p",
        &patch.to_string(),
    ]);
}

fn events_of(history: &Value) -> Vec<String> {
    history
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["event"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn ent(name: &str) -> [&str; 4] {
    ["-n", "default", "entitlement", name]
}

#[test]
fn a_failed_payment_suspends_and_the_grace_running_out_cancels_on_time() {
    start_controller(&[]);
    let name = unique("unpaid");
    // A few seconds ahead: enough to see it Suspended first on a busy machine.
    let failed_at = now() - TimeDelta::days(1) + TimeDelta::seconds(12);
    entitlement(
        &name,
        json!({
            "startsAt": at(now() - TimeDelta::days(60)),
            "payment": {"failedAt": at(failed_at)},
            "policy": {"payment": {"graceDays": 1}},
        }),
    );
    let suspended = wait_phase(&ent(&name), "Suspended");
    let auto_cancel_at = failed_at + TimeDelta::days(1);
    let status = &suspended["status"];
    assert_eq!(time(&status["deadlines"]["autoCancelAt"]), auto_cancel_at);
    assert_eq!(status["next"]["phase"], "Cancelled");
    assert_eq!(time(&status["next"]["at"]), auto_cancel_at);
    assert_eq!(
        condition(&suspended, "Ready").unwrap()["reason"],
        "PaymentFailed"
    );
    assert_eq!(
        status["effectivePolicy"]["payment.graceDays"],
        json!({"value": 1, "from": "Entitlement"})
    );

    // kubectl wait is how a pipeline waits for a phase.
    kubectl_ok(&[
        "wait",
        "-n",
        "default",
        "--for=jsonpath={.status.phase}=Cancelled",
        "--timeout=30s",
        &format!("entitlement/{name}"),
    ]);
    assert!(now() >= auto_cancel_at, "cancelled before {auto_cancel_at}");
    let cancelled = wait_phase(&ent(&name), "Cancelled");
    let status = &cancelled["status"];
    assert_eq!(status["cancelled"]["reason"], "NonPayment");
    assert_eq!(time(&status["cancelled"]["at"]), auto_cancel_at);
    assert_eq!(
        time(&status["deadlines"]["purgeAfter"]),
        auto_cancel_at + TimeDelta::days(365)
    );
    assert_eq!(
        events_of(&status["history"]),
        ["Activated", "Suspended", "Cancelled"]
    );

    // describe shows the history and the Events of each transition.
    let described = wait_for("the Cancelled Event", TIMEOUT, || {
        let out = kubectl_ok(&["describe", "-n", "default", "entitlement", &name]);
        out.contains("Cancelled").then_some(out.clone()).ok_or(out)
    });
    for shown in ["History", "NonPayment", "Suspended", "Events:"] {
        assert!(described.contains(shown), "{shown} missing in\n{described}");
    }
    let events = kubectl_ok(&[
        "get",
        "events",
        "-n",
        "default",
        "--field-selector",
        &format!("involvedObject.name={name}"),
        "-o",
        "jsonpath={.items[*].reason}",
    ]);
    for reason in ["Suspended", "Cancelled"] {
        assert!(events.contains(reason), "no {reason} Event: {events}");
    }
}

#[test]
fn a_payment_recovered_inside_the_grace_resumes_access() {
    start_controller(&[]);
    let name = unique("recovered");
    entitlement(
        &name,
        json!({"payment": {"failedAt": at(now() - TimeDelta::hours(1))}}),
    );
    wait_phase(&ent(&name), "Suspended");
    kubectl_ok(&[
        "patch",
        "-n",
        "default",
        "entitlement",
        &name,
        "--type=json",
        "-p",
        r#"[{"op": "remove", "path": "/spec/payment"}]"#,
    ]);
    let active = wait_phase(&ent(&name), "Active");
    assert_eq!(
        events_of(&active["status"]["history"]).last().unwrap(),
        "Resumed"
    );
    assert!(active["status"]["deadlines"].is_null());
}

#[test]
fn an_ended_entitlement_expires_revives_when_renewed_and_is_cancelled_after_the_grace() {
    start_controller(&[]);
    let renewed = unique("renewed");
    let ended_at = now() - TimeDelta::days(1);
    entitlement(&renewed, json!({"endsAt": at(ended_at)}));
    let expired = wait_phase(&ent(&renewed), "Expired");
    assert_eq!(
        time(&expired["status"]["deadlines"]["expiryGraceEndsAt"]),
        ended_at + TimeDelta::days(30)
    );
    patch(
        &renewed,
        json!({"spec": {"endsAt": at(now() + TimeDelta::days(365))}}),
    );
    let active = wait_phase(&ent(&renewed), "Active");
    assert_eq!(
        events_of(&active["status"]["history"]).last().unwrap(),
        "Renewed"
    );

    let lapsed = unique("lapsed");
    entitlement(&lapsed, json!({"endsAt": at(now() - TimeDelta::days(31))}));
    let cancelled = wait_phase(&ent(&lapsed), "Cancelled");
    assert_eq!(cancelled["status"]["cancelled"]["reason"], "NotRenewed");
    // Renewing after the grace does not bring it back: that takes a reactivation.
    patch(
        &lapsed,
        json!({"spec": {"endsAt": at(now() + TimeDelta::days(365))}}),
    );
    let still = wait_phase(&ent(&lapsed), "Cancelled");
    assert_eq!(still["status"]["cancelled"]["reason"], "NotRenewed");
}

#[test]
fn a_cancellation_400_days_ago_is_announced_a_full_final_grace_before_its_purge() {
    start_controller(&[]);
    let name = unique("backdated");
    let started = now() - TimeDelta::days(800);
    let cancelled_at = now() - TimeDelta::days(400);
    let seen = now();
    entitlement(
        &name,
        json!({
            "startsAt": at(started),
            "cancellation": {"reason": "CustomerRequest", "effectiveAt": at(cancelled_at)},
        }),
    );
    let announced = wait_phase(&ent(&name), "Cancelled");
    let status = &announced["status"];
    let purge_after = cancelled_at + TimeDelta::days(365);
    assert_eq!(time(&status["deadlines"]["purgeAfter"]), purge_after);
    // Nothing is deleted on first sight: the purge is announced for review.
    let final_purge_at = time(&status["deadlines"]["finalPurgeAt"]);
    assert!(
        final_purge_at >= seen + TimeDelta::days(7),
        "finalPurgeAt {final_purge_at}"
    );
    assert_eq!(status["next"]["phase"], "Purged");
    assert_eq!(time(&status["next"]["at"]), final_purge_at);
    assert!(status["purgePlan"].is_object(), "{status}");
    let history = status["history"].as_array().unwrap();
    let timeline: Vec<(String, DateTime<Utc>)> = history
        .iter()
        .map(|e| (e["event"].as_str().unwrap().to_string(), time(&e["at"])))
        .collect();
    assert_eq!(
        timeline[..2],
        [
            ("Activated".to_string(), started),
            ("Cancelled".to_string(), cancelled_at),
        ]
    );
    assert_eq!(history[1]["reason"], "CustomerRequest");
    // The purge is 7 days off: its first reminder is due at once, and kept.
    let reminders: Vec<&str> = timeline[2..].iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(reminders, ["PurgeReminder"]);
}

#[test]
fn without_a_final_grace_a_cancellation_400_days_ago_is_purged_on_first_sight() {
    start_controller(&[]);
    let name = unique("backdated-now");
    let cancelled_at = now() - TimeDelta::days(400);
    entitlement(
        &name,
        json!({
            "startsAt": at(now() - TimeDelta::days(800)),
            "cancellation": {"reason": "CustomerRequest", "effectiveAt": at(cancelled_at)},
            "policy": {"purge": {"finalGraceDays": 0}},
        }),
    );
    let purged = wait_phase(&ent(&name), "Purged");
    let events = events_of(&purged["status"]["history"]);
    assert_eq!(events, ["Activated", "Cancelled", "Purged"]);
    assert!(purged["status"]["next"].is_null());
}

#[test]
fn a_reactivation_inside_the_window_is_honoured_and_one_outside_it_refused() {
    start_controller(&[]);
    let welcome_back = unique("winback");
    entitlement(
        &welcome_back,
        json!({
            "startsAt": at(now() - TimeDelta::days(365)),
            "cancellation": {"reason": "SwitchingProvider", "effectiveAt": at(now() - TimeDelta::days(10))},
            "reactivation": {"requestedAt": at(now() - TimeDelta::days(1)), "reference": "order-77"},
        }),
    );
    let active = wait_phase(&ent(&welcome_back), "Active");
    assert_eq!(
        events_of(&active["status"]["history"]),
        ["Activated", "Cancelled", "Reactivated"]
    );

    let too_late = unique("toolate");
    let cancelled_at = now() - TimeDelta::days(100);
    entitlement(
        &too_late,
        json!({
            "cancellation": {"reason": "CustomerRequest", "effectiveAt": at(cancelled_at)},
            "reactivation": {"requestedAt": at(now() - TimeDelta::days(1))},
        }),
    );
    let refused = wait_for("ReactivationRefused", TIMEOUT, || {
        let object = get_json(&ent(&too_late))?;
        condition(&object, "ReactivationRefused")
            .cloned()
            .ok_or(object["status"].to_string())
    });
    let deadline = cancelled_at + TimeDelta::days(90);
    assert_eq!(refused["reason"], "WindowClosed");
    let message = refused["message"].as_str().unwrap();
    assert!(message.contains(&deadline.to_string()), "{message}");
    assert_eq!(
        wait_phase(&ent(&too_late), "Cancelled")["status"]["phase"],
        "Cancelled"
    );
}

#[test]
fn the_organization_disabled_suspends_its_entitlements_and_archived_cancels_them() {
    start_controller(&[]);
    let org = unique("tenant");
    let organization = |lifecycle: &str, offboarding: Value| {
        json!({
            "apiVersion": "tenure.dev/v1alpha1",
            "kind": "Organization",
            "metadata": {"name": org},
            "spec": {"displayName": "Tenant", "lifecycle": lifecycle, "offboarding": offboarding},
        })
        .to_string()
    };
    apply(&organization("Active", Value::Null));
    let namespace = format!("org-{org}");
    wait_ready(&["organization", &org]);
    let name = unique("seat");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1",
            "kind": "Entitlement",
            "metadata": {"name": name, "namespace": namespace},
            "spec": {"organization": org, "class": "service", "product": "support"},
        })
        .to_string(),
    );
    let in_org = ["-n", namespace.as_str(), "entitlement", name.as_str()];
    wait_phase(&in_org, "Active");

    apply(&organization(
        "Disabled",
        json!({"reason": "NonPayment", "ticket": "FIN-1"}),
    ));
    let suspended = wait_phase(&in_org, "Suspended");
    assert_eq!(
        condition(&suspended, "Ready").unwrap()["reason"],
        "OrganizationDisabled"
    );

    apply(&organization("Active", Value::Null));
    let active = wait_phase(&in_org, "Active");
    assert_eq!(
        events_of(&active["status"]["history"]).last().unwrap(),
        "Resumed"
    );

    apply(&organization(
        "Archived",
        json!({"reason": "SwitchingProvider", "ticket": "CS-42"}),
    ));
    let cancelled = wait_phase(&in_org, "Cancelled");
    let ready = condition(&cancelled, "Ready").unwrap();
    assert_eq!(ready["reason"], "SwitchingProvider");
    assert!(
        ready["message"].as_str().unwrap().contains("CS-42"),
        "{ready}"
    );
    assert_eq!(cancelled["status"]["cancelled"]["by"], "Organization");
}

#[test]
fn five_policy_levels_resolve_field_by_field_and_say_where_each_value_came_from() {
    start_controller(&[]);
    let (class, _) = new_class("levels-class");
    let org = unique("levels-org");
    let product = unique("levels-product");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": org}, "spec": {"displayName": "Levels"},
        })
        .to_string(),
    );
    let policy = |name: &str, scope: Value, rules: Value| {
        let mut spec = json!({"scope": scope});
        spec.as_object_mut()
            .unwrap()
            .extend(rules.as_object().unwrap().clone());
        apply(
            &json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecyclePolicy",
                "metadata": {"name": name}, "spec": spec,
            })
            .to_string(),
        );
    };
    let by_class = unique("by-class");
    let by_org = unique("by-org");
    let by_product = unique("by-product");
    // Same level and target as by_product, but its name sorts after it.
    let rival = format!("{by_product}-rival");
    policy(
        &by_class,
        json!({"class": class}),
        json!({"payment": {"graceDays": 11}, "expiry": {"graceDays": 12}, "cancellation": {"portalVisibilityDays": 13}}),
    );
    policy(
        &by_org,
        json!({"organization": org}),
        json!({"payment": {"graceDays": 21}, "expiry": {"graceDays": 22}}),
    );
    policy(
        &by_product,
        json!({"product": product}),
        json!({"payment": {"graceDays": 31}}),
    );
    policy(
        &rival,
        json!({"product": product}),
        json!({"payment": {"graceDays": 99}, "cancellation": {"dataRetentionDays": 400}}),
    );
    let name = unique("levels");
    // An entitlement of an organization lives in its namespace.
    wait_ready(&["organization", &org]);
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": format!("org-{org}")},
            "spec": {
                "organization": org, "class": class, "product": product,
                "policy": {"cancellation": {"reactivationWindowDays": 5}},
            },
        })
        .to_string(),
    );
    let effective = |object: &Value, key: &str| {
        let value = &object["status"]["effectivePolicy"][key];
        (
            value["value"].clone(),
            value["from"].as_str().unwrap_or("").to_string(),
        )
    };
    let from = |name: &str| format!("LifecyclePolicy/{name}");
    let namespace = format!("org-{org}");
    let in_org = ["-n", namespace.as_str(), "entitlement", name.as_str()];
    let object = wait_ready(&in_org);
    assert_eq!(
        effective(&object, "payment.graceDays"),
        (json!(31), from(&by_product))
    );
    assert_eq!(
        effective(&object, "expiry.graceDays"),
        (json!(22), from(&by_org))
    );
    assert_eq!(
        effective(&object, "cancellation.portalVisibilityDays"),
        (json!(13), from(&by_class))
    );
    assert_eq!(
        effective(&object, "cancellation.dataRetentionDays"),
        (json!(400), from(&rival))
    );
    assert_eq!(
        effective(&object, "cancellation.reactivationWindowDays"),
        (json!(5), "Entitlement".to_string())
    );
    assert_eq!(
        effective(&object, "purge.finalGraceDays"),
        (json!(7), "LifecyclePolicy/global".to_string())
    );
    for (policy, other) in [(&by_product, &rival), (&rival, &by_product)] {
        let conflicting = wait_for("Conflicting", TIMEOUT, || {
            let object = get_json(&["lifecyclepolicy", policy])?;
            condition(&object, "Conflicting")
                .cloned()
                .ok_or(object["status"].to_string())
        });
        let message = conflicting["message"].as_str().unwrap();
        assert!(message.contains(other.as_str()), "{message}");
    }

    // A policy change re-decides the entitlements it applies to.
    policy(
        &by_org,
        json!({"organization": org}),
        json!({"expiry": {"graceDays": 23}}),
    );
    wait_for("the new expiry grace", TIMEOUT, || {
        let object = get_json(&in_org)?;
        (effective(&object, "expiry.graceDays") == (json!(23), from(&by_org)))
            .then_some(())
            .ok_or(object["status"]["effectivePolicy"].to_string())
    });
}

#[test]
fn three_hundred_entitlements_created_at_once_get_three_hundred_distinct_codes() {
    start_controller(&[]);
    let (class, prefix) = new_class("bulk-class");
    let batch = unique("bulk");
    create_batch(&class, &batch, 300);

    let codes: Vec<String> = wait_for("300 codes", Duration::from_secs(180), || {
        let codes = codes_of_batch(&batch)?;
        (codes.len() == 300)
            .then(|| codes.values().cloned().collect())
            .ok_or(format!("{} of 300 have a code", codes.len()))
    });
    let distinct: std::collections::BTreeSet<&String> = codes.iter().collect();
    assert_eq!(distinct.len(), 300, "codes repeat");
    let month = now().format("%Y%m").to_string();
    for code in &codes {
        let number: i32 = code
            .strip_prefix(&format!("{prefix}-{month}"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{code} is not {prefix}-{month}NNNN"));
        assert!((1..=300).contains(&number), "{code}");
    }
    let class = get_json(&["entitlementclass", &class]).unwrap();
    assert_eq!(class["status"]["sequences"][&month], 300);
}

#[test]
fn an_imported_code_is_kept_and_never_generated_again() {
    start_controller(&[]);
    let (class, prefix) = new_class("import-class");
    let month = now().format("%Y%m").to_string();
    let imported = format!("{prefix}-{month}0041");
    let create = |name: &str, code: Option<&str>| {
        let mut spec = json!({"class": class, "product": "import"});
        if let Some(code) = code {
            spec["code"] = json!(code);
        }
        apply(
            &json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
                "metadata": {"name": name, "namespace": "default"}, "spec": spec,
            })
            .to_string(),
        );
    };
    let migrated = unique("migrated");
    create(&migrated, Some(&imported));
    assert_eq!(
        wait_ready(&ent(&migrated))["status"]["code"],
        imported.as_str()
    );

    let fresh = unique("fresh");
    create(&fresh, None);
    assert_eq!(
        wait_ready(&ent(&fresh))["status"]["code"],
        format!("{prefix}-{month}0042").as_str()
    );

    // A second import of a code in use is refused, naming its holder.
    let duplicate = unique("duplicate");
    create(&duplicate, Some(&imported));
    let stalled = wait_for("CodeInUse", TIMEOUT, || {
        let object = get_json(&ent(&duplicate))?;
        condition(&object, "Stalled")
            .cloned()
            .ok_or(object["status"].to_string())
    });
    assert_eq!(stalled["reason"], "CodeInUse");
    assert!(stalled["message"].as_str().unwrap().contains(&migrated));
}

#[test]
fn a_trial_is_trialing_until_it_ends_and_active_once_converted() {
    start_controller(&[]);
    let name = unique("trial");
    let started_at = now() - TimeDelta::days(10);
    let ends_at = started_at + TimeDelta::days(14);
    entitlement(
        &name,
        json!({
            "trial": {"startedAt": at(started_at)},
            "policy": {"trial": {"days": 14}},
        }),
    );
    let trialing = wait_phase(&ent(&name), "Trialing");
    let status = &trialing["status"];
    assert_eq!(time(&status["deadlines"]["trialEndsAt"]), ends_at);
    assert_eq!(status["next"]["phase"], "Expired");
    assert_eq!(time(&status["next"]["at"]), ends_at);
    let ready = condition(&trialing, "Ready").expect("Ready");
    assert_eq!(ready["reason"], "Trialing");
    let message = ready["message"].as_str().unwrap();
    assert!(
        message.contains(&format!(
            "on trial until {}",
            ends_at.format("%Y-%m-%d %H:%M:%S UTC")
        )),
        "{message}"
    );
    assert_eq!(
        events_of(&status["history"]),
        ["TrialStarted", "TrialReminder"]
    );
    // 7 days before the end is already past: that reminder is due now.
    let reminded = wait_for("the trial reminder", TIMEOUT, || {
        let object = get_json(&ent(&name))?;
        object["status"]["lastTrialReminderAt"]
            .as_str()
            .map(String::from)
            .ok_or(object["status"].to_string())
    });
    assert_eq!(time(&json!(reminded)), ends_at - TimeDelta::days(7));
    wait_for("the TrialReminder Event", TIMEOUT, || {
        let messages = kubectl_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={name},reason=TrialReminder"),
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ]);
        (messages.contains("in 3 days") || messages.contains("in 4 days"))
            .then_some(())
            .ok_or(messages)
    });

    // The billing integration records the payment.
    let converted_at = now();
    patch(
        &name,
        json!({"spec": {"trial": {"convertedAt": at(converted_at)}}}),
    );
    let active = wait_phase(&ent(&name), "Active");
    assert_eq!(
        events_of(&active["status"]["history"]),
        ["TrialStarted", "TrialReminder", "Converted"]
    );
    assert_eq!(time(&active["status"]["phaseSince"]), converted_at);
    assert!(active["status"]["deadlines"].is_null());
    assert!(active["status"]["next"].is_null());
}

#[test]
fn a_renewal_reminder_is_recorded_once_when_the_end_comes_near() {
    start_controller(&[]);
    let name = unique("renewal");
    let ends_at = now() + TimeDelta::days(10);
    entitlement(&name, json!({"endsAt": at(ends_at)}));
    // 30 days before the end is already past: that reminder is due now.
    let reminded = wait_for("the reminder", TIMEOUT, || {
        let object = get_json(&ent(&name))?;
        object["status"]["lastReminderAt"]
            .as_str()
            .map(String::from)
            .ok_or(object["status"].to_string())
    });
    assert_eq!(time(&json!(reminded)), ends_at - TimeDelta::days(30));
    let reminders = wait_for("the RenewalReminder Event", TIMEOUT, || {
        let reasons = kubectl_ok(&[
            "get",
            "events",
            "-n",
            "default",
            "--field-selector",
            &format!("involvedObject.name={name},reason=RenewalReminder"),
            "-o",
            "jsonpath={range .items[*]}{.message}{\"\\n\"}{end}",
        ]);
        (!reasons.is_empty())
            .then_some(reasons.clone())
            .ok_or(reasons)
    });
    assert_eq!(reminders.lines().count(), 1, "{reminders}");
    assert!(
        reminders.contains("in 9 days") || reminders.contains("in 10 days"),
        "{reminders}"
    );

    // Decided again (a spec change), it is not sent again: a repeat would
    // show as a second Event or as an Event series.
    patch(
        &name,
        json!({"spec": {"product": "lifecycle-test-renamed"}}),
    );
    wait_for("the change to be decided", TIMEOUT, || {
        let object = get_json(&ent(&name))?;
        (object["status"]["observedGeneration"] == 2)
            .then_some(())
            .ok_or(object["status"].to_string())
    });
    let series = kubectl_ok(&[
        "get",
        "events.v1.events.k8s.io",
        "-n",
        "default",
        "--field-selector",
        &format!("regarding.name={name},reason=RenewalReminder"),
        "-o",
        "jsonpath={range .items[*]}[{.series.count}]{\"\\n\"}{end}",
    ]);
    assert_eq!(
        series.lines().collect::<Vec<_>>(),
        ["[]"],
        "sent more than once"
    );
}

#[test]
fn a_class_whose_codes_of_the_month_are_used_up_stalls_new_entitlements_with_the_reason() {
    start_controller(&[]);
    let (class, _) = new_class("full-class");
    let month = now().format("%Y%m").to_string();
    kubectl_ok(&[
        "patch",
        "entitlementclass",
        &class,
        "--subresource=status",
        "--type=merge",
        "-p",
        &json!({"status": {"sequences": {month.as_str(): 9999}}}).to_string(),
    ]);
    let name = unique("overflow");
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"class": class, "product": "overflow"},
        })
        .to_string(),
    );
    let stalled = wait_for("CodesExhausted", TIMEOUT, || {
        let object = get_json(&ent(&name))?;
        condition(&object, "Stalled")
            .cloned()
            .ok_or(object["status"].to_string())
    });
    assert_eq!(stalled["reason"], "CodesExhausted");
    assert!(get_json(&ent(&name)).unwrap()["status"]["code"].is_null());
}
