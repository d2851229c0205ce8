//! openraft type configuration and the commands a shard's state machine applies.

use std::fmt;
use std::io::Cursor;

use serde::{Deserialize, Serialize};

use crate::job::{Job, JobId, JobState};

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

/// One state machine operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Store a new job. Applying a submit whose id is already stored changes
    /// nothing: a retried submit (same id) is applied once.
    Submit(Job),
    /// Cancel a job that is not finished, at the leader's clock `at_ms`.
    Cancel { id: JobId, at_ms: i64 },
}

/// The outcome of each op of a [`Request`], in the same order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Response {
    pub results: Vec<OpResult>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// The job is stored; `created` is false when it already was.
    Submitted { created: bool },
    /// The job is now (or already was) cancelled.
    Cancelled(Box<Job>),
    /// No job has this id.
    NotFound,
    /// The job already finished in this state and cannot be cancelled.
    AlreadyFinished(JobState),
}
