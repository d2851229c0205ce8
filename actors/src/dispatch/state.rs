//! The dispatcher's bookkeeping, free of any runtime so it is unit-tested
//! directly: which waiting jobs are in memory, which are due, which leases
//! run out when, and which lease requests are parked.
//!
//! Memory stays bounded: only the waiting jobs up to the *horizon* (a key of
//! the time index) are held, at most `cap` of them; the rest stay in RocksDB
//! and are loaded as the horizon moves on. Leases are all held (one small
//! entry per leased job).

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};

use sundial_raft::quota::QuotaAnswer;
use sundial_raft::store::events::{JobSummary, ScheduleSummary, TimerInfo};
use sundial_raft::store::{LeaseEntry, TimerEntry};
use sundial_raft::{JobId, JobState};

/// A key of the time index.
pub type TimeKey = (i64, JobId);

/// The largest job id, for horizons that cover a whole millisecond.
pub const MAX_ID: JobId = JobId([0xff; 16]);

/// Ready jobs of one queue, best first: higher priority, then earlier due
/// time, then older id.
type ReadySet = BTreeSet<(Reverse<i32>, i64, JobId)>;

/// Which ready jobs a lease request takes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Want {
    /// Jobs for workers, from these queues of one namespace.
    Queues { namespace: String, queues: Vec<String> },
    /// Jobs with an HTTP target, from every queue of every namespace (the
    /// node's executors ask for these).
    Http,
}

/// A ready set's key: (namespace, queue, jobs with an HTTP target).
type ReadyKey = (String, String, bool);

/// (namespace, queue).
pub type QueueKey = (String, String);

/// Least time between two reports of a queue asking for more.
const QUOTA_RETRY_MS: i64 = 100;
/// Longest time between two reports of a queue this shard uses or wants.
const QUOTA_KEEPALIVE_MS: i64 = 1_000;

/// This shard's part of a queue's cluster-wide concurrency limit (see
/// `sundial_raft::quota`): at most `cap` of the queue's jobs leased at once.
#[derive(Debug, Clone, Default)]
struct Quota {
    limit: u32,
    /// Never above what the home shard has recorded for this shard.
    cap: u32,
    /// This shard's fair share, as last answered.
    share: u32,
    /// A report is being written.
    reporting: bool,
    /// The home shard answered in this term (the first report keeps the
    /// grant as it is, since the new leader does not know it).
    known: bool,
    last_report_ms: i64,
}

/// A report to write to a queue's home shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRequest {
    pub queue: QueueKey,
    pub keep: Option<u32>,
    pub want: u32,
    pub used: u32,
}

/// A lease request waiting for jobs.
#[derive(Debug)]
pub struct Parked<R> {
    pub want: Want,
    pub max: u32,
    /// When to answer it with nothing, ms.
    pub until_ms: i64,
    pub reply: R,
}

pub struct DispatchState<R> {
    cap: usize,
    /// Every waiting job with a key at or before this is in memory.
    horizon: Option<TimeKey>,
    /// Not yet due, by due time.
    timers: BTreeMap<TimeKey, TimerInfo>,
    /// Due, by (namespace, queue, http).
    ready: HashMap<ReadyKey, ReadySet>,
    /// The keys of the non-empty ready sets of HTTP-target jobs.
    http_ready: BTreeSet<(String, String)>,
    /// Where each in-memory waiting job is: its key and queue.
    waiting: HashMap<JobId, (TimeKey, TimerInfo, bool)>,
    /// Picked for a lease whose write is under way.
    inflight: HashMap<JobId, (TimeKey, TimerInfo)>,
    /// Leases by deadline, and each leased job's (token, deadline).
    leases: BTreeSet<(i64, JobId)>,
    lease_of: HashMap<JobId, (u32, i64, QueueKey)>,
    /// Leased and in-flight jobs per queue.
    usage: HashMap<QueueKey, u32>,
    /// Queues with a concurrency limit: this shard's part of it.
    quotas: HashMap<QueueKey, Quota>,
    /// Leases whose expiry is being written.
    expiring: HashSet<JobId>,
    parked: VecDeque<Parked<R>>,
    /// Active schedules by next firing, and each one's next firing.
    schedules: BTreeSet<(i64, String, String)>,
    schedule_at: HashMap<(String, String), i64>,
    /// Schedules whose firing is being written.
    firing: HashSet<(String, String)>,
    /// While a page of the time index is being read: the latest change of
    /// every job that changed past the horizon (or was seen here before),
    /// replayed once the page is in. Without it, a job applied while the
    /// read ran, behind the read's position but past the old horizon, would
    /// be in neither.
    during_load: Option<HashMap<JobId, JobSummary>>,
    /// Paused queues: (namespace, queue). Their jobs are not leased.
    paused: HashSet<(String, String)>,
}

impl<R> DispatchState<R> {
    pub fn new(cap: usize) -> DispatchState<R> {
        DispatchState {
            cap: cap.max(1),
            horizon: None,
            timers: BTreeMap::new(),
            ready: HashMap::new(),
            http_ready: BTreeSet::new(),
            waiting: HashMap::new(),
            inflight: HashMap::new(),
            leases: BTreeSet::new(),
            lease_of: HashMap::new(),
            usage: HashMap::new(),
            quotas: HashMap::new(),
            expiring: HashSet::new(),
            parked: VecDeque::new(),
            schedules: BTreeSet::new(),
            schedule_at: HashMap::new(),
            firing: HashSet::new(),
            during_load: None,
            paused: HashSet::new(),
        }
    }

    /// A queue was paused or resumed.
    pub fn set_paused(&mut self, namespace: String, queue: String, paused: bool) {
        if paused {
            self.paused.insert((namespace, queue));
        } else {
            self.paused.remove(&(namespace, queue));
        }
    }

    /// A read of the time index after the current horizon starts now.
    pub fn begin_load(&mut self) {
        // A failed read's buffer carries over to its retry.
        self.during_load.get_or_insert_with(HashMap::new);
    }

    /// Every active schedule of the shard: (next firing, namespace, id).
    pub fn load_schedules(&mut self, schedules: Vec<(i64, String, String)>) {
        for (at, namespace, id) in schedules {
            self.set_schedule(namespace, id, Some(at));
        }
    }

    pub fn on_schedules(&mut self, changed: Vec<ScheduleSummary>) {
        for s in changed {
            self.firing.remove(&(s.namespace.clone(), s.id.clone()));
            self.set_schedule(s.namespace, s.id, s.next_fire_ms);
        }
    }

    /// Schedules due at `now_ms` that are not being fired yet; they are
    /// marked as being fired until [`Self::fire_done`] or a change comes.
    pub fn due_schedules(&mut self, now_ms: i64) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (at, namespace, id) in &self.schedules {
            if *at > now_ms {
                break;
            }
            let key = (namespace.clone(), id.clone());
            if self.firing.insert(key.clone()) {
                out.push(key);
            }
        }
        out
    }

    /// A firing write ended without a change coming back (failed, or found
    /// nothing to do): the schedule may be looked at again.
    pub fn fire_done(&mut self, namespace: &str, id: &str) {
        self.firing.remove(&(namespace.to_string(), id.to_string()));
    }

    fn set_schedule(&mut self, namespace: String, id: String, next: Option<i64>) {
        let key = (namespace, id);
        if let Some(old) = self.schedule_at.remove(&key) {
            self.schedules.remove(&(old, key.0.clone(), key.1.clone()));
        }
        if let Some(at) = next {
            self.schedules.insert((at, key.0.clone(), key.1.clone()));
            self.schedule_at.insert(key, at);
        }
    }

    /// Waiting jobs held in memory (due or not, in flight included).
    pub fn held(&self) -> usize {
        self.waiting.len() + self.inflight.len()
    }

    pub fn horizon(&self) -> Option<TimeKey> {
        self.horizon
    }

    /// How many more waiting jobs the next load may bring.
    pub fn room(&self) -> usize {
        self.cap.saturating_sub(self.held())
    }

    /// Adds a page of the time index read after the current horizon. `full`
    /// says the page stopped at the size limit; otherwise it covers every
    /// waiting job due by `until_ms`.
    pub fn load_timers(&mut self, entries: Vec<TimerEntry>, until_ms: i64, full: bool) {
        let new_horizon = match (full, entries.last()) {
            (true, Some(last)) => (last.run_at_ms, last.id),
            _ => (until_ms, MAX_ID),
        };
        for e in entries {
            if self.inflight.contains_key(&e.id) || self.lease_of.contains_key(&e.id) {
                continue;
            }
            self.insert_waiting((e.run_at_ms, e.id), e.info);
        }
        if self.horizon.is_none_or(|h| new_horizon > h) {
            self.horizon = Some(new_horizon);
        }
        if let Some(changed) = self.during_load.take() {
            self.on_changed(changed.into_values().collect());
        }
    }

    pub fn load_leases(&mut self, leases: Vec<LeaseEntry>) {
        for l in leases {
            self.set_lease(l.id, l.token, l.deadline_ms, (l.info.namespace, l.info.queue));
        }
    }

    /// Applies what the state machine reported.
    pub fn on_changed(&mut self, jobs: Vec<JobSummary>) {
        for job in jobs {
            if let Some(buffer) = self.during_load.as_mut() {
                let past_horizon = self.horizon.is_none_or(|h| (job.run_at_ms, job.id) > h);
                if past_horizon || buffer.contains_key(&job.id) {
                    buffer.insert(job.id, job.clone());
                }
            }
            self.forget_waiting(&job.id);
            self.take_inflight(&job.id);
            self.clear_lease(&job.id);
            match job.state {
                JobState::Scheduled | JobState::Ready => {
                    let key = (job.run_at_ms, job.id);
                    if self.horizon.is_some_and(|h| key <= h) {
                        self.insert_waiting(key, job.timer);
                    }
                }
                JobState::Leased => {
                    if let Some((token, deadline)) = job.lease {
                        let queue = (job.timer.namespace.clone(), job.timer.queue.clone());
                        self.set_lease(job.id, token, deadline, queue);
                    }
                }
                JobState::Succeeded | JobState::Dead | JobState::Cancelled => {}
            }
        }
        self.shrink_to_cap();
    }

    /// Moves every timer due at `now_ms` to its queue's ready set.
    pub fn advance(&mut self, now_ms: i64) {
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            let (key, info) = entry.remove_entry();
            self.make_ready(key, info);
        }
    }

    /// The ready sets a request may take from, paused queues left out.
    fn sources(&self, want: &Want) -> Vec<ReadyKey> {
        let keys: Vec<ReadyKey> = match want {
            Want::Queues { namespace, queues } => queues
                .iter()
                .map(|q| (namespace.clone(), q.clone(), false))
                .collect(),
            Want::Http => self
                .http_ready
                .iter()
                .map(|(ns, q)| (ns.clone(), q.clone(), true))
                .collect(),
        };
        keys.into_iter()
            .filter(|(ns, q, _)| {
                let queue = (ns.clone(), q.clone());
                !self.paused.contains(&queue) && self.room_in(&queue) > 0
            })
            .collect()
    }

    /// Takes up to `max` ready jobs that `want` names, best first across
    /// its queues, and marks them in flight.
    pub fn pick(&mut self, want: &Want, max: u32) -> Vec<JobId> {
        let mut picked = Vec::new();
        if max == 0 {
            return picked;
        }
        let sources = self.sources(want);
        while picked.len() < max as usize {
            let best = sources
                .iter()
                .filter(|key| self.room_in(&(key.0.clone(), key.1.clone())) > 0)
                .filter_map(|key| self.ready.get(key)?.first().map(|first| (*first, key)))
                .min_by_key(|(first, _)| *first);
            let Some((first, key)) = best else { break };
            let key = key.clone();
            self.remove_ready(&key, &first);
            let id = first.2;
            if let Some((key, info, _)) = self.waiting.remove(&id) {
                self.put_inflight(id, key, info);
            }
            picked.push(id);
        }
        picked
    }

    fn remove_ready(&mut self, key: &ReadyKey, entry: &(Reverse<i32>, i64, JobId)) {
        if let Some(set) = self.ready.get_mut(key) {
            set.remove(entry);
            if set.is_empty() {
                self.ready.remove(key);
                if key.2 {
                    self.http_ready.remove(&(key.0.clone(), key.1.clone()));
                }
            }
        }
    }

    /// A lease write finished: jobs it did not lease that are still in
    /// flight go back to waiting (they were not due or the write failed).
    pub fn lease_written(&mut self, picked: &[JobId]) {
        for id in picked {
            if let Some((key, info)) = self.take_inflight(id) {
                self.insert_waiting(key, info);
            }
        }
    }

    /// Parks a request until jobs come or its time runs out.
    pub fn park(&mut self, request: Parked<R>) {
        self.parked.push_back(request);
    }

    /// True when a job that `want` names is ready to lease.
    pub fn has_ready(&self, want: &Want) -> bool {
        self.sources(want)
            .iter()
            .any(|key| self.ready.get(key).is_some_and(|set| !set.is_empty()))
    }

    /// Parked requests that can be served now, oldest first, with the jobs
    /// picked for each. A request for no jobs (`max` 0) waits only for jobs
    /// to be ready; it is served with none picked.
    pub fn serve_parked(&mut self) -> Vec<(Parked<R>, Vec<JobId>)> {
        let mut served = Vec::new();
        let mut still = VecDeque::new();
        while let Some(p) = self.parked.pop_front() {
            if p.max == 0 {
                if self.has_ready(&p.want) {
                    served.push((p, Vec::new()));
                } else {
                    still.push_back(p);
                }
                continue;
            }
            let picked = self.pick(&p.want, p.max);
            if picked.is_empty() {
                still.push_back(p);
            } else {
                served.push((p, picked));
            }
        }
        self.parked = still;
        served
    }

    /// Parked requests whose time ran out by `now_ms`.
    pub fn timed_out(&mut self, now_ms: i64) -> Vec<Parked<R>> {
        // Runs after every applied change: most calls have nothing to do.
        if !self.parked.iter().any(|p| p.until_ms <= now_ms) {
            return Vec::new();
        }
        let (out, keep): (VecDeque<_>, VecDeque<_>) =
            self.parked.drain(..).partition(|p| p.until_ms <= now_ms);
        self.parked = keep;
        out.into_iter().collect()
    }

    /// Every parked request (leadership lost: they must go elsewhere).
    pub fn drain_parked(&mut self) -> Vec<Parked<R>> {
        self.parked.drain(..).collect()
    }

    /// Leases past their deadline at `now_ms` that are not being expired yet;
    /// they are marked as being expired.
    pub fn expired(&mut self, now_ms: i64) -> Vec<(JobId, u32)> {
        let mut out = Vec::new();
        for (deadline, id) in &self.leases {
            if *deadline > now_ms {
                break;
            }
            if self.expiring.insert(*id) {
                if let Some((token, _, _)) = self.lease_of.get(id) {
                    out.push((*id, *token));
                }
            }
        }
        out
    }

    /// An expiry write failed: try again on the next tick.
    pub fn expiry_failed(&mut self, id: &JobId) {
        self.expiring.remove(id);
    }

    /// When something next needs doing, ms: a timer, a lease deadline or a
    /// parked request's time-out.
    pub fn next_wakeup(&self) -> Option<i64> {
        let timer = self.timers.keys().next().map(|k| k.0);
        let lease = self
            .leases
            .iter()
            .find(|(_, id)| !self.expiring.contains(id))
            .map(|(d, _)| *d);
        let parked = self.parked.iter().map(|p| p.until_ms).min();
        let schedule = self
            .schedules
            .iter()
            .find(|(_, ns, id)| !self.firing.contains(&(ns.clone(), id.clone())))
            .map(|(at, _, _)| *at);
        [timer, lease, parked, schedule, self.quota_wakeup()]
            .into_iter()
            .flatten()
            .min()
    }

    fn insert_waiting(&mut self, key: TimeKey, info: TimerInfo) {
        self.forget_waiting(&key.1);
        self.waiting.insert(key.1, (key, info.clone(), false));
        self.timers.insert(key, info);
    }

    fn make_ready(&mut self, key: TimeKey, info: TimerInfo) {
        let queue = (info.namespace.clone(), info.queue.clone(), info.http);
        if info.http {
            self.http_ready
                .insert((info.namespace.clone(), info.queue.clone()));
        }
        self.ready
            .entry(queue)
            .or_default()
            .insert((Reverse(info.priority), key.0, key.1));
        self.waiting.insert(key.1, (key, info, true));
    }

    fn forget_waiting(&mut self, id: &JobId) {
        let Some((key, info, is_ready)) = self.waiting.remove(id) else {
            return;
        };
        if is_ready {
            let queue = (info.namespace.clone(), info.queue.clone(), info.http);
            self.remove_ready(&queue, &(Reverse(info.priority), key.0, key.1));
        } else {
            self.timers.remove(&key);
        }
    }

    fn set_lease(&mut self, id: JobId, token: u32, deadline: i64, queue: QueueKey) {
        self.clear_lease(&id);
        self.leases.insert((deadline, id));
        *self.usage.entry(queue.clone()).or_default() += 1;
        self.lease_of.insert(id, (token, deadline, queue));
    }

    fn clear_lease(&mut self, id: &JobId) {
        if let Some((_, deadline, queue)) = self.lease_of.remove(id) {
            self.leases.remove(&(deadline, *id));
            self.drop_use(&queue);
        }
        self.expiring.remove(id);
    }

    fn put_inflight(&mut self, id: JobId, key: TimeKey, info: TimerInfo) {
        let queue = (info.namespace.clone(), info.queue.clone());
        *self.usage.entry(queue).or_default() += 1;
        self.inflight.insert(id, (key, info));
    }

    fn take_inflight(&mut self, id: &JobId) -> Option<(TimeKey, TimerInfo)> {
        let (key, info) = self.inflight.remove(id)?;
        self.drop_use(&(info.namespace.clone(), info.queue.clone()));
        Some((key, info))
    }

    fn drop_use(&mut self, queue: &QueueKey) {
        if let Some(n) = self.usage.get_mut(queue) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.usage.remove(queue);
            }
        }
    }

    /// Leased and in-flight jobs of a queue on this shard.
    pub fn used(&self, queue: &QueueKey) -> u32 {
        self.usage.get(queue).copied().unwrap_or(0)
    }

    /// How many more of a queue's jobs may be leased now.
    fn room_in(&self, queue: &QueueKey) -> u32 {
        match self.quotas.get(queue) {
            None => u32::MAX,
            Some(q) => q.cap.saturating_sub(self.used(queue)),
        }
    }

    /// A queue's concurrency limit was set (`Some`) or removed (`None`).
    pub fn set_limit(&mut self, queue: QueueKey, limit: Option<u32>) {
        match limit {
            None => {
                self.quotas.remove(&queue);
            }
            Some(limit) => self.quotas.entry(queue).or_default().limit = limit,
        }
    }

    /// Reports due at `now_ms` to the home shards of limited queues. A
    /// report that gives part of the grant back lowers this shard's cap
    /// first; the answer ([`Self::quota_answered`]) raises it.
    pub fn quota_reports(&mut self, now_ms: i64) -> Vec<QuotaRequest> {
        let mut out = Vec::new();
        let queues: Vec<QueueKey> = self.quotas.keys().cloned().collect();
        for queue in queues {
            let used = self.used(&queue);
            let ready = [false, true]
                .iter()
                .map(|http| {
                    let key = (queue.0.clone(), queue.1.clone(), *http);
                    self.ready.get(&key).map_or(0, |set| set.len() as u32)
                })
                .sum::<u32>();
            let Some(q) = self.quotas.get_mut(&queue) else {
                continue;
            };
            if q.reporting {
                continue;
            }
            let since = now_ms.saturating_sub(q.last_report_ms);
            let want = used.saturating_add(ready).min(q.limit);
            let request = if !q.known {
                (since >= QUOTA_RETRY_MS).then_some(None)
            } else {
                // Give back what is not wanted (down to what is used), and
                // what is above the fair share when others need it.
                let keep = q.cap.min(used.max(want.min(q.share)));
                let more = want > q.cap && since >= QUOTA_RETRY_MS;
                let give_back = keep < q.cap && q.share < q.cap;
                let keepalive = since >= QUOTA_KEEPALIVE_MS && (q.cap > 0 || want > 0);
                (more || give_back || keepalive).then_some(Some(keep))
            };
            if let Some(keep) = request {
                if let Some(keep) = keep {
                    q.cap = keep;
                }
                q.reporting = true;
                q.last_report_ms = now_ms;
                out.push(QuotaRequest {
                    queue,
                    keep,
                    want,
                    used,
                });
            }
        }
        out
    }

    /// The home shard answered a report (`None`: the write failed).
    pub fn quota_answered(&mut self, queue: &QueueKey, answer: Option<QuotaAnswer>) {
        let Some(q) = self.quotas.get_mut(queue) else {
            return;
        };
        q.reporting = false;
        match answer {
            Some(QuotaAnswer::Granted { grant, share }) => {
                q.known = true;
                q.cap = grant;
                q.share = share;
            }
            // The home shard has no limit yet (the setting is still being
            // written to every shard), or a newer leader of this shard
            // reported: lease none until a report is answered.
            Some(QuotaAnswer::Unlimited | QuotaAnswer::Stale) => {
                q.known = false;
                q.cap = 0;
            }
            // The cap stays where the report lowered it.
            None => {}
        }
    }

    /// When the next quota report may be due: soon for a queue not yet
    /// known in this term or in use here; never for an idle one (a job
    /// coming wakes the dispatcher anyway).
    fn quota_wakeup(&self) -> Option<i64> {
        self.quotas
            .iter()
            .filter(|(queue, q)| {
                let busy = q.cap > 0 || self.used(queue) > 0 || self.has_ready_in(queue);
                !q.reporting && (!q.known || busy)
            })
            .map(|(_, q)| q.last_report_ms + QUOTA_RETRY_MS)
            .min()
    }

    fn has_ready_in(&self, queue: &QueueKey) -> bool {
        [false, true].iter().any(|http| {
            self.ready
                .contains_key(&(queue.0.clone(), queue.1.clone(), *http))
        })
    }

    /// Over the cap, the latest timers leave memory and the horizon moves
    /// back to the last one kept; they are loaded again when it moves on.
    fn shrink_to_cap(&mut self) {
        while self.held() > self.cap {
            let Some((key, _)) = self.timers.pop_last() else {
                return;
            };
            self.waiting.remove(&key.1);
            let below = self
                .timers
                .keys()
                .next_back()
                .copied()
                .unwrap_or((key.0.saturating_sub(1), MAX_ID));
            self.horizon = Some(self.horizon.map_or(below, |h| h.min(below)));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(queue: &str, priority: i32) -> TimerInfo {
        TimerInfo {
            namespace: "ns".into(),
            queue: queue.into(),
            priority,
            http: false,
        }
    }

    fn entry(at: i64, n: u64, queue: &str, priority: i32) -> TimerEntry {
        TimerEntry {
            run_at_ms: at,
            id: JobId::new(0, 0, n),
            info: info(queue, priority),
        }
    }

    fn summary(n: u64, state: JobState, at: i64, lease: Option<(u32, i64)>) -> JobSummary {
        JobSummary {
            id: JobId::new(0, 0, n),
            state,
            run_at_ms: at,
            timer: info("q", 0),
            lease,
        }
    }

    fn queues(names: &[&str]) -> Want {
        Want::Queues {
            namespace: "ns".into(),
            queues: names.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn nothing_is_ready_before_its_time() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(100, 1, "q", 0), entry(200, 2, "q", 0)], 1_000, false);
        s.advance(99);
        assert!(s.pick(&queues(&["q"]), 10).is_empty());
        assert_eq!(s.next_wakeup(), Some(100));
        s.advance(100);
        assert_eq!(s.pick(&queues(&["q"]), 10), vec![JobId::new(0, 0, 1)]);
        assert_eq!(s.next_wakeup(), Some(200));
    }

    #[test]
    fn higher_priority_first_then_earlier_across_queues() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(
            vec![
                entry(1, 1, "a", 0),
                entry(2, 2, "b", 5),
                entry(3, 3, "a", 5),
                entry(4, 4, "c", 9),
            ],
            10,
            false,
        );
        s.advance(10);
        let picked = s.pick(&queues(&["a", "b"]), 10);
        let ids: Vec<u64> = picked
            .iter()
            .map(|id| u64::from_be_bytes(id.0[8..].try_into().expect("8 bytes")))
            .collect();
        assert_eq!(ids, vec![2, 3, 1], "queue c is not asked for");
    }

    #[test]
    fn events_past_the_horizon_stay_on_disk() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![], 1_000, false);
        s.on_changed(vec![summary(1, JobState::Scheduled, 500, None)]);
        s.on_changed(vec![summary(2, JobState::Scheduled, 5_000, None)]);
        assert_eq!(s.held(), 1);
        s.advance(10_000);
        assert_eq!(s.pick(&queues(&["q"]), 10), vec![JobId::new(0, 0, 1)]);
    }

    #[test]
    fn a_full_page_moves_the_horizon_only_to_its_last_key() {
        let mut s: DispatchState<()> = DispatchState::new(2);
        s.load_timers(vec![entry(1, 1, "q", 0), entry(2, 2, "q", 0)], 1_000, true);
        assert_eq!(s.horizon(), Some((2, JobId::new(0, 0, 2))));
        assert_eq!(s.room(), 0);
        // A job due after the horizon is not held until loaded.
        s.on_changed(vec![summary(3, JobState::Scheduled, 3, None)]);
        assert_eq!(s.held(), 2);
    }

    #[test]
    fn the_cap_holds_when_events_bring_more_jobs() {
        let mut s: DispatchState<()> = DispatchState::new(2);
        s.load_timers(vec![], 1_000, false);
        for n in 1..=5 {
            s.on_changed(vec![summary(n, JobState::Scheduled, n as i64 * 10, None)]);
        }
        assert_eq!(s.held(), 2);
        let h = s.horizon().expect("horizon");
        assert!(h < (30, JobId::new(0, 0, 3)), "horizon {h:?} moved back");
        s.advance(1_000);
        assert_eq!(s.pick(&queues(&["q"]), 10).len(), 2);
    }

    #[test]
    fn leased_jobs_leave_the_ready_set_and_expire_once() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(1, 1, "q", 0)], 1_000, false);
        s.advance(10);
        let picked = s.pick(&queues(&["q"]), 1);
        s.on_changed(vec![summary(1, JobState::Leased, 1, Some((1, 50)))]);
        s.lease_written(&picked);
        assert!(s.pick(&queues(&["q"]), 1).is_empty(), "not back in ready");
        assert!(s.expired(49).is_empty());
        assert_eq!(s.expired(50), vec![(JobId::new(0, 0, 1), 1)]);
        assert!(s.expired(60).is_empty(), "expiry already under way");
        s.expiry_failed(&JobId::new(0, 0, 1));
        assert_eq!(s.expired(60).len(), 1);
        // Retried: waiting again, no lease left.
        s.on_changed(vec![summary(1, JobState::Scheduled, 70, None)]);
        assert!(s.expired(1_000).is_empty());
        s.advance(70);
        assert_eq!(s.pick(&queues(&["q"]), 1).len(), 1);
    }

    #[test]
    fn a_failed_lease_write_returns_its_jobs() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(1, 1, "q", 0)], 10, false);
        s.advance(10);
        let picked = s.pick(&queues(&["q"]), 1);
        assert_eq!(picked.len(), 1);
        s.lease_written(&picked);
        s.advance(10);
        assert_eq!(s.pick(&queues(&["q"]), 1), picked);
    }

    #[test]
    fn parked_requests_are_served_in_order_or_time_out() {
        let mut s: DispatchState<u32> = DispatchState::new(100);
        s.load_timers(vec![], 1_000, false);
        for (n, until) in [(1u32, 100i64), (2, 200)] {
            s.park(Parked {
                want: queues(&["q"]),
                max: 1,
                until_ms: until,
                reply: n,
            });
        }
        assert!(s.serve_parked().is_empty());
        s.on_changed(vec![summary(7, JobState::Ready, 5, None)]);
        s.advance(5);
        let served = s.serve_parked();
        assert_eq!(served.len(), 1);
        assert_eq!(served[0].0.reply, 1);
        let out = s.timed_out(200);
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].reply, 2);
    }

    #[test]
    fn schedules_fire_once_until_their_change_comes_back() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_schedules(vec![
            (100, "ns".into(), "a".into()),
            (200, "ns".into(), "b".into()),
        ]);
        assert_eq!(s.next_wakeup(), Some(100));
        assert!(s.due_schedules(99).is_empty());
        assert_eq!(s.due_schedules(150), vec![("ns".to_string(), "a".to_string())]);
        assert!(s.due_schedules(150).is_empty(), "already firing");
        assert_eq!(s.next_wakeup(), Some(200));
        s.on_schedules(vec![ScheduleSummary {
            namespace: "ns".into(),
            id: "a".into(),
            next_fire_ms: Some(1_100),
        }]);
        assert_eq!(s.due_schedules(250), vec![("ns".to_string(), "b".to_string())]);
        s.fire_done("ns", "b");
        assert_eq!(s.due_schedules(250).len(), 1, "retried after a failed firing");
        s.on_schedules(vec![ScheduleSummary {
            namespace: "ns".into(),
            id: "a".into(),
            next_fire_ms: None,
        }]);
        assert!(s.due_schedules(5_000).is_empty(), "a is gone, b is still firing");
    }

    #[test]
    fn a_job_applied_while_a_page_is_read_is_not_lost() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![], 1_000, false);
        // The read of (1000, 2000] starts; job 1 (due 1500) is applied after
        // the read passed its key, so the page will not have it.
        s.begin_load();
        s.on_changed(vec![summary(1, JobState::Scheduled, 1_500, None)]);
        // Job 2 is seen by the read, then leased before the page comes in.
        s.on_changed(vec![summary(2, JobState::Leased, 1_600, Some((1, 9_000)))]);
        s.load_timers(vec![entry(1_600, 2, "q", 0)], 2_000, false);
        s.advance(2_000);
        assert_eq!(
            s.pick(&queues(&["q"]), 10),
            vec![JobId::new(0, 0, 1)],
            "job 1 is held, job 2 stays leased"
        );
    }

    #[test]
    fn a_paused_queue_keeps_its_jobs_until_resumed() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(1, 1, "q", 0), entry(2, 2, "other", 0)], 1_000, false);
        s.set_paused("ns".into(), "q".into(), true);
        s.advance(10);
        assert_eq!(s.pick(&queues(&["q", "other"]), 10), vec![JobId::new(0, 0, 2)]);
        s.set_paused("ns".into(), "q".into(), false);
        assert_eq!(s.pick(&queues(&["q"]), 10), vec![JobId::new(0, 0, 1)]);
    }

    #[test]
    fn cancelled_jobs_are_forgotten() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(1, 1, "q", 0)], 10, false);
        s.on_changed(vec![summary(1, JobState::Cancelled, 1, None)]);
        s.advance(10);
        assert!(s.pick(&queues(&["q"]), 1).is_empty());
        assert_eq!(s.held(), 0);
    }
    #[test]
    fn http_jobs_go_to_executors_only_and_obey_pauses() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        let http = |n: u64, ns: &str, queue: &str, priority: i32| TimerEntry {
            run_at_ms: n as i64,
            id: JobId::new(0, 0, n),
            info: TimerInfo {
                namespace: ns.into(),
                queue: queue.into(),
                priority,
                http: true,
            },
        };
        s.load_timers(
            vec![
                entry(1, 1, "q", 0),
                http(2, "ns", "q", 0),
                http(3, "other", "hooks", 5),
            ],
            1_000,
            false,
        );
        s.advance(10);
        assert!(s.has_ready(&Want::Http));
        assert_eq!(
            s.pick(&queues(&["q"]), 10),
            vec![JobId::new(0, 0, 1)],
            "worker jobs only"
        );
        s.set_paused("other".into(), "hooks".into(), true);
        assert_eq!(
            s.pick(&Want::Http, 10),
            vec![JobId::new(0, 0, 2)],
            "any namespace, not paused"
        );
        assert!(!s.has_ready(&Want::Http));
        s.set_paused("other".into(), "hooks".into(), false);
        assert!(s.has_ready(&Want::Http));
        assert_eq!(s.pick(&Want::Http, 10), vec![JobId::new(0, 0, 3)]);
        assert!(!s.has_ready(&Want::Http));
    }
    fn limited(s: &mut DispatchState<()>, grant: u32, share: u32) {
        s.set_limit(("ns".into(), "q".into()), Some(10));
        let reports = s.quota_reports(1_000);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].keep, None, "a new leader keeps its grant");
        s.quota_answered(
            &("ns".into(), "q".into()),
            Some(QuotaAnswer::Granted { grant, share }),
        );
    }

    #[test]
    fn a_limited_queue_leases_up_to_its_grant() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(
            (1..=5).map(|n| entry(n as i64, n, "q", 0)).collect(),
            1_000,
            false,
        );
        s.advance(10);
        s.set_limit(("ns".into(), "q".into()), Some(10));
        assert!(
            s.pick(&queues(&["q"]), 5).is_empty(),
            "nothing before the home shard answers"
        );
        assert!(!s.has_ready(&queues(&["q"])));
        s.quota_reports(1_000);
        s.quota_answered(
            &("ns".into(), "q".into()),
            Some(QuotaAnswer::Granted { grant: 2, share: 2 }),
        );
        let picked = s.pick(&queues(&["q"]), 5);
        assert_eq!(picked.len(), 2);
        assert!(
            !s.has_ready(&queues(&["q"])),
            "jobs are ready but the grant is used"
        );
        // One is leased, the other finishes: room for one more.
        s.on_changed(vec![summary(1, JobState::Leased, 1, Some((1, 500)))]);
        s.on_changed(vec![summary(2, JobState::Succeeded, 2, None)]);
        s.lease_written(&picked);
        assert_eq!(s.used(&("ns".into(), "q".into())), 1);
        assert_eq!(s.pick(&queues(&["q"]), 5).len(), 1);
    }

    #[test]
    fn a_shard_lowers_its_cap_before_giving_back() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(1, 1, "q", 0)], 1_000, false);
        s.advance(10);
        limited(&mut s, 4, 1);
        assert_eq!(s.pick(&queues(&["q"]), 5).len(), 1);
        // Using 1, wanting 1, share 1, holding 4: give 3 back, at once.
        let reports = s.quota_reports(1_200);
        assert_eq!(reports.len(), 1);
        assert_eq!(reports[0].keep, Some(1));
        assert_eq!(reports[0].used, 1);
        assert_eq!(
            s.room_in(&("ns".into(), "q".into())),
            0,
            "cap lowered before the answer"
        );
        assert!(s.quota_reports(1_500).is_empty(), "one report at a time");
        // A failed write leaves the lowered cap.
        s.quota_answered(&("ns".into(), "q".into()), None);
        assert_eq!(s.room_in(&("ns".into(), "q".into())), 0);
    }

    #[test]
    fn a_stale_answer_stops_leasing() {
        let mut s: DispatchState<()> = DispatchState::new(100);
        s.load_timers(vec![entry(1, 1, "q", 0)], 1_000, false);
        s.advance(10);
        limited(&mut s, 4, 4);
        s.quota_reports(3_000);
        s.quota_answered(&("ns".into(), "q".into()), Some(QuotaAnswer::Stale));
        assert!(s.pick(&queues(&["q"]), 5).is_empty());
        // Removing the limit lifts it.
        s.set_limit(("ns".into(), "q".into()), None);
        assert_eq!(s.pick(&queues(&["q"]), 5).len(), 1);
    }
}
