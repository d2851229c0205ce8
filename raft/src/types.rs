//! openraft type configuration and the commands a shard's state machine applies.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobId, JobState};
use crate::quota::{QuotaAnswer, QuotaReport};
use crate::schedule::Schedule;

/// Node ids are small integers named in `cluster.toml`.
pub type NodeId = u64;

/// What a Raft member needs to know about a peer.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerNode {
    /// `host:port` of the peer's internal Raft gRPC service.
    pub raft_addr: String,
    /// `host:port` of the peer's client gRPC service.
    pub client_addr: String,
}

impl fmt::Display for PeerNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "raft={} client={}", self.raft_addr, self.client_addr)
    }
}

openraft::declare_raft_types!(
    /// Sundial's Raft types: one per process, shared by every shard's group.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = NodeId,
        Node = PeerNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type LogId = openraft::LogId<NodeId>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, PeerNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, PeerNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// One Raft entry: a batch of operations, packed by the shard leader from
/// concurrent client requests. Applied in order, atomically.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    pub ops: Vec<Op>,
}

/// One state machine operation. Times (`at_ms`) come from the shard leader's
/// clock when it proposes the operation, so applying is deterministic.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Store a new job. Applying a submit whose id is already stored changes
    /// nothing: a retried submit (same id) is applied once.
    Submit(Box<Job>),
    /// Cancel a job that is not finished, at the leader's clock `at_ms`.
    Cancel {
        id: JobId,
        at_ms: i64,
    },
    /// Lease each listed job that is still waiting and due at `at_ms` to
    /// `holder`: its attempt count grows by one and becomes the lease's
    /// fencing token. Jobs no longer waiting are skipped.
    Lease {
        ids: Vec<JobId>,
        holder: LeaseHolder,
        at_ms: i64,
    },
    /// Extend the lease `token` of a job to `at_ms` + the job's timeout.
    Heartbeat {
        id: JobId,
        token: u32,
        at_ms: i64,
    },
    /// Record the success of attempt `token`.
    Complete {
        id: JobId,
        token: u32,
        result: Vec<u8>,
        at_ms: i64,
    },
    /// Record the failure of attempt `token`: retried after a backoff while
    /// attempts are left and the failure is retryable, dead otherwise.
    Fail {
        id: JobId,
        token: u32,
        error: String,
        retryable: bool,
        at_ms: i64,
    },
    /// End lease `token` if its deadline passed by `at_ms`; the attempt
    /// counts as failed.
    Expire {
        id: JobId,
        token: u32,
        at_ms: i64,
    },
    /// Give lease `token` back unused (its holder never got the job): the
    /// job waits again at once and the attempt does not count against its
    /// retry budget. The token is spent all the same: the next lease gets a
    /// higher one.
    Release {
        id: JobId,
        token: u32,
        at_ms: i64,
    },
    /// Replay a dead job: waiting again from `at_ms` with a fresh retry budget.
    Retry {
        id: JobId,
        at_ms: i64,
    },
    /// Create a schedule (`create`: refused if the id exists) or replace the
    /// definition of an existing one (its history is kept).
    PutSchedule {
        schedule: Box<Schedule>,
        create: bool,
    },
    /// Pause or resume a schedule. A resumed schedule fires next at its first
    /// time after `at_ms`.
    PauseSchedule {
        namespace: String,
        id: String,
        paused: bool,
        at_ms: i64,
    },
    DeleteSchedule {
        namespace: String,
        id: String,
    },
    /// Change a queue's settings on this shard (the gateway writes it to
    /// every shard); unset fields keep their value.
    SetQueue {
        namespace: String,
        queue: String,
        patch: QueuePatch,
        at_ms: i64,
    },
    /// Delete these idempotency index entries (full `I` keys of this shard)
    /// if their retention ended by `at_ms`; others are left alone.
    PurgeKeys {
        keys: Vec<Vec<u8>>,
        at_ms: i64,
    },
    /// A shard leader's report about a queue with a concurrency limit, to
    /// the queue's home shard (see `crate::quota`).
    Quota {
        namespace: String,
        queue: String,
        report: QuotaReport,
    },
    /// Fire a schedule whose next firing is `expected_ms`: create `jobs` (one
    /// per nominal time, prepared by the leader), count `dropped` late
    /// firings as skipped, and move on to `next_ms`. Applied only if the
    /// schedule still expects `expected_ms`, so a firing happens once.
    Fire {
        namespace: String,
        id: String,
        expected_ms: i64,
        jobs: Vec<Job>,
        dropped: u64,
        next_ms: Option<i64>,
        at_ms: i64,
    },
}

/// Settings of one queue, kept on every shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueConfig {
    /// No new leases while paused.
    pub paused: bool,
    /// Most jobs of the queue leased at once, cluster-wide; `None`: no limit.
    pub concurrency: Option<u32>,
    pub updated_at_ms: i64,
}

/// A change of queue settings; `None` keeps a setting as it is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuePatch {
    pub paused: Option<bool>,
    /// `Some(0)` removes the limit.
    pub concurrency: Option<u32>,
}

impl QueueConfig {
    pub fn patched(mut self, patch: QueuePatch, at_ms: i64) -> QueueConfig {
        if let Some(paused) = patch.paused {
            self.paused = paused;
        }
        if let Some(limit) = patch.concurrency {
            self.concurrency = (limit > 0).then_some(limit);
        }
        self.updated_at_ms = at_ms;
        self
    }
}

/// Who a lease goes to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseHolder {
    /// The worker's own name (for operators).
    pub worker: String,
    /// The node whose worker stream holds the lease.
    pub node: NodeId,
    /// The stream's session id on that node.
    pub session: u64,
}

/// The outcome of each op of a [`Request`], in the same order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub results: Vec<OpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The job is stored under `id`. `created` is false when it already was,
    /// or when its idempotency key named an earlier job (then `id` is that
    /// job's).
    Submitted { created: bool, id: JobId },
    /// The job is now (or already was) cancelled.
    Cancelled(Box<Job>),
    /// No job has this id.
    NotFound,
    /// The job already finished in this state and cannot be cancelled.
    AlreadyFinished(JobState),
    /// The jobs of a `Lease` op that were leased, as stored now.
    Leased(Vec<Job>),
    /// A heartbeat, completion, failure, expiry or replay took effect; the job
    /// as stored now.
    Updated(Box<Job>),
    /// The attempt named by the op's token does not hold the job (any more):
    /// nothing changed. Carries the job's current state and attempt count.
    Stale { state: JobState, attempts: u32 },
    /// A replay of a job that is not dead: nothing changed.
    NotDead(JobState),
    /// The schedule as stored after the op (deleted: as it was).
    Schedule(Box<Schedule>),
    /// A create found the id taken: the existing schedule, unchanged.
    ScheduleExists(Box<Schedule>),
    /// A queue's settings as stored now.
    Queue(QueueConfig),
    /// Expired idempotency entries removed.
    Purged { removed: u32 },
    /// The queue's home shard answered a quota report.
    Quota(QuotaAnswer),
    /// A firing was applied: how many jobs it created.
    Fired { created: u32 },
    /// A firing the schedule no longer expects (already fired, paused,
    /// changed or deleted): nothing changed.
    FireStale,
}
