//! `chaos`: run the chaos suite against a real cluster, or (`chaos worker`)
//! be one of its worker processes.
//!
//! ```sh
//! cargo run --release -p chaos-tests --bin chaos -- --nodes 3 --duration 3m [--seed S]
//! scripts/build-image.sh && chaos --mode docker --nodes 3 --duration 3m
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use chaos_tests::run::{self, RunOpts};
use chaos_tests::worker::{self, WorkerSpec};
use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser)]
#[command(
    name = "chaos",
    about = "Attack a real Sundial cluster with faults and check every invariant"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,
    /// Nodes in the cluster (at least 3).
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    /// How long faults are injected (then failover is measured, the
    /// cluster healed and drained, and the history checked).
    #[arg(long, default_value = "3m", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Seed of every random choice; printed, so a run can be replayed.
    #[arg(long)]
    seed: Option<u64>,
    /// Where the nodes run.
    #[arg(long, value_enum, default_value_t = Mode::Process)]
    mode: Mode,
    /// The image of container mode (scripts/build-image.sh builds it).
    #[arg(long, default_value = "sundial:local")]
    image: String,
    /// Producers hold back while this many jobs wait in the work queue.
    #[arg(long, default_value_t = 400)]
    max_backlog: u64,
    /// Shards in the cluster.
    #[arg(long, default_value_t = 8)]
    shards: u32,
    /// Concurrent producers.
    #[arg(long, default_value_t = 4)]
    producers: usize,
    /// Worker processes.
    #[arg(long, default_value_t = 3)]
    workers: usize,
    /// Leader kills timed for the failover figure.
    #[arg(long, default_value_t = 20)]
    failover_kills: usize,
    /// Quiet time after each fault heals.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    gap: Duration,
    /// The run's directory (history, node logs, data). Default: a new one
    /// under /var/tmp/sundial-chaos.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Keep the run's directory even when it passes.
    #[arg(long)]
    keep: bool,
    /// The sundial binary (default: the one next to this binary).
    #[arg(long)]
    sundial: Option<PathBuf>,
}

#[derive(Clone, Copy, ValueEnum)]
enum Mode {
    /// Processes in network namespaces on this host.
    Process,
    /// Containers from the locally built image.
    Docker,
}

#[derive(Subcommand)]
enum Sub {
    /// One worker process (started by the harness).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        name: String,
        /// Node client addresses, comma-separated.
        #[arg(long, value_delimiter = ',')]
        addrs: Vec<String>,
        #[arg(long)]
        history: PathBuf,
        #[arg(long)]
        seed: u64,
        #[arg(long, default_value_t = 4)]
        concurrency: u32,
        #[arg(long, value_delimiter = ',', default_value = "work,sched")]
        queues: Vec<String>,
        /// Per mille of jobs during which the process exits.
        #[arg(long, default_value_t = 15)]
        crash: u32,
        /// Per mille of jobs failed (retryable).
        #[arg(long, default_value_t = 80)]
        fail: u32,
        /// Per mille of jobs that run 1.5 leases long, heartbeating.
        #[arg(long, default_value_t = 30)]
        slow: u32,
        /// Per mille of jobs that overrun their lease without heartbeats.
        #[arg(long, default_value_t = 15)]
        overrun: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber_init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chaos: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async_main(cli))
}

/// Progress lines on stderr (`RUST_LOG` overrides the default `info`).
fn tracing_subscriber_init() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn async_main(cli: Cli) -> ExitCode {
    if let Some(Sub::Worker {
        name,
        addrs,
        history,
        seed,
        concurrency,
        queues,
        crash,
        fail,
        slow,
        overrun,
    }) = cli.command
    {
        let spec = WorkerSpec {
            name,
            addrs,
            queues,
            history,
            concurrency,
            seed,
            crash,
            fail,
            slow,
            overrun,
        };
        return match worker::run(spec).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("chaos worker: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let seed = cli.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
            % 1_000_000_007
    });
    let me = match std::env::current_exe() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("chaos: cannot find my own binary: {e}");
            return ExitCode::from(1);
        }
    };
    let bin = cli.sundial.unwrap_or_else(|| {
        me.parent()
            .map(|d| d.join("sundial"))
            .unwrap_or_else(|| "sundial".into())
    });
    let dir = cli.out.unwrap_or_else(|| {
        PathBuf::from("/var/tmp/sundial-chaos").join(format!("run-{}-seed-{seed}", history_stamp()))
    });
    if let Err(e) = std::fs::create_dir_all(&dir) {
        eprintln!("chaos: cannot create {}: {e}", dir.display());
        return ExitCode::from(1);
    }
    let opts = RunOpts {
        nodes: cli.nodes,
        shards: cli.shards,
        duration: cli.duration,
        seed,
        producers: cli.producers,
        workers: cli.workers,
        failover_kills: cli.failover_kills,
        gap: cli.gap,
        bin,
        me,
        dir: dir.clone(),
        mode: match cli.mode {
            Mode::Process => run::Mode::Process,
            Mode::Docker => run::Mode::Docker { image: cli.image },
        },
        max_backlog: cli.max_backlog,
    };
    eprintln!(
        "chaos: seed={seed} mode={} nodes={} duration={} dir={} (replay with --seed {seed})",
        opts.mode.name(),
        opts.nodes,
        humantime::format_duration(opts.duration),
        dir.display()
    );
    match run::run(opts.clone()).await {
        Ok(result) => {
            for (name, found) in result.report.all() {
                for d in &found.details {
                    eprintln!("chaos: {name}: {d}");
                }
            }
            for d in result.write_outages.iter().chain(&result.node_crashes) {
                eprintln!("chaos: {d}");
            }
            let faults: Vec<String> = result.faults.iter().map(|(k, v)| format!("{k}={v}")).collect();
            eprintln!("chaos: faults by kind: {}", faults.join(" "));
            println!("{}", run::summary(&opts, &result));
            if result.passed() {
                if !cli.keep {
                    let _ = std::fs::remove_dir_all(&dir);
                }
                ExitCode::SUCCESS
            } else {
                eprintln!("chaos: FAILED; history and node logs kept in {}", dir.display());
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("chaos: the run could not complete: {e:#}");
            eprintln!("chaos: history and node logs kept in {}", dir.display());
            ExitCode::from(1)
        }
    }
}

/// Seconds since the epoch: unique enough for a run's directory name.
fn history_stamp() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs().to_string())
        .unwrap_or_default()
}
