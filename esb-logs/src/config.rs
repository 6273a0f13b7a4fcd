//! Where logs go and how they are batched.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::Error;
use crate::record::RESERVED_FIELDS;

/// Credentials sent with every request to VictoriaLogs.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Auth {
    /// HTTP basic authentication.
    Basic {
        /// The user name.
        username: String,
        /// The password.
        password: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(String),
}

impl fmt::Debug for Auth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Basic { username, .. } => f
                .debug_struct("Basic")
                .field("username", username)
                .field("password", &"<redacted>")
                .finish(),
            Self::Bearer(_) => f.debug_tuple("Bearer").field(&"<redacted>").finish(),
        }
    }
}

/// How a failed batch is retried: exponential backoff between attempts.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts per batch, the first one included; the batch is dropped after the last.
    pub max_attempts: NonZeroUsize,
    /// Wait before the second attempt.
    pub initial_backoff: Duration,
    /// Longest wait between two attempts.
    pub max_backoff: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: NonZeroUsize::new(5).unwrap_or(NonZeroUsize::MIN),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
        }
    }
}

impl RetryPolicy {
    /// `max_attempts` attempts per batch, waiting `initial_backoff` after the first failure,
    /// twice as long after each next one, at most `max_backoff`.
    pub fn new(
        max_attempts: NonZeroUsize,
        initial_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        Self {
            max_attempts,
            initial_backoff,
            max_backoff,
        }
    }

    /// The wait after failed attempt number `attempt` (1 for the first).
    pub fn backoff(&self, attempt: usize) -> Duration {
        let shift = u32::try_from(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX)
            .min(20);
        self.initial_backoff
            .saturating_mul(1 << shift)
            .min(self.max_backoff)
    }
}

/// Settings of a [`LogShipper`](crate::LogShipper).
///
/// Start from [`VictoriaLogsConfig::new`] and set the fields to change.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VictoriaLogsConfig {
    /// Base URL of VictoriaLogs, e.g. `http://127.0.0.1:9428`; records go to `{url}/insert/jsonline`.
    pub url: String,
    /// Credentials, if VictoriaLogs (or a proxy in front of it) asks for them.
    pub auth: Option<Auth>,
    /// Fields added to every record and to `_stream_fields`, e.g. `("host", "edge-1")`.
    pub extra_stream_fields: Vec<(String, String)>,
    /// Records held while VictoriaLogs is slow or away; past it the oldest are dropped.
    pub queue_capacity: NonZeroUsize,
    /// Most records in one request.
    pub batch_max_records: NonZeroUsize,
    /// Most (uncompressed, estimated) bytes in one request.
    pub batch_max_bytes: NonZeroUsize,
    /// Longest a record waits in the queue before it is sent; also how often drops are reported.
    pub flush_interval: Duration,
    /// Longest one request may take.
    pub request_timeout: Duration,
    /// Retries of failed requests.
    pub retry: RetryPolicy,
    /// Bodies of at least this many bytes are sent gzip-compressed; `None` never compresses.
    pub gzip_min_bytes: Option<usize>,
    /// Longer messages are cut to this many bytes (VictoriaLogs refuses very long lines).
    pub max_message_bytes: usize,
    /// How long [`LogShipper::shutdown`](crate::LogShipper::shutdown) may take to flush.
    pub shutdown_deadline: Duration,
}

impl VictoriaLogsConfig {
    /// Settings for the VictoriaLogs at `url`, with the defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: None,
            extra_stream_fields: Vec::new(),
            queue_capacity: non_zero(100_000),
            batch_max_records: non_zero(2_000),
            batch_max_bytes: non_zero(1024 * 1024),
            flush_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            gzip_min_bytes: Some(1024),
            max_message_bytes: 64 * 1024,
            shutdown_deadline: Duration::from_secs(5),
        }
    }

    /// The ingestion endpoint with its query parameters.
    pub fn insert_url(&self) -> Result<reqwest::Url, Error> {
        let base = reqwest::Url::parse(&self.url).map_err(|source| Error::InvalidUrl {
            url: self.url.clone(),
            source,
        })?;
        match base.scheme() {
            "http" => {}
            "https" if cfg!(feature = "tls") => {}
            "https" => {
                return Err(Error::UnusableUrl {
                    url: self.url.clone(),
                    reason: "https needs esb-logs built with its `tls` feature".into(),
                });
            }
            other => {
                return Err(Error::UnusableUrl {
                    url: self.url.clone(),
                    reason: format!("unsupported scheme {other:?}, expected http or https"),
                });
            }
        }
        let mut url = base;
        {
            let mut segments = url.path_segments_mut().map_err(|()| Error::UnusableUrl {
                url: self.url.clone(),
                reason: "not a base URL".into(),
            })?;
            segments.pop_if_empty().extend(["insert", "jsonline"]);
        }
        let stream_fields = ["container_name", "job"]
            .into_iter()
            .chain(self.extra_stream_fields.iter().map(|(k, _)| k.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        url.query_pairs_mut()
            .append_pair("_stream_fields", &stream_fields)
            .append_pair("_msg_field", "message")
            .append_pair("_time_field", "_time");
        Ok(url)
    }

    /// Checks every field; the error names the one at fault.
    pub fn validate(&self) -> Result<(), Error> {
        self.insert_url()?;
        for (name, _) in &self.extra_stream_fields {
            let valid = !name.is_empty()
                && name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
            if !valid {
                return Err(Error::InvalidConfig {
                    field: "extra_stream_fields",
                    reason: format!(
                        "field name {name:?} must be non-empty ASCII letters, digits, '_', '.' or '-'"
                    ),
                });
            }
            if RESERVED_FIELDS.contains(&name.as_str()) {
                return Err(Error::InvalidConfig {
                    field: "extra_stream_fields",
                    reason: format!("field name {name:?} is one ESB sets itself"),
                });
            }
        }
        if self.flush_interval.is_zero() {
            return Err(Error::InvalidConfig {
                field: "flush_interval",
                reason: "must be longer than zero".into(),
            });
        }
        if self.request_timeout.is_zero() {
            return Err(Error::InvalidConfig {
                field: "request_timeout",
                reason: "must be longer than zero".into(),
            });
        }
        if self.max_message_bytes == 0 {
            return Err(Error::InvalidConfig {
                field: "max_message_bytes",
                reason: "must be at least 1".into(),
            });
        }
        Ok(())
    }
}

fn non_zero(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn insert_url_carries_the_stream_and_field_parameters() {
        let mut config = VictoriaLogsConfig::new("http://logs:9428/");
        config.extra_stream_fields = vec![("host".into(), "edge-1".into())];
        let url = config.insert_url().unwrap();
        assert_eq!(url.path(), "/insert/jsonline");
        let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
        assert_eq!(
            query,
            [
                ("_stream_fields", "container_name,job,host"),
                ("_msg_field", "message"),
                ("_time_field", "_time"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn insert_url_keeps_a_path_prefix() {
        let config = VictoriaLogsConfig::new("http://proxy/victorialogs");
        let url = config.insert_url().unwrap();
        assert_eq!(url.path(), "/victorialogs/insert/jsonline");
    }

    #[test]
    fn bad_urls_and_fields_are_named() {
        let err = VictoriaLogsConfig::new("not a url").validate().unwrap_err();
        assert!(err.to_string().contains("not a url"), "{err}");
        let err = VictoriaLogsConfig::new("ftp://logs")
            .validate()
            .unwrap_err();
        assert!(err.to_string().contains("ftp"), "{err}");

        let mut config = VictoriaLogsConfig::new("http://logs:9428");
        config.extra_stream_fields = vec![("job".into(), "x".into())];
        let err = config.validate().unwrap_err();
        assert!(err.to_string().contains("extra_stream_fields"), "{err}");
        config.extra_stream_fields = vec![("a b".into(), "x".into())];
        assert!(config.validate().is_err());
        config.extra_stream_fields = vec![("region".into(), "eu".into())];
        config.validate().unwrap();
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let retry = RetryPolicy::new(
            NonZeroUsize::new(10).unwrap(),
            Duration::from_millis(100),
            Duration::from_millis(500),
        );
        assert_eq!(retry.backoff(1), Duration::from_millis(100));
        assert_eq!(retry.backoff(2), Duration::from_millis(200));
        assert_eq!(retry.backoff(3), Duration::from_millis(400));
        assert_eq!(retry.backoff(4), Duration::from_millis(500));
        assert_eq!(retry.backoff(60), Duration::from_millis(500));
    }

    #[test]
    fn debug_hides_secrets() {
        let basic = Auth::Basic {
            username: "u".into(),
            password: "hunter2".into(),
        };
        assert!(!format!("{basic:?}").contains("hunter2"));
        assert!(!format!("{:?}", Auth::Bearer("tok3n".into())).contains("tok3n"));
    }
}
