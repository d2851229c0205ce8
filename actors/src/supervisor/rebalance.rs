//! Leader rebalancing, as plain logic. Each shard has a preferred leader
//! (`ClusterLayout::preferred_leader`) so leadership, and with it write work,
//! spreads over the nodes. After a failover the survivors keep leading; when
//! the preferred node is back and caught up, it takes its shards back by
//! starting an election (openraft 0.9 has no leader transfer). That costs the
//! shard one election (well under a second; the gateway retries through it),
//! so it is done only when the shard has been stable for a while, and at most
//! once per cooldown.

use std::time::{Duration, Instant};

use sundial_raft::NodeId;

/// When a node may reclaim a shard it prefers to lead.
#[derive(Clone, Copy, Debug)]
pub struct RebalancePolicy {
    /// The shard's leader must have been the same for this long.
    pub stable_for: Duration,
    /// At most one attempt per shard per this period.
    pub cooldown: Duration,
}

impl Default for RebalancePolicy {
    fn default() -> Self {
        RebalancePolicy {
            stable_for: Duration::from_secs(3),
            cooldown: Duration::from_secs(5),
        }
    }
}

/// One shard as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ShardSight {
    pub me: NodeId,
    pub preferred: Option<NodeId>,
    pub leader: Option<NodeId>,
    /// This replica is a follower (not candidate, learner or leader).
    pub following: bool,
    /// Index of the last entry in this replica's log.
    pub last_log: u64,
    /// Index of the last entry this replica applied.
    pub last_applied: u64,
}

/// True when this node should start an election to lead the shard again.
pub fn should_reclaim(
    sight: ShardSight,
    policy: &RebalancePolicy,
    leader_since: Instant,
    last_attempt: Option<Instant>,
    now: Instant,
) -> bool {
    let prefers_me = sight.preferred == Some(sight.me);
    let someone_else_leads = matches!(sight.leader, Some(l) if l != sight.me);
    // Applied all it holds: a follower that is still catching up would lose
    // the election on log comparison and only disrupt the leader.
    let caught_up = sight.last_log > 0 && sight.last_applied == sight.last_log;
    let stable = now.duration_since(leader_since) >= policy.stable_for;
    let cooled = last_attempt.is_none_or(|t| now.duration_since(t) >= policy.cooldown);
    prefers_me && someone_else_leads && sight.following && caught_up && stable && cooled
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sight() -> ShardSight {
        ShardSight {
            me: 1,
            preferred: Some(1),
            leader: Some(2),
            following: true,
            last_log: 50,
            last_applied: 50,
        }
    }

    #[test]
    fn a_caught_up_preferred_follower_reclaims_a_stable_shard() {
        let p = RebalancePolicy::default();
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(6);
        assert!(should_reclaim(sight(), &p, t0, None, now));
    }

    #[test]
    fn nothing_happens_unless_every_condition_holds() {
        let p = RebalancePolicy::default();
        let t0 = Instant::now();
        let now = t0 + Duration::from_secs(6);
        let cases = [
            ShardSight {
                preferred: Some(3),
                ..sight()
            },
            ShardSight {
                leader: Some(1),
                ..sight()
            },
            ShardSight {
                leader: None,
                ..sight()
            },
            ShardSight {
                following: false,
                ..sight()
            },
            ShardSight {
                last_applied: 49,
                ..sight()
            },
            ShardSight {
                last_log: 0,
                last_applied: 0,
                ..sight()
            },
        ];
        for case in cases {
            assert!(!should_reclaim(case, &p, t0, None, now), "{case:?}");
        }
        // Leader too recent, or an attempt too recent.
        assert!(!should_reclaim(
            sight(),
            &p,
            now - Duration::from_millis(500),
            None,
            now
        ));
        assert!(!should_reclaim(
            sight(),
            &p,
            t0,
            Some(now - Duration::from_secs(1)),
            now
        ));
        assert!(should_reclaim(
            sight(),
            &p,
            t0,
            Some(now - Duration::from_secs(6)),
            now
        ));
    }
}
