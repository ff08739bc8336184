//! Whether tenure accepts an EntitlementClass, a LifecyclePolicy or a
//! RetentionHold, and what its conditions say: these kinds have no lifecycle
//! of their own, only a verdict that depends on the others.

use chrono::{DateTime, Utc};

use super::conditions::{Extra, Verdict};
use super::downstream::{KindScope, class_problem};
use crate::api::{EntitlementClass, LifecyclePolicy, RetentionHold};

type Time = DateTime<Utc>;

/// What a kind's conditions say, and when that next changes by itself.
#[derive(Clone, Debug, PartialEq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub extra: Vec<Extra>,
    pub wake_at: Option<Time>,
}

impl Judgement {
    fn only(verdict: Verdict) -> Self {
        Self {
            verdict,
            extra: Vec::new(),
            wake_at: None,
        }
    }
}

/// A class hands out codes unless another, older class owns its prefix
/// (`prefix_owner`), and governs its kinds unless one is cluster-scoped
/// (`scopes`, in the order of `spec.downstream`). Its entitlements stall on
/// the same refusal, before taking a code.
pub fn class_refusal(
    class: &EntitlementClass,
    prefix_owner: Option<&str>,
    scopes: &[KindScope],
) -> Option<Verdict> {
    if let Some(owner) = prefix_owner {
        return Some(Verdict::stalled(
            "PrefixInUse",
            format!(
                "spec.codePrefix {} is already the prefix of EntitlementClass {owner}: codes are unique across classes, so this class hands out none; choose another prefix",
                class.spec.code_prefix
            ),
        ));
    }
    class_problem(&class.spec.downstream, scopes)
        .map(|message| Verdict::stalled("ClusterScopedKind", message))
}

/// A class's conditions: refused as [`class_refusal`] says, else accepted.
pub fn class(class: &EntitlementClass, refusal: Option<Verdict>) -> Judgement {
    Judgement::only(refusal.unwrap_or_else(|| {
        let message = format!("codes of this class start with {}-", class.spec.code_prefix);
        Verdict::ready("Accepted", message)
    }))
}

/// A policy's conditions: what it applies to, and condition Conflicting
/// when others (`same_scope`, from `policy::conflicts`) share its scope.
pub fn policy(policy: &LifecyclePolicy, name: &str, same_scope: Option<&[String]>) -> Judgement {
    let scope = policy.spec.scope.clone().unwrap_or_default();
    let applies_to = match (scope.class, scope.organization, scope.product) {
        (Some(class), _, _) => format!("entitlements of class {class}"),
        (_, Some(organization), _) => format!("organization {organization} and its entitlements"),
        (_, _, Some(product)) => format!("entitlements of product {product}"),
        _ => "every organization and entitlement (global)".into(),
    };
    let locked = if policy.spec.locked == Some(true) {
        "; locked: its retention and final grace are minimums for all of them"
    } else {
        ""
    };
    let verdict = Verdict::ready("Accepted", format!("applies to {applies_to}{locked}"));
    let extra = same_scope
        .map(|others| {
            let winner = others
                .iter()
                .map(String::as_str)
                .chain([name])
                .min()
                .unwrap_or(name);
            let others = others
                .iter()
                .map(|other| format!("LifecyclePolicy/{other}"))
                .collect::<Vec<_>>()
                .join(", ");
            Extra {
                type_: "Conflicting".into(),
                status: true,
                reason: "SameScope".into(),
                message: format!(
                    "{others} has the same scope; for a field both set, LifecyclePolicy/{winner} wins because its name sorts first. Merge them, or give each its own scope"
                ),
            }
        })
        .into_iter()
        .collect();
    Judgement {
        verdict,
        extra,
        wake_at: None,
    }
}

/// A hold's conditions: in force (until when), lapsed, or waiting for the
/// target it names (`target_found`) while already protecting it.
pub fn hold(hold: &RetentionHold, target_found: bool, now: Time) -> Judgement {
    let lapse = hold.spec.until.filter(|until| *until > now);
    let missing = match (&hold.spec.organization, &hold.spec.entitlement) {
        _ if target_found => None,
        (Some(name), _) => Some(super::conditions::names_missing(
            "spec.organization",
            "Organization",
            name,
        )),
        (None, Some(target)) => Some(super::conditions::names_missing(
            "spec.entitlement",
            "Entitlement",
            &format!("{}/{}", target.namespace, target.name),
        )),
        (None, None) => None,
    };
    if let Some(missing) = missing {
        return Judgement {
            verdict: Verdict::not_ready(
                "TargetNotFound",
                format!("{missing}; the hold protects it the moment it appears"),
            ),
            extra: Vec::new(),
            wake_at: lapse,
        };
    }
    let verdict = match hold.spec.until {
        Some(until) if until <= now => {
            Verdict::ready("Lapsed", format!("the hold lapsed at {until}"))
        }
        Some(until) => Verdict::ready("InForce", format!("in force until {until}")),
        None => Verdict::ready("InForce", "in force until this hold is deleted"),
    };
    Judgement {
        verdict,
        extra: Vec::new(),
        wake_at: lapse,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::scenario::day;

    fn on_organization(until: Option<Time>) -> RetentionHold {
        let mut hold: RetentionHold = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1",
            "kind": "RetentionHold",
            "metadata": {"name": "litigation"},
            "spec": {"organization": "acme", "reason": "litigation"},
        }))
        .unwrap();
        hold.spec.until = until;
        hold
    }

    #[test]
    fn a_hold_is_in_force_until_it_lapses_and_wakes_at_the_lapse() {
        let judged = hold(&on_organization(Some(day(10))), true, day(1));
        assert_eq!(judged.verdict.reason, "InForce");
        assert_eq!(judged.wake_at, Some(day(10)));
        let lapsed = hold(&on_organization(Some(day(10))), true, day(10));
        assert_eq!(lapsed.verdict.reason, "Lapsed");
        assert_eq!(lapsed.wake_at, None);
    }

    #[test]
    fn a_hold_on_a_missing_target_names_the_field_and_still_protects_it() {
        let judged = hold(&on_organization(None), false, day(1));
        assert_eq!(judged.verdict.reason, "TargetNotFound");
        assert!(
            judged
                .verdict
                .message
                .starts_with("spec.organization names Organization acme, which does not exist"),
            "{}",
            judged.verdict.message
        );
    }

    #[test]
    fn policies_sharing_a_scope_say_which_one_wins() {
        let policy_named = |name: &str| -> LifecyclePolicy {
            serde_json::from_value(serde_json::json!({
                "apiVersion": "tenure.dev/v1alpha1",
                "kind": "LifecyclePolicy",
                "metadata": {"name": name},
                "spec": {},
            }))
            .unwrap()
        };
        let judged = policy(&policy_named("b"), "b", Some(&["a".to_string()]));
        assert_eq!(judged.verdict.reason, "Accepted");
        assert!(judged.verdict.message.contains("(global)"));
        assert_eq!(judged.extra.len(), 1);
        assert!(
            judged.extra[0]
                .message
                .contains("LifecyclePolicy/a wins because its name sorts first")
        );
        assert!(policy(&policy_named("b"), "b", None).extra.is_empty());
    }

    #[test]
    fn a_class_whose_prefix_another_owns_is_refused() {
        let class: EntitlementClass = serde_json::from_value(serde_json::json!({
            "apiVersion": "tenure.dev/v1alpha1",
            "kind": "EntitlementClass",
            "metadata": {"name": "copy"},
            "spec": {"codePrefix": "PLG"},
        }))
        .unwrap();
        let refusal = class_refusal(&class, Some("plugin"), &[]).unwrap();
        assert_eq!(refusal.reason, "PrefixInUse");
        assert_eq!(super::class(&class, None).verdict.reason, "Accepted");
    }
}
