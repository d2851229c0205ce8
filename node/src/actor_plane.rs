//! The actor plane: a `ractor_cluster` node server bound to the configured
//! address, authenticated by the cluster cookie, and a background task that
//! keeps a session open to every peer. Each node dials the peers with lower
//! ids, so every pair has exactly one dialer; a dropped session is re-dialed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use ractor::{Actor, ActorRef};
use ractor_cluster::node::NodeConnectionMode;
use ractor_cluster::{NodeServer, NodeServerMessage};
use sundial_actors::gateway::gateway_group;
use tokio::sync::watch;

/// How often the dialer checks its sessions.
const CHECK_EVERY: Duration = Duration::from_millis(100);
/// How long a fresh dial gets to show up before it is retried. A dial that
/// connected but whose session never formed (the peer was still starting)
/// is retried after this: it bounds how long two nodes stay unable to
/// forward to each other after one restarts (the chaos suite saw 2 s).
const DIAL_GRACE: Duration = Duration::from_millis(500);

pub struct ActorPlane {
    pub server: ActorRef<NodeServerMessage>,
    dialer: tokio::task::JoinHandle<()>,
}

impl ActorPlane {
    pub async fn start(
        node_id: u64,
        cookie: String,
        listen: SocketAddr,
        peers: BTreeMap<u64, SocketAddr>,
        mut shutdown: watch::Receiver<bool>,
    ) -> anyhow::Result<ActorPlane> {
        let server = NodeServer::new(
            listen.port(),
            cookie,
            format!("sundial-{node_id}"),
            listen.ip().to_string(),
            None,
            Some(NodeConnectionMode::Isolated),
        )
        .with_listen_addr(listen.ip())
        .with_max_inbound_frame_size(256 << 20);
        let (server, _) = Actor::spawn(Some(format!("actor-plane-{node_id}")), server, ())
            .await
            .map_err(|e| anyhow::anyhow!("cannot start the actor plane on {listen}: {e}"))?;
        let to_dial: Vec<(u64, SocketAddr)> = peers.into_iter().filter(|(id, _)| *id < node_id).collect();
        let dial_server = server.clone();
        let dialer = tokio::spawn(async move {
            let mut last_dial: BTreeMap<u64, Instant> = BTreeMap::new();
            loop {
                for (peer, addr) in &to_dial {
                    let connected = !ractor::pg::get_members(&gateway_group(*peer)).is_empty();
                    let recently = last_dial.get(peer).is_some_and(|t| t.elapsed() < DIAL_GRACE);
                    if connected || recently {
                        continue;
                    }
                    match ractor_cluster::client_connect(&dial_server, *addr).await {
                        Ok(()) => {
                            // Give the handshake and group sync time before
                            // judging the session.
                            last_dial.insert(*peer, Instant::now());
                            tracing::info!(peer, %addr, "actor plane: dialed peer");
                        }
                        Err(e) => tracing::debug!(peer, %addr, error = %e, "actor plane: peer not reachable"),
                    }
                }
                tokio::select! {
                    _ = tokio::time::sleep(CHECK_EVERY) => {}
                    _ = shutdown.changed() => return,
                }
            }
        });
        Ok(ActorPlane { server, dialer })
    }

    pub fn stop(self) {
        self.dialer.abort();
        self.server.stop(Some("node shutting down".into()));
    }
}
