//! Per-function pools of Lambda sandboxes over any ESB [`Runtime`](esb_runtime::Runtime).
//!
//! A [`Pool`] keeps warm sandboxes per function and hands them out one invocation at a
//! time: most recently used first, a cold start when none is idle and the function is
//! under its `max_capacity`, otherwise a FIFO queue bounded by `acquire_timeout`
//! ([`PoolError::Throttled`]). A janitor freezes idle sandboxes, scales idle ones to zero
//! (never below `min_capacity`), reconciles with [`Runtime::list`](esb_runtime::Runtime::list)
//! and replaces lost ones. A per-function circuit breaker fails fast while a function's
//! sandboxes keep failing.
//!
//! **Invoking.** The one way is the tower [`Service<Invocation>`](tower::Service):
//! [`PoolLayer`] puts the pool in front of a service that runs a [`SandboxCall`] on the
//! leased sandbox — [`RuntimeInvoker`], or standard tower layers (timeout, retry, load
//! shedding) over it, since the inner error only has to convert into a
//! [`BoxError`](tower::BoxError). [`Pool`] itself is that service over `RuntimeInvoker`, and
//! [`Pool::invoke`] is a shorthand for calling it. Each invocation runs in its own task, so a
//! caller that leaves does not cut it short. For advanced use, [`Pool::acquire`] leases a
//! sandbox as a [`Lease`] (returned to the pool when dropped), run with [`Lease::invoke`].
//!
//! **Defaults.** [`FunctionPoolConfig::new`] holds ESB's scaling defaults, also named as
//! constants ([`DEFAULT_ACQUIRE_TIMEOUT`], [`DEFAULT_MAX_CAPACITY`], ...).
//!
//! **Inside**, modules depend one way: `accounting` (pure per-function bookkeeping) and
//! `placement` (which runtime takes a new sandbox) under `state` (the locked, shared state),
//! under `lease` (RAII guards and the acquire procedure), under `janitor`, `invoke` and the
//! public `Pool` and services.
//!
//! ```no_run
//! # async fn run() -> Result<(), esb_pool::PoolError> {
//! use std::sync::Arc;
//! use std::time::Duration;
//! use esb_pool::{FunctionPoolConfig, Invocation, Pool, PoolConfig, PoolLayer, RuntimeInvoker};
//! use esb_runtime::process::{ProcessConfig, ProcessRuntime};
//! use esb_runtime::{InvokeRequest, SandboxSpec};
//! use tower::{ServiceBuilder, ServiceExt};
//!
//! let spec = SandboxSpec::new("echo").command(["./target/debug/echo-fn"]);
//! let config = PoolConfig::new([FunctionPoolConfig::new(spec).max_capacity(4)]);
//! let pool = Pool::new(config, vec![Arc::new(ProcessRuntime::new(ProcessConfig::default()))])?;
//! // The pool in front of the runtime, with any tower layer in between.
//! let service = ServiceBuilder::new()
//!     .layer(PoolLayer::new(pool.clone()))
//!     .timeout(Duration::from_secs(30))
//!     .service(RuntimeInvoker);
//! let answer = service
//!     .oneshot(Invocation::new("echo", InvokeRequest::new(r#"{"hello":"world"}"#)))
//!     .await?;
//! println!("cold start: {}, body: {:?}", answer.cold_start, answer.response.body());
//! pool.shutdown().await;
//! # Ok(()) }
//! ```

mod accounting;
mod breaker;
mod config;
mod error;
mod invoke;
mod janitor;
mod lease;
pub mod metrics;
mod placement;
mod pool;
mod service;
mod state;

pub use accounting::FunctionStats;
pub use breaker::BreakerState;
pub use config::{
    BreakerConfig, DEFAULT_ACQUIRE_TIMEOUT, DEFAULT_FAILURE_THRESHOLD, DEFAULT_IDLE_TIMEOUT,
    DEFAULT_JANITOR_INTERVAL, DEFAULT_MAX_CAPACITY, DEFAULT_MIN_CAPACITY, DEFAULT_ORPHAN_GRACE,
    DEFAULT_PAUSE_IDLE, DEFAULT_RECOVERY_TIME, FunctionPoolConfig, PoolConfig,
};
pub use error::PoolError;
pub use invoke::{Invocation, PoolResponse, RuntimeInvoker, SandboxCall};
pub use lease::Lease;
pub use pool::{Pool, RuntimeStatus, RuntimeUsage};
pub use service::{PoolLayer, PoolService, ResponseFuture};
pub use state::OWNER_LABEL;
