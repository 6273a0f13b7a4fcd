//! The Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) end to end, the
//! log tail it returns (`X-Amz-Log-Type: Tail`), and function logs reaching the terminal sink
//! and VictoriaLogs with their request id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

#[path = "../../esb-logs/tests/support/mod.rs"]
mod victorialogs;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use esb_gateway::Gateway;
use esb_gateway::logs::{TAIL_BYTES, function_log_sink};
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

/// A gateway whose runtime logs to a capturing sink and to the gateway's log tail.
async fn start() -> (Gateway, Arc<CapturingSink>) {
    let sink = Arc::new(CapturingSink::default());
    let config = support::config(FUNCTIONS, ROUTING);
    let runtime = support::process_runtime(config.log_tail.tee(sink.clone()));
    let gateway = Gateway::start(config, vec![runtime]).await.unwrap();
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
        json!({
            "Type": "User",
            "Message": "Function not found: arn:aws:lambda:us-east-1:000000000000:function:nope",
        })
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
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "InvalidRequestContentException"
    );
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

/// A `RequestResponse` invocation of `plain` that asks for the log tail.
async fn invoke_with_tail(gateway: &Gateway, payload: Value) -> reqwest::Response {
    invoke(gateway, "plain", "RequestResponse", payload)
        .header("X-Amz-Log-Type", "Tail")
        .send()
        .await
        .unwrap()
}

fn request_id(response: &reqwest::Response) -> String {
    response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// The decoded `X-Amz-Log-Result` of an answer.
fn log_result(response: &reqwest::Response) -> String {
    let header = response
        .headers()
        .get("x-amz-log-result")
        .expect("an X-Amz-Log-Result header");
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(header.as_bytes())
        .unwrap();
    String::from_utf8(bytes).unwrap()
}

/// Where `needle` starts in `log`, failing with the whole log.
fn position(log: &str, needle: &str) -> usize {
    log.find(needle)
        .unwrap_or_else(|| panic!("{needle:?} is not in the log tail:\n{log}"))
}

#[tokio::test]
async fn log_type_tail_returns_the_invocations_log() {
    let (gw, _) = start().await;
    let response = invoke_with_tail(
        &gw,
        json!({"print": ["a printed line"], "stderr": ["an error line"]}),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = request_id(&response);
    let log = log_result(&response);
    let start = position(&log, &format!("START RequestId: {id} Version: $LATEST\n"));
    let printed = position(&log, "\na printed line\n");
    let stderr = position(&log, "\nan error line\n");
    let end = position(&log, &format!("\nEND RequestId: {id}\n"));
    let report = position(&log, &format!("\nREPORT RequestId: {id}\tDuration: "));
    assert!(
        start < printed && printed < end && stderr < end && end < report,
        "{log}"
    );
    // The first invocation of a sandbox reports its init, as Lambda's cold starts do.
    assert!(log[report..].contains("\tMemory Size: 128 MB\t"), "{log}");
    assert!(log[report..].contains("\tInit Duration: "), "{log}");
    assert!(log.ends_with('\n'), "{log}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["echo"]["print"], json!(["a printed line"]));

    // The next request's tail is its own (warm: no Init Duration).
    let response = invoke_with_tail(&gw, json!({"print": ["second"]})).await;
    let second = request_id(&response);
    let log = log_result(&response);
    assert!(
        log.starts_with(&format!("START RequestId: {second} ")),
        "{log}"
    );
    position(&log, "\nsecond\n");
    position(&log, &format!("\nREPORT RequestId: {second}\t"));
    assert!(
        !log.contains("a printed line") && !log.contains(&id),
        "{log}"
    );
    assert!(!log.contains("Init Duration"), "{log}");

    // Without the header, or with None, there is no log result.
    for log_type in [None, Some("None")] {
        let mut request = invoke(&gw, "plain", "RequestResponse", json!({"print": ["quiet"]}));
        if let Some(log_type) = log_type {
            request = request.header("X-Amz-Log-Type", log_type);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{log_type:?}");
        assert!(
            !response.headers().contains_key("x-amz-log-result"),
            "{log_type:?}"
        );
    }
    let response = invoke(&gw, "plain", "RequestResponse", json!({}))
        .header("X-Amz-Log-Type", "Full")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(
        response.headers()["x-amzn-errortype"],
        "InvalidParameterValueException"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn the_log_tail_is_the_last_4_kb() {
    let (gw, _) = start().await;
    let lines: Vec<String> = (0..200)
        .map(|i| format!("line {i:03} {}", "x".repeat(60)))
        .collect();
    let response = invoke_with_tail(&gw, json!({"print": lines})).await;
    assert_eq!(response.status(), StatusCode::OK);
    let id = request_id(&response);
    let log = log_result(&response);
    assert_eq!(log.len(), TAIL_BYTES);
    assert!(
        !log.contains("START RequestId") && !log.contains("line 000 "),
        "{log}"
    );
    let last = position(&log, &format!("\n{}\n", lines[199]));
    assert!(last < position(&log, &format!("\nREPORT RequestId: {id}\t")));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_log_tail_of_a_failed_invocation() {
    let (gw, _) = start().await;
    // A handled error: the function answered, so its log has a REPORT.
    let response = invoke_with_tail(
        &gw,
        json!({"print": ["about to fail"], "error": {"type": "Oops", "message": "no"}}),
    )
    .await;
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let id = request_id(&response);
    let log = log_result(&response);
    assert!(
        position(&log, "\nabout to fail\n")
            < position(&log, &format!("\nREPORT RequestId: {id}\t"))
    );

    // A timeout: the sandbox is killed; the log says why and ends with END.
    let response =
        invoke_with_tail(&gw, json!({"print": ["about to sleep"], "sleep_ms": 3000})).await;
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let id = request_id(&response);
    let log = log_result(&response);
    let slept = position(&log, "\nabout to sleep\n");
    let error = position(&log, &format!("\n{id} Error: "));
    let end = position(&log, &format!("\nEND RequestId: {id}\n"));
    assert!(slept < error && error < end, "{log}");
    assert!(log.ends_with(&format!("\nEND RequestId: {id}\n")), "{log}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_runtime_that_keeps_its_logs_still_gets_start_end_and_report() {
    // The tail is not the runtime's log sink, as with remote agents: the gateway writes
    // the platform lines itself.
    let gw = Gateway::start(
        support::config(FUNCTIONS, ROUTING),
        vec![support::process_runtime(Arc::new(CapturingSink::default()))],
    )
    .await
    .unwrap();
    let response = invoke_with_tail(&gw, json!({"print": ["elsewhere"]})).await;
    let id = request_id(&response);
    let log = log_result(&response);
    let mut lines = log.lines();
    assert_eq!(
        lines.next(),
        Some(format!("START RequestId: {id} Version: $LATEST").as_str())
    );
    assert_eq!(lines.next(), Some(format!("END RequestId: {id}").as_str()));
    let report = lines.next().unwrap();
    assert!(
        report.starts_with(&format!("REPORT RequestId: {id}\tDuration: ")),
        "{log}"
    );
    assert!(report.contains("\tMemory Size: 128 MB\t"), "{log}");
    assert_eq!(lines.next(), None, "{log}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_runtime_that_exited_while_idle_is_replaced_by_a_cold_start() {
    let (gw, _) = start().await;
    // The function answers, then its runtime exits while the sandbox is idle (as awslambdaric
    // does after its over-6 MB response is refused).
    let response = invoke(
        &gw,
        "plain",
        "RequestResponse",
        json!({"exit_after_ms": 10}),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let first: Value = response.json().await.unwrap();
    // Well within the pool's sweep of dead sandboxes (every second).
    tokio::time::sleep(Duration::from_millis(100)).await;
    let response = invoke(&gw, "plain", "RequestResponse", json!({"n": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        !response.headers().contains_key("x-amz-function-error"),
        "the dead sandbox was leased"
    );
    let second: Value = response.json().await.unwrap();
    assert_eq!(second["echo"], json!({"n": 2}));
    assert_ne!(first["pid"], second["pid"], "no cold start");
    gw.shutdown().await;
}
