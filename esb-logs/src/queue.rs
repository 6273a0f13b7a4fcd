//! The bounded queue between callers and the background sender: pushing never waits,
//! the oldest record makes room when it is full.

use std::collections::VecDeque;
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::Record;

/// What became of a pushed record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Pushed {
    /// Queued.
    Queued,
    /// Queued, and the oldest record was dropped to make room.
    DroppedOldest,
    /// Not queued: the shipper has shut down.
    Closed,
}

/// Records in arrival order, cut into batches as they come, so taking a batch is O(1)
/// under the lock and a caller never waits behind a long copy.
struct State {
    /// Oldest first; every chunk but the last is a complete batch.
    chunks: VecDeque<Chunk>,
    len: usize,
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
    batch_records: usize,
    batch_bytes: usize,
}

impl Queue {
    /// A queue holding at most `capacity` records; a batch is full at `batch_records` or `batch_bytes`.
    pub(crate) fn new(capacity: usize, batch_records: usize, batch_bytes: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            state: Mutex::new(State {
                chunks: VecDeque::new(),
                len: 0,
                closed: false,
            }),
            ready: Notify::new(),
            capacity,
            batch_records: batch_records.clamp(1, capacity),
            batch_bytes: batch_bytes.max(1),
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
                (Pushed::Closed, Some(record), false)
            } else {
                let evicted = if state.len >= self.capacity {
                    let oldest = state.chunks.front_mut().and_then(|chunk| {
                        let oldest = chunk.records.pop_front()?;
                        chunk.bytes = chunk.bytes.saturating_sub(oldest.estimated_size());
                        Some(oldest)
                    });
                    if state.chunks.front().is_some_and(|c| c.records.is_empty()) {
                        state.chunks.pop_front();
                    }
                    if oldest.is_some() {
                        state.len -= 1;
                    }
                    oldest
                } else {
                    None
                };
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
                let pushed = if evicted.is_some() {
                    Pushed::DroppedOldest
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
            }
            chunk
        };
        chunk.map(|c| Vec::from(c.records)).unwrap_or_default()
    }

    /// Records waiting.
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Refuses further pushes and returns how many records were still queued (now dropped).
    pub(crate) fn close(&self) -> usize {
        let (left, chunks) = {
            let mut state = self.lock();
            state.closed = true;
            let left = state.len;
            state.len = 0;
            (left, std::mem::take(&mut state.chunks))
        };
        drop(chunks);
        left
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
        let queue = Queue::new(3, 10, usize::MAX);
        for m in ["a", "b", "c"] {
            assert_eq!(queue.push(record(m)), Pushed::Queued);
        }
        assert_eq!(queue.push(record("d")), Pushed::DroppedOldest);
        assert_eq!(queue.len(), 3);
        assert_eq!(messages(&queue.take_batch(true)), ["b", "c", "d"]);
    }

    #[test]
    fn batches_are_cut_by_count() {
        let queue = Queue::new(100, 2, usize::MAX);
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
        let queue = Queue::new(100, 100, size * 2);
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
        let queue = Queue::new(100, 100, 10);
        queue.push(record(&"x".repeat(100)));
        queue.push(record("y"));
        assert_eq!(queue.take_batch(false).len(), 1);
        assert_eq!(queue.take_batch(false).len(), 1);
    }

    #[tokio::test]
    async fn a_full_batch_wakes_the_sender() {
        let queue = Queue::new(100, 2, usize::MAX);
        queue.push(record("a"));
        queue.push(record("b"));
        tokio::time::timeout(std::time::Duration::from_secs(5), queue.full())
            .await
            .ok()
            .unwrap_or_else(|| panic!("no wake-up"));
    }

    #[test]
    fn closed_queue_refuses_and_reports_leftovers() {
        let queue = Queue::new(10, 10, usize::MAX);
        queue.push(record("a"));
        queue.push(record("b"));
        assert_eq!(queue.close(), 2);
        assert_eq!(queue.push(record("c")), Pushed::Closed);
        assert_eq!(queue.len(), 0);
    }
}
