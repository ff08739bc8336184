//! What a purge deletes, measured live, and the deletion itself: the tenant
//! namespace, re-read and checked for tenure's label right before it goes.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, ListParams, Preconditions};
use kube::core::{ApiResource, DynamicObject};
use kube::discovery::{Discovery, Scope, verbs};
use kube::{Api, ResourceExt};

use super::{Context, Error, Result};
use crate::api::ORGANIZATION_LABEL;
use crate::api::organization::PurgePlan;

/// Counts, by kind, every object in `namespace` that deleting it deletes.
pub async fn plan(context: &Context, namespace: &str) -> Result<PurgePlan> {
    let mut objects = BTreeMap::new();
    let namespaces = Api::<Namespace>::all(context.client.clone());
    if namespaces.get_opt(namespace).await?.is_none() {
        return Ok(PurgePlan::default());
    }
    for resource in namespaced_kinds(context).await? {
        let api =
            Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, &resource);
        let count = match api.list_metadata(&ListParams::default()).await {
            Ok(list) => list.items.len() as i64,
            // Served for discovery but not listable here (e.g. a virtual resource).
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 405) => continue,
            Err(error) => return Err(error.into()),
        };
        if count > 0 {
            *objects.entry(resource.kind.clone()).or_insert(0) += count;
        }
    }
    Ok(PurgePlan {
        objects,
        namespaces: vec![namespace.to_string()],
    })
}

/// Every namespaced kind the API server lets tenure list, Events left out:
/// they are the cluster's record, not the customer's data.
pub async fn namespaced_kinds(context: &Context) -> Result<Vec<ApiResource>> {
    let discovery = Discovery::new(context.client.clone()).run().await?;
    let mut kinds = Vec::new();
    for group in discovery.groups() {
        for (resource, capabilities) in group.recommended_resources() {
            let listable = capabilities.supports_operation(verbs::LIST);
            if capabilities.scope == Scope::Namespaced && listable && resource.kind != "Event" {
                kinds.push(resource);
            }
        }
    }
    Ok(kinds)
}

/// Deletes the tenant namespace if it is still there and still labelled for
/// `organization`: read afresh, deleted only with that exact object's uid.
pub async fn delete_namespace(
    context: &Context,
    organization: &str,
    namespace: &str,
) -> Result<()> {
    let api = Api::<Namespace>::all(context.client.clone());
    let Some(live) = api.get_opt(namespace).await? else {
        return Ok(());
    };
    if live.labels().get(ORGANIZATION_LABEL).map(String::as_str) != Some(organization) {
        return Err(Error::NotOwned(format!(
            "namespace {namespace} is not labelled {ORGANIZATION_LABEL}={organization}"
        )));
    }
    if live.metadata.deletion_timestamp.is_some() {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: live.uid(),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(namespace, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(error) => Err(error.into()),
    }
}
