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
//! | `esb_pool_warm_pool_exhausted_total` | counter | `function` | requests that found no warm sandbox (cold start or queue) |
//! | `esb_pool_cold_start_duration_seconds` | histogram | `function` | time to create and start a sandbox |
//! | `esb_pool_agent_sandboxes` | gauge | `agent` | this pool's sandboxes on a runtime, including those being created |
//! | `esb_pool_agent_memory_mb` | gauge | `agent` | the `memory_size` of this pool's sandboxes on a runtime |
//! | `esb_pool_agent_capacity_sandboxes` | gauge | `agent` | the runtime's `max_sandboxes`, when limited |
//! | `esb_pool_agent_memory_budget_mb` | gauge | `agent` | the runtime's memory budget, when limited |
//! | `esb_pool_agent_utilisation` | gauge | `agent` | sandboxes over capacity, when the runtime is limited |
//! | `esb_pool_agent_up` | gauge | `agent` | 1 while the runtime answers |
//! | `esb_pool_agent_draining` | gauge | `agent` | 1 while the runtime takes no new sandboxes (gone from DNS) and still holds some |
//!
//! The `agent` series are not in the recorder: [`Pool::runtime_metrics`](crate::Pool::runtime_metrics)
//! renders them from the runtimes the pool has at that moment, so that they follow a changing
//! set of agents. An agent found later appears at once; one removed (gone from DNS, draining)
//! keeps its series while it still holds sandboxes and loses them all once drained, so it
//! neither counts in an average nor raises an "agent down" alert after it is gone. An agent
//! that is down but still expected (a static one, or still in DNS) stays, with `up` 0.
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
/// Counter of requests that found no warm sandbox and had to cold start or queue.
pub const WARM_POOL_EXHAUSTED: &str = "esb_pool_warm_pool_exhausted_total";
/// Histogram of sandbox creation times in seconds.
pub const COLD_START_DURATION: &str = "esb_pool_cold_start_duration_seconds";
/// Gauge of this pool's sandboxes per runtime.
pub const AGENT_SANDBOXES: &str = "esb_pool_agent_sandboxes";
/// Gauge of this pool's sandbox memory per runtime (MB).
pub const AGENT_MEMORY: &str = "esb_pool_agent_memory_mb";
/// Gauge of a runtime's sandbox limit.
pub const AGENT_CAPACITY: &str = "esb_pool_agent_capacity_sandboxes";
/// Gauge of a runtime's memory budget (MB).
pub const AGENT_MEMORY_BUDGET: &str = "esb_pool_agent_memory_budget_mb";
/// Gauge of a runtime's utilisation (0..1).
pub const AGENT_UTILISATION: &str = "esb_pool_agent_utilisation";
/// Gauge: 1 while a runtime answers.
pub const AGENT_UP: &str = "esb_pool_agent_up";
/// Gauge: 1 while a runtime is draining (takes no new sandboxes) and still holds some.
pub const AGENT_DRAINING: &str = "esb_pool_agent_draining";

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
    metrics::describe_counter!(
        WARM_POOL_EXHAUSTED,
        Unit::Count,
        "Requests that found no warm sandbox and had to cold start or queue."
    );
    metrics::describe_histogram!(
        COLD_START_DURATION,
        Unit::Seconds,
        "Time to create and start a sandbox."
    );
}

/// The `agent` series of these runtimes in Prometheus text (with their HELP and TYPE lines),
/// leaving out the runtimes that are drained (draining with no sandbox left).
pub fn render_runtimes(usage: &[crate::RuntimeUsage]) -> String {
    use std::fmt::Write as _;
    let shown: Vec<&crate::RuntimeUsage> = usage
        .iter()
        .filter(|u| !(u.draining && u.sandboxes == 0))
        .collect();
    type Value = fn(&crate::RuntimeUsage) -> Option<f64>;
    let series: [(&str, &str, Value); 7] = [
        (
            AGENT_SANDBOXES,
            "This pool's sandboxes on a runtime, including those being created.",
            |u| Some(u.sandboxes as f64),
        ),
        (
            AGENT_MEMORY,
            "The memory_size of this pool's sandboxes on a runtime (MB).",
            |u| Some(u.memory_mb as f64),
        ),
        (
            AGENT_CAPACITY,
            "The runtime's max_sandboxes, when limited.",
            |u| u.capacity.max_sandboxes.map(f64::from),
        ),
        (
            AGENT_MEMORY_BUDGET,
            "The runtime's memory budget (MB), when limited.",
            |u| u.capacity.memory_budget_mb.map(|b| b as f64),
        ),
        (
            AGENT_UTILISATION,
            "This pool's sandboxes over the runtime's capacity: the larger of count / max_sandboxes and memory / budget.",
            crate::RuntimeUsage::utilisation,
        ),
        (AGENT_UP, "1 while the runtime answers.", |u| {
            Some(f64::from(u8::from(u.healthy)))
        }),
        (
            AGENT_DRAINING,
            "1 while the runtime takes no new sandboxes (gone from DNS) and still holds some.",
            |u| Some(f64::from(u8::from(u.draining))),
        ),
    ];
    let mut text = String::new();
    for (name, help, value) in series {
        let values: Vec<(&str, f64)> = shown
            .iter()
            .filter_map(|u| value(u).map(|v| (u.name.as_str(), v)))
            .collect();
        if values.is_empty() {
            continue;
        }
        let _ = writeln!(text, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (agent, v) in values {
            let _ = writeln!(text, "{name}{{agent=\"{}\"}} {v}", label_value(agent));
        }
        text.push('\n');
    }
    text
}

/// `value` escaped for a Prometheus label (backslash, double quote, new line).
fn label_value(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
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
    pub warm_exhausted: Counter,
    pub cold_start_duration: Histogram,
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
            breaker: metrics::gauge!(BREAKER_STATE, "function" => f.clone()),
            warm_exhausted: metrics::counter!(WARM_POOL_EXHAUSTED, "function" => f.clone()),
            cold_start_duration: metrics::histogram!(COLD_START_DURATION, "function" => f),
        }
    }
}
