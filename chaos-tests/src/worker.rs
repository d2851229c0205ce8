//! A chaos worker: its own process (`chaos worker …`), so the harness can
//! SIGSTOP it past its leases and let it crash mid-job. It holds a worker
//! stream to one node at a time, runs each pushed job with a behaviour
//! drawn from its seeded generator, and records every lease and every
//! answer with its outcome in its own history file.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sundial_sdk::proto::node_message::Kind as NodeKind;
use sundial_sdk::proto::worker_message::Kind as WorkerKind;
use sundial_sdk::proto::worker_service_client::WorkerServiceClient;
use sundial_sdk::{proto, Client};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::history::{now_ms, AttemptOp, Event, HistoryWriter, Outcome};

/// The namespace every chaos job lives in.
pub const NAMESPACE: &str = "chaos";

/// How a worker behaves; fractions are per mille of jobs.
#[derive(Clone, Debug)]
pub struct WorkerSpec {
    pub name: String,
    pub addrs: Vec<String>,
    pub queues: Vec<String>,
    pub history: PathBuf,
    pub concurrency: u32,
    pub seed: u64,
    /// Exit the process while the job runs.
    pub crash: u32,
    /// Fail the attempt (retryable).
    pub fail: u32,
    /// Run 1.5 leases long, heartbeating.
    pub slow: u32,
    /// Run past the lease without heartbeating (the late answer must be
    /// refused once the job was leased again).
    pub overrun: u32,
}

/// Answers sent on the stream and not yet acknowledged, by (job, token).
type Pending = Arc<Mutex<HashMap<(String, u32), (AttemptOp, i64)>>>;

struct Shared {
    spec: WorkerSpec,
    history: HistoryWriter,
    rng: Mutex<StdRng>,
}

pub async fn run(spec: WorkerSpec) -> anyhow::Result<()> {
    let history = HistoryWriter::open(&spec.history)?;
    let shared = Arc::new(Shared {
        rng: Mutex::new(StdRng::seed_from_u64(spec.seed)),
        history,
        spec,
    });
    let mut next = (shared.spec.seed as usize) % shared.spec.addrs.len().max(1);
    loop {
        let addr = shared.spec.addrs[next % shared.spec.addrs.len()].clone();
        next += 1;
        if let Err(e) = session(&shared, &addr).await {
            tracing::debug!(%addr, "worker session ended: {e}");
        }
        shared.history.record(&Event::SessionEnd {
            worker: shared.spec.name.clone(),
            t: now_ms(),
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn session(shared: &Arc<Shared>, addr: &str) -> anyhow::Result<()> {
    let client = tokio::time::timeout(Duration::from_secs(2), Client::connect(addr)).await??;
    let client = client.with_timeout(Duration::from_secs(3));
    let (tx, rx) = mpsc::channel::<proto::WorkerMessage>(1024);
    tx.send(proto::WorkerMessage {
        kind: Some(WorkerKind::Hello(proto::WorkerHello {
            namespace: NAMESPACE.to_string(),
            queues: shared.spec.queues.clone(),
            credits: shared.spec.concurrency,
            worker_id: shared.spec.name.clone(),
        })),
    })
    .await?;
    let mut inbound = tokio::time::timeout(
        Duration::from_secs(3),
        WorkerServiceClient::new(client.channel()).open_session(ReceiverStream::new(rx)),
    )
    .await??
    .into_inner();
    let pending: Pending = Arc::default();
    let outcome = loop {
        let msg = match inbound.message().await {
            Ok(Some(msg)) => msg,
            Ok(None) => break Ok(()),
            Err(e) => break Err(anyhow::Error::from(e)),
        };
        match msg.kind {
            Some(NodeKind::Job(job)) => {
                let lease = job.lease.clone().unwrap_or_default();
                shared.history.record(&Event::Lease {
                    worker: shared.spec.name.clone(),
                    id: job.id.clone(),
                    token: lease.token,
                    t: now_ms(),
                    leased_at_ms: lease.leased_at_ms,
                    deadline_ms: lease.deadline_ms,
                });
                tokio::spawn(run_job(
                    shared.clone(),
                    client.clone(),
                    tx.clone(),
                    pending.clone(),
                    job,
                ));
            }
            Some(NodeKind::Ack(ack)) => {
                let sent = pending
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&(ack.id.clone(), ack.token));
                if let Some((op, t0)) = sent {
                    shared.history.record(&Event::Attempt {
                        worker: shared.spec.name.clone(),
                        op,
                        id: ack.id,
                        token: ack.token,
                        t0,
                        t1: now_ms(),
                        outcome: if ack.code == 0 {
                            Outcome::Ok
                        } else {
                            Outcome::Refused(format!("code {}: {}", ack.code, ack.message))
                        },
                        deadline_ms: None,
                    });
                }
            }
            _ => {}
        }
    };
    // Whatever was sent and not answered may or may not have happened.
    let unanswered: Vec<_> = pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .drain()
        .collect();
    for ((id, token), (op, t0)) in unanswered {
        shared.history.record(&Event::Attempt {
            worker: shared.spec.name.clone(),
            op,
            id,
            token,
            t0,
            t1: now_ms(),
            outcome: Outcome::Unknown("stream ended before the answer".into()),
            deadline_ms: None,
        });
    }
    outcome
}

enum Behaviour {
    Normal,
    Crash,
    Fail,
    Slow,
    Overrun,
}

async fn run_job(
    shared: Arc<Shared>,
    mut client: Client,
    tx: mpsc::Sender<proto::WorkerMessage>,
    pending: Pending,
    job: proto::Job,
) {
    let spec = &shared.spec;
    let token = job.lease.as_ref().map(|l| l.token).unwrap_or(0);
    let lease_ms = job.timeout_ms.max(200);
    let (behaviour, work_ms) = {
        let mut rng = shared.rng.lock().unwrap_or_else(|p| p.into_inner());
        let roll = rng.random_range(0..1000);
        let behaviour = if roll < spec.crash {
            Behaviour::Crash
        } else if roll < spec.crash + spec.fail {
            Behaviour::Fail
        } else if roll < spec.crash + spec.fail + spec.slow {
            Behaviour::Slow
        } else if roll < spec.crash + spec.fail + spec.slow + spec.overrun {
            Behaviour::Overrun
        } else {
            Behaviour::Normal
        };
        (behaviour, rng.random_range(5..60))
    };
    match behaviour {
        Behaviour::Normal | Behaviour::Fail => {
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
        }
        Behaviour::Crash => {
            tokio::time::sleep(Duration::from_millis(work_ms)).await;
            // Die only with no answer in flight, so the history holds every
            // answer this process sent.
            let held = pending.lock().unwrap_or_else(|p| p.into_inner());
            if held.is_empty() {
                eprintln!(
                    "chaos worker {}: crashing on purpose mid-job {}",
                    spec.name, job.id
                );
                let end = || Event::SessionEnd {
                    worker: spec.name.clone(),
                    t: now_ms(),
                };
                shared.history.record_and_exit(end, 3);
            }
        }
        Behaviour::Slow => {
            let end = tokio::time::Instant::now() + Duration::from_millis(lease_ms * 3 / 2);
            let every = Duration::from_millis(lease_ms / 3);
            while tokio::time::Instant::now() < end {
                tokio::time::sleep(every).await;
                let t0 = now_ms();
                let answer = client.heartbeat_job(&job.id, token).await;
                let (outcome, deadline_ms) = match answer {
                    Ok(j) => (Outcome::Ok, j.lease.map(|l| l.deadline_ms)),
                    Err(e) => (outcome_of(&e), None),
                };
                let refused = matches!(outcome, Outcome::Refused(_));
                shared.history.record(&Event::Attempt {
                    worker: spec.name.clone(),
                    op: AttemptOp::Heartbeat,
                    id: job.id.clone(),
                    token,
                    t0,
                    t1: now_ms(),
                    outcome,
                    deadline_ms,
                });
                if refused {
                    // Lease gone (cancelled or taken over): stop working.
                    break;
                }
            }
        }
        Behaviour::Overrun => {
            tokio::time::sleep(Duration::from_millis(lease_ms + 500)).await;
        }
    }
    let (op, kind) = if matches!(behaviour, Behaviour::Fail) {
        (
            AttemptOp::Fail,
            WorkerKind::Fail(proto::FailJobRequest {
                id: job.id.clone(),
                token,
                error: "chaos: failing on purpose".into(),
                retryable: true,
            }),
        )
    } else {
        (
            AttemptOp::Complete,
            WorkerKind::Complete(proto::CompleteJobRequest {
                id: job.id.clone(),
                token,
                result: format!("{}#{token}", spec.name).into_bytes(),
            }),
        )
    };
    let t0 = now_ms();
    pending
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert((job.id.clone(), token), (op, t0));
    if tx.send(proto::WorkerMessage { kind: Some(kind) }).await.is_err() {
        // The session is gone and nothing was sent.
        pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&(job.id.clone(), token));
    }
}

/// A definite refusal or an unknown outcome, by gRPC code.
pub fn outcome_of(e: &sundial_sdk::Error) -> Outcome {
    use tonic::Code;
    match e.code() {
        Some(
            Code::InvalidArgument
            | Code::FailedPrecondition
            | Code::NotFound
            | Code::AlreadyExists
            | Code::OutOfRange,
        ) => Outcome::Refused(e.to_string()),
        _ => Outcome::Unknown(e.to_string()),
    }
}
