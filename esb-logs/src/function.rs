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
/// Lines in Lambda's JSON log format (`{"level":"INFO","message":..}`, also `msg`, `_msg`,
/// `levelname`, `severity`, and the `fields.message` of `tracing` JSON) keep their level and
/// message, and their other keys become fields (`function.<key>` where the name is one ESB
/// sets itself). Lines in the text formats of Lambda's runtimes (`[ERROR]\t...`,
/// `time\trequest-id\tERROR\t...`), `[ERROR] ...` after an optional timestamp, or starting
/// with an upper-case level word (`DEBUG ...`, `WARNING: ...`) keep their level. The level is
/// sent as the function wrote it (`DEBUG`, `WARNING`); lines without one are `info`.
/// Platform lines are `info`, or `error` when they report an error.
pub fn function_record(line: LogLine) -> Record {
    let mut level = Level::Info;
    let mut level_name = None;
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
                if let Some((parsed, written)) = json.level {
                    level = parsed.unwrap_or(Level::Info);
                    level_name = Some(written);
                }
                fields.extend(json.fields);
                if let Some(text) = json.message {
                    message = text;
                }
            } else if let Some((parsed, written)) = text_level(&message) {
                level = parsed;
                level_name = Some(written.to_owned());
            }
        }
    }
    Record {
        time: line.time,
        level,
        level_name,
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
    /// The level read, and as written.
    level: Option<(Option<Level>, String)>,
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
    let level_key = ["level", "levelname", "severity"].into_iter().find(|key| {
        object
            .get(*key)
            .and_then(Value::as_str)
            .is_some_and(|v| !v.trim().is_empty())
    });
    let level = level_key
        .and_then(|key| object.get(key)?.as_str())
        .map(|written| (Level::parse(written), written.to_owned()));
    let message_key = ["message", "msg", "_msg"]
        .into_iter()
        .find(|key| object.contains_key(*key));
    let mut message = message_key.and_then(|key| object.get(key).map(text));
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
            let used = Some(key.as_str()) == level_key
                || (Some(key.as_str()) == message_key && !nested_message)
                || (key == "fields" && value.as_object().is_some_and(Map::is_empty));
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

/// The level of a text line, and the word as written: `[LEVEL]\t...` or `[LEVEL] ...`
/// (Python), `time\trequest-id\tLEVEL\tmessage` (Node.js), `[LEVEL]` after a timestamp of up
/// to two words (`2024/01/01 00:00:00.000 [ERROR] ...`), or an upper-case level word first
/// (`DEBUG ...`, `WARNING: ...`).
fn text_level(line: &str) -> Option<(Level, &str)> {
    fn parsed(word: &str) -> Option<(Level, &str)> {
        Level::parse(word).map(|level| (level, word))
    }
    // Node.js: the third of four tab-separated parts.
    let mut parts = line.splitn(4, '\t');
    if let (Some(_), Some(_), Some(third), Some(_)) =
        (parts.next(), parts.next(), parts.next(), parts.next())
        && let Some(found) = parsed(third)
    {
        return Some(found);
    }
    let mut words = line.split([' ', '\t']).filter(|w| !w.is_empty());
    for (i, word) in words.by_ref().take(3).enumerate() {
        if let Some(inner) = word.strip_prefix('[').and_then(|w| w.strip_suffix(']')) {
            return parsed(inner);
        }
        if i == 0 {
            let bare = word.strip_suffix(':').unwrap_or(word);
            let upper = bare
                .chars()
                .all(|c| c.is_ascii_uppercase() || c == '(' || c == ')' || c == '_');
            if upper
                && bare.len() >= 4
                && let Some(found) = parsed(bare)
            {
                return Some(found);
            }
        }
    }
    None
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
    fn an_earlier_esb_line_keeps_its_level_as_written() {
        // The earlier ESB's function logger: `_time`, `_msg` and an upper-case level.
        let record = function_record(line(
            LogStream::Stdout,
            r#"{"_time": 1704067200.123, "level": "DEBUG", "_msg": "cache warm", "user": "u1"}"#,
        ));
        assert_eq!(record.level, Level::Debug);
        assert_eq!(record.level_name.as_deref(), Some("DEBUG"));
        assert_eq!(record.message, "cache warm");
        assert_eq!(field(&record, "user"), Some("u1"));
        assert_eq!(field(&record, "function._time"), Some("1704067200.123"));

        let large = function_record(line(
            LogStream::Stdout,
            r#"{"level": "DEBUG(LARGE_DATA)", "message": "outputLocalFile:/logs/x"}"#,
        ));
        assert_eq!(large.level, Level::Debug);
        assert_eq!(large.level_name.as_deref(), Some("DEBUG(LARGE_DATA)"));
        let warning = function_record(line(LogStream::Stdout, "[WARNING] disk almost full"));
        assert_eq!(
            (warning.level, warning.level_name.as_deref()),
            (Level::Warn, Some("WARNING"))
        );
        let stamped = function_record(line(
            LogStream::Stdout,
            "2024/01/01 00:00:00.000123 [ERROR] put_log_events failed",
        ));
        assert_eq!(
            (stamped.level, stamped.level_name.as_deref()),
            (Level::Error, Some("ERROR"))
        );
        let bare = function_record(line(LogStream::Stdout, "DEBUG: polling"));
        assert_eq!(
            (bare.level, bare.level_name.as_deref()),
            (Level::Debug, Some("DEBUG"))
        );
        let plain = function_record(line(LogStream::Stdout, "Error handling is fine here"));
        assert_eq!((plain.level, plain.level_name), (Level::Info, None));
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
