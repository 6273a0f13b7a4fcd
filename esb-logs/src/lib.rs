//! A non-blocking VictoriaLogs sink for function and service logs.
//!
//! A [`LogShipper`] takes [`Record`]s without ever waiting and sends them in the background
//! to VictoriaLogs' JSON-lines endpoint (`POST {url}/insert/jsonline`), in batches, gzip
//! compressed when large enough, retried with backoff on server and connection errors. Past
//! its bound the queue drops its oldest records and counts them. [`function_record`] turns a
//! sandbox's output line into a record; [`ShipperLayer`] ships a service's `tracing` events.
//!
//! Function log lines ([`LogLine`]) go to a [`LogSink`]: the runtimes write to one, and
//! [`VictoriaLogsSink`], [`TerminalLogSink`] (like `sam local`), [`FanOut`] and
//! [`NullLogSink`] are the sinks a binary wires; [`function_log_sink`] is the usual pair.
//!
//! ```no_run
//! # async fn run() -> Result<(), esb_logs::Error> {
//! use std::time::{Duration, SystemTime};
//! use esb_logs::{LogLine, LogShipper, LogSink, LogStream, ShipperLayer, VictoriaLogsConfig};
//! use tracing_subscriber::prelude::*;
//!
//! let shipper = LogShipper::start(VictoriaLogsConfig::new("http://127.0.0.1:9428"))?;
//! tracing_subscriber::registry()
//!     .with(ShipperLayer::new(shipper.clone(), "esb-gateway"))
//!     .init();
//! tracing::info!(request_id = "c0ffee", "request served");
//!
//! let sink = esb_logs::function_log_sink(Some(shipper.clone()));
//! sink.log(LogLine {
//!     time: SystemTime::now(),
//!     function_name: "orders".into(),
//!     sandbox_id: "orders-0-1a2b3c4d".into(),
//!     request_id: Some("c0ffee".into()),
//!     trace_id: None,
//!     stream: LogStream::Stdout,
//!     message: r#"{"level":"WARN","message":"stock is low"}"#.into(),
//! });
//!
//! let metrics = shipper.shutdown(Duration::from_secs(5)).await;
//! println!("sent {}, dropped {}", metrics.sent, metrics.dropped);
//! # Ok(()) }
//! ```

#[cfg(feature = "cli")]
pub mod cli;
mod config;
mod error;
mod function;
mod layer;
mod line;
mod queue;
mod record;
mod redact;
mod shipper;
mod sink;
mod spool;
mod terminal;

pub use config::{
    Auth, DEFAULT_QUEUE_BYTES, DEFAULT_SPOOL_BYTES, MAX_MESSAGE_BYTES, RetryPolicy,
    VictoriaLogsConfig,
};
pub use error::{Error, ErrorChain};
pub use function::{VictoriaLogsSink, function_log_sink, function_record};
pub use layer::{SKIPPED_TARGETS, ShipperLayer};
pub use line::{LogLine, LogStream};
pub use record::{JOB_LAMBDA, JOB_SERVICES, Level, RESERVED_FIELDS, Record};
pub use redact::redact_url;
pub use shipper::{LogShipper, ShipperMetrics};
pub use sink::{FanOut, LogSink, NullLogSink};
pub use terminal::{TerminalLogSink, TerminalRecord, TerminalWriter};

/// This machine's hostname (`/proc/sys/kernel/hostname`, else `$HOSTNAME`, else `localhost`),
/// the default `host` of records.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}
