//! Metrics through the `metrics` facade; every series has the label `function`.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `esb_pool_sandboxes` | gauge | `function`, `state` = `idle` / `paused` / `busy` / `creating` / `destroying` | sandboxes by state |
//! | `esb_pool_queue_depth` | gauge | `function` | requests waiting for a sandbox |
//! | `esb_pool_queue_wait_seconds` | histogram | `function` | time a queued request waited |
//! | `esb_pool_cold_starts_total` | counter | `function` | sandboxes created for a waiting request |
//! | `esb_pool_throttles_total` | counter | `function` | requests throttled after `acquire_timeout` |
//! | `esb_pool_create_failures_total` | counter | `function` | failed sandbox creations |
//! | `esb_pool_sandboxes_lost_total` | counter | `function` | sandboxes removed after a fatal error or found gone |
//! | `esb_pool_breaker_state` | gauge | `function` | 0 closed, 1 open, 2 half-open |
//!
//! Handles are registered when a function is added to a pool: install the recorder first.

use metrics::{Counter, Gauge, Histogram, Unit};

/// Gauge of sandboxes by function and state.
pub const SANDBOXES: &str = "esb_pool_sandboxes";
/// Gauge of queued requests by function.
pub const QUEUE_DEPTH: &str = "esb_pool_queue_depth";
/// Histogram of queue waits in seconds.
pub const QUEUE_WAIT: &str = "esb_pool_queue_wait_seconds";
/// Counter of on-demand sandbox creations.
pub const COLD_STARTS: &str = "esb_pool_cold_starts_total";
/// Counter of throttled requests.
pub const THROTTLES: &str = "esb_pool_throttles_total";
/// Counter of failed sandbox creations.
pub const CREATE_FAILURES: &str = "esb_pool_create_failures_total";
/// Counter of sandboxes lost or found gone.
pub const SANDBOXES_LOST: &str = "esb_pool_sandboxes_lost_total";
/// Gauge of the circuit breaker's state (0 closed, 1 open, 2 half-open).
pub const BREAKER_STATE: &str = "esb_pool_breaker_state";

/// Describes the pool's metrics to the installed recorder (units and help texts).
pub fn describe() {
    metrics::describe_gauge!(SANDBOXES, Unit::Count, "Sandboxes by function and state.");
    metrics::describe_gauge!(QUEUE_DEPTH, Unit::Count, "Requests waiting for a sandbox.");
    metrics::describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "Time a queued request waited for a sandbox."
    );
    metrics::describe_counter!(COLD_STARTS, Unit::Count, "Sandboxes created on demand.");
    metrics::describe_counter!(
        THROTTLES,
        Unit::Count,
        "Requests throttled after waiting acquire_timeout."
    );
    metrics::describe_counter!(CREATE_FAILURES, Unit::Count, "Failed sandbox creations.");
    metrics::describe_counter!(
        SANDBOXES_LOST,
        Unit::Count,
        "Sandboxes removed after a fatal error or found gone."
    );
    metrics::describe_gauge!(
        BREAKER_STATE,
        "Circuit breaker state: 0 closed, 1 open, 2 half-open."
    );
}

/// The registered handles of one function.
#[derive(Debug)]
pub(crate) struct FunctionMetrics {
    pub idle: Gauge,
    pub paused: Gauge,
    pub busy: Gauge,
    pub creating: Gauge,
    pub destroying: Gauge,
    pub queue_depth: Gauge,
    pub queue_wait: Histogram,
    pub cold_starts: Counter,
    pub throttles: Counter,
    pub create_failures: Counter,
    pub lost: Counter,
    pub breaker: Gauge,
}

impl FunctionMetrics {
    pub(crate) fn new(function: &str) -> Self {
        let f = function.to_owned();
        let state =
            |s: &'static str| metrics::gauge!(SANDBOXES, "function" => f.clone(), "state" => s);
        Self {
            idle: state("idle"),
            paused: state("paused"),
            busy: state("busy"),
            creating: state("creating"),
            destroying: state("destroying"),
            queue_depth: metrics::gauge!(QUEUE_DEPTH, "function" => f.clone()),
            queue_wait: metrics::histogram!(QUEUE_WAIT, "function" => f.clone()),
            cold_starts: metrics::counter!(COLD_STARTS, "function" => f.clone()),
            throttles: metrics::counter!(THROTTLES, "function" => f.clone()),
            create_failures: metrics::counter!(CREATE_FAILURES, "function" => f.clone()),
            lost: metrics::counter!(SANDBOXES_LOST, "function" => f.clone()),
            breaker: metrics::gauge!(BREAKER_STATE, "function" => f),
        }
    }
}
