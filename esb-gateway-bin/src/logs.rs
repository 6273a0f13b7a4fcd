//! Function logs: on the terminal prefixed by function (like `sam local`), to VictoriaLogs,
//! and the last 4 KB of an invocation's log for the Invoke API's `X-Amz-Log-Type: Tail`.

pub use esb_logs::{VictoriaLogsSink, function_log_sink};
pub use esb_runtime::logs::{LogTail, TAIL_BYTES, TailCapture};
