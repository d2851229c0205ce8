//! Reads of one shard's local replica: a job by id, and filtered pages.

use rocksdb::{Direction, IteratorMode, ReadOptions};
use serde::{Deserialize, Serialize};

use super::events::TimerInfo;
use super::{cf, NodeStore, StoreError};
use crate::codec;
use crate::job::{Fnv64, Job, JobId, JobState, ShardId};
use crate::keys::{
    fire_key_parts, job_key, key_time, namespace_prefix, prefix_end, queue_config_key, queue_config_parts,
    queue_prefix, schedule_key, schedule_prefix, shard_end, shard_start, sm_key, time_key_in, trailing_id,
    with_id, CF_SM, SM_APPLIED, SM_FIRE, SM_IDEMPOTENCY, SM_LEASE, SM_QUEUE_CONFIG, SM_TIME,
};
use crate::schedule::Schedule;
use crate::types::QueueConfig;

/// Which jobs a list wants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFilter {
    pub namespace: String,
    pub queue: Option<String>,
    /// Matched against the state at `as_of_ms` (see [`Job::effective_state`]),
    /// as the list index records it.
    pub state: Option<JobState>,
    /// The time "due" is judged at (the request's), ms since the epoch.
    pub as_of_ms: i64,
}

/// One page of one shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobPage {
    pub jobs: Vec<Job>,
    /// True when the shard may hold more matches after the last job.
    pub more: bool,
}

/// A waiting job in the time index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TimerEntry {
    pub run_at_ms: i64,
    pub id: JobId,
    pub info: TimerInfo,
}

/// A page of the idempotency-key sweep: the expired keys found, and the key
/// to go on after (`None` at the end of the index).
pub type KeySweep = (Vec<Vec<u8>>, Option<Vec<u8>>);

/// A leased job in the lease index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaseEntry {
    pub deadline_ms: i64,
    pub id: JobId,
    pub token: u32,
    /// The job's namespace and queue.
    pub info: TimerInfo,
}

/// What [`NodeStore::shard_digest`] found.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ShardDigest {
    /// Index and term of the last applied log entry (0 before any).
    pub applied_index: u64,
    pub applied_term: u64,
    /// State-machine keys hashed.
    pub keys: u64,
    /// FNV-1a (64 bit) over every length-prefixed key and value, in key order.
    pub digest: u64,
}

impl NodeStore {
    /// Calls `visit` with each (key, value) from `start` up to the end of
    /// `prefix`, until it returns false.
    fn visit_index(
        &self,
        prefix: &[u8],
        start: &[u8],
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        let db = self.db();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(prefix_end(prefix));
        for item in db.iterator_cf_opt(cf(db, CF_SM), opts, IteratorMode::From(start, Direction::Forward)) {
            let (key, value) = item?;
            if !visit(&key, &value)? {
                break;
            }
        }
        Ok(())
    }

    /// Waiting jobs of a shard in time order: after `after` (exclusive) when
    /// given, due at or before `until_ms`, at most `limit`.
    pub fn scan_timers(
        &self,
        shard: ShardId,
        after: Option<(i64, JobId)>,
        until_ms: i64,
        limit: usize,
    ) -> Result<Vec<TimerEntry>, StoreError> {
        let prefix = sm_key(shard, SM_TIME);
        let start = match after {
            Some((at, id)) => {
                // Not `time_key`: the position's id may name no job (and no
                // shard), like the largest id closing a horizon.
                let mut k = time_key_in(shard, at, &id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        self.visit_index(&prefix, &start, |key, value| {
            let (Some(run_at_ms), Some(id)) = (key_time(key), trailing_id(key)) else {
                return Ok(true);
            };
            if run_at_ms > until_ms || out.len() == limit {
                return Ok(false);
            }
            out.push(TimerEntry {
                run_at_ms,
                id,
                info: codec::decode(value)?,
            });
            Ok(true)
        })?;
        Ok(out)
    }

    /// Every queue of a shard with stored settings: (namespace, queue, config).
    pub fn scan_queue_configs(
        &self,
        shard: ShardId,
    ) -> Result<Vec<(String, String, QueueConfig)>, StoreError> {
        let prefix = sm_key(shard, SM_QUEUE_CONFIG);
        let mut out = Vec::new();
        self.visit_index(&prefix, &prefix, |key, value| {
            if let Some((ns, queue)) = queue_config_parts(key) {
                out.push((ns, queue, codec::decode(value)?));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// One queue's settings on a shard (default when never set).
    pub fn queue_config(
        &self,
        shard: ShardId,
        namespace: &str,
        queue: &str,
    ) -> Result<QueueConfig, StoreError> {
        let db = self.db();
        match db.get_cf(cf(db, CF_SM), queue_config_key(shard, namespace, queue))? {
            Some(bytes) => Ok(codec::decode(&bytes)?),
            None => Ok(QueueConfig::default()),
        }
    }

    /// How many jobs of a queue on one shard are in each state, by state code.
    /// A waiting job counts as ready once due at `now_ms`.
    pub fn queue_counts(
        &self,
        shard: ShardId,
        namespace: &str,
        queue: &str,
        now_ms: i64,
    ) -> Result<[u64; 8], StoreError> {
        let prefix = queue_prefix(shard, namespace, queue);
        let mut counts = [0u64; 8];
        self.visit_index(&prefix, &prefix, |_, state| {
            if let Some(slot) = index_state(state, now_ms).and_then(|c| counts.get_mut(c as usize)) {
                *slot += 1;
            }
            Ok(true)
        })?;
        Ok(counts)
    }

    /// Up to `limit` idempotency index entries after `after` (exclusive):
    /// the keys among them whose retention ended by `now_ms`, and where to
    /// go on from (`None` once the end of the index was reached).
    pub fn scan_expired_keys(
        &self,
        shard: ShardId,
        after: Option<&[u8]>,
        now_ms: i64,
        limit: usize,
    ) -> Result<KeySweep, StoreError> {
        let prefix = sm_key(shard, SM_IDEMPOTENCY);
        let start = match after {
            Some(key) => {
                let mut k = key.to_vec();
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut expired = Vec::new();
        let mut seen = 0;
        let mut last = None;
        self.visit_index(&prefix, &start, |key, value| {
            let until = value
                .get(16..24)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(i64::from_be_bytes);
            if until.is_some_and(|until| until <= now_ms) {
                expired.push(key.to_vec());
            }
            seen += 1;
            last = Some(key.to_vec());
            Ok(seen < limit)
        })?;
        let next = if seen < limit { None } else { last };
        Ok((expired, next))
    }

    /// Every active schedule of a shard: (next fire, namespace, id).
    pub fn scan_fires(&self, shard: ShardId) -> Result<Vec<(i64, String, String)>, StoreError> {
        let prefix = sm_key(shard, SM_FIRE);
        let mut out = Vec::new();
        self.visit_index(&prefix, &prefix, |key, _| {
            if let (Some(at), Some((ns, id))) = (key_time(key), fire_key_parts(key)) {
                out.push((at, ns, id));
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// Reads a schedule from this node's replica of `shard`.
    pub fn get_schedule(
        &self,
        shard: ShardId,
        namespace: &str,
        id: &str,
    ) -> Result<Option<Schedule>, StoreError> {
        let db = self.db();
        match db.get_cf(cf(db, CF_SM), schedule_key(shard, namespace, id))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Up to `limit` schedules of a namespace on one shard, in id order,
    /// after `after` when given; and whether more follow.
    pub fn list_schedules(
        &self,
        shard: ShardId,
        namespace: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Schedule>, bool), StoreError> {
        let prefix = schedule_prefix(shard, namespace);
        let start = match after {
            Some(id) => {
                let mut k = schedule_key(shard, namespace, id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut out = Vec::new();
        let mut more = false;
        self.visit_index(&prefix, &start, |_, value| {
            if out.len() == limit {
                more = true;
                return Ok(false);
            }
            out.push(codec::decode(value)?);
            Ok(true)
        })?;
        Ok((out, more))
    }

    /// Every leased job of a shard, earliest deadline first.
    pub fn scan_leases(&self, shard: ShardId) -> Result<Vec<LeaseEntry>, StoreError> {
        let prefix = sm_key(shard, SM_LEASE);
        let mut out = Vec::new();
        self.visit_index(&prefix, &prefix, |key, value| {
            if let (Some(deadline_ms), Some(id)) = (key_time(key), trailing_id(key)) {
                let (token, info) = value.split_at_checked(4).ok_or_else(|| {
                    crate::codec::CodecError::Malformed(format!(
                        "lease index value of {id} is {} bytes",
                        value.len()
                    ))
                })?;
                let token = u32::from_be_bytes(<[u8; 4]>::try_from(token).unwrap_or_default());
                out.push(LeaseEntry {
                    deadline_ms,
                    id,
                    token,
                    info: codec::decode(info)?,
                });
            }
            Ok(true)
        })?;
        Ok(out)
    }

    /// A digest of this node's replica of `shard`: every state-machine key
    /// and value but the applied position, read from one RocksDB snapshot
    /// together with that position. Replicas that applied the same log
    /// prefix must have equal digests; the chaos checker compares them.
    pub fn shard_digest(&self, shard: ShardId) -> Result<ShardDigest, StoreError> {
        let db = self.db();
        let snap = db.snapshot();
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(shard_end(shard));
        let applied_key = sm_key(shard, SM_APPLIED);
        let mut digest = ShardDigest::default();
        let mut hash = Fnv64::new();
        for item in snap.iterator_cf_opt(
            cf(db, CF_SM),
            opts,
            IteratorMode::From(&shard_start(shard), Direction::Forward),
        ) {
            let (key, value) = item?;
            if *key == *applied_key {
                let applied: Option<crate::types::LogId> = codec::decode(&value)?;
                digest.applied_index = applied.map(|l| l.index).unwrap_or(0);
                digest.applied_term = applied.map(|l| l.leader_id.term).unwrap_or(0);
                continue;
            }
            hash.write(&(key.len() as u64).to_be_bytes());
            hash.write(&key);
            hash.write(&(value.len() as u64).to_be_bytes());
            hash.write(&value);
            digest.keys += 1;
        }
        digest.digest = hash.finish();
        Ok(digest)
    }

    /// Reads a job from this node's replica of its shard.
    pub fn get_job(&self, id: &JobId) -> Result<Option<Job>, StoreError> {
        let db = self.db();
        match db.get_cf(cf(db, CF_SM), job_key(id))? {
            Some(bytes) => Ok(Some(codec::decode(&bytes)?)),
            None => Ok(None),
        }
    }

    /// Lists up to `limit` jobs of one shard matching `filter`, in id order,
    /// starting after `after` when given.
    pub fn list_jobs(
        &self,
        shard: ShardId,
        filter: &JobFilter,
        after: Option<&JobId>,
        limit: usize,
    ) -> Result<JobPage, StoreError> {
        let db = self.db();
        let prefix = match &filter.queue {
            Some(queue) => queue_prefix(shard, &filter.namespace, queue),
            None => namespace_prefix(shard, &filter.namespace),
        };
        let start = match after {
            // The smallest key after `after`'s own key.
            Some(id) => {
                let mut k = with_id(prefix.clone(), id);
                k.push(0);
                k
            }
            None => prefix.clone(),
        };
        let mut opts = ReadOptions::default();
        opts.set_iterate_upper_bound(prefix_end(&prefix));
        let iter = db.iterator_cf_opt(
            cf(db, CF_SM),
            opts,
            IteratorMode::From(&start, Direction::Forward),
        );
        let mut page = JobPage::default();
        for item in iter {
            let (key, state) = item?;
            if filter
                .state
                .is_some_and(|wanted| index_state(&state, filter.as_of_ms) != Some(wanted.code()))
            {
                continue;
            }
            let Some(id) = trailing_id(&key) else { continue };
            let Some(job) = self.get_job(&id)? else { continue };
            if page.jobs.len() == limit {
                page.more = true;
                break;
            }
            page.jobs.push(job);
        }
        Ok(page)
    }
}

/// The state code a list-index value (`Q`, `N`) stands for at `now_ms`: a
/// waiting job (code, then its due time) is ready once due, scheduled
/// before.
fn index_state(value: &[u8], now_ms: i64) -> Option<u8> {
    let (&code, rest) = value.split_first()?;
    let waiting = [JobState::Scheduled.code(), JobState::Ready.code()];
    if !waiting.contains(&code) {
        return Some(code);
    }
    let run_at = i64::from_be_bytes(rest.try_into().ok()?);
    Some(if run_at <= now_ms {
        JobState::Ready.code()
    } else {
        JobState::Scheduled.code()
    })
}
