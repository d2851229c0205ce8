//! `NodeSupervisor`: the root of a node's actors. It starts the
//! `ShardSupervisor`, the `Gateway` and (when HTTP targets are on) the
//! `ExecutorSupervisor`; a gateway or executor supervisor that fails is
//! restarted with backoff; a shard supervisor that escalates stops the node
//! (its process exits non-zero, for a process manager to restart).

use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorCell, ActorProcessingErr, ActorRef, SupervisionEvent};
use sundial_raft::network::{PeerClients, RaftRegistry};
use sundial_raft::store::NodeStore;

use super::policy::{stopped_child, Decision, RestartPolicy, RestartTracker};
use super::shard::{ShardSupervisor, ShardSupervisorArgs};
use crate::executor::{ExecutorConfig, ExecutorProbe, ExecutorSupervisor, ExecutorSupervisorArgs};
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
    /// HTTP executors; `None` turns HTTP targets off on this node.
    pub executor: Option<(ExecutorConfig, Arc<ExecutorProbe>)>,
}

pub enum NodeSupervisorMsg {
    RestartGateway,
    RestartExecutors,
}

impl ractor::Message for NodeSupervisorMsg {}

pub struct NodeSupervisorState {
    shards: ActorCell,
    gateway: Option<ActorCell>,
    gateway_handle: GatewayHandle,
    gateway_failures: RestartTracker,
    executors: Option<ActorCell>,
    executor_args: Option<(ExecutorConfig, Arc<ExecutorProbe>)>,
    executor_failures: RestartTracker,
    policy: RestartPolicy,
}

async fn spawn_executors(
    myself: &ActorRef<NodeSupervisorMsg>,
    gateway: &GatewayHandle,
    args: &Option<(ExecutorConfig, Arc<ExecutorProbe>)>,
) -> Result<Option<ActorCell>, ActorProcessingErr> {
    let Some((config, probe)) = args else {
        return Ok(None);
    };
    let (executors, _) = Actor::spawn_linked(
        None,
        ExecutorSupervisor,
        ExecutorSupervisorArgs {
            gateway: gateway.clone(),
            config: *config,
            probe: probe.clone(),
        },
        myself.get_cell(),
    )
    .await?;
    Ok(Some(executors.get_cell()))
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
                gateway: args.gateway.clone(),
            },
            myself.get_cell(),
        )
        .await?;
        let (gateway, _) =
            Actor::spawn_linked(None, Gateway, args.gateway.clone(), myself.get_cell()).await?;
        let executors = spawn_executors(&myself, &args.gateway, &args.executor).await?;
        Ok(NodeSupervisorState {
            shards: shards.get_cell(),
            gateway: Some(gateway.get_cell()),
            gateway_handle: args.gateway,
            gateway_failures: RestartTracker::default(),
            executors,
            executor_args: args.executor,
            executor_failures: RestartTracker::default(),
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
            NodeSupervisorMsg::RestartExecutors => {
                state.executors =
                    spawn_executors(&myself, &state.gateway_handle, &state.executor_args).await?;
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
            let failures = &mut state.gateway_failures;
            restart_later(&myself, failures, &state.policy, "gateway", &why, || {
                NodeSupervisorMsg::RestartGateway
            })?;
        }
        if state.executors.as_ref().map(|e| e.get_id()) == Some(child) {
            state.executors = None;
            let failures = &mut state.executor_failures;
            restart_later(
                &myself,
                failures,
                &state.policy,
                "HTTP executor supervisor",
                &why,
                || NodeSupervisorMsg::RestartExecutors,
            )?;
        }
        Ok(())
    }
}

/// Records a child's failure and schedules `msg` to restart it after the
/// policy's backoff, or escalates when it fails too often.
fn restart_later(
    myself: &ActorRef<NodeSupervisorMsg>,
    failures: &mut RestartTracker,
    policy: &RestartPolicy,
    name: &str,
    why: &str,
    msg: fn() -> NodeSupervisorMsg,
) -> Result<(), ActorProcessingErr> {
    match failures.on_failure(policy, Instant::now()) {
        Decision::RestartAfter(delay) => {
            tracing::warn!(reason = %why, ?delay, "{name} failed, restarting");
            myself.send_after(delay, msg);
            Ok(())
        }
        Decision::Escalate => Err(format!("{name} keeps failing: {why}").into()),
    }
}
