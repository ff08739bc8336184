//! LifecycleWebhook: where tenure sends the lifecycle as it happens, for the
//! systems outside the cluster (billing, CRM, the customer's mail).

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Sends every lifecycle event of the Organizations and Entitlements it
/// selects (each `status.history` entry, reminders and the final
/// confirmation included) to a URL as a CloudEvents 1.0 JSON request, signed
/// with an HMAC-SHA256 key: at least once, in order per object, retried with
/// exponential backoff, across controller restarts.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "LifecycleWebhook",
    shortname = "lwh",
    category = "tenure",
    status = "LifecycleWebhookStatus",
    doc = "Sends the lifecycle events it selects to a URL as signed CloudEvents, at least once and in order per object.",
    printcolumn(name = "URL", type_ = "string", json_path = ".spec.url"),
    printcolumn(name = "Backlog", type_ = "integer", json_path = ".status.backlog"),
    printcolumn(
        name = "Last-Delivery",
        type_ = "string",
        json_path = ".status.lastDelivery.at"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    ),
    validation = kube::core::Rule::new("self.metadata.name.size() <= 63")
        .message("metadata.name: a LifecycleWebhook's name is at most 63 characters, as it names the annotation recording what was delivered")
)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleWebhookSpec {
    /// Where the events are POSTed: an `https://` or `http://` URL. Any
    /// 2xx answer is a delivery; anything else, or no answer within
    /// `timeoutSeconds`, is retried. Redirects are not followed. A 4xx
    /// (but 408 and 429) holds up only that object's events; anything else
    /// holds up every object until the retry.
    #[schemars(regex(pattern = r"^https?://[^\s/]+.*$"), length(max = 2048))]
    pub url: String,
    /// The Secret holding the HMAC-SHA256 key that signs every request
    /// (header `X-Tenure-Signature: sha256=<hex>` over the body).
    pub secret_ref: SecretKeyRef,
    /// Which events, by CloudEvents type (`dev.tenure.entitlement.cancelled`),
    /// a prefix of one ending in `*` (`dev.tenure.organization.*`), or the
    /// history's event name (`Cancelled`, `PurgeReminder`). Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub events: Vec<String>,
    /// Only the events of entitlements of these classes. Empty: every
    /// class. An organization's own events are not filtered by class.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    pub classes: Vec<String>,
    /// Only the events of these organizations and of the entitlements that
    /// name them. Empty: all.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 1024))]
    pub organizations: Vec<String>,
    /// CA certificates to trust for an `https://` URL besides the system's
    /// roots (an internal CA, a self-signed receiver): PEM text, one or
    /// more `-----BEGIN CERTIFICATE-----` blocks (not base64-encoded, unlike
    /// an admission webhook's caBundle). One that holds no certificate
    /// stalls the webhook with reason InvalidCABundle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// Seconds to wait for an answer before the request counts as failed
    /// (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 60))]
    pub timeout_seconds: Option<i32>,
    /// Stops deliveries while true; events keep accumulating in the backlog
    /// and are delivered once it is false again.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspend: bool,
}

/// A key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's namespace.
    #[schemars(length(min = 1, max = 63))]
    pub namespace: String,
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key of `data` holding the HMAC key (default `key`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub key: Option<String>,
}

/// What the controller observed of a webhook.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecycleWebhookStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` (False with reason `DeliveryFailed`,
    /// `SecretNotFound` or `Suspended` while events wait), `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Events from this instant on are delivered (the controller's clock
    /// when it first saw the webhook): a new webhook does not replay the
    /// past.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<DateTime<Utc>>,
    /// Events selected and not delivered yet.
    #[serde(default)]
    pub backlog: i64,
    /// Events delivered since the webhook was created.
    #[serde(default)]
    pub delivered: i64,
    /// The last event delivered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_delivery: Option<Delivery>,
    /// The last attempt that failed; it stays after later successes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failure: Option<DeliveryFailure>,
    /// Failed attempts in a row; 0 once one succeeds.
    #[serde(default)]
    pub consecutive_failures: i32,
}

/// One delivered event.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// When the receiver answered (the controller's clock).
    pub at: DateTime<Utc>,
    /// The event's CloudEvents `id`.
    pub id: String,
    /// The event's CloudEvents `type`.
    #[serde(rename = "type")]
    pub type_: String,
    /// The object it is about, e.g. `Entitlement/org-acme/grafana`.
    pub object: String,
}

/// One failed attempt.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryFailure {
    /// When it failed (the controller's clock).
    pub at: DateTime<Utc>,
    /// The event that was being delivered.
    pub id: String,
    /// What went wrong: the HTTP status and the start of the answer, or the
    /// connection error.
    pub message: String,
}
