//! Messages of the shard actor.

use ractor::RpcReplyPort;
use sundial_raft::types::{Op, OpResult};

use crate::error::ExecError;

pub enum ShardMsg {
    /// Replicate one operation; answered once it is committed and applied.
    Write(Op, RpcReplyPort<Result<OpResult, ExecError>>),
    /// A batch this actor started has finished.
    BatchDone,
    /// The linger after a shared batch is over.
    LingerOver,
    /// Fault injection: panic inside the handler (tests and chaos runs).
    InjectPanic(String),
}

// ractor's `cluster` feature removes the blanket `Message` impl; this actor is
// local-only.
impl ractor::Message for ShardMsg {}
