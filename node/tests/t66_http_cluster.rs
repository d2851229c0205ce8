//! HTTP targets on a real 3-node cluster: every node's executors call jobs
//! from every shard, whoever leads it; a schedule with an HTTP target makes
//! calls; the CLI submits HTTP jobs and refuses bad targets with one line.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::http::{Answer, Endpoint};
use common::worker::wait_state;
use common::TestCluster;
use sundial_sdk::proto::{self, JobState};
use sundial_sdk::{HttpTarget, NewJob};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t66_every_node_calls_http_targets_from_every_shard() {
    let cluster = TestCluster::start(3, 4);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let endpoint = Endpoint::start(|req, _| match req.path.as_str() {
        // Slow enough that one node's 16 executors cannot take every job.
        "/slow" => Answer::new(200, "done").after(Duration::from_millis(300)),
        _ => Answer::new(200, "tick"),
    })
    .await;

    let mut ids = Vec::new();
    for i in 0..60 {
        let mut client = cluster.client(i % 3).await;
        let id = client
            .submit(NewJob::new("calls", format!("job-{i}")).http(HttpTarget::post(endpoint.url("/slow"))))
            .await
            .expect("submit");
        ids.push(id);
    }
    let mut client = cluster.client(0).await;
    let mut callers = BTreeSet::new();
    let mut shards = BTreeSet::new();
    for id in &ids {
        let job = wait_state(&mut client, id, JobState::Succeeded, Duration::from_secs(30)).await;
        assert_eq!(job.attempts, 1, "no failure, so one attempt");
        assert_eq!(job.result, b"done");
        callers.insert(job.lease.as_ref().map(|l| l.node_id).expect("lease kept"));
        shards.insert(job.shard);
    }
    assert_eq!(endpoint.seen("/slow").len(), 60, "one call per job");
    assert_eq!(shards.len(), 4, "jobs on every shard: {shards:?}");
    assert!(
        callers.len() >= 2,
        "executors on several nodes called: {callers:?}"
    );

    // A schedule whose jobs call a URL.
    let spec = proto::ScheduleSpec {
        id: "ping".into(),
        queue: "calls".into(),
        rule: Some(proto::schedule_spec::Rule::EveryMs(1_000)),
        http: Some(HttpTarget::post(endpoint.url("/tick")).method("GET").into_proto()),
        ..Default::default()
    };
    client.create_schedule(spec).await.expect("create schedule");
    let deadline = Instant::now() + Duration::from_secs(15);
    while endpoint.seen("/tick").len() < 2 {
        assert!(Instant::now() < deadline, "the schedule's calls never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let tick = &endpoint.seen("/tick")[0];
    assert_eq!(tick.method, "GET");
    assert_eq!(
        tick.headers.get("sundial-schedule-id").map(String::as_str),
        Some("ping")
    );

    // The CLI: an HTTP job, shown with its target.
    let url = endpoint.url("/cli");
    let out = std::process::Command::new(common::BIN)
        .args(["job", "submit", "--queue", "calls", "--payload", "from-cli"])
        .args([
            "--http-url",
            &url,
            "--http-method",
            "put",
            "--http-header",
            "x-k=v",
        ])
        .args(["--addr", &cluster.addr(1)])
        .output()
        .expect("run cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let job = wait_state(&mut client, &id, JobState::Succeeded, Duration::from_secs(15)).await;
    assert_eq!(job.http.as_ref().map(|t| t.method.as_str()), Some("PUT"));
    let cli_calls = endpoint.seen("/cli");
    assert_eq!(cli_calls.len(), 1);
    assert_eq!(cli_calls[0].body, b"from-cli");
    assert_eq!(cli_calls[0].headers.get("x-k").map(String::as_str), Some("v"));

    for (args, expect) in [
        (vec!["--http-url", "not a url"], "http.url"),
        (vec!["--http-url", &url, "--http-method", "BREW"], "http.method"),
        (
            vec!["--http-url", &url, "--http-header", "novalue"],
            "--http-header",
        ),
    ] {
        let out = std::process::Command::new(common::BIN)
            .args(["job", "submit", "--queue", "calls"])
            .args(&args)
            .args(["--addr", &cluster.addr(2)])
            .output()
            .expect("run cli");
        assert!(!out.status.success(), "{args:?} was accepted");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expect), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}
