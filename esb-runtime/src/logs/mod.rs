//! Function log lines as a sandbox prints them, and where they go.
//!
//! The lines and the sinks are esb-logs' ([`LogLine`], [`LogSink`], ...), re-exported here;
//! this module adds what needs the runtime: the invocation's log tail and the `REPORT` line.

use std::sync::Arc;
use std::time::SystemTime;

use crate::SandboxId;

mod tail;

pub use esb_logs::{
    FanOut, LogLine, LogSink, LogStream, NullLogSink, TerminalLogSink, VictoriaLogsSink,
    function_log_sink,
};
pub use tail::{LogTail, TAIL_BYTES, TailCapture};

/// A log line's sandbox id compares with the runtime's.
impl PartialEq<SandboxId> for Arc<str> {
    fn eq(&self, other: &SandboxId) -> bool {
        **self == *other.as_str()
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

/// The `INIT_START` line Lambda writes as a sandbox starts, before any output of its init:
/// `INIT_START Runtime Version: <version>\tRuntime Version ARN: <arn>`; ESB's runtime
/// version is `esb.v1`.
pub fn init_start_line(region: &str) -> String {
    format!(
        "INIT_START Runtime Version: esb.v1\tRuntime Version ARN: arn:aws:lambda:{region}::runtime:esb.v1"
    )
}

/// The X-Ray part Lambda adds to the REPORT line of a traced invocation, from the trace
/// header the function got (`Root=1-...;Parent=...;Sampled=1`):
/// `XRAY TraceId: 1-...\tSegmentId: ...\tSampled: true`; `None` unless it is sampled.
pub fn xray_report(trace_header: &str) -> Option<String> {
    let field = |name: &str| {
        trace_header
            .split(';')
            .find_map(|part| part.trim().strip_prefix(name)?.strip_prefix('='))
    };
    if field("Sampled") != Some("1") {
        return None;
    }
    Some(format!(
        "XRAY TraceId: {}\tSegmentId: {}\tSampled: true",
        field("Root")?,
        field("Parent")?
    ))
}

/// `YYYY/MM/DD` of a time in UTC, as in Lambda's log stream names.
pub fn utc_date(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time)
        .format("%Y/%m/%d")
        .to_string()
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::*;

    #[test]
    fn sampled_traces_add_xray_to_report() {
        assert_eq!(
            xray_report(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=1"
            )
            .as_deref(),
            Some(
                "XRAY TraceId: 1-5759e988-bd862e3fe1be46a994272793\tSegmentId: 53995c3f42cd8ad8\tSampled: true"
            )
        );
        assert_eq!(
            xray_report(
                "Root=1-5759e988-bd862e3fe1be46a994272793;Parent=53995c3f42cd8ad8;Sampled=0"
            ),
            None
        );
    }

    #[test]
    fn dates_are_civil() {
        let day = |days: u64| utc_date(UNIX_EPOCH + Duration::from_secs(days * 86_400 + 3_599));
        assert_eq!(day(0), "1970/01/01");
        assert_eq!(day(19_723), "2024/01/01");
        assert_eq!(day(19_782), "2024/02/29");
    }

    #[test]
    fn a_line_names_its_sandbox() {
        let id: Arc<str> = "sb-1".into();
        assert!(id == SandboxId::new("sb-1"));
        assert!(id != SandboxId::new("sb-2"));
    }
}
