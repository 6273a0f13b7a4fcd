//! What can go wrong when starting a shipper.

/// Errors of esb-logs.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The VictoriaLogs URL cannot be used.
    #[error("invalid VictoriaLogs URL {url:?}: {reason}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// Why it is refused.
        reason: String,
    },
    /// A setting is out of range.
    #[error("invalid VictoriaLogs setting {field}: {reason}")]
    InvalidConfig {
        /// The field of `VictoriaLogsConfig` at fault.
        field: &'static str,
        /// Why it is refused.
        reason: String,
    },
    /// The shipper was started outside a Tokio runtime.
    #[error("the VictoriaLogs shipper must be started inside a Tokio runtime")]
    NoRuntime,
    /// The HTTP client could not be built.
    #[error("cannot build the VictoriaLogs HTTP client: {0}")]
    Client(#[from] reqwest::Error),
}
