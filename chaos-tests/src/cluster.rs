//! The nodes of a run and the faults that reach them.
//!
//! [`Cluster`] is what the harness drives: start, kill, pause, partition,
//! failpoints, health and leaders. Where the nodes run is a [`Nodes`]:
//! - [`ProcNodes`] (process mode): `sundial serve` processes, each in its
//!   own network namespace with its own address on a private bridge
//!   ([`Net`]), so that iptables rules inside a namespace cut one node off
//!   from its peers;
//! - [`crate::docker::DockerNodes`] (container mode).
//!
//! The harness, its producers and its workers stay on the host and reach
//! every node by its client address: a partition separates nodes from each
//! other, not clients from nodes.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sundial_sdk::Client;

/// Runs a command and returns its stdout, failing with its stderr.
pub(crate) fn sh(program: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    if !out.status.success() {
        bail!(
            "{program} {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Fails unless `build_info` (what `sundial build-info` printed) lists the
/// `failpoints` feature; `what` names the binary or image, `fix` how to get
/// one that has it.
pub(crate) fn require_failpoints(build_info: &[u8], what: &str, fix: &str) -> anyhow::Result<()> {
    let info: serde_json::Value =
        serde_json::from_slice(build_info).with_context(|| format!("{what} build-info printed no JSON"))?;
    let has = info["features"]
        .as_array()
        .is_some_and(|f| f.iter().any(|x| x == "failpoints"));
    if !has {
        bail!("{what} has no failpoints compiled in; {fix}");
    }
    Ok(())
}

/// Runs a command and ignores how it went (cleanup of what may not exist).
pub(crate) fn sh_quiet(program: &str, args: &[&str]) {
    let _ = Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The bridge and namespaces of one run.
pub struct Net {
    /// Third octet of the run's 10.211.x.0/24 subnet, and its name tag.
    tag: u8,
    pub nodes: usize,
}

impl Net {
    /// Creates a bridge `sdl<tag>br` with 10.211.<tag>.1 and, per node, a
    /// namespace `sdl<tag>n<i>` holding 10.211.<tag>.<11+i>. Leftovers of
    /// an earlier run with the same tag are removed first.
    pub fn create(tag: u8, nodes: usize) -> anyhow::Result<Net> {
        for tool in ["ip", "iptables"] {
            if Command::new(tool).arg("-V").output().is_err() {
                bail!("{tool} is not installed (scripts/ensure-deps.sh installs iproute2 and iptables)");
            }
        }
        let net = Net { tag, nodes };
        net.destroy();
        let br = net.bridge();
        sh("ip", &["link", "add", &br, "type", "bridge"])
            .context("process mode needs root (CAP_NET_ADMIN)")?;
        sh(
            "ip",
            &["addr", "add", &format!("{}/24", net.host_ip()), "dev", &br],
        )?;
        sh("ip", &["link", "set", &br, "up"])?;
        // Docker sets the FORWARD policy to DROP, which also drops bridged
        // traffic between our namespaces.
        sh(
            "iptables",
            &["-I", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"],
        )?;
        for i in 0..nodes {
            let ns = net.ns(i);
            let (host_end, ns_end) = (format!("sdl{tag}v{i}"), format!("sdl{tag}p{i}"));
            sh("ip", &["netns", "add", &ns])?;
            sh(
                "ip",
                &["link", "add", &host_end, "type", "veth", "peer", "name", &ns_end],
            )?;
            sh("ip", &["link", "set", &ns_end, "netns", &ns])?;
            sh("ip", &["link", "set", &host_end, "master", &br])?;
            sh("ip", &["link", "set", &host_end, "up"])?;
            let inside = |args: &[&str]| {
                let mut all = vec!["netns", "exec", &ns, "ip"];
                all.extend_from_slice(args);
                sh("ip", &all)
            };
            inside(&["addr", "add", &format!("{}/24", net.node_ip(i)), "dev", &ns_end])?;
            inside(&["link", "set", &ns_end, "up"])?;
            inside(&["link", "set", "lo", "up"])?;
        }
        Ok(net)
    }

    fn bridge(&self) -> String {
        format!("sdl{}br", self.tag)
    }

    pub fn ns(&self, i: usize) -> String {
        format!("sdl{}n{i}", self.tag)
    }

    pub fn host_ip(&self) -> String {
        format!("10.211.{}.1", self.tag)
    }

    pub fn node_ip(&self, i: usize) -> String {
        format!("10.211.{}.{}", self.tag, 11 + i)
    }

    fn iptables_in(&self, i: usize, args: &[&str]) -> anyhow::Result<String> {
        let ns = self.ns(i);
        let mut all = vec!["netns", "exec", &ns, "iptables"];
        all.extend_from_slice(args);
        sh("ip", &all)
    }

    /// Drops all traffic between the nodes of `a` and those of `b`, both
    /// ways; clients on the bridge still reach everyone.
    pub fn partition(&self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        for &x in a {
            for &y in b {
                for (from, to) in [(x, y), (y, x)] {
                    let peer = self.node_ip(to);
                    self.iptables_in(from, &["-A", "INPUT", "-s", &peer, "-j", "DROP"])?;
                    self.iptables_in(from, &["-A", "OUTPUT", "-d", &peer, "-j", "DROP"])?;
                }
            }
        }
        Ok(())
    }

    /// Removes every partition.
    pub fn heal(&self) -> anyhow::Result<()> {
        for i in 0..self.nodes {
            self.iptables_in(i, &["-F", "INPUT"])?;
            self.iptables_in(i, &["-F", "OUTPUT"])?;
        }
        Ok(())
    }

    /// Removes the bridge, the namespaces and the FORWARD rule (whatever of
    /// them exists).
    pub fn destroy(&self) {
        let br = self.bridge();
        // The rule may have been added more than once by crashed runs.
        for _ in 0..4 {
            sh_quiet(
                "iptables",
                &["-D", "FORWARD", "-i", &br, "-o", &br, "-j", "ACCEPT"],
            );
        }
        for i in 0..self.nodes.max(9) {
            sh_quiet("ip", &["netns", "del", &self.ns(i)]);
            sh_quiet("ip", &["link", "del", &format!("sdl{}v{i}", self.tag)]);
        }
        sh_quiet("ip", &["link", "del", &br]);
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        self.destroy();
    }
}

/// Cluster settings the harness writes into its config.
pub struct ClusterSpec {
    pub nodes: usize,
    pub shards: u32,
}

/// The sample cluster.toml's Raft timing: heartbeat, election min and max.
fn product_timing() -> anyhow::Result<(u64, u64, u64)> {
    let sample: toml::Value =
        toml::from_str(include_str!("../../cluster.toml")).context("parsing cluster.toml")?;
    let get = |key: &str| {
        sample
            .get("raft")
            .and_then(|r| r.get(key))
            .and_then(toml::Value::as_integer)
            .map(|v| v as u64)
            .with_context(|| format!("cluster.toml has no raft.{key}"))
    };
    Ok((
        get("heartbeat_ms")?,
        get("election_timeout_min_ms")?,
        get("election_timeout_max_ms")?,
    ))
}

/// Where the nodes of a run live and how faults reach them: processes in
/// network namespaces ([`ProcNodes`]) or containers
/// ([`crate::docker::DockerNodes`]). Node indexes start at 0.
pub trait Nodes {
    /// The address clients use to reach node `i`.
    fn client_ip(&self, i: usize) -> String;
    /// The address node `i` speaks Raft and the actor protocol on.
    fn peer_ip(&self, i: usize) -> String;
    /// The run's directory as the nodes see it (config, data, failpoints).
    fn node_dir(&self) -> PathBuf;
    /// Starts node `i` (again, after a kill: same data).
    fn start(&mut self, i: usize) -> anyhow::Result<()>;
    /// Kills node `i` with SIGKILL, paused or not; nothing is flushed.
    fn kill(&mut self, i: usize);
    /// Freezes node `i` (SIGSTOP, or the container's freezer).
    fn pause(&mut self, i: usize);
    fn resume(&mut self, i: usize);
    /// Tells node `i` to re-read its failpoints file (SIGUSR1).
    fn reload_failpoints(&self, i: usize);
    /// When node `i`, believed running, has exited: how it exited.
    fn exited(&mut self, i: usize) -> Option<String>;
    /// Cuts the nodes of `a` off from those of `b`; clients still reach all.
    fn partition(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()>;
    /// Removes every partition.
    fn heal(&mut self) -> anyhow::Result<()>;
    /// Node `i`'s output so far.
    fn log(&self, i: usize) -> String;
}

/// `sundial serve` processes, each in its own namespace on [`Net`].
pub struct ProcNodes {
    pub net: Net,
    bin: PathBuf,
    dir: PathBuf,
    children: Vec<Option<Child>>,
}

impl ProcNodes {
    pub fn new(net: Net, bin: &Path, dir: &Path) -> ProcNodes {
        ProcNodes {
            children: (0..net.nodes).map(|_| None).collect(),
            net,
            bin: bin.to_path_buf(),
            dir: dir.to_path_buf(),
        }
    }

    fn log_path(&self, i: usize) -> PathBuf {
        self.dir.join(format!("node{}.log", i + 1))
    }
}

impl Nodes for ProcNodes {
    fn client_ip(&self, i: usize) -> String {
        self.net.node_ip(i)
    }

    fn peer_ip(&self, i: usize) -> String {
        self.net.node_ip(i)
    }

    fn node_dir(&self) -> PathBuf {
        self.dir.clone()
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(i))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &self.net.ns(i)])
            .arg(&self.bin)
            .args(["serve", "--config"])
            .arg(self.dir.join(CONFIG_FILE))
            .args(["--node", &(i + 1).to_string()])
            .env("SUNDIAL_LOG", "info")
            .env("SUNDIAL_FAILPOINTS_FILE", failpoint_file(&self.dir, i))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("cannot start sundial")?;
        self.children[i] = Some(child);
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            // A stopped process dies of SIGKILL too, but continuing it
            // first keeps `wait` from depending on that.
            signal(child.id(), "CONT");
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn pause(&mut self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child.id(), "STOP");
        }
    }

    fn resume(&mut self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child.id(), "CONT");
        }
    }

    fn reload_failpoints(&self, i: usize) {
        if let Some(child) = &self.children[i] {
            signal(child.id(), "USR1");
        }
    }

    fn exited(&mut self, i: usize) -> Option<String> {
        let status = self.children[i].as_mut()?.try_wait().ok()??;
        self.children[i] = None;
        Some(status.to_string())
    }

    fn partition(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        self.net.partition(a, b)
    }

    fn heal(&mut self) -> anyhow::Result<()> {
        self.net.heal()
    }

    fn log(&self, i: usize) -> String {
        std::fs::read_to_string(self.log_path(i)).unwrap_or_default()
    }
}

impl Drop for ProcNodes {
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
    }
}

/// The config file every node reads, in the run's directory.
pub const CONFIG_FILE: &str = "cluster.toml";

/// The failpoints file of node `i` under the run's directory as the node
/// sees it.
pub fn failpoint_file(node_dir: &Path, i: usize) -> PathBuf {
    node_dir.join(format!("failpoints-{}", i + 1))
}

/// The nodes of one run, whatever runs them, and what the harness asks of
/// them: faults, health, leaders.
pub struct Cluster {
    pub dir: PathBuf,
    nodes: Box<dyn Nodes>,
    up: Vec<bool>,
    pub stopped: Vec<bool>,
    pub shards: u32,
}

pub const CLIENT_PORT: u16 = 7070;

impl Cluster {
    /// Writes the cluster's config into `dir` and starts every node.
    pub fn start(dir: &Path, spec: &ClusterSpec, nodes: Box<dyn Nodes>) -> anyhow::Result<Cluster> {
        let n = spec.nodes;
        let (heartbeat, election_min, election_max) = product_timing()?;
        // The product's own Raft timing (cluster.toml): failover is measured
        // as a user would get it. Snapshots come often so that catching up
        // by snapshot happens under faults too.
        let mut text = format!(
            "[cluster]\nshards = {}\nreplication_factor = {}\ncookie = \"chaos-cookie\"\ndata_dir = \"{}\"\n\n\
             [raft]\nheartbeat_ms = {heartbeat}\nelection_timeout_min_ms = {election_min}\n\
             election_timeout_max_ms = {election_max}\nsnapshot_every = 2000\nlogs_kept_after_snapshot = 200\n\n\
             [executor]\nconcurrency = 0\n",
            spec.shards,
            n.min(3),
            nodes.node_dir().join("data").display()
        );
        for i in 0..n {
            let (client, peer) = (nodes.client_ip(i), nodes.peer_ip(i));
            text.push_str(&format!(
                "\n[[nodes]]\nid = {}\nclient_addr = \"{client}:{CLIENT_PORT}\"\nraft_addr = \"{peer}:7170\"\nactor_addr = \"{peer}:7270\"\n",
                i + 1
            ));
        }
        std::fs::write(dir.join(CONFIG_FILE), text)?;
        let mut cluster = Cluster {
            dir: dir.to_path_buf(),
            nodes,
            up: vec![false; n],
            stopped: vec![false; n],
            shards: spec.shards,
        };
        for i in 0..n {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    pub fn len(&self) -> usize {
        self.up.len()
    }

    pub fn is_empty(&self) -> bool {
        self.up.is_empty()
    }

    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        self.nodes.start(i)?;
        self.up[i] = true;
        self.stopped[i] = false;
        Ok(())
    }

    pub fn is_up(&self, i: usize) -> bool {
        self.up[i]
    }

    /// SIGKILL: nothing is flushed.
    pub fn kill(&mut self, i: usize) {
        if self.up[i] {
            self.nodes.kill(i);
        }
        self.up[i] = false;
        self.stopped[i] = false;
    }

    pub fn pause(&mut self, i: usize) {
        if self.up[i] {
            self.nodes.pause(i);
            self.stopped[i] = true;
        }
    }

    pub fn resume(&mut self, i: usize) {
        if self.up[i] {
            self.nodes.resume(i);
        }
        self.stopped[i] = false;
    }

    pub fn partition(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        self.nodes.partition(a, b)
    }

    pub fn heal_network(&mut self) -> anyhow::Result<()> {
        self.nodes.heal()
    }

    /// Arms a failpoint in node `i` (its binary has failpoints compiled in;
    /// the harness checked).
    pub fn arm_failpoint(&self, i: usize, spec: &str) -> anyhow::Result<()> {
        std::fs::write(failpoint_file(&self.dir, i), format!("{spec}\n"))?;
        if self.up[i] {
            self.nodes.reload_failpoints(i);
        }
        Ok(())
    }

    /// Nodes that exited by themselves (crashes the harness did not cause).
    pub fn exited(&mut self) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        for i in 0..self.len() {
            if self.up[i] {
                if let Some(status) = self.nodes.exited(i) {
                    self.up[i] = false;
                    out.push((i, status));
                }
            }
        }
        out
    }

    pub fn addr(&self, i: usize) -> String {
        format!("{}:{CLIENT_PORT}", self.nodes.client_ip(i))
    }

    pub fn addrs(&self) -> Vec<String> {
        (0..self.len()).map(|i| self.addr(i)).collect()
    }

    /// Waits until every node answers and sees a leader for every shard.
    pub async fn wait_healthy(&self, within: Duration) -> anyhow::Result<Duration> {
        let start = Instant::now();
        for i in 0..self.len() {
            loop {
                if healthy(&self.addr(i)).await {
                    break;
                }
                if start.elapsed() > within {
                    bail!(
                        "node {} not healthy after {within:?}\n{}",
                        i + 1,
                        self.log_tail(i, 30)
                    );
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(start.elapsed())
    }

    /// Waits until every node is up and answers, every replica of every
    /// shard is within a few entries of the others, all replicas agree on
    /// the shard's leader, and every node reaches every other: a restarted
    /// node has caught up and no election is under way.
    pub async fn wait_caught_up(&self, within: Duration) -> anyhow::Result<()> {
        let start = Instant::now();
        let replicas = self.len().min(3);
        loop {
            let mut shards: std::collections::HashMap<u32, Vec<(u64, u64)>> = Default::default();
            let mut answered = 0;
            for i in 0..self.len() {
                let Ok(mut client) = connect(&self.addr(i), Duration::from_secs(1)).await else {
                    continue;
                };
                if let Ok(info) = client.cluster_info().await {
                    // Every node must reach every other over the actor plane
                    // (forwarding to leaders goes through it).
                    if info.nodes.iter().all(|n| n.reachable) {
                        answered += 1;
                    }
                    for s in info
                        .shards
                        .into_iter()
                        .filter(|s| s.last_applied > 0 || s.leader != 0)
                    {
                        shards
                            .entry(s.shard)
                            .or_default()
                            .push((s.last_applied, s.leader));
                    }
                }
            }
            let settled = answered == self.len()
                && (0..self.shards).all(|shard| {
                    shards.get(&shard).is_some_and(|v| {
                        let lo = v.iter().map(|x| x.0).min().unwrap_or(0);
                        let hi = v.iter().map(|x| x.0).max().unwrap_or(0);
                        v.len() >= replicas && v[0].1 != 0 && v.iter().all(|x| x.1 == v[0].1) && hi - lo <= 10
                    })
                });
            if settled {
                return Ok(());
            }
            if start.elapsed() > within {
                bail!("replicas did not catch up within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn log_tail(&self, i: usize, lines: usize) -> String {
        let text = self.nodes.log(i);
        let all: Vec<&str> = text.lines().collect();
        format!(
            "--- node {} log, last lines ---\n{}",
            i + 1,
            all[all.len().saturating_sub(lines)..].join("\n")
        )
    }

    /// The node leading `shard`, as the first node that answers sees it.
    pub async fn leader_of(&self, shard: u32) -> Option<usize> {
        for i in 0..self.len() {
            if !self.is_up(i) || self.stopped[i] {
                continue;
            }
            let Ok(mut client) = connect(&self.addr(i), Duration::from_secs(1)).await else {
                continue;
            };
            if let Ok(info) = client.cluster_info().await {
                if let Some(s) = info.shards.iter().find(|s| s.shard == shard && s.leader != 0) {
                    return Some(s.leader as usize - 1);
                }
            }
        }
        None
    }
}

/// True when the node at `addr` answers and has a leader for every shard it
/// holds.
pub async fn healthy(addr: &str) -> bool {
    let Ok(mut client) = connect(addr, Duration::from_secs(1)).await else {
        return false;
    };
    matches!(client.cluster_info().await, Ok(info) if info.healthy)
}

/// A client of `addr` whose connect, and then every call, gives up after
/// `timeout`.
pub async fn connect(addr: &str, timeout: Duration) -> Result<Client, sundial_sdk::Error> {
    match tokio::time::timeout(timeout, Client::connect(addr)).await {
        Ok(client) => Ok(client?.with_timeout(timeout)),
        Err(_) => Err(sundial_sdk::Error::Connect {
            addr: addr.to_string(),
            reason: "timed out".into(),
        }),
    }
}

/// Sends a signal by name with kill(1) (the workspace forbids unsafe code).
pub fn signal(pid: u32, name: &str) {
    sh_quiet("kill", &[&format!("-{name}"), &pid.to_string()]);
}
