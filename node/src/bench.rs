//! `sundial bench submit`: closed-loop submit load against a running cluster.
//! Each client submits one job at a time; we report jobs/s and latency
//! percentiles per concurrency level. Every acknowledged submit is
//! quorum-committed and fsynced, as in production.

use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sundial_proto::etcd::kv_client::KvClient;
use sundial_proto::etcd::PutRequest;
use sundial_sdk::{Client, NewJob};

use crate::cli::{ClientArgs, Output};
use crate::commands::CliError;

/// What the load generator drives.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum System {
    /// Sundial `SubmitJob`.
    Sundial,
    /// etcd v3 `KV.Put` with the same value size, for comparison.
    Etcd,
}

/// One connection of either system.
#[derive(Clone)]
enum Conn {
    Sundial(Box<Client>),
    Etcd(KvClient<tonic::transport::Channel>),
}

impl Conn {
    async fn connect(system: System, addr: &str, timeout: Duration) -> Result<Conn, CliError> {
        match system {
            System::Sundial => Ok(Conn::Sundial(Box::new(
                Client::connect(addr).await?.with_timeout(timeout),
            ))),
            System::Etcd => {
                let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
                    .map_err(|e| CliError::usage(format!("--targets {addr:?}: {e}")))?
                    .tcp_nodelay(true)
                    .connect()
                    .await
                    .map_err(|e| CliError {
                        message: format!("cannot connect to etcd at {addr}: {e}"),
                        usage: false,
                    })?;
                Ok(Conn::Etcd(KvClient::new(channel)))
            }
        }
    }

    /// One acknowledged write; `Err` carries nothing (it is only counted).
    async fn write(&mut self, queue: &str, key: String, payload: &[u8], delay_ms: u64) -> Result<(), ()> {
        match self {
            Conn::Sundial(client) => client
                .submit(NewJob::new(queue, payload.to_vec()).delay_ms(delay_ms))
                .await
                .map(|_| ())
                .map_err(|_| ()),
            Conn::Etcd(kv) => kv
                .put(PutRequest {
                    key: key.into_bytes(),
                    value: payload.to_vec(),
                })
                .await
                .map(|_| ())
                .map_err(|_| ()),
        }
    }
}

pub struct SubmitBench {
    pub system: System,
    pub clients: Vec<usize>,
    pub duration: Duration,
    pub payload_bytes: usize,
    pub targets: Vec<String>,
    pub queue: String,
    /// Due time of each job after its submit (Sundial only).
    pub delay_ms: u64,
}

pub struct RunResult {
    pub clients: usize,
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
}

impl RunResult {
    pub fn per_second(&self) -> f64 {
        self.ok as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn quantile_ms(&self, q: f64) -> f64 {
        self.histogram.value_at_quantile(q) as f64 / 1000.0
    }
}

pub async fn run(args: ClientArgs, bench: SubmitBench) -> Result<(), CliError> {
    let targets = if bench.targets.is_empty() {
        vec![args.addr.clone()]
    } else {
        bench.targets.clone()
    };
    let mut connections = Vec::new();
    for target in &targets {
        connections.push(Conn::connect(bench.system, target, args.request_timeout).await?);
    }
    if args.output == Output::Table {
        println!(
            "{} benchmark: {} per run, payload {} B, targets {}",
            match bench.system {
                System::Sundial => "sundial submit",
                System::Etcd => "etcd put",
            },
            humantime::format_duration(bench.duration),
            bench.payload_bytes,
            targets.join(",")
        );
        println!(
            "{:>8}  {:>10}  {:>10}  {:>9}  {:>9}  {:>9}  {:>7}",
            "CLIENTS", "JOBS", "JOBS/S", "P50 MS", "P99 MS", "MAX MS", "ERRORS"
        );
    }
    for &clients in &bench.clients {
        let result = run_level(&connections, clients, &bench).await;
        match args.output {
            Output::Table => println!(
                "{:>8}  {:>10}  {:>10.0}  {:>9.2}  {:>9.2}  {:>9.2}  {:>7}",
                result.clients,
                result.ok,
                result.per_second(),
                result.quantile_ms(0.5),
                result.quantile_ms(0.99),
                result.histogram.max() as f64 / 1000.0,
                result.errors
            ),
            Output::Json => println!(
                "{}",
                serde_json::json!({
                    "system": format!("{:?}", bench.system).to_lowercase(),
                    "clients": result.clients,
                    "jobs": result.ok,
                    "errors": result.errors,
                    "jobs_per_second": result.per_second(),
                    "p50_ms": result.quantile_ms(0.5),
                    "p99_ms": result.quantile_ms(0.99),
                    "max_ms": result.histogram.max() as f64 / 1000.0,
                })
            ),
        }
    }
    Ok(())
}

async fn run_level(connections: &[Conn], clients: usize, bench: &SubmitBench) -> RunResult {
    let payload = vec![b'x'; bench.payload_bytes];
    let started = Instant::now();
    let stop_at = started + bench.duration;
    let mut tasks = Vec::new();
    for i in 0..clients {
        let mut client = connections[i % connections.len()].clone();
        let payload = payload.clone();
        let queue = bench.queue.clone();
        let delay_ms = bench.delay_ms;
        tasks.push(tokio::spawn(async move {
            let mut hist = new_histogram();
            let (mut ok, mut errors) = (0u64, 0u64);
            while Instant::now() < stop_at {
                let t = Instant::now();
                let key = format!("bench/{clients}/{i}/{}", ok + errors);
                match client.write(&queue, key, &payload, delay_ms).await {
                    Ok(_) => {
                        ok += 1;
                        let _ = hist.record(t.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            (ok, errors, hist)
        }));
    }
    let mut total = new_histogram();
    let (mut ok, mut errors) = (0, 0);
    for task in tasks {
        if let Ok((o, e, h)) = task.await {
            ok += o;
            errors += e;
            let _ = total.add(h);
        }
    }
    let elapsed = started.elapsed();
    RunResult {
        clients,
        ok,
        errors,
        elapsed,
        histogram: total,
    }
}

/// Latencies in µs from 1 µs to 60 s at 3 significant figures.
fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("constant histogram bounds are valid")
}

/// Submits jobs `0..total` from `submitters` concurrent tasks spread over
/// `clients`: `make(i)` builds job `i`, `acked(i)` runs after its submit was
/// acknowledged. Returns how many submits failed.
pub async fn submit_all(
    clients: &[Client],
    submitters: usize,
    total: u64,
    make: impl Fn(u64) -> NewJob + Send + Sync + 'static,
    acked: impl Fn(u64) + Send + Sync + 'static,
) -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let next = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let (make, acked) = (Arc::new(make), Arc::new(acked));
    let mut tasks = Vec::new();
    for s in 0..submitters.max(1) {
        let mut client = clients[s % clients.len().max(1)].clone();
        let (next, failed, make, acked) = (next.clone(), failed.clone(), make.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                match client.submit(make(i)).await {
                    Ok(_) => acked(i),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    failed.load(Ordering::Relaxed)
}
