//! HTTP targets: the node's executors call a job's URL; 2xx completes it,
//! anything else fails the attempt and the retry policy applies; a cancelled
//! job's call is dropped; and an executor that crashes after its call (before
//! recording the outcome) is replaced, its job retried once its lease runs
//! out — never lost, never completed twice.
//!
//! The node runs in this process so the test can inject the executor crash
//! (ractor's registry is process-wide, so this file holds exactly one test).

mod common;

use std::time::{Duration, Instant};

use common::http::{Answer, Endpoint};
use common::worker::wait_state;
use sundial_sdk::proto::JobState;
use sundial_sdk::{HttpTarget, NewJob};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t65_http_targets_complete_fail_retry_and_survive_an_executor_crash() {
    let (_dir, node, mut client) = common::in_process_node().await;

    let endpoint = Endpoint::start(|req, earlier| match req.path.as_str() {
        "/ok" | "/after-crash" => Answer::new(200, format!("ok:{}", String::from_utf8_lossy(&req.body))),
        // Busy the first time, fine after.
        "/flaky" if earlier.iter().all(|e| e.path != "/flaky") => Answer::new(503, "busy, come back"),
        "/flaky" => Answer::new(200, "second time lucky"),
        "/slow" => Answer::new(200, "too late").after(Duration::from_secs(3)),
        "/hang" => Answer::new(200, "finished anyway").after(Duration::from_secs(2)),
        _ => Answer::new(500, "boom: the handler fell over"),
    })
    .await;
    let fast_retry = |job: NewJob| job.backoff(Duration::from_millis(50), Duration::from_millis(50));

    // 2xx: the attempt completes with the response body as result; the
    // request carries the payload, the target's headers and the job's.
    let ok = client
        .submit(
            NewJob::new("hooks", "hello")
                .http(HttpTarget::post(endpoint.url("/ok")).header("x-team", "blue")),
        )
        .await
        .expect("submit");
    let job = wait_state(&mut client, &ok, JobState::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(job.result, b"ok:hello");
    assert_eq!(job.attempts, 1);
    assert_eq!(
        job.http.as_ref().map(|t| t.method.as_str()),
        Some("POST"),
        "the default method is stored"
    );
    let seen = endpoint.seen("/ok");
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].body, b"hello");
    assert_eq!(seen[0].headers.get("x-team").map(String::as_str), Some("blue"));
    assert_eq!(seen[0].headers.get("sundial-job-id"), Some(&ok));
    assert_eq!(
        seen[0].headers.get("sundial-attempt").map(String::as_str),
        Some("1")
    );
    assert_eq!(
        seen[0].headers.get("sundial-queue").map(String::as_str),
        Some("hooks")
    );

    // 503 then 200: the failed attempt is retried by the job's policy.
    let flaky = client
        .submit(fast_retry(
            NewJob::new("hooks", "x").http(HttpTarget::post(endpoint.url("/flaky"))),
        ))
        .await
        .expect("submit");
    let job = wait_state(&mut client, &flaky, JobState::Succeeded, Duration::from_secs(10)).await;
    assert_eq!(job.attempts, 2);
    assert_eq!(job.result, b"second time lucky");
    let seen = endpoint.seen("/flaky");
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[1].headers.get("sundial-attempt").map(String::as_str),
        Some("2")
    );

    // Always 500: dead after its attempts, the status and body in the error.
    let broken = client
        .submit(fast_retry(
            NewJob::new("hooks", "x")
                .max_attempts(2)
                .http(HttpTarget::post(endpoint.url("/broken")).method("put")),
        ))
        .await
        .expect("submit");
    let job = wait_state(&mut client, &broken, JobState::Dead, Duration::from_secs(10)).await;
    assert_eq!(job.attempts, 2);
    assert!(
        job.last_error.contains("500") && job.last_error.contains("boom: the handler fell over"),
        "error names the status and the body: {:?}",
        job.last_error
    );
    assert!(endpoint.seen("/broken").iter().all(|s| s.method == "PUT"));

    // A call past the target's timeout fails the attempt.
    let slow = client
        .submit(
            NewJob::new("hooks", "x")
                .max_attempts(1)
                .http(HttpTarget::post(endpoint.url("/slow")).timeout(Duration::from_millis(300))),
        )
        .await
        .expect("submit");
    let job = wait_state(&mut client, &slow, JobState::Dead, Duration::from_secs(10)).await;
    assert!(
        job.last_error.contains("timed out"),
        "timeout error: {:?}",
        job.last_error
    );

    // Cancelled during its call: the cancellation reaches the executor,
    // which drops the call (the endpoint would answer 200 after 2 s).
    let hang = client
        .submit(NewJob::new("hooks", "x").http(HttpTarget::post(endpoint.url("/hang"))))
        .await
        .expect("submit");
    wait_state(&mut client, &hang, JobState::Leased, Duration::from_secs(10)).await;
    let until = Instant::now() + Duration::from_secs(10);
    while endpoint.seen("/hang").is_empty() {
        assert!(Instant::now() < until, "the call never reached the endpoint");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dropped = node.executor_probe.cancelled();
    client.cancel_job(&hang).await.expect("cancel");
    let until = Instant::now() + Duration::from_secs(5);
    while node.executor_probe.cancelled() == dropped {
        assert!(
            Instant::now() < until,
            "the executor did not drop the cancelled job's call"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let job = client.get_job(&hang).await.expect("get");
    assert_eq!(job.state, JobState::Cancelled as i32);
    assert!(job.result.is_empty());

    // Executor crash after a successful call, before its outcome is
    // recorded: the executor is replaced; the job stays leased until its
    // lease (1 s without heartbeats) runs out, then runs again and completes
    // once, under the second attempt's token.
    let restarts = node.executor_probe.restarts();
    node.executor_probe.crash_after_call(1);
    let crash = client
        .submit(fast_retry(
            NewJob::new("hooks", "crash")
                .timeout(Duration::from_secs(1))
                .http(HttpTarget::post(endpoint.url("/after-crash"))),
        ))
        .await
        .expect("submit");
    let until = Instant::now() + Duration::from_secs(10);
    while node.executor_probe.restarts() == restarts {
        assert!(Instant::now() < until, "the crashed executor was not replaced");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let job = client.get_job(&crash).await.expect("get");
    assert_ne!(
        job.state,
        JobState::Succeeded as i32,
        "the crashed attempt recorded nothing"
    );
    let job = wait_state(&mut client, &crash, JobState::Succeeded, Duration::from_secs(15)).await;
    assert_eq!(job.attempts, 2, "one lost attempt, one recorded");
    assert_eq!(job.result, b"ok:crash");
    let seen = endpoint.seen("/after-crash");
    let attempts: Vec<&str> = seen
        .iter()
        .filter_map(|s| s.headers.get("sundial-attempt").map(String::as_str))
        .collect();
    assert_eq!(attempts, vec!["1", "2"], "called once per attempt");
    assert_eq!(node.executor_probe.restarts(), restarts + 1);

    // Executors still run jobs after the crash.
    let again = client
        .submit(NewJob::new("hooks", "again").http(HttpTarget::post(endpoint.url("/ok"))))
        .await
        .expect("submit");
    wait_state(&mut client, &again, JobState::Succeeded, Duration::from_secs(10)).await;

    // Bad targets are refused with the field named, and store nothing.
    let err = client
        .submit(NewJob::new("hooks", "x").http(HttpTarget::post("ftp://example.com/x")))
        .await
        .expect_err("bad scheme");
    assert_eq!(err.code(), Some(tonic::Code::InvalidArgument));
    assert!(err.to_string().contains("http.url"), "{err}");

    node.shutdown().await.expect("clean shutdown");
}
