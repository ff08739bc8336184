//! The client side of `hack/bench/scale`: creates organizations and
//! entitlements, measures the floor (the writes tenure must make at least,
//! made by a bare client), waits for convergence, reads the API server's own
//! request counts, and measures how late deadlines are acted on.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use serde_json::json;
use tenure_core::api::{Entitlement, EntitlementPhase, Organization};

/// The label every object of one benchmark run carries.
const RUN_LABEL: &str = "bench.tenure.dev/run";

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create ORGS organizations and N entitlements spread over them, of
    /// mixed classes and products, in every phase tenure reaches by itself.
    Populate {
        #[arg(long)]
        run: String,
        #[arg(long, default_value_t = 500)]
        orgs: usize,
        #[arg(long, default_value_t = 10_000)]
        entitlements: usize,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// The floor: a finalizer patch and one status patch per entitlement of
    /// the run, with the given concurrency; prints the seconds it took.
    Floor {
        #[arg(long)]
        run: String,
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
    },
    /// Waits until every entitlement of the run has its code, its phase and
    /// observedGeneration; prints the seconds it waited.
    Converged {
        #[arg(long)]
        run: String,
        #[arg(long, default_value_t = 7200)]
        timeout: u64,
    },
    /// The API server's mutating requests so far, by verb and resource, as
    /// JSON (from its /metrics, apiserver_request_total).
    Requests,
    /// COUNT entitlements whose payment grace ends within WINDOW seconds,
    /// starting LEAD seconds from now; prints how late after its due second
    /// each was seen Cancelled (p50, p99, max).
    Lateness {
        #[arg(long)]
        run: String,
        #[arg(long, default_value_t = 1000)]
        count: usize,
        #[arg(long, default_value_t = 10)]
        orgs: usize,
        #[arg(long, default_value_t = 180)]
        lead: i64,
        #[arg(long, default_value_t = 120)]
        window: i64,
        /// The payment grace in force (the global policy's payment.graceDays).
        #[arg(long, default_value_t = 30)]
        grace_days: i64,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
    let client = Client::try_default().await?;
    match Cli::parse().command {
        Command::Populate {
            run,
            orgs,
            entitlements,
            concurrency,
        } => populate(&client, &run, orgs, entitlements, concurrency).await,
        Command::Floor { run, concurrency } => {
            let seconds = floor(&client, &run, concurrency).await?;
            println!("{seconds:.1}");
            Ok(())
        }
        Command::Converged { run, timeout } => {
            let started = Instant::now();
            converged(&client, &run, Duration::from_secs(timeout)).await?;
            println!("{:.1}", started.elapsed().as_secs_f64());
            Ok(())
        }
        Command::Requests => {
            println!("{}", serde_json::to_string(&requests(&client).await?)?);
            Ok(())
        }
        Command::Lateness {
            run,
            count,
            orgs,
            lead,
            window,
            grace_days,
        } => lateness(&client, &run, count, orgs, lead, window, grace_days).await,
    }
}

fn organization_name(run: &str, i: usize) -> String {
    format!("{run}-{i:04}")
}

fn labels(run: &str) -> serde_json::Value {
    json!({ RUN_LABEL: run })
}

async fn create_organizations(
    client: &Client,
    run: &str,
    orgs: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let api = Api::<Organization>::all(client.clone());
    stream::iter(0..orgs)
        .map(|i| {
            let org: Organization = serde_json::from_value(json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Organization",
                "metadata": {"name": organization_name(run, i), "labels": labels(run)},
                "spec": {"displayName": format!("Benchmark {i}")},
            }))
            .expect("a valid Organization");
            let api = api.clone();
            async move { api.create(&PostParams::default(), &org).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

/// One entitlement of the mix: six classes, a few products, and facts that
/// put it in each phase tenure reaches by itself (Pending, Active,
/// Suspended, Expired, Cancelled).
fn entitlement(run: &str, i: usize, orgs: usize, now: DateTime<Utc>) -> serde_json::Value {
    const CLASSES: [&str; 6] = [
        "service",
        "plugin",
        "environment",
        "order",
        "affiliate",
        "education",
    ];
    const PRODUCTS: [&str; 4] = ["grafana", "loki", "tempo", "mimir"];
    let org = organization_name(run, i % orgs);
    let days = |d: i64| (now + chrono::TimeDelta::days(d)).to_rfc3339();
    let mut spec = json!({
        "organization": org,
        "class": CLASSES[i % CLASSES.len()],
        "product": PRODUCTS[(i / CLASSES.len()) % PRODUCTS.len()],
    });
    match i % 10 {
        // Suspended: a failed payment inside its grace.
        0 => spec["payment"] = json!({"failedAt": days(-1)}),
        // Expired: past its end, inside the expiry grace.
        1 => spec["endsAt"] = json!(days(-1)),
        // Cancelled: past its end and the expiry grace.
        2 => spec["endsAt"] = json!(days(-60)),
        // Cancelled by request.
        3 => spec["cancellation"] = json!({"reason": "CustomerRequest"}),
        // Pending: starts later.
        4 => spec["startsAt"] = json!(days(30)),
        // Active, ending later (a renewal reminder ahead).
        5 => spec["endsAt"] = json!(days(365)),
        _ => {}
    }
    json!({
        "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
        "metadata": {"name": format!("e-{i:05}"), "namespace": format!("org-{org}"), "labels": labels(run)},
        "spec": spec,
    })
}

async fn populate(
    client: &Client,
    run: &str,
    orgs: usize,
    entitlements: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    create_organizations(client, run, orgs, concurrency).await?;
    // Entitlements live in their organization's namespace, created here
    // (with tenure's label) so that the objects exist before the controller
    // starts; tenure takes the namespaces over as its own.
    let namespaces = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone());
    stream::iter(0..orgs)
        .map(|i| {
            let name = organization_name(run, i);
            let namespace = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Namespace",
                "metadata": {"name": format!("org-{name}"), "labels": {"tenure.dev/organization": name}},
            }))
            .expect("a valid Namespace");
            let namespaces = namespaces.clone();
            async move { namespaces.create(&PostParams::default(), &namespace).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    let now = Utc::now();
    stream::iter(0..entitlements)
        .map(|i| {
            let object: Entitlement = serde_json::from_value(entitlement(run, i, orgs, now))
                .expect("a valid Entitlement");
            let api = Api::<Entitlement>::namespaced(
                client.clone(),
                &object.namespace().unwrap_or_default(),
            );
            async move { api.create(&PostParams::default(), &object).await }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await
        .context("creating entitlements")?;
    Ok(())
}

async fn run_entitlements(client: &Client, run: &str) -> anyhow::Result<Vec<Entitlement>> {
    let api = Api::<Entitlement>::all(client.clone());
    let params = ListParams::default().labels(&format!("{RUN_LABEL}={run}"));
    Ok(api.list(&params).await?.items)
}

/// A finalizer patch and one status patch per entitlement: the writes tenure
/// must make at least, made by a bare client on the same objects.
async fn floor(client: &Client, run: &str, concurrency: usize) -> anyhow::Result<f64> {
    let entitlements = run_entitlements(client, run).await?;
    let started = Instant::now();
    stream::iter(entitlements)
        .map(|e| {
            let api =
                Api::<Entitlement>::namespaced(client.clone(), &e.namespace().unwrap_or_default());
            async move {
                let name = e.name_any();
                let finalizer = json!({"metadata": {"finalizers": ["bench.tenure.dev/floor"]}});
                api.patch(&name, &PatchParams::default(), &Patch::Merge(&finalizer))
                    .await?;
                let status = json!({
                    "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
                    "status": {"observedGeneration": 0},
                });
                let params = PatchParams::apply("tenure-bench-floor").force();
                api.patch_status(&name, &params, &Patch::Apply(&status))
                    .await
            }
        })
        .buffer_unordered(concurrency)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(started.elapsed().as_secs_f64())
}

fn is_converged(e: &Entitlement) -> bool {
    let Some(status) = e.status.as_ref() else {
        return false;
    };
    status.code.is_some()
        && status.phase.is_some()
        && status.observed_generation.is_some()
        && status.observed_generation == e.metadata.generation
}

/// Watches the run's entitlements until every one has converged.
async fn converged(client: &Client, run: &str, timeout: Duration) -> anyhow::Result<()> {
    let expected = run_entitlements(client, run).await?.len();
    let api = Api::<Entitlement>::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
    let mut done: BTreeMap<String, bool> = BTreeMap::new();
    let mut objects = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    let wait = async {
        while let Some(e) = objects.try_next().await? {
            let key = format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any());
            done.insert(key, is_converged(&e));
            if done.len() >= expected && done.values().all(|c| *c) {
                return anyhow::Ok(());
            }
        }
        bail!("the watch ended")
    };
    tokio::time::timeout(timeout, wait)
        .await
        .map_err(|_| anyhow::anyhow!("not converged within {timeout:?}"))?
}

/// Mutating requests by `VERB resource[/subresource]`, from the API
/// server's own counters.
async fn requests(client: &Client) -> anyhow::Result<BTreeMap<String, f64>> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await?;
    let mut counts = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let Some((labels, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let label = |name: &str| {
            let key = format!("{name}=\"");
            labels
                .split_once(&key)
                .and_then(|(_, rest)| rest.split_once('"'))
                .map(|(value, _)| value.to_string())
                .unwrap_or_default()
        };
        let verb = label("verb");
        if !matches!(
            verb.as_str(),
            "POST" | "PUT" | "PATCH" | "APPLY" | "DELETE" | "DELETECOLLECTION"
        ) {
            continue;
        }
        let mut resource = label("resource");
        let subresource = label("subresource");
        if !subresource.is_empty() {
            resource = format!("{resource}/{subresource}");
        }
        // A refused write (a conflict, throttling) is counted apart: it is
        // a write that has to be made again.
        let code = label("code");
        if !code.starts_with('2') {
            resource = format!("{resource} ({code})");
        }
        *counts.entry(format!("{verb} {resource}")).or_insert(0.0) +=
            value.parse::<f64>().unwrap_or(0.0);
    }
    Ok(counts)
}

/// Creates COUNT suspended entitlements whose grace ends, one after another,
/// within WINDOW seconds from LEAD seconds on, and measures how late each
/// Suspended -> Cancelled transition is seen after its due second.
async fn lateness(
    client: &Client,
    run: &str,
    count: usize,
    orgs: usize,
    lead: i64,
    window: i64,
    grace_days: i64,
) -> anyhow::Result<()> {
    create_organizations(client, run, orgs, 32).await?;
    let start = Utc::now() + chrono::TimeDelta::seconds(lead);
    let mut due = BTreeMap::new();
    let grace = chrono::TimeDelta::days(grace_days);
    stream::iter(0..count)
        .map(|i| {
            let at = start + chrono::TimeDelta::milliseconds(window * 1000 * i as i64 / count as i64);
            // Whole seconds: dates in specs are written to the second.
            let at = DateTime::from_timestamp(at.timestamp(), 0).unwrap_or(at);
            let org = organization_name(run, i % orgs);
            let name = format!("late-{i:05}");
            due.insert(format!("org-{org}/{name}"), at);
            let object: Entitlement = serde_json::from_value(json!({
                "apiVersion": "tenure.dev/v1alpha1", "kind": "Entitlement",
                "metadata": {"name": name, "namespace": format!("org-{org}"), "labels": labels(run)},
                "spec": {"organization": org, "class": "service", "product": "grafana",
                         "payment": {"failedAt": (at - grace).to_rfc3339()}},
            }))
            .expect("a valid Entitlement");
            let api = Api::<Entitlement>::namespaced(client.clone(), &format!("org-{org}"));
            async move {
                // The namespace appears once tenure observed the organization.
                loop {
                    match api.create(&PostParams::default(), &object).await {
                        Err(kube::Error::Api(status)) if status.code == 404 => {
                            tokio::time::sleep(Duration::from_millis(500)).await
                        }
                        other => return other,
                    }
                }
            }
        })
        .buffer_unordered(32)
        .try_collect::<Vec<_>>()
        .await?;
    let api = Api::<Entitlement>::all(client.clone());
    let config = watcher::Config::default().labels(&format!("{RUN_LABEL}={run}"));
    let mut seen: BTreeMap<String, f64> = BTreeMap::new();
    let mut suspended_in_time = std::collections::BTreeSet::new();
    let mut objects = watcher(api, config)
        .default_backoff()
        .applied_objects()
        .boxed();
    while let Some(e) = objects.try_next().await? {
        let key = format!("{}/{}", e.namespace().unwrap_or_default(), e.name_any());
        let phase = e.status.as_ref().and_then(|s| s.phase);
        if phase == Some(EntitlementPhase::Suspended) && Utc::now() < start {
            suspended_in_time.insert(key.clone());
        }
        if phase == Some(EntitlementPhase::Cancelled) && !seen.contains_key(&key) {
            let late = (Utc::now() - due[&key]).num_milliseconds() as f64 / 1000.0;
            seen.insert(key, late);
            if seen.len() == count {
                break;
            }
        }
    }
    let mut late: Vec<f64> = seen.into_values().collect();
    late.sort_by(f64::total_cmp);
    let at = |q: f64| late[((late.len() as f64 * q).ceil() as usize).clamp(1, late.len()) - 1];
    println!(
        "{{\"p50\": {:.3}, \"p99\": {:.3}, \"max\": {:.3}, \"suspended_before_the_window\": {}}}",
        at(0.5),
        at(0.99),
        at(1.0),
        suspended_in_time.len()
    );
    Ok(())
}
