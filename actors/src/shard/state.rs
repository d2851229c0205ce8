//! Batching, as plain logic: requests queue while earlier batches are in
//! flight, and each new batch takes everything queued (up to a cap).

/// Packs queued items into batches with a bounded number in flight.
#[derive(Debug)]
pub struct Batcher<T> {
    queue: Vec<T>,
    in_flight: usize,
    max_in_flight: usize,
    max_batch: usize,
}

impl<T> Batcher<T> {
    pub fn new(max_in_flight: usize, max_batch: usize) -> Batcher<T> {
        debug_assert!(max_in_flight > 0 && max_batch > 0);
        Batcher {
            queue: Vec::new(),
            in_flight: 0,
            max_in_flight,
            max_batch,
        }
    }

    pub fn push(&mut self, item: T) {
        self.queue.push(item);
    }

    /// The next batch to start, if a slot is free and anything is queued.
    pub fn next_batch(&mut self) -> Option<Vec<T>> {
        if self.in_flight >= self.max_in_flight || self.queue.is_empty() {
            return None;
        }
        self.in_flight += 1;
        let take = self.queue.len().min(self.max_batch);
        let rest = self.queue.split_off(take);
        Some(std::mem::replace(&mut self.queue, rest))
    }

    /// A batch finished, freeing its slot.
    pub fn done(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
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

    #[test]
    fn first_request_goes_alone_then_the_rest_ride_together() {
        let mut b = Batcher::new(1, 100);
        b.push(1);
        assert_eq!(b.next_batch(), Some(vec![1]));
        for i in 2..=5 {
            b.push(i);
            assert_eq!(b.next_batch(), None, "slot is busy");
        }
        b.done();
        assert_eq!(b.next_batch(), Some(vec![2, 3, 4, 5]));
        assert_eq!(b.queued(), 0);
    }

    #[test]
    fn batches_are_capped_and_slots_bounded() {
        let mut b = Batcher::new(2, 3);
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
}
