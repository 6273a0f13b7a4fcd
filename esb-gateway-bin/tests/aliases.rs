//! Versions and aliases through the Invoke API: a `lambda_runtime` function invoked through
//! `name:alias`, its ARN or `?Qualifier=` sees `invoked_function_arn` ending in `:alias`, the
//! answer says `X-Amz-Executed-Version: 1`; an unknown qualifier is 404
//! `ResourceNotFoundException`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::Value;

const FUNCTIONS: &str = r#"
functions:
  aliased:
    command: ["${TESTFN}"]
    aliases: [live, beta]
  plain:
    command: ["${TESTFN}"]
"#;

/// The ARN prefix of the functions (the gateway's region and account).
const ARN: &str = "arn:aws:lambda:us-east-1:000000000000:function";

/// Invokes `name` (percent-encoded as needed, `?query` after it); returns the status,
/// `X-Amz-Executed-Version` and the body.
async fn invoke(gateway: &Gateway, name: &str) -> (StatusCode, Option<String>, Value) {
    let (name, query) = name.split_once('?').unwrap_or((name, ""));
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations?{query}",
            gateway.url()
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    let status = response.status();
    let version = response
        .headers()
        .get("x-amz-executed-version")
        .map(|v| v.to_str().unwrap().to_owned());
    let error_type = response
        .headers()
        .get("x-amzn-errortype")
        .map(|v| v.to_str().unwrap().to_owned());
    let mut body: Value = response.json().await.unwrap();
    if let Some(error_type) = error_type {
        body["x-amzn-errortype"] = error_type.into();
    }
    (status, version, body)
}

fn invoked_arn(body: &Value) -> &str {
    body["context"]["invoked_function_arn"].as_str().unwrap()
}

#[tokio::test]
async fn an_alias_runs_with_its_arn_and_version_1() {
    let gw = support::start(support::config(FUNCTIONS, "routes: []\n")).await;
    let encoded_arn = ARN.replace(':', "%3A");
    for name in [
        "aliased:live".to_owned(),
        "aliased%3Alive".to_owned(),
        format!("{encoded_arn}%3Aaliased%3Alive"),
        "aliased?Qualifier=live".to_owned(),
        "arn%3Aaws%3Alambda%3Aus-east-1%3A123456789012%3Afunction%3Aaliased?Qualifier=live"
            .to_owned(),
    ] {
        let (status, version, body) = invoke(&gw, &name).await;
        assert_eq!(status, StatusCode::OK, "{name}: {body}");
        assert_eq!(version.as_deref(), Some("1"), "{name}");
        assert_eq!(invoked_arn(&body), format!("{ARN}:aliased:live"), "{name}");
    }

    let (_, version, body) = invoke(&gw, "aliased:beta").await;
    assert_eq!(version.as_deref(), Some("1"));
    assert_eq!(invoked_arn(&body), format!("{ARN}:aliased:beta"));
    let (_, version, body) = invoke(&gw, "aliased:1").await;
    assert_eq!(version.as_deref(), Some("1"));
    assert_eq!(invoked_arn(&body), format!("{ARN}:aliased:1"));

    // Unqualified and $LATEST, on the same warm sandbox.
    let (_, version, body) = invoke(&gw, "aliased").await;
    assert_eq!(version.as_deref(), Some("$LATEST"));
    assert_eq!(invoked_arn(&body), format!("{ARN}:aliased"));
    let (_, version, body) = invoke(&gw, "plain:%24LATEST").await;
    assert_eq!(version.as_deref(), Some("$LATEST"));
    assert_eq!(invoked_arn(&body), format!("{ARN}:plain:$LATEST"));
    gw.shutdown().await;
}

#[tokio::test]
async fn an_unknown_qualifier_is_404_resource_not_found() {
    let gw = support::start(support::config(FUNCTIONS, "routes: []\n")).await;
    for name in [
        "aliased:nope",
        "aliased:2",
        "plain:live",
        "plain:1",
        "aliased?Qualifier=nope",
    ] {
        let (status, _, body) = invoke(&gw, name).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{name}: {body}");
        assert_eq!(
            body["x-amzn-errortype"], "ResourceNotFoundException",
            "{name}"
        );
    }
    let (status, _, body) = invoke(&gw, "aliased:live?Qualifier=beta").await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    gw.shutdown().await;
}

/// Calls the gateway with boto3 (`Qualifier=` as a parameter, `name:alias`, an unknown
/// alias); `None` when python3 or boto3 is missing (outside CI).
fn boto3_at(endpoint: &str) -> Option<Value> {
    const SCRIPT: &str = r#"
import json, os, sys
import boto3, botocore
lam = boto3.client("lambda", endpoint_url=os.environ["ENDPOINT"], region_name="us-east-1",
                   config=botocore.config.Config(retries={"max_attempts": 1}))
out = {}
for key, kwargs in [("param", {"FunctionName": "aliased", "Qualifier": "live"}),
                    ("name", {"FunctionName": "aliased:beta"})]:
    r = lam.invoke(Payload=b"{}", **kwargs)
    body = json.loads(r["Payload"].read())
    out[key] = {"version": r["ExecutedVersion"], "arn": body["context"]["invoked_function_arn"]}
try:
    lam.invoke(FunctionName="aliased", Qualifier="nope", Payload=b"{}")
    out["unknown"] = "no error"
except lam.exceptions.ResourceNotFoundException as e:
    out["unknown"] = e.response["Error"]["Code"]
print(json.dumps(out))
"#;
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    let output = std::process::Command::new("python3")
        .args(["-c", SCRIPT])
        .env("ENDPOINT", endpoint)
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env_remove("AWS_PROFILE")
        .output();
    let output = match output {
        Ok(output) => output,
        Err(err) if !ci => {
            eprintln!("skipped: python3 cannot run: {err}");
            return None;
        }
        Err(err) => panic!("python3 cannot run (CI=true): {err}"),
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() && stderr.contains("No module named 'boto3'") && !ci {
        eprintln!("skipped: boto3 is not installed (pip install boto3)");
        return None;
    }
    assert!(output.status.success(), "boto3 failed: {stderr}");
    Some(serde_json::from_slice(&output.stdout).unwrap())
}

#[tokio::test]
async fn boto3_invokes_through_an_alias_and_gets_resource_not_found_for_an_unknown_one() {
    let gw = support::start(support::config(FUNCTIONS, "routes: []\n")).await;
    let url = gw.url();
    let Some(out) = tokio::task::spawn_blocking(move || boto3_at(&url))
        .await
        .unwrap()
    else {
        gw.shutdown().await;
        return;
    };
    assert_eq!(out["param"]["version"], "1", "{out}");
    assert_eq!(out["param"]["arn"], format!("{ARN}:aliased:live"));
    assert_eq!(out["name"]["version"], "1");
    assert_eq!(out["name"]["arn"], format!("{ARN}:aliased:beta"));
    assert_eq!(out["unknown"], "ResourceNotFoundException");
    gw.shutdown().await;
}
