//! The Invoke API's errors as Lambda's, checked by boto3 (`tests/fixtures/boto3/`) against a
//! gateway on 127.0.0.1, and the raw shape of an error answer as Lambda sends it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::{Value, json};
use support::clients;

const FUNCTIONS: &str = r#"
functions:
  plain:
    command: ["${TESTFN}"]
    timeout: 5
  broken:
    command: ["/nonexistent/esb-test/bootstrap"]
"#;

async fn start() -> Gateway {
    support::start(support::config(FUNCTIONS, "routes: []\n")).await
}

#[tokio::test]
async fn boto3_sees_lambdas_errors() {
    let Some(python) = clients::python_with(&["boto3"]) else {
        return;
    };
    let gw = start().await;
    let script = clients::fixtures().join("boto3/invoke_errors.py");
    let url = gw.url();
    let output = tokio::process::Command::new(python)
        .arg(&script)
        .arg(&url)
        .env_remove("AWS_PROFILE")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        output.status.success(),
        "boto3 checks failed:\n{stdout}\n{stderr}"
    );
    assert!(!stdout.contains("FAILED"), "{stdout}");
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unknown_function_is_answered_as_lambda_does() {
    let gw = start().await;
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/123456789012%3Afunction%3Anope/invocations",
            gw.url()
        ))
        .body("{}")
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
            "Message": "Function not found: arn:aws:lambda:us-east-1:123456789012:function:nope",
        })
    );
    gw.shutdown().await;
}
