//! Chaos and failover testing (issue #4): a harness that starts a real
//! cluster, drives a workload, injects faults on a seeded schedule, heals,
//! drains, and checks a history of every operation against Sundial's
//! invariants.
//!
//! - [`cluster`]: the nodes and the faults that reach them; process mode:
//!   `sundial serve` processes, each in its own network namespace on a
//!   private bridge (partitions are iptables rules).
//! - [`docker`]: container mode: one container per node of the locally
//!   built image (partitions are `docker network disconnect`).
//! - [`workload`]: producers with idempotency keys, a state reader,
//!   schedules.
//! - [`worker`]: the worker process (`chaos worker`): slow, failing and
//!   crashing jobs, every lease and answer recorded.
//! - [`nemesis`]: the faults.
//! - [`history`]: the record of every operation.
//! - [`checker`]: one function per invariant.
//! - [`run`]: one run from start to summary line.

pub mod checker;
pub mod cluster;
pub mod docker;
pub mod history;
pub mod nemesis;
pub mod run;
pub mod worker;
pub mod workload;
