//! Sundial's replication layer.
//!
//! Layout:
//! - [`codec`]: the one place values become bytes (format version byte + bincode).
//! - [`job`]: the job model; ids carry their shard.
//! - [`keys`]: big-endian RocksDB keys, shard-prefixed.
//! - [`types`]: the openraft type config and the state machine's commands.
//! - [`store`]: one RocksDB per node holding every shard's log and state machine,
//!   with group-committed WAL fsyncs.
//! - [`network`]: openraft RPCs over one cached tonic channel per peer, routed
//!   by shard id; the server side that feeds them to the right Raft group.

// openraft's storage traits return its `StorageError` (224 bytes); our helpers
// return it too rather than converting on every `?`.
#![allow(clippy::result_large_err)]

pub mod codec;
pub mod group;
pub mod job;
pub mod keys;
pub mod network;
pub mod quota;
pub mod schedule;
pub mod store;
pub mod types;

pub use job::{Job, JobId, JobState, ShardId};
pub use types::{NodeId, PeerNode, Raft, TypeConfig};
