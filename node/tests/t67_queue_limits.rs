//! A queue's concurrency limit holds cluster-wide: with the queue's jobs on
//! every shard (each leased by its own leader) and workers with plenty of
//! credits on two nodes, never more than the limit run at once, the limit is
//! reached, it holds while a node leading some of the shards dies, and
//! raising or removing it lets more run.

mod common;

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use sundial_sdk::proto::JobState;
use sundial_sdk::{Client, NewJob, Worker};

/// How many handlers run at once, and the most seen.
#[derive(Default)]
struct Gauge {
    now: AtomicU32,
    max: AtomicU32,
    done: AtomicU32,
}

impl Gauge {
    fn reset_max(&self) {
        self.max.store(self.now.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

async fn submit(client: &mut Client, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let id = client
            .submit(NewJob::new("limited", format!("job-{i}")))
            .await
            .expect("submit");
        ids.push(id);
    }
    ids
}

async fn wait_done(gauge: &Gauge, total: u32) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while gauge.done.load(Ordering::SeqCst) < total {
        assert!(
            Instant::now() < deadline,
            "only {} of {total} jobs done",
            gauge.done.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t67_a_queue_limit_holds_across_shards_and_nodes() {
    let mut cluster = TestCluster::start(3, 4);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let mut client = cluster.client(0).await;
    let stats = client
        .set_queue_concurrency("", "limited", 3)
        .await
        .expect("set limit");
    assert_eq!(stats.concurrency_limit, 3);

    let gauge = Arc::new(Gauge::default());
    let mut workers = Vec::new();
    for node in [1, 2] {
        let gauge = gauge.clone();
        let worker = Worker::new(format!("http://{}", cluster.addr(node)))
            .queue("limited")
            .concurrency(10);
        workers.push(tokio::spawn(async move {
            worker
                .run(move |_job| {
                    let gauge = gauge.clone();
                    async move {
                        let now = gauge.now.fetch_add(1, Ordering::SeqCst) + 1;
                        gauge.max.fetch_max(now, Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(150)).await;
                        gauge.now.fetch_sub(1, Ordering::SeqCst);
                        gauge.done.fetch_add(1, Ordering::SeqCst);
                        Ok(b"ok".to_vec())
                    }
                })
                .await
        }));
    }

    // 24 jobs spread over the 4 shards, 20 worker slots: the limit decides.
    let ids = submit(&mut client, 24).await;
    wait_done(&gauge, 24).await;
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max <= 3, "{max} jobs ran at once under a limit of 3");
    assert_eq!(
        max, 3,
        "the limit was reached (jobs on several shards ran together)"
    );
    for id in &ids {
        let job = client.get_job(id).await.expect("get");
        assert_eq!(job.state, JobState::Succeeded as i32);
    }

    // A node leading some shards (maybe the queue's home shard) dies while
    // the queue's jobs run: new leaders keep to the shards' grants.
    let mut client = cluster.client(1).await;
    gauge.reset_max();
    submit(&mut client, 24).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while gauge.done.load(Ordering::SeqCst) < 30 {
        assert!(Instant::now() < deadline, "jobs did not start");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cluster.kill(0);
    wait_done(&gauge, 48).await;
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(
        max <= 3,
        "{max} jobs ran at once under a limit of 3 across a leader kill"
    );

    // Raised: more run at once, still within the new limit.
    client
        .set_queue_concurrency("", "limited", 8)
        .await
        .expect("raise limit");
    gauge.reset_max();
    submit(&mut client, 40).await;
    wait_done(&gauge, 88).await;
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max > 3 && max <= 8, "{max} at once under a limit of 8");

    // Removed: the workers' 20 slots are the only bound.
    let stats = client
        .set_queue_concurrency("", "limited", 0)
        .await
        .expect("remove limit");
    assert_eq!(stats.concurrency_limit, 0);
    gauge.reset_max();
    submit(&mut client, 40).await;
    wait_done(&gauge, 128).await;
    let max = gauge.max.load(Ordering::SeqCst);
    assert!(max > 8, "{max} at once with no limit and 20 slots");

    // Bad limits are refused with the field named.
    let err = client
        .set_queue_concurrency("", "limited", 2_000_000)
        .await
        .expect_err("too large");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    assert!(err.to_string().contains("limit"), "{err}");

    for w in workers {
        w.abort();
    }
}
