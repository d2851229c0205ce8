//! Container mode: every node a container of the locally built image
//! (`scripts/build-image.sh`), so the same faults hit separate hosts as a
//! container runtime sees them.
//!
//! Each container sits on two Docker networks made for the run:
//! - a client network (10.212.<tag>.0/24) that the harness and its workers,
//!   on the host, reach every node through;
//! - a peer network (10.213.<tag>.0/24) that carries Raft and the actor
//!   protocol between nodes.
//!
//! A partition is `docker network disconnect` of the cut-off nodes from
//! the peer network (and `docker network connect` back at the same
//! address); kills are `docker kill` and `docker start` of the same
//! container; pauses are `docker pause` (the cgroup freezer). Failpoints
//! are armed through the run's directory, bind-mounted at [`NODE_DIR`], and
//! a `docker kill -s USR1`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context};

use crate::cluster::{failpoint_file, require_failpoints, sh, sh_quiet, Nodes, CONFIG_FILE};

/// Where each container sees the run's directory.
pub const NODE_DIR: &str = "/chaos";

/// The nodes of one run as containers.
pub struct DockerNodes {
    tag: u8,
    nodes: usize,
    image: String,
    dir: PathBuf,
    /// Nodes cut off from the peer network.
    disconnected: BTreeSet<usize>,
}

/// Runs `docker` and returns its stdout, failing with its stderr.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    sh("docker", args)
}

/// Checks that `image` exists and its sundial has failpoints compiled in.
pub fn check_image(image: &str) -> anyhow::Result<()> {
    if docker(&["version", "--format", "{{.Server.Version}}"]).is_err() {
        bail!("container mode needs a running Docker engine (`docker version` failed)");
    }
    if docker(&["image", "inspect", image]).is_err() {
        bail!("image {image} not found; build it with scripts/build-image.sh");
    }
    let info = docker(&["run", "--rm", "--network", "none", image, "build-info"])
        .with_context(|| format!("cannot run {image}"))?;
    require_failpoints(info.as_bytes(), image, "rebuild it with scripts/build-image.sh")
}

impl DockerNodes {
    /// Creates the run's two networks and one container per node (not yet
    /// started). Leftovers of an earlier run with the same tag are removed
    /// first.
    pub fn create(tag: u8, nodes: usize, image: &str, dir: &Path) -> anyhow::Result<DockerNodes> {
        let me = DockerNodes {
            tag,
            nodes,
            image: image.to_string(),
            dir: dir.to_path_buf(),
            disconnected: BTreeSet::new(),
        };
        me.destroy();
        for (net, octet) in [(me.client_net(), 212), (me.peer_net(), 213)] {
            docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--subnet",
                &format!("10.{octet}.{tag}.0/24"),
                &net,
            ])?;
        }
        let mount = format!("{}:{NODE_DIR}", dir.display());
        for i in 0..nodes {
            let failpoints = format!(
                "SUNDIAL_FAILPOINTS_FILE={}",
                failpoint_file(Path::new(NODE_DIR), i).display()
            );
            // The image sets SUNDIAL_DATA_DIR=/data (a volume), which wins
            // over the config: keep the data in the run's directory, where
            // process mode keeps it too.
            let data = format!("SUNDIAL_DATA_DIR={NODE_DIR}/data/node{}", i + 1);
            let config = format!("{NODE_DIR}/{CONFIG_FILE}");
            let node = (i + 1).to_string();
            let ip = me.client_ip(i);
            docker(&[
                "create",
                "--name",
                &me.name(i),
                "--network",
                &me.client_net(),
                "--ip",
                &ip,
                "-v",
                &mount,
                "-e",
                "SUNDIAL_LOG=info",
                "-e",
                &failpoints,
                "-e",
                &data,
                &me.image,
                "serve",
                "--config",
                &config,
                "--node",
                &node,
            ])?;
            me.connect_peer(i)?;
        }
        Ok(me)
    }

    /// Puts container `i` on the peer network at its peer address.
    fn connect_peer(&self, i: usize) -> anyhow::Result<()> {
        docker(&[
            "network",
            "connect",
            "--ip",
            &self.peer_ip(i),
            &self.peer_net(),
            &self.name(i),
        ])?;
        Ok(())
    }

    fn name(&self, i: usize) -> String {
        format!("sdl{}-node{}", self.tag, i + 1)
    }

    fn client_net(&self) -> String {
        format!("sdl{}-client", self.tag)
    }

    fn peer_net(&self) -> String {
        format!("sdl{}-peer", self.tag)
    }

    /// Removes the containers and networks of this tag, whatever of them
    /// exists.
    pub fn destroy(&self) {
        for i in 0..self.nodes.max(9) {
            sh_quiet("docker", &["rm", "-f", "-v", &self.name(i)]);
        }
        sh_quiet("docker", &["network", "rm", &self.client_net()]);
        sh_quiet("docker", &["network", "rm", &self.peer_net()]);
    }

    fn disconnect(&mut self, i: usize) -> anyhow::Result<()> {
        if self.disconnected.insert(i) {
            docker(&["network", "disconnect", "-f", &self.peer_net(), &self.name(i)])?;
        }
        Ok(())
    }
}

impl Nodes for DockerNodes {
    fn client_ip(&self, i: usize) -> String {
        format!("10.212.{}.{}", self.tag, 11 + i)
    }

    fn peer_ip(&self, i: usize) -> String {
        format!("10.213.{}.{}", self.tag, 11 + i)
    }

    fn node_dir(&self) -> PathBuf {
        PathBuf::from(NODE_DIR)
    }

    fn start(&mut self, i: usize) -> anyhow::Result<()> {
        docker(&["start", &self.name(i)])?;
        Ok(())
    }

    fn kill(&mut self, i: usize) {
        // A frozen container cannot be killed; thaw it first (it gets no
        // time to run: SIGKILL follows at once).
        sh_quiet("docker", &["unpause", &self.name(i)]);
        sh_quiet("docker", &["kill", "-s", "KILL", &self.name(i)]);
        // `docker kill` returns before the container is marked stopped;
        // `wait` returns once it is, so `start` can follow.
        sh_quiet("docker", &["wait", &self.name(i)]);
    }

    fn pause(&mut self, i: usize) {
        sh_quiet("docker", &["pause", &self.name(i)]);
    }

    fn resume(&mut self, i: usize) {
        sh_quiet("docker", &["unpause", &self.name(i)]);
    }

    fn reload_failpoints(&self, i: usize) {
        sh_quiet("docker", &["kill", "-s", "USR1", &self.name(i)]);
    }

    fn exited(&mut self, i: usize) -> Option<String> {
        let state = docker(&[
            "inspect",
            "-f",
            "{{.State.Running}} {{.State.ExitCode}}",
            &self.name(i),
        ])
        .ok()?;
        let mut words = state.split_whitespace();
        match (words.next(), words.next()) {
            (Some("false"), Some(code)) => Some(format!("container exited with code {code}")),
            _ => None,
        }
    }

    /// Docker can only take a container off a network as a whole, so the
    /// smaller side is cut off from the peer network: each of its nodes
    /// loses every peer (with 5 nodes, a minority of two is split from each
    /// other too).
    fn partition(&mut self, a: &[usize], b: &[usize]) -> anyhow::Result<()> {
        let cut = if a.len() <= b.len() { a } else { b };
        for &i in cut {
            self.disconnect(i)?;
        }
        Ok(())
    }

    fn heal(&mut self) -> anyhow::Result<()> {
        let cut = std::mem::take(&mut self.disconnected);
        for i in cut {
            self.connect_peer(i)?;
        }
        Ok(())
    }

    fn log(&self, i: usize) -> String {
        Command::new("docker")
            .args(["logs", &self.name(i)])
            .output()
            .map(|o| {
                let mut text = String::from_utf8_lossy(&o.stdout).into_owned();
                text.push_str(&String::from_utf8_lossy(&o.stderr));
                text
            })
            .unwrap_or_default()
    }
}

impl Drop for DockerNodes {
    /// Keeps each node's output in the run's directory (a failing run keeps
    /// it), then removes the containers and networks.
    fn drop(&mut self) {
        for i in 0..self.nodes {
            let _ = std::fs::write(self.dir.join(format!("node{}.log", i + 1)), self.log(i));
        }
        self.destroy();
    }
}
