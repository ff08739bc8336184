//! `simulate`: the same pure core the controller runs, over simulated time,
//! on manifests (offline) or on the cluster's current state with manifests
//! applied over it (`--live`): "what will happen in the next 90 days if I
//! apply this policy" without applying it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use kube::api::ListParams;
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::render::{self, Paint};
use super::{Global, cluster};
use crate::lifecycle::simulation::{Transition, World, simulate};

/// The default classes and global policy the chart and the local cluster
/// install: what an offline simulation assumes where the manifests say
/// nothing.
const DEFAULTS: &str = include_str!("../../charts/tenure/files/defaults.yaml");

#[derive(clap::Args, Debug)]
pub struct SimulateArgs {
    /// Manifests: files, directories (read recursively) or `-` for stdin.
    #[arg(short = 'f', long = "filename", value_name = "PATH")]
    files: Vec<PathBuf>,
    /// Start from the cluster's current state (statuses included), with the
    /// manifests of -f applied over it.
    #[arg(long)]
    live: bool,
    /// When the simulation starts (RFC 3339 or a date; default: now).
    #[arg(long, value_name = "TIME", value_parser = render::parse_instant)]
    from: Option<DateTime<Utc>>,
    /// How long it runs (`2y`, `90d`) or until when (RFC 3339 or a date).
    #[arg(long, value_name = "DURATION|TIME", default_value = "2y", value_parser = render::parse_until)]
    until: render::Until,
}

/// What `simulate -o json|yaml` prints.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report {
    from: DateTime<Utc>,
    until: DateTime<Utc>,
    objects: BTreeMap<&'static str, usize>,
    transitions: Vec<Transition>,
    /// Every organization and entitlement, with its phase at the end.
    at_the_end: Vec<Standing>,
    /// Objects that never settled at one instant: a bug to report.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unsettled: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Standing {
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    namespace: Option<String>,
    name: String,
    phase: String,
}

pub async fn run(global: &Global, args: SimulateArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        args.live || !args.files.is_empty(),
        "nothing to simulate: give manifests with -f (files or directories), or --live for the cluster's state"
    );
    let from = args.from.unwrap_or_else(|| global.now());
    let until = args.until.from(from);
    anyhow::ensure!(
        until > from,
        "--until {} is not after the start, {}",
        render::rfc3339(until),
        render::rfc3339(from)
    );
    let mut manifests = Manifests::default();
    let default_namespace;
    let mut world = if args.live {
        let (client, namespace) = cluster::connect(global).await?;
        default_namespace = namespace;
        live_world(&client).await?
    } else {
        default_namespace = global.namespace.clone().unwrap_or_else(|| "default".into());
        World::default()
    };
    for path in &args.files {
        manifests.read_path(path)?;
    }
    if !args.live {
        manifests.read_defaults()?;
    }
    let ignored = manifests.ignored.clone();
    manifests.apply_to(&mut world, &default_namespace);
    let objects = BTreeMap::from([
        ("organizations", world.organizations.len()),
        ("entitlements", world.entitlements.len()),
        ("policies", world.policies.len()),
        ("classes", world.classes.len()),
        ("holds", world.holds.len()),
    ]);
    let outcome = simulate(world, from, until);
    let mut at_the_end = standings(&outcome.world);
    at_the_end.extend(outcome.deleted.iter().map(|e| Standing {
        kind: "Entitlement",
        namespace: e.namespace(),
        name: e.name_any(),
        phase: "Deleted".into(),
    }));
    let report = Report {
        from,
        until,
        objects,
        transitions: outcome.transitions,
        at_the_end,
        unsettled: outcome.unsettled,
    };
    if !render::structured(global.output, &report)? {
        print!("{}", text(&report, &ignored, Paint::for_stdout()));
    }
    Ok(())
}

fn standings(world: &World) -> Vec<Standing> {
    let organizations = world.organizations.iter().map(|o| Standing {
        kind: "Organization",
        namespace: None,
        name: o.name_any(),
        phase: phase_name(o.status.as_ref().and_then(|s| s.phase)),
    });
    let entitlements = world.entitlements.iter().map(|e| Standing {
        kind: "Entitlement",
        namespace: e.namespace(),
        name: e.name_any(),
        phase: phase_name(e.status.as_ref().and_then(|s| s.phase)),
    });
    organizations.chain(entitlements).collect()
}

/// A phase as status spells it, `-` before the first.
fn phase_name(phase: Option<impl std::fmt::Debug>) -> String {
    phase.map_or_else(|| "-".into(), |p| format!("{p:?}"))
}

/// The report for people: per object, every transition with its date and
/// reason; then what ends where.
fn text(report: &Report, ignored: &BTreeMap<String, usize>, paint: Paint) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let span = (report.until - report.from).num_days();
    let header = format!(
        "Simulated {} to {} ({span} days): {}",
        render::date(report.from),
        render::date(report.until),
        report
            .objects
            .iter()
            .map(|(what, n)| match n {
                1 => format!("1 {}", singular(what)),
                n => format!("{n} {what}"),
            })
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "{}", render::wrap(&header, 0, 2));
    if !ignored.is_empty() {
        let kinds: Vec<String> = ignored.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(
            out,
            "{}",
            paint.dim(&format!("Not simulated: {}", kinds.join(", ")))
        );
    }
    let mut by_object: BTreeMap<(String, String), Vec<&Transition>> = BTreeMap::new();
    for t in &report.transitions {
        let key = (t.kind.clone(), object_name(t.namespace.as_deref(), &t.name));
        by_object.entry(key).or_default().push(t);
    }
    for ((kind, name), transitions) in &by_object {
        let _ = writeln!(out, "\n{}", paint.bold(&format!("{kind} {name}")));
        for t in transitions {
            // date (16) + event (19): the message starts at column 41.
            let event = format!("{:<19}", render::fit(&t.event, 19));
            let plain = [t.event.as_str(), t.phase.as_str(), "Active"].contains(&t.reason.as_str());
            let message = if plain || t.message.contains(&t.reason) {
                t.message.clone()
            } else {
                format!("{}: {}", t.reason, t.message)
            };
            let _ = writeln!(
                out,
                "  {}  {}  {}",
                render::date(t.at),
                paint.phase(&event),
                render::wrap(&message, 41, 41)
            );
        }
    }
    let quiet: Vec<&Standing> = report
        .at_the_end
        .iter()
        .filter(|s| {
            !by_object.contains_key(&(
                s.kind.to_string(),
                object_name(s.namespace.as_deref(), &s.name),
            ))
        })
        .collect();
    if !quiet.is_empty() {
        let _ = writeln!(out, "\n{}", paint.bold("Without a transition"));
        for s in quiet {
            let name = object_name(s.namespace.as_deref(), &s.name);
            let _ = writeln!(out, "  {} {name}: {}", s.kind, s.phase);
        }
    }
    let _ = writeln!(
        out,
        "\n{} transitions. At the end: {}.",
        report.transitions.len(),
        phase_counts(&report.at_the_end)
    );
    for object in &report.unsettled {
        let _ = writeln!(
            out,
            "{}",
            paint.red(&format!("did not settle (please report): {object}"))
        );
    }
    out
}

fn singular(plural: &str) -> &str {
    match plural {
        "classes" => "class",
        "policies" => "policy",
        other => other.strip_suffix('s').unwrap_or(other),
    }
}

fn object_name(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_string(),
    }
}

fn phase_counts(standings: &[Standing]) -> String {
    let mut counts: BTreeMap<(&str, &str), usize> = BTreeMap::new();
    for s in standings {
        *counts.entry((s.kind, s.phase.as_str())).or_default() += 1;
    }
    if counts.is_empty() {
        return "nothing".into();
    }
    counts
        .iter()
        .map(|((kind, phase), n)| format!("{n} {kind} {phase}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Everything tenure watches, as the cluster has it now.
async fn live_world(client: &kube::Client) -> anyhow::Result<World> {
    async fn all<K>(client: &kube::Client) -> anyhow::Result<Vec<K>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    {
        let api = Api::<K>::all(client.clone());
        let list = api
            .list(&ListParams::default())
            .await
            .map_err(cluster::explain)?;
        Ok(list.items)
    }
    Ok(World {
        organizations: all(client).await?,
        entitlements: all(client).await?,
        policies: all(client).await?,
        classes: all(client).await?,
        holds: all(client).await?,
        exports: all(client).await?,
    })
}

/// The objects the manifests hold, in the order read.
#[derive(Default)]
struct Manifests {
    world: World,
    /// Kinds read but not simulated, and how many of each.
    ignored: BTreeMap<String, usize>,
}

impl Manifests {
    fn read_path(&mut self, path: &Path) -> anyhow::Result<()> {
        if path == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
            return self.read_text("stdin", &text, false);
        }
        if path.is_dir() {
            let mut entries: Vec<PathBuf> = std::fs::read_dir(path)
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|e| e.path()))
                .collect();
            entries.sort();
            for entry in entries {
                let manifest = matches!(
                    entry.extension().and_then(|e| e.to_str()),
                    Some("yaml" | "yml" | "json")
                );
                if entry.is_dir() || manifest {
                    self.read_path(&entry)?;
                }
            }
            return Ok(());
        }
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        self.read_text(&path.display().to_string(), &text, false)
    }

    /// The defaults, for what the manifests do not give: the classes they do
    /// not name, and the global policy when they have none.
    fn read_defaults(&mut self) -> anyhow::Result<()> {
        let mut defaults = Manifests::default();
        defaults.read_text("the default classes and policy", DEFAULTS, true)?;
        for class in defaults.world.classes {
            if !self
                .world
                .classes
                .iter()
                .any(|c| c.name_any() == class.name_any())
            {
                self.world.classes.push(class);
            }
        }
        let has_global = self.world.policies.iter().any(|p| p.spec.scope.is_none());
        if !has_global {
            self.world.policies.extend(defaults.world.policies);
        }
        Ok(())
    }

    fn read_text(&mut self, source: &str, text: &str, quiet: bool) -> anyhow::Result<()> {
        for (n, document) in serde_yaml::Deserializer::from_str(text).enumerate() {
            let value = serde_yaml::Value::deserialize(document)
                .map_err(|e| anyhow::anyhow!("{source}: document {}: {e}", n + 1))?;
            let value: serde_json::Value = serde_json::to_value(value)
                .map_err(|e| anyhow::anyhow!("{source}: document {}: {e}", n + 1))?;
            if value.is_null() {
                continue;
            }
            self.read_object(&format!("{source}: document {}", n + 1), value, quiet)?;
        }
        Ok(())
    }

    fn read_object(
        &mut self,
        at: &str,
        value: serde_json::Value,
        quiet: bool,
    ) -> anyhow::Result<()> {
        let kind = value["kind"].as_str().unwrap_or_default().to_string();
        if kind == "List" || kind.ends_with("List") && value["items"].is_array() {
            for item in value["items"].as_array().into_iter().flatten() {
                self.read_object(at, item.clone(), quiet)?;
            }
            return Ok(());
        }
        let tenure = value["apiVersion"]
            .as_str()
            .is_some_and(|v| v.starts_with("tenure.dev/"));
        let name = value["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let at = format!("{at} ({kind} {name})");
        fn parse<T: DeserializeOwned>(at: &str, value: serde_json::Value) -> anyhow::Result<T> {
            serde_json::from_value(value).map_err(|e| anyhow::anyhow!("{at}: {e}"))
        }
        let world = &mut self.world;
        match kind.as_str() {
            "Organization" if tenure => world.organizations.push(parse(&at, value)?),
            "Entitlement" if tenure => world.entitlements.push(parse(&at, value)?),
            "LifecyclePolicy" if tenure => world.policies.push(parse(&at, value)?),
            "EntitlementClass" if tenure => world.classes.push(parse(&at, value)?),
            "RetentionHold" if tenure => world.holds.push(parse(&at, value)?),
            _ if quiet => {}
            _ => *self.ignored.entry(kind).or_default() += 1,
        }
        Ok(())
    }

    /// Applies the manifests over `world` as `kubectl apply` would: a new
    /// object is added; one that exists takes the manifest's spec and keeps
    /// what the controller recorded.
    fn apply_to(self, world: &mut World, default_namespace: &str) {
        fn apply<K: Resource + ResourceExt>(
            existing: &mut Vec<K>,
            new: Vec<K>,
            spec_of: impl Fn(&mut K, K),
        ) {
            for object in new {
                let same = |o: &&mut K| {
                    o.name_any() == object.name_any() && o.namespace() == object.namespace()
                };
                match existing.iter_mut().find(same) {
                    Some(current) => spec_of(current, object),
                    None => existing.push(object),
                }
            }
        }
        let mut manifests = self.world;
        for entitlement in &mut manifests.entitlements {
            if entitlement.metadata.namespace.is_none() {
                entitlement.metadata.namespace = Some(default_namespace.to_string());
            }
        }
        apply(&mut world.organizations, manifests.organizations, |o, n| {
            o.spec = n.spec
        });
        apply(&mut world.entitlements, manifests.entitlements, |o, n| {
            o.spec = n.spec
        });
        apply(&mut world.policies, manifests.policies, |o, n| {
            o.spec = n.spec
        });
        apply(&mut world.classes, manifests.classes, |o, n| {
            o.spec = n.spec
        });
        apply(&mut world.holds, manifests.holds, |o, n| o.spec = n.spec);
    }
}
