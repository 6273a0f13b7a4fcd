//! Whether a sandbox's output readers still hold lines the function wrote: so `END` and
//! `REPORT` follow every line the function wrote before its answer, as on Lambda.
//!
//! A function writes its lines, then posts its answer. By the time the answer is read, those
//! lines are in the output pipe, or already in a reader's hands; but the reader task may not
//! have run yet, and the pipe's readiness may even be delivered after the answer's socket's
//! (the socket can already sit in the poller's ready list, for writability). So each reader
//! marks itself pending from the moment its pipe wakes it or it reads until it has logged
//! every complete line it read and waits again, and the gate also asks the pipes themselves
//! whether they hold unread bytes (`poll`, where the backend gave it their descriptors);
//! [`OutputGate::settle`] waits (boundedly) until neither holds anything.

#![cfg_attr(
    not(any(feature = "process", feature = "containerd")),
    allow(dead_code)
)]

use std::pin::Pin;
use std::sync::Arc;
#[cfg(any(feature = "process", feature = "containerd"))]
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Wake, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};

use crate::logs::LogStream;

/// The longest an invocation's `END` waits for its output readers.
const SETTLE_LIMIT: Duration = Duration::from_millis(100);

/// A pipe the gate can ask.
#[cfg(any(feature = "process", feature = "containerd"))]
trait Pipe: std::os::fd::AsFd + Send + Sync + std::fmt::Debug {}

#[cfg(any(feature = "process", feature = "containerd"))]
impl<T: std::os::fd::AsFd + Send + Sync + std::fmt::Debug> Pipe for T {}

/// The pending flags of a sandbox's stdout and stderr readers, and their pipes.
#[derive(Clone, Debug, Default)]
pub(crate) struct OutputGate(Arc<Gate>);

#[derive(Debug, Default)]
struct Gate {
    flags: [AtomicBool; 2],
    /// The readers' pipes (shared with them, or duplicates), asked whether they hold
    /// unread bytes.
    #[cfg(any(feature = "process", feature = "containerd"))]
    pipes: Mutex<Vec<Arc<dyn Pipe>>>,
}

impl OutputGate {
    /// True while a reader has output in hand (or has been woken to read some).
    pub(crate) fn pending(&self) -> bool {
        self.0.flags.iter().any(|flag| flag.load(Ordering::SeqCst))
    }

    /// Also asks `pipe` (a reader's pipe or FIFO) whether it holds unread bytes, in
    /// [`settle`](Self::settle).
    #[cfg(feature = "containerd")]
    pub(crate) fn watch(&self, pipe: &impl std::os::fd::AsFd) {
        if let Ok(fd) = pipe.as_fd().try_clone_to_owned() {
            self.0
                .pipes
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .push(Arc::new(fd));
        }
    }

    /// [`watch`](Self::watch) without a duplicate descriptor: the gate asks the reader's
    /// own pipe.
    #[cfg(feature = "process")]
    pub(crate) fn watch_shared(&self, pipe: &SharedPipe) {
        self.0
            .pipes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push(pipe.0.clone());
    }

    /// True while a watched pipe holds bytes no reader has taken yet.
    #[cfg(any(feature = "process", feature = "containerd"))]
    fn unread(&self) -> bool {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd;
        let pipes = self
            .0
            .pipes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if pipes.is_empty() {
            return false;
        }
        let mut polls: Vec<PollFd<'_>> = pipes
            .iter()
            .map(|fd| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
            .collect();
        matches!(poll(&mut polls, PollTimeout::ZERO), Ok(n) if n > 0)
            && polls.iter().any(|p| {
                p.revents()
                    .is_some_and(|events| events.contains(PollFlags::POLLIN))
            })
    }

    #[cfg(not(any(feature = "process", feature = "containerd")))]
    fn unread(&self) -> bool {
        false
    }

    /// True while output written so far may not be logged yet.
    fn busy(&self) -> bool {
        self.pending() || self.unread()
    }

    /// Waits until both readers are idle and their pipes empty, for at most [`SETTLE_LIMIT`].
    pub(crate) async fn settle(&self) {
        if !self.busy() {
            return;
        }
        let deadline = tokio::time::Instant::now() + SETTLE_LIMIT;
        let mut spins = 0u32;
        while self.busy() && tokio::time::Instant::now() < deadline {
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
        self.0.flags[index].store(false, Ordering::SeqCst);
    }

    fn flag(&self, index: usize) -> &AtomicBool {
        &self.0.flags[index]
    }
}

/// The read end of a pipe, shared by its reader and the [`OutputGate`] that asks it whether
/// it holds unread bytes: one descriptor for both.
#[cfg(feature = "process")]
#[derive(Clone, Debug)]
pub(crate) struct SharedPipe(Arc<tokio::net::unix::pipe::Receiver>);

#[cfg(feature = "process")]
impl SharedPipe {
    /// The pipe's read end `fd`, made non-blocking and registered with the runtime.
    pub(crate) fn new(fd: std::os::fd::OwnedFd) -> std::io::Result<Self> {
        Ok(Self(Arc::new(
            tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?,
        )))
    }
}

#[cfg(feature = "process")]
impl AsyncRead for SharedPipe {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        loop {
            std::task::ready!(self.0.poll_read_ready(cx))?;
            match self.0.try_read(buf.initialize_unfilled()) {
                Ok(read) => {
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(err) if err.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(err) => return Poll::Ready(Err(err)),
            }
        }
    }
}

/// A reader whose gate flag is set when its pipe wakes it or it reads, and cleared when it
/// waits with nothing in hand (a wake-up lost to that clearing leaves its bytes in the pipe,
/// where [`OutputGate::unread`] sees them).
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
        let waker = Waker::from(Arc::new(Flagging {
            gate: this.gate.clone(),
            index: this.index,
            task: cx.waker().clone(),
        }));
        // Set while the read runs: bytes leave the pipe only into a pending reader's hands.
        this.gate.flag(this.index).store(true, Ordering::SeqCst);
        let poll = Pin::new(&mut this.inner).poll_read(&mut Context::from_waker(&waker), buf);
        this.gate
            .flag(this.index)
            .store(poll.is_ready(), Ordering::SeqCst);
        poll
    }
}

/// The longest log record a line of function output becomes, marker included: Lambda's own
/// limit of a log event (256 KB). A longer line is split into records of at most this size,
/// each but the last ending with [`SPLIT_MARKER`].
pub const MAX_LINE_BYTES: usize = 256 * 1024;

/// Ends every record of a split line but the last.
pub const SPLIT_MARKER: &str = " [esb: line over 256 KB, continued in the next record]";

/// How much of its pipe a reader takes at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Reads a function's output as lines: any bytes (invalid UTF-8 becomes U+FFFD), lines cut
/// into records of at most [`MAX_LINE_BYTES`], so that memory stays bounded whatever the
/// function writes, and the pipe is read until it ends (never closed on bad input).
///
/// A reader waiting for output holds no buffer (an idle sandbox has two of them): one is
/// taken when the pipe has bytes, and given back once they are all handed out and the pipe
/// is empty again.
pub(crate) struct LineReader<R> {
    inner: R,
    /// Bytes read, `buf[start..end]` not handed out yet; no allocation while waiting.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    line: Vec<u8>,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    /// Lines of `reader`.
    pub(crate) fn new(reader: R) -> Self {
        Self {
            inner: reader,
            buf: Vec::new(),
            start: 0,
            end: 0,
            line: Vec::new(),
        }
    }

    /// Reads more once everything read before is handed out: `false` once the output ended
    /// (or cannot be read any more).
    async fn fill(&mut self) -> bool {
        std::future::poll_fn(|cx| {
            loop {
                if self.buf.is_empty() {
                    self.buf = vec![0; READ_CHUNK];
                }
                let mut read = ReadBuf::new(&mut self.buf);
                match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                    Poll::Ready(Ok(())) => {
                        self.start = 0;
                        self.end = read.filled().len();
                        return Poll::Ready(self.end > 0);
                    }
                    Poll::Ready(Err(err)) if err.kind() == std::io::ErrorKind::Interrupted => {}
                    Poll::Ready(Err(_)) => {
                        (self.start, self.end) = (0, 0);
                        return Poll::Ready(false);
                    }
                    Poll::Pending => {
                        // Nothing to read: waiting costs no buffer.
                        self.buf = Vec::new();
                        (self.start, self.end) = (0, 0);
                        return Poll::Pending;
                    }
                }
            }
        })
        .await
    }

    /// The next line (or piece of a long one), without its `\n` or `\r\n`; `None` once the
    /// output ended (or cannot be read any more).
    pub(crate) async fn next_line(&mut self) -> Option<String> {
        let room = MAX_LINE_BYTES - SPLIT_MARKER.len();
        loop {
            if self.start == self.end && !self.fill().await {
                if self.line.is_empty() {
                    return None;
                }
                let line = std::mem::take(&mut self.line);
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let available = &self.buf[self.start..self.end];
            let window = &available[..available.len().min(room - self.line.len())];
            if let Some(at) = window.iter().position(|&b| b == b'\n') {
                self.line.extend_from_slice(&window[..at]);
                self.start += at + 1;
                if self.line.last() == Some(&b'\r') {
                    self.line.pop();
                }
                let line = std::mem::take(&mut self.line);
                return Some(String::from_utf8_lossy(&line).into_owned());
            }
            let taken = window.len();
            self.line.extend_from_slice(window);
            self.start += taken;
            if self.line.len() >= room {
                // Cut on a character boundary: an incomplete character at the end starts the
                // next piece.
                let rest = self.line.split_off(incomplete_tail(&self.line));
                let piece = std::mem::replace(&mut self.line, rest);
                let mut text = String::from_utf8_lossy(&piece).into_owned();
                text.push_str(SPLIT_MARKER);
                return Some(text);
            }
        }
    }
}

/// Where an incomplete UTF-8 character at the end of `bytes` starts (`bytes.len()` if none).
fn incomplete_tail(bytes: &[u8]) -> usize {
    let from = bytes.len().saturating_sub(3);
    for start in (from..bytes.len()).rev() {
        let lead = bytes[start];
        if lead & 0xC0 == 0x80 {
            continue;
        }
        let needed = match lead {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if bytes.len() - start < needed {
            start
        } else {
            bytes.len()
        };
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn any_bytes_become_lines_and_long_lines_are_split_with_a_marker() {
        let mut input = b"ok\r\nbad \xff\xfe byte\n\nafter\n".to_vec();
        // 600 KB without a newline, with a 3-byte character across the first cut.
        let room = MAX_LINE_BYTES - SPLIT_MARKER.len();
        let mut long = vec![b'a'; room - 1];
        long.extend_from_slice("\u{20ac}".as_bytes());
        long.extend(std::iter::repeat_n(b'b', 600 * 1024 - long.len()));
        input.extend_from_slice(&long);
        input.extend_from_slice(b"\nlast without newline");
        let mut lines = LineReader::new(&input[..]);
        let mut got = Vec::new();
        while let Some(line) = lines.next_line().await {
            got.push(line);
        }
        assert_eq!(&got[..4], ["ok", "bad \u{fffd}\u{fffd} byte", "", "after"]);
        let pieces = &got[4..got.len() - 1];
        assert_eq!(pieces.len(), 3);
        for piece in pieces {
            assert!(piece.len() <= MAX_LINE_BYTES, "{}", piece.len());
        }
        assert!(pieces[0].ends_with(SPLIT_MARKER) && pieces[1].ends_with(SPLIT_MARKER));
        assert!(!pieces[2].ends_with(SPLIT_MARKER));
        let joined: String = pieces
            .iter()
            .map(|p| p.trim_end_matches(SPLIT_MARKER))
            .collect();
        assert_eq!(joined.as_bytes(), &long[..]);
        assert_eq!(got.last().map(String::as_str), Some("last without newline"));
    }

    #[test]
    fn an_incomplete_character_at_the_end_is_found() {
        assert_eq!(incomplete_tail(b"abc"), 3);
        assert_eq!(incomplete_tail("a\u{20ac}".as_bytes()), 4);
        assert_eq!(incomplete_tail(&"a\u{20ac}".as_bytes()[..3]), 1);
        assert_eq!(incomplete_tail(&"\u{1f600}".as_bytes()[..3]), 0);
        assert_eq!(incomplete_tail(b"\xff"), 1);
    }
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

    #[cfg(feature = "containerd")]
    #[test]
    fn bytes_left_in_a_watched_pipe_keep_the_gate_busy_whatever_the_flags() {
        use std::io::{Read, Write};
        let gate = OutputGate::default();
        let (mut reader, mut writer) = std::io::pipe().unwrap();
        gate.watch(&reader);
        assert!(!gate.busy());
        // Written, and no reader was woken (its wake-up may come late): still busy.
        writer.write_all(b"line\n").unwrap();
        assert!(!gate.pending());
        assert!(gate.busy());
        let mut buf = [0u8; 5];
        reader.read_exact(&mut buf).unwrap();
        assert!(!gate.busy());
        // A closed writer with nothing left is not output.
        drop(writer);
        assert!(!gate.busy());
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
