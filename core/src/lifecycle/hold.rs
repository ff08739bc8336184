//! RetentionHolds as the lifecycle sees them: what each covers, which are in
//! force, which were placed or lifted since the last decision, and when the
//! last was lifted (the final grace runs again in full from then).
//!
//! Coverage is one rule, used for the cached view and for the live re-read
//! right before a delete alike: a hold on an organization covers it, every
//! object in its tenant namespace and every entitlement that names it; a hold
//! on an entitlement covers it and the objects it binds, and blocks the purge
//! of the organization whose namespace holds it.

use chrono::{DateTime, Utc};

use crate::api::RetentionHold;
use crate::api::common::HistoryEntry;

type Time = DateTime<Utc>;

/// What a RetentionHold names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HoldTarget {
    Organization {
        name: String,
        /// Its tenant namespace, when the organization exists.
        namespace: Option<String>,
    },
    Entitlement {
        namespace: String,
        name: String,
    },
}

/// A RetentionHold, read from the cache or live.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hold {
    pub name: String,
    pub reason: String,
    pub ticket: Option<String>,
    /// The hold lapses by itself then.
    pub until: Option<Time>,
    pub target: HoldTarget,
}

impl Hold {
    /// A RetentionHold as the lifecycle reads it; `tenant_namespace` looks up
    /// the tenant namespace of the organization it names (None: no such
    /// organization yet).
    pub fn of(hold: &RetentionHold, tenant_namespace: impl Fn(&str) -> Option<String>) -> Hold {
        let target = match (&hold.spec.organization, &hold.spec.entitlement) {
            (Some(organization), _) => HoldTarget::Organization {
                name: organization.clone(),
                namespace: tenant_namespace(organization),
            },
            (None, Some(entitlement)) => HoldTarget::Entitlement {
                namespace: entitlement.namespace.clone(),
                name: entitlement.name.clone(),
            },
            // The API server refuses a hold without a target.
            (None, None) => HoldTarget::Entitlement {
                namespace: String::new(),
                name: String::new(),
            },
        };
        Hold {
            name: hold.metadata.name.clone().unwrap_or_default(),
            reason: hold.spec.reason.clone(),
            ticket: hold.spec.ticket.clone(),
            until: hold.spec.until,
            target,
        }
    }

    pub fn in_force(&self, now: Time) -> bool {
        self.until.is_none_or(|until| until > now)
    }

    /// Whether it covers the organization `name` whose tenant namespace is
    /// `namespace`: a hold on it, or on an entitlement in its namespace.
    pub fn covers_organization(&self, name: &str, namespace: &str) -> bool {
        match &self.target {
            HoldTarget::Organization { name: held, .. } => held == name,
            HoldTarget::Entitlement {
                namespace: held, ..
            } => held == namespace,
        }
    }

    /// Whether it covers the entitlement `namespace/name`, which names
    /// `organization` (if any): a hold on it, on the organization it names, or
    /// on the organization whose namespace it lives in.
    pub fn covers_entitlement(
        &self,
        namespace: &str,
        name: &str,
        organization: Option<&str>,
    ) -> bool {
        match &self.target {
            HoldTarget::Entitlement {
                namespace: held_namespace,
                name: held,
            } => held_namespace == namespace && held == name,
            HoldTarget::Organization {
                name: held,
                namespace: held_namespace,
            } => {
                organization == Some(held.as_str()) || held_namespace.as_deref() == Some(namespace)
            }
        }
    }

    /// The hold's name, and its target when that is not the object decided
    /// (an entitlement's hold blocking its organization's purge).
    pub fn describe(&self) -> String {
        match &self.target {
            HoldTarget::Entitlement { namespace, name } => {
                format!("{} (on Entitlement {namespace}/{name})", self.name)
            }
            HoldTarget::Organization { .. } => self.name.clone(),
        }
    }
}

/// What the holds mean at one decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HoldState {
    /// Names of the holds in force, sorted.
    pub in_force: Vec<String>,
    /// The holds in force described for messages, in the same order.
    pub described: Vec<String>,
    /// HoldPlaced and HoldLifted entries since the last decision.
    pub history: Vec<HistoryEntry>,
    /// When the last hold in force was lifted.
    pub last_lifted_at: Option<Time>,
    /// When the next hold in force lapses by itself.
    pub next_lapse: Option<Time>,
}

impl HoldState {
    pub fn held(&self) -> bool {
        !self.in_force.is_empty()
    }
}

/// `holds` are every hold covering the object now (in force or lapsed);
/// `before` the names in force at the last decision.
pub fn hold_state(
    holds: &[Hold],
    before: &[String],
    last_lifted_at: Option<Time>,
    now: Time,
) -> HoldState {
    let mut in_force: Vec<&Hold> = holds.iter().filter(|h| h.in_force(now)).collect();
    in_force.sort_by(|a, b| a.name.cmp(&b.name));
    in_force.dedup_by(|a, b| a.name == b.name);
    let names: Vec<String> = in_force.iter().map(|h| h.name.clone()).collect();
    let entry = |event: &str, message: String| HistoryEntry {
        at: now,
        event: event.into(),
        reason: "RetentionHold".into(),
        message,
        recorded_at: None,
    };
    let mut history = Vec::new();
    for hold in in_force.iter().filter(|h| !before.contains(&h.name)) {
        let ticket = hold
            .ticket
            .as_deref()
            .map(|t| format!(" (ticket {t})"))
            .unwrap_or_default();
        history.push(entry(
            "HoldPlaced",
            format!(
                "RetentionHold {} placed: {}{ticket}",
                hold.describe(),
                hold.reason
            ),
        ));
    }
    for lifted in before.iter().filter(|name| !names.contains(name)) {
        let message = match holds.iter().find(|h| &h.name == lifted) {
            Some(hold) => format!(
                "RetentionHold {lifted} lapsed at {}: {}",
                hold.until.unwrap_or(now),
                hold.reason
            ),
            None => format!("RetentionHold {lifted} lifted (deleted)"),
        };
        history.push(entry("HoldLifted", message));
    }
    HoldState {
        last_lifted_at: if !before.is_empty() && names.is_empty() {
            Some(now)
        } else {
            last_lifted_at
        },
        next_lapse: in_force.iter().filter_map(|h| h.until).min(),
        described: in_force.iter().map(|h| h.describe()).collect(),
        in_force: names,
        history,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn on_organization(name: &str, namespace: Option<&str>) -> Hold {
        Hold {
            name: "legal".into(),
            reason: "litigation".into(),
            ticket: None,
            until: None,
            target: HoldTarget::Organization {
                name: name.into(),
                namespace: namespace.map(Into::into),
            },
        }
    }

    fn on_entitlement(namespace: &str, name: &str) -> Hold {
        Hold {
            target: HoldTarget::Entitlement {
                namespace: namespace.into(),
                name: name.into(),
            },
            ..on_organization("x", None)
        }
    }

    #[test]
    fn a_hold_on_an_entitlement_blocks_the_purge_of_the_organization_whose_namespace_holds_it() {
        let hold = on_entitlement("org-acme", "seat");
        assert!(hold.covers_organization("acme", "org-acme"));
        assert!(!hold.covers_organization("globex", "org-globex"));
        assert!(hold.covers_entitlement("org-acme", "seat", Some("acme")));
        assert!(!hold.covers_entitlement("org-acme", "other", Some("acme")));
        assert_eq!(hold.describe(), "legal (on Entitlement org-acme/seat)");
    }

    #[test]
    fn an_organizations_hold_covers_every_entitlement_in_its_namespace_and_every_one_naming_it() {
        let hold = on_organization("acme", Some("org-acme"));
        assert!(hold.covers_organization("acme", "org-acme"));
        assert!(hold.covers_entitlement("org-acme", "standalone", None));
        assert!(hold.covers_entitlement("org-acme", "mislabelled", Some("globex")));
        assert!(hold.covers_entitlement("elsewhere", "named", Some("acme")));
        assert!(!hold.covers_entitlement("elsewhere", "other", Some("globex")));
        // Before the organization exists, it still covers what names it.
        let early = on_organization("acme", None);
        assert!(early.covers_entitlement("anywhere", "seat", Some("acme")));
    }
}
