//! Per-function pools of Lambda sandboxes over any ESB [`Runtime`](esb_runtime::Runtime).
//!
//! A [`Pool`] keeps warm sandboxes per function and hands them out one invocation at a
//! time: most recently used first, a cold start when none is idle and the function is
//! under its `max_capacity`, otherwise a FIFO queue bounded by `acquire_timeout`
//! ([`PoolError::Throttled`]). A janitor freezes idle sandboxes, scales idle ones to zero
//! (never below `min_capacity`), reconciles with [`Runtime::list`](esb_runtime::Runtime::list)
//! and replaces lost ones. A per-function circuit breaker fails fast while a function's
//! sandboxes keep failing. The pool is a [`tower::Service<Invocation>`](tower::Service), and
//! [`PoolLayer`] puts it in front of a service that runs an invocation on a leased sandbox.
//!
//! ```no_run
//! # async fn run() -> Result<(), esb_pool::PoolError> {
//! use std::sync::Arc;
//! use esb_pool::{FunctionPoolConfig, Invocation, Pool, PoolConfig};
//! use esb_runtime::process::{ProcessConfig, ProcessRuntime};
//! use esb_runtime::{InvokeRequest, SandboxSpec};
//!
//! let spec = SandboxSpec::new("echo").command(["./target/debug/echo-fn"]);
//! let config = PoolConfig::new([FunctionPoolConfig::new(spec).max_capacity(4)]);
//! let pool = Pool::new(config, vec![Arc::new(ProcessRuntime::new(ProcessConfig::default()))])?;
//! let answer = pool
//!     .invoke(Invocation::new("echo", InvokeRequest::new(r#"{"hello":"world"}"#)))
//!     .await?;
//! println!("cold start: {}, body: {:?}", answer.cold_start, answer.response.body());
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

mod breaker;
mod config;
mod janitor;
pub mod metrics;
mod pool;
mod service;

use std::time::Duration;

pub use breaker::BreakerState;
pub use config::{BreakerConfig, FunctionPoolConfig, PoolConfig};
pub use pool::{FunctionStats, Lease, Pool};
pub use service::{Invocation, PoolLayer, PoolResponse, PoolService, RuntimeInvoker, SandboxCall};

/// Why the pool could not serve a request.
#[derive(Debug, thiserror::Error)]
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
    /// The invocation's task ended without an answer (it panicked).
    #[error("the invocation of function {function} was aborted: {reason}")]
    Aborted {
        /// The function.
        function: String,
        /// What happened.
        reason: String,
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
    NoTokio,
    /// The pool is shut down.
    #[error("the pool is shut down")]
    Shutdown,
}
