//! Messages of the dispatcher actor.

use ractor::RpcReplyPort;
use serde::{Deserialize, Serialize};
use sundial_raft::quota::QuotaAnswer;
use sundial_raft::store::events::ShardEvent;
use sundial_raft::store::{LeaseEntry, TimerEntry};
use sundial_raft::types::{LeaseHolder, QueueConfig};
use sundial_raft::{Job, JobId, NodeId};

use super::state::Want;
use crate::error::ExecError;

/// A worker session's (or the executors') request for jobs from one shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct LeaseRequest {
    pub want: Want,
    /// Most jobs to lease. Zero: lease nothing, only wait (up to `wait_ms`)
    /// until a job is ready, so a caller can wait without holding credits.
    pub max: u32,
    pub holder: LeaseHolder,
    /// How long the leader may hold the request when no job is ready, ms.
    pub wait_ms: u64,
}

pub type LeaseReply = RpcReplyPort<Result<Vec<Job>, ExecError>>;

pub enum DispatchMsg {
    /// This node started (`Some(term)`) or stopped (`None`) leading the shard.
    Leadership {
        leader: Option<NodeId>,
        term: Option<u64>,
    },
    /// A page of the time index (and, on the first load of a term, every
    /// lease) read for leadership epoch `epoch`.
    Loaded {
        epoch: u64,
        timers: Vec<TimerEntry>,
        until_ms: i64,
        full: bool,
        leases: Option<Vec<LeaseEntry>>,
        /// Every active schedule: (next firing, namespace, id).
        schedules: Option<Vec<(i64, String, String)>>,
        /// Every queue with settings: (namespace, queue, settings).
        queues: Option<Vec<(String, String, QueueConfig)>>,
    },
    /// Reading the indexes failed; try again.
    LoadFailed { epoch: u64, error: String },
    /// The state machine applied changes (only while leading).
    Applied { epoch: u64, event: ShardEvent },
    /// Lease up to `max` ready jobs, waiting up to `wait_ms` for some.
    Lease(LeaseRequest, LeaseReply),
    /// A lease write for these picked jobs finished.
    LeaseWritten { picked: Vec<JobId> },
    /// An expiry write failed.
    ExpiryFailed(JobId),
    /// A schedule's firing ended without a change (failed or nothing due).
    FireDone { namespace: String, id: String },
    /// A queue's home shard answered a quota report (`None`: not written).
    QuotaAnswered {
        epoch: u64,
        queue: (String, String),
        answer: Option<QuotaAnswer>,
    },
    /// A step of the idempotency-key sweep ended; go on from `next` (`None`:
    /// the sweep reached the end of the index).
    KeysSwept { epoch: u64, next: Option<Vec<u8>> },
    /// Time to look at timers, leases and parked requests.
    Tick,
}

// ractor's `cluster` feature removes the blanket `Message` impl; this actor is
// local-only (remote lease requests arrive through the gateway).
impl ractor::Message for DispatchMsg {}
