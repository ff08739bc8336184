//! Policy resolution: built-in defaults < global < class < organization <
//! product < the entitlement's own `spec.policy`, field by field, each value
//! with the source it came from.

use std::collections::BTreeMap;

use chrono::TimeDelta;
use serde_json::{Value, json};

use crate::api::entitlement::{EffectiveValue, RaisedFrom};
use crate::api::policy::{LifecyclePolicy, PolicyRules, PolicyScope};

/// The flat keys of every rule (`group.field`), as `status.effectivePolicy` shows them.
pub mod keys {
    pub const PAYMENT_GRACE_DAYS: &str = "payment.graceDays";
    pub const EXPIRY_GRACE_DAYS: &str = "expiry.graceDays";
    pub const PORTAL_VISIBILITY_DAYS: &str = "cancellation.portalVisibilityDays";
    pub const DATA_RETENTION_DAYS: &str = "cancellation.dataRetentionDays";
    pub const ALLOW_REACTIVATION: &str = "cancellation.allowReactivation";
    pub const REACTIVATION_WINDOW_DAYS: &str = "cancellation.reactivationWindowDays";
    pub const REMINDER_DAYS: &str = "notifications.reminderDays";
    pub const OFFBOARDING_REMINDER_DAYS: &str = "notifications.offboardingReminderDays";
    pub const PURGE_REMINDER_DAYS: &str = "notifications.purgeReminderDays";
    pub const TRIAL_REMINDER_DAYS: &str = "notifications.trialReminderDays";
    pub const TRIAL_DAYS: &str = "trial.days";
    pub const DISABLED_RETENTION_DAYS: &str = "organization.disabledRetentionDays";
    pub const REQUIRE_CONFIRMATION: &str = "purge.requireConfirmation";
    pub const FINAL_GRACE_DAYS: &str = "purge.finalGraceDays";
    pub const REQUIRE_EXPORT: &str = "purge.requireExport";
    pub const DEPROVISION_ON_CANCEL: &str = "provisioning.deprovisionOnCancel";
}

/// The built-in defaults (API.md), the least specific level.
fn builtin_defaults() -> BTreeMap<String, Value> {
    flatten(&json!({
        "payment": { "graceDays": 30 },
        "expiry": { "graceDays": 30 },
        "cancellation": {
            "portalVisibilityDays": 90,
            "dataRetentionDays": 365,
            "allowReactivation": true,
            "reactivationWindowDays": 90,
            "refundEligible": false,
        },
        "provisioning": { "deprovisionOnCancel": true },
        "organization": { "disabledRetentionDays": 90 },
        "purge": { "requireConfirmation": false, "finalGraceDays": 7, "requireExport": false },
        "notifications": {
            "reminderDays": [30, 7, 1],
            "offboardingReminderDays": [30, 7, 3],
            "purgeReminderDays": [7, 1],
            "trialReminderDays": [7, 1],
        },
        "trial": { "days": 0 },
    }))
}

/// Source name of the built-in defaults and of `Entitlement.spec.policy`.
pub const FROM_DEFAULT: &str = "default";
pub const FROM_ENTITLEMENT: &str = "Entitlement";

/// What a policy is resolved for.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subject<'a> {
    pub class: Option<&'a str>,
    pub organization: Option<&'a str>,
    pub product: Option<&'a str>,
}

impl<'a> Subject<'a> {
    /// What policies an entitlement falls under: its class, organization and product.
    pub fn of_entitlement(entitlement: &'a crate::api::Entitlement) -> Self {
        Self {
            class: Some(&entitlement.spec.class),
            organization: entitlement.spec.organization.as_deref(),
            product: Some(&entitlement.spec.product),
        }
    }

    /// What policies an organization falls under: global and its own.
    pub fn of_organization(name: &'a str) -> Self {
        Self {
            organization: Some(name),
            ..Self::default()
        }
    }
}

/// The five policy levels, least specific first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Global,
    Class,
    Organization,
    Product,
}

/// The level of a policy and the one object name it targets (none for global).
pub fn level_of(scope: Option<&PolicyScope>) -> (Level, Option<&str>) {
    match scope {
        Some(PolicyScope {
            class: Some(class), ..
        }) => (Level::Class, Some(class)),
        Some(PolicyScope {
            organization: Some(organization),
            ..
        }) => (Level::Organization, Some(organization)),
        Some(PolicyScope {
            product: Some(product),
            ..
        }) => (Level::Product, Some(product)),
        _ => (Level::Global, None),
    }
}

/// Whether `policy` applies to `subject`.
pub fn applies_to(policy: &LifecyclePolicy, subject: &Subject) -> bool {
    scope_matches(policy.spec.scope.as_ref(), subject)
}

/// Whether a policy of this scope applies to `subject`.
pub fn scope_matches(scope: Option<&PolicyScope>, subject: &Subject) -> bool {
    match level_of(scope) {
        (Level::Global, _) => true,
        (Level::Class, target) => target == subject.class,
        (Level::Organization, target) => target == subject.organization,
        (Level::Product, target) => target == subject.product,
    }
}

/// Every resolved rule with its source: exactly `status.effectivePolicy`.
#[derive(Clone, Debug, PartialEq)]
pub struct Effective(pub BTreeMap<String, EffectiveValue>);

impl Effective {
    /// A number of days as a duration. Every key has a value (the defaults
    /// cover them all), and the schema keeps days between 0 and 36500.
    pub fn days(&self, key: &str) -> TimeDelta {
        TimeDelta::days(self.value(key).as_i64().unwrap_or_default())
    }

    pub fn flag(&self, key: &str) -> bool {
        self.value(key).as_bool().unwrap_or_default()
    }

    pub fn day_list(&self, key: &str) -> Vec<i64> {
        self.value(key)
            .as_array()
            .map(|days| days.iter().filter_map(Value::as_i64).collect())
            .unwrap_or_default()
    }

    /// Where the value of `key` came from, for messages.
    pub fn source(&self, key: &str) -> &str {
        self.0.get(key).map_or(FROM_DEFAULT, |v| v.from.as_str())
    }

    fn value(&self, key: &str) -> &Value {
        self.0.get(key).map_or(&Value::Null, |v| &v.value)
    }
}

/// A number of days from an effective policy recorded in status by an earlier
/// decision; None when it was not recorded.
pub fn recorded_days(recorded: &BTreeMap<String, EffectiveValue>, key: &str) -> Option<TimeDelta> {
    recorded
        .get(key)
        .and_then(|v| v.value.as_i64())
        .map(TimeDelta::days)
}

/// The keys a locked policy (a retention lock) makes minimums of.
pub const LOCKED_MINIMUMS: [&str; 3] = [
    keys::DATA_RETENTION_DAYS,
    keys::DISABLED_RETENTION_DAYS,
    keys::FINAL_GRACE_DAYS,
];

/// Resolves the rules for `subject` from `policies` (all of them; those that do
/// not apply are skipped) and the entitlement's own overrides. A locked policy
/// that applies then raises each of [`LOCKED_MINIMUMS`] it sets to at least its
/// value, whatever a more specific level asked for.
pub fn resolve(
    policies: &[&LifecyclePolicy],
    subject: &Subject,
    own: Option<&PolicyRules>,
) -> Effective {
    let mut resolved: BTreeMap<String, EffectiveValue> = builtin_defaults()
        .into_iter()
        .map(|(key, value)| {
            let from = FROM_DEFAULT.to_string();
            let raised_from = None;
            (
                key,
                EffectiveValue {
                    value,
                    from,
                    raised_from,
                },
            )
        })
        .collect();
    let applicable = applicable(policies, subject);
    let layers = applicable
        .iter()
        .map(|p| (source_of(p), &p.spec.rules))
        .chain(own.map(|rules| (FROM_ENTITLEMENT.to_string(), rules)));
    for (from, rules) in layers {
        for (key, value) in flatten_rules(rules) {
            let from = from.clone();
            let raised_from = None;
            resolved.insert(
                key,
                EffectiveValue {
                    value,
                    from,
                    raised_from,
                },
            );
        }
    }
    for key in LOCKED_MINIMUMS {
        let (Some((minimum, lock)), Some(current)) =
            (locked_minimum(&applicable, key), resolved.get_mut(key))
        else {
            continue;
        };
        if current.value.as_i64().unwrap_or_default() < minimum {
            let asked = RaisedFrom {
                value: current.value.clone(),
                from: current.from.clone(),
            };
            *current = EffectiveValue {
                value: minimum.into(),
                from: lock,
                raised_from: Some(asked),
            };
        }
    }
    Effective(resolved)
}

/// The policies that apply to `subject`, least specific first, so that later
/// levels override; inside one level the name that sorts first wins, so it
/// goes last.
fn applicable<'a>(policies: &[&'a LifecyclePolicy], subject: &Subject) -> Vec<&'a LifecyclePolicy> {
    let mut applicable: Vec<&LifecyclePolicy> = policies
        .iter()
        .copied()
        .filter(|p| applies_to(p, subject))
        .collect();
    applicable.sort_by(|a, b| {
        let level = |p: &LifecyclePolicy| level_of(p.spec.scope.as_ref()).0;
        level(a).cmp(&level(b)).then_with(|| name(b).cmp(name(a)))
    });
    applicable
}

/// The highest minimum of `key` that a locked policy among `applicable` sets,
/// and that policy (`LifecyclePolicy/<name>`).
fn locked_minimum(applicable: &[&LifecyclePolicy], key: &str) -> Option<(i64, String)> {
    applicable
        .iter()
        .filter(|p| p.spec.locked == Some(true))
        .filter_map(|p| {
            let value = flatten_rules(&p.spec.rules).get(key)?.as_i64()?;
            Some((value, source_of(p)))
        })
        .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(&a.1)))
}

/// The locked minimum of `key` for `subject`: its value in days and the
/// locked policy that sets it, if any.
pub fn locked_floor(
    policies: &[&LifecyclePolicy],
    subject: &Subject,
    key: &str,
) -> Option<(TimeDelta, String)> {
    let (days, lock) = locked_minimum(&applicable(policies, subject), key)?;
    Some((TimeDelta::days(days), lock))
}

fn source_of(policy: &LifecyclePolicy) -> String {
    format!("LifecyclePolicy/{}", name(policy))
}

fn flatten_rules(rules: &PolicyRules) -> BTreeMap<String, Value> {
    serde_json::to_value(rules)
        .map(|v| flatten(&v))
        .unwrap_or_default()
}

fn name(policy: &LifecyclePolicy) -> &str {
    policy.metadata.name.as_deref().unwrap_or_default()
}

/// For each policy that shares its level and target with others, the names of
/// those others, sorted.
pub fn conflicts(policies: &[&LifecyclePolicy]) -> BTreeMap<String, Vec<String>> {
    let mut by_scope: BTreeMap<(Level, Option<&str>), Vec<&str>> = BTreeMap::new();
    for policy in policies {
        by_scope
            .entry(level_of(policy.spec.scope.as_ref()))
            .or_default()
            .push(name(policy));
    }
    let mut conflicts = BTreeMap::new();
    for names in by_scope.values().filter(|names| names.len() > 1) {
        for &one in names {
            let mut others: Vec<String> = names
                .iter()
                .filter(|&&other| other != one)
                .map(|other| other.to_string())
                .collect();
            others.sort();
            conflicts.insert(one.to_string(), others);
        }
    }
    conflicts
}

/// `{"a": {"b": 1}}` -> `{"a.b": 1}`: rules are two levels deep (group.field).
fn flatten(rules: &Value) -> BTreeMap<String, Value> {
    let mut flat = BTreeMap::new();
    for (group, fields) in rules.as_object().into_iter().flatten() {
        for (field, value) in fields.as_object().into_iter().flatten() {
            if !value.is_null() {
                flat.insert(format!("{group}.{field}"), value.clone());
            }
        }
    }
    flat
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::policy::LifecyclePolicySpec;

    fn policy(name: &str, scope: PolicyScope, rules: Value) -> LifecyclePolicy {
        let rules: PolicyRules = serde_json::from_value(rules).unwrap();
        let mut policy = LifecyclePolicy::new(
            name,
            LifecyclePolicySpec {
                scope: Some(scope),
                rules,
                locked: None,
            },
        );
        policy.metadata.name = Some(name.into());
        policy
    }

    fn class(class: &str) -> PolicyScope {
        PolicyScope {
            class: Some(class.into()),
            ..Default::default()
        }
    }

    #[test]
    fn the_most_specific_level_wins_field_by_field_and_says_where_from() {
        let global = policy(
            "global",
            PolicyScope::default(),
            json!({"payment": {"graceDays": 10}, "expiry": {"graceDays": 11}}),
        );
        let by_class = policy(
            "plugins",
            class("plugin"),
            json!({"payment": {"graceDays": 20}, "cancellation": {"dataRetentionDays": 12}}),
        );
        let by_org = policy(
            "acme",
            PolicyScope {
                organization: Some("acme".into()),
                ..Default::default()
            },
            json!({"payment": {"graceDays": 40}}),
        );
        let by_product = policy(
            "grafana",
            PolicyScope {
                product: Some("grafana".into()),
                ..Default::default()
            },
            json!({"cancellation": {"dataRetentionDays": 700}}),
        );
        let other_org = policy(
            "other",
            PolicyScope {
                organization: Some("other".into()),
                ..Default::default()
            },
            json!({"expiry": {"graceDays": 99}}),
        );
        let own: PolicyRules =
            serde_json::from_value(json!({"cancellation": {"allowReactivation": false}})).unwrap();
        let subject = Subject {
            class: Some("plugin"),
            organization: Some("acme"),
            product: Some("grafana"),
        };
        let all = [&by_product, &other_org, &global, &by_org, &by_class];
        let effective = resolve(&all, &subject, Some(&own));

        let seen = |key: &str| (effective.0[key].value.clone(), effective.source(key));
        assert_eq!(
            seen(keys::PAYMENT_GRACE_DAYS),
            (json!(40), "LifecyclePolicy/acme")
        );
        assert_eq!(
            seen(keys::EXPIRY_GRACE_DAYS),
            (json!(11), "LifecyclePolicy/global")
        );
        assert_eq!(
            seen(keys::DATA_RETENTION_DAYS),
            (json!(700), "LifecyclePolicy/grafana")
        );
        assert_eq!(
            seen(keys::ALLOW_REACTIVATION),
            (json!(false), "Entitlement")
        );
        assert_eq!(seen(keys::PORTAL_VISIBILITY_DAYS), (json!(90), "default"));
        assert_eq!(effective.day_list(keys::REMINDER_DAYS), vec![30, 7, 1]);
        assert_eq!(
            effective.days(keys::PAYMENT_GRACE_DAYS),
            TimeDelta::days(40)
        );
    }

    #[test]
    fn a_locked_policys_retention_and_final_grace_are_minimums_that_no_level_can_shorten() {
        let mut legal = policy(
            "legal-floor",
            class("plugin"),
            json!({"cancellation": {"dataRetentionDays": 400}, "purge": {"finalGraceDays": 14}}),
        );
        legal.spec.locked = Some(true);
        let by_product = policy(
            "short",
            PolicyScope {
                product: Some("grafana".into()),
                ..Default::default()
            },
            json!({"cancellation": {"dataRetentionDays": 30}, "purge": {"finalGraceDays": 0}}),
        );
        let own: PolicyRules = serde_json::from_value(
            json!({"cancellation": {"dataRetentionDays": 1, "portalVisibilityDays": 5}}),
        )
        .unwrap();
        let subject = Subject {
            class: Some("plugin"),
            product: Some("grafana"),
            ..Default::default()
        };
        let effective = resolve(&[&legal, &by_product], &subject, Some(&own));
        let retention = &effective.0[keys::DATA_RETENTION_DAYS];
        assert_eq!(retention.value, json!(400));
        assert_eq!(retention.from, "LifecyclePolicy/legal-floor");
        let asked = retention.raised_from.as_ref().expect("says what it raised");
        assert_eq!(
            (asked.value.clone(), asked.from.as_str()),
            (json!(1), "Entitlement")
        );
        assert_eq!(effective.days(keys::FINAL_GRACE_DAYS), TimeDelta::days(14));
        assert_eq!(
            effective.days(keys::PORTAL_VISIBILITY_DAYS),
            TimeDelta::days(5)
        );

        // A longer value at a more specific level stands.
        let longer: PolicyRules =
            serde_json::from_value(json!({"cancellation": {"dataRetentionDays": 900}})).unwrap();
        let effective = resolve(&[&legal], &subject, Some(&longer));
        assert_eq!(effective.0[keys::DATA_RETENTION_DAYS].value, json!(900));
        assert_eq!(effective.0[keys::DATA_RETENTION_DAYS].raised_from, None);
        assert_eq!(
            locked_floor(&[&legal], &subject, keys::DATA_RETENTION_DAYS),
            Some((TimeDelta::days(400), "LifecyclePolicy/legal-floor".into()))
        );
    }

    #[test]
    fn two_policies_of_one_level_the_name_that_sorts_first_wins_and_both_conflict() {
        let b = policy(
            "b-plugins",
            class("plugin"),
            json!({"payment": {"graceDays": 2}}),
        );
        let a = policy(
            "a-plugins",
            class("plugin"),
            json!({"payment": {"graceDays": 1}}),
        );
        let other = policy("envs", class("environment"), json!({}));
        let subject = Subject {
            class: Some("plugin"),
            ..Default::default()
        };
        let effective = resolve(&[&b, &a, &other], &subject, None);
        assert_eq!(
            effective.source(keys::PAYMENT_GRACE_DAYS),
            "LifecyclePolicy/a-plugins"
        );

        let conflicts = conflicts(&[&b, &a, &other]);
        assert_eq!(conflicts["a-plugins"], vec!["b-plugins"]);
        assert_eq!(conflicts["b-plugins"], vec!["a-plugins"]);
        assert!(!conflicts.contains_key("envs"));
    }
}
