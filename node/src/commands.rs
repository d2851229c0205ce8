//! Client subcommands, built on the Rust SDK.

use std::io::Read;

use sundial_sdk::proto::{self, JobState};
use sundial_sdk::{Client, ListJobs, NewJob};

use crate::cli::{ClientArgs, ClusterCommand, JobCommand, Output, QueueCommand};

/// A failure the CLI reports as one line; `usage` ones exit with 2.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub usage: bool,
}

impl CliError {
    pub fn usage(message: impl Into<String>) -> CliError {
        CliError {
            message: message.into(),
            usage: true,
        }
    }
}

impl From<sundial_sdk::Error> for CliError {
    fn from(e: sundial_sdk::Error) -> Self {
        CliError {
            message: e.to_string(),
            usage: false,
        }
    }
}

pub async fn connect(args: &ClientArgs) -> Result<Client, CliError> {
    Ok(Client::connect(&args.addr)
        .await?
        .with_timeout(args.request_timeout))
}

pub fn read_payload(spec: &str) -> Result<Vec<u8>, CliError> {
    let Some(path) = spec.strip_prefix('@') else {
        return Ok(spec.as_bytes().to_vec());
    };
    if path == "-" {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| CliError::usage(format!("--payload @-: cannot read stdin: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| CliError::usage(format!("--payload @{path}: {e}")))
}

/// Parses `INITIAL..MAX`, e.g. `1s..5m`.
fn parse_backoff(spec: &str) -> Result<(std::time::Duration, std::time::Duration), CliError> {
    let bad = |why: String| {
        CliError::usage(format!(
            "--backoff {spec:?}: {why} (expected INITIAL..MAX, e.g. 1s..5m)"
        ))
    };
    let (a, b) = spec.split_once("..").ok_or_else(|| bad("no \"..\"".into()))?;
    let initial = humantime::parse_duration(a.trim()).map_err(|e| bad(format!("{a:?}: {e}")))?;
    let max = humantime::parse_duration(b.trim()).map_err(|e| bad(format!("{b:?}: {e}")))?;
    if initial > max {
        return Err(bad("INITIAL is more than MAX".into()));
    }
    Ok((initial, max))
}

fn parse_state(text: &str) -> Result<JobState, CliError> {
    match text.to_ascii_lowercase().as_str() {
        "scheduled" => Ok(JobState::Scheduled),
        "ready" => Ok(JobState::Ready),
        "leased" => Ok(JobState::Leased),
        "succeeded" => Ok(JobState::Succeeded),
        "dead" => Ok(JobState::Dead),
        "cancelled" | "canceled" => Ok(JobState::Cancelled),
        other => Err(CliError::usage(format!(
            "--state {other:?}: expected scheduled, ready, leased, succeeded, dead or cancelled"
        ))),
    }
}

fn state_name(state: i32) -> &'static str {
    match JobState::try_from(state) {
        Ok(JobState::Scheduled) => "scheduled",
        Ok(JobState::Ready) => "ready",
        Ok(JobState::Leased) => "leased",
        Ok(JobState::Succeeded) => "succeeded",
        Ok(JobState::Dead) => "dead",
        Ok(JobState::Cancelled) => "cancelled",
        _ => "unknown",
    }
}

pub fn time_text(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
        .unwrap_or_else(|| ms.to_string())
}

fn job_json(job: &proto::Job) -> serde_json::Value {
    serde_json::json!({
        "id": job.id,
        "shard": job.shard,
        "namespace": job.namespace,
        "queue": job.queue,
        "state": state_name(job.state),
        "priority": job.priority,
        "attempts": job.attempts,
        "run_at": time_text(job.run_at_ms),
        "created_at": time_text(job.created_at_ms),
        "updated_at": time_text(job.updated_at_ms),
        "headers": job.headers,
        "payload": String::from_utf8_lossy(&job.payload),
        "max_attempts": job.retry.as_ref().map(|r| r.max_attempts),
        "timeout_ms": job.timeout_ms,
        "lease": job.lease.as_ref().map(|l| serde_json::json!({
            "token": l.token,
            "deadline": time_text(l.deadline_ms),
            "worker": l.worker_id,
            "node": l.node_id,
        })),
        "result": String::from_utf8_lossy(&job.result),
        "last_error": job.last_error,
        "http": job.http.as_ref().map(|t| serde_json::json!({
            "url": t.url,
            "method": t.method,
            "headers": t.headers,
            "timeout_ms": t.timeout_ms,
        })),
        "schedule_id": job.schedule_id,
    })
}

fn print_job(job: &proto::Job, output: Output) {
    match output {
        Output::Json => println!("{}", job_json(job)),
        Output::Table => {
            let payload = String::from_utf8_lossy(&job.payload);
            let shown: String = payload.chars().take(200).collect();
            println!("id:         {}", job.id);
            println!("shard:      {}", job.shard);
            println!("namespace:  {}", job.namespace);
            println!("queue:      {}", job.queue);
            println!("state:      {}", state_name(job.state));
            println!("priority:   {}", job.priority);
            let max = job.retry.as_ref().map(|r| r.max_attempts).unwrap_or(0);
            println!("attempts:   {} of {max}", job.attempts);
            println!("run_at:     {}", time_text(job.run_at_ms));
            println!("created_at: {}", time_text(job.created_at_ms));
            println!("updated_at: {}", time_text(job.updated_at_ms));
            for (k, v) in &job.headers {
                println!("header:     {k}={v}");
            }
            if let Some(t) = &job.http {
                println!("http:       {} {} (timeout {} ms)", t.method, t.url, t.timeout_ms);
            }
            if !job.schedule_id.is_empty() {
                println!("schedule:   {}", job.schedule_id);
            }
            if let Some(l) = &job.lease {
                println!(
                    "lease:      token {} held by {} on node {} until {}",
                    l.token,
                    l.worker_id,
                    l.node_id,
                    time_text(l.deadline_ms)
                );
            }
            if !job.last_error.is_empty() {
                println!("last_error: {}", job.last_error);
            }
            if !job.result.is_empty() {
                let result = String::from_utf8_lossy(&job.result);
                println!("result:     {}", result.chars().take(200).collect::<String>());
            }
            println!(
                "payload:    {shown}{}",
                if payload.chars().count() > 200 { "…" } else { "" }
            );
        }
    }
}

pub async fn job(args: ClientArgs, command: JobCommand) -> Result<(), CliError> {
    match command {
        JobCommand::Submit {
            queue,
            payload,
            namespace,
            delay,
            at,
            priority,
            headers,
            max_attempts,
            backoff,
            timeout,
            idempotency_key,
            http,
        } => {
            let payload = read_payload(&payload)?;
            let mut job = NewJob::new(queue, payload)
                .namespace(namespace)
                .priority(priority);
            if let Some(n) = max_attempts {
                job = job.max_attempts(n);
            }
            if let Some(spec) = backoff {
                let (initial, max) = parse_backoff(&spec)?;
                job = job.backoff(initial, max);
            }
            if let Some(timeout) = timeout {
                job = job.timeout(timeout);
            }
            if let Some(key) = idempotency_key {
                job = job.idempotency_key(key);
            }
            if let Some(delay) = delay {
                job = job.delay_ms(delay.as_millis() as u64);
            }
            if let Some(at) = at {
                let when = chrono::DateTime::parse_from_rfc3339(&at)
                    .map_err(|e| CliError::usage(format!("--at {at:?}: {e} (expected RFC 3339)")))?;
                job = job.run_at_ms(when.timestamp_millis());
            }
            for header in headers {
                let (k, v) = header
                    .split_once('=')
                    .ok_or_else(|| CliError::usage(format!("--header {header:?}: expected KEY=VALUE")))?;
                job = job.header(k, v);
            }
            if let Some(target) = http_target(http)? {
                job = job.http(target);
            }
            let mut client = connect(&args).await?;
            let id = client.submit(job).await?;
            println!("{id}");
        }
        JobCommand::Get { id, local } => {
            let mut client = connect(&args).await?;
            let consistency = if local {
                proto::ReadConsistency::Local
            } else {
                proto::ReadConsistency::Unspecified
            };
            let job = client.get_job_with(&id, consistency).await?;
            print_job(&job, args.output);
        }
        JobCommand::Retry { id } => {
            let mut client = connect(&args).await?;
            let job = client.retry_job(&id).await?;
            print_job(&job, args.output);
        }
        JobCommand::Cancel { id } => {
            let mut client = connect(&args).await?;
            let job = client.cancel_job(&id).await?;
            print_job(&job, args.output);
        }
        JobCommand::List {
            namespace,
            queue,
            state,
            limit,
            page_token,
            local,
        } => {
            let state = state.as_deref().map(parse_state).transpose()?;
            let mut client = connect(&args).await?;
            let page = client
                .list_jobs(ListJobs {
                    namespace,
                    queue,
                    state,
                    page_size: limit,
                    page_token,
                    local,
                })
                .await?;
            match args.output {
                Output::Json => {
                    let jobs: Vec<_> = page.jobs.iter().map(job_json).collect();
                    println!(
                        "{}",
                        serde_json::json!({"jobs": jobs, "next_page_token": page.next_page_token})
                    );
                }
                Output::Table => {
                    println!(
                        "{:<32}  {:<10}  {:<16}  {:<24}  {:>8}",
                        "ID", "STATE", "QUEUE", "RUN AT", "ATTEMPTS"
                    );
                    for job in &page.jobs {
                        println!(
                            "{:<32}  {:<10}  {:<16}  {:<24}  {:>8}",
                            job.id,
                            state_name(job.state),
                            job.queue,
                            time_text(job.run_at_ms),
                            job.attempts
                        );
                    }
                    if !page.next_page_token.is_empty() {
                        eprintln!("more: --page-token {}", page.next_page_token);
                    }
                }
            }
        }
    }
    Ok(())
}

pub async fn queue(args: ClientArgs, command: QueueCommand) -> Result<(), CliError> {
    let mut client = connect(&args).await?;
    let stats = match command {
        QueueCommand::Pause(q) => client.pause_queue(&q.namespace, &q.queue).await?,
        QueueCommand::Resume(q) => client.resume_queue(&q.namespace, &q.queue).await?,
        QueueCommand::Stats(q) => client.queue_stats(&q.namespace, &q.queue).await?,
        QueueCommand::Limit {
            queue: q,
            concurrency,
        } => {
            client
                .set_queue_concurrency(&q.namespace, &q.queue, concurrency)
                .await?
        }
    };
    match args.output {
        Output::Json => println!(
            "{}",
            serde_json::json!({
                "namespace": stats.namespace, "queue": stats.queue, "paused": stats.paused,
                "scheduled": stats.scheduled, "ready": stats.ready, "leased": stats.leased,
                "succeeded": stats.succeeded, "dead": stats.dead, "cancelled": stats.cancelled,
                "concurrency_limit": (stats.concurrency_limit > 0).then_some(stats.concurrency_limit),
            })
        ),
        Output::Table => {
            let limit = match stats.concurrency_limit {
                0 => String::new(),
                n => format!(" (at most {n} leased at once)"),
            };
            println!(
                "queue {}/{}{}{limit}",
                stats.namespace,
                stats.queue,
                if stats.paused { " (PAUSED)" } else { "" }
            );
            println!(
                "scheduled {}  ready {}  leased {}  succeeded {}  dead {}  cancelled {}",
                stats.scheduled, stats.ready, stats.leased, stats.succeeded, stats.dead, stats.cancelled
            );
        }
    }
    Ok(())
}

pub async fn cluster(args: ClientArgs, command: ClusterCommand) -> Result<(), CliError> {
    match command {
        ClusterCommand::WaitReady { within } => {
            let deadline = std::time::Instant::now() + within;
            loop {
                let last = match Client::connect(&args.addr).await {
                    Ok(client) => match client.with_timeout(args.request_timeout).cluster_info().await {
                        Ok(info) => {
                            let leaderless = info.shards.iter().filter(|s| !s.healthy).count();
                            // Usable means: every shard has a leader this node
                            // can reach (itself, or a peer on the actor plane).
                            let unreachable: Vec<u64> = info
                                .shards
                                .iter()
                                .map(|s| s.leader)
                                .filter(|l| *l != 0)
                                .filter(|l| !info.nodes.iter().any(|n| n.id == *l && n.reachable))
                                .collect();
                            if info.healthy && unreachable.is_empty() {
                                return Ok(());
                            }
                            if leaderless > 0 {
                                format!("{leaderless} shards without a leader")
                            } else {
                                format!("shard leaders {unreachable:?} not reachable yet")
                            }
                        }
                        Err(e) => e.to_string(),
                    },
                    Err(e) => e.to_string(),
                };
                if std::time::Instant::now() >= deadline {
                    return Err(CliError {
                        message: format!(
                            "{} not ready within {}: {last}",
                            args.addr,
                            humantime::format_duration(within)
                        ),
                        usage: false,
                    });
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        }
        ClusterCommand::Status => {
            let mut client = connect(&args).await?;
            let info = client.cluster_info().await?;
            match args.output {
                Output::Json => {
                    let nodes: Vec<_> = info
                        .nodes
                        .iter()
                        .map(|n| serde_json::json!({"id": n.id, "client_addr": n.client_addr, "raft_addr": n.raft_addr, "reachable": n.reachable}))
                        .collect();
                    let shards: Vec<_> = info
                        .shards
                        .iter()
                        .map(|s| serde_json::json!({"shard": s.shard, "leader": s.leader, "term": s.term, "members": s.members, "last_applied": s.last_applied, "healthy": s.healthy}))
                        .collect();
                    println!(
                        "{}",
                        serde_json::json!({"node_id": info.node_id, "healthy": info.healthy, "shard_count": info.shard_count, "nodes": nodes, "shards": shards})
                    );
                }
                Output::Table => {
                    println!(
                        "answered by node {} — cluster {}",
                        info.node_id,
                        if info.healthy { "healthy" } else { "DEGRADED" }
                    );
                    println!("{:<6}  {:<22}  {:<22}  REACHABLE", "NODE", "CLIENT", "RAFT");
                    for n in &info.nodes {
                        println!(
                            "{:<6}  {:<22}  {:<22}  {}",
                            n.id,
                            n.client_addr,
                            n.raft_addr,
                            if n.reachable { "yes" } else { "no" }
                        );
                    }
                    println!(
                        "{:<6}  {:<7}  {:<6}  {:<12}  {:<10}  HEALTHY",
                        "SHARD", "LEADER", "TERM", "APPLIED", "MEMBERS"
                    );
                    for s in &info.shards {
                        let members: Vec<String> = s.members.iter().map(|m| m.to_string()).collect();
                        let leader = if s.leader == 0 {
                            "-".to_string()
                        } else {
                            s.leader.to_string()
                        };
                        println!(
                            "{:<6}  {:<7}  {:<6}  {:<12}  {:<10}  {}",
                            s.shard,
                            leader,
                            s.term,
                            s.last_applied,
                            members.join(","),
                            if s.healthy { "yes" } else { "no" }
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// The HTTP target the `--http-*` flags describe, if `--http-url` is given.
pub fn http_target(a: crate::cli::HttpArgs) -> Result<Option<sundial_sdk::HttpTarget>, CliError> {
    let Some(url) = a.http_url else {
        return Ok(None);
    };
    let mut target = sundial_sdk::HttpTarget::post(url);
    if let Some(method) = a.http_method {
        target = target.method(method);
    }
    if let Some(timeout) = a.http_timeout {
        target = target.timeout(timeout);
    }
    for header in a.http_headers {
        let (k, v) = header
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--http-header {header:?}: expected NAME=VALUE")))?;
        target = target.header(k, v);
    }
    Ok(Some(target))
}
