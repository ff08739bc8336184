//! What the API server serves, found by discovery: the kinds classes list
//! (kept once found), and every namespaced kind an export or purge covers.

use std::collections::HashMap;
use std::sync::Mutex;

use kube::core::{ApiResource, GroupVersionKind};
use kube::discovery::{ApiCapabilities, Discovery, Scope, pinned_kind, verbs};

use super::context::Context;
use super::error::Result;
use crate::api::class::DownstreamKind;
use crate::lifecycle::downstream::KindScope;
use crate::lifecycle::system::is_system_kind;

/// What discovery says of a kind a class lists.
#[derive(Clone, Debug)]
pub enum Served {
    Namespaced(ApiResource),
    ClusterScoped,
    /// Not served (a CRD not installed yet).
    No,
}

impl Served {
    pub fn scope(&self) -> KindScope {
        match self {
            Served::Namespaced(_) => KindScope::Namespaced,
            Served::ClusterScoped => KindScope::Cluster,
            Served::No => KindScope::NotServed,
        }
    }
}

/// What discovery found for the kinds classes list, kept once found.
#[derive(Default)]
pub struct Kinds(Mutex<HashMap<(String, String), Served>>);

impl Kinds {
    /// How the API server serves `apiVersion`/`kind`.
    pub async fn resolve(&self, context: &Context, kind: &DownstreamKind) -> Result<Served> {
        let key = (kind.api_version.clone(), kind.kind.clone());
        if let Some(known) = self.0.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return Ok(known);
        }
        let (group, version) = match kind.api_version.split_once('/') {
            Some((group, version)) => (group, version),
            None => ("", kind.api_version.as_str()),
        };
        let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
        let served = match pinned_kind(&context.client, &gvk).await {
            Ok((resource, capabilities)) => match capabilities.scope {
                Scope::Namespaced => Served::Namespaced(resource),
                Scope::Cluster => Served::ClusterScoped,
            },
            // Not kept: the kind may be served later.
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Served::No),
            Err(kube::Error::Discovery(_)) => return Ok(Served::No),
            Err(error) => return Err(error.into()),
        };
        if let Ok(mut known) = self.0.lock() {
            known.insert(key, served.clone());
        }
        Ok(served)
    }

    /// The scope of each kind `downstream` lists, in order.
    pub async fn scopes(
        &self,
        context: &Context,
        downstream: &[DownstreamKind],
    ) -> Result<Vec<KindScope>> {
        let mut scopes = Vec::with_capacity(downstream.len());
        for kind in downstream {
            scopes.push(self.resolve(context, kind).await?.scope());
        }
        Ok(scopes)
    }
}

/// Every namespaced kind the API server stores objects of
/// ([`stored_in_namespaces`]).
pub async fn namespaced_kinds(context: &Context) -> Result<Vec<ApiResource>> {
    let discovery = Discovery::new(context.client.clone()).run().await?;
    let mut kinds = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            if stored_in_namespaces(&resource, &capabilities) {
                kinds.push(resource);
            }
        }
    }
    Ok(kinds)
}

/// Whether objects of a kind are stored in namespaces, as a purge deletes
/// and an export reads them: namespaced, served for list and delete (not a
/// virtual resource such as a metrics reading), and not Events, which are
/// the cluster's record, not the customer's data ([`is_system_kind`]).
fn stored_in_namespaces(resource: &ApiResource, capabilities: &ApiCapabilities) -> bool {
    capabilities.scope == Scope::Namespaced
        && capabilities.supports_operation(verbs::LIST)
        && capabilities.supports_operation(verbs::DELETE)
        && !is_system_kind(&resource.group, &resource.kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kind(group: &str, kind: &str) -> ApiResource {
        ApiResource::from_gvk(&GroupVersionKind::gvk(group, "v1", kind))
    }

    fn serving(scope: Scope, verbs: &[&str]) -> ApiCapabilities {
        ApiCapabilities {
            scope,
            subresources: Vec::new(),
            operations: verbs.iter().map(|v| v.to_string()).collect(),
        }
    }

    #[test]
    fn only_namespaced_kinds_served_for_list_and_delete_hold_data_and_events_do_not_count() {
        let stored = [
            "create",
            "get",
            "list",
            "watch",
            "delete",
            "deletecollection",
        ];
        let config_map = kind("", "ConfigMap");
        assert!(stored_in_namespaces(
            &config_map,
            &serving(Scope::Namespaced, &stored)
        ));
        assert!(!stored_in_namespaces(
            &config_map,
            &serving(Scope::Cluster, &stored)
        ));
        let metrics = kind("metrics.k8s.io", "PodMetrics");
        assert!(!stored_in_namespaces(
            &metrics,
            &serving(Scope::Namespaced, &["get", "list"])
        ));
        let binding = kind("", "Binding");
        assert!(!stored_in_namespaces(
            &binding,
            &serving(Scope::Namespaced, &["create"])
        ));
        let events = kind("events.k8s.io", "Event");
        assert!(!stored_in_namespaces(
            &events,
            &serving(Scope::Namespaced, &stored)
        ));
    }
}
