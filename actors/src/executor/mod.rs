//! HTTP targets: jobs the node delivers itself, by calling a URL.
//!
//! `ExecutorSupervisor` owns `concurrency` `Executor` actors and a lease feed
//! (`crate::lease_feed`) with one slot per executor, asking every shard for
//! jobs with an HTTP target (`Want::Http`, any namespace and queue). Each
//! leased job goes to an idle executor, which calls the target (heartbeating
//! the lease while the call runs) and records the outcome under the job's
//! fencing token: 2xx completes the attempt with the response body as
//! result; anything else fails it as retryable with the status and the start
//! of the body, and the job's retry policy applies.
//!
//! An executor that crashes is replaced (backoff and intensity limit as
//! elsewhere). Its job is neither failed nor released: its heartbeats stop,
//! the lease runs out and the shard leader retries the job. The crashed
//! attempt can record nothing afterwards, since its token is stale — so a
//! job is never lost and never completed twice. The slot comes back only
//! when the replacement is running, so leased jobs never wait for an
//! executor.

pub mod call;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use sundial_raft::job::now_ms;
use sundial_raft::types::{LeaseHolder, Op};
use sundial_raft::{Job, JobId};
use tokio::sync::{Notify, Semaphore};
use tokio::task::JoinSet;

use crate::dispatch::{LeaseRequest, Want};
use crate::error::Error;
use crate::gateway::{GatewayHandle, SessionGuard, WorkerNotice};
use crate::lease_feed::{self, JobSink};
use crate::supervisor::{stopped_child, Decision, RestartPolicy, RestartTracker};

/// How long recording an outcome or a heartbeat may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// The name leases held by executors carry.
pub const EXECUTOR_WORKER: &str = "sundial-executor";

/// How the node runs HTTP targets.
#[derive(Clone, Copy, Debug)]
pub struct ExecutorConfig {
    /// Calls in flight at once on this node (one executor actor each).
    pub concurrency: u32,
    /// Largest response body kept as a job's result.
    pub max_result_bytes: usize,
    pub policy: RestartPolicy,
}

/// Faults a test can inject into the executors, and what happened to them.
#[derive(Debug, Default)]
pub struct ExecutorProbe {
    /// Executors still to crash, each after its call returned and before
    /// its outcome is recorded.
    crash_after_call: AtomicU32,
    /// Executors replaced after a crash, since the node started.
    restarts: AtomicU64,
    /// Calls dropped because their job was cancelled.
    cancelled: AtomicU64,
}

impl ExecutorProbe {
    /// Makes the next `n` executors that finish a call panic before they
    /// record its outcome.
    pub fn crash_after_call(&self, n: u32) {
        self.crash_after_call.store(n, Ordering::SeqCst);
    }

    pub fn restarts(&self) -> u64 {
        self.restarts.load(Ordering::SeqCst)
    }

    pub fn cancelled(&self) -> u64 {
        self.cancelled.load(Ordering::SeqCst)
    }

    fn take_crash(&self) -> bool {
        self.crash_after_call
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

pub struct ExecutorSupervisorArgs {
    pub gateway: GatewayHandle,
    pub config: ExecutorConfig,
    pub probe: Arc<ExecutorProbe>,
}

pub enum ExecutorSupervisorMsg {
    /// A job leased for the executors.
    Leased(Box<Job>),
    /// An executor finished its job and is idle again.
    Done(ActorId),
    /// Start one executor in place of a crashed one.
    Replace,
}

impl ractor::Message for ExecutorSupervisorMsg {}

pub struct ExecutorSupervisor;

pub struct ExecutorSupervisorState {
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    executors: HashMap<ActorId, ActorRef<ExecutorMsg>>,
    idle: VecDeque<ActorId>,
    /// Leased jobs no executor was free for (only if one crashed between
    /// the lease and the hand-over).
    waiting: VecDeque<Job>,
    failures: RestartTracker,
    policy: RestartPolicy,
    _pollers: JoinSet<()>,
    _notices: tokio::task::JoinHandle<()>,
}

/// What every executor of the node shares.
struct Shared {
    gateway: GatewayHandle,
    client: reqwest::Client,
    max_result_bytes: usize,
    /// Jobs being called, and how to stop the call when the job is cancelled.
    calls: Mutex<HashMap<JobId, Arc<Notify>>>,
    probe: Arc<ExecutorProbe>,
    /// Keeps the session (and its cancellation notices) registered.
    _session: SessionGuard,
}

impl Actor for ExecutorSupervisor {
    type Msg = ExecutorSupervisorMsg;
    type State = ExecutorSupervisorState;
    type Arguments = ExecutorSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ExecutorSupervisorMsg>,
        args: ExecutorSupervisorArgs,
    ) -> Result<ExecutorSupervisorState, ActorProcessingErr> {
        let client = call::client()?;
        let (session, mut notices) = args.gateway.open_session();
        let holder = LeaseHolder {
            worker: EXECUTOR_WORKER.to_string(),
            node: args.gateway.layout().node_id,
            session: session.id,
        };
        let shared = Arc::new(Shared {
            gateway: args.gateway.clone(),
            client,
            max_result_bytes: args.config.max_result_bytes,
            calls: Mutex::new(HashMap::new()),
            probe: args.probe,
            _session: session,
        });
        let concurrency = args.config.concurrency.max(1);
        let mut state = ExecutorSupervisorState {
            shared: shared.clone(),
            slots: Arc::new(Semaphore::new(0)),
            executors: HashMap::new(),
            idle: VecDeque::new(),
            waiting: VecDeque::new(),
            failures: RestartTracker::default(),
            policy: args.config.policy,
            _pollers: JoinSet::new(),
            _notices: tokio::spawn({
                let shared = shared.clone();
                async move {
                    while let Some(notice) = notices.recv().await {
                        match notice {
                            WorkerNotice::Cancelled(id) => shared.cancel(&id),
                        }
                    }
                }
            }),
        };
        for _ in 0..concurrency {
            start_executor(&myself, &mut state).await?;
        }
        let request = LeaseRequest {
            want: Want::Http,
            max: 1,
            holder,
            wait_ms: 0,
        };
        let sink = Arc::new(SupervisorSink(myself.clone()));
        // The executors never drain (no sender): the feed stops with the
        // supervisor, which drops it.
        let never = tokio::sync::watch::channel(false).1;
        state._pollers = lease_feed::start(
            &args.gateway,
            request,
            state.slots.clone(),
            concurrency,
            sink,
            never,
        );
        tracing::info!(concurrency, "HTTP executors started");
        Ok(state)
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecutorSupervisorMsg>,
        msg: ExecutorSupervisorMsg,
        state: &mut ExecutorSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecutorSupervisorMsg::Leased(job) => {
                state.waiting.push_back(*job);
                hand_out(state);
            }
            ExecutorSupervisorMsg::Done(executor) => {
                if state.executors.contains_key(&executor) {
                    state.idle.push_back(executor);
                    state.slots.add_permits(1);
                    hand_out(state);
                }
            }
            ExecutorSupervisorMsg::Replace => {
                state.shared.probe.restarts.fetch_add(1, Ordering::SeqCst);
                start_executor(&myself, state).await?;
                hand_out(state);
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ExecutorSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut ExecutorSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((child, why)) = stopped_child(&event) else {
            return Ok(());
        };
        if state.executors.remove(&child).is_none() {
            return Ok(());
        }
        state.idle.retain(|id| *id != child);
        match state.failures.on_failure(&state.policy, Instant::now()) {
            Decision::RestartAfter(delay) => {
                tracing::warn!(reason = %why, ?delay, "HTTP executor failed; its job runs again when its lease expires");
                myself.send_after(delay, || ExecutorSupervisorMsg::Replace);
                Ok(())
            }
            Decision::Escalate => Err(format!("HTTP executors keep failing: {why}").into()),
        }
    }
}

/// Starts one executor; it is idle and its slot is free.
async fn start_executor(
    myself: &ActorRef<ExecutorSupervisorMsg>,
    state: &mut ExecutorSupervisorState,
) -> Result<(), ActorProcessingErr> {
    let (executor, _) = Actor::spawn_linked(
        None,
        Executor,
        (state.shared.clone(), myself.clone()),
        myself.get_cell(),
    )
    .await?;
    let id = executor.get_id();
    state.executors.insert(id, executor);
    state.idle.push_back(id);
    state.slots.add_permits(1);
    Ok(())
}

/// Gives waiting jobs to idle executors.
fn hand_out(state: &mut ExecutorSupervisorState) {
    while !state.waiting.is_empty() {
        let Some(id) = state.idle.pop_front() else { return };
        let Some(executor) = state.executors.get(&id) else {
            continue;
        };
        let Some(job) = state.waiting.pop_front() else {
            return;
        };
        if let Err(e) = executor.cast(ExecutorMsg::Run(Box::new(job))) {
            // It is stopping; its failure event replaces it. The job's lease
            // runs out and the job is retried.
            tracing::debug!(error = %e, "executor gone before taking a job");
        }
    }
}

/// Hands the lease feed's jobs to the supervisor.
struct SupervisorSink(ActorRef<ExecutorSupervisorMsg>);

impl JobSink for SupervisorSink {
    async fn deliver(&self, job: Job) -> bool {
        self.0.cast(ExecutorSupervisorMsg::Leased(Box::new(job))).is_ok()
    }
}

impl Shared {
    fn cancel(&self, id: &JobId) {
        let calls = self.calls.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stop) = calls.get(id) {
            stop.notify_one();
        }
    }
}

enum ExecutorMsg {
    Run(Box<Job>),
}

impl ractor::Message for ExecutorMsg {}

/// Calls one job's target at a time. The call runs inside the handler, so a
/// crash drops it along with its heartbeats.
struct Executor;

impl Actor for Executor {
    type Msg = ExecutorMsg;
    type State = (Arc<Shared>, ActorRef<ExecutorSupervisorMsg>);
    type Arguments = (Arc<Shared>, ActorRef<ExecutorSupervisorMsg>);

    async fn pre_start(
        &self,
        _myself: ActorRef<ExecutorMsg>,
        args: Self::Arguments,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(args)
    }

    async fn handle(
        &self,
        myself: ActorRef<ExecutorMsg>,
        msg: ExecutorMsg,
        (shared, supervisor): &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ExecutorMsg::Run(job) => run(shared, *job).await,
        }
        let _ = supervisor.cast(ExecutorSupervisorMsg::Done(myself.get_id()));
        Ok(())
    }
}

/// Runs one attempt of `job` to the end: call, then record the outcome.
async fn run(shared: &Shared, job: Job) {
    let Some(token) = job.lease.as_ref().map(|l| l.token) else {
        tracing::warn!(id = %job.id, "leased job without a lease; skipped");
        return;
    };
    let Some(target) = job.http.clone() else {
        let error = "job has no HTTP target".to_string();
        record(shared, &job, token, Err(error), false).await;
        return;
    };
    let stop = Arc::new(Notify::new());
    {
        let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.insert(job.id, stop.clone());
    }
    let outcome = tokio::select! {
        outcome = call::call(&shared.client, &job, &target, token, shared.max_result_bytes) => Some(outcome),
        () = keep_lease(&shared.gateway, &job, token) => None,
        () = stop.notified() => {
            tracing::debug!(id = %job.id, "job cancelled during its call");
            shared.probe.cancelled.fetch_add(1, Ordering::SeqCst);
            None
        }
    };
    {
        let mut calls = shared.calls.lock().unwrap_or_else(|p| p.into_inner());
        calls.remove(&job.id);
    }
    let Some(outcome) = outcome else { return };
    if shared.probe.take_crash() {
        panic!(
            "injected fault: executor crashed after calling {} for job {}",
            target.url, job.id
        );
    }
    record(shared, &job, token, outcome, true).await;
}

/// Heartbeats the lease every third of the job's timeout while the call
/// runs; returns only when the lease is lost (the job was cancelled, or its
/// lease expired and went to another attempt).
async fn keep_lease(gateway: &GatewayHandle, job: &Job, token: u32) {
    let every = Duration::from_millis((job.timeout_ms / 3).max(50));
    loop {
        tokio::time::sleep(every).await;
        let op = Op::Heartbeat {
            id: job.id,
            token,
            at_ms: now_ms(),
        };
        match gateway.attempt(op, Instant::now() + every).await {
            Ok(_) => {}
            Err(Error::StaleLease { .. } | Error::JobNotFound(_)) => {
                tracing::debug!(id = %job.id, token, "lease lost during the call; dropping it");
                return;
            }
            Err(e) => tracing::debug!(id = %job.id, error = %e, "heartbeat not written; trying again"),
        }
    }
}

/// Records a call's outcome under the attempt's token.
async fn record(shared: &Shared, job: &Job, token: u32, outcome: Result<Vec<u8>, String>, retryable: bool) {
    let at_ms = now_ms();
    let op = match outcome {
        Ok(result) => Op::Complete {
            id: job.id,
            token,
            result,
            at_ms,
        },
        Err(error) => Op::Fail {
            id: job.id,
            token,
            error,
            retryable,
            at_ms,
        },
    };
    match shared.gateway.attempt(op, Instant::now() + WRITE_TIMEOUT).await {
        Ok(_) => {}
        Err(e @ Error::StaleLease { .. }) => {
            tracing::debug!(id = %job.id, error = %e, "outcome refused: lease lost")
        }
        Err(e) => {
            tracing::warn!(id = %job.id, error = %e, "outcome not recorded; the job runs again when its lease expires")
        }
    }
}
