//! The supervision tree: `NodeSupervisor` → `ShardSupervisor` → `ShardActor`s,
//! `NodeSupervisor` → `Gateway`, and `NodeSupervisor` → `ExecutorSupervisor`
//! → `Executor`s (HTTP targets, `crate::executor`).

mod node;
mod policy;
mod rebalance;
mod shard;

pub use node::{NodeSupervisor, NodeSupervisorArgs};
pub use policy::{stopped_child, Decision, RestartPolicy, RestartTracker};
pub use rebalance::{should_reclaim, RebalancePolicy, ShardSight};
pub use shard::{ShardSupervisor, ShardSupervisorArgs, ShardSupervisorMsg};
