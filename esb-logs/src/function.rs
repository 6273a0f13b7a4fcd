//! Function log lines (a sandbox's stdout/stderr and the platform's START/END/REPORT) as
//! records, and the sink that ships them to VictoriaLogs.

use std::borrow::Cow;
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::line::{LogLine, LogStream};
use crate::record::{JOB_LAMBDA, Level, RESERVED_FIELDS, Record};
use crate::shipper::LogShipper;
use crate::sink::{FanOut, LogSink};
use crate::terminal::TerminalLogSink;

/// Sends each function log line to VictoriaLogs through a [`LogShipper`] (never blocks).
#[derive(Clone, Debug)]
pub struct VictoriaLogsSink(pub LogShipper);

impl LogSink for VictoriaLogsSink {
    fn log(&self, line: LogLine) {
        self.0.push(function_record(line));
    }
}

/// Function lines on the terminal, plus VictoriaLogs when a shipper is given.
pub fn function_log_sink(shipper: Option<LogShipper>) -> Arc<dyn LogSink> {
    match shipper {
        None => Arc::new(TerminalLogSink),
        Some(shipper) => Arc::new(FanOut(vec![
            Arc::new(TerminalLogSink),
            Arc::new(VictoriaLogsSink(shipper)),
        ])),
    }
}

/// The record of a function log line (`job=lambda`, `container_name` = the function).
///
/// Lines in Lambda's JSON log format (`{"level":"INFO","message":..}`, also `msg`, `levelname`,
/// and the `fields.message` of `tracing` JSON) keep their level and message, and their other
/// keys become fields (`function.<key>` where the name is one ESB sets itself). Lines in the
/// text formats of Lambda's runtimes (`[ERROR]\t...` or `time\trequest-id\tERROR\t...`) keep
/// their level. Platform lines are `info`, or `error` when they report an error.
pub fn function_record(line: LogLine) -> Record {
    let mut level = Level::Info;
    let mut message = line.message;
    let mut fields: Vec<(Cow<'static, str>, String)> =
        vec![(Cow::Borrowed("stream"), line.stream.as_str().to_owned())];
    match line.stream {
        LogStream::Platform => {
            if message.contains(" Error: ") || message.contains("Status: error") {
                level = Level::Error;
            }
        }
        LogStream::Stdout | LogStream::Stderr => {
            if let Some(json) = parse_json_line(&message) {
                level = json.level.unwrap_or(Level::Info);
                fields.extend(json.fields);
                if let Some(text) = json.message {
                    message = text;
                }
            } else if let Some(text_level) = text_level(&message) {
                level = text_level;
            }
        }
    }
    Record {
        time: line.time,
        level,
        message,
        container_name: line.function_name.clone(),
        job: Cow::Borrowed(JOB_LAMBDA),
        function_name: Some(line.function_name),
        sandbox_id: Some(String::from(&*line.sandbox_id)),
        aws_request_id: line.request_id,
        trace_id: line.trace_id,
        fields,
    }
}

struct JsonLine {
    level: Option<Level>,
    message: Option<String>,
    fields: Vec<(Cow<'static, str>, String)>,
}

/// A structured log line: a JSON object with a level or a message.
fn parse_json_line(line: &str) -> Option<JsonLine> {
    let trimmed = line.trim();
    if !(trimmed.starts_with('{') && trimmed.ends_with('}')) {
        return None;
    }
    let mut object: Map<String, Value> = serde_json::from_str(trimmed).ok()?;
    let level = ["level", "levelname", "severity"]
        .iter()
        .find_map(|key| object.get(*key)?.as_str().and_then(Level::parse));
    let mut message = ["message", "msg"]
        .iter()
        .find_map(|key| object.get(*key).map(text));
    let mut nested_message = false;
    if message.is_none()
        && let Some(inner) = object.get_mut("fields").and_then(Value::as_object_mut)
        && let Some(value) = inner.remove("message")
    {
        message = Some(text(&value));
        nested_message = true;
    }
    if level.is_none() && message.is_none() {
        return None;
    }
    let fields = object
        .into_iter()
        .filter(|(key, value)| {
            let used = match key.as_str() {
                "level" | "levelname" | "severity" => level.is_some(),
                "message" | "msg" => !nested_message,
                "fields" => value.as_object().is_some_and(Map::is_empty),
                _ => false,
            };
            !used
        })
        .map(|(key, value)| {
            let name = if RESERVED_FIELDS.contains(&key.as_str()) || key == "stream" {
                format!("function.{key}")
            } else {
                key
            };
            (Cow::Owned(name), text(&value))
        })
        .collect();
    Some(JsonLine {
        level,
        message,
        fields,
    })
}

/// A JSON value as a field: strings as they are, anything else as JSON.
fn text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The level of a line in a Lambda runtime's text format: `[LEVEL]\t...` (Python) or
/// `time\trequest-id\tLEVEL\tmessage` (Node.js).
fn text_level(line: &str) -> Option<Level> {
    let mut parts = line.splitn(4, '\t');
    let first = parts.next()?;
    if let Some(name) = first.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
        return Level::parse(name);
    }
    let third = parts.nth(1)?;
    parts.next()?;
    Level::parse(third)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn line(stream: LogStream, message: &str) -> LogLine {
        LogLine {
            time: SystemTime::UNIX_EPOCH,
            function_name: "orders".into(),
            sandbox_id: "orders-0-1234".into(),
            request_id: Some("req-1".into()),
            trace_id: Some("Root=1-2-3".into()),
            stream,
            message: message.into(),
        }
    }

    fn field<'a>(record: &'a Record, name: &str) -> Option<&'a str> {
        record
            .fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn a_plain_line_carries_the_invocation() {
        let record = function_record(line(LogStream::Stdout, "hello"));
        assert_eq!(record.message, "hello");
        assert_eq!(record.level, Level::Info);
        assert_eq!(record.container_name, "orders");
        assert_eq!(record.job, JOB_LAMBDA);
        assert_eq!(record.function_name.as_deref(), Some("orders"));
        assert_eq!(record.sandbox_id.as_deref(), Some("orders-0-1234"));
        assert_eq!(record.aws_request_id.as_deref(), Some("req-1"));
        assert_eq!(record.trace_id.as_deref(), Some("Root=1-2-3"));
        assert_eq!(record.time, SystemTime::UNIX_EPOCH);
        assert_eq!(field(&record, "stream"), Some("stdout"));
    }

    #[test]
    fn lambda_json_lines_keep_their_level_and_message() {
        let record = function_record(line(
            LogStream::Stdout,
            r#"{"timestamp":"2024-01-01T00:00:00Z","level":"ERROR","message":"boom","requestId":"req-1","count":3}"#,
        ));
        assert_eq!(record.level, Level::Error);
        assert_eq!(record.message, "boom");
        assert_eq!(field(&record, "requestId"), Some("req-1"));
        assert_eq!(field(&record, "count"), Some("3"));
        assert_eq!(field(&record, "timestamp"), Some("2024-01-01T00:00:00Z"));
        assert_eq!(field(&record, "level"), None);
        assert_eq!(field(&record, "message"), None);
    }

    #[test]
    fn msg_and_structured_messages_are_read() {
        let record = function_record(line(
            LogStream::Stderr,
            r#"{"level":"warning","msg":"slow"}"#,
        ));
        assert_eq!(
            (record.level, record.message.as_str()),
            (Level::Warn, "slow")
        );
        assert_eq!(field(&record, "stream"), Some("stderr"));

        let record = function_record(line(
            LogStream::Stdout,
            r#"{"level":"INFO","message":{"order":7}}"#,
        ));
        assert_eq!(record.message, r#"{"order":7}"#);
    }

    #[test]
    fn tracing_json_lines_are_read() {
        let record = function_record(line(
            LogStream::Stdout,
            r#"{"timestamp":"t","level":"DEBUG","fields":{"message":"polled","n":1},"target":"app"}"#,
        ));
        assert_eq!(record.level, Level::Debug);
        assert_eq!(record.message, "polled");
        assert_eq!(field(&record, "fields"), Some(r#"{"n":1}"#));
        assert_eq!(field(&record, "target"), Some("app"));
    }

    #[test]
    fn json_keys_named_like_esb_fields_are_renamed() {
        let record = function_record(line(
            LogStream::Stdout,
            r#"{"level":"INFO","message":"m","job":"nightly","stream":"x"}"#,
        ));
        assert_eq!(field(&record, "function.job"), Some("nightly"));
        assert_eq!(field(&record, "function.stream"), Some("x"));
        assert_eq!(field(&record, "stream"), Some("stdout"));
        assert_eq!(record.job, JOB_LAMBDA);
    }

    #[test]
    fn json_without_level_or_message_stays_text() {
        let raw = r#"{"order":7}"#;
        let record = function_record(line(LogStream::Stdout, raw));
        assert_eq!((record.level, record.message.as_str()), (Level::Info, raw));
        let broken = r#"{"level":"ERROR""#;
        let record = function_record(line(LogStream::Stdout, broken));
        assert_eq!(
            (record.level, record.message.as_str()),
            (Level::Info, broken)
        );
    }

    #[test]
    fn runtime_text_formats_keep_their_level() {
        let python = "[ERROR]\t2024-01-01T00:00:00.000Z\treq-1\tfailed";
        let record = function_record(line(LogStream::Stderr, python));
        assert_eq!(
            (record.level, record.message.as_str()),
            (Level::Error, python)
        );
        let node = "2024-01-01T00:00:00.000Z\treq-1\tWARN\tcareful";
        assert_eq!(
            function_record(line(LogStream::Stdout, node)).level,
            Level::Warn
        );
        let tabs = "a\tb\tc";
        assert_eq!(
            function_record(line(LogStream::Stdout, tabs)).level,
            Level::Info
        );
    }

    #[test]
    fn platform_lines_are_records() {
        let report = "REPORT RequestId: req-1\tDuration: 1.00 ms\tBilled Duration: 1 ms\tMemory Size: 128 MB\tMax Memory Used: 9 MB";
        let record = function_record(line(LogStream::Platform, report));
        assert_eq!(
            (record.level, record.message.as_str()),
            (Level::Info, report)
        );
        assert_eq!(field(&record, "stream"), Some("platform"));
        assert_eq!(record.aws_request_id.as_deref(), Some("req-1"));

        let error = function_record(line(LogStream::Platform, "req-1 Error: sandbox lost"));
        assert_eq!(error.level, Level::Error);
    }
}
