//! `/metrics`: the pool's series and the gateway's own, in Prometheus text.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `esb_gateway_invocations_total` | counter | `function` | invocations that reached a sandbox |
//! | `esb_gateway_errors_total` | counter | `function`, `kind` = `function` / `timeout` / `sandbox` / `throttled` / `unavailable` | failed invocations |
//! | `esb_gateway_duration_seconds` | histogram | `function` | invocation duration in the sandbox |
//! | `esb_gateway_init_duration_seconds` | histogram | `function` | init duration of cold starts |
//! | `esb_gateway_cold_starts_total` | counter | `function` | invocations served by a new sandbox |
//! | `esb_gateway_http_requests_total` | counter | `status` | responses by status code |
//!
//! plus the event queue's (`event_queue.rs`): `esb_gateway_event_queue_depth`,
//! `esb_gateway_event_retries_total`, `esb_gateway_events_dropped_total`;
//! plus `esb_pool_*` ([`esb_pool::metrics`]): sandboxes by state, queue depth, throttles, ...
//! and the scale signals: `esb_pool_agent_utilisation{agent}` (set from the pool at each
//! scrape), `esb_pool_warm_pool_exhausted_total{function}`,
//! `esb_pool_cold_start_duration_seconds{function}`.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use metrics::{Counter, Histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Buckets of the duration histograms, in seconds.
const BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 900.0,
];

static RECORDER: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use.
///
/// Must run before the pool registers its functions, so their series are recorded.
pub(crate) fn recorder() -> PrometheusHandle {
    RECORDER
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("seconds".into()), BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_ok() {
                esb_pool::metrics::describe();
                describe();
            }
            handle
        })
        .clone()
}

fn describe() {
    metrics::describe_counter!(
        "esb_gateway_invocations_total",
        "Invocations that reached a sandbox."
    );
    metrics::describe_counter!(
        "esb_gateway_errors_total",
        "Failed invocations by kind: function, timeout, sandbox, throttled, unavailable."
    );
    metrics::describe_histogram!(
        "esb_gateway_duration_seconds",
        metrics::Unit::Seconds,
        "Invocation duration in the sandbox."
    );
    metrics::describe_histogram!(
        "esb_gateway_init_duration_seconds",
        metrics::Unit::Seconds,
        "Init duration of cold starts."
    );
    metrics::describe_counter!(
        "esb_gateway_cold_starts_total",
        "Invocations served by a new sandbox."
    );
    metrics::describe_counter!(
        "esb_gateway_http_requests_total",
        "Responses by status code."
    );
    metrics::describe_gauge!(
        "esb_gateway_event_queue_depth",
        "Asynchronous invocations held: waiting for a sandbox, running or waiting for a retry."
    );
    metrics::describe_counter!(
        "esb_gateway_event_retries_total",
        "Retries of asynchronous invocations by cause: function_error, throttled."
    );
    metrics::describe_counter!(
        "esb_gateway_events_dropped_total",
        "Asynchronous invocations given up, by reason: retries_exhausted, max_event_age, not_retryable, queue_full, shutdown."
    );
}

/// Why an invocation failed, as the `kind` label says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorKind {
    Function,
    Timeout,
    Sandbox,
    Throttled,
    Unavailable,
}

/// The registered handles of one function.
pub(crate) struct FunctionSeries {
    invocations: Counter,
    cold_starts: Counter,
    duration: Histogram,
    init_duration: Histogram,
    errors: [Counter; 5],
}

impl FunctionSeries {
    /// Records an invocation that reached a sandbox.
    pub fn invoked(&self, duration: Duration, cold_start: bool, init: Option<Duration>) {
        self.invocations.increment(1);
        self.duration.record(duration.as_secs_f64());
        if cold_start {
            self.cold_starts.increment(1);
        }
        if let Some(init) = init {
            self.init_duration.record(init.as_secs_f64());
        }
    }

    /// Records a failed invocation.
    pub fn failed(&self, kind: ErrorKind) {
        self.errors[kind as usize].increment(1);
    }
}

/// Handles of every function, registered once so the request path does no lookups by name.
pub(crate) struct GatewayMetrics {
    functions: HashMap<String, Arc<FunctionSeries>>,
    statuses: RwLock<HashMap<u16, Counter>>,
    handle: PrometheusHandle,
    /// The pool whose per-runtime usage each scrape renders.
    pool: OnceLock<esb_pool::Pool>,
}

impl GatewayMetrics {
    pub fn new<'a>(functions: impl IntoIterator<Item = &'a str>) -> Self {
        let handle = recorder();
        let functions = functions
            .into_iter()
            .map(|name| {
                let f = name.to_owned();
                let error = |kind: &'static str| {
                    metrics::counter!("esb_gateway_errors_total", "function" => f.clone(), "kind" => kind)
                };
                let series = FunctionSeries {
                    invocations: metrics::counter!("esb_gateway_invocations_total", "function" => f.clone()),
                    cold_starts: metrics::counter!("esb_gateway_cold_starts_total", "function" => f.clone()),
                    duration: metrics::histogram!("esb_gateway_duration_seconds", "function" => f.clone()),
                    init_duration: metrics::histogram!("esb_gateway_init_duration_seconds", "function" => f.clone()),
                    errors: [
                        error("function"),
                        error("timeout"),
                        error("sandbox"),
                        error("throttled"),
                        error("unavailable"),
                    ],
                };
                (f, Arc::new(series))
            })
            .collect();
        Self {
            functions,
            statuses: RwLock::new(HashMap::new()),
            handle,
            pool: OnceLock::new(),
        }
    }

    /// The series of one function.
    pub fn function(&self, function: &str) -> Option<&Arc<FunctionSeries>> {
        self.functions.get(function)
    }

    /// Records a response's status.
    pub fn responded(&self, status: http::StatusCode) {
        let code = status.as_u16();
        let known = self
            .statuses
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .get(&code)
            .cloned();
        let counter = known.unwrap_or_else(|| {
            let counter = metrics::counter!("esb_gateway_http_requests_total", "status" => status.as_str().to_owned());
            self.statuses
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .insert(code, counter.clone());
            counter
        });
        counter.increment(1);
    }

    /// Renders `pool`'s per-runtime usage at each scrape (the first pool attached stays).
    pub fn attach_pool(&self, pool: esb_pool::Pool) {
        let _ = self.pool.set(pool);
    }

    /// Every series, in Prometheus text.
    pub fn render(&self) -> String {
        let mut text = self.handle.render();
        if let Some(pool) = self.pool.get() {
            // The agents the pool has now: one found later appears, a drained one is gone.
            text.push_str(&pool.runtime_metrics());
        }
        text
    }

    /// Drains histogram samples into their buckets; call now and then.
    pub fn upkeep(&self) {
        self.handle.run_upkeep();
    }
}
