//! What gateways say to each other across nodes.
//!
//! Forwarded requests travel through `ractor_cluster` as opaque bytes produced
//! by sundial-raft's codec, so every encoding stays in one versioned module.

use ractor::RpcReplyPort;
use ractor_cluster::RactorClusterMessage;
use serde::{Deserialize, Serialize};
use sundial_raft::schedule::Schedule;
use sundial_raft::store::{JobFilter, JobPage};
use sundial_raft::types::{Op, OpResult, QueueConfig};
use sundial_raft::{Job, JobId, ShardId};

use crate::dispatch::LeaseRequest;

/// The gateway actor's mailbox; the only remote-capable message in Sundial.
#[derive(RactorClusterMessage)]
pub enum GatewayMsg {
    /// An encoded [`Forwarded`] from another node's gateway; the reply is an
    /// encoded `Result<GatewayReply, ExecError>` (see `crate::error`).
    #[rpc]
    Forward(Vec<u8>, RpcReplyPort<Vec<u8>>),
}

/// A request forwarded to the node that leads its shard.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Forwarded {
    /// How long the sender will wait, in ms; the receiver stops before that.
    pub timeout_ms: u64,
    pub request: GatewayRequest,
}

/// A request the shard leader executes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GatewayRequest {
    /// Replicate an operation on `shard`.
    Write { shard: ShardId, op: Op },
    /// Linearizable read of one job.
    Get { id: JobId },
    /// Linearizable page of one shard.
    List {
        shard: ShardId,
        filter: JobFilter,
        after: Option<JobId>,
        limit: u32,
    },
    /// Linearizable read of one schedule.
    GetSchedule {
        shard: ShardId,
        namespace: String,
        id: String,
    },
    /// Linearizable page of one shard's schedules in a namespace.
    ListSchedules {
        shard: ShardId,
        namespace: String,
        after: Option<String>,
        limit: u32,
    },
    /// Linearizable job counts by state of one queue on one shard, and
    /// whether it is paused there.
    QueueStats {
        shard: ShardId,
        namespace: String,
        queue: String,
    },
    /// Lease ready jobs of one shard to a worker session (long poll).
    Lease { shard: ShardId, request: LeaseRequest },
    /// Tell a worker session on the receiving node that a job it holds was
    /// cancelled. Addressed to a node, not a shard leader.
    Notice { session: u64, notice: WorkerNotice },
}

/// What a node tells one of its worker sessions about a job it holds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum WorkerNotice {
    Cancelled(JobId),
}

impl GatewayRequest {
    pub fn shard(&self) -> ShardId {
        match self {
            GatewayRequest::Write { shard, .. }
            | GatewayRequest::List { shard, .. }
            | GatewayRequest::Lease { shard, .. }
            | GatewayRequest::GetSchedule { shard, .. }
            | GatewayRequest::QueueStats { shard, .. }
            | GatewayRequest::ListSchedules { shard, .. } => *shard,
            GatewayRequest::Get { id } => id.shard(),
            GatewayRequest::Notice {
                notice: WorkerNotice::Cancelled(id),
                ..
            } => id.shard(),
        }
    }
}

/// The answer to a [`GatewayRequest`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum GatewayReply {
    Written(OpResult),
    Job(Option<Box<Job>>),
    Page(JobPage),
    Leased(Vec<Job>),
    Schedule(Option<Box<Schedule>>),
    /// Job counts by state code, and the queue's settings on that shard.
    QueueStats([u64; 8], QueueConfig),
    /// One shard's page, and whether it has more.
    Schedules(Vec<Schedule>, bool),
    /// A notice was delivered (or its session is gone).
    Noted,
}
