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

use std::collections::HashMap;
use std::time::Duration;

use proto::cluster_service_client::ClusterServiceClient;
use proto::job_service_client::JobServiceClient;
pub use sundial_proto::v1 as proto;
use tonic::transport::{Channel, Endpoint};

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
    jobs: JobServiceClient<Channel>,
    cluster: ClusterServiceClient<Channel>,
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
            cluster: ClusterServiceClient::new(channel),
            timeout: Duration::from_secs(10),
        }
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

    pub async fn cluster_info(&mut self) -> Result<proto::GetClusterInfoResponse, Error> {
        let request = self.request(proto::GetClusterInfoRequest {});
        Ok(self.cluster.get_cluster_info(request).await?.into_inner())
    }
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
