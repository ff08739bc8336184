//! What in a tenant namespace is not the customer's: the objects Kubernetes
//! or tenure make there by themselves. An export leaves them out, and an
//! organization's purge plan and tombstone count them apart (`system`), so
//! that what a customer reads as "your data" is only what the customer made.
//!
//! System objects are:
//!
//! - the ConfigMap `kube-root-ca.crt` (the API server's CA, published into
//!   every namespace) and the ServiceAccount `default` (created in every
//!   namespace) as Kubernetes makes them, without labels or annotations (one
//!   the customer annotated, with a cloud identity say, is theirs): Kubernetes
//!   recreates them at once if they are deleted;
//! - tenure's deny-all NetworkPolicy [`ACCESS_POLICY`] (labelled
//!   `tenure.dev/organization`), which revokes access to an offboarded
//!   organization;
//! - a token Secret of the `default` ServiceAccount (annotated
//!   `kubernetes.io/service-account.name: default`): a credential of a system
//!   account, filled in by Kubernetes;
//! - Endpoints and EndpointSlices the endpoint controllers maintain for a
//!   Service (labelled `endpoints.kubernetes.io/managed-by` or
//!   `endpointslice.kubernetes.io/managed-by` with a Kubernetes controller):
//!   derived from the customer's Services (which are exported and counted),
//!   and rebuilt from them. Endpoints a customer wrote by hand, for a Service
//!   without a selector, carry no such label and are the customer's;
//! - anything owned (`ownerReferences`) by one of the named objects above;
//! - Events: the cluster's running record about objects, written by
//!   Kubernetes components and tenure and expired by the API server on its
//!   own (an hour by default). They are neither exported nor counted at all:
//!   a count of them would say nothing lasting.
//!
//! Everything else in the namespace is the customer's, whoever's controller
//! made it from the customer's objects (the Pods and ReplicaSets of a
//! Deployment, the PersistentVolumeClaims of a StatefulSet hold or run the
//! customer's data).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::api::ORGANIZATION_LABEL;

/// The deny-all NetworkPolicy tenure creates in the tenant namespace of a
/// Disabled or Archived organization.
pub const ACCESS_POLICY: &str = "tenure-access-disabled";

/// The labels of the Kubernetes controllers that maintain Endpoints and
/// EndpointSlices for Services, and the values they set.
const MANAGED_BY: [(&str, &str, &[&str]); 2] = [
    (
        "Endpoints",
        "endpoints.kubernetes.io/managed-by",
        &["endpoint-controller"],
    ),
    (
        "EndpointSlice",
        "endpointslice.kubernetes.io/managed-by",
        &[
            "endpointslice-controller.k8s.io",
            "endpointslicemirroring-controller.k8s.io",
        ],
    ),
];

/// Whether every object of this kind (API group, kind) is a system object:
/// Events. Such kinds are not even listed by an export or a purge plan.
pub fn is_system_kind(group: &str, kind: &str) -> bool {
    kind == "Event" && matches!(group, "" | "events.k8s.io")
}

/// Whether the object of `group`/`kind` with `meta` was made by Kubernetes or
/// tenure by themselves, not by the customer (see the module's list).
pub fn is_system(group: &str, kind: &str, meta: &ObjectMeta) -> bool {
    let name = meta.name.as_deref().unwrap_or_default();
    let labels = meta.labels.as_ref();
    let label = |key: &str| labels.and_then(|l| l.get(key)).map(String::as_str);
    let annotation = |key: &str| {
        meta.annotations
            .as_ref()
            .and_then(|a| a.get(key))
            .map(String::as_str)
    };
    if is_system_kind(group, kind) {
        return true;
    }
    if named(group, kind, name) {
        return match kind {
            // tenure's policy carries its label; one a customer named alike is theirs.
            "NetworkPolicy" => label(ORGANIZATION_LABEL).is_some(),
            // A default ServiceAccount the customer annotated or labelled
            // (a cloud identity, say) is configuration of theirs: exported.
            "ServiceAccount" => {
                meta.annotations.as_ref().is_none_or(|a| a.is_empty())
                    && labels.is_none_or(|l| l.is_empty())
            }
            _ => true,
        };
    }
    if group.is_empty()
        && kind == "Secret"
        && annotation("kubernetes.io/service-account.name") == Some("default")
    {
        return true;
    }
    let endpoints_group = |kind: &str| {
        if kind == "Endpoints" {
            ""
        } else {
            "discovery.k8s.io"
        }
    };
    if MANAGED_BY.iter().any(|(managed_kind, key, managers)| {
        *managed_kind == kind
            && group == endpoints_group(kind)
            && label(key).is_some_and(|by| managers.contains(&by))
    }) {
        return true;
    }
    meta.owner_references.iter().flatten().any(|owner| {
        let group = owner
            .api_version
            .rsplit_once('/')
            .map_or("", |(group, _)| group);
        named(group, &owner.kind, &owner.name)
    })
}

/// The system objects known by their name alone.
fn named(group: &str, kind: &str, name: &str) -> bool {
    matches!(
        (group, kind, name),
        ("", "ConfigMap", "kube-root-ca.crt")
            | ("", "ServiceAccount", "default")
            | ("networking.k8s.io", "NetworkPolicy", ACCESS_POLICY)
    )
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use super::*;

    #[test]
    fn a_default_service_account_the_customer_annotated_is_theirs() {
        let mut meta = ObjectMeta {
            name: Some("default".into()),
            ..ObjectMeta::default()
        };
        assert!(is_system("", "ServiceAccount", &meta));
        meta.annotations = Some(BTreeMap::from([(
            "eks.amazonaws.com/role-arn".to_string(),
            "arn:aws:iam::1:role/app".to_string(),
        )]));
        assert!(!is_system("", "ServiceAccount", &meta));
    }

    fn meta(name: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some("org-acme".into()),
            ..Default::default()
        }
    }

    fn labelled(name: &str, key: &str, value: &str) -> ObjectMeta {
        ObjectMeta {
            labels: Some(BTreeMap::from([(key.into(), value.into())])),
            ..meta(name)
        }
    }

    fn owned_by(name: &str, api_version: &str, kind: &str, owner: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: Some(vec![OwnerReference {
                api_version: api_version.into(),
                kind: kind.into(),
                name: owner.into(),
                uid: "u".into(),
                ..Default::default()
            }]),
            ..meta(name)
        }
    }

    #[test]
    fn what_kubernetes_and_tenure_create_in_every_namespace_is_system() {
        assert!(is_system("", "ConfigMap", &meta("kube-root-ca.crt")));
        assert!(is_system("", "ServiceAccount", &meta("default")));
        let policy = labelled(ACCESS_POLICY, ORGANIZATION_LABEL, "acme");
        assert!(is_system("networking.k8s.io", "NetworkPolicy", &policy));
        assert!(is_system_kind("", "Event"));
        assert!(is_system_kind("events.k8s.io", "Event"));
        assert!(is_system("", "Event", &meta("web.17a2")));
    }

    #[test]
    fn what_the_customer_made_is_not_system_even_when_named_alike() {
        assert!(!is_system("", "ConfigMap", &meta("invoice-2031-12")));
        assert!(!is_system("", "ServiceAccount", &meta("builder")));
        assert!(!is_system("", "Secret", &meta("default")));
        assert!(!is_system("", "ConfigMap", &meta("default")));
        // Same name, but not tenure's: no tenure label, or another group's kind.
        assert!(!is_system(
            "networking.k8s.io",
            "NetworkPolicy",
            &meta(ACCESS_POLICY)
        ));
        let policy = labelled(ACCESS_POLICY, ORGANIZATION_LABEL, "acme");
        assert!(!is_system(
            "crd.projectcalico.org",
            "NetworkPolicy",
            &policy
        ));
        assert!(!is_system(
            "example.com",
            "ConfigMap",
            &meta("kube-root-ca.crt")
        ));
        assert!(!is_system_kind("example.com", "Event"));
    }

    #[test]
    fn endpoints_the_controllers_derive_from_a_service_are_system_those_written_by_hand_are_not() {
        let managed = labelled(
            "web",
            "endpoints.kubernetes.io/managed-by",
            "endpoint-controller",
        );
        assert!(is_system("", "Endpoints", &managed));
        assert!(!is_system("", "Endpoints", &meta("external-db")));
        for manager in [
            "endpointslice-controller.k8s.io",
            "endpointslicemirroring-controller.k8s.io",
        ] {
            let slice = labelled("web-x1", "endpointslice.kubernetes.io/managed-by", manager);
            assert!(
                is_system("discovery.k8s.io", "EndpointSlice", &slice),
                "{manager}"
            );
        }
        let own = labelled(
            "web-x1",
            "endpointslice.kubernetes.io/managed-by",
            "mesh.example.com",
        );
        assert!(!is_system("discovery.k8s.io", "EndpointSlice", &own));
    }

    #[test]
    fn a_token_of_the_default_service_account_and_what_system_objects_own_are_system() {
        let token = ObjectMeta {
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/service-account.name".into(),
                "default".into(),
            )])),
            ..meta("default-token-x1")
        };
        assert!(is_system("", "Secret", &token));
        let builder_token = ObjectMeta {
            annotations: Some(BTreeMap::from([(
                "kubernetes.io/service-account.name".into(),
                "builder".into(),
            )])),
            ..meta("builder-token")
        };
        assert!(!is_system("", "Secret", &builder_token));
        assert!(is_system(
            "",
            "Secret",
            &owned_by("t", "v1", "ServiceAccount", "default")
        ));
        assert!(is_system(
            "example.com",
            "Audit",
            &owned_by("a", "networking.k8s.io/v1", "NetworkPolicy", ACCESS_POLICY)
        ));
        assert!(!is_system(
            "apps",
            "ReplicaSet",
            &owned_by("web-5d", "apps/v1", "Deployment", "web")
        ));
        assert!(!is_system(
            "",
            "Secret",
            &owned_by("t", "v1", "ServiceAccount", "builder")
        ));
    }
}
