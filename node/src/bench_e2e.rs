//! `sundial bench e2e`: how fast do worker slots drain a queue?
//!
//! N jobs are submitted first (a backlog, like the PostgreSQL `SKIP LOCKED`
//! table the comparison drains). Then worker streams with `slots` slots in
//! all connect and complete every job at once; the rate is completions per
//! second from the first worker's start to the last completion. Every lease
//! and every completion is a quorum-durable Raft write.

use std::time::{Duration, Instant};

use sundial_sdk::{Client, NewJob, Worker};
use tokio::sync::mpsc;

use crate::cli::{ClientArgs, Output};
use crate::commands::CliError;

pub struct DrainBench {
    pub jobs: u64,
    pub slots: u32,
    pub workers: u32,
    pub prefetch: u32,
    pub submitters: usize,
    pub targets: Vec<String>,
}

pub async fn run(args: ClientArgs, bench: DrainBench) -> Result<(), CliError> {
    let targets = if bench.targets.is_empty() {
        vec![args.addr.clone()]
    } else {
        bench.targets.clone()
    };
    let queue = format!("e2e-{}", std::process::id());
    let mut clients = Vec::new();
    for target in &targets {
        clients.push(Client::connect(target).await?.with_timeout(args.request_timeout));
    }
    let started = Instant::now();
    let failed = {
        let queue = queue.clone();
        let make = move |_| NewJob::new(queue.clone(), vec![b'x'; 100]);
        crate::bench::submit_all(&clients, bench.submitters, bench.jobs, make, |_| {}).await
    };
    let submit_secs = started.elapsed().as_secs_f64();
    let stored = bench.jobs - failed;

    let workers = bench.workers.max(1);
    let per_worker = bench.slots.div_ceil(workers).max(1);
    let prefetch_per_worker = bench.prefetch.div_ceil(workers);
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let drain_started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..workers {
        let tx = tx.clone();
        let worker = Worker::new(targets[w as usize % targets.len()].clone())
            .queue(queue.clone())
            .concurrency(per_worker)
            .prefetch(prefetch_per_worker)
            .id(format!("e2e-bench-{w}"));
        tasks.push(tokio::spawn(async move {
            worker
                .run(move |_job| {
                    let tx = tx.clone();
                    async move {
                        let _ = tx.send(());
                        Ok(Vec::new())
                    }
                })
                .await
        }));
    }
    drop(tx);
    // A job counts once its handler ran; the completion write follows. The
    // last completions are waited for through the queue's stats below.
    let mut handled = 0u64;
    while handled < stored {
        match tokio::time::timeout(Duration::from_secs(30), rx.recv()).await {
            Ok(Some(())) => handled += 1,
            _ => break,
        }
    }
    let mut stats_client = clients[0].clone();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut succeeded = 0;
    while Instant::now() < deadline {
        let stats = stats_client.queue_stats("", &queue).await?;
        succeeded = stats.succeeded;
        if succeeded >= stored {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    for t in tasks {
        t.abort();
    }
    let rate = succeeded as f64 / drain_secs.max(1e-9);
    match args.output {
        Output::Table => {
            println!(
                "drain benchmark: {} jobs, {} worker slots ({} streams, {} prefetched), targets {}",
                bench.jobs,
                per_worker * workers,
                workers,
                prefetch_per_worker * workers,
                targets.join(",")
            );
            println!(
                "submitted {stored} in {submit_secs:.1} s ({:.0}/s)",
                stored as f64 / submit_secs.max(1e-9)
            );
            println!("completed {succeeded}/{stored} in {drain_secs:.1} s: {rate:.0} jobs/s (lease + completion, each quorum-durable)");
        }
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "jobs": bench.jobs, "stored": stored, "slots": per_worker * workers,
                "prefetch": prefetch_per_worker * workers,
                "submit_seconds": submit_secs, "completed": succeeded,
                "drain_seconds": drain_secs, "jobs_per_second": rate,
            })
        ),
    }
    if succeeded < stored {
        return Err(CliError {
            message: format!("only {succeeded} of {stored} jobs completed"),
            usage: false,
        });
    }
    Ok(())
}
