//! The gateway: routes every client request to its shard's leader.
//!
//! Two halves: [`GatewayHandle`] runs in the caller's task (the gRPC handler)
//! and does routing and retries; the [`Gateway`] actor is this node's entry
//! point for requests forwarded by other nodes' gateways over `ractor_cluster`.
//! It joins the process group `sundial.gateway.<node id>` so peers find it,
//! and runs each forwarded request in its own task so one slow shard never
//! blocks its mailbox.

mod handle;
mod messages;

use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use sundial_raft::codec;

pub use handle::{gateway_group, state_name, GatewayHandle, ListPage, SessionGuard, ShardView};
pub use messages::{Forwarded, GatewayMsg, GatewayReply, GatewayRequest, WorkerNotice};

use crate::error::ExecError;

/// Longest a forwarded request may run here, whatever the sender asked.
const MAX_FORWARDED_TIMEOUT: Duration = Duration::from_secs(60);

pub struct Gateway;

impl Actor for Gateway {
    type Msg = GatewayMsg;
    type State = GatewayHandle;
    type Arguments = GatewayHandle;

    async fn pre_start(
        &self,
        myself: ActorRef<GatewayMsg>,
        handle: GatewayHandle,
    ) -> Result<GatewayHandle, ActorProcessingErr> {
        let group = gateway_group(handle.layout().node_id);
        ractor::pg::join(group.clone(), vec![myself.get_cell()]);
        tracing::info!(%group, "gateway started");
        Ok(handle)
    }

    async fn handle(
        &self,
        _myself: ActorRef<GatewayMsg>,
        msg: GatewayMsg,
        handle: &mut GatewayHandle,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            GatewayMsg::Forward(bytes, reply) => {
                let handle = handle.clone();
                // Detached on purpose: the task owns the reply port and ends
                // within its timeout.
                tokio::spawn(async move {
                    let result = match codec::decode::<Forwarded>(&bytes) {
                        Ok(fwd) => {
                            let timeout = Duration::from_millis(fwd.timeout_ms).min(MAX_FORWARDED_TIMEOUT);
                            handle.execute_local(fwd.request, timeout).await
                        }
                        Err(e) => Err(ExecError::Internal(format!("malformed forwarded request: {e}"))),
                    };
                    match codec::encode(&result) {
                        Ok(bytes) => {
                            let _ = reply.send(bytes);
                        }
                        Err(e) => tracing::error!(error = %e, "cannot encode forwarded reply"),
                    }
                });
            }
        }
        Ok(())
    }
}
