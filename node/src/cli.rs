//! Command-line interface of the `sundial` binary.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(name = "sundial", version, about = "Sundial: a distributed job scheduler")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a one-node cluster with embedded defaults (no config file needed).
    Dev {
        /// Where the node keeps its data.
        #[arg(long, default_value = "./sundial-data", env = "SUNDIAL_DATA_DIR")]
        data_dir: PathBuf,
        /// Where clients connect.
        #[arg(long, default_value = "127.0.0.1:7070")]
        listen: String,
    },
    /// Run one member of a cluster described by a config file.
    Serve {
        /// The cluster config (see cluster.toml).
        #[arg(long, env = "SUNDIAL_CONFIG")]
        config: PathBuf,
        /// This node's id in the config.
        #[arg(long, env = "SUNDIAL_NODE")]
        node: u64,
        /// Overrides the node's data directory.
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Overrides cluster.cookie.
        #[arg(long)]
        cookie: Option<String>,
        /// Overrides limits.max_payload_bytes.
        #[arg(long)]
        max_payload_bytes: Option<usize>,
    },
    /// Print the version and compiled-in features as JSON (for tooling).
    #[command(hide = true)]
    BuildInfo,
    /// Submit, read, cancel and list jobs.
    Job {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: JobCommand,
    },
    /// Inspect the cluster.
    Cluster {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ClusterCommand,
    },
    /// Run jobs: runs a command for each job of the queues, with the payload
    /// on stdin. Exit 0 completes the job with stdout as its result; any
    /// other exit fails it with stderr as the error (retried by its policy).
    Worker {
        #[command(flatten)]
        client: ClientArgs,
        #[command(flatten)]
        worker: WorkerArgs,
    },
    /// Pause, resume and inspect queues.
    Queue {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: QueueCommand,
    },
    /// Create and manage recurring schedules.
    Schedule {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: ScheduleCommand,
    },
    /// Measure a running cluster.
    Bench {
        #[command(flatten)]
        client: ClientArgs,
        #[command(subcommand)]
        command: BenchCommand,
    },
}

#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Node to talk to.
    #[arg(long, global = true, env = "SUNDIAL_ADDR", default_value = "127.0.0.1:7070")]
    pub addr: String,
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
    /// Deadline of each request to the node.
    #[arg(long, global = true, default_value = "10s", value_parser = humantime::parse_duration)]
    pub request_timeout: std::time::Duration,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    Table,
    Json,
}

#[derive(Subcommand, Debug)]
pub enum JobCommand {
    /// Submit a job; prints its id alone on stdout.
    Submit {
        /// Queue to put the job on.
        #[arg(long)]
        queue: String,
        /// Payload text, or @FILE to read it from a file (@- reads stdin).
        #[arg(long, default_value = "")]
        payload: String,
        /// Tenant (default "default").
        #[arg(long, default_value = "")]
        namespace: String,
        /// Run after this delay, e.g. 30s, 5m.
        #[arg(long, value_parser = humantime::parse_duration, conflicts_with = "at")]
        delay: Option<std::time::Duration>,
        /// Run at this time (RFC 3339, e.g. 2026-12-24T18:00:00Z).
        #[arg(long)]
        at: Option<String>,
        /// Higher runs first inside a queue.
        #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
        priority: i32,
        /// A header KEY=VALUE handed to the worker; repeatable.
        #[arg(long = "header", value_name = "KEY=VALUE")]
        headers: Vec<String>,
        /// Attempts in all, the first included (default 5).
        #[arg(long)]
        max_attempts: Option<u32>,
        /// Retry backoff as INITIAL..MAX, e.g. 1s..5m (doubles each attempt).
        #[arg(long, value_name = "INITIAL..MAX")]
        backoff: Option<String>,
        /// How long a lease lasts without a heartbeat, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        timeout: Option<std::time::Duration>,
        /// Submitting the same key again (within 24 h) prints the first job's
        /// id and creates nothing.
        #[arg(long)]
        idempotency_key: Option<String>,
        #[command(flatten)]
        http: HttpArgs,
    },
    /// Replay a dead job with a fresh retry budget.
    Retry { id: String },
    /// Show one job.
    Get {
        id: String,
        /// Read this node's replica instead of the shard leader (maybe stale).
        #[arg(long)]
        local: bool,
    },
    /// Cancel a job that has not finished.
    Cancel { id: String },
    /// List jobs.
    List {
        #[arg(long, default_value = "")]
        namespace: String,
        #[arg(long, default_value = "")]
        queue: String,
        /// scheduled, ready, leased, succeeded, dead or cancelled.
        #[arg(long)]
        state: Option<String>,
        /// Jobs per page.
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Continue from a previous page's token.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Read this node's replicas instead of the shard leaders.
        #[arg(long)]
        local: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum QueueCommand {
    /// No new leases of the queue's jobs until resumed (jobs keep arriving).
    Pause(QueueArgs),
    Resume(QueueArgs),
    /// Jobs of the queue by state.
    Stats(QueueArgs),
    /// Most jobs of the queue leased at once across the cluster.
    Limit {
        #[command(flatten)]
        queue: QueueArgs,
        /// The limit; 0 removes it.
        #[arg(long)]
        concurrency: u32,
    },
}

#[derive(Args, Debug)]
pub struct QueueArgs {
    #[arg(long)]
    pub queue: String,
    #[arg(long, default_value = "")]
    pub namespace: String,
}

#[derive(Subcommand, Debug)]
pub enum ScheduleCommand {
    /// Create a schedule (an existing id is left unchanged and reported).
    Create(ScheduleSpecArgs),
    /// Replace a schedule's definition (its history stays).
    Update(ScheduleSpecArgs),
    Get {
        id: String,
        #[arg(long, default_value = "")]
        namespace: String,
    },
    List {
        #[arg(long, default_value = "")]
        namespace: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long, default_value = "")]
        page_token: String,
    },
    Pause {
        id: String,
        #[arg(long, default_value = "")]
        namespace: String,
    },
    Resume {
        id: String,
        #[arg(long, default_value = "")]
        namespace: String,
    },
    Delete {
        id: String,
        #[arg(long, default_value = "")]
        namespace: String,
    },
}

#[derive(Args, Debug)]
pub struct ScheduleSpecArgs {
    /// The schedule's id, unique in its namespace.
    #[arg(long)]
    pub id: String,
    /// Queue the jobs go to.
    #[arg(long)]
    pub queue: String,
    /// Cron expression, 6 fields with seconds or 5 (e.g. '0 30 2 * * *').
    #[arg(long, conflicts_with = "every", required_unless_present = "every")]
    pub cron: Option<String>,
    /// IANA time zone of the cron expression (default UTC).
    #[arg(long, requires = "cron")]
    pub tz: Option<String>,
    /// Fixed interval instead of cron, e.g. 10s, 5m.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub every: Option<std::time::Duration>,
    /// Payload text, or @FILE.
    #[arg(long, default_value = "")]
    pub payload: String,
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Firings missed during downtime: skip, one or all.
    #[arg(long, default_value = "one")]
    pub catch_up: String,
    /// A firing while the previous job runs: allow, skip or buffer-one.
    #[arg(long, default_value = "allow")]
    pub overlap: String,
    /// Spread each job's due time up to this much after its firing.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub jitter: Option<std::time::Duration>,
    #[arg(long, default_value_t = 0, allow_negative_numbers = true)]
    pub priority: i32,
    /// Attempts per job (default 5).
    #[arg(long)]
    pub max_attempts: Option<u32>,
    /// Lease timeout of each job, e.g. 30s.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub timeout: Option<std::time::Duration>,
    #[command(flatten)]
    pub http: HttpArgs,
}

/// An HTTP target: the cluster calls this URL for the job instead of handing
/// it to a worker (2xx completes it; anything else fails the attempt).
#[derive(Args, Debug, Clone)]
pub struct HttpArgs {
    /// Call this http:// or https:// URL with the payload as the body.
    #[arg(long, value_name = "URL")]
    pub http_url: Option<String>,
    /// GET, POST, PUT, PATCH, DELETE or HEAD (default POST).
    #[arg(long, requires = "http_url", value_name = "METHOD")]
    pub http_method: Option<String>,
    /// A request header NAME=VALUE; repeatable.
    #[arg(long = "http-header", requires = "http_url", value_name = "NAME=VALUE")]
    pub http_headers: Vec<String>,
    /// How long one call may take, e.g. 10s (default 30s).
    #[arg(long, requires = "http_url", value_parser = humantime::parse_duration)]
    pub http_timeout: Option<std::time::Duration>,
}

#[derive(Args, Debug)]
pub struct WorkerArgs {
    /// Queue to take jobs from; repeatable.
    #[arg(long, required = true)]
    pub queue: Vec<String>,
    /// Tenant of the queues (default "default").
    #[arg(long, default_value = "")]
    pub namespace: String,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1)]
    pub concurrency: u32,
    /// Jobs held leased beyond the running ones, so the next is ready when
    /// a command ends (their leases are kept alive while they wait).
    #[arg(long, default_value_t = 0)]
    pub prefetch: u32,
    /// Shell command run for each job (by `sh -c`). It gets the payload on
    /// stdin and SUNDIAL_JOB_ID, SUNDIAL_ATTEMPT, SUNDIAL_QUEUE,
    /// SUNDIAL_NAMESPACE in its environment.
    #[arg(long)]
    pub exec: String,
    /// The worker's name in leases (default host-pid).
    #[arg(long)]
    pub id: Option<String>,
}

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Nodes, shards, leaders and health.
    Status,
    /// Wait until the node answers and every shard it hosts has a leader;
    /// exits 1 if that does not happen within --within.
    WaitReady {
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        within: std::time::Duration,
    },
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// Submit throughput and latency at several concurrency levels.
    Submit(LoadArgs),
    /// The same load as `submit`, as etcd v3 puts against an etcd cluster
    /// (--targets are etcd client URLs' host:port), for comparison.
    EtcdPut(LoadArgs),
    /// Timer precision: jobs due over a span, lateness of their delivery.
    Timers(TimerArgs),
    /// Drain throughput: a backlog of jobs leased and completed by worker slots.
    E2e(DrainArgs),
}

#[derive(Args, Debug)]
pub struct DrainArgs {
    /// Jobs in the backlog.
    #[arg(long, default_value_t = 50_000)]
    pub jobs: u64,
    /// Worker slots in all.
    #[arg(long, default_value_t = 16)]
    pub slots: u32,
    /// Worker streams the slots are split over.
    #[arg(long, default_value_t = 4)]
    pub workers: u32,
    /// Jobs each stream holds leased beyond its running slots (SDK
    /// `Worker::prefetch`), in all; 0 leases a job only for a free slot.
    #[arg(long, default_value_t = 0)]
    pub prefetch: u32,
    /// Concurrent clients filling the backlog.
    #[arg(long, default_value_t = 64)]
    pub submitters: usize,
    /// Nodes (default: --addr only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
}

#[derive(Args, Debug)]
pub struct TimerArgs {
    /// Jobs in all.
    #[arg(long, default_value_t = 100_000)]
    pub jobs: u64,
    /// The jobs' due times spread evenly over this span.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub span: std::time::Duration,
    /// The first job is due this long after the bench starts.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub lead: std::time::Duration,
    /// Worker streams, spread over the targets.
    #[arg(long, default_value_t = 6)]
    pub workers: u32,
    /// Slots per worker.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u32,
    /// Concurrent submitting clients.
    #[arg(long, default_value_t = 32)]
    pub submitters: usize,
    /// Nodes (default: --addr only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    #[arg(long, default_value = "timers")]
    pub queue: String,
}

#[derive(Args, Debug)]
pub struct LoadArgs {
    /// Concurrent clients per run, comma-separated.
    #[arg(long, default_value = "1,16,64,256", value_delimiter = ',')]
    pub clients: Vec<usize>,
    /// Length of each run.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub duration: std::time::Duration,
    /// Payload (value) size in bytes.
    #[arg(long, default_value_t = 100)]
    pub payload_bytes: usize,
    /// Nodes to spread clients over (default: --addr only), comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub targets: Vec<String>,
    /// Queue to submit to.
    #[arg(long, default_value = "bench")]
    pub queue: String,
    /// Submit jobs due this long after they are accepted (Sundial only), e.g.
    /// 2h to fill a cluster with scheduled jobs.
    #[arg(long, value_parser = humantime::parse_duration)]
    pub delay: Option<std::time::Duration>,
}
