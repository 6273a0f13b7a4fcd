//! The pool's shared state: the functions, each with its [`Accounts`] behind a lock, and the
//! runtimes ([`Placement`]). Operations here take the lock, apply the bookkeeping, publish
//! metrics and start background destroys; they hand out raw sandboxes and reservations,
//! which the guards module wraps. Nothing is awaited and no guard is dropped while a
//! lock is held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use esb_runtime::{Error as RuntimeError, SandboxId, SandboxInfo};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::accounting::{Accounts, Fate, FunctionStats, Queue, Report, Sandbox};
use crate::breaker::{Admit, BreakerState};
use crate::config::{BreakerConfig, FunctionPoolConfig};
use crate::error::PoolError;
use crate::metrics::FunctionMetrics;
use crate::placement::{NoRoom, Placement};

/// What a waiter in a function's queue receives.
pub(crate) enum Grant {
    /// A sandbox, counted as leased.
    Sandbox(Sandbox),
    /// Room to create a sandbox on this runtime, counted as creating.
    Slot(usize),
    /// The request is refused.
    Reject(PoolError),
}

/// One function's bookkeeping; waiters hold the sender of their grant.
pub(crate) type State = Accounts<oneshot::Sender<Grant>>;

/// A place taken in a function's queue.
pub(crate) struct Waiting {
    pub id: u64,
    pub rx: oneshot::Receiver<Grant>,
}

/// One step of an acquire.
pub(crate) enum Step {
    /// An idle sandbox, now leased.
    Ready(Sandbox),
    /// Room to create a sandbox on this runtime.
    Create(usize),
    /// Wait in the queue.
    Wait(Waiting),
    /// Every runtime is at the host cap: evict another function's idle sandbox, then wait.
    Evict(Waiting),
}

/// The label naming the pool that owns a sandbox ([`crate::PoolConfig::owner`]).
pub const OWNER_LABEL: &str = "esb.owner";

/// State shared by a pool's handles, its guards and its janitor.
pub(crate) struct Shared {
    pub janitor_interval: Duration,
    pub orphan_grace: Duration,
    pub breaker: BreakerConfig,
    pub env: Option<String>,
    /// The `esb.owner` label of this pool's sandboxes, when it adopts its own.
    pub owner: Option<String>,
    pub placement: Placement,
    pub functions: RwLock<HashMap<Arc<str>, Arc<FunctionPool>>>,
    pub handle: Handle,
    pub closed: AtomicBool,
    /// Creations toward `min_capacity` running at once, per runtime (see
    /// [`crate::PoolConfig::warmup_concurrency`]).
    pub warmup: crate::lease::Warmup,
}

impl Shared {
    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    pub(crate) fn function(&self, name: &str) -> Result<Arc<FunctionPool>, PoolError> {
        let functions = self
            .functions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        functions
            .get(name)
            .cloned()
            .ok_or_else(|| PoolError::UnknownFunction(name.to_owned()))
    }

    pub(crate) fn snapshot(&self) -> Vec<Arc<FunctionPool>> {
        let functions = self
            .functions
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        functions.values().cloned().collect()
    }

    /// Adds a function; fails if one of that name is pooled.
    pub(crate) fn insert(
        &self,
        mut config: FunctionPoolConfig,
    ) -> Result<Arc<FunctionPool>, PoolError> {
        if let Some(owner) = &self.owner {
            config
                .spec
                .labels
                .insert(OWNER_LABEL.to_owned(), owner.clone());
        }
        let mut functions = self
            .functions
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if functions.contains_key(config.name()) {
            return Err(PoolError::AlreadyRegistered(config.name().to_owned()));
        }
        let breaker = config.breaker.unwrap_or(self.breaker);
        let function = Arc::new(FunctionPool::new(config, breaker));
        functions.insert(Arc::clone(&function.name), Arc::clone(&function));
        Ok(function)
    }

    /// Capacity was freed somewhere: give slots to waiters that can use them.
    pub(crate) fn wake_waiters(self: &Arc<Self>) {
        for function in self.snapshot() {
            function.grant_slots(self);
        }
    }

    /// Marks a runtime unreachable and forgets its sandboxes (reconcile destroys them later).
    pub(crate) fn mark_unhealthy(self: &Arc<Self>, runtime: usize) {
        if !self.placement.set_healthy(runtime, false) {
            return;
        }
        tracing::warn!(
            runtime,
            "runtime unavailable: its sandboxes are dropped from the pool"
        );
        for function in self.snapshot() {
            let forgotten = {
                let mut st = function.lock();
                let forgotten = st.forget_runtime(runtime);
                function.publish(&st);
                forgotten
            };
            if forgotten > 0 {
                function.metrics.lost.increment(forgotten as u64);
                self.placement.unreserve(runtime, forgotten);
            }
        }
        if !self.placement.any_healthy() {
            // No runtime is left: nobody in a queue can get a sandbox before one returns.
            for function in self.snapshot() {
                function.reject_waiters(|| function.no_capacity());
            }
            return;
        }
        self.wake_waiters();
    }

    /// Adds a runtime that new sandboxes may be placed on; returns its index.
    pub(crate) fn add_runtime(self: &Arc<Self>, runtime: Arc<dyn esb_runtime::Runtime>) -> usize {
        let index = self.placement.add(runtime);
        tracing::info!(runtime = index, "runtime added");
        self.wake_waiters();
        index
    }

    /// Drains a runtime: no new sandboxes on it, its idle ones are destroyed now and its busy
    /// ones when their invocation ends. `false` takes it back into placement.
    pub(crate) fn set_draining(self: &Arc<Self>, runtime: usize, draining: bool) {
        let was = self.placement.set_draining(runtime, draining);
        if was == draining {
            return;
        }
        if !draining {
            tracing::info!(runtime, "runtime takes sandboxes again");
            self.wake_waiters();
            return;
        }
        tracing::info!(runtime, "runtime draining: no new sandboxes on it");
        for function in self.snapshot() {
            let victims = {
                let mut st = function.lock();
                let victims = st.drain_runtime(runtime);
                function.publish(&st);
                victims
            };
            for sandbox in victims {
                self.destroy_later(Arc::clone(&function), sandbox.id, sandbox.runtime);
            }
        }
        if !self.placement.any_healthy() {
            for function in self.snapshot() {
                function.reject_waiters(|| function.no_capacity());
            }
        }
    }

    /// The runtime was found down from outside (a failed health check): its invocations in
    /// flight end with an error and its sandboxes are dropped.
    pub(crate) fn runtime_down(self: &Arc<Self>, runtime: usize) {
        self.placement.declare_lost(runtime);
        self.mark_unhealthy(runtime);
    }

    /// The runtime answers again: new sandboxes may go to it.
    pub(crate) fn runtime_up(self: &Arc<Self>, runtime: usize) {
        if !self.placement.set_healthy(runtime, true) {
            tracing::info!(runtime, "runtime is reachable again");
            self.wake_waiters();
        }
    }

    /// Destroys a sandbox in the background, then frees its room.
    fn destroy_later(self: &Arc<Self>, function: Arc<FunctionPool>, id: SandboxId, runtime: usize) {
        let shared = Arc::clone(self);
        self.handle.spawn(async move {
            if let Err(err) = shared.placement.runtime(runtime).destroy(&id).await {
                tracing::warn!(function = %function.name, sandbox = %id, %err, "destroy failed");
                if matches!(err, RuntimeError::Unavailable(_)) {
                    shared.mark_unhealthy(runtime);
                }
            }
            function.destroyed(&shared, runtime);
        });
    }

    /// Makes room on a full host by destroying the least recently used idle sandbox of
    /// another function that is above its `min_capacity`.
    pub(crate) fn evict_for(self: &Arc<Self>, requester: &FunctionPool) {
        let full = |s: &Sandbox| self.placement.is_full(s.runtime);
        let mut best: Option<(Instant, Arc<FunctionPool>)> = None;
        for function in self.snapshot() {
            if std::ptr::eq(Arc::as_ptr(&function), requester) {
                continue;
            }
            let oldest = function
                .lock()
                .evictable(function.config.min_capacity, full);
            if let Some(at) = oldest
                && best.as_ref().is_none_or(|(t, _)| at < *t)
            {
                best = Some((at, Arc::clone(&function)));
            }
        }
        let Some((_, function)) = best else {
            return;
        };
        let victim = {
            let mut st = function.lock();
            let victim = st.evict(function.config.min_capacity, full);
            if victim.is_some() {
                function.publish(&st);
            }
            victim
        };
        if let Some(sandbox) = victim {
            tracing::debug!(function = %function.name, sandbox = %sandbox.id, "evicted to make room");
            self.destroy_later(function, sandbox.id, sandbox.runtime);
        }
    }

    /// True when a listed sandbox belongs to this pool.
    pub(crate) fn owns(&self, info: &SandboxInfo) -> bool {
        if let Some(owner) = &self.owner {
            return info.labels.get(OWNER_LABEL) == Some(owner);
        }
        match &self.env {
            Some(env) => info.labels.get("esb.env") == Some(env),
            None => self
                .functions
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains_key(info.function_name.as_str()),
        }
    }

    /// Closes the pool: rejects queued requests and destroys idle sandboxes; leased ones are
    /// destroyed when released.
    pub(crate) async fn shutdown(self: &Arc<Self>) {
        self.closed.store(true, Ordering::Release);
        let mut pending = Vec::new();
        for function in self.snapshot() {
            let (rejected, victims) = {
                let mut st = function.lock();
                let closed = st.close();
                function.publish(&st);
                closed
            };
            for waiter in rejected {
                let _ = waiter.send(Grant::Reject(PoolError::Shutdown));
            }
            for sandbox in victims {
                let shared = Arc::clone(self);
                let function = Arc::clone(&function);
                pending.push(async move {
                    let runtime = shared.placement.runtime(sandbox.runtime);
                    if let Err(err) = runtime.destroy(&sandbox.id).await {
                        tracing::warn!(function = %function.name, sandbox = %sandbox.id, %err, "destroy failed");
                    }
                    function.destroyed(&shared, sandbox.runtime);
                });
            }
        }
        futures::future::join_all(pending).await;
    }
}

/// Offers a grant to the waiters in FIFO order; gives it back if none takes it.
fn offer(waiters: &mut Queue<oneshot::Sender<Grant>>, mut grant: Grant) -> Option<Grant> {
    while let Some(waiter) = waiters.pop_front() {
        match waiter.send(grant) {
            Ok(()) => return None,
            Err(back) => grant = back,
        }
    }
    Some(grant)
}

/// One function of the pool: its config, its bookkeeping and its metrics.
pub(crate) struct FunctionPool {
    pub name: Arc<str>,
    pub config: FunctionPoolConfig,
    /// What new sandboxes are made from: `config.spec` until [`crate::Pool::replace_spec`].
    spec: std::sync::RwLock<esb_runtime::SandboxSpec>,
    state: Mutex<State>,
    pub metrics: FunctionMetrics,
}

impl FunctionPool {
    fn new(config: FunctionPoolConfig, breaker: BreakerConfig) -> Self {
        let metrics = FunctionMetrics::new(config.name());
        let pool = Self {
            name: Arc::from(config.name()),
            spec: std::sync::RwLock::new(config.spec.clone()),
            config,
            state: Mutex::new(Accounts::new(breaker)),
            metrics,
        };
        pool.metrics.breaker.set(BreakerState::Closed.gauge_value());
        pool
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn publish(&self, st: &State) {
        let stats = st.stats();
        let m = &self.metrics;
        m.idle.set(stats.idle as f64);
        m.paused.set(stats.paused as f64);
        m.busy.set(stats.busy as f64);
        m.creating.set(stats.creating as f64);
        m.destroying.set(stats.destroying as f64);
        m.queue_depth.set(stats.waiting as f64);
    }

    fn publish_breaker(&self, st: &State) {
        self.metrics.breaker.set(st.breaker_state().gauge_value());
    }

    pub(crate) fn stats(&self) -> FunctionStats {
        self.lock().stats()
    }

    fn circuit_open(&self) -> PoolError {
        PoolError::CircuitOpen {
            function: self.name.to_string(),
        }
    }

    /// One step of an acquire, under the lock; `admit` asks the breaker first. Also says
    /// whether this request is the breaker's half-open probe.
    pub(crate) fn try_acquire(
        &self,
        shared: &Shared,
        admit: bool,
    ) -> Result<(Step, bool), PoolError> {
        let mut st = self.lock();
        let mut probe = false;
        if admit && !st.breaker_closed() {
            match st.admit(Instant::now()) {
                Admit::Pass => {}
                Admit::Probe => probe = true,
                Admit::Reject => {
                    self.publish_breaker(&st);
                    return Err(self.circuit_open());
                }
            }
            self.publish_breaker(&st);
        }
        if !shared.placement.any_healthy() {
            // No runtime is reachable: answer at once instead of queueing.
            if probe {
                st.abandon_probe();
            }
            return Err(self.no_capacity());
        }
        if !st.has_waiters() {
            if let Some(sandbox) = st.pop_idle() {
                self.publish(&st);
                return Ok((Step::Ready(sandbox), probe));
            }
            if st.has_room(self.config.max_capacity) {
                match shared.placement.reserve() {
                    Ok(runtime) => {
                        st.start_create();
                        self.publish(&st);
                        return Ok((Step::Create(runtime), probe));
                    }
                    Err(NoRoom::NoHealthy) => {
                        if probe {
                            st.abandon_probe();
                        }
                        return Err(self.no_capacity());
                    }
                    Err(NoRoom::HostFull) => {
                        return Ok((Step::Evict(self.enqueue(&mut st)), probe));
                    }
                }
            }
        }
        Ok((Step::Wait(self.enqueue(&mut st)), probe))
    }

    /// Takes in a sandbox of this function found on `runtime` that an earlier run of this
    /// pool's owner left: warm, to the first waiter or the idle list. False when the
    /// function has no room for it.
    pub(crate) fn adopt(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        runtime: usize,
        id: SandboxId,
        paused: bool,
    ) -> bool {
        let sandbox = {
            let mut st = self.lock();
            if !st.has_room(self.config.max_capacity) || shared.is_closed() {
                return false;
            }
            st.start_create();
            let mut sandbox = st.created(id, runtime, Instant::now(), false);
            sandbox.paused = paused;
            self.publish(&st);
            sandbox
        };
        shared.placement.reserve_on(runtime);
        self.release(shared, sandbox, Report::default());
        true
    }

    fn no_capacity(&self) -> PoolError {
        PoolError::NoCapacity {
            function: self.name.to_string(),
        }
    }

    /// Answers every request in the queue with `err()`.
    fn reject_waiters(&self, err: impl Fn() -> PoolError) {
        let rejected = {
            let mut st = self.lock();
            let rejected = st.waiters().drain();
            self.publish(&st);
            rejected
        };
        for waiter in rejected {
            let _ = waiter.send(Grant::Reject(err()));
        }
    }

    fn enqueue(&self, st: &mut State) -> Waiting {
        let (tx, rx) = oneshot::channel();
        let id = st.waiters().push(tx);
        self.publish(st);
        Waiting { id, rx }
    }

    /// A waiter left the queue (timeout, cancellation).
    pub(crate) fn leave_queue(&self, id: u64) {
        let mut st = self.lock();
        if st.waiters().remove(id).is_some() {
            self.publish(&st);
        }
    }

    /// Gives creation slots to waiters while there is room.
    fn grant_slots(&self, shared: &Shared) {
        let mut st = self.lock();
        while st.has_waiters() && st.has_room(self.config.max_capacity) {
            let Ok(runtime) = shared.placement.reserve() else {
                break;
            };
            st.start_create();
            if offer(st.waiters(), Grant::Slot(runtime)).is_some() {
                st.cancel_create();
                shared.placement.unreserve(runtime, 1);
            }
        }
        self.publish(&st);
    }

    /// Puts a released sandbox back: to the first waiter, to the idle list, or away.
    pub(crate) fn release(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        sandbox: Sandbox,
        report: Report,
    ) {
        let runtime_healthy = shared.placement.is_healthy(sandbox.runtime);
        let draining = shared.placement.is_draining(sandbox.runtime);
        let mut rejected = Vec::new();
        let mut freed = false;
        {
            let mut st = self.lock();
            let released = st.release(
                sandbox,
                &report,
                Instant::now(),
                shared.is_closed(),
                runtime_healthy,
                draining,
            );
            if released.opened {
                tracing::warn!(function = %self.name, "circuit breaker opened");
                rejected = st.waiters().drain();
            }
            self.publish_breaker(&st);
            if released.lost {
                self.metrics.lost.increment(1);
            }
            match released.fate {
                Fate::Reuse(sandbox) => {
                    if let Some(Grant::Sandbox(sandbox)) =
                        offer(st.waiters(), Grant::Sandbox(sandbox))
                    {
                        st.return_idle(sandbox);
                    }
                    self.publish(&st);
                }
                Fate::Destroy(sandbox) => {
                    self.publish(&st);
                    drop(st);
                    shared.destroy_later(Arc::clone(self), sandbox.id, sandbox.runtime);
                }
                Fate::Free(runtime) => {
                    self.publish(&st);
                    drop(st);
                    shared.placement.unreserve(runtime, 1);
                    freed = true;
                }
            }
        }
        for waiter in rejected {
            let _ = waiter.send(Grant::Reject(self.circuit_open()));
        }
        if freed {
            shared.wake_waiters();
        }
    }

    /// Room reserved for a new sandbox is given back unused.
    pub(crate) fn slot_unused(&self, shared: &Arc<Shared>, runtime: usize) {
        {
            let mut st = self.lock();
            st.cancel_create();
            self.publish(&st);
        }
        shared.placement.unreserve(runtime, 1);
        shared.wake_waiters();
    }

    /// A new sandbox exists: it is leased to whoever asked for it.
    pub(crate) fn created(&self, runtime: usize, info: SandboxInfo, on_demand: bool) -> Sandbox {
        let sandbox = {
            let mut st = self.lock();
            let sandbox = st.created(info.id, runtime, Instant::now(), on_demand);
            self.publish(&st);
            sandbox
        };
        if on_demand {
            self.metrics.cold_starts.increment(1);
        }
        sandbox
    }

    pub(crate) fn create_failed(&self, shared: &Arc<Shared>, runtime: usize, err: &RuntimeError) {
        tracing::warn!(function = %self.name, %err, "sandbox creation failed");
        self.metrics.create_failures.increment(1);
        let rejected = {
            let mut st = self.lock();
            // An unreachable runtime is no failure of the function's.
            let counts = !matches!(err, RuntimeError::Unavailable(_));
            let opened = st.create_failed(Instant::now(), counts);
            self.publish_breaker(&st);
            let rejected = if opened {
                tracing::warn!(function = %self.name, "circuit breaker opened");
                st.waiters().drain()
            } else {
                Vec::new()
            };
            self.publish(&st);
            rejected
        };
        shared.placement.unreserve(runtime, 1);
        for waiter in rejected {
            let _ = waiter.send(Grant::Reject(self.circuit_open()));
        }
        if matches!(err, RuntimeError::Unavailable(_)) {
            shared.mark_unhealthy(runtime);
        }
        shared.wake_waiters();
    }

    fn destroyed(&self, shared: &Arc<Shared>, runtime: usize) {
        {
            let mut st = self.lock();
            st.destroyed();
            self.publish(&st);
        }
        shared.placement.unreserve(runtime, 1);
        shared.wake_waiters();
    }

    /// Reserves room for the sandboxes missing to reach `min_capacity`; returns their runtimes.
    pub(crate) fn reserve_min(&self, shared: &Shared) -> Vec<usize> {
        if shared.is_closed() {
            return Vec::new();
        }
        let mut st = self.lock();
        if !st.breaker_closed() {
            return Vec::new();
        }
        let deficit = st.min_deficit(self.config.min_capacity, self.config.max_capacity);
        let mut runtimes = Vec::new();
        for _ in 0..deficit {
            let Ok(runtime) = shared.placement.reserve() else {
                break;
            };
            st.start_create();
            runtimes.push(runtime);
        }
        self.publish(&st);
        runtimes
    }

    /// Leases the idle sandboxes `pick` chooses (they count as busy until released).
    pub(crate) fn take_idle(&self, pick: impl FnMut(&Sandbox) -> bool) -> Vec<Sandbox> {
        let mut st = self.lock();
        let taken = st.take_idle(pick);
        self.publish(&st);
        taken
    }

    /// What a new sandbox is made from.
    pub(crate) fn spec(&self) -> esb_runtime::SandboxSpec {
        self.spec
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// Makes new sandboxes from `spec`.
    pub(crate) fn set_spec(&self, spec: esb_runtime::SandboxSpec) {
        *self
            .spec
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = spec;
    }

    /// Retires every sandbox of now (see [`crate::Pool::retire`]); returns how many idle ones
    /// are being destroyed.
    pub(crate) fn retire(self: &Arc<Self>, shared: &Arc<Shared>) -> usize {
        let victims = {
            let mut st = self.lock();
            let victims = st.retire();
            self.publish(&st);
            victims
        };
        let count = victims.len();
        for sandbox in victims {
            tracing::debug!(function = %self.name, sandbox = %sandbox.id, "retired: destroying");
            shared.destroy_later(Arc::clone(self), sandbox.id, sandbox.runtime);
        }
        count
    }

    /// Destroys idle sandboxes unused for `idle_timeout`, least recently used first, down to `min_capacity`.
    pub(crate) fn expire_idle(self: &Arc<Self>, shared: &Arc<Shared>) {
        let victims = {
            let mut st = self.lock();
            let victims = st.expire_idle(
                Instant::now(),
                self.config.min_capacity,
                self.config.idle_timeout,
            );
            self.publish(&st);
            victims
        };
        for sandbox in victims {
            tracing::debug!(function = %self.name, sandbox = %sandbox.id, "idle timeout: destroying");
            shared.destroy_later(Arc::clone(self), sandbox.id, sandbox.runtime);
        }
    }

    /// Drops sandboxes of `runtime` that the runtime no longer lists (or lists as stopped).
    pub(crate) fn drop_vanished(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        runtime: usize,
        gone: &dyn Fn(&SandboxId) -> bool,
        listed_at: Instant,
    ) {
        let victims = {
            let mut st = self.lock();
            let (vanished, victims) = st.vanished(runtime, gone, listed_at);
            for id in &vanished {
                tracing::warn!(function = %self.name, sandbox = %id, "sandbox vanished: dropped");
            }
            self.metrics.lost.increment(vanished.len() as u64);
            self.publish(&st);
            victims
        };
        for sandbox in victims {
            shared.destroy_later(Arc::clone(self), sandbox.id, sandbox.runtime);
        }
    }

    /// Ids of the sandboxes of this function on `runtime`.
    pub(crate) fn known_on(&self, runtime: usize) -> Vec<SandboxId> {
        self.lock().known_on(runtime)
    }

    /// The half-open probe left without a lease.
    pub(crate) fn abandon_probe(&self) {
        self.lock().abandon_probe();
    }
}
