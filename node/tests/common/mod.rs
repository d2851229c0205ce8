//! Test harness: real `sundial serve` processes on loopback ports chosen by
//! the kernel, in a temp dir, killed when the harness drops.

#![allow(dead_code)]

pub mod http;
pub mod worker;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sundial_sdk::{Client, ListJobs};

pub const BIN: &str = env!("CARGO_BIN_EXE_sundial");

/// Asks the kernel for free loopback ports (bound to port 0, then released).
pub fn free_ports(n: usize) -> Vec<u16> {
    let listeners: Vec<TcpListener> = (0..n)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("bind port 0"))
        .collect();
    listeners
        .iter()
        .map(|l| l.local_addr().expect("local addr").port())
        .collect()
}

/// A one-node `sundial dev` cluster running in this test's process (for
/// tests that inject faults through the node's handles), ready when every
/// shard has its leader, and a client of it. The temp dir holds its data.
pub async fn in_process_node() -> (tempfile::TempDir, sundial::server::Node, Client) {
    let dir = tempfile::tempdir().expect("temp dir");
    let addr: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    let cfg = sundial::config::dev(dir.path().join("data"), addr).expect("dev config");
    let node = sundial::server::Node::start(cfg).await.expect("start node");
    let client = Client::connect(&node.client_addr.to_string())
        .await
        .expect("connect")
        .with_timeout(Duration::from_secs(10));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !node.gateway.shards().iter().all(|s| s.leader.is_some()) {
        assert!(Instant::now() < deadline, "shards never elected a leader");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (dir, node, client)
}

pub struct NodeSpec {
    pub id: u64,
    pub client: u16,
    pub raft: u16,
    pub actor: u16,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeSpec>,
    pub children: Vec<Option<Child>>,
    pub config: PathBuf,
}

impl TestCluster {
    /// Writes a config for `n` nodes and starts them all.
    pub fn start(n: usize, shards: u32) -> TestCluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let ports = free_ports(3 * n);
        let nodes: Vec<NodeSpec> = (0..n)
            .map(|i| NodeSpec {
                id: i as u64 + 1,
                client: ports[3 * i],
                raft: ports[3 * i + 1],
                actor: ports[3 * i + 2],
            })
            .collect();
        let mut text = format!(
            "[cluster]\nshards = {shards}\nreplication_factor = {}\ncookie = \"test-cookie\"\ndata_dir = \"{}\"\n\n[raft]\nheartbeat_ms = 50\nelection_timeout_min_ms = 300\nelection_timeout_max_ms = 500\nsnapshot_every = 20\nlogs_kept_after_snapshot = 5\n",
            n.min(3),
            dir.path().join("data").display()
        );
        for node in &nodes {
            text.push_str(&format!(
                "\n[[nodes]]\nid = {}\nclient_addr = \"127.0.0.1:{}\"\nraft_addr = \"127.0.0.1:{}\"\nactor_addr = \"127.0.0.1:{}\"\n",
                node.id, node.client, node.raft, node.actor
            ));
        }
        let config = dir.path().join("cluster.toml");
        std::fs::write(&config, text).expect("write config");
        let mut cluster = TestCluster {
            dir,
            children: (0..n).map(|_| None).collect(),
            nodes,
            config,
        };
        for i in 0..n {
            cluster.spawn(i);
        }
        cluster
    }

    pub fn log_path(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node{}.log", i + 1))
    }

    fn spawn(&mut self, i: usize) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))
            .expect("open log");
        let child = Command::new(BIN)
            .args(["serve", "--config"])
            .arg(&self.config)
            .args(["--node", &self.nodes[i].id.to_string()])
            .env("SUNDIAL_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log"))
            .stderr(log)
            .spawn()
            .expect("spawn sundial");
        self.children[i] = Some(child);
    }

    pub fn addr(&self, i: usize) -> String {
        format!("127.0.0.1:{}", self.nodes[i].client)
    }

    /// SIGKILL, no chance to flush anything.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn restart(&mut self, i: usize) {
        self.kill(i);
        self.spawn(i);
    }

    pub async fn client(&self, i: usize) -> Client {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match Client::connect(&self.addr(i)).await {
                Ok(c) => return c.with_timeout(Duration::from_secs(10)),
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node {} never accepted connections: {e}\n{}", i + 1, self.logs(i)),
            }
        }
    }

    /// Waits until node `i` reports a leader for every shard.
    pub async fn wait_all_leaders(&self, i: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let mut client = self.client(i).await;
        loop {
            if let Ok(info) = client.cluster_info().await {
                if info.shards.iter().all(|s| s.leader != 0) {
                    return;
                }
            }
            assert!(
                Instant::now() < deadline,
                "node {} has no leader for some shard after {timeout:?}\n{}",
                i + 1,
                self.logs(i)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every job of the default namespace as node `i`'s own replicas hold
    /// them: (id, payload as text).
    pub async fn local_jobs(&self, i: usize) -> Vec<(String, String)> {
        let mut client = self.client(i).await;
        let mut token = String::new();
        let mut jobs = Vec::new();
        loop {
            let page = client
                .list_jobs(ListJobs {
                    page_size: 1000,
                    page_token: token,
                    local: true,
                    ..Default::default()
                })
                .await
                .expect("local list");
            jobs.extend(
                page.jobs
                    .into_iter()
                    .map(|j| (j.id, String::from_utf8_lossy(&j.payload).into_owned())),
            );
            if page.next_page_token.is_empty() {
                return jobs;
            }
            token = page.next_page_token;
        }
    }

    pub fn logs(&self, i: usize) -> String {
        let text = std::fs::read_to_string(self.log_path(i)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        format!("--- last lines of node {} log ---\n{}", i + 1, tail.join("\n"))
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        if std::thread::panicking() {
            // Keep the evidence of a failing run.
            let kept = self.dir.path().to_path_buf();
            eprintln!("keeping {} for inspection", kept.display());
            let _ = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("temp dir")).keep();
        }
    }
}

pub fn read_to_string(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}
