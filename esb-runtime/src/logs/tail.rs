//! The last 4 KB of an invocation's log, for the Invoke API's `X-Amz-Log-Type: Tail`.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;

use super::{LogLine, LogSink, LogStream};

/// Bytes of log in `X-Amz-Log-Result`, as Lambda: the end of the invocation's log.
pub const TAIL_BYTES: usize = 4096;

/// How long a `Tail` answer waits for the runtime's `END` / `REPORT` lines.
const CLOSING_WAIT: Duration = Duration::from_millis(50);

/// Invocations captured at once; beyond, a `Tail` answer has only the platform lines.
const MAX_CAPTURES: usize = 4096;

/// The log lines of the invocations that asked for `X-Amz-Log-Type: Tail`, for `X-Amz-Log-Result`.
///
/// A [`LogSink`]: give it to the runtimes (with the other sinks: [`LogTail::tee`]) and keep the
/// same handle where invocations are answered (the gateway's `GatewayConfig::log_tail`, the
/// agent's serve options). Only requests that asked for the tail are captured, each in a
/// bounded buffer of a few KB, and only until its answer is sent; while none is, a line costs
/// one atomic load. Lines of a sandbox on another host are captured by that host's agent and
/// come back in the invocation's response ([`crate::InvokeResponse::log_tail`]).
#[derive(Clone)]
pub struct LogTail {
    inner: Arc<TailInner>,
}

struct TailInner {
    /// Captures registered; 0 lets [`LogTail::log`] return without locking.
    active: AtomicUsize,
    captures: Mutex<Captures>,
    /// Most captures at once.
    limit: usize,
}

#[derive(Default)]
struct Captures {
    by_request: HashMap<String, Capture>,
    /// The sandbox each capture runs on, to keep the lines it prints once its invocation is
    /// answered (a runtime reads them without a request id then).
    by_sandbox: HashMap<Arc<str>, String>,
}

#[derive(Default)]
struct Capture {
    /// `START`, the function's lines and any platform error line.
    lines: Ring,
    /// `END` and `REPORT`: they close the log, whatever arrives after them.
    closing: Ring,
    started: bool,
    ended: bool,
    reported: bool,
    sandbox: Option<Arc<str>>,
    /// Signalled on `END` and `REPORT`.
    closed: Arc<Notify>,
}

impl std::fmt::Debug for LogTail {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogTail")
            .field("active", &self.inner.active.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Default for LogTail {
    fn default() -> Self {
        Self::new()
    }
}

impl LogTail {
    /// A tail capturing nothing until a request asks.
    pub fn new() -> Self {
        Self::with_limit(MAX_CAPTURES)
    }

    /// This tail and `other` as one sink, for the runtimes.
    pub fn tee(&self, other: Arc<dyn LogSink>) -> Arc<dyn LogSink> {
        Arc::new(Tee {
            tail: self.clone(),
            other,
        })
    }

    fn with_limit(limit: usize) -> Self {
        Self {
            inner: Arc::new(TailInner {
                active: AtomicUsize::new(0),
                captures: Mutex::new(Captures::default()),
                limit,
            }),
        }
    }

    fn captures(&self) -> MutexGuard<'_, Captures> {
        self.inner
            .captures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts capturing the lines of `request_id`, until the capture is finished or dropped.
    pub fn capture(&self, request_id: &str) -> TailCapture {
        let mut captures = self.captures();
        let closed = if captures.by_request.len() < self.inner.limit
            && !captures.by_request.contains_key(request_id)
        {
            let capture = Capture::default();
            let closed = Arc::clone(&capture.closed);
            captures.by_request.insert(request_id.to_owned(), capture);
            self.inner.active.fetch_add(1, Ordering::AcqRel);
            Some(closed)
        } else {
            tracing::debug!(request_id, "log tail not captured: too many captures");
            None
        };
        TailCapture {
            tail: self.clone(),
            request_id: request_id.to_owned(),
            closed,
        }
    }

    /// Whether the runtime started the invocation here, and whether it closed it (`REPORT`
    /// when `answered`, else `END`).
    fn progress(&self, request_id: &str, answered: bool) -> (bool, bool) {
        self.captures()
            .by_request
            .get(request_id)
            .map_or((false, false), |c| {
                (c.started, if answered { c.reported } else { c.ended })
            })
    }

    fn remove(&self, request_id: &str) -> Option<Capture> {
        let mut captures = self.captures();
        let capture = captures.by_request.remove(request_id)?;
        if let Some(sandbox) = &capture.sandbox
            && captures.by_sandbox.get(sandbox).map(String::as_str) == Some(request_id)
        {
            captures.by_sandbox.remove(sandbox);
        }
        self.inner.active.fetch_sub(1, Ordering::AcqRel);
        Some(capture)
    }
}

/// A [`LogTail`] beside another sink: a line is copied for the tail only while it captures.
struct Tee {
    tail: LogTail,
    other: Arc<dyn LogSink>,
}

impl LogSink for Tee {
    fn log(&self, line: LogLine) {
        if self.tail.inner.active.load(Ordering::Acquire) > 0 {
            self.tail.log(line.clone());
        }
        self.other.log(line);
    }
}

impl LogSink for LogTail {
    fn log(&self, line: LogLine) {
        if self.inner.active.load(Ordering::Acquire) == 0 {
            return;
        }
        let mut captures = self.captures();
        let Captures {
            by_request,
            by_sandbox,
        } = &mut *captures;
        let capture = match line.request_id.as_deref() {
            Some(id) => by_request.get_mut(id),
            None => by_sandbox
                .get(&line.sandbox_id)
                .and_then(|id| by_request.get_mut(id)),
        };
        let Some(capture) = capture else {
            return;
        };
        if capture.sandbox.is_none()
            && let Some(request_id) = &line.request_id
        {
            capture.sandbox = Some(line.sandbox_id.clone());
            by_sandbox.insert(line.sandbox_id, request_id.clone());
        }
        capture.push(line.stream, line.message);
    }
}

impl Capture {
    fn push(&mut self, stream: LogStream, message: String) {
        if stream == LogStream::Platform {
            if message.starts_with("START RequestId:") {
                self.started = true;
            } else if message.starts_with("END RequestId:") {
                self.ended = true;
                self.closing.push(message);
                self.closed.notify_one();
                return;
            } else if message.starts_with("REPORT RequestId:") {
                self.reported = true;
                self.closing.push(message);
                self.closed.notify_one();
                return;
            }
        }
        self.lines.push(message);
    }
}

/// The capture of one invocation's log, removed from its [`LogTail`] when finished or dropped.
pub struct TailCapture {
    tail: LogTail,
    request_id: String,
    /// `None` when the capture could not be registered.
    closed: Option<Arc<Notify>>,
}

impl TailCapture {
    /// The last [`TAIL_BYTES`] of the invocation's log, once the runtime has closed it.
    ///
    /// `report` is Lambda's `REPORT` line when the invocation was answered (`None` when it
    /// failed): the log must end with one, and gets this one if the runtime wrote none. Waits
    /// at most 50 ms for the runtime's own closing lines, and not at all when it never
    /// started the log here.
    pub async fn finish(mut self, report: Option<String>) -> String {
        if let Some(closed) = &self.closed {
            let deadline = tokio::time::Instant::now() + CLOSING_WAIT;
            loop {
                let (started, done) = self.tail.progress(&self.request_id, report.is_some());
                if !started || done {
                    break;
                }
                if tokio::time::timeout_at(deadline, closed.notified())
                    .await
                    .is_err()
                {
                    break;
                }
            }
        }
        let capture = self
            .closed
            .take()
            .and_then(|_| self.tail.remove(&self.request_id))
            .unwrap_or_default();
        capture.render(&self.request_id, report)
    }
}

impl Drop for TailCapture {
    fn drop(&mut self) {
        if self.closed.is_some() {
            self.tail.remove(&self.request_id);
        }
    }
}

impl Capture {
    /// START, the lines, END, REPORT, writing the platform lines the runtime did not; then
    /// the last [`TAIL_BYTES`].
    fn render(self, request_id: &str, report: Option<String>) -> String {
        let mut log = String::new();
        let mut line = |text: &str| {
            log.push_str(text);
            log.push('\n');
        };
        if !self.started {
            line(&format!("START RequestId: {request_id} Version: $LATEST"));
        }
        self.lines.lines.iter().for_each(|l| line(l));
        if !self.ended {
            line(&format!("END RequestId: {request_id}"));
        }
        self.closing.lines.iter().for_each(|l| line(l));
        if let Some(report) = report.filter(|_| !self.reported) {
            line(&report);
        }
        last_bytes(&log, TAIL_BYTES).to_owned()
    }
}

/// The newest lines: enough for the last [`TAIL_BYTES`], less than twice that.
#[derive(Default)]
struct Ring {
    lines: VecDeque<String>,
    bytes: usize,
}

impl Ring {
    fn push(&mut self, mut line: String) {
        if line.len() >= TAIL_BYTES {
            line = last_bytes(&line, TAIL_BYTES - 1).to_owned();
        }
        self.bytes += line.len() + 1;
        self.lines.push_back(line);
        // Keep the oldest line while the others are short of TAIL_BYTES: its end belongs
        // to the tail.
        while let Some(oldest) = self.lines.front() {
            let rest = self.bytes - (oldest.len() + 1);
            if rest < TAIL_BYTES {
                break;
            }
            self.bytes = rest;
            self.lines.pop_front();
        }
    }
}

/// The end of `text`: at most `max` bytes, starting on a character boundary.
fn last_bytes(text: &str, max: usize) -> &str {
    let mut start = text.len().saturating_sub(max);
    while !text.is_char_boundary(start) {
        start += 1;
    }
    &text[start..]
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::time::SystemTime;

    use super::*;

    fn line(request_id: Option<&str>, sandbox: &str, stream: LogStream, message: &str) -> LogLine {
        LogLine {
            time: SystemTime::now(),
            function_name: "f".into(),
            sandbox_id: sandbox.into(),
            request_id: request_id.map(str::to_owned),
            trace_id: None,
            stream,
            message: message.into(),
        }
    }

    fn platform(tail: &LogTail, id: &str, message: String) {
        tail.log(line(Some(id), "sb", LogStream::Platform, &message));
    }

    #[tokio::test]
    async fn the_log_of_one_request_in_lambdas_order() {
        let tail = LogTail::new();
        let capture = tail.capture("r1");
        platform(&tail, "r1", "START RequestId: r1 Version: $LATEST".into());
        tail.log(line(Some("r1"), "sb", LogStream::Stdout, "hello"));
        tail.log(line(Some("r2"), "other", LogStream::Stdout, "not mine"));
        platform(&tail, "r1", "END RequestId: r1".into());
        platform(
            &tail,
            "r1",
            "REPORT RequestId: r1\tDuration: 1.00 ms".into(),
        );
        // Printed before the answer, read after it: no request id, same sandbox.
        tail.log(line(None, "sb", LogStream::Stderr, "late"));
        tail.log(line(None, "elsewhere", LogStream::Stdout, "unrelated"));
        let log = capture
            .finish(Some("REPORT RequestId: r1\tsynthetic".into()))
            .await;
        assert_eq!(
            log,
            "START RequestId: r1 Version: $LATEST\nhello\nlate\nEND RequestId: r1\n\
             REPORT RequestId: r1\tDuration: 1.00 ms\n"
        );
        assert_eq!(tail.inner.active.load(Ordering::Acquire), 0);
        assert!(tail.captures().by_sandbox.is_empty());
    }

    #[tokio::test]
    async fn lines_the_runtime_never_sent_are_written_by_the_capture() {
        let tail = LogTail::new();
        let log = tail
            .capture("r1")
            .finish(Some("REPORT RequestId: r1\tDuration: 2.00 ms".into()))
            .await;
        assert_eq!(
            log,
            "START RequestId: r1 Version: $LATEST\nEND RequestId: r1\n\
             REPORT RequestId: r1\tDuration: 2.00 ms\n"
        );
        // A failed invocation ends with END, and no REPORT.
        let log = tail.capture("r2").finish(None).await;
        assert_eq!(
            log,
            "START RequestId: r2 Version: $LATEST\nEND RequestId: r2\n"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_started_log_waits_briefly_for_its_report() {
        let tail = LogTail::new();
        let capture = tail.capture("r1");
        platform(&tail, "r1", "START RequestId: r1 Version: $LATEST".into());
        let writer = {
            let tail = tail.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                platform(&tail, "r1", "END RequestId: r1".into());
                platform(&tail, "r1", "REPORT RequestId: r1\tfrom the runtime".into());
            })
        };
        let log = capture
            .finish(Some("REPORT RequestId: r1\tsynthetic".into()))
            .await;
        writer.await.unwrap();
        assert!(log.ends_with("END RequestId: r1\nREPORT RequestId: r1\tfrom the runtime\n"));

        // No REPORT within the wait: the gateway writes it.
        let capture = tail.capture("r2");
        platform(&tail, "r2", "START RequestId: r2 Version: $LATEST".into());
        let started = tokio::time::Instant::now();
        let log = capture
            .finish(Some("REPORT RequestId: r2\tsynthetic".into()))
            .await;
        assert_eq!(started.elapsed(), CLOSING_WAIT);
        assert!(log.ends_with("END RequestId: r2\nREPORT RequestId: r2\tsynthetic\n"));
    }

    #[tokio::test]
    async fn the_tail_is_the_last_4_kb() {
        let tail = LogTail::new();
        let capture = tail.capture("r1");
        platform(&tail, "r1", "START RequestId: r1 Version: $LATEST".into());
        for i in 0..500 {
            tail.log(line(
                Some("r1"),
                "sb",
                LogStream::Stdout,
                &format!("line {i:04} é"),
            ));
        }
        tail.log(line(
            Some("r1"),
            "sb",
            LogStream::Stdout,
            &"x".repeat(10_000),
        ));
        tail.log(line(Some("r1"), "sb", LogStream::Stdout, "last"));
        {
            let captures = tail.captures();
            let ring = &captures.by_request["r1"].lines;
            assert!(ring.bytes < 2 * TAIL_BYTES);
            assert_eq!(
                ring.bytes,
                ring.lines.iter().map(|l| l.len() + 1).sum::<usize>()
            );
        }
        platform(&tail, "r1", "END RequestId: r1".into());
        let log = capture.finish(Some("REPORT RequestId: r1".into())).await;
        assert!(log.len() <= TAIL_BYTES, "{}", log.len());
        assert!(log.ends_with("xxx\nlast\nEND RequestId: r1\nREPORT RequestId: r1\n"));
        assert!(!log.contains("START"));
        assert_eq!(last_bytes("aé", 1), "");
        assert_eq!(last_bytes("aé", 2), "é");
    }

    #[test]
    fn nothing_is_kept_for_requests_that_did_not_ask() {
        let tail = LogTail::with_limit(1);
        tail.log(line(Some("r0"), "sb", LogStream::Stdout, "dropped"));
        assert!(tail.captures().by_request.is_empty());
        let first = tail.capture("r1");
        // Over the limit: not captured, and dropping it leaves the first alone.
        drop(tail.capture("r2"));
        assert_eq!(tail.inner.active.load(Ordering::Acquire), 1);
        tail.log(line(Some("r2"), "sb", LogStream::Stdout, "not captured"));
        assert_eq!(tail.captures().by_request.len(), 1);
        // An abandoned request (client gone) frees its capture.
        drop(first);
        assert_eq!(tail.inner.active.load(Ordering::Acquire), 0);
        assert!(tail.captures().by_request.is_empty());
    }
}
