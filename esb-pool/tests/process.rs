//! The pool over the real process backend running `esb-testfn`, a `lambda_runtime` function.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use esb_pool::{FunctionPoolConfig, Invocation, Pool, PoolConfig, PoolError, PoolResponse};
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::{
    Capabilities, Error as RuntimeError, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId,
    SandboxInfo, SandboxMetrics, SandboxSpec,
};
use serde_json::Value;

/// The process backend, counting the sandboxes it creates.
struct Counting {
    inner: ProcessRuntime,
    creates: AtomicUsize,
}

#[async_trait]
impl Runtime for Counting {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        self.creates.fetch_add(1, Ordering::SeqCst);
        self.inner.create(spec).await
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
        self.inner.destroy(id).await
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

fn counting_runtime() -> Arc<Counting> {
    Arc::new(Counting {
        inner: ProcessRuntime::new(ProcessConfig::default().log_sink(Arc::new(NullLogSink))),
        creates: AtomicUsize::new(0),
    })
}

fn testfn(max: usize) -> FunctionPoolConfig {
    let binary = esb_testfn::binary().expect("build esb-testfn");
    let spec = SandboxSpec::new("testfn")
        .command([binary.display().to_string()])
        .timeout(Duration::from_secs(20));
    FunctionPoolConfig::new(spec)
        .max_capacity(max)
        .acquire_timeout(Duration::from_secs(60))
}

fn pool(function: FunctionPoolConfig, runtime: Arc<Counting>) -> Pool {
    let config = PoolConfig::new([function]).janitor_interval(Duration::from_millis(50));
    Pool::new(config, vec![runtime as Arc<dyn Runtime>]).unwrap()
}

fn invoke(pool: &Pool, event: &str) -> tokio::task::JoinHandle<Result<PoolResponse, PoolError>> {
    let pool = pool.clone();
    let invocation = Invocation::new("testfn", InvokeRequest::new(event.to_owned()));
    tokio::spawn(async move { pool.invoke(invocation).await })
}

/// Waits until process `pid` has exited (gone, or a zombie not yet reaped), however loaded the
/// machine is.
async fn wait_until_exited(pid: u64) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok();
        // The state is the field after the command's closing parenthesis.
        let running = state.as_deref().is_some_and(|stat| {
            stat.rsplit_once(')')
                .is_some_and(|(_, rest)| !rest.trim_start().starts_with(['Z', 'X']))
        });
        if !running {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "process {pid} never exited"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn pid(answer: &PoolResponse) -> u64 {
    let body: Value = serde_json::from_slice(&answer.response.body()).unwrap();
    body["pid"].as_u64().expect("the answer has a pid")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thirty_two_concurrent_invocations_with_max_4_use_at_most_4_processes() {
    let runtime = counting_runtime();
    let pool = pool(testfn(4), runtime.clone());
    let tasks: Vec<_> = (0..32)
        .map(|_| invoke(&pool, r#"{"sleep_ms":200}"#))
        .collect();
    let mut pids = HashSet::new();
    let mut sandboxes = HashSet::new();
    for task in tasks {
        let answer = task.await.unwrap().expect("every invocation is answered");
        pids.insert(pid(&answer));
        sandboxes.insert(answer.sandbox_id);
    }
    assert!(pids.len() <= 4, "{} processes", pids.len());
    assert!(sandboxes.len() <= 4);
    assert!(runtime.creates.load(Ordering::SeqCst) <= 4);
    pool.shutdown().await;
    assert!(runtime.list().await.unwrap().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_beyond_acquire_timeout_is_throttled() {
    let runtime = counting_runtime();
    let function = testfn(1).acquire_timeout(Duration::from_millis(300));
    let pool = pool(function, runtime.clone());
    let long = invoke(&pool, r#"{"sleep_ms":2000}"#);
    while pool.stats("testfn").unwrap().busy == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let overflow = invoke(&pool, "{}").await.unwrap();
    match overflow {
        Err(PoolError::Throttled { waited, .. }) => {
            assert!(waited >= Duration::from_millis(300));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    long.await
        .unwrap()
        .expect("the long invocation is answered");
    assert_eq!(runtime.creates.load(Ordering::SeqCst), 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_process_is_thawed_and_reused() {
    let runtime = counting_runtime();
    let function = testfn(2).pause_idle(Some(Duration::from_millis(100)));
    let pool = pool(function, runtime.clone());
    let first = invoke(&pool, "{}").await.unwrap().unwrap();
    assert!(first.cold_start);
    let mut waited = Duration::ZERO;
    while pool.stats("testfn").unwrap().paused == 0 {
        assert!(waited < Duration::from_secs(10), "never frozen");
        tokio::time::sleep(Duration::from_millis(20)).await;
        waited += Duration::from_millis(20);
    }
    let listed = runtime.list().await.unwrap();
    assert_eq!(listed[0].state, esb_runtime::SandboxState::Paused);
    let second = invoke(&pool, "{}").await.unwrap().unwrap();
    assert!(!second.cold_start);
    assert_eq!(pid(&first), pid(&second));
    assert_eq!(runtime.creates.load(Ordering::SeqCst), 1);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_exits_mid_invocation_is_replaced() {
    let runtime = counting_runtime();
    let pool = pool(testfn(1), runtime.clone());
    let first = invoke(&pool, "{}").await.unwrap().unwrap();
    let err = invoke(&pool, r#"{"exit":3}"#).await.unwrap().unwrap_err();
    assert!(
        matches!(err, PoolError::Runtime(RuntimeError::SandboxLost { .. })),
        "{err:?}"
    );
    let third = invoke(&pool, "{}").await.unwrap().unwrap();
    assert!(third.cold_start);
    assert_ne!(pid(&first), pid(&third));
    assert_eq!(runtime.creates.load(Ordering::SeqCst), 2);
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_exits_while_idle_is_never_leased() {
    let runtime = counting_runtime();
    // A janitor that sweeps rarely: the sweep that would drop the dead sandbox comes too late.
    let config = PoolConfig::new([testfn(1)]).janitor_interval(Duration::from_secs(60));
    let pool = Pool::new(config, vec![runtime.clone() as Arc<dyn Runtime>]).unwrap();
    // The function answers, then its runtime exits while the sandbox sits idle.
    let first = invoke(&pool, r#"{"exit_after_ms":20}"#)
        .await
        .unwrap()
        .unwrap();
    wait_until_exited(pid(&first)).await;
    let second = invoke(&pool, "{}").await.unwrap().unwrap();
    assert!(second.cold_start, "the dead sandbox was leased");
    assert_ne!(pid(&first), pid(&second));
    assert_eq!(runtime.creates.load(Ordering::SeqCst), 2);
    // The replacement is pooled as usual.
    let third = invoke(&pool, "{}").await.unwrap().unwrap();
    assert!(!third.cold_start);
    assert_eq!(pid(&second), pid(&third));
    pool.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retired_sandboxes_are_never_reused_idle_now_and_busy_after_their_invocation() {
    let runtime = counting_runtime();
    let pool = pool(testfn(2), runtime.clone());
    let busy = invoke(&pool, r#"{"sleep_ms":1500}"#);
    while pool.stats("testfn").unwrap().busy == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let idle = invoke(&pool, "{}").await.unwrap().unwrap();
    // The idle sandbox is destroyed at once; the busy one finishes its invocation.
    assert_eq!(pool.retire("testfn").unwrap(), 1);
    let busy = busy
        .await
        .unwrap()
        .expect("the busy invocation is answered");
    assert_ne!(busy.sandbox_id, idle.sandbox_id);
    // Neither is used again: the next invocation gets a new sandbox.
    let next = invoke(&pool, "{}").await.unwrap().unwrap();
    assert_ne!(next.sandbox_id, idle.sandbox_id);
    assert_ne!(next.sandbox_id, busy.sandbox_id);
    assert!(next.cold_start);
    assert_eq!(runtime.creates.load(Ordering::SeqCst), 3);
    while runtime.list().await.unwrap().len() > 1 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(matches!(
        pool.retire("nope"),
        Err(PoolError::UnknownFunction(_))
    ));
    pool.shutdown().await;
}
