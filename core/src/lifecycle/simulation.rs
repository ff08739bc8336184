//! `simulate`: the same core the controller runs, over simulated time, on
//! objects held in memory. It answers "what will happen, and when" without a
//! cluster, and without touching one.
//!
//! The simulation stands in for the controller's shell the way a cluster
//! would: each object is decided when it is due (its own deadline, a hold
//! lapsing, or a change of something it depends on), its status is written
//! as the controller would write it, a tenant namespace is created when an
//! organization wants one and deleted when its purge runs (taking the
//! entitlements in it along), and every history entry and reminder is kept
//! as a [`Transition`]. Nothing is read or written but the objects given.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::entitlement;
use super::hold::Hold;
use super::notices::Notice;
use super::organization::{self, Namespace, PurgeStep, entitlement_locks};
use super::references::{self, Found};
use crate::api::common::HistoryEntry;
use crate::api::organization::PurgePlan;
use crate::api::{
    DataExport, Entitlement, EntitlementClass, LifecyclePolicy, Organization, RetentionHold,
};

type Time = DateTime<Utc>;

/// Everything a simulation runs on: the objects as they are at its start
/// (with the status the controller wrote, if any).
#[derive(Clone, Debug, Default)]
pub struct World {
    pub organizations: Vec<Organization>,
    pub entitlements: Vec<Entitlement>,
    pub policies: Vec<LifecyclePolicy>,
    pub classes: Vec<EntitlementClass>,
    pub holds: Vec<RetentionHold>,
    /// DataExports as they stand: one whose artifact still exists counts for
    /// `purge.requireExport` until it expires.
    pub exports: Vec<DataExport>,
}

/// One thing that happens to one object: a history entry, a reminder, or
/// the object going with its namespace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// When it takes effect (it may be backdated to the fact behind it).
    pub at: Time,
    /// When the controller would act on it: at or after `at`.
    pub decided_at: Time,
    pub kind: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
    pub event: String,
    pub reason: String,
    pub message: String,
    /// The object's phase once decided.
    pub phase: String,
}

/// What a simulation found.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// Every transition, in the order the controller would act on them.
    pub transitions: Vec<Transition>,
    /// The objects as they stand at the end; the entitlements deleted with
    /// their organization's namespace are in `deleted` instead.
    pub world: World,
    pub deleted: Vec<Entitlement>,
    /// How many decisions the core made.
    pub decisions: usize,
    /// Objects that never settled at one instant (a bug, if ever non-empty).
    pub unsettled: Vec<String>,
}

/// An object of the world, by its index.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Id {
    Organization(usize),
    Entitlement(usize),
}

/// Decisions one object may take at one instant before it counts as
/// unsettled: a decision that keeps changing what another reads would loop.
const DECISIONS_PER_INSTANT: usize = 16;

/// Runs the lifecycle of everything in `world` from `from` until `until`.
pub fn simulate(world: World, from: Time, until: Time) -> Outcome {
    let mut simulation = Simulation::new(world, from);
    while let Some((at, id)) = simulation.due.pop_first() {
        if at > until {
            break;
        }
        simulation.decide(id, at);
    }
    let mut transitions = simulation.transitions;
    transitions.sort_by_key(|t| t.decided_at);
    let unsettled: Vec<String> = simulation.unsettled.into_iter().collect();
    let mut world = simulation.world;
    let mut deleted = Vec::new();
    for (i, entitlement) in std::mem::take(&mut world.entitlements)
        .into_iter()
        .enumerate()
    {
        match simulation.gone.contains(&i) {
            true => deleted.push(entitlement),
            false => world.entitlements.push(entitlement),
        }
    }
    Outcome {
        transitions,
        world,
        deleted,
        decisions: simulation.decisions,
        unsettled,
    }
}

struct Simulation {
    world: World,
    /// What is due, and when: the controller's work queue.
    due: BTreeSet<(Time, Id)>,
    /// When each object is due next, so that a new time replaces the old.
    next: BTreeMap<Id, Time>,
    /// Tenant namespaces as the controller would find them.
    namespaces: BTreeMap<String, Namespace>,
    /// Entitlements gone with their namespace.
    gone: BTreeSet<usize>,
    transitions: Vec<Transition>,
    decisions: usize,
    /// Decisions per object at the current instant.
    this_instant: (Time, BTreeMap<Id, usize>),
    unsettled: BTreeSet<String>,
    /// Entitlements that stalled, and why: said once, then they wait for a
    /// change, as the controller's do.
    stalled: BTreeMap<usize, String>,
    /// Lookups, as the controller's index has them: organizations by name
    /// and by tenant namespace, entitlements by namespace and by the
    /// organization they name.
    organization_named: HashMap<String, usize>,
    tenants_of: HashMap<String, Vec<usize>>,
    entitlements_in: HashMap<String, Vec<usize>>,
    entitlements_naming: HashMap<String, Vec<usize>>,
}

impl Simulation {
    fn new(mut world: World, from: Time) -> Self {
        // A manifest not applied yet is created when the simulation starts.
        let created = Some(super::conditions::to_time(from));
        for meta in world
            .organizations
            .iter_mut()
            .map(|o| &mut o.metadata)
            .chain(world.entitlements.iter_mut().map(|e| &mut e.metadata))
        {
            meta.creation_timestamp = meta.creation_timestamp.take().or(created.clone());
        }
        let namespaces = world
            .organizations
            .iter()
            .filter_map(|org| {
                let recorded = org.status.as_ref()?.namespace.clone()?;
                let gone = org.status.as_ref()?.namespace_deleted_at.is_some();
                Some((
                    recorded,
                    if gone {
                        Namespace::Missing
                    } else {
                        Namespace::Owned
                    },
                ))
            })
            .collect();
        let mut due = BTreeSet::new();
        let ids = (0..world.organizations.len())
            .map(Id::Organization)
            .chain((0..world.entitlements.len()).map(Id::Entitlement));
        for id in ids {
            due.insert((from, id));
        }
        Self {
            due,
            next: BTreeMap::new(),
            namespaces,
            gone: BTreeSet::new(),
            transitions: Vec::new(),
            decisions: 0,
            this_instant: (from, BTreeMap::new()),
            unsettled: BTreeSet::new(),
            stalled: BTreeMap::new(),
            organization_named: world
                .organizations
                .iter()
                .enumerate()
                .map(|(i, o)| (o.metadata.name.clone().unwrap_or_default(), i))
                .collect(),
            tenants_of: group(
                world
                    .organizations
                    .iter()
                    .map(|o| Some(o.tenant_namespace())),
            ),
            entitlements_in: group(
                world
                    .entitlements
                    .iter()
                    .map(|e| e.metadata.namespace.clone()),
            ),
            entitlements_naming: group(
                world
                    .entitlements
                    .iter()
                    .map(|e| e.spec.organization.clone()),
            ),
            world,
        }
    }

    fn decide(&mut self, id: Id, now: Time) {
        if self.this_instant.0 != now {
            self.this_instant = (now, BTreeMap::new());
        }
        let count = self.this_instant.1.entry(id).or_default();
        *count += 1;
        if *count > DECISIONS_PER_INSTANT {
            self.unsettled.insert(self.describe(id));
            return;
        }
        self.decisions += 1;
        match id {
            Id::Organization(i) => self.decide_organization(i, now),
            Id::Entitlement(i) if !self.gone.contains(&i) => self.decide_entitlement(i, now),
            Id::Entitlement(_) => {}
        }
    }

    fn describe(&self, id: Id) -> String {
        match id {
            Id::Organization(i) => format!(
                "Organization/{}",
                self.world.organizations[i]
                    .metadata
                    .name
                    .as_deref()
                    .unwrap_or_default()
            ),
            Id::Entitlement(i) => {
                let e = &self.world.entitlements[i];
                format!(
                    "Entitlement/{}/{}",
                    e.metadata.namespace.as_deref().unwrap_or_default(),
                    e.metadata.name.as_deref().unwrap_or_default()
                )
            }
        }
    }

    /// Due again at `at`, if that is later than `now` (the deadline ahead);
    /// at `now` when something it reads just changed.
    fn schedule(&mut self, id: Id, at: Time) {
        if let Some(old) = self.next.insert(id, at) {
            self.due.remove(&(old, id));
        }
        self.due.insert((at, id));
    }

    fn holds(&self) -> Vec<Hold> {
        self.world
            .holds
            .iter()
            .filter(|h| h.metadata.deletion_timestamp.is_none())
            .map(|h| {
                Hold::of(h, |name| {
                    let i = *self.organization_named.get(name)?;
                    Some(self.world.organizations[i].tenant_namespace())
                })
            })
            .collect()
    }

    fn live_entitlements_in(&self, namespace: &str) -> Vec<usize> {
        let all = self.entitlements_in.get(namespace).into_iter().flatten();
        all.copied().filter(|i| !self.gone.contains(i)).collect()
    }

    fn decide_organization(&mut self, i: usize, now: Time) {
        let policies: Vec<&LifecyclePolicy> = self.world.policies.iter().collect();
        let org = self.world.organizations[i].clone();
        let name = org.metadata.name.clone().unwrap_or_default();
        let namespace_name = org.tenant_namespace();
        let namespace = self
            .namespaces
            .get(&namespace_name)
            .cloned()
            .unwrap_or(Namespace::Missing);
        let policy = organization::PolicyView::of(&policies, &name);
        let in_namespace = self.live_entitlements_in(&namespace_name);
        let locks = entitlement_locks(
            in_namespace.iter().map(|e| &self.world.entitlements[*e]),
            &policies,
        );
        let holds: Vec<Hold> = self
            .holds()
            .into_iter()
            .filter(|h| h.covers_organization(&name, &namespace_name))
            .collect();
        let created = created_at(&org.metadata);
        let recorded = org.status.clone().unwrap_or_default();
        let decision = organization::decide(&organization::Input {
            name: &name,
            spec: &org.spec,
            created,
            recorded: Some(&recorded),
            policy: &policy.effective,
            locked_archived: policy.locked_archived.as_ref(),
            locked_disabled: policy.locked_disabled.as_ref(),
            entitlement_locks: &locks,
            holds: &holds,
            namespace_name: &namespace_name,
            namespace: &namespace,
            export_available: self.export_available(&namespace_name, now),
            remnants: &BTreeMap::new(),
            deleting: org.metadata.deletion_timestamp.is_some(),
            now,
        });
        let mut status = recorded.clone();
        decision.write_to(&mut status);
        if decision.purge.counts_plan() {
            // What is in the namespace is not known here: the plan names it.
            status.purge_plan = Some(PurgePlan {
                namespaces: vec![namespace_name.clone()],
                ..PurgePlan::default()
            });
        }
        if decision.provision_namespace {
            self.namespaces
                .insert(namespace_name.clone(), Namespace::Owned);
        }
        let mut gone_now = Vec::new();
        if matches!(decision.purge, PurgeStep::DeleteNamespace { .. })
            && status.namespace_deleted_at.is_none()
        {
            // The namespace goes, and everything in it with it.
            status.namespace_deleted_at = Some(now);
            self.namespaces
                .insert(namespace_name.clone(), Namespace::Missing);
            gone_now = in_namespace.clone();
        }
        let phase = format!("{:?}", decision.phase);
        let mut told = decision.history.clone();
        told.extend(decision.notices.iter().map(Notice::history_entry));
        self.record(Id::Organization(i), &told, None, now, &phase);
        let changed = org.status.as_ref() != Some(&status) || decision.provision_namespace;
        self.world.organizations[i].status = Some(status);
        for e in gone_now {
            self.gone.insert(e);
            let entitlement = &self.world.entitlements[e];
            let entry = HistoryEntry {
                at: now,
                event: "Deleted".into(),
                reason: "NamespaceDeleted".into(),
                message: format!(
                    "deleted with namespace {namespace_name} in the purge of organization {name}"
                ),
                recorded_at: None,
            };
            let phase = entitlement
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .map(|p| format!("{p:?}"))
                .unwrap_or_default();
            self.record(Id::Entitlement(e), &[entry], None, now, &phase);
        }
        if changed {
            // Its entitlements read its standing; its purge reads itself.
            self.schedule(Id::Organization(i), now);
            for e in self.entitlements_of(&name, &namespace_name) {
                self.schedule(Id::Entitlement(e), now);
            }
        } else if let Some(at) = decision.wake_at.filter(|at| *at > now) {
            self.schedule(Id::Organization(i), at);
        }
    }

    /// Whether a DataExport in `namespace` counts for `purge.requireExport`
    /// at `now`.
    fn export_available(&self, namespace: &str, now: Time) -> bool {
        let statuses = self
            .world
            .exports
            .iter()
            .filter(|e| e.metadata.namespace.as_deref() == Some(namespace))
            .filter_map(|e| Some((e.metadata.name.as_deref()?, e.status.as_ref()?)));
        super::export::succeeded_exports(statuses, now).1
    }

    /// The entitlements that read organization `name`'s standing.
    fn entitlements_of(&self, name: &str, namespace: &str) -> BTreeSet<usize> {
        let naming = self.entitlements_naming.get(name).into_iter().flatten();
        naming
            .copied()
            .filter(|i| !self.gone.contains(i))
            .chain(self.live_entitlements_in(namespace))
            .collect()
    }

    fn decide_entitlement(&mut self, i: usize, now: Time) {
        let policies: Vec<&LifecyclePolicy> = self.world.policies.iter().collect();
        let entitlement = &self.world.entitlements[i].clone();
        let namespace = entitlement.metadata.namespace.clone().unwrap_or_default();
        let name = entitlement.metadata.name.clone().unwrap_or_default();
        let class = self
            .world
            .classes
            .iter()
            .find(|c| c.metadata.name.as_deref() == Some(&entitlement.spec.class));
        let organization = entitlement
            .spec
            .organization
            .as_deref()
            .and_then(|name| self.organization_named.get(name))
            .map(|i| &self.world.organizations[*i]);
        let tenant = self
            .organization_owning(&namespace)
            .map(|i| &self.world.organizations[i]);
        let found = Found {
            entitlement,
            class,
            class_refusal: None,
            organization,
            tenant,
        };
        let references = match references::check(&found) {
            Ok(references) => references,
            Err(verdict) => {
                // Said once (a wait for its organization's first decision
                // not at all), then it waits for a change.
                let quiet = references::waits_quietly(&found, &verdict);
                let said = self.stalled.insert(i, verdict.reason.clone());
                if !quiet && said.as_ref() != Some(&verdict.reason) {
                    let entry = HistoryEntry {
                        at: now,
                        event: "Stalled".into(),
                        reason: verdict.reason,
                        message: verdict.message,
                        recorded_at: None,
                    };
                    self.record(Id::Entitlement(i), &[entry], None, now, "Stalled");
                }
                return;
            }
        };
        self.stalled.remove(&i);
        let policy = entitlement::PolicyView::of(&policies, entitlement);
        let holds: Vec<Hold> = self
            .holds()
            .into_iter()
            .filter(|h| {
                h.covers_entitlement(&namespace, &name, entitlement.spec.organization.as_deref())
            })
            .collect();
        let recorded = entitlement.known_status();
        let decision = entitlement::decide(&entitlement::Input {
            spec: &entitlement.spec,
            created: created_at(&entitlement.metadata),
            organization: &references.standing,
            organization_purge: references.organization_purge.as_ref(),
            retention_locked: policy.retention_locked,
            holds: &holds,
            recorded: recorded.as_ref(),
            policy: &policy.effective,
            now,
        });
        let mut status = recorded.clone().unwrap_or_default();
        decision.write_to(&mut status);
        let phase = format!("{:?}", decision.phase);
        let reminder = decision.reminder.as_ref().map(Notice::history_entry);
        self.record(Id::Entitlement(i), &decision.history, reminder, now, &phase);
        let before = recorded.as_ref().and_then(|s| s.phase);
        let changed = self.world.entitlements[i].status.as_ref() != Some(&status);
        self.world.entitlements[i].status = Some(status);
        if changed {
            self.schedule(Id::Entitlement(i), now);
        } else if let Some(at) = decision.wake_at.filter(|at| *at > now) {
            self.schedule(Id::Entitlement(i), at);
        }
        // Its organization counts it, and waits for its locked retention.
        if before != Some(decision.phase)
            && let Some(owner) = self.organization_owning(&namespace)
        {
            self.schedule(Id::Organization(owner), now);
        }
    }

    /// The organization that owns `namespace`: its status records it.
    fn organization_owning(&self, namespace: &str) -> Option<usize> {
        let tenants = self.tenants_of.get(namespace).into_iter().flatten();
        tenants.copied().find(|i| {
            let status = self.world.organizations[*i].status.as_ref();
            status.and_then(|s| s.namespace.as_deref()) == Some(namespace)
        })
    }

    fn record(
        &mut self,
        id: Id,
        history: &[HistoryEntry],
        reminder: Option<HistoryEntry>,
        now: Time,
        phase: &str,
    ) {
        let (kind, namespace, name) = match id {
            Id::Organization(i) => {
                let o = &self.world.organizations[i];
                ("Organization", None, o.metadata.name.clone())
            }
            Id::Entitlement(i) => {
                let e = &self.world.entitlements[i];
                (
                    "Entitlement",
                    e.metadata.namespace.clone(),
                    e.metadata.name.clone(),
                )
            }
        };
        for entry in history.iter().chain(reminder.as_ref()) {
            self.transitions.push(Transition {
                at: entry.at,
                decided_at: now,
                kind: kind.into(),
                namespace: namespace.clone(),
                name: name.clone().unwrap_or_default(),
                event: entry.event.clone(),
                reason: entry.reason.clone(),
                message: entry.message.clone(),
                phase: phase.into(),
            });
        }
    }
}

/// Indexes of `keys` by key (None: not indexed).
fn group(keys: impl Iterator<Item = Option<String>>) -> HashMap<String, Vec<usize>> {
    let mut groups: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, key) in keys.enumerate() {
        if let Some(key) = key {
            groups.entry(key).or_default().push(i);
        }
    }
    groups
}

/// When an object was created (see [`Simulation::new`]).
fn created_at(meta: &k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta) -> Time {
    meta.creation_timestamp
        .as_ref()
        .map(super::conditions::from_time)
        .unwrap_or_default()
}

#[cfg(test)]
#[path = "simulation_tests.rs"]
mod tests;
