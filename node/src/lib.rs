//! The `sundial` binary's library half: config, wiring, gRPC services and the
//! CLI. Only this crate reads files or env, binds sockets, or installs the
//! tracing subscriber.
//!
//! Layout:
//! - [`config`]: `cluster.toml` → `SUNDIAL_*` env → flags, validated up front.
//! - [`server`]: starts a node: storage, Raft transport, actor plane, actors,
//!   client gRPC (jobs, workers, cluster, health, reflection).
//! - [`actor_plane`]: the `ractor_cluster` node server and peer dialing.
//! - [`cli`], [`commands`], [`worker_cmd`], [`schedule_cmd`], [`bench`]: the
//!   command line.
//! - [`failpoints`]: run-time fault injection for the chaos harness (feature
//!   `failpoints`).

pub mod actor_plane;
pub mod bench;
pub mod bench_e2e;
pub mod bench_timers;
pub mod cli;
pub mod commands;
pub mod config;
pub mod failpoints;
pub mod schedule_cmd;
pub mod server;
pub mod worker_cmd;
