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

/// One shard, for the fast takeover after a leader's process died.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LostLeader {
    pub me: NodeId,
    /// The shard's last known leader, whose node disconnected.
    pub leader: NodeId,
    /// The shard's members whose node is connected to this one (this node
    /// included).
    pub connected_members: Vec<NodeId>,
    /// This replica follows (or lost) that leader: no new leader is known.
    pub leaderless: bool,
    /// How long the leader's node has been disconnected from this one.
    pub lost_for: Duration,
    /// openraft's leader lease (`election_timeout_max`): how long the other
    /// followers keep refusing votes after their last word from the leader.
    pub lease: Duration,
    /// Time between one survivor standing and the next.
    pub stagger: Duration,
    /// This node already stood for this loss.
    pub tried: bool,
    /// This replica's term moved since the loss was seen: someone already
    /// stood (this node voted for them), and a second candidate would only
    /// disrupt the first (a follower on a newer term refuses the winner's
    /// appends, which makes it step down).
    pub term_moved: bool,
}

/// True when this node should start an election at once because the
/// shard's leader died: its node's actor-plane connection closed (a dead
/// process's sockets close at once; a partition or a paused process does
/// not close them, so those wait for the normal election timeout) and the
/// other followers' leases have run out. Survivors stand one after the
/// other, lowest id first, `stagger` apart, each once, so they do not split
/// the vote, and a survivor whose log is behind (and so loses) is followed
/// by the next. Without this, openraft 0.9 waits lease + election timeout
/// after the last heartbeat, and a node's random election timeout is drawn
/// once, so two followers can split votes round after round.
pub fn should_take_over(s: &LostLeader) -> bool {
    let mut survivors: Vec<NodeId> = s
        .connected_members
        .iter()
        .copied()
        .filter(|n| *n != s.leader)
        .collect();
    survivors.sort_unstable();
    let Some(rank) = survivors.iter().position(|n| *n == s.me) else {
        return false;
    };
    let leader_gone = !s.connected_members.contains(&s.leader);
    let due = s.lease + s.stagger * rank as u32;
    s.leaderless && leader_gone && !s.tried && !s.term_moved && s.lost_for >= due
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lost() -> LostLeader {
        LostLeader {
            me: 2,
            leader: 1,
            connected_members: vec![2, 3],
            leaderless: true,
            lost_for: Duration::from_millis(320),
            lease: Duration::from_millis(300),
            stagger: Duration::from_millis(80),
            tried: false,
            term_moved: false,
        }
    }

    #[test]
    fn survivors_stand_in_turn_once_the_lease_ran_out() {
        assert!(should_take_over(&lost()));
        let second = LostLeader { me: 3, ..lost() };
        assert!(!should_take_over(&second), "node 2 stands first");
        let later = LostLeader {
            lost_for: Duration::from_millis(390),
            ..second.clone()
        };
        assert!(should_take_over(&later), "then node 3, if node 2 never stood");
        let voted = LostLeader {
            term_moved: true,
            ..later.clone()
        };
        assert!(
            !should_take_over(&voted),
            "node 2 stood: node 3 does not disrupt it"
        );
        let early = LostLeader {
            lost_for: Duration::from_millis(100),
            ..lost()
        };
        assert!(
            !should_take_over(&early),
            "the other follower would refuse the vote"
        );
        let leader_back = LostLeader {
            connected_members: vec![1, 2, 3],
            ..lost()
        };
        assert!(!should_take_over(&leader_back));
        assert!(!should_take_over(&LostLeader {
            tried: true,
            ..lost()
        }));
        assert!(!should_take_over(&LostLeader {
            leaderless: false,
            ..lost()
        }));
        // Node 2 is cut off too: node 3 is first among those it can see.
        let alone = LostLeader {
            me: 3,
            connected_members: vec![3],
            ..lost()
        };
        assert!(should_take_over(&alone));
    }

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
