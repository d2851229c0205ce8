//! Batching, as plain logic: requests queue while a batch is in flight, and
//! each new batch takes everything queued (up to a cap).
//!
//! Under concurrent load, closed-loop clients fall into two cohorts: those
//! answered by the batch that just committed are still on their way back when
//! the next batch starts. So when a batch of several ops finishes, the next one
//! waits a short linger for them before it starts: fewer, bigger Raft entries.
//! A lone client (batches of one) never lingers.

use std::time::Duration;

/// What to do once a batch has finished.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AfterDone {
    /// Start the next batch now (if anything is queued).
    Continue,
    /// Hold the queue this long, then call [`Batcher::release`].
    Linger(Duration),
}

/// Packs queued items into batches with a bounded number in flight.
#[derive(Debug)]
pub struct Batcher<T> {
    queue: Vec<T>,
    in_flight: usize,
    max_in_flight: usize,
    max_batch: usize,
    linger: Duration,
    last_batch_len: usize,
    holding: bool,
}

impl<T> Batcher<T> {
    pub fn new(max_in_flight: usize, max_batch: usize, linger: Duration) -> Batcher<T> {
        debug_assert!(max_in_flight > 0 && max_batch > 0);
        Batcher {
            queue: Vec::new(),
            in_flight: 0,
            max_in_flight,
            max_batch,
            linger,
            last_batch_len: 0,
            holding: false,
        }
    }

    pub fn push(&mut self, item: T) {
        self.queue.push(item);
    }

    /// The next batch to start, if a slot is free, nothing holds the queue,
    /// and anything is queued.
    pub fn next_batch(&mut self) -> Option<Vec<T>> {
        if self.holding || self.in_flight >= self.max_in_flight || self.queue.is_empty() {
            return None;
        }
        self.in_flight += 1;
        let take = self.queue.len().min(self.max_batch);
        let rest = self.queue.split_off(take);
        let batch = std::mem::replace(&mut self.queue, rest);
        self.last_batch_len = batch.len();
        Some(batch)
    }

    /// A batch finished, freeing its slot.
    pub fn done(&mut self) -> AfterDone {
        self.in_flight = self.in_flight.saturating_sub(1);
        // Linger only while the queue is smaller than the batch that just
        // committed: once it is as big, the other cohort is already here.
        if self.linger.is_zero()
            || self.holding
            || self.last_batch_len < 2
            || self.queue.len() >= self.last_batch_len.min(self.max_batch)
        {
            return AfterDone::Continue;
        }
        self.holding = true;
        AfterDone::Linger(self.linger)
    }

    /// The linger is over: batches may start again.
    pub fn release(&mut self) {
        self.holding = false;
    }

    #[cfg(test)]
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    #[cfg(test)]
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NO_LINGER: Duration = Duration::ZERO;

    #[test]
    fn first_request_goes_alone_then_the_rest_ride_together() {
        let mut b = Batcher::new(1, 100, NO_LINGER);
        b.push(1);
        assert_eq!(b.next_batch(), Some(vec![1]));
        for i in 2..=5 {
            b.push(i);
            assert_eq!(b.next_batch(), None, "slot is busy");
        }
        assert_eq!(b.done(), AfterDone::Continue);
        assert_eq!(b.next_batch(), Some(vec![2, 3, 4, 5]));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn batches_are_capped_and_slots_bounded() {
        let mut b = Batcher::new(2, 3, NO_LINGER);
        for i in 0..8 {
            b.push(i);
        }
        assert_eq!(b.next_batch(), Some(vec![0, 1, 2]));
        assert_eq!(b.next_batch(), Some(vec![3, 4, 5]));
        assert_eq!(b.next_batch(), None);
        assert_eq!(b.in_flight(), 2);
        b.done();
        assert_eq!(b.next_batch(), Some(vec![6, 7]));
    }

    #[test]
    fn no_linger_when_the_queue_already_holds_a_full_cohort() {
        let mut b = Batcher::new(1, 100, Duration::from_millis(1));
        b.push(1);
        b.push(2);
        assert_eq!(b.next_batch(), Some(vec![1, 2]));
        b.push(3);
        b.push(4);
        assert_eq!(b.done(), AfterDone::Continue);
        assert_eq!(b.next_batch(), Some(vec![3, 4]));
    }

    #[test]
    fn a_lone_client_never_lingers() {
        let linger = Duration::from_millis(1);
        let mut b = Batcher::new(1, 100, linger);
        b.push(1);
        assert_eq!(b.next_batch(), Some(vec![1]));
        b.push(2);
        assert_eq!(b.done(), AfterDone::Continue);
        assert_eq!(b.next_batch(), Some(vec![2]));
    }

    #[test]
    fn after_a_shared_batch_the_queue_lingers_then_goes_as_one() {
        let linger = Duration::from_millis(1);
        let mut b = Batcher::new(1, 100, linger);
        b.push(1);
        assert_eq!(b.next_batch(), Some(vec![1]));
        b.push(2);
        b.push(3);
        assert_eq!(b.done(), AfterDone::Continue, "the previous batch had one op");
        assert_eq!(b.next_batch(), Some(vec![2, 3]));
        b.push(4);
        assert_eq!(b.done(), AfterDone::Linger(linger), "1 queued < 2 just committed");
        b.push(5);
        assert_eq!(b.next_batch(), None, "held");
        b.release();
        assert_eq!(b.next_batch(), Some(vec![4, 5]));
    }
}
