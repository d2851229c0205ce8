//! A follower that was down while its leaders snapshotted and purged their
//! logs catches up by installing snapshots, and then holds every job.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::TestCluster;
use sundial_sdk::NewJob;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t40_lagging_follower_catches_up_from_snapshots() {
    // The harness config snapshots every 20 entries and keeps 5 behind.
    let mut cluster = TestCluster::start(3, 4);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let lagging = 2;
    cluster.kill(lagging);

    // Small concurrency gives many small entries: far more than 25 per shard.
    let mut acked = BTreeSet::new();
    let mut tasks = Vec::new();
    for w in 0..4usize {
        let mut client = cluster.client(w % 2).await;
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for i in 0..250 {
                let id = client
                    .submit(NewJob::new("catch-up", format!("{w}-{i}").into_bytes()))
                    .await
                    .expect("submit with one node down");
                ids.push(id);
            }
            ids
        }));
    }
    for t in tasks {
        acked.extend(t.await.expect("task"));
    }
    assert_eq!(acked.len(), 1000);

    cluster.restart(lagging);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let have: BTreeSet<String> = cluster
            .local_jobs(lagging)
            .await
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        if have == acked {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "restarted node holds {} of {} jobs after 60 s\n{}",
            have.intersection(&acked).count(),
            acked.len(),
            cluster.logs(lagging)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = common::read_to_string(&cluster.log_path(lagging));
    assert!(
        log.contains("installed snapshot from leader"),
        "the restarted node caught up without a snapshot; the test did not exercise one\n{}",
        cluster.logs(lagging)
    );
}
