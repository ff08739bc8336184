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

/// A reconcile delivers for at most this long, then reports and goes on at
/// once: a long backlog shows progress in status.
const DELIVERY_TURN: Duration = Duration::from_secs(30);

/// What deliveries share across reconciles.
pub struct Deliveries {
    http: reqwest::Client,
    /// Per webhook with a caBundle: the bundle, and a client that trusts it.
    trusting: Mutex<HashMap<String, (String, reqwest::Client)>>,
    /// The ids this process recorded as delivered, per webhook and object:
    /// the cache may not show its own annotation writes yet, and must not
    /// make it send them again.
    recorded: Mutex<HashMap<(String, String), HashSet<String>>>,
    /// Per webhook: failed attempts in a row, and no attempt before then.
    failing: Mutex<HashMap<String, (u32, Instant)>>,
}

fn http_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().user_agent(concat!("tenure/", env!("CARGO_PKG_VERSION")))
}

impl Default for Deliveries {
    fn default() -> Self {
        Self {
            http: http_client().build().expect("an HTTP client builds"),
            trusting: Mutex::default(),
            recorded: Mutex::default(),
            failing: Mutex::default(),
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

async fn reconcile(webhook: Arc<LifecycleWebhook>, context: Arc<Context>) -> Result<Action> {
    if webhook.metadata.deletion_timestamp.is_some() {
        return Ok(Action::await_change());
    }
    let name = webhook.name_any();
    let now = context.clock.now();
    let recorded = webhook.status.clone();
    let mut status = recorded.clone().unwrap_or_default();
    let since = *status.since.get_or_insert(now);
    let organizations = context.index.organizations().state();
    let entitlements = context.index.entitlements().state();
    let mut outboxes = outboxes(&context, &webhook, since, &organizations, &entitlements);
    status.backlog = backlog(&outboxes);
    let deliveries = &context.deliveries;

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
    if let Some(wait) = deliveries.waiting(&name) {
        report(status, waiting_verdict(&webhook, &recorded)).await?;
        return Ok(Action::requeue(wait));
    }
    let key = match signing_key(&context, &webhook).await? {
        Ok(key) => key,
        Err(missing) => {
            let wait = deliveries.failed(&name);
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
    for outbox in &mut outboxes {
        let mut newly_delivered: i64 = 0;
        for event in &outbox.events {
            let body = cloud_event(&outbox.about, &outbox.details, event);
            let sent = send(&http, &webhook, &key, &body).await;
            context.metrics.webhook_request(&name, sent.is_ok());
            match sent {
                Ok(()) => {
                    outbox.delivered.insert(event.id.clone());
                    newly_delivered += 1;
                    status.delivered = status.delivered.saturating_add(1);
                    status.last_delivery = Some(Delivery {
                        at: context.clock.now(),
                        id: event.id.clone(),
                        type_: event.type_.clone(),
                        object: outbox.about.describe(),
                    });
                }
                Err(message) => {
                    failure = Some(DeliveryFailure {
                        at: context.clock.now(),
                        id: event.id.clone(),
                        message,
                    });
                    break;
                }
            }
        }
        if newly_delivered > 0 {
            record(&context, &name, outbox).await?;
        }
        status.backlog -= newly_delivered;
        if failure.is_some() || Instant::now() >= turn_ends {
            break;
        }
    }

    match failure {
        Some(failure) => {
            let wait = deliveries.failed(&name);
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

/// Ready=False while it waits out a backoff, saying why as the last
/// report did.
fn waiting_verdict(
    webhook: &LifecycleWebhook,
    recorded: &Option<LifecycleWebhookStatus>,
) -> Verdict {
    let ready = recorded
        .iter()
        .flat_map(|s| &s.conditions)
        .find(|c| c.type_ == crate::lifecycle::conditions::READY);
    match ready {
        Some(ready) if ready.status == "False" => {
            Verdict::not_ready(ready.reason.clone(), ready.message.clone())
        }
        _ => Verdict::reconciling(
            "Delivering",
            format!("events wait to be delivered to {}", webhook.spec.url),
        ),
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
    let mut recorded = (context.deliveries.recorded.lock()).unwrap_or_else(|p| p.into_inner());
    let mut outbox = |about: About,
                      history: &'a [HistoryEntry],
                      annotations: &BTreeMap<String, String>,
                      details: &dyn Fn() -> Details| {
        let mut delivered = parse_delivered(annotations.get(&annotation).map(String::as_str));
        let key = (name.clone(), about.describe());
        if let Some(ours) = recorded.get(&key) {
            if ours.is_subset(&delivered) {
                // The cache shows what this process wrote: no need to keep it.
                recorded.remove(&key);
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

/// Records what `outbox`'s object delivered in its annotation; an object
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
        Ok(()) => {}
        // Gone (404), or recreated under the same name (409: uid differs).
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => {}
        Err(error) => return Err(error.into()),
    }
    let mut recorded = context
        .deliveries
        .recorded
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    recorded.insert(
        (webhook.to_string(), about.describe()),
        outbox.delivered.clone(),
    );
    Ok(())
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

    /// How long `webhook` still waits out its backoff, if it does.
    fn waiting(&self, webhook: &str) -> Option<Duration> {
        let failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let (_, not_before) = failing.get(webhook)?;
        not_before.checked_duration_since(Instant::now())
    }

    /// Counts a failed attempt; returns how long to wait before the next.
    fn failed(&self, webhook: &str) -> Duration {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        let (failures, not_before) = failing
            .entry(webhook.to_string())
            .or_insert((0, Instant::now()));
        *failures = failures.saturating_add(1);
        let wait = backoff(*failures);
        *not_before = Instant::now() + wait;
        wait
    }

    fn succeeded(&self, webhook: &str) {
        let mut failing = self.failing.lock().unwrap_or_else(|p| p.into_inner());
        failing.remove(webhook);
    }
}

/// POSTs one event; Err: why it was not received.
async fn send(
    http: &reqwest::Client,
    webhook: &LifecycleWebhook,
    key: &[u8],
    event: &serde_json::Value,
) -> std::result::Result<(), String> {
    let body = serde_json::to_vec(event).unwrap_or_default();
    let timeout = Duration::from_secs(webhook.spec.timeout_seconds.unwrap_or(10).max(1) as u64);
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
    match sent {
        Ok(response) if response.status().is_success() => Ok(()),
        Ok(response) => {
            let code = response.status();
            let answer = response.text().await.unwrap_or_default();
            let answer: String = answer.chars().take(200).collect();
            Err(format!("the receiver answered {code}: {answer}"))
        }
        Err(error) if error.is_timeout() => Err(format!("no answer within {}s", timeout.as_secs())),
        Err(error) => Err(format!("{error}: {}", source_chain(&error))),
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
