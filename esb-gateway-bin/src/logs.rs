//! Function logs: on the terminal prefixed by function (like `sam local`), to VictoriaLogs,
//! and the last 4 KB of an invocation's log for the Invoke API's `X-Amz-Log-Type: Tail`.

use std::sync::Arc;

use esb_logs::{FunctionLine, LogShipper, Stream, function_record};
use esb_runtime::logs::{FanOut, LogLine, LogSink, LogStream, TerminalLogSink};
pub use esb_runtime::logs::{LogTail, TAIL_BYTES, TailCapture};

/// Sends each function log line to VictoriaLogs through a [`LogShipper`] (never blocks).
#[derive(Clone)]
pub struct VictoriaLogsSink(pub LogShipper);

impl LogSink for VictoriaLogsSink {
    fn log(&self, line: LogLine) {
        self.0.push(function_record(FunctionLine {
            time: line.time,
            function_name: line.function_name,
            sandbox_id: line.sandbox_id.as_str().to_owned(),
            request_id: line.request_id,
            trace_id: line.trace_id,
            stream: match line.stream {
                LogStream::Stdout => Stream::Stdout,
                LogStream::Stderr => Stream::Stderr,
                LogStream::Platform => Stream::Platform,
            },
            message: line.message,
        }));
    }
}

/// The terminal, plus VictoriaLogs when a shipper is given.
pub fn function_log_sink(shipper: Option<LogShipper>) -> Arc<dyn LogSink> {
    match shipper {
        None => Arc::new(TerminalLogSink),
        Some(shipper) => Arc::new(FanOut(vec![
            Arc::new(TerminalLogSink),
            Arc::new(VictoriaLogsSink(shipper)),
        ])),
    }
}
