//! Function output is bounded in bytes end to end: a real `esb-gateway` whose standard error
//! nobody reads stays under a memory bound while a function writes a 300 MB line without a
//! newline, then 400 lines of 1 MB.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_testfn::ports::free_port;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The bound on the gateway's peak resident memory (VmHWM), as README states it.
const RSS_BOUND: u64 = 200 * 1024 * 1024;

const FUNCTIONS: &str = r#"
functions:
  loud:
    command: ["${TESTFN}"]
    timeout: 120
"#;

struct Gateway {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `esb-gateway` with its standard error piped and never read.
async fn spawn_gateway() -> Gateway {
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions.yml");
    std::fs::write(
        &functions,
        FUNCTIONS.replace("${TESTFN}", &support::testfn().display().to_string()),
    )
    .unwrap();
    let routing = dir.path().join("routing.yml");
    std::fs::write(&routing, "routes: []\n").unwrap();
    let port = free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
        .args(["--functions", &functions.display().to_string()])
        .args(["--routing", &routing.display().to_string()])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("JWT_SECRET_KEY", support::SECRET)
        .env("X_API_KEY", "test-api-key")
        .env("AUTH_USER", "alice")
        .env("AUTH_PASS", "wonderland")
        .env_remove("ESB_FUNCTIONS")
        .env_remove("ESB_ROUTING")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let gateway = Gateway {
        child,
        url: format!("http://127.0.0.1:{port}"),
        _dir: dir,
    };
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return gateway;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("esb-gateway did not listen");
}

/// `key:  N kB` of `/proc/<pid>/status`, in bytes.
fn status_bytes(pid: u32, key: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .unwrap();
    line.trim().trim_end_matches(" kB").parse::<u64>().unwrap() * 1024
}

async fn invoke(gateway: &Gateway, event: serde_json::Value) -> serde_json::Value {
    let response = reqwest::Client::builder()
        .timeout(Duration::from_secs(300))
        .build()
        .unwrap()
        .post(format!(
            "{}/2015-03-31/functions/loud/invocations",
            gateway.url
        ))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_memory_stays_bounded_whatever_a_function_writes() {
    let gateway = spawn_gateway().await;
    let pid = gateway.child.id();
    let answer = invoke(
        &gateway,
        serde_json::json!({"spew": {"bytes": 300u64 << 20}, "print": ["end"]}),
    )
    .await;
    assert!(answer.get("echo").is_some(), "{answer}");
    let after_long_line = status_bytes(pid, "VmHWM");
    let answer = invoke(
        &gateway,
        serde_json::json!({"spew": {"bytes": 400u64 << 20, "line_bytes": 1u64 << 20}}),
    )
    .await;
    assert!(answer.get("echo").is_some(), "{answer}");
    let peak = status_bytes(pid, "VmHWM");
    assert!(
        after_long_line < RSS_BOUND && peak < RSS_BOUND,
        "gateway peak RSS {} MB after a 300 MB line, {} MB after 400 x 1 MB lines (bound {} MB)",
        after_long_line >> 20,
        peak >> 20,
        RSS_BOUND >> 20
    );
    eprintln!(
        "gateway peak RSS: {} MB after a 300 MB line, {} MB after 400 x 1 MB lines",
        after_long_line >> 20,
        peak >> 20
    );
}
