//! Organization: a tenant, the boundary of its data, offboarded declaratively.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use super::common::{HistoryEntry, OffboardingReason};

/// A tenant. Owns one namespace (default `org-<name>`) that holds its data; its
/// lifecycle (Active, Disabled, Archived) is declared here, and the controller
/// times retention, holds and the purge, leaving a tombstone in status.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "Organization",
    shortname = "org",
    category = "tenure",
    status = "OrganizationStatus",
    doc = "A tenant: owns a namespace holding its data; its lifecycle is declared in spec and timed by tenure.",
    printcolumn(name = "Display", type_ = "string", json_path = ".spec.displayName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(name = "Active", type_ = "integer", json_path = ".status.entitlements.active"),
    printcolumn(name = "Purge-After", type_ = "string", json_path = ".status.purgeAfter"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = kube::core::Rule::new(
        "!has(self.spec.deletion) || self.spec.deletion.confirmName == self.metadata.name"
    ).message("spec.deletion.confirmName must equal metadata.name").field_path(".spec.deletion.confirmName")
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "self.lifecycle == 'Active' || has(self.offboarding)"
).message("spec.offboarding is required when spec.lifecycle is Disabled or Archived"))]
#[x_kube(validation = kube::core::Rule::new("has(self.namespace) || !has(oldSelf.namespace)")
    .message("spec.namespace is immutable once set: it cannot be removed"))]
pub struct OrganizationSpec {
    /// Human-readable name, e.g. the company's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Tax identifier (VAT, CNPJ, EIN, ...). Kept in the tombstone after the purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// The billing entity that contracts with this customer, e.g. BR or US.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub billing_entity: Option<String>,
    /// Identifiers of this customer in other systems, e.g. {stripe: cus_123}.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub external_ids: BTreeMap<String, String>,
    /// Who owns the account on the customer's side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<Owner>,
    /// The tenant namespace (default `org-<name>`); immutable once set. The
    /// controller creates it if missing and labels it `tenure.dev/organization`;
    /// it never adopts or deletes a namespace that lacks that label.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 63),
        regex(pattern = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
    )]
    #[x_kube(validation = kube::core::Rule::new("self == oldSelf").message("spec.namespace is immutable once set"))]
    pub namespace: Option<String>,
    /// Active (default); Disabled: access revoked, fully recoverable (payment
    /// dispute, billing grace expired); Archived: offboarded, nothing new is
    /// provisioned and data is kept for the retention period, then purged.
    #[serde(default)]
    pub lifecycle: OrganizationLifecycle,
    /// Why and when the organization was disabled or archived. Required when
    /// `lifecycle` is not Active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offboarding: Option<Offboarding>,
    /// Retention overrides for this organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention: Option<Retention>,
    /// A request for the hard delete (purge) of this organization's data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion: Option<DeletionRequest>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Owner {
    /// The account owner's e-mail address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// The lifecycle an organization is declared to be in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OrganizationLifecycle {
    #[default]
    Active,
    Disabled,
    Archived,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Offboarding {
    /// Why the organization is disabled or archived.
    pub reason: OffboardingReason,
    /// The ticket or case that records the decision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Free-form notes for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
    /// When the offboarding took effect; may be in the past (backdated). Default:
    /// when the controller first observes the change of `lifecycle`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub effective_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Never purge before this time, whatever the policy says. Legal holds are
    /// separate RetentionHold objects.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extend_until: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.skipRetention) || !self.skipRetention || has(self.approval)"
).message("spec.deletion.approval is required when spec.deletion.skipRetention is true"))]
pub struct DeletionRequest {
    /// Must equal `metadata.name`: a typed confirmation of the hard delete.
    pub confirm_name: String,
    /// Purge as soon as confirmed (after the final grace) instead of waiting for
    /// the retention period. Requires `approval`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skip_retention: Option<bool>,
    /// Who approved skipping retention, and where that is recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Approval {
    /// The person who approved.
    #[schemars(length(min = 1))]
    pub by: String,
    /// Where the approval is recorded (ticket, document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
}

/// Where an organization is in its lifecycle, as observed by the controller.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum OrganizationPhase {
    #[default]
    Active,
    Disabled,
    Archived,
    PurgeScheduled,
    Purging,
    Purged,
}

/// What the controller observed and decided for an organization.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrganizationStatus {
    /// Active, Disabled, Archived, PurgeScheduled, Purging or Purged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<OrganizationPhase>,
    /// The tenant namespace the controller manages for this organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` always; `Reconciling` or `Stalled` while they apply.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// When the organization was disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disabled_at: Option<DateTime<Utc>>,
    /// When the organization was archived.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub archived_at: Option<DateTime<Utc>>,
    /// When `spec.deletion` was first observed: the hard delete was confirmed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_confirmed_at: Option<DateTime<Utc>>,
    /// When the last RetentionHold on the organization was lifted: the final
    /// grace runs again in full from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_hold_lifted_at: Option<DateTime<Utc>>,
    /// Until when the customer portal still shows the organization.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub portal_visible_until: Option<DateTime<Utc>>,
    /// Until when the organization can be brought back (enabled or unarchived):
    /// when its purge starts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reactivation_deadline: Option<DateTime<Utc>>,
    /// The end of the retention period: nothing is purged before it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_after: Option<DateTime<Utc>>,
    /// When the purge runs: the latest of `purgeAfter`, the confirmation and the
    /// last hold lifted, plus `purge.finalGraceDays`, and never less than the
    /// final grace after it was first shown, so that every purge can be
    /// reviewed (`purgePlan`). A later date replaces it at once; an earlier one
    /// (a deliberate retention cut) never comes sooner than the change plus the
    /// longer of the old and the new final grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub final_purge_at: Option<DateTime<Utc>>,
    /// When a purge date was first shown in `finalPurgeAt`: the purge never
    /// runs sooner than a full final grace after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_announced_at: Option<DateTime<Utc>>,
    /// The entitlement in the tenant namespace whose locked retention (the
    /// minimum of a locked LifecyclePolicy) ends last, when that is after the
    /// organization's own retention: `purgeAfter` waits for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retention_locked_by: Option<RetentionLock>,
    /// When the API server accepted the purge's delete of the tenant namespace
    /// (which the purge marks with annotation `tenure.dev/purge` first).
    /// Purged and the tombstone are written only once a namespace deleted this
    /// way is gone: a namespace someone else deleted gets no tombstone
    /// (condition Stalled, reason NamespaceGone), and objects its deletion
    /// missed are deleted first (condition Reconciling, reason
    /// NamespaceRemnants: the namespace is created again and deleted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace_deleted_at: Option<DateTime<Utc>>,
    /// Every resolved policy value that times the organization, with where it
    /// came from (as on Entitlement).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub effective_policy: BTreeMap<String, crate::api::entitlement::EffectiveValue>,
    /// How many of the organization's entitlements are in each phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlements: Option<EntitlementCounts>,
    /// Names of succeeded DataExports, newest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exports: Vec<String>,
    /// Names of the RetentionHolds in force on this organization: on it, or on
    /// an entitlement in its namespace.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    /// What the purge will delete: the review a person reads during the final grace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purge_plan: Option<PurgePlan>,
    /// What is left after the purge. Written once and never changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tombstone: Option<Tombstone>,
    /// Lifecycle events, newest last, at most 50.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
    /// What happens next by itself, and when: an offboarding scheduled by
    /// `spec.offboarding.effectiveAt`, the purge's announcement, the purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<OrganizationNext>,
    /// The offboarding reminder last sent (`offboarding.effectiveAt` minus
    /// one of `notifications.offboardingReminderDays`), so that each is sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_offboarding_reminder_at: Option<DateTime<Utc>>,
    /// The purge reminder last sent (`finalPurgeAt` minus one of
    /// `notifications.purgeReminderDays`), so that each is sent once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_purge_reminder_at: Option<DateTime<Utc>>,
}

/// The organization's next transition.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
pub struct OrganizationNext {
    /// The phase it moves to.
    pub phase: OrganizationPhase,
    /// When, unless the facts change first.
    pub at: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementCounts {
    /// Entitlements in phase Active.
    pub active: i32,
    /// Entitlements in phase Trialing.
    #[serde(default)]
    pub trialing: i32,
    /// Entitlements in phase Suspended.
    pub suspended: i32,
    /// Entitlements in phase Expired.
    pub expired: i32,
    /// Entitlements in phase Cancelled.
    pub cancelled: i32,
    /// Entitlements in phase Purged.
    pub purged: i32,
}

/// A locked retention that keeps an organization's data longer than its own.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionLock {
    /// The entitlement, `<namespace>/<name>`.
    pub entitlement: String,
    /// The locked policy, `LifecyclePolicy/<name>`.
    pub policy: String,
    /// When its locked retention ends.
    pub until: DateTime<Utc>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct PurgePlan {
    /// Kind -> how many of the customer's objects of it the purge will
    /// delete; `ExportArtifact` counts the organization's DataExport ZIPs
    /// (files or S3 objects). Objects Kubernetes or tenure made in the
    /// namespace by themselves are counted in `system` instead.
    #[serde(default)]
    pub objects: BTreeMap<String, i64>,
    /// Kind -> how many objects of it the purge will delete that Kubernetes
    /// or tenure made in the tenant namespace by themselves, not the
    /// customer; no export contains them. They are the `kube-root-ca.crt`
    /// ConfigMap, the `default` ServiceAccount and a token Secret of it,
    /// tenure's `tenure-access-disabled` NetworkPolicy, the Endpoints and
    /// EndpointSlices Kubernetes maintains for Services, and what those own.
    /// Events are not counted.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system: BTreeMap<String, i64>,
    /// The namespaces the purge will delete.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Kinds tenure may not list (its RBAC, e.g. Secrets without the chart's
    /// `rbac.secrets`): deleted with the namespace all the same, but not
    /// counted in `objects`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub uncounted: Vec<String>,
}

/// What remains of an organization after its purge.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    /// The organization's name.
    pub name: String,
    /// Its display name at the purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Its tax identifier at the purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tax_id: Option<String>,
    /// When the Organization object was created.
    pub created_at: DateTime<Utc>,
    /// When it was offboarded (disabled or archived).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offboarded_at: Option<DateTime<Utc>>,
    /// The offboarding reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<OffboardingReason>,
    /// The offboarding ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// Whether a DataExport of the organization succeeded before the purge.
    pub export_provided: bool,
    /// When the purge completed.
    pub purged_at: DateTime<Utc>,
    /// Kind -> how many of the customer's objects of it the purge deleted;
    /// `Namespace` counts the tenant namespace, `ExportArtifact` the
    /// DataExport ZIPs it removed.
    #[serde(default)]
    pub deleted: BTreeMap<String, i64>,
    /// Kind -> how many objects of it the purge deleted that Kubernetes or
    /// tenure had made in the tenant namespace by themselves, not the
    /// customer (see `purgePlan.system`); not counted in `deleted`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub system: BTreeMap<String, i64>,
}

impl Organization {
    /// The namespace the organization owns, as its status records it: set
    /// only once tenure found it labelled for the organization (or created
    /// it). What isolation checks trust.
    pub fn owned_namespace(&self) -> Option<&str> {
        self.status.as_ref()?.namespace.as_deref()
    }

    /// The namespace the organization owns: the one status recorded, else
    /// `spec.namespace`, else `org-<name>`.
    pub fn tenant_namespace(&self) -> String {
        self.status
            .as_ref()
            .and_then(|s| s.namespace.clone())
            .or_else(|| self.spec.namespace.clone())
            .unwrap_or_else(|| format!("org-{}", self.metadata.name.as_deref().unwrap_or_default()))
    }
}
