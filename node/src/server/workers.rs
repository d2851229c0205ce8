//! `WorkerService`: worker streams and the unary attempt operations.
//!
//! A stream is one *session* on this node. The session leases jobs through a
//! lease feed (`sundial_actors::lease_feed`: one long-poll request per shard,
//! never more jobs than the worker's credits) and gives a credit back when a
//! job is completed, failed or cancelled.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::Stream;
use sundial_actors::dispatch::{LeaseRequest, Want};
use sundial_actors::gateway::WorkerNotice;
use sundial_actors::lease_feed::{self, JobSink};
use sundial_actors::GatewayHandle;
use sundial_proto::v1 as pb;
use sundial_proto::v1::worker_message::Kind as WorkerKind;
use sundial_proto::v1::worker_service_server::WorkerService;
use sundial_raft::types::{LeaseHolder, Op};
use sundial_raft::JobId;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::jobs::{check_name, job_to_proto, namespace_or_default, now_ms, parse_id};
use super::status::{from_gateway, invalid};

/// Most jobs one worker stream may hold.
const MAX_CREDITS: u32 = 1000;
/// How long an attempt operation may take before the worker hears an error.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(30);

pub struct WorkerApi {
    gateway: GatewayHandle,
    /// Largest result a completion may store (the payload limit).
    max_result_bytes: usize,
}

impl WorkerApi {
    pub fn new(gateway: GatewayHandle, max_result_bytes: usize) -> WorkerApi {
        WorkerApi {
            gateway,
            max_result_bytes,
        }
    }

    fn shard_count(&self) -> u32 {
        self.gateway.layout().shard_count
    }
}

type NodeStream = Pin<Box<dyn Stream<Item = Result<pb::NodeMessage, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    type OpenSessionStream = NodeStream;

    async fn open_session(
        &self,
        request: Request<Streaming<pb::WorkerMessage>>,
    ) -> Result<Response<NodeStream>, Status> {
        let mut inbound = request.into_inner();
        let first = inbound
            .message()
            .await?
            .ok_or_else(|| invalid("hello", "the stream ended before the hello"))?;
        let Some(WorkerKind::Hello(hello)) = first.kind else {
            return Err(invalid(
                "hello",
                "the first message on the stream must be a hello",
            ));
        };
        let hello = Hello::check(hello)?;
        let (out, rx) = mpsc::channel(hello.credits as usize + 64);
        let session = Session {
            max_result_bytes: self.max_result_bytes,
            gateway: self.gateway.clone(),
            hello,
            out,
            held: Arc::default(),
        };
        // Owned by the stream: it ends when the worker hangs up or the
        // response stream is dropped.
        tokio::spawn(session.run(inbound));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn heartbeat_job(
        &self,
        request: Request<pb::HeartbeatJobRequest>,
    ) -> Result<Response<pb::AttemptResponse>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id, self.shard_count())?;
        let op = Op::Heartbeat {
            id,
            token: req.token,
            at_ms: now_ms(),
        };
        self.attempt(op).await
    }

    async fn complete_job(
        &self,
        request: Request<pb::CompleteJobRequest>,
    ) -> Result<Response<pb::AttemptResponse>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id, self.shard_count())?;
        check_result(&req.result, self.max_result_bytes)?;
        let op = Op::Complete {
            id,
            token: req.token,
            result: req.result,
            at_ms: now_ms(),
        };
        self.attempt(op).await
    }

    async fn fail_job(
        &self,
        request: Request<pb::FailJobRequest>,
    ) -> Result<Response<pb::AttemptResponse>, Status> {
        let req = request.into_inner();
        let id = parse_id("id", &req.id, self.shard_count())?;
        let op = fail_op(id, req);
        self.attempt(op).await
    }
}

impl WorkerApi {
    async fn attempt(&self, op: Op) -> Result<Response<pb::AttemptResponse>, Status> {
        let job = self
            .gateway
            .attempt(op, Instant::now() + ATTEMPT_TIMEOUT)
            .await
            .map_err(from_gateway)?;
        Ok(Response::new(pb::AttemptResponse {
            job: Some(job_to_proto(job)),
        }))
    }
}

fn check_result(result: &[u8], limit: usize) -> Result<(), Status> {
    if result.len() > limit {
        return Err(invalid(
            "result",
            format!("is {} bytes, the limit is {limit} bytes", result.len()),
        ));
    }
    Ok(())
}

/// Longest error text stored with a job.
const MAX_ERROR_BYTES: usize = 4096;

fn fail_op(id: JobId, req: pb::FailJobRequest) -> Op {
    let mut error = req.error;
    if error.len() > MAX_ERROR_BYTES {
        let mut cut = MAX_ERROR_BYTES;
        while !error.is_char_boundary(cut) {
            cut -= 1;
        }
        error.truncate(cut);
    }
    Op::Fail {
        id,
        token: req.token,
        error,
        retryable: req.retryable,
        at_ms: now_ms(),
    }
}

/// A checked hello.
struct Hello {
    namespace: String,
    queues: Vec<String>,
    credits: u32,
    worker_id: String,
}

impl Hello {
    fn check(hello: pb::WorkerHello) -> Result<Hello, Status> {
        let namespace = namespace_or_default(&hello.namespace)?;
        if hello.queues.is_empty() {
            return Err(invalid("queues", "name at least one queue"));
        }
        for queue in &hello.queues {
            check_name("queues", queue)?;
        }
        if hello.credits == 0 || hello.credits > MAX_CREDITS {
            return Err(invalid(
                "credits",
                format!("{} is not in 1..={MAX_CREDITS}", hello.credits),
            ));
        }
        if hello.worker_id.len() > 128 {
            return Err(invalid("worker_id", "is over 128 bytes"));
        }
        let worker_id = if hello.worker_id.is_empty() {
            "anonymous".to_string()
        } else {
            hello.worker_id
        };
        Ok(Hello {
            namespace,
            queues: hello.queues,
            credits: hello.credits,
            worker_id,
        })
    }
}

type Out = mpsc::Sender<Result<pb::NodeMessage, Status>>;

fn message(kind: pb::node_message::Kind) -> Result<pb::NodeMessage, Status> {
    Ok(pb::NodeMessage { kind: Some(kind) })
}

struct Session {
    max_result_bytes: usize,
    gateway: GatewayHandle,
    hello: Hello,
    out: Out,
    /// Jobs pushed to the worker and not yet answered: id → fencing token.
    held: Arc<Mutex<HashMap<JobId, u32>>>,
}

impl Session {
    async fn run(self, mut inbound: Streaming<pb::WorkerMessage>) {
        let (guard, mut notices) = self.gateway.open_session();
        let node = self.gateway.layout().node_id;
        let welcome = pb::node_message::Kind::Welcome(pb::WorkerWelcome {
            node_id: node,
            session_id: guard.id,
        });
        if self.out.send(message(welcome)).await.is_err() {
            return;
        }
        tracing::info!(
            session = guard.id,
            worker = %self.hello.worker_id,
            namespace = %self.hello.namespace,
            queues = ?self.hello.queues,
            credits = self.hello.credits,
            "worker connected"
        );
        let slots = Arc::new(Semaphore::new(self.hello.credits as usize));
        let holder = LeaseHolder {
            worker: self.hello.worker_id.clone(),
            node,
            session: guard.id,
        };
        let request = LeaseRequest {
            want: Want::Queues {
                namespace: self.hello.namespace.clone(),
                queues: self.hello.queues.clone(),
            },
            max: 1,
            holder,
            wait_ms: 0,
        };
        let sink = Arc::new(SessionSink {
            held: self.held.clone(),
            out: self.out.clone(),
        });
        let (drain, draining) = watch::channel(false);
        let mut pollers = lease_feed::start(
            &self.gateway,
            request,
            slots.clone(),
            self.hello.credits,
            sink,
            draining,
        );
        let mut ops = JoinSet::new();
        loop {
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(pb::WorkerMessage { kind: Some(WorkerKind::Drain(_)) })) => {
                        // Lease nothing more; once every poller has
                        // delivered what it leased, tell the worker.
                        let _ = drain.send(true);
                        while pollers.join_next().await.is_some() {}
                        let kind = pb::node_message::Kind::Drained(pb::WorkerDrained {});
                        let _ = self.out.send(message(kind)).await;
                    }
                    Ok(Some(msg)) => self.on_message(msg, &slots, &mut ops),
                    Ok(None) => break,
                    Err(e) => {
                        tracing::debug!(session = guard.id, error = %e, "worker stream failed");
                        break;
                    }
                },
                Some(notice) = notices.recv() => match notice {
                    WorkerNotice::Cancelled(id) => {
                        if self.release(&id, &slots) {
                            let kind = pb::node_message::Kind::Cancelled(pb::JobCancelled { id: id.to_string() });
                            let _ = self.out.send(message(kind)).await;
                        }
                    }
                },
                Some(_) = ops.join_next(), if !ops.is_empty() => {}
                () = self.out.closed() => break,
            }
        }
        pollers.abort_all();
        // What the worker still holds runs again elsewhere. Answers already
        // sent stay as they are (their ops keep running to the end).
        let left: Vec<(JobId, u32)> = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.drain().collect()
        };
        for (id, token) in &left {
            let op = Op::Fail {
                id: *id,
                token: *token,
                error: format!("worker {} disconnected", self.hello.worker_id),
                retryable: true,
                at_ms: now_ms(),
            };
            let gateway = self.gateway.clone();
            ops.spawn(async move {
                if let Err(e) = gateway.attempt(op, Instant::now() + ATTEMPT_TIMEOUT).await {
                    tracing::debug!(error = %e, "could not return a disconnected worker's job");
                }
            });
        }
        while ops.join_next().await.is_some() {}
        tracing::info!(session = guard.id, returned = left.len(), "worker disconnected");
    }

    /// Forgets a held job and frees its slot; false if it was not held.
    fn release(&self, id: &JobId, slots: &Semaphore) -> bool {
        let was_held = {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.remove(id).is_some()
        };
        if was_held {
            slots.add_permits(1);
        }
        was_held
    }

    fn on_message(&self, msg: pb::WorkerMessage, slots: &Semaphore, ops: &mut JoinSet<()>) {
        let shard_count = self.gateway.layout().shard_count;
        let (raw_id, token, op) = match msg.kind {
            Some(WorkerKind::Heartbeat(h)) => {
                let op = parse_id("id", &h.id, shard_count).map(|id| Op::Heartbeat {
                    id,
                    token: h.token,
                    at_ms: now_ms(),
                });
                (h.id, h.token, op)
            }
            Some(WorkerKind::Complete(c)) => {
                let checked = check_result(&c.result, self.max_result_bytes);
                let op = checked
                    .and_then(|()| parse_id("id", &c.id, shard_count))
                    .map(|id| Op::Complete {
                        id,
                        token: c.token,
                        result: c.result,
                        at_ms: now_ms(),
                    });
                (c.id, c.token, op)
            }
            Some(WorkerKind::Fail(f)) => {
                let (raw, token) = (f.id.clone(), f.token);
                let op = parse_id("id", &f.id, shard_count).map(|id| fail_op(id, f));
                (raw, token, op)
            }
            Some(WorkerKind::Release(r)) => {
                let op = parse_id("id", &r.id, shard_count).map(|id| Op::Release {
                    id,
                    token: r.token,
                    at_ms: now_ms(),
                });
                (r.id, r.token, op)
            }
            Some(WorkerKind::Hello(_)) => {
                let status = invalid("hello", "a stream takes one hello, first");
                self.ack(ops, String::new(), 0, Err(status));
                return;
            }
            // Handled by the session loop.
            Some(WorkerKind::Drain(_)) | None => return,
        };
        let op = match op {
            Ok(op) => op,
            Err(status) => {
                self.ack(ops, raw_id, token, Err(status));
                return;
            }
        };
        if let Op::Complete { id, .. } | Op::Fail { id, .. } | Op::Release { id, .. } = &op {
            self.release(id, slots);
        }
        let gateway = self.gateway.clone();
        let out = self.out.clone();
        ops.spawn(async move {
            let result = gateway
                .attempt(op, Instant::now() + ATTEMPT_TIMEOUT)
                .await
                .map_err(from_gateway);
            let _ = out.send(message(ack_kind(raw_id, token, result))).await;
        });
    }

    fn ack(&self, ops: &mut JoinSet<()>, id: String, token: u32, result: Result<sundial_raft::Job, Status>) {
        let out = self.out.clone();
        ops.spawn(async move {
            let _ = out.send(message(ack_kind(id, token, result))).await;
        });
    }
}

fn ack_kind(id: String, token: u32, result: Result<sundial_raft::Job, Status>) -> pb::node_message::Kind {
    let ack = match result {
        Ok(job) => pb::AttemptAck {
            id,
            token,
            code: 0,
            message: String::new(),
            job: Some(job_to_proto(job)),
        },
        Err(status) => pb::AttemptAck {
            id,
            token,
            code: status.code() as i32,
            message: status.message().to_string(),
            job: None,
        },
    };
    pb::node_message::Kind::Ack(ack)
}

/// Hands a worker's leased jobs to its stream, remembering each one's token.
struct SessionSink {
    held: Arc<Mutex<HashMap<JobId, u32>>>,
    out: Out,
}

impl JobSink for SessionSink {
    async fn deliver(&self, job: sundial_raft::Job) -> bool {
        if let Some(lease) = &job.lease {
            let mut held = self.held.lock().unwrap_or_else(|p| p.into_inner());
            held.insert(job.id, lease.token);
        }
        let kind = pb::node_message::Kind::Job(job_to_proto(job));
        self.out.send(message(kind)).await.is_ok()
    }
}
