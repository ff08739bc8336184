//! What of an object each watcher reacts to, as a fingerprint: a write that
//! leaves it as it was wakes nobody. Without this, every status write of
//! tenure's own (an entitlement's, an organization's counts, a class's code
//! sequences) re-queued every object related to it, and those writes fed
//! back into each other.

use k8s_openapi::api::core::v1::Namespace;

use super::index::fingerprint;
use super::status::WithStatus;
use crate::api::common::HistoryEntry;
use crate::api::{
    DataExport, Entitlement, EntitlementClass, FACTS_ANNOTATION, FINALIZER, Organization,
};
use crate::lifecycle::entitlement::organization_view;
use crate::lifecycle::export::ExportedOrganization;
use crate::lifecycle::webhook::DELIVERED_ANNOTATION_PREFIX;

/// For an object's own controller: everything but what tenure writes on it
/// itself (status, the facts annotation, what webhooks delivered, its
/// finalizer), so that a
/// reconcile's own writes do not wake it again (which also raced: woken by
/// its status write, the next reconcile could read the copy before its
/// finalizer patch and patch again, refused). A restore comes as a new
/// object, which always wakes it.
pub fn own<K: WithStatus>(object: &K) -> u64 {
    let meta = object.meta();
    let annotations: Vec<_> = meta
        .annotations
        .iter()
        .flatten()
        .filter(|(key, _)| {
            key.as_str() != FACTS_ANNOTATION && !key.starts_with(DELIVERED_ANNOTATION_PREFIX)
        })
        .collect();
    let finalizers: Vec<_> = meta
        .finalizers
        .iter()
        .flatten()
        .filter(|finalizer| finalizer.as_str() != FINALIZER)
        .collect();
    fingerprint((
        meta.generation,
        meta.deletion_timestamp.is_some(),
        &meta.labels,
        annotations,
        finalizers,
    ))
}

/// For its entitlements: the organization's standing and purge, and the
/// namespace it owns.
pub fn organization_standing(organization: &Organization) -> u64 {
    let view = format!("{:?}", organization_view(organization));
    fingerprint((
        view,
        organization.owned_namespace(),
        organization.tenant_namespace(),
    ))
}

/// For the webhooks: its history (what they deliver).
pub fn history<K: WithStatus>(object: &K) -> u64
where
    K::Status: WithHistory,
{
    let history = object.status().map(|s| s.history()).unwrap_or_default();
    let entries: Vec<_> = history
        .iter()
        .map(|e| (e.at, &e.event, &e.reason))
        .collect();
    fingerprint((object.meta().uid.as_deref(), entries))
}

/// A status that keeps `history`.
pub trait WithHistory {
    fn history(&self) -> &[HistoryEntry];
}

impl WithHistory for crate::api::OrganizationStatus {
    fn history(&self) -> &[HistoryEntry] {
        &self.history
    }
}

impl WithHistory for crate::api::entitlement::EntitlementStatus {
    fn history(&self) -> &[HistoryEntry] {
        &self.history
    }
}

/// For its holds and exports: its phase and tenant namespace.
pub fn organization_namespace(organization: &Organization) -> u64 {
    let exported = ExportedOrganization {
        phase: organization.status.as_ref().and_then(|s| s.phase),
        tenant_namespace: organization.owned_namespace().map(String::from),
    };
    fingerprint((format!("{exported:?}"), organization.tenant_namespace()))
}

/// For its entitlements: the class's spec and whether it is usable, not
/// the code sequences its status keeps.
pub fn class_usability(class: &EntitlementClass) -> u64 {
    let conditions: Vec<(&str, &str, &str)> = class
        .status
        .iter()
        .flat_map(|s| &s.conditions)
        .map(|c| (c.type_.as_str(), c.status.as_str(), c.reason.as_str()))
        .collect();
    fingerprint((class.metadata.generation, conditions))
}

/// For its organization: what its counts and locked retentions read.
pub fn entitlement_standing(entitlement: &Entitlement) -> u64 {
    let status = entitlement.status.as_ref();
    fingerprint((
        status.and_then(|s| s.phase).map(|p| format!("{p:?}")),
        status.and_then(|s| s.cancelled.as_ref()).map(|c| c.at),
        &entitlement.spec.class,
        &entitlement.spec.organization,
        &entitlement.spec.product,
    ))
}

/// For the holds whose coverage lists it: the organization it names.
pub fn entitlement_organization(entitlement: &Entitlement) -> u64 {
    fingerprint(&entitlement.spec.organization)
}

/// For its organization: whether it succeeded and still has its artifact.
pub fn export_outcome(export: &DataExport) -> u64 {
    let status = export.status.as_ref();
    fingerprint((
        status.and_then(|s| s.phase).map(|p| format!("{p:?}")),
        status.and_then(|s| s.completed_at),
        status.and_then(|s| s.expires_at),
        format!("{:?}", status.map(|s| &s.artifact)),
        format!("{:?}", status.map(|s| &s.conditions)),
    ))
}

/// For the organization owning it: its owner label, purge mark and deletion.
pub fn namespace_ownership(namespace: &Namespace) -> u64 {
    let meta = &namespace.metadata;
    fingerprint((
        &meta.labels,
        &meta.annotations,
        meta.deletion_timestamp.is_some(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entitlement(metadata: serde_json::Value, status: serde_json::Value) -> Entitlement {
        serde_json::from_value(serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": metadata,
            "spec": {"class": "service", "product": "grafana"},
            "status": status,
        }))
        .unwrap()
    }

    #[test]
    fn its_own_controller_is_not_woken_by_what_tenure_writes_on_it() {
        let new = entitlement(json!({"name": "e", "generation": 1}), json!(null));
        let written = entitlement(
            json!({"name": "e", "generation": 1, "finalizers": [FINALIZER],
                   "annotations": {FACTS_ANNOTATION: "{\"code\":\"SVC-2026110001\"}"}}),
            json!({"phase": "Active", "code": "SVC-2026110001"}),
        );
        assert_eq!(own(&new), own(&written));
        let edited = [
            json!({"name": "e", "generation": 2}),
            json!({"name": "e", "generation": 1, "labels": {"team": "a"}}),
            json!({"name": "e", "generation": 1, "annotations": {"note": "x"}}),
            json!({"name": "e", "generation": 1, "finalizers": ["someone.else/keep"]}),
            json!({"name": "e", "generation": 1, "deletionTimestamp": "2026-01-01T00:00:00Z"}),
        ];
        for metadata in edited {
            let changed = entitlement(metadata.clone(), json!(null));
            assert_ne!(own(&new), own(&changed), "{metadata}");
        }
    }
}
