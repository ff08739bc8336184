//! The `tenure` command: the controller and its tools.

use std::net::SocketAddr;

use chrono::{DateTime, Utc};
use clap::{Parser, Subcommand};
use tenure::clock::Clock;
use tenure::leadership::LeaseSettings;
use tenure::telemetry::{self, LogFormat};
use tenure::{api, cli, controller};

#[derive(Parser)]
#[command(
    name = "tenure",
    version,
    about = "The customer lifecycle, declared and timed in Kubernetes"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    #[command(flatten)]
    global: cli::Global,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controller (KUBECONFIG or the in-cluster service account).
    Run(RunArgs),
    /// Print every CRD as one multi-document YAML stream.
    Crds,
    /// Print the API reference (docs/api.md) as markdown, from the CRD schemas.
    Docs,
    #[command(flatten)]
    Plugin(cli::Command),
}

#[derive(clap::Args)]
struct RunArgs {
    /// Start a simulated clock at this instant (RFC 3339) instead of the real time.
    #[arg(long, value_name = "RFC3339")]
    clock_start: Option<DateTime<Utc>>,
    /// Simulated seconds per real second (86400: a day a second). Default 1.
    #[arg(long, value_name = "N", default_value_t = 1.0, value_parser = positive_rate)]
    clock_rate: f64,
    /// Where DataExports write their ZIPs (a PersistentVolume in the chart).
    #[arg(
        long,
        value_name = "DIR",
        default_value = "tenure-exports",
        env = "TENURE_EXPORT_DIR"
    )]
    export_dir: std::path::PathBuf,
    /// Upload export ZIPs to this S3-compatible bucket (`s3://bucket/prefix`),
    /// with credentials, region and endpoint from the AWS_* environment
    /// variables (AWS_ENDPOINT and AWS_ALLOW_HTTP for other S3 servers).
    /// --export-dir is then only the staging area.
    #[arg(long, value_name = "URL", env = "TENURE_EXPORT_URL")]
    export_url: Option<String>,
    /// Days a finished export's ZIP is kept before it is deleted.
    #[arg(long, value_name = "DAYS", default_value_t = 7)]
    export_keep_days: u32,
    /// Reconciles of one kind that run at once (0: no bound); the others
    /// wait their turn. It paces a mass reconcile (a restart over 10,000
    /// entitlements) at what the API server can take.
    #[arg(long, value_name = "N", default_value_t = 32)]
    concurrency: u16,
    /// API requests in flight at once (a watch counts until its stream
    /// starts); more wait their turn: a safety net under --concurrency for
    /// what reconciles send in the background (Events). The leader Lease
    /// has a client of its own, so that its renewals never wait.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u32).range(1..))]
    kube_api_concurrency: u32,
    /// Log lines for people (human) or for log pipelines (json).
    #[arg(long, value_enum, default_value_t = LogFormat::Human, env = "TENURE_LOG_FORMAT")]
    log_format: LogFormat,
    /// Where /metrics, /healthz and /readyz are served (`:8080`: every
    /// interface; `127.0.0.1:0`: loopback, any free port).
    #[arg(long, value_name = "ADDR", default_value = ":8080", value_parser = listen_address)]
    metrics_addr: SocketAddr,
    /// Campaign for a Lease and act only while holding it, so that several
    /// replicas never act at once. `--leader-election=false` for a single
    /// local process.
    #[arg(long, value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// The leader Lease's name (default: `tenure`; with --shard-selector,
    /// `tenure-shard-<hash of the selector>`, so that each shard elects its
    /// own leader).
    #[arg(long, value_name = "NAME")]
    lease_name: Option<String>,
    /// Act only on the Organizations and Entitlements whose labels match
    /// this label selector (e.g. `tenure.dev/shard=1`), and on the
    /// DataExports and RetentionHolds of those organizations: several
    /// instances, one per shard, share a large cluster. Label an
    /// organization and its entitlements alike.
    #[arg(long, value_name = "SELECTOR")]
    shard_selector: Option<String>,
    /// The leader Lease's namespace (default: the pod's namespace, or the
    /// kubeconfig context's).
    #[arg(long, value_name = "NAMESPACE", env = "POD_NAMESPACE")]
    lease_namespace: Option<String>,
    /// Seconds the leader holds the Lease without renewing it: how long a
    /// standby waits when the leader dies without handing over.
    #[arg(long, value_name = "SECONDS", default_value_t = 15, value_parser = clap::value_parser!(u64).range(3..=3600))]
    lease_duration: u64,
}

/// `:PORT` (every interface, as Go programs write it) or `HOST:PORT`.
fn listen_address(value: &str) -> Result<SocketAddr, String> {
    let full = match value.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => value.to_string(),
    };
    full.parse().map_err(|_| {
        format!("{value:?} is not an address to listen on (`:8080`, `127.0.0.1:9090`)")
    })
}

/// `tenure`, or for a shard `tenure-shard-` and the FNV-1a hash of its
/// selector: stable across releases and hosts, as a Lease name must be.
fn lease_name_of(shard_selector: Option<&str>) -> String {
    let Some(selector) = shard_selector else {
        return "tenure".to_string();
    };
    let hash = selector.bytes().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    format!("tenure-shard-{hash:08x}")
}

/// A selector the API server refuses is named at start, not retried by
/// every watch forever.
async fn check_shard_selector(client: &kube::Client, selector: &str) -> anyhow::Result<()> {
    let organizations = kube::Api::<api::Organization>::all(client.clone());
    let params = kube::api::ListParams::default().labels(selector).limit(1);
    match organizations.list_metadata(&params).await {
        Err(kube::Error::Api(status)) if status.code == 400 => {
            anyhow::bail!("--shard-selector {selector:?}: {}", status.message)
        }
        _ => Ok(()),
    }
}

/// This process in the leader Lease: the pod's name, or host and process id.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

fn positive_rate(value: &str) -> Result<f64, String> {
    match value.parse::<f64>() {
        Ok(rate) if rate > 0.0 && rate.is_finite() => Ok(rate),
        _ => Err(format!(
            "{value:?} is not a positive number of simulated seconds per second"
        )),
    }
}

/// The command line as it was invoked: as the kubectl plugin
/// (`kubectl-tenure`, which kubectl runs for `kubectl tenure`) its help and
/// completions say `kubectl tenure`.
fn command_line() -> clap::Command {
    use clap::CommandFactory;
    let invoked = std::env::args_os()
        .next()
        .map(std::path::PathBuf::from)
        .and_then(|path| Some(path.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_default();
    let command = Cli::command();
    match invoked.starts_with("kubectl-tenure") {
        true => command.name("kubectl-tenure").bin_name("kubectl tenure"),
        false => command,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    use clap::FromArgMatches;
    let cli = Cli::from_arg_matches(&command_line().get_matches())?;
    match cli.command {
        Command::Plugin(command) => {
            if let Err(error) = cli::run(command, cli.global, command_line).await {
                eprintln!("error: {error:#}");
                std::process::exit(1);
            }
        }
        Command::Crds => print!("{}", api::crds_yaml()),
        Command::Docs => print!("{}", api::docs::api_markdown()),
        Command::Run(args) => {
            let clock = match args.clock_start {
                Some(start) => Clock::simulated(start, args.clock_rate),
                None if args.clock_rate != 1.0 => Clock::simulated(Utc::now(), args.clock_rate),
                None => Clock::real(),
            };
            let simulated = clock.simulated_description();
            telemetry::init(args.log_format, simulated);
            // Two TLS stacks come with the dependencies (kube's, and the S3
            // client's); one crypto provider serves both.
            rustls::crypto::ring::default_provider()
                .install_default()
                .map_err(|_| anyhow::anyhow!("a TLS crypto provider was already installed"))?;
            let config = kube::Config::infer().await?;
            let lease_client = kube::Client::try_from(config.clone())?;
            let client = kube::client::ClientBuilder::try_from(config)?
                .with_layer(&tower::limit::ConcurrencyLimitLayer::new(
                    args.kube_api_concurrency as usize,
                ))
                .build();
            let exports = controller::export::ExportSettings {
                dir: args.export_dir,
                keep_for: chrono::TimeDelta::days(args.export_keep_days.into()),
                bucket: args
                    .export_url
                    .as_deref()
                    .map(controller::export::Bucket::from_url)
                    .transpose()?,
            };
            if let Some(selector) = &args.shard_selector {
                check_shard_selector(&client, selector).await?;
            }
            let lease = args.leader_election.then(|| LeaseSettings {
                name: args
                    .lease_name
                    .unwrap_or_else(|| lease_name_of(args.shard_selector.as_deref())),
                namespace: args
                    .lease_namespace
                    .unwrap_or_else(|| client.default_namespace().to_string()),
                duration: args.lease_duration,
                identity: identity(),
            });
            let settings = controller::Settings {
                clock,
                exports,
                concurrency: args.concurrency,
                lease_client,
                shard: args.shard_selector,
                metrics_addr: args.metrics_addr,
                lease,
            };
            controller::run(client, settings).await?;
        }
    }
    Ok(())
}
