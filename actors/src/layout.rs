//! The cluster's fixed shape, as the node was configured: who the members are,
//! how many shards exist, and which nodes replicate which shard.

use std::collections::BTreeMap;
use std::time::Duration;

use sundial_raft::{NodeId, PeerNode, ShardId};

/// Everything the actors need to know about the cluster. Built by `node` from
/// its validated config; actors never read files or env themselves.
#[derive(Clone, Debug)]
pub struct ClusterLayout {
    /// This node.
    pub node_id: NodeId,
    /// Every member, by id.
    pub nodes: BTreeMap<NodeId, PeerNode>,
    /// Fixed when the cluster is created.
    pub shard_count: u32,
    /// Replicas per shard (at most the node count).
    pub replication_factor: usize,
    /// Raft timing.
    pub raft: RaftTiming,
}

/// Raft timeouts, in the units openraft takes.
#[derive(Clone, Copy, Debug)]
pub struct RaftTiming {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// Build a snapshot after this many applied entries since the last one.
    pub snapshot_every: u64,
    /// Log entries kept behind a snapshot (a follower further behind gets the
    /// snapshot instead of entries).
    pub logs_kept_after_snapshot: u64,
}

impl Default for RaftTiming {
    fn default() -> Self {
        RaftTiming {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(300),
            snapshot_every: 20_000,
            logs_kept_after_snapshot: 1_000,
        }
    }
}

impl ClusterLayout {
    /// The voters of `shard`: `replication_factor` consecutive nodes in id
    /// order, starting at a node that rotates with the shard, so replicas and
    /// first leaders spread evenly.
    pub fn members(&self, shard: ShardId) -> Vec<NodeId> {
        let ids: Vec<NodeId> = self.nodes.keys().copied().collect();
        if ids.is_empty() {
            return Vec::new();
        }
        let rf = self.replication_factor.clamp(1, ids.len());
        let start = shard as usize % ids.len();
        let mut members: Vec<NodeId> = (0..rf).map(|i| ids[(start + i) % ids.len()]).collect();
        members.sort_unstable();
        members
    }

    /// The member that forms `shard`'s group on first start and so becomes
    /// its first leader; it rotates with the shard so leadership starts spread
    /// evenly over the nodes.
    pub fn preferred_leader(&self, shard: ShardId) -> Option<NodeId> {
        let members = self.members(shard);
        members.get(shard as usize % members.len().max(1)).copied()
    }

    /// Shards that have a replica on this node.
    pub fn local_shards(&self) -> Vec<ShardId> {
        (0..self.shard_count)
            .filter(|s| self.members(*s).contains(&self.node_id))
            .collect()
    }

    pub fn peer(&self, id: NodeId) -> Option<&PeerNode> {
        self.nodes.get(&id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(nodes: u64, shards: u32, rf: usize) -> ClusterLayout {
        ClusterLayout {
            node_id: 1,
            nodes: (1..=nodes).map(|i| (i, PeerNode::default())).collect(),
            shard_count: shards,
            replication_factor: rf,
            raft: RaftTiming::default(),
        }
    }

    #[test]
    fn full_replication_puts_every_shard_everywhere() {
        let l = layout(3, 8, 3);
        for s in 0..8 {
            assert_eq!(l.members(s), vec![1, 2, 3]);
        }
        assert_eq!(l.local_shards().len(), 8);
    }

    #[test]
    fn partial_replication_spreads_evenly() {
        let l = layout(5, 10, 3);
        let mut per_node = BTreeMap::new();
        for s in 0..10 {
            let m = l.members(s);
            assert_eq!(m.len(), 3);
            for n in m {
                *per_node.entry(n).or_insert(0) += 1;
            }
        }
        assert!(per_node.values().all(|&c| c == 6), "{per_node:?}");
    }

    #[test]
    fn first_leaders_spread_evenly() {
        let l = layout(3, 9, 3);
        let mut per_node = BTreeMap::new();
        for s in 0..9 {
            *per_node
                .entry(l.preferred_leader(s).expect("leader"))
                .or_insert(0) += 1;
        }
        assert_eq!(per_node.values().copied().collect::<Vec<_>>(), vec![3, 3, 3]);
    }

    #[test]
    fn replication_factor_is_capped_by_node_count() {
        assert_eq!(layout(1, 4, 3).members(2), vec![1]);
    }
}
