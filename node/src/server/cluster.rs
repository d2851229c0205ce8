//! `ClusterService`: nodes, shards, leaders and health as this node sees them.

use std::collections::BTreeMap;

use sundial_actors::GatewayHandle;
use sundial_proto::v1::cluster_service_server::ClusterService;
use sundial_proto::v1::{
    GetClusterInfoRequest, GetClusterInfoResponse, GetShardDigestsRequest, GetShardDigestsResponse, NodeInfo,
    ShardDigest, ShardInfo,
};
use tonic::{Request, Response, Status};

pub struct ClusterApi {
    gateway: GatewayHandle,
}

impl ClusterApi {
    pub fn new(gateway: GatewayHandle) -> ClusterApi {
        ClusterApi { gateway }
    }
}

#[tonic::async_trait]
impl ClusterService for ClusterApi {
    async fn get_cluster_info(
        &self,
        _request: Request<GetClusterInfoRequest>,
    ) -> Result<Response<GetClusterInfoResponse>, Status> {
        let layout = self.gateway.layout();
        let local: BTreeMap<u32, _> = self.gateway.shards().into_iter().map(|s| (s.shard, s)).collect();
        let shards: Vec<ShardInfo> = (0..layout.shard_count)
            .map(|shard| match local.get(&shard) {
                Some(view) => ShardInfo {
                    shard,
                    leader: view.leader.unwrap_or(0),
                    term: view.term,
                    members: if view.members.is_empty() {
                        layout.members(shard)
                    } else {
                        view.members.clone()
                    },
                    last_applied: view.last_applied,
                    healthy: view.leader.is_some(),
                },
                // Not replicated here: this node cannot vouch for it.
                None => ShardInfo {
                    shard,
                    leader: 0,
                    term: 0,
                    members: layout.members(shard),
                    last_applied: 0,
                    healthy: false,
                },
            })
            .collect();
        let nodes = layout
            .nodes
            .iter()
            .map(|(id, peer)| NodeInfo {
                id: *id,
                client_addr: peer.client_addr.clone(),
                raft_addr: peer.raft_addr.clone(),
                reachable: self.gateway.is_connected(*id),
            })
            .collect();
        let healthy = shards
            .iter()
            .filter(|s| local.contains_key(&s.shard))
            .all(|s| s.healthy);
        Ok(Response::new(GetClusterInfoResponse {
            node_id: layout.node_id,
            nodes,
            shard_count: layout.shard_count,
            shards,
            healthy,
        }))
    }

    async fn get_shard_digests(
        &self,
        _request: Request<GetShardDigestsRequest>,
    ) -> Result<Response<GetShardDigestsResponse>, Status> {
        let digests = self
            .gateway
            .shard_digests()
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(GetShardDigestsResponse {
            node_id: self.gateway.layout().node_id,
            shards: digests
                .into_iter()
                .map(|(shard, d)| ShardDigest {
                    shard,
                    applied_index: d.applied_index,
                    applied_term: d.applied_term,
                    keys: d.keys,
                    digest: d.digest,
                })
                .collect(),
        }))
    }
}
