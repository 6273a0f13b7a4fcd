//! The agent binary's limits and metrics: `--max-sandboxes`, `--memory-budget-mb`, the
//! open-file limit raised at start (and a warning when `--max-sandboxes` cannot fit under
//! it), no clear-text listening beyond loopback without `--insecure`, and Prometheus
//! `/metrics`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeRequest, Runtime};
use esb_testfn::limits::{hard_limit_above, open_file_limits, under_ulimit};
use esb_testfn::ports::free_port;
use support::{TOKEN, testfn};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn agent(listen: &str, extra: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esb-agent"));
    command
        .args(["--runtime", "process", "--listen", listen, "--token", TOKEN])
        .args(extra)
        .env_remove("ESB_AGENT_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null());
    command
}

async fn connect(port: u16) -> RemoteRuntime {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut config = RemoteConfig::new(format!("http://127.0.0.1:{port}")).token(TOKEN);
        config.attempts = 1;
        match RemoteRuntime::connect(config).await {
            Ok(remote) => return remote,
            Err(err) if Instant::now() > deadline => panic!("agent never answered: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// `GET /metrics` over a raw HTTP/1.0 exchange: the body.
async fn scrape(port: u16) -> String {
    let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    stream
        .write_all(b"GET /metrics HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.0 200"), "{answer}");
    answer.split_once("\r\n\r\n").unwrap().1.to_owned()
}

/// The value of the series named exactly `series` in a Prometheus text.
fn value(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no series {series} in\n{text}"))
        .parse()
        .unwrap()
}

#[test]
fn a_non_loopback_address_without_tls_is_refused_unless_insecure() {
    let port = free_port().unwrap();
    let output = agent(&format!("0.0.0.0:{port}"), &[]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
    assert!(stderr.contains("--insecure"), "{stderr}");

    let _agent = Agent(
        agent(&format!("0.0.0.0:{port}"), &["--insecure"])
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "the agent did not listen with --insecure"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// An agent started under `ulimit <limit>`, once it has served a sandbox; killed on drop.
struct LimitedAgent {
    agent: Agent,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LimitedAgent {
    async fn serving(limit: &str, extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let stderr = dir.path().join("stderr");
        let port = free_port().unwrap();
        let agent = Agent(
            under_ulimit(limit, &agent(&format!("127.0.0.1:{port}"), extra), &stderr)
                .unwrap()
                .spawn()
                .unwrap(),
        );
        let remote = connect(port).await;
        let sandbox = remote.create(testfn("fds")).await.unwrap();
        remote
            .invoke(&sandbox.id, InvokeRequest::new(r#"{"n": 1}"#))
            .await
            .unwrap();
        remote.destroy(&sandbox.id).await.unwrap();
        Self {
            agent,
            stderr,
            _dir: dir,
        }
    }

    /// The first line of its standard error that holds `needle`, waited for.
    async fn line(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let text = std::fs::read_to_string(&self.stderr).unwrap_or_default();
            if let Some(line) = text.lines().find(|line| line.contains(needle)) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no line with {needle:?}: {text}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    let Some(hard) = hard_limit_above(128) else {
        return;
    };
    let agent = LimitedAgent::serving("-Sn 128", &["--max-sandboxes", "8"]).await;
    assert_eq!(open_file_limits(agent.agent.0.id()).unwrap(), (hard, hard));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sandboxes_over_the_open_file_limit_is_a_start_up_warning_and_the_agent_serves() {
    let agent = LimitedAgent::serving("-n 128", &["--max-sandboxes", "500"]).await;
    let warning = agent.line("--max-sandboxes 500").await;
    assert!(
        warning.contains("is over what the open-file limit (128, hard limit 128) allows")
            && warning.contains("raise `ulimit -n`"),
        "{warning}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_sandboxes_and_the_memory_budget_refuse_creates_and_metrics_count_the_work() {
    let (port, metrics) = (free_port().unwrap(), free_port().unwrap());
    let _agent = Agent(
        agent(
            &format!("127.0.0.1:{port}"),
            &[
                "--max-sandboxes",
                "2",
                "--memory-budget-mb",
                "384",
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
            ],
        )
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let remote = connect(port).await;
    let first = remote
        .create(testfn("limits").memory_mb(256))
        .await
        .unwrap();
    // 256 + 256 MB is over the 384 MB budget.
    let err = remote
        .create(testfn("limits").memory_mb(256))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("memory budget"), "{err}");
    let second = remote
        .create(testfn("limits").memory_mb(128))
        .await
        .unwrap();
    let err = remote
        .create(testfn("limits").memory_mb(1))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_sandboxes"), "{err}");

    for _ in 0..2 {
        remote
            .invoke(&first.id, InvokeRequest::new(r#"{"n": 1}"#))
            .await
            .unwrap();
    }
    // A sandbox that exits mid-invocation: an invocation error.
    assert!(
        remote
            .invoke(&second.id, InvokeRequest::new(r#"{"exit": 3}"#))
            .await
            .is_err()
    );
    remote.destroy(&second.id).await.unwrap();
    let _ = remote.list().await.unwrap();

    let text = scrape(metrics).await;
    assert_eq!(value(&text, "esb_agent_invocations_total"), 3.0, "{text}");
    assert_eq!(
        value(&text, "esb_agent_invocation_errors_total"),
        1.0,
        "{text}"
    );
    assert_eq!(value(&text, "esb_agent_cold_starts_total"), 2.0, "{text}");
    assert_eq!(
        value(&text, "esb_agent_creates_refused_total"),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(&text, "esb_agent_invocation_duration_seconds_count"),
        3.0
    );
    assert_eq!(
        value(
            &text,
            "esb_agent_invocation_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        3.0
    );
    assert!(value(&text, "esb_agent_invocation_duration_seconds_sum") > 0.0);
    assert_eq!(
        value(&text, "esb_agent_sandboxes{state=\"running\"}"),
        1.0,
        "{text}"
    );
    assert_eq!(value(&text, "esb_agent_sandboxes{state=\"paused\"}"), 0.0);
    let grpc = |method: &str| {
        value(
            &text,
            &format!("esb_agent_grpc_requests_total{{method=\"{method}\"}}"),
        )
    };
    assert_eq!(grpc("CreateContainer"), 4.0);
    assert_eq!(grpc("InvokeWorker"), 3.0);
    assert_eq!(grpc("DestroyContainer"), 1.0);
    assert!(grpc("ListContainers") >= 1.0);
    assert_eq!(value(&text, "esb_agent_up"), 1.0);

    // Room is given back: a destroyed sandbox no longer counts.
    remote.destroy(&first.id).await.unwrap();
    let third = remote
        .create(testfn("limits").memory_mb(256))
        .await
        .unwrap();
    remote.destroy(&third.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_shipping_logs_exports_its_shippers_series_from_the_start() {
    let (port, metrics, victorialogs) = (
        free_port().unwrap(),
        free_port().unwrap(),
        free_port().unwrap(),
    );
    let _agent = Agent(
        agent(
            &format!("127.0.0.1:{port}"),
            &[
                "--metrics-listen",
                &format!("127.0.0.1:{metrics}"),
                // Nothing listens there: records wait in the queue, none is dropped.
                "--victorialogs-url",
                &format!("http://127.0.0.1:{victorialogs}"),
            ],
        )
        // Its own info records are shipped, so the queue holds some.
        .env("RUST_LOG", "info")
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let _remote = connect(port).await;
    let text = scrape(metrics).await;
    assert_eq!(
        value(&text, "esb_logs_records_dropped_total"),
        0.0,
        "{text}"
    );
    assert_eq!(value(&text, "esb_logs_records_sent_total"), 0.0, "{text}");
    assert!(value(&text, "esb_logs_queue_length") >= 1.0, "{text}");
    assert_eq!(value(&text, "esb_agent_up"), 1.0);
}
