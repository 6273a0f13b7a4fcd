//! Where logs go and how they are batched.

use std::fmt;
use std::num::NonZeroUsize;
use std::time::Duration;

use crate::Error;
use crate::record::RESERVED_FIELDS;
use crate::redact::{redact_url, split_userinfo};

/// The default bound of the queue in bytes: 64 MiB.
pub const DEFAULT_QUEUE_BYTES: usize = 64 * 1024 * 1024;

/// The default bound of the on-disk spool: 256 MiB.
pub const DEFAULT_SPOOL_BYTES: u64 = 256 * 1024 * 1024;

/// The default longest message: 256 KiB, Lambda's limit of one log event.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024;

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
///
/// A batch is retried (after server errors, timeouts and connection errors) until it is
/// sent, or its records are needed to make room in the queue, or `max_attempts` were made
/// (unbounded by default): nothing is lost to an outage the queue can hold.
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
            max_attempts: NonZeroUsize::MAX,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
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
/// Start from [`VictoriaLogsConfig::new`] and set the fields to change. `Debug` shows no
/// credential: the URL's user information, passwords, tokens and header values are hidden.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct VictoriaLogsConfig {
    /// Base URL of VictoriaLogs, e.g. `http://127.0.0.1:9428` or `https://logs:9428`;
    /// records go to `{url}/insert/jsonline`. A `user:password@` in it is sent as basic
    /// authentication (unless [`auth`](Self::auth) is set) and never shown.
    pub url: String,
    /// Credentials, if VictoriaLogs (or a proxy in front of it) asks for them.
    pub auth: Option<Auth>,
    /// Headers sent with every request, e.g. `AccountID` / `ProjectID` of a multi-tenant
    /// VictoriaLogs, or an `Authorization` a proxy expects; their values are never shown.
    pub headers: Vec<(String, String)>,
    /// PEM certificates trusted for `https://` besides the system's roots (a private CA).
    pub ca_pem: Option<Vec<u8>>,
    /// The `host` field of every record (and a stream field): which machine it came from.
    pub host: Option<String>,
    /// Fields added to every record and to `_stream_fields`, e.g. `("host", "edge-1")`.
    pub extra_stream_fields: Vec<(String, String)>,
    /// Records held while VictoriaLogs is slow or away (the batch being retried included);
    /// past it the oldest are dropped and counted.
    pub queue_capacity: NonZeroUsize,
    /// Bytes held (estimated as JSON lines) at most, the batch being retried included; past
    /// it the oldest records are dropped and counted.
    pub queue_max_bytes: NonZeroUsize,
    /// Most records in one request.
    pub batch_max_records: NonZeroUsize,
    /// Most (uncompressed, estimated) bytes in one request.
    pub batch_max_bytes: NonZeroUsize,
    /// Longest a record waits in the queue before it is sent; also how often drops are reported.
    pub flush_interval: Duration,
    /// Longest one request may take. A request that times out is sent again, and a
    /// VictoriaLogs that was only slow then stores it twice: long enough (30 s by default)
    /// that a VictoriaLogs stalled for a few seconds causes no duplicates.
    pub request_timeout: Duration,
    /// Retries of failed requests.
    pub retry: RetryPolicy,
    /// Bodies of at least this many bytes are sent gzip-compressed; `None` never compresses.
    pub gzip_min_bytes: Option<usize>,
    /// Longer messages are cut to this many bytes (VictoriaLogs refuses very long lines);
    /// [`MAX_MESSAGE_BYTES`] by default, so a line the output readers split at Lambda's
    /// 256 KB arrives whole.
    pub max_message_bytes: usize,
    /// How long [`LogShipper::shutdown`](crate::LogShipper::shutdown) may take to flush.
    pub shutdown_deadline: Duration,
    /// A directory where records still unsent at shutdown are kept (JSON lines), to be sent
    /// first by the next shipper on it; `None` drops (and counts) them.
    pub spool_dir: Option<std::path::PathBuf>,
    /// The most bytes the spool holds; past it the oldest unsent records are dropped.
    pub spool_max_bytes: u64,
}

impl VictoriaLogsConfig {
    /// Settings for the VictoriaLogs at `url`, with the defaults for everything else.
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            auth: None,
            headers: Vec::new(),
            ca_pem: None,
            host: None,
            extra_stream_fields: Vec::new(),
            queue_capacity: non_zero(1_000_000),
            queue_max_bytes: non_zero(DEFAULT_QUEUE_BYTES),
            batch_max_records: non_zero(2_000),
            batch_max_bytes: non_zero(1024 * 1024),
            flush_interval: Duration::from_secs(1),
            request_timeout: Duration::from_secs(30),
            retry: RetryPolicy::default(),
            gzip_min_bytes: Some(1024),
            max_message_bytes: MAX_MESSAGE_BYTES,
            shutdown_deadline: Duration::from_secs(5),
            spool_dir: None,
            spool_max_bytes: DEFAULT_SPOOL_BYTES,
        }
    }

    /// The URL as it may be shown: its user information hidden.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url).into_owned()
    }

    /// The ingestion endpoint with its query parameters, without user information.
    pub fn insert_url(&self) -> Result<reqwest::Url, Error> {
        self.endpoint().map(|(url, _)| url)
    }

    /// The credentials requests carry: [`auth`](Self::auth), else the URL's user information.
    pub(crate) fn effective_auth(&self) -> Result<Option<Auth>, Error> {
        let (_, from_url) = self.endpoint()?;
        Ok(self.auth.clone().or(from_url))
    }

    fn endpoint(&self) -> Result<(reqwest::Url, Option<Auth>), Error> {
        let unusable = |reason: String| Error::UnusableUrl {
            url: self.redacted_url(),
            reason,
        };
        let base = reqwest::Url::parse(&self.url).map_err(|source| Error::InvalidUrl {
            url: self.redacted_url(),
            source,
        })?;
        match base.scheme() {
            "http" | "https" => {}
            other => {
                return Err(unusable(format!(
                    "unsupported scheme {other:?}, expected http or https"
                )));
            }
        }
        let (mut url, userinfo) = split_userinfo(base);
        let auth = userinfo.map(|(username, password)| Auth::Basic { username, password });
        url.set_fragment(None);
        {
            let mut segments = url
                .path_segments_mut()
                .map_err(|()| unusable("not a base URL".into()))?;
            segments.pop_if_empty().extend(["insert", "jsonline"]);
        }
        let stream_fields = ["container_name", "job"]
            .into_iter()
            .chain(self.stream_values().iter().map(|(k, _)| k.as_str()))
            .collect::<Vec<_>>()
            .join(",");
        url.query_pairs_mut()
            .append_pair("_stream_fields", &stream_fields)
            .append_pair("_msg_field", "message")
            .append_pair("_time_field", "_time");
        Ok((url, auth))
    }

    /// The fields added to every record: [`host`](Self::host), then the extra stream fields.
    pub(crate) fn stream_values(&self) -> Vec<(String, String)> {
        let has_host = self.extra_stream_fields.iter().any(|(k, _)| k == "host");
        self.host
            .iter()
            .filter(|_| !has_host)
            .map(|host| ("host".to_owned(), host.clone()))
            .chain(self.extra_stream_fields.iter().cloned())
            .collect()
    }

    /// Checks every field; the error names the one at fault.
    pub fn validate(&self) -> Result<(), Error> {
        self.insert_url()?;
        for (name, value) in &self.headers {
            let valid = reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_ok()
                && reqwest::header::HeaderValue::from_str(value).is_ok();
            if !valid {
                return Err(Error::InvalidConfig {
                    field: "headers",
                    reason: format!("header {name:?} is not a valid HTTP header name and value"),
                });
            }
        }
        if let Some(host) = &self.host
            && (host.is_empty() || host.chars().any(char::is_control))
        {
            return Err(Error::InvalidConfig {
                field: "host",
                reason: "must be non-empty, without control characters".into(),
            });
        }
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

impl fmt::Debug for VictoriaLogsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(name, _)| (name.as_str(), "<redacted>"))
            .collect();
        f.debug_struct("VictoriaLogsConfig")
            .field("url", &self.redacted_url())
            .field("auth", &self.auth)
            .field("headers", &headers)
            .field("ca_pem", &self.ca_pem.as_ref().map(Vec::len))
            .field("host", &self.host)
            .field("extra_stream_fields", &self.extra_stream_fields)
            .field("queue_capacity", &self.queue_capacity)
            .field("queue_max_bytes", &self.queue_max_bytes)
            .field("batch_max_records", &self.batch_max_records)
            .field("batch_max_bytes", &self.batch_max_bytes)
            .field("flush_interval", &self.flush_interval)
            .field("request_timeout", &self.request_timeout)
            .field("retry", &self.retry)
            .field("gzip_min_bytes", &self.gzip_min_bytes)
            .field("max_message_bytes", &self.max_message_bytes)
            .field("shutdown_deadline", &self.shutdown_deadline)
            .field("spool_dir", &self.spool_dir)
            .field("spool_max_bytes", &self.spool_max_bytes)
            .finish_non_exhaustive()
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

        let mut config = VictoriaLogsConfig::new("https://esb:hunter2@logs:9428");
        config.headers = vec![("Authorization".into(), "Bearer s3cret".into())];
        let debug = format!("{config:?}");
        assert!(
            !debug.contains("hunter2") && !debug.contains("s3cret"),
            "{debug}"
        );
        assert!(debug.contains("https://***@logs:9428"), "{debug}");
    }

    #[test]
    fn user_information_becomes_basic_auth_and_leaves_the_url() {
        let mut config = VictoriaLogsConfig::new("https://esb:hunter2@logs:9428");
        config.host = Some("edge-1".into());
        let url = config.insert_url().unwrap();
        assert_eq!(url.username(), "");
        assert_eq!(url.password(), None);
        assert!(
            url.as_str()
                .starts_with("https://logs:9428/insert/jsonline?")
        );
        assert!(
            url.as_str()
                .contains("_stream_fields=container_name%2Cjob%2Chost")
        );
        assert_eq!(
            config.effective_auth().unwrap(),
            Some(Auth::Basic {
                username: "esb".into(),
                password: "hunter2".into()
            })
        );
        config.auth = Some(Auth::Bearer("t".into()));
        assert_eq!(
            config.effective_auth().unwrap(),
            Some(Auth::Bearer("t".into()))
        );
    }

    #[test]
    fn errors_about_a_url_hide_its_password() {
        for url in ["http://esb:hunter2@logs:99999", "ftp://esb:hunter2@logs"] {
            let err = VictoriaLogsConfig::new(url).validate().unwrap_err();
            let text = crate::ErrorChain(&err).to_string();
            assert!(!text.contains("hunter2"), "{text}");
            assert!(text.contains("***@logs"), "{text}");
        }
    }
}
