//! Recurring schedules: a rule (cron with seconds and a time zone, or a fixed
//! interval) that creates one job per firing.
//!
//! A schedule lives on one shard (chosen from its namespace and id) together
//! with every job it creates, so a firing — creating the job and moving the
//! schedule to its next time — is one atomic state machine operation. The
//! shard leader computes firings; the state machine applies one only if the
//! schedule still expects exactly that firing, so a firing proposed twice
//! (a retry, a leader change) creates one job.
//!
//! Daylight saving time, for cron rules (as the `croner` crate evaluates them,
//! checked by the tests below): rules are wall-clock rules, and each matching
//! wall-clock time fires exactly once. A time that does not exist (the clock
//! jumps forward over it) fires right after the jump — merged with that
//! instant's own firing if it has one; a time that happens twice (the clock
//! goes back) fires once, the first time. So a daily 02:30 job runs every
//! day, once, and an hourly job runs 23 times on the short day and 24 times
//! on the long one.

use std::collections::BTreeMap;
use std::str::FromStr;

use chrono::{TimeZone, Utc};
use serde::{Deserialize, Serialize};

use crate::job::{HttpTarget, JobId, RetryPolicy};

/// Most late firings one catch-up creates (policy `All`).
pub const MAX_CATCH_UP: usize = 100;
/// A firing more than this late counts as missed (the cluster was down or
/// the shard had no leader), and the catch-up policy decides about it.
pub const LATE_AFTER_MS: i64 = 60_000;

/// When a schedule fires.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// A cron expression with seconds (6 fields, or 5 with seconds = 0) in
    /// an IANA time zone.
    Cron { expr: String, zone: String },
    /// Every `interval_ms`, counted from the schedule's first firing.
    Every { interval_ms: u64 },
}

/// What to do about firings missed while the cluster could not fire them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CatchUp {
    /// Fire none of them.
    Skip,
    /// Fire once for all of them (the latest).
    One,
    /// Fire each of them, at most [`MAX_CATCH_UP`].
    All,
}

/// What to do when a firing comes while the previous job has not finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overlap {
    /// Create the job anyway.
    Allow,
    /// Skip this firing.
    Skip,
    /// Keep one firing waiting; its job is created when the previous one
    /// finishes. Further firings meanwhile are skipped.
    BufferOne,
}

/// What a job is made of, as a client or a schedule gives it; see
/// [`crate::job::Job::new`]. A schedule keeps one to make each firing's job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobTemplate {
    pub queue: String,
    pub payload: Vec<u8>,
    pub headers: BTreeMap<String, String>,
    pub priority: i32,
    pub retry: RetryPolicy,
    pub timeout_ms: u64,
    /// The HTTP target each job calls, if the jobs are not for workers.
    pub http: Option<HttpTarget>,
}

/// A stored schedule.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schedule {
    pub namespace: String,
    /// Chosen by the user; unique in the namespace.
    pub id: String,
    pub rule: Rule,
    pub template: JobTemplate,
    pub catch_up: CatchUp,
    pub overlap: Overlap,
    /// Each job's due time is its firing time plus up to this much, spread
    /// deterministically per firing.
    pub jitter_ms: u64,
    pub paused: bool,
    /// The nominal time of the next firing, ms since the epoch; `None` when
    /// the rule never fires again.
    pub next_fire_ms: Option<i64>,
    pub last_fire_ms: Option<i64>,
    /// The job of the latest firing.
    pub last_job: Option<JobId>,
    /// A firing's job waiting for the previous job to finish (overlap
    /// `BufferOne`).
    pub buffered: Option<Box<crate::job::Job>>,
    /// Jobs created, and firings skipped (overlap or catch-up).
    pub fired: u64,
    pub skipped: u64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A rule that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("cron expression {expr:?}: {reason}")]
    Cron { expr: String, reason: String },
    #[error("time zone {0:?} is not an IANA zone name (like Europe/Berlin)")]
    Zone(String),
    #[error("interval must be at least 1 ms")]
    Interval,
}

impl Rule {
    /// Checks the rule; the error names what is wrong.
    pub fn validate(&self) -> Result<(), RuleError> {
        match self {
            Rule::Cron { expr, zone } => {
                parse_zone(zone)?;
                parse_cron(expr)?;
                Ok(())
            }
            Rule::Every { interval_ms } => {
                if *interval_ms == 0 {
                    return Err(RuleError::Interval);
                }
                Ok(())
            }
        }
    }

    /// The first firing strictly after `after_ms`. For `Every`, firings are
    /// `anchor_ms + k * interval`.
    pub fn next_after(&self, after_ms: i64, anchor_ms: i64) -> Result<Option<i64>, RuleError> {
        match self {
            Rule::Every { interval_ms } => {
                let interval = i64::try_from(*interval_ms).map_err(|_| RuleError::Interval)?;
                if interval <= 0 {
                    return Err(RuleError::Interval);
                }
                if after_ms < anchor_ms {
                    return Ok(Some(anchor_ms));
                }
                let steps = (after_ms - anchor_ms) / interval + 1;
                Ok(steps.checked_mul(interval).and_then(|d| anchor_ms.checked_add(d)))
            }
            Rule::Cron { expr, zone } => {
                let tz = parse_zone(zone)?;
                let cron = parse_cron(expr)?;
                let Some(after) = Utc.timestamp_millis_opt(after_ms).single() else {
                    return Ok(None);
                };
                let local = after.with_timezone(&tz);
                match cron.find_next_occurrence(&local, false) {
                    Ok(next) => Ok(Some(next.timestamp_millis())),
                    Err(_) => Ok(None),
                }
            }
        }
    }
}

fn parse_zone(zone: &str) -> Result<chrono_tz::Tz, RuleError> {
    chrono_tz::Tz::from_str(zone).map_err(|_| RuleError::Zone(zone.to_string()))
}

fn parse_cron(expr: &str) -> Result<croner::Cron, RuleError> {
    croner::Cron::new(expr)
        .with_seconds_optional()
        .parse()
        .map_err(|e| RuleError::Cron {
            expr: expr.to_string(),
            reason: e.to_string(),
        })
}

/// What the leader does about a schedule whose next firing is due at `now_ms`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Firing {
    /// The nominal firing the schedule expects (the apply checks it).
    pub expected_ms: i64,
    /// Nominal times that get a job, in order.
    pub fire: Vec<i64>,
    /// Late firings dropped by the catch-up policy.
    pub dropped: u64,
    /// The schedule's next nominal firing after these.
    pub next_ms: Option<i64>,
}

impl Schedule {
    /// The firings due at `now_ms` under the catch-up policy, or `None` if
    /// nothing is due (paused, finished, or not yet time).
    pub fn due(&self, now_ms: i64) -> Result<Option<Firing>, RuleError> {
        let Some(first) = self.next_fire_ms else {
            return Ok(None);
        };
        if self.paused || first > now_ms {
            return Ok(None);
        }
        let anchor = self.anchor_ms();
        let mut due = vec![first];
        let mut next = self.rule.next_after(first, anchor)?;
        let mut more = 0u64;
        while let Some(n) = next {
            if n > now_ms {
                break;
            }
            if due.len() <= MAX_CATCH_UP {
                due.push(n);
            } else {
                more += 1;
                if more > 1_000_000 {
                    // A tiny interval after a long outage: jump to now.
                    next = self.rule.next_after(now_ms, anchor)?;
                    break;
                }
            }
            next = self.rule.next_after(n, anchor)?;
        }
        let (late, on_time): (Vec<i64>, Vec<i64>) = due.into_iter().partition(|t| now_ms - t > LATE_AFTER_MS);
        let late_count = late.len() as u64 + more;
        let mut fire = match self.catch_up {
            CatchUp::Skip => Vec::new(),
            CatchUp::One => late.last().copied().into_iter().collect(),
            CatchUp::All => late.into_iter().take(MAX_CATCH_UP).collect(),
        };
        let kept_late = fire.len() as u64;
        fire.extend(on_time);
        Ok(Some(Firing {
            expected_ms: first,
            fire,
            dropped: late_count - kept_late,
            next_ms: next,
        }))
    }

    /// When it fires next, if it does (not paused): its place in the fire
    /// index, and the timer the dispatcher holds for it.
    pub fn fire_slot(&self) -> Option<i64> {
        self.next_fire_ms.filter(|_| !self.paused)
    }

    /// The shard a schedule lives on (with all its jobs).
    pub fn shard_of(namespace: &str, id: &str, shard_count: u32) -> crate::job::ShardId {
        let mut key = b"schedule\0".to_vec();
        key.extend_from_slice(namespace.as_bytes());
        key.push(0);
        key.extend_from_slice(id.as_bytes());
        crate::job::shard_for_key(&key, shard_count)
    }

    /// Where `Every` firings are counted from: the first firing ever.
    pub fn anchor_ms(&self) -> i64 {
        self.last_fire_ms
            .or(self.next_fire_ms)
            .map(|t| match &self.rule {
                Rule::Every { interval_ms } => {
                    let i = i64::try_from(*interval_ms).unwrap_or(i64::MAX).max(1);
                    t.rem_euclid(i)
                }
                Rule::Cron { .. } => t,
            })
            .unwrap_or(0)
    }

    /// The due time of the job for nominal firing `nominal_ms`, jitter added.
    pub fn job_run_at(&self, nominal_ms: i64) -> i64 {
        if self.jitter_ms == 0 {
            return nominal_ms;
        }
        let mut seed = self.namespace.as_bytes().to_vec();
        seed.push(0);
        seed.extend_from_slice(self.id.as_bytes());
        seed.extend_from_slice(&nominal_ms.to_be_bytes());
        let spread = crate::job::shard_for_key(&seed, u32::MAX) as u64 % (self.jitter_ms + 1);
        nominal_ms.saturating_add(spread as i64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::NaiveDate;

    fn at(zone: &str, y: i32, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> i64 {
        let tz = parse_zone(zone).expect("zone");
        let naive = NaiveDate::from_ymd_opt(y, m, d)
            .and_then(|date| date.and_hms_opt(hh, mm, ss))
            .expect("date");
        tz.from_local_datetime(&naive)
            .earliest()
            .expect("local time exists")
            .timestamp_millis()
    }

    fn utc(y: i32, m: u32, d: u32, hh: u32, mm: u32, ss: u32) -> i64 {
        at("UTC", y, m, d, hh, mm, ss)
    }

    fn cron(expr: &str, zone: &str) -> Rule {
        Rule::Cron {
            expr: expr.into(),
            zone: zone.into(),
        }
    }

    /// The next `n` firings after `from`.
    fn firings(rule: &Rule, from: i64, n: usize) -> Vec<i64> {
        let mut out = Vec::new();
        let mut t = from;
        for _ in 0..n {
            match rule.next_after(t, from).expect("rule") {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    #[test]
    fn bad_rules_are_refused_with_a_reason() {
        assert!(matches!(
            cron("0 0 * * *", "Mars/Olympus").validate(),
            Err(RuleError::Zone(_))
        ));
        assert!(matches!(
            cron("61 * * * *", "UTC").validate(),
            Err(RuleError::Cron { .. })
        ));
        assert!(matches!(
            cron("not cron", "UTC").validate(),
            Err(RuleError::Cron { .. })
        ));
        assert_eq!(
            Rule::Every { interval_ms: 0 }.validate(),
            Err(RuleError::Interval)
        );
        assert!(cron("*/5 * * * * *", "Europe/Berlin").validate().is_ok());
    }

    #[test]
    fn cron_with_seconds_in_utc() {
        let rule = cron("*/15 * * * * *", "UTC");
        let from = utc(2026, 1, 1, 0, 0, 1);
        assert_eq!(
            firings(&rule, from, 3),
            vec![
                utc(2026, 1, 1, 0, 0, 15),
                utc(2026, 1, 1, 0, 0, 30),
                utc(2026, 1, 1, 0, 0, 45)
            ]
        );
    }

    /// New York springs forward on 2026-03-08 at 02:00 (to 03:00) and falls
    /// back on 2026-11-01 at 02:00 (to 01:00).
    #[test]
    fn a_daily_job_in_new_york_fires_once_a_day_across_both_transitions() {
        let zone = "America/New_York";
        let rule = cron("0 30 2 * * *", zone);
        let got = firings(&rule, at(zone, 2026, 3, 7, 12, 0, 0), 3);
        // 02:30 does not exist on 8 March: it fires right after the jump, at 03:00.
        assert_eq!(
            got,
            vec![
                utc(2026, 3, 8, 7, 0, 0),
                utc(2026, 3, 9, 6, 30, 0),
                utc(2026, 3, 10, 6, 30, 0)
            ],
            "spring forward"
        );
        let rule = cron("0 30 1 * * *", zone);
        let got = firings(&rule, at(zone, 2026, 10, 31, 12, 0, 0), 3);
        // 01:30 happens twice on 1 November: it fires once, the first time (EDT).
        assert_eq!(
            got,
            vec![
                utc(2026, 11, 1, 5, 30, 0),
                at(zone, 2026, 11, 2, 1, 30, 0),
                at(zone, 2026, 11, 3, 1, 30, 0)
            ],
            "fall back"
        );
    }

    /// Berlin springs forward on 2026-03-29 at 02:00 and falls back on
    /// 2026-10-25 at 03:00.
    #[test]
    fn berlin_transitions_neither_double_nor_miss_a_daily_firing() {
        let zone = "Europe/Berlin";
        let daily = cron("0 15 2 * * *", zone);
        let spring = firings(&daily, at(zone, 2026, 3, 28, 12, 0, 0), 2);
        assert_eq!(
            spring,
            vec![utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 15, 0)]
        );
        let autumn = firings(&daily, at(zone, 2026, 10, 24, 12, 0, 0), 2);
        assert_eq!(
            autumn,
            vec![utc(2026, 10, 25, 0, 15, 0), utc(2026, 10, 26, 1, 15, 0)]
        );
        // An hourly rule fires once per wall-clock hour: 24 times on the
        // 25-hour day (02:00 happens twice, fires once) ...
        let hourly = cron("0 0 * * * *", zone);
        let day = firings(&hourly, at(zone, 2026, 10, 24, 23, 59, 59), 26);
        let on_the_25th = day
            .iter()
            .filter(|t| **t < at(zone, 2026, 10, 26, 0, 0, 0))
            .count();
        assert_eq!(on_the_25th, 24);
        // ... and 23 times on the 23-hour day, the 02:00 slot firing at
        // 03:00 together with 03:00's own firing merged into one.
        let day = firings(&hourly, at(zone, 2026, 3, 28, 23, 59, 59), 25);
        let spring: Vec<i64> = day
            .into_iter()
            .filter(|t| *t < at(zone, 2026, 3, 30, 0, 0, 0))
            .collect();
        assert_eq!(spring.len(), 23);
        assert_eq!(
            spring[2],
            utc(2026, 3, 29, 1, 0, 0),
            "03:00 CEST, right after the jump"
        );
        assert!(
            spring.windows(2).all(|w| w[0] < w[1]),
            "never twice at one instant"
        );
    }

    #[test]
    fn intervals_count_from_their_anchor() {
        let rule = Rule::Every { interval_ms: 10_000 };
        assert_eq!(rule.next_after(5_000, 20_000).expect("rule"), Some(20_000));
        assert_eq!(rule.next_after(20_000, 20_000).expect("rule"), Some(30_000));
        assert_eq!(rule.next_after(29_999, 20_000).expect("rule"), Some(30_000));
    }

    fn every_second(catch_up: CatchUp, next: i64) -> Schedule {
        Schedule {
            namespace: "ns".into(),
            id: "tick".into(),
            rule: Rule::Every { interval_ms: 1_000 },
            template: JobTemplate {
                queue: "q".into(),
                payload: vec![],
                headers: BTreeMap::new(),
                priority: 0,
                retry: RetryPolicy::default(),
                timeout_ms: 1_000,
                http: None,
            },
            catch_up,
            overlap: Overlap::Allow,
            jitter_ms: 0,
            paused: false,
            next_fire_ms: Some(next),
            last_fire_ms: None,
            last_job: None,
            buffered: None,
            fired: 0,
            skipped: 0,
            created_at_ms: 0,
            updated_at_ms: 0,
        }
    }

    #[test]
    fn on_time_firings_fire_and_late_ones_follow_the_catch_up_policy() {
        let s = every_second(CatchUp::Skip, 100_000);
        assert_eq!(s.due(99_999).expect("due"), None);
        let f = s.due(100_005).expect("due").expect("firing");
        assert_eq!((f.fire.clone(), f.next_ms), (vec![100_000], Some(101_000)));

        // Down for 3 minutes: 180 firings missed, 60 of them "late".
        let now = 100_000 + 180_000;
        let skip = every_second(CatchUp::Skip, 100_000)
            .due(now)
            .expect("due")
            .expect("firing");
        assert_eq!(skip.next_ms, Some(now + 1_000));
        assert!(
            skip.fire.iter().all(|t| now - t <= LATE_AFTER_MS),
            "late ones skipped"
        );
        let one = every_second(CatchUp::One, 100_000)
            .due(now)
            .expect("due")
            .expect("firing");
        assert_eq!(one.fire.iter().filter(|t| now - **t > LATE_AFTER_MS).count(), 1);
        let all = every_second(CatchUp::All, 100_000)
            .due(now)
            .expect("due")
            .expect("firing");
        assert!(all.fire.len() <= MAX_CATCH_UP + 61);
        assert!(all.fire.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(all.next_ms, Some(now + 1_000));
    }

    #[test]
    fn jitter_is_bounded_and_deterministic() {
        let mut s = every_second(CatchUp::Skip, 0);
        s.jitter_ms = 500;
        for t in [0i64, 1_000, 2_000] {
            let run = s.job_run_at(t);
            assert!((t..=t + 500).contains(&run));
            assert_eq!(run, s.job_run_at(t));
        }
    }
}
