//! Faults: what each one does, and how it is healed.

use std::time::Duration;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::Rng;

use crate::cluster::Cluster;
use crate::workload::JOB_TIMEOUT;

/// Every kind of fault the harness injects.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// SIGKILL a random node, restart it.
    KillNode,
    /// SIGKILL the leader of a random shard, restart it.
    KillLeader,
    /// SIGSTOP a random node past the election timeout, SIGCONT it.
    PauseNode,
    /// SIGSTOP a worker past its leases, SIGCONT it.
    PauseWorker,
    /// Cut one random node off from its peers.
    IsolateNode,
    /// Cut the leader of a random shard off from its peers.
    IsolateLeader,
    /// Split the nodes into a minority and a majority.
    SplitMinority,
    /// Make a shard actor panic through a failpoint.
    ActorPanic,
    /// SIGKILL every node at once, restart them all.
    KillAll,
}

impl Kind {
    pub const ALL: [Kind; 9] = [
        Kind::KillNode,
        Kind::KillLeader,
        Kind::PauseNode,
        Kind::PauseWorker,
        Kind::IsolateNode,
        Kind::IsolateLeader,
        Kind::SplitMinority,
        Kind::ActorPanic,
        Kind::KillAll,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::KillNode => "kill_node",
            Kind::KillLeader => "kill_leader",
            Kind::PauseNode => "pause_node",
            Kind::PauseWorker => "pause_worker",
            Kind::IsolateNode => "isolate_node",
            Kind::IsolateLeader => "isolate_leader",
            Kind::SplitMinority => "split_minority",
            Kind::ActorPanic => "actor_panic",
            Kind::KillAll => "kill_all",
        }
    }
}

/// Deals fault kinds so that every kind comes once per round, in a seeded
/// random order.
pub struct Deck {
    cards: Vec<Kind>,
}

impl Deck {
    pub fn new() -> Deck {
        Deck { cards: Vec::new() }
    }

    pub fn draw(&mut self, rng: &mut StdRng) -> Kind {
        if self.cards.is_empty() {
            self.cards = Kind::ALL.to_vec();
            self.cards.shuffle(rng);
        }
        self.cards.pop().unwrap_or(Kind::KillNode)
    }
}

impl Default for Deck {
    fn default() -> Self {
        Deck::new()
    }
}

/// What must be undone to heal a fault.
#[derive(Debug)]
pub enum Heal {
    Restart(Vec<usize>),
    ResumeNode(usize),
    ResumeWorker(usize),
    Network,
    Nothing,
}

/// How long a fault of `kind` lasts.
pub fn hold(kind: Kind, rng: &mut StdRng) -> Duration {
    let ms = match kind {
        Kind::KillNode | Kind::KillLeader => rng.random_range(500..3000),
        // Longer than the election timeout (300-600 ms), so leaders move.
        Kind::PauseNode => rng.random_range(1000..3000),
        // Longer than the leases the worker holds.
        Kind::PauseWorker => JOB_TIMEOUT.as_millis() as u64 + rng.random_range(1000..2500),
        Kind::IsolateNode | Kind::IsolateLeader | Kind::SplitMinority => rng.random_range(1500..5000),
        Kind::ActorPanic => 500,
        Kind::KillAll => rng.random_range(300..1500),
    };
    Duration::from_millis(ms)
}

/// A random minority of the nodes (at least one, fewer than half).
pub fn minority(n: usize, rng: &mut StdRng) -> (Vec<usize>, Vec<usize>) {
    let mut all: Vec<usize> = (0..n).collect();
    all.shuffle(rng);
    let size = ((n - 1) / 2).max(1);
    let rest = all.split_off(size);
    (all, rest)
}

/// A random node that is up.
pub fn random_up(cluster: &Cluster, rng: &mut StdRng) -> Option<usize> {
    let up: Vec<usize> = (0..cluster.len()).filter(|&i| cluster.is_up(i)).collect();
    (!up.is_empty()).then(|| up[rng.random_range(0..up.len())])
}
