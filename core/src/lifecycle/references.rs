//! Whether what an entitlement refers to can be used: its selector, its
//! class, its pinned code, its organization and its namespace, checked in
//! that order, each refusal naming the field at fault.

use super::conditions::{Verdict, names_missing};
use super::downstream::selector_problem;
use super::entitlement::{OrganizationPurge, Standing, organization_view};
use crate::api::{Entitlement, EntitlementClass, Organization};

/// What the controller found of an entitlement's references.
#[derive(Clone, Copy, Debug)]
pub struct Found<'a> {
    pub entitlement: &'a Entitlement,
    /// The class `spec.class` names, if it exists.
    pub class: Option<&'a EntitlementClass>,
    /// Why that class cannot be used (see `acceptance::class_refusal`).
    pub class_refusal: Option<&'a Verdict>,
    /// The organization `spec.organization` names, if it does and it exists.
    pub organization: Option<&'a Organization>,
    /// The organization that owns the entitlement's namespace, if any.
    pub tenant: Option<&'a Organization>,
}

/// An entitlement's references, in order: its organization's standing, and
/// that organization's purge (also for a standalone entitlement in a tenant
/// namespace: its data is that organization's).
#[derive(Clone, Debug, PartialEq)]
pub struct References {
    pub standing: Standing,
    pub organization_purge: Option<OrganizationPurge>,
}

/// The entitlement's references, or why it stalls (or waits) on them.
pub fn check(found: &Found) -> Result<References, Verdict> {
    if let Some(problem) = found.entitlement.selector().and_then(selector_problem) {
        return Err(Verdict::stalled("InvalidSelector", problem));
    }
    check_class(found)?;
    match found.entitlement.spec.organization.as_deref() {
        Some(org_name) => check_organization(found, org_name),
        // Standalone; but in a tenant namespace its data is that
        // organization's, kept by its purge guards.
        None => Ok(References {
            standing: Standing::Active,
            organization_purge: found
                .tenant
                .and_then(organization_view)
                .map(|(_, purge)| purge),
        }),
    }
}

/// The class exists, can be used, and fits a pinned code.
fn check_class(found: &Found) -> Result<(), Verdict> {
    let spec = &found.entitlement.spec;
    let Some(class) = found.class else {
        return Err(Verdict::stalled(
            "ClassNotFound",
            names_missing("spec.class", "EntitlementClass", &spec.class),
        ));
    };
    if let Some(refusal) = found.class_refusal {
        return Err(Verdict::stalled(
            "ClassNotUsable",
            format!(
                "spec.class names EntitlementClass {}, which cannot be used: {}",
                spec.class, refusal.message
            ),
        ));
    }
    match spec
        .code
        .as_deref()
        .and_then(|code| super::codes::import_problem(code, &class.spec.code_prefix))
    {
        Some(problem) => Err(Verdict::stalled("CodePrefixMismatch", problem)),
        None => Ok(()),
    }
}

/// Whether the wait in `verdict` need not be written: a new entitlement
/// (tenure never wrote its status) whose organization tenure has not reconciled yet waits for it quietly,
/// since that organization's first status wakes it, usually within
/// seconds; so a mass creation writes each entitlement's status once, not
/// a "waiting" first. An organization that was reconciled and still shows
/// no standing is a wait worth reporting.
pub fn waits_quietly(found: &Found, verdict: &Verdict) -> bool {
    let never_reconciled = |org: &Organization| {
        org.status
            .as_ref()
            .and_then(|s| s.observed_generation)
            .is_none()
    };
    // tenure always writes conditions: a status without (none, or one
    // another writer left) was never tenure's.
    let new = found
        .entitlement
        .status
        .as_ref()
        .is_none_or(|s| s.conditions.is_empty());
    verdict.reason == ORGANIZATION_NOT_OBSERVED
        && new
        && found.organization.is_some_and(never_reconciled)
}

const ORGANIZATION_NOT_OBSERVED: &str = "OrganizationNotObserved";

/// The organization `spec.organization` names exists, was observed, and
/// owns the entitlement's namespace.
fn check_organization(found: &Found, org_name: &str) -> Result<References, Verdict> {
    let Some(org) = found.organization else {
        return Err(Verdict::stalled(
            "OrganizationNotFound",
            names_missing("spec.organization", "Organization", org_name),
        ));
    };
    let Some((standing, organization_purge)) = organization_view(org) else {
        return Err(Verdict::reconciling(
            ORGANIZATION_NOT_OBSERVED,
            format!(
                "waiting for Organization {org_name} to be observed: its standing decides this entitlement's"
            ),
        ));
    };
    let namespace = found
        .entitlement
        .metadata
        .namespace
        .as_deref()
        .unwrap_or_default();
    let owned = org.owned_namespace();
    if owned != Some(namespace) {
        let lives = owned.map_or_else(
            || "owns no namespace (see its conditions)".to_string(),
            |tenant| format!("keeps its data in namespace {tenant}"),
        );
        return Err(Verdict::stalled(
            "WrongNamespace",
            format!(
                "spec.organization names Organization {org_name}, which {lives}: its entitlements live there, not in {namespace}"
            ),
        ));
    }
    Ok(References {
        standing,
        organization_purge: Some(organization_purge),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object<T: serde::de::DeserializeOwned>(value: serde_json::Value) -> T {
        serde_json::from_value(value).unwrap()
    }

    fn entitlement(spec: serde_json::Value) -> Entitlement {
        object(json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
            "metadata": {"name": "e", "namespace": "org-acme"}, "spec": spec,
        }))
    }

    fn class() -> EntitlementClass {
        object(json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "EntitlementClass",
            "metadata": {"name": "plugin"}, "spec": {"codePrefix": "PLG"},
        }))
    }

    fn organization(owned: &str) -> Organization {
        object(json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": "acme"}, "spec": {},
            "status": {"phase": "Active", "namespace": owned},
        }))
    }

    #[test]
    fn each_reference_that_cannot_be_used_names_its_field() {
        let spec = json!({"class": "plugin", "product": "grafana", "organization": "acme"});
        let e = entitlement(spec);
        let class = class();
        let org = organization("org-acme");
        let found = Found {
            entitlement: &e,
            class: Some(&class),
            class_refusal: None,
            organization: Some(&org),
            tenant: Some(&org),
        };
        assert_eq!(check(&found).unwrap().standing, Standing::Active);
        let reason = |found: Found| check(&found).unwrap_err();
        let missing_class = reason(Found {
            class: None,
            ..found
        });
        assert_eq!(missing_class.reason, "ClassNotFound");
        assert!(
            missing_class
                .message
                .starts_with("spec.class names EntitlementClass plugin")
        );
        let missing_org = reason(Found {
            organization: None,
            ..found
        });
        assert_eq!(missing_org.reason, "OrganizationNotFound");
        assert!(missing_org.message.starts_with("spec.organization"));
        let elsewhere = organization("org-other");
        let wrong = reason(Found {
            organization: Some(&elsewhere),
            ..found
        });
        assert_eq!(wrong.reason, "WrongNamespace");
        let refusal = Verdict::stalled("PrefixInUse", "taken");
        let refused = reason(Found {
            class_refusal: Some(&refusal),
            ..found
        });
        assert_eq!(refused.reason, "ClassNotUsable");
    }

    #[test]
    fn only_a_new_entitlement_of_a_never_reconciled_organization_waits_quietly() {
        let e =
            entitlement(json!({"class": "plugin", "product": "grafana", "organization": "acme"}));
        let class = class();
        let new_org: Organization = object(json!({
            "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
            "metadata": {"name": "acme"}, "spec": {},
        }));
        let found = Found {
            entitlement: &e,
            class: Some(&class),
            class_refusal: None,
            organization: Some(&new_org),
            tenant: None,
        };
        let verdict = check(&found).unwrap_err();
        assert!(waits_quietly(&found, &verdict));
        // Reconciled, yet without a standing: the wait is reported.
        let mut stalled_org = new_org.clone();
        stalled_org.status = Some(object(json!({"observedGeneration": 1})));
        let found_stalled = Found {
            organization: Some(&stalled_org),
            ..found
        };
        let verdict = check(&found_stalled).unwrap_err();
        assert_eq!(verdict.reason, "OrganizationNotObserved");
        assert!(!waits_quietly(&found_stalled, &verdict));
        // A status another writer left is not tenure's: still new.
        let mut foreign = e.clone();
        foreign.status = Some(object(json!({"observedGeneration": 0})));
        let found_foreign = Found {
            entitlement: &foreign,
            ..found
        };
        assert!(waits_quietly(&found_foreign, &verdict));
        // An entitlement tenure wrote says what it waits for.
        let mut known = e.clone();
        known.status = Some(object(json!({"phase": "Active", "conditions": [{
            "type": "Ready", "status": "True", "reason": "Active", "message": "",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]})));
        let found_known = Found {
            entitlement: &known,
            ..found
        };
        assert!(!waits_quietly(&found_known, &verdict));
    }

    #[test]
    fn a_standalone_entitlement_in_a_tenant_namespace_follows_that_purge() {
        let e = entitlement(json!({"class": "plugin", "product": "grafana"}));
        let class = class();
        let org = organization("org-acme");
        let found = Found {
            entitlement: &e,
            class: Some(&class),
            class_refusal: None,
            organization: None,
            tenant: Some(&org),
        };
        let references = check(&found).unwrap();
        assert_eq!(
            references.organization_purge.map(|p| p.name),
            Some("acme".into())
        );
    }
}
