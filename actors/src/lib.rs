//! Sundial's actors.
//!
//! Layout:
//! - [`supervisor`]: `NodeSupervisor` → `ShardSupervisor` → one `ShardActor`
//!   per local shard replica, plus the `Gateway`; restart policy with backoff
//!   and an intensity limit.
//! - [`shard`]: the shard actor (batching writes into Raft entries) and its
//!   `ShardHandle`.
//! - [`dispatch`]: per shard, on its leader: timers, lease requests from
//!   worker sessions (long poll), lease expiry.
//! - [`gateway`]: routing to shard leaders, forwarding across nodes over
//!   `ractor_cluster`, retries inside the caller's deadline.
//! - [`layout`]: the cluster's fixed shape and shard placement.

pub mod dispatch;
pub mod error;
pub mod executor;
pub mod gateway;
pub mod layout;
pub mod lease_feed;
pub mod shard;
pub mod supervisor;

pub use error::{Error, ExecError};
pub use gateway::GatewayHandle;
pub use layout::{ClusterLayout, RaftTiming};
