//! The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) end to end, and
//! function logs reaching the terminal sink and VictoriaLogs with their request id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../esb-logs/tests/support/mod.rs"]
mod victorialogs;

use std::sync::Arc;
use std::time::Duration;

use esb_gateway::Gateway;
use esb_gateway::logs::function_log_sink;
use esb_logs::{LogShipper, VictoriaLogsConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::CapturingSink;

const FUNCTIONS: &str = r#"
functions:
  plain:
    command: ["${TESTFN}"]
    timeout: 1
"#;

const ROUTING: &str = "routes: []\n";

async fn start() -> (Gateway, Arc<CapturingSink>) {
    let sink = Arc::new(CapturingSink::default());
    let gateway = Gateway::start(
        support::config(FUNCTIONS, ROUTING),
        vec![support::process_runtime(sink.clone())],
    )
    .await
    .unwrap();
    (gateway, sink)
}

fn invoke(gateway: &Gateway, name: &str, kind: &str, payload: Value) -> reqwest::RequestBuilder {
    support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .header("x-amz-invocation-type", kind)
        .body(payload.to_string())
}

#[tokio::test]
async fn request_response_returns_the_result_unchanged() {
    let (gw, _) = start().await;
    let response = invoke(&gw, "plain", "RequestResponse", json!({"n": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-amz-executed-version"], "$LATEST");
    assert!(!response.headers().contains_key("x-amz-function-error"));
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["echo"], json!({"n": 1}));
    assert_eq!(body["context"]["request_id"], request_id.as_str());
    gw.shutdown().await;
}

#[tokio::test]
async fn an_arn_or_a_qualified_name_invokes_the_function() {
    let (gw, _) = start().await;
    for name in [
        "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aplain",
        "plain%3A%24LATEST",
    ] {
        let response = invoke(&gw, name, "RequestResponse", json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{name}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn function_errors_timeouts_and_crashes_answer_200_with_x_amz_function_error() {
    let (gw, _) = start().await;
    let cases = [
        (json!({"error": {"type": "Oops", "message": "no"}}), "Oops"),
        (json!({"sleep_ms": 3000}), "Sandbox.Timedout"),
        (json!({"exit": 3}), "Runtime.ExitError"),
    ];
    for (payload, error_type) in cases {
        let response = invoke(&gw, "plain", "RequestResponse", payload)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{error_type}");
        assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["errorType"], error_type, "{body}");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn event_answers_202_and_runs_in_the_background() {
    let (gw, sink) = start().await;
    let response = invoke(&gw, "plain", "Event", json!({"print": ["from an event"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let line = sink.wait_for("from an event").await;
    assert_eq!(line.request_id.as_deref(), Some(request_id.as_str()));
    assert_eq!(line.function_name, "plain");
    gw.shutdown().await;
}

#[tokio::test]
async fn dry_run_unknown_functions_and_bad_payloads() {
    let (gw, sink) = start().await;
    let response = invoke(&gw, "plain", "DryRun", json!({"print": ["dry"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NO_CONTENT);

    let response = invoke(&gw, "nope", "RequestResponse", json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "ResourceNotFoundException"
    );
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"message": "Function not found: nope"})
    );

    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/plain/invocations",
            gw.url()
        ))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert!(
        sink.0.lock().unwrap().iter().all(|l| l.message != "dry"),
        "DryRun must not run the function"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn function_logs_reach_victorialogs_with_the_request_id() {
    let server = victorialogs::VictoriaLogs::start().await;
    let mut logs = VictoriaLogsConfig::new(&server.url);
    logs.flush_interval = Duration::from_millis(50);
    let shipper = LogShipper::start(logs).unwrap();
    let gw = Gateway::start(
        support::config(FUNCTIONS, ROUTING),
        vec![support::process_runtime(function_log_sink(Some(
            shipper.clone(),
        )))],
    )
    .await
    .unwrap();
    let response = invoke(
        &gw,
        "plain",
        "RequestResponse",
        json!({"print": ["shipped line"]}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    server
        .wait_until("the printed line", |s| {
            s.lines().iter().any(|l| l["message"] == "shipped line")
        })
        .await;
    let lines = server.lines();
    let line = lines
        .iter()
        .find(|l| l["message"] == "shipped line")
        .unwrap();
    assert_eq!(line["function_name"], "plain");
    assert_eq!(line["aws_request_id"], request_id.as_str());
    gw.shutdown().await;
    shipper.shutdown(Duration::from_secs(5)).await;
}
