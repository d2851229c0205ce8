//! After a node comes back from a crash, it takes back the leadership of the
//! shards it prefers to lead, so write work spreads over the nodes again.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::TestCluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t50_restarted_node_reclaims_its_preferred_shards() {
    let mut cluster = TestCluster::start(3, 6);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let leaders = |info: &sundial_sdk::proto::GetClusterInfoResponse| -> BTreeMap<u32, u64> {
        info.shards.iter().map(|s| (s.shard, s.leader)).collect()
    };
    let first = leaders(&cluster.client(1).await.cluster_info().await.expect("info"));
    let preferred: Vec<u32> = first.iter().filter(|(_, l)| **l == 1).map(|(s, _)| *s).collect();
    assert_eq!(preferred.len(), 2, "first leaders spread evenly: {first:?}");

    cluster.kill(0);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let now = leaders(&cluster.client(1).await.cluster_info().await.expect("info"));
        if preferred
            .iter()
            .all(|s| matches!(now.get(s), Some(l) if *l != 0 && *l != 1))
        {
            break;
        }
        assert!(Instant::now() < deadline, "survivors never took over: {now:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    cluster.restart(0);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now = leaders(&cluster.client(1).await.cluster_info().await.expect("info"));
        if preferred.iter().all(|s| now.get(s) == Some(&1)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 1 did not take back shards {preferred:?}: {now:?}\n{}",
            cluster.logs(0)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
