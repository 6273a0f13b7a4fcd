//! Whether a sandbox's output readers still hold lines the function wrote: so `END` and
//! `REPORT` follow every line the function wrote before its answer, as on Lambda.
//!
//! A function writes its lines, then posts its answer. By the time the answer is read, those
//! lines are in the output pipe, and the pipe's readiness was delivered no later than the
//! answer's socket's; but the reader task may not have run yet. Each reader marks itself
//! pending from the moment its pipe wakes it until it has logged every complete line it
//! read and waits again; [`OutputGate::settle`] waits (boundedly) for both to be idle.

#![cfg_attr(
    not(any(feature = "process", feature = "containerd")),
    allow(dead_code)
)]

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::logs::LogStream;

/// The longest an invocation's `END` waits for its output readers.
const SETTLE_LIMIT: Duration = Duration::from_millis(100);

/// The pending flags of a sandbox's stdout and stderr readers.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutputGate(Arc<[AtomicBool; 2]>);

impl OutputGate {
    /// True while a reader has output in hand (or has been woken to read some).
    pub(crate) fn pending(&self) -> bool {
        self.0.iter().any(|flag| flag.load(Ordering::SeqCst))
    }

    /// Waits until both readers are idle, for at most [`SETTLE_LIMIT`].
    pub(crate) async fn settle(&self) {
        if !self.pending() {
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        let mut spins = 0u32;
        while self.pending() && tokio::time::Instant::now() < deadline {
            if spins < 64 {
                spins += 1;
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
    }

    /// `reader` with its pending flag kept in this gate.
    pub(crate) fn track<R>(&self, reader: R, stream: LogStream) -> Tracked<R> {
        Tracked {
            inner: reader,
            gate: self.clone(),
            index: usize::from(matches!(stream, LogStream::Stderr)),
        }
    }

    /// Marks the reader of `stream` idle for good (its output ended).
    pub(crate) fn closed(&self, stream: LogStream) {
        let index = usize::from(matches!(stream, LogStream::Stderr));
        self.0[index].store(false, Ordering::SeqCst);
    }

    fn flag(&self, index: usize) -> &AtomicBool {
        &self.0[index]
    }
}

/// A reader whose gate flag is set when its pipe wakes it or it reads, and cleared when it
/// waits with nothing in hand.
///
/// A buffered reader polls the pipe only once its buffer is used up, so when this reader
/// is polled every complete line read before has been handed out.
pub(crate) struct Tracked<R> {
    inner: R,
    gate: OutputGate,
    index: usize,
}

/// The waker a tracked reader registers: it marks the reader pending, then wakes its task.
struct Flagging {
    gate: OutputGate,
    index: usize,
    task: Waker,
}

impl Wake for Flagging {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.gate.flag(self.index).store(true, Ordering::SeqCst);
        self.task.wake_by_ref();
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Tracked<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let this = &mut *self;
        // Cleared before the poll registers the waker: a wake-up after it sets it again.
        this.gate.flag(this.index).store(false, Ordering::SeqCst);
        let waker = Waker::from(Arc::new(Flagging {
            gate: this.gate.clone(),
            index: this.index,
            task: cx.waker().clone(),
        }));
        let poll = Pin::new(&mut this.inner).poll_read(&mut Context::from_waker(&waker), buf);
        if poll.is_ready() {
            this.gate.flag(this.index).store(true, Ordering::SeqCst);
        }
        poll
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

    #[tokio::test]
    async fn pending_from_the_write_until_the_lines_are_taken() {
        let gate = OutputGate::default();
        let (mut writer, reader) = tokio::io::duplex(1024);
        let mut lines = BufReader::new(gate.track(reader, LogStream::Stdout)).lines();
        // Waiting with nothing in hand: idle.
        assert!(
            tokio::time::timeout(Duration::from_millis(20), lines.next_line())
                .await
                .is_err()
        );
        assert!(!gate.pending());
        writer.write_all(b"one\ntwo\n").await.unwrap();
        // Woken: pending before the reader has run.
        assert!(gate.pending());
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("one"));
        assert!(gate.pending(), "a line is still in hand");
        assert_eq!(lines.next_line().await.unwrap().as_deref(), Some("two"));
        assert!(
            tokio::time::timeout(Duration::from_millis(20), lines.next_line())
                .await
                .is_err()
        );
        assert!(!gate.pending());
        gate.settle().await;
    }

    #[tokio::test(start_paused = true)]
    async fn settle_gives_up_after_its_limit() {
        let gate = OutputGate::default();
        gate.flag(1).store(true, Ordering::SeqCst);
        let started = tokio::time::Instant::now();
        gate.settle().await;
        assert!(started.elapsed() >= SETTLE_LIMIT);
        gate.closed(LogStream::Stderr);
        assert!(!gate.pending());
    }
}
