//! Chaos and failover testing (issue #4): a harness that starts real clusters,
//! injects faults and checks a history of every operation against Sundial's
//! invariants.
//!
//! Not built yet. Today the failover proof lives in
//! `node/tests/t10_cluster_failover.rs` (SIGKILL of the busiest leader under
//! load, then a check of every replica); this crate is where the general
//! harness, nemeses and checkers will go.
