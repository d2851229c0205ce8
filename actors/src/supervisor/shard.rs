//! `ShardSupervisor`: starts this node's Raft groups and one `ShardActor` per
//! local shard, and restarts a failed shard actor with backoff. Too many
//! failures inside the window escalate to the `NodeSupervisor`. It also
//! reclaims the leadership of the shards this node prefers to lead once it is
//! back and caught up after a failover (see `rebalance.rs`).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use ractor::{Actor, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use sundial_raft::group::{initialize_if_pristine, start_group, GroupTiming};
use sundial_raft::network::{PeerClients, RaftRegistry};
use sundial_raft::store::NodeStore;
use sundial_raft::{NodeId, Raft, ShardId};

use super::policy::{stopped_child, Decision, RestartPolicy, RestartTracker};
use super::rebalance::{should_reclaim, should_take_over, LostLeader, RebalancePolicy, ShardSight};
use crate::dispatch::{self, DispatchArgs, Dispatcher};
use crate::layout::ClusterLayout;
use crate::shard::{actor_name, ShardActor, ShardArgs};

pub struct ShardSupervisor;

pub struct ShardSupervisorArgs {
    pub layout: ClusterLayout,
    pub store: Arc<NodeStore>,
    pub registry: Arc<RaftRegistry>,
    pub peers: PeerClients,
    pub policy: RestartPolicy,
    /// `None` turns leader rebalancing off.
    pub rebalance: Option<RebalancePolicy>,
    /// For dispatchers' writes to other shards (quota reports).
    pub gateway: crate::gateway::GatewayHandle,
}

/// How often the supervisor looks at who leads its preferred shards.
const REBALANCE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// How often followers look for a leader whose node disconnected.
const TAKEOVER_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(20);
/// Time between one survivor standing for a dead leader's shard and the next.
const TAKEOVER_STAGGER: std::time::Duration = std::time::Duration::from_millis(100);

/// The two actors each local shard has.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Child {
    /// Batches writes into Raft entries.
    Shard,
    /// Timers and leases, active on the leader.
    Dispatch,
}

pub enum ShardSupervisorMsg {
    /// Start an actor of a shard again (sent after the backoff delay).
    Restart(ShardId, Child),
    /// Look for preferred shards led elsewhere (periodic).
    Rebalance,
    /// Look for shards whose leader's node went away (periodic, frequent).
    TakeOver,
}

impl ractor::Message for ShardSupervisorMsg {}

pub struct ShardSupervisorState {
    rafts: BTreeMap<ShardId, Raft>,
    children: HashMap<ActorId, (ShardId, Child)>,
    trackers: HashMap<(ShardId, Child), RestartTracker>,
    store: Arc<NodeStore>,
    policy: RestartPolicy,
    layout: ClusterLayout,
    rebalance: Option<RebalancePolicy>,
    gateway: crate::gateway::GatewayHandle,
    /// Per shard: the leader last seen and since when.
    leader_seen: HashMap<ShardId, (Option<sundial_raft::NodeId>, Instant)>,
    /// Per shard: the last reclaim attempt.
    reclaimed_at: HashMap<ShardId, Instant>,
    /// Per shard: the leader whose node disconnected, since when, whether
    /// this node stood for election since, and its term then.
    leader_lost: HashMap<ShardId, (NodeId, Instant, bool, u64)>,
    /// Per shard: the last leader seen alive.
    last_leader: HashMap<ShardId, NodeId>,
    /// Nodes this node has been connected to since it started: only a
    /// connection seen and then lost means the peer went away (right after
    /// a start, peers are merely not dialed yet).
    seen_connected: std::collections::HashSet<NodeId>,
}

impl Actor for ShardSupervisor {
    type Msg = ShardSupervisorMsg;
    type State = ShardSupervisorState;
    type Arguments = ShardSupervisorArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<ShardSupervisorMsg>,
        args: ShardSupervisorArgs,
    ) -> Result<ShardSupervisorState, ActorProcessingErr> {
        let layout = &args.layout;
        let timing = GroupTiming {
            heartbeat: layout.raft.heartbeat,
            election_min: layout.raft.election_min,
            election_max: layout.raft.election_max,
            snapshot_every: layout.raft.snapshot_every,
            logs_kept_after_snapshot: layout.raft.logs_kept_after_snapshot,
        };
        let mut rafts = BTreeMap::new();
        for shard in layout.local_shards() {
            let raft = start_group(&args.store, shard, layout.node_id, args.peers.clone(), timing).await?;
            args.registry.insert(shard, raft.clone());
            rafts.insert(shard, raft);
        }
        let mut state = ShardSupervisorState {
            rafts,
            gateway: args.gateway,
            children: HashMap::new(),
            trackers: HashMap::new(),
            store: args.store.clone(),
            policy: args.policy,
            layout: args.layout.clone(),
            rebalance: args.rebalance,
            leader_seen: HashMap::new(),
            reclaimed_at: HashMap::new(),
            leader_lost: HashMap::new(),
            last_leader: HashMap::new(),
            seen_connected: Default::default(),
        };
        let shards: Vec<ShardId> = state.rafts.keys().copied().collect();
        for shard in &shards {
            spawn_child(&myself, &mut state, *shard, Child::Shard).await?;
            spawn_child(&myself, &mut state, *shard, Child::Dispatch).await?;
        }
        for shard in shards {
            let members: BTreeMap<_, _> = layout
                .members(shard)
                .into_iter()
                .filter_map(|id| layout.peer(id).map(|p| (id, p.clone())))
                .collect();
            let Some(raft) = state.rafts.get(&shard).cloned() else {
                continue;
            };
            if layout.preferred_leader(shard) == Some(layout.node_id) {
                initialize_if_pristine(&raft, shard, members).await?;
            } else {
                // The preferred member forms the group; if it has not within
                // the grace period (it may be down), any member may: openraft
                // allows several members to initialize with the same config.
                let grace = layout.raft.election_max * 10;
                // Ends after the grace period; owns nothing but the handle.
                tokio::spawn(async move {
                    if !wait_until_formed(&raft, grace).await {
                        if let Err(e) = initialize_if_pristine(&raft, shard, members).await {
                            tracing::warn!(shard, error = %e, "fallback initialization failed");
                        }
                    }
                });
            }
        }
        tracing::info!(shards = state.rafts.len(), "shard supervisor started");
        if state.rebalance.is_some() {
            // Ends with this actor: ractor stops the interval when it stops.
            myself.send_interval(REBALANCE_CHECK_EVERY, || ShardSupervisorMsg::Rebalance);
        }
        if state.layout.replication_factor > 1 {
            // Ends with this actor, like the one above.
            myself.send_interval(TAKEOVER_CHECK_EVERY, || ShardSupervisorMsg::TakeOver);
        }
        Ok(state)
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<ShardSupervisorMsg>,
        state: &mut ShardSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        for (shard, raft) in &state.rafts {
            if let Err(e) = raft.shutdown().await {
                tracing::warn!(shard, error = %e, "raft group did not shut down cleanly");
            }
        }
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardSupervisorMsg>,
        msg: ShardSupervisorMsg,
        state: &mut ShardSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardSupervisorMsg::Restart(shard, kind) => {
                if let Err(e) = spawn_child(&myself, state, shard, kind).await {
                    // The old actor's name may not be released yet: try again soon.
                    tracing::warn!(shard, ?kind, error = %e, "actor restart failed, retrying");
                    let delay = state.policy.base_backoff;
                    myself.send_after(delay, move || ShardSupervisorMsg::Restart(shard, kind));
                }
            }
            ShardSupervisorMsg::Rebalance => rebalance(state),
            ShardSupervisorMsg::TakeOver => take_over(state),
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<ShardSupervisorMsg>,
        event: SupervisionEvent,
        state: &mut ShardSupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        let Some((child, why)) = stopped_child(&event) else {
            return Ok(());
        };
        let Some((shard, kind)) = state.children.remove(&child) else {
            return Ok(());
        };
        let tracker = state.trackers.entry((shard, kind)).or_default();
        match tracker.on_failure(&state.policy, Instant::now()) {
            Decision::RestartAfter(delay) => {
                tracing::warn!(shard, ?kind, reason = %why, ?delay, "actor failed, restarting");
                myself.send_after(delay, move || ShardSupervisorMsg::Restart(shard, kind));
                Ok(())
            }
            Decision::Escalate => {
                tracing::error!(shard, ?kind, reason = %why, "actor keeps failing, escalating");
                Err(format!(
                    "shard {shard} {kind:?} actor failed {} times within {:?}: {why}",
                    tracker.recent_failures(),
                    state.policy.window
                )
                .into())
            }
        }
    }
}

/// Starts an election on each preferred shard that another node leads, once
/// the shard is stable and this replica caught up.
fn rebalance(state: &mut ShardSupervisorState) {
    let Some(policy) = state.rebalance else {
        return;
    };
    let now = Instant::now();
    let me = state.layout.node_id;
    for (shard, raft) in &state.rafts {
        let m = raft.metrics().borrow().clone();
        let seen = state.leader_seen.entry(*shard).or_insert((m.current_leader, now));
        if seen.0 != m.current_leader {
            *seen = (m.current_leader, now);
        }
        let sight = ShardSight {
            me,
            preferred: state.layout.preferred_leader(*shard),
            leader: m.current_leader,
            following: m.state == openraft::ServerState::Follower,
            last_log: m.last_log_index.unwrap_or(0),
            last_applied: m.last_applied.map(|l| l.index).unwrap_or(0),
        };
        if should_reclaim(
            sight,
            &policy,
            seen.1,
            state.reclaimed_at.get(shard).copied(),
            now,
        ) {
            state.reclaimed_at.insert(*shard, now);
            tracing::info!(shard, from = ?m.current_leader, "reclaiming leadership of a preferred shard");
            let raft = raft.clone();
            let shard = *shard;
            // Ends as soon as the Raft core takes the command.
            tokio::spawn(async move {
                if let Err(e) = raft.trigger().elect().await {
                    tracing::warn!(shard, error = %e, "could not start an election");
                }
            });
        }
    }
}

/// Starts an election on each shard whose leader's node disconnected, when
/// it is this node's turn (see [`should_take_over`]).
fn take_over(state: &mut ShardSupervisorState) {
    let now = Instant::now();
    let me = state.layout.node_id;
    for node in state.layout.nodes.keys() {
        if state.gateway.is_connected(*node) {
            state.seen_connected.insert(*node);
        }
    }
    for (shard, raft) in &state.rafts {
        let (leader, following, term) = {
            let m = raft.metrics();
            let m = m.borrow();
            (
                m.current_leader,
                m.state != openraft::ServerState::Leader,
                m.current_term,
            )
        };
        // A connected leader (or this node): nothing lost.
        let live_leader = leader.filter(|l| *l == me || state.gateway.is_connected(*l));
        if live_leader.is_some() || !following {
            state.leader_lost.remove(shard);
            if let Some(l) = leader {
                state.last_leader.insert(*shard, l);
            }
            continue;
        }
        // The leader this replica followed last, if its node went away.
        let Some(lost) = leader.or_else(|| state.last_leader.get(shard).copied()) else {
            continue;
        };
        if !state.seen_connected.contains(&lost) {
            continue;
        }
        let entry = state
            .leader_lost
            .entry(*shard)
            .or_insert((lost, now, false, term));
        if entry.0 != lost {
            *entry = (lost, now, false, term);
        }
        let sight = LostLeader {
            me,
            leader: lost,
            connected_members: state
                .layout
                .members(*shard)
                .into_iter()
                .filter(|n| state.gateway.is_connected(*n))
                .collect(),
            leaderless: true,
            lost_for: now.duration_since(entry.1),
            lease: state.layout.raft.election_max,
            stagger: TAKEOVER_STAGGER,
            tried: entry.2,
            term_moved: term != entry.3,
        };
        if should_take_over(&sight) {
            entry.2 = true;
            tracing::info!(shard, lost, "leader's node disconnected: standing for election");
            let raft = raft.clone();
            let shard = *shard;
            // Ends as soon as the Raft core takes the command.
            tokio::spawn(async move {
                if let Err(e) = raft.trigger().elect().await {
                    tracing::warn!(shard, error = %e, "could not start an election");
                }
            });
        }
    }
}

/// Waits until the group has a membership (formed by some member), at most
/// `grace`; true if it did.
async fn wait_until_formed(raft: &Raft, grace: std::time::Duration) -> bool {
    let mut metrics = raft.metrics();
    let formed = async {
        loop {
            if metrics
                .borrow_and_update()
                .membership_config
                .membership()
                .voter_ids()
                .next()
                .is_some()
            {
                return;
            }
            if metrics.changed().await.is_err() {
                return std::future::pending().await;
            }
        }
    };
    tokio::time::timeout(grace, formed).await.is_ok()
}

async fn spawn_child(
    myself: &ActorRef<ShardSupervisorMsg>,
    state: &mut ShardSupervisorState,
    shard: ShardId,
    kind: Child,
) -> Result<(), ActorProcessingErr> {
    let Some(raft) = state.rafts.get(&shard).cloned() else {
        return Err(format!("shard {shard} is not hosted here").into());
    };
    let id = match kind {
        Child::Shard => {
            let (actor, _join) = Actor::spawn_linked(
                Some(actor_name(shard)),
                ShardActor,
                ShardArgs { shard, raft },
                myself.get_cell(),
            )
            .await?;
            actor.get_id()
        }
        Child::Dispatch => {
            let args = DispatchArgs {
                shard,
                node_id: state.layout.node_id,
                raft,
                store: state.store.clone(),
                gateway: state.gateway.clone(),
            };
            let (actor, _join) = Actor::spawn_linked(
                Some(dispatch::actor_name(shard)),
                Dispatcher,
                args,
                myself.get_cell(),
            )
            .await?;
            actor.get_id()
        }
    };
    state.children.insert(id, (shard, kind));
    Ok(())
}
