//! A restarted gateway in agent mode adopts the sandboxes it left on its agents: the first
//! request after the restart is served warm by the same sandbox; another gateway's (another
//! `--gateway-id`) are left alone.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_testfn::ports::free_port;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const TOKEN: &str = "agent-token-0123456789";

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn wait_port(port: u16) {
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

fn gateway(dir: &Path, agent: u16, id: &str, port: u16) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
            .args([
                "--functions",
                &dir.join("functions.yml").display().to_string(),
            ])
            .args(["--routing", &dir.join("routing.yml").display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args([
                "--runtime",
                "agent",
                "--agent",
                &format!("http://127.0.0.1:{agent}"),
            ])
            .args(["--agent-token", TOKEN, "--env", "adopt", "--gateway-id", id])
            .env("JWT_SECRET_KEY", support::SECRET)
            .env("X_API_KEY", "test-api-key")
            .env("AUTH_USER", "alice")
            .env("AUTH_PASS", "wonderland")
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING")
            .env_remove("ESB_AGENTS")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// The pid of the sandbox process that answered.
async fn invoke(port: u16) -> u64 {
    let response = support::client()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/plain/invocations"
        ))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), reqwest::StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    body["pid"].as_u64().expect("a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_gateway_adopts_its_sandboxes_warm_and_leaves_another_gateways_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("functions.yml"),
        format!(
            "functions:\n  plain:\n    command: [\"{}\"]\n    timeout: 5\n    scaling: {{ max_capacity: 1 }}\n",
            support::testfn().display()
        ),
    )
    .unwrap();
    std::fs::write(dir.path().join("routing.yml"), "routes: []\n").unwrap();
    let agent_port = free_port().unwrap();
    let _agent = Proc(
        Command::new(support::agent_binary())
            .args([
                "--runtime",
                "process",
                "--listen",
                &format!("127.0.0.1:{agent_port}"),
            ])
            .args(["--token", TOKEN])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_port(agent_port).await;

    // Gateway `a` and gateway `b` each get one sandbox on the same agent.
    let (a_port, b_port) = (free_port().unwrap(), free_port().unwrap());
    let mut a = gateway(dir.path(), agent_port, "a", a_port);
    let _b = gateway(dir.path(), agent_port, "b", b_port);
    wait_port(a_port).await;
    wait_port(b_port).await;
    let a_pid = invoke(a_port).await;
    let b_pid = invoke(b_port).await;
    assert_ne!(a_pid, b_pid);

    // `a` dies; a new `a` serves its first request from the same, warm sandbox.
    let _ = a.0.kill();
    let _ = a.0.wait();
    let again = free_port().unwrap();
    let _a2 = gateway(dir.path(), agent_port, "a", again);
    wait_port(again).await;
    assert_eq!(invoke(again).await, a_pid, "the sandbox was not adopted");
    assert_eq!(invoke(again).await, a_pid);
    // `b` still has its own.
    assert_eq!(invoke(b_port).await, b_pid);
}
