//! `QueueService`: pause, resume, limit and count a queue's jobs across
//! shards.

use std::sync::Arc;
use std::time::Instant;

use sundial_actors::GatewayHandle;
use sundial_proto::v1 as pb;
use sundial_proto::v1::queue_service_server::QueueService;
use sundial_raft::types::QueuePatch;
use sundial_raft::JobState;
use tonic::{Request, Response, Status};

use super::jobs::{check_name, deadline, namespace_or_default, now_ms};
use super::status::{from_gateway, invalid};
use crate::config::NodeConfig;

/// Largest concurrency limit a queue may have.
const MAX_CONCURRENCY_LIMIT: u32 = 1_000_000;

pub struct QueueApi {
    cfg: Arc<NodeConfig>,
    gateway: GatewayHandle,
}

impl QueueApi {
    pub fn new(cfg: Arc<NodeConfig>, gateway: GatewayHandle) -> QueueApi {
        QueueApi { cfg, gateway }
    }

    /// Applies `patch` (if it changes anything) and answers the stats.
    async fn stats(
        &self,
        deadline: Instant,
        r: pb::QueueRef,
        patch: QueuePatch,
    ) -> Result<Response<pb::QueueStats>, Status> {
        let namespace = namespace_or_default(&r.namespace)?;
        check_name("queue", &r.queue)?;
        if patch != QueuePatch::default() {
            self.gateway
                .set_queue(&namespace, &r.queue, patch, now_ms(), deadline)
                .await
                .map_err(from_gateway)?;
        }
        let (counts, config) = self
            .gateway
            .queue_stats(&namespace, &r.queue, deadline)
            .await
            .map_err(from_gateway)?;
        let n = |s: JobState| counts.get(s.code() as usize).copied().unwrap_or(0);
        Ok(Response::new(pb::QueueStats {
            namespace,
            queue: r.queue,
            paused: config.paused,
            concurrency_limit: config.concurrency.unwrap_or(0),
            scheduled: n(JobState::Scheduled),
            ready: n(JobState::Ready),
            leased: n(JobState::Leased),
            succeeded: n(JobState::Succeeded),
            dead: n(JobState::Dead),
            cancelled: n(JobState::Cancelled),
        }))
    }
}

fn patch(paused: Option<bool>) -> QueuePatch {
    QueuePatch {
        paused,
        concurrency: None,
    }
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn pause_queue(&self, request: Request<pb::QueueRef>) -> Result<Response<pb::QueueStats>, Status> {
        let deadline = deadline(&self.cfg, &request);
        self.stats(deadline, request.into_inner(), patch(Some(true)))
            .await
    }

    async fn resume_queue(&self, request: Request<pb::QueueRef>) -> Result<Response<pb::QueueStats>, Status> {
        let deadline = deadline(&self.cfg, &request);
        self.stats(deadline, request.into_inner(), patch(Some(false)))
            .await
    }

    async fn get_queue_stats(
        &self,
        request: Request<pb::QueueRef>,
    ) -> Result<Response<pb::QueueStats>, Status> {
        let deadline = deadline(&self.cfg, &request);
        self.stats(deadline, request.into_inner(), patch(None)).await
    }

    async fn set_queue_concurrency(
        &self,
        request: Request<pb::SetQueueConcurrencyRequest>,
    ) -> Result<Response<pb::QueueStats>, Status> {
        let deadline = deadline(&self.cfg, &request);
        let r = request.into_inner();
        if r.limit > MAX_CONCURRENCY_LIMIT {
            return Err(invalid(
                "limit",
                format!("{} is over the maximum of {MAX_CONCURRENCY_LIMIT}", r.limit),
            ));
        }
        let queue = pb::QueueRef {
            namespace: r.namespace,
            queue: r.queue,
        };
        let patch = QueuePatch {
            paused: None,
            concurrency: Some(r.limit),
        };
        self.stats(deadline, queue, patch).await
    }
}
