//! The shard actor: the write path of one local shard replica.
//!
//! It packs concurrent writes into one Raft entry (batching is the main lever
//! for throughput) and hands them to its Raft group. Each batch runs in its own
//! task and answers its callers from there, so a batch already handed to Raft
//! is answered even if this actor crashes meanwhile. What a crash loses is only
//! the queue of writes not yet handed to Raft; their callers see an error and
//! the gateway retries them with the same job id, which the state machine
//! applies once. Everything durable lives in RocksDB through Raft, so a
//! restarted actor rebuilds itself from there.

mod messages;
mod state;

use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use sundial_raft::types::{Op, OpResult, Request};
use sundial_raft::{NodeId, Raft, ShardId};

pub use messages::ShardMsg;
use state::{AfterDone, Batcher};

use crate::error::ExecError;

/// Most batches of one shard in Raft at once. One: everything that arrives
/// while a batch commits rides in the next entry, which measured best (bigger
/// entries, fewer fsyncs and messages; see docs/BENCHMARKS.md).
const MAX_IN_FLIGHT: usize = 1;
/// Most operations in one Raft entry.
const MAX_BATCH: usize = 1024;
/// How long the queue waits, after a shared batch commits, for the clients it
/// just answered (see `state.rs`).
const LINGER: Duration = Duration::from_micros(1000);

/// The registered name of a shard's actor on this node.
pub fn actor_name(shard: ShardId) -> String {
    format!("shard-{shard}")
}

pub struct ShardActor;

pub struct ShardArgs {
    pub shard: ShardId,
    pub raft: Raft,
}

pub struct ShardState {
    shard: ShardId,
    raft: Raft,
    batcher: Batcher<(Op, RpcReplyPort<Result<OpResult, ExecError>>)>,
}

impl Actor for ShardActor {
    type Msg = ShardMsg;
    type State = ShardState;
    type Arguments = ShardArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<ShardMsg>,
        args: ShardArgs,
    ) -> Result<ShardState, ActorProcessingErr> {
        // Recovery: the replica's durable state is the Raft group's; report
        // where it stands so a restart is visible in the logs.
        let metrics = args.raft.metrics().borrow().clone();
        tracing::info!(
            shard = args.shard,
            applied = metrics.last_applied.map(|l| l.index).unwrap_or(0),
            leader = ?metrics.current_leader,
            "shard actor started"
        );
        Ok(ShardState {
            shard: args.shard,
            raft: args.raft,
            batcher: Batcher::new(MAX_IN_FLIGHT, MAX_BATCH, LINGER),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<ShardMsg>,
        msg: ShardMsg,
        state: &mut ShardState,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ShardMsg::Write(op, reply) => {
                // Chaos: `shard-actor-write=1*panic` makes the next write panic
                // the actor (its caller sees the reply dropped).
                fail::fail_point!("shard-actor-write");
                state.batcher.push((op, reply));
                start_batches(&myself, state);
            }
            ShardMsg::BatchDone => match state.batcher.done() {
                AfterDone::Continue => start_batches(&myself, state),
                AfterDone::Linger(delay) => {
                    myself.send_after(delay, || ShardMsg::LingerOver);
                }
            },
            ShardMsg::LingerOver => {
                state.batcher.release();
                start_batches(&myself, state);
            }
            ShardMsg::InjectPanic(reason) => {
                panic!("injected fault in shard {}: {reason}", state.shard);
            }
        }
        Ok(())
    }
}

fn start_batches(myself: &ActorRef<ShardMsg>, state: &mut ShardState) {
    while let Some(batch) = state.batcher.next_batch() {
        let raft = state.raft.clone();
        let shard = state.shard;
        let myself = myself.clone();
        // Detached on purpose: the task owns the batch's reply ports and ends
        // when Raft answers, even if this actor has died meanwhile.
        tokio::spawn(async move {
            let (ops, replies): (Vec<Op>, Vec<_>) = batch.into_iter().unzip();
            let count = ops.len();
            match raft.client_write(Request { ops }).await {
                Ok(response) => {
                    let results = response.data.results;
                    debug_assert_eq!(results.len(), count);
                    for (reply, result) in replies.into_iter().zip(results) {
                        let _ = reply.send(Ok(result));
                    }
                }
                Err(e) => {
                    let err = write_error(shard, e);
                    for reply in replies {
                        let _ = reply.send(Err(err.clone()));
                    }
                }
            }
            // The actor may be gone (restarted); then nobody needs the slot.
            let _ = myself.cast(ShardMsg::BatchDone);
        });
    }
}

fn write_error(
    shard: ShardId,
    e: RaftError<NodeId, ClientWriteError<NodeId, sundial_raft::PeerNode>>,
) -> ExecError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => ExecError::NotLeader {
            shard,
            leader: f.leader_id,
        },
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ExecError::Internal(e.to_string()),
        RaftError::Fatal(f) => ExecError::Unavailable {
            shard,
            reason: format!("raft stopped: {f}"),
        },
    }
}

/// How callers reach a shard's actor on this node. It looks the actor up by
/// name on every call, so it keeps working across restarts.
#[derive(Clone, Copy, Debug)]
pub struct ShardHandle {
    shard: ShardId,
}

impl ShardHandle {
    pub fn new(shard: ShardId) -> ShardHandle {
        ShardHandle { shard }
    }

    fn actor(&self) -> Result<ActorRef<ShardMsg>, ExecError> {
        ractor::registry::where_is(actor_name(self.shard))
            .map(ActorRef::from)
            .ok_or_else(|| ExecError::Unavailable {
                shard: self.shard,
                reason: "shard actor is restarting".into(),
            })
    }

    /// Replicates `op` and returns its result, waiting at most `timeout`.
    pub async fn write(&self, op: Op, timeout: Duration) -> Result<OpResult, ExecError> {
        let actor = self.actor()?;
        let outcome = actor
            .call(|reply| ShardMsg::Write(op, reply), Some(timeout))
            .await;
        match outcome {
            Ok(ractor::rpc::CallResult::Success(result)) => result,
            Ok(ractor::rpc::CallResult::Timeout) => Err(ExecError::Unavailable {
                shard: self.shard,
                reason: format!("no answer within {timeout:?}"),
            }),
            Ok(ractor::rpc::CallResult::SenderError) | Err(_) => Err(ExecError::Unavailable {
                shard: self.shard,
                reason: "shard actor stopped before answering".into(),
            }),
        }
    }

    /// Makes the shard's actor panic (fault injection).
    pub fn inject_panic(&self, reason: &str) -> Result<(), ExecError> {
        self.actor()?
            .cast(ShardMsg::InjectPanic(reason.to_string()))
            .map_err(|e| ExecError::Unavailable {
                shard: self.shard,
                reason: e.to_string(),
            })
    }
}
