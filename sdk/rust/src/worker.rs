//! Running jobs: a worker connects to any node, names its queues and how many
//! jobs it runs at once, and the node pushes leased jobs to it.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sundial_sdk::Error> {
//! use sundial_sdk::{JobFailure, Worker};
//! Worker::new("127.0.0.1:7070")
//!     .queue("emails")
//!     .concurrency(8)
//!     .run(|job| async move {
//!         if job.payload.is_empty() {
//!             return Err(JobFailure::permanent("empty payload"));
//!         }
//!         Ok(b"sent".to_vec())
//!     })
//!     .await
//! # }
//! ```
//!
//! While a handler runs, the worker heartbeats the job's lease (every third
//! of the job's timeout), so a job may run longer than its timeout as long as
//! the worker lives. A cancelled job's handler is dropped (its future stops at
//! its next await point). If the connection drops, the worker reconnects with
//! backoff; the node returns the jobs the old connection held for retry.
//!
//! With [`Worker::prefetch`], the worker holds a few more leased jobs than it
//! runs, so the next job is already there when a handler finishes (fewer,
//! larger lease and completion batches on the cluster: much higher drain
//! throughput when handlers are short). A prefetched job's lease is
//! heartbeated while it waits, like a running one.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::AbortHandle;
use tokio::task::JoinSet;
use tokio_stream::wrappers::ReceiverStream;

use crate::proto::node_message::Kind as NodeKind;
use crate::proto::worker_message::Kind as WorkerKind;
use crate::proto::worker_service_client::WorkerServiceClient;
use crate::{proto, Client, Error};

/// Why a handler did not succeed.
#[derive(Clone, Debug)]
pub struct JobFailure {
    pub message: String,
    /// False: the job is dead at once, whatever attempts it has left.
    pub retryable: bool,
}

impl JobFailure {
    /// A failure worth retrying under the job's retry policy.
    pub fn retry(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure no retry will fix.
    pub fn permanent(message: impl Into<String>) -> JobFailure {
        JobFailure {
            message: message.into(),
            retryable: false,
        }
    }
}

impl<E: std::fmt::Display> From<E> for JobFailure {
    fn from(e: E) -> Self {
        JobFailure::retry(e.to_string())
    }
}

/// A worker; see the module docs.
pub struct Worker {
    addr: String,
    namespace: String,
    queues: Vec<String>,
    concurrency: u32,
    prefetch: u32,
    worker_id: String,
}

impl Worker {
    /// A worker that will connect to the node at `addr` (`host:port`).
    pub fn new(addr: impl Into<String>) -> Worker {
        Worker {
            addr: addr.into(),
            namespace: String::new(),
            queues: Vec::new(),
            concurrency: 1,
            prefetch: 0,
            worker_id: default_worker_id(),
        }
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> Worker {
        self.namespace = namespace.into();
        self
    }

    /// Adds a queue to take jobs from.
    pub fn queue(mut self, queue: impl Into<String>) -> Worker {
        self.queues.push(queue.into());
        self
    }

    /// How many jobs run at once (default 1).
    pub fn concurrency(mut self, concurrency: u32) -> Worker {
        self.concurrency = concurrency;
        self
    }

    /// How many leased jobs may wait here for a free handler, beyond the
    /// `concurrency` running ones (default 0). The node pushes at most
    /// `concurrency + prefetch` jobs (the worker's credits, at most 1000).
    pub fn prefetch(mut self, prefetch: u32) -> Worker {
        self.prefetch = prefetch;
        self
    }

    /// The name operators see in leases (default `host-pid`).
    pub fn id(mut self, worker_id: impl Into<String>) -> Worker {
        self.worker_id = worker_id.into();
        self
    }

    /// Runs jobs with `handler` until the node refuses the worker (a bad
    /// queue name, say); connection losses are retried forever.
    pub async fn run<F, Fut>(self, handler: F) -> Result<(), Error>
    where
        F: Fn(proto::Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, JobFailure>> + Send + 'static,
    {
        self.run_until(handler, std::future::pending()).await
    }

    /// Like [`Worker::run`], until `shutdown` completes; then it stops
    /// gracefully: jobs not started yet (prefetched) are released — ready
    /// again at once, their attempt not counted — running handlers finish
    /// and their outcomes are recorded, and the stream closes.
    pub async fn run_until<F, Fut, S>(self, handler: F, shutdown: S) -> Result<(), Error>
    where
        F: Fn(proto::Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, JobFailure>> + Send + 'static,
        S: Future<Output = ()> + Send,
    {
        let handler = Arc::new(handler);
        let (stop_tx, stop) = watch::channel(false);
        let mut backoff = Duration::from_millis(100);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let outcome = {
                let session = self.session(handler.clone(), stop.clone());
                tokio::pin!(session);
                loop {
                    tokio::select! {
                        outcome = &mut session => break outcome,
                        () = &mut shutdown, if !*stop_tx.borrow() => {
                            tracing::info!(addr = %self.addr, "worker stopping: releasing waiting jobs, finishing running ones");
                            let _ = stop_tx.send(true);
                        }
                    }
                }
            };
            if *stop_tx.borrow() {
                return outcome;
            }
            match outcome {
                Err(Error::Status(s)) if s.code() == tonic::Code::InvalidArgument => {
                    return Err(Error::Status(s));
                }
                Err(e) => {
                    tracing::warn!(addr = %self.addr, error = %e, ?backoff, "worker connection lost, reconnecting")
                }
                Ok(()) => tracing::warn!(addr = %self.addr, "node closed the worker stream, reconnecting"),
            }
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }

    /// One connection: until the stream ends, or (once `stop` is set)
    /// until every job it holds is answered.
    async fn session<F, Fut>(&self, handler: Arc<F>, stop: watch::Receiver<bool>) -> Result<(), Error>
    where
        F: Fn(proto::Job) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Vec<u8>, JobFailure>> + Send + 'static,
    {
        let client = Client::connect(&self.addr).await?;
        let mut service = WorkerServiceClient::new(client.channel())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20);
        let credits = self.concurrency.saturating_add(self.prefetch);
        let (tx, rx) = mpsc::channel::<proto::WorkerMessage>(credits as usize * 2 + 16);
        let slots = Arc::new(Semaphore::new(self.concurrency.max(1) as usize));
        let hello = proto::WorkerHello {
            namespace: self.namespace.clone(),
            queues: self.queues.clone(),
            credits,
            worker_id: self.worker_id.clone(),
        };
        let _ = tx
            .send(proto::WorkerMessage {
                kind: Some(WorkerKind::Hello(hello)),
            })
            .await;
        let mut inbound = service.open_session(ReceiverStream::new(rx)).await?.into_inner();
        let running: Arc<Mutex<HashMap<String, AbortHandle>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let mut tx = Some(tx);
        let mut stopping = stop.clone();
        let (mut drain_sent, mut drained) = (false, false);
        loop {
            if drained && tasks.is_empty() {
                // Nothing more comes and nothing is held: closing our side
                // ends the stream once the node has our last answers.
                tx = None;
            }
            let msg = tokio::select! {
                msg = inbound.message() => msg?,
                Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
                true = async { stopping.wait_for(|s| *s).await.is_ok() }, if !drain_sent => {
                    drain_sent = true;
                    if let Some(tx) = &tx {
                        let drain = proto::WorkerMessage { kind: Some(WorkerKind::Drain(proto::WorkerDrain {})) };
                        let _ = tx.send(drain).await;
                    }
                    continue;
                }
            };
            let Some(msg) = msg else { break };
            match msg.kind {
                Some(NodeKind::Welcome(w)) => {
                    tracing::info!(node = w.node_id, session = w.session_id, "worker connected");
                }
                Some(NodeKind::Job(job)) => {
                    let Some(tx) = tx.clone() else {
                        // Pushed while the stream closes: the node fails it
                        // back when the stream ends.
                        continue;
                    };
                    let id = job.id.clone();
                    let task = tasks.spawn(run_job(
                        job,
                        handler.clone(),
                        slots.clone(),
                        stop.clone(),
                        tx,
                        running.clone(),
                    ));
                    let mut running = running.lock().unwrap_or_else(|p| p.into_inner());
                    if !task.is_finished() {
                        running.insert(id, task);
                    }
                }
                Some(NodeKind::Cancelled(c)) => {
                    let handle = running.lock().unwrap_or_else(|p| p.into_inner()).remove(&c.id);
                    if let Some(handle) = handle {
                        tracing::info!(job = %c.id, "job cancelled, stopping its handler");
                        handle.abort();
                    }
                }
                Some(NodeKind::Ack(ack)) if ack.code != 0 => {
                    tracing::warn!(job = %ack.id, token = ack.token, code = ack.code, message = %ack.message, "node refused an answer");
                }
                Some(NodeKind::Ack(_)) => {}
                Some(NodeKind::Drained(_)) => drained = true,
                None => {}
            }
        }
        Ok(())
    }
}

/// Runs one job: waits for a free handler slot, runs the handler, then
/// answers; the lease is heartbeated all along. A job still waiting when
/// the worker stops is released.
async fn run_job<F, Fut>(
    job: proto::Job,
    handler: Arc<F>,
    slots: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
    tx: mpsc::Sender<proto::WorkerMessage>,
    running: Arc<Mutex<HashMap<String, AbortHandle>>>,
) where
    F: Fn(proto::Job) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<Vec<u8>, JobFailure>> + Send + 'static,
{
    let id = job.id.clone();
    let token = job.lease.as_ref().map(|l| l.token).unwrap_or(job.attempts);
    let every = Duration::from_millis((job.timeout_ms / 3).max(100));
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    let heartbeat = || proto::WorkerMessage {
        kind: Some(WorkerKind::Heartbeat(proto::HeartbeatJobRequest {
            id: id.clone(),
            token,
        })),
    };
    let slot = loop {
        tokio::select! {
            biased;
            true = async { stop.wait_for(|s| *s).await.is_ok() } => {
                running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
                let release = proto::ReleaseJobRequest { id: id.clone(), token };
                let _ = tx.send(proto::WorkerMessage { kind: Some(WorkerKind::Release(release)) }).await;
                return;
            }
            slot = slots.clone().acquire_owned() => break slot,
            _ = ticker.tick() => {
                let _ = tx.send(heartbeat()).await;
            }
        }
    };
    let Ok(_slot) = slot else { return };
    let work = handler(job);
    tokio::pin!(work);
    let outcome = loop {
        tokio::select! {
            outcome = &mut work => break outcome,
            _ = ticker.tick() => {
                let _ = tx.send(heartbeat()).await;
            }
        }
    };
    running.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    let kind = match outcome {
        Ok(result) => WorkerKind::Complete(proto::CompleteJobRequest { id, token, result }),
        Err(failure) => WorkerKind::Fail(proto::FailJobRequest {
            id,
            token,
            error: failure.message,
            retryable: failure.retryable,
        }),
    };
    let _ = tx.send(proto::WorkerMessage { kind: Some(kind) }).await;
}

fn default_worker_id() -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "worker".to_string());
    format!("{host}-{}", std::process::id())
}
