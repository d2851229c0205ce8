//! A worker stream driven by hand, and helpers for tests that run jobs.

use std::time::{Duration, Instant};

use sundial_sdk::proto::node_message::Kind as NodeKind;
use sundial_sdk::proto::worker_message::Kind as WorkerKind;
use sundial_sdk::proto::worker_service_client::WorkerServiceClient;
use sundial_sdk::proto::{self, JobState};
use sundial_sdk::Client;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

/// A worker stream driven by hand.
pub struct RawWorker {
    tx: mpsc::Sender<proto::WorkerMessage>,
    inbound: tonic::Streaming<proto::NodeMessage>,
}

impl RawWorker {
    pub async fn connect(client: &Client, queue: &str, credits: u32) -> RawWorker {
        let (tx, rx) = mpsc::channel(64);
        tx.send(proto::WorkerMessage {
            kind: Some(WorkerKind::Hello(proto::WorkerHello {
                namespace: String::new(),
                queues: vec![queue.to_string()],
                credits,
                worker_id: format!("test-{queue}"),
            })),
        })
        .await
        .expect("send hello");
        let mut inbound = WorkerServiceClient::new(client.channel())
            .open_session(ReceiverStream::new(rx))
            .await
            .expect("open worker stream")
            .into_inner();
        match inbound.message().await.expect("welcome").and_then(|m| m.kind) {
            Some(NodeKind::Welcome(_)) => {}
            other => panic!("expected a welcome, got {other:?}"),
        }
        RawWorker { tx, inbound }
    }

    /// The next message within `within`, or None.
    pub async fn next(&mut self, within: Duration) -> Option<NodeKind> {
        match tokio::time::timeout(within, self.inbound.message()).await {
            Ok(Ok(Some(m))) => m.kind,
            Ok(Ok(None)) => panic!("node closed the worker stream"),
            Ok(Err(e)) => panic!("worker stream failed: {e}"),
            Err(_) => None,
        }
    }

    pub async fn next_job(&mut self, within: Duration) -> proto::Job {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(NodeKind::Job(job)) => return job,
                Some(_) => continue,
                None => panic!("no job within {within:?}"),
            }
        }
    }

    pub async fn next_ack(&mut self, within: Duration) -> proto::AttemptAck {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left).await {
                Some(NodeKind::Ack(ack)) => return ack,
                Some(_) => continue,
                None => panic!("no ack within {within:?}"),
            }
        }
    }

    pub async fn send(&self, kind: WorkerKind) {
        self.tx
            .send(proto::WorkerMessage { kind: Some(kind) })
            .await
            .expect("send to node");
    }

    pub async fn complete(&self, job: &proto::Job, result: &str) {
        self.send(WorkerKind::Complete(proto::CompleteJobRequest {
            id: job.id.clone(),
            token: token(job),
            result: result.as_bytes().to_vec(),
        }))
        .await;
    }

    pub async fn fail(&self, job: &proto::Job, error: &str) {
        self.send(WorkerKind::Fail(proto::FailJobRequest {
            id: job.id.clone(),
            token: token(job),
            error: error.to_string(),
            retryable: true,
        }))
        .await;
    }
}

pub fn token(job: &proto::Job) -> u32 {
    job.lease
        .as_ref()
        .map(|l| l.token)
        .expect("leased job has a lease")
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_millis() as i64
}

pub async fn wait_state(client: &mut Client, id: &str, state: JobState, within: Duration) -> proto::Job {
    let deadline = Instant::now() + within;
    loop {
        let job = client.get_job(id).await.expect("get job");
        if job.state == state as i32 {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "job {id} is {:?}, not {state:?}, after {within:?}",
            JobState::try_from(job.state)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
