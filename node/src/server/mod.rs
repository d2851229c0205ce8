//! Wiring of a running node: storage, the internal Raft service, the actor
//! plane, the supervision tree, and the client gRPC services.

mod cluster;
mod jobs;
mod queues;
mod schedules;
mod status;
mod workers;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ractor::Actor;
use sundial_actors::executor::{ExecutorConfig, ExecutorProbe};
use sundial_actors::supervisor::{NodeSupervisor, NodeSupervisorArgs, RebalancePolicy, RestartPolicy};
use sundial_actors::GatewayHandle;
use sundial_proto::v1::cluster_service_server::ClusterServiceServer;
use sundial_proto::v1::job_service_server::JobServiceServer;
use sundial_proto::v1::queue_service_server::QueueServiceServer;
use sundial_proto::v1::raft_service_server::RaftServiceServer;
use sundial_proto::v1::schedule_service_server::ScheduleServiceServer;
use sundial_proto::v1::worker_service_server::WorkerServiceServer;
use sundial_raft::network::{PeerClients, RaftRegistry, RaftServer, MAX_RAFT_MESSAGE_BYTES};
use sundial_raft::store::NodeStore;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;

use crate::actor_plane::ActorPlane;
use crate::config::NodeConfig;

pub use jobs::JobApi;

/// A node running in this process.
pub struct Node {
    /// Where clients connect (the bound address, also when port 0 was asked).
    pub client_addr: SocketAddr,
    /// Where peers send Raft messages.
    pub raft_addr: SocketAddr,
    pub gateway: GatewayHandle,
    /// Fault injection into, and counters of, the HTTP executors (tests).
    pub executor_probe: Arc<ExecutorProbe>,
    shutdown: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Node {
    /// Starts a node from a validated config and returns once it listens.
    pub async fn start(cfg: NodeConfig) -> anyhow::Result<Node> {
        let store = NodeStore::open(&cfg.data_dir)
            .map_err(|e| anyhow::anyhow!("cannot open data dir {}: {e}", cfg.data_dir.display()))?;
        let registry = Arc::new(RaftRegistry::default());
        let (shutdown, shutdown_rx) = watch::channel(false);

        // Raft first, so peers can reach our groups as soon as they exist.
        let raft_listener = TcpListener::bind(cfg.raft_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for raft on {}: {e}", cfg.raft_addr))?;
        let raft_addr = raft_listener.local_addr()?;
        let raft_service = RaftServiceServer::new(RaftServer::new(registry.clone()))
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
        let raft_server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(raft_service)
            .serve_with_incoming_shutdown(
                accepted_without_nagle(raft_listener),
                wait_for(shutdown_rx.clone()),
            );

        let plane = ActorPlane::start(
            cfg.layout.node_id,
            cfg.cookie.clone(),
            cfg.actor_addr,
            cfg.actor_peers.clone(),
            shutdown_rx.clone(),
        )
        .await?;

        let mut layout = cfg.layout.clone();
        if let Some(me) = layout.nodes.get_mut(&layout.node_id) {
            me.raft_addr = raft_addr.to_string();
        }
        let gateway = GatewayHandle::new(layout.clone(), store.clone(), registry.clone());
        let store_for_shutdown = store.clone();
        let executor_probe = Arc::new(ExecutorProbe::default());
        let executor = (cfg.executor_concurrency > 0).then(|| {
            let config = ExecutorConfig {
                concurrency: cfg.executor_concurrency,
                max_result_bytes: cfg.limits.max_payload_bytes,
                policy: RestartPolicy::default(),
            };
            (config, executor_probe.clone())
        });
        let (supervisor, supervisor_done) = Actor::spawn(
            Some("node-supervisor".into()),
            NodeSupervisor,
            NodeSupervisorArgs {
                layout,
                store,
                registry,
                peers: PeerClients::default(),
                policy: RestartPolicy::default(),
                rebalance: cfg.rebalance_leaders.then(RebalancePolicy::default),
                gateway: gateway.clone(),
                executor,
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("cannot start the node's actors: {e}"))?;

        let client_listener = TcpListener::bind(cfg.client_addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen for clients on {}: {e}", cfg.client_addr))?;
        let client_addr = client_listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health.set_serving::<JobServiceServer<JobApi>>().await;
        let reflection = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sundial_proto::v1::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let cfg = Arc::new(cfg);
        let max_message = cfg.limits.max_payload_bytes * 2 + (1 << 20);
        let job_service = JobServiceServer::new(JobApi::new(cfg.clone(), gateway.clone()))
            .max_decoding_message_size(max_message)
            .max_encoding_message_size(64 << 20);
        let cluster_service = ClusterServiceServer::new(cluster::ClusterApi::new(gateway.clone()));
        let schedule_service =
            ScheduleServiceServer::new(schedules::ScheduleApi::new(cfg.clone(), gateway.clone()))
                .max_decoding_message_size(max_message)
                .max_encoding_message_size(64 << 20);
        let queue_service = QueueServiceServer::new(queues::QueueApi::new(cfg.clone(), gateway.clone()));
        let worker_service = WorkerServiceServer::new(workers::WorkerApi::new(
            gateway.clone(),
            cfg.limits.max_payload_bytes,
        ))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(64 << 20);
        let client_server = tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(health_service)
            .add_service(reflection)
            .add_service(job_service)
            .add_service(cluster_service)
            .add_service(worker_service)
            .add_service(schedule_service)
            .add_service(queue_service)
            .serve_with_incoming_shutdown(
                accepted_without_nagle(client_listener),
                wait_for(shutdown_rx.clone()),
            );

        tracing::info!(
            node = cfg.layout.node_id,
            %client_addr,
            %raft_addr,
            actor_addr = %cfg.actor_addr,
            data_dir = %cfg.data_dir.display(),
            "node listening"
        );
        spawn_ready_reporter(gateway.clone(), shutdown_rx.clone());

        let mut stop_rx = shutdown_rx;
        let task = tokio::spawn(async move {
            let raft_task = tokio::spawn(raft_server);
            let client_task = tokio::spawn(client_server);
            let mut supervisor_done = supervisor_done;
            let outcome = tokio::select! {
                _ = wait_for(stop_rx.clone()) => Ok(()),
                _ = &mut supervisor_done => Err(anyhow::anyhow!("the node's supervision tree stopped")),
            };
            // Stop taking requests, then stop the actors (which shuts the
            // Raft groups down), then the transports.
            let _ = stop_rx.borrow_and_update();
            supervisor.stop(Some("node shutting down".into()));
            let _ = tokio::time::timeout(Duration::from_secs(10), supervisor_done).await;
            store_for_shutdown.shutdown();
            plane.stop();
            client_task.abort();
            raft_task.abort();
            outcome
        });
        Ok(Node {
            client_addr,
            raft_addr,
            gateway,
            executor_probe,
            shutdown,
            task,
        })
    }

    /// Runs until the node stops by itself (its supervision tree failed).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }

    /// Stops the node and waits for it.
    pub async fn shutdown(mut self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.wait().await
    }

    pub fn trigger_shutdown(&self) {
        let _ = self.shutdown.send(true);
    }
}

/// Accepted connections with Nagle's algorithm off. tonic's own `tcp_nodelay`
/// applies only to listeners it binds itself; with Nagle on, small responses
/// wait for the peer's delayed ACK (tens of ms).
fn accepted_without_nagle(
    listener: TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    use futures::StreamExt;
    TcpListenerStream::new(listener).map(|accepted| {
        accepted.inspect(|stream| {
            if let Err(e) = stream.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot disable nagle on an accepted connection");
            }
        })
    })
}

async fn wait_for(mut rx: watch::Receiver<bool>) {
    while !*rx.borrow_and_update() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Logs once every local shard has a leader: the node is fully usable.
fn spawn_ready_reporter(gateway: GatewayHandle, shutdown: watch::Receiver<bool>) {
    // Ends on its own once the node is ready or shutting down.
    tokio::spawn(async move {
        let started = std::time::Instant::now();
        loop {
            let shards = gateway.shards();
            if !shards.is_empty() && shards.iter().all(|s| s.leader.is_some()) {
                tracing::info!(elapsed = ?started.elapsed(), shards = shards.len(), "every shard has a leader: ready");
                return;
            }
            if *shutdown.borrow() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
}
