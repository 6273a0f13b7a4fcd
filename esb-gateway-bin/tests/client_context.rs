//! The Invoke API's `X-Amz-Client-Context` (base64 of JSON) reaches `context.client_context`
//! of functions run by each official runtime client: Rust `lambda_runtime`, Python
//! `awslambdaric` and Node `aws-lambda-ric`; a value that is not base64 of a JSON object is
//! refused as Lambda refuses it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine as _;
use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::clients::{self, Launch};

/// What a mobile SDK sends: custom fields, the client's environment and the app.
fn client_context() -> Value {
    json!({
        "custom": {"user": "alice", "tenant": "t-1"},
        "env": {"locale": "en_GB", "platform": "esb-test"},
        "client": {
            "installation_id": "inst-1",
            "app_title": "esb tests",
            "app_version_name": "1.0",
            "app_version_code": "1",
            "app_package_name": "esb.tests",
        },
    })
}

fn encoded(value: &Value) -> String {
    base64::engine::general_purpose::STANDARD.encode(value.to_string())
}

async fn start(functions: &str) -> Gateway {
    support::start(support::config(functions, "routes: []\n")).await
}

/// One `RequestResponse` invocation of `name` with this `X-Amz-Client-Context`.
async fn invoke(gateway: &Gateway, name: &str, context: Option<&str>) -> reqwest::Response {
    let mut request = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .body(json!({"n": 1}).to_string());
    if let Some(context) = context {
        request = request.header("X-Amz-Client-Context", context);
    }
    request.send().await.unwrap()
}

/// The answer of a fixture function given the client context: its `client_context`.
async fn seen_by(gateway: &Gateway, name: &str) -> Value {
    let response = invoke(gateway, name, Some(&encoded(&client_context()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    let function_error = response.headers().get("x-amz-function-error").cloned();
    let body: Value = response.json().await.unwrap();
    assert_eq!(function_error, None, "{body}");
    assert_eq!(body["echo"], json!({"n": 1}), "{body}");
    body["client_context"].clone()
}

/// The custom fields, the environment and the app, as Python and Node hand them over.
fn assert_whole_context(seen: &Value) {
    assert_eq!(seen["custom"], client_context()["custom"], "{seen}");
    assert_eq!(seen["env"], client_context()["env"], "{seen}");
    assert_eq!(seen["client"]["installation_id"], "inst-1", "{seen}");
    assert_eq!(seen["client"]["app_title"], "esb tests", "{seen}");
}

#[tokio::test]
async fn lambda_runtime_functions_get_the_client_context() {
    let gw = start("functions:\n  rust:\n    command: [\"${TESTFN}\"]\n").await;
    let response = invoke(&gw, "rust", Some(&encoded(&client_context()))).await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(!response.headers().contains_key("x-amz-function-error"));
    let body: Value = response.json().await.unwrap();
    let seen = &body["context"]["client_context"];
    // lambda_runtime's ClientContext: `custom`, `environment` (the mobile SDKs' `env` is
    // not one of its fields) and `client` in camelCase.
    assert_eq!(seen["custom"], client_context()["custom"], "{body}");
    assert_eq!(seen["client"]["installationId"], "inst-1", "{body}");
    assert_eq!(seen["client"]["appTitle"], "esb tests", "{body}");

    // Without the header the function sees none; the runtime keeps serving.
    let body: Value = invoke(&gw, "rust", None).await.json().await.unwrap();
    assert_eq!(body["context"]["client_context"], Value::Null, "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_client_context_that_is_not_base64_of_a_json_object_is_refused() {
    let gw = start("functions:\n  rust:\n    command: [\"${TESTFN}\"]\n").await;
    let not_object = base64::engine::general_purpose::STANDARD.encode("[1, 2]");
    let not_json = base64::engine::general_purpose::STANDARD.encode("{\"custom\":");
    for bad in [
        "this is not base64!",
        not_object.as_str(),
        not_json.as_str(),
    ] {
        let response = invoke(&gw, "rust", Some(bad)).await;
        assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{bad}");
        assert_eq!(
            response.headers()["x-amzn-errortype"],
            "InvalidRequestContentException",
            "{bad}"
        );
        let body: Value = response.json().await.unwrap();
        let message = body
            .get("Message")
            .or_else(|| body.get("message"))
            .and_then(Value::as_str);
        assert_eq!(
            message,
            Some("Client context must be a valid Base64-encoded JSON object."),
            "{body}"
        );
    }
    gw.shutdown().await;
}

/// A gateway running one fixture function, `name`, started by `launch`.
async fn start_client(name: &str, launch: &Launch) -> Gateway {
    let functions = format!(
        "functions:\n{}",
        launch.function_yaml(name, &["timeout: 10"])
    );
    start(&functions).await
}

#[tokio::test]
async fn awslambdaric_functions_get_the_client_context() {
    let Some(launch) = clients::python_ric(&clients::fixture_functions("python"), "app.handler")
    else {
        return;
    };
    let gw = start_client("py", &launch).await;
    assert_whole_context(&seen_by(&gw, "py").await);
    let body: Value = invoke(&gw, "py", None).await.json().await.unwrap();
    assert_eq!(body["client_context"], Value::Null, "{body}");
    gw.shutdown().await;
}

#[tokio::test]
async fn aws_lambda_ric_functions_get_the_client_context() {
    let Some(launch) = clients::node_ric(&clients::fixture_functions("node"), "app.handler") else {
        return;
    };
    let gw = start_client("node", &launch).await;
    assert_whole_context(&seen_by(&gw, "node").await);
    let body: Value = invoke(&gw, "node", None).await.json().await.unwrap();
    assert_eq!(body["client_context"], Value::Null, "{body}");
    gw.shutdown().await;
}
