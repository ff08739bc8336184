//! DataExport: hand a customer their data as a ZIP, before the purge.

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A request to export an organization's data as a ZIP: the Organization, its
/// entitlements and the objects of its namespace, as JSON and CSV.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "DataExport",
    namespaced,
    shortname = "dex",
    category = "tenure",
    status = "DataExportStatus",
    doc = "An export of an organization's data as a ZIP of JSON and CSV files.",
    printcolumn(
        name = "Organization",
        type_ = "string",
        json_path = ".spec.organization"
    ),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Size",
        type_ = "integer",
        json_path = ".status.artifact.sizeBytes"
    ),
    printcolumn(name = "Expires", type_ = "string", json_path = ".status.expiresAt"),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new(
    "!has(self.includeSecretValues) || !self.includeSecretValues || (has(self.includeSecrets) && self.includeSecrets)"
).message("spec.includeSecretValues requires spec.includeSecrets"))]
pub struct DataExportSpec {
    /// The Organization whose data is exported. A DataExport runs only in that
    /// organization's tenant namespace; anywhere else it fails (condition
    /// Stalled, reason WrongNamespace).
    #[schemars(length(min = 1))]
    pub organization: String,
    /// Which file formats the ZIP holds. Default: both.
    #[serde(default = "all_formats")]
    #[schemars(length(min = 1))]
    pub formats: Vec<ExportFormat>,
    /// Include Secrets (their keys only, unless `includeSecretValues`). Default: false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_secrets: Option<bool>,
    /// Include the values of Secrets as well as their keys. Requires `includeSecrets`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include_secret_values: Option<bool>,
}

fn all_formats() -> Vec<ExportFormat> {
    vec![ExportFormat::Json, ExportFormat::Csv]
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum ExportFormat {
    /// One JSON file per object.
    Json,
    /// One CSV file per kind.
    Csv,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum ExportPhase {
    #[default]
    Pending,
    Running,
    Succeeded,
    Failed,
}

/// What the controller observed and produced for an export.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct DataExportStatus {
    /// Pending, Running, Succeeded or Failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<ExportPhase>,
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` always; `Reconciling` or `Stalled` while they
    /// apply; `Incomplete` when kinds tenure may not read were left out (such
    /// an export does not count for `purge.requireExport`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many objects are in the ZIP: so far while Running, in all once done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects_exported: Option<i64>,
    /// The ZIP, once written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub artifact: Option<Artifact>,
    /// When the export finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_at: Option<DateTime<Utc>>,
    /// When the artifact is deleted. Only an export whose artifact still exists
    /// counts for `purge.requireExport`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Artifact {
    /// Where the ZIP is: `file://...` or `s3://...`.
    pub uri: String,
    /// The ZIP's SHA-256, hex.
    pub sha256: String,
    /// The ZIP's size in bytes.
    pub size_bytes: i64,
    /// How many files the ZIP holds.
    pub files: i64,
}
