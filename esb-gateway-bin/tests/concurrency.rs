//! Concurrency end to end: a `lambda_http` function limited to 2 sandboxes, under 50
//! concurrent requests through the gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::{BTreeSet, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use esb_gateway::Gateway;
use esb_runtime::logs::NullLogSink;
use esb_runtime::{
    Capabilities, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId, SandboxInfo,
    SandboxMetrics, SandboxSpec,
};
use reqwest::StatusCode;
use serde_json::Value;

/// A runtime that counts the sandboxes alive at once.
struct Counting {
    inner: Arc<dyn Runtime>,
    alive: Mutex<HashSet<SandboxId>>,
    most: AtomicUsize,
}

#[async_trait]
impl Runtime for Counting {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let info = self.inner.create(spec).await?;
        let mut alive = self.alive.lock().unwrap();
        alive.insert(info.id.clone());
        self.most.fetch_max(alive.len(), Ordering::SeqCst);
        Ok(info)
    }
    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        self.inner.invoke(id, request).await
    }
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.inner.pause(id).await
    }
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.inner.resume(id).await
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.inner.destroy(id).await?;
        self.alive.lock().unwrap().remove(id);
        Ok(())
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        self.inner.list().await
    }
    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        self.inner.metrics(id).await
    }
    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }
}

async fn start(acquire_timeout: &str) -> (Gateway, Arc<Counting>) {
    let functions = format!(
        r#"
functions:
  slow:
    command: ["${{HTTP_FN}}"]
    timeout: 5
    scaling: {{ max_capacity: 2, acquire_timeout: {acquire_timeout} }}
"#
    );
    let routing = r#"
routes:
  - { path: "/slow/{proxy+}", method: GET, function: slow, auth: none }
"#;
    let counting = Arc::new(Counting {
        inner: support::process_runtime(Arc::new(NullLogSink)),
        alive: Mutex::new(HashSet::new()),
        most: AtomicUsize::new(0),
    });
    let gateway = Gateway::start(
        support::config(&functions, routing),
        vec![Arc::clone(&counting) as Arc<dyn Runtime>],
    )
    .await
    .unwrap();
    (gateway, counting)
}

/// Sends 50 requests at once to a 200 ms function; returns (status, pid) of each.
async fn fifty(gateway: &Gateway) -> Vec<(StatusCode, Option<u64>)> {
    let client = support::client();
    let url = format!("{}/slow/sleep?ms=200", gateway.url());
    let requests = (0..50).map(|_| {
        let request = client.get(&url).send();
        async move {
            let response = request.await.unwrap();
            let status = response.status();
            let body: Value = response.json().await.unwrap();
            (status, body["pid"].as_u64())
        }
    });
    futures::future::join_all(requests).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_requests_share_two_sandboxes_and_all_are_served_within_the_queue_timeout() {
    let (gateway, counting) = start("30.0").await;
    let answers = fifty(&gateway).await;
    for (status, _) in &answers {
        assert_eq!(*status, StatusCode::OK);
    }
    let pids: BTreeSet<u64> = answers.iter().filter_map(|(_, pid)| *pid).collect();
    assert!(pids.len() <= 2, "served by {pids:?}");
    assert!(counting.most.load(Ordering::SeqCst) <= 2);
    assert!(gateway.pool().stats("slow").unwrap().total() <= 2);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_short_queue_timeout_the_excess_gets_429_and_the_gateway_stays_up() {
    let (gateway, counting) = start("0.1").await;
    let answers = fifty(&gateway).await;
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    let throttled = answers
        .iter()
        .filter(|(s, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(ok + throttled, 50, "{answers:?}");
    assert!(ok >= 2, "{answers:?}");
    assert!(throttled > 0, "{answers:?}");
    assert!(counting.most.load(Ordering::SeqCst) <= 2);

    let response = support::client()
        .get(format!("{}/health", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let response = support::client()
        .get(format!("{}/slow/echo", gateway.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    gateway.shutdown().await;
}
