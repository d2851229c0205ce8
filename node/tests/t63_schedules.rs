//! Recurring schedules on a real 3-node cluster: every firing creates exactly
//! one job, also while the leader of the schedule's shard is killed; pause,
//! resume and delete; bad definitions are refused with the field named.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::worker::RawWorker;
use common::TestCluster;
use sundial_sdk::proto;

fn every(id: &str, queue: &str, every_ms: u64) -> proto::ScheduleSpec {
    proto::ScheduleSpec {
        id: id.into(),
        queue: queue.into(),
        rule: Some(proto::schedule_spec::Rule::EveryMs(every_ms)),
        payload: b"tick".to_vec(),
        ..Default::default()
    }
}

/// Takes the jobs the worker gets for `within`, completing each, and returns
/// their nominal firing times.
async fn firings(worker: &mut RawWorker, within: Duration) -> Vec<i64> {
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(proto::node_message::Kind::Job(job)) = worker.next(left).await {
            let fire: i64 = job
                .headers
                .get("sundial-fire-ms")
                .and_then(|v| v.parse().ok())
                .expect("a schedule's job names its firing");
            assert_eq!(
                job.headers.get("sundial-schedule").map(String::as_str),
                Some("tick")
            );
            worker.complete(&job, "ok").await;
            seen.push(fire);
        }
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t63_each_firing_creates_one_job_across_a_leader_kill() {
    let mut cluster = TestCluster::start(3, 4);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let mut admin = cluster.client(0).await;
    let (schedule, created) = admin
        .create_schedule(every("tick", "ticks", 1_000))
        .await
        .expect("create");
    assert!(created);
    let (_, again) = admin
        .create_schedule(every("tick", "ticks", 5_000))
        .await
        .expect("create again");
    assert!(!again, "an existing id is left unchanged");
    assert_eq!(
        admin
            .get_schedule("", "tick")
            .await
            .expect("get")
            .spec
            .and_then(|s| s.rule),
        Some(proto::schedule_spec::Rule::EveryMs(1_000))
    );

    // The worker sits on a node that is not the schedule's shard leader, so
    // killing the leader leaves it connected.
    let info = admin.cluster_info().await.expect("info");
    let leader = info.shards[schedule.shard as usize].leader as usize - 1;
    let calm = (leader + 1) % 3;
    let worker_client = cluster.client(calm).await;
    let mut worker = RawWorker::connect(&worker_client, "ticks", 4).await;

    let mut fired = firings(&mut worker, Duration::from_millis(3_500)).await;
    assert!(fired.len() >= 2, "fired {fired:?} in 3.5 s");
    cluster.kill(leader);
    fired.extend(firings(&mut worker, Duration::from_secs(6)).await);
    let distinct: BTreeSet<i64> = fired.iter().copied().collect();
    assert_eq!(
        distinct.len(),
        fired.len(),
        "a firing created two jobs: {fired:?}"
    );
    let sorted: Vec<i64> = distinct.into_iter().collect();
    assert!(
        sorted.windows(2).all(|w| w[1] - w[0] == 1_000),
        "a firing was lost: {sorted:?}"
    );
    assert!(sorted.len() >= 7, "firings went on after the kill: {sorted:?}");

    // Paused: no firings. Resumed: they come back.
    let mut admin = cluster.client(calm).await;
    let paused = admin.pause_schedule("", "tick").await.expect("pause");
    assert!(paused.paused);
    let _ = firings(&mut worker, Duration::from_millis(300)).await;
    let during_pause = firings(&mut worker, Duration::from_millis(2_500)).await;
    assert!(during_pause.is_empty(), "fired while paused: {during_pause:?}");
    admin.resume_schedule("", "tick").await.expect("resume");
    let after = firings(&mut worker, Duration::from_millis(2_500)).await;
    assert!(!after.is_empty(), "nothing fired after resume");

    let listed = admin.list_schedules("", 100, "").await.expect("list");
    assert_eq!(listed.schedules.len(), 1);
    admin.delete_schedule("", "tick").await.expect("delete");
    let err = admin.get_schedule("", "tick").await.expect_err("deleted");
    assert_eq!(err.code(), Some(tonic::Code::NotFound), "{err}");
    let _ = firings(&mut worker, Duration::from_millis(300)).await;
    assert!(
        firings(&mut worker, Duration::from_millis(2_000))
            .await
            .is_empty(),
        "fired after delete"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t64_bad_schedules_are_refused_with_the_field_named() {
    let cluster = TestCluster::start(1, 2);
    cluster.wait_all_leaders(0, Duration::from_secs(30)).await;
    let mut client = cluster.client(0).await;
    let cron = |expr: &str, zone: &str| proto::ScheduleSpec {
        id: "c".into(),
        queue: "q".into(),
        rule: Some(proto::schedule_spec::Rule::Cron(proto::CronRule {
            expr: expr.into(),
            time_zone: zone.into(),
        })),
        ..Default::default()
    };
    for (spec, field) in [
        (cron("0 0 * * *", "Mars/Olympus"), "rule: time zone"),
        (cron("99 * * * *", "UTC"), "rule: cron expression"),
        (every("fast", "q", 10), "every_ms: "),
        (every("bad id", "q", 5_000), "id: "),
        (every("noqueue", "", 5_000), "queue: "),
    ] {
        let err = client.create_schedule(spec).await.expect_err(field);
        assert_eq!(err.code(), Some(tonic::Code::InvalidArgument), "{err}");
        assert!(err.to_string().contains(field), "{err} should name {field}");
    }
    let listed = client.list_schedules("", 10, "").await.expect("list");
    assert!(listed.schedules.is_empty(), "nothing was written");

    // The CLI: one readable line and a non-zero exit.
    let out = std::process::Command::new(common::BIN)
        .args([
            "schedule",
            "create",
            "--id",
            "x",
            "--queue",
            "q",
            "--cron",
            "0 0 * * *",
            "--tz",
            "Nowhere/City",
        ])
        .args(["--addr", &cluster.addr(0)])
        .output()
        .expect("run cli");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("time zone \"Nowhere/City\""), "{stderr}");
    let out = std::process::Command::new(common::BIN)
        .args([
            "schedule",
            "create",
            "--id",
            "x",
            "--queue",
            "q",
            "--cron",
            "*/2 * * * * *",
            "--tz",
            "Europe/Berlin",
        ])
        .args(["--addr", &cluster.addr(0), "--output", "json"])
        .output()
        .expect("run cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("\"id\":\"x\""), "{text}");
}
