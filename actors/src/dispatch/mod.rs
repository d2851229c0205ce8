//! The dispatcher: timers and leases of one shard, active on its leader.
//!
//! While this node leads the shard, the dispatcher holds the next waiting jobs
//! in memory (a window refilled from the RocksDB time index, see `state.rs`),
//! moves each to its queue's ready set the moment it is due, and leases ready
//! jobs to worker sessions that ask — at once, or as soon as a job comes when
//! they asked early (long poll). It also expires leases whose deadline passed.
//! Every change goes through Raft (`Op::Lease`, `Op::Expire`), so a new leader
//! finds every due, overdue and leased job in the indexes it loads. Followers
//! never fire: their dispatcher is idle until their node leads.

mod messages;
mod state;

use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sundial_raft::job::now_ms;
use sundial_raft::quota::{self, QuotaReport};
use sundial_raft::schedule::Schedule;
use sundial_raft::store::events::ShardEvent;
use sundial_raft::store::NodeStore;
use sundial_raft::types::{LeaseHolder, Op, OpResult};
use sundial_raft::{Job, JobId, NodeId, Raft, ShardId};
use tokio::task::JoinHandle;

pub use messages::{DispatchMsg, LeaseReply, LeaseRequest};
pub use state::Want;
use state::{DispatchState, Parked, QuotaRequest};

use crate::error::ExecError;
use crate::gateway::GatewayHandle;
use crate::shard::ShardHandle;

/// How far ahead the in-memory window of waiting jobs reaches.
const WINDOW_MS: i64 = 60_000;
/// Most waiting jobs of one shard held in memory.
const WINDOW_CAP: usize = 20_000;
/// Longest a lease request is held when no job is ready.
const MAX_WAIT_MS: u64 = 30_000;
/// How often the leader sweeps expired idempotency keys out of the index.
const KEY_SWEEP_EVERY_MS: i64 = 60_000;
/// Index entries looked at per sweep step (steps follow each other quickly
/// until the end of the index).
const KEY_SWEEP_PAGE: usize = 1_000;
const KEY_SWEEP_STEP_MS: i64 = 200;
/// How long a lease or expiry write may take.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// The registered name of a shard's dispatcher on this node.
pub fn actor_name(shard: ShardId) -> String {
    format!("dispatch-{shard}")
}

pub struct Dispatcher;

pub struct DispatchArgs {
    pub shard: ShardId,
    pub node_id: NodeId,
    pub raft: Raft,
    pub store: Arc<NodeStore>,
    pub gateway: GatewayHandle,
}

pub struct DispatcherState {
    shard: ShardId,
    node_id: NodeId,
    store: Arc<NodeStore>,
    gateway: GatewayHandle,
    /// Bumped whenever leadership changes or the shard is reset; loads and
    /// events of an older epoch are dropped.
    epoch: u64,
    /// The term this node leads in, while it does.
    leading: Option<u64>,
    leader: Option<NodeId>,
    loaded: bool,
    loading: bool,
    /// Events that came before the first load of the epoch finished.
    buffered: Vec<ShardEvent>,
    /// Parked requests carry who asked and where to answer.
    state: DispatchState<(LeaseHolder, LeaseReply)>,
    /// When the next `Tick` is due, if one is scheduled.
    armed: Option<i64>,
    /// The idempotency-key sweep: when its next step is due, where it goes
    /// on from, and whether a step is running.
    sweep_at: i64,
    sweep_from: Option<Vec<u8>>,
    sweeping: bool,
    watcher: JoinHandle<()>,
}

impl Actor for Dispatcher {
    type Msg = DispatchMsg;
    type State = DispatcherState;
    type Arguments = DispatchArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<DispatchMsg>,
        args: DispatchArgs,
    ) -> Result<DispatcherState, ActorProcessingErr> {
        let watcher = watch_leadership(args.raft.clone(), myself);
        Ok(DispatcherState {
            shard: args.shard,
            node_id: args.node_id,
            store: args.store,
            gateway: args.gateway,
            epoch: 0,
            leading: None,
            leader: None,
            loaded: false,
            loading: false,
            buffered: Vec::new(),
            state: DispatchState::new(WINDOW_CAP),
            armed: None,
            sweep_at: now_ms() + KEY_SWEEP_EVERY_MS,
            sweep_from: None,
            sweeping: false,
            watcher,
        })
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<DispatchMsg>,
        s: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        s.watcher.abort();
        s.store.set_listener(s.shard, None);
        for p in s.state.drain_parked() {
            let _ = p.reply.1.send(Err(ExecError::Unavailable {
                shard: s.shard,
                reason: "dispatcher stopped".into(),
            }));
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<DispatchMsg>,
        msg: DispatchMsg,
        s: &mut DispatcherState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            DispatchMsg::Leadership { leader, term } => on_leadership(&myself, s, leader, term),
            DispatchMsg::Loaded {
                epoch,
                timers,
                until_ms,
                full,
                leases,
                schedules,
                queues,
            } => {
                if epoch != s.epoch {
                    return Ok(());
                }
                s.loading = false;
                s.state.load_timers(timers, until_ms, full);
                if let Some(leases) = leases {
                    s.state.load_leases(leases);
                }
                if let Some(schedules) = schedules {
                    s.state.load_schedules(schedules);
                }
                for (namespace, queue, config) in queues.into_iter().flatten() {
                    s.state
                        .set_limit((namespace.clone(), queue.clone()), config.concurrency);
                    s.state.set_paused(namespace, queue, config.paused);
                }
                if !s.loaded {
                    s.loaded = true;
                    tracing::info!(
                        shard = s.shard,
                        held = s.state.held(),
                        "dispatcher loaded timers and leases"
                    );
                    for event in std::mem::take(&mut s.buffered) {
                        on_event(&myself, s, event);
                    }
                }
            }
            DispatchMsg::LoadFailed { epoch, error } => {
                if epoch == s.epoch {
                    tracing::error!(shard = s.shard, %error, "dispatcher could not read its indexes, retrying");
                    s.loading = false;
                    let first = !s.loaded;
                    let myself = myself.clone();
                    myself.send_after(Duration::from_millis(200), move || DispatchMsg::Tick);
                    if first {
                        start_load(&myself, s, true);
                    }
                }
            }
            DispatchMsg::Applied { epoch, event } => {
                if epoch == s.epoch {
                    if s.loaded {
                        on_event(&myself, s, event);
                    } else {
                        s.buffered.push(event);
                    }
                }
            }
            DispatchMsg::Lease(request, reply) => on_lease(&myself, s, request, reply),
            DispatchMsg::LeaseWritten { picked } => s.state.lease_written(&picked),
            DispatchMsg::ExpiryFailed(id) => s.state.expiry_failed(&id),
            DispatchMsg::FireDone { namespace, id } => s.state.fire_done(&namespace, &id),
            DispatchMsg::KeysSwept { epoch, next } => {
                if epoch == s.epoch {
                    s.sweeping = false;
                    let pause = if next.is_some() {
                        KEY_SWEEP_STEP_MS
                    } else {
                        KEY_SWEEP_EVERY_MS
                    };
                    s.sweep_at = now_ms() + pause;
                    s.sweep_from = next;
                }
            }
            DispatchMsg::QuotaAnswered { epoch, queue, answer } => {
                if epoch == s.epoch {
                    s.state.quota_answered(&queue, answer);
                }
            }
            DispatchMsg::Tick => s.armed = None,
        }
        process(&myself, s);
        Ok(())
    }
}

/// Forwards every change of who leads the shard to the actor.
fn watch_leadership(raft: Raft, myself: ActorRef<DispatchMsg>) -> JoinHandle<()> {
    // Owned by the actor: aborted in `post_stop`.
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut last = None;
        loop {
            let seen = {
                let m = metrics.borrow_and_update();
                (
                    m.current_leader,
                    m.current_term,
                    m.state == openraft::ServerState::Leader,
                )
            };
            if last != Some(seen) {
                last = Some(seen);
                let (leader, term, is_leader) = seen;
                let term = is_leader.then_some(term);
                if myself.cast(DispatchMsg::Leadership { leader, term }).is_err() {
                    return;
                }
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    })
}

fn on_leadership(
    myself: &ActorRef<DispatchMsg>,
    s: &mut DispatcherState,
    leader: Option<NodeId>,
    term: Option<u64>,
) {
    s.leader = leader;
    let leads_now = term.filter(|_| leader == Some(s.node_id));
    if leads_now == s.leading {
        return;
    }
    s.leading = leads_now;
    match leads_now {
        Some(term) => {
            tracing::info!(
                shard = s.shard,
                term,
                "dispatcher active: this node leads the shard"
            );
            restart_epoch(myself, s);
        }
        None => {
            tracing::info!(
                shard = s.shard,
                ?leader,
                "dispatcher idle: another node leads the shard"
            );
            s.epoch += 1;
            s.sweeping = false;
            s.store.set_listener(s.shard, None);
            s.loaded = false;
            s.loading = false;
            s.buffered.clear();
            for p in s.state.drain_parked() {
                let _ = p.reply.1.send(Err(ExecError::NotLeader {
                    shard: s.shard,
                    leader,
                }));
            }
            s.state = DispatchState::new(WINDOW_CAP);
        }
    }
}

/// Starts over for a new term (or after a snapshot replaced the shard's
/// state): subscribe to changes first, then read the indexes, so nothing
/// applied in between is missed. Parked requests stay parked.
fn restart_epoch(myself: &ActorRef<DispatchMsg>, s: &mut DispatcherState) {
    s.epoch += 1;
    // A step of the old epoch still running is harmless (the purge re-checks
    // every key); its answer is dropped, so do not wait for it.
    s.sweeping = false;
    let parked = s.state.drain_parked();
    s.state = DispatchState::new(WINDOW_CAP);
    for p in parked {
        s.state.park(p);
    }
    s.loaded = false;
    s.loading = false;
    s.buffered.clear();
    let epoch = s.epoch;
    let actor = myself.clone();
    s.store.set_listener(
        s.shard,
        Some(Arc::new(move |event| {
            let _ = actor.cast(DispatchMsg::Applied { epoch, event });
        })),
    );
    start_load(myself, s, true);
}

/// Reads the next page of the time index (and every lease when `first`) off
/// the actor's thread.
fn start_load(myself: &ActorRef<DispatchMsg>, s: &mut DispatcherState, first: bool) {
    s.loading = true;
    s.state.begin_load();
    let store = s.store.clone();
    let shard = s.shard;
    let epoch = s.epoch;
    let after = if first { None } else { s.state.horizon() };
    let room = s.state.room();
    let until_ms = now_ms() + WINDOW_MS;
    let myself = myself.clone();
    // Ends after one read; the actor drops the result if it moved on.
    tokio::task::spawn_blocking(move || {
        let read = || -> Result<_, sundial_raft::store::StoreError> {
            let timers = store.scan_timers(shard, after, until_ms, room)?;
            let (leases, schedules, queues) = if first {
                (
                    Some(store.scan_leases(shard)?),
                    Some(store.scan_fires(shard)?),
                    Some(store.scan_queue_configs(shard)?),
                )
            } else {
                (None, None, None)
            };
            Ok((timers, leases, schedules, queues))
        };
        let msg = match read() {
            Ok((timers, leases, schedules, queues)) => DispatchMsg::Loaded {
                queues,
                epoch,
                full: timers.len() >= room,
                timers,
                until_ms,
                leases,
                schedules,
            },
            Err(e) => DispatchMsg::LoadFailed {
                epoch,
                error: e.to_string(),
            },
        };
        let _ = myself.cast(msg);
    });
}

fn on_event(myself: &ActorRef<DispatchMsg>, s: &mut DispatcherState, event: ShardEvent) {
    match event {
        ShardEvent::Changed {
            jobs,
            schedules,
            queues,
        } => {
            s.state.on_changed(jobs);
            s.state.on_schedules(schedules);
            for (namespace, queue, config) in queues {
                s.state
                    .set_limit((namespace.clone(), queue.clone()), config.concurrency);
                s.state.set_paused(namespace, queue, config.paused);
            }
        }
        ShardEvent::Reset => restart_epoch(myself, s),
    }
}

fn on_lease(
    myself: &ActorRef<DispatchMsg>,
    s: &mut DispatcherState,
    request: LeaseRequest,
    reply: LeaseReply,
) {
    if s.leading.is_none() {
        let _ = reply.send(Err(ExecError::NotLeader {
            shard: s.shard,
            leader: s.leader,
        }));
        return;
    }
    let now = now_ms();
    let wait = request.wait_ms.min(MAX_WAIT_MS) as i64;
    let parked = Parked {
        want: request.want,
        max: request.max,
        until_ms: now + wait,
        reply: (request.holder, reply),
    };
    if !s.loaded {
        s.state.park(parked);
        return;
    }
    s.state.advance(now);
    if parked.max == 0 {
        // Only waiting for work: answered (with no jobs) once some is ready.
        if s.state.has_ready(&parked.want) {
            let _ = parked.reply.1.send(Ok(Vec::new()));
        } else {
            s.state.park(parked);
        }
        return;
    }
    let picked = s.state.pick(&parked.want, parked.max);
    if picked.is_empty() {
        s.state.park(parked);
    } else {
        let (holder, reply) = parked.reply;
        write_lease(myself, s.shard, picked, holder, reply);
    }
}

/// Leases `picked` through Raft and answers the requester.
fn write_lease(
    myself: &ActorRef<DispatchMsg>,
    shard: ShardId,
    picked: Vec<JobId>,
    holder: LeaseHolder,
    reply: LeaseReply,
) {
    let myself = myself.clone();
    // Detached on purpose: it owns the reply port and ends with the write.
    tokio::spawn(async move {
        let op = Op::Lease {
            ids: picked.clone(),
            holder,
            at_ms: now_ms(),
        };
        let answer: Result<Vec<Job>, ExecError> = match ShardHandle::new(shard).write(op, WRITE_TIMEOUT).await
        {
            Ok(OpResult::Leased(jobs)) => Ok(jobs),
            Ok(other) => Err(ExecError::Internal(format!("unexpected lease result {other:?}"))),
            Err(e) => Err(e),
        };
        if let Err(ractor::MessagingErr::SendErr(Ok(jobs))) = reply.send(answer) {
            // The requester went away before the answer: nobody runs these
            // jobs, so give them back now rather than at lease expiry.
            tracing::debug!(shard, jobs = jobs.len(), "lease requester went away, releasing");
            for job in jobs {
                let Some(token) = job.lease.as_ref().map(|l| l.token) else {
                    continue;
                };
                let op = Op::Release {
                    id: job.id,
                    token,
                    at_ms: now_ms(),
                };
                if let Err(e) = ShardHandle::new(shard).write(op, WRITE_TIMEOUT).await {
                    tracing::debug!(shard, id = %job.id, error = %e, "release not written; the lease will expire");
                }
            }
        }
        let _ = myself.cast(DispatchMsg::LeaseWritten { picked });
    });
}

/// Does whatever is due: fire timers, serve parked requests, answer timed-out
/// ones, expire leases, refill the window; then schedules the next tick.
fn process(myself: &ActorRef<DispatchMsg>, s: &mut DispatcherState) {
    if s.leading.is_none() || !s.loaded {
        return;
    }
    let now = now_ms();
    s.state.advance(now);
    if let Some(term) = s.leading {
        for request in s.state.quota_reports(now) {
            report_quota(myself, s, term, request);
        }
    }
    for (parked, picked) in s.state.serve_parked() {
        let (holder, reply) = parked.reply;
        if picked.is_empty() {
            let _ = reply.send(Ok(Vec::new()));
        } else {
            write_lease(myself, s.shard, picked, holder, reply);
        }
    }
    for parked in s.state.timed_out(now) {
        let _ = parked.reply.1.send(Ok(Vec::new()));
    }
    for (id, token) in s.state.expired(now) {
        let myself = myself.clone();
        let shard = s.shard;
        // Ends with the write; a failure is retried on a later tick.
        tokio::spawn(async move {
            let op = Op::Expire {
                id,
                token,
                at_ms: now_ms(),
            };
            if let Err(e) = ShardHandle::new(shard).write(op, WRITE_TIMEOUT).await {
                tracing::debug!(shard, %id, error = %e, "lease expiry not written yet");
                let _ = myself.cast(DispatchMsg::ExpiryFailed(id));
            }
        });
    }
    for (namespace, id) in s.state.due_schedules(now) {
        fire_schedule(myself, s.shard, s.store.clone(), namespace, id);
    }
    if !s.sweeping && s.sweep_at <= now {
        sweep_keys(myself, s, now);
    }
    let refill_at = s.state.horizon().map(|h| h.0.saturating_sub(WINDOW_MS / 2));
    if !s.loading && s.state.room() > 0 && refill_at.is_some_and(|at| at <= now) {
        start_load(myself, s, false);
    }
    let refill_pending = !s.loading && s.state.room() > 0;
    let sweep = (!s.sweeping).then_some(s.sweep_at);
    let next = [s.state.next_wakeup(), refill_at.filter(|_| refill_pending), sweep]
        .into_iter()
        .flatten()
        .min();
    if let Some(next) = next {
        if s.armed.is_none_or(|armed| next < armed) {
            s.armed = Some(next);
            let delay = Duration::from_millis(next.saturating_sub(now).max(0) as u64);
            myself.send_after(delay, || DispatchMsg::Tick);
        }
    }
}

/// One step of the idempotency-key sweep: reads a page of the index off the
/// actor's thread and deletes the expired keys in it through Raft (the state
/// machine re-checks each one, so a key used again meanwhile stays).
fn sweep_keys(myself: &ActorRef<DispatchMsg>, s: &mut DispatcherState, now: i64) {
    s.sweeping = true;
    let myself = myself.clone();
    let store = s.store.clone();
    let (shard, epoch, from) = (s.shard, s.epoch, s.sweep_from.clone());
    // Ends with the step; the actor drops the result of an older epoch.
    tokio::spawn(async move {
        let read = tokio::task::spawn_blocking(move || {
            store.scan_expired_keys(shard, from.as_deref(), now, KEY_SWEEP_PAGE)
        })
        .await;
        let next = match read {
            Ok(Ok((expired, next))) => {
                if !expired.is_empty() {
                    let op = Op::PurgeKeys {
                        keys: expired,
                        at_ms: now,
                    };
                    match ShardHandle::new(shard).write(op, WRITE_TIMEOUT).await {
                        Ok(OpResult::Purged { removed }) => {
                            tracing::debug!(shard, removed, "expired idempotency keys removed")
                        }
                        Ok(other) => tracing::warn!(shard, ?other, "unexpected answer to a key purge"),
                        Err(e) => tracing::debug!(shard, error = %e, "key purge not written; next sweep"),
                    }
                }
                next
            }
            Ok(Err(e)) => {
                tracing::warn!(shard, error = %e, "cannot read the idempotency index; next sweep");
                None
            }
            Err(e) => {
                tracing::warn!(shard, error = %e, "idempotency sweep task failed; next sweep");
                None
            }
        };
        let _ = myself.cast(DispatchMsg::KeysSwept { epoch, next });
    });
}

/// Writes a quota report to the queue's home shard (wherever it is led) and
/// hands the answer back to the actor.
fn report_quota(myself: &ActorRef<DispatchMsg>, s: &DispatcherState, term: u64, request: QuotaRequest) {
    let myself = myself.clone();
    let gateway = s.gateway.clone();
    let epoch = s.epoch;
    let shard = s.shard;
    let (namespace, queue) = request.queue.clone();
    let home = quota::home_shard(&namespace, &queue, gateway.layout().shard_count);
    // Ends with the write; the actor drops an answer from an older epoch.
    tokio::spawn(async move {
        let op = Op::Quota {
            namespace,
            queue,
            report: QuotaReport {
                shard,
                epoch: term,
                keep: request.keep,
                want: request.want,
                used: request.used,
            },
        };
        let answer = match gateway.write(home, op, Instant::now() + WRITE_TIMEOUT).await {
            Ok(OpResult::Quota(answer)) => Some(answer),
            Ok(other) => {
                tracing::warn!(shard, home, ?other, "unexpected answer to a quota report");
                None
            }
            Err(e) => {
                tracing::debug!(shard, home, error = %e, "quota report not written yet");
                None
            }
        };
        let _ = myself.cast(DispatchMsg::QuotaAnswered {
            epoch,
            queue: request.queue,
            answer,
        });
    });
}

/// Fires one due schedule through Raft: reads it, works out its firings
/// under the catch-up policy, prepares one job per firing, and proposes
/// `Op::Fire`. The state machine applies it only if the schedule still
/// expects that firing, so a duplicate proposal creates nothing.
fn fire_schedule(
    myself: &ActorRef<DispatchMsg>,
    shard: ShardId,
    store: Arc<NodeStore>,
    namespace: String,
    id: String,
) {
    let myself = myself.clone();
    // Ends with the write; the actor hears back through the applied change,
    // or through `FireDone` when nothing changed.
    tokio::spawn(async move {
        let now = now_ms();
        let outcome = async {
            let Some(schedule) = store
                .get_schedule(shard, &namespace, &id)
                .map_err(|e| e.to_string())?
            else {
                return Ok(false);
            };
            let Some(firing) = schedule.due(now).map_err(|e| e.to_string())? else {
                return Ok(false);
            };
            let jobs = firing
                .fire
                .iter()
                .map(|nominal| schedule_job(&schedule, shard, *nominal, now))
                .collect();
            let op = Op::Fire {
                namespace: namespace.clone(),
                id: id.clone(),
                expected_ms: firing.expected_ms,
                jobs,
                dropped: firing.dropped,
                next_ms: firing.next_ms,
                at_ms: now,
            };
            match ShardHandle::new(shard).write(op, WRITE_TIMEOUT).await {
                Ok(OpResult::Fired { .. }) => Ok(true),
                Ok(_) => Ok(false),
                Err(e) => Err(e.to_string()),
            }
        }
        .await;
        let changed = match outcome {
            Ok(changed) => changed,
            Err(error) => {
                tracing::warn!(shard, %namespace, schedule = %id, %error, "schedule firing not written yet");
                false
            }
        };
        if !changed {
            // Look again a little later, not in a tight loop.
            myself.send_after(Duration::from_millis(500), move || DispatchMsg::FireDone {
                namespace,
                id,
            });
        }
    });
}

/// The job a schedule's firing at `nominal_ms` creates.
fn schedule_job(schedule: &Schedule, shard: ShardId, nominal_ms: i64, now_ms: i64) -> Job {
    let mut what = schedule.template.clone();
    what.headers
        .insert("sundial-schedule".into(), schedule.id.clone());
    what.headers
        .insert("sundial-fire-ms".into(), nominal_ms.to_string());
    let id = JobId::new(shard, now_ms.max(0) as u64, rand::random());
    let run_at_ms = schedule.job_run_at(nominal_ms);
    let mut job = Job::new(id, schedule.namespace.clone(), what, run_at_ms, now_ms);
    job.schedule_id = Some(schedule.id.clone());
    job
}

/// How callers reach a shard's dispatcher on this node.
#[derive(Clone, Copy, Debug)]
pub struct DispatchHandle {
    shard: ShardId,
}

impl DispatchHandle {
    pub fn new(shard: ShardId) -> DispatchHandle {
        DispatchHandle { shard }
    }

    /// Leases up to `request.max` ready jobs, waiting up to `request.wait_ms`
    /// for some; answers with none when the wait ends empty.
    pub async fn lease(&self, request: LeaseRequest, timeout: Duration) -> Result<Vec<Job>, ExecError> {
        let unavailable = |reason: String| ExecError::Unavailable {
            shard: self.shard,
            reason,
        };
        let actor: ActorRef<DispatchMsg> = ractor::registry::where_is(actor_name(self.shard))
            .map(ActorRef::from)
            .ok_or_else(|| unavailable("dispatcher is restarting".into()))?;
        match actor
            .call(|reply| DispatchMsg::Lease(request, reply), Some(timeout))
            .await
        {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(unavailable(format!("no answer within {timeout:?}"))),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => {
                Err(unavailable("dispatcher stopped before answering".into()))
            }
        }
    }
}
