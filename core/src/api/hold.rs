//! RetentionHold: a legal hold or disputed offboarding that freezes deletion.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// Freezes deletion of an organization or an entitlement: while it is in force,
/// nothing it covers is purged. Holds add up; lifting the last one restarts the
/// final purge grace in full.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "RetentionHold",
    shortname = "hold",
    category = "tenure",
    status = "RetentionHoldStatus",
    doc = "A legal hold or disputed offboarding: nothing it covers is purged while it is in force.",
    printcolumn(
        name = "Organization",
        type_ = "string",
        json_path = ".spec.organization"
    ),
    printcolumn(
        name = "Entitlement",
        type_ = "string",
        json_path = ".spec.entitlement.name"
    ),
    printcolumn(name = "Reason", type_ = "string", json_path = ".spec.reason"),
    printcolumn(name = "Until", type_ = "string", json_path = ".spec.until"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("has(self.organization) != has(self.entitlement)")
    .message("a RetentionHold names exactly one target: spec.organization or spec.entitlement"))]
pub struct RetentionHoldSpec {
    /// The Organization held: the organization, every object in its tenant
    /// namespace, and every entitlement that names it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub organization: Option<String>,
    /// The Entitlement held: it and the objects it binds. It also blocks the
    /// purge of the organization whose namespace holds it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement: Option<EntitlementRef>,
    /// Why deletion is frozen, e.g. `litigation`, `disputed offboarding`.
    #[schemars(length(min = 1))]
    pub reason: String,
    /// Who approved the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved_by: Option<String>,
    /// The ticket or case behind the hold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// The hold lapses by itself at this time. Absent: until the object is deleted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementRef {
    /// The Entitlement's namespace.
    #[schemars(length(min = 1))]
    pub namespace: String,
    /// The Entitlement's name.
    #[schemars(length(min = 1))]
    pub name: String,
}

/// What the controller observed of a hold.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct RetentionHoldStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// What this hold protects now, e.g. `Organization/acme`,
    /// `Namespace/org-acme` (every object in it), `Entitlement/org-acme/seat`.
    /// Empty while the target does not exist (Ready=False, TargetNotFound); it
    /// is still protected the moment it appears.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub covers: Vec<String>,
}
