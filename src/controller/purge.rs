//! An organization's purge: what it deletes, counted live, and the deletes
//! themselves: the tenant namespace (re-read and checked for tenure's label
//! right before it goes) and then the export artifacts.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ListParams, Patch, PatchParams};
use kube::core::{ApiResource, DynamicObject, PartialObjectMeta};
use kube::{Api, ResourceExt};

use super::context::Context;
use super::deletes::{delete_exactly, no_live_hold};
use super::discovery::namespaced_kinds;
use super::error::{Error, Result};
use crate::api::entitlement::Entitlement;
use crate::api::export::DataExport;
use crate::api::organization::PurgePlan;
use crate::api::{ORGANIZATION_LABEL, PURGE_ANNOTATION};
use crate::lifecycle::system::is_system;

/// How purge plans and tombstones count export ZIPs.
pub const ARTIFACT_KIND: &str = "ExportArtifact";

/// Counts, by kind, every object in `namespace` that deleting it deletes:
/// the customer's in `objects`, with the organization's export artifacts
/// (`ExportArtifact`), which the purge removes as well, and those Kubernetes
/// or tenure made by themselves ([`is_system`]) in `system`; names the kinds
/// tenure may not list. Only a namespace tenure owns is counted.
pub async fn plan(context: &Context, organization: &str, namespace: &str) -> Result<PurgePlan> {
    let mut objects = BTreeMap::new();
    let mut system = BTreeMap::new();
    let namespaces = Api::<Namespace>::all(context.client.clone());
    let owned = namespaces.get_opt(namespace).await?.is_some_and(|ns| {
        ns.labels().get(ORGANIZATION_LABEL).map(String::as_str) == Some(organization)
    });
    if !owned {
        return Ok(PurgePlan::default());
    }
    let mut uncounted = Vec::new();
    for (resource, listed) in stored(context, namespace).await? {
        let Some(items) = listed else {
            uncounted.push(resource.kind.clone());
            continue;
        };
        for item in &items {
            let counts = if is_system(&resource.group, &resource.kind, &item.metadata) {
                &mut system
            } else {
                &mut objects
            };
            *counts.entry(resource.kind.clone()).or_insert(0) += 1;
        }
    }
    let artifacts = context.exports.artifacts_of(namespace).await?.len() as i64;
    if artifacts > 0 {
        objects.insert(ARTIFACT_KIND.into(), artifacts);
    }
    uncounted.sort();
    uncounted.dedup();
    Ok(PurgePlan {
        objects,
        system,
        namespaces: vec![namespace.to_string()],
        uncounted,
    })
}

/// What the API server stores under `namespace`, kind by kind, read live
/// (None: a kind tenure may not list). Kinds served for discovery but not
/// listable there (e.g. a virtual resource) are left out.
async fn stored(
    context: &Context,
    namespace: &str,
) -> Result<Vec<(ApiResource, Option<Vec<PartialObjectMeta<DynamicObject>>>)>> {
    let mut stored = Vec::new();
    for resource in namespaced_kinds(context).await? {
        let api =
            Api::<DynamicObject>::namespaced_with(context.client.clone(), namespace, &resource);
        match api.list_metadata(&ListParams::default()).await {
            Ok(list) => stored.push((resource, Some(list.items))),
            Err(kube::Error::Api(status)) if matches!(status.code, 404 | 405) => {}
            Err(kube::Error::Api(status)) if status.code == 403 => stored.push((resource, None)),
            Err(error) => return Err(error.into()),
        }
    }
    Ok(stored)
}

/// Counts, by kind, the objects still stored under `namespace` once it is
/// gone: what the namespace's deletion missed. Entitlements and DataExports
/// are always read (a 404 for them is an error: their CRD is served, maybe
/// not yet again after the API server started), the other kinds as
/// discovery finds them (a customer's kind of the same name in another group
/// counts under that name too). Kinds tenure may not list are not counted:
/// the purge plan names them in `uncounted`.
pub async fn remnants(context: &Context, namespace: &str) -> Result<BTreeMap<String, i64>> {
    let own = [
        ApiResource::erase::<Entitlement>(&()),
        ApiResource::erase::<DataExport>(&()),
    ];
    let is_own = |r: &ApiResource| own.iter().any(|o| o.group == r.group && o.kind == r.kind);
    let mut remnants = BTreeMap::new();
    let mut count = |kind: &str, count: usize| {
        if count > 0 {
            *remnants.entry(kind.to_string()).or_insert(0) += count as i64;
        }
    };
    for (resource, listed) in stored(context, namespace).await? {
        if !is_own(&resource) {
            count(&resource.kind, listed.map_or(0, |items| items.len()));
        }
    }
    let entitlements = Api::<Entitlement>::namespaced(context.client.clone(), namespace);
    let exports = Api::<DataExport>::namespaced(context.client.clone(), namespace);
    let params = ListParams::default();
    count(
        "Entitlement",
        entitlements.list_metadata(&params).await?.items.len(),
    );
    count(
        "DataExport",
        exports.list_metadata(&params).await?.items.len(),
    );
    Ok(remnants)
}

/// Deletes every export artifact of the tenant namespace (files and S3
/// objects, partial ones included), after a live look for holds: once the
/// namespace is gone, so that a purge stopped before never loses an export.
pub async fn delete_artifacts(
    context: &Context,
    organization: &str,
    namespace: &str,
) -> Result<()> {
    let artifacts = context.exports.artifacts_of(namespace).await?;
    if artifacts.is_empty() {
        return Ok(());
    }
    no_live_hold(context, context.clock.now(), |h| {
        h.covers_organization(organization, namespace)
    })
    .await?;
    for artifact in &artifacts {
        context.exports.delete(artifact).await?;
    }
    Ok(())
}

/// Deletes the tenant namespace if it is still there and still labelled for
/// `organization`, and no hold covers it: the namespace and the holds read
/// afresh, deleted only with that exact object's uid.
/// True when the API server accepted the purge's delete (now, or before:
/// the namespace is being deleted with the purge's mark).
pub async fn delete_namespace(
    context: &Context,
    organization: &str,
    namespace: &str,
) -> Result<bool> {
    let api = Api::<Namespace>::all(context.client.clone());
    let Some(live) = api.get_opt(namespace).await? else {
        return Ok(false);
    };
    if live.labels().get(ORGANIZATION_LABEL).map(String::as_str) != Some(organization) {
        return Err(Error::NotOwned(format!(
            "namespace {namespace} is not labelled {ORGANIZATION_LABEL}={organization}"
        )));
    }
    if live.metadata.deletion_timestamp.is_some() {
        let marked = live.annotations().get(PURGE_ANNOTATION).map(String::as_str);
        return Ok(marked == Some(organization));
    }
    no_live_hold(context, context.clock.now(), |h| {
        h.covers_organization(organization, namespace)
    })
    .await?;
    // Marked first (refused if it changed since it was read), so that a
    // namespace seen being deleted later is known to be the purge's.
    let mark = serde_json::json!({"metadata": {
        "annotations": {PURGE_ANNOTATION: organization},
        "resourceVersion": live.resource_version(),
    }});
    api.patch(namespace, &PatchParams::default(), &Patch::Merge(&mark))
        .await?;
    delete_exactly(&api, &live).await
}
