//! One log record and its JSON line.

use std::borrow::Cow;
use std::fmt;
use std::time::SystemTime;

use serde::ser::{Serialize, SerializeMap, Serializer};

/// `job` of function logs.
pub const JOB_LAMBDA: &str = "lambda";
/// `job` of ESB's own logs.
pub const JOB_SERVICES: &str = "services";

/// Field names ESB sets itself; extra fields of these names are not sent.
pub const RESERVED_FIELDS: &[&str] = &[
    "_time",
    "_msg",
    "_stream",
    "message",
    "level",
    "container_name",
    "job",
    "function_name",
    "sandbox_id",
    "aws_request_id",
    "trace_id",
];

/// Severity of a record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum Level {
    /// Very fine detail.
    Trace,
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    #[default]
    Info,
    /// Something unexpected that was handled.
    Warn,
    /// A failure.
    Error,
    /// A failure that ends the program.
    Fatal,
}

impl Level {
    /// The lowercase name sent as `level`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
            Self::Fatal => "fatal",
        }
    }

    /// Reads a level name as loggers print it (`INFO`, `warning`, `CRITICAL`, ...), any case;
    /// a qualifier in parentheses is ignored (`DEBUG(LARGE_DATA)` is debug).
    pub fn parse(name: &str) -> Option<Self> {
        let name = name.split('(').next().unwrap_or(name);
        let level = match name.trim().to_ascii_lowercase().as_str() {
            "trace" => Self::Trace,
            "debug" => Self::Debug,
            "info" | "information" | "notice" => Self::Info,
            "warn" | "warning" => Self::Warn,
            "error" | "err" => Self::Error,
            "fatal" | "critical" | "crit" | "panic" | "emerg" | "alert" => Self::Fatal,
            _ => return None,
        };
        Some(level)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<tracing::Level> for Level {
    fn from(level: tracing::Level) -> Self {
        match level {
            tracing::Level::TRACE => Self::Trace,
            tracing::Level::DEBUG => Self::Debug,
            tracing::Level::INFO => Self::Info,
            tracing::Level::WARN => Self::Warn,
            tracing::Level::ERROR => Self::Error,
        }
    }
}

/// One log record, as VictoriaLogs stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Record {
    /// When it happened (`_time`, with microseconds).
    pub time: SystemTime,
    /// Severity (`level`, as [`Level::as_str`] unless [`level_name`](Self::level_name) is set).
    pub level: Level,
    /// The level as the function wrote it (`DEBUG`, `WARNING`, `DEBUG(LARGE_DATA)`), sent
    /// as `level` unchanged, so that a search for what the function wrote finds it.
    pub level_name: Option<String>,
    /// The text (`message`, VictoriaLogs' `_msg`).
    pub message: String,
    /// The function's name, or the service (`esb-gateway`, `esb-agent`); a stream field.
    pub container_name: String,
    /// [`JOB_LAMBDA`] or [`JOB_SERVICES`]; a stream field.
    pub job: Cow<'static, str>,
    /// The function, when known.
    pub function_name: Option<String>,
    /// The sandbox, when known.
    pub sandbox_id: Option<String>,
    /// The request id of the invocation, when known.
    pub aws_request_id: Option<String>,
    /// The X-Ray trace id, when known.
    pub trace_id: Option<String>,
    /// More fields, sent as strings; names in [`RESERVED_FIELDS`] are skipped.
    pub fields: Vec<(Cow<'static, str>, String)>,
}

impl Record {
    /// A record of now, without the optional fields.
    pub fn new(
        container_name: impl Into<String>,
        job: impl Into<Cow<'static, str>>,
        level: Level,
        message: impl Into<String>,
    ) -> Self {
        Self {
            time: SystemTime::now(),
            level,
            level_name: None,
            message: message.into(),
            container_name: container_name.into(),
            job: job.into(),
            function_name: None,
            sandbox_id: None,
            aws_request_id: None,
            trace_id: None,
            fields: Vec::new(),
        }
    }

    /// Adds one extra field.
    pub fn field(mut self, name: impl Into<Cow<'static, str>>, value: impl Into<String>) -> Self {
        self.fields.push((name.into(), value.into()));
        self
    }

    /// A cheap estimate of its JSON line's length, for batch limits (an upper bound unless the text needs escaping).
    pub fn estimated_size(&self) -> usize {
        const FIXED: usize = 96;
        let optional = [
            &self.function_name,
            &self.sandbox_id,
            &self.aws_request_id,
            &self.trace_id,
        ]
        .into_iter()
        .flatten()
        .map(|v| v.len() + 20)
        .sum::<usize>();
        let fields = self
            .fields
            .iter()
            .map(|(k, v)| k.len() + v.len() + 6)
            .sum::<usize>();
        let level = self.level_name.as_ref().map_or(0, String::len);
        FIXED
            + self.message.len()
            + self.container_name.len()
            + self.job.len()
            + level
            + optional
            + fields
    }
}

/// Appends `record` as one JSON line (with its newline) to `out`.
pub(crate) fn encode_line(
    out: &mut Vec<u8>,
    record: &Record,
    extra_stream_fields: &[(String, String)],
    max_message_bytes: usize,
) -> serde_json::Result<()> {
    let start = out.len();
    let line = Line {
        record,
        extra_stream_fields,
        max_message_bytes,
    };
    if let Err(err) = serde_json::to_writer(&mut *out, &line) {
        out.truncate(start);
        return Err(err);
    }
    out.push(b'\n');
    Ok(())
}

/// `_time` as RFC 3339 in UTC with microseconds, so that one invocation's lines sort in order.
pub(crate) fn format_time(time: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(time).to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// The longest prefix of `s` of at most `max` bytes that ends on a character boundary.
fn truncate(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

struct Line<'a> {
    record: &'a Record,
    extra_stream_fields: &'a [(String, String)],
    max_message_bytes: usize,
}

impl Serialize for Line<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let r = self.record;
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("_time", &format_time(r.time))?;
        map.serialize_entry("message", truncate(&r.message, self.max_message_bytes))?;
        map.serialize_entry(
            "level",
            r.level_name.as_deref().unwrap_or_else(|| r.level.as_str()),
        )?;
        map.serialize_entry("container_name", &r.container_name)?;
        map.serialize_entry("job", &r.job)?;
        let optional = [
            ("function_name", &r.function_name),
            ("sandbox_id", &r.sandbox_id),
            ("aws_request_id", &r.aws_request_id),
            ("trace_id", &r.trace_id),
        ];
        for (name, value) in optional {
            if let Some(value) = value {
                map.serialize_entry(name, value)?;
            }
        }
        for (name, value) in self.extra_stream_fields {
            map.serialize_entry(name, value)?;
        }
        for (name, value) in &r.fields {
            let taken = RESERVED_FIELDS.contains(&name.as_ref())
                || self.extra_stream_fields.iter().any(|(k, _)| k == name);
            if !taken {
                map.serialize_entry(name, value)?;
            }
        }
        map.end()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use serde_json::{Value, json};

    use super::*;

    fn encode(record: &Record, extra: &[(String, String)], max: usize) -> Value {
        let mut out = Vec::new();
        encode_line(&mut out, record, extra, max).unwrap();
        assert_eq!(out.last(), Some(&b'\n'));
        assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1);
        serde_json::from_slice(&out).unwrap()
    }

    #[test]
    fn a_line_carries_every_known_field() {
        let mut record = Record::new("echo", JOB_LAMBDA, Level::Warn, "hello \"world\"\n")
            .field("stream", "stdout")
            .field("job", "ignored");
        record.time = UNIX_EPOCH + Duration::from_micros(1_704_067_200_123_456);
        record.function_name = Some("echo".into());
        record.sandbox_id = Some("echo-0-abc".into());
        record.aws_request_id = Some("req-1".into());
        record.trace_id = Some("Root=1-2-3".into());
        let line = encode(&record, &[("host".into(), "edge-1".into())], 1024);
        assert_eq!(
            line,
            json!({
                "_time": "2024-01-01T00:00:00.123456Z",
                "message": "hello \"world\"\n",
                "level": "warn",
                "container_name": "echo",
                "job": "lambda",
                "function_name": "echo",
                "sandbox_id": "echo-0-abc",
                "aws_request_id": "req-1",
                "trace_id": "Root=1-2-3",
                "host": "edge-1",
                "stream": "stdout",
            })
        );
    }

    #[test]
    fn unknown_optional_fields_are_left_out() {
        let line = encode(
            &Record::new("esb-gateway", JOB_SERVICES, Level::Info, "up"),
            &[],
            1024,
        );
        let mut keys: Vec<&str> = line
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        assert_eq!(keys, ["_time", "container_name", "job", "level", "message"]);
    }

    #[test]
    fn a_written_level_is_sent_as_written() {
        let mut record = Record::new("f", JOB_LAMBDA, Level::Debug, "m");
        record.level_name = Some("DEBUG".into());
        assert_eq!(encode(&record, &[], 1024)["level"], "DEBUG");
        let mut out = Vec::new();
        encode_line(&mut out, &record, &[], usize::MAX).unwrap();
        assert!(out.len() <= record.estimated_size());
    }

    #[test]
    fn long_messages_are_cut_on_a_character_boundary() {
        let record = Record::new("f", JOB_LAMBDA, Level::Info, "ééé");
        let line = encode(&record, &[], 3);
        assert_eq!(line["message"], "é");
    }

    #[test]
    fn levels_parse_as_loggers_print_them() {
        assert_eq!(Level::parse("INFO"), Some(Level::Info));
        assert_eq!(Level::parse("Warning"), Some(Level::Warn));
        assert_eq!(Level::parse("CRITICAL"), Some(Level::Fatal));
        assert_eq!(Level::parse("error"), Some(Level::Error));
        assert_eq!(Level::parse("loud"), None);
        assert_eq!(Level::from(tracing::Level::DEBUG), Level::Debug);
        assert_eq!(Level::parse("DEBUG(LARGE_DATA)"), Some(Level::Debug));
    }

    #[test]
    fn estimate_is_an_upper_bound() {
        let mut record = Record::new("function", JOB_LAMBDA, Level::Info, "x".repeat(300))
            .field("stream", "stderr");
        record.aws_request_id = Some("0e2b8f6a-8e8d-4c1a-9d53-1c1f0f6b3a41".into());
        record.trace_id = Some("Root=1-65a0b0c0-0123456789abcdef01234567".into());
        let mut out = Vec::new();
        encode_line(&mut out, &record, &[], usize::MAX).unwrap();
        assert!(
            out.len() <= record.estimated_size(),
            "{} > {}",
            out.len(),
            record.estimated_size()
        );
    }
}
