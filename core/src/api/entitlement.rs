//! Entitlement: "organization X may use product Y", timed by policy.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{HistoryEntry, OffboardingReason};
use super::policy::PolicyRules;

/// Access of an organization (or of a standalone customer) to a product. Its
/// phase follows from the facts in spec (dates, payment failure, cancellation,
/// reactivation), the effective LifecyclePolicy and the clock.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "Entitlement",
    namespaced,
    shortname = "ent",
    category = "tenure",
    status = "EntitlementStatus",
    doc = "Access of an organization to a product, timed by its LifecyclePolicies.",
    printcolumn(name = "Code", type_ = "string", json_path = ".status.code"),
    printcolumn(name = "Class", type_ = "string", json_path = ".spec.class"),
    printcolumn(name = "Org", type_ = "string", json_path = ".spec.organization"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Next", type_ = "string", json_path = ".status.next.phase"),
    printcolumn(name = "At", type_ = "string", json_path = ".status.next.at"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.code) == has(oldSelf.code) && (!has(self.code) || self.code == oldSelf.code)"
).message("spec.code is immutable"))]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.startsAt) || !has(self.endsAt) || self.endsAt > self.startsAt"
).message("spec.endsAt must be after spec.startsAt"))]
#[x_kube(validation = kube::core::Rule::new(
    "has(self.organization) == has(oldSelf.organization) && (!has(self.organization) || self.organization == oldSelf.organization)"
).message("spec.organization is immutable: an entitlement cannot move to another organization"))]
pub struct EntitlementSpec {
    /// The Organization this entitlement belongs to; the entitlement must live
    /// in that organization's tenant namespace (elsewhere it stalls with reason
    /// WrongNamespace). Immutable. Absent: standalone (gift card, B2C,
    /// migration import), in any namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub organization: Option<String>,
    /// The EntitlementClass (plugin, environment, service, order, affiliate,
    /// education, or one of your own). Immutable.
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.class is immutable"))]
    #[schemars(length(min = 1, max = 253))]
    pub class: String,
    /// The product this entitlement grants, e.g. `grafana-enterprise`.
    #[schemars(length(min = 1, max = 253))]
    pub product: String,
    /// Pin the code, for migration imports (`<PREFIX>-<YYYY><MM><NNNN>`, month
    /// 01 to 12). The prefix must be the class's own `codePrefix`; the class
    /// never generates the code afterwards. Immutable. Absent: the controller
    /// assigns the next code of the class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Z]{2,5}-[0-9]{4}(0[1-9]|1[0-2])[0-9]{4}$"))]
    pub code: Option<String>,
    /// When access begins. Absent: at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    /// When access ends (then Expired for the expiry grace). Absent: perpetual.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// A trial: the entitlement is Trialing from its start until the trial
    /// ends (`startedAt` plus the policy's `trial.days`, shown as
    /// `status.deadlines.trialEndsAt`), Active once `convertedAt` is set,
    /// Expired at the trial's end if not (then cancelled with reason
    /// TrialNotConverted when `expiry.graceDays` run out; a conversion inside
    /// that grace revives it). Only an entitlement with `spec.trial` is ever
    /// on trial: a policy's `trial.days` gives the length of the trials, it
    /// never starts one. With `trial.days` 0 (the built-in default) there is
    /// no trial and `spec.trial` is ignored. Absent: no trial.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial: Option<Trial>,
    /// Set by the billing integration when a charge fails; removed when it is
    /// recovered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment: Option<Payment>,
    /// Present: cancel this entitlement (voluntarily, or recorded for non-payment).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancellation: Option<Cancellation>,
    /// A win-back: honoured only inside the reactivation window and when policy
    /// allows it; a refused request leaves the entitlement Cancelled with
    /// condition ReactivationRefused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivation: Option<Reactivation>,
    /// Entitlement-level policy overrides: the most specific level.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyRules>,
    /// Downstream objects this entitlement governs, besides those labelled
    /// `tenure.dev/entitlement=<name>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceBinding>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trial {
    /// When the trial began; it lasts the policy's `trial.days` from here.
    /// May be in the past. Absent: at `spec.startsAt`, or at creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<DateTime<Utc>>,
    /// Set by the billing integration when the customer pays: Active from
    /// then on. After the trial's end it revives the entitlement inside the
    /// expiry grace (as a renewal does); after the cancellation only
    /// `spec.reactivation` does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converted_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Payment {
    /// When the charge failed; the payment grace counts from here.
    pub failed_at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Cancellation {
    /// Why the entitlement is cancelled.
    pub reason: OffboardingReason,
    /// Free-form notes for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// When the cancellation takes effect; may be in the past. Default: when the
    /// controller first observes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reactivation {
    /// When the customer asked to come back.
    pub requested_at: DateTime<Utc>,
    /// The new order or payment behind the reactivation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceBinding {
    /// Objects in the entitlement's namespace matching this selector are bound
    /// to it, in addition to those labelled `tenure.dev/entitlement=<name>`.
    /// An object labelled for another entitlement is never bound by it. The
    /// selector must name at least one label an object has to carry
    /// (`matchLabels`, `In` or `Exists`): one that could match every object is
    /// refused (condition Stalled, reason InvalidSelector).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<LabelSelector>,
}

/// Where an entitlement is in its lifecycle.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum EntitlementPhase {
    /// Not started yet (`startsAt` in the future).
    #[default]
    Pending,
    /// On trial (`spec.trial`), not converted yet, until the trial ends.
    Trialing,
    Active,
    /// Payment failed (inside the payment grace), or the organization is Disabled.
    Suspended,
    /// Past `endsAt`, or past the end of a trial not converted, inside the
    /// expiry grace.
    Expired,
    /// Cancelled, or a grace ran out.
    Cancelled,
    /// Retention over; downstream data deleted.
    Purged,
}

/// What the controller observed and decided for an entitlement.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementStatus {
    /// `<PREFIX>-<YYYY><MM><NNNN>`, assigned once and never reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// Pending, Trialing, Active, Suspended, Expired, Cancelled or Purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<EntitlementPhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` always; `Reconciling` or `Stalled` while they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the current phase began.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase_since: Option<DateTime<Utc>>,
    /// The deadlines that apply now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deadlines: Option<Deadlines>,
    /// The next scheduled transition, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<NextTransition>,
    /// Every resolved policy value with where it came from.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effective_policy: BTreeMap<String, EffectiveValue>,
    /// The cancellation in force (phases Cancelled and Purged), or the last one a
    /// reactivation lifted. It is kept when its cause goes away later (a payment
    /// recovered after the grace ran out, an `endsAt` moved after the expiry
    /// grace): only `spec.reactivation` lifts it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<CancellationRecord>,
    /// When the last honoured reactivation took effect. What it lifted (the
    /// cancellation, a payment failure before it) stays lifted, also when
    /// `spec.reactivation` is removed later.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivated_at: Option<DateTime<Utc>>,
    /// Names of the RetentionHolds in force on the entitlement or its
    /// organization: nothing is purged while there is one.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// When the last hold was lifted: the purge waits a full
    /// `purge.finalGraceDays` from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hold_lifted_at: Option<DateTime<Utc>>,
    /// The renewal reminder last sent (`endsAt` minus one of
    /// `notifications.reminderDays`), so that each is sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_reminder_at: Option<DateTime<Utc>>,
    /// The trial reminder last sent (`deadlines.trialEndsAt` minus one of
    /// `notifications.trialReminderDays`), so that each is sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_trial_reminder_at: Option<DateTime<Utc>>,
    /// The purge reminder last sent (`deadlines.finalPurgeAt` minus one of
    /// `notifications.purgeReminderDays`), so that each is sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_purge_reminder_at: Option<DateTime<Utc>>,
    /// Counts of the downstream objects this entitlement governs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceCounts>,
    /// When a purge date was first shown in `deadlines.finalPurgeAt`: the
    /// purge never runs sooner than a full final grace after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_announced_at: Option<DateTime<Utc>>,
    /// From the purge's announcement on: what its teardown will delete, the
    /// review a person reads during the final grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_plan: Option<EntitlementPurgePlan>,
    /// Lifecycle events, newest last, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// What tenure keeps of an entitlement in its annotation `tenure.dev/facts`
/// (JSON): the facts it learned that spec does not say. A GitOps re-sync keeps
/// status and this annotation; a restore (the object re-created from its
/// manifest and metadata, without status) keeps the annotation, so both land
/// in the same phase with the same code.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementFacts {
    /// The code assigned.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    /// The cancellation as it took effect (or the last one a reactivation lifted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<CancellationRecord>,
    /// When the last honoured reactivation took effect.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivated_at: Option<DateTime<Utc>>,
    /// The end of the retention, as announced with the purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<DateTime<Utc>>,
    /// The purge date announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_purge_at: Option<DateTime<Utc>>,
    /// When a purge date was first announced.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_announced_at: Option<DateTime<Utc>>,
    /// When the last hold was lifted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hold_lifted_at: Option<DateTime<Utc>>,
    /// When the downstream data was purged: a purged entitlement stays purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purged_at: Option<DateTime<Utc>>,
}

impl EntitlementFacts {
    /// The facts kept in the entitlement's annotation, if any.
    pub fn of(entitlement: &Entitlement) -> Option<Self> {
        let annotations = entitlement.metadata.annotations.as_ref()?;
        serde_json::from_str(annotations.get(crate::api::FACTS_ANNOTATION)?).ok()
    }

    /// What of `status` a restore needs.
    pub fn remembered(status: &EntitlementStatus) -> Self {
        let deadlines = status.deadlines.clone().unwrap_or_default();
        Self {
            code: status.code.clone(),
            cancelled: status.cancelled.clone(),
            reactivated_at: status.reactivated_at,
            purge_after: deadlines.purge_after,
            final_purge_at: deadlines.final_purge_at,
            purge_announced_at: status.purge_announced_at,
            last_hold_lifted_at: status.last_hold_lifted_at,
            purged_at: (status.phase == Some(EntitlementPhase::Purged))
                .then_some(status.phase_since)
                .flatten(),
        }
    }

    /// The status a restored entitlement is decided from.
    pub fn restored(&self) -> EntitlementStatus {
        let deadlines = Deadlines {
            purge_after: self.purge_after,
            final_purge_at: self.final_purge_at,
            ..Deadlines::default()
        };
        EntitlementStatus {
            code: self.code.clone(),
            phase: self.purged_at.map(|_| EntitlementPhase::Purged),
            phase_since: self.purged_at,
            deadlines: (deadlines != Deadlines::default()).then_some(deadlines),
            cancelled: self.cancelled.clone(),
            reactivated_at: self.reactivated_at,
            purge_announced_at: self.purge_announced_at,
            last_hold_lifted_at: self.last_hold_lifted_at,
            ..EntitlementStatus::default()
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CancellationRecord {
    /// When the cancellation took effect.
    pub at: DateTime<Utc>,
    /// Why: the reason of `spec.cancellation` or of the organization's
    /// offboarding, `NonPayment` when the payment grace ran out, `NotRenewed` when
    /// the expiry grace ran out, `TrialNotConverted` when it ran out after a
    /// trial that was not converted.
    pub reason: String,
    /// What cancelled it.
    pub by: CancelledBy,
}

/// What cancelled an entitlement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum CancelledBy {
    /// `spec.cancellation`.
    Request,
    /// The payment grace ran out after `spec.payment.failedAt`.
    PaymentGrace,
    /// The expiry grace ran out after `spec.endsAt`, or after the end of a
    /// trial that was not converted.
    ExpiryGrace,
    /// The organization was archived. Lifted when it is unarchived.
    Organization,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deadlines {
    /// Trialing: the trial ends then (`spec.trial.startedAt` plus
    /// `trial.days`); Expired then unless `spec.trial.convertedAt` is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trial_ends_at: Option<DateTime<Utc>>,
    /// Suspended or Expired after a failed payment: cancelled at this time
    /// unless payment recovers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_cancel_at: Option<DateTime<Utc>>,
    /// Suspended or Expired with an end date, or after a trial not converted:
    /// cancelled at this time unless `endsAt` moves forward (or
    /// `spec.trial.convertedAt` is set). With both, the earlier one is `next`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expiry_grace_ends_at: Option<DateTime<Utc>>,
    /// Cancelled: the customer portal shows it until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_visible_until: Option<DateTime<Utc>>,
    /// Cancelled: a reactivation is honoured until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivation_deadline: Option<DateTime<Utc>>,
    /// Cancelled: the end of the data retention; nothing is purged before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<DateTime<Utc>>,
    /// Cancelled: when the purge deletes the downstream data, announced here
    /// at least `purge.finalGraceDays` ahead: `purgeAfter` (or the last hold
    /// lifted) plus the final grace. A later date replaces it at once; an
    /// earlier one (a retention cut) never comes sooner than a full final grace
    /// after the change. Absent while something blocks the purge (condition
    /// PurgeBlocked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_purge_at: Option<DateTime<Utc>>,
}

/// What an entitlement's purge will delete.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementPurgePlan {
    /// Kind -> how many bound objects of it the purge will delete.
    #[serde(default)]
    pub objects: BTreeMap<String, i64>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct NextTransition {
    /// The phase the entitlement moves to.
    pub phase: EntitlementPhase,
    /// When, unless the facts change first.
    pub at: DateTime<Utc>,
}

/// One resolved policy value and its source.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EffectiveValue {
    /// The value in force.
    #[schemars(schema_with = "any_value")]
    pub value: serde_json::Value,
    /// `default`, `LifecyclePolicy/<name>` or `Entitlement`: for a value a
    /// locked policy raised, that locked policy.
    pub from: String,
    /// Set when a locked LifecyclePolicy (a retention lock) raised the value:
    /// the lower value a more specific level asked for, and where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub raised_from: Option<RaisedFrom>,
}

/// The value a locked policy's minimum overruled.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RaisedFrom {
    /// The value asked for.
    #[schemars(schema_with = "any_value")]
    pub value: serde_json::Value,
    /// Where it was asked for: `default`, `LifecyclePolicy/<name>` or `Entitlement`.
    pub from: String,
}

fn any_value(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({ "x-kubernetes-preserve-unknown-fields": true })
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceCounts {
    /// Objects bound to this entitlement now.
    pub bound: i32,
    /// Bound workloads paused (scaled to 0 or suspended).
    pub paused: i32,
    /// Objects deprovisioned on cancellation.
    pub deprovisioned: i32,
    /// Objects deleted at purge.
    pub deleted: i32,
}

impl Entitlement {
    /// What tenure knows of the entitlement: its status, or, restored
    /// without status (from its manifest and metadata), the facts tenure kept
    /// in annotation `tenure.dev/facts`, so that it lands where it was.
    pub fn known_status(&self) -> Option<EntitlementStatus> {
        self.status
            .clone()
            .or_else(|| EntitlementFacts::of(self).map(|facts| facts.restored()))
    }

    /// `spec.resources.selector`: objects matching it are bound too.
    pub fn selector(&self) -> Option<&LabelSelector> {
        self.spec.resources.as_ref()?.selector.as_ref()
    }
}
