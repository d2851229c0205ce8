//! Node configuration: `cluster.toml` → `SUNDIAL_*` environment → flags, then
//! validated before any socket is bound. A bad value is reported as one line
//! naming its key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use sundial_actors::{ClusterLayout, RaftTiming};
use sundial_raft::PeerNode;

/// A config problem, naming the key at fault.
#[derive(Debug, thiserror::Error)]
#[error("config error: {key}: {message}")]
pub struct ConfigError {
    pub key: String,
    pub message: String,
}

fn bad(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

/// `cluster.toml`, as written.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub cluster: ClusterSection,
    #[serde(default)]
    pub raft: RaftSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub executor: ExecutorSection,
    #[serde(default)]
    pub nodes: Vec<NodeSection>,
}

/// HTTP targets: the node's executors.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExecutorSection {
    /// HTTP calls in flight at once per node; 0 turns HTTP targets off
    /// (submits of HTTP jobs are then refused).
    pub concurrency: u32,
}

/// Most executors a node may run.
const MAX_EXECUTORS: u32 = 1024;

impl Default for ExecutorSection {
    fn default() -> Self {
        ExecutorSection { concurrency: 16 }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Number of shards; fixed when the cluster is created.
    #[serde(default = "default_shards")]
    pub shards: u32,
    /// Replicas per shard.
    #[serde(default = "default_replication")]
    pub replication_factor: usize,
    /// Shared secret nodes present to each other on the actor plane.
    pub cookie: String,
    /// Base directory for node data; each node uses `<data_dir>/node<id>`
    /// unless it sets its own `data_dir`.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftSection {
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    pub snapshot_every: u64,
    pub logs_kept_after_snapshot: u64,
    /// A restarted node takes back the shards it prefers to lead.
    pub rebalance_leaders: bool,
}

impl Default for RaftSection {
    fn default() -> Self {
        let t = RaftTiming::default();
        RaftSection {
            heartbeat_ms: t.heartbeat.as_millis() as u64,
            election_timeout_min_ms: t.election_min.as_millis() as u64,
            election_timeout_max_ms: t.election_max.as_millis() as u64,
            snapshot_every: t.snapshot_every,
            logs_kept_after_snapshot: t.logs_kept_after_snapshot,
            rebalance_leaders: true,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Largest job payload accepted, in bytes.
    pub max_payload_bytes: usize,
    /// Longest deadline a request may ask for, in ms.
    pub max_request_timeout_ms: u64,
    /// Deadline of a request that sets none, in ms.
    pub default_request_timeout_ms: u64,
    /// How long an idempotency key keeps returning its first job, in ms.
    pub idempotency_retention_ms: u64,
}

impl Default for LimitsSection {
    fn default() -> Self {
        LimitsSection {
            max_payload_bytes: 1 << 20,
            max_request_timeout_ms: 60_000,
            default_request_timeout_ms: 10_000,
            idempotency_retention_ms: 24 * 3600 * 1000,
        }
    }
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    pub id: u64,
    /// Where clients connect (gRPC).
    pub client_addr: String,
    /// Where peers send Raft messages (internal gRPC).
    pub raft_addr: String,
    /// Where peers connect on the actor plane (ractor_cluster).
    pub actor_addr: String,
    /// This node's data directory (default `<cluster.data_dir>/node<id>`).
    pub data_dir: Option<PathBuf>,
}

fn default_shards() -> u32 {
    8
}
fn default_replication() -> usize {
    3
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("sundial-data")
}

/// Overrides from the environment and flags, applied over the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub data_dir: Option<PathBuf>,
    pub cookie: Option<String>,
    pub max_payload_bytes: Option<usize>,
}

impl Overrides {
    /// Reads `SUNDIAL_DATA_DIR`, `SUNDIAL_COOKIE`, `SUNDIAL_MAX_PAYLOAD_BYTES`.
    pub fn from_env() -> Result<Overrides, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        Ok(Overrides {
            data_dir: var("SUNDIAL_DATA_DIR").map(PathBuf::from),
            cookie: var("SUNDIAL_COOKIE"),
            max_payload_bytes: var("SUNDIAL_MAX_PAYLOAD_BYTES")
                .map(|v| {
                    v.parse()
                        .map_err(|_| bad("SUNDIAL_MAX_PAYLOAD_BYTES", format!("{v:?} is not a byte count")))
                })
                .transpose()?,
        })
    }

    /// Later layers win.
    pub fn then(self, later: Overrides) -> Overrides {
        Overrides {
            data_dir: later.data_dir.or(self.data_dir),
            cookie: later.cookie.or(self.cookie),
            max_payload_bytes: later.max_payload_bytes.or(self.max_payload_bytes),
        }
    }
}

/// A validated node config: everything `serve` needs.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub layout: ClusterLayout,
    pub client_addr: SocketAddr,
    pub raft_addr: SocketAddr,
    pub actor_addr: SocketAddr,
    /// Actor-plane addresses of the other members.
    pub actor_peers: BTreeMap<u64, SocketAddr>,
    pub data_dir: PathBuf,
    pub cookie: String,
    pub limits: LimitsSection,
    /// See `raft.rebalance_leaders` in cluster.toml.
    pub rebalance_leaders: bool,
    /// HTTP calls in flight at once on this node; 0: HTTP targets are off.
    pub executor_concurrency: u32,
}

impl NodeConfig {
    pub fn request_timeout(&self, asked: Option<Duration>) -> Duration {
        let max = Duration::from_millis(self.limits.max_request_timeout_ms);
        asked
            .unwrap_or(Duration::from_millis(self.limits.default_request_timeout_ms))
            .min(max)
    }
}

/// Reads and parses a config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| bad("--config", format!("cannot read {}: {e}", path.display())))?;
    toml::from_str(&text).map_err(|e| {
        let key = e
            .span()
            .and_then(|span| text.get(..span.start))
            .map(|before| format!("{} line {}", path.display(), before.lines().count().max(1)))
            .unwrap_or_else(|| path.display().to_string());
        bad(key, e.message().to_string())
    })
}

fn parse_addr(key: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value
        .parse()
        .map_err(|_| bad(key, format!("{value:?} is not an ip:port address")))
}

/// Validates `file` for node `node_id` with `overrides` applied.
pub fn resolve(file: FileConfig, node_id: u64, overrides: Overrides) -> Result<NodeConfig, ConfigError> {
    let c = &file.cluster;
    if c.shards == 0 || c.shards > sundial_raft::JobId::MAX_SHARDS {
        return Err(bad(
            "cluster.shards",
            format!(
                "{} is out of range 1..={}",
                c.shards,
                sundial_raft::JobId::MAX_SHARDS
            ),
        ));
    }
    if file.nodes.is_empty() {
        return Err(bad("nodes", "at least one [[nodes]] entry is required"));
    }
    if c.replication_factor == 0 || c.replication_factor > file.nodes.len() {
        return Err(bad(
            "cluster.replication_factor",
            format!(
                "{} must be between 1 and the node count {}",
                c.replication_factor,
                file.nodes.len()
            ),
        ));
    }
    let cookie = overrides.cookie.clone().unwrap_or_else(|| c.cookie.clone());
    if cookie.trim().is_empty() {
        return Err(bad("cluster.cookie", "must not be empty"));
    }
    let r = &file.raft;
    if r.heartbeat_ms == 0 || r.heartbeat_ms >= r.election_timeout_min_ms {
        return Err(bad(
            "raft.heartbeat_ms",
            format!(
                "{} must be above 0 and below raft.election_timeout_min_ms ({})",
                r.heartbeat_ms, r.election_timeout_min_ms
            ),
        ));
    }
    if r.election_timeout_min_ms >= r.election_timeout_max_ms {
        return Err(bad(
            "raft.election_timeout_max_ms",
            format!(
                "{} must be above raft.election_timeout_min_ms ({})",
                r.election_timeout_max_ms, r.election_timeout_min_ms
            ),
        ));
    }
    if r.snapshot_every == 0 {
        return Err(bad("raft.snapshot_every", "must be above 0"));
    }
    let limits = LimitsSection {
        max_payload_bytes: overrides
            .max_payload_bytes
            .unwrap_or(file.limits.max_payload_bytes),
        ..file.limits.clone()
    };
    if limits.max_payload_bytes == 0 || limits.max_payload_bytes > 32 << 20 {
        return Err(bad(
            "limits.max_payload_bytes",
            format!("{} is out of range 1..=33554432", limits.max_payload_bytes),
        ));
    }
    if limits.default_request_timeout_ms == 0
        || limits.default_request_timeout_ms > limits.max_request_timeout_ms
    {
        return Err(bad(
            "limits.default_request_timeout_ms",
            "must be above 0 and at most limits.max_request_timeout_ms",
        ));
    }

    if limits.idempotency_retention_ms == 0 || limits.idempotency_retention_ms > 366 * 24 * 3600 * 1000 {
        return Err(bad(
            "limits.idempotency_retention_ms",
            format!(
                "{} is out of range 1..=31622400000 (a year)",
                limits.idempotency_retention_ms
            ),
        ));
    }
    if file.executor.concurrency > MAX_EXECUTORS {
        return Err(bad(
            "executor.concurrency",
            format!(
                "{} is over the limit of {MAX_EXECUTORS}",
                file.executor.concurrency
            ),
        ));
    }

    let mut ids = BTreeSet::new();
    let mut addrs = BTreeSet::new();
    let mut nodes = BTreeMap::new();
    let mut actor_peers = BTreeMap::new();
    let mut me = None;
    for (i, n) in file.nodes.iter().enumerate() {
        let key = |field: &str| format!("nodes[{i}].{field}");
        if n.id == 0 {
            return Err(bad(key("id"), "node ids start at 1"));
        }
        if !ids.insert(n.id) {
            return Err(bad(key("id"), format!("node id {} appears twice", n.id)));
        }
        let client = parse_addr(&key("client_addr"), &n.client_addr)?;
        let raft = parse_addr(&key("raft_addr"), &n.raft_addr)?;
        let actor = parse_addr(&key("actor_addr"), &n.actor_addr)?;
        for (field, addr) in [
            ("client_addr", client),
            ("raft_addr", raft),
            ("actor_addr", actor),
        ] {
            if addr.port() != 0 && !addrs.insert(addr) {
                return Err(bad(key(field), format!("{addr} is used twice")));
            }
        }
        nodes.insert(
            n.id,
            PeerNode {
                raft_addr: raft.to_string(),
                client_addr: client.to_string(),
            },
        );
        if n.id == node_id {
            me = Some((n.clone(), client, raft, actor));
        } else {
            actor_peers.insert(n.id, actor);
        }
    }
    let Some((section, client_addr, raft_addr, actor_addr)) = me else {
        return Err(bad(
            "--node",
            format!("node {node_id} is not listed under [[nodes]]"),
        ));
    };
    let data_dir = overrides
        .data_dir
        .or(section.data_dir)
        .unwrap_or_else(|| c.data_dir.join(format!("node{node_id}")));
    Ok(NodeConfig {
        layout: ClusterLayout {
            node_id,
            nodes,
            shard_count: c.shards,
            replication_factor: c.replication_factor,
            raft: RaftTiming {
                heartbeat: Duration::from_millis(r.heartbeat_ms),
                election_min: Duration::from_millis(r.election_timeout_min_ms),
                election_max: Duration::from_millis(r.election_timeout_max_ms),
                snapshot_every: r.snapshot_every,
                logs_kept_after_snapshot: r.logs_kept_after_snapshot,
            },
        },
        client_addr,
        raft_addr,
        actor_addr,
        actor_peers,
        data_dir,
        cookie,
        limits,
        rebalance_leaders: r.rebalance_leaders,
        executor_concurrency: file.executor.concurrency,
    })
}

/// The embedded one-node config of `sundial dev`.
pub fn dev(data_dir: PathBuf, client_addr: SocketAddr) -> Result<NodeConfig, ConfigError> {
    let file = FileConfig {
        cluster: ClusterSection {
            shards: default_shards(),
            replication_factor: 1,
            cookie: "sundial-dev".into(),
            data_dir: data_dir.clone(),
        },
        raft: RaftSection::default(),
        limits: LimitsSection::default(),
        executor: ExecutorSection::default(),
        nodes: vec![NodeSection {
            id: 1,
            client_addr: client_addr.to_string(),
            // Internal ports are unused by other nodes in dev mode, so let the
            // kernel pick them and never clash with a running cluster.
            raft_addr: format!("{}:0", client_addr.ip()),
            actor_addr: format!("{}:0", client_addr.ip()),
            data_dir: Some(data_dir),
        }],
    };
    resolve(file, 1, Overrides::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"
[cluster]
shards = 4
replication_factor = 3
cookie = "secret"

[[nodes]]
id = 1
client_addr = "127.0.0.1:7071"
raft_addr = "127.0.0.1:7171"
actor_addr = "127.0.0.1:7271"

[[nodes]]
id = 2
client_addr = "127.0.0.1:7072"
raft_addr = "127.0.0.1:7172"
actor_addr = "127.0.0.1:7272"

[[nodes]]
id = 3
client_addr = "127.0.0.1:7073"
raft_addr = "127.0.0.1:7173"
actor_addr = "127.0.0.1:7273"
"#;

    fn parse(text: &str) -> FileConfig {
        toml::from_str(text).expect("sample parses")
    }

    #[test]
    fn sample_resolves_with_defaults() {
        let cfg = resolve(parse(SAMPLE), 2, Overrides::default()).expect("valid");
        assert_eq!(cfg.layout.node_id, 2);
        assert_eq!(cfg.layout.shard_count, 4);
        assert_eq!(cfg.client_addr.port(), 7072);
        assert_eq!(cfg.data_dir, PathBuf::from("sundial-data/node2"));
        assert_eq!(cfg.actor_peers.len(), 2);
        assert_eq!(cfg.limits.max_payload_bytes, 1 << 20);
        assert!(cfg.rebalance_leaders);
        let off = SAMPLE.replace("[cluster]", "[raft]\nrebalance_leaders = false\n\n[cluster]");
        assert!(
            !resolve(parse(&off), 2, Overrides::default())
                .expect("valid")
                .rebalance_leaders
        );
    }

    #[test]
    fn overrides_win_over_the_file() {
        let o = Overrides {
            data_dir: Some("/tmp/x".into()),
            cookie: Some("other".into()),
            max_payload_bytes: Some(10),
        };
        let cfg = resolve(parse(SAMPLE), 1, o).expect("valid");
        assert_eq!(cfg.data_dir, PathBuf::from("/tmp/x"));
        assert_eq!(cfg.cookie, "other");
        assert_eq!(cfg.limits.max_payload_bytes, 10);
    }

    #[test]
    fn errors_name_the_key() {
        let cases = [
            (SAMPLE.replace("shards = 4", "shards = 0"), "cluster.shards"),
            (
                SAMPLE.replace("replication_factor = 3", "replication_factor = 4"),
                "cluster.replication_factor",
            ),
            (
                SAMPLE.replace("cookie = \"secret\"", "cookie = \"\""),
                "cluster.cookie",
            ),
            (SAMPLE.replace("127.0.0.1:7172", "nonsense"), "nodes[1].raft_addr"),
            (
                SAMPLE.replace("127.0.0.1:7173", "127.0.0.1:7172"),
                "nodes[2].raft_addr",
            ),
            (SAMPLE.replace("id = 3", "id = 2"), "nodes[2].id"),
        ];
        for (text, key) in cases {
            let err = resolve(parse(&text), 1, Overrides::default()).expect_err(key);
            assert_eq!(err.key, key, "{err}");
        }
        let err = resolve(parse(SAMPLE), 9, Overrides::default()).expect_err("unknown node");
        assert_eq!(err.key, "--node");
    }

    #[test]
    fn unknown_keys_are_refused() {
        let text = SAMPLE.replace("[cluster]", "[cluster]\nshardz = 3");
        assert!(toml::from_str::<FileConfig>(&text).is_err());
    }
}
