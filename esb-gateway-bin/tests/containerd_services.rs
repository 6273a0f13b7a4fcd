//! A containerd sandbox reaches the box's companions: the all-in-one gateway on containerd
//! (the real binary) forwards the loopback `moto_server` (S3 + DynamoDB) and itself from the
//! CNI bridge's host address, and the variables a sandbox gets point there. The function
//! (the static test function in an image from the local registry) makes plain HTTP calls to
//! the URLs it finds in `AWS_ENDPOINT_URL_S3`, `S3_ENDPOINT`, `AWS_ENDPOINT_URL_DYNAMODB` and
//! `AWS_ENDPOINT_URL_LAMBDA`. Skips without containerd unless `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod support;

use support::{gateway_command as gateway, write};

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esb_testfn::oci;
use serde_json::{Value, json};
use support::moto::{self, Moto};

/// The gateway process and its bridge: if the test fails before stopping it, the gateway
/// gets SIGTERM (it removes its sandboxes), then SIGKILL, and the bridge is deleted.
struct Running(Child, String);

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        for _ in 0..300 {
            if !matches!(self.0.try_wait(), Ok(None)) {
                break;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
        let _ = Command::new("ip").args(["link", "del", &self.1]).status();
    }
}

/// An `Authorization` header as moto reads it: the service comes from its credential scope
/// (moto checks no signature; without one it refuses reading an object, and sends an
/// unsigned DynamoDB call to S3).
fn scope(service: &str) -> String {
    format!(
        "AWS4-HMAC-SHA256 Credential=esb/20250101/us-east-1/{service}/aws4_request, SignedHeaders=host, Signature=0"
    )
}

/// An S3 call as the test function sends it.
fn s3(method: &str, url_env: &str, path: &str, body: &str) -> Value {
    json!({
        "method": method,
        "url_env": url_env,
        "path": path,
        "headers": {"Content-Type": "text/plain", "Authorization": scope("s3")},
        "body": body,
    })
}

/// A DynamoDB JSON call as the test function sends it.
fn dynamodb(action: &str, body: Value) -> Value {
    json!({
        "method": "POST",
        "url_env": "AWS_ENDPOINT_URL_DYNAMODB",
        "path": "/",
        "headers": {
            "X-Amz-Target": format!("DynamoDB_20120810.{action}"),
            "Content-Type": "application/x-amz-json-1.0",
            "Authorization": scope("dynamodb"),
        },
        "body": body.to_string(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn a_containerd_sandbox_reaches_s3_dynamodb_and_the_gateway_on_loopback() {
    let Some(address) = oci::containerd() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no containerd to test against"
        );
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let image = tokio::task::block_in_place(oci::pushed_image);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let dir = tempfile::tempdir().unwrap();
    let cni_conf = dir.path().join("net.d");
    let cni_data = dir.path().join("cni");
    let bridge = format!("esbs{suffix}");
    // A subnet of its own (10.238.x: no other test uses it), so a bridge left by a killed run
    // must not shadow this one's.
    let subnet = format!("10.238.{}", u8::from_str_radix(&suffix[..2], 16).unwrap());
    let functions = write(
        dir.path(),
        "functions.yml",
        &format!(
            "services:\n  s3: {{ endpoint: \"{url}\" }}\n  dynamodb: {{ endpoint: \"http://localhost:{port}\" }}\nfunctions:\n  box: {{ image: \"{image}\", timeout: 60 }}\n",
            url = moto.url(),
            port = moto.port,
        ),
    );
    let routing = write(dir.path(), "routing.yml", "routes: []\n");
    let port = moto::free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let child = gateway()
        .args([
            "--runtime",
            "containerd",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--functions", &functions, "--routing", &routing])
        .arg("--containerd-address")
        .arg(&address)
        .args([
            "--env",
            &format!("svc-{suffix}"),
            "--state-dir",
            "/run/esb-test",
        ])
        .args(["--insecure-registry", &oci::registry()])
        .args([
            "--cni-subnet",
            &format!("{subnet}.0/24"),
            "--cni-bridge",
            &bridge,
        ])
        .args(["--cni-network", &bridge])
        .arg("--cni-conf-dir")
        .arg(&cni_conf)
        .arg("--cni-data-dir")
        .arg(&cni_data)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut running = Running(child, bridge.clone());
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{url}/health")).send().await
            && response.status().is_success()
        {
            break;
        }
        assert!(
            running.0.try_wait().unwrap().is_none(),
            "the gateway exited"
        );
        assert!(
            Instant::now() < deadline,
            "the gateway never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let table = json!({
        "TableName": "sandbox-table",
        "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    });
    let event = json!({"http": [
        s3("PUT", "AWS_ENDPOINT_URL_S3", "/sandbox-bucket", ""),
        s3("PUT", "AWS_ENDPOINT_URL_S3", "/sandbox-bucket/hello.txt", "from the sandbox"),
        s3("GET", "S3_ENDPOINT", "/sandbox-bucket/hello.txt", ""),
        dynamodb("CreateTable", table),
        dynamodb("PutItem", json!({"TableName": "sandbox-table", "Item": {"pk": {"S": "k"}, "v": {"S": "from the sandbox"}}})),
        dynamodb("GetItem", json!({"TableName": "sandbox-table", "Key": {"pk": {"S": "k"}}})),
        {"method": "GET", "url_env": "AWS_ENDPOINT_URL_LAMBDA", "path": "/health"},
    ]});
    let response = client
        .post(format!("{url}/2015-03-31/functions/box/invocations"))
        .json(&event)
        .send()
        .await
        .unwrap();
    let failed = response.headers().get("x-amz-function-error").is_some();
    let answer: Value = response.json().await.unwrap();
    assert!(!failed, "{answer}");
    let calls = answer["http"].as_array().unwrap();
    for call in calls {
        let called = call["url"].as_str().unwrap();
        assert!(
            called.starts_with(&format!("http://{subnet}.1:")),
            "a sandbox is pointed at the bridge's host address: {call}"
        );
        assert_eq!(call["status"], 200, "{call}");
    }
    assert_eq!(calls[2]["body"], "from the sandbox");
    let item: Value = serde_json::from_str(calls[5]["body"].as_str().unwrap()).unwrap();
    assert_eq!(item["Item"]["v"]["S"], "from the sandbox", "{item}");
    assert!(
        calls[6]["body"].as_str().unwrap().contains("healthy"),
        "{}",
        calls[6]
    );
    // What the sandbox wrote is in the real service, as seen from the host.
    let stored = client
        .get(format!("{}/sandbox-bucket/hello.txt", moto.url()))
        .header("authorization", scope("s3"))
        .send()
        .await
        .unwrap();
    assert_eq!(stored.text().await.unwrap(), "from the sandbox");

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(running.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = running.0.wait().unwrap();
    assert!(status.success(), "{status}");
}
