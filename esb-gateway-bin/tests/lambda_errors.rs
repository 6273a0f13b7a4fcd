//! Errors of functions that fail outside their handler read on the Invoke API as Lambda's:
//! an init error keeps the type the runtime posted (awslambdaric's
//! `Runtime.ImportModuleError`), and a runtime that exits reads
//! `RequestId: <id> Error: Runtime exited with error: exit status 3`; a runtime that exits
//! after its over-6 MB answer is refused is not handed the next request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::Value;
use support::clients;

async fn start(functions: &str) -> Gateway {
    support::start(support::config(functions, "routes: []\n")).await
}

/// One `RequestResponse` invocation of `name`: its request id and error document.
async fn failed(gateway: &Gateway, name: &str) -> (String, Value) {
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    (request_id, response.json().await.unwrap())
}

#[tokio::test]
async fn an_awslambdaric_import_error_keeps_its_type() {
    let dir = clients::fixture_functions("python");
    let Some(launch) = clients::python_ric(&dir, "no_such_module.handler") else {
        return;
    };
    let functions = format!("functions:\n{}", launch.function_yaml("py", &[]));
    let gw = start(&functions).await;
    let (_, body) = failed(&gw, "py").await;
    assert_eq!(body["errorType"], "Runtime.ImportModuleError", "{body}");
    let message = body["errorMessage"].as_str().unwrap();
    assert!(
        message.contains("Unable to import module 'no_such_module'"),
        "{body}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn a_runtime_that_exits_reads_as_lambdas_exit_error() {
    let gw = start("functions:\n  gone:\n    command: [\"/bin/sh\", \"-c\", \"exit 3\"]\n").await;
    let (request_id, body) = failed(&gw, "gone").await;
    assert_eq!(body["errorType"], "Runtime.ExitError", "{body}");
    assert_eq!(
        body["errorMessage"],
        format!("RequestId: {request_id} Error: Runtime exited with error: exit status 3"),
        "{body}"
    );
    gw.shutdown().await;
}

#[tokio::test]
async fn after_an_awslambdaric_answer_over_6_mb_the_next_request_succeeds() {
    let dir = clients::fixture_functions("python");
    let Some(launch) = clients::python_ric(&dir, "app.handler") else {
        return;
    };
    let functions = format!("functions:\n{}", launch.function_yaml("py", &[]));
    let gw = start(&functions).await;
    let url = format!("{}/2015-03-31/functions/py/invocations", gw.url());
    let response = support::client()
        .post(&url)
        .body(r#"{"big_mb": 7}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["errorType"], "Function.ResponseSizeTooLarge", "{body}");
    // awslambdaric exits once its answer is refused; the requests that follow at once must
    // not be handed to it.
    for n in 0..5 {
        let response = support::client()
            .post(&url)
            .body(format!(r#"{{"n": {n}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        let function_error = response.headers().get("x-amz-function-error").cloned();
        let body: Value = response.json().await.unwrap();
        assert_eq!(function_error, None, "request {n}: {body}");
        assert_eq!(body["echo"]["n"], n, "{body}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    gw.shutdown().await;
}
