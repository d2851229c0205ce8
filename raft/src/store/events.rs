//! What a shard's state machine tells its leader-side dispatcher after it
//! applies entries: which jobs changed and how they stand now.
//!
//! Every replica applies every entry, but only the shard leader's dispatcher
//! listens; the listener is registered while this node leads the shard.
//! Events are sent after the write reached RocksDB, so a dispatcher that
//! subscribes first and scans second never misses a change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobId, JobState, ShardId};

/// What the time index stores for a waiting job, so a dispatcher loading it
/// needs no job reads.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerInfo {
    pub namespace: String,
    pub queue: String,
    pub priority: i32,
    /// The job calls an HTTP target (the node's executors lease it), not a
    /// worker.
    pub http: bool,
}

impl TimerInfo {
    pub fn of(job: &Job) -> TimerInfo {
        TimerInfo {
            namespace: job.namespace.clone(),
            queue: job.queue.clone(),
            priority: job.priority,
            http: job.http.is_some(),
        }
    }
}

/// A job as the dispatcher needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobSummary {
    pub id: JobId,
    pub state: JobState,
    pub run_at_ms: i64,
    pub timer: TimerInfo,
    /// `(token, deadline_ms)` of the lease while the job is leased.
    pub lease: Option<(u32, i64)>,
}

impl JobSummary {
    pub fn of(job: &Job) -> JobSummary {
        JobSummary {
            id: job.id,
            state: job.state,
            run_at_ms: job.run_at_ms,
            timer: TimerInfo::of(job),
            lease: match (&job.lease, job.state) {
                (Some(l), JobState::Leased) => Some((l.token, l.deadline_ms)),
                _ => None,
            },
        }
    }
}

/// A schedule as the dispatcher needs to see it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScheduleSummary {
    pub namespace: String,
    pub id: String,
    /// When it fires next; `None` when it does not (paused, deleted, done).
    pub next_fire_ms: Option<i64>,
}

#[derive(Clone, Debug)]
pub enum ShardEvent {
    /// These jobs and schedules changed; each summary is the state after the
    /// change.
    Changed {
        jobs: Vec<JobSummary>,
        schedules: Vec<ScheduleSummary>,
        /// Queues whose settings changed: (namespace, queue, settings).
        queues: Vec<(String, String, crate::types::QueueConfig)>,
    },
    /// The shard's state was replaced (snapshot installed): reload everything.
    Reset,
}

pub type Listener = Arc<dyn Fn(ShardEvent) + Send + Sync>;

/// One optional listener per shard.
#[derive(Default)]
pub struct Listeners {
    by_shard: Mutex<HashMap<ShardId, Listener>>,
}

impl Listeners {
    pub fn set(&self, shard: ShardId, listener: Option<Listener>) {
        let mut map = self.by_shard.lock().unwrap_or_else(|p| p.into_inner());
        match listener {
            Some(l) => map.insert(shard, l),
            None => map.remove(&shard),
        };
    }

    pub fn emit(&self, shard: ShardId, event: impl FnOnce() -> ShardEvent) {
        let listener = {
            let map = self.by_shard.lock().unwrap_or_else(|p| p.into_inner());
            map.get(&shard).cloned()
        };
        if let Some(listener) = listener {
            listener(event());
        }
    }
}
