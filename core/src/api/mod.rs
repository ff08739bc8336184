//! The tenure.dev/v1alpha1 API: one module per kind, plus the types they share.
//! Doc comments on fields are user documentation: they become `kubectl explain`.

pub mod class;
pub mod common;
pub mod docs;
pub mod entitlement;
pub mod export;
pub mod hold;
pub mod organization;
pub mod policy;
pub mod webhook;

pub use class::EntitlementClass;
pub use entitlement::{Entitlement, EntitlementPhase};
pub use export::{DataExport, DataExportStatus};
pub use hold::{RetentionHold, RetentionHoldStatus};
pub use organization::{
    Organization, OrganizationLifecycle, OrganizationPhase, OrganizationStatus,
};
pub use policy::{LifecyclePolicy, LifecyclePolicyStatus};
pub use webhook::LifecycleWebhook;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// Label on a tenant namespace naming the Organization that owns it.
pub const ORGANIZATION_LABEL: &str = "tenure.dev/organization";
/// Label binding a downstream object to the Entitlement it names.
pub const ENTITLEMENT_LABEL: &str = "tenure.dev/entitlement";
/// Annotation the purge puts on a tenant namespace right before deleting it,
/// naming the organization: a namespace being deleted with it is the purge's.
pub const PURGE_ANNOTATION: &str = "tenure.dev/purge";
/// Annotation on an Entitlement keeping the facts tenure learned (see
/// [`entitlement::EntitlementFacts`]), so that a restore lands where a re-sync does.
pub const FACTS_ANNOTATION: &str = "tenure.dev/facts";
/// Finalizer on Organizations, Entitlements and DataExports.
pub const FINALIZER: &str = "tenure.dev/cleanup";

/// Every CRD tenure serves, in the order `tenure crds` prints them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![
        Organization::crd(),
        Entitlement::crd(),
        EntitlementClass::crd(),
        LifecyclePolicy::crd(),
        RetentionHold::crd(),
        DataExport::crd(),
        LifecycleWebhook::crd(),
    ]
}

/// The CRDs as one multi-document YAML stream: what `tenure crds` prints and
/// what crds/ holds.
pub fn crds_yaml() -> String {
    crds()
        .iter()
        .map(|crd| serde_yaml::to_string(crd).expect("a CRD always serializes"))
        .collect::<Vec<_>>()
        .join("---\n")
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_crds_match_the_types() {
        for (path, checked_in) in [
            (
                "crds/tenure.dev.yaml",
                include_str!("../../../crds/tenure.dev.yaml"),
            ),
            (
                "charts/tenure/crds/tenure.dev.yaml",
                include_str!("../../../charts/tenure/crds/tenure.dev.yaml"),
            ),
        ] {
            assert!(
                checked_in == super::crds_yaml(),
                "{path} is out of date with core/src/api: run `make crds` and commit the result"
            );
        }
    }
}
