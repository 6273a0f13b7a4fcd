//! The bounded queue between callers and the background sender: pushing never waits,
//! the oldest record makes room when it is full.
//!
//! The bound (records and bytes) covers the batch the sender holds too, as long as it keeps
//! retrying it: when a push needs room, that batch (the oldest records) goes first, and the
//! sender learns it at its next attempt.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::Record;

/// What became of a pushed record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and this many of the oldest records were dropped to make room.
    DroppedOldest(usize),
    /// Not queued: the shipper has shut down.
    Closed,
}

/// Records in arrival order, cut into batches as they come, so taking a batch is O(1)
/// under the lock and a caller never waits behind a long copy.
struct State {
    /// Oldest first; every chunk but the last is a complete batch.
    chunks: VecDeque<Chunk>,
    len: usize,
    /// Estimated bytes of the queued records.
    bytes: usize,
    /// The batch the sender holds: records and bytes, until it is sent or given up.
    in_flight: (usize, usize),
    /// The sender's batch was dropped to make room since it was taken.
    in_flight_dropped: bool,
    closed: bool,
}

#[derive(Default)]
struct Chunk {
    records: VecDeque<Record>,
    bytes: usize,
}

/// A bounded FIFO of records with batch limits.
pub(crate) struct Queue {
    state: Mutex<State>,
    ready: Notify,
    capacity: usize,
    max_bytes: usize,
    batch_records: usize,
    batch_bytes: usize,
}

impl Queue {
    /// A queue holding at most `capacity` records and `max_bytes` (estimated) bytes; a
    /// batch is full at `batch_records` or `batch_bytes`.
    pub(crate) fn new(
        capacity: usize,
        max_bytes: usize,
        batch_records: usize,
        batch_bytes: usize,
    ) -> Self {
        let capacity = capacity.max(1);
        let max_bytes = max_bytes.max(1);
        Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                len: 0,
                bytes: 0,
                in_flight: (0, 0),
                in_flight_dropped: false,
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
            max_bytes,
            batch_records: batch_records.clamp(1, capacity),
            batch_bytes: batch_bytes.clamp(1, max_bytes),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn is_full(&self, chunk: &Chunk) -> bool {
        chunk.records.len() >= self.batch_records || chunk.bytes >= self.batch_bytes
    }

    /// Appends a record; wakes the sender when a batch is full.
    pub(crate) fn push(&self, record: Record) -> Pushed {
        let size = record.estimated_size();
        let (pushed, evicted, wake) = {
            let mut guard = self.lock();
            let state = &mut *guard;
            if state.closed {
                (Pushed::Closed, vec![record], false)
            } else {
                let mut evicted = Vec::new();
                let mut dropped = 0;
                while state.len + state.in_flight.0 >= self.capacity
                    || state.bytes + state.in_flight.1 + size > self.max_bytes
                {
                    if state.in_flight.0 > 0 {
                        // The sender's batch is the oldest: it goes first.
                        dropped += state.in_flight.0;
                        state.in_flight = (0, 0);
                        state.in_flight_dropped = true;
                        continue;
                    }
                    let Some(chunk) = state.chunks.front_mut() else {
                        break;
                    };
                    match chunk.records.pop_front() {
                        Some(oldest) => {
                            let bytes = oldest.estimated_size();
                            chunk.bytes = chunk.bytes.saturating_sub(bytes);
                            state.bytes = state.bytes.saturating_sub(bytes);
                            state.len -= 1;
                            dropped += 1;
                            evicted.push(oldest);
                        }
                        None => {
                            state.chunks.pop_front();
                        }
                    }
                    if state.chunks.front().is_some_and(|c| c.records.is_empty()) {
                        state.chunks.pop_front();
                    }
                }
                let mut wake = false;
                let fits = state.chunks.back().is_some_and(|last| {
                    !self.is_full(last)
                        && (last.records.is_empty() || last.bytes + size <= self.batch_bytes)
                });
                if !fits {
                    // The last chunk is complete: a batch is ready.
                    wake = !state.chunks.is_empty();
                    state.chunks.push_back(Chunk::default());
                }
                if let Some(last) = state.chunks.back_mut() {
                    last.records.push_back(record);
                    last.bytes += size;
                    wake |=
                        last.records.len() >= self.batch_records || last.bytes >= self.batch_bytes;
                }
                state.len += 1;
                state.bytes += size;
                let pushed = if dropped > 0 {
                    Pushed::DroppedOldest(dropped)
                } else {
                    Pushed::Queued
                };
                (pushed, evicted, wake)
            }
        };
        // Freed outside the lock.
        drop(evicted);
        if wake {
            self.ready.notify_one();
        }
        pushed
    }

    /// Waits until a batch may be full (or a wake-up was left for it).
    pub(crate) async fn full(&self) {
        self.ready.notified().await;
    }

    /// The next batch: only a full one unless `partial`. Empty when there is none.
    pub(crate) fn take_batch(&self, partial: bool) -> Vec<Record> {
        let chunk = {
            let mut state = self.lock();
            let ready = state
                .chunks
                .front()
                .is_some_and(|front| partial || state.chunks.len() > 1 || self.is_full(front));
            if !ready {
                return Vec::new();
            }
            let chunk = state.chunks.pop_front();
            if let Some(chunk) = &chunk {
                state.len -= chunk.records.len();
                state.bytes = state.bytes.saturating_sub(chunk.bytes);
                state.in_flight = (chunk.records.len(), chunk.bytes);
                state.in_flight_dropped = false;
            }
            chunk
        };
        chunk.map(|c| Vec::from(c.records)).unwrap_or_default()
    }

    /// Records waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Estimated bytes of the records waiting.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }

    /// Whether the sender's batch was dropped to make room since it was taken.
    pub(crate) fn in_flight_dropped(&self) -> bool {
        self.lock().in_flight_dropped
    }

    /// The sender is done with its batch (sent or given up): it no longer takes room.
    /// Returns whether it had been dropped to make room meanwhile.
    pub(crate) fn batch_done(&self) -> bool {
        let mut state = self.lock();
        state.in_flight = (0, 0);
        std::mem::take(&mut state.in_flight_dropped)
    }

    /// Refuses further pushes and returns the records still queued, oldest first.
    pub(crate) fn close(&self) -> Vec<Record> {
        let chunks = {
            let mut state = self.lock();
            state.closed = true;
            state.len = 0;
            state.bytes = 0;
            std::mem::take(&mut state.chunks)
        };
        chunks.into_iter().flat_map(|c| c.records).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{JOB_LAMBDA, Level};

    fn record(message: &str) -> Record {
        Record::new("f", JOB_LAMBDA, Level::Info, message)
    }

    fn messages(batch: &[Record]) -> Vec<&str> {
        batch.iter().map(|r| r.message.as_str()).collect()
    }

    #[test]
    fn full_queue_drops_the_oldest() {
        let queue = Queue::new(3, usize::MAX, 10, usize::MAX);
        for m in ["a", "b", "c"] {
            assert_eq!(queue.push(record(m)), Pushed::Queued);
        }
        assert_eq!(queue.push(record("d")), Pushed::DroppedOldest(1));
        assert_eq!(queue.len(), 3);
        assert_eq!(messages(&queue.take_batch(true)), ["b", "c", "d"]);
    }

    #[test]
    fn the_bound_in_bytes_drops_the_oldest_and_counts_the_senders_batch() {
        let size = record("x").estimated_size();
        let queue = Queue::new(1000, size * 4, 2, usize::MAX);
        for m in ["a", "b", "c", "d"] {
            assert_eq!(queue.push(record(m)), Pushed::Queued);
        }
        assert_eq!(queue.bytes(), size * 4);
        assert_eq!(queue.push(record("e")), Pushed::DroppedOldest(1));
        // The sender takes [b]: it still takes room while the sender retries it.
        assert_eq!(messages(&queue.take_batch(false)), ["b"]);
        assert_eq!(queue.bytes(), size * 3);
        assert!(!queue.in_flight_dropped());
        // Full: the sender's batch, the oldest, makes room first.
        assert_eq!(queue.push(record("f")), Pushed::DroppedOldest(1));
        assert!(queue.in_flight_dropped());
        assert!(queue.batch_done());
        assert_eq!(queue.push(record("g")), Pushed::DroppedOldest(1));
        assert_eq!(messages(&queue.take_batch(true)), ["d"]);
        assert!(!queue.batch_done());
        assert_eq!(messages(&queue.take_batch(true)), ["e", "f"]);
        assert_eq!(messages(&queue.take_batch(true)), ["g"]);
    }

    #[test]
    fn batches_are_cut_by_count() {
        let queue = Queue::new(100, usize::MAX, 2, usize::MAX);
        queue.push(record("a"));
        assert!(queue.take_batch(false).is_empty(), "a partial batch waits");
        queue.push(record("b"));
        queue.push(record("c"));
        assert_eq!(messages(&queue.take_batch(false)), ["a", "b"]);
        assert!(queue.take_batch(false).is_empty());
        assert_eq!(messages(&queue.take_batch(true)), ["c"]);
        assert!(queue.take_batch(true).is_empty());
    }

    #[test]
    fn batches_are_cut_by_bytes() {
        let size = record("x".repeat(100).as_str()).estimated_size();
        let queue = Queue::new(100, usize::MAX, 100, size * 2);
        for _ in 0..5 {
            queue.push(record(&"x".repeat(100)));
        }
        assert_eq!(queue.take_batch(false).len(), 2);
        assert_eq!(queue.take_batch(false).len(), 2);
        assert!(queue.take_batch(false).is_empty());
        assert_eq!(queue.take_batch(true).len(), 1);
    }

    #[test]
    fn a_record_larger_than_a_batch_still_goes_alone() {
        let queue = Queue::new(100, usize::MAX, 100, 10);
        queue.push(record(&"x".repeat(100)));
        queue.push(record("y"));
        assert_eq!(queue.take_batch(false).len(), 1);
        assert_eq!(queue.take_batch(false).len(), 1);
    }

    #[tokio::test]
    async fn a_full_batch_wakes_the_sender() {
        let queue = Queue::new(100, usize::MAX, 2, usize::MAX);
        queue.push(record("a"));
        queue.push(record("b"));
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.full())
            .await
            .ok()
            .unwrap_or_else(|| panic!("no wake-up"));
    }

    #[test]
    fn closed_queue_refuses_and_reports_leftovers() {
        let queue = Queue::new(10, usize::MAX, 10, usize::MAX);
        queue.push(record("a"));
        queue.push(record("b"));
        assert_eq!(messages(&queue.close()), ["a", "b"]);
        assert_eq!(queue.push(record("c")), Pushed::Closed);
        assert_eq!(queue.len(), 0);
    }
}
