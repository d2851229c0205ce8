//! A lease feed keeps one long-poll lease request going to every shard for a
//! consumer with a fixed number of slots: a worker stream (its credits) or
//! the node's HTTP executors (one slot per executor).
//!
//! Requests go through the gateway, so every shard is served whoever leads
//! it. The consumer never holds more jobs than it has slots: a semaphore with
//! one permit per slot, taken before asking and given back by the consumer
//! when it is done with a job, or by the feed when a poll brings fewer jobs
//! than it asked for. A poller holds no slots while it waits: it first waits
//! on the leader for its shard to have ready jobs (a lease request for zero
//! jobs), then takes slots and leases at once, so slots never sit with a
//! shard that has nothing to give.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sundial_raft::{Job, ShardId};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;

use crate::dispatch::LeaseRequest;
use crate::gateway::GatewayHandle;

/// How long a lease request may take before it is retried.
pub const LEASE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a poller waits on the leader for ready jobs in one request.
pub const LONG_POLL: Duration = Duration::from_secs(5);
/// Most jobs one lease request asks for.
pub const MAX_BATCH: u32 = 64;

/// Where leased jobs go.
pub trait JobSink: Send + Sync + 'static {
    /// Takes one leased job; false when the consumer is gone (the feed
    /// stops; the job's lease runs out and it is retried).
    fn deliver(&self, job: Job) -> impl Future<Output = bool> + Send;
}

/// Starts one poller per shard. `request` says what to lease and for whom
/// (its `max` and `wait_ms` are set per poll). Dropping or aborting the
/// returned set stops the feed at once; setting `stop` stops it cleanly: a
/// poller ends between requests, after delivering what it leased, so when
/// the set is empty no job is in flight to the sink. A `stop` whose sender
/// is gone never stops the feed.
pub fn start<S: JobSink>(
    gateway: &GatewayHandle,
    request: LeaseRequest,
    slots: Arc<Semaphore>,
    slot_count: u32,
    sink: Arc<S>,
    stop: watch::Receiver<bool>,
) -> JoinSet<()> {
    let shard_count = gateway.layout().shard_count;
    let mut pollers = JoinSet::new();
    for shard in 0..shard_count {
        let poller = Poller {
            shard,
            gateway: gateway.clone(),
            request: request.clone(),
            fair_share: slot_count.div_ceil(shard_count.max(1)).max(1),
            slots: slots.clone(),
            sink: sink.clone(),
            stop: stop.clone(),
        };
        pollers.spawn(poller.run());
    }
    pollers
}

/// Keeps one lease request going to one shard while the consumer has room.
struct Poller<S> {
    shard: ShardId,
    gateway: GatewayHandle,
    request: LeaseRequest,
    /// Slots this poller takes without looking at the others; it takes more
    /// only when they are free and its last poll came back full.
    fair_share: u32,
    slots: Arc<Semaphore>,
    sink: Arc<S>,
    stop: watch::Receiver<bool>,
}

impl<S: JobSink> Poller<S> {
    async fn run(mut self) {
        let mut hot = false;
        let mut backoff = Duration::from_millis(50);
        loop {
            if *self.stop.borrow() {
                return;
            }
            if !hot {
                // Wait, holding no slots, until the shard has work (or the
                // feed stops: this wait holds no jobs, so it may be dropped).
                let mut wait = self.request.clone();
                wait.max = 0;
                wait.wait_ms = LONG_POLL.as_millis() as u64;
                let deadline = Instant::now() + LONG_POLL + LEASE_TIMEOUT;
                let mut stop = self.stop.clone();
                let waited = tokio::select! {
                    waited = self.gateway.lease(self.shard, wait, deadline) => waited,
                    true = async { stop.wait_for(|s| *s).await.is_ok() } => return,
                };
                if let Err(e) = waited {
                    tracing::debug!(shard = self.shard, error = %e, "waiting for work failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            }
            let mut stop = self.stop.clone();
            let first = tokio::select! {
                first = self.slots.clone().acquire_owned() => first,
                true = async { stop.wait_for(|s| *s).await.is_ok() } => return,
            };
            let Ok(first) = first else {
                return;
            };
            first.forget();
            let mut taken = 1u32;
            let limit = if hot {
                MAX_BATCH
            } else {
                self.fair_share.min(MAX_BATCH)
            };
            while taken < limit {
                match self.slots.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        taken += 1;
                    }
                    Err(_) => break,
                }
            }
            self.request.max = taken;
            self.request.wait_ms = 0;
            let deadline = Instant::now() + LEASE_TIMEOUT;
            match self
                .gateway
                .lease(self.shard, self.request.clone(), deadline)
                .await
            {
                Ok(jobs) => {
                    backoff = Duration::from_millis(50);
                    let got = jobs.len() as u32;
                    hot = got == taken;
                    self.slots.add_permits(taken.saturating_sub(got) as usize);
                    for job in jobs {
                        if !self.sink.deliver(job).await {
                            return;
                        }
                    }
                }
                Err(e) => {
                    self.slots.add_permits(taken as usize);
                    tracing::debug!(shard = self.shard, error = %e, "lease request failed, retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }
}
