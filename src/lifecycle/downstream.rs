//! What should become of the objects an entitlement governs, and the patches
//! that pause and resume a workload exactly: pure functions of the phase, the
//! class's rules and the object as it is.
//!
//! A workload someone scaled or unsuspended by hand while tenure had it
//! paused is not fought over: the person's change wins, it is no longer
//! counted as paused, and on resume only tenure's annotation is removed. A
//! controller that undid people's deliberate changes every reconcile would be
//! worse than one that says so and stays out of the way.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use serde_json::{Value, json};

use crate::api::EntitlementPhase;
use crate::api::class::{CancelAction, DownstreamKind, PurgeAction, SuspendAction};

/// Annotation keeping a paused workload's former replica count.
pub const PAUSED_REPLICAS: &str = "tenure.dev/paused-replicas";
/// Annotation on a Job or CronJob tenure suspended: its former `spec.suspend`
/// (`false`, or `unset` when the field was absent).
pub const PAUSED_SUSPEND: &str = "tenure.dev/paused-suspend";

/// What should be true of one bound object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Desired {
    /// As its owners made it: resumed if tenure had paused it.
    Running,
    Paused,
    /// Deleted when the entitlement is cancelled (deprovisioned).
    Deprovisioned,
    /// Deleted at the purge.
    Deleted,
}

/// What the class wants for objects of `kind` in `phase`.
pub fn desired(
    phase: EntitlementPhase,
    kind: &DownstreamKind,
    deprovision_on_cancel: bool,
) -> Desired {
    use EntitlementPhase::*;
    let on_suspend = match kind.on_suspend {
        SuspendAction::Pause => Desired::Paused,
        SuspendAction::Retain => Desired::Running,
    };
    match phase {
        Pending | Active => Desired::Running,
        // Expired is access ended, inside the grace in which a renewal revives it.
        Suspended | Expired => on_suspend,
        Cancelled if !deprovision_on_cancel => on_suspend,
        Cancelled => match kind.on_cancel {
            CancelAction::Pause => Desired::Paused,
            CancelAction::Delete => Desired::Deprovisioned,
            CancelAction::Retain => Desired::Running,
        },
        Purged => match kind.on_purge {
            PurgeAction::Delete => Desired::Deleted,
            PurgeAction::Retain => Desired::Running,
        },
    }
}

/// How a kind is paused, if it can be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pausing {
    Replicas,
    Suspend,
}

pub fn pausing(api_version: &str, kind: &str) -> Option<Pausing> {
    match (api_version, kind) {
        ("apps/v1", "Deployment" | "StatefulSet" | "ReplicaSet") => Some(Pausing::Replicas),
        ("batch/v1", "Job" | "CronJob") => Some(Pausing::Suspend),
        _ => None,
    }
}

/// The state of a pausable object, read from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Paused {
    /// Not paused by tenure.
    No,
    /// Paused by tenure and still as tenure left it.
    Yes,
    /// Paused by tenure, then scaled or unsuspended by hand.
    Overridden,
}

pub fn paused(object: &Value, how: Pausing) -> Paused {
    let annotations = &object["metadata"]["annotations"];
    match how {
        Pausing::Replicas if annotations[PAUSED_REPLICAS].is_string() => {
            if object["spec"]["replicas"].as_i64() == Some(0) {
                Paused::Yes
            } else {
                Paused::Overridden
            }
        }
        Pausing::Suspend if annotations[PAUSED_SUSPEND].is_string() => {
            if object["spec"]["suspend"].as_bool() == Some(true) {
                Paused::Yes
            } else {
                Paused::Overridden
            }
        }
        _ => Paused::No,
    }
}

/// The merge patch that pauses `object`, keeping what to restore; None when
/// there is nothing to do (already paused, overridden, or suspended already by
/// someone else).
pub fn pause_patch(object: &Value, how: Pausing) -> Option<Value> {
    if paused(object, how) != Paused::No {
        return None;
    }
    match how {
        Pausing::Replicas => {
            // Kubernetes defaults an absent replica count to 1.
            let replicas = object["spec"]["replicas"].as_i64().unwrap_or(1);
            if replicas == 0 {
                return None;
            }
            Some(json!({
                "metadata": {"annotations": {PAUSED_REPLICAS: replicas.to_string()}},
                "spec": {"replicas": 0},
            }))
        }
        Pausing::Suspend => {
            let former = match object["spec"]["suspend"].as_bool() {
                Some(true) => return None,
                Some(false) => "false",
                None => "unset",
            };
            Some(json!({
                "metadata": {"annotations": {PAUSED_SUSPEND: former}},
                "spec": {"suspend": true},
            }))
        }
    }
}

/// The merge patch that resumes what tenure paused, exactly as it was; a
/// workload changed by hand meanwhile keeps the change and only loses the
/// annotation. None when tenure had not paused it.
pub fn resume_patch(object: &Value, how: Pausing) -> Option<Value> {
    let state = paused(object, how);
    let annotations = &object["metadata"]["annotations"];
    match (how, state) {
        (_, Paused::No) => None,
        (Pausing::Replicas, Paused::Yes) => {
            let former: i64 = annotations[PAUSED_REPLICAS]
                .as_str()
                .and_then(|n| n.parse().ok())
                .unwrap_or(1);
            Some(json!({
                "metadata": {"annotations": {PAUSED_REPLICAS: null}},
                "spec": {"replicas": former},
            }))
        }
        (Pausing::Suspend, Paused::Yes) => {
            let former = match annotations[PAUSED_SUSPEND].as_str() {
                Some("false") => json!(false),
                _ => Value::Null,
            };
            Some(json!({
                "metadata": {"annotations": {PAUSED_SUSPEND: null}},
                "spec": {"suspend": former},
            }))
        }
        (Pausing::Replicas, Paused::Overridden) => Some(json!({
            "metadata": {"annotations": {PAUSED_REPLICAS: null}},
        })),
        (Pausing::Suspend, Paused::Overridden) => Some(json!({
            "metadata": {"annotations": {PAUSED_SUSPEND: null}},
        })),
    }
}

/// Whether `labels` match a label selector, as the API server matches them.
pub fn selector_matches(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let exact = selector
        .match_labels
        .iter()
        .flatten()
        .all(|(key, value)| labels.get(key) == Some(value));
    let expressions = selector.match_expressions.iter().flatten().all(|e| {
        let values = e.values.as_deref().unwrap_or_default();
        let value = labels.get(&e.key);
        match e.operator.as_str() {
            "In" => value.is_some_and(|v| values.contains(v)),
            "NotIn" => value.is_none_or(|v| !values.contains(v)),
            "Exists" => value.is_some(),
            "DoesNotExist" => value.is_none(),
            _ => false,
        }
    });
    let empty = selector
        .match_labels
        .as_ref()
        .is_none_or(BTreeMap::is_empty)
        && selector
            .match_expressions
            .as_ref()
            .is_none_or(Vec::is_empty);
    // An empty selector would bind everything: tenure binds nothing with it.
    !empty && exact && expressions
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deployment(replicas: Option<i64>) -> Value {
        json!({"metadata": {"name": "web"}, "spec": {"replicas": replicas}})
    }

    /// Applies a JSON merge patch (RFC 7386), as the API server does.
    fn merge(target: &mut Value, patch: &Value) {
        if let (Some(target), Some(patch)) = (target.as_object_mut(), patch.as_object()) {
            for (key, value) in patch {
                if value.is_null() {
                    target.remove(key);
                } else if value.is_object() {
                    let entry = target.entry(key.clone()).or_insert(json!({}));
                    if !entry.is_object() {
                        *entry = json!({});
                    }
                    merge(entry, value);
                } else {
                    target.insert(key.clone(), value.clone());
                }
            }
        }
    }

    #[test]
    fn a_deployment_paused_and_resumed_has_exactly_its_replicas_back() {
        let mut web = deployment(Some(3));
        let pause = pause_patch(&web, Pausing::Replicas).unwrap();
        merge(&mut web, &pause);
        assert_eq!(web["spec"]["replicas"], 0);
        assert_eq!(web["metadata"]["annotations"][PAUSED_REPLICAS], "3");
        assert_eq!(paused(&web, Pausing::Replicas), Paused::Yes);
        assert_eq!(pause_patch(&web, Pausing::Replicas), None, "idempotent");

        let resume = resume_patch(&web, Pausing::Replicas).unwrap();
        merge(&mut web, &resume);
        assert_eq!(web["spec"]["replicas"], 3);
        assert_eq!(web["metadata"]["annotations"], json!({}));
        assert_eq!(resume_patch(&web, Pausing::Replicas), None, "idempotent");
    }

    #[test]
    fn a_workload_scaled_by_hand_while_paused_keeps_the_hand_set_count() {
        let mut web = deployment(Some(2));
        let patch = pause_patch(&web, Pausing::Replicas).unwrap();
        merge(&mut web, &patch);
        web["spec"]["replicas"] = json!(5);
        assert_eq!(paused(&web, Pausing::Replicas), Paused::Overridden);
        assert_eq!(
            pause_patch(&web, Pausing::Replicas),
            None,
            "not fought over"
        );
        let patch = resume_patch(&web, Pausing::Replicas).unwrap();
        merge(&mut web, &patch);
        assert_eq!(web["spec"]["replicas"], 5);
        assert_eq!(web["metadata"]["annotations"], json!({}));
    }

    #[test]
    fn a_cronjob_is_suspended_and_resumed_to_exactly_what_it_was() {
        let mut nightly = json!({"metadata": {"name": "nightly"}, "spec": {"schedule": "@daily"}});
        let patch = pause_patch(&nightly, Pausing::Suspend).unwrap();
        merge(&mut nightly, &patch);
        assert_eq!(nightly["spec"]["suspend"], true);
        let patch = resume_patch(&nightly, Pausing::Suspend).unwrap();
        merge(&mut nightly, &patch);
        assert!(nightly["spec"].get("suspend").is_none(), "{nightly}");

        let mut already = json!({"metadata": {}, "spec": {"suspend": true}});
        assert_eq!(pause_patch(&already, Pausing::Suspend), None);
        already["spec"]["suspend"] = json!(false);
        let patch = pause_patch(&already, Pausing::Suspend).unwrap();
        merge(&mut already, &patch);
        let patch = resume_patch(&already, Pausing::Suspend).unwrap();
        merge(&mut already, &patch);
        assert_eq!(already["spec"]["suspend"], false);
    }

    #[test]
    fn the_class_says_what_each_phase_does_to_a_kind() {
        use EntitlementPhase::*;
        let environment = DownstreamKind {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            on_suspend: SuspendAction::Pause,
            on_cancel: CancelAction::Delete,
            on_purge: PurgeAction::Delete,
        };
        assert_eq!(desired(Active, &environment, true), Desired::Running);
        assert_eq!(desired(Suspended, &environment, true), Desired::Paused);
        assert_eq!(
            desired(Cancelled, &environment, true),
            Desired::Deprovisioned
        );
        assert_eq!(desired(Cancelled, &environment, false), Desired::Paused);
        assert_eq!(desired(Purged, &environment, true), Desired::Deleted);
        let retained = DownstreamKind {
            on_suspend: SuspendAction::Retain,
            on_cancel: CancelAction::Retain,
            on_purge: PurgeAction::Retain,
            ..environment
        };
        assert_eq!(desired(Suspended, &retained, true), Desired::Running);
        assert_eq!(desired(Purged, &retained, true), Desired::Running);
    }
}
