//! Big-endian RocksDB keys. Every key starts with its shard, so one shard's
//! data is one contiguous range and scans come out in order.
//!
//! Column family `log`:  shard u32 | index u64              → encoded Entry
//! Column family `meta`: shard u32 | tag                    → encoded value
//! Column family `sm`:   shard u32 | kind u8 | rest         → see below
//!   kind `J`  | job id (16)                                → encoded Job
//!   kind `T`  | run_at (u64, sign-flipped) | job id        → encoded TimerInfo (waiting jobs)
//!   kind `L`  | deadline (u64, sign-flipped) | job id      → token u32 | encoded TimerInfo (leased jobs)
//!   kind `Q`  | ns len u8 | ns | queue len u8 | queue | id → state code [| due time i64 if waiting] (list index)
//!   kind `N`  | ns len u8 | ns | id                        → state code [| due time i64 if waiting] (list index)
//!   kind `I`  | ns len u8 | ns | idempotency key            → job id (16) | retained until (i64 BE)
//!   kind `S`  | ns len u8 | ns | schedule id                → encoded Schedule
//!   kind `F`  | next fire (u64, sign-flipped) | ns len u8 | ns | schedule id → () (active schedules)
//!   kind `C`  | ns len u8 | ns | queue                      → encoded QueueConfig (on every shard)
//!   kind `K`  | ns len u8 | ns | queue                      → encoded QuotaTable (queue's home shard)
//!   kind `A`  applied log id; kind `M` last membership (state machine meta)

use crate::job::{JobId, ShardId};

pub const CF_LOG: &str = "log";
pub const CF_META: &str = "meta";
pub const CF_SM: &str = "sm";

pub const META_VOTE: u8 = b'v';
pub const META_COMMITTED: u8 = b'c';
pub const META_PURGED: u8 = b'p';

pub const SM_JOB: u8 = b'J';
pub const SM_TIME: u8 = b'T';
pub const SM_LEASE: u8 = b'L';
pub const SM_QUEUE: u8 = b'Q';
pub const SM_IDEMPOTENCY: u8 = b'I';
pub const SM_SCHEDULE: u8 = b'S';
pub const SM_FIRE: u8 = b'F';
pub const SM_QUEUE_CONFIG: u8 = b'C';
pub const SM_QUOTA: u8 = b'K';
pub const SM_NAMESPACE: u8 = b'N';
pub const SM_APPLIED: u8 = b'A';
pub const SM_MEMBERSHIP: u8 = b'M';

pub fn log_key(shard: ShardId, index: u64) -> [u8; 12] {
    let mut k = [0u8; 12];
    k[..4].copy_from_slice(&shard.to_be_bytes());
    k[4..].copy_from_slice(&index.to_be_bytes());
    k
}

/// Decodes the index of a `log` key of any shard.
pub fn log_index(key: &[u8]) -> Option<u64> {
    let bytes: [u8; 8] = key.get(4..12)?.try_into().ok()?;
    Some(u64::from_be_bytes(bytes))
}

pub fn meta_key(shard: ShardId, tag: u8) -> [u8; 5] {
    let mut k = [0u8; 5];
    k[..4].copy_from_slice(&shard.to_be_bytes());
    k[4] = tag;
    k
}

/// The first key of a shard's range in any column family.
pub fn shard_start(shard: ShardId) -> Vec<u8> {
    shard.to_be_bytes().to_vec()
}

/// The first key after a shard's range (exclusive end).
pub fn shard_end(shard: ShardId) -> Vec<u8> {
    (u64::from(shard) + 1)
        .to_be_bytes()
        .get(4..)
        .map(|b| b.to_vec())
        .unwrap_or_default()
}

pub fn sm_key(shard: ShardId, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(32);
    k.extend_from_slice(&shard.to_be_bytes());
    k.push(kind);
    k
}

pub fn job_key(id: &JobId) -> Vec<u8> {
    let mut k = sm_key(id.shard(), SM_JOB);
    k.extend_from_slice(id.as_bytes());
    k
}

/// Maps i64 to u64 preserving order, so negative times sort first.
fn ordered_i64(v: i64) -> u64 {
    (v as u64) ^ (1 << 63)
}

pub fn time_key(run_at_ms: i64, id: &JobId) -> Vec<u8> {
    time_key_in(id.shard(), run_at_ms, id)
}

/// A time index key of `shard` for any id, also one that names no real job
/// (a scan position such as "after every id at this time").
pub fn time_key_in(shard: ShardId, run_at_ms: i64, id: &JobId) -> Vec<u8> {
    let mut k = sm_key(shard, SM_TIME);
    k.extend_from_slice(&ordered_i64(run_at_ms).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn lease_key(deadline_ms: i64, id: &JobId) -> Vec<u8> {
    let mut k = sm_key(id.shard(), SM_LEASE);
    k.extend_from_slice(&ordered_i64(deadline_ms).to_be_bytes());
    k.extend_from_slice(id.as_bytes());
    k
}

/// The time part of a `T` or `L` key.
pub fn key_time(key: &[u8]) -> Option<i64> {
    let bytes: [u8; 8] = key.get(5..13)?.try_into().ok()?;
    Some((u64::from_be_bytes(bytes) ^ (1 << 63)) as i64)
}

fn push_short(k: &mut Vec<u8>, s: &str) {
    // Names are validated to at most 128 bytes before they reach storage.
    let len = s.len().min(255);
    k.push(len as u8);
    k.extend_from_slice(&s.as_bytes()[..len]);
}

pub fn queue_prefix(shard: ShardId, namespace: &str, queue: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_QUEUE);
    push_short(&mut k, namespace);
    push_short(&mut k, queue);
    k
}

pub fn namespace_prefix(shard: ShardId, namespace: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_NAMESPACE);
    push_short(&mut k, namespace);
    k
}

pub fn idempotency_key(shard: ShardId, namespace: &str, key: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_IDEMPOTENCY);
    push_short(&mut k, namespace);
    k.extend_from_slice(key.as_bytes());
    k
}

pub fn queue_config_key(shard: ShardId, namespace: &str, queue: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_QUEUE_CONFIG);
    push_short(&mut k, namespace);
    k.extend_from_slice(queue.as_bytes());
    k
}

/// Where a queue's home shard keeps its concurrency grants.
pub fn quota_key(shard: ShardId, namespace: &str, queue: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_QUOTA);
    push_short(&mut k, namespace);
    k.extend_from_slice(queue.as_bytes());
    k
}

/// The (namespace, queue) of a `C` key.
pub fn queue_config_parts(key: &[u8]) -> Option<(String, String)> {
    short_then_rest(key.get(5..)?)
}

pub fn schedule_prefix(shard: ShardId, namespace: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_SCHEDULE);
    push_short(&mut k, namespace);
    k
}

pub fn schedule_key(shard: ShardId, namespace: &str, id: &str) -> Vec<u8> {
    let mut k = schedule_prefix(shard, namespace);
    k.extend_from_slice(id.as_bytes());
    k
}

pub fn fire_key(shard: ShardId, next_fire_ms: i64, namespace: &str, id: &str) -> Vec<u8> {
    let mut k = sm_key(shard, SM_FIRE);
    k.extend_from_slice(&ordered_i64(next_fire_ms).to_be_bytes());
    push_short(&mut k, namespace);
    k.extend_from_slice(id.as_bytes());
    k
}

/// The (namespace, schedule id) at the end of a `F` key.
pub fn fire_key_parts(key: &[u8]) -> Option<(String, String)> {
    short_then_rest(key.get(13..)?)
}

/// Splits `len u8 | name | rest` (as `push_short` wrote it) into two strings.
fn short_then_rest(bytes: &[u8]) -> Option<(String, String)> {
    let (&len, rest) = bytes.split_first()?;
    let first = rest.get(..len as usize)?;
    let second = rest.get(len as usize..)?;
    Some((
        String::from_utf8(first.to_vec()).ok()?,
        String::from_utf8(second.to_vec()).ok()?,
    ))
}

/// Appends a job id to an index prefix.
pub fn with_id(mut prefix: Vec<u8>, id: &JobId) -> Vec<u8> {
    prefix.extend_from_slice(id.as_bytes());
    prefix
}

/// The job id at the end of an index key.
pub fn trailing_id(key: &[u8]) -> Option<JobId> {
    let start = key.len().checked_sub(16)?;
    let bytes: [u8; 16] = key[start..].try_into().ok()?;
    Some(JobId(bytes))
}

/// Smallest key greater than every key that starts with `prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff: no upper bound exists; an empty key stands for "the end".
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_keys_sort_by_shard_then_index() {
        assert!(log_key(0, u64::MAX) < log_key(1, 0));
        assert!(log_key(3, 9) < log_key(3, 10));
        assert_eq!(log_index(&log_key(3, 77)), Some(77));
    }

    #[test]
    fn shard_range_covers_exactly_one_shard() {
        let start = shard_start(2);
        let end = shard_end(2);
        assert!(start.as_slice() <= log_key(2, 0).as_slice());
        assert!(log_key(2, u64::MAX).as_slice() < end.as_slice());
        assert!(end.as_slice() <= log_key(3, 0).as_slice());
    }

    #[test]
    fn time_keys_sort_by_time_including_negative() {
        let id = JobId::new(1, 0, 0);
        assert!(time_key(-5, &id) < time_key(0, &id));
        assert!(time_key(0, &id) < time_key(1, &id));
        assert!(time_key(1_000, &id) < time_key(1_001, &id));
        assert_eq!(key_time(&time_key(-5, &id)), Some(-5));
        assert_eq!(key_time(&lease_key(1_234, &id)), Some(1_234));
        assert_eq!(trailing_id(&lease_key(1_234, &id)), Some(id));
        let fk = fire_key(1, 77, "ns", "nightly");
        assert_eq!(key_time(&fk), Some(77));
        assert_eq!(fire_key_parts(&fk), Some(("ns".into(), "nightly".into())));
        let qk = queue_config_key(1, "ns", "emails");
        assert_eq!(queue_config_parts(&qk), Some(("ns".into(), "emails".into())));
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(&[1, 2]), vec![1, 3]);
        assert_eq!(prefix_end(&[1, 255]), vec![2]);
        let id = JobId::new(1, 5, 6);
        let p = queue_prefix(1, "ns", "q");
        let k = with_id(p.clone(), &id);
        assert!(k.as_slice() < prefix_end(&p).as_slice());
        assert_eq!(trailing_id(&k), Some(id));
    }
}
