//! RAII guards over the shared state, and the acquire procedure that hands them out.
//!
//! Anything that holds a sandbox (a [`Lease`]), the right to create one (a [`Slot`]) or a
//! place in the queue (a [`Queued`]) gives it back when dropped, so a caller that leaves at
//! any point leaks nothing.

use std::sync::Arc;

use esb_runtime::{Error as RuntimeError, InvokeRequest, InvokeResponse, Runtime, SandboxId};
use tokio::sync::oneshot::error::TryRecvError;
use tokio::time::Instant;

use crate::accounting::{Report, Sandbox};
use crate::error::PoolError;
use crate::state::{FunctionPool, Grant, Shared, Step, Waiting};

/// One sandbox leased for one invocation; dropping it returns the sandbox to the pool.
///
/// Dropping a lease while [`Lease::invoke`] is in flight destroys the sandbox, since its
/// state is unknown; the pool's service runs invocations in their own task to avoid that.
pub struct Lease {
    shared: Arc<Shared>,
    function: Arc<FunctionPool>,
    sandbox: Sandbox,
    report: Report,
    /// The runtime holding the sandbox.
    runtime: Arc<dyn Runtime>,
    /// Changes when that runtime is declared down; subscribed when the lease is taken, so
    /// that a runtime declared down between the lease and the call is seen by the call.
    lost: tokio::sync::watch::Receiver<u64>,
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("function", &self.function.name)
            .field("sandbox", &self.sandbox.id)
            .field("cold_start", &self.sandbox.cold)
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Wraps a sandbox the accounts count as leased.
    pub(crate) fn new(
        shared: &Arc<Shared>,
        function: &Arc<FunctionPool>,
        sandbox: Sandbox,
    ) -> Self {
        Self {
            shared: Arc::clone(shared),
            function: Arc::clone(function),
            runtime: shared.placement.runtime(sandbox.runtime),
            lost: shared.placement.lost(sandbox.runtime),
            sandbox,
            report: Report::default(),
        }
    }

    /// The leased sandbox.
    pub fn id(&self) -> &SandboxId {
        &self.sandbox.id
    }

    /// The function it runs.
    pub fn function(&self) -> &str {
        &self.function.name
    }

    /// True when the sandbox was created for this request and never invoked.
    pub fn cold_start(&self) -> bool {
        self.sandbox.cold
    }

    /// The runtime that holds the sandbox.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Changes when the runtime holding the sandbox is declared down (already changed when
    /// it was declared down after the lease was taken).
    pub(crate) fn runtime_lost(&self) -> tokio::sync::watch::Receiver<u64> {
        self.lost.clone()
    }

    /// Runs one invocation on the sandbox and records its outcome (advanced use: the pool's
    /// service does this for each `Invocation`).
    pub async fn invoke(&mut self, request: InvokeRequest) -> Result<InvokeResponse, PoolError> {
        let runtime = Arc::clone(self.runtime());
        self.report.in_flight = true;
        let result = until_lost(
            self.runtime_lost(),
            runtime.invoke(&self.sandbox.id, request),
        )
        .await;
        self.report.in_flight = false;
        self.record(&result);
        result.map_err(PoolError::Runtime)
    }

    /// Records the outcome of an invocation run on this sandbox by other means.
    pub fn record(&mut self, result: &Result<InvokeResponse, RuntimeError>) {
        self.record_error(result.as_ref().err());
    }

    /// Records an outcome: `None` for a success, or the runtime's error.
    pub(crate) fn record_error(&mut self, error: Option<&RuntimeError>) {
        if self.report.record(error) {
            self.shared.mark_unhealthy(self.sandbox.runtime);
        }
    }

    /// Records an invocation that ended outside the runtime: the sandbox is destroyed.
    pub(crate) fn record_unknown(&mut self) {
        self.report.record_unknown();
    }

    /// Destroys the sandbox instead of returning it to the pool.
    pub fn discard(mut self) {
        self.report.discard = true;
    }

    /// Freezes the sandbox; a fatal error destroys it when the lease drops.
    pub(crate) async fn pause(&mut self) {
        let runtime = Arc::clone(self.runtime());
        let paused = until_lost(self.runtime_lost(), runtime.pause(&self.sandbox.id)).await;
        match paused {
            Ok(()) => self.sandbox.paused = true,
            Err(err) => {
                tracing::warn!(function = %self.function.name, sandbox = %self.sandbox.id, %err, "pause failed");
                if err.is_sandbox_fatal() {
                    self.report.discard = true;
                }
                if matches!(err, RuntimeError::Unavailable(_)) {
                    self.shared.mark_unhealthy(self.sandbox.runtime);
                }
            }
        }
    }

    /// Thaws a frozen sandbox; a sandbox that cannot be thawed is destroyed.
    async fn ensure_running(mut self) -> Option<Lease> {
        if !self.sandbox.paused {
            return Some(self);
        }
        let runtime = Arc::clone(self.runtime());
        let resumed = until_lost(self.runtime_lost(), runtime.resume(&self.sandbox.id)).await;
        match resumed {
            Ok(()) => {
                self.sandbox.paused = false;
                Some(self)
            }
            Err(err) => {
                tracing::warn!(function = %self.function.name, sandbox = %self.sandbox.id, %err, "resume failed: sandbox dropped");
                if matches!(err, RuntimeError::Unavailable(_)) {
                    self.shared.mark_unhealthy(self.sandbox.runtime);
                }
                self.report.discard = true;
                None
            }
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let sandbox = std::mem::take(&mut self.sandbox);
        self.function.release(&self.shared, sandbox, self.report);
    }
}

/// The right to create one sandbox; dropping it unused frees the room.
pub(crate) struct Slot {
    shared: Arc<Shared>,
    function: Arc<FunctionPool>,
    runtime: usize,
    on_demand: bool,
    armed: bool,
}

impl Slot {
    /// Wraps room the accounts count as creating; `on_demand` when a request waits for it.
    fn new(
        shared: &Arc<Shared>,
        function: &Arc<FunctionPool>,
        runtime: usize,
        on_demand: bool,
    ) -> Self {
        Self {
            shared: Arc::clone(shared),
            function: Arc::clone(function),
            runtime,
            on_demand,
            armed: true,
        }
    }

    /// Creates the sandbox and leases it.
    async fn create(mut self) -> Result<Lease, PoolError> {
        let runtime = self.shared.placement.runtime(self.runtime);
        let started = Instant::now();
        let result = runtime.create(self.function.spec()).await;
        self.armed = false;
        match result {
            Ok(info) => {
                self.function
                    .metrics
                    .cold_start_duration
                    .record(started.elapsed().as_secs_f64());
                let sandbox = self.function.created(self.runtime, info, self.on_demand);
                Ok(Lease::new(&self.shared, &self.function, sandbox))
            }
            Err(source) => {
                self.function
                    .create_failed(&self.shared, self.runtime, &source);
                Err(PoolError::Create {
                    function: self.function.name.to_string(),
                    source,
                })
            }
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if self.armed {
            self.function.slot_unused(&self.shared, self.runtime);
        }
    }
}

/// What a waiter got, as a guard.
enum Granted {
    Lease(Lease),
    Slot(Slot),
}

fn guard(
    shared: &Arc<Shared>,
    function: &Arc<FunctionPool>,
    grant: Grant,
) -> Result<Granted, PoolError> {
    match grant {
        Grant::Sandbox(sandbox) => Ok(Granted::Lease(Lease::new(shared, function, sandbox))),
        Grant::Slot(runtime) => Ok(Granted::Slot(Slot::new(shared, function, runtime, true))),
        Grant::Reject(err) => Err(err),
    }
}

/// A place in a function's queue; leaving it (timeout, cancellation) removes it and gives
/// back whatever was granted in the meantime.
struct Queued {
    shared: Arc<Shared>,
    function: Arc<FunctionPool>,
    waiting: Waiting,
    done: bool,
}

impl Queued {
    async fn wait(mut self, deadline: Instant, started: Instant) -> Result<Granted, PoolError> {
        let result = tokio::time::timeout_at(deadline, &mut self.waiting.rx).await;
        let grant = match result {
            Ok(Ok(grant)) => grant,
            Ok(Err(_)) => return Err(PoolError::Shutdown),
            // A grant that raced with the deadline is still taken.
            Err(_) => match self.waiting.rx.try_recv() {
                Ok(grant) => grant,
                Err(_) => {
                    self.function.metrics.throttles.increment(1);
                    return Err(PoolError::Throttled {
                        function: self.function.name.to_string(),
                        waited: started.elapsed(),
                    });
                }
            },
        };
        self.done = true;
        self.function
            .metrics
            .queue_wait
            .record(started.elapsed().as_secs_f64());
        guard(&self.shared, &self.function, grant)
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        self.function.leave_queue(self.waiting.id);
        self.waiting.rx.close();
        match self.waiting.rx.try_recv() {
            // Dropping the guard gives it back.
            Ok(grant) => drop(guard(&self.shared, &self.function, grant)),
            Err(TryRecvError::Empty | TryRecvError::Closed) => {}
        }
    }
}

/// Abandons the half-open probe if the acquire ends without a lease.
struct ProbeGuard {
    function: Option<Arc<FunctionPool>>,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(function) = self.function.take() {
            function.abandon_probe();
        }
    }
}

/// Leases a sandbox of `function`: a warm one, a new one, or one freed within `acquire_timeout`.
pub(crate) async fn acquire(shared: &Arc<Shared>, function: &str) -> Result<Lease, PoolError> {
    if shared.is_closed() {
        return Err(PoolError::Shutdown);
    }
    let function = shared.function(function)?;
    let started = Instant::now();
    let deadline = started + function.config.acquire_timeout;
    let mut probe = ProbeGuard { function: None };
    let mut admit = true;
    loop {
        let (step, is_probe) = function.try_acquire(shared, admit)?;
        if admit && !matches!(step, Step::Ready(_)) {
            function.metrics.warm_exhausted.increment(1);
        }
        if is_probe {
            probe.function = Some(Arc::clone(&function));
        }
        admit = false;
        let queued = |waiting| Queued {
            shared: Arc::clone(shared),
            function: Arc::clone(&function),
            waiting,
            done: false,
        };
        let granted = match step {
            Step::Ready(sandbox) => Granted::Lease(Lease::new(shared, &function, sandbox)),
            Step::Create(runtime) => Granted::Slot(Slot::new(shared, &function, runtime, true)),
            Step::Wait(waiting) => queued(waiting).wait(deadline, started).await?,
            Step::Evict(waiting) => {
                let queued = queued(waiting);
                shared.evict_for(&function);
                queued.wait(deadline, started).await?
            }
        };
        let lease = match granted {
            Granted::Lease(lease) => lease,
            Granted::Slot(slot) => create(shared, slot).await?,
        };
        if let Some(mut lease) = lease.ensure_running().await {
            lease.report.probe = probe.function.take().is_some();
            return Ok(lease);
        }
    }
}

/// Creates a sandbox in its own task, so that it reaches the pool even if the caller leaves
/// (the task's lease is then dropped, which returns it to the pool).
async fn create(shared: &Shared, slot: Slot) -> Result<Lease, PoolError> {
    let function = slot.function.name.to_string();
    shared
        .handle
        .spawn(slot.create())
        .await
        .map_err(|source| PoolError::Aborted { function, source })?
}

/// Creates sandboxes in the background up to the function's `min_capacity`, a few at a
/// time on each runtime (see [`Warmup`]).
pub(crate) fn ensure_min(shared: &Arc<Shared>, function: &Arc<FunctionPool>) {
    for runtime in function.reserve_min(shared) {
        let slot = Slot::new(shared, function, runtime, false);
        let turns = shared.warmup.of(runtime);
        let pool = Arc::clone(shared);
        shared.handle.spawn(async move {
            let Ok(_turn) = turns.acquire_owned().await else {
                return;
            };
            if pool.is_closed() {
                return; // the slot is given back unused
            }
            // The new sandbox goes to a waiter or the idle list when its lease drops.
            let _ = slot.create().await;
        });
    }
}

/// How many creations toward `min_capacity` run at once on each runtime.
///
/// Thousands of sandboxes started at once would all be starting together: the host's CPUs
/// shared among them, each new Runtime API connection asked of all their processes, and none
/// ready before most are. A few at a time (a few per CPU) are ready one after another, as
/// fast. A request's own cold start takes no turn.
pub(crate) struct Warmup {
    per_runtime: usize,
    turns: std::sync::Mutex<Vec<Arc<tokio::sync::Semaphore>>>,
}

impl Warmup {
    /// At most `per_runtime` at once on each runtime.
    pub(crate) fn new(per_runtime: usize) -> Self {
        Self {
            per_runtime: per_runtime.max(1),
            turns: std::sync::Mutex::default(),
        }
    }

    /// The turns of runtime `runtime`.
    fn of(&self, runtime: usize) -> Arc<tokio::sync::Semaphore> {
        let mut turns = self
            .turns
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        while turns.len() <= runtime {
            turns.push(Arc::new(tokio::sync::Semaphore::new(self.per_runtime)));
        }
        Arc::clone(&turns[runtime])
    }
}

/// The error of an invocation whose runtime was declared down while it ran.
pub(crate) fn runtime_lost() -> RuntimeError {
    RuntimeError::Unavailable(
        "the host running the sandbox stopped answering during the invocation".into(),
    )
}

/// Runs a call on a runtime until it ends or the runtime is declared down.
async fn until_lost<T>(
    mut lost: tokio::sync::watch::Receiver<u64>,
    call: impl Future<Output = Result<T, RuntimeError>>,
) -> Result<T, RuntimeError> {
    tokio::select! {
        // A runtime already declared down is not called.
        biased;
        _ = lost.changed() => Err(runtime_lost()),
        result = call => result,
    }
}
