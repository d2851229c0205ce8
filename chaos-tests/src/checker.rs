//! The invariants, one function each, checked against a run's history and
//! the cluster's state after it healed and drained.
//!
//! Every function is conservative where the history cannot tell (an
//! operation whose outcome is unknown may or may not have happened): it
//! reports only what certainly broke a rule.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::history::{AttemptOp, Event, Outcome};
pub use sundial_raft::JobState as State;

/// A job as the cluster holds it after the run.
#[derive(Clone, Debug, Default)]
pub struct FinalJob {
    pub id: String,
    /// The idempotency key it was submitted with (empty for schedule firings).
    pub key: String,
    pub state: Option<State>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub schedule_id: String,
    /// A schedule firing's nominal time (its `sundial-fire-ms` header).
    pub fire_ms: i64,
    /// The accepted completion's result: `worker#token`.
    pub result: String,
}

/// A schedule as the cluster holds it after the run.
#[derive(Clone, Debug, Default)]
pub struct FinalSchedule {
    pub id: String,
    pub every_ms: u64,
    /// Firings recorded by the schedule (jobs created).
    pub fired: u64,
}

/// One replica's digest.
#[derive(Clone, Debug, Default)]
pub struct Replica {
    pub shard: u32,
    pub node: u64,
    pub applied_index: u64,
    pub digest: u64,
}

/// A job's state as the proto numbers it (`None`: a number this harness
/// does not know).
pub fn state_from_proto(state: i32) -> Option<State> {
    [
        State::Scheduled,
        State::Ready,
        State::Leased,
        State::Succeeded,
        State::Dead,
        State::Cancelled,
    ]
    .into_iter()
    .find(|s| i32::from(s.code()) == state)
}

/// A state's name in the history.
pub fn state_name(state: Option<State>) -> String {
    state
        .map(|s| format!("{s:?}").to_lowercase())
        .unwrap_or_else(|| "unknown".into())
}

/// The state a history name stands for.
pub fn parse_state(name: &str) -> Option<State> {
    (1..=6)
        .filter_map(state_from_proto)
        .find(|s| state_name(Some(*s)) == name)
}

/// What the cluster holds after the run.
#[derive(Clone, Debug, Default)]
pub struct World {
    pub jobs: Vec<FinalJob>,
    pub schedules: Vec<FinalSchedule>,
    pub replicas: Vec<Replica>,
    /// Shards whose replicas never reached one applied index.
    pub unsettled_shards: Vec<u32>,
}

/// Violations found by one invariant.
#[derive(Clone, Debug, Default)]
pub struct Found {
    pub count: u64,
    pub details: Vec<String>,
}

impl Found {
    fn add(&mut self, detail: String) {
        self.count += 1;
        if self.details.len() < 20 {
            self.details.push(detail);
        }
    }
}

/// Every invariant's findings.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub acked: u64,
    pub lost: Found,
    pub phantom: Found,
    pub dup_completions: Found,
    pub lease_violations: Found,
    pub backward: Found,
    pub attempts: Found,
    pub schedules: Found,
    pub diverged: Found,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.all().iter().all(|(_, f)| f.count == 0)
    }

    pub fn all(&self) -> [(&'static str, &Found); 8] {
        [
            ("lost", &self.lost),
            ("phantom", &self.phantom),
            ("dup_completions", &self.dup_completions),
            ("lease_violations", &self.lease_violations),
            ("backward_states", &self.backward),
            ("attempts_exceeded", &self.attempts),
            ("schedule_violations", &self.schedules),
            ("diverged_shards", &self.diverged),
        ]
    }
}

pub fn check(events: &[Event], world: &World) -> Report {
    Report {
        acked: acked_ids(events).len() as u64,
        lost: no_acknowledged_submit_lost(events, world),
        phantom: no_phantom_jobs(events, world),
        dup_completions: one_accepted_completion(events, world),
        lease_violations: leases_fenced(events),
        backward: states_only_move_forward(events, world),
        attempts: attempts_within_limit(events, world),
        schedules: firings_exactly_once(events, world),
        diverged: replicas_identical(world),
    }
}

/// Ids the cluster acknowledged, with their keys.
fn acked_ids(events: &[Event]) -> HashMap<String, String> {
    events
        .iter()
        .filter_map(|e| match e {
            Event::Submit {
                key,
                outcome: Outcome::Ok,
                id: Some(id),
                ..
            } => Some((id.clone(), key.clone())),
            _ => None,
        })
        .collect()
}

/// Every acknowledged submit's job exists after the run.
pub fn no_acknowledged_submit_lost(events: &[Event], world: &World) -> Found {
    let mut found = Found::default();
    let present: HashSet<&str> = world.jobs.iter().map(|j| j.id.as_str()).collect();
    let mut acked: Vec<_> = acked_ids(events).into_iter().collect();
    acked.sort();
    for (id, key) in acked {
        if !present.contains(id.as_str()) {
            found.add(format!("job {id} (key {key}) was acknowledged and is gone"));
        }
    }
    found
}

/// No job that nobody submitted, and one job per idempotency key.
pub fn no_phantom_jobs(events: &[Event], world: &World) -> Found {
    let mut found = Found::default();
    let mut tried: HashSet<&str> = HashSet::new();
    let mut answered: HashMap<&str, &str> = HashMap::new();
    for e in events {
        if let Event::Submit { key, id, outcome, .. } = e {
            tried.insert(key);
            if let (Outcome::Ok, Some(id)) = (outcome, id) {
                if let Some(before) = answered.insert(key, id) {
                    if before != id {
                        found.add(format!("key {key} was answered with two ids: {before} and {id}"));
                    }
                }
            }
        }
    }
    let mut per_key: HashMap<&str, Vec<&str>> = HashMap::new();
    for job in world.jobs.iter().filter(|j| j.schedule_id.is_empty()) {
        if !tried.contains(job.key.as_str()) {
            found.add(format!(
                "job {} has key {:?}, which no producer submitted",
                job.id, job.key
            ));
        }
        per_key.entry(&job.key).or_default().push(&job.id);
    }
    for (key, ids) in per_key {
        if ids.len() > 1 {
            found.add(format!("key {key} created {} jobs: {ids:?}", ids.len()));
        }
    }
    found
}

/// At most one accepted completion per job, and the job keeps the one that
/// was accepted.
pub fn one_accepted_completion(events: &[Event], world: &World) -> Found {
    let mut found = Found::default();
    // Per job: (worker, token, outcome) of every completion tried.
    let mut tried: HashMap<&str, Vec<(&str, u32, &Outcome)>> = HashMap::new();
    for e in events {
        if let Event::Attempt {
            worker,
            op: AttemptOp::Complete,
            id,
            token,
            outcome,
            ..
        } = e
        {
            tried.entry(id).or_default().push((worker, *token, outcome));
        }
    }
    let jobs: HashMap<&str, &FinalJob> = world.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    for (id, tries) in &tried {
        let accepted: Vec<_> = tries.iter().filter(|t| t.2.is_ok()).collect();
        if accepted.len() > 1 {
            found.add(format!(
                "job {id}: {} completions accepted: {accepted:?}",
                accepted.len()
            ));
        }
        if let (Some((worker, token, _)), Some(job)) = (accepted.first(), jobs.get(id)) {
            let mine = format!("{worker}#{token}");
            if job.state != Some(State::Succeeded) || job.result != mine {
                found.add(format!(
                    "job {id}: completion {mine} was accepted but the job is {} with result {:?}",
                    state_name(job.state),
                    job.result
                ));
            }
        }
    }
    for job in world
        .jobs
        .iter()
        .filter(|j| j.state == Some(State::Succeeded) && j.schedule_id.is_empty())
    {
        let known = tried.get(job.id.as_str()).is_some_and(|tries| {
            tries
                .iter()
                .any(|(w, t, o)| o.maybe_ok() && format!("{w}#{t}") == job.result)
        });
        if !known {
            found.add(format!(
                "job {} succeeded with result {:?}, which no worker's completion can have written",
                job.id, job.result
            ));
        }
    }
    found
}

/// Fencing: a job's leases carry strictly increasing tokens; a new lease is
/// granted only once the previous one ended (expired, failed, completed, or
/// its worker's session ended); no stale token is accepted after a newer
/// lease was granted.
pub fn leases_fenced(events: &[Event]) -> Found {
    struct LeaseSeen<'a> {
        worker: &'a str,
        token: u32,
        received: i64,
        leased_at: i64,
        deadline: i64,
    }
    let mut found = Found::default();
    let mut leases: HashMap<&str, Vec<LeaseSeen>> = HashMap::new();
    let mut attempts: HashMap<&str, Vec<&Event>> = HashMap::new();
    // Times a worker's session or process ended.
    let mut session_ends: HashMap<&str, Vec<i64>> = HashMap::new();
    for e in events {
        match e {
            Event::Lease {
                worker,
                id,
                token,
                t,
                leased_at_ms,
                deadline_ms,
            } => leases.entry(id).or_default().push(LeaseSeen {
                worker,
                token: *token,
                received: *t,
                leased_at: *leased_at_ms,
                deadline: *deadline_ms,
            }),
            Event::Attempt { id, .. } => attempts.entry(id).or_default().push(e),
            Event::SessionEnd { worker, t } => session_ends.entry(worker).or_default().push(*t),
            _ => {}
        }
    }
    for (id, list) in &mut leases {
        list.sort_by_key(|l| (l.leased_at, l.token));
        let ops = attempts.get(id).map(Vec::as_slice).unwrap_or(&[]);
        for pair in list.windows(2) {
            let (old, new) = (&pair[0], &pair[1]);
            if new.token <= old.token {
                found.add(format!(
                    "job {id}: token {} leased at {} after token {} leased at {}",
                    new.token, new.leased_at, old.token, old.leased_at
                ));
                continue;
            }
            // Did the old lease end before the new one was granted?
            let ended_by_worker = ops.iter().any(|e| {
                matches!(e, Event::Attempt { op: AttemptOp::Complete | AttemptOp::Fail, token, t0, outcome, .. }
                    if *token == old.token && outcome.maybe_ok() && *t0 <= new.leased_at)
            });
            let session_ended = session_ends
                .get(old.worker)
                .is_some_and(|ends| ends.iter().any(|t| *t >= old.received));
            let extended = ops
                .iter()
                .filter_map(|e| match e {
                    Event::Attempt {
                        op: AttemptOp::Heartbeat,
                        token,
                        outcome: Outcome::Ok,
                        deadline_ms: Some(d),
                        ..
                    } if *token == old.token => Some(*d),
                    _ => None,
                })
                .fold(old.deadline, i64::max);
            if !ended_by_worker && !session_ended && new.leased_at < extended {
                found.add(format!(
                    "job {id}: token {} leased at {} while token {} was valid until {}",
                    new.token, new.leased_at, old.token, extended
                ));
            }
        }
        // A stale token must not be accepted once a newer lease was granted.
        for e in ops {
            if let Event::Attempt {
                op,
                token,
                t0,
                outcome,
                ..
            } = e
            {
                if !outcome.is_ok() {
                    continue;
                }
                if let Some(newer) = list.iter().find(|l| l.token > *token && l.received < *t0) {
                    found.add(format!(
                        "job {id}: {op:?} with token {token} sent at {t0} was accepted after token {} was granted at {}",
                        newer.token, newer.leased_at
                    ));
                }
            }
        }
    }
    found
}

/// A job's attempts never go down, a finished job stays finished, and the
/// job ends where the last read saw it finished.
pub fn states_only_move_forward(events: &[Event], world: &World) -> Found {
    let mut found = Found::default();
    let mut seen: HashMap<&str, Vec<Read>> = HashMap::new();
    for e in events {
        if let Event::Observe {
            id,
            t0,
            t1,
            state,
            attempts,
        } = e
        {
            seen.entry(id)
                .or_default()
                .push((*t0, *t1, parse_state(state), *attempts));
        }
    }
    let jobs: HashMap<&str, &FinalJob> = world.jobs.iter().map(|j| (j.id.as_str(), j)).collect();
    for (id, reads) in &mut seen {
        reads.sort_by_key(|r| (r.0, r.1));
        for (i, a) in reads.iter().enumerate() {
            // Only reads that certainly came after `a` (real-time order).
            for b in reads[i + 1..].iter().filter(|b| b.0 > a.1) {
                if b.3 < a.3 || (finished(a.2) && b.2 != a.2) {
                    found.add(format!(
                        "job {id}: read {} attempt {} at {}, then {} attempt {} at {}",
                        state_name(a.2),
                        a.3,
                        a.1,
                        state_name(b.2),
                        b.3,
                        b.0
                    ));
                    break;
                }
            }
        }
        // The read that started last: the job must end no earlier than it.
        if let (Some(last), Some(job)) = (reads.last(), jobs.get(id)) {
            if (finished(last.2) && job.state != last.2) || job.attempts < last.3 {
                found.add(format!(
                    "job {id}: read {} attempt {}, but it ends {} attempt {}",
                    state_name(last.2),
                    last.3,
                    state_name(job.state),
                    job.attempts
                ));
            }
        }
    }
    found
}

/// One read of a job: invoked, returned, state seen, attempts seen.
type Read = (i64, i64, Option<State>, u32);

fn finished(state: Option<State>) -> bool {
    state.is_some_and(State::is_terminal)
}

/// No job runs more attempts than its retry policy allows.
pub fn attempts_within_limit(events: &[Event], world: &World) -> Found {
    let mut found = Found::default();
    let max: HashMap<&str, u32> = world
        .jobs
        .iter()
        .map(|j| (j.id.as_str(), j.max_attempts))
        .collect();
    for job in &world.jobs {
        if job.max_attempts > 0 && job.attempts > job.max_attempts {
            found.add(format!(
                "job {}: {} attempts, at most {}",
                job.id, job.attempts, job.max_attempts
            ));
        }
    }
    for e in events {
        if let Event::Lease { id, token, .. } = e {
            if let Some(&m) = max.get(id.as_str()) {
                if m > 0 && *token > m {
                    found.add(format!(
                        "job {id}: leased with token {token}, at most {m} attempts"
                    ));
                }
            }
        }
    }
    found
}

/// Every firing of every schedule created exactly one job: no nominal time
/// twice, no gap between the first and the last, as many jobs as the
/// schedule counted.
pub fn firings_exactly_once(events: &[Event], world: &World) -> Found {
    let mut found = Found::default();
    let created: HashSet<&str> = events
        .iter()
        .filter_map(|e| match e {
            Event::Schedule { id, .. } => Some(id.as_str()),
            _ => None,
        })
        .collect();
    for schedule in &world.schedules {
        let mut times: Vec<i64> = world
            .jobs
            .iter()
            .filter(|j| j.schedule_id == schedule.id)
            .map(|j| j.fire_ms)
            .collect();
        times.sort_unstable();
        for pair in times.windows(2) {
            let gap = pair[1] - pair[0];
            if gap == 0 {
                found.add(format!("schedule {}: fired twice for {}", schedule.id, pair[0]));
            } else if gap != schedule.every_ms as i64 {
                found.add(format!(
                    "schedule {}: no firing between {} and {} (every {} ms)",
                    schedule.id, pair[0], pair[1], schedule.every_ms
                ));
            }
        }
        if times.len() as u64 != schedule.fired {
            found.add(format!(
                "schedule {}: counted {} firings, {} jobs exist",
                schedule.id,
                schedule.fired,
                times.len()
            ));
        }
        if times.is_empty() {
            found.add(format!("schedule {}: never fired", schedule.id));
        }
    }
    for id in created {
        if !world.schedules.iter().any(|s| s.id == id) {
            found.add(format!("schedule {id} was created and is gone"));
        }
    }
    found
}

/// Replicas of a shard that applied the same log agree on every key.
pub fn replicas_identical(world: &World) -> Found {
    let mut found = Found::default();
    let mut by_shard: BTreeMap<u32, Vec<&Replica>> = BTreeMap::new();
    for r in &world.replicas {
        by_shard.entry(r.shard).or_default().push(r);
    }
    for (shard, replicas) in by_shard {
        let mut by_index: BTreeMap<u64, Vec<&Replica>> = BTreeMap::new();
        for r in replicas {
            by_index.entry(r.applied_index).or_default().push(r);
        }
        for (index, same) in by_index {
            if same.iter().any(|r| r.digest != same[0].digest) {
                let digests: Vec<String> = same
                    .iter()
                    .map(|r| format!("node {}: {:016x}", r.node, r.digest))
                    .collect();
                found.add(format!("shard {shard} at index {index}: {}", digests.join(", ")));
            }
        }
    }
    for shard in &world.unsettled_shards {
        found.add(format!("shard {shard}: replicas never reached one applied index"));
    }
    found
}

#[cfg(test)]
mod tests;
