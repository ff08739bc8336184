//! LifecycleWebhooks against a real HTTP receiver on loopback: every
//! lifecycle event of an organization (transitions, reminders) arrives as a
//! signed CloudEvent, in order, even when the receiver fails its first
//! attempts and when the controller is killed while a request is in flight;
//! a clock that runs ahead sends only the last of the reminders it missed.
//! A binary of its own: it kills and restarts its controller.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use common::*;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

const ORIGIN: &str = "2036-01-01T00:00:00Z";
/// A simulated day per real second.
const RATE: f64 = 86_400.0;
const KEY: &str = "a-shared-secret";

/// One request the receiver took.
#[derive(Clone, Debug)]
struct Received {
    event: Value,
    /// The signature header matched the body signed with [`KEY`].
    signed: bool,
}

#[derive(Default)]
struct ReceiverState {
    /// Answer 503 to this many requests first.
    fail_next: usize,
    /// Take requests without answering (recording their ids) while true.
    hold: bool,
    held: Vec<String>,
    attempts: usize,
    received: Vec<Received>,
}

/// An HTTP receiver on loopback, one connection at a time.
#[derive(Clone)]
struct Receiver {
    port: u16,
    state: Arc<Mutex<ReceiverState>>,
}

impl Receiver {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = serve(stream, &shared);
            }
        });
        Self { port, state }
    }

    fn with<T>(&self, f: impl FnOnce(&mut ReceiverState) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }

    /// The events received about `source`, first delivery of each id only.
    fn events_about(&self, source: &str) -> Vec<Received> {
        let mut seen = std::collections::HashSet::new();
        self.with(|s| s.received.clone())
            .into_iter()
            .filter(|r| r.event["source"] == source)
            .filter(|r| seen.insert(r.event["id"].as_str().unwrap().to_string()))
            .collect()
    }
}

fn serve(stream: TcpStream, state: &Mutex<ReceiverState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut signature = String::new();
    let mut length = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line)?;
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            match name.to_ascii_lowercase().as_str() {
                "content-length" => length = value.trim().parse().unwrap_or(0),
                "x-tenure-signature" => signature = value.trim().to_string(),
                _ => {}
            }
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body)?;
    let event: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let mut mac = Hmac::<Sha256>::new_from_slice(KEY.as_bytes()).unwrap();
    mac.update(&body);
    let expected: String = (mac.finalize().into_bytes().iter())
        .map(|b| format!("{b:02x}"))
        .collect();
    let signed = signature == format!("sha256={expected}");
    let answer = {
        let mut state = state.lock().unwrap();
        state.attempts += 1;
        if state.hold {
            state
                .held
                .push(event["id"].as_str().unwrap_or_default().into());
            None
        } else if state.fail_next > 0 {
            state.fail_next -= 1;
            Some("503 Service Unavailable")
        } else {
            state.received.push(Received { event, signed });
            Some("200 OK")
        }
    };
    let status = match answer {
        Some(status) => status,
        None => {
            // Held: answer only once released (the sender is gone by then).
            while state.lock().unwrap().hold {
                std::thread::sleep(Duration::from_millis(50));
            }
            "503 Service Unavailable"
        }
    };
    let mut stream = stream;
    write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
}

/// Objects deleted when the test ends, passed or failed: a webhook left
/// behind would retry its dead receiver for the tests after this one.
struct DeletedAtTheEnd(Vec<Vec<String>>);

impl Drop for DeletedAtTheEnd {
    fn drop(&mut self) {
        for object in &self.0 {
            let mut args = vec!["delete", "--ignore-not-found"];
            args.extend(object.iter().map(String::as_str));
            let _ = kubectl(&args);
        }
    }
}

/// The controller's clock, at most: ORIGIN plus RATE times the real time
/// since `spawned`.
fn simulated_now_at_most(spawned: Instant) -> DateTime<Utc> {
    let origin: DateTime<Utc> = ORIGIN.parse().unwrap();
    origin + TimeDelta::milliseconds((spawned.elapsed().as_secs_f64() * RATE * 1000.0) as i64)
}

fn spawn_controller(clock_start: DateTime<Utc>, log: &str) -> Controller {
    let start = clock_start.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    Controller::spawn(
        &["--clock-start", &start, "--clock-rate", &RATE.to_string()],
        log,
    )
}

fn organization_source(name: &str) -> String {
    format!("/apis/tenure.dev/v1alpha1/organizations/{name}")
}

fn history_of(org: &str) -> Vec<Value> {
    let object = get_json(&["organization", org]).unwrap();
    object["status"]["history"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Waits until the receiver holds every history entry of `org` (nothing
/// pending), and returns what it received, in order.
fn wait_all_delivered(receiver: &Receiver, org: &str) -> Vec<Received> {
    wait_for(&format!("every event of {org} delivered"), TIMEOUT, || {
        let history = history_of(org);
        let received = receiver.events_about(&organization_source(org));
        let told: Vec<(&Value, &Value)> = (received.iter())
            .map(|r| (&r.event["time"], &r.event["data"]["event"]))
            .collect();
        let happened: Vec<(&Value, &Value)> =
            history.iter().map(|e| (&e["at"], &e["event"])).collect();
        (!history.is_empty() && told == happened)
            .then(|| received.clone())
            .ok_or(format!("history {happened:?}; received {told:?}"))
    })
}

#[test]
fn every_event_reaches_a_failing_receiver_signed_in_order_and_survives_a_kill_mid_delivery() {
    let receiver = Receiver::start();
    receiver.with(|s| s.fail_next = 3);
    let scheduled = unique("hooked");
    let late = unique("late");
    let webhook = unique("receiver");
    let secret = format!("{webhook}-key");
    let _cleanup = DeletedAtTheEnd(vec![
        vec!["lifecyclewebhook".into(), webhook.clone()],
        vec![
            "secret".into(),
            secret.clone(),
            "-n".into(),
            CHART_NAMESPACE.into(),
        ],
    ]);
    // The chart's namespace and RBAC: the key lives beside tenure.
    controller_kubeconfig();
    kubectl_ok(&[
        "create",
        "secret",
        "generic",
        &secret,
        "-n",
        CHART_NAMESPACE,
        &format!("--from-literal=key={KEY}"),
    ]);
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecycleWebhook",
            "metadata": {"name": webhook},
            "spec": {
                "url": format!("http://127.0.0.1:{}/tenure", receiver.port),
                "secretRef": {"namespace": CHART_NAMESPACE, "name": secret},
                "organizations": [scheduled, late],
                "timeoutSeconds": 5,
            },
        })
        .to_string(),
    );
    let spawned = Instant::now();
    let controller = spawn_controller(ORIGIN.parse().unwrap(), "tenure-webhooks");
    let webhook_args = ["lifecyclewebhook", webhook.as_str()];
    wait_for("the webhook to begin", TIMEOUT, || {
        let object = get_json(&webhook_args)?;
        (!object["status"]["since"].is_null())
            .then_some(())
            .ok_or(object["status"].to_string())
    });

    // Twenty simulated days ahead: reminders 30 (at once), 7 and 3 days
    // before, then Disabled; the receiver refuses the first three attempts.
    let effective_at = |days| {
        (simulated_now_at_most(spawned) + TimeDelta::days(days))
            .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
    };
    apply_organization(
        &scheduled,
        json!({
            "lifecycle": "Disabled",
            "offboarding": {"reason": "CustomerRequest", "ticket": "CS-9", "effectiveAt": effective_at(20)},
        }),
    );
    wait_phase(&["organization", &scheduled], "Disabled");
    let received = wait_all_delivered(&receiver, &scheduled);
    let events: Vec<&str> = (received.iter())
        .map(|r| r.event["data"]["event"].as_str().unwrap())
        .collect();
    let reminders = events
        .iter()
        .filter(|e| **e == "OffboardingReminder")
        .count();
    assert_eq!(
        reminders, 3,
        "one reminder 30, 7 and 3 days ahead: {events:?}"
    );
    assert_eq!(events.last(), Some(&"Disabled"), "{events:?}");
    for r in &received {
        assert!(r.signed, "signed with the Secret's key: {}", r.event);
        let event = &r.event;
        assert_eq!(event["specversion"], "1.0");
        assert_eq!(event["subject"], scheduled.as_str());
        let expected_type = match event["data"]["event"].as_str().unwrap() {
            "OffboardingReminder" => "dev.tenure.organization.offboarding_reminder",
            "Disabled" => "dev.tenure.organization.disabled",
            _ => "",
        };
        if !expected_type.is_empty() {
            assert_eq!(event["type"], expected_type);
        }
    }
    let disabled = received.last().unwrap();
    assert_eq!(disabled.event["data"]["ticket"], "CS-9");
    assert_eq!(
        disabled.event["data"]["offboardingReason"],
        "CustomerRequest"
    );
    let failed_then_delivered = wait_for("the webhook's status", TIMEOUT, || {
        let object = get_json(&webhook_args)?;
        let status = &object["status"];
        (status["backlog"] == 0 && status["consecutiveFailures"] == 0)
            .then(|| object.clone())
            .ok_or(status.to_string())
    });
    let status = &failed_then_delivered["status"];
    assert!(
        status["lastFailure"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("503")),
        "the last failure stays in status: {status}"
    );
    assert!(status["delivered"].as_u64().unwrap() >= received.len() as u64);
    assert!(receiver.with(|s| s.attempts) >= received.len() + 3);

    // A clock that ran ahead: created 5 days before its effectiveAt, the
    // reminders 30 and 7 days ahead are due at once; one is sent, saying so.
    apply_organization(
        &late,
        json!({
            "lifecycle": "Archived",
            "offboarding": {"reason": "BusinessClosure", "effectiveAt": effective_at(5)},
        }),
    );
    wait_phase(&["organization", &late], "Archived");
    let received = wait_all_delivered(&receiver, &late);
    let reminders: Vec<&str> = (received.iter())
        .filter(|r| r.event["data"]["event"] == "OffboardingReminder")
        .map(|r| r.event["data"]["message"].as_str().unwrap())
        .collect();
    let missed = reminders.first().and_then(|first| {
        let (_, rest) = first.rsplit_once(" (")?;
        rest.split(' ').next()?.parse::<usize>().ok()
    });
    assert!(
        missed.is_some_and(|missed| missed >= 1 && missed + reminders.len() == 3),
        "the first reminder stands for those missed, and none is sent twice: {reminders:?}"
    );

    // Killed while a request is in flight: the new controller sends it again,
    // with the same id, and nothing is lost.
    receiver.with(|s| s.hold = true);
    apply_organization(&scheduled, json!({"lifecycle": "Active"}));
    let held = wait_for("a request in flight", TIMEOUT, || {
        receiver
            .with(|s| s.held.first().cloned())
            .ok_or("none yet".to_string())
    });
    let clock_start = simulated_now_at_most(spawned);
    controller.kill();
    receiver.with(|s| s.hold = false);
    let controller = spawn_controller(clock_start, "tenure-webhooks-restarted");
    let received = wait_all_delivered(&receiver, &scheduled);
    assert!(
        received.iter().any(|r| r.event["id"] == held.as_str()),
        "the event in flight at the kill ({held}) is delivered after the restart"
    );
    assert_eq!(
        received.last().unwrap().event["data"]["event"],
        "Enabled",
        "delivered in order"
    );
    controller.kill();
}
