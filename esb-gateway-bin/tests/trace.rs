//! X-Ray tracing as Lambda does it: the function gets `Root`, `Parent` and `Sampled` in its
//! trace header, awslambdaric sets `_X_AMZN_TRACE_ID` from it for each invocation, and the
//! REPORT line of a sampled invocation ends in `XRAY TraceId: ... SegmentId: ... Sampled: true`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::Value;
use support::{CapturingSink, clients};

const ROOT: &str = "1-5759e988-bd862e3fe1be46a994272793";

/// One invocation of `name` traced by the caller with this sampling decision: the answer.
async fn invoke(gateway: &Gateway, name: &str, sampled: &str) -> Value {
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .header("X-Amzn-Trace-Id", format!("Root={ROOT};Sampled={sampled}"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("x-amz-function-error"));
    response.json().await.unwrap()
}

#[tokio::test]
async fn awslambdaric_sees_the_trace_header_and_report_names_the_segment() {
    let dir = clients::fixture_functions("python");
    let Some(launch) = clients::python_ric(&dir, "app.handler") else {
        return;
    };
    let sink = Arc::new(CapturingSink::default());
    let functions = format!("functions:\n{}", launch.function_yaml("py", &[]));
    let config = support::config(&functions, "routes: []\n");
    let runtime = support::process_runtime(sink.clone());
    let gw = Gateway::start(config, vec![runtime]).await.unwrap();

    let mut parents = Vec::new();
    for _ in 0..2 {
        let body = invoke(&gw, "py", "1").await;
        let trace = body["trace_env"].as_str().expect("_X_AMZN_TRACE_ID is set");
        let rest = trace
            .strip_prefix(&format!("Root={ROOT};Parent="))
            .unwrap_or_else(|| panic!("{trace}"));
        let (parent, sampled) = rest.split_once(';').unwrap();
        assert_eq!(sampled, "Sampled=1", "{trace}");
        assert_eq!(parent.len(), 16, "{trace}");
        let request_id = body["request_id"].as_str().unwrap();
        let report = loop {
            let found = sink.0.lock().unwrap().iter().find_map(|l| {
                l.message
                    .starts_with(&format!("REPORT RequestId: {request_id}"))
                    .then(|| l.message.clone())
            });
            match found {
                Some(report) => break report,
                None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        assert!(
            report.ends_with(&format!(
                "\tXRAY TraceId: {ROOT}\tSegmentId: {parent}\tSampled: true"
            )),
            "{report}"
        );
        parents.push(parent.to_owned());
    }
    // Each invocation is a segment of its own.
    assert_ne!(parents[0], parents[1]);

    // Not sampled: the header says so and REPORT has no XRAY part.
    let body = invoke(&gw, "py", "0").await;
    assert!(
        body["trace_env"].as_str().unwrap().ends_with(";Sampled=0"),
        "{body}"
    );
    let request_id = body["request_id"].as_str().unwrap().to_owned();
    let report = loop {
        let found = sink.0.lock().unwrap().iter().find_map(|l| {
            l.message
                .starts_with(&format!("REPORT RequestId: {request_id}"))
                .then(|| l.message.clone())
        });
        match found {
            Some(report) => break report,
            None => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
        }
    };
    assert!(!report.contains("XRAY"), "{report}");
    gw.shutdown().await;
}

#[tokio::test]
async fn the_log_tail_of_a_sampled_invocation_names_its_segment() {
    use base64::Engine as _;
    let config = support::config(
        "functions:\n  plain:\n    command: [\"${TESTFN}\"]\n",
        "routes: []\n",
    );
    let gw = support::start(config).await;
    for sampled in ["1", "0"] {
        let response = support::client()
            .post(format!(
                "{}/2015-03-31/functions/plain/invocations",
                gw.url()
            ))
            .header("X-Amzn-Trace-Id", format!("Root={ROOT};Sampled={sampled}"))
            .header("X-Amz-Log-Type", "Tail")
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let log = base64::engine::general_purpose::STANDARD
            .decode(response.headers()["x-amz-log-result"].as_bytes())
            .unwrap();
        let log = String::from_utf8(log).unwrap();
        let report = log
            .lines()
            .find(|line| line.starts_with("REPORT RequestId: "))
            .unwrap_or_else(|| panic!("{log}"));
        if sampled == "1" {
            let xray = format!("\tXRAY TraceId: {ROOT}\tSegmentId: ");
            assert!(report.contains(&xray), "{report}");
            assert!(report.ends_with("\tSampled: true"), "{report}");
        } else {
            assert!(!report.contains("XRAY"), "{report}");
        }
    }
    gw.shutdown().await;
}
