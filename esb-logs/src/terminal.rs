//! The terminal sink: function lines on standard error, prefixed by function, like `sam local`.

use crate::line::LogLine;
use crate::sink::LogSink;

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
        writer::get().push(writer::Message::Line(line));
    }
}

impl TerminalLogSink {
    /// Waits until every line queued so far is written, for at most `timeout`.
    pub fn flush(timeout: std::time::Duration) {
        writer::get().flush(timeout);
    }
}

/// A `tracing_subscriber` writer onto the same queue and thread as [`TerminalLogSink`]: a
/// service's own records (the access log among them) reach standard error without a
/// `write` per record and without ever blocking the caller; call [`TerminalLogSink::flush`]
/// before the process exits.
#[derive(Clone, Copy, Debug, Default)]
pub struct TerminalWriter;

/// One record being formatted: handed to the writer thread whole when dropped.
#[derive(Debug, Default)]
pub struct TerminalRecord(Vec<u8>);

impl std::io::Write for TerminalRecord {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for TerminalRecord {
    fn drop(&mut self) {
        if !self.0.is_empty() {
            writer::get().push(writer::Message::Text(std::mem::take(&mut self.0)));
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for TerminalWriter {
    type Writer = TerminalRecord;

    fn make_writer(&'a self) -> Self::Writer {
        TerminalRecord(Vec::with_capacity(256))
    }
}

mod writer {
    //! The process-wide writer thread behind [`super::TerminalLogSink`].

    use std::io::Write;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
    use std::sync::{Arc, OnceLock};
    use std::time::{Duration, Instant};

    use crate::line::LogLine;

    /// Lines waiting for the writer at most.
    const QUEUE: usize = 16 * 1024;
    /// Bytes of lines waiting for the writer at most: a terminal that does not read (or a
    /// function that writes megabytes) costs at most this much memory.
    const QUEUE_BYTES: usize = 16 * 1024 * 1024;
    /// Bytes written at once at most.
    const BATCH_BYTES: usize = 64 * 1024;
    /// Pause after a batch, so that a busy gateway's lines gather into few writes.
    const GATHER: Duration = Duration::from_millis(2);

    pub(super) enum Message {
        Line(LogLine),
        /// Text already formatted (a service's record), written as it is.
        Text(Vec<u8>),
        Flush(SyncSender<()>),
    }

    pub(super) struct Terminal {
        queue: SyncSender<Message>,
        dropped: Arc<AtomicU64>,
        /// Bytes of the lines in the queue.
        queued: Arc<AtomicUsize>,
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
            let queued = Arc::new(AtomicUsize::new(0));
            let written = Arc::clone(&queued);
            let spawned = std::thread::Builder::new()
                .name("esb-terminal-log".into())
                .spawn(move || write_lines(&lines, &counted, &written, out));
            if let Err(err) = spawned {
                // Without a writer every line is dropped (and counted), never blocked on.
                let _ = writeln!(std::io::stderr(), "esb: no terminal log writer: {err}");
            }
            Self {
                queue,
                dropped,
                queued,
            }
        }

        pub(super) fn push(&self, message: Message) {
            let bytes = message.bytes();
            if self.queued.fetch_add(bytes, Ordering::AcqRel) + bytes > QUEUE_BYTES {
                self.queued.fetch_sub(bytes, Ordering::AcqRel);
                self.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            if self.queue.try_send(message).is_err() {
                self.queued.fetch_sub(bytes, Ordering::AcqRel);
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

    impl Message {
        /// What the message counts against the queue's byte bound.
        fn bytes(&self) -> usize {
            match self {
                Message::Line(line) => line.message.len() + line.function_name.len(),
                Message::Text(text) => text.len(),
                Message::Flush(_) => 0,
            }
        }
    }

    fn write_lines(
        lines: &Receiver<Message>,
        dropped: &AtomicU64,
        queued: &AtomicUsize,
        mut to: impl Write,
    ) {
        let mut out = Vec::with_capacity(BATCH_BYTES);
        let mut flushed = Vec::new();
        while let Ok(first) = lines.recv() {
            let mut next = Some(first);
            while let Some(message) = next.take() {
                queued.fetch_sub(message.bytes(), Ordering::AcqRel);
                match message {
                    Message::Line(line) => {
                        let _ = writeln!(out, "[{}] {}", line.function_name, line.message);
                    }
                    Message::Text(text) => out.extend_from_slice(&text),
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
        use crate::line::LogStream;

        fn line(message: &str) -> Message {
            Message::Line(LogLine {
                time: SystemTime::now(),
                function_name: "fn".into(),
                sandbox_id: "sb".into(),
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

        #[test]
        fn formatted_records_and_function_lines_keep_their_order() {
            let written = Written::default();
            let terminal = Terminal::spawn(written.clone(), 1024);
            terminal.push(Message::Text(
                b"INFO esb_gateway::access: GET / 200\n".to_vec(),
            ));
            terminal.push(line("from the function"));
            terminal.push(Message::Text(b"WARN request failed\n".to_vec()));
            terminal.flush(Duration::from_secs(10));
            assert_eq!(
                written.text(),
                "INFO esb_gateway::access: GET / 200\n[fn] from the function\nWARN request failed\n"
            );
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
