//! The supervision tree: `NodeSupervisor` → `ShardSupervisor` → `ShardActor`s,
//! and `NodeSupervisor` → `Gateway`.

mod node;
mod policy;
mod shard;

pub use node::{NodeSupervisor, NodeSupervisorArgs};
pub use policy::{Decision, RestartPolicy, RestartTracker};
pub use shard::{ShardSupervisor, ShardSupervisorArgs, ShardSupervisorMsg};
