//! Acquire + release of a warm sandbox: uncontended, and with 64 concurrent contenders.
//!
//! The runtime is a trivial in-memory fake, so only the pool's own work is measured.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use criterion::{Criterion, criterion_group, criterion_main};
use esb_pool::{FunctionPoolConfig, Pool, PoolConfig};
use esb_runtime::{
    Capabilities, InvokeRequest, InvokeResponse, InvokeResult, Result, Runtime, SandboxId,
    SandboxInfo, SandboxMetrics, SandboxSpec, SandboxState,
};

/// A runtime whose every call succeeds at once.
#[derive(Default)]
struct Instant0 {
    next: AtomicU64,
}

#[async_trait]
impl Runtime for Instant0 {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        Ok(SandboxInfo {
            id: SandboxId::new(format!("sb-{n}")),
            function_name: spec.function_name,
            state: SandboxState::Running,
            created_at: SystemTime::now(),
            labels: BTreeMap::new(),
        })
    }
    async fn invoke(&self, _id: &SandboxId, _request: InvokeRequest) -> Result<InvokeResponse> {
        Ok(InvokeResponse {
            result: InvokeResult::Success(Default::default()),
            duration: Duration::ZERO,
            billed_duration: Duration::from_millis(1),
            max_memory_used_mb: 1,
            init_duration: None,
            log_tail: None,
        })
    }
    async fn pause(&self, _id: &SandboxId) -> Result<()> {
        Ok(())
    }
    async fn resume(&self, _id: &SandboxId) -> Result<()> {
        Ok(())
    }
    async fn destroy(&self, _id: &SandboxId) -> Result<()> {
        Ok(())
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        Ok(Vec::new())
    }
    async fn metrics(&self, _id: &SandboxId) -> Result<SandboxMetrics> {
        Ok(SandboxMetrics::default())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::default()
    }
}

/// A pool of one function with `warm` sandboxes created and idle.
async fn warm_pool(warm: usize) -> Pool {
    let function = FunctionPoolConfig::new(SandboxSpec::new("f"))
        .max_capacity(warm)
        .acquire_timeout(Duration::from_secs(600))
        .idle_timeout(Duration::from_secs(3600))
        .pause_idle(None);
    let config = PoolConfig::new([function]).janitor_interval(Duration::from_secs(3600));
    let pool = Pool::new(
        config,
        vec![Arc::new(Instant0::default()) as Arc<dyn Runtime>],
    )
    .unwrap();
    let mut leases = Vec::new();
    for _ in 0..warm {
        leases.push(pool.acquire("f").await.unwrap());
    }
    drop(leases);
    pool
}

fn contended(c: &mut Criterion, name: &str, warm: usize) {
    const CONTENDERS: u64 = 64;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(warm_pool(warm));
    c.bench_function(name, |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let pool = pool.clone();
            async move {
                let per_task = iters.div_ceil(CONTENDERS).max(1);
                let start = Instant::now();
                let tasks: Vec<_> = (0..CONTENDERS)
                    .map(|_| {
                        let pool = pool.clone();
                        tokio::spawn(async move {
                            for _ in 0..per_task {
                                let lease = pool.acquire("f").await.unwrap();
                                // Hold it across a yield so the contenders overlap.
                                tokio::task::yield_now().await;
                                drop(lease);
                            }
                        })
                    })
                    .collect();
                for task in tasks {
                    task.await.unwrap();
                }
                let elapsed = start.elapsed();
                elapsed.mul_f64(iters as f64 / (per_task * CONTENDERS) as f64)
            }
        });
    });
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let pool = rt.block_on(warm_pool(1));
    c.bench_function("acquire_release/uncontended", |b| {
        b.to_async(&rt).iter(|| async {
            let lease = pool.acquire("f").await.unwrap();
            drop(lease);
        });
    });
    drop(rt);
    contended(c, "acquire_release/64_contenders_64_warm", 64);
    contended(c, "acquire_release/64_contenders_4_warm", 4);
}

criterion_group!(benches, bench);
criterion_main!(benches);
