//! The command line's grammar (`clap`).

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

use crate::exit;

/// Distributed locks for pipelines: run a command under a lock, see and
/// administer who holds what.
#[derive(Debug, Parser)]
#[command(name = "lockkit", version, after_help = exit::TABLE)]
pub struct Cli {
    /// Backend URL: sqlite:///path.db, postgres://…, mysql://…, redis://…,
    /// etcd://…, zk://… [default: an SQLite file at
    /// $XDG_DATA_HOME/lockkit/locks.db or ~/.local/share/lockkit/locks.db]
    #[arg(
        long,
        global = true,
        env = "LOCKKIT_BACKEND",
        value_name = "URL",
        hide_env_values = true
    )]
    pub backend: Option<String>,

    /// A TOML file of defaults [default: $XDG_CONFIG_HOME/lockkit/config.toml
    /// or ~/.config/lockkit/config.toml, if it exists]
    #[arg(long, global = true, env = "LOCKKIT_CONFIG", value_name = "PATH")]
    pub config: Option<std::path::PathBuf>,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a command while holding a lock.
    ///
    /// Example: lockkit run nightly-load --ttl 1m --wait 5m -- ./load.sh --full
    Run(RunArgs),
    /// List held locks.
    Status {
        /// Only locks whose name starts with this.
        #[arg(long)]
        prefix: Option<String>,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// Mark locks that expire within this long unless renewed.
        #[arg(long, default_value = "10s", value_parser = duration)]
        soon: Duration,
    },
    /// Show who holds one lock (exit 1 if it is free).
    Inspect {
        name: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Free a lock whoever holds it; its holder is told it lost the lock.
    Release {
        name: String,
        /// Required: a lock is normally released by its holder.
        #[arg(long)]
        force: bool,
        /// Do not ask for confirmation on a terminal.
        #[arg(short = 'y', long)]
        yes: bool,
    },
    /// Remove expired lease records (SQL backends; a no-op elsewhere).
    Cleanup {
        /// Repeat at this interval until interrupted.
        #[arg(long, value_parser = duration)]
        every: Option<Duration>,
    },
    /// Serve Prometheus metrics (/metrics), a status page (/) and /healthz.
    Exporter {
        /// Address to listen on (port 0 picks a free one; the bound address
        /// is printed on stderr).
        #[arg(long, default_value = "127.0.0.1:9464")]
        listen: std::net::SocketAddr,
        /// Locks that expire within this long count as expiring soon.
        #[arg(long, default_value = "10s", value_parser = duration)]
        soon: Duration,
        /// At most this many locks get per-lock series; the rest are counted
        /// in lockkit_lock_series_dropped.
        #[arg(long, default_value_t = 500)]
        max_lock_series: usize,
        /// How often the status page reloads itself.
        #[arg(long, default_value = "5s", value_parser = duration)]
        refresh: Duration,
    },
    /// Pipelines: load YAML specs into the catalog, find shared tasks, run
    /// a pipeline with its locked tasks under leases, draw the timeline.
    ///
    /// Example: lockkit dag load pipelines.yaml && lockkit dag run DAG1
    Dag {
        /// The catalog database (SQLite or Postgres URL) [default: the
        /// backend's database if it is SQLite or Postgres, else the
        /// default SQLite file]
        #[arg(
            long,
            global = true,
            env = "LOCKKIT_CATALOG",
            value_name = "URL",
            hide_env_values = true
        )]
        catalog: Option<String>,
        #[command(subcommand)]
        command: DagCommand,
    },
    /// Print a shell completion script.
    Completions { shell: clap_complete::Shell },
}

#[derive(Debug, Subcommand)]
pub enum DagCommand {
    /// Check spec files without loading them (exit 65 if invalid).
    Validate {
        /// YAML files, or directories of them.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Validate spec files and load them into the catalog as one spec,
    /// replacing the one stored (in one transaction; a spec equal to the
    /// stored one writes nothing).
    Load {
        /// YAML files, or directories of them.
        #[arg(required = true, value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// List tasks used by more than one pipeline, and whether each is locked.
    Shared {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Exit 1 if a shared task has no lock, or one lock name has several
    /// durations (for CI). With PATHs, lints those specs instead of the
    /// catalog.
    Lint {
        /// YAML files or directories to lint without loading them.
        #[arg(value_name = "PATH")]
        paths: Vec<PathBuf>,
    },
    /// Show a pipeline's tasks in dependency order.
    Show { pipeline: String },
    /// Run a pipeline: its tasks in dependency order, locked ones under
    /// their leases; exit 0 if every task succeeded (or was skipped), 79 if
    /// a lease was lost, else 1.
    ///
    /// Example: lockkit dag run DAG1 --parallel 4
    Run {
        pipeline: String,
        /// At most this many tasks at once.
        #[arg(long, default_value_t = 4)]
        parallel: usize,
        /// The owner label of the leases and the run [default:
        /// PIPELINE@HOST:PID].
        #[arg(long)]
        owner: Option<String>,
        /// After a lease is lost, how long a task's command has between
        /// SIGTERM and SIGKILL.
        #[arg(long, default_value = "10s", value_parser = duration)]
        grace: Duration,
        /// The command that runs a `notebook:` task; {notebook} is replaced
        /// by the notebook's path.
        #[arg(
            long,
            env = "LOCKKIT_NOTEBOOK_COMMAND",
            hide_env_values = true,
            default_value = lockkit_dag::runner::DEFAULT_NOTEBOOK_COMMAND
        )]
        notebook_command: String,
    },
    /// List recorded runs.
    Runs {
        /// How many of the most recent.
        #[arg(long, default_value_t = 20)]
        last: u32,
    },
    /// Draw recorded runs as a Gantt chart and check that no lock's holds
    /// overlapped (exit 1 if some did).
    ///
    /// Example: lockkit dag timeline --last 2 --svg timeline.svg
    Timeline {
        /// Run ids [default: the most recent runs, see --last].
        #[arg(value_name = "RUN")]
        runs: Vec<i64>,
        /// Without RUNs: the most recent this many [default: 2].
        #[arg(long, conflicts_with = "runs")]
        last: Option<u32>,
        /// Also write the chart as SVG.
        #[arg(long, value_name = "FILE")]
        svg: Option<PathBuf>,
        /// Also write the chart and a table as HTML.
        #[arg(long, value_name = "FILE")]
        html: Option<PathBuf>,
        /// Columns of the text chart's time axis.
        #[arg(long, default_value_t = 60)]
        width: usize,
    },
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The lock's name.
    pub name: String,
    /// Lease TTL; the lease is renewed every third of it while the command
    /// runs, and another process can take the lock this long after this
    /// one dies [default: 30s].
    #[arg(long, value_parser = duration)]
    pub ttl: Option<Duration>,
    /// Wait at most this long for the lock [default: without limit].
    #[arg(long, value_parser = duration, conflicts_with = "no_wait")]
    pub wait: Option<Duration>,
    /// Do not wait: exit with the conflict code if the lock is held.
    #[arg(short = 'n', long)]
    pub no_wait: bool,
    /// Make NAME a semaphore: at most this many commands hold it at once
    /// (every holder must use the same count) [default: 1, a lock].
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=i64::from(lockkit::MAX_PERMITS)))]
    pub permits: Option<u32>,
    /// The owner label recorded with the lease [default: HOST:PID].
    #[arg(long)]
    pub owner: Option<String>,
    /// Exit code when the lock is busy or the wait times out [default: 75].
    #[arg(short = 'E', long, value_name = "CODE")]
    pub conflict_exit_code: Option<u8>,
    /// After the lease is lost, how long the command has between SIGTERM
    /// and SIGKILL [default: 10s].
    #[arg(long, value_parser = duration)]
    pub grace: Option<Duration>,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, num_args = 1.., value_name = "COMMAND")]
    pub command: Vec<OsString>,
}

/// A duration like `30s`, `10m`, `1h 30m`, `250ms`.
fn duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{e} (examples: 30s, 10m, 1h30m, 250ms)"))
}
