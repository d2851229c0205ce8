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
    /// Due time, ms since the Unix epoch. After a failed attempt, the time of
    /// the retry.
    pub run_at_ms: i64,
    pub priority: i32,
    pub state: JobState,
    /// Attempts started so far; the latest is the fencing token of the lease.
    pub attempts: u32,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    /// How failed attempts are retried.
    pub retry: RetryPolicy,
    /// How long a lease lasts without a heartbeat, in ms. A heartbeat extends
    /// the lease to this long from the heartbeat.
    pub timeout_ms: u64,
    /// The current lease while the job is `Leased`.
    pub lease: Option<Lease>,
    /// What the worker returned when the job succeeded.
    pub result: Option<Vec<u8>>,
    /// Why the last attempt failed, if it did.
    pub last_error: Option<String>,
    /// Attempts counted before the last replay of a dead job: the retry budget
    /// applies to `attempts - replay_base`, while `attempts` (the fencing
    /// token) keeps growing.
    pub replay_base: u32,
    /// The client's key for this submit: while the key is retained, another
    /// submit with it in the same namespace returns this job.
    pub idempotency_key: Option<String>,
    /// Until when the key is retained, ms since the epoch.
    pub idempotency_until_ms: i64,
    /// The schedule whose firing created this job (same namespace and shard).
    pub schedule_id: Option<String>,
    /// Where the node's executors deliver the job, instead of a worker.
    pub http: Option<HttpTarget>,
}

/// An HTTP endpoint a job calls: the node's executors send the payload as
/// the request body; a 2xx answer completes the attempt, anything else fails
/// it (and the job's retry policy applies).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTarget {
    /// Absolute `http` or `https` URL.
    pub url: String,
    /// Request method, upper case (`POST` by default).
    pub method: String,
    /// Request headers, sent as given.
    pub headers: BTreeMap<String, String>,
    /// How long one call may take, ms.
    pub timeout_ms: u64,
}

impl Job {
    /// A new job made from `what`, waiting from `now_ms`: ready if already
    /// due, scheduled otherwise, with no attempts and no history.
    pub fn new(
        id: JobId,
        namespace: String,
        what: crate::schedule::JobTemplate,
        run_at_ms: i64,
        now_ms: i64,
    ) -> Job {
        Job {
            id,
            namespace,
            queue: what.queue,
            payload: what.payload,
            headers: what.headers,
            run_at_ms,
            priority: what.priority,
            state: if run_at_ms <= now_ms {
                JobState::Ready
            } else {
                JobState::Scheduled
            },
            attempts: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
            retry: what.retry,
            timeout_ms: what.timeout_ms,
            lease: None,
            result: None,
            last_error: None,
            replay_base: 0,
            idempotency_key: None,
            idempotency_until_ms: 0,
            schedule_id: None,
            http: what.http,
        }
    }

    /// True while the job waits to be leased (in the time index).
    pub fn is_waiting(&self) -> bool {
        matches!(self.state, JobState::Scheduled | JobState::Ready)
    }

    /// The state as users see it at `now_ms`: a waiting job is `Ready` once
    /// its time has come and `Scheduled` before (storage keeps the state it
    /// was written with; the time index is what the dispatcher uses).
    pub fn effective_state(&self, now_ms: i64) -> JobState {
        match self.state {
            JobState::Scheduled | JobState::Ready if self.run_at_ms <= now_ms => JobState::Ready,
            JobState::Scheduled | JobState::Ready => JobState::Scheduled,
            other => other,
        }
    }

    /// True when the latest attempt may be retried under the job's policy.
    pub fn has_attempts_left(&self) -> bool {
        self.attempts.saturating_sub(self.replay_base) < self.retry.max_attempts
    }
}

/// How a job's failed attempts are retried: exponential backoff from
/// `initial_backoff_ms`, doubling up to `max_backoff_ms`, with "equal jitter"
/// (half fixed, half random) so that jobs failing together do not retry
/// together.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included; at least 1.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 300_000,
        }
    }
}

impl RetryPolicy {
    /// The delay before the retry that follows failed attempt `attempt`
    /// (1-based). The jitter is derived from the job id and the attempt, so
    /// every replica computes the same value when it applies the failure.
    pub fn backoff_ms(&self, id: &JobId, attempt: u32) -> u64 {
        let exp = attempt.saturating_sub(1).min(40);
        let base = self
            .initial_backoff_ms
            .saturating_mul(1u64 << exp)
            .min(self.max_backoff_ms.max(self.initial_backoff_ms));
        let half = base / 2;
        if half == 0 {
            return base;
        }
        let mut seed = id.0.to_vec();
        seed.extend_from_slice(&attempt.to_be_bytes());
        let jitter = fnv1a(&seed) % (half + 1);
        base - half + jitter
    }
}

/// A worker's right to run one attempt of a job until `deadline_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The fencing token: the attempt number this lease is for.
    pub token: u32,
    pub deadline_ms: i64,
    pub leased_at_ms: i64,
    /// Who holds it: the worker's own name, the node its stream is on, and the
    /// stream's session id on that node (cancellations are sent there).
    pub worker: String,
    pub node: u64,
    pub session: u64,
}

/// Milliseconds since the Unix epoch on this node's clock: the unit of every
/// time in a job. Operations carry the proposer's reading of it, so applying
/// them never reads the clock.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Maps any key to a shard, for callers that spread new jobs by a key.
pub fn shard_for_key(key: &[u8], shard_count: u32) -> ShardId {
    (fnv1a(key) % u64::from(shard_count.max(1))) as ShardId
}

fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash = Fnv64::new();
    hash.write(bytes);
    hash.finish()
}

/// FNV-1a, 64 bit, fed in pieces: stable across versions and platforms,
/// unlike std's hasher.
pub(crate) struct Fnv64(u64);

impl Fnv64 {
    pub(crate) fn new() -> Fnv64 {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }

    pub(crate) fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }

    pub(crate) fn finish(&self) -> u64 {
        self.0
    }
}

/// A job with every field set, for tests.
#[cfg(test)]
pub(crate) fn sample_job() -> Job {
    let mut headers = BTreeMap::new();
    headers.insert("trace".to_string(), "abc".to_string());
    Job {
        id: JobId::new(5, 1_700_000_000_000, 42),
        namespace: "default".into(),
        queue: "emails".into(),
        payload: vec![0, 1, 2, 255],
        headers,
        run_at_ms: 1_700_000_000_500,
        priority: -3,
        state: JobState::Scheduled,
        attempts: 0,
        created_at_ms: 1_700_000_000_000,
        updated_at_ms: 1_700_000_000_000,
        retry: RetryPolicy::default(),
        timeout_ms: 30_000,
        lease: None,
        result: None,
        last_error: None,
        replay_base: 0,
        idempotency_key: None,
        idempotency_until_ms: 0,
        schedule_id: None,
        http: None,
    }
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
    fn backoff_doubles_up_to_the_cap_with_bounded_jitter() {
        let policy = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 8_000,
        };
        let id = JobId::new(1, 2, 3);
        for (attempt, base) in [(1u32, 1_000u64), (2, 2_000), (3, 4_000), (4, 8_000), (9, 8_000)] {
            let got = policy.backoff_ms(&id, attempt);
            assert!(
                got >= base / 2 && got <= base,
                "attempt {attempt}: {got} not in [{}, {base}]",
                base / 2
            );
            assert_eq!(got, policy.backoff_ms(&id, attempt), "deterministic");
        }
        let spread: std::collections::HashSet<u64> = (0..50u64)
            .map(|r| policy.backoff_ms(&JobId::new(1, 2, r), 3))
            .collect();
        assert!(spread.len() > 10, "jitter spreads retries: {spread:?}");
    }

    #[test]
    fn a_waiting_job_reads_ready_once_due() {
        let mut job = sample_job();
        job.run_at_ms = 1_000;
        job.state = JobState::Scheduled;
        assert_eq!(job.effective_state(999), JobState::Scheduled);
        assert_eq!(job.effective_state(1_000), JobState::Ready);
        job.state = JobState::Leased;
        assert_eq!(job.effective_state(5_000), JobState::Leased);
    }

    #[test]
    fn retry_budget_counts_from_the_last_replay() {
        let mut job = sample_job();
        job.retry.max_attempts = 2;
        job.attempts = 2;
        assert!(!job.has_attempts_left());
        job.replay_base = 2;
        assert!(job.has_attempts_left());
        job.attempts = 4;
        assert!(!job.has_attempts_left());
    }

    #[test]
    fn shard_for_key_is_stable_and_in_range() {
        assert_eq!(shard_for_key(b"tenant-a", 8), shard_for_key(b"tenant-a", 8));
        for i in 0..1000u32 {
            assert!(shard_for_key(&i.to_be_bytes(), 8) < 8);
        }
    }
}
