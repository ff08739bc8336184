//! LifecyclePolicy: the rules that time an entitlement's and an organization's
//! lifecycle, at five levels (global, class, organization, product, entitlement).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Rules that set lifecycle timing. Every field is optional: an unset field is
/// inherited from the next less specific level (entitlement > product >
/// organization > class > global > built-in default), field by field.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyRules {
    /// Payment failures: how long an entitlement stays Suspended before it is cancelled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<PaymentRules>,
    /// Expiry: how long an entitlement past `endsAt` may still be renewed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry: Option<ExpiryRules>,
    /// What a cancellation leaves: portal access, data retention, reactivation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<CancellationRules>,
    /// What happens to provisioned resources on cancellation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provisioning: Option<ProvisioningRules>,
    /// Rules for a whole organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<OrganizationRules>,
    /// How a purge is guarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge: Option<PurgeRules>,
    /// Reminders: of a renewal, an offboarding, a purge, a trial's end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notifications: Option<NotificationRules>,
    /// Trials: how long the trial of an entitlement with `spec.trial` lasts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<TrialRules>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRules {
    /// Days an entitlement stays Suspended after `spec.payment.failedAt` before it is
    /// cancelled with reason NonPayment. Built-in default: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub grace_days: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryRules {
    /// Days an entitlement stays Expired after `spec.endsAt` before it is cancelled;
    /// moving `endsAt` forward inside them revives it. Built-in default: 30.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub grace_days: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancellationRules {
    /// Days after cancellation that the customer portal still shows the
    /// entitlement. Built-in default: 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub portal_visibility_days: Option<i64>,
    /// Days after cancellation that data is kept before it is purged.
    /// Built-in default: 365.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub data_retention_days: Option<i64>,
    /// Whether a cancelled entitlement may be reactivated (`spec.reactivation`).
    /// Built-in default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allow_reactivation: Option<bool>,
    /// Days after cancellation during which a reactivation is honoured.
    /// Built-in default: 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub reactivation_window_days: Option<i64>,
    /// Whether a cancellation is eligible for a refund (informational, for
    /// billing integrations). Built-in default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_eligible: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProvisioningRules {
    /// Whether cancelling an entitlement deprovisions what it governs, as its
    /// EntitlementClass's `onCancel` says. Built-in default: true.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprovision_on_cancel: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationRules {
    /// Days a Disabled organization is kept before it is purged. Built-in default: 90.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub disabled_retention_days: Option<i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgeRules {
    /// Whether a purge waits for `spec.deletion.confirmName` on the Organization.
    /// Built-in default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_confirmation: Option<bool>,
    /// Days between the purge becoming due (retention over, confirmed, last hold
    /// lifted) and the purge itself: the time a person has to review
    /// `status.purgePlan`. Built-in default: 7.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub final_grace_days: Option<i64>,
    /// Whether a purge waits until a DataExport of the organization succeeded.
    /// Built-in default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_export: Option<bool>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotificationRules {
    /// Days before `spec.endsAt` at which a renewal reminder Event is recorded.
    /// Built-in default: [30, 7, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), inner(range(min = 0, max = 36500)))]
    pub reminder_days: Option<Vec<i64>>,
    /// Days before an organization's scheduled `offboarding.effectiveAt` at
    /// which an `OffboardingReminder` Event is recorded. Built-in default:
    /// [30, 7, 3].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), inner(range(min = 0, max = 36500)))]
    pub offboarding_reminder_days: Option<Vec<i64>>,
    /// Days before a purge (`finalPurgeAt` of an organization or an
    /// entitlement) at which a `PurgeReminder` Event is recorded, so that
    /// the customer can still ask for an export. Built-in default: [7, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), inner(range(min = 0, max = 36500)))]
    pub purge_reminder_days: Option<Vec<i64>>,
    /// Days before the end of an entitlement's trial (`deadlines.trialEndsAt`)
    /// at which a `TrialReminder` Event is recorded. Built-in default: [7, 1].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 20), inner(range(min = 0, max = 36500)))]
    pub trial_reminder_days: Option<Vec<i64>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TrialRules {
    /// Days the trial of an entitlement with `spec.trial` lasts, from
    /// `spec.trial.startedAt`: the entitlement is Trialing until then, Active
    /// once `spec.trial.convertedAt` is set, Expired at the trial's end if not
    /// (then cancelled with reason TrialNotConverted when `expiry.graceDays`
    /// run out). It applies only to entitlements with `spec.trial`: setting
    /// it never puts an entitlement without one on trial. 0: no trial
    /// (`spec.trial` is ignored). Built-in default: 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 36500))]
    pub days: Option<i64>,
}

/// Which objects a LifecyclePolicy applies to. Empty: every object (global).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "[has(self.class), has(self.organization), has(self.product)].filter(x, x).size() <= 1"
).message("spec.scope may name at most one of class, organization and product"))]
pub struct PolicyScope {
    /// Entitlements of this EntitlementClass.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub class: Option<String>,
    /// This Organization and its entitlements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub organization: Option<String>,
    /// Entitlements of this product (`spec.product`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub product: Option<String>,
}

/// Lifecycle rules for a scope of objects. The most specific policy wins, field
/// by field: entitlement (spec.policy) > product > organization > class > global.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "LifecyclePolicy",
    shortname = "lcp",
    category = "tenure",
    status = "LifecyclePolicyStatus",
    doc = "Lifecycle rules (grace periods, retention, purge guards) for a scope: global, one class, one organization or one product.",
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.scope.class"),
    printcolumn(
        name = "Organization",
        type_ = "string",
        json_path = ".spec.scope.organization"
    ),
    printcolumn(name = "Product", type_ = "string", json_path = ".spec.scope.product"),
    printcolumn(name = "Locked", type_ = "boolean", json_path = ".spec.locked"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.locked) || !oldSelf.locked || (has(self.locked) && self.locked)"
).message("spec.locked cannot be unset once it is true (retention lock)"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.locked) || !oldSelf.locked || !has(oldSelf.cancellation) || !has(oldSelf.cancellation.dataRetentionDays) || (has(self.cancellation) && has(self.cancellation.dataRetentionDays) && self.cancellation.dataRetentionDays >= oldSelf.cancellation.dataRetentionDays)"
).message("spec.cancellation.dataRetentionDays of a locked policy can grow but never shrink"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.locked) || !oldSelf.locked || !has(oldSelf.organization) || !has(oldSelf.organization.disabledRetentionDays) || (has(self.organization) && has(self.organization.disabledRetentionDays) && self.organization.disabledRetentionDays >= oldSelf.organization.disabledRetentionDays)"
).message("spec.organization.disabledRetentionDays of a locked policy can grow but never shrink"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.locked) || !oldSelf.locked || !has(oldSelf.purge) || !has(oldSelf.purge.finalGraceDays) || (has(self.purge) && has(self.purge.finalGraceDays) && self.purge.finalGraceDays >= oldSelf.purge.finalGraceDays)"
).message("spec.purge.finalGraceDays of a locked policy can grow but never shrink"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(oldSelf.locked) || !oldSelf.locked || (has(self.scope) == has(oldSelf.scope) && (!has(self.scope) || self.scope == oldSelf.scope))"
).message("spec.scope of a locked policy is immutable: a retention lock keeps applying to what it scoped"))]
pub struct LifecyclePolicySpec {
    /// Which objects this policy applies to. Absent or empty: all of them (global).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<PolicyScope>,
    /// The rules; unset fields are inherited from less specific policies.
    #[serde(flatten)]
    pub rules: PolicyRules,
    /// Retention lock: its `cancellation.dataRetentionDays`,
    /// `organization.disabledRetentionDays` and `purge.finalGraceDays` are
    /// minimums for everything it scopes (a more specific level, an
    /// Entitlement's `spec.policy` included, may lengthen them, never shorten
    /// them; `status.effectivePolicy` shows where a lock raised a value). Once
    /// true it cannot be unset, its scope cannot change, those values can grow
    /// but never shrink, and the policy cannot be deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub locked: Option<bool>,
}

/// What the controller observed of a LifecyclePolicy.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct LifecyclePolicyStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, and `Conflicting` when another policy of the same level matches the
    /// same objects.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}
