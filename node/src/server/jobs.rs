//! `JobService`: validates requests, mints job ids, and hands them to the
//! gateway. Nothing is written unless the request is valid.

use std::sync::Arc;
use std::time::{Duration, Instant};

use sundial_actors::executor::call::check_target;
use sundial_actors::GatewayHandle;
use sundial_proto::v1 as pb;
use sundial_proto::v1::job_service_server::JobService;
use sundial_raft::job::{HttpTarget, RetryPolicy};
use sundial_raft::schedule::JobTemplate;
use sundial_raft::store::JobFilter;
use sundial_raft::{Job, JobId, JobState};
use tonic::{Request, Response, Status};

use super::status::{from_gateway, invalid};
use crate::config::NodeConfig;

/// Longest queue or namespace name, in bytes.
const MAX_NAME_BYTES: usize = 128;
const MAX_HEADERS: usize = 64;
const MAX_HEADER_KEY_BYTES: usize = 128;
const MAX_HEADER_VALUE_BYTES: usize = 4096;
const DEFAULT_PAGE_SIZE: u32 = 100;
const MAX_PAGE_SIZE: u32 = 1000;
const DEFAULT_NAMESPACE: &str = "default";
const DEFAULT_TIMEOUT_MS: u64 = 30_000;
const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;
const MAX_ATTEMPTS: u32 = 1000;
const MAX_BACKOFF_MS: u64 = 7 * 24 * 3600 * 1000;
const MAX_IDEMPOTENCY_KEY_BYTES: usize = 256;

pub struct JobApi {
    cfg: Arc<NodeConfig>,
    gateway: GatewayHandle,
}

impl JobApi {
    pub fn new(cfg: Arc<NodeConfig>, gateway: GatewayHandle) -> JobApi {
        JobApi { cfg, gateway }
    }

    fn deadline<T>(&self, request: &Request<T>) -> Instant {
        deadline(&self.cfg, request)
    }
}

/// The deadline of a request: what the client asked for (within the
/// configured limit), less a little for the answer to travel.
pub fn deadline<T>(cfg: &NodeConfig, request: &Request<T>) -> Instant {
    let asked = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout);
    let budget = cfg.request_timeout(asked);
    Instant::now() + budget.saturating_sub(budget / 20)
}

pub use sundial_raft::job::now_ms;

/// Parses gRPC's `grpc-timeout` header: digits then a unit letter.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    let (digits, unit) = value.split_at(value.len().checked_sub(1)?);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.saturating_mul(3600)),
        "M" => Duration::from_secs(n.saturating_mul(60)),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Checks a namespace or queue name; `None` when it is valid.
pub fn check_name(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() {
        return Err(invalid(field, "must not be empty"));
    }
    if value.len() > MAX_NAME_BYTES {
        return Err(invalid(
            field,
            format!("is {} bytes, at most {MAX_NAME_BYTES}", value.len()),
        ));
    }
    if let Some(c) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(invalid(
            field,
            format!("{value:?} contains {c:?}; allowed are A-Z a-z 0-9 . _ -"),
        ));
    }
    Ok(())
}

pub fn namespace_or_default(value: &str) -> Result<String, Status> {
    if value.is_empty() {
        return Ok(DEFAULT_NAMESPACE.to_string());
    }
    check_name("namespace", value)?;
    Ok(value.to_string())
}

pub fn parse_id(field: &str, value: &str, shard_count: u32) -> Result<JobId, Status> {
    let id: JobId = value.parse().map_err(|e| invalid(field, e))?;
    if id.shard() >= shard_count {
        return Err(invalid(
            field,
            format!(
                "{value:?} names shard {}, but the cluster has {shard_count}",
                id.shard()
            ),
        ));
    }
    Ok(id)
}

pub fn state_to_proto(state: JobState) -> pb::JobState {
    match state {
        JobState::Scheduled => pb::JobState::Scheduled,
        JobState::Ready => pb::JobState::Ready,
        JobState::Leased => pb::JobState::Leased,
        JobState::Succeeded => pb::JobState::Succeeded,
        JobState::Dead => pb::JobState::Dead,
        JobState::Cancelled => pb::JobState::Cancelled,
    }
}

fn state_from_proto(value: i32) -> Result<Option<JobState>, Status> {
    let state =
        pb::JobState::try_from(value).map_err(|_| invalid("state", format!("{value} is not a job state")))?;
    Ok(match state {
        pb::JobState::Unspecified => None,
        pb::JobState::Scheduled => Some(JobState::Scheduled),
        pb::JobState::Ready => Some(JobState::Ready),
        pb::JobState::Leased => Some(JobState::Leased),
        pb::JobState::Succeeded => Some(JobState::Succeeded),
        pb::JobState::Dead => Some(JobState::Dead),
        pb::JobState::Cancelled => Some(JobState::Cancelled),
    })
}

fn is_local(consistency: i32) -> Result<bool, Status> {
    match pb::ReadConsistency::try_from(consistency) {
        Ok(pb::ReadConsistency::Unspecified) => Ok(false),
        Ok(pb::ReadConsistency::Local) => Ok(true),
        Err(_) => Err(invalid(
            "consistency",
            format!("{consistency} is not a read consistency"),
        )),
    }
}

pub fn job_to_proto(job: Job) -> pb::Job {
    let state = job.effective_state(now_ms());
    pb::Job {
        id: job.id.to_string(),
        shard: job.id.shard(),
        namespace: job.namespace,
        queue: job.queue,
        payload: job.payload,
        headers: job.headers.into_iter().collect(),
        run_at_ms: job.run_at_ms,
        priority: job.priority,
        state: state_to_proto(state) as i32,
        attempts: job.attempts,
        created_at_ms: job.created_at_ms,
        updated_at_ms: job.updated_at_ms,
        retry: Some(pb::RetryPolicy {
            max_attempts: job.retry.max_attempts,
            initial_backoff_ms: job.retry.initial_backoff_ms,
            max_backoff_ms: job.retry.max_backoff_ms,
        }),
        timeout_ms: job.timeout_ms,
        lease: job.lease.map(|l| pb::Lease {
            token: l.token,
            deadline_ms: l.deadline_ms,
            leased_at_ms: l.leased_at_ms,
            worker_id: l.worker,
            node_id: l.node,
        }),
        result: job.result.unwrap_or_default(),
        last_error: job.last_error.unwrap_or_default(),
        idempotency_key: job.idempotency_key.unwrap_or_default(),
        http: job.http.map(http_to_proto),
        schedule_id: job.schedule_id.unwrap_or_default(),
    }
}

pub fn http_to_proto(t: HttpTarget) -> pb::HttpTarget {
    pb::HttpTarget {
        url: t.url,
        method: t.method,
        headers: t.headers.into_iter().collect(),
        timeout_ms: t.timeout_ms,
    }
}

/// Checks a request's HTTP target and fills in its defaults. Refused when
/// this node runs no executors (`executor.concurrency = 0`).
pub fn http_target(cfg: &NodeConfig, given: Option<pb::HttpTarget>) -> Result<Option<HttpTarget>, Status> {
    let Some(t) = given else {
        return Ok(None);
    };
    if cfg.executor_concurrency == 0 {
        return Err(Status::failed_precondition(
            "http: HTTP targets are turned off on this cluster (executor.concurrency = 0)",
        ));
    }
    check_target(&t.url, &t.method, t.headers.into_iter().collect(), t.timeout_ms)
        .map(Some)
        .map_err(|bad| invalid(bad.field, bad.message))
}

/// A list's page size: default when 0, checked against the limit.
pub fn page_size(given: u32) -> Result<u32, Status> {
    match given {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n > MAX_PAGE_SIZE => Err(invalid(
            "page_size",
            format!("{n} is over the limit of {MAX_PAGE_SIZE}"),
        )),
        n => Ok(n),
    }
}

/// Checks the count and sizes of a job's headers.
pub fn check_headers(headers: &std::collections::HashMap<String, String>) -> Result<(), Status> {
    if headers.len() > MAX_HEADERS {
        return Err(invalid(
            "headers",
            format!("{} headers, at most {MAX_HEADERS}", headers.len()),
        ));
    }
    for (key, value) in headers {
        if key.is_empty() || key.len() > MAX_HEADER_KEY_BYTES {
            return Err(invalid(
                "headers",
                format!("key {key:?} must be 1..={MAX_HEADER_KEY_BYTES} bytes"),
            ));
        }
        if value.len() > MAX_HEADER_VALUE_BYTES {
            return Err(invalid(
                "headers",
                format!("value of {key:?} is over {MAX_HEADER_VALUE_BYTES} bytes"),
            ));
        }
    }
    Ok(())
}

/// A lease timeout from a request: default when 0, checked against the limit.
pub fn timeout_ms(given: u64) -> Result<u64, Status> {
    match given {
        0 => Ok(DEFAULT_TIMEOUT_MS),
        n if n > MAX_TIMEOUT_MS => Err(invalid(
            "timeout_ms",
            format!("{n} ms is over the limit of {MAX_TIMEOUT_MS} ms (24 h)"),
        )),
        n => Ok(n),
    }
}

/// Fills a retry policy's unset fields with defaults and checks it.
pub fn retry_policy(given: Option<pb::RetryPolicy>) -> Result<RetryPolicy, Status> {
    let defaults = RetryPolicy::default();
    let Some(given) = given else {
        return Ok(defaults);
    };
    let policy = RetryPolicy {
        max_attempts: match given.max_attempts {
            0 => defaults.max_attempts,
            n => n,
        },
        initial_backoff_ms: match given.initial_backoff_ms {
            0 => defaults.initial_backoff_ms,
            n => n,
        },
        max_backoff_ms: match given.max_backoff_ms {
            0 => defaults.max_backoff_ms.max(given.initial_backoff_ms),
            n => n,
        },
    };
    if policy.max_attempts > MAX_ATTEMPTS {
        return Err(invalid(
            "retry.max_attempts",
            format!("{} is over the limit of {MAX_ATTEMPTS}", policy.max_attempts),
        ));
    }
    if policy.max_backoff_ms > MAX_BACKOFF_MS {
        return Err(invalid(
            "retry.max_backoff_ms",
            format!(
                "{} ms is over the limit of {MAX_BACKOFF_MS} ms (7 days)",
                policy.max_backoff_ms
            ),
        ));
    }
    if policy.initial_backoff_ms > policy.max_backoff_ms {
        return Err(invalid(
            "retry.initial_backoff_ms",
            format!(
                "{} ms is more than max_backoff_ms {} ms",
                policy.initial_backoff_ms, policy.max_backoff_ms
            ),
        ));
    }
    Ok(policy)
}

impl JobApi {
    /// Turns a submit request into a job, or says precisely what is wrong.
    fn build_job(&self, req: pb::SubmitJobRequest) -> Result<Job, Status> {
        let namespace = namespace_or_default(&req.namespace)?;
        check_name("queue", &req.queue)?;
        let limit = self.cfg.limits.max_payload_bytes;
        if req.payload.len() > limit {
            return Err(invalid(
                "payload",
                format!("is {} bytes, the limit is {limit} bytes", req.payload.len()),
            ));
        }
        check_headers(&req.headers)?;
        if req.run_at_ms != 0 && req.delay_ms != 0 {
            return Err(invalid("run_at_ms", "set either run_at_ms or delay_ms, not both"));
        }
        if req.run_at_ms < 0 {
            return Err(invalid("run_at_ms", format!("{} is before 1970", req.run_at_ms)));
        }
        let now = now_ms();
        let delay = i64::try_from(req.delay_ms).map_err(|_| invalid("delay_ms", "is too large"))?;
        let run_at_ms = match (req.run_at_ms, delay) {
            (0, 0) => now,
            (0, d) => now
                .checked_add(d)
                .ok_or_else(|| invalid("delay_ms", "is too large"))?,
            (at, _) => at,
        };
        let retry = retry_policy(req.retry)?;
        let timeout_ms = timeout_ms(req.timeout_ms)?;
        let http = http_target(&self.cfg, req.http)?;
        let idempotency_key = match req.idempotency_key.as_str() {
            "" => None,
            key if key.len() > MAX_IDEMPOTENCY_KEY_BYTES => {
                return Err(invalid(
                    "idempotency_key",
                    format!("is {} bytes, at most {MAX_IDEMPOTENCY_KEY_BYTES}", key.len()),
                ))
            }
            key => Some(key.to_string()),
        };
        let shard = match &idempotency_key {
            Some(key) => self.gateway.shard_for_idempotency_key(&namespace, key),
            None => self.gateway.pick_shard(),
        };
        let retention = i64::try_from(self.cfg.limits.idempotency_retention_ms).unwrap_or(i64::MAX);
        let id = JobId::new(shard, now as u64, rand::random());
        let what = JobTemplate {
            queue: req.queue,
            payload: req.payload,
            headers: req.headers.into_iter().collect(),
            priority: req.priority,
            retry,
            timeout_ms,
            http,
        };
        let mut job = Job::new(id, namespace, what, run_at_ms, now);
        if idempotency_key.is_some() {
            job.idempotency_until_ms = now.saturating_add(retention);
            job.idempotency_key = idempotency_key;
        }
        Ok(job)
    }
}

#[tonic::async_trait]
impl JobService for JobApi {
    async fn submit_job(
        &self,
        request: Request<pb::SubmitJobRequest>,
    ) -> Result<Response<pb::SubmitJobResponse>, Status> {
        let deadline = self.deadline(&request);
        let job = self.build_job(request.into_inner())?;
        let (id, created) = self.gateway.submit(job, deadline).await.map_err(from_gateway)?;
        Ok(Response::new(pb::SubmitJobResponse {
            id: id.to_string(),
            shard: id.shard(),
            created,
        }))
    }

    async fn get_job(
        &self,
        request: Request<pb::GetJobRequest>,
    ) -> Result<Response<pb::GetJobResponse>, Status> {
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let id = parse_id("id", &req.id, self.gateway.layout().shard_count)?;
        let local = is_local(req.consistency)?;
        let job = self
            .gateway
            .get(id, local, deadline)
            .await
            .map_err(from_gateway)?;
        Ok(Response::new(pb::GetJobResponse {
            job: Some(job_to_proto(job)),
        }))
    }

    async fn cancel_job(
        &self,
        request: Request<pb::CancelJobRequest>,
    ) -> Result<Response<pb::CancelJobResponse>, Status> {
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let id = parse_id("id", &req.id, self.gateway.layout().shard_count)?;
        let job = self
            .gateway
            .cancel(id, now_ms(), deadline)
            .await
            .map_err(from_gateway)?;
        Ok(Response::new(pb::CancelJobResponse {
            job: Some(job_to_proto(job)),
        }))
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::RetryJobResponse>, Status> {
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let id = parse_id("id", &req.id, self.gateway.layout().shard_count)?;
        let job = self
            .gateway
            .retry(id, now_ms(), deadline)
            .await
            .map_err(from_gateway)?;
        Ok(Response::new(pb::RetryJobResponse {
            job: Some(job_to_proto(job)),
        }))
    }

    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Result<Response<pb::ListJobsResponse>, Status> {
        let deadline = self.deadline(&request);
        let req = request.into_inner();
        let namespace = namespace_or_default(&req.namespace)?;
        let queue = if req.queue.is_empty() {
            None
        } else {
            check_name("queue", &req.queue)?;
            Some(req.queue)
        };
        let state = state_from_proto(req.state)?;
        let page_size = page_size(req.page_size)?;
        let after = if req.page_token.is_empty() {
            None
        } else {
            Some(parse_id(
                "page_token",
                &req.page_token,
                self.gateway.layout().shard_count,
            )?)
        };
        let local = is_local(req.consistency)?;
        let filter = JobFilter {
            as_of_ms: now_ms(),
            namespace,
            queue,
            state,
        };
        let page = self
            .gateway
            .list(filter, after, page_size, local, deadline)
            .await
            .map_err(from_gateway)?;
        Ok(Response::new(pb::ListJobsResponse {
            jobs: page.jobs.into_iter().map(job_to_proto).collect(),
            next_page_token: page.next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }

    #[test]
    fn names_are_checked_with_the_field_named() {
        assert!(check_name("queue", "emails.v2_high-prio").is_ok());
        let empty = check_name("queue", "").expect_err("empty");
        assert_eq!(empty.message(), "queue: must not be empty");
        let bad = check_name("queue", "a b").expect_err("space");
        assert!(bad.message().starts_with("queue: "), "{}", bad.message());
        assert!(check_name("namespace", &"x".repeat(129)).is_err());
    }

    #[test]
    fn retry_policies_get_defaults_and_are_checked() {
        assert_eq!(retry_policy(None).expect("none"), RetryPolicy::default());
        let partial = retry_policy(Some(pb::RetryPolicy {
            max_attempts: 2,
            ..Default::default()
        }))
        .expect("partial");
        assert_eq!(partial.max_attempts, 2);
        assert_eq!(
            partial.initial_backoff_ms,
            RetryPolicy::default().initial_backoff_ms
        );
        let inverted = retry_policy(Some(pb::RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 10_000,
            max_backoff_ms: 5_000,
        }))
        .expect_err("initial above max");
        assert!(
            inverted.message().starts_with("retry.initial_backoff_ms: "),
            "{}",
            inverted.message()
        );
        assert!(retry_policy(Some(pb::RetryPolicy {
            max_attempts: 5_000,
            ..Default::default()
        }))
        .is_err());
    }
}
