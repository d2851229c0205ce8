//! Rust client SDK for Sundial.
//!
//! ```no_run
//! # async fn demo() -> Result<(), sundial_sdk::Error> {
//! let mut client = sundial_sdk::Client::connect("127.0.0.1:7070").await?;
//! let id = client
//!     .submit(sundial_sdk::NewJob::new("emails", b"hello".to_vec()).delay_ms(30_000))
//!     .await?;
//! let job = client.get_job(&id).await?;
//! println!("{} is {:?}", job.id, job.state());
//! # Ok(()) }
//! ```
//!
//! Any node accepts any request; the cluster routes it to the right shard
//! leader and hides elections inside the request deadline.

mod worker;

use std::collections::HashMap;
use std::time::Duration;

use proto::cluster_service_client::ClusterServiceClient;
use proto::job_service_client::JobServiceClient;
use proto::queue_service_client::QueueServiceClient;
use proto::schedule_service_client::ScheduleServiceClient;
use proto::worker_service_client::WorkerServiceClient;
pub use sundial_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};
pub use worker::{JobFailure, Worker};

/// What can go wrong talking to Sundial.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot connect to {addr}: {reason}")]
    Connect { addr: String, reason: String },
    /// The server answered with an error status.
    #[error("{}: {}", code_name(.0.code()), .0.message())]
    Status(#[from] tonic::Status),
}

impl Error {
    /// The gRPC status code, when the server answered.
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            Error::Status(s) => Some(s.code()),
            Error::Connect { .. } => None,
        }
    }
}

/// A job to submit. Built with [`NewJob::new`] and its setters.
/// An HTTP endpoint a job calls (see [`NewJob::http`]).
#[derive(Clone, Debug)]
pub struct HttpTarget(proto::HttpTarget);

impl HttpTarget {
    /// A `POST` to `url` with a 30 s timeout.
    pub fn post(url: impl Into<String>) -> HttpTarget {
        HttpTarget(proto::HttpTarget {
            url: url.into(),
            method: "POST".into(),
            ..Default::default()
        })
    }

    /// GET, POST, PUT, PATCH, DELETE or HEAD.
    pub fn method(mut self, method: impl Into<String>) -> HttpTarget {
        self.0.method = method.into();
        self
    }

    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> HttpTarget {
        self.0.headers.insert(name.into(), value.into());
        self
    }

    /// How long one call may take.
    pub fn timeout(mut self, timeout: Duration) -> HttpTarget {
        self.0.timeout_ms = timeout.as_millis().try_into().unwrap_or(u64::MAX);
        self
    }

    pub fn into_proto(self) -> proto::HttpTarget {
        self.0
    }
}

#[derive(Clone, Debug, Default)]
pub struct NewJob {
    request: proto::SubmitJobRequest,
}

impl NewJob {
    pub fn new(queue: impl Into<String>, payload: impl Into<Vec<u8>>) -> NewJob {
        NewJob {
            request: proto::SubmitJobRequest {
                queue: queue.into(),
                payload: payload.into(),
                ..Default::default()
            },
        }
    }

    pub fn namespace(mut self, namespace: impl Into<String>) -> NewJob {
        self.request.namespace = namespace.into();
        self
    }

    /// Run this long after the node accepts the job.
    pub fn delay_ms(mut self, delay_ms: u64) -> NewJob {
        self.request.delay_ms = delay_ms;
        self
    }

    /// Run at this time, in ms since the Unix epoch.
    pub fn run_at_ms(mut self, run_at_ms: i64) -> NewJob {
        self.request.run_at_ms = run_at_ms;
        self
    }

    pub fn priority(mut self, priority: i32) -> NewJob {
        self.request.priority = priority;
        self
    }

    pub fn header(mut self, key: impl Into<String>, value: impl Into<String>) -> NewJob {
        self.request.headers.insert(key.into(), value.into());
        self
    }

    pub fn headers(mut self, headers: HashMap<String, String>) -> NewJob {
        self.request.headers.extend(headers);
        self
    }

    /// Attempts in all, the first included (default 5).
    pub fn max_attempts(mut self, max_attempts: u32) -> NewJob {
        self.request
            .retry
            .get_or_insert_with(Default::default)
            .max_attempts = max_attempts;
        self
    }

    /// Backoff between attempts: starts at `initial`, doubles up to `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> NewJob {
        let retry = self.request.retry.get_or_insert_with(Default::default);
        retry.initial_backoff_ms = initial.as_millis() as u64;
        retry.max_backoff_ms = max.as_millis() as u64;
        self
    }

    /// A key that makes the submit idempotent: while the key is retained
    /// (24 h by default), submitting it again returns the first job's id.
    pub fn idempotency_key(mut self, key: impl Into<String>) -> NewJob {
        self.request.idempotency_key = key.into();
        self
    }

    /// How long a lease lasts without a heartbeat (default 30 s).
    pub fn timeout(mut self, timeout: Duration) -> NewJob {
        self.request.timeout_ms = timeout.as_millis() as u64;
        self
    }

    /// Deliver the job by calling `target` instead of giving it to a worker:
    /// the cluster's executors send the payload to it, and a 2xx answer
    /// completes the job.
    pub fn http(mut self, target: HttpTarget) -> NewJob {
        self.request.http = Some(target.0);
        self
    }

    pub fn into_request(self) -> proto::SubmitJobRequest {
        self.request
    }
}

/// Filters for [`Client::list_jobs`].
#[derive(Clone, Debug, Default)]
pub struct ListJobs {
    pub namespace: String,
    pub queue: String,
    pub state: Option<proto::JobState>,
    pub page_size: u32,
    pub page_token: String,
    /// Read this node's replica instead of the leaders (possibly stale).
    pub local: bool,
}

/// A connection to one Sundial node. Cheap to clone; clones share the
/// HTTP/2 connection.
#[derive(Clone)]
pub struct Client {
    channel: Channel,
    jobs: JobServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
    workers: WorkerServiceClient<Channel>,
    schedules: ScheduleServiceClient<Channel>,
    queues: QueueServiceClient<Channel>,
    timeout: Duration,
}

impl Client {
    /// Connects to a node at `host:port` (or a full `http://` URL).
    pub async fn connect(addr: &str) -> Result<Client, Error> {
        let url = if addr.starts_with("http://") || addr.starts_with("https://") {
            addr.to_string()
        } else {
            format!("http://{addr}")
        };
        let connect_err = |reason: String| Error::Connect {
            addr: addr.to_string(),
            reason,
        };
        let channel = Endpoint::from_shared(url)
            .map_err(|e| connect_err(e.to_string()))?
            .connect_timeout(Duration::from_secs(3))
            .tcp_nodelay(true)
            .connect()
            .await
            .map_err(|e| connect_err(source_chain(&e)))?;
        Ok(Client::from_channel(channel))
    }

    /// Wraps an existing channel.
    pub fn from_channel(channel: Channel) -> Client {
        Client {
            jobs: JobServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            cluster: ClusterServiceClient::new(channel.clone()),
            workers: WorkerServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            schedules: ScheduleServiceClient::new(channel.clone())
                .max_decoding_message_size(64 << 20)
                .max_encoding_message_size(64 << 20),
            queues: QueueServiceClient::new(channel.clone()),
            channel,
            timeout: Duration::from_secs(10),
        }
    }

    /// The underlying channel (for other services).
    pub fn channel(&self) -> Channel {
        self.channel.clone()
    }

    /// Deadline of every request (default 10 s). The server retries leader
    /// changes within it.
    pub fn with_timeout(mut self, timeout: Duration) -> Client {
        self.timeout = timeout;
        self
    }

    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Submits a job; returns its id once it is durably stored.
    pub async fn submit(&mut self, job: NewJob) -> Result<String, Error> {
        let request = self.request(job.into_request());
        Ok(self.jobs.submit_job(request).await?.into_inner().id)
    }

    pub async fn get_job(&mut self, id: &str) -> Result<proto::Job, Error> {
        self.get_job_with(id, proto::ReadConsistency::Unspecified).await
    }

    /// Reads a job with the given consistency.
    pub async fn get_job_with(
        &mut self,
        id: &str,
        consistency: proto::ReadConsistency,
    ) -> Result<proto::Job, Error> {
        let request = self.request(proto::GetJobRequest {
            id: id.to_string(),
            consistency: consistency as i32,
        });
        let response = self.jobs.get_job(request).await?.into_inner();
        response
            .job
            .ok_or_else(|| Error::Status(tonic::Status::internal("server sent no job")))
    }

    pub async fn cancel_job(&mut self, id: &str) -> Result<proto::Job, Error> {
        let request = self.request(proto::CancelJobRequest { id: id.to_string() });
        let response = self.jobs.cancel_job(request).await?.into_inner();
        response
            .job
            .ok_or_else(|| Error::Status(tonic::Status::internal("server sent no job")))
    }

    pub async fn list_jobs(&mut self, list: ListJobs) -> Result<proto::ListJobsResponse, Error> {
        let request = self.request(proto::ListJobsRequest {
            namespace: list.namespace,
            queue: list.queue,
            state: list.state.map(|s| s as i32).unwrap_or(0),
            page_size: list.page_size,
            page_token: list.page_token,
            consistency: if list.local {
                proto::ReadConsistency::Local as i32
            } else {
                proto::ReadConsistency::Unspecified as i32
            },
        });
        Ok(self.jobs.list_jobs(request).await?.into_inner())
    }

    /// Replays a dead job with a fresh retry budget.
    pub async fn retry_job(&mut self, id: &str) -> Result<proto::Job, Error> {
        let request = self.request(proto::RetryJobRequest { id: id.to_string() });
        let response = self.jobs.retry_job(request).await?.into_inner();
        response
            .job
            .ok_or_else(|| Error::Status(tonic::Status::internal("server sent no job")))
    }

    /// Extends the lease of attempt `token` (outside a worker stream).
    pub async fn heartbeat_job(&mut self, id: &str, token: u32) -> Result<proto::Job, Error> {
        let request = self.request(proto::HeartbeatJobRequest {
            id: id.to_string(),
            token,
        });
        attempt_job(self.workers.heartbeat_job(request).await?.into_inner())
    }

    /// Records the success of attempt `token` (outside a worker stream).
    pub async fn complete_job(&mut self, id: &str, token: u32, result: Vec<u8>) -> Result<proto::Job, Error> {
        let request = self.request(proto::CompleteJobRequest {
            id: id.to_string(),
            token,
            result,
        });
        attempt_job(self.workers.complete_job(request).await?.into_inner())
    }

    /// Records the failure of attempt `token` (outside a worker stream).
    pub async fn fail_job(
        &mut self,
        id: &str,
        token: u32,
        error: impl Into<String>,
        retryable: bool,
    ) -> Result<proto::Job, Error> {
        let request = self.request(proto::FailJobRequest {
            id: id.to_string(),
            token,
            error: error.into(),
            retryable,
        });
        attempt_job(self.workers.fail_job(request).await?.into_inner())
    }

    /// Creates a schedule; returns it and whether this call created it
    /// (false: the id was taken and nothing changed).
    pub async fn create_schedule(
        &mut self,
        spec: proto::ScheduleSpec,
    ) -> Result<(proto::Schedule, bool), Error> {
        let request = self.request(proto::CreateScheduleRequest { spec: Some(spec) });
        let response = self.schedules.create_schedule(request).await?.into_inner();
        Ok((schedule_of(response.schedule)?, response.created))
    }

    /// Replaces a schedule's definition.
    pub async fn update_schedule(&mut self, spec: proto::ScheduleSpec) -> Result<proto::Schedule, Error> {
        let request = self.request(proto::CreateScheduleRequest { spec: Some(spec) });
        schedule_of(
            self.schedules
                .update_schedule(request)
                .await?
                .into_inner()
                .schedule,
        )
    }

    pub async fn get_schedule(&mut self, namespace: &str, id: &str) -> Result<proto::Schedule, Error> {
        let request = self.request(schedule_ref(namespace, id));
        schedule_of(self.schedules.get_schedule(request).await?.into_inner().schedule)
    }

    pub async fn list_schedules(
        &mut self,
        namespace: &str,
        page_size: u32,
        page_token: &str,
    ) -> Result<proto::ListSchedulesResponse, Error> {
        let request = self.request(proto::ListSchedulesRequest {
            namespace: namespace.to_string(),
            page_size,
            page_token: page_token.to_string(),
        });
        Ok(self.schedules.list_schedules(request).await?.into_inner())
    }

    pub async fn pause_schedule(&mut self, namespace: &str, id: &str) -> Result<proto::Schedule, Error> {
        let request = self.request(schedule_ref(namespace, id));
        schedule_of(
            self.schedules
                .pause_schedule(request)
                .await?
                .into_inner()
                .schedule,
        )
    }

    pub async fn resume_schedule(&mut self, namespace: &str, id: &str) -> Result<proto::Schedule, Error> {
        let request = self.request(schedule_ref(namespace, id));
        schedule_of(
            self.schedules
                .resume_schedule(request)
                .await?
                .into_inner()
                .schedule,
        )
    }

    /// Deletes a schedule; returns it as it was.
    pub async fn delete_schedule(&mut self, namespace: &str, id: &str) -> Result<proto::Schedule, Error> {
        let request = self.request(schedule_ref(namespace, id));
        schedule_of(
            self.schedules
                .delete_schedule(request)
                .await?
                .into_inner()
                .schedule,
        )
    }

    /// Stops leasing the queue's jobs (on every shard) until resumed.
    pub async fn pause_queue(&mut self, namespace: &str, queue: &str) -> Result<proto::QueueStats, Error> {
        let request = self.request(queue_ref(namespace, queue));
        Ok(self.queues.pause_queue(request).await?.into_inner())
    }

    pub async fn resume_queue(&mut self, namespace: &str, queue: &str) -> Result<proto::QueueStats, Error> {
        let request = self.request(queue_ref(namespace, queue));
        Ok(self.queues.resume_queue(request).await?.into_inner())
    }

    /// The queue's jobs by state, and whether it is paused.
    pub async fn queue_stats(&mut self, namespace: &str, queue: &str) -> Result<proto::QueueStats, Error> {
        let request = self.request(queue_ref(namespace, queue));
        Ok(self.queues.get_queue_stats(request).await?.into_inner())
    }

    /// Sets the queue's cluster-wide concurrency limit: at most `limit` of
    /// its jobs leased at once (0 removes the limit).
    pub async fn set_queue_concurrency(
        &mut self,
        namespace: &str,
        queue: &str,
        limit: u32,
    ) -> Result<proto::QueueStats, Error> {
        let request = self.request(proto::SetQueueConcurrencyRequest {
            namespace: namespace.to_string(),
            queue: queue.to_string(),
            limit,
        });
        Ok(self.queues.set_queue_concurrency(request).await?.into_inner())
    }

    pub async fn cluster_info(&mut self) -> Result<proto::GetClusterInfoResponse, Error> {
        let request = self.request(proto::GetClusterInfoRequest {});
        Ok(self.cluster.get_cluster_info(request).await?.into_inner())
    }

    /// A digest of each shard replica the connected node holds.
    pub async fn shard_digests(&mut self) -> Result<proto::GetShardDigestsResponse, Error> {
        let request = self.request(proto::GetShardDigestsRequest {});
        Ok(self.cluster.get_shard_digests(request).await?.into_inner())
    }
}

fn queue_ref(namespace: &str, queue: &str) -> proto::QueueRef {
    proto::QueueRef {
        namespace: namespace.to_string(),
        queue: queue.to_string(),
    }
}

fn schedule_ref(namespace: &str, id: &str) -> proto::ScheduleRef {
    proto::ScheduleRef {
        namespace: namespace.to_string(),
        id: id.to_string(),
    }
}

fn schedule_of(schedule: Option<proto::Schedule>) -> Result<proto::Schedule, Error> {
    schedule.ok_or_else(|| Error::Status(tonic::Status::internal("server sent no schedule")))
}

fn attempt_job(response: proto::AttemptResponse) -> Result<proto::Job, Error> {
    response
        .job
        .ok_or_else(|| Error::Status(tonic::Status::internal("server sent no job")))
}

/// A gRPC code in words: `InvalidArgument` → `invalid argument`.
pub fn code_name(code: tonic::Code) -> String {
    let mut words = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            words.push(' ');
        }
        words.push(c.to_ascii_lowercase());
    }
    words
}

fn source_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        // Transport errors often repeat their cause's text one level down.
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_errors_read_as_one_plain_line() {
        let e = Error::from(tonic::Status::invalid_argument("queue: must not be empty"));
        assert_eq!(e.to_string(), "invalid argument: queue: must not be empty");
        assert_eq!(code_name(tonic::Code::NotFound), "not found");
        assert_eq!(code_name(tonic::Code::Ok), "ok");
    }
}
