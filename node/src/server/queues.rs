//! `QueueService`: pause, resume and count a queue's jobs across shards.

use std::sync::Arc;

use sundial_actors::GatewayHandle;
use sundial_proto::v1 as pb;
use sundial_proto::v1::queue_service_server::QueueService;
use sundial_raft::JobState;
use tonic::{Request, Response, Status};

use super::jobs::{check_name, deadline, namespace_or_default, now_ms};
use super::status::from_gateway;
use crate::config::NodeConfig;

pub struct QueueApi {
    cfg: Arc<NodeConfig>,
    gateway: GatewayHandle,
}

impl QueueApi {
    pub fn new(cfg: Arc<NodeConfig>, gateway: GatewayHandle) -> QueueApi {
        QueueApi { cfg, gateway }
    }

    async fn stats(
        &self,
        request: Request<pb::QueueRef>,
        pause: Option<bool>,
    ) -> Result<Response<pb::QueueStats>, Status> {
        let deadline = deadline(&self.cfg, &request);
        let r = request.into_inner();
        let namespace = namespace_or_default(&r.namespace)?;
        check_name("queue", &r.queue)?;
        if let Some(paused) = pause {
            self.gateway
                .set_queue_paused(&namespace, &r.queue, paused, now_ms(), deadline)
                .await
                .map_err(from_gateway)?;
        }
        let (counts, paused) = self
            .gateway
            .queue_stats(&namespace, &r.queue, deadline)
            .await
            .map_err(from_gateway)?;
        let n = |s: JobState| counts.get(s.code() as usize).copied().unwrap_or(0);
        Ok(Response::new(pb::QueueStats {
            namespace,
            queue: r.queue,
            paused,
            scheduled: n(JobState::Scheduled),
            ready: n(JobState::Ready),
            leased: n(JobState::Leased),
            succeeded: n(JobState::Succeeded),
            dead: n(JobState::Dead),
            cancelled: n(JobState::Cancelled),
        }))
    }
}

#[tonic::async_trait]
impl QueueService for QueueApi {
    async fn pause_queue(&self, request: Request<pb::QueueRef>) -> Result<Response<pb::QueueStats>, Status> {
        self.stats(request, Some(true)).await
    }

    async fn resume_queue(&self, request: Request<pb::QueueRef>) -> Result<Response<pb::QueueStats>, Status> {
        self.stats(request, Some(false)).await
    }

    async fn get_queue_stats(
        &self,
        request: Request<pb::QueueRef>,
    ) -> Result<Response<pb::QueueStats>, Status> {
        self.stats(request, None).await
    }
}
