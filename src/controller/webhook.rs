//! LifecycleWebhooks: each reconcile delivers what its webhook has not yet
//! received of the history of the Organizations and Entitlements it
//! selects, object by object and in each object's order, then reports the
//! backlog. The core decides what is pending and how it is told
//! (`lifecycle::webhook`); this sends it and records what was received.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, ResourceExt};
use tracing::{info, warn};

use super::context::{Context, backoff, reconciled, retry_later};
use super::error::Result;
use super::index::Feeds;
use super::{log_outcomes, matters, status};
use crate::api::common::HistoryEntry;
use crate::api::webhook::{Delivery, DeliveryFailure, LifecycleWebhookStatus};
use crate::api::{Entitlement, LifecycleWebhook, Organization};
use crate::lifecycle::conditions::{Verdict, conditions};
use crate::lifecycle::webhook::{
    About, Details, Pending, SIGNATURE_HEADER, cloud_event, delivered_annotation, delivered_value,
    entitlement_details, organization_details, parse_delivered, pending, signature,
};

/// A reconcile sends for at most this long, records what was received,
/// reports and goes on at once: a long backlog shows progress in status.
/// With the longest `timeoutSeconds` (60) a turn stays well inside
/// `RECONCILE_TIMEOUT`, so what was received is always recorded.
const DELIVERY_TURN: Duration = Duration::from_secs(30);

/// What deliveries share across reconciles.
pub struct Deliveries {
    http: reqwest::Client,
    /// Per webhook with a caBundle: the bundle, and a client that trusts it.
    trusting: Mutex<HashMap<String, (String, reqwest::Client)>>,
    /// The ids received, per webhook and object uid, as this process knows
    /// them: the cache may not show its annotation writes yet (or a write
    /// failed), and must not make it send them again. Dropped once the
    /// cache shows them.
    received: Mutex<HashMap<(String, String), HashSet<String>>>,
    /// Per webhook: its failures in a row.
    failing: Mutex<HashMap<String, Failing>>,
    /// Per webhook uid: the `delivered` count last reported (the cache may
    /// not show the last status write yet; the count only grows).
    delivered: Mutex<HashMap<String, i64>>,
}

/// A webhook's failed attempts in a row.
struct Failing {
    failures: u32,
    /// No attempt before then.
    not_before: Instant,
    /// The generation they failed with: a changed spec tries again at once.
    generation: Option<i64>,
}

fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .user_agent(concat!("tenure/", env!("CARGO_PKG_VERSION")))
        // A redirect would turn the POST into a GET without the event, and
        // its 2xx would count as a delivery.
        .redirect(reqwest::redirect::Policy::none())
}

impl Default for Deliveries {
    fn default() -> Self {
        Self {
            http: http_client().build().expect("an HTTP client builds"),
            trusting: Mutex::default(),
            received: Mutex::default(),
            failing: Mutex::default(),
            delivered: Mutex::default(),
        }
    }
}

pub fn controller(context: &Arc<Context>, feeds: &mut Feeds) -> Controller<LifecycleWebhook> {
    let index = context.index.clone();
    let every_webhook = move || -> Vec<ObjectRef<LifecycleWebhook>> {
        let webhooks = index.webhooks().state();
        webhooks
            .iter()
            .map(|w| ObjectRef::from_obj(w.as_ref()))
            .collect()
    };
    let also = every_webhook.clone();
    Controller::for_shared_stream(
        feeds.webhooks.subscribe_to(matters::own),
        context.index.webhooks(),
    )
    .watches_shared_stream(
        feeds.organizations.subscribe_to(matters::history),
        move |_| every_webhook(),
    )
    .watches_shared_stream(
        feeds.entitlements.subscribe_to(matters::history),
        move |_| also(),
    )
    .with_config(context.controller_config())
    .shutdown_on_signal()
}

pub async fn run(controller: Controller<LifecycleWebhook>, context: Arc<Context>) {
    log_outcomes(
        "LifecycleWebhook",
        controller.run(
            |webhook, context| reconciled(webhook, context.clone(), reconcile),
            retry_later,
            context,
        ),
    )
    .await;
}

/// One object's events still to deliver to a webhook.
struct Outbox<'a> {
    about: About,
    /// What its events' data tell of it (only for an object with events).
    details: Details,
    history: &'a [HistoryEntry],
    delivered: HashSet<String>,
    events: Vec<Pending<'a>>,
}

/// Why an event was not received, and whether that holds for the whole
/// receiver (down, timing out, failing: stop until the backoff ends) or
/// only for this event (refused with a 4xx: the object waits, the others
/// go on).
struct Refused {
    message: String,
    receiver_down: bool,
}

async fn reconcile(webhook: Arc<LifecycleWebhook>, context: Arc<Context>) -> Result<Action> {
    if webhook.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = webhook.name_any();
    let recorded = webhook.status.clone();
    let deliveries = &context.deliveries;
    if let Some(wait) = deliveries.waiting(&webhook) {
        // Backing off: nothing is sent, and status says why (the last
        // report), so not even the objects are read again.
        return Ok(Action::requeue(wait));
    }
    let mut status = recorded.clone().unwrap_or_default();
    status.delivered = deliveries.delivered_so_far(&webhook, status.delivered);
    // From its creation on: what a controller that was down meanwhile
    // learns late is still sent.
    let since = *status
        .since
        .get_or_insert(context.created_at(webhook.as_ref()));
    let organizations = context.index.organizations().state();
    let entitlements = context.index.entitlements().state();
    let mut outboxes = outboxes(&context, &webhook, since, &organizations, &entitlements);
    status.backlog = backlog(&outboxes);

    let report = |status: LifecycleWebhookStatus, verdict: Verdict| {
        let api = Api::<LifecycleWebhook>::all(context.client.clone());
        let generation = webhook.metadata.generation;
        let mut status = status;
        status.observed_generation = generation;
        status.conditions = conditions(
            &status.conditions,
            &verdict,
            &[],
            generation,
            context.clock.now(),
        );
        deliveries.reported(&webhook, status.delivered);
        let name = name.clone();
        let recorded = recorded.clone();
        async move { status::apply_status(&api, &name, recorded.as_ref(), &status).await }
    };

    if webhook.spec.suspend {
        let message = format!("spec.suspend is true: {}", waiting(status.backlog));
        report(status, Verdict::not_ready("Suspended", message)).await?;
        return Ok(Action::await_change());
    }
    if status.backlog == 0 {
        let message = format!("{} delivered; none waits", events(status.delivered));
        report(status, Verdict::ready("Delivered", message)).await?;
        return Ok(Action::await_change());
    }
    let key = match signing_key(&context, &webhook).await? {
        Ok(key) => key,
        Err(missing) => {
            let wait = deliveries.failed(&webhook);
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            report(status, Verdict::not_ready("SecretNotFound", missing)).await?;
            return Ok(Action::requeue(wait));
        }
    };
    let http = match deliveries.client(&webhook) {
        Ok(http) => http,
        Err(message) => {
            report(status, Verdict::stalled("InvalidCABundle", message)).await?;
            return Ok(Action::await_change());
        }
    };

    let turn_ends = Instant::now() + DELIVERY_TURN;
    let mut failure = None;
    let mut receiver_down = false;
    for outbox in &mut outboxes {
        let mut newly_delivered: i64 = 0;
        for event in &outbox.events {
            if Instant::now() >= turn_ends {
                break;
            }
            let body = cloud_event(&outbox.about, &outbox.details, event);
            let sent = send(&http, &webhook, &key, &body).await;
            context.metrics.webhook_request(&name, sent.is_ok());
            match sent {
                Ok(()) => {
                    outbox.delivered.insert(event.id.clone());
                    deliveries.received(&name, outbox);
                    newly_delivered += 1;
                    status.delivered = status.delivered.saturating_add(1);
                    status.last_delivery = Some(Delivery {
                        at: context.clock.now(),
                        id: event.id.clone(),
                        type_: event.type_.clone(),
                        object: outbox.about.describe(),
                    });
                }
                Err(refused) => {
                    receiver_down = refused.receiver_down;
                    failure = Some(DeliveryFailure {
                        at: context.clock.now(),
                        id: event.id.clone(),
                        message: refused.message,
                    });
                    // Later events of this object wait: in order per object.
                    break;
                }
            }
        }
        if newly_delivered > 0 {
            record(&context, &name, outbox).await?;
        }
        status.backlog -= newly_delivered;
        if receiver_down || Instant::now() >= turn_ends {
            break;
        }
    }

    match failure {
        Some(failure) => {
            let wait = deliveries.failed(&webhook);
            warn!(webhook = %name, id = failure.id, message = failure.message, retry_in = ?wait, "webhook delivery failed");
            let message = format!(
                "delivering {} failed: {}; {}, retried with backoff",
                failure.id,
                failure.message,
                waiting(status.backlog)
            );
            status.consecutive_failures = status.consecutive_failures.saturating_add(1);
            status.last_failure = Some(failure);
            report(status, Verdict::not_ready("DeliveryFailed", message)).await?;
            Ok(Action::requeue(wait))
        }
        None => {
            deliveries.succeeded(&name);
            status.consecutive_failures = 0;
            let backlog = status.backlog;
            if backlog == 0 {
                info!(webhook = %name, delivered = status.delivered, "webhook backlog delivered");
                let message = format!("{} delivered; none waits", events(status.delivered));
                report(status, Verdict::ready("Delivered", message)).await?;
                Ok(Action::await_change())
            } else {
                let message = format!("delivering: {}", waiting(backlog));
                report(status, Verdict::reconciling("Delivering", message)).await?;
                Ok(Action::requeue(Duration::ZERO))
            }
        }
    }
}

/// `1 event`, `3 events`.
fn events(count: i64) -> String {
    match count {
        1 => "1 event".into(),
        n => format!("{n} events"),
    }
}

/// `1 event waits`, `3 events wait`.
fn waiting(count: i64) -> String {
    match count {
        1 => "1 event waits".into(),
        n => format!("{n} events wait"),
    }
}

fn backlog(outboxes: &[Outbox]) -> i64 {
    let events: usize = outboxes.iter().map(|o| o.events.len()).sum();
    i64::try_from(events).unwrap_or(i64::MAX)
}

/// Every selected object's events not yet delivered to `webhook`.
fn outboxes<'a>(
    context: &Context,
    webhook: &LifecycleWebhook,
    since: chrono::DateTime<chrono::Utc>,
    organizations: &'a [Arc<Organization>],
    entitlements: &'a [Arc<Entitlement>],
) -> Vec<Outbox<'a>> {
    let name = webhook.name_any();
    let annotation = delivered_annotation(&name);
    let mut received = (context.deliveries.received.lock()).unwrap_or_else(|p| p.into_inner());
    let mut outbox = |about: About,
                      history: &'a [HistoryEntry],
                      annotations: &BTreeMap<String, String>,
                      details: &dyn Fn() -> Details| {
        let mut delivered = parse_delivered(annotations.get(&annotation).map(String::as_str));
        let key = (name.clone(), about.uid.clone());
        if let Some(ours) = received.get(&key) {
            if ours.is_subset(&delivered) {
                // The cache shows what this process recorded.
                received.remove(&key);
            } else {
                delivered.extend(ours.iter().cloned());
            }
        }
        let events = pending(&webhook.spec, &about, history, &delivered, since);
        (!events.is_empty()).then(|| Outbox {
            about,
            details: details(),
            history,
            delivered,
            events,
        })
    };
    let mut outboxes = Vec::new();
    for organization in organizations {
        if let Some(status) = &organization.status {
            outboxes.extend(outbox(
                About::organization(organization),
                &status.history,
                organization.annotations(),
                &|| organization_details(organization),
            ));
        }
    }
    for entitlement in entitlements {
        if let Some(status) = &entitlement.status {
            outboxes.extend(outbox(
                About::entitlement(entitlement),
                &status.history,
                entitlement.annotations(),
                &|| entitlement_details(entitlement),
            ));
        }
    }
    outboxes
}

/// Records what `outbox`'s object received in its annotation; an object
/// deleted meanwhile has nothing left to record.
async fn record(context: &Context, webhook: &str, outbox: &Outbox<'_>) -> Result<()> {
    let about = &outbox.about;
    let value = delivered_value(&about.uid, outbox.history, &outbox.delivered);
    let patch = serde_json::json!({"metadata": {
        "annotations": {delivered_annotation(webhook): value},
        "uid": about.uid,
    }});
    let params = PatchParams::default();
    let written = match &about.namespace {
        Some(namespace) => Api::<Entitlement>::namespaced(context.client.clone(), namespace)
            .patch(&about.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
        None => Api::<Organization>::all(context.client.clone())
            .patch(&about.name, &params, &Patch::Merge(&patch))
            .await
            .map(|_| ()),
    };
    match written {
        // Gone (404), or recreated under the same name (409: uid differs).
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {
            context.deliveries.forget(webhook, &about.uid);
            Ok(())
        }
        written => Ok(written?),
    }
}

/// The HMAC key, or why there is none.
async fn signing_key(
    context: &Context,
    webhook: &LifecycleWebhook,
) -> Result<std::result::Result<Vec<u8>, String>> {
    let reference = &webhook.spec.secret_ref;
    let key = reference.key.as_deref().unwrap_or("key");
    let secrets = Api::<Secret>::namespaced(context.client.clone(), &reference.namespace);
    let secret = secrets.get_opt(&reference.name).await?;
    let described = format!(
        "spec.secretRef names Secret {}/{}",
        reference.namespace, reference.name
    );
    Ok(match secret {
        None => Err(format!("{described}, which does not exist")),
        Some(secret) => match secret.data.and_then(|mut data| data.remove(key)) {
            Some(value) if !value.0.is_empty() => Ok(value.0),
            _ => Err(format!("{described}, which has no key {key:?} in data")),
        },
    })
}

impl Deliveries {
    /// The client for `webhook`: the shared one, or one that also trusts
    /// its caBundle; Err: why the bundle cannot be used.
    fn client(&self, webhook: &LifecycleWebhook) -> std::result::Result<reqwest::Client, String> {
        let Some(bundle) = &webhook.spec.ca_bundle else {
            return Ok(self.http.clone());
        };
        let mut trusting = self.trusting.lock().unwrap_or_else(|p| p.into_inner());
        let name = webhook.name_any();
        if let Some((built_for, client)) = trusting.get(&name)
            && built_for == bundle
        {
            return Ok(client.clone());
        }
        let certificates = reqwest::Certificate::from_pem_bundle(bundle.as_bytes())
            .ok()
            .filter(|certificates| !certificates.is_empty())
            .ok_or("spec.caBundle holds no PEM certificate (-----BEGIN CERTIFICATE-----)")?;
        let client = (http_client().tls_certs_merge(certificates).build())
            .map_err(|error| format!("spec.caBundle cannot be used: {error}"))?;
        trusting.insert(name, (bundle.clone(), client.clone()));
        Ok(client)
    }

    /// How long `webhook` still waits out its backoff, if it does (a spec
    /// changed since the failures tries again at once).
    fn waiting(&self, webhook: &LifecycleWebhook) -> Option<Duration> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let failed = failing.get(&webhook.name_any())?;
        if failed.generation != webhook.metadata.generation {
            return None;
        }
        failed.not_before.checked_duration_since(Instant::now())
    }

    /// Counts a failed attempt; returns how long to wait before the next.
    fn failed(&self, webhook: &LifecycleWebhook) -> Duration {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let failed = failing.entry(webhook.name_any()).or_insert(Failing {
            failures: 0,
            not_before: Instant::now(),
            generation: webhook.metadata.generation,
        });
        failed.failures = failed.failures.saturating_add(1);
        failed.generation = webhook.metadata.generation;
        let wait = backoff(failed.failures);
        failed.not_before = Instant::now() + wait;
        wait
    }

    fn succeeded(&self, webhook: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.remove(webhook);
    }

    /// Notes what `outbox`'s object received, the moment the receiver
    /// answered: a failed annotation write must not send it again. Only ids
    /// still in the history are kept.
    fn received(&self, webhook: &str, outbox: &Outbox) {
        let about = &outbox.about;
        let value = delivered_value(&about.uid, outbox.history, &outbox.delivered);
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        received.insert(
            (webhook.to_string(), about.uid.clone()),
            parse_delivered(Some(&value)),
        );
    }

    fn forget(&self, webhook: &str, uid: &str) {
        let mut received = self.received.lock().unwrap_or_else(|p| p.into_inner());
        received.remove(&(webhook.to_string(), uid.to_string()));
    }

    /// The `delivered` count to report: the larger of status's and the one
    /// this process last reported.
    fn delivered_so_far(&self, webhook: &LifecycleWebhook, in_status: i64) -> i64 {
        let delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        let uid = webhook.metadata.uid.clone().unwrap_or_default();
        delivered
            .get(&uid)
            .map_or(in_status, |d| (*d).max(in_status))
    }

    fn reported(&self, webhook: &LifecycleWebhook, count: i64) {
        let mut delivered = self.delivered.lock().unwrap_or_else(|p| p.into_inner());
        let uid = webhook.metadata.uid.clone().unwrap_or_default();
        delivered.insert(uid, count);
    }
}

/// POSTs one event; Err: why it was not received.
async fn send(
    http: &reqwest::Client,
    webhook: &LifecycleWebhook,
    key: &[u8],
    event: &serde_json::Value,
) -> std::result::Result<(), Refused> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let timeout =
        Duration::from_secs(webhook.spec.timeout_seconds.unwrap_or(10).clamp(1, 60) as u64);
    let sent = http
        .post(&webhook.spec.url)
        .timeout(timeout)
        .header(
            "Content-Type",
            "application/cloudevents+json; charset=utf-8",
        )
        .header(SIGNATURE_HEADER, signature(key, &body))
        .body(body)
        .send()
        .await;
    let down = |message| Refused {
        message,
        receiver_down: true,
    };
    match sent {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(mut response) => {
            let code = response.status();
            // Only the start of the answer: it goes into status.
            let start = response.chunk().await.ok().flatten().unwrap_or_default();
            let answer: String = String::from_utf8_lossy(&start).chars().take(200).collect();
            let mut message = format!("the receiver answered {code}: {answer}");
            if let Some(location) = response.headers().get("location") {
                let location = location.to_str().unwrap_or_default();
                message.push_str(&format!(" (redirected to {location}: set spec.url to it)"));
            }
            // A 4xx refuses this event; anything else says the receiver
            // cannot take any now (408 and 429 too).
            let refuses_this_event = code.is_client_error()
                && code != reqwest::StatusCode::REQUEST_TIMEOUT
                && code != reqwest::StatusCode::TOO_MANY_REQUESTS;
            Err(Refused {
                message,
                receiver_down: !refuses_this_event,
            })
        }
        Err(error) if error.is_timeout() => {
            Err(down(format!("no answer within {}s", timeout.as_secs())))
        }
        Err(error) => Err(down(format!("{error}: {}", source_chain(&error)))),
    }
}

/// The causes of an HTTP error, which reqwest keeps out of its message.
fn source_chain(error: &dyn std::error::Error) -> String {
    let mut causes = Vec::new();
    let mut source = error.source();
    while let Some(cause) = source {
        causes.push(cause.to_string());
        source = cause.source();
    }
    causes.join(": ")
}
