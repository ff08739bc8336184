//! `purge-queue`: every announced purge, in time order, with what each will
//! delete and what blocks the ones that cannot be dated: the review an
//! operator reads before deletion runs.

use std::collections::BTreeMap;

use chrono::{DateTime, TimeDelta, Utc};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use serde::Serialize;

use super::render::{self, Paint};
use super::{Global, cluster};
use crate::api::{Entitlement, EntitlementPhase, Organization, OrganizationPhase};

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Queue {
    now: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    until: Option<DateTime<Utc>>,
    /// Announced purges, soonest first.
    scheduled: Vec<Entry>,
    /// Purges something blocks (a hold, a confirmation, an export, a stall):
    /// not dated until it is cleared, or past their date and not running.
    blocked: Vec<Entry>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Entry {
    /// `org/<name>` or `ent/<name> -n <namespace>`, as the other commands take it.
    object: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    purge_at: Option<DateTime<Utc>>,
    phase: String,
    /// What the purge deletes: the tenant namespace, or the bound objects.
    deletes: String,
    /// Kind -> count, once counted (from the announcement on).
    objects: BTreeMap<String, i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    blocked_by: Option<String>,
    /// The command that postpones it.
    extend: String,
}

pub async fn run(global: &Global, within: Option<TimeDelta>) -> anyhow::Result<()> {
    let (client, namespace) = cluster::connect(global).await?;
    let now = global.now();
    let until = within.map(|w| now + w);
    let organizations = Api::<Organization>::all(client.clone())
        .list(&ListParams::default())
        .await
        .map_err(cluster::explain)?;
    let entitlements = match global.all_namespaces || global.namespace.is_none() {
        true => Api::<Entitlement>::all(client.clone()),
        false => Api::<Entitlement>::namespaced(client.clone(), &namespace),
    };
    let entitlements = entitlements
        .list(&ListParams::default())
        .await
        .map_err(cluster::explain)?;
    let mut entries: Vec<Entry> = organizations
        .items
        .iter()
        .filter_map(|o| organization_entry(o, now))
        .collect();
    entries.extend(
        entitlements
            .items
            .iter()
            .filter_map(|e| entitlement_entry(e, now)),
    );
    let (mut scheduled, mut blocked): (Vec<Entry>, Vec<Entry>) =
        entries.into_iter().partition(|e| e.blocked_by.is_none());
    scheduled.retain(|e| until.is_none_or(|until| e.purge_at.is_some_and(|at| at <= until)));
    scheduled.sort_by(|a, b| {
        a.purge_at
            .cmp(&b.purge_at)
            .then_with(|| a.object.cmp(&b.object))
    });
    blocked.sort_by(|a, b| a.object.cmp(&b.object));
    let queue = Queue {
        now,
        until,
        scheduled,
        blocked,
    };
    if !render::structured(global.output, &queue)? {
        print!("{}", text(&queue, Paint::for_stdout()));
    }
    Ok(())
}

/// What keeps a purge from running, if a condition says so: a blocker
/// (an offboarded organization's entitlements are not blocked: they go
/// with it), or a stall (a purge past its date that cannot run).
fn blocker(conditions: &[Condition]) -> Option<String> {
    conditions
        .iter()
        .find(|c| {
            let blocked = c.type_ == "PurgeBlocked" && c.reason != "OrganizationOffboarded";
            (blocked || c.type_ == "Stalled") && c.status == "True"
        })
        .map(|c| format!("{}: {}", c.reason, c.message))
}

/// The purge of an organization or entitlement, in the queue if it is
/// dated or blocked.
struct Purge<'a> {
    object: String,
    phase: String,
    purge_at: Option<DateTime<Utc>>,
    conditions: &'a [Condition],
    deletes: String,
    objects: Option<&'a BTreeMap<String, i64>>,
}

impl Purge<'_> {
    fn entry(self, now: DateTime<Utc>) -> Option<Entry> {
        let blocked_by = blocker(self.conditions);
        let purge_at = self.purge_at;
        if purge_at.is_none() && blocked_by.is_none() {
            return None;
        }
        // A hold a month past the date shown (or now, for a blocked one).
        let until = purge_at.unwrap_or(now) + TimeDelta::days(30);
        let extend = format!(
            "kubectl tenure hold {} --reason <why> --until {}",
            self.object,
            until.format("%Y-%m-%d")
        );
        Some(Entry {
            object: self.object,
            purge_at,
            phase: self.phase,
            deletes: self.deletes,
            objects: self.objects.cloned().unwrap_or_default(),
            blocked_by,
            extend,
        })
    }
}

fn organization_entry(org: &Organization, now: DateTime<Utc>) -> Option<Entry> {
    use OrganizationPhase::*;
    let status = org.status.as_ref()?;
    let phase = status.phase.filter(|p| !matches!(p, Active | Purged))?;
    Purge {
        object: format!("org/{}", org.name_any()),
        phase: format!("{phase:?}"),
        purge_at: status.final_purge_at,
        conditions: &status.conditions,
        deletes: format!("namespace {} and everything in it", org.tenant_namespace()),
        objects: status.purge_plan.as_ref().map(|p| &p.objects),
    }
    .entry(now)
}

fn entitlement_entry(entitlement: &Entitlement, now: DateTime<Utc>) -> Option<Entry> {
    let status = entitlement.status.as_ref()?;
    if status.phase != Some(EntitlementPhase::Cancelled) {
        return None;
    }
    Purge {
        object: format!(
            "ent/{} -n {}",
            entitlement.name_any(),
            entitlement.namespace().unwrap_or_default()
        ),
        phase: "Cancelled".into(),
        purge_at: status.deadlines.as_ref().and_then(|d| d.final_purge_at),
        conditions: &status.conditions,
        deletes: "the objects it governs".into(),
        objects: status.purge_plan.as_ref().map(|p| &p.objects),
    }
    .entry(now)
}

fn text(queue: &Queue, paint: Paint) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let horizon = match queue.until {
        Some(until) => format!("due by {}", render::date(until)),
        None => "announced".into(),
    };
    let _ = writeln!(
        out,
        "{}",
        paint.bold(&format!("Purges {horizon}: {}", queue.scheduled.len()))
    );
    if queue.scheduled.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for e in &queue.scheduled {
        let at = e.purge_at.unwrap_or(queue.now);
        let _ = writeln!(
            out,
            "\n  {}  {:<14}  {}",
            render::date(at),
            render::relative(at, queue.now),
            paint.bold(&e.object)
        );
        entry_lines(&mut out, e, paint);
    }
    if !queue.blocked.is_empty() {
        let _ = writeln!(
            out,
            "\n{}",
            paint.bold(&format!("Blocked: {}", queue.blocked.len()))
        );
        for e in &queue.blocked {
            let due = e
                .purge_at
                .map(|at| format!(", due {}", render::date(at)))
                .unwrap_or_default();
            let _ = writeln!(out, "\n  {}  ({}{due})", paint.bold(&e.object), e.phase);
            if let Some(why) = &e.blocked_by {
                let _ = writeln!(
                    out,
                    "    {} {}",
                    paint.yellow("blocked:"),
                    render::wrap(why, 13, 6)
                );
            }
            entry_lines(&mut out, e, paint);
        }
    }
    let _ = writeln!(
        out,
        "\n{}",
        render::wrap(
            "To postpone a purge, place a hold (the command under each) or set an organization's spec.retention.extendUntil. `kubectl tenure status <object>` tells the whole story.",
            0,
            0
        )
    );
    out
}

fn entry_lines(out: &mut String, e: &Entry, paint: Paint) {
    use std::fmt::Write;
    let counted = match e.objects.is_empty() {
        true => String::new(),
        false => format!(": {}", render::counts(&e.objects)),
    };
    let _ = writeln!(
        out,
        "    {} {}",
        paint.dim("deletes:"),
        render::wrap(&format!("{}{counted}", e.deletes), 13, 6)
    );
    // A command longer than the line continues on the next, as a shell
    // reads it, so that it still copies and pastes whole.
    let extend = match e.extend.split_once(" --reason") {
        Some((hold, rest)) if 12 + e.extend.len() > render::WIDTH => {
            format!("{hold} \\\n             --reason{rest}")
        }
        _ => e.extend.clone(),
    };
    let _ = writeln!(out, "    {} {extend}", paint.dim("extend:"));
}
