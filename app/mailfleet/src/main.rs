//! `mailfleet`: the one binary. Each subcommand is config → build → run
//! until done or SIGTERM. Start at [`Command`].
//!
//! A thin CLI: argument parsing and wiring. The config file and the
//! consumers `run` knows are in `mailfleet-fleet`, the scheduler's
//! processes (`scheduler`, `clock`, `postfix-map`) in `mailfleet-scheduler`,
//! `audit` and `replay` in `mailfleet-audit`, `bench` and `demo` in
//! `mailfleet-devtools`; the modules here wire the other services.

mod account;
mod index;
mod lmtp;
mod logging;
mod migrate;
mod policy;
mod report;
mod scan;
mod spam;
mod submission;
mod time_scale;

/// This crate's folder, for tests that read the repo's files: cargo sets
/// CARGO_MANIFEST_DIR when it runs a test; the compile-time value can name
/// another clone that shared the target folder.
#[cfg(test)]
fn manifest_dir() -> String {
    std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| env!("CARGO_MANIFEST_DIR").into())
}

use std::{path::PathBuf, process::ExitCode};

/// Rust's allocations go to mimalloc rather than glibc's malloc. The
/// consumer loop allocates and frees a few small buffers per record (the
/// record's copy, its decoded event, its state key and value), and frees
/// on the committing thread what the loop allocated: under glibc that was
/// 37% of the loop thread's samples (`perf record` of `bench consume`,
/// docs/benchmarks.md, G5). RocksDB and librdkafka keep glibc's malloc
/// (`runtime.malloc_arena_max` bounds their arenas).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context;
use clap::{Parser, Subcommand};
use mailfleet_audit::{audit, replay};
use mailfleet_devtools::{bench, demo};
use mailfleet_lifecycle::status::StatusProjection;
// The command modules name them `crate::config` and `crate::consumers`.
use mailfleet_fleet::{
    config,
    consumers::{self, ConsumerName},
};
use mailfleet_runtime::{admin, metrics, Shutdown};
use mailfleet_scheduler::{clock, emitter, postfix_install, ProcessConfig};

use config::Config;

/// mailfleet: the event-sourced mail service pipeline on Kafka.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// The TOML config file (every key can also be set as MAILFLEET_SECTION__KEY).
    #[arg(short, long, env = "MAILFLEET_CONFIG", global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run consumers in this process until SIGTERM (several share one process on small installs).
    Run {
        /// Consumer names, e.g. `greylist storage`; several share one process.
        #[arg(required_unless_present = "all", conflicts_with = "all")]
        consumers: Vec<String>,
        /// Every consumer of the service in this one process (small installs):
        /// all of `mailfleet run`'s consumers but the `counter` example.
        #[arg(long)]
        all: bool,
    },
    /// The Postfix policy server (greylisting through the greylist consumer).
    Policy {
        #[command(flatten)]
        time: time_scale::TimeScaleArgs,
    },
    /// The LMTP server Postfix delivers to (`virtual_transport = lmtp:inet:127.0.0.1:2424`).
    Lmtp,
    /// The submission milter: scans what users submit, before Postfix queues it (`smtpd_milters = inet:127.0.0.1:10027`).
    Submission,
    /// The account API (HTTP(S)/JSON on `[api] listen`): registration, logins, quota, plan, admin.
    Api {
        #[command(flatten)]
        time: time_scale::TimeScaleArgs,
    },
    /// Account commands, each one call of the account API.
    Account(account::AccountArgs),
    /// Scan one message file as the scanner consumer would; the last line is one JSON verdict.
    Scan(scan::ScanArgs),
    /// Users' spam judgements for rspamd: learn a folder or one message, relearn from the log.
    Spam(spam::SpamArgs),
    /// The mailbox index: show an account, or rebuild it from the log.
    Index {
        #[command(subcommand)]
        action: index::IndexAction,
    },
    /// Write clock ticks into the clocked topics (time is an event).
    Clock {
        /// Tick once and exit (for cron) instead of every `clock.every_s`.
        #[arg(long)]
        once: bool,
    },
    /// Emit clock ticks and scheduled job runs (`[scheduler]`); one instance is active, others stand by.
    Scheduler {
        #[command(flatten)]
        time: time_scale::TimeScaleArgs,
        /// Emit every tick and job run up to this time (ms since the epoch,
        /// on the scheduler's clock), then exit 0.
        #[arg(long, value_name = "MS")]
        until: Option<i64>,
    },
    /// Install Postfix's recipient map (`[scheduler.postfix_map]`) on each postfix-map job run.
    PostfixMap {
        /// Install once from the status projection and exit.
        #[arg(long)]
        once: bool,
    },
    /// The monthly report (from the reporter consumer's state): HTML with SVG charts, Markdown or JSON.
    Report(report::ReportArgs),
    /// Replay a consumer's inputs into fresh state (no outputs, no effects) and print its digests.
    Replay(replay::ReplayArgs),
    /// Audits from the events alone: decisions, an account's history, a mail's path.
    Audit {
        #[command(subcommand)]
        what: audit::AuditCommand,
    },
    /// Manage the topics of the topology.
    Topics {
        #[command(subcommand)]
        action: TopicsAction,
    },
    /// The config file itself.
    Config {
        #[command(subcommand)]
        action: ConfigAction,
    },
    /// Benchmarks; the last line of each is machine-readable.
    Bench {
        #[command(subcommand)]
        which: bench::Bench,
    },
    /// Produce demo traffic, run the counting pipeline on it and print what happened.
    Demo(demo::DemoArgs),
}

#[derive(Subcommand)]
enum TopicsAction {
    /// Create or update every topic of the topology (idempotent).
    Apply,
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Load the config and its topology and exit: 0 if both are valid, 2 naming
    /// every problem. Connects to nothing (for packages, `ExecStartPre=`, CI).
    Check,
}

fn main() -> ExitCode {
    // Before any thread starts: a SIGTERM while the process starts waits
    // for the handler (installed below) instead of killing the process.
    mailfleet_runtime::hold_signals();
    let cli = Cli::parse();
    let cfg = match Config::load(cli.config.as_deref()) {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("mailfleet: {e}");
            return ExitCode::from(2);
        }
    };
    let (arenas, mmap) = cfg.runtime.apply_malloc_arenas();
    logging::init(&cfg);
    if let Some(n) = arenas {
        tracing::debug!(malloc_arena_max = n, "glibc malloc arenas bounded");
    }
    if let Some(kb) = mmap {
        tracing::debug!(
            malloc_mmap_threshold_kb = kb,
            "glibc malloc mmap threshold fixed"
        );
    }
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mailfleet: starting tokio: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = Shutdown::new();
    if let Err(e) = runtime.block_on(async { shutdown.trigger_on_signals() }) {
        eprintln!("mailfleet: cannot listen for SIGTERM/SIGINT: {e}");
        return ExitCode::FAILURE;
    }
    match runtime.block_on(dispatch(cli.command, cfg, cli.config, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mailfleet: {e:#}");
            ExitCode::from(account::exit_code(&e))
        }
    }
}

/// Run `command`. The services (`run`, `policy`, `lmtp`, `api`, `clock`,
/// `scheduler`, `postfix-map`) stop gracefully on `shutdown` and exit 0; a
/// one-shot command is cut short by it and fails, saying so.
async fn dispatch(
    command: Command,
    cfg: Config,
    config_path: Option<PathBuf>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    if !command.is_service() {
        let stopped = shutdown.clone();
        return tokio::select! {
            result = one_shot(command, cfg, config_path) => result,
            _ = stopped.wait() => anyhow::bail!("stopped by a signal before it finished"),
        };
    }
    match command {
        Command::Run { consumers, all } => {
            let consumers = if all {
                ConsumerName::ALL
                    .iter()
                    .copied()
                    .filter(|n| *n != ConsumerName::Counter)
                    .collect()
            } else {
                consumers
                    .iter()
                    .map(|n| n.parse())
                    .collect::<Result<Vec<ConsumerName>, _>>()?
            };
            run(consumers, cfg, shutdown).await
        }
        Command::Policy { time } => policy::run(&cfg, time.clock("policy"), shutdown).await,
        Command::Lmtp => lmtp::run(cfg, shutdown).await,
        Command::Submission => submission::run(cfg, shutdown).await,
        Command::Api { time } => account::serve(&cfg, time.clock("api"), shutdown).await,
        Command::Clock { once } => {
            let topology = cfg.topology()?;
            Ok(clock::run(&processes(&cfg), &topology, once, shutdown).await?)
        }
        Command::Scheduler { time, until } => {
            let topology = cfg.topology()?;
            let timing = emitter::Timing {
                clock: time.clock("scheduler"),
                until,
            };
            Ok(emitter::run(&processes(&cfg), &topology, timing, shutdown).await?)
        }
        Command::PostfixMap { once } => {
            if !once {
                metrics::install_exporter(&cfg.metrics)?;
            }
            let (kafka, stop) = (&cfg.kafka, shutdown.clone());
            let statuses = |topic: &str| {
                let projection = StatusProjection::follow(kafka, topic, stop)?;
                Ok(move || projection.snapshot())
            };
            Ok(postfix_install::run(&processes(&cfg), once, statuses, shutdown).await?)
        }
        other => one_shot(other, cfg, config_path).await,
    }
}

/// The sections the scheduler's processes read.
fn processes(cfg: &Config) -> ProcessConfig<'_> {
    ProcessConfig {
        kafka: &cfg.kafka,
        runtime: &cfg.runtime,
        metrics: &cfg.metrics,
        clock: &cfg.clock,
        scheduler: &cfg.scheduler,
    }
}

impl Command {
    /// A long-running service that stops gracefully on SIGTERM.
    fn is_service(&self) -> bool {
        matches!(
            self,
            Command::Run { .. }
                | Command::Policy { .. }
                | Command::Lmtp
                | Command::Submission
                | Command::Api { .. }
                | Command::Clock { .. }
                | Command::Scheduler { .. }
                | Command::PostfixMap { .. }
        )
    }
}

/// A command that runs to its end (a signal cuts it short).
async fn one_shot(
    command: Command,
    cfg: Config,
    config_path: Option<PathBuf>,
) -> anyhow::Result<()> {
    match command {
        Command::Topics {
            action: TopicsAction::Apply,
        } => {
            let topology = cfg.topology()?;
            for (topic, change) in admin::apply(&cfg.kafka, &topology).await? {
                println!("{topic}: {change:?}");
            }
            Ok(())
        }
        Command::Config {
            action: ConfigAction::Check,
        } => check_config(&cfg, config_path.as_deref()),
        Command::Account(args) => account::run(args, &cfg).await,
        Command::Index { action } => index::run(action, &cfg).await,
        Command::Scan(args) => scan::run(args, &cfg).await,
        Command::Spam(args) => spam::run(args, &cfg).await,
        Command::Replay(args) => replay::run(args, &cfg).await,
        Command::Report(args) => report::run(args, &cfg),
        Command::Audit { what } => {
            if !audit::run(what, &cfg).await? {
                use std::io::Write;
                std::io::stdout().flush()?;
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Bench { which } => bench::run(which, &cfg).await,
        Command::Demo(args) => demo::run(args, &cfg, config_path.as_deref()).await,
        // `dispatch` runs the services itself.
        _ => anyhow::bail!("a service reached the one-shot path"),
    }
}

/// `mailfleet config check`: the config was loaded and checked before
/// dispatch (a problem exits 2 there); the topology it names must load and
/// route every consumer `mailfleet run` knows.
fn check_config(cfg: &Config, path: Option<&std::path::Path>) -> anyhow::Result<()> {
    let topology = cfg.topology()?;
    for name in ConsumerName::ALL {
        topology.route(name.as_str())?;
    }
    let shown = path.map_or("<defaults>".to_string(), |p| p.display().to_string());
    let (topics, consumers) = (topology.topics.len(), topology.consumers.len());
    println!("{shown}: ok ({topics} topics, {consumers} consumers in the topology)");
    Ok(())
}

async fn run(names: Vec<ConsumerName>, cfg: Config, shutdown: Shutdown) -> anyhow::Result<()> {
    let topology = cfg.topology()?;
    for name in &names {
        topology.route(name.as_str())?;
    }
    metrics::install_exporter(&cfg.metrics)?;
    let runs = names.iter().map(|name| {
        let (cfg, topology, shutdown) = (&cfg, &topology, shutdown.clone());
        async move {
            let result = consumers::run_consumer(*name, cfg, topology, shutdown.clone()).await;
            // One consumer failing stops the process, so a supervisor restarts it whole.
            shutdown.trigger();
            result.with_context(|| format!("consumer {name}"))
        }
    });
    for (name, result) in names.iter().zip(futures::future::join_all(runs).await) {
        let stats = result?;
        tracing::info!(consumer = %name, ?stats, "stopped");
    }
    Ok(())
}
