//! The process backend's Runtime API answers only its own sandbox's processes: another local
//! process that reads the address from `/proc/<pid>/environ` and polls it is refused, while
//! the function keeps answering every invocation.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use reqwest::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Polls `/next` `attempts` times; prints how many polls got an invocation and how many
/// were refused.
const HIJACKER: &str = r#"
import sys, http.client
host, port = sys.argv[1].rsplit(':', 1)
taken = refused = 0
for _ in range(int(sys.argv[2])):
    try:
        c = http.client.HTTPConnection(host, int(port), timeout=3)
        c.request('GET', '/2018-06-01/runtime/invocation/next')
        r = c.getresponse()
        r.read()
        if r.status == 200:
            taken += 1
        else:
            refused += 1
    except Exception:
        refused += 1
print(taken, refused)
"#;

/// The Runtime API address in the environment of the process carrying `mark`.
fn runtime_api_of(mark: &str) -> String {
    let needle = format!("ESB_HIJACK_MARK={mark}");
    for pid in std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let vars: Vec<&[u8]> = env.split(|&b| b == 0).collect();
        if !vars.contains(&needle.as_bytes()) {
            continue;
        }
        for var in vars {
            if let Some(api) = var.strip_prefix(b"AWS_LAMBDA_RUNTIME_API=") {
                return String::from_utf8(api.to_vec()).unwrap();
            }
        }
    }
    panic!("no sandbox process carries {needle}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_local_process_cannot_take_a_sandboxs_invocations() {
    let Some(python) = support::clients::python_with(&["http.client"]) else {
        return;
    };
    let mark = uuid::Uuid::new_v4().to_string();
    let functions = format!(
        r#"
functions:
  victim:
    command: ["${{TESTFN}}"]
    timeout: 5
    environment: {{ ESB_HIJACK_MARK: "{mark}" }}
    scaling: {{ max_capacity: 1 }}
"#
    );
    let gateway = support::start(support::config(&functions, "routes: []\n")).await;
    let invoke = |n: usize| {
        let url = format!("{}/2015-03-31/functions/victim/invocations", gateway.url());
        async move {
            let response = support::client()
                .post(url)
                .body(serde_json::json!({ "n": n }).to_string())
                .send()
                .await
                .unwrap();
            let status = response.status();
            let body: serde_json::Value = response.json().await.unwrap_or_default();
            (status, body)
        }
    };
    assert_eq!(invoke(0).await.0, StatusCode::OK);
    let api = runtime_api_of(&mark);

    // This process is no member of the sandbox either: closed before any answer.
    let mut stream = tokio::net::TcpStream::connect(&api).await.unwrap();
    let _ = stream
        .write_all(b"GET /2018-06-01/runtime/invocation/next HTTP/1.1\r\nHost: x\r\n\r\n")
        .await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer)).await;
    assert!(answer.is_empty(), "{}", String::from_utf8_lossy(&answer));

    let hijacker = tokio::process::Command::new(python)
        .args(["-c", HIJACKER, &api, "10"])
        .output();
    let invocations = futures::future::join_all((1..=20).map(invoke));
    let (hijacker, answers) = tokio::join!(hijacker, invocations);
    for (n, (status, body)) in answers.iter().enumerate() {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(body["echo"]["n"], n + 1, "{body}");
    }
    let hijacker = hijacker.unwrap();
    let counts = String::from_utf8_lossy(&hijacker.stdout).trim().to_owned();
    assert_eq!(counts, "0 10", "taken, refused; {hijacker:?}");
    gateway.shutdown().await;
}
