//! Function logs end to end: a function run by the process backend prints a line, and it
//! reaches a VictoriaLogs JSON-lines endpoint with its function name and request id.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../esb-logs/tests/support/mod.rs"]
mod support;

use std::sync::Arc;
use std::time::Duration;

use esb::logs::{LogShipper, VictoriaLogsConfig, VictoriaLogsSink};
use esb::runtime::process::{ProcessConfig, ProcessRuntime};
use esb::runtime::{InvokeRequest, InvokeResult, Runtime, SandboxSpec};
use serde_json::{Value, json};
use support::VictoriaLogs;

fn line_with<'a>(lines: &'a [Value], message: &str) -> Option<&'a Value> {
    lines.iter().find(|l| l["message"] == message)
}

#[tokio::test]
async fn a_printed_line_reaches_victorialogs_with_its_function_and_request_id() {
    let server = VictoriaLogs::start().await;
    let mut config = VictoriaLogsConfig::new(&server.url);
    config.flush_interval = Duration::from_millis(50);
    let shipper = LogShipper::start(config).unwrap();
    let runtime = ProcessRuntime::new(
        ProcessConfig::default().log_sink(Arc::new(VictoriaLogsSink(shipper.clone()))),
    );

    let bin = esb_testfn::binary().expect("build esb-testfn");
    let sandbox = runtime
        .create(SandboxSpec::new("logfn").command([bin.display().to_string()]))
        .await
        .unwrap();
    let request = InvokeRequest::new(json!({"print": ["hello from the function"]}).to_string());
    let request_id = request.request_id.clone();
    let response = runtime.invoke(&sandbox.id, request).await.unwrap();
    assert!(
        matches!(response.result, InvokeResult::Success(_)),
        "{response:?}"
    );

    let report_prefix = format!("REPORT RequestId: {request_id}");
    server
        .wait_until("the printed line and the REPORT line", |s| {
            let lines = s.lines();
            line_with(&lines, "hello from the function").is_some()
                && lines.iter().any(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with(&report_prefix))
                })
        })
        .await;
    runtime.destroy(&sandbox.id).await.unwrap();
    let metrics = shipper.shutdown(Duration::from_secs(5)).await;
    assert_eq!(metrics.dropped, 0, "{metrics:?}");

    let lines = server.lines();
    let printed = line_with(&lines, "hello from the function").unwrap();
    assert_eq!(printed["function_name"], "logfn");
    assert_eq!(printed["container_name"], "logfn");
    assert_eq!(printed["job"], "lambda");
    assert_eq!(printed["aws_request_id"], request_id.as_str());
    assert_eq!(printed["sandbox_id"], sandbox.id.as_str());
    assert_eq!(printed["stream"], "stdout");
    assert_eq!(printed["level"], "info");

    let report = lines
        .iter()
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&report_prefix))
        })
        .unwrap();
    assert_eq!(report["function_name"], "logfn");
    assert_eq!(report["aws_request_id"], request_id.as_str());
    assert_eq!(report["stream"], "platform");
    assert!(
        report["message"]
            .as_str()
            .unwrap()
            .contains("Billed Duration:"),
        "{report}"
    );
    let start = format!("START RequestId: {request_id} Version: $LATEST");
    assert!(line_with(&lines, &start).is_some(), "{lines:?}");
}
