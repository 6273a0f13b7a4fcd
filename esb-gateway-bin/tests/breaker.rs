//! The circuit breaker of a function: its threshold and open time from functions.yml (the
//! function's own `scaling` over `defaults.scaling`), and the 503 that says it is open.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::Value;

const FUNCTIONS: &str = r#"
defaults:
  scaling: { breaker_threshold: 3, breaker_open_time: 60 }
functions:
  own:
    command: ["/nonexistent/esb-breaker-test"]
    scaling: { breaker_threshold: 2 }
  inherited:
    command: ["/nonexistent/esb-breaker-test"]
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/own", method: "GET", function: "own", auth: none }
  - { path: "/inherited", method: "GET", function: "inherited", auth: none }
"#;

/// Status and message of a GET of `path`.
async fn get(gateway: &esb_gateway::Gateway, path: &str) -> (StatusCode, String) {
    let response = support::client()
        .get(format!("{}{path}", gateway.url()))
        .send()
        .await
        .unwrap();
    let status = response.status();
    let body: Value = response.json().await.unwrap();
    (
        status,
        body["message"].as_str().unwrap_or_default().to_owned(),
    )
}

/// The number of failing requests after which `path` answers that the breaker of
/// `function` is open.
async fn failures_until_open(gateway: &esb_gateway::Gateway, path: &str, function: &str) -> usize {
    for failures in 0..10 {
        let (status, message) = get(gateway, path).await;
        if message.contains("breaker") {
            assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(
                message,
                format!(
                    "circuit breaker of function {function} is open after repeated sandbox failures"
                )
            );
            // It stays open for the configured 60 s.
            let (status, again) = get(gateway, path).await;
            assert_eq!((status, again), (StatusCode::SERVICE_UNAVAILABLE, message));
            return failures;
        }
    }
    panic!("the breaker of {function} never opened");
}

#[tokio::test]
async fn the_threshold_is_the_functions_own_or_the_default_and_the_503_says_the_breaker_is_open() {
    let gateway = support::start(support::config(FUNCTIONS, ROUTING)).await;
    assert_eq!(failures_until_open(&gateway, "/own", "own").await, 2);
    assert_eq!(
        failures_until_open(&gateway, "/inherited", "inherited").await,
        3
    );
}
