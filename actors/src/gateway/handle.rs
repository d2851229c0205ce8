//! `GatewayHandle`: what the gRPC services call. It routes each request to the
//! leader of its shard — executing it here when this node leads, forwarding it
//! through `ractor_cluster` otherwise — and retries leader changes and
//! unavailable shards until the caller's deadline, so a client never sees an
//! election.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ractor::ActorRef;
use sundial_raft::codec;
use sundial_raft::network::RaftRegistry;
use sundial_raft::schedule::Schedule;
use sundial_raft::store::{JobFilter, NodeStore};
use sundial_raft::types::{Op, OpResult, QueueConfig, QueuePatch};
use sundial_raft::{Job, JobId, JobState, NodeId, ShardId};

use super::messages::{Forwarded, GatewayMsg, GatewayReply, GatewayRequest, WorkerNotice};
use crate::dispatch::{DispatchHandle, LeaseRequest};
use crate::error::{Error, ExecError};
use crate::layout::ClusterLayout;
use crate::shard::ShardHandle;

/// How long new submits keep going to the same locally led shard.
const SUBMIT_AFFINITY_WINDOW_MS: u128 = 50;

/// The process group a node's gateway joins; peers find it there.
pub fn gateway_group(node: NodeId) -> String {
    format!("sundial.gateway.{node}")
}

/// Cheap to clone; shared by every request.
#[derive(Clone)]
pub struct GatewayHandle {
    inner: Arc<Inner>,
}

struct Inner {
    layout: ClusterLayout,
    store: Arc<NodeStore>,
    registry: Arc<RaftRegistry>,
    sessions: Sessions,
}

/// This node's worker sessions, by id, each with the channel its notices go to.
struct Sessions {
    next: AtomicU64,
    open: Mutex<HashMap<u64, tokio::sync::mpsc::UnboundedSender<WorkerNotice>>>,
}

/// A worker session's registration; dropping it closes the session's notices.
pub struct SessionGuard {
    pub id: u64,
    handle: GatewayHandle,
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut open = self
            .handle
            .inner
            .sessions
            .open
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        open.remove(&self.id);
    }
}

/// A shard as this node sees it.
#[derive(Clone, Debug)]
pub struct ShardView {
    pub shard: ShardId,
    pub leader: Option<NodeId>,
    pub term: u64,
    pub members: Vec<NodeId>,
    pub last_applied: u64,
}

/// One page of a cluster-wide list.
#[derive(Clone, Debug, Default)]
pub struct ListPage {
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` when the listing is complete.
    pub next: Option<JobId>,
}

impl GatewayHandle {
    pub fn new(layout: ClusterLayout, store: Arc<NodeStore>, registry: Arc<RaftRegistry>) -> GatewayHandle {
        GatewayHandle {
            inner: Arc::new(Inner {
                layout,
                store,
                registry,
                sessions: Sessions {
                    // Random high bits: a restarted node never reuses the ids
                    // of leases its earlier life handed out.
                    next: AtomicU64::new(rand::random::<u64>() & !0xffff_ffff),
                    open: Mutex::default(),
                },
            }),
        }
    }

    pub fn layout(&self) -> &ClusterLayout {
        &self.inner.layout
    }

    /// Stores `job` durably on its shard (quorum-committed and fsynced) and
    /// returns the id it is stored under, and whether this call created it.
    /// Retries are safe: the job id makes a repeated submit a no-op. A job
    /// whose idempotency key is retained returns the first job's id.
    pub async fn submit(&self, job: Job, deadline: Instant) -> Result<(JobId, bool), Error> {
        let shard = job.id.shard();
        let request = GatewayRequest::Write {
            shard,
            op: Op::Submit(Box::new(job)),
        };
        match self.execute(request, deadline).await? {
            GatewayReply::Written(OpResult::Submitted { created, id }) => Ok((id, created)),
            other => Err(unexpected(other)),
        }
    }

    /// The shard every job with this idempotency key goes to, so one shard
    /// sees all of a key's submits.
    pub fn shard_for_idempotency_key(&self, namespace: &str, key: &str) -> ShardId {
        let mut bytes = namespace.as_bytes().to_vec();
        bytes.push(0);
        bytes.extend_from_slice(key.as_bytes());
        sundial_raft::job::shard_for_key(&bytes, self.inner.layout.shard_count)
    }

    /// Cancels a job that has not finished.
    pub async fn cancel(&self, id: JobId, at_ms: i64, deadline: Instant) -> Result<Job, Error> {
        let request = GatewayRequest::Write {
            shard: id.shard(),
            op: Op::Cancel { id, at_ms },
        };
        match self.execute(request, deadline).await? {
            GatewayReply::Written(OpResult::Cancelled(job)) => {
                if let Some(lease) = &job.lease {
                    // The job was leased: tell its worker, best effort (the
                    // worker also learns it from a refused heartbeat).
                    let notice = GatewayRequest::Notice {
                        session: lease.session,
                        notice: WorkerNotice::Cancelled(job.id),
                    };
                    let this = self.clone();
                    let node = lease.node;
                    // Ends within its short timeout.
                    tokio::spawn(async move { this.notify(node, notice).await });
                }
                Ok(*job)
            }
            GatewayReply::Written(OpResult::NotFound) => Err(Error::JobNotFound(id.to_string())),
            GatewayReply::Written(OpResult::AlreadyFinished(state)) => Err(Error::AlreadyFinished {
                id: id.to_string(),
                state: state_name(state),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Leases up to `request.max` ready jobs of `shard` to a worker session,
    /// waiting up to `request.wait_ms` on the leader for some to come.
    pub async fn lease(
        &self,
        shard: ShardId,
        request: LeaseRequest,
        deadline: Instant,
    ) -> Result<Vec<Job>, Error> {
        match self
            .execute(GatewayRequest::Lease { shard, request }, deadline)
            .await?
        {
            GatewayReply::Leased(jobs) => Ok(jobs),
            other => Err(unexpected(other)),
        }
    }

    /// Writes a heartbeat, completion, failure or release of one attempt (`op` names
    /// the job and its fencing token) and returns the job as stored after it.
    pub async fn attempt(&self, op: Op, deadline: Instant) -> Result<Job, Error> {
        let (id, token) = match &op {
            Op::Heartbeat { id, token, .. }
            | Op::Complete { id, token, .. }
            | Op::Fail { id, token, .. }
            | Op::Release { id, token, .. } => (*id, *token),
            other => return Err(Error::Internal(format!("not an attempt operation: {other:?}"))),
        };
        let request = GatewayRequest::Write {
            shard: id.shard(),
            op,
        };
        match self.execute(request, deadline).await? {
            GatewayReply::Written(OpResult::Updated(job)) => Ok(*job),
            GatewayReply::Written(OpResult::NotFound) => Err(Error::JobNotFound(id.to_string())),
            GatewayReply::Written(OpResult::Stale { state, attempts }) => Err(Error::StaleLease {
                id: id.to_string(),
                token,
                state: state_name(state),
                attempts,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Replays a dead job: waiting again now, with a fresh retry budget.
    pub async fn retry(&self, id: JobId, at_ms: i64, deadline: Instant) -> Result<Job, Error> {
        let request = GatewayRequest::Write {
            shard: id.shard(),
            op: Op::Retry { id, at_ms },
        };
        match self.execute(request, deadline).await? {
            GatewayReply::Written(OpResult::Updated(job)) => Ok(*job),
            GatewayReply::Written(OpResult::NotFound) => Err(Error::JobNotFound(id.to_string())),
            GatewayReply::Written(OpResult::NotDead(state)) => Err(Error::NotDead {
                id: id.to_string(),
                state: state_name(state),
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Changes a queue's settings on every shard. Succeeds only when every
    /// shard has the change; a failure leaves some shards changed, and
    /// repeating the call finishes the job.
    pub async fn set_queue(
        &self,
        namespace: &str,
        queue: &str,
        patch: QueuePatch,
        at_ms: i64,
        deadline: Instant,
    ) -> Result<(), Error> {
        let writes = (0..self.inner.layout.shard_count).map(|shard| {
            let request = GatewayRequest::Write {
                shard,
                op: Op::SetQueue {
                    namespace: namespace.to_string(),
                    queue: queue.to_string(),
                    patch,
                    at_ms,
                },
            };
            self.execute(request, deadline)
        });
        for outcome in futures::future::join_all(writes).await {
            match outcome? {
                GatewayReply::Written(OpResult::Queue(_)) => {}
                other => return Err(unexpected(other)),
            }
        }
        Ok(())
    }

    /// Writes one op to `shard`'s leader and returns its result.
    pub async fn write(&self, shard: ShardId, op: Op, deadline: Instant) -> Result<OpResult, Error> {
        match self
            .execute(GatewayRequest::Write { shard, op }, deadline)
            .await?
        {
            GatewayReply::Written(result) => Ok(result),
            other => Err(unexpected(other)),
        }
    }

    /// A queue's job counts by state (indexed by state code), summed over
    /// the shards, and whether it is paused.
    pub async fn queue_stats(
        &self,
        namespace: &str,
        queue: &str,
        deadline: Instant,
    ) -> Result<([u64; 8], QueueConfig), Error> {
        let reads = (0..self.inner.layout.shard_count).map(|shard| {
            self.execute(
                GatewayRequest::QueueStats {
                    shard,
                    namespace: namespace.to_string(),
                    queue: queue.to_string(),
                },
                deadline,
            )
        });
        let mut total = [0u64; 8];
        let mut config = QueueConfig::default();
        for outcome in futures::future::join_all(reads).await {
            match outcome? {
                GatewayReply::QueueStats(counts, shard_config) => {
                    for (t, c) in total.iter_mut().zip(counts) {
                        *t += c;
                    }
                    // Shown as the latest setting any shard has.
                    if shard_config.updated_at_ms >= config.updated_at_ms {
                        config = shard_config;
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok((total, config))
    }

    /// The shard a schedule lives on.
    pub fn schedule_shard(&self, namespace: &str, id: &str) -> ShardId {
        Schedule::shard_of(namespace, id, self.inner.layout.shard_count)
    }

    /// Writes a schedule operation and returns the schedule after it, and
    /// whether a create created it (false: the id was taken; the existing
    /// schedule is returned unchanged).
    pub async fn schedule_op(
        &self,
        namespace: &str,
        id: &str,
        op: Op,
        deadline: Instant,
    ) -> Result<(Schedule, bool), Error> {
        let request = GatewayRequest::Write {
            shard: self.schedule_shard(namespace, id),
            op,
        };
        match self.execute(request, deadline).await? {
            GatewayReply::Written(OpResult::Schedule(s)) => Ok((*s, true)),
            GatewayReply::Written(OpResult::ScheduleExists(s)) => Ok((*s, false)),
            GatewayReply::Written(OpResult::NotFound) => Err(Error::ScheduleNotFound(id.to_string())),
            other => Err(unexpected(other)),
        }
    }

    pub async fn get_schedule(
        &self,
        namespace: &str,
        id: &str,
        deadline: Instant,
    ) -> Result<Schedule, Error> {
        let request = GatewayRequest::GetSchedule {
            shard: self.schedule_shard(namespace, id),
            namespace: namespace.to_string(),
            id: id.to_string(),
        };
        match self.execute(request, deadline).await? {
            GatewayReply::Schedule(Some(s)) => Ok(*s),
            GatewayReply::Schedule(None) => Err(Error::ScheduleNotFound(id.to_string())),
            other => Err(unexpected(other)),
        }
    }

    /// Lists a namespace's schedules shard by shard, at most `limit`, after
    /// the cursor `(shard, id)`; returns the page and the next cursor.
    pub async fn list_schedules(
        &self,
        namespace: &str,
        after: Option<(ShardId, String)>,
        limit: u32,
        deadline: Instant,
    ) -> Result<(Vec<Schedule>, Option<(ShardId, String)>), Error> {
        let first = after.as_ref().map(|(s, _)| *s).unwrap_or(0);
        let mut out: Vec<Schedule> = Vec::new();
        let mut cursor = after;
        for shard in first..self.inner.layout.shard_count {
            let remaining = limit.saturating_sub(out.len() as u32);
            let request = GatewayRequest::ListSchedules {
                shard,
                namespace: namespace.to_string(),
                after: cursor.take().filter(|(s, _)| *s == shard).map(|(_, id)| id),
                limit: remaining,
            };
            match self.execute(request, deadline).await? {
                GatewayReply::Schedules(page, more) => {
                    out.extend(page);
                    if more || out.len() as u32 >= limit {
                        let next = out.last().map(|s| (shard, s.id.clone()));
                        return Ok((out, next));
                    }
                }
                other => return Err(unexpected(other)),
            }
        }
        Ok((out, None))
    }

    /// Registers a worker session on this node; notices for it arrive on the
    /// returned channel until the guard is dropped.
    pub fn open_session(&self) -> (SessionGuard, tokio::sync::mpsc::UnboundedReceiver<WorkerNotice>) {
        let id = self.inner.sessions.next.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let mut open = self.inner.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
        open.insert(id, tx);
        (
            SessionGuard {
                id,
                handle: self.clone(),
            },
            rx,
        )
    }

    /// Delivers a notice to a session on `node`, best effort.
    async fn notify(&self, node: NodeId, notice: GatewayRequest) {
        let timeout = Duration::from_secs(2);
        let result = if node == self.inner.layout.node_id {
            self.execute_local(notice, timeout).await
        } else {
            self.forward(node, &notice, timeout).await
        };
        if let Err(e) = result {
            tracing::debug!(node, error = %e, "worker notice not delivered");
        }
    }

    /// Reads a job: linearizably from its leader, or from this node's replica
    /// when `local` is set and this node hosts the shard.
    pub async fn get(&self, id: JobId, local: bool, deadline: Instant) -> Result<Job, Error> {
        let found = if local && self.inner.registry.get(id.shard()).is_some() {
            self.inner
                .store
                .get_job(&id)
                .map_err(|e| Error::Internal(e.to_string()))?
        } else {
            match self.execute(GatewayRequest::Get { id }, deadline).await? {
                GatewayReply::Job(job) => job.map(|j| *j),
                other => return Err(unexpected(other)),
            }
        };
        found.ok_or_else(|| Error::JobNotFound(id.to_string()))
    }

    /// Lists jobs across shards in id order (shard by shard), at most `limit`.
    pub async fn list(
        &self,
        filter: JobFilter,
        after: Option<JobId>,
        limit: u32,
        local: bool,
        deadline: Instant,
    ) -> Result<ListPage, Error> {
        let first_shard = after.map(|id| id.shard()).unwrap_or(0);
        let mut page = ListPage::default();
        let mut cursor = after;
        for shard in first_shard..self.inner.layout.shard_count {
            let remaining = limit.saturating_sub(page.jobs.len() as u32);
            if remaining == 0 {
                page.next = page.jobs.last().map(|j| j.id);
                return Ok(page);
            }
            let after_in_shard = cursor.filter(|id| id.shard() == shard);
            let part = if local && self.inner.registry.get(shard).is_some() {
                self.inner
                    .store
                    .list_jobs(shard, &filter, after_in_shard.as_ref(), remaining as usize)
                    .map_err(|e| Error::Internal(e.to_string()))?
            } else {
                let request = GatewayRequest::List {
                    shard,
                    filter: filter.clone(),
                    after: after_in_shard,
                    limit: remaining,
                };
                match self.execute(request, deadline).await? {
                    GatewayReply::Page(part) => part,
                    other => return Err(unexpected(other)),
                }
            };
            page.jobs.extend(part.jobs);
            if part.more {
                page.next = page.jobs.last().map(|j| j.id);
                return Ok(page);
            }
            cursor = None;
        }
        Ok(page)
    }

    /// The shard for a new job. New jobs may go to any shard, so prefer one
    /// this node leads: the submit then needs no forwarding hop, and with
    /// leaders spread over the nodes and clients spread over the nodes, jobs
    /// still spread over the shards. Falls back to any shard.
    pub fn pick_shard(&self) -> ShardId {
        let me = self.inner.layout.node_id;
        let led: Vec<ShardId> = self
            .inner
            .registry
            .all()
            .into_iter()
            .filter(|(_, raft)| raft.metrics().borrow().current_leader == Some(me))
            .map(|(shard, _)| shard)
            .collect();
        if led.is_empty() {
            return rand::random::<u32>() % self.inner.layout.shard_count.max(1);
        }
        // All submits arriving in the same short window go to the same shard,
        // so they share Raft entries (bigger batches, fewer fsyncs and
        // messages); the window rotates over the led shards, which spreads
        // jobs over them over time.
        let window = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() / SUBMIT_AFFINITY_WINDOW_MS)
            .unwrap_or(0);
        led[(window % led.len() as u128) as usize]
    }

    /// Every local shard as this node sees it.
    pub fn shards(&self) -> Vec<ShardView> {
        self.inner
            .registry
            .all()
            .into_iter()
            .map(|(shard, raft)| {
                let m = raft.metrics().borrow().clone();
                ShardView {
                    shard,
                    leader: m.current_leader,
                    term: m.current_term,
                    members: m.membership_config.membership().voter_ids().collect(),
                    last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
                }
            })
            .collect()
    }

    /// A digest of each local replica's state (see
    /// [`NodeStore::shard_digest`]), read off the disk on a blocking thread.
    pub async fn shard_digests(&self) -> Result<Vec<(ShardId, sundial_raft::store::ShardDigest)>, Error> {
        let store = self.inner.store.clone();
        let shards: Vec<ShardId> = self.inner.registry.all().into_iter().map(|(s, _)| s).collect();
        tokio::task::spawn_blocking(move || {
            shards
                .into_iter()
                .map(|shard| store.shard_digest(shard).map(|d| (shard, d)))
                .collect::<Result<Vec<_>, _>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("digest task: {e}")))?
        .map_err(|e| Error::Internal(format!("digest: {e}")))
    }

    /// True when this node has a live actor-plane session with `node`.
    pub fn is_connected(&self, node: NodeId) -> bool {
        node == self.inner.layout.node_id || !ractor::pg::get_members(&gateway_group(node)).is_empty()
    }

    /// Makes a local shard actor panic (fault injection for tests and chaos).
    pub fn inject_shard_panic(&self, shard: ShardId, reason: &str) -> Result<(), ExecError> {
        ShardHandle::new(shard).inject_panic(reason)
    }

    /// Runs `request` on its shard's leader, retrying until `deadline`.
    async fn execute(&self, request: GatewayRequest, deadline: Instant) -> Result<GatewayReply, Error> {
        let shard = request.shard();
        let mut backoff = Duration::from_millis(2);
        let mut hint: Option<NodeId> = None;
        let mut last = ExecError::Unavailable {
            shard,
            reason: "no attempt made".into(),
        };
        let mut member_turn = 0usize;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::DeadlineExceeded {
                    shard,
                    last: last.to_string(),
                });
            }
            let remaining = deadline - now;
            let target = match hint.take().or_else(|| self.leader_of(shard)) {
                Some(target) => target,
                None if self.inner.registry.get(shard).is_some() => {
                    // An election is under way: wait for its outcome.
                    self.wait_for_leader(shard, remaining.min(Duration::from_millis(500)))
                        .await;
                    continue;
                }
                None => {
                    // Not hosted here and no hint: ask the members in turn.
                    let members = self.inner.layout.members(shard);
                    member_turn += 1;
                    match members.get(member_turn % members.len().max(1)) {
                        Some(m) => *m,
                        None => return Err(Error::Internal(format!("shard {shard} has no members"))),
                    }
                }
            };
            let attempt = if target == self.inner.layout.node_id {
                self.execute_local(request.clone(), remaining).await
            } else {
                // A forward to a leader that stops answering (paused, cut
                // off) would otherwise use the whole deadline: give up on it
                // as soon as this node sees another leader, and retry there.
                tokio::select! {
                    result = self.forward(target, &request, remaining) => result,
                    () = self.leader_moves_from(shard, target) => Err(ExecError::Unavailable {
                        shard,
                        reason: format!("leadership moved away from node {target}"),
                    }),
                }
            };
            match attempt {
                Ok(reply) => return Ok(reply),
                Err(ExecError::Internal(e)) => return Err(Error::Internal(e)),
                Err(e) => {
                    if let ExecError::NotLeader { leader: Some(l), .. } = &e {
                        if *l != target {
                            hint = Some(*l);
                        }
                    }
                    tracing::debug!(shard, error = %e, "request not served yet, retrying");
                    last = e;
                }
            }
            tokio::time::sleep(backoff.min(deadline.saturating_duration_since(Instant::now()))).await;
            backoff = (backoff * 2).min(Duration::from_millis(100));
        }
    }

    fn leader_of(&self, shard: ShardId) -> Option<NodeId> {
        let raft = self.inner.registry.get(shard)?;
        let leader = raft.metrics().borrow().current_leader;
        leader
    }

    /// Resolves once this node's replica of `shard` sees a leader other than
    /// `from` (never, if the shard is not hosted here).
    async fn leader_moves_from(&self, shard: ShardId, from: NodeId) {
        let Some(raft) = self.inner.registry.get(shard) else {
            return std::future::pending().await;
        };
        let mut metrics = raft.metrics();
        loop {
            let leader = metrics.borrow_and_update().current_leader;
            if leader.is_some() && leader != Some(from) {
                return;
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    }

    async fn wait_for_leader(&self, shard: ShardId, timeout: Duration) {
        let Some(raft) = self.inner.registry.get(shard) else {
            return;
        };
        let mut metrics = raft.metrics();
        let _ = tokio::time::timeout(timeout, async {
            while metrics.borrow_and_update().current_leader.is_none() {
                if metrics.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
    }

    /// Executes a request on this node, which must lead the shard.
    pub(crate) async fn execute_local(
        &self,
        request: GatewayRequest,
        timeout: Duration,
    ) -> Result<GatewayReply, ExecError> {
        let shard = request.shard();
        if let GatewayRequest::Notice { session, notice } = request {
            let open = self.inner.sessions.open.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = open.get(&session) {
                let _ = tx.send(notice);
            }
            return Ok(GatewayReply::Noted);
        }
        let Some(raft) = self.inner.registry.get(shard) else {
            return Err(ExecError::NotLeader { shard, leader: None });
        };
        match request {
            GatewayRequest::Notice { .. } => Ok(GatewayReply::Noted),
            GatewayRequest::QueueStats { namespace, queue, .. } => {
                ensure_linearizable(&raft, shard, timeout).await?;
                let store = &self.inner.store;
                let internal = |e: sundial_raft::store::StoreError| ExecError::Internal(e.to_string());
                let counts = store
                    .queue_counts(shard, &namespace, &queue, sundial_raft::job::now_ms())
                    .map_err(internal)?;
                let config = store.queue_config(shard, &namespace, &queue).map_err(internal)?;
                Ok(GatewayReply::QueueStats(counts, config))
            }
            GatewayRequest::GetSchedule { namespace, id, .. } => {
                ensure_linearizable(&raft, shard, timeout).await?;
                let found = self
                    .inner
                    .store
                    .get_schedule(shard, &namespace, &id)
                    .map_err(|e| ExecError::Internal(e.to_string()))?;
                Ok(GatewayReply::Schedule(found.map(Box::new)))
            }
            GatewayRequest::ListSchedules {
                namespace,
                after,
                limit,
                ..
            } => {
                ensure_linearizable(&raft, shard, timeout).await?;
                let (page, more) = self
                    .inner
                    .store
                    .list_schedules(shard, &namespace, after.as_deref(), limit as usize)
                    .map_err(|e| ExecError::Internal(e.to_string()))?;
                Ok(GatewayReply::Schedules(page, more))
            }
            GatewayRequest::Lease { request, .. } => {
                let jobs = DispatchHandle::new(shard).lease(request, timeout).await?;
                Ok(GatewayReply::Leased(jobs))
            }
            GatewayRequest::Write { op, .. } => {
                let result = ShardHandle::new(shard).write(op, timeout).await?;
                Ok(GatewayReply::Written(result))
            }
            GatewayRequest::Get { id } => {
                ensure_linearizable(&raft, shard, timeout).await?;
                let job = self
                    .inner
                    .store
                    .get_job(&id)
                    .map_err(|e| ExecError::Internal(e.to_string()))?;
                Ok(GatewayReply::Job(job.map(Box::new)))
            }
            GatewayRequest::List {
                filter, after, limit, ..
            } => {
                ensure_linearizable(&raft, shard, timeout).await?;
                let page = self
                    .inner
                    .store
                    .list_jobs(shard, &filter, after.as_ref(), limit as usize)
                    .map_err(|e| ExecError::Internal(e.to_string()))?;
                Ok(GatewayReply::Page(page))
            }
        }
    }

    async fn forward(
        &self,
        node: NodeId,
        request: &GatewayRequest,
        timeout: Duration,
    ) -> Result<GatewayReply, ExecError> {
        let shard = request.shard();
        let unavailable = |reason: String| ExecError::Unavailable { shard, reason };
        let Some(cell) = ractor::pg::get_members(&gateway_group(node)).into_iter().next() else {
            return Err(unavailable(format!("node {node} is not connected")));
        };
        let gateway: ActorRef<GatewayMsg> = cell.into();
        let message = codec::encode(&Forwarded {
            timeout_ms: timeout.as_millis() as u64,
            request: request.clone(),
        })
        .map_err(|e| ExecError::Internal(e.to_string()))?;
        let outcome = gateway
            .call(|reply| GatewayMsg::Forward(message, reply), Some(timeout))
            .await
            .map_err(|e| unavailable(format!("forward to node {node}: {e}")))?;
        match outcome {
            ractor::rpc::CallResult::Success(bytes) => {
                codec::decode::<Result<GatewayReply, ExecError>>(&bytes)
                    .map_err(|e| ExecError::Internal(format!("reply from node {node}: {e}")))?
            }
            ractor::rpc::CallResult::Timeout => Err(unavailable(format!(
                "node {node} did not answer within {timeout:?}"
            ))),
            ractor::rpc::CallResult::SenderError => {
                Err(unavailable(format!("node {node} dropped the request")))
            }
        }
    }
}

async fn ensure_linearizable(
    raft: &sundial_raft::Raft,
    shard: ShardId,
    timeout: Duration,
) -> Result<(), ExecError> {
    use openraft::error::{CheckIsLeaderError, RaftError};
    match tokio::time::timeout(timeout, raft.ensure_linearizable()).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)))) => Err(ExecError::NotLeader {
            shard,
            leader: f.leader_id,
        }),
        Ok(Err(e)) => Err(ExecError::Unavailable {
            shard,
            reason: e.to_string(),
        }),
        Err(_) => Err(ExecError::Unavailable {
            shard,
            reason: format!("leadership not confirmed within {timeout:?}"),
        }),
    }
}

/// A state's name as users see it.
pub fn state_name(state: JobState) -> String {
    format!("{state:?}").to_lowercase()
}

fn unexpected(reply: GatewayReply) -> Error {
    Error::Internal(format!("unexpected reply {reply:?}"))
}
