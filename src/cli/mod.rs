//! `kubectl tenure`: what will happen, and when. The same binary as the
//! controller: invoked as `kubectl-tenure` (a symlink; `make plugin` makes
//! one) it is the kubectl plugin, and `tenure <command>` runs the same
//! commands.
//!
//! - `status`: one object's story: what happened, what will happen, what
//!   blocks it, its rules and what it governs.
//! - `purge-queue`: every announced purge, in time order, with what it
//!   deletes and what blocks it.
//! - `simulate`: the core over simulated time, from manifests (offline) or
//!   the cluster's state.
//! - `hold`, `release`, `confirm-delete`: the common operations, one
//!   command each.

mod cluster;
mod operations;
mod purge_queue;
mod render;
mod simulate;
mod status;

use chrono::{DateTime, Utc};
use clap::{Args, Subcommand, ValueEnum};

pub use render::Output;

/// What every plugin command accepts, as kubectl spells it.
#[derive(Args, Clone, Debug)]
pub struct Global {
    /// The kubeconfig file (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long, global = true, value_name = "FILE")]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// The kubeconfig context to use.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// The namespace of an Entitlement (default: the context's).
    #[arg(short = 'n', long, global = true, value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Every namespace.
    #[arg(short = 'A', long, global = true)]
    pub all_namespaces: bool,
    /// Output format: text for people, json or yaml for scripts.
    #[arg(short = 'o', long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// The instant to tell the time from (RFC 3339 or a date), for a
    /// controller on a simulated clock (default: this machine's clock).
    #[arg(long, global = true, value_name = "TIME", value_parser = render::parse_instant)]
    pub now: Option<DateTime<Utc>>,
}

impl Global {
    fn now(&self) -> DateTime<Utc> {
        self.now.unwrap_or_else(Utc::now)
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// One object's story: what happened, what will happen, what blocks it.
    ///
    /// Phase and since when, the history, every deadline ahead (absolute and
    /// relative), what blocks progress and the command that unblocks it, the
    /// effective policy with where each value came from, and what the
    /// object governs with what will become of each.
    Status {
        /// `org/<name>` or `ent/<name>` (also `organization/`, `entitlement/`).
        object: String,
    },
    /// Every announced purge, in time order, and what blocks the others.
    ///
    /// Each organization and entitlement whose purge is announced, with what
    /// it will delete and the command that postpones it; then those whose
    /// purge is due but blocked (a hold, a confirmation, an export).
    PurgeQueue {
        /// Only purges due within this long (`30d`, `12h`, `2w`, `1y`).
        #[arg(long, value_name = "DURATION", value_parser = render::parse_duration)]
        within: Option<chrono::TimeDelta>,
    },
    /// What will happen, and when: the lifecycle over simulated time.
    ///
    /// Runs the controller's own core over simulated time and prints every
    /// transition with its date and reason, per object. Offline by default:
    /// reads manifests, with the default classes and global policy where
    /// none are given. --live starts from the cluster's state, with the
    /// manifests applied over it: `simulate --live -f new-policy.yaml
    /// --until 90d`.
    Simulate(simulate::SimulateArgs),
    /// Place a RetentionHold: nothing it covers is purged while it exists.
    Hold(operations::HoldArgs),
    /// Lift a RetentionHold (delete it).
    ///
    /// The final grace of what it covered then runs again in full.
    Release {
        /// The RetentionHold's name.
        hold: String,
    },
    /// Confirm an organization's hard delete, with who approved it and why.
    ///
    /// Writes spec.deletion (confirmName, approval, skipRetention).
    ConfirmDelete(operations::ConfirmDeleteArgs),
    /// Print a shell completion script.
    ///
    /// `source <(kubectl tenure completion bash)`.
    Completion {
        #[arg(value_enum)]
        shell: Shell,
    },
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Runs a plugin command; `command` is the whole command line's, for
/// completions.
pub async fn run(
    command: Command,
    global: Global,
    whole: impl FnOnce() -> clap::Command,
) -> anyhow::Result<()> {
    match command {
        Command::Status { object } => status::run(&global, &object).await,
        Command::PurgeQueue { within } => purge_queue::run(&global, within).await,
        Command::Simulate(args) => simulate::run(&global, args).await,
        Command::Hold(args) => operations::hold(&global, args).await,
        Command::Release { hold } => operations::release(&global, &hold).await,
        Command::ConfirmDelete(args) => operations::confirm_delete(&global, args).await,
        Command::Completion { shell } => {
            let mut command = whole();
            let name = command.get_name().to_string();
            let shell = match shell {
                Shell::Bash => clap_complete::Shell::Bash,
                Shell::Zsh => clap_complete::Shell::Zsh,
                Shell::Fish => clap_complete::Shell::Fish,
            };
            clap_complete::generate(shell, &mut command, name, &mut std::io::stdout());
            Ok(())
        }
    }
}

/// The object a command names: `org/<name>` or `ent/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    Organization(String),
    Entitlement(String),
}

impl std::str::FromStr for Target {
    type Err = anyhow::Error;

    fn from_str(value: &str) -> anyhow::Result<Self> {
        let (kind, name) = value.split_once('/').ok_or_else(|| {
            anyhow::anyhow!("{value:?}: name the object as org/<name> or ent/<name>")
        })?;
        anyhow::ensure!(!name.is_empty(), "{value:?}: the name is missing");
        match kind.to_ascii_lowercase().as_str() {
            "org" | "organization" | "organizations" | "organization.tenure.dev" => {
                Ok(Target::Organization(name.into()))
            }
            "ent" | "entitlement" | "entitlements" | "entitlement.tenure.dev" => {
                Ok(Target::Entitlement(name.into()))
            }
            other => anyhow::bail!(
                "{value:?}: {other:?} is not a kind this command takes (org/<name> or ent/<name>)"
            ),
        }
    }
}
