//! The scale signals an autoscaler reads: per-agent utilisation, warm-pool exhaustion and
//! cold-start durations, scraped from the gateway's `/metrics` and the agent's own after real
//! invocations on a real `esb-agent` (process backend) over gRPC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use esb_gateway::Gateway;
use esb_runtime::Runtime;
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_testfn::ports::free_port;
use reqwest::StatusCode;

const TOKEN: &str = "agent-token-0123456789";

/// An `esb-agent --runtime process --max-sandboxes 4 --memory-budget-mb 2048` with its
/// metrics listener; killed on drop.
struct Agent {
    child: Child,
    url: String,
    metrics: String,
}

impl Agent {
    async fn spawn() -> Self {
        let port = free_port().unwrap();
        let metrics_port = free_port().unwrap();
        let agent = Self {
            child: Command::new(support::agent_binary())
                .args(["--runtime", "process"])
                .args(["--listen", &format!("127.0.0.1:{port}")])
                .args(["--token", TOKEN])
                .args(["--max-sandboxes", "4", "--memory-budget-mb", "2048"])
                .args(["--metrics-listen", &format!("127.0.0.1:{metrics_port}")])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            url: format!("http://127.0.0.1:{port}"),
            metrics: format!("http://127.0.0.1:{metrics_port}/metrics"),
        };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return agent;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("esb-agent did not listen on {}", agent.url);
    }

    async fn runtime(&self) -> Arc<dyn Runtime> {
        Arc::new(
            RemoteRuntime::connect(RemoteConfig::new(&self.url).token(TOKEN))
                .await
                .unwrap(),
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const FUNCTIONS: &str = r#"
functions:
  scaled:
    command: ["${HTTP_FN}"]
    timeout: 10
    memory_size: 128
    scaling: { max_capacity: 4, acquire_timeout: 5.0 }
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/scaled/{proxy+}", method: ANY, function: scaled, auth: none }
"#;

async fn scrape(url: &str) -> String {
    let response = support::client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response.text().await.unwrap()
}

/// The value of the series `name` (with its labels, as exported), if present.
fn value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let (name, value) = line.rsplit_once(' ')?;
            (name == series).then(|| value.parse().unwrap())
        })
}

fn must(text: &str, series: &str) -> f64 {
    value(text, series).unwrap_or_else(|| panic!("no series {series} in:\n{text}"))
}

async fn get(gateway: &Gateway, path: &str) -> StatusCode {
    support::client()
        .get(format!("{}{path}", gateway.url()))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn utilisation_warm_pool_exhaustion_and_cold_starts_move_with_real_invocations() {
    let agent = Agent::spawn().await;
    let gateway = Gateway::start(
        support::config(FUNCTIONS, ROUTING),
        vec![agent.runtime().await],
    )
    .await
    .unwrap();
    let metrics = format!("{}/metrics", gateway.url());
    let utilisation = format!("esb_pool_agent_utilisation{{agent=\"{}\"}}", agent.url);
    let capacity = format!(
        "esb_pool_agent_capacity_sandboxes{{agent=\"{}\"}}",
        agent.url
    );
    let budget = format!("esb_pool_agent_memory_budget_mb{{agent=\"{}\"}}", agent.url);
    let exhausted = "esb_pool_warm_pool_exhausted_total{function=\"scaled\"}";
    let cold_count = "esb_pool_cold_start_duration_seconds_count{function=\"scaled\"}";
    let busy = "esb_pool_sandboxes{function=\"scaled\",state=\"busy\"}";

    // Before any request: the agent's limits are known, nothing is used.
    let text = scrape(&metrics).await;
    assert_eq!(must(&text, &capacity), 4.0);
    assert_eq!(must(&text, &budget), 2048.0);
    assert_eq!(must(&text, &utilisation), 0.0);
    assert_eq!(value(&text, exhausted).unwrap_or(0.0), 0.0);
    assert_eq!(value(&text, cold_count).unwrap_or(0.0), 0.0);

    // The first request finds no warm sandbox: one exhaustion, one cold start.
    assert_eq!(get(&gateway, "/scaled/echo").await, StatusCode::OK);
    let text = scrape(&metrics).await;
    assert_eq!(must(&text, exhausted), 1.0);
    assert_eq!(must(&text, cold_count), 1.0);
    assert!(
        must(
            &text,
            "esb_pool_cold_start_duration_seconds_sum{function=\"scaled\"}"
        ) > 0.0
    );
    // One of four sandboxes (128 of 2048 MB is less): a quarter.
    assert_eq!(must(&text, &utilisation), 0.25);

    // The next one is served warm: neither moves.
    assert_eq!(get(&gateway, "/scaled/echo").await, StatusCode::OK);
    let text = scrape(&metrics).await;
    assert_eq!(must(&text, exhausted), 1.0);
    assert_eq!(must(&text, cold_count), 1.0);
    assert_eq!(must(&text, &utilisation), 0.25);

    // While one request holds the only sandbox, another one exhausts the warm pool again and
    // gets a second sandbox: half of the agent is used.
    let slow = {
        let url = format!("{}/scaled/sleep?ms=3000", gateway.url());
        tokio::spawn(async move { support::client().get(url).send().await.unwrap().status() })
    };
    let mut held = false;
    for _ in 0..200 {
        if value(&scrape(&metrics).await, busy) == Some(1.0) {
            held = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(held, "the slow request never held its sandbox");
    assert_eq!(get(&gateway, "/scaled/echo").await, StatusCode::OK);
    assert_eq!(slow.await.unwrap(), StatusCode::OK);
    let text = scrape(&metrics).await;
    assert_eq!(must(&text, exhausted), 2.0);
    assert_eq!(must(&text, cold_count), 2.0);
    assert_eq!(must(&text, &utilisation), 0.5);
    assert_eq!(
        must(
            &text,
            &format!("esb_pool_agent_sandboxes{{agent=\"{}\"}}", agent.url)
        ),
        2.0
    );
    assert_eq!(
        must(
            &text,
            &format!("esb_pool_agent_up{{agent=\"{}\"}}", agent.url)
        ),
        1.0
    );

    // The agent's own /metrics says the same of itself.
    let text = scrape(&agent.metrics).await;
    assert_eq!(must(&text, "esb_agent_capacity_sandboxes"), 4.0);
    assert_eq!(must(&text, "esb_agent_memory_budget_mb"), 2048.0);
    assert_eq!(must(&text, "esb_agent_memory_reserved_mb"), 256.0);
    assert_eq!(must(&text, "esb_agent_utilisation"), 0.5);
    assert_eq!(
        must(&text, "esb_agent_cold_start_duration_seconds_count"),
        2.0
    );
    assert_eq!(
        must(
            &text,
            "esb_agent_cold_start_duration_seconds_bucket{le=\"+Inf\"}"
        ),
        2.0
    );

    // The same listener answers the orchestrator's probe, and nothing else.
    let base = agent.metrics.trim_end_matches("/metrics").to_owned();
    let health = support::client()
        .get(format!("{base}/health"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert_eq!(
        health.text().await.unwrap().trim(),
        r#"{"status":"healthy"}"#
    );
    let posted = support::client().post(&agent.metrics).send().await.unwrap();
    assert_eq!(posted.status(), StatusCode::METHOD_NOT_ALLOWED);
    let other = support::client()
        .get(format!("{base}/other"))
        .send()
        .await
        .unwrap();
    assert_eq!(other.status(), StatusCode::NOT_FOUND);

    gateway.shutdown().await;
    // Shut down, the pool's sandboxes are gone from the agent's accounts.
    let text = scrape(&agent.metrics).await;
    assert_eq!(must(&text, "esb_agent_utilisation"), 0.0);
}
