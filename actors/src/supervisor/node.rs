//! `NodeSupervisor`: the root of a node's actors. It starts the
//! `ShardSupervisor` and the `Gateway`; a gateway that fails is restarted with
//! backoff; a shard supervisor that escalates stops the node (its process
//! exits non-zero, for a process manager to restart).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use sundial_raft::network::{PeerClients, RaftRegistry};
use sundial_raft::store::NodeStore;

use super::policy::{stopped_child, Decision, RestartPolicy, RestartTracker};
use super::shard::{ShardSupervisor, ShardSupervisorArgs};
use crate::gateway::{Gateway, GatewayHandle};
use crate::layout::ClusterLayout;

pub struct NodeSupervisor;

pub struct NodeSupervisorArgs {
    pub layout: ClusterLayout,
    pub store: Arc<NodeStore>,
    pub registry: Arc<RaftRegistry>,
    pub peers: PeerClients,
    pub policy: RestartPolicy,
    /// `None` turns leader rebalancing off.
    pub rebalance: Option<super::RebalancePolicy>,
    pub gateway: GatewayHandle,
}

pub enum NodeSupervisorMsg {
    RestartGateway,
}

impl ractor::Message for NodeSupervisorMsg {}

pub struct NodeSupervisorState {
    shards: ActorCell,
    gateway: Option<ActorCell>,
    gateway_handle: GatewayHandle,
    gateway_failures: RestartTracker,
    policy: RestartPolicy,
}

impl Actor for NodeSupervisor {
    type Msg = NodeSupervisorMsg;
    type State = NodeSupervisorState;
    type Arguments = NodeSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        args: NodeSupervisorArgs,
    ) -> Result<NodeSupervisorState, ActorProcessingErr> {
        let (shards, _) = Actor::spawn_linked(
            Some("shard-supervisor".into()),
            ShardSupervisor,
            ShardSupervisorArgs {
                layout: args.layout.clone(),
                store: args.store,
                registry: args.registry,
                peers: args.peers,
                policy: args.policy,
                rebalance: args.rebalance,
            },
            myself.get_cell(),
        )
        .await?;
        let (gateway, _) =
            Actor::spawn_linked(None, Gateway, args.gateway.clone(), myself.get_cell()).await?;
        Ok(NodeSupervisorState {
            shards: shards.get_cell(),
            gateway: Some(gateway.get_cell()),
            gateway_handle: args.gateway,
            gateway_failures: RestartTracker::default(),
            policy: args.policy,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        msg: NodeSupervisorMsg,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            NodeSupervisorMsg::RestartGateway => {
                let (gateway, _) =
                    Actor::spawn_linked(None, Gateway, state.gateway_handle.clone(), myself.get_cell())
                        .await?;
                state.gateway = Some(gateway.get_cell());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<NodeSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut NodeSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((child, why)) = stopped_child(&event) else {
            return Ok(());
        };
        if child == state.shards.get_id() {
            return Err(format!("shard supervisor stopped: {why}").into());
        }
        if state.gateway.as_ref().map(|g| g.get_id()) == Some(child) {
            state.gateway = None;
            match state.gateway_failures.on_failure(&state.policy, Instant::now()) {
                Decision::RestartAfter(delay) => {
                    tracing::warn!(reason = %why, ?delay, "gateway failed, restarting");
                    myself.send_after(delay, || NodeSupervisorMsg::RestartGateway);
                }
                Decision::Escalate => return Err(format!("gateway keeps failing: {why}").into()),
            }
        }
        Ok(())
    }
}
