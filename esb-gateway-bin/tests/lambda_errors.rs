//! Errors of functions that fail outside their handler read on the Invoke API as Lambda's:
//! an init error keeps the type the runtime posted (awslambdaric's
//! `Runtime.ImportModuleError`), and a runtime that exits reads
//! `RequestId: <id> Error: Runtime exited with error: exit status 3`.

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
