//! The job model: ids that carry their shard, states, and the stored record.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Index of a shard (one Raft group). Fixed-size so it fits in a job id.
pub type ShardId = u32;

/// A job id: 16 bytes, written as 32 lowercase hex digits.
///
/// Layout (big-endian): shard `u16` | creation time in ms `u48` | random `u64`.
/// The shard prefix lets any node route a job without a lookup; the time part
/// makes a shard's jobs sort by creation in RocksDB; the random part makes ids
/// unique without coordination (the gateway mints them before replication, so
/// a retried submit carries the same id and is applied once).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct JobId(pub [u8; 16]);

/// A string that is not a job id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("malformed job id {input:?}: {reason}")]
pub struct ParseJobIdError {
    pub input: String,
    pub reason: &'static str,
}

impl JobId {
    /// Largest shard count a job id can name.
    pub const MAX_SHARDS: u32 = u16::MAX as u32 + 1;

    pub fn new(shard: ShardId, created_ms: u64, random: u64) -> JobId {
        debug_assert!(shard < Self::MAX_SHARDS, "shard {shard} does not fit a job id");
        let mut bytes = [0u8; 16];
        bytes[0..2].copy_from_slice(&(shard as u16).to_be_bytes());
        bytes[2..8].copy_from_slice(&created_ms.to_be_bytes()[2..8]);
        bytes[8..16].copy_from_slice(&random.to_be_bytes());
        JobId(bytes)
    }

    /// The shard that owns this job.
    pub fn shard(&self) -> ShardId {
        u16::from_be_bytes([self.0[0], self.0[1]]) as ShardId
    }

    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({self})")
    }
}

impl FromStr for JobId {
    type Err = ParseJobIdError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason| ParseJobIdError {
            input: s.chars().take(64).collect(),
            reason,
        };
        if s.len() != 32 {
            return Err(err("expected 32 hex digits"));
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
            let text = std::str::from_utf8(chunk).map_err(|_| err("not hex"))?;
            bytes[i] = u8::from_str_radix(text, 16).map_err(|_| err("not hex"))?;
        }
        Ok(JobId(bytes))
    }
}

/// The life of a job; see `JobState` in the proto for the meaning of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum JobState {
    Scheduled,
    Ready,
    Leased,
    Succeeded,
    Dead,
    Cancelled,
}

impl JobState {
    /// A terminal state never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(self, JobState::Succeeded | JobState::Dead | JobState::Cancelled)
    }

    /// One byte for secondary indexes.
    pub fn code(self) -> u8 {
        match self {
            JobState::Scheduled => 1,
            JobState::Ready => 2,
            JobState::Leased => 3,
            JobState::Succeeded => 4,
            JobState::Dead => 5,
            JobState::Cancelled => 6,
        }
    }
}

/// A stored job. Everything here is decided by the shard leader before the job
/// is replicated, so applying it is deterministic on every replica.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub namespace: String,
    pub queue: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    /// Due time, ms since the Unix epoch.
    pub run_at_ms: i64,
    pub priority: i32,
    pub state: JobState,
    pub attempts: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// Maps any key to a shard, for callers that spread new jobs by a key.
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    // FNV-1a: stable across versions and platforms, unlike std's hasher.
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in key {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    (hash % u64::from(shard_count.max(1))) as ShardId
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_carries_its_shard_and_round_trips_as_text() {
        for shard in [0u32, 1, 7, 255, 65_535] {
            let id = JobId::new(shard, 1_733_000_000_123, 0xdead_beef_0000_0001);
            assert_eq!(id.shard(), shard);
            let text = id.to_string();
            assert_eq!(text.len(), 32);
            let back: JobId = text.parse().expect("parse");
            assert_eq!(back, id);
            assert_eq!(back.shard(), shard);
        }
    }

    #[test]
    fn ids_of_one_shard_sort_by_creation_time() {
        let a = JobId::new(3, 1_000, u64::MAX);
        let b = JobId::new(3, 1_001, 0);
        assert!(a < b);
        assert!(a.to_string() < b.to_string());
    }

    #[test]
    fn malformed_ids_are_refused_with_a_reason() {
        for bad in [
            "",
            "abc",
            "zz000000000000000000000000000000",
            "0123456789abcdef0123456789abcdef0",
        ] {
            let err = bad.parse::<JobId>().expect_err(bad);
            assert_eq!(err.input, bad);
        }
    }

    #[test]
    fn shard_for_key_is_stable_and_in_range() {
        assert_eq!(shard_for_key(b"tenant-a", 8), shard_for_key(b"tenant-a", 8));
        for i in 0..1000u32 {
            assert!(shard_for_key(&i.to_be_bytes(), 8) < 8);
        }
    }
}
