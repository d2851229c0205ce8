//! Each invariant on a small clean history, then with one rule broken.

use super::*;
use crate::history::{AttemptOp, Event, Outcome};

fn submit(key: &str, id: &str, outcome: Outcome) -> Event {
    Event::Submit {
        key: key.into(),
        t0: 0,
        t1: 1,
        id: outcome.is_ok().then(|| id.to_string()),
        shard: Some(0),
        outcome,
        max_attempts: 3,
    }
}

fn lease(worker: &str, id: &str, token: u32, leased_at: i64, deadline: i64) -> Event {
    Event::Lease {
        worker: worker.into(),
        id: id.into(),
        token,
        t: leased_at + 1,
        leased_at_ms: leased_at,
        deadline_ms: deadline,
    }
}

fn attempt(worker: &str, op: AttemptOp, id: &str, token: u32, t0: i64, outcome: Outcome) -> Event {
    Event::Attempt {
        worker: worker.into(),
        op,
        id: id.into(),
        token,
        t0,
        t1: t0 + 2,
        outcome,
        deadline_ms: None,
    }
}

fn job(id: &str, key: &str, state: Option<State>, attempts: u32, result: &str) -> FinalJob {
    FinalJob {
        id: id.into(),
        key: key.into(),
        state,
        attempts,
        max_attempts: 3,
        result: result.into(),
        ..Default::default()
    }
}

/// Two jobs: j1 leased by w1, which was paused past its lease; j1 re-leased
/// to w2, which completed it; w1's late completion refused. j2 failed once
/// and then completed.
fn clean() -> (Vec<Event>, World) {
    let events = vec![
        submit("k1", "j1", Outcome::Unknown("timeout".into())),
        submit("k1", "j1", Outcome::Ok),
        submit("k2", "j2", Outcome::Ok),
        submit("k3", "", Outcome::Refused("invalid argument".into())),
        lease("w1", "j1", 1, 100, 2100),
        lease("w2", "j1", 2, 2200, 4200),
        attempt("w2", AttemptOp::Complete, "j1", 2, 2300, Outcome::Ok),
        attempt(
            "w1",
            AttemptOp::Complete,
            "j1",
            1,
            5000,
            Outcome::Refused("failed precondition".into()),
        ),
        lease("w1", "j2", 1, 100, 2100),
        attempt("w1", AttemptOp::Fail, "j2", 1, 150, Outcome::Ok),
        lease("w2", "j2", 2, 300, 2300),
        attempt(
            "w2",
            AttemptOp::Complete,
            "j2",
            2,
            400,
            Outcome::Unknown("stream broke".into()),
        ),
        Event::Observe {
            id: "j2".into(),
            t0: 50,
            t1: 60,
            state: "leased".into(),
            attempts: 1,
        },
        Event::Observe {
            id: "j2".into(),
            t0: 900,
            t1: 910,
            state: "succeeded".into(),
            attempts: 2,
        },
        Event::Schedule {
            id: "s".into(),
            every_ms: 1000,
            t: 0,
        },
    ];
    let mut world = World {
        jobs: vec![
            job("j1", "k1", Some(State::Succeeded), 2, "w2#2"),
            job("j2", "k2", Some(State::Succeeded), 2, "w2#2"),
        ],
        schedules: vec![FinalSchedule {
            id: "s".into(),
            every_ms: 1000,
            fired: 3,
        }],
        replicas: vec![
            Replica {
                shard: 0,
                node: 1,
                applied_index: 10,
                digest: 7,
            },
            Replica {
                shard: 0,
                node: 2,
                applied_index: 10,
                digest: 7,
            },
        ],
        unsettled_shards: vec![],
    };
    for (n, at) in [1000, 2000, 3000].into_iter().enumerate() {
        world.jobs.push(FinalJob {
            id: format!("f{n}"),
            schedule_id: "s".into(),
            fire_ms: at,
            state: Some(State::Succeeded),
            attempts: 1,
            max_attempts: 3,
            ..Default::default()
        });
    }
    (events, world)
}

#[test]
fn a_clean_history_passes() {
    let (events, world) = clean();
    let report = check(&events, &world);
    for (name, found) in report.all() {
        assert_eq!(found.count, 0, "{name}: {:?}", found.details);
    }
    assert_eq!(report.acked, 2);
    assert!(report.passed());
}

#[test]
fn a_lost_job_is_found() {
    let (events, mut world) = clean();
    world.jobs.retain(|j| j.id != "j2");
    assert_eq!(no_acknowledged_submit_lost(&events, &world).count, 1);
    assert!(!check(&events, &world).passed());
}

#[test]
fn phantom_and_duplicate_jobs_are_found() {
    let (events, mut world) = clean();
    world
        .jobs
        .push(job("j9", "never-sent", Some(State::Ready), 0, ""));
    assert_eq!(no_phantom_jobs(&events, &world).count, 1);
    let (events, mut world) = clean();
    world.jobs.push(job("j1b", "k1", Some(State::Ready), 0, ""));
    assert_eq!(no_phantom_jobs(&events, &world).count, 1, "two jobs for key k1");
    let (mut events, world) = clean();
    events.push(submit("k2", "j2-other", Outcome::Ok));
    assert_eq!(
        no_phantom_jobs(&events, &world).count,
        1,
        "key answered with two ids"
    );
}

#[test]
fn a_second_accepted_completion_is_found() {
    let (mut events, world) = clean();
    // w1's late completion accepted as well.
    events.push(attempt("w1", AttemptOp::Complete, "j1", 1, 5000, Outcome::Ok));
    assert!(one_accepted_completion(&events, &world).count >= 1);
}

#[test]
fn a_completion_nobody_sent_or_one_not_kept_is_found() {
    let (events, mut world) = clean();
    world.jobs[1].result = "w9#7".into();
    assert_eq!(one_accepted_completion(&events, &world).count, 1);
    let (events, mut world) = clean();
    world.jobs[0].state = Some(State::Ready);
    assert!(one_accepted_completion(&events, &world).count >= 1);
}

#[test]
fn overlapping_leases_and_stale_tokens_are_found() {
    // j1 re-leased before w1's lease ran out.
    let (mut events, world) = clean();
    for e in &mut events {
        if let Event::Lease {
            id,
            token: 2,
            leased_at_ms,
            ..
        } = e
        {
            if id == "j1" {
                *leased_at_ms = 2000;
            }
        }
    }
    assert_eq!(leases_fenced(&events).count, 1);
    let _ = world;
    // A heartbeat that extended the lease makes an earlier re-lease wrong too.
    let (mut events, _) = clean();
    events.push(Event::Attempt {
        worker: "w1".into(),
        op: AttemptOp::Heartbeat,
        id: "j1".into(),
        token: 1,
        t0: 1000,
        t1: 1001,
        outcome: Outcome::Ok,
        deadline_ms: Some(3000),
    });
    assert_eq!(leases_fenced(&events).count, 1);
    // ...unless w1's session had ended.
    events.push(Event::SessionEnd {
        worker: "w1".into(),
        t: 1500,
    });
    assert_eq!(leases_fenced(&events).count, 0);
    // A stale token accepted after the new lease.
    let (mut events, _) = clean();
    events.push(attempt("w1", AttemptOp::Heartbeat, "j1", 1, 4000, Outcome::Ok));
    assert_eq!(leases_fenced(&events).count, 1);
    // Tokens going backwards.
    let (mut events, _) = clean();
    events.push(lease("w3", "j1", 2, 6000, 8000));
    assert_eq!(leases_fenced(&events).count, 1);
}

#[test]
fn a_state_moving_backwards_is_found() {
    let (mut events, world) = clean();
    events.push(Event::Observe {
        id: "j2".into(),
        t0: 1000,
        t1: 1010,
        state: "ready".into(),
        attempts: 2,
    });
    assert!(states_only_move_forward(&events, &world).count >= 1);
    let (mut events, world) = clean();
    events.push(Event::Observe {
        id: "j2".into(),
        t0: 1000,
        t1: 1010,
        state: "leased".into(),
        attempts: 1,
    });
    assert!(states_only_move_forward(&events, &world).count >= 1);
    // Overlapping reads are not ordered: no finding.
    let (mut events, world) = clean();
    events.push(Event::Observe {
        id: "j2".into(),
        t0: 55,
        t1: 2000,
        state: "ready".into(),
        attempts: 1,
    });
    assert_eq!(states_only_move_forward(&events, &world).count, 0);
}

#[test]
fn too_many_attempts_are_found() {
    let (events, mut world) = clean();
    world.jobs[0].attempts = 4;
    assert_eq!(attempts_within_limit(&events, &world).count, 1);
    let (mut events, world) = clean();
    events.push(lease("w1", "j2", 4, 9000, 9100));
    assert_eq!(attempts_within_limit(&events, &world).count, 1);
}

#[test]
fn doubled_and_missing_firings_are_found() {
    let (events, mut world) = clean();
    world.jobs.push(FinalJob {
        id: "f-dup".into(),
        schedule_id: "s".into(),
        fire_ms: 2000,
        ..Default::default()
    });
    world.schedules[0].fired = 4;
    assert_eq!(firings_exactly_once(&events, &world).count, 1);
    let (events, mut world) = clean();
    world.jobs.retain(|j| j.id != "f1");
    world.schedules[0].fired = 2;
    assert_eq!(firings_exactly_once(&events, &world).count, 1);
    let (events, mut world) = clean();
    world.schedules.clear();
    assert_eq!(firings_exactly_once(&events, &world).count, 1);
}

#[test]
fn diverged_replicas_are_found() {
    let (_, mut world) = clean();
    world.replicas[1].digest = 8;
    assert_eq!(replicas_identical(&world).count, 1);
    let (_, mut world) = clean();
    world.replicas[1].applied_index = 11;
    world.replicas[1].digest = 8;
    assert_eq!(
        replicas_identical(&world).count,
        0,
        "different indexes are not compared"
    );
    world.unsettled_shards.push(0);
    assert_eq!(replicas_identical(&world).count, 1);
}
