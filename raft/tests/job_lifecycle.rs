//! The state machine's job rules, applied the way Raft applies them: leases
//! and their fencing tokens, heartbeats, completions, failures with retry and
//! backoff, expiry, dead jobs and their replay, and the indexes and events the
//! leader's dispatcher relies on.

use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, EntryPayload};
use sundial_raft::job::RetryPolicy;
use sundial_raft::store::events::ShardEvent;
use sundial_raft::store::{NodeStore, StateMachine};
use sundial_raft::types::{Entry, LeaseHolder, LogId, Op, OpResult, Request};
use sundial_raft::{Job, JobId, JobState};

struct Harness {
    _dir: tempfile::TempDir,
    store: Arc<NodeStore>,
    sm: StateMachine,
    index: u64,
}

impl Harness {
    fn new() -> Harness {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = NodeStore::open(dir.path()).expect("open store");
        let sm = store.state_machine(0).expect("state machine");
        Harness {
            _dir: dir,
            store,
            sm,
            index: 0,
        }
    }

    async fn apply(&mut self, op: Op) -> OpResult {
        self.index += 1;
        let entry = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), self.index),
            payload: EntryPayload::Normal(Request { ops: vec![op] }),
        };
        let mut responses = self.sm.apply(vec![entry]).await.expect("apply");
        responses.remove(0).results.remove(0)
    }

    fn job(&self, id: &JobId) -> Job {
        self.store.get_job(id).expect("read").expect("job exists")
    }
}

fn holder(session: u64) -> LeaseHolder {
    LeaseHolder {
        worker: format!("w{session}"),
        node: 1,
        session,
    }
}

fn new_job(n: u64, run_at_ms: i64, max_attempts: u32) -> Job {
    Job {
        id: JobId::new(0, 1_000, n),
        namespace: "default".into(),
        queue: "q".into(),
        payload: b"p".to_vec(),
        headers: Default::default(),
        run_at_ms,
        priority: 0,
        state: JobState::Ready,
        attempts: 0,
        created_at_ms: 1_000,
        updated_at_ms: 1_000,
        retry: RetryPolicy {
            max_attempts,
            initial_backoff_ms: 1_000,
            max_backoff_ms: 4_000,
        },
        timeout_ms: 500,
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

fn leased(result: OpResult) -> Vec<Job> {
    match result {
        OpResult::Leased(jobs) => jobs,
        other => panic!("expected leased jobs, got {other:?}"),
    }
}

fn updated(result: OpResult) -> Job {
    match result {
        OpResult::Updated(job) => *job,
        other => panic!("expected an update, got {other:?}"),
    }
}

#[tokio::test]
async fn a_job_is_not_leased_before_its_time_and_its_token_fences_completions() {
    let mut h = Harness::new();
    let job = new_job(1, 5_000, 3);
    let id = job.id;
    h.apply(Op::Submit(Box::new(job))).await;
    let early = leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(1),
            at_ms: 4_999,
        })
        .await,
    );
    assert!(early.is_empty(), "not due yet");

    let jobs = leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(1),
            at_ms: 5_000,
        })
        .await,
    );
    assert_eq!(jobs.len(), 1);
    let lease = jobs[0].lease.clone().expect("lease");
    assert_eq!((jobs[0].attempts, lease.token, lease.deadline_ms), (1, 1, 5_500));

    // A second lease of a leased job does nothing.
    assert!(leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(2),
            at_ms: 5_001,
        })
        .await
    )
    .is_empty());

    let beat = updated(
        h.apply(Op::Heartbeat {
            id,
            token: 1,
            at_ms: 5_400,
        })
        .await,
    );
    assert_eq!(beat.lease.expect("lease").deadline_ms, 5_900);

    let wrong = h
        .apply(Op::Complete {
            id,
            token: 2,
            result: b"bad".to_vec(),
            at_ms: 5_450,
        })
        .await;
    assert_eq!(
        wrong,
        OpResult::Stale {
            state: JobState::Leased,
            attempts: 1
        }
    );
    let done = updated(
        h.apply(Op::Complete {
            id,
            token: 1,
            result: b"ok".to_vec(),
            at_ms: 5_500,
        })
        .await,
    );
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(h.job(&id).result.as_deref(), Some(&b"ok"[..]));
    // A late duplicate completion is refused and changes nothing.
    let again = h
        .apply(Op::Complete {
            id,
            token: 1,
            result: b"twice".to_vec(),
            at_ms: 5_600,
        })
        .await;
    assert!(matches!(
        again,
        OpResult::Stale {
            state: JobState::Succeeded,
            ..
        }
    ));
    assert_eq!(h.job(&id).result.as_deref(), Some(&b"ok"[..]));
    // The very same completion applied again (a gateway retry after a lost
    // answer) is answered as accepted, and changes nothing.
    let replay = updated(
        h.apply(Op::Complete {
            id,
            token: 1,
            result: b"ok".to_vec(),
            at_ms: 5_700,
        })
        .await,
    );
    assert_eq!((replay.state, replay.updated_at_ms), (JobState::Succeeded, 5_500));
    assert!(h.store.scan_leases(0).expect("leases").is_empty());
    assert!(h
        .store
        .scan_timers(0, None, i64::MAX, 10)
        .expect("timers")
        .is_empty());
}

#[tokio::test]
async fn an_expired_lease_is_retried_with_backoff_and_the_old_token_is_refused() {
    let mut h = Harness::new();
    let job = new_job(2, 0, 3);
    let id = job.id;
    h.apply(Op::Submit(Box::new(job))).await;
    assert_eq!(h.store.scan_timers(0, None, 0, 10).expect("timers").len(), 1);
    leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(1),
            at_ms: 100,
        })
        .await,
    );
    let leases = h.store.scan_leases(0).expect("leases");
    assert_eq!(leases.len(), 1);
    assert_eq!((leases[0].deadline_ms, leases[0].token), (600, 1));

    // Too early, or for another attempt: nothing happens.
    assert!(matches!(
        h.apply(Op::Expire {
            id,
            token: 1,
            at_ms: 599
        })
        .await,
        OpResult::Stale { .. }
    ));
    assert!(matches!(
        h.apply(Op::Expire {
            id,
            token: 7,
            at_ms: 600
        })
        .await,
        OpResult::Stale { .. }
    ));
    let expired = updated(
        h.apply(Op::Expire {
            id,
            token: 1,
            at_ms: 600,
        })
        .await,
    );
    assert_eq!(expired.state, JobState::Scheduled);
    assert!(
        (1_100..=1_600).contains(&expired.run_at_ms),
        "retry after 0.5-1 s of backoff, got {}",
        expired.run_at_ms
    );
    assert!(expired
        .last_error
        .as_deref()
        .unwrap_or("")
        .contains("lease expired"));
    assert!(h.store.scan_leases(0).expect("leases").is_empty());

    // The paused worker comes back: its completion is refused.
    let late = h
        .apply(Op::Complete {
            id,
            token: 1,
            result: vec![],
            at_ms: 700,
        })
        .await;
    assert_eq!(
        late,
        OpResult::Stale {
            state: JobState::Scheduled,
            attempts: 1
        }
    );
    let again = leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(2),
            at_ms: expired.run_at_ms,
        })
        .await,
    );
    assert_eq!(again[0].lease.as_ref().map(|l| l.token), Some(2));
    let done = updated(
        h.apply(Op::Complete {
            id,
            token: 2,
            result: b"second".to_vec(),
            at_ms: expired.run_at_ms + 1,
        })
        .await,
    );
    assert_eq!(done.state, JobState::Succeeded);
}

#[tokio::test]
async fn out_of_attempts_is_dead_and_a_replay_gets_a_fresh_budget() {
    let mut h = Harness::new();
    let job = new_job(3, 0, 2);
    let id = job.id;
    h.apply(Op::Submit(Box::new(job))).await;
    let mut at = 10;
    for attempt in 1..=2u32 {
        let jobs = leased(
            h.apply(Op::Lease {
                ids: vec![id],
                holder: holder(1),
                at_ms: at,
            })
            .await,
        );
        assert_eq!(jobs.len(), 1, "attempt {attempt} leased");
        let failed = updated(
            h.apply(Op::Fail {
                id,
                token: attempt,
                error: format!("boom {attempt}"),
                retryable: true,
                at_ms: at,
            })
            .await,
        );
        at = failed.run_at_ms;
        // The same failure applied again is answered as accepted and does
        // not count another attempt; another error from the same token is
        // refused.
        let replay = updated(
            h.apply(Op::Fail {
                id,
                token: attempt,
                error: format!("boom {attempt}"),
                retryable: true,
                at_ms: at + 1,
            })
            .await,
        );
        assert_eq!(
            (replay.attempts, replay.updated_at_ms),
            (failed.attempts, failed.updated_at_ms)
        );
        assert!(matches!(
            h.apply(Op::Fail {
                id,
                token: attempt,
                error: "something else".into(),
                retryable: true,
                at_ms: at + 1,
            })
            .await,
            OpResult::Stale { .. }
        ));
        if attempt == 2 {
            assert_eq!(failed.state, JobState::Dead);
        } else {
            assert_eq!(failed.state, JobState::Scheduled);
        }
    }
    assert_eq!(h.job(&id).last_error.as_deref(), Some("boom 2"));
    assert!(matches!(
        h.apply(Op::Cancel { id, at_ms: at }).await,
        OpResult::AlreadyFinished(JobState::Dead)
    ));

    let replayed = updated(h.apply(Op::Retry { id, at_ms: 50_000 }).await);
    assert_eq!(
        (replayed.state, replayed.attempts, replayed.run_at_ms),
        (JobState::Ready, 2, 50_000)
    );
    let jobs = leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(1),
            at_ms: 50_000,
        })
        .await,
    );
    assert_eq!(
        jobs[0].lease.as_ref().map(|l| l.token),
        Some(3),
        "tokens keep growing"
    );
    // A non-retryable failure is dead at once, attempts left or not.
    let dead = updated(
        h.apply(Op::Fail {
            id,
            token: 3,
            error: "bad input".into(),
            retryable: false,
            at_ms: 50_001,
        })
        .await,
    );
    assert_eq!(dead.state, JobState::Dead);
    // Only dead jobs replay.
    let other = new_job(4, 0, 2);
    let other_id = other.id;
    h.apply(Op::Submit(Box::new(other))).await;
    assert_eq!(
        h.apply(Op::Retry {
            id: other_id,
            at_ms: 1
        })
        .await,
        OpResult::NotDead(JobState::Ready)
    );
}

#[tokio::test]
async fn cancelling_a_leased_job_ends_its_lease_and_keeps_who_held_it() {
    let mut h = Harness::new();
    let job = new_job(5, 0, 3);
    let id = job.id;
    h.apply(Op::Submit(Box::new(job))).await;
    leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(9),
            at_ms: 1,
        })
        .await,
    );
    let OpResult::Cancelled(cancelled) = h.apply(Op::Cancel { id, at_ms: 2 }).await else {
        panic!("cancel failed");
    };
    assert_eq!(cancelled.lease.as_ref().map(|l| l.session), Some(9));
    assert!(h.store.scan_leases(0).expect("leases").is_empty());
    assert!(matches!(
        h.apply(Op::Heartbeat {
            id,
            token: 1,
            at_ms: 3
        })
        .await,
        OpResult::Stale {
            state: JobState::Cancelled,
            ..
        }
    ));
}

#[tokio::test]
async fn the_listener_hears_each_changed_job_once_per_entry() {
    let mut h = Harness::new();
    let heard: Arc<Mutex<Vec<(JobId, JobState)>>> = Arc::default();
    let sink = heard.clone();
    h.store.set_listener(
        0,
        Some(Arc::new(move |event| {
            if let ShardEvent::Changed { jobs, .. } = event {
                sink.lock()
                    .expect("lock")
                    .extend(jobs.iter().map(|j| (j.id, j.state)));
            }
        })),
    );
    let job = new_job(6, 0, 3);
    let id = job.id;
    h.apply(Op::Submit(Box::new(job))).await;
    h.apply(Op::Lease {
        ids: vec![id],
        holder: holder(1),
        at_ms: 1,
    })
    .await;
    h.store.set_listener(0, None);
    h.apply(Op::Cancel { id, at_ms: 2 }).await;
    let heard = heard.lock().expect("lock").clone();
    assert_eq!(heard, vec![(id, JobState::Ready), (id, JobState::Leased)]);
}

#[tokio::test]
async fn an_idempotency_key_returns_the_first_job_while_retained() {
    let mut h = Harness::new();
    let keyed = |n: u64, created: i64| {
        let mut job = new_job(n, 0, 3);
        job.created_at_ms = created;
        job.idempotency_key = Some("order-42".into());
        job.idempotency_until_ms = created + 1_000;
        job
    };
    let first = keyed(10, 1_000);
    let first_id = first.id;
    assert_eq!(
        h.apply(Op::Submit(Box::new(first))).await,
        OpResult::Submitted {
            created: true,
            id: first_id
        }
    );
    let again = keyed(11, 1_500);
    assert_eq!(
        h.apply(Op::Submit(Box::new(again.clone()))).await,
        OpResult::Submitted {
            created: false,
            id: first_id
        }
    );
    assert!(
        h.store.get_job(&again.id).expect("read").is_none(),
        "nothing created"
    );
    // Another namespace has its own keys.
    let mut other_ns = keyed(12, 1_500);
    other_ns.namespace = "other".into();
    let other_id = other_ns.id;
    assert_eq!(
        h.apply(Op::Submit(Box::new(other_ns))).await,
        OpResult::Submitted {
            created: true,
            id: other_id
        }
    );
    // Past the retention window the key is free again.
    let later = keyed(13, 2_000);
    let later_id = later.id;
    assert_eq!(
        h.apply(Op::Submit(Box::new(later))).await,
        OpResult::Submitted {
            created: true,
            id: later_id
        }
    );
}

fn ticking(overlap: sundial_raft::schedule::Overlap) -> sundial_raft::schedule::Schedule {
    use sundial_raft::schedule::{CatchUp, JobTemplate, Rule, Schedule};
    Schedule {
        namespace: "default".into(),
        id: "tick".into(),
        rule: Rule::Every { interval_ms: 1_000 },
        template: JobTemplate {
            queue: "q".into(),
            payload: vec![],
            headers: Default::default(),
            priority: 0,
            retry: RetryPolicy::default(),
            timeout_ms: 500,
            http: None,
        },
        catch_up: CatchUp::One,
        overlap,
        jitter_ms: 0,
        paused: false,
        next_fire_ms: Some(1_000),
        last_fire_ms: None,
        last_job: None,
        buffered: None,
        fired: 0,
        skipped: 0,
        created_at_ms: 0,
        updated_at_ms: 0,
    }
}

fn fire(expected_ms: i64, job: Job) -> Op {
    Op::Fire {
        namespace: "default".into(),
        id: "tick".into(),
        expected_ms,
        jobs: vec![job],
        dropped: 0,
        next_ms: Some(expected_ms + 1_000),
        at_ms: expected_ms,
    }
}

fn scheduled_job(n: u64, at: i64) -> Job {
    let mut job = new_job(n, at, 3);
    job.schedule_id = Some("tick".into());
    job
}

#[tokio::test]
async fn a_firing_applies_once_and_a_buffered_firing_waits_for_the_previous_job() {
    use sundial_raft::schedule::Overlap;
    let mut h = Harness::new();
    h.apply(Op::PutSchedule {
        schedule: Box::new(ticking(Overlap::BufferOne)),
        create: true,
    })
    .await;
    assert_eq!(
        h.store.scan_fires(0).expect("fires"),
        vec![(1_000, "default".into(), "tick".into())]
    );

    let first = scheduled_job(20, 1_000);
    let first_id = first.id;
    assert_eq!(h.apply(fire(1_000, first)).await, OpResult::Fired { created: 1 });
    // The same firing proposed again (a retry, a new leader) creates nothing.
    assert_eq!(
        h.apply(fire(1_000, scheduled_job(21, 1_000))).await,
        OpResult::FireStale
    );
    assert!(h
        .store
        .get_job(&JobId::new(0, 1_000, 21))
        .expect("read")
        .is_none());

    // The next firing comes while the first job has not finished: buffered.
    let second = scheduled_job(22, 2_000);
    let second_id = second.id;
    assert_eq!(h.apply(fire(2_000, second)).await, OpResult::Fired { created: 0 });
    assert!(h.store.get_job(&second_id).expect("read").is_none());
    // A third one meanwhile is skipped: only one waits.
    assert_eq!(
        h.apply(fire(3_000, scheduled_job(23, 3_000))).await,
        OpResult::Fired { created: 0 }
    );

    leased(
        h.apply(Op::Lease {
            ids: vec![first_id],
            holder: holder(1),
            at_ms: 3_100,
        })
        .await,
    );
    updated(
        h.apply(Op::Complete {
            id: first_id,
            token: 1,
            result: vec![],
            at_ms: 3_200,
        })
        .await,
    );
    let released = h.job(&second_id);
    assert_eq!((released.state, released.run_at_ms), (JobState::Ready, 3_200));
    let schedule = h
        .store
        .get_schedule(0, "default", "tick")
        .expect("read")
        .expect("schedule");
    assert_eq!((schedule.fired, schedule.skipped), (2, 1));
    assert_eq!(schedule.last_job, Some(second_id));
    assert_eq!(schedule.next_fire_ms, Some(4_000));

    // Paused schedules leave the fire index; deleted ones are gone.
    h.apply(Op::PauseSchedule {
        namespace: "default".into(),
        id: "tick".into(),
        paused: true,
        at_ms: 3_300,
    })
    .await;
    assert!(h.store.scan_fires(0).expect("fires").is_empty());
    assert_eq!(
        h.apply(fire(4_000, scheduled_job(24, 4_000))).await,
        OpResult::FireStale
    );
    h.apply(Op::DeleteSchedule {
        namespace: "default".into(),
        id: "tick".into(),
    })
    .await;
    assert!(h
        .store
        .get_schedule(0, "default", "tick")
        .expect("read")
        .is_none());
}

#[tokio::test]
async fn the_time_index_pages_on_from_any_position_of_the_shard() {
    let mut h = Harness::new();
    for (n, at) in [(30u64, 100i64), (31, 200), (32, 200), (33, 300)] {
        h.apply(Op::Submit(Box::new(new_job(n, at, 3)))).await;
    }
    let all = h.store.scan_timers(0, None, i64::MAX, 10).expect("scan");
    assert_eq!(
        all.iter().map(|t| t.run_at_ms).collect::<Vec<_>>(),
        vec![100, 200, 200, 300]
    );
    // "After everything due at 100" is the largest id at 100: an id whose
    // own shard prefix is not this shard's.
    let after = h
        .store
        .scan_timers(0, Some((100, JobId([0xff; 16]))), i64::MAX, 10)
        .expect("scan");
    assert_eq!(
        after.iter().map(|t| t.run_at_ms).collect::<Vec<_>>(),
        vec![200, 200, 300]
    );
    let page = h
        .store
        .scan_timers(0, Some((200, all[1].id)), 250, 10)
        .expect("scan");
    assert_eq!(page.len(), 1, "after the first job at 200, up to 250");
    assert_eq!(page[0].id, all[2].id);
}

#[tokio::test]
async fn a_released_lease_waits_again_without_spending_the_retry_budget() {
    let mut h = Harness::new();
    let job = new_job(40, 0, 1);
    let id = job.id;
    h.apply(Op::Submit(Box::new(job))).await;
    leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(1),
            at_ms: 10,
        })
        .await,
    );
    assert!(matches!(
        h.apply(Op::Release {
            id,
            token: 2,
            at_ms: 11
        })
        .await,
        OpResult::Stale { .. }
    ));
    let released = updated(
        h.apply(Op::Release {
            id,
            token: 1,
            at_ms: 11,
        })
        .await,
    );
    assert_eq!((released.state, released.attempts), (JobState::Ready, 1));
    assert!(released.has_attempts_left(), "the unused attempt does not count");
    assert!(h.store.scan_leases(0).expect("leases").is_empty());
    let again = leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(2),
            at_ms: 12,
        })
        .await,
    );
    assert_eq!(
        again[0].lease.as_ref().map(|l| l.token),
        Some(2),
        "tokens keep growing"
    );
    // The old holder's completion is refused.
    assert!(matches!(
        h.apply(Op::Complete {
            id,
            token: 1,
            result: vec![],
            at_ms: 13
        })
        .await,
        OpResult::Stale { .. }
    ));
}

#[tokio::test]
async fn one_entry_with_the_same_key_twice_creates_one_job() {
    let mut h = Harness::new();
    let keyed = |n: u64| {
        let mut job = new_job(n, 0, 3);
        job.idempotency_key = Some("same".into());
        job.idempotency_until_ms = 10_000;
        job
    };
    h.index += 1;
    let entry = Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), h.index),
        payload: EntryPayload::Normal(Request {
            ops: vec![Op::Submit(Box::new(keyed(50))), Op::Submit(Box::new(keyed(51)))],
        }),
    };
    let results = h.sm.apply(vec![entry]).await.expect("apply").remove(0).results;
    let first = JobId::new(0, 1_000, 50);
    assert_eq!(
        results,
        vec![
            OpResult::Submitted {
                created: true,
                id: first
            },
            OpResult::Submitted {
                created: false,
                id: first
            }
        ]
    );
}

#[tokio::test]
async fn queue_settings_merge_and_the_home_shard_grants_within_the_limit() {
    use sundial_raft::quota::{QuotaAnswer, QuotaReport};
    use sundial_raft::types::QueuePatch;
    let mut h = Harness::new();
    let set = |paused: Option<bool>, concurrency: Option<u32>, at_ms: i64| Op::SetQueue {
        namespace: "default".into(),
        queue: "q".into(),
        patch: QueuePatch { paused, concurrency },
        at_ms,
    };
    let quota = |shard: u32, epoch: u64, keep: Option<u32>, want: u32| Op::Quota {
        namespace: "default".into(),
        queue: "q".into(),
        report: QuotaReport {
            shard,
            epoch,
            keep,
            want,
            used: 0,
        },
    };
    // No limit yet: the home shard says so.
    assert_eq!(
        h.apply(quota(1, 1, None, 5)).await,
        OpResult::Quota(QuotaAnswer::Unlimited)
    );
    h.apply(set(Some(true), None, 10)).await;
    let OpResult::Queue(config) = h.apply(set(None, Some(4), 20)).await else {
        panic!("queue settings expected");
    };
    assert!(config.paused, "setting a limit keeps the pause");
    assert_eq!(config.concurrency, Some(4));
    assert_eq!(
        h.apply(quota(1, 1, None, 3)).await,
        OpResult::Quota(QuotaAnswer::Granted { grant: 3, share: 3 })
    );
    assert_eq!(
        h.apply(quota(2, 1, None, 3)).await,
        OpResult::Quota(QuotaAnswer::Granted { grant: 1, share: 2 })
    );
    // A deposed leader of shard 1 changes nothing once a newer one reported.
    h.apply(quota(1, 2, Some(3), 3)).await;
    assert_eq!(
        h.apply(quota(1, 1, Some(0), 0)).await,
        OpResult::Quota(QuotaAnswer::Stale)
    );
    // The table survives in RocksDB: the next report sees shard 1's grant.
    assert_eq!(
        h.apply(quota(2, 1, Some(1), 3)).await,
        OpResult::Quota(QuotaAnswer::Granted { grant: 1, share: 2 })
    );
    let OpResult::Queue(config) = h.apply(set(None, Some(0), 30)).await else {
        panic!("queue settings expected");
    };
    assert_eq!(config.concurrency, None, "0 removes the limit");
    assert!(config.paused);
}

#[tokio::test]
async fn queue_counts_show_a_waiting_job_as_ready_once_it_is_due() {
    let mut h = Harness::new();
    let id = new_job(1, 5_000, 3).id;
    h.apply(Op::Submit(Box::new(new_job(1, 5_000, 3)))).await;
    let count = |h: &Harness, now: i64, state: JobState| {
        h.store.queue_counts(0, "default", "q", now).expect("counts")[state.code() as usize]
    };
    assert_eq!(count(&h, 4_999, JobState::Scheduled), 1);
    assert_eq!(count(&h, 5_000, JobState::Ready), 1);
    assert_eq!(count(&h, 5_000, JobState::Scheduled), 0);
    // A failed attempt waits for its retry: scheduled until the backoff ends.
    leased(
        h.apply(Op::Lease {
            ids: vec![id],
            holder: holder(1),
            at_ms: 6_000,
        })
        .await,
    );
    assert_eq!(count(&h, 6_000, JobState::Leased), 1);
    let job = updated(
        h.apply(Op::Fail {
            id,
            token: 1,
            error: "boom".into(),
            retryable: true,
            at_ms: 6_100,
        })
        .await,
    );
    assert!(job.run_at_ms > 6_100);
    assert_eq!(count(&h, 6_100, JobState::Scheduled), 1);
    assert_eq!(count(&h, job.run_at_ms, JobState::Ready), 1);
    // Listing by state agrees.
    let filter = |state, as_of_ms| sundial_raft::store::JobFilter {
        namespace: "default".into(),
        queue: Some("q".into()),
        state: Some(state),
        as_of_ms,
    };
    let page = h
        .store
        .list_jobs(0, &filter(JobState::Ready, 6_100), None, 10)
        .expect("list");
    assert!(page.jobs.is_empty());
    let page = h
        .store
        .list_jobs(0, &filter(JobState::Ready, job.run_at_ms), None, 10)
        .expect("list");
    assert_eq!(page.jobs.len(), 1);
}

#[tokio::test]
async fn expired_idempotency_keys_are_purged_and_live_ones_stay() {
    let mut h = Harness::new();
    for (n, key, until) in [(1, "old-a", 2_000), (2, "old-b", 3_000), (3, "live", 90_000)] {
        let mut job = new_job(n, 1_000, 1);
        job.idempotency_key = Some(key.into());
        job.idempotency_until_ms = until;
        h.apply(Op::Submit(Box::new(job))).await;
    }
    // Pages of two entries: the expired ones are found across pages.
    let (first, next) = h.store.scan_expired_keys(0, None, 5_000, 2).expect("scan");
    let next = next.expect("more to scan");
    let (second, end) = h.store.scan_expired_keys(0, Some(&next), 5_000, 2).expect("scan");
    assert_eq!(end, None, "the end of the index");
    let expired: Vec<Vec<u8>> = first.into_iter().chain(second).collect();
    assert_eq!(expired.len(), 2);
    // "old-a" is used again before the purge applies: it stays.
    let mut again = new_job(4, 1_000, 1);
    again.created_at_ms = 4_000;
    again.idempotency_key = Some("old-a".into());
    again.idempotency_until_ms = 50_000;
    h.apply(Op::Submit(Box::new(again))).await;
    let mut keys = expired.clone();
    keys.push(b"not a key of this shard".to_vec());
    assert_eq!(
        h.apply(Op::PurgeKeys { keys, at_ms: 5_000 }).await,
        OpResult::Purged { removed: 1 }
    );
    let (left, _) = h.store.scan_expired_keys(0, None, 100_000, 100).expect("scan");
    assert_eq!(left.len(), 2, "old-a (renewed) and live remain");
    // A submit with the purged key creates a new job.
    let mut fresh = new_job(5, 1_000, 1);
    fresh.created_at_ms = 6_000;
    fresh.idempotency_key = Some("old-b".into());
    fresh.idempotency_until_ms = 60_000;
    let fresh_id = fresh.id;
    assert_eq!(
        h.apply(Op::Submit(Box::new(fresh))).await,
        OpResult::Submitted {
            created: true,
            id: fresh_id
        }
    );
}
