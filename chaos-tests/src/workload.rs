//! The workload the harness drives while faults happen: producers that
//! submit with idempotency keys and retry ambiguous failures as a real
//! client would, a reader that samples jobs' states, and schedules.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use sundial_sdk::{proto, Client, NewJob};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::history::{now_ms, Event, HistoryWriter, Outcome};
use crate::worker::{outcome_of, NAMESPACE};

/// The queue producers submit to, and the one schedules fire into.
pub const WORK_QUEUE: &str = "work";
pub const SCHEDULE_QUEUE: &str = "sched";
/// Every job's lease, and so how long a paused worker must stay paused to
/// lose its jobs.
pub const JOB_TIMEOUT: Duration = Duration::from_millis(1500);
pub const MAX_ATTEMPTS: u32 = 4;

/// One lazily connected client per node; a failed call drops it so the
/// next call connects afresh.
#[derive(Clone)]
pub struct Clients {
    addrs: Vec<String>,
    slots: Arc<Mutex<Vec<Option<Client>>>>,
    timeout: Duration,
}

impl Clients {
    pub fn new(addrs: Vec<String>, timeout: Duration) -> Clients {
        let slots = Arc::new(Mutex::new(vec![None; addrs.len()]));
        Clients {
            addrs,
            slots,
            timeout,
        }
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }

    pub async fn get(&self, i: usize) -> Result<Client, sundial_sdk::Error> {
        let cached = self.slots.lock().unwrap_or_else(|p| p.into_inner())[i].clone();
        if let Some(c) = cached {
            return Ok(c);
        }
        let client = crate::cluster::connect(&self.addrs[i], Duration::from_secs(1))
            .await?
            .with_timeout(self.timeout);
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(client.clone());
        Ok(client)
    }

    pub fn forget(&self, i: usize) {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())[i] = None;
    }
}

/// Submits one job under `key` until the cluster answers for sure (or
/// `give_up` says stop), recording every try. Returns the id if acked.
#[allow(clippy::too_many_arguments)]
pub async fn submit_until_answered(
    clients: &Clients,
    history: &HistoryWriter,
    rng: &mut StdRng,
    key: &str,
    queue: &str,
    delay_ms: u64,
    nodes: &[usize],
    give_up: &(dyn Fn() -> bool + Sync),
) -> Option<String> {
    loop {
        let i = nodes[rng.random_range(0..nodes.len())];
        let mut job = NewJob::new(queue, key.as_bytes().to_vec())
            .namespace(NAMESPACE)
            .idempotency_key(key)
            .max_attempts(MAX_ATTEMPTS)
            .backoff(Duration::from_millis(100), Duration::from_secs(1))
            .timeout(JOB_TIMEOUT);
        if delay_ms > 0 {
            job = job.delay_ms(delay_ms);
        }
        let t0 = now_ms();
        let answer = match clients.get(i).await {
            Ok(mut c) => c.submit(job).await,
            Err(e) => Err(e),
        };
        let t1 = now_ms();
        let (outcome, id) = match answer {
            Ok(id) => (Outcome::Ok, Some(id)),
            Err(sundial_sdk::Error::Connect { reason, .. }) => {
                // Never connected: nothing was sent. Not worth a line.
                let _ = reason;
                clients.forget(i);
                if give_up() {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..100))).await;
                continue;
            }
            Err(e) => {
                clients.forget(i);
                (outcome_of(&e), None)
            }
        };
        let shard = id
            .as_deref()
            .and_then(|id| id.parse::<sundial_raft::JobId>().ok())
            .map(|id| id.shard());
        history.record(&Event::Submit {
            key: key.to_string(),
            t0,
            t1,
            outcome: outcome.clone(),
            id: id.clone(),
            shard,
            max_attempts: MAX_ATTEMPTS,
        });
        match outcome {
            Outcome::Ok => return id,
            Outcome::Refused(_) => return None,
            Outcome::Unknown(_) if give_up() => return None,
            Outcome::Unknown(_) => {
                tokio::time::sleep(Duration::from_millis(rng.random_range(20..150))).await;
            }
        }
    }
}

/// Producers, and a reader that samples the states of acknowledged jobs.
///
/// Producers are paced as a real producer with backpressure would be:
/// while more than `max_backlog` jobs wait in the work queue they hold
/// back, so the backlog never outgrows what the workers drain once the
/// faults stop, however long the run.
pub struct Load {
    stop: watch::Sender<bool>,
    /// Set when producers must give up on keys still unanswered.
    give_up: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Load {
    pub fn start(
        clients: Clients,
        history: Arc<HistoryWriter>,
        producers: usize,
        max_backlog: u64,
        seed: u64,
    ) -> Load {
        let (stop, stop_rx) = watch::channel(false);
        let (give_up, give_up_rx) = watch::channel(false);
        let (hold, hold_rx) = watch::channel(false);
        let acked: Arc<Mutex<Vec<String>>> = Arc::default();
        let mut tasks = JoinSet::new();
        let nodes: Vec<usize> = (0..clients.len()).collect();
        for p in 0..producers {
            let (clients, history, acked, nodes) =
                (clients.clone(), history.clone(), acked.clone(), nodes.clone());
            let (stop_rx, give_up_rx) = (stop_rx.clone(), give_up_rx.clone());
            let mut hold_rx = hold_rx.clone();
            tasks.spawn(async move {
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(1000 + p as u64));
                let mut n = 0u64;
                while !*stop_rx.borrow() {
                    if *hold_rx.borrow() {
                        // Re-checked at least every 200 ms, so a stop is
                        // seen while held.
                        let _ = tokio::time::timeout(Duration::from_millis(200), hold_rx.changed()).await;
                        continue;
                    }
                    let key = format!("p{p}-{n}");
                    n += 1;
                    let delay_ms = if rng.random_range(0..100) < 20 {
                        rng.random_range(200..3000)
                    } else {
                        0
                    };
                    let give_up = || *give_up_rx.borrow();
                    if let Some(id) = submit_until_answered(
                        &clients, &history, &mut rng, &key, WORK_QUEUE, delay_ms, &nodes, &give_up,
                    )
                    .await
                    {
                        acked.lock().unwrap_or_else(|p| p.into_inner()).push(id);
                    }
                    tokio::time::sleep(Duration::from_millis(rng.random_range(5..25))).await;
                }
            });
        }
        let mut flow_stop = stop_rx.clone();
        let flow_clients = clients.clone();
        tasks.spawn(async move {
            let mut n = 0usize;
            loop {
                tokio::select! {
                    _ = flow_stop.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                }
                // A node that does not answer leaves the flag as it was;
                // the next poll asks another.
                n += 1;
                let i = n % flow_clients.len();
                let stats = match flow_clients.get(i).await {
                    Ok(mut c) => c.queue_stats(NAMESPACE, WORK_QUEUE).await,
                    Err(e) => Err(e),
                };
                match stats {
                    Ok(s) => {
                        let _ = hold.send_if_modified(|held| {
                            let now = s.ready + s.scheduled > max_backlog;
                            std::mem::replace(held, now) != now
                        });
                    }
                    Err(_) => flow_clients.forget(i),
                }
            }
        });
        let mut stop_rx = stop_rx.clone();
        tasks.spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(7));
            loop {
                tokio::select! {
                    _ = stop_rx.changed() => return,
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
                let id = {
                    let acked = acked.lock().unwrap_or_else(|p| p.into_inner());
                    if acked.is_empty() {
                        continue;
                    }
                    acked[rng.random_range(0..acked.len())].clone()
                };
                let i = rng.random_range(0..clients.len());
                let t0 = now_ms();
                let read = match clients.get(i).await {
                    Ok(mut c) => c.get_job(&id).await,
                    Err(e) => Err(e),
                };
                match read {
                    Ok(job) => history.record(&Event::Observe {
                        id,
                        t0,
                        t1: now_ms(),
                        state: crate::checker::state_name(crate::checker::state_from_proto(job.state)),
                        attempts: job.attempts,
                    }),
                    Err(_) => clients.forget(i),
                }
            }
        });
        Load { stop, give_up, tasks }
    }

    /// Stops producing; keys still unanswered are retried until `within`
    /// passes, then abandoned (recorded as unknown).
    pub async fn stop(mut self, within: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            tokio::select! {
                next = self.tasks.join_next() => if next.is_none() { return },
                _ = tokio::time::sleep_until(deadline) => {
                    let _ = self.give_up.send(true);
                    while self.tasks.join_next().await.is_some() {}
                    return;
                }
            }
        }
    }
}

/// Creates a schedule firing every `every` into the schedule queue, with
/// catch-up `all` and overlap `allow`: every nominal firing must create
/// exactly one job. Retried until the cluster answers (creation is
/// idempotent by id).
pub async fn create_schedule(
    clients: &Clients,
    history: &HistoryWriter,
    id: &str,
    every: Duration,
) -> anyhow::Result<()> {
    let spec = proto::ScheduleSpec {
        namespace: NAMESPACE.into(),
        id: id.into(),
        rule: Some(proto::schedule_spec::Rule::EveryMs(every.as_millis() as u64)),
        queue: SCHEDULE_QUEUE.into(),
        payload: id.as_bytes().to_vec(),
        retry: Some(proto::RetryPolicy {
            max_attempts: MAX_ATTEMPTS,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        }),
        timeout_ms: JOB_TIMEOUT.as_millis() as u64,
        catch_up: proto::CatchUp::All as i32,
        overlap: proto::Overlap::Allow as i32,
        ..Default::default()
    };
    for attempt in 0..100 {
        let i = attempt % clients.len();
        let answer = match clients.get(i).await {
            Ok(mut c) => c.create_schedule(spec.clone()).await.map(|_| ()),
            Err(e) => Err(e),
        };
        match answer {
            Ok(()) => {
                history.record(&Event::Schedule {
                    id: id.into(),
                    every_ms: every.as_millis() as u64,
                    t: now_ms(),
                });
                return Ok(());
            }
            Err(_) => {
                clients.forget(i);
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    anyhow::bail!("could not create schedule {id}")
}
