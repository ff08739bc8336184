//! LifecycleWebhooks against a real HTTP receiver on loopback: every
//! lifecycle event of an organization (transitions, reminders) arrives as a
//! signed CloudEvent, in order, even when the receiver fails its first
//! attempts and when the controller is killed while a request is in flight;
//! a clock that runs ahead sends only the last of the reminders it missed;
//! an https receiver is trusted through the webhook's caBundle.
//! A binary of its own: it kills and restarts its controller.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
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
    /// Plain HTTP, or HTTPS with `tls`.
    fn start(tls: Option<Arc<rustls::ServerConfig>>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = match &tls {
                    None => serve(stream, &shared),
                    Some(config) => rustls::ServerConnection::new(config.clone())
                        .map_err(std::io::Error::other)
                        .and_then(|tls| serve(rustls::StreamOwned::new(tls, stream), &shared)),
                };
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

fn serve(mut stream: impl Read + Write, state: &Mutex<ReceiverState>) -> std::io::Result<()> {
    let mut reader = BufReader::new(&mut stream);
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
    drop(reader);
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

/// A CA and a certificate for 127.0.0.1 it signed (openssl, as hack/cluster
/// makes the cluster's): the receiver's TLS, and the CA's PEM.
fn tls_receiver_config() -> (Arc<rustls::ServerConfig>, String) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let dir = std::env::temp_dir().join(unique("tenure-webhook-tls"));
    std::fs::create_dir_all(&dir).unwrap();
    let openssl = |args: &str| {
        let ok = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(&dir)
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "openssl {args}");
    };
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment\n",
    )
    .unwrap();
    openssl(
        "req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=webhook-test-ca -keyout ca.key -out ca.crt",
    );
    openssl("req -newkey rsa:2048 -nodes -subj /CN=receiver -keyout server.key -out server.csr");
    openssl(
        "x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 -extfile server.ext -out server.crt",
    );
    let chain: Vec<CertificateDer> = CertificateDer::pem_file_iter(dir.join("server.crt"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(dir.join("server.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
    let ca = std::fs::read_to_string(dir.join("ca.crt")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    (Arc::new(config), ca)
}

fn lifecycle_webhook(name: &str, secret: &str, spec: Value) {
    let mut spec = spec;
    spec["secretRef"] = json!({"namespace": CHART_NAMESPACE, "name": secret});
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "LifecycleWebhook",
            "metadata": {"name": name},
            "spec": spec,
        })
        .to_string(),
    );
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

/// An object the webhook tells of: how kubectl gets it, and its CloudEvents
/// `source`.
struct Told {
    args: Vec<String>,
    source: String,
}

fn organization(name: &str) -> Told {
    Told {
        args: vec!["organization".into(), name.into()],
        source: format!("/apis/tenure.dev/v1alpha1/organizations/{name}"),
    }
}

fn entitlement(namespace: &str, name: &str) -> Told {
    Told {
        args: ["entitlement", name, "-n", namespace]
            .map(String::from)
            .to_vec(),
        source: format!("/apis/tenure.dev/v1alpha1/namespaces/{namespace}/entitlements/{name}"),
    }
}

impl Told {
    fn get(&self) -> Value {
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        get_json(&args).unwrap()
    }
}

/// Waits until the receiver holds every history entry of `object` (nothing
/// pending), and returns what it received, in order.
fn wait_all_delivered(receiver: &Receiver, object: &Told) -> Vec<Received> {
    wait_for(
        &format!("every event of {} delivered", object.source),
        TIMEOUT,
        || {
            let got = object.get();
            let history = got["status"]["history"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            let received = receiver.events_about(&object.source);
            let told: Vec<(&Value, &Value)> = (received.iter())
                .map(|r| (&r.event["time"], &r.event["data"]["event"]))
                .collect();
            let happened: Vec<(&Value, &Value)> =
                history.iter().map(|e| (&e["at"], &e["event"])).collect();
            (!history.is_empty() && told == happened)
                .then(|| received.clone())
                .ok_or(format!("history {happened:?}; received {told:?}"))
        },
    )
}

#[test]
fn every_event_reaches_a_failing_receiver_signed_in_order_and_survives_a_kill_mid_delivery() {
    let receiver = Receiver::start(None);
    let (tls, ca) = tls_receiver_config();
    let tls_receiver = Receiver::start(Some(tls));
    receiver.with(|s| s.fail_next = 3);
    let scheduled = unique("hooked");
    let late = unique("late");
    let webhook = unique("receiver");
    let secret = format!("{webhook}-key");
    // Three https webhooks for the second organization: one trusting the
    // receiver's CA, one trusting the system's roots only, one whose
    // caBundle holds no certificate.
    let [trusting, untrusting, garbled] =
        ["trusting", "untrusting", "garbled"].map(|w| format!("{webhook}-{w}"));
    let _cleanup = DeletedAtTheEnd(vec![
        vec!["lifecyclewebhook".into(), webhook.clone()],
        vec!["lifecyclewebhook".into(), trusting.clone()],
        vec!["lifecyclewebhook".into(), untrusting.clone()],
        vec!["lifecyclewebhook".into(), garbled.clone()],
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
    lifecycle_webhook(
        &webhook,
        &secret,
        json!({
            "url": format!("http://127.0.0.1:{}/tenure", receiver.port),
            "organizations": [scheduled, late],
            "timeoutSeconds": 5,
        }),
    );
    let https = format!("https://127.0.0.1:{}/tenure", tls_receiver.port);
    lifecycle_webhook(
        &trusting,
        &secret,
        json!({"url": https, "organizations": [late], "caBundle": ca}),
    );
    lifecycle_webhook(
        &untrusting,
        &secret,
        json!({"url": https, "organizations": [late]}),
    );
    lifecycle_webhook(
        &garbled,
        &secret,
        json!({"url": https, "organizations": [late], "caBundle": "not a certificate"}),
    );
    let spawned = Instant::now();
    let controller = spawn_controller(ORIGIN.parse().unwrap(), "tenure-webhooks");
    let webhook_args = ["lifecyclewebhook", webhook.as_str()];
    for name in [&webhook, &trusting, &untrusting, &garbled] {
        wait_for("the webhooks to begin", TIMEOUT, || {
            let object = get_json(&["lifecyclewebhook", name])?;
            (!object["status"]["since"].is_null())
                .then_some(())
                .ok_or(object["status"].to_string())
        });
    }

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
    let received = wait_all_delivered(&receiver, &organization(&scheduled));
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
    // What was received is recorded on the object, where a restart reads it.
    let recorded = organization(&scheduled).get();
    let recorded = recorded["metadata"]["annotations"][format!("delivered.tenure.dev/{webhook}")]
        .as_str()
        .unwrap_or_default()
        .to_string();
    for r in &received {
        assert!(
            recorded.contains(r.event["id"].as_str().unwrap()),
            "{recorded}"
        );
    }

    // A clock that ran ahead: created 5 days before its effectiveAt, the
    // reminders 30 and 7 days ahead are due at once; one is sent, saying so.
    // An entitlement of it is told too, and cancelled with it.
    apply_organization(
        &late,
        json!({
            "lifecycle": "Archived",
            "offboarding": {"reason": "BusinessClosure", "effectiveAt": effective_at(5)},
        }),
    );
    let late_namespace = format!("org-{late}");
    wait_for("the tenant namespace", TIMEOUT, || {
        get_json(&["namespace", &late_namespace])
    });
    apply(
        &json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": "reports", "namespace": late_namespace},
            "spec": {"organization": late, "class": "service", "product": "reports"},
        })
        .to_string(),
    );
    wait_phase(&["organization", &late], "Archived");
    let reports = entitlement(&late_namespace, "reports");
    wait_phase(
        &["entitlement", "reports", "-n", &late_namespace],
        "Cancelled",
    );
    let received = wait_all_delivered(&receiver, &reports);
    let types: Vec<&str> = received
        .iter()
        .map(|r| r.event["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        [
            "dev.tenure.entitlement.activated",
            "dev.tenure.entitlement.cancelled"
        ]
    );
    let cancelled = &received[1].event;
    assert_eq!(cancelled["subject"], late.as_str());
    assert_eq!(cancelled["data"]["class"], "service");
    assert!(
        cancelled["data"]["code"]
            .as_str()
            .is_some_and(|c| c.starts_with("SVC-")),
        "{cancelled}"
    );
    let received = wait_all_delivered(&receiver, &organization(&late));
    let reminders: Vec<&str> = (received.iter())
        .filter(|r| r.event["data"]["event"] == "OffboardingReminder")
        .map(|r| r.event["data"]["message"].as_str().unwrap())
        .collect();
    // "(also for the reminder 30 days ahead, ...)" or "(also for the
    // reminders 30 and 7 days ahead, ...)": each of the three is told once.
    let missed = reminders.first().map_or(0, |first| {
        let (_, also) = first.rsplit_once("(also for the ").unwrap_or_default();
        also.split(" days ahead")
            .next()
            .unwrap_or_default()
            .split(|c: char| !c.is_ascii_digit())
            .filter(|d| !d.is_empty())
            .count()
    });
    assert!(
        missed >= 1 && missed + reminders.len() == 3,
        "the first reminder stands for those missed, and none is sent twice: {reminders:?}"
    );
    // The same events over https, to the webhook that trusts the receiver's CA.
    let over_tls = wait_all_delivered(&tls_receiver, &organization(&late));
    assert!(over_tls.iter().all(|r| r.signed));
    let refused = |name: &str, reason: &str, said: &str| {
        wait_for(&format!("{name}: {reason}"), TIMEOUT, || {
            let object = get_json(&["lifecyclewebhook", name])?;
            let ready = condition(&object, "Ready").cloned().unwrap_or_default();
            let told = ready["message"].as_str().unwrap_or_default();
            (ready["reason"] == reason && told.contains(said))
                .then_some(())
                .ok_or(object["status"].to_string())
        })
    };
    refused(&untrusting, "DeliveryFailed", "certificate");
    refused(
        &garbled,
        "InvalidCABundle",
        "spec.caBundle holds no PEM certificate",
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
    let received = wait_all_delivered(&receiver, &organization(&scheduled));
    assert!(
        received.iter().any(|r| r.event["id"] == held.as_str()),
        "the event in flight at the kill ({held}) is delivered after the restart"
    );
    assert_eq!(
        received.last().unwrap().event["data"]["event"],
        "Enabled",
        "delivered in order"
    );
    // Only what was in flight came again: the restart read what was received.
    let ids: Vec<String> = receiver.with(|s| {
        s.received
            .iter()
            .map(|r| r.event["id"].to_string())
            .collect()
    });
    let distinct: std::collections::HashSet<&String> = ids.iter().collect();
    assert_eq!(distinct.len(), ids.len(), "nothing received twice");
    controller.kill();
}
