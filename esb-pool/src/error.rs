//! The crate's one error type.

use std::time::Duration;

use tower::BoxError;

/// Why the pool could not serve a request.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// No sandbox became free within `acquire_timeout` (HTTP 429).
    #[error("function {function} is throttled: no sandbox became free within {:.3} s", .waited.as_secs_f64())]
    Throttled {
        /// The function.
        function: String,
        /// How long the request waited.
        waited: Duration,
    },
    /// The function is not in the pool.
    #[error("function {0} is not pooled")]
    UnknownFunction(String),
    /// The function's circuit breaker is open (HTTP 503).
    #[error("circuit breaker of function {function} is open after repeated sandbox failures")]
    CircuitOpen {
        /// The function.
        function: String,
    },
    /// No healthy runtime can take a new sandbox (HTTP 503).
    #[error("no healthy runtime can start a sandbox of function {function}")]
    NoCapacity {
        /// The function.
        function: String,
    },
    /// A sandbox could not be created (HTTP 503).
    #[error("cannot create a sandbox of function {function}: {source}")]
    Create {
        /// The function.
        function: String,
        /// The runtime's error.
        #[source]
        source: esb_runtime::Error,
    },
    /// The invocation failed in the runtime (timeouts, lost sandboxes, ...).
    #[error(transparent)]
    Runtime(#[from] esb_runtime::Error),
    /// A service between the pool and the runtime failed the invocation (a tower timeout,
    /// load shedding, ...); the sandbox it ran on, if any, is destroyed.
    #[error(
        "the invocation of function {function} failed before reaching the runtime's answer: {source}"
    )]
    Inner {
        /// The function.
        function: String,
        /// The inner service's error.
        #[source]
        source: BoxError,
    },
    /// A task serving the function ended without an answer (it panicked or was cancelled).
    #[error("the invocation of function {function} was aborted: {source}")]
    Aborted {
        /// The function.
        function: String,
        /// Why the task ended.
        #[source]
        source: tokio::task::JoinError,
    },
    /// A pool config is invalid.
    #[error("invalid pool config (function {function:?}, field {field}): {reason}")]
    InvalidConfig {
        /// The function at fault, empty for pool-wide fields.
        function: String,
        /// The field at fault.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// The function is already pooled.
    #[error("function {0} is already pooled")]
    AlreadyRegistered(String),
    /// The pool was created outside a Tokio runtime.
    #[error("the pool must be created inside a Tokio runtime")]
    NoTokio(#[source] tokio::runtime::TryCurrentError),
    /// The pool is shut down.
    #[error("the pool is shut down")]
    Shutdown,
}

impl PoolError {
    /// The error of an inner service: a runtime error stays [`PoolError::Runtime`], anything
    /// else becomes [`PoolError::Inner`].
    pub(crate) fn from_inner(function: &str, err: BoxError) -> Self {
        match err.downcast::<esb_runtime::Error>() {
            Ok(err) => PoolError::Runtime(*err),
            Err(source) => PoolError::Inner {
                function: function.to_owned(),
                source,
            },
        }
    }
}
