//! `sundial bench timers`: how late do due jobs reach their workers?
//!
//! Workers connect first (spread over the targets, completing every job at
//! once). Then N jobs are submitted, due evenly over a span that starts a
//! little later, in due-time order, so every job is stored before it is due.
//! For each delivered job two latenesses are taken: `lease time − run_at`
//! (when the leader's dispatcher leased it; both times are in the job's
//! record, on the leader's clock) and `received − run_at` (when the worker
//! got it, replicated and pushed; the bench runs on the cluster's host, so
//! one clock).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use sundial_raft::job::now_ms;
use sundial_sdk::{Client, NewJob, Worker};
use tokio::sync::mpsc;

use crate::cli::{ClientArgs, Output};
use crate::commands::CliError;

pub struct TimerBench {
    pub jobs: u64,
    pub span: Duration,
    pub lead: Duration,
    pub workers: u32,
    pub concurrency: u32,
    pub submitters: usize,
    pub targets: Vec<String>,
    pub queue: String,
}

pub async fn run(args: ClientArgs, bench: TimerBench) -> Result<(), CliError> {
    let targets = if bench.targets.is_empty() {
        vec![args.addr.clone()]
    } else {
        bench.targets.clone()
    };
    // Unique per run, so an earlier run's leftovers are not counted.
    let queue = format!("{}-{}", bench.queue, std::process::id());
    let (tx, mut rx) = mpsc::unbounded_channel::<(i64, i64)>();
    let mut worker_tasks = Vec::new();
    for w in 0..bench.workers {
        let target = targets[w as usize % targets.len()].clone();
        let tx = tx.clone();
        let worker = Worker::new(target)
            .queue(queue.clone())
            .concurrency(bench.concurrency)
            .id(format!("timer-bench-{w}"));
        worker_tasks.push(tokio::spawn(async move {
            worker
                .run(move |job| {
                    let tx = tx.clone();
                    async move {
                        if let Some(lease) = &job.lease {
                            let _ = tx.send((lease.leased_at_ms - job.run_at_ms, now_ms() - job.run_at_ms));
                        }
                        Ok(Vec::new())
                    }
                })
                .await
        }));
    }
    drop(tx);

    let mut clients = Vec::new();
    for target in &targets {
        clients.push(Client::connect(target).await?.with_timeout(args.request_timeout));
    }
    let start_ms = now_ms() + bench.lead.as_millis() as i64;
    let span_ms = bench.span.as_millis().max(1) as i64;
    // Submits acknowledged only after their job was due: their lateness
    // says nothing about timers, so the run reports them.
    let late = Arc::new(AtomicU64::new(0));
    let total = bench.jobs;
    let run_at = move |i: u64| start_ms + (i as i64 * span_ms) / total.max(1) as i64;
    let submit_started = Instant::now();
    let failed = {
        let queue = queue.clone();
        let make = move |i: u64| NewJob::new(queue.clone(), i.to_be_bytes().to_vec()).run_at_ms(run_at(i));
        let late = late.clone();
        let acked = move |i| {
            if now_ms() > run_at(i) {
                late.fetch_add(1, Ordering::Relaxed);
            }
        };
        crate::bench::submit_all(&clients, bench.submitters, total, make, acked).await
    };
    let submit_secs = submit_started.elapsed().as_secs_f64();
    let late_submits = late.load(Ordering::Relaxed);
    let submitted = bench.jobs - failed;

    // Collect until every job came, or well past the last due time.
    let new_hist =
        || Histogram::<u64>::new_with_bounds(1, 3_600_000, 3).expect("constant histogram bounds are valid");
    let (mut hist, mut received) = (new_hist(), new_hist());
    let mut early = 0u64;
    let mut got = 0u64;
    let give_up = Instant::now()
        + Duration::from_millis((start_ms + span_ms - now_ms()).max(0) as u64)
        + Duration::from_secs(30);
    while got < submitted {
        let left = give_up.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Some((lateness, on_arrival))) => {
                got += 1;
                if lateness < 0 {
                    early += 1;
                }
                let _ = hist.record(lateness.max(0) as u64 + 1);
                let _ = received.record(on_arrival.max(0) as u64 + 1);
            }
            _ => break,
        }
    }
    for w in worker_tasks {
        w.abort();
    }
    let q = |h: &Histogram<u64>, x: f64| h.value_at_quantile(x).saturating_sub(1);
    let (p50, p99, max) = (q(&hist, 0.5), q(&hist, 0.99), hist.max().saturating_sub(1));
    let (r50, r99, rmax) = (
        q(&received, 0.5),
        q(&received, 0.99),
        received.max().saturating_sub(1),
    );
    match args.output {
        Output::Table => {
            println!(
                "timer benchmark: {} jobs due over {}, {} workers x {} slots, targets {}",
                bench.jobs,
                humantime::format_duration(bench.span),
                bench.workers,
                bench.concurrency,
                targets.join(",")
            );
            println!(
                "submitted {submitted} in {submit_secs:.1} s ({:.0}/s); acknowledged after their due time: {late_submits}",
                submitted as f64 / submit_secs.max(1e-9),
            );
            println!(
                "delivered {got}/{submitted}, early {early}; lateness (lease − run_at) p50 {p50} ms, p99 {p99} ms, max {max} ms"
            );
            println!("at the worker (received − run_at): p50 {r50} ms, p99 {r99} ms, max {rmax} ms");
        }
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "jobs": bench.jobs, "submitted": submitted, "delivered": got, "early": early,
                "span_ms": span_ms, "submit_seconds": submit_secs, "acknowledged_after_due": late_submits,
                "lateness_p50_ms": p50, "lateness_p99_ms": p99, "lateness_max_ms": max,
                "received_p50_ms": r50, "received_p99_ms": r99, "received_max_ms": rmax,
            })
        ),
    }
    if got < submitted || early > 0 {
        return Err(CliError {
            message: format!(
                "{} of {submitted} jobs never came, {early} came early",
                submitted - got
            ),
            usage: false,
        });
    }
    Ok(())
}
