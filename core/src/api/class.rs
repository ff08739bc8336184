//! EntitlementClass: a kind of entitlement, its code prefix and what happens to
//! the objects it governs.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A class of entitlements (plugin, environment, service, ...): the prefix of
/// their codes and what happens to the downstream objects they govern.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[kube(
    group = "tenure.dev",
    version = "v1alpha1",
    kind = "EntitlementClass",
    shortname = "entclass",
    category = "tenure",
    status = "EntitlementClassStatus",
    doc = "A class of entitlements: its code prefix and what happens to the objects it governs.",
    printcolumn(name = "Prefix", type_ = "string", json_path = ".spec.codePrefix"),
    printcolumn(
        name = "Description",
        type_ = "string",
        json_path = ".spec.description"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementClassSpec {
    /// The prefix of this class's entitlement codes: 2 to 5 upper-case letters,
    /// unique among classes (a class reusing another's prefix stalls with
    /// reason PrefixInUse, and hands out no codes).
    #[schemars(regex(pattern = r"^[A-Z]{2,5}$"))]
    pub code_prefix: String,
    /// What this class is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// The kinds of objects an entitlement of this class may govern, and what
    /// happens to them on suspension, cancellation and purge. Namespaced kinds
    /// only, and none of tenure's own: the API server refuses the ones it knows
    /// to be cluster-scoped, and a class naming another (found by discovery)
    /// stalls, with its entitlements, before any code is handed out. Each kind
    /// (group and kind, whatever the version) at most once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64))]
    #[x_kube(validation = kube::core::Rule::new(concat!(
        "self.all(x, self.exists_one(y, y.kind == x.kind",
        " && y.apiVersion.substring(0, y.apiVersion.lastIndexOf('/') + 1)",
        " == x.apiVersion.substring(0, x.apiVersion.lastIndexOf('/') + 1)))"
    )).message("spec.downstream lists a kind twice (same group and kind): each kind has exactly one set of rules"))]
    pub downstream: Vec<DownstreamKind>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = kube::core::Rule::new("!self.apiVersion.startsWith('tenure.dev/')")
    .message("spec.downstream cannot list tenure's own kinds (tenure.dev): they are not downstream objects"))]
#[x_kube(validation = kube::core::Rule::new(concat!(
    "!((self.apiVersion == 'v1' && self.kind in ['Namespace', 'Node', 'PersistentVolume', 'ComponentStatus'])",
    " || (self.apiVersion.startsWith('rbac.authorization.k8s.io/') && self.kind in ['ClusterRole', 'ClusterRoleBinding'])",
    " || (self.apiVersion.startsWith('storage.k8s.io/') && self.kind in ['StorageClass', 'CSIDriver', 'CSINode', 'VolumeAttachment', 'VolumeAttributesClass'])",
    " || (self.apiVersion.startsWith('apiextensions.k8s.io/') && self.kind == 'CustomResourceDefinition')",
    " || self.apiVersion.startsWith('admissionregistration.k8s.io/')",
    " || self.apiVersion.startsWith('apiregistration.k8s.io/')",
    " || self.apiVersion.startsWith('flowcontrol.apiserver.k8s.io/')",
    " || (self.apiVersion.startsWith('scheduling.k8s.io/') && self.kind == 'PriorityClass')",
    " || (self.apiVersion.startsWith('node.k8s.io/') && self.kind == 'RuntimeClass')",
    " || (self.apiVersion.startsWith('networking.k8s.io/') && self.kind in ['IngressClass', 'IPAddress', 'ServiceCIDR'])",
    " || (self.apiVersion.startsWith('certificates.k8s.io/') && self.kind in ['CertificateSigningRequest', 'ClusterTrustBundle']))"
)).message("spec.downstream lists a cluster-scoped kind: an entitlement governs only objects in its own namespace"))]
pub struct DownstreamKind {
    /// e.g. `apps/v1`.
    #[schemars(length(min = 1, max = 253))]
    pub api_version: String,
    /// e.g. `Deployment`.
    #[schemars(length(min = 1, max = 63))]
    pub kind: String,
    /// On suspension: Pause (scale to 0 / suspend, restored exactly on resume) or
    /// Retain (leave as is).
    #[serde(default)]
    pub on_suspend: SuspendAction,
    /// On cancellation: Pause, Delete or Retain.
    #[serde(default)]
    pub on_cancel: CancelAction,
    /// On purge: Delete or Retain.
    #[serde(default)]
    pub on_purge: PurgeAction,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum SuspendAction {
    Pause,
    #[default]
    Retain,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum CancelAction {
    Pause,
    Delete,
    #[default]
    Retain,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum PurgeAction {
    #[default]
    Delete,
    Retain,
}

/// What the controller observed of a class, and the codes it handed out.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntitlementClassStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// kstatus conditions: `Ready` always.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Month (`YYYYMM`) -> the last sequence number handed out in it.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub sequences: BTreeMap<String, i32>,
}
