//! `Event` invocations through the Invoke API as Lambda runs them: retried after a function
//! error or timeout (short delays here; Lambda's 1 and 2 minutes by default), as many times
//! as the function's `event_invoke.maximum_retry_attempts` allows, with the same request id,
//! and every retry and dropped event in `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::time::Duration;

use esb_gateway::{EventRetry, Gateway};
use reqwest::StatusCode;
use serde_json::{Value, json};

const FUNCTIONS: &str = r#"
functions:
  retried:
    command: ["${TESTFN}"]
  once:
    command: ["${TESTFN}"]
    event_invoke: { maximum_retry_attempts: 0 }
  slow:
    command: ["${TESTFN}"]
    timeout: 1
    event_invoke: { maximum_retry_attempts: 1, maximum_event_age: 60 }
"#;

/// Retries 100 ms, then 200 ms after a function error.
async fn start() -> Gateway {
    let retry = EventRetry::default()
        .delays([Duration::from_millis(100), Duration::from_millis(200)])
        .backoff(Duration::from_millis(100), Duration::from_millis(500));
    support::start(support::config(FUNCTIONS, "routes: []\n").event_retry(retry)).await
}

/// Sends an `Event` invocation; returns its request id.
async fn event(gateway: &Gateway, function: &str, payload: Value) -> String {
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{function}/invocations",
            gateway.url()
        ))
        .header("x-amz-invocation-type", "Event")
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The request ids of the runs counted in `path`, once `runs` are there and no more came
/// within a second.
async fn runs(path: &Path, runs: usize) -> Vec<String> {
    let read = || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    for _ in 0..200 {
        if read().len() >= runs {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    read()
}

/// The value of one series in `/metrics`, 0 when absent.
async fn metric(gateway: &Gateway, series: &str) -> f64 {
    let text = support::client()
        .get(format!("{}/metrics", gateway.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |value| value.trim().parse().unwrap())
}

#[tokio::test]
async fn a_function_failing_twice_then_succeeding_runs_three_times_with_one_request_id() {
    let gw = start().await;
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("runs");
    let id = event(
        &gw,
        "retried",
        json!({"count_file": count.to_str().unwrap(), "fail_first": 2}),
    )
    .await;
    assert_eq!(runs(&count, 3).await, [id.as_str(); 3]);
    let retries = r#"esb_gateway_event_retries_total{function="retried",cause="function_error"}"#;
    assert_eq!(metric(&gw, retries).await, 2.0);
    let dropped =
        r#"esb_gateway_events_dropped_total{function="retried",reason="retries_exhausted"}"#;
    assert_eq!(metric(&gw, dropped).await, 0.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn maximum_retry_attempts_0_runs_once_and_the_drop_is_counted() {
    let gw = start().await;
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("runs");
    let payload = json!({"count_file": count.to_str().unwrap(), "fail_first": 5});
    let id = event(&gw, "once", payload).await;
    assert_eq!(runs(&count, 2).await, [id.as_str()]);
    let dropped = r#"esb_gateway_events_dropped_total{function="once",reason="retries_exhausted"}"#;
    assert_eq!(metric(&gw, dropped).await, 1.0);
    assert_eq!(metric(&gw, "esb_gateway_event_queue_depth").await, 0.0);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_timeout_is_retried_as_a_function_error() {
    let gw = start().await;
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("runs");
    let payload = json!({"count_file": count.to_str().unwrap(), "sleep_ms": 3000});
    let id = event(&gw, "slow", payload).await;
    assert_eq!(runs(&count, 3).await, [id.as_str(); 2]);
    let dropped = r#"esb_gateway_events_dropped_total{function="slow",reason="retries_exhausted"}"#;
    assert_eq!(metric(&gw, dropped).await, 1.0);
    gw.shutdown().await;
}
