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

use super::conditions::Extra;
use crate::api::class::{CancelAction, DownstreamKind, PurgeAction, SuspendAction};
use crate::api::entitlement::ResourceCounts;
use crate::api::{ENTITLEMENT_LABEL, EntitlementPhase};

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
    /// Left exactly as it is: a delete a hold turned into retain.
    Retained,
    /// Deleted when the entitlement is cancelled (deprovisioned).
    Deprovisioned,
    /// Deleted at the purge.
    Deleted,
}

/// What the class wants for objects of `kind` in `phase`. While a hold is in
/// force (`held`), every delete becomes retain.
pub fn desired(
    phase: EntitlementPhase,
    kind: &DownstreamKind,
    deprovision_on_cancel: bool,
    held: bool,
) -> Desired {
    match wanted(phase, kind, deprovision_on_cancel) {
        Desired::Deprovisioned | Desired::Deleted if held => Desired::Retained,
        wanted => wanted,
    }
}

fn wanted(phase: EntitlementPhase, kind: &DownstreamKind, deprovision_on_cancel: bool) -> Desired {
    use EntitlementPhase::*;
    let on_suspend = match kind.on_suspend {
        SuspendAction::Pause => Desired::Paused,
        SuspendAction::Retain => Desired::Running,
    };
    match phase {
        // A trial runs like a paid subscription.
        Pending | Trialing | Active => Desired::Running,
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

/// What was done to one bound object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChangeAction {
    Paused,
    Resumed,
    /// Deleted when the entitlement was cancelled (`onCancel: Delete`).
    Deprovisioned,
    /// Deleted by the entitlement's purge (`onPurge: Delete`).
    TornDown,
}

/// One change made to a bound object: what, and to which (`Kind name`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Change {
    pub action: ChangeAction,
    pub object: String,
}

impl Change {
    /// A line for people, e.g. `paused Deployment web`.
    pub fn describe(&self) -> String {
        let done = match self.action {
            ChangeAction::Paused => "paused",
            ChangeAction::Resumed => "resumed",
            ChangeAction::Deprovisioned => "deprovisioned (deleted)",
            ChangeAction::TornDown => "deleted",
        };
        format!("{done} {}", self.object)
    }
}

/// What governing the downstream objects did, for status, conditions and Events.
#[derive(Debug, Default)]
pub struct Outcome {
    pub counts: ResourceCounts,
    /// Each change made to a bound object.
    pub changes: Vec<Change>,
    /// Workloads changed by hand while paused, left as they are.
    pub overridden: Vec<String>,
    /// Kinds the class lists that the API server does not serve.
    pub unserved: Vec<String>,
    /// Bound objects a hold kept from being deleted.
    pub retained: Vec<String>,
    /// Bound objects created after the entitlement was purged: never deleted.
    pub after_purge: Vec<String>,
}

/// What to do with one bound object.
#[derive(Clone, Debug, PartialEq)]
pub enum ObjectAction {
    /// Delete it (re-read and checked right before); `action` once accepted.
    Delete(ChangeAction),
    /// Merge-patch it (refused if it changed since it was read).
    Patch(Value, ChangeAction),
    /// Leave it as it is, for this reason.
    Leave(Left),
}

/// Why a bound object is left as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Left {
    /// Nothing to do.
    AsItIs,
    /// Already paused by tenure.
    Paused,
    /// Paused by tenure, then changed by hand: people's changes stay.
    Overridden,
    /// A hold keeps it from being deleted.
    Retained,
    /// Created after the entitlement was purged: never deleted.
    AfterPurge,
}

/// What one bound object (`object`, of a kind paused as `pause` says) needs
/// so that it is as `want` says; `created_after_purge`: it appeared once the
/// entitlement was already purged.
pub fn object_action(
    want: Desired,
    pause: Option<Pausing>,
    object: &Value,
    created_after_purge: bool,
) -> ObjectAction {
    match (want, pause) {
        (Desired::Deleted, _) if created_after_purge => ObjectAction::Leave(Left::AfterPurge),
        (Desired::Deleted, _) => ObjectAction::Delete(ChangeAction::TornDown),
        (Desired::Deprovisioned, _) => ObjectAction::Delete(ChangeAction::Deprovisioned),
        (Desired::Retained, _) => ObjectAction::Leave(Left::Retained),
        (Desired::Paused, Some(pause)) => match pause_patch(object, pause) {
            Some(patch) => ObjectAction::Patch(patch, ChangeAction::Paused),
            None => ObjectAction::Leave(match paused(object, pause) {
                Paused::Yes => Left::Paused,
                Paused::Overridden => Left::Overridden,
                Paused::No => Left::AsItIs,
            }),
        },
        (Desired::Running, Some(pause)) => match resume_patch(object, pause) {
            Some(patch) => ObjectAction::Patch(patch, ChangeAction::Resumed),
            None => ObjectAction::Leave(Left::AsItIs),
        },
        (_, None) => ObjectAction::Leave(Left::AsItIs),
    }
}

impl Outcome {
    /// Counts a change made to the bound object `object` (`Kind name`).
    pub fn changed(&mut self, action: ChangeAction, object: String) {
        match action {
            ChangeAction::Paused => self.counts.paused += 1,
            ChangeAction::TornDown => self.counts.deleted += 1,
            ChangeAction::Deprovisioned => self.counts.deprovisioned += 1,
            ChangeAction::Resumed => {}
        }
        self.changes.push(Change { action, object });
    }

    /// Notes a bound object left as it is, and why.
    pub fn left(&mut self, why: Left, object: String) {
        match why {
            Left::AsItIs => {}
            Left::Paused => self.counts.paused += 1,
            Left::Overridden => self.overridden.push(object),
            Left::Retained => self.retained.push(object),
            Left::AfterPurge => self.after_purge.push(object),
        }
    }
}

/// The conditions that tell what governing the downstream objects did, or
/// could not do; `holds` are the holds in force.
pub fn outcome_conditions(
    outcome: &Outcome,
    phase: EntitlementPhase,
    holds: &[String],
) -> Vec<Extra> {
    let mut extra = Vec::new();
    let mut set = |type_: &str, reason: &str, message: String| {
        extra.push(Extra {
            type_: type_.into(),
            status: true,
            reason: reason.into(),
            message,
        })
    };
    if !outcome.overridden.is_empty() {
        set(
            "ManualOverride",
            "ChangedWhilePaused",
            format!(
                "{} changed by hand while paused; tenure leaves them as they are and removes its annotation on resume",
                outcome.overridden.join(", ")
            ),
        );
    }
    if !outcome.unserved.is_empty() {
        set(
            "KindNotServed",
            "NotServed",
            format!(
                "the class lists {}, which the API server does not serve; objects of it are not governed",
                outcome.unserved.join(", ")
            ),
        );
    }
    if phase == EntitlementPhase::Cancelled && outcome.counts.deprovisioned > 0 {
        set(
            "Deprovisioned",
            "OnCancelDelete",
            format!(
                "{} bound objects deleted on cancellation (the class's onCancel: Delete)",
                outcome.counts.deprovisioned
            ),
        );
    }
    if !outcome.retained.is_empty() {
        set(
            "DeletionHeld",
            "Held",
            format!(
                "{} kept: RetentionHold {} is in force, so what the class would delete is retained",
                outcome.retained.join(", "),
                holds.join(", ")
            ),
        );
    }
    if !outcome.after_purge.is_empty() {
        set(
            "CreatedAfterPurge",
            "NotDeleted",
            format!(
                "{} appeared after the purge: a purged entitlement never deletes what was created after it (for example data restored from a backup); delete it yourself if it should go",
                outcome.after_purge.join(", ")
            ),
        );
    }
    extra
}

/// How the API server serves a kind a class lists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KindScope {
    Namespaced,
    Cluster,
    NotServed,
}

/// Whether a phase deletes a bound object of some kind `kinds` lists: the
/// deletes that are decided on the holds read live.
pub fn deletes(
    phase: EntitlementPhase,
    kinds: &[DownstreamKind],
    deprovision: bool,
    held: bool,
) -> bool {
    kinds.iter().any(|kind| {
        matches!(
            desired(phase, kind, deprovision, held),
            Desired::Deprovisioned | Desired::Deleted
        )
    })
}

/// Why a class cannot govern what it lists, if it cannot: an entry names a
/// cluster-scoped kind (an entitlement governs only its own namespace). Kinds
/// not served yet are not a problem of the class: they may be installed later.
pub fn class_problem(downstream: &[DownstreamKind], scopes: &[KindScope]) -> Option<String> {
    downstream
        .iter()
        .zip(scopes)
        .enumerate()
        .find(|(_, (_, scope))| **scope == KindScope::Cluster)
        .map(|(i, (kind, _))| {
            format!(
                "spec.downstream[{i}] ({} {}) is cluster-scoped: an entitlement governs only objects in its own namespace; remove the entry",
                kind.api_version, kind.kind
            )
        })
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

/// Whether the entitlement `entitlement` with `selector` binds an object
/// labelled `labels`: labelled with its name, or matched by its selector and
/// not labelled for another entitlement.
pub fn binds(
    entitlement: &str,
    selector: Option<&LabelSelector>,
    labels: &BTreeMap<String, String>,
) -> bool {
    match labels.get(ENTITLEMENT_LABEL) {
        Some(named) => named == entitlement,
        None => selector.is_some_and(|s| selector_matches(s, labels)),
    }
}

/// Why `selector` cannot bind objects, if it cannot: it is malformed, or it
/// requires no label to be present and so could match every object.
pub fn selector_problem(selector: &LabelSelector) -> Option<String> {
    let field = "spec.resources.selector";
    let mut requires_a_label = selector
        .match_labels
        .as_ref()
        .is_some_and(|labels| !labels.is_empty());
    for (key, value) in selector.match_labels.iter().flatten() {
        let at = format!("{field}.matchLabels");
        if let Some(problem) = label_key_problem(key).or_else(|| label_value_problem(value)) {
            return Some(format!("{at}: {key:?}: {value:?}: {problem}"));
        }
    }
    for (i, e) in selector.match_expressions.iter().flatten().enumerate() {
        let values = e.values.as_deref().unwrap_or_default();
        let at = format!("{field}.matchExpressions[{i}]");
        let invalid = label_key_problem(&e.key).map(|p| format!("key {:?}: {p}", e.key));
        let invalid = invalid.or_else(|| {
            values
                .iter()
                .find_map(|v| label_value_problem(v).map(|p| format!("value {v:?}: {p}")))
        });
        if let Some(problem) = invalid {
            return Some(format!("{at}: {problem}"));
        }
        match e.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Some(format!("{at}: operator {} needs values", e.operator));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Some(format!("{at}: operator {} takes no values", e.operator));
            }
            "In" | "Exists" => requires_a_label = true,
            "NotIn" | "DoesNotExist" => {}
            other => return Some(format!("{at}: unknown operator {other:?}")),
        }
    }
    (!requires_a_label).then(|| {
        format!(
            "{field} requires no label (matchLabels, In or Exists), so it could match every object in the namespace; name at least one label a bound object carries"
        )
    })
}

/// Why `name` cannot be the name part of a label key or a label value (at
/// most 63 characters, alphanumerics with `-`, `_` or `.` between), if it
/// cannot. Such a selector could never bind anything.
fn label_name_problem(name: &str) -> Option<&'static str> {
    let alphanumeric = |c: char| c.is_ascii_alphanumeric();
    if name.len() > 63 {
        Some("longer than 63 characters")
    } else if !name
        .chars()
        .all(|c| alphanumeric(c) || matches!(c, '-' | '_' | '.'))
    {
        Some("only letters, digits, '-', '_' and '.' may appear in a label")
    } else if !name.starts_with(alphanumeric) || !name.ends_with(alphanumeric) {
        Some("a label starts and ends with a letter or digit")
    } else {
        None
    }
}

/// Why `key` is not a label key (`[prefix/]name`, the prefix a DNS
/// subdomain), if it is not.
fn label_key_problem(key: &str) -> Option<&'static str> {
    let (prefix, name) = key.rsplit_once('/').unwrap_or(("", key));
    let subdomain = prefix.split('.').all(|part| {
        !part.is_empty()
            && part.len() <= 63
            && part
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
            && !part.starts_with('-')
            && !part.ends_with('-')
    });
    if key.contains('/') && (prefix.len() > 253 || !subdomain) {
        return Some("the prefix of a label key is a DNS subdomain (lower-case, e.g. example.com)");
    }
    if name.is_empty() {
        return Some("a label key has a name");
    }
    label_name_problem(name)
}

fn label_value_problem(value: &str) -> Option<&'static str> {
    match value.is_empty() {
        true => None,
        false => label_name_problem(value),
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

    #[test]
    fn a_selector_naming_a_label_no_object_can_carry_names_the_field() {
        let selector: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"bad key!": "x y"}
        }))
        .unwrap();
        let problem = selector_problem(&selector).expect("refused");
        assert!(
            problem.starts_with("spec.resources.selector.matchLabels"),
            "{problem}"
        );
        let expression: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchExpressions": [{"key": "tier", "operator": "In", "values": ["web app"]}]
        }))
        .unwrap();
        let problem = selector_problem(&expression).expect("refused");
        assert!(
            problem.contains("matchExpressions[0]: value \"web app\""),
            "{problem}"
        );
        let fine: LabelSelector = serde_json::from_value(serde_json::json!({
            "matchLabels": {"app.kubernetes.io/name": "web", "tier": ""}
        }))
        .unwrap();
        assert_eq!(selector_problem(&fine), None);
    }

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

    /// A managed environment's workload: paused on suspension, deleted on
    /// cancellation and at the purge.
    fn environment() -> DownstreamKind {
        DownstreamKind {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            on_suspend: SuspendAction::Pause,
            on_cancel: CancelAction::Delete,
            on_purge: PurgeAction::Delete,
        }
    }

    #[test]
    fn each_bound_object_gets_the_one_action_its_desired_state_needs() {
        let web = deployment(Some(3));
        let act =
            |want, after_purge| object_action(want, Some(Pausing::Replicas), &web, after_purge);
        assert!(matches!(
            act(Desired::Paused, false),
            ObjectAction::Patch(_, ChangeAction::Paused)
        ));
        assert_eq!(
            act(Desired::Running, false),
            ObjectAction::Leave(Left::AsItIs)
        );
        assert_eq!(
            act(Desired::Deleted, false),
            ObjectAction::Delete(ChangeAction::TornDown)
        );
        assert_eq!(
            act(Desired::Deleted, true),
            ObjectAction::Leave(Left::AfterPurge),
            "what appeared after the purge is never deleted"
        );
        assert_eq!(
            act(Desired::Deprovisioned, false),
            ObjectAction::Delete(ChangeAction::Deprovisioned)
        );
        assert_eq!(
            act(Desired::Retained, false),
            ObjectAction::Leave(Left::Retained)
        );

        let mut outcome = Outcome::default();
        outcome.changed(ChangeAction::TornDown, "Deployment web".into());
        outcome.left(Left::Retained, "Secret db".into());
        assert_eq!(outcome.counts.deleted, 1);
        assert_eq!(outcome.retained, ["Secret db"]);
        assert_eq!(outcome.changes[0].describe(), "deleted Deployment web");
    }

    #[test]
    fn the_class_says_what_each_phase_does_to_a_kind() {
        use EntitlementPhase::*;
        let environment = environment();
        assert_eq!(desired(Active, &environment, true, false), Desired::Running);
        assert_eq!(
            desired(Trialing, &environment, true, false),
            Desired::Running,
            "a trial runs like Active"
        );
        assert_eq!(
            desired(Suspended, &environment, true, false),
            Desired::Paused
        );
        assert_eq!(
            desired(Cancelled, &environment, true, false),
            Desired::Deprovisioned
        );
        assert_eq!(
            desired(Cancelled, &environment, false, false),
            Desired::Paused
        );
        assert_eq!(desired(Purged, &environment, true, false), Desired::Deleted);
        let retained = DownstreamKind {
            on_suspend: SuspendAction::Retain,
            on_cancel: CancelAction::Retain,
            on_purge: PurgeAction::Retain,
            ..environment
        };
        assert_eq!(desired(Suspended, &retained, true, false), Desired::Running);
        assert_eq!(desired(Purged, &retained, true, false), Desired::Running);
    }

    #[test]
    fn a_hold_in_force_turns_every_delete_into_retain() {
        use EntitlementPhase::*;
        let environment = environment();
        assert_eq!(
            desired(Cancelled, &environment, true, true),
            Desired::Retained
        );
        assert_eq!(desired(Purged, &environment, true, true), Desired::Retained);
        assert_eq!(
            desired(Suspended, &environment, true, true),
            Desired::Paused
        );
    }

    fn selector(labels: &[(&str, &str)], expressions: Value) -> LabelSelector {
        LabelSelector {
            match_labels: (!labels.is_empty()).then(|| {
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect()
            }),
            match_expressions: serde_json::from_value(expressions).unwrap(),
        }
    }

    #[test]
    fn a_selector_that_could_match_every_object_or_is_malformed_is_refused() {
        for (broad, expressions) in [
            ("empty", json!(null)),
            (
                "DoesNotExist",
                json!([{"key": "x", "operator": "DoesNotExist"}]),
            ),
            (
                "NotIn",
                json!([{"key": "x", "operator": "NotIn", "values": ["a"]}]),
            ),
            ("In without values", json!([{"key": "x", "operator": "In"}])),
            (
                "NotIn without values",
                json!([{"key": "x", "operator": "NotIn", "values": []}]),
            ),
            (
                "unknown operator",
                json!([{"key": "x", "operator": "Near", "values": ["a"]}]),
            ),
        ] {
            let problem = selector_problem(&selector(&[], expressions));
            assert!(
                problem
                    .as_deref()
                    .is_some_and(|p| p.contains("spec.resources.selector")),
                "{broad}: {problem:?}"
            );
        }
        assert_eq!(
            selector_problem(&selector(&[("team", "blue")], json!(null))),
            None
        );
        let narrowed = json!([{"key": "team", "operator": "Exists"}, {"key": "x", "operator": "DoesNotExist"}]);
        assert_eq!(selector_problem(&selector(&[], narrowed)), None);
    }

    #[test]
    fn an_object_labelled_for_another_entitlement_is_never_bound_by_a_selector() {
        let blue = selector(&[("team", "blue")], json!(null));
        let labels = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect()
        };
        assert!(binds("a", Some(&blue), &labels(&[("team", "blue")])));
        assert!(!binds(
            "a",
            Some(&blue),
            &labels(&[("team", "blue"), (ENTITLEMENT_LABEL, "b")])
        ));
        assert!(binds("a", None, &labels(&[(ENTITLEMENT_LABEL, "a")])));
        assert!(!binds("a", Some(&blue), &labels(&[("team", "red")])));
    }
}
