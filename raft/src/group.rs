//! Starting one shard's Raft group on this node.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InitializeError, RaftError};
use openraft::{Config, SnapshotPolicy};

use crate::job::ShardId;
use crate::network::{NetworkFactory, PeerClients};
use crate::store::{NodeStore, StoreError};
use crate::types::{NodeId, PeerNode, Raft};

/// Timing of every Raft group on a node.
#[derive(Clone, Copy, Debug)]
pub struct GroupTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot (and purge the log) after this many entries.
    pub snapshot_every: u64,
    /// Entries kept behind the last snapshot.
    pub logs_kept_after_snapshot: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("invalid raft config for shard {shard}: {reason}")]
    Config { shard: ShardId, reason: String },
    #[error("storage of shard {shard}: {source}")]
    Store { shard: ShardId, source: StoreError },
    #[error("raft of shard {shard} stopped: {reason}")]
    Fatal { shard: ShardId, reason: String },
}

/// Creates the Raft group of `shard` on this node from its stored log and
/// state machine. The group starts as a follower (or learner if pristine).
pub async fn start_group(
    store: &NodeStore,
    shard: ShardId,
    node_id: NodeId,
    peers: PeerClients,
    timing: GroupTiming,
) -> Result<Raft, GroupError> {
    let config = Config {
        cluster_name: format!("sundial-shard-{shard}"),
        heartbeat_interval: timing.heartbeat.as_millis() as u64,
        election_timeout_min: timing.election_min.as_millis() as u64,
        election_timeout_max: timing.election_max.as_millis() as u64,
        snapshot_policy: SnapshotPolicy::LogsSinceLast(timing.snapshot_every),
        max_in_snapshot_log_to_keep: timing.logs_kept_after_snapshot,
        max_payload_entries: 256,
        ..Default::default()
    };
    let config = config.validate().map_err(|e| GroupError::Config {
        shard,
        reason: e.to_string(),
    })?;
    let log = store.log_store(shard);
    let sm = store
        .state_machine(shard)
        .map_err(|source| GroupError::Store { shard, source })?;
    let network = NetworkFactory {
        shard,
        from: node_id,
        peers,
    };
    Raft::new(node_id, Arc::new(config), network, log, sm)
        .await
        .map_err(|e| GroupError::Fatal {
            shard,
            reason: e.to_string(),
        })
}

/// Forms the group on first start. Every member calls this with the same
/// member set, which openraft allows; on a group that already has a log it
/// changes nothing.
pub async fn initialize_if_pristine(
    raft: &Raft,
    shard: ShardId,
    members: BTreeMap<NodeId, PeerNode>,
) -> Result<(), GroupError> {
    match raft.initialize(members).await {
        Ok(()) => Ok(()),
        Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
        Err(e) => Err(GroupError::Fatal {
            shard,
            reason: e.to_string(),
        }),
    }
}
