//! No orphans: a real `esb-gateway` or `esb-agent` killed with SIGKILL under load leaves no
//! sandbox process behind: leaders die with it (parent-death signal), and what a function
//! started itself is killed at the next start, from the record of started sandboxes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use esb_gateway::Gateway;
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_testfn::ports::free_port;

const TOKEN: &str = "agent-token-0123456789";

/// A function whose sandbox also starts a child of its own (`sleep`, in its process group),
/// marked by `mark` in its environment.
fn functions(mark: &str) -> String {
    format!(
        r#"
functions:
  busy:
    command: ["/bin/sh", "-c", "sleep 300 & exec \"$0\"", "{}"]
    timeout: 30
    environment: {{ ESB_ORPHAN_MARK: "{mark}" }}
    scaling: {{ max_capacity: 6, acquire_timeout: 10.0 }}
"#,
        support::testfn().display()
    )
}

/// Processes whose environment carries the mark, with their command names.
fn marked(mark: &str) -> Vec<(u32, String)> {
    let needle = format!("ESB_ORPHAN_MARK={mark}");
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|&b| b == 0).any(|v| v == needle.as_bytes()))
        })
        .map(|pid| {
            let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
            (pid, comm.trim().to_owned())
        })
        .collect()
}

/// Waits until `done` holds for the marked processes (bounded), then returns them.
async fn wait_marked(mark: &str, done: impl Fn(&[(u32, String)]) -> bool) -> Vec<(u32, String)> {
    let mut now = marked(mark);
    for _ in 0..200 {
        if done(&now) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        now = marked(mark);
    }
    now
}

/// A child process killed on drop.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn sigkill(&mut self) {
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

fn gateway(dir: &Path, records: &Path, port: u16) -> Proc {
    Proc(
        Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
            .args([
                "--functions",
                &dir.join("functions.yml").display().to_string(),
            ])
            .args(["--routing", &dir.join("routing.yml").display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--sandbox-record-dir", &records.display().to_string()])
            .env("JWT_SECRET_KEY", support::SECRET)
            .env("X_API_KEY", "test-api-key")
            .env("AUTH_USER", "alice")
            .env("AUTH_PASS", "wonderland")
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

fn agent(records: &Path, port: u16) -> Proc {
    Proc(
        Command::new(support::agent_binary())
            .args([
                "--runtime",
                "process",
                "--listen",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--token", TOKEN])
            .args(["--sandbox-record-dir", &records.display().to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// Six invocations that keep their sandboxes busy for 20 s, in the background.
fn load(url: &str) -> Vec<tokio::task::JoinHandle<()>> {
    (0..6)
        .map(|_| {
            let url = format!("{url}/2015-03-31/functions/busy/invocations");
            tokio::spawn(async move {
                let _ = support::client()
                    .post(url)
                    .body(r#"{"sleep_ms": 20000}"#)
                    .send()
                    .await;
            })
        })
        .collect()
}

/// Six busy leaders (the function) and their six `sleep` children.
async fn wait_busy(mark: &str) {
    let busy = wait_marked(mark, |p| {
        p.iter().filter(|(_, c)| c == "esb-testfn").count() == 6
            && p.iter().filter(|(_, c)| c == "sleep").count() == 6
    })
    .await;
    assert_eq!(busy.len(), 12, "{busy:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_killed_under_load_leaves_no_sandbox_process() {
    let mark = uuid::Uuid::new_v4().to_string();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("functions.yml"), functions(&mark)).unwrap();
    std::fs::write(dir.path().join("routing.yml"), "routes: []\n").unwrap();
    let records = dir.path().join("records");
    let port = free_port().unwrap();
    let mut first = gateway(dir.path(), &records, port);
    wait_port(port).await;
    let requests = load(&format!("http://127.0.0.1:{port}"));
    wait_busy(&mark).await;

    first.sigkill();
    // The leaders die with the gateway; the functions' own children are left...
    let left = wait_marked(&mark, |p| p.iter().all(|(_, c)| c != "esb-testfn")).await;
    assert!(left.iter().all(|(_, c)| c == "sleep"), "{left:?}");
    // ... until the next start reaps them.
    let second_port = free_port().unwrap();
    let _second = gateway(dir.path(), &records, second_port);
    wait_port(second_port).await;
    let survivors = wait_marked(&mark, <[_]>::is_empty).await;
    assert_eq!(survivors, Vec::new(), "survivors after the restart");
    for request in requests {
        request.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_killed_under_load_leaves_no_sandbox_process() {
    let mark = uuid::Uuid::new_v4().to_string();
    let dir = tempfile::tempdir().unwrap();
    let records = dir.path().join("records");
    let agent_port = free_port().unwrap();
    let mut first = agent(&records, agent_port);
    wait_port(agent_port).await;
    let url = format!("http://127.0.0.1:{agent_port}");
    let runtime = Arc::new(
        RemoteRuntime::connect(RemoteConfig::new(&url).token(TOKEN))
            .await
            .unwrap(),
    );
    let mut config = support::config("functions: {}\n", "routes: []\n");
    config.functions =
        esb_router::Config::from_yaml_str(&functions(&mark), "routes: []\n", &|_| None).unwrap();
    let gateway = Gateway::start(config, vec![runtime]).await.unwrap();
    let requests = load(&gateway.url());
    wait_busy(&mark).await;

    first.sigkill();
    let left = wait_marked(&mark, |p| p.iter().all(|(_, c)| c != "esb-testfn")).await;
    assert!(left.iter().all(|(_, c)| c == "sleep"), "{left:?}");
    let _second = agent(&records, agent_port);
    wait_port(agent_port).await;
    let survivors = wait_marked(&mark, <[_]>::is_empty).await;
    assert_eq!(survivors, Vec::new(), "survivors after the restart");
    for request in requests {
        request.abort();
    }
    gateway.shutdown().await;
}
