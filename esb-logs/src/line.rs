//! A function's log line as a sandbox prints it: the unit every [`LogSink`](crate::LogSink) takes.

use std::sync::Arc;
use std::time::SystemTime;

/// Where a function log line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LogStream {
    /// The function's standard output.
    Stdout,
    /// The function's standard error.
    Stderr,
    /// A line of the platform itself: `START`, `END`, `REPORT`, init and invocation errors.
    Platform,
}

impl LogStream {
    /// `stdout`, `stderr` or `platform`, as sent in the `stream` field.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stdout => "stdout",
            Self::Stderr => "stderr",
            Self::Platform => "platform",
        }
    }
}

/// One line of a function's log, with what is known about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogLine {
    /// When the line was read.
    pub time: SystemTime,
    /// The function.
    pub function_name: String,
    /// The sandbox that printed it; shared, so that a reader tags each line for the cost of
    /// a reference count.
    pub sandbox_id: Arc<str>,
    /// The request id of the invocation in flight, if any.
    pub request_id: Option<String>,
    /// The trace id of the invocation in flight, if any.
    pub trace_id: Option<String>,
    /// The stream it came from.
    pub stream: LogStream,
    /// The line, without its newline.
    pub message: String,
}
