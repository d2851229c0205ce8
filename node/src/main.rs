//! `sundial`: run a node (`dev`, `serve`) or talk to one (`job`, `cluster`, `bench`).

use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use sundial::bench::{SubmitBench, System};
use sundial::cli::{BenchCommand, Cli, Command};
use sundial::commands::CliError;
use sundial::config::{self, NodeConfig, Overrides};
use sundial::server::Node;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Dev { data_dir, listen } => {
            let Ok(addr) = listen.parse::<SocketAddr>() else {
                eprintln!("error: --listen {listen:?} is not an ip:port address");
                return ExitCode::from(2);
            };
            match config::dev(data_dir, addr) {
                Ok(cfg) => serve(cfg).await,
                Err(e) => config_failure(e),
            }
        }
        Command::Serve {
            config: path,
            node,
            data_dir,
            cookie,
            max_payload_bytes,
        } => {
            let resolved = (|| {
                let file = config::read_file(&path)?;
                let flags = Overrides {
                    data_dir,
                    cookie,
                    max_payload_bytes,
                };
                config::resolve(file, node, Overrides::from_env()?.then(flags))
            })();
            match resolved {
                Ok(cfg) => serve(cfg).await,
                Err(e) => config_failure(e),
            }
        }
        Command::BuildInfo => {
            let features: Vec<&str> = [("failpoints", sundial::failpoints::ENABLED)]
                .into_iter()
                .filter_map(|(name, on)| on.then_some(name))
                .collect();
            println!(
                "{}",
                serde_json::json!({ "version": env!("CARGO_PKG_VERSION"), "features": features })
            );
            ExitCode::SUCCESS
        }
        Command::Job { client, command } => finish(sundial::commands::job(client, command).await),
        Command::Cluster { client, command } => finish(sundial::commands::cluster(client, command).await),
        Command::Queue { client, command } => finish(sundial::commands::queue(client, command).await),
        Command::Schedule { client, command } => finish(sundial::schedule_cmd::run(client, command).await),
        Command::Worker { client, worker } => {
            init_tracing();
            finish(sundial::worker_cmd::run(client, worker).await)
        }
        Command::Bench { client, command } => {
            let (system, load) = match command {
                BenchCommand::Submit(load) => (System::Sundial, load),
                BenchCommand::EtcdPut(load) => (System::Etcd, load),
                BenchCommand::E2e(d) => {
                    let bench = sundial::bench_e2e::DrainBench {
                        jobs: d.jobs,
                        slots: d.slots,
                        workers: d.workers,
                        prefetch: d.prefetch,
                        submitters: d.submitters,
                        targets: d.targets,
                    };
                    return finish(sundial::bench_e2e::run(client, bench).await);
                }
                BenchCommand::Timers(t) => {
                    let bench = sundial::bench_timers::TimerBench {
                        jobs: t.jobs,
                        span: t.span,
                        lead: t.lead,
                        workers: t.workers,
                        concurrency: t.concurrency,
                        submitters: t.submitters,
                        targets: t.targets,
                        queue: t.queue,
                    };
                    return finish(sundial::bench_timers::run(client, bench).await);
                }
            };
            let bench = SubmitBench {
                system,
                clients: load.clients,
                duration: load.duration,
                payload_bytes: load.payload_bytes,
                targets: load.targets,
                delay_ms: load.delay.map(|d| d.as_millis() as u64).unwrap_or(0),
                queue: load.queue,
            };
            finish(sundial::bench::run(client, bench).await)
        }
    }
}

fn config_failure(e: config::ConfigError) -> ExitCode {
    eprintln!("error: {e}");
    ExitCode::from(2)
}

fn finish(result: Result<(), CliError>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", e.message);
            ExitCode::from(if e.usage { 2 } else { 1 })
        }
    }
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SUNDIAL_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,openraft=warn,ractor=warn,ractor_cluster=warn")
    });
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

async fn serve(cfg: NodeConfig) -> ExitCode {
    init_tracing();
    sundial::failpoints::listen();
    let mut node = match Node::start(cfg).await {
        Ok(node) => node,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let stopped_by_itself = tokio::select! {
        r = node.wait() => Some(r),
        _ = shutdown_signal() => None,
    };
    let outcome = match stopped_by_itself {
        Some(r) => r,
        None => {
            tracing::info!("shutting down");
            node.shutdown().await
        }
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
