//! Errors of the actor layer. Retryable routing errors are kept apart from
//! answers the client must see; `node` maps them to gRPC statuses in one place.

use serde::{Deserialize, Serialize};
use sundial_raft::{NodeId, ShardId};

/// Why a request could not be executed on a node. Crosses nodes (forwarded
/// requests answer with it), so it is serializable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum ExecError {
    /// This node does not lead the shard; `leader` is who it believes does.
    #[error("node does not lead shard {shard} (leader: {leader:?})")]
    NotLeader { shard: ShardId, leader: Option<NodeId> },
    /// The shard cannot serve right now (restarting actor, lost quorum,
    /// unreachable node). Retrying may succeed.
    #[error("shard {shard} unavailable: {reason}")]
    Unavailable { shard: ShardId, reason: String },
    /// A bug or corrupted storage; retrying will not help.
    #[error("internal error: {0}")]
    Internal(String),
}

impl ExecError {
    pub fn is_retryable(&self) -> bool {
        !matches!(self, ExecError::Internal(_))
    }
}

/// What the gateway tells its callers.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("job {id} already finished as {state}")]
    AlreadyFinished { id: String, state: String },
    /// A heartbeat, completion or failure named an attempt that does not
    /// hold the job's lease (any more).
    #[error("job {id}: attempt {token} does not hold the lease (job is {state}, attempt {attempts})")]
    StaleLease {
        id: String,
        token: u32,
        state: String,
        attempts: u32,
    },
    #[error("schedule {0} not found")]
    ScheduleNotFound(String),
    /// A replay of a job that is not dead.
    #[error("job {id} is {state}, only a dead job can be retried")]
    NotDead { id: String, state: String },
    /// The deadline passed while the shard had no reachable leader.
    #[error("shard {shard} did not answer before the deadline: {last}")]
    DeadlineExceeded { shard: ShardId, last: String },
    #[error("internal error: {0}")]
    Internal(String),
}
