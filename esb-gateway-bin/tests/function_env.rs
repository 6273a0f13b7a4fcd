//! What a function finds in its environment: Lambda's credentials variables (configurable,
//! its own `environment` wins), and nothing of the gateway's host environment such as
//! `RUST_BACKTRACE` or `RUST_LOG`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;
use std::sync::Arc;

use esb_gateway::Gateway;
use esb_runtime::FunctionCredentials;
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use serde_json::{Value, json};

const FUNCTIONS: &str = r#"
functions:
  plain:
    command: ["${TESTFN}"]
  own:
    command: ["${TESTFN}"]
    environment: { AWS_ACCESS_KEY_ID: own-key, AWS_SESSION_TOKEN: own-token }
"#;

/// Set by [`host_variables_never_reach_a_function`] on the copy of this test binary it runs.
const CHILD_MARKER: &str = "ESB_FUNCTION_ENV_CHILD";

/// The environment `name` reports, invoked through the Invoke API of a gateway over `config`.
async fn function_env(config: ProcessConfig, name: &str) -> Value {
    let runtime = Arc::new(ProcessRuntime::new(config.log_sink(Arc::new(NullLogSink))));
    let gateway = Gateway::start(support::config(FUNCTIONS, "routes: []\n"), vec![runtime])
        .await
        .unwrap();
    let answer: Value = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .body(json!({}).to_string())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["env"].clone()
}

#[tokio::test]
async fn functions_get_local_credentials_by_default() {
    let env = function_env(ProcessConfig::default(), "plain").await;
    assert_eq!(env["AWS_ACCESS_KEY_ID"], esb_runtime::DEFAULT_ACCESS_KEY_ID);
    assert_eq!(
        env["AWS_SECRET_ACCESS_KEY"],
        esb_runtime::DEFAULT_SECRET_ACCESS_KEY
    );
    assert!(env.get("AWS_SESSION_TOKEN").is_none(), "{env}");
    assert_eq!(env["LANG"], "en_US.UTF-8");
}

#[tokio::test]
async fn configured_credentials_reach_functions_and_their_own_environment_wins() {
    let credentials =
        FunctionCredentials::new("AKIDCONFIGURED", "configured-secret", Some("tok".into()));
    let config = ProcessConfig::default().credentials(credentials.clone());
    let env = function_env(config.clone(), "plain").await;
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "AKIDCONFIGURED");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "configured-secret");
    assert_eq!(env["AWS_SESSION_TOKEN"], "tok");

    let env = function_env(config.clone(), "own").await;
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "own-key");
    assert_eq!(env["AWS_SECRET_ACCESS_KEY"], "configured-secret");
    assert_eq!(env["AWS_SESSION_TOKEN"], "own-token");

    // Neither the secret nor the token shows in Debug output.
    for debug in [format!("{credentials:?}"), format!("{config:?}")] {
        assert!(debug.contains("AKIDCONFIGURED"), "{debug}");
        assert!(!debug.contains("configured-secret"), "{debug}");
        assert!(!debug.contains("tok\""), "{debug}");
    }
}

/// Runs [`child_gateway_over_a_noisy_host_environment`] in a copy of this test binary whose
/// environment carries `RUST_BACKTRACE`, `RUST_LOG`, `HOME` and stray AWS variables, as a
/// developer's shell would hand them to the gateway.
#[test]
fn host_variables_never_reach_a_function() {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_gateway_over_a_noisy_host_environment",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_MARKER, "1")
        .env("RUST_BACKTRACE", "full")
        .env("RUST_LOG", "trace")
        .env("HOME", "/home/host-user")
        .env("AWS_ACCESS_KEY_ID", "AKIDOFTHEHOST")
        .env("AWS_SECRET_ACCESS_KEY", "secret-of-the-host")
        .env("AWS_SESSION_TOKEN", "token-of-the-host")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        stdout.contains("1 passed"),
        "the child test did not run: {stdout}"
    );
}

/// The half of [`host_variables_never_reach_a_function`] that runs in the child; a no-op
/// in an ordinary test run.
#[test]
fn child_gateway_over_a_noisy_host_environment() {
    if std::env::var_os(CHILD_MARKER).is_none() {
        return;
    }
    assert_eq!(std::env::var("RUST_BACKTRACE").unwrap(), "full");
    let env = tokio::runtime::Runtime::new()
        .unwrap()
        .block_on(function_env(ProcessConfig::default(), "plain"));
    for key in ["RUST_BACKTRACE", "RUST_LOG", "HOME", "AWS_SESSION_TOKEN"] {
        assert!(
            env.get(key).is_none(),
            "{key} leaked into the function: {env}"
        );
    }
    assert_eq!(env["AWS_ACCESS_KEY_ID"], esb_runtime::DEFAULT_ACCESS_KEY_ID);
    assert_eq!(
        env["AWS_SECRET_ACCESS_KEY"],
        esb_runtime::DEFAULT_SECRET_ACCESS_KEY
    );
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "plain");
}
