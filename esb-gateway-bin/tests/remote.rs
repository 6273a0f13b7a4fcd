//! Remote mode: the gateway places sandboxes on real `esb-agent` processes (process backend)
//! over gRPC; when an agent goes away the others take over, and with none left requests get 503.

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

/// An `esb-agent --runtime process` child on a free loopback port; killed on drop.
struct Agent {
    child: Child,
    url: String,
}

impl Agent {
    async fn spawn() -> Self {
        let port = free_port().unwrap();
        Self::spawn_on(port).await
    }

    /// An agent on `port` (e.g. the port of one that was stopped).
    async fn spawn_on(port: u16) -> Self {
        let url = format!("http://127.0.0.1:{port}");
        let agent = Self {
            child: Command::new(support::agent_binary())
                .args([
                    "--runtime",
                    "process",
                    "--listen",
                    &format!("127.0.0.1:{port}"),
                ])
                .args(["--token", TOKEN])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
            url,
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

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.kill();
    }
}

const FUNCTIONS: &str = r#"
functions:
  web:
    command: ["${HTTP_FN}"]
    timeout: 3
    scaling: { max_capacity: 4, acquire_timeout: 2.0 }
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/web/{proxy+}", method: ANY, function: web, auth: none }
"#;

async fn get(gateway: &Gateway, path: &str) -> StatusCode {
    support::client()
        .get(format!("{}{path}", gateway.url()))
        .send()
        .await
        .unwrap()
        .status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_are_served_by_sandboxes_on_an_agent() {
    let agent = Agent::spawn().await;
    let gateway = Gateway::start(
        support::config(FUNCTIONS, ROUTING),
        vec![agent.runtime().await],
    )
    .await
    .unwrap();
    let response = support::client()
        .get(format!("{}/web/echo?x=1", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["query"]["x"], serde_json::json!(["1"]));
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_an_agent_goes_away_the_other_serves_and_with_none_left_requests_get_503() {
    let mut first = Agent::spawn().await;
    let mut second = Agent::spawn().await;
    let gateway = Gateway::start(
        support::config(FUNCTIONS, ROUTING),
        vec![first.runtime().await, second.runtime().await],
    )
    .await
    .unwrap();
    // Four at once: sandboxes on both agents.
    let warm = futures::future::join_all((0..4).map(|_| get(&gateway, "/web/sleep?ms=300"))).await;
    assert!(warm.iter().all(|s| *s == StatusCode::OK), "{warm:?}");

    first.kill();
    // The first request may find a sandbox of the lost agent; the pool drops it and the
    // agent, and places new sandboxes on the other one.
    let _ = get(&gateway, "/web/echo").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    for _ in 0..6 {
        assert_eq!(get(&gateway, "/web/echo").await, StatusCode::OK);
    }

    second.kill();
    let _ = get(&gateway, "/web/echo").await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        get(&gateway, "/web/echo").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_tail_of_an_invocation_on_an_agent_has_the_functions_own_lines() {
    use base64::Engine as _;
    const PLAIN: &str = r#"
functions:
  plain:
    command: ["${TESTFN}"]
    timeout: 3
"#;
    let agent = Agent::spawn().await;
    let gateway = Gateway::start(
        support::config(PLAIN, "routes: []\n"),
        vec![agent.runtime().await],
    )
    .await
    .unwrap();
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/plain/invocations",
            gateway.url()
        ))
        .header("X-Amz-Log-Type", "Tail")
        .body(r#"{"print": ["printed on the agent's host"], "stderr": ["and to stderr"]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let log = base64::engine::general_purpose::STANDARD
        .decode(response.headers()["x-amz-log-result"].as_bytes())
        .unwrap();
    let log = String::from_utf8(log).unwrap();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines.first().copied(),
        Some(format!("START RequestId: {id} Version: $LATEST").as_str()),
        "{log}"
    );
    assert!(lines.contains(&"printed on the agent's host"), "{log}");
    assert!(lines.contains(&"and to stderr"), "{log}");
    let end = format!("END RequestId: {id}");
    let end_at = lines.iter().position(|l| *l == end).expect(&log);
    assert!(
        lines[end_at + 1].starts_with(&format!("REPORT RequestId: {id}\tDuration: ")),
        "{log}"
    );
    assert_eq!(lines.len(), end_at + 2, "{log}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_invoke_api_on_an_agent_passes_the_client_context_and_names_a_bad_entrypoint() {
    use base64::Engine as _;
    const FUNCTIONS: &str = r#"
functions:
  plain:
    command: ["${TESTFN}"]
    timeout: 3
  broken:
    command: ["/nonexistent/esb-test/bootstrap"]
"#;
    let agent = Agent::spawn().await;
    let gateway = Gateway::start(
        support::config(FUNCTIONS, "routes: []\n"),
        vec![agent.runtime().await],
    )
    .await
    .unwrap();
    let invoke = |name: &str| {
        support::client().post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
    };
    let context = base64::engine::general_purpose::STANDARD
        .encode(r#"{"custom": {"user": "alice"}, "env": {"locale": "en"}}"#);
    let response = invoke("plain")
        .header("X-Amz-Client-Context", context)
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(
        body["context"]["client_context"]["custom"],
        serde_json::json!({"user": "alice"}),
        "{body}"
    );

    let response = invoke("broken").body("{}").send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-amz-function-error"], "Unhandled");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["errorType"], "Runtime.InvalidEntrypoint", "{body}");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_agent_reachable_requests_get_503_at_once_and_traffic_resumes_when_it_returns() {
    const SLOW_QUEUE: &str = r#"
functions:
  web:
    command: ["${HTTP_FN}"]
    timeout: 3
    scaling: { max_capacity: 1, acquire_timeout: 30.0 }
"#;
    let mut agent = Agent::spawn().await;
    let port: u16 = agent.url.rsplit(':').next().unwrap().parse().unwrap();
    let gateway = Gateway::start(
        support::config(SLOW_QUEUE, ROUTING),
        vec![agent.runtime().await],
    )
    .await
    .unwrap();
    assert_eq!(get(&gateway, "/web/echo").await, StatusCode::OK);

    agent.kill();
    // Four callers at once on a function of one sandbox with a 30 s queue: none waits in the
    // queue for a runtime that is gone, each gets the Invoke API's 503.
    let invoke = || async {
        let response = support::client()
            .post(format!(
                "{}/2015-03-31/functions/web/invocations",
                gateway.url()
            ))
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status();
        let error_type = response
            .headers()
            .get("x-amzn-errortype")
            .map(|v| v.to_str().unwrap().to_owned());
        (status, error_type)
    };
    let answers = futures::future::join_all((0..4).map(|_| invoke())).await;
    for (status, error_type) in &answers {
        assert_eq!(*status, StatusCode::SERVICE_UNAVAILABLE, "{answers:?}");
        assert_eq!(
            error_type.as_deref(),
            Some("ServiceUnavailableException"),
            "{answers:?}"
        );
    }
    assert_eq!(
        get(&gateway, "/web/echo").await,
        StatusCode::SERVICE_UNAVAILABLE
    );

    let _agent = Agent::spawn_on(port).await;
    let mut status = StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..100 {
        status = get(&gateway, "/web/echo").await;
        if status == StatusCode::OK {
            break;
        }
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        status,
        StatusCode::OK,
        "traffic did not resume on the returned agent"
    );
    gateway.shutdown().await;
}
