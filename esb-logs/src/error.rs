//! What can go wrong when starting a shipper.

use std::fmt;

/// Errors of esb-logs.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The VictoriaLogs URL does not parse.
    #[error("invalid VictoriaLogs URL {url:?}")]
    InvalidUrl {
        /// The URL as configured.
        url: String,
        /// Why it does not parse.
        #[source]
        source: url::ParseError,
    },
    /// The VictoriaLogs URL parses but cannot be used (its scheme, or not a base URL).
    #[error("unusable VictoriaLogs URL {url:?}: {reason}")]
    UnusableUrl {
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
    /// A file named in the settings could not be read.
    #[error("cannot read the {what} {}", .path.display())]
    ReadFile {
        /// What the file is.
        what: &'static str,
        /// Its path.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The spool directory could not be created.
    #[error("cannot use the log spool directory {}", .path.display())]
    Spool {
        /// The directory.
        path: std::path::PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The CA certificates given for `https://` do not parse as PEM.
    #[error("the VictoriaLogs CA certificates are not valid PEM")]
    Ca(#[source] reqwest::Error),
    /// The HTTP client could not be built.
    #[error("cannot build the VictoriaLogs HTTP client")]
    Client(#[from] reqwest::Error),
}

/// Displays an error and its causes on one line, as `a: b: c` (transport errors keep the
/// useful part in their sources).
#[derive(Clone, Copy)]
pub struct ErrorChain<'a>(pub &'a (dyn std::error::Error + 'a));

impl fmt::Display for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl fmt::Debug for ErrorChain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_lists_every_cause() {
        let io = std::io::Error::other("connection refused");
        let err = Error::InvalidConfig {
            field: "url",
            reason: "x".into(),
        };
        assert_eq!(
            ErrorChain(&err).to_string(),
            "invalid VictoriaLogs setting url: x"
        );
        #[derive(Debug, thiserror::Error)]
        #[error("send failed")]
        struct Outer(#[source] std::io::Error);
        assert_eq!(
            ErrorChain(&Outer(io)).to_string(),
            "send failed: connection refused"
        );
    }
}
