//! `status`: one object's story on one screen. What happened (its history),
//! what will happen (every deadline ahead, in order), what blocks progress
//! and how to unblock it, the effective policy with where each value came
//! from, and what it governs with what will become of each.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::core::{DynamicObject, GroupVersionKind};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;

use super::render::{self, Paint};
use super::{Global, Target, cluster};
use crate::api::common::HistoryEntry;
use crate::api::entitlement::EffectiveValue;
use crate::api::organization::Tombstone;
use crate::api::{Entitlement, EntitlementClass, EntitlementPhase, Organization, RetentionHold};
use crate::lifecycle::downstream::{Desired, Paused, binds, desired, paused, pausing};
use crate::lifecycle::notices::NoticeKind;

/// What `status -o json|yaml` prints, and the text is made of.
#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    kind: &'static str,
    name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    /// Who and what it is: display name, tax ID, code, class, product...
    about: BTreeMap<&'static str, String>,
    phase: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    since: Option<DateTime<Utc>>,
    conditions: Vec<ConditionLine>,
    happened: Vec<HistoryEntry>,
    ahead: Vec<Ahead>,
    blockers: Vec<Blocker>,
    effective_policy: Vec<PolicyLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    entitlements: Vec<EntitlementLine>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    bound: Vec<Bound>,
    #[serde(skip_serializing_if = "Option::is_none")]
    purge_plan: Option<BTreeMap<String, i64>>,
    /// What the purge deletes besides the customer's data: objects
    /// Kubernetes and tenure made by themselves.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    purge_system: BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tombstone: Option<Tombstone>,
}

#[derive(Serialize)]
struct ConditionLine {
    #[serde(rename = "type")]
    type_: String,
    status: String,
    reason: String,
    message: String,
}

/// A deadline ahead: when, what happens then, and the status field saying so.
#[derive(Serialize)]
struct Ahead {
    at: DateTime<Utc>,
    what: String,
    field: String,
}

/// The deadlines still ahead of `now`, soonest first.
struct AheadList {
    now: DateTime<Utc>,
    items: Vec<Ahead>,
}

impl Ahead {
    fn list(now: DateTime<Utc>) -> AheadList {
        AheadList {
            now,
            items: Vec::new(),
        }
    }
}

impl AheadList {
    fn add(&mut self, at: Option<DateTime<Utc>>, what: &str, field: &str) {
        if let Some(at) = at.filter(|at| *at >= self.now) {
            let (what, field) = (what.into(), field.into());
            self.items.push(Ahead { at, what, field });
        }
    }

    fn sorted(mut self) -> Vec<Ahead> {
        self.items.sort_by_key(|a| a.at);
        self.items
    }
}

/// What keeps the object from progressing, and the command that unblocks it.
#[derive(Serialize)]
struct Blocker {
    what: String,
    unblock: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct PolicyLine {
    key: String,
    value: serde_json::Value,
    from: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    raised_from: Option<String>,
}

#[derive(Serialize)]
struct EntitlementLine {
    name: String,
    code: String,
    phase: String,
    next: String,
}

/// A bound object, and what it becomes in the phases ahead.
#[derive(Serialize)]
struct Bound {
    kind: String,
    name: String,
    now: String,
    ahead: Vec<String>,
}

pub async fn run(global: &Global, object: &str) -> anyhow::Result<()> {
    let target: Target = object.parse()?;
    let (client, namespace) = cluster::connect(global).await?;
    let now = global.now();
    let report = match target {
        Target::Organization(name) => organization(&client, &name, now).await?,
        Target::Entitlement(name) => entitlement(&client, &namespace, &name, now).await?,
    };
    if !render::structured(global.output, &report)? {
        print!("{}", text(&report, now, Paint::for_stdout()));
    }
    Ok(())
}

async fn organization(client: &Client, name: &str, now: DateTime<Utc>) -> anyhow::Result<Report> {
    let org = Api::<Organization>::all(client.clone())
        .get(name)
        .await
        .map_err(cluster::explain)?;
    let status = org.status.clone().unwrap_or_default();
    let namespace = org.tenant_namespace();
    let mut about = BTreeMap::new();
    about.extend(org.spec.display_name.clone().map(|v| ("displayName", v)));
    about.extend(org.spec.tax_id.clone().map(|v| ("taxId", v)));
    about.insert("namespace", namespace.clone());
    if let Some(offboarding) = &org.spec.offboarding {
        let ticket = offboarding
            .ticket
            .as_deref()
            .map(|t| format!(", ticket {t}"))
            .unwrap_or_default();
        about.insert("offboarding", format!("{:?}{ticket}", offboarding.reason));
    }
    let mut ahead = Ahead::list(now);
    if let Some(next) = &status.next {
        ahead.add(Some(next.at), &format!("becomes {:?}", next.phase), "next");
    }
    ahead.add(
        status.portal_visible_until,
        "the customer portal stops showing it",
        "portalVisibleUntil",
    );
    ahead.add(status.purge_after, "the data retention ends", "purgeAfter");
    ahead.add(
        status.reactivation_deadline,
        "last moment to enable or unarchive it before the purge",
        "reactivationDeadline",
    );
    ahead.add(
        status.final_purge_at,
        &format!("the purge deletes namespace {namespace} and everything in it"),
        "finalPurgeAt",
    );
    let mut blockers = hold_blockers(client, &status.holds).await?;
    blockers.extend(condition_blockers(
        &status.conditions,
        &format!("org/{name}"),
        &namespace,
        name,
    ));
    let entitlements = Api::<Entitlement>::namespaced(client.clone(), &namespace)
        .list(&ListParams::default())
        .await
        .map_err(cluster::explain)?;
    let entitlements = entitlements
        .items
        .iter()
        .map(|e| {
            let s = e.status.clone().unwrap_or_default();
            EntitlementLine {
                name: e.name_any(),
                code: s.code.unwrap_or_else(|| "-".into()),
                phase: s
                    .phase
                    .map(|p| format!("{p:?}"))
                    .unwrap_or_else(|| "-".into()),
                next: s
                    .next
                    .map(|n| format!("{:?} {}", n.phase, render::relative(n.at, now)))
                    .unwrap_or_else(|| "-".into()),
            }
        })
        .collect();
    Ok(Report {
        kind: "Organization",
        name: name.into(),
        namespace: None,
        about,
        phase: status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "-".into()),
        // The last transition: reminders are kept in the history too.
        since: (status.history.iter())
            .rfind(|h| !NoticeKind::is_notice(&h.event))
            .map(|h| h.at),
        conditions: condition_lines(&status.conditions),
        happened: status.history.clone(),
        ahead: ahead.sorted(),
        blockers,
        effective_policy: policy_lines(&status.effective_policy),
        entitlements,
        bound: Vec::new(),
        purge_system: status
            .purge_plan
            .as_ref()
            .map(|p| p.system.clone())
            .unwrap_or_default(),
        purge_plan: status.purge_plan.map(|p| p.objects),
        tombstone: status.tombstone,
    })
}

async fn entitlement(
    client: &Client,
    namespace: &str,
    name: &str,
    now: DateTime<Utc>,
) -> anyhow::Result<Report> {
    let entitlement = Api::<Entitlement>::namespaced(client.clone(), namespace)
        .get(name)
        .await
        .map_err(cluster::explain)?;
    let status = entitlement.status.clone().unwrap_or_default();
    let spec = &entitlement.spec;
    let mut about = BTreeMap::new();
    about.extend(status.code.clone().map(|v| ("code", v)));
    about.insert("class", spec.class.clone());
    about.insert("product", spec.product.clone());
    about.extend(spec.organization.clone().map(|v| ("organization", v)));
    let mut ahead = Ahead::list(now);
    let d = status.deadlines.clone().unwrap_or_default();
    if let Some(next) = &status.next {
        ahead.add(Some(next.at), &format!("becomes {:?}", next.phase), "next");
    }
    ahead.add(
        d.trial_ends_at,
        "the trial ends: Expired unless spec.trial.convertedAt is set",
        "deadlines.trialEndsAt",
    );
    ahead.add(
        d.auto_cancel_at,
        "cancelled unless the payment is recovered",
        "deadlines.autoCancelAt",
    );
    let trial_ended = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.reason == "TrialEnded");
    ahead.add(
        d.expiry_grace_ends_at,
        if trial_ended {
            "cancelled unless spec.trial.convertedAt is set"
        } else {
            "cancelled unless spec.endsAt moves forward"
        },
        "deadlines.expiryGraceEndsAt",
    );
    ahead.add(
        d.portal_visible_until,
        "the customer portal stops showing it",
        "deadlines.portalVisibleUntil",
    );
    ahead.add(
        d.reactivation_deadline,
        "last moment for a reactivation",
        "deadlines.reactivationDeadline",
    );
    ahead.add(
        d.purge_after,
        "the data retention ends",
        "deadlines.purgeAfter",
    );
    ahead.add(
        d.final_purge_at,
        "the purge deletes what it governs",
        "deadlines.finalPurgeAt",
    );
    // Its namespace goes with its organization's purge.
    if let Some(tenant) = tenant_of(client, namespace).await? {
        let purge_at = tenant.status.as_ref().and_then(|s| s.final_purge_at);
        let what = format!(
            "deleted with namespace {namespace} in organization {}'s purge",
            tenant.name_any()
        );
        ahead.add(purge_at, &what, "Organization status.finalPurgeAt");
    }
    let reference = format!("ent/{name} -n {namespace}");
    let mut blockers = hold_blockers(client, &status.holds).await?;
    let organization = spec.organization.clone().unwrap_or_default();
    blockers.extend(condition_blockers(
        &status.conditions,
        &reference,
        namespace,
        &organization,
    ));
    let class = Api::<EntitlementClass>::all(client.clone())
        .get_opt(&spec.class)
        .await
        .map_err(cluster::explain)?;
    let phase = status.phase.unwrap_or_default();
    let deprovision = status
        .effective_policy
        .get("provisioning.deprovisionOnCancel")
        .and_then(|v| v.value.as_bool())
        .unwrap_or(true);
    let bound = match class {
        Some(class) => {
            let phases_ahead = phases_after(phase, status.next.as_ref().map(|n| n.phase));
            bound_objects(
                client,
                &entitlement,
                &class,
                phase,
                &phases_ahead,
                deprovision,
                !status.holds.is_empty(),
            )
            .await?
        }
        None => Vec::new(),
    };
    Ok(Report {
        kind: "Entitlement",
        name: name.into(),
        namespace: Some(namespace.into()),
        about,
        phase: status
            .phase
            .map(|p| format!("{p:?}"))
            .unwrap_or_else(|| "-".into()),
        since: status.phase_since,
        conditions: condition_lines(&status.conditions),
        happened: status.history.clone(),
        ahead: ahead.sorted(),
        blockers,
        effective_policy: policy_lines(&status.effective_policy),
        entitlements: Vec::new(),
        bound,
        purge_plan: status.purge_plan.map(|p| p.objects),
        purge_system: BTreeMap::new(),
        tombstone: None,
    })
}

/// The organization whose tenant namespace `namespace` is, if any.
async fn tenant_of(client: &Client, namespace: &str) -> anyhow::Result<Option<Organization>> {
    let organizations = Api::<Organization>::all(client.clone());
    let all = organizations
        .list(&ListParams::default())
        .await
        .map_err(cluster::explain)?;
    Ok(all
        .items
        .into_iter()
        .find(|o| o.status.as_ref().and_then(|s| s.namespace.as_deref()) == Some(namespace)))
}

/// The phases an entitlement may still reach, in order: its next one, then
/// cancellation and the purge.
fn phases_after(phase: EntitlementPhase, next: Option<EntitlementPhase>) -> Vec<EntitlementPhase> {
    use EntitlementPhase::*;
    let mut ahead: Vec<EntitlementPhase> = next.into_iter().collect();
    for later in [Cancelled, Purged] {
        let reached = phase == Purged || (phase == Cancelled && later == Cancelled);
        if !reached && !ahead.contains(&later) {
            ahead.push(later);
        }
    }
    ahead
}

/// Every object the entitlement binds, of the kinds its class governs.
async fn bound_objects(
    client: &Client,
    entitlement: &Entitlement,
    class: &EntitlementClass,
    phase: EntitlementPhase,
    phases_ahead: &[EntitlementPhase],
    deprovision: bool,
    held: bool,
) -> anyhow::Result<Vec<Bound>> {
    let namespace = entitlement.namespace().unwrap_or_default();
    let name = entitlement.name_any();
    let mut bound = Vec::new();
    for kind in &class.spec.downstream {
        let (group, version) = kind
            .api_version
            .split_once('/')
            .unwrap_or(("", &kind.api_version));
        let gvk = GroupVersionKind::gvk(group, version, &kind.kind);
        let Ok((resource, _)) = kube::discovery::pinned_kind(client, &gvk).await else {
            continue;
        };
        let api = Api::<DynamicObject>::namespaced_with(client.clone(), &namespace, &resource);
        let Ok(objects) = api.list(&ListParams::default()).await else {
            continue;
        };
        for object in objects.items {
            let labels = object.labels().clone();
            if !binds(&name, entitlement.selector(), &labels) {
                continue;
            }
            let json = serde_json::to_value(&object).unwrap_or_default();
            let now = match pausing(&kind.api_version, &kind.kind).map(|how| paused(&json, how)) {
                Some(Paused::Yes) => "paused by tenure".to_string(),
                Some(Paused::Overridden) => {
                    "paused, then changed by hand (tenure leaves it)".into()
                }
                _ => describe(desired(phase, kind, deprovision, held)).into(),
            };
            let ahead = phases_ahead
                .iter()
                .map(|p| format!("{p:?}: {}", describe(desired(*p, kind, deprovision, held))))
                .collect();
            bound.push(Bound {
                kind: kind.kind.clone(),
                name: object.name_any(),
                now,
                ahead,
            });
        }
    }
    Ok(bound)
}

fn describe(desired: Desired) -> &'static str {
    match desired {
        Desired::Running => "left running",
        Desired::Paused => "paused",
        Desired::Retained => "kept (a hold turns the delete into retain)",
        Desired::Deprovisioned => "deleted (deprovisioned)",
        Desired::Deleted => "deleted",
    }
}

/// The holds in force, each with how to lift it.
async fn hold_blockers(client: &Client, names: &[String]) -> anyhow::Result<Vec<Blocker>> {
    let api = Api::<RetentionHold>::all(client.clone());
    let mut blockers = Vec::new();
    for name in names {
        let what = match api.get_opt(name).await.map_err(cluster::explain)? {
            Some(hold) => {
                let ticket = hold
                    .spec
                    .ticket
                    .map(|t| format!(", ticket {t}"))
                    .unwrap_or_default();
                let until = hold
                    .spec
                    .until
                    .map(|u| format!(", until {}", render::date(u)))
                    .unwrap_or_default();
                format!("RetentionHold {name}: {}{ticket}{until}", hold.spec.reason)
            }
            None => format!("RetentionHold {name}"),
        };
        blockers.push(Blocker {
            what,
            unblock: format!("kubectl tenure release {name}"),
        });
    }
    Ok(blockers)
}

/// What the conditions say blocks progress (holds aside), and the fix.
fn condition_blockers(
    conditions: &[Condition],
    reference: &str,
    namespace: &str,
    organization: &str,
) -> Vec<Blocker> {
    let mut blockers = Vec::new();
    for c in conditions.iter().filter(|c| c.status == "True") {
        let unblock = match (c.type_.as_str(), c.reason.as_str()) {
            ("PurgeBlocked", "Held") => continue,
            ("PurgeBlocked", "AwaitingConfirmation") => format!(
                "kubectl tenure confirm-delete {reference} --approved-by <who> --reference <ticket>"
            ),
            ("PurgeBlocked", "AwaitingExport") => format!(
                "create a DataExport in namespace {namespace} with spec.organization: {organization}"
            ),
            ("PurgeBlocked", "OrganizationOffboarded") => {
                format!("nothing: its data goes with organization {organization}'s purge")
            }
            ("Stalled", _) => "change what the message names".into(),
            ("ReactivationRefused", _) => {
                "see the message: the reactivation window or policy".into()
            }
            _ => continue,
        };
        blockers.push(Blocker {
            what: format!("{} ({}): {}", c.type_, c.reason, c.message),
            unblock,
        });
    }
    blockers
}

fn condition_lines(conditions: &[Condition]) -> Vec<ConditionLine> {
    conditions
        .iter()
        .filter(|c| c.type_ == "Ready" || c.status == "True")
        .map(|c| ConditionLine {
            type_: c.type_.clone(),
            status: c.status.clone(),
            reason: c.reason.clone(),
            message: c.message.clone(),
        })
        .collect()
}

fn policy_lines(effective: &BTreeMap<String, EffectiveValue>) -> Vec<PolicyLine> {
    effective
        .iter()
        .map(|(key, v)| PolicyLine {
            key: key.clone(),
            value: v.value.clone(),
            from: v.from.clone(),
            raised_from: v
                .raised_from
                .as_ref()
                .map(|r| format!("{} from {}", r.value, r.from)),
        })
        .collect()
}

fn text(report: &Report, now: DateTime<Utc>, paint: Paint) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let title = match &report.namespace {
        Some(namespace) => format!("{} {namespace}/{}", report.kind, report.name),
        None => format!("{} {}", report.kind, report.name),
    };
    let _ = writeln!(out, "{}", paint.bold(&title));
    for (key, value) in &report.about {
        let _ = writeln!(out, "  {:<14}{}", format!("{key}:"), render::fit(value, 64));
    }
    let since = report
        .since
        .map(|at| {
            format!(
                " since {} ({})",
                render::date(at),
                render::relative(at, now)
            )
        })
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "  {:<14}{}{since}",
        "phase:",
        paint.phase(&report.phase)
    );
    for c in &report.conditions {
        let head = format!(
            "  {:<14}{} {}: ",
            format!("{}:", c.type_),
            c.status,
            c.reason
        );
        let _ = writeln!(
            out,
            "{head}{}",
            render::wrap(&c.message, head.chars().count(), 16)
        );
    }

    let _ = writeln!(out, "\n{}", paint.bold("What happened"));
    if report.happened.is_empty() {
        let _ = writeln!(out, "  nothing yet");
    }
    for entry in &report.happened {
        let event = format!("{:<19}", render::fit(&entry.event, 19));
        let _ = writeln!(
            out,
            "  {}  {}  {}",
            render::date(entry.at),
            paint.phase(&event),
            render::wrap(&entry.message, 41, 41)
        );
    }
    let _ = writeln!(out, "\n{}", paint.bold("What will happen"));
    if report.ahead.is_empty() {
        let _ = writeln!(out, "  nothing is scheduled");
    }
    for a in &report.ahead {
        let when = format!("{:<14}", render::relative(a.at, now));
        let line = format!("{} ({})", a.what, a.field);
        let _ = writeln!(
            out,
            "  {}  {when}  {}",
            render::date(a.at),
            render::wrap(&line, 36, 36)
        );
    }
    if !report.blockers.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("What blocks it"));
        for b in &report.blockers {
            let _ = writeln!(out, "  {}", render::wrap(&b.what, 2, 4));
            let _ = writeln!(
                out,
                "    {} {}",
                paint.dim("unblock:"),
                render::wrap(&b.unblock, 13, 6)
            );
        }
    }
    if !report.entitlements.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("Entitlements"));
        let _ = writeln!(out, "  {:<22}{:<17}{:<11}NEXT", "NAME", "CODE", "PHASE");
        for e in &report.entitlements {
            let _ = writeln!(
                out,
                "  {:<22}{:<17}{:<11}{}",
                render::fit(&e.name, 21),
                e.code,
                e.phase,
                render::fit(&e.next, 26)
            );
        }
    }
    if !report.bound.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("What it governs"));
        for b in &report.bound {
            let _ = writeln!(out, "  {} {}: now {}", b.kind, b.name, b.now);
            if !b.ahead.is_empty() {
                let _ = writeln!(out, "    then {}", render::wrap(&b.ahead.join("; "), 9, 9));
            }
        }
    }
    if let Some(plan) = &report.purge_plan {
        let _ = writeln!(out, "\n{}", paint.bold("The purge deletes"));
        let _ = writeln!(out, "  {}", render::wrap(&render::counts(plan), 2, 2));
        if !report.purge_system.is_empty() {
            let system = format!(
                "and what Kubernetes and tenure made by themselves: {}",
                render::counts(&report.purge_system)
            );
            let _ = writeln!(out, "  {}", paint.dim(&render::wrap(&system, 2, 2)));
        }
    }
    if let Some(tombstone) = &report.tombstone {
        let _ = writeln!(out, "\n{}", paint.bold("Tombstone"));
        let _ = writeln!(
            out,
            "  purged {}; deleted {}",
            render::date(tombstone.purged_at),
            render::wrap(&render::counts(&tombstone.deleted), 30, 4)
        );
        if !tombstone.system.is_empty() {
            let system = format!(
                "and what Kubernetes and tenure made by themselves: {}",
                render::counts(&tombstone.system)
            );
            let _ = writeln!(out, "  {}", render::wrap(&system, 2, 2));
        }
    }
    let _ = writeln!(out, "\n{}", paint.bold("Effective policy"));
    for p in &report.effective_policy {
        let raised = p
            .raised_from
            .as_ref()
            .map(|r| format!(" (raised from {r})"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "  {:<38}{:<10}{}",
            p.key,
            render::fit(&p.value.to_string(), 9),
            render::fit(&format!("{}{raised}", p.from), 30)
        );
    }
    out
}
