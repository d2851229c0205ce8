//! Delivery to workers on a real 3-node cluster: delayed jobs wait for their
//! time, a worker on any node gets jobs from every shard, completions and
//! failures follow the fencing token, retries end dead and replay, a
//! cancellation reaches the worker holding the job, and a leased job survives
//! the loss of its shard's leader.

mod common;

use std::time::{Duration, Instant};

use common::worker::{now_ms, token, wait_state, RawWorker};
use common::TestCluster;
use sundial_sdk::proto::node_message::Kind as NodeKind;
use sundial_sdk::proto::JobState;
use sundial_sdk::NewJob;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_workers_get_due_jobs_from_every_shard_under_the_fencing_rules() {
    let cluster = TestCluster::start(3, 4);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let mut producer = cluster.client(0).await;
    let worker_client = cluster.client(2).await;

    // Cross-node delivery: jobs submitted through node 1 land on every shard
    // (ids say which); one worker on node 3 gets them all.
    let mut worker = RawWorker::connect(&worker_client, "mail", 8).await;
    let mut submitted = std::collections::BTreeSet::new();
    let mut shards = std::collections::BTreeSet::new();
    for n in 0..40 {
        let mut c = cluster.client(n % 3).await;
        let id = c
            .submit(NewJob::new("mail", format!("m{n}")))
            .await
            .expect("submit");
        shards.insert(c.get_job(&id).await.expect("get").shard);
        submitted.insert(id);
    }
    assert!(shards.len() >= 3, "jobs spread over shards {shards:?}");
    let mut got = std::collections::BTreeSet::new();
    while got.len() < submitted.len() {
        let job = worker.next_job(Duration::from_secs(10)).await;
        assert_eq!(job.state, JobState::Leased as i32);
        assert_eq!(job.attempts, 1);
        worker.complete(&job, "sent").await;
        got.insert(job.id.clone());
    }
    assert_eq!(got, submitted, "every job delivered exactly once");
    let any = submitted.iter().next().expect("a job").clone();
    let done = wait_state(&mut producer, &any, JobState::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(done.result, b"sent");

    // An idempotency key returns the first job and creates nothing.
    let key = format!("order-{}", now_ms());
    let first = producer
        .submit(NewJob::new("mail", "once").idempotency_key(&key))
        .await
        .expect("keyed submit");
    let mut other_node = cluster.client(1).await;
    let second = other_node
        .submit(NewJob::new("mail", "twice").idempotency_key(&key))
        .await
        .expect("keyed resubmit");
    assert_eq!(first, second, "same key, same job");
    let job = worker.next_job(Duration::from_secs(10)).await;
    assert_eq!(job.id, first);
    assert_eq!(job.payload, b"once");
    worker.complete(&job, "ok").await;
    assert!(
        worker
            .next(Duration::from_millis(500))
            .await
            .is_none_or(|m| !matches!(m, NodeKind::Job(_))),
        "the second submit created no job"
    );

    // A delayed job is not delivered before its time.
    let delay = 1_500;
    let id = producer
        .submit(NewJob::new("mail", "later").delay_ms(delay))
        .await
        .expect("submit delayed");
    let submitted_at = now_ms();
    let waiting = producer.get_job(&id).await.expect("get delayed");
    assert_eq!(waiting.state, JobState::Scheduled as i32, "not due yet");
    let job = worker.next_job(Duration::from_secs(10)).await;
    let leased_at = job.lease.as_ref().expect("lease").leased_at_ms;
    assert_eq!(job.id, id);
    assert!(
        leased_at >= job.run_at_ms,
        "leased at {leased_at}, before run_at {}",
        job.run_at_ms
    );
    assert!(now_ms() - submitted_at >= delay as i64 - 50, "delivered early");
    assert!(
        leased_at - job.run_at_ms < 1_000,
        "fired {} ms late",
        leased_at - job.run_at_ms
    );
    worker.complete(&job, "ok").await;

    // A wrong token is refused with FAILED_PRECONDITION and changes nothing.
    let id = producer
        .submit(NewJob::new("mail", "fenced"))
        .await
        .expect("submit");
    let job = worker.next_job(Duration::from_secs(10)).await;
    assert_eq!(job.id, id);
    let err = producer
        .complete_job(&id, token(&job) + 1, b"forged".to_vec())
        .await
        .expect_err("stale token");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");
    producer.heartbeat_job(&id, token(&job)).await.expect("heartbeat");
    worker.complete(&job, "real").await;
    let done = wait_state(&mut producer, &id, JobState::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(done.result, b"real");

    // Retries with backoff until dead, then a replay runs it again.
    let id = producer
        .submit(
            NewJob::new("mail", "flaky")
                .max_attempts(2)
                .backoff(Duration::from_millis(100), Duration::from_millis(200)),
        )
        .await
        .expect("submit flaky");
    for attempt in 1..=2 {
        let job = worker.next_job(Duration::from_secs(10)).await;
        assert_eq!((job.id.as_str(), job.attempts), (id.as_str(), attempt));
        worker.fail(&job, &format!("boom {attempt}")).await;
    }
    let dead = wait_state(&mut producer, &id, JobState::Dead, Duration::from_secs(10)).await;
    assert_eq!(dead.last_error, "boom 2");
    let mut listed = producer
        .list_jobs(sundial_sdk::ListJobs {
            queue: "mail".into(),
            state: Some(JobState::Dead),
            ..Default::default()
        })
        .await
        .expect("list dead");
    assert_eq!(listed.jobs.len(), 1);
    assert_eq!(listed.jobs.remove(0).id, id);
    producer.retry_job(&id).await.expect("replay");
    let job = worker.next_job(Duration::from_secs(10)).await;
    assert_eq!((job.id.as_str(), job.attempts), (id.as_str(), 3));
    worker.complete(&job, "finally").await;
    wait_state(&mut producer, &id, JobState::Succeeded, Duration::from_secs(10)).await;
    let err = producer.retry_job(&id).await.expect_err("only dead jobs replay");
    assert_eq!(err.code(), Some(tonic::Code::FailedPrecondition), "{err}");

    // Cancellation mid-lease reaches the worker on its stream; its late
    // completion is refused.
    let id = producer
        .submit(NewJob::new("mail", "cancel me"))
        .await
        .expect("submit");
    let job = worker.next_job(Duration::from_secs(10)).await;
    assert_eq!(job.id, id);
    producer.cancel_job(&id).await.expect("cancel");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match worker
            .next(deadline.saturating_duration_since(Instant::now()))
            .await
        {
            Some(NodeKind::Cancelled(c)) if c.id == id => break,
            Some(_) => continue,
            None => panic!("the worker never heard of the cancellation"),
        }
    }
    worker.complete(&job, "too late").await;
    let ack = worker.next_ack(Duration::from_secs(10)).await;
    assert_eq!(ack.code, tonic::Code::FailedPrecondition as i32, "{ack:?}");
    let job = producer.get_job(&id).await.expect("get");
    assert_eq!(job.state, JobState::Cancelled as i32);
    assert!(job.result.is_empty());

    // A paused queue takes jobs but leases none until resumed.
    let stats = producer.pause_queue("", "mail").await.expect("pause");
    assert!(stats.paused);
    let id = producer
        .submit(NewJob::new("mail", "held back"))
        .await
        .expect("submit");
    let deadline = Instant::now() + Duration::from_millis(1_500);
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if let Some(NodeKind::Job(job)) = worker.next(left).await {
            panic!("leased {} from a paused queue", job.id);
        }
    }
    let stats = producer.queue_stats("", "mail").await.expect("stats");
    assert_eq!(
        (stats.paused, stats.ready, stats.leased),
        (true, 1, 0),
        "{stats:?}"
    );
    assert_eq!(
        producer.get_job(&id).await.expect("get").state,
        JobState::Ready as i32
    );
    let ready = producer
        .list_jobs(sundial_sdk::ListJobs {
            queue: "mail".into(),
            state: Some(JobState::Ready),
            ..Default::default()
        })
        .await
        .expect("list ready");
    assert_eq!(
        ready.jobs.iter().map(|j| j.id.as_str()).collect::<Vec<_>>(),
        vec![id.as_str()]
    );
    assert_eq!(stats.cancelled, 1, "{stats:?}");
    producer.resume_queue("", "mail").await.expect("resume");
    let job = worker.next_job(Duration::from_secs(10)).await;
    assert_eq!(job.id, id);
    worker.complete(&job, "after resume").await;
    wait_state(&mut producer, &id, JobState::Succeeded, Duration::from_secs(10)).await;
    let stats = producer.queue_stats("", "mail").await.expect("stats");
    assert!(!stats.paused);
    assert_eq!(stats.ready + stats.leased + stats.scheduled, 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t61_a_paused_workers_late_completion_is_refused_after_another_finished_the_job() {
    let cluster = TestCluster::start(3, 2);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let mut producer = cluster.client(0).await;
    let dir = cluster.dir.path().to_path_buf();
    let marker = dir.join("started");
    // The CLI worker signals that it runs the job, then takes its time.
    let script = format!("touch {}; sleep 3; echo slow-result", marker.display());
    let mut slow = std::process::Command::new(common::BIN)
        .args(["worker", "--queue", "pausable", "--exec", &script, "--addr"])
        .arg(cluster.addr(1))
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("slow-worker.log")).expect("log"))
        .spawn()
        .expect("start CLI worker");
    let id = producer
        .submit(NewJob::new("pausable", "work").timeout(Duration::from_millis(1_500)))
        .await
        .expect("submit");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "the CLI worker never started the job");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Paused past its lease: no heartbeats, the lease runs out.
    let pid = slow.id().to_string();
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .expect("kill");
        assert!(status.success(), "kill {sig} {pid}");
    };
    signal("-STOP");
    let worker_client = cluster.client(2).await;
    let mut other = RawWorker::connect(&worker_client, "pausable", 1).await;
    let job = other.next_job(Duration::from_secs(20)).await;
    assert_eq!(job.id, id);
    assert_eq!(job.attempts, 2, "re-leased after the first lease expired");
    let first = producer.get_job(&id).await.expect("get");
    assert!(first.last_error.contains("lease expired"), "{}", first.last_error);
    other.complete(&job, "fast-result").await;
    wait_state(&mut producer, &id, JobState::Succeeded, Duration::from_secs(10)).await;

    // Wake the paused worker: its completion is refused, nothing changes.
    signal("-CONT");
    let log = dir.join("slow-worker.log");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let text = common::read_to_string(&log);
        if text.contains("node refused an answer") {
            assert!(text.contains("does not hold the lease"), "{text}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the paused worker never answered:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let job = producer.get_job(&id).await.expect("get");
    assert_eq!(job.state, JobState::Succeeded as i32);
    assert_eq!(job.result, b"fast-result");
    assert_eq!(job.attempts, 2);
    let _ = slow.kill();
    let _ = slow.wait();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t62_leased_and_due_jobs_survive_the_loss_of_their_leader() {
    let mut cluster = TestCluster::start(3, 1);
    for i in 0..3 {
        cluster.wait_all_leaders(i, Duration::from_secs(30)).await;
    }
    let info = cluster.client(0).await.cluster_info().await.expect("info");
    let leader = info.shards[0].leader as usize - 1;
    let survivor = (leader + 1) % 3;
    let mut producer = cluster.client(survivor).await;
    let worker_client = cluster.client(survivor).await;
    let mut worker = RawWorker::connect(&worker_client, "failover", 4).await;

    let held = producer
        .submit(NewJob::new("failover", "held").timeout(Duration::from_secs(60)))
        .await
        .expect("submit");
    let job = worker.next_job(Duration::from_secs(10)).await;
    assert_eq!(job.id, held);
    // Due while the leader is gone.
    let due = producer
        .submit(NewJob::new("failover", "due").delay_ms(1_000))
        .await
        .expect("submit due");

    cluster.kill(leader);
    // The lease outlives its leader: completing it on the new one works.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match producer
            .complete_job(&held, token(&job), b"after failover".to_vec())
            .await
        {
            Ok(done) => {
                assert_eq!(done.state, JobState::Succeeded as i32);
                break;
            }
            Err(e) => {
                assert_ne!(e.code(), Some(tonic::Code::FailedPrecondition), "{e}");
                assert!(
                    Instant::now() < deadline,
                    "no new leader took the completion: {e}"
                );
            }
        }
    }
    // The new leader fires the job that came due meanwhile.
    let job = worker.next_job(Duration::from_secs(20)).await;
    assert_eq!(job.id, due);
    assert_eq!(job.attempts, 1);
    worker.complete(&job, "fired once").await;
    wait_state(&mut producer, &due, JobState::Succeeded, Duration::from_secs(10)).await;
    assert!(
        worker
            .next(Duration::from_millis(1_500))
            .await
            .is_none_or(|m| !matches!(m, NodeKind::Job(_))),
        "no job delivered twice"
    );
}
