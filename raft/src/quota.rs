//! Cluster-wide concurrency limits of queues.
//!
//! A queue's jobs live on every shard and each shard's leader leases them, so
//! a limit on how many of a queue's jobs are leased at once must be shared.
//! The queue's *home shard* (a hash of namespace and queue) keeps a
//! [`QuotaTable`]: how much of the limit each shard holds (its *grant*), and
//! how much each wants. The sum of the grants never exceeds the limit.
//!
//! Each shard leader leases at most its grant's worth of the queue's jobs
//! (counting leases and leases being written). It reports to the home shard
//! through Raft (`Op::Quota`): what it keeps of its grant (never less than
//! what it uses) and how much it wants (what it uses plus its ready jobs). A
//! shard lowers its own cap *before* reporting a smaller grant, and raises
//! it only *after* the home shard recorded a larger one, so at every moment
//! each shard uses at most what the home shard has recorded for it — and the
//! total stays within the limit.
//!
//! Grants move toward a max-min fair split of the limit over the shards'
//! wants (the *share*, answered with every report): a shard is granted up to
//! its share from free capacity, and more only from capacity nobody else's
//! share needs; a shard holding more than its share gives the rest back as
//! its jobs finish.
//!
//! Each report carries the reporting leader's Raft term (the *epoch*). The
//! home shard refuses a report with a lower epoch than it has seen for that
//! shard, so a deposed leader cannot change its shard's grant under the new
//! one.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::job::ShardId;

/// One shard's part of a queue's limit, as the home shard records it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShardGrant {
    /// Highest leader term that reported for the shard.
    pub epoch: u64,
    /// Jobs the shard may have leased at once.
    pub grant: u32,
    /// Jobs the shard would lease at once if it could.
    pub want: u32,
}

/// A queue's grants, kept on its home shard.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaTable {
    pub shards: BTreeMap<ShardId, ShardGrant>,
}

/// A shard leader's report to the queue's home shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuotaReport {
    pub shard: ShardId,
    /// The reporting leader's term.
    pub epoch: u64,
    /// Lower the grant to at most this (`None`: keep it; a new leader's first
    /// report, which does not know its grant yet).
    pub keep: Option<u32>,
    /// How many it would lease at once.
    pub want: u32,
    /// How many it has leased (or is leasing) now. The grant never drops
    /// below it: jobs leased before a limit was set count against it.
    pub used: u32,
}

/// The home shard's answer to a report.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaAnswer {
    /// The shard's grant now, and its fair share of the limit.
    Granted { grant: u32, share: u32 },
    /// The queue has no limit (on the home shard): lease freely.
    Unlimited,
    /// A newer leader of the shard has reported: nothing changed.
    Stale,
}

/// The shard that keeps a queue's grants.
pub fn home_shard(namespace: &str, queue: &str, shard_count: u32) -> ShardId {
    let mut key = b"queue\0".to_vec();
    key.extend_from_slice(namespace.as_bytes());
    key.push(0);
    key.extend_from_slice(queue.as_bytes());
    crate::job::shard_for_key(&key, shard_count)
}

impl QuotaTable {
    /// Applies a report under `limit`. Deterministic: every replica of the
    /// home shard computes the same table and answer.
    pub fn apply(&mut self, limit: u32, report: QuotaReport) -> QuotaAnswer {
        let entry = self.shards.entry(report.shard).or_default();
        if report.epoch < entry.epoch {
            return QuotaAnswer::Stale;
        }
        entry.epoch = report.epoch;
        if let Some(keep) = report.keep {
            entry.grant = entry.grant.min(keep);
        }
        entry.grant = entry.grant.max(report.used);
        entry.want = report.want.min(limit);
        let shares = self.shares(limit);
        let share = |s: &ShardId| shares.get(s).copied().unwrap_or(0);
        let used: u64 = self.shards.values().map(|g| u64::from(g.grant)).sum();
        let free = u64::from(limit).saturating_sub(used);
        let reserved: u64 = self
            .shards
            .iter()
            .filter(|(s, _)| **s != report.shard)
            .map(|(s, g)| u64::from(share(s).saturating_sub(g.grant)))
            .sum();
        let mine = share(&report.shard);
        let Some(entry) = self.shards.get_mut(&report.shard) else {
            return QuotaAnswer::Stale;
        };
        let gap = u64::from(entry.want.saturating_sub(entry.grant));
        let within_share = gap.min(u64::from(mine.saturating_sub(entry.grant))).min(free);
        let beyond = (gap - within_share).min(free.saturating_sub(within_share).saturating_sub(reserved));
        entry.grant += (within_share + beyond) as u32;
        QuotaAnswer::Granted {
            grant: entry.grant,
            share: mine,
        }
    }

    /// Max-min fair split of `limit` over the wants (water filling): every
    /// shard gets what it wants if that is below the level, the level being
    /// as high as the limit allows. Leftover units go to the lowest shard
    /// ids, so the split is deterministic.
    pub fn shares(&self, limit: u32) -> BTreeMap<ShardId, u32> {
        let mut wants: Vec<(u32, ShardId)> = self
            .shards
            .iter()
            .filter(|(_, g)| g.want > 0)
            .map(|(s, g)| (g.want, *s))
            .collect();
        wants.sort();
        let mut out = BTreeMap::new();
        let mut left = limit;
        let mut rest = wants.as_slice();
        // Ascending: a want at or below the level is met in full; the first
        // want above it, and all after it, split what is left.
        while let Some(((want, shard), tail)) = rest.split_first() {
            let level = left / rest.len() as u32;
            if *want > level {
                break;
            }
            out.insert(*shard, *want);
            left -= want;
            rest = tail;
        }
        let mut capped: Vec<ShardId> = rest.iter().map(|(_, s)| *s).collect();
        if !capped.is_empty() {
            capped.sort();
            let n = capped.len() as u32;
            let (level, extra) = (left / n, left % n);
            for (i, shard) in capped.into_iter().enumerate() {
                out.insert(shard, level + u32::from((i as u32) < extra));
            }
        }
        out
    }

    /// Total granted.
    pub fn granted(&self) -> u64 {
        self.shards.values().map(|g| u64::from(g.grant)).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(shard: ShardId, keep: Option<u32>, want: u32) -> QuotaReport {
        QuotaReport {
            shard,
            epoch: 1,
            keep,
            want,
            used: 0,
        }
    }

    fn granted(answer: QuotaAnswer) -> u32 {
        match answer {
            QuotaAnswer::Granted { grant, .. } => grant,
            other => panic!("not granted: {other:?}"),
        }
    }

    #[test]
    fn a_lone_shard_gets_what_it_wants_up_to_the_limit() {
        let mut t = QuotaTable::default();
        assert_eq!(granted(t.apply(10, report(0, None, 4))), 4);
        assert_eq!(granted(t.apply(10, report(0, Some(4), 50))), 10);
        assert_eq!(t.granted(), 10);
    }

    #[test]
    fn a_second_shard_waits_for_the_first_to_give_back_its_excess() {
        let mut t = QuotaTable::default();
        assert_eq!(granted(t.apply(10, report(0, None, 10))), 10);
        // Shard 1 wants 6; its share is 5 but nothing is free.
        let answer = t.apply(10, report(1, None, 6));
        assert_eq!(answer, QuotaAnswer::Granted { grant: 0, share: 5 });
        // Shard 0 learns its share is 5 and keeps 7 (still running 7).
        let answer = t.apply(10, report(0, Some(7), 10));
        assert_eq!(answer, QuotaAnswer::Granted { grant: 7, share: 5 });
        assert_eq!(granted(t.apply(10, report(1, Some(0), 6))), 3);
        assert_eq!(granted(t.apply(10, report(0, Some(5), 10))), 5);
        assert_eq!(granted(t.apply(10, report(1, Some(3), 6))), 5);
        assert_eq!(t.granted(), 10);
    }

    #[test]
    fn free_capacity_nobody_needs_goes_beyond_the_share() {
        let mut t = QuotaTable::default();
        assert_eq!(granted(t.apply(10, report(0, None, 2))), 2);
        // Shard 1's share is 8 (shard 0 wants only 2): all of it.
        assert_eq!(granted(t.apply(10, report(1, None, 20))), 8);
        // Shard 2 arrives; shares become 2/4/4, shard 1 must shrink first.
        let answer = t.apply(10, report(2, None, 4));
        assert_eq!(answer, QuotaAnswer::Granted { grant: 0, share: 4 });
    }

    #[test]
    fn a_deposed_leader_cannot_change_the_grant() {
        let mut t = QuotaTable::default();
        let new_leader = QuotaReport {
            shard: 0,
            epoch: 5,
            keep: None,
            want: 3,
            used: 0,
        };
        assert_eq!(granted(t.apply(10, new_leader)), 3);
        let old_leader = QuotaReport {
            shard: 0,
            epoch: 4,
            keep: Some(0),
            want: 0,
            used: 0,
        };
        assert_eq!(t.apply(10, old_leader), QuotaAnswer::Stale);
        assert_eq!(t.shards[&0].grant, 3);
    }

    #[test]
    fn jobs_leased_before_the_limit_count_against_it() {
        let mut t = QuotaTable::default();
        // Shard 0 has 8 leased when a limit of 5 comes in.
        let first = QuotaReport {
            shard: 0,
            epoch: 1,
            keep: None,
            want: 8,
            used: 8,
        };
        assert_eq!(granted(t.apply(5, first)), 8);
        // Nothing for shard 1 until shard 0 is under the limit.
        assert_eq!(granted(t.apply(5, report(1, None, 3))), 0);
        let shrink = QuotaReport {
            shard: 0,
            epoch: 1,
            keep: Some(2),
            want: 2,
            used: 2,
        };
        assert_eq!(granted(t.apply(5, shrink)), 2);
        assert_eq!(granted(t.apply(5, report(1, Some(0), 3))), 3);
    }

    #[test]
    fn shares_fill_small_wants_first_and_split_the_rest() {
        let mut t = QuotaTable::default();
        for (shard, want) in [(0, 1), (1, 10), (2, 10), (3, 0)] {
            t.shards.insert(
                shard,
                ShardGrant {
                    epoch: 1,
                    grant: 0,
                    want,
                },
            );
        }
        let shares = t.shares(8);
        assert_eq!(shares.get(&0), Some(&1));
        assert_eq!(shares.get(&1), Some(&4));
        assert_eq!(shares.get(&2), Some(&3));
        assert_eq!(shares.get(&3), None);
        assert_eq!(shares.values().sum::<u32>(), 8);
    }

    /// Random reports from shards that follow the protocol (lower first,
    /// raise after the answer): the grants never exceed the limit, and
    /// neither does what the shards use.
    #[test]
    fn random_reports_never_exceed_the_limit() {
        let limit = 7u32;
        let mut t = QuotaTable::default();
        // Per shard: (cap, used).
        let mut shards = [(0u32, 0u32); 5];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move |n: u32| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % u64::from(n)) as u32
        };
        for _ in 0..20_000 {
            let s = next(5) as usize;
            let (cap, used) = &mut shards[s];
            match next(3) {
                // Lease up to the cap, or finish some jobs.
                0 => *used = (*used + next(4)).min(*cap),
                1 => *used = used.saturating_sub(next(3)),
                _ => {
                    let want = *used + next(6);
                    let keep = (*cap).min(want.max(*used));
                    *cap = keep;
                    let answer = t.apply(
                        limit,
                        QuotaReport {
                            shard: s as ShardId,
                            epoch: 1,
                            keep: Some(keep),
                            want,
                            used: *used,
                        },
                    );
                    *cap = granted(answer);
                    assert!(*cap >= *used, "a grant below what the shard uses");
                }
            }
            assert!(t.granted() <= u64::from(limit));
            assert!(shards.iter().map(|(_, u)| u).sum::<u32>() <= limit);
        }
    }
}
