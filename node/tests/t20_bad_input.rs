//! Bad input gets a precise gRPC status and writes nothing; the CLI answers
//! bad input with one line and a non-zero exit.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{TestCluster, BIN};
use sundial_sdk::proto::job_service_client::JobServiceClient;
use sundial_sdk::proto::{self, GetJobRequest, SubmitJobRequest};
use sundial_sdk::{ListJobs, NewJob};
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t20_bad_requests_get_precise_statuses_and_write_nothing() {
    let cluster = TestCluster::start(1, 4);
    cluster.wait_all_leaders(0, Duration::from_secs(30)).await;
    let mut client = cluster.client(0).await;

    // Unknown (well-formed) id.
    let unknown = "0001000000000000000000000000abcd";
    let err = client.get_job(unknown).await.expect_err("unknown id");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");
    assert!(err.to_string().contains(unknown), "{err}");
    let err = client.cancel_job(unknown).await.expect_err("unknown id");
    assert_eq!(err.code(), Some(Code::NotFound), "{err}");

    // Malformed ids.
    for bad in ["nope", "zz01000000000000000000000000abcd", ""] {
        let err = client.get_job(bad).await.expect_err("malformed id");
        assert_eq!(err.code(), Some(Code::InvalidArgument), "{bad:?}: {err}");
        assert!(err.to_string().contains("id: malformed job id"), "{err}");
    }
    // An id naming a shard the cluster does not have.
    let err = client
        .get_job("ffff000000000000000000000000abcd")
        .await
        .expect_err("no such shard");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");

    // Oversize payload: 1 MiB + 1 byte.
    let big = vec![7u8; (1 << 20) + 1];
    let err = client.submit(NewJob::new("q", big)).await.expect_err("oversize");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");
    assert!(
        err.to_string()
            .contains("payload: is 1048577 bytes, the limit is 1048576 bytes"),
        "{err}"
    );

    // Empty and malformed queue names.
    let err = client
        .submit(NewJob::new("", b"x".to_vec()))
        .await
        .expect_err("empty queue");
    assert_eq!(err.code(), Some(Code::InvalidArgument));
    assert!(err.to_string().contains("queue: must not be empty"), "{err}");
    let err = client
        .submit(NewJob::new("has space", b"x".to_vec()))
        .await
        .expect_err("bad queue");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");

    // Both run_at and delay.
    let err = client
        .submit(NewJob::new("q", b"x".to_vec()).delay_ms(10).run_at_ms(1))
        .await
        .expect_err("both times");
    assert_eq!(err.code(), Some(Code::InvalidArgument), "{err}");

    // A raw request with an unknown read consistency value.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", cluster.addr(0)))
        .expect("endpoint")
        .connect()
        .await
        .expect("connect");
    let mut raw = JobServiceClient::new(channel);
    let status = raw
        .get_job(GetJobRequest {
            id: unknown.into(),
            consistency: 42,
        })
        .await
        .expect_err("bad consistency");
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = raw
        .submit_job(SubmitJobRequest {
            queue: "q".into(),
            namespace: "bad namespace".into(),
            ..Default::default()
        })
        .await
        .expect_err("bad namespace");
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().starts_with("namespace: "),
        "{}",
        status.message()
    );

    // Nothing was written by any of the above.
    let page = client.list_jobs(ListJobs::default()).await.expect("list");
    assert!(page.jobs.is_empty(), "bad requests wrote {:?}", page.jobs);
    let page = client
        .list_jobs(ListJobs {
            namespace: "bad namespace".into(),
            ..Default::default()
        })
        .await;
    assert!(page.is_err());

    // A good submit still works and reads back, with its shard in its id.
    let id = client
        .submit(
            NewJob::new("emails", b"hello".to_vec())
                .header("k", "v")
                .priority(3),
        )
        .await
        .expect("submit");
    let job = client.get_job(&id).await.expect("get");
    assert_eq!(job.payload, b"hello");
    assert_eq!(job.queue, "emails");
    assert_eq!(job.namespace, "default");
    assert_eq!(job.priority, 3);
    assert_eq!(job.headers.get("k").map(String::as_str), Some("v"));
    assert_eq!(job.state, proto::JobState::Ready as i32);
    assert_eq!(u32::from_str_radix(&id[..4], 16).expect("hex"), job.shard);

    // Cancel, cancel again (idempotent), and the listing shows it cancelled.
    let cancelled = client.cancel_job(&id).await.expect("cancel");
    assert_eq!(cancelled.state, proto::JobState::Cancelled as i32);
    client.cancel_job(&id).await.expect("cancel twice");
    let page = client
        .list_jobs(ListJobs {
            state: Some(proto::JobState::Cancelled),
            ..Default::default()
        })
        .await
        .expect("list cancelled");
    assert_eq!(page.jobs.len(), 1);

    // The CLI: submit prints the id alone; get finds it; errors are one line.
    let addr = cluster.addr(0);
    let out = Command::new(BIN)
        .args([
            "job",
            "submit",
            "--addr",
            &addr,
            "--queue",
            "cli",
            "--payload",
            "hi",
            "--delay",
            "1h",
        ])
        .output()
        .expect("run cli");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let printed = String::from_utf8(out.stdout).expect("utf8");
    let cli_id = printed.trim_end();
    assert_eq!(printed, format!("{cli_id}\n"));
    assert_eq!(cli_id.len(), 32);
    let out = Command::new(BIN)
        .args(["job", "get", cli_id, "--addr", &addr, "--output", "json"])
        .output()
        .expect("run cli");
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!(json["state"], "scheduled");
    assert_eq!(json["payload"], "hi");

    let out = Command::new(BIN)
        .args(["job", "get", "nope", "--addr", &addr])
        .output()
        .expect("run cli");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with("error: "), "{stderr}");
}

#[test]
fn t21_bad_config_is_one_line_naming_the_key_and_exit_2() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[cluster]\nshards = 0\ncookie = \"x\"\n\n[[nodes]]\nid = 1\nclient_addr = \"127.0.0.1:1\"\nraft_addr = \"127.0.0.1:2\"\nactor_addr = \"127.0.0.1:3\"\n",
    )
    .expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--node", "1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.contains("cluster.shards"), "{stderr}");

    // An unknown key is refused too, naming where it is.
    std::fs::write(&path, "[cluster]\ncookie = \"x\"\nshardz = 3\n").expect("write");
    let out = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&path)
        .args(["--node", "1"])
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).expect("utf8");
    assert!(stderr.contains("shardz"), "{stderr}");
}
