//! Raft RPCs between nodes over tonic.
//!
//! Client side: [`PeerClients`] caches one HTTP/2 channel per peer address;
//! every shard's Raft group multiplexes over it, tagging each message with its
//! shard id. Server side: [`RaftServer`] decodes a message and hands it to the
//! Raft group named by its shard id, found in the [`RaftRegistry`].

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;
use sundial_proto::v1::raft_service_client::RaftServiceClient;
use sundial_proto::v1::raft_service_server::RaftService;
use sundial_proto::v1::{RaftReply, RaftRequest};
use tonic::transport::{Channel, Endpoint};

use crate::codec;
use crate::job::ShardId;
use crate::types::{NodeId, PeerNode, Raft, TypeConfig};

/// Largest Raft message either side accepts (snapshot chunks, big batches).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 64 << 20;

/// One lazily connected channel per peer address, shared by all shards.
#[derive(Clone, Default)]
pub struct PeerClients {
    channels: Arc<Mutex<HashMap<String, Channel>>>,
}

impl PeerClients {
    fn client(&self, addr: &str) -> Result<RaftServiceClient<Channel>, tonic::transport::Error> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel = Endpoint::from_shared(format!("http://{addr}"))?
                    .connect_timeout(Duration::from_millis(500))
                    .tcp_nodelay(true)
                    .http2_keep_alive_interval(Duration::from_secs(5))
                    .keep_alive_timeout(Duration::from_secs(5))
                    .connect_lazy();
                channels.insert(addr.to_string(), channel.clone());
                channel
            }
        };
        Ok(RaftServiceClient::new(channel)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES))
    }
}

/// Builds the per-target clients of one shard's Raft group.
pub struct NetworkFactory {
    pub shard: ShardId,
    pub from: NodeId,
    pub peers: PeerClients,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = ShardClient;

    async fn new_client(&mut self, target: NodeId, node: &PeerNode) -> ShardClient {
        ShardClient {
            shard: self.shard,
            from: self.from,
            target,
            addr: node.raft_addr.clone(),
            peers: self.peers.clone(),
        }
    }
}

/// Sends one shard's Raft messages to one target node.
pub struct ShardClient {
    shard: ShardId,
    from: NodeId,
    target: NodeId,
    addr: String,
    peers: PeerClients,
}

#[derive(Clone, Copy)]
enum Rpc {
    Append,
    Vote,
    Snapshot,
}

type ClientError<E> = RPCError<NodeId, PeerNode, RaftError<NodeId, E>>;

impl ShardClient {
    async fn call<Req, Resp, E>(&self, rpc: Rpc, req: &Req, ttl: Duration) -> Result<Resp, ClientError<E>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let payload = codec::encode(req).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut client = self
            .peers
            .client(&self.addr)
            .map_err(|e| RPCError::Unreachable(Unreachable::new(&e)))?;
        let mut request = tonic::Request::new(RaftRequest {
            shard: self.shard,
            from: self.from,
            payload,
        });
        request.set_timeout(ttl);
        let reply = match rpc {
            Rpc::Append => client.append_entries(request).await,
            Rpc::Vote => client.vote(request).await,
            Rpc::Snapshot => client.install_snapshot(request).await,
        };
        let reply = reply.map_err(|status| match status.code() {
            // The peer is down or not listening yet: back off.
            tonic::Code::Unavailable => RPCError::Unreachable(Unreachable::new(&status)),
            _ => RPCError::Network(NetworkError::new(&status)),
        })?;
        let result: Result<Resp, RaftError<NodeId, E>> = codec::decode(&reply.into_inner().payload)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for ShardClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, ClientError<openraft::error::Infallible>> {
        self.call(Rpc::Append, &rpc, option.hard_ttl()).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, ClientError<InstallSnapshotError>> {
        self.call(Rpc::Snapshot, &rpc, option.hard_ttl()).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, ClientError<openraft::error::Infallible>> {
        self.call(Rpc::Vote, &rpc, option.hard_ttl()).await
    }
}

/// The Raft groups hosted by this node, by shard.
#[derive(Default)]
pub struct RaftRegistry {
    rafts: RwLock<HashMap<ShardId, Raft>>,
}

impl RaftRegistry {
    pub fn insert(&self, shard: ShardId, raft: Raft) {
        self.rafts
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .insert(shard, raft);
    }

    pub fn get(&self, shard: ShardId) -> Option<Raft> {
        self.rafts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&shard)
            .cloned()
    }

    /// Every hosted group, in shard order.
    pub fn all(&self) -> Vec<(ShardId, Raft)> {
        let mut all: Vec<_> = self
            .rafts
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .map(|(s, r)| (*s, r.clone()))
            .collect();
        all.sort_by_key(|(s, _)| *s);
        all
    }
}

/// The internal gRPC service that receives Raft messages for every shard.
pub struct RaftServer {
    registry: Arc<RaftRegistry>,
}

impl RaftServer {
    pub fn new(registry: Arc<RaftRegistry>) -> RaftServer {
        RaftServer { registry }
    }

    fn route(&self, req: &RaftRequest) -> Result<Raft, tonic::Status> {
        self.registry.get(req.shard).ok_or_else(|| {
            tonic::Status::not_found(format!("shard {} is not hosted on this node", req.shard))
        })
    }
}

fn decode_request<T: DeserializeOwned>(req: &RaftRequest) -> Result<T, tonic::Status> {
    codec::decode(&req.payload).map_err(|e| {
        tonic::Status::invalid_argument(format!("malformed raft message for shard {}: {e}", req.shard))
    })
}

fn reply<T: Serialize>(value: &T) -> Result<tonic::Response<RaftReply>, tonic::Status> {
    let payload = codec::encode(value).map_err(|e| tonic::Status::internal(e.to_string()))?;
    Ok(tonic::Response::new(RaftReply { payload }))
}

#[tonic::async_trait]
impl RaftService for RaftServer {
    async fn append_entries(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req = request.into_inner();
        let raft = self.route(&req)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode_request(&req)?;
        reply(&raft.append_entries(rpc).await)
    }

    async fn vote(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req = request.into_inner();
        let raft = self.route(&req)?;
        let rpc: VoteRequest<NodeId> = decode_request(&req)?;
        reply(&raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: tonic::Request<RaftRequest>,
    ) -> Result<tonic::Response<RaftReply>, tonic::Status> {
        let req = request.into_inner();
        let raft = self.route(&req)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode_request(&req)?;
        reply(&raft.install_snapshot(rpc).await)
    }
}
