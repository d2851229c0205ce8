//! A 3-node cluster of real processes on real sockets: submit through every
//! node, SIGKILL the node that leads the most shards, keep submitting, restart
//! it, and check every acknowledged job is on every replica — none lost, none
//! duplicated, nothing that was never submitted.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::TestCluster;
use sundial_sdk::proto::{JobState, ReadConsistency};
use sundial_sdk::{Client, NewJob};

/// What the client knows about each submit: acked ids, and submits whose
/// outcome is unknown (an error: the job may or may not exist).
#[derive(Default)]
struct History {
    acked: BTreeMap<String, u64>,
    unknown: BTreeSet<u64>,
}

async fn clients_for(cluster: &TestCluster, nodes: &[usize]) -> Vec<Client> {
    let mut clients = Vec::new();
    for &n in nodes {
        clients.push(cluster.client(n).await);
    }
    clients
}

/// 16 workers submitting `range` through `clients` round-robin.
fn spawn_submits(
    clients: Vec<Client>,
    range: std::ops::Range<u64>,
    history: Arc<Mutex<History>>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let workers = 16u64;
    (0..workers)
        .map(|w| {
            let mut client = clients[w as usize % clients.len()].clone();
            let history = history.clone();
            let range = range.clone();
            tokio::spawn(async move {
                for seq in range.filter(|s| s % workers == w) {
                    let job = NewJob::new("failover", format!("seq-{seq}").into_bytes());
                    match client.submit(job).await {
                        Ok(id) => {
                            history.lock().expect("lock").acked.insert(id, seq);
                        }
                        Err(_) => {
                            history.lock().expect("lock").unknown.insert(seq);
                        }
                    }
                }
            })
        })
        .collect()
}

async fn submit_range(
    cluster: &TestCluster,
    nodes: &[usize],
    range: std::ops::Range<u64>,
    history: Arc<Mutex<History>>,
) {
    let clients = clients_for(cluster, nodes).await;
    for task in spawn_submits(clients, range, history) {
        task.await.expect("submit task");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t10_kill_the_busiest_leader_loses_nothing() {
    let mut cluster = TestCluster::start(3, 8);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let history = Arc::new(Mutex::new(History::default()));

    // 1,000 jobs through all three nodes.
    submit_range(&cluster, &[0, 1, 2], 0..1000, history.clone()).await;
    assert_eq!(
        history.lock().expect("lock").acked.len(),
        1000,
        "every submit on a healthy cluster succeeds"
    );

    // Kill the node leading the most shards.
    let info = cluster
        .client(0)
        .await
        .cluster_info()
        .await
        .expect("cluster info");
    let mut led: BTreeMap<u64, usize> = BTreeMap::new();
    for s in &info.shards {
        *led.entry(s.leader).or_default() += 1;
    }
    let (&victim_id, &count) = led.iter().max_by_key(|(_, c)| **c).expect("some leader");
    let victim = (victim_id - 1) as usize;
    let victim_shards: BTreeSet<u32> = info
        .shards
        .iter()
        .filter(|s| s.leader == victim_id)
        .map(|s| s.shard)
        .collect();
    // Jobs on the shards the victim leads: cancelling them must go through
    // those shards' next leaders.
    let to_cancel: Vec<String> = history
        .lock()
        .expect("lock")
        .acked
        .keys()
        .filter(|id| victim_shards.contains(&u32::from_str_radix(&id[..4], 16).expect("hex shard")))
        .take(60)
        .cloned()
        .collect();
    assert!(!to_cancel.is_empty(), "the victim's shards hold jobs");
    // SIGKILL the victim while submits through all three nodes are in flight.
    let load = spawn_submits(
        clients_for(&cluster, &[0, 1, 2]).await,
        1000..1600,
        history.clone(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while history.lock().expect("lock").acked.len() < 1100 {
        assert!(Instant::now() < deadline, "load made no progress");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!("killing node {victim_id}, leader of {count} shards, under load");
    cluster.kill(victim);

    // Keep writing through the survivors while elections happen: new submits,
    // and cancels that need the victim's shards to elect new leaders.
    let survivors: Vec<usize> = (0..3).filter(|i| *i != victim).collect();
    let failover_started = Instant::now();
    let mut cancels = Vec::new();
    for (n, id) in to_cancel.iter().enumerate() {
        let mut client = cluster.client(survivors[n % survivors.len()]).await;
        let id = id.clone();
        cancels.push(tokio::spawn(async move { client.cancel_job(&id).await }));
    }
    submit_range(&cluster, &survivors, 1600..2000, history.clone()).await;
    for task in load {
        task.await.expect("load task");
    }
    for cancel in cancels {
        let job = cancel
            .await
            .expect("cancel task")
            .expect("a cancel during the failover succeeds within its deadline");
        assert_eq!(job.state, JobState::Cancelled as i32);
    }
    eprintln!(
        "400 submits and {} cancels on the victim's shards during failover took {:?}",
        to_cancel.len(),
        failover_started.elapsed()
    );

    cluster.restart(victim);
    cluster.wait_all_leaders(victim, Duration::from_secs(30)).await;
    submit_range(&cluster, &[0, 1, 2], 2000..2100, history.clone()).await;

    let history = std::mem::take(&mut *history.lock().expect("lock"));
    let acked: BTreeSet<&String> = history.acked.keys().collect();
    eprintln!(
        "acked {} submits, {} with unknown outcome",
        acked.len(),
        history.unknown.len()
    );
    assert!(
        acked.len() >= 1500,
        "the cluster kept taking writes with one node down"
    );

    // Each node's replicas, once caught up, hold exactly the acked jobs (plus
    // possibly jobs whose submit outcome was unknown), each once.
    for i in 0..3 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let jobs = cluster.local_jobs(i).await;
            let ids: BTreeSet<&String> = jobs.iter().map(|(id, _)| id).collect();
            let missing = acked.iter().filter(|id| !ids.contains(**id)).count();
            if missing == 0 {
                let mut seen_payloads = BTreeSet::new();
                for (id, payload) in &jobs {
                    assert!(
                        seen_payloads.insert(payload.clone()),
                        "node {}: payload {payload} stored twice",
                        i + 1
                    );
                    if !acked.contains(id) {
                        let seq: u64 = payload.trim_start_matches("seq-").parse().expect("our payload");
                        assert!(
                            history.unknown.contains(&seq),
                            "node {}: job {id} ({payload}) was never submitted",
                            i + 1
                        );
                    }
                }
                break;
            }
            assert!(
                Instant::now() < deadline,
                "node {} is missing {missing} acknowledged jobs after 60 s\n{}",
                i + 1,
                cluster.logs(i)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // The cancels made during the failover are on this replica too.
        let mut client = cluster.client(i).await;
        for id in &to_cancel {
            let deadline = Instant::now() + Duration::from_secs(30);
            loop {
                let job = client
                    .get_job_with(id, ReadConsistency::Local)
                    .await
                    .expect("local read");
                if job.state == JobState::Cancelled as i32 {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "node {}: cancel of {id} never arrived",
                    i + 1
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        // Linearizable reads through this node: jobs on shards led elsewhere
        // are forwarded to their leaders over the actor plane.
        for (id, seq) in history.acked.iter().skip(i * 100).take(100) {
            let job = client.get_job(id).await.expect("leader read");
            assert_eq!(job.payload, format!("seq-{seq}").into_bytes());
        }
        // And a point read of a few acked jobs on this node's replica.
        for (id, seq) in history.acked.iter().take(20) {
            let job = client
                .get_job_with(id, ReadConsistency::Local)
                .await
                .expect("local read");
            assert_eq!(job.payload, format!("seq-{seq}").into_bytes());
        }
    }
}
