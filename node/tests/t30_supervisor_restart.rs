//! A shard actor that panics under load is restarted by its supervisor and
//! nothing acknowledged is lost; clients see no error (the gateway retries the
//! requests the crash dropped, with the same job ids).
//!
//! The node runs in this process (ractor's registry is process-wide, so this
//! file holds exactly one test).

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sundial_sdk::NewJob;

fn shard_actor_id(shard: u32) -> Option<ractor::ActorId> {
    ractor::registry::where_is(format!("shard-{shard}")).map(|cell| cell.get_id())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t30_shard_actor_panic_under_load_loses_nothing() {
    let (_dir, node, client) = common::in_process_node().await;
    let shard_count = node.gateway.layout().shard_count;

    let acked = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut load = Vec::new();
    for w in 0..16 {
        let mut client = client.clone();
        let (acked, errors, stop) = (acked.clone(), errors.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            let mut i = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let payload = format!("w{w}-{i}").into_bytes();
                match client.submit(NewJob::new("crashy", payload.clone())).await {
                    Ok(id) => acked.lock().expect("lock").push((id, payload)),
                    Err(e) => errors.lock().expect("lock").push(e.to_string()),
                }
                i += 1;
            }
        }));
    }

    // Under load, make the actor of the shard taking submits panic, eight
    // times, and wait each time for it to be replaced by a new actor.
    let wait_for = |n: usize| {
        let acked = acked.clone();
        async move {
            let deadline = Instant::now() + Duration::from_secs(20);
            while acked.lock().expect("lock").len() < n {
                assert!(Instant::now() < deadline, "load made no progress");
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(200).await;
    for _ in 0..shard_count {
        // The shard new submits go to right now: its actor has a queue.
        let shard = node.gateway.pick_shard();
        let before = shard_actor_id(shard).expect("shard actor registered");
        node.gateway.inject_shard_panic(shard, "test").expect("inject");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match shard_actor_id(shard) {
                Some(now) if now != before => break,
                _ => {
                    assert!(Instant::now() < deadline, "shard {shard} actor was not restarted");
                    tokio::time::sleep(Duration::from_millis(2)).await;
                }
            }
        }
        let n = acked.lock().expect("lock").len();
        wait_for(n + 50).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for task in load {
        task.await.expect("load task");
    }

    let errors = errors.lock().expect("lock").clone();
    assert!(
        errors.is_empty(),
        "clients saw errors: {:?}",
        &errors[..errors.len().min(5)]
    );
    let acked = acked.lock().expect("lock").clone();
    eprintln!(
        "{} submits acknowledged across {shard_count} shard actor crashes",
        acked.len()
    );
    let mut reader = client.clone();
    for (id, payload) in &acked {
        let job = reader.get_job(id).await.expect("acknowledged job readable");
        assert_eq!(&job.payload, payload);
    }
    node.shutdown().await.expect("clean shutdown");
}
