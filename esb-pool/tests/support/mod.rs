//! A mockall mock of `Runtime` whose calls return futures, so tests can make them take
//! (paused-clock) time; knobs and counters shared with the test drive and observe it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use esb_runtime::{
    Capabilities, Error, InvokeRequest, InvokeResponse, InvokeResult, Result, Runtime, SandboxId,
    SandboxInfo, SandboxMetrics, SandboxSpec, SandboxState,
};
use futures::future::BoxFuture;

/// The `Runtime` operations as futures, mocked by mockall.
#[mockall::automock]
pub trait Ops: Send + Sync {
    fn create(&self, spec: SandboxSpec) -> BoxFuture<'static, Result<SandboxInfo>>;
    fn invoke(
        &self,
        id: SandboxId,
        request: InvokeRequest,
    ) -> BoxFuture<'static, Result<InvokeResponse>>;
    fn pause(&self, id: SandboxId) -> BoxFuture<'static, Result<()>>;
    fn resume(&self, id: SandboxId) -> BoxFuture<'static, Result<()>>;
    fn destroy(&self, id: SandboxId) -> BoxFuture<'static, Result<()>>;
    fn list(&self) -> BoxFuture<'static, Result<Vec<SandboxInfo>>>;
}

/// A `Runtime` whose every call goes to the mock.
pub struct MockRuntime(pub MockOps);

#[async_trait]
impl Runtime for MockRuntime {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        self.0.create(spec).await
    }
    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        self.0.invoke(id.clone(), request).await
    }
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.0.pause(id.clone()).await
    }
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.0.resume(id.clone()).await
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.0.destroy(id.clone()).await
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        self.0.list().await
    }
    async fn metrics(&self, _id: &SandboxId) -> Result<SandboxMetrics> {
        Ok(SandboxMetrics::default())
    }
    fn capabilities(&self) -> Capabilities {
        Capabilities::new("mock").pause(true)
    }
}

/// What the fake does, changeable during a test.
#[derive(Default)]
pub struct Knobs {
    pub create_delay_ms: AtomicU64,
    pub invoke_delay_ms: AtomicU64,
    pub fail_create: AtomicBool,
    /// The next invocations fail with this error kind: 1 lost, 2 unavailable.
    pub invoke_error: AtomicUsize,
    /// When set, `list` answers these instead of the live sandboxes.
    pub listing: Mutex<Option<Vec<SandboxInfo>>>,
}

/// What the fake saw.
#[derive(Default)]
pub struct Seen {
    pub create_calls: AtomicUsize,
    pub creates: AtomicUsize,
    pub live: AtomicUsize,
    pub max_live: AtomicUsize,
    pub invoking: AtomicUsize,
    pub max_invoking: AtomicUsize,
    pub invokes: AtomicUsize,
    pub pauses: AtomicUsize,
    pub resumes: AtomicUsize,
    pub alive: Mutex<Vec<SandboxInfo>>,
    pub destroyed: Mutex<Vec<SandboxId>>,
}

pub fn ok_response(body: &'static str) -> InvokeResponse {
    InvokeResponse {
        result: InvokeResult::Success(Bytes::from_static(body.as_bytes())),
        duration: Duration::from_millis(1),
        billed_duration: Duration::from_millis(1),
        max_memory_used_mb: 1,
        init_duration: None,
        log_tail: None,
    }
}

pub fn info(id: &str, function: &str, created_at: SystemTime) -> SandboxInfo {
    SandboxInfo {
        id: SandboxId::new(id),
        function_name: function.to_owned(),
        state: SandboxState::Running,
        created_at,
        labels: BTreeMap::new(),
    }
}

fn bump_max(max: &AtomicUsize, now: usize) {
    max.fetch_max(now, Ordering::SeqCst);
}

/// A mock with a working default behaviour for every call, driven by `knobs`, seen in `seen`.
pub fn fake(name: &'static str, knobs: Arc<Knobs>, seen: Arc<Seen>) -> MockOps {
    let mut ops = MockOps::new();
    {
        let (knobs, seen) = (knobs.clone(), seen.clone());
        ops.expect_create().returning(move |spec| {
            let (knobs, seen) = (knobs.clone(), seen.clone());
            Box::pin(async move {
                seen.create_calls.fetch_add(1, Ordering::SeqCst);
                let delay = knobs.create_delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                if knobs.fail_create.load(Ordering::SeqCst) {
                    return Err(Error::Backend("create refused".into()));
                }
                let n = seen.creates.fetch_add(1, Ordering::SeqCst);
                let live = seen.live.fetch_add(1, Ordering::SeqCst) + 1;
                bump_max(&seen.max_live, live);
                let info = info(
                    &format!("{name}-{n}"),
                    &spec.function_name,
                    SystemTime::now(),
                );
                seen.alive.lock().unwrap().push(info.clone());
                Ok(info)
            })
        });
    }
    {
        let (knobs, seen) = (knobs.clone(), seen.clone());
        ops.expect_invoke().returning(move |id, _request| {
            let (knobs, seen) = (knobs.clone(), seen.clone());
            Box::pin(async move {
                let now = seen.invoking.fetch_add(1, Ordering::SeqCst) + 1;
                bump_max(&seen.max_invoking, now);
                seen.invokes.fetch_add(1, Ordering::SeqCst);
                let delay = knobs.invoke_delay_ms.load(Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(delay)).await;
                seen.invoking.fetch_sub(1, Ordering::SeqCst);
                match knobs.invoke_error.load(Ordering::SeqCst) {
                    1 => Err(Error::SandboxLost {
                        id,
                        reason: "Runtime exited with error: signal: killed".into(),
                    }),
                    2 => Err(Error::Unavailable("agent gone".into())),
                    _ => Ok(ok_response(r#"{"ok":true}"#)),
                }
            })
        });
    }
    {
        let seen = seen.clone();
        ops.expect_pause().returning(move |_| {
            seen.pauses.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
    }
    {
        let seen = seen.clone();
        ops.expect_resume().returning(move |_| {
            seen.resumes.fetch_add(1, Ordering::SeqCst);
            Box::pin(async { Ok(()) })
        });
    }
    {
        let seen = seen.clone();
        ops.expect_destroy().returning(move |id| {
            let mut alive = seen.alive.lock().unwrap();
            let before = alive.len();
            alive.retain(|info| info.id != id);
            if alive.len() < before {
                seen.live.fetch_sub(1, Ordering::SeqCst);
            }
            seen.destroyed.lock().unwrap().push(id);
            Box::pin(async { Ok(()) })
        });
    }
    ops.expect_list().returning(move || {
        let listing = knobs.listing.lock().unwrap().clone();
        let alive = seen.alive.lock().unwrap().clone();
        Box::pin(async move { Ok(listing.unwrap_or(alive)) })
    });
    ops
}

/// A fake runtime plus its knobs and counters.
pub fn runtime(name: &'static str) -> (Arc<dyn Runtime>, Arc<Knobs>, Arc<Seen>) {
    let knobs = Arc::new(Knobs::default());
    let seen = Arc::new(Seen::default());
    let runtime = MockRuntime(fake(name, knobs.clone(), seen.clone()));
    (Arc::new(runtime), knobs, seen)
}

/// Lets spawned tasks run and timers fire up to `ms` of paused time.
pub async fn advance(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}
