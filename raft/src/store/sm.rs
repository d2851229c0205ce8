//! One shard's state machine: jobs and their indexes in the `sm` column family.

use std::collections::HashMap;
use std::io::Cursor;
use std::path::PathBuf;
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use rocksdb::{Direction, IteratorMode, ReadOptions, WriteBatch, DB};
use serde::{Deserialize, Serialize};

use super::events::{JobSummary, Listeners, ScheduleSummary, ShardEvent, TimerInfo};
use super::{cf, WalSyncer};
use crate::codec;
use crate::job::{Job, JobId, JobState, Lease, ShardId};
use crate::keys::{
    fire_key, idempotency_key, job_key, lease_key, namespace_prefix, queue_config_key, queue_prefix,
    quota_key, schedule_key, shard_end, shard_start, sm_key, time_key, with_id, CF_SM, SM_APPLIED,
    SM_IDEMPOTENCY, SM_MEMBERSHIP,
};
use crate::quota::{QuotaAnswer, QuotaTable};
use crate::schedule::{Overlap, Schedule};
use crate::types::{
    Entry, LeaseHolder, LogId, Op, OpResult, QueueConfig, Response, Snapshot, SnapshotMeta, StorageError,
    StoredMembership, TypeConfig,
};

/// The state machine of one shard. Clones share the database; the applied
/// state is re-read from RocksDB when needed, so clones never disagree.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<DB>,
    syncer: WalSyncer,
    shard: ShardId,
    snapshot_dir: PathBuf,
    listeners: Arc<Listeners>,
}

/// What one `apply` call changed so far, newest state first: later ops of
/// the same call read it before RocksDB (their writes are still in the batch).
#[derive(Default)]
struct Pending {
    jobs: HashMap<JobId, Job>,
    /// By (namespace, id); `None` once deleted.
    schedules: HashMap<(String, String), Option<Schedule>>,
    /// Queue settings written, by (namespace, queue).
    queues: HashMap<(String, String), QueueConfig>,
    /// Quota tables written (home shard), by (namespace, queue).
    quotas: HashMap<(String, String), QuotaTable>,
    /// Idempotency index entries written: key → (job, retained until).
    keys: HashMap<Vec<u8>, (JobId, i64)>,
}

/// What a snapshot file holds: the meta and every `sm` key of the shard with
/// its shard prefix stripped.
#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

#[derive(Serialize, Deserialize)]
struct SnapshotData {
    pairs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// A lease index value: the token, then the job's queue (so a new leader
/// counts each queue's leases without reading the jobs).
fn lease_value(token: u32, info: &TimerInfo) -> Result<Vec<u8>, StorageError> {
    let mut value = token.to_be_bytes().to_vec();
    value.extend(codec::encode(info).map_err(sm_write_err)?);
    Ok(value)
}

fn sm_read_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::read_state_machine(AnyError::error(e)).into()
}

fn sm_write_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_state_machine(AnyError::error(e)).into()
}

fn snap_err(e: impl std::fmt::Display) -> StorageError {
    StorageIOError::write_snapshot(None, AnyError::error(e)).into()
}

impl StateMachine {
    pub(crate) fn open(
        db: Arc<DB>,
        syncer: WalSyncer,
        shard: ShardId,
        snapshot_dir: PathBuf,
        listeners: Arc<Listeners>,
    ) -> Result<StateMachine, super::StoreError> {
        std::fs::create_dir_all(&snapshot_dir).map_err(|source| super::StoreError::Io {
            path: snapshot_dir.clone(),
            source,
        })?;
        Ok(StateMachine {
            db,
            syncer,
            shard,
            snapshot_dir,
            listeners,
        })
    }

    pub fn shard(&self) -> ShardId {
        self.shard
    }

    fn snapshot_path(&self) -> PathBuf {
        self.snapshot_dir.join(format!("shard-{}.snap", self.shard))
    }

    fn read_applied(&self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let sm = cf(&self.db, CF_SM);
        let applied = match self
            .db
            .get_cf(sm, sm_key(self.shard, SM_APPLIED))
            .map_err(sm_read_err)?
        {
            Some(bytes) => codec::decode(&bytes).map_err(sm_read_err)?,
            None => None,
        };
        let membership = match self
            .db
            .get_cf(sm, sm_key(self.shard, SM_MEMBERSHIP))
            .map_err(sm_read_err)?
        {
            Some(bytes) => codec::decode(&bytes).map_err(sm_read_err)?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    fn load_job(&self, id: &JobId, pending: &Pending) -> Result<Option<Job>, StorageError> {
        if let Some(job) = pending.jobs.get(id) {
            return Ok(Some(job.clone()));
        }
        match self
            .db
            .get_cf(cf(&self.db, CF_SM), job_key(id))
            .map_err(sm_read_err)?
        {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(sm_read_err)?)),
            None => Ok(None),
        }
    }

    /// Writes a job and keeps its indexes in step with its state.
    fn put_job(&self, batch: &mut WriteBatch, old: Option<&Job>, job: &Job) -> Result<(), StorageError> {
        let sm = cf(&self.db, CF_SM);
        batch.put_cf(sm, job_key(&job.id), codec::encode(job).map_err(sm_write_err)?);
        if let Some(old) = old {
            if old.is_waiting() {
                batch.delete_cf(sm, time_key(old.run_at_ms, &old.id));
            }
            if let (JobState::Leased, Some(lease)) = (old.state, &old.lease) {
                batch.delete_cf(sm, lease_key(lease.deadline_ms, &old.id));
            }
        }
        if job.is_waiting() {
            let info = TimerInfo::of(job);
            batch.put_cf(
                sm,
                time_key(job.run_at_ms, &job.id),
                codec::encode(&info).map_err(sm_write_err)?,
            );
        }
        if let (JobState::Leased, Some(lease)) = (job.state, &job.lease) {
            batch.put_cf(
                sm,
                lease_key(lease.deadline_ms, &job.id),
                lease_value(lease.token, &TimerInfo::of(job))?,
            );
        }
        // The state code; a waiting job's due time after it, since whether
        // it is scheduled or ready depends on the time it is read at.
        let mut state = vec![job.state.code()];
        if job.is_waiting() {
            state.extend_from_slice(&job.run_at_ms.to_be_bytes());
        }
        batch.put_cf(
            sm,
            with_id(queue_prefix(self.shard, &job.namespace, &job.queue), &job.id),
            &state,
        );
        batch.put_cf(
            sm,
            with_id(namespace_prefix(self.shard, &job.namespace), &job.id),
            &state,
        );
        Ok(())
    }

    fn apply_op(
        &self,
        op: Op,
        batch: &mut WriteBatch,
        pending: &mut Pending,
    ) -> Result<OpResult, StorageError> {
        match op {
            Op::Submit(job) => {
                if self.load_job(&job.id, pending)?.is_some() {
                    return Ok(OpResult::Submitted {
                        created: false,
                        id: job.id,
                    });
                }
                if let Some(key) = &job.idempotency_key {
                    let index = idempotency_key(self.shard, &job.namespace, key);
                    if let Some(first) = self.retained_key(&index, job.created_at_ms, pending)? {
                        return Ok(OpResult::Submitted {
                            created: false,
                            id: first,
                        });
                    }
                    let mut value = job.id.as_bytes().to_vec();
                    value.extend_from_slice(&job.idempotency_until_ms.to_be_bytes());
                    batch.put_cf(cf(&self.db, CF_SM), &index, value);
                    pending.keys.insert(index, (job.id, job.idempotency_until_ms));
                }
                let id = job.id;
                self.put_job(batch, None, &job)?;
                pending.jobs.insert(job.id, *job);
                Ok(OpResult::Submitted { created: true, id })
            }
            Op::Cancel { id, at_ms } => {
                let Some(old) = self.load_job(&id, pending)? else {
                    return Ok(OpResult::NotFound);
                };
                if old.state == JobState::Cancelled {
                    return Ok(OpResult::Cancelled(Box::new(old)));
                }
                if old.state.is_terminal() {
                    return Ok(OpResult::AlreadyFinished(old.state));
                }
                let mut job = old.clone();
                job.state = JobState::Cancelled;
                job.updated_at_ms = at_ms;
                self.store(batch, pending, &old, job.clone())?;
                Ok(OpResult::Cancelled(Box::new(job)))
            }
            Op::Lease { ids, holder, at_ms } => {
                let mut leased = Vec::with_capacity(ids.len());
                for id in ids {
                    let Some(old) = self.load_job(&id, pending)? else {
                        continue;
                    };
                    if !old.is_waiting() || old.run_at_ms > at_ms {
                        continue;
                    }
                    let job = lease(&old, &holder, at_ms);
                    self.store(batch, pending, &old, job.clone())?;
                    leased.push(job);
                }
                Ok(OpResult::Leased(leased))
            }
            Op::Heartbeat { id, token, at_ms } => self.with_lease(id, token, batch, pending, |job| {
                if let Some(lease) = job.lease.as_mut() {
                    lease.deadline_ms = lease.deadline_ms.max(deadline(at_ms, job.timeout_ms));
                }
            }),
            Op::Complete {
                id,
                token,
                result,
                at_ms,
            } => {
                // The same completion applied again (the gateway retries a
                // write whose first answer was lost in a leader change): it
                // did complete the job, so it is answered as accepted.
                if let Some(old) = self.load_job(&id, pending)? {
                    if old.state == JobState::Succeeded
                        && old.attempts == token
                        && old.result.as_deref() == Some(result.as_slice())
                    {
                        return Ok(OpResult::Updated(Box::new(old)));
                    }
                }
                self.with_lease(id, token, batch, pending, |job| {
                    job.state = JobState::Succeeded;
                    job.result = Some(result);
                    job.updated_at_ms = at_ms;
                })
            }
            Op::Fail {
                id,
                token,
                error,
                retryable,
                at_ms,
            } => {
                // The same failure applied again (see Complete above).
                if let Some(old) = self.load_job(&id, pending)? {
                    let answered = match old.state {
                        JobState::Scheduled | JobState::Ready => old.lease.is_none(),
                        JobState::Dead => true,
                        _ => false,
                    };
                    if answered && old.attempts == token && old.last_error.as_deref() == Some(error.as_str())
                    {
                        return Ok(OpResult::Updated(Box::new(old)));
                    }
                }
                self.with_lease(id, token, batch, pending, |job| {
                    fail_attempt(job, error, retryable, at_ms)
                })
            }
            Op::Expire { id, token, at_ms } => {
                let Some(old) = self.load_job(&id, pending)? else {
                    return Ok(OpResult::NotFound);
                };
                let due = old.lease.as_ref().is_some_and(|l| l.deadline_ms <= at_ms);
                if !due {
                    return Ok(OpResult::Stale {
                        state: old.state,
                        attempts: old.attempts,
                    });
                }
                let timeout = old.timeout_ms;
                self.with_lease(id, token, batch, pending, |job| {
                    fail_attempt(
                        job,
                        format!("lease expired: no heartbeat for {timeout} ms"),
                        true,
                        at_ms,
                    )
                })
            }
            Op::PutSchedule { schedule, create } => {
                let old = self.load_schedule(&schedule.namespace, &schedule.id, pending)?;
                let old_slot = old.as_ref().and_then(Schedule::fire_slot);
                let stored = match (old, create) {
                    (Some(old), true) => return Ok(OpResult::ScheduleExists(Box::new(old))),
                    (None, false) => return Ok(OpResult::NotFound),
                    (None, true) => *schedule,
                    (Some(old), false) => Schedule {
                        paused: old.paused,
                        last_fire_ms: old.last_fire_ms,
                        last_job: old.last_job,
                        buffered: old.buffered.clone(),
                        fired: old.fired,
                        skipped: old.skipped,
                        created_at_ms: old.created_at_ms,
                        ..*schedule
                    },
                };
                self.store_schedule(batch, pending, old_slot, stored.clone())?;
                Ok(OpResult::Schedule(Box::new(stored)))
            }
            Op::PauseSchedule {
                namespace,
                id,
                paused,
                at_ms,
            } => {
                let Some(mut schedule) = self.load_schedule(&namespace, &id, pending)? else {
                    return Ok(OpResult::NotFound);
                };
                if schedule.paused != paused {
                    let old_slot = schedule.fire_slot();
                    schedule.paused = paused;
                    schedule.updated_at_ms = at_ms;
                    if !paused {
                        // Resumed: what fell due while paused is skipped.
                        let anchor = schedule.anchor_ms();
                        schedule.next_fire_ms = schedule.rule.next_after(at_ms, anchor).unwrap_or(None);
                    }
                    self.store_schedule(batch, pending, old_slot, schedule.clone())?;
                }
                Ok(OpResult::Schedule(Box::new(schedule)))
            }
            Op::DeleteSchedule { namespace, id } => {
                let Some(schedule) = self.load_schedule(&namespace, &id, pending)? else {
                    return Ok(OpResult::NotFound);
                };
                let sm = cf(&self.db, CF_SM);
                batch.delete_cf(sm, schedule_key(self.shard, &namespace, &id));
                if let Some(next) = schedule.fire_slot() {
                    batch.delete_cf(sm, fire_key(self.shard, next, &namespace, &id));
                }
                pending.schedules.insert((namespace, id), None);
                Ok(OpResult::Schedule(Box::new(schedule)))
            }
            Op::SetQueue {
                namespace,
                queue,
                patch,
                at_ms,
            } => {
                let config = self
                    .load_queue_config(&namespace, &queue, pending)?
                    .patched(patch, at_ms);
                batch.put_cf(
                    cf(&self.db, CF_SM),
                    queue_config_key(self.shard, &namespace, &queue),
                    codec::encode(&config).map_err(sm_write_err)?,
                );
                pending.queues.insert((namespace, queue), config.clone());
                Ok(OpResult::Queue(config))
            }
            Op::PurgeKeys { keys, at_ms } => {
                let own = sm_key(self.shard, SM_IDEMPOTENCY);
                let mut removed = 0;
                for key in keys {
                    if !key.starts_with(&own) || self.retained_key(&key, at_ms, pending)?.is_some() {
                        continue;
                    }
                    let exists = match pending.keys.get(&key) {
                        Some((_, until)) => *until != i64::MIN,
                        None => self
                            .db
                            .get_pinned_cf(cf(&self.db, CF_SM), &key)
                            .map_err(sm_read_err)?
                            .is_some(),
                    };
                    if exists {
                        batch.delete_cf(cf(&self.db, CF_SM), &key);
                        // Gone for the rest of the batch too.
                        pending.keys.insert(key, (JobId([0; 16]), i64::MIN));
                        removed += 1;
                    }
                }
                Ok(OpResult::Purged { removed })
            }
            Op::Quota {
                namespace,
                queue,
                report,
            } => {
                let config = self.load_queue_config(&namespace, &queue, pending)?;
                let Some(limit) = config.concurrency else {
                    return Ok(OpResult::Quota(QuotaAnswer::Unlimited));
                };
                let key = (namespace, queue);
                let mut table = match pending.quotas.get(&key) {
                    Some(t) => t.clone(),
                    None => match self
                        .db
                        .get_cf(cf(&self.db, CF_SM), quota_key(self.shard, &key.0, &key.1))
                        .map_err(sm_read_err)?
                    {
                        Some(bytes) => codec::decode(&bytes).map_err(sm_read_err)?,
                        None => QuotaTable::default(),
                    },
                };
                let answer = table.apply(limit, report);
                batch.put_cf(
                    cf(&self.db, CF_SM),
                    quota_key(self.shard, &key.0, &key.1),
                    codec::encode(&table).map_err(sm_write_err)?,
                );
                pending.quotas.insert(key, table);
                Ok(OpResult::Quota(answer))
            }
            Op::Fire {
                namespace,
                id,
                expected_ms,
                jobs,
                dropped,
                next_ms,
                at_ms,
            } => {
                let Some(mut schedule) = self.load_schedule(&namespace, &id, pending)? else {
                    return Ok(OpResult::FireStale);
                };
                if schedule.paused || schedule.next_fire_ms != Some(expected_ms) {
                    return Ok(OpResult::FireStale);
                }
                let old_slot = schedule.fire_slot();
                let previous_running = match schedule.last_job {
                    Some(last) => self
                        .load_job(&last, pending)?
                        .is_some_and(|job| !job.state.is_terminal()),
                    None => false,
                };
                let mut created = 0u32;
                let mut skipped = dropped;
                let mut jobs = jobs.into_iter();
                if previous_running && schedule.overlap != Overlap::Allow {
                    if schedule.overlap == Overlap::BufferOne && schedule.buffered.is_none() {
                        schedule.buffered = jobs.next().map(Box::new);
                    }
                    skipped += jobs.count() as u64;
                } else {
                    for job in jobs {
                        if self.load_job(&job.id, pending)?.is_some() {
                            continue;
                        }
                        schedule.last_job = Some(job.id);
                        self.put_job(batch, None, &job)?;
                        pending.jobs.insert(job.id, job);
                        created += 1;
                    }
                }
                schedule.fired += u64::from(created);
                schedule.skipped += skipped;
                schedule.last_fire_ms = Some(expected_ms.max(schedule.last_fire_ms.unwrap_or(i64::MIN)));
                schedule.next_fire_ms = next_ms;
                schedule.updated_at_ms = at_ms;
                self.store_schedule(batch, pending, old_slot, schedule)?;
                Ok(OpResult::Fired { created })
            }
            Op::Release { id, token, at_ms } => self.with_lease(id, token, batch, pending, |job| {
                job.state = JobState::Ready;
                job.lease = None;
                job.replay_base += 1;
                job.updated_at_ms = at_ms;
            }),
            Op::Retry { id, at_ms } => {
                let Some(old) = self.load_job(&id, pending)? else {
                    return Ok(OpResult::NotFound);
                };
                if old.state != JobState::Dead {
                    return Ok(OpResult::NotDead(old.state));
                }
                let mut job = old.clone();
                job.state = JobState::Ready;
                job.run_at_ms = at_ms;
                job.replay_base = job.attempts;
                job.updated_at_ms = at_ms;
                self.store(batch, pending, &old, job.clone())?;
                Ok(OpResult::Updated(Box::new(job)))
            }
        }
    }

    /// The job an idempotency key still names at `at_ms`, if any. Keys
    /// written earlier in the same batch are seen through `pending`.
    fn retained_key(
        &self,
        index: &[u8],
        at_ms: i64,
        pending: &Pending,
    ) -> Result<Option<JobId>, StorageError> {
        if let Some((id, until)) = pending.keys.get(index) {
            return Ok((*until > at_ms).then_some(*id));
        }
        let Some(value) = self.db.get_cf(cf(&self.db, CF_SM), index).map_err(sm_read_err)? else {
            return Ok(None);
        };
        let (Some(id), Some(until)) = (
            value.get(..16).and_then(|b| <[u8; 16]>::try_from(b).ok()),
            value.get(16..24).and_then(|b| <[u8; 8]>::try_from(b).ok()),
        ) else {
            return Err(sm_read_err("malformed idempotency index entry"));
        };
        Ok((i64::from_be_bytes(until) > at_ms).then_some(JobId(id)))
    }

    /// Applies `change` to the job if attempt `token` holds its lease.
    fn with_lease(
        &self,
        id: JobId,
        token: u32,
        batch: &mut WriteBatch,
        pending: &mut Pending,
        change: impl FnOnce(&mut Job),
    ) -> Result<OpResult, StorageError> {
        let Some(old) = self.load_job(&id, pending)? else {
            return Ok(OpResult::NotFound);
        };
        let holds = old.state == JobState::Leased && old.lease.as_ref().is_some_and(|l| l.token == token);
        if !holds {
            return Ok(OpResult::Stale {
                state: old.state,
                attempts: old.attempts,
            });
        }
        let mut job = old.clone();
        change(&mut job);
        self.store(batch, pending, &old, job.clone())?;
        Ok(OpResult::Updated(Box::new(job)))
    }

    fn store(
        &self,
        batch: &mut WriteBatch,
        pending: &mut Pending,
        old: &Job,
        job: Job,
    ) -> Result<(), StorageError> {
        self.put_job(batch, Some(old), &job)?;
        let finished = job.state.is_terminal() && !old.state.is_terminal();
        let (namespace, schedule_id, id, at_ms) = (
            job.namespace.clone(),
            job.schedule_id.clone(),
            job.id,
            job.updated_at_ms,
        );
        pending.jobs.insert(job.id, job);
        if let (true, Some(schedule_id)) = (finished, schedule_id) {
            self.release_buffered(batch, pending, &namespace, &schedule_id, id, at_ms)?;
        }
        Ok(())
    }

    /// The previous job of a schedule finished: the firing buffered behind
    /// it (overlap `BufferOne`) gets its job now.
    fn release_buffered(
        &self,
        batch: &mut WriteBatch,
        pending: &mut Pending,
        namespace: &str,
        schedule_id: &str,
        finished: JobId,
        at_ms: i64,
    ) -> Result<(), StorageError> {
        let Some(mut schedule) = self.load_schedule(namespace, schedule_id, pending)? else {
            return Ok(());
        };
        if schedule.last_job != Some(finished) {
            return Ok(());
        }
        let old_slot = schedule.fire_slot();
        let Some(buffered) = schedule.buffered.take() else {
            return Ok(());
        };
        let mut job = *buffered;
        if job.run_at_ms <= at_ms {
            job.run_at_ms = at_ms;
            job.state = JobState::Ready;
        }
        job.updated_at_ms = at_ms;
        schedule.last_job = Some(job.id);
        schedule.fired += 1;
        self.put_job(batch, None, &job)?;
        pending.jobs.insert(job.id, job);
        self.store_schedule(batch, pending, old_slot, schedule)
    }

    fn load_queue_config(
        &self,
        namespace: &str,
        queue: &str,
        pending: &Pending,
    ) -> Result<QueueConfig, StorageError> {
        if let Some(c) = pending.queues.get(&(namespace.to_string(), queue.to_string())) {
            return Ok(c.clone());
        }
        match self
            .db
            .get_cf(
                cf(&self.db, CF_SM),
                queue_config_key(self.shard, namespace, queue),
            )
            .map_err(sm_read_err)?
        {
            Some(bytes) => Ok(codec::decode(&bytes).map_err(sm_read_err)?),
            None => Ok(QueueConfig::default()),
        }
    }

    fn load_schedule(
        &self,
        namespace: &str,
        id: &str,
        pending: &Pending,
    ) -> Result<Option<Schedule>, StorageError> {
        if let Some(s) = pending.schedules.get(&(namespace.to_string(), id.to_string())) {
            return Ok(s.clone());
        }
        match self
            .db
            .get_cf(cf(&self.db, CF_SM), schedule_key(self.shard, namespace, id))
            .map_err(sm_read_err)?
        {
            Some(bytes) => Ok(Some(codec::decode(&bytes).map_err(sm_read_err)?)),
            None => Ok(None),
        }
    }

    /// Writes a schedule and moves its fire index entry from `old_slot`
    /// (the stored schedule's [`Schedule::fire_slot`], which the caller read).
    fn store_schedule(
        &self,
        batch: &mut WriteBatch,
        pending: &mut Pending,
        old_slot: Option<i64>,
        schedule: Schedule,
    ) -> Result<(), StorageError> {
        let sm = cf(&self.db, CF_SM);
        let new_slot = schedule.fire_slot();
        if old_slot != new_slot {
            if let Some(next) = old_slot {
                batch.delete_cf(sm, fire_key(self.shard, next, &schedule.namespace, &schedule.id));
            }
            if let Some(next) = new_slot {
                batch.put_cf(
                    sm,
                    fire_key(self.shard, next, &schedule.namespace, &schedule.id),
                    [],
                );
            }
        }
        batch.put_cf(
            sm,
            schedule_key(self.shard, &schedule.namespace, &schedule.id),
            codec::encode(&schedule).map_err(sm_write_err)?,
        );
        pending
            .schedules
            .insert((schedule.namespace.clone(), schedule.id.clone()), Some(schedule));
        Ok(())
    }
}

fn deadline(at_ms: i64, timeout_ms: u64) -> i64 {
    at_ms.saturating_add(i64::try_from(timeout_ms).unwrap_or(i64::MAX))
}

/// The job leased to `holder` at `at_ms`: the next attempt, with its token.
fn lease(old: &Job, holder: &LeaseHolder, at_ms: i64) -> Job {
    let mut job = old.clone();
    job.attempts += 1;
    job.state = JobState::Leased;
    job.updated_at_ms = at_ms;
    job.lease = Some(Lease {
        token: job.attempts,
        deadline_ms: deadline(at_ms, job.timeout_ms),
        leased_at_ms: at_ms,
        worker: holder.worker.clone(),
        node: holder.node,
        session: holder.session,
    });
    job
}

/// Ends the current attempt as failed: back to waiting after a backoff while
/// attempts are left and the failure is retryable, dead otherwise.
fn fail_attempt(job: &mut Job, error: String, retryable: bool, at_ms: i64) {
    job.last_error = Some(error);
    job.updated_at_ms = at_ms;
    if retryable && job.has_attempts_left() {
        let backoff = job.retry.backoff_ms(&job.id, job.attempts);
        job.state = JobState::Scheduled;
        job.run_at_ms = deadline(at_ms, backoff);
        job.lease = None;
    } else {
        job.state = JobState::Dead;
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied()
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let sm = cf(&self.db, CF_SM);
        let mut batch = WriteBatch::default();
        let mut pending = Pending::default();
        let mut responses = Vec::new();
        let mut last = None;
        for entry in entries {
            last = Some(entry.log_id);
            let response = match entry.payload {
                EntryPayload::Blank => Response::default(),
                EntryPayload::Normal(request) => {
                    let mut results = Vec::with_capacity(request.ops.len());
                    for op in request.ops {
                        results.push(self.apply_op(op, &mut batch, &mut pending)?);
                    }
                    Response { results }
                }
                EntryPayload::Membership(membership) => {
                    let stored = StoredMembership::new(Some(entry.log_id), membership);
                    batch.put_cf(
                        sm,
                        sm_key(self.shard, SM_MEMBERSHIP),
                        codec::encode(&stored).map_err(sm_write_err)?,
                    );
                    Response::default()
                }
            };
            responses.push(response);
        }
        if last.is_some() {
            batch.put_cf(
                sm,
                sm_key(self.shard, SM_APPLIED),
                codec::encode(&last).map_err(sm_write_err)?,
            );
            // One write for all entries: data and applied id move together.
            self.db.write(batch).map_err(sm_write_err)?;
        }
        if !pending.jobs.is_empty() || !pending.schedules.is_empty() || !pending.queues.is_empty() {
            self.listeners.emit(self.shard, || ShardEvent::Changed {
                jobs: pending.jobs.values().map(JobSummary::of).collect(),
                schedules: pending
                    .schedules
                    .iter()
                    .map(|((namespace, id), s)| ScheduleSummary {
                        namespace: namespace.clone(),
                        id: id.clone(),
                        next_fire_ms: s.as_ref().and_then(Schedule::fire_slot),
                    })
                    .collect(),
                queues: pending
                    .queues
                    .iter()
                    .map(|((ns, q), c)| (ns.clone(), q.clone(), c.clone()))
                    .collect(),
            });
        }
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let bytes = snapshot.into_inner();
        let data: SnapshotData = codec::decode(&bytes).map_err(snap_err)?;
        let sm = cf(&self.db, CF_SM);
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(sm, shard_start(self.shard), shard_end(self.shard));
        let prefix = self.shard.to_be_bytes();
        let pairs = data.pairs.len();
        for (key, value) in data.pairs {
            let mut full = Vec::with_capacity(4 + key.len());
            full.extend_from_slice(&prefix);
            full.extend_from_slice(&key);
            batch.put_cf(sm, full, value);
        }
        // The snapshot's meta wins over whatever its pairs said.
        batch.put_cf(
            sm,
            sm_key(self.shard, SM_APPLIED),
            codec::encode(&meta.last_log_id).map_err(snap_err)?,
        );
        batch.put_cf(
            sm,
            sm_key(self.shard, SM_MEMBERSHIP),
            codec::encode(&meta.last_membership).map_err(snap_err)?,
        );
        self.db.write(batch).map_err(snap_err)?;
        self.syncer.sync().await.map_err(snap_err)?;
        self.listeners.emit(self.shard, || ShardEvent::Reset);
        tracing::info!(
            shard = self.shard,
            last_log_id = ?meta.last_log_id,
            pairs,
            "installed snapshot from leader"
        );
        self.save_snapshot_file(meta.clone(), bytes).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let path = self.snapshot_path();
        let bytes = match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(snap_err(format!("{}: {e}", path.display()))),
        };
        let file: SnapshotFile = codec::decode(&bytes).map_err(snap_err)?;
        Ok(Some(Snapshot {
            meta: file.meta,
            snapshot: Box::new(Cursor::new(file.data)),
        }))
    }
}

impl StateMachine {
    /// Writes the snapshot file atomically: temp file, fsync, rename.
    async fn save_snapshot_file(&self, meta: SnapshotMeta, data: Vec<u8>) -> Result<(), StorageError> {
        let path = self.snapshot_path();
        let tmp = path.with_extension("snap.tmp");
        let bytes = codec::encode(&SnapshotFile { meta, data }).map_err(snap_err)?;
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            if let Some(dir) = path.parent() {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        })
        .await
        .map_err(snap_err)?
        .map_err(snap_err)?;
        // The sm writes the snapshot reflects are already synced; this keeps
        // the syncer's ordering promise for anything written just before.
        self.syncer.sync().await.map_err(snap_err)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // One RocksDB snapshot gives data, applied id and membership that agree.
        let db = self.db.clone();
        let shard = self.shard;
        let (pairs, applied, membership) = tokio::task::spawn_blocking(move || {
            let view = db.snapshot();
            let sm = cf(&db, CF_SM);
            let mut opts = ReadOptions::default();
            opts.set_iterate_upper_bound(shard_end(shard));
            let start = shard_start(shard);
            let mut pairs = Vec::new();
            let mut applied: Option<LogId> = None;
            let mut membership = StoredMembership::default();
            for item in view.iterator_cf_opt(sm, opts, IteratorMode::From(&start, Direction::Forward)) {
                let (key, value) = item.map_err(snap_err)?;
                let rest = key.get(4..).unwrap_or_default();
                if rest == [SM_APPLIED] {
                    applied = codec::decode(&value).map_err(snap_err)?;
                } else if rest == [SM_MEMBERSHIP] {
                    membership = codec::decode(&value).map_err(snap_err)?;
                }
                pairs.push((rest.to_vec(), value.to_vec()));
            }
            Ok::<_, StorageError>((pairs, applied, membership))
        })
        .await
        .map_err(snap_err)??;
        let data = codec::encode(&SnapshotData { pairs }).map_err(snap_err)?;
        let snapshot_id = match applied {
            Some(id) => format!("{}-{}-{}", id.leader_id.term, id.index, rand::random::<u32>()),
            None => format!("empty-{}", rand::random::<u32>()),
        };
        let meta = SnapshotMeta {
            last_log_id: applied,
            last_membership: membership,
            snapshot_id,
        };
        self.save_snapshot_file(meta.clone(), data.clone()).await?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}
