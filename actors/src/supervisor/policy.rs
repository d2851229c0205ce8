//! Restart policy: exponential backoff and an intensity limit, as plain logic.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ractor::{ActorId, SupervisionEvent};

/// How a supervisor restarts a failed child.
#[derive(Clone, Copy, Debug)]
pub struct RestartPolicy {
    /// Delay before the first restart in a burst.
    pub base_backoff: Duration,
    /// Longest delay between restarts.
    pub max_backoff: Duration,
    /// More than this many failures inside `window` escalates.
    pub max_restarts: usize,
    pub window: Duration,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_secs(2),
            max_restarts: 10,
            window: Duration::from_secs(30),
        }
    }
}

/// The child a supervision event reports as gone, and why: a failure (panic or
/// error) or a stop the supervisor did not ask for. Other events are `None`.
pub fn stopped_child(event: &SupervisionEvent) -> Option<(ActorId, String)> {
    match event {
        SupervisionEvent::ActorFailed(cell, err) => Some((cell.get_id(), err.to_string())),
        SupervisionEvent::ActorTerminated(cell, _, reason) => {
            Some((cell.get_id(), reason.clone().unwrap_or_else(|| "stopped".into())))
        }
        _ => None,
    }
}

/// What to do about a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Restart the child after this delay.
    RestartAfter(Duration),
    /// Too many failures: give up and fail the supervisor.
    Escalate,
}

/// The failure history of one child.
#[derive(Debug, Default)]
pub struct RestartTracker {
    failures: VecDeque<Instant>,
}

impl RestartTracker {
    /// Records a failure at `now` and decides.
    pub fn on_failure(&mut self, policy: &RestartPolicy, now: Instant) -> Decision {
        while let Some(first) = self.failures.front() {
            if now.duration_since(*first) > policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        self.failures.push_back(now);
        let recent = self.failures.len();
        if recent > policy.max_restarts {
            return Decision::Escalate;
        }
        let factor = 1u32 << (recent.saturating_sub(1)).min(16);
        let delay = policy.base_backoff.saturating_mul(factor).min(policy.max_backoff);
        Decision::RestartAfter(delay)
    }

    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_caps() {
        let policy = RestartPolicy {
            base_backoff: Duration::from_millis(10),
            max_backoff: Duration::from_millis(50),
            max_restarts: 100,
            window: Duration::from_secs(60),
        };
        let mut t = RestartTracker::default();
        let now = Instant::now();
        let delays: Vec<_> = (0..5).map(|_| t.on_failure(&policy, now)).collect();
        assert_eq!(
            delays,
            vec![
                Decision::RestartAfter(Duration::from_millis(10)),
                Decision::RestartAfter(Duration::from_millis(20)),
                Decision::RestartAfter(Duration::from_millis(40)),
                Decision::RestartAfter(Duration::from_millis(50)),
                Decision::RestartAfter(Duration::from_millis(50)),
            ]
        );
    }

    #[test]
    fn too_many_failures_in_the_window_escalate_and_old_ones_expire() {
        let policy = RestartPolicy {
            max_restarts: 2,
            window: Duration::from_secs(10),
            ..RestartPolicy::default()
        };
        let mut t = RestartTracker::default();
        let start = Instant::now();
        assert!(matches!(t.on_failure(&policy, start), Decision::RestartAfter(_)));
        assert!(matches!(t.on_failure(&policy, start), Decision::RestartAfter(_)));
        assert_eq!(t.on_failure(&policy, start), Decision::Escalate);
        // Eleven seconds later the burst has aged out.
        let later = start + Duration::from_secs(11);
        assert!(matches!(t.on_failure(&policy, later), Decision::RestartAfter(_)));
        assert_eq!(t.recent_failures(), 1);
    }
}
