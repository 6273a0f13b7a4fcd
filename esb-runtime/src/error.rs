//! The one error type of this crate.

use std::time::Duration;

use crate::SandboxId;

/// A cause of any type, boxed.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a runtime operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// No sandbox with this id.
    #[error("sandbox {0} not found")]
    NotFound(SandboxId),
    /// The spec cannot be run by this backend.
    #[error("invalid sandbox spec for function {function}: {reason}")]
    InvalidSpec {
        /// The function.
        function: String,
        /// What is wrong.
        reason: String,
    },
    /// The sandbox already has an invocation in flight.
    #[error("sandbox {0} is busy with another invocation")]
    Busy(SandboxId),
    /// The sandbox is paused and cannot be invoked.
    #[error("sandbox {0} is paused")]
    Paused(SandboxId),
    /// The invocation passed its deadline; the sandbox was killed.
    #[error("Task timed out after {:.2} seconds", .timeout.as_secs_f64())]
    Timeout {
        /// The timeout that was exceeded.
        timeout: Duration,
    },
    /// The function's init did not reach `/next` in time; the sandbox was killed.
    #[error("Init timed out after {:.2} seconds", .timeout.as_secs_f64())]
    InitTimeout {
        /// The init timeout.
        timeout: Duration,
    },
    /// The function reported an init error (`/runtime/init/error`); the sandbox was killed.
    #[error("function init failed: {error_type}: {error_message}")]
    InitFailed {
        /// `errorType` of the init error.
        error_type: String,
        /// `errorMessage` of the init error.
        error_message: String,
    },
    /// The sandbox's process or task exited during init or an invocation.
    #[error("sandbox {id} lost: {reason}")]
    SandboxLost {
        /// The sandbox.
        id: SandboxId,
        /// What happened (exit status, signal, OOM kill).
        reason: String,
    },
    /// The sandbox's runtime had exited while idle, before it took the invocation: the
    /// invocation never ran and can be retried on another sandbox.
    #[error("RequestId: {request_id} Error: {reason} (sandbox {id} exited while idle)")]
    ExitedIdle {
        /// The sandbox.
        id: SandboxId,
        /// The invocation that did not run.
        request_id: String,
        /// How the runtime exited, in Lambda's words.
        reason: String,
    },
    /// The request payload is over Lambda's 6 MB limit.
    #[error("payload of {size} bytes is over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// Size of the payload.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// The operation is not supported by this backend.
    #[error("{operation} is not supported by the {backend} backend")]
    Unsupported {
        /// The operation.
        operation: &'static str,
        /// The backend.
        backend: &'static str,
    },
    /// A zip function's code or layer could not be read, extracted or merged.
    #[error("function {function}: cannot prepare {}: {source}", .path.display())]
    Package {
        /// The function.
        function: String,
        /// The code or layer at fault.
        path: std::path::PathBuf,
        /// The I/O or archive error.
        #[source]
        source: std::io::Error,
    },
    /// A zip function's runtime cannot run on this host (its interpreter or runtime client
    /// is missing).
    #[error("function {function}: runtime {runtime}: {reason}")]
    ManagedRuntime {
        /// The function.
        function: String,
        /// The runtime identifier (`python3.12`).
        runtime: String,
        /// What is missing and how to install it.
        reason: String,
    },
    /// The backend (containerd, a remote agent) cannot be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Any other failure of the backend.
    #[error("backend error: {0}")]
    Backend(String),
    /// A gRPC call of the backend (containerd, an agent) failed.
    #[cfg(any(feature = "containerd", feature = "remote"))]
    #[error("backend error: {call}: {:?}: {}", .source.code(), .source.message())]
    Grpc {
        /// The call and its object, e.g. `containerd create task fn-1`.
        call: String,
        /// The status the call ended with.
        #[source]
        source: tonic::Status,
    },
    /// An operating-system operation of the backend failed (a FIFO, a namespace, a plugin).
    #[error("backend error: {operation}: {source}")]
    Os {
        /// What was being done.
        operation: String,
        /// The error of the system.
        #[source]
        source: std::io::Error,
    },
    /// A JSON document (an image manifest, a plugin's answer) could not be read or written.
    #[error("backend error: {document}: {source}")]
    Json {
        /// Which document.
        document: String,
        /// The parser's error.
        #[source]
        source: serde_json::Error,
    },
    /// Another failure of the backend, with its cause (a registry, an HTTP exchange).
    #[error("backend error: {operation}: {source}")]
    Other {
        /// What was being done.
        operation: String,
        /// The cause.
        #[source]
        source: BoxError,
    },
    /// An I/O error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Error {
    /// The message of a backend failure without the `backend error: ` prefix, as it travels
    /// to a remote caller; `None` for the other kinds.
    pub fn backend_detail(&self) -> Option<String> {
        match self {
            Error::Backend(message) => Some(message.clone()),
            #[cfg(any(feature = "containerd", feature = "remote"))]
            Error::Grpc { call, source } => {
                Some(format!("{call}: {:?}: {}", source.code(), source.message()))
            }
            Error::Os { operation, source } => Some(format!("{operation}: {source}")),
            Error::Json { document, source } => Some(format!("{document}: {source}")),
            Error::Other { operation, source } => Some(format!("{operation}: {source}")),
            Error::Io(io) => Some(io.to_string()),
            _ => None,
        }
    }

    /// True when the sandbox can no longer be used after this error (it was killed or died).
    pub fn is_sandbox_fatal(&self) -> bool {
        matches!(
            self,
            Error::Timeout { .. }
                | Error::InitTimeout { .. }
                | Error::InitFailed { .. }
                | Error::SandboxLost { .. }
                | Error::ExitedIdle { .. }
                | Error::NotFound(_)
        )
    }

    /// The `errorType` and `errorMessage` Lambda answers for invocation `request_id` that
    /// failed with this error: an init error keeps the type the runtime posted
    /// (`Runtime.ImportModuleError`), a runtime that exited reads
    /// `RequestId: <id> Error: Runtime exited with error: exit status 3`.
    pub fn lambda_error(&self, request_id: &str) -> (String, String) {
        match self {
            Error::InitFailed {
                error_type,
                error_message,
            } if !error_type.is_empty() => (error_type.clone(), error_message.clone()),
            Error::SandboxLost { reason, .. } | Error::ExitedIdle { reason, .. } => (
                self.lambda_error_type().to_owned(),
                format!("RequestId: {request_id} Error: {reason}"),
            ),
            other => (other.lambda_error_type().to_owned(), other.to_string()),
        }
    }

    /// The Lambda error type a caller of the Invoke API would see for this error.
    pub fn lambda_error_type(&self) -> &'static str {
        match self {
            Error::Timeout { .. } => "Sandbox.Timedout",
            Error::InitTimeout { .. } => "Runtime.InitTimeout",
            Error::InitFailed { .. } => "Runtime.InitError",
            Error::SandboxLost { .. } | Error::ExitedIdle { .. } => "Runtime.ExitError",
            Error::PayloadTooLarge { .. } => "RequestTooLargeException",
            _ => "ServiceException",
        }
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lambda_errors_read_as_lambda_writes_them() {
        let init = Error::InitFailed {
            error_type: "Runtime.ImportModuleError".into(),
            error_message: "Unable to import module 'app': No module named 'app'".into(),
        };
        assert_eq!(
            init.lambda_error("r-1"),
            (
                "Runtime.ImportModuleError".to_owned(),
                "Unable to import module 'app': No module named 'app'".to_owned()
            )
        );
        let lost = Error::SandboxLost {
            id: SandboxId::new("sb-1"),
            reason: "Runtime exited with error: exit status 3".into(),
        };
        assert_eq!(
            lost.lambda_error("r-2"),
            (
                "Runtime.ExitError".to_owned(),
                "RequestId: r-2 Error: Runtime exited with error: exit status 3".to_owned()
            )
        );
    }
}
