//! Function log lines as a sandbox prints them, and where they go.

use std::time::SystemTime;

use crate::SandboxId;

mod tail;

pub use tail::{LogTail, TAIL_BYTES, TailCapture};

/// Where a log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LogStream {
    /// The function's standard output.
    Stdout,
    /// The function's standard error.
    Stderr,
    /// A line of the platform itself: `START`, `END`, `REPORT`, init errors.
    Platform,
}

/// One line of a function's log, with what is known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was read.
    pub time: SystemTime,
    /// The function.
    pub function_name: String,
    /// The sandbox that printed it.
    pub sandbox_id: SandboxId,
    /// The request id of the invocation in flight, if any.
    pub request_id: Option<String>,
    /// The trace id of the invocation in flight, if any.
    pub trace_id: Option<String>,
    /// The stream it came from.
    pub stream: LogStream,
    /// The line, without its newline.
    pub message: String,
}

/// Receives function log lines. Must not block: it is called from the reader of the sandbox's output.
pub trait LogSink: Send + Sync + 'static {
    /// Takes one line.
    fn log(&self, line: LogLine);
}

/// Prints each line to standard error, prefixed by the function's name, like `sam local`.
///
/// Lines go through a bounded queue to one writer thread per process, which writes them in
/// batches: a request never waits on the terminal, and a busy gateway makes one `write` per
/// batch rather than several per line. When the queue is full a line is dropped and counted;
/// the count is printed with the next batch. [`TerminalLogSink::flush`] waits for the queue
/// to drain (call it before the process exits).
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalLogSink;

impl LogSink for TerminalLogSink {
    fn log(&self, line: LogLine) {
        terminal::get().push(terminal::Message::Line(line));
    }
}

impl TerminalLogSink {
    /// Waits until every line queued so far is written, for at most `timeout`.
    pub fn flush(timeout: std::time::Duration) {
        terminal::get().flush(timeout);
    }
}

mod terminal {
    //! The process-wide writer thread behind [`super::TerminalLogSink`].

    use std::io::Write;
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    use super::LogLine;

    /// Lines waiting for the writer at most.
    const QUEUE: usize = 16 * 1024;
    /// Bytes written at once at most.
    const BATCH_BYTES: usize = 64 * 1024;
    /// Pause after a batch, so that a busy gateway's lines gather into few writes.
    const GATHER: Duration = Duration::from_millis(2);

    pub(super) enum Message {
        Line(LogLine),
        Flush(SyncSender<()>),
    }

    pub(super) struct Terminal {
        queue: SyncSender<Message>,
        dropped: Arc<AtomicU64>,
    }

    pub(super) fn get() -> &'static Terminal {
        static TERMINAL: OnceLock<Terminal> = OnceLock::new();
        TERMINAL.get_or_init(|| Terminal::spawn(std::io::stderr(), QUEUE))
    }

    impl Terminal {
        /// A queue of `capacity` lines and the thread writing them to `out`.
        pub(super) fn spawn(out: impl Write + Send + 'static, capacity: usize) -> Self {
            let (queue, lines) = sync_channel(capacity);
            let dropped = Arc::new(AtomicU64::new(0));
            let counted = Arc::clone(&dropped);
            let spawned = std::thread::Builder::new()
                .name("esb-terminal-log".into())
                .spawn(move || write_lines(&lines, &counted, out));
            if let Err(err) = spawned {
                // Without a writer every line is dropped (and counted), never blocked on.
                let _ = writeln!(std::io::stderr(), "esb: no terminal log writer: {err}");
            }
            Self { queue, dropped }
        }

        pub(super) fn push(&self, message: Message) {
            if self.queue.try_send(message).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }

        /// Waits for the lines queued so far, for at most `timeout` in all: a terminal that
        /// does not drain (a full queue, a stuck pipe) must not hold the process at exit.
        pub(super) fn flush(&self, timeout: Duration) {
            let deadline = Instant::now() + timeout;
            let (done, flushed) = sync_channel(1);
            let mut message = Message::Flush(done);
            loop {
                match self.queue.try_send(message) {
                    Ok(()) => break,
                    Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                        message = back;
                        std::thread::sleep(GATHER);
                    }
                    Err(_) => return,
                }
            }
            let _ = flushed.recv_timeout(deadline.saturating_duration_since(Instant::now()));
        }
    }

    fn write_lines(lines: &Receiver<Message>, dropped: &AtomicU64, mut to: impl Write) {
        let mut out = Vec::with_capacity(BATCH_BYTES);
        let mut flushed = Vec::new();
        while let Ok(first) = lines.recv() {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => {
                        let _ = writeln!(out, "[{}] {}", line.function_name, line.message);
                    }
                    Message::Flush(done) => flushed.push(done),
                }
                if out.len() < BATCH_BYTES {
                    next = lines.try_recv().ok();
                }
            }
            let dropped = dropped.swap(0, Ordering::Relaxed);
            if dropped > 0 {
                let _ = writeln!(
                    out,
                    "[esb] {dropped} log lines dropped: the terminal could not keep up"
                );
            }
            let _ = to.write_all(&out).and_then(|()| to.flush());
            out.clear();
            for done in flushed.drain(..) {
                let _ = done.try_send(());
            }
            std::thread::sleep(GATHER);
        }
    }

    #[cfg(test)]
    mod tests {
        #![allow(clippy::unwrap_used)]

        use std::sync::Mutex;
        use std::sync::mpsc::{Sender, channel};
        use std::time::SystemTime;

        use super::*;
        use crate::SandboxId;
        use crate::logs::LogStream;

        fn line(message: &str) -> Message {
            Message::Line(LogLine {
                time: SystemTime::now(),
                function_name: "fn".into(),
                sandbox_id: SandboxId::from("sb"),
                request_id: None,
                trace_id: None,
                stream: LogStream::Stdout,
                message: message.into(),
            })
        }

        /// What the writer thread wrote, shared with the test.
        #[derive(Clone, Default)]
        struct Written(Arc<Mutex<Vec<u8>>>);

        impl Write for Written {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        impl Written {
            fn text(&self) -> String {
                String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
            }
        }

        #[test]
        fn lines_are_written_prefixed_in_order_by_the_time_flush_returns() {
            let written = Written::default();
            let terminal = Terminal::spawn(written.clone(), 1024);
            for i in 0..300 {
                terminal.push(line(&format!("line {i}")));
            }
            terminal.flush(Duration::from_secs(10));
            let expected: String = (0..300).map(|i| format!("[fn] line {i}\n")).collect();
            assert_eq!(written.text(), expected);
        }

        /// A terminal that hangs on its first write until the test lets it go.
        struct Stuck {
            written: Written,
            entered: Sender<()>,
            release: Mutex<Option<Receiver<()>>>,
        }

        impl Write for Stuck {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                if let Some(release) = self.release.lock().unwrap().take() {
                    let _ = self.entered.send(());
                    let _ = release.recv();
                }
                self.written.write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }

        #[test]
        fn a_stuck_terminal_drops_and_counts_lines_and_never_blocks_the_caller() {
            let written = Written::default();
            let (entered_tx, entered) = channel();
            let (release, release_rx) = channel();
            let stuck = Stuck {
                written: written.clone(),
                entered: entered_tx,
                release: Mutex::new(Some(release_rx)),
            };
            let terminal = Terminal::spawn(stuck, 4);
            terminal.push(line("first"));
            entered.recv().unwrap();
            // The writer hangs: 4 lines fit in the queue, 6 are dropped, none blocks.
            for i in 0..10 {
                terminal.push(line(&format!("queued {i}")));
            }
            // The queue is full and the writer stuck: flush gives up at its timeout.
            let started = Instant::now();
            terminal.flush(Duration::from_millis(100));
            assert!(started.elapsed() < Duration::from_secs(5));
            release.send(()).unwrap();
            terminal.flush(Duration::from_secs(10));
            let text = written.text();
            assert!(text.starts_with("[fn] first\n"), "{text}");
            for i in 0..4 {
                assert!(text.contains(&format!("[fn] queued {i}\n")), "{text}");
            }
            assert!(!text.contains("queued 4"), "{text}");
            assert!(
                text.contains("[esb] 6 log lines dropped: the terminal could not keep up"),
                "{text}"
            );
        }
    }
}

/// Drops every line.
#[derive(Clone, Copy, Debug, Default)]
pub struct NullLogSink;

impl LogSink for NullLogSink {
    fn log(&self, _line: LogLine) {}
}

/// Sends each line to several sinks.
pub struct FanOut(pub Vec<std::sync::Arc<dyn LogSink>>);

impl LogSink for FanOut {
    fn log(&self, line: LogLine) {
        if let Some((last, rest)) = self.0.split_last() {
            for sink in rest {
                sink.log(line.clone());
            }
            last.log(line);
        }
    }
}

/// Lambda's REPORT line for a finished invocation.
pub fn report_line(request_id: &str, response: &crate::InvokeResponse, memory_mb: u32) -> String {
    let mut line = format!(
        "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: {memory_mb} MB\tMax Memory Used: {} MB",
        response.duration.as_secs_f64() * 1000.0,
        response.billed_duration.as_millis(),
        response.max_memory_used_mb,
    );
    if let Some(init) = response.init_duration {
        line.push_str(&format!(
            "\tInit Duration: {:.2} ms",
            init.as_secs_f64() * 1000.0
        ));
    }
    line
}

/// `YYYY/MM/DD` of a time in UTC, as in Lambda's log stream names.
pub fn utc_date(time: SystemTime) -> String {
    let secs = time
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (y, m, d) = civil_from_days(i64::try_from(secs / 86_400).unwrap_or(0));
    format!("{y:04}/{m:02}/{d:02}")
}

/// Days since 1970-01-01 to a (year, month, day) date.
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_civil() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(19_723), (2024, 1, 1));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }
}
