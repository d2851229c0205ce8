//! The supervision tree: `NodeSupervisor` → `ShardSupervisor` → `ShardActor`s,
//! and `NodeSupervisor` → `Gateway`.

mod node;
mod policy;
mod rebalance;
mod shard;

pub use node::{NodeSupervisor, NodeSupervisorArgs};
pub use policy::{Decision, RestartPolicy, RestartTracker};
pub use rebalance::{should_reclaim, RebalancePolicy, ShardSight};
pub use shard::{ShardSupervisor, ShardSupervisorArgs, ShardSupervisorMsg};
