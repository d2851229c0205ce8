//! The SDK worker's prefetch: it holds more leased jobs than it runs, runs
//! no more than its concurrency at once, and keeps the waiting jobs' leases
//! alive — a job waiting longer than its timeout for a free handler is not
//! expired and retried.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use sundial_sdk::proto::JobState;
use sundial_sdk::{NewJob, Worker};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t68_prefetched_jobs_wait_with_live_leases_and_run_one_at_a_time() {
    let cluster = TestCluster::start(1, 2);
    cluster.wait_all_leaders(0, Duration::from_secs(30)).await;
    let mut client = cluster.client(0).await;
    let mut ids = Vec::new();
    for i in 0..8 {
        // A 1 s lease; the last job waits ~2 s for the one handler.
        let job = NewJob::new("prefetch", format!("job-{i}")).timeout(Duration::from_secs(1));
        ids.push(client.submit(job).await.expect("submit"));
    }
    let running = Arc::new(AtomicU32::new(0));
    let most = Arc::new(AtomicU32::new(0));
    let worker = {
        let (running, most) = (running.clone(), most.clone());
        let worker = Worker::new(cluster.addr(0))
            .queue("prefetch")
            .concurrency(1)
            .prefetch(7);
        tokio::spawn(async move {
            worker
                .run(move |_job| {
                    let (running, most) = (running.clone(), most.clone());
                    async move {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(300)).await;
                        running.fetch_sub(1, Ordering::SeqCst);
                        Ok(Vec::new())
                    }
                })
                .await
        })
    };
    // All eight are leased to the worker at once (its credits are 8).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.queue_stats("", "prefetch").await.expect("stats");
        if stats.leased + stats.succeeded == 8 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not take its prefetch: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for id in &ids {
        let job =
            common::worker::wait_state(&mut client, id, JobState::Succeeded, Duration::from_secs(20)).await;
        assert_eq!(
            job.attempts, 1,
            "job {id} was retried: its lease lapsed while it waited"
        );
    }
    assert_eq!(most.load(Ordering::SeqCst), 1, "one handler at a time");
    worker.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t69_a_stopping_worker_releases_its_prefetched_jobs_unspent() {
    let cluster = TestCluster::start(1, 2);
    cluster.wait_all_leaders(0, Duration::from_secs(30)).await;
    let mut client = cluster.client(0).await;
    let mut ids = Vec::new();
    for i in 0..6 {
        // One attempt each: a job whose attempt was spent would be dead.
        let job = NewJob::new("graceful", format!("job-{i}")).max_attempts(1);
        ids.push(client.submit(job).await.expect("submit"));
    }
    let started = Arc::new(AtomicU32::new(0));
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let first = {
        let started = started.clone();
        let worker = Worker::new(cluster.addr(0))
            .queue("graceful")
            .concurrency(1)
            .prefetch(5);
        tokio::spawn(async move {
            worker
                .run_until(
                    move |_job| {
                        let started = started.clone();
                        async move {
                            started.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            Ok(b"first".to_vec())
                        }
                    },
                    async {
                        let _ = stop_rx.await;
                    },
                )
                .await
        })
    };
    // All six held (one running, five waiting), then stop.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = client.queue_stats("", "graceful").await.expect("stats");
        if stats.leased == 6 && started.load(Ordering::SeqCst) == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not take its jobs: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = stop_tx.send(());
    // The worker returns once the running job is recorded and the rest are
    // released.
    tokio::time::timeout(Duration::from_secs(10), first)
        .await
        .expect("the worker stopped")
        .expect("worker task")
        .expect("clean stop");
    let stats = client.queue_stats("", "graceful").await.expect("stats");
    assert_eq!((stats.succeeded, stats.ready, stats.dead), (1, 5, 0), "{stats:?}");
    // Another worker runs the released jobs on their one attempt.
    let second = tokio::spawn(
        Worker::new(cluster.addr(0))
            .queue("graceful")
            .concurrency(5)
            .run(|_job| async { Ok(b"second".to_vec()) }),
    );
    for id in &ids {
        common::worker::wait_state(&mut client, id, JobState::Succeeded, Duration::from_secs(20)).await;
    }
    second.abort();
}
