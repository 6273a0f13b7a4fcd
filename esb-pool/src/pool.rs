//! The pool: per-function state, leases, the FIFO queue, slots for new sandboxes, placement.
//!
//! Accounting invariant, per function: `idle + leased + creating + destroying` is the number
//! of sandboxes that exist or may exist, and never exceeds `max_capacity`. Anything that
//! holds a sandbox (a [`Lease`]) or the right to create one (a [`Slot`]) gives it back when
//! dropped, so a caller that leaves at any point leaks nothing. No guard is dropped while a
//! state lock is held.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::Duration;

use esb_runtime::{
    Error as RuntimeError, InvokeRequest, InvokeResponse, Runtime, SandboxId, SandboxInfo,
};
use tokio::runtime::Handle;
use tokio::sync::oneshot;
use tokio::time::Instant;

use crate::breaker::{Admit, Breaker, BreakerState};
use crate::config::{FunctionPoolConfig, PoolConfig};
use crate::metrics::FunctionMetrics;
use crate::service::{Invocation, PoolResponse};
use crate::{PoolError, janitor};

/// A pool of sandboxes for several functions over one or more runtimes. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("functions", &self.shared.snapshot().len())
            .field("runtimes", &self.shared.runtimes.len())
            .finish_non_exhaustive()
    }
}

/// A snapshot of one function's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FunctionStats {
    /// Idle sandboxes, running.
    pub idle: usize,
    /// Idle sandboxes, frozen.
    pub paused: usize,
    /// Sandboxes leased to a request (or to the janitor).
    pub busy: usize,
    /// Sandboxes being created.
    pub creating: usize,
    /// Sandboxes being destroyed.
    pub destroying: usize,
    /// Requests waiting in the queue.
    pub waiting: usize,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
}

impl FunctionStats {
    /// Every sandbox counted against `max_capacity`.
    pub fn total(&self) -> usize {
        self.idle + self.paused + self.busy + self.creating + self.destroying
    }
}

pub(crate) struct RuntimeSlot {
    pub runtime: Arc<dyn Runtime>,
    pub healthy: AtomicBool,
    /// Sandboxes of this pool placed on it, including those being created or destroyed.
    pub load: AtomicUsize,
    pub pausable: bool,
}

pub(crate) struct Shared {
    pub host_cap: Option<usize>,
    pub janitor_interval: Duration,
    pub orphan_grace: Duration,
    pub breaker: crate::BreakerConfig,
    pub env: Option<String>,
    pub runtimes: Vec<RuntimeSlot>,
    pub functions: RwLock<HashMap<Arc<str>, Arc<FunctionPool>>>,
    pub handle: Handle,
    pub closed: AtomicBool,
}

enum Reserve {
    NoHealthy,
    HostFull,
}

impl Shared {
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

    /// Reserves room for one sandbox on the least-loaded healthy runtime under the host cap.
    fn reserve_runtime(&self) -> Result<usize, Reserve> {
        loop {
            let mut best: Option<(usize, usize)> = None;
            let mut any_healthy = false;
            for (i, slot) in self.runtimes.iter().enumerate() {
                if !slot.healthy.load(Ordering::Acquire) {
                    continue;
                }
                any_healthy = true;
                let load = slot.load.load(Ordering::Acquire);
                if self.host_cap.is_some_and(|cap| load >= cap) {
                    continue;
                }
                if best.is_none_or(|(_, l)| load < l) {
                    best = Some((i, load));
                }
            }
            let Some((i, load)) = best else {
                return Err(if any_healthy {
                    Reserve::HostFull
                } else {
                    Reserve::NoHealthy
                });
            };
            if self.runtimes[i]
                .load
                .compare_exchange(load, load + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(i);
            }
        }
    }

    fn unreserve(&self, runtime: usize) {
        self.runtimes[runtime].load.fetch_sub(1, Ordering::AcqRel);
    }

    /// Capacity was freed somewhere: give slots to waiters that can use them.
    pub(crate) fn wake_waiters(self: &Arc<Self>) {
        for function in self.snapshot() {
            function.grant_slots(self);
        }
    }

    /// Marks a runtime unreachable and forgets its sandboxes (reconcile destroys them later).
    pub(crate) fn mark_unhealthy(self: &Arc<Self>, runtime: usize) {
        if !self.runtimes[runtime].healthy.swap(false, Ordering::AcqRel) {
            return;
        }
        tracing::warn!(
            runtime,
            "runtime unavailable: its sandboxes are dropped from the pool"
        );
        for function in self.snapshot() {
            let forgotten = {
                let mut st = function.lock();
                let before = st.idle.len();
                let mut kept = Vec::with_capacity(before);
                for sandbox in std::mem::take(&mut st.idle) {
                    if sandbox.runtime == runtime {
                        st.known.remove(&sandbox.id);
                        if sandbox.paused {
                            st.paused_idle -= 1;
                        }
                    } else {
                        kept.push(sandbox);
                    }
                }
                st.idle = kept;
                function.publish(&st);
                before - st.idle.len()
            };
            if forgotten > 0 {
                function.metrics.lost.increment(forgotten as u64);
                self.runtimes[runtime]
                    .load
                    .fetch_sub(forgotten, Ordering::AcqRel);
            }
        }
        self.wake_waiters();
    }

    /// Destroys a sandbox in the background, then frees its room.
    fn destroy_later(self: &Arc<Self>, function: Arc<FunctionPool>, id: SandboxId, runtime: usize) {
        let shared = Arc::clone(self);
        self.handle.spawn(async move {
            if let Err(err) = shared.runtimes[runtime].runtime.destroy(&id).await {
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
    fn evict_for(self: &Arc<Self>, requester: &FunctionPool) {
        let cap = self.host_cap.unwrap_or(usize::MAX);
        let mut best: Option<(Instant, Arc<FunctionPool>)> = None;
        for function in self.snapshot() {
            if std::ptr::eq(Arc::as_ptr(&function), requester) {
                continue;
            }
            let st = function.lock();
            if st.live() <= function.config.min_capacity {
                continue;
            }
            let oldest = st
                .idle
                .iter()
                .find(|s| self.runtimes[s.runtime].load.load(Ordering::Acquire) >= cap);
            if let Some(sandbox) = oldest
                && best.as_ref().is_none_or(|(t, _)| sandbox.last_used() < *t)
            {
                best = Some((sandbox.last_used(), Arc::clone(&function)));
            }
        }
        let Some((_, function)) = best else {
            return;
        };
        let victim = {
            let mut st = function.lock();
            let position = st
                .idle
                .iter()
                .position(|s| self.runtimes[s.runtime].load.load(Ordering::Acquire) >= cap);
            match position {
                Some(i) if st.live() > function.config.min_capacity => {
                    let sandbox = st.idle.remove(i);
                    st.forget_idle(&sandbox);
                    st.destroying += 1;
                    function.publish(&st);
                    Some(sandbox)
                }
                _ => None,
            }
        };
        if let Some(sandbox) = victim {
            tracing::debug!(function = %function.name, sandbox = %sandbox.id, "evicted to make room");
            self.destroy_later(function, sandbox.id, sandbox.runtime);
        }
    }

    /// True when a listed sandbox belongs to this pool.
    pub(crate) fn owns(&self, info: &SandboxInfo) -> bool {
        match &self.env {
            Some(env) => info.labels.get("esb.env") == Some(env),
            None => self
                .functions
                .read()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .contains_key(info.function_name.as_str()),
        }
    }
}

/// A sandbox as the pool tracks it.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub id: SandboxId,
    pub runtime: usize,
    pub last_used: Option<Instant>,
    pub paused: bool,
    /// Created for a waiting request and not yet invoked.
    pub cold: bool,
}

impl Default for Sandbox {
    /// An empty placeholder left in a lease whose sandbox was taken out.
    fn default() -> Self {
        Self {
            id: SandboxId::new(String::new()),
            runtime: 0,
            last_used: None,
            paused: false,
            cold: false,
        }
    }
}

impl Sandbox {
    pub(crate) fn last_used(&self) -> Instant {
        // Every pooled sandbox gets a time when it is admitted.
        self.last_used.unwrap_or_else(Instant::now)
    }
}

pub(crate) struct Known {
    pub runtime: usize,
    pub created: Instant,
}

struct Waiter {
    id: u64,
    tx: oneshot::Sender<Grant>,
}

/// What a waiter receives.
pub(crate) enum Grant {
    Sandbox(Lease),
    Slot(Slot),
    Reject(PoolError),
}

pub(crate) struct State {
    /// Idle sandboxes ordered by last use; the most recently used is last.
    pub idle: Vec<Sandbox>,
    pub paused_idle: usize,
    pub leased: usize,
    pub creating: usize,
    pub destroying: usize,
    waiters: VecDeque<Waiter>,
    next_waiter: u64,
    pub known: HashMap<SandboxId, Known>,
    /// Leased sandboxes found gone by the janitor: destroyed when released.
    pub lost: HashSet<SandboxId>,
    pub breaker: Breaker,
}

impl State {
    pub(crate) fn total(&self) -> usize {
        self.idle.len() + self.leased + self.creating + self.destroying
    }

    /// Sandboxes that are or will be usable.
    pub(crate) fn live(&self) -> usize {
        self.idle.len() + self.leased + self.creating
    }

    pub(crate) fn forget_idle(&mut self, sandbox: &Sandbox) {
        self.known.remove(&sandbox.id);
        if sandbox.paused {
            self.paused_idle -= 1;
        }
    }

    fn insert_idle(&mut self, sandbox: Sandbox) {
        if sandbox.paused {
            self.paused_idle += 1;
        }
        let at = sandbox.last_used();
        let position = self.idle.partition_point(|s| s.last_used() <= at);
        self.idle.insert(position, sandbox);
    }

    fn drain_waiters(&mut self) -> Vec<Waiter> {
        self.waiters.drain(..).collect()
    }
}

/// Offers a grant to the waiters in FIFO order; gives it back if none takes it.
fn offer(waiters: &mut VecDeque<Waiter>, mut grant: Grant) -> Option<Grant> {
    while let Some(waiter) = waiters.pop_front() {
        match waiter.tx.send(grant) {
            Ok(()) => return None,
            Err(back) => grant = back,
        }
    }
    Some(grant)
}

pub(crate) struct FunctionPool {
    pub name: Arc<str>,
    pub config: FunctionPoolConfig,
    state: Mutex<State>,
    pub metrics: FunctionMetrics,
}

impl FunctionPool {
    fn new(config: FunctionPoolConfig, breaker: crate::BreakerConfig) -> Self {
        let metrics = FunctionMetrics::new(config.name());
        let pool = Self {
            name: Arc::from(config.name()),
            config,
            state: Mutex::new(State {
                idle: Vec::new(),
                paused_idle: 0,
                leased: 0,
                creating: 0,
                destroying: 0,
                waiters: VecDeque::new(),
                next_waiter: 0,
                known: HashMap::new(),
                lost: HashSet::new(),
                breaker: Breaker::new(breaker),
            }),
            metrics,
        };
        pool.metrics.breaker.set(BreakerState::Closed.gauge_value());
        pool
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(crate) fn publish(&self, st: &State) {
        let m = &self.metrics;
        m.idle.set((st.idle.len() - st.paused_idle) as f64);
        m.paused.set(st.paused_idle as f64);
        m.busy.set(st.leased as f64);
        m.creating.set(st.creating as f64);
        m.destroying.set(st.destroying as f64);
        m.queue_depth.set(st.waiters.len() as f64);
    }

    fn stats(&self) -> FunctionStats {
        let st = self.lock();
        FunctionStats {
            idle: st.idle.len() - st.paused_idle,
            paused: st.paused_idle,
            busy: st.leased,
            creating: st.creating,
            destroying: st.destroying,
            waiting: st.waiters.len(),
            breaker: st.breaker.state(),
        }
    }

    fn lease(self: &Arc<Self>, shared: &Arc<Shared>, sandbox: Sandbox) -> Lease {
        Lease {
            shared: Arc::clone(shared),
            function: Arc::clone(self),
            sandbox,
            live: true,
            report: Report::default(),
        }
    }

    fn slot(self: &Arc<Self>, shared: &Arc<Shared>, runtime: usize, on_demand: bool) -> Slot {
        Slot {
            shared: Arc::clone(shared),
            function: Arc::clone(self),
            runtime,
            on_demand,
            armed: true,
        }
    }

    /// One step of an acquire, under the lock.
    fn try_acquire(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        admit: bool,
    ) -> Result<(Step, bool), PoolError> {
        let mut st = self.lock();
        let mut probe = false;
        if admit && !st.breaker.is_closed() {
            match st.breaker.admit(Instant::now()) {
                Admit::Pass => {}
                Admit::Probe => probe = true,
                Admit::Reject => {
                    self.metrics.breaker.set(st.breaker.state().gauge_value());
                    return Err(PoolError::CircuitOpen {
                        function: self.name.to_string(),
                    });
                }
            }
            self.metrics.breaker.set(st.breaker.state().gauge_value());
        }
        if st.waiters.is_empty() {
            if let Some(sandbox) = st.idle.pop() {
                if sandbox.paused {
                    st.paused_idle -= 1;
                }
                st.leased += 1;
                self.publish(&st);
                drop(st);
                return Ok((Step::Ready(self.lease(shared, sandbox)), probe));
            }
            if st.total() < self.config.max_capacity {
                match shared.reserve_runtime() {
                    Ok(runtime) => {
                        st.creating += 1;
                        self.publish(&st);
                        drop(st);
                        return Ok((Step::Create(self.slot(shared, runtime, true)), probe));
                    }
                    Err(Reserve::NoHealthy) => {
                        if probe {
                            st.breaker.abandon_probe();
                        }
                        return Err(PoolError::NoCapacity {
                            function: self.name.to_string(),
                        });
                    }
                    Err(Reserve::HostFull) => {
                        let queued = self.enqueue(&mut st);
                        drop(st);
                        return Ok((Step::Evict(queued), probe));
                    }
                }
            }
        }
        let queued = self.enqueue(&mut st);
        Ok((Step::Wait(queued), probe))
    }

    fn enqueue(self: &Arc<Self>, st: &mut State) -> Queued {
        let (tx, rx) = oneshot::channel();
        let id = st.next_waiter;
        st.next_waiter += 1;
        st.waiters.push_back(Waiter { id, tx });
        self.publish(st);
        Queued {
            function: Arc::clone(self),
            id,
            rx,
            done: false,
        }
    }

    /// Gives creation slots to waiters while there is room.
    pub(crate) fn grant_slots(self: &Arc<Self>, shared: &Arc<Shared>) {
        let mut st = self.lock();
        while !st.waiters.is_empty() && st.total() < self.config.max_capacity {
            let Ok(runtime) = shared.reserve_runtime() else {
                break;
            };
            st.creating += 1;
            let slot = self.slot(shared, runtime, true);
            if let Some(Grant::Slot(mut slot)) = offer(&mut st.waiters, Grant::Slot(slot)) {
                slot.armed = false;
                st.creating -= 1;
                shared.unreserve(runtime);
            }
        }
        self.publish(&st);
    }

    /// Puts a released sandbox back: to the first waiter, to the idle list, or away.
    fn release(self: &Arc<Self>, shared: &Arc<Shared>, mut sandbox: Sandbox, report: Report) {
        let now = Instant::now();
        let runtime_healthy = shared.runtimes[sandbox.runtime]
            .healthy
            .load(Ordering::Acquire);
        let mut rejected = Vec::new();
        let mut freed = false;
        {
            let mut st = self.lock();
            match report.breaker {
                Some(true) => st.breaker.success(),
                Some(false) if st.breaker.failure(now) => {
                    tracing::warn!(function = %self.name, "circuit breaker opened");
                    rejected = st.drain_waiters();
                }
                Some(false) => {}
                None if report.probe => st.breaker.abandon_probe(),
                None => {}
            }
            self.metrics.breaker.set(st.breaker.state().gauge_value());
            st.leased -= 1;
            let lost = !st.lost.is_empty() && st.lost.remove(&sandbox.id);
            let closed = shared.closed.load(Ordering::Acquire);
            if report.discard || lost || closed || !runtime_healthy || report.in_flight {
                st.known.remove(&sandbox.id);
                if report.discard || lost || report.in_flight {
                    self.metrics.lost.increment(1);
                }
                if runtime_healthy {
                    st.destroying += 1;
                    self.publish(&st);
                    drop(st);
                    shared.destroy_later(Arc::clone(self), sandbox.id, sandbox.runtime);
                } else {
                    self.publish(&st);
                    drop(st);
                    shared.unreserve(sandbox.runtime);
                    freed = true;
                }
            } else {
                if report.used {
                    sandbox.last_used = Some(now);
                    sandbox.cold = false;
                }
                let lease = self.lease(shared, sandbox);
                st.leased += 1;
                if let Some(Grant::Sandbox(lease)) = offer(&mut st.waiters, Grant::Sandbox(lease)) {
                    st.leased -= 1;
                    let sandbox = lease.disarm();
                    st.insert_idle(sandbox);
                }
                self.publish(&st);
            }
        }
        for waiter in rejected {
            let _ = waiter.tx.send(Grant::Reject(PoolError::CircuitOpen {
                function: self.name.to_string(),
            }));
        }
        if freed {
            shared.wake_waiters();
        }
    }

    /// A new sandbox exists: lease it to whoever asked for it.
    fn admit(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        runtime: usize,
        info: SandboxInfo,
        on_demand: bool,
    ) -> Lease {
        let now = Instant::now();
        {
            let mut st = self.lock();
            st.creating -= 1;
            st.leased += 1;
            st.known.insert(
                info.id.clone(),
                Known {
                    runtime,
                    created: now,
                },
            );
            self.publish(&st);
        }
        if on_demand {
            self.metrics.cold_starts.increment(1);
        }
        self.lease(
            shared,
            Sandbox {
                id: info.id,
                runtime,
                last_used: Some(now),
                paused: false,
                cold: on_demand,
            },
        )
    }

    fn create_failed(self: &Arc<Self>, shared: &Arc<Shared>, runtime: usize, err: &RuntimeError) {
        tracing::warn!(function = %self.name, %err, "sandbox creation failed");
        self.metrics.create_failures.increment(1);
        let rejected = {
            let mut st = self.lock();
            st.creating -= 1;
            let opened = st.breaker.failure(Instant::now());
            self.metrics.breaker.set(st.breaker.state().gauge_value());
            let rejected = if opened {
                tracing::warn!(function = %self.name, "circuit breaker opened");
                st.drain_waiters()
            } else {
                Vec::new()
            };
            self.publish(&st);
            rejected
        };
        shared.unreserve(runtime);
        for waiter in rejected {
            let _ = waiter.tx.send(Grant::Reject(PoolError::CircuitOpen {
                function: self.name.to_string(),
            }));
        }
        if matches!(err, RuntimeError::Unavailable(_)) {
            shared.mark_unhealthy(runtime);
        }
        shared.wake_waiters();
    }

    pub(crate) fn destroyed(self: &Arc<Self>, shared: &Arc<Shared>, runtime: usize) {
        {
            let mut st = self.lock();
            st.destroying -= 1;
            self.publish(&st);
        }
        shared.unreserve(runtime);
        shared.wake_waiters();
    }

    /// Creates sandboxes in the background up to `min_capacity`.
    pub(crate) fn ensure_min(self: &Arc<Self>, shared: &Arc<Shared>) {
        if shared.closed.load(Ordering::Acquire) {
            return;
        }
        let slots = {
            let mut st = self.lock();
            if !st.breaker.is_closed() {
                return;
            }
            let deficit = self.config.min_capacity.saturating_sub(st.live());
            let room = self.config.max_capacity.saturating_sub(st.total());
            let mut slots = Vec::new();
            for _ in 0..deficit.min(room) {
                let Ok(runtime) = shared.reserve_runtime() else {
                    break;
                };
                st.creating += 1;
                slots.push(self.slot(shared, runtime, false));
            }
            self.publish(&st);
            slots
        };
        for slot in slots {
            shared.handle.spawn(async move {
                // The new sandbox goes to a waiter or the idle list when its lease drops.
                let _ = slot.create().await;
            });
        }
    }

    /// Leases idle sandboxes to the janitor (they count as busy until released).
    pub(crate) fn take_idle(
        self: &Arc<Self>,
        shared: &Arc<Shared>,
        mut pick: impl FnMut(&Sandbox) -> bool,
    ) -> Vec<Lease> {
        let taken = {
            let mut st = self.lock();
            let mut taken = Vec::new();
            let mut kept = Vec::with_capacity(st.idle.len());
            for sandbox in std::mem::take(&mut st.idle) {
                if pick(&sandbox) {
                    if sandbox.paused {
                        st.paused_idle -= 1;
                    }
                    taken.push(sandbox);
                } else {
                    kept.push(sandbox);
                }
            }
            st.idle = kept;
            st.leased += taken.len();
            self.publish(&st);
            taken
        };
        taken
            .into_iter()
            .map(|sandbox| self.lease(shared, sandbox))
            .collect()
    }

    /// Destroys idle sandboxes unused for `idle_timeout`, least recently used first, down to `min_capacity`.
    pub(crate) fn expire_idle(self: &Arc<Self>, shared: &Arc<Shared>) {
        let now = Instant::now();
        let victims = {
            let mut st = self.lock();
            let mut victims = Vec::new();
            while st.live() > self.config.min_capacity
                && st
                    .idle
                    .first()
                    .is_some_and(|s| now.duration_since(s.last_used()) >= self.config.idle_timeout)
            {
                let sandbox = st.idle.remove(0);
                st.forget_idle(&sandbox);
                st.destroying += 1;
                victims.push(sandbox);
            }
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
            let vanished: Vec<SandboxId> = st
                .known
                .iter()
                .filter(|(id, k)| {
                    k.runtime == runtime
                        && k.created < listed_at
                        && !st.lost.contains(*id)
                        && gone(id)
                })
                .map(|(id, _)| id.clone())
                .collect();
            let mut victims = Vec::new();
            for id in vanished {
                tracing::warn!(function = %self.name, sandbox = %id, "sandbox vanished: dropped");
                self.metrics.lost.increment(1);
                if let Some(i) = st.idle.iter().position(|s| s.id == id) {
                    let sandbox = st.idle.remove(i);
                    st.forget_idle(&sandbox);
                    st.destroying += 1;
                    victims.push(sandbox);
                } else {
                    st.lost.insert(id);
                }
            }
            self.publish(&st);
            victims
        };
        for sandbox in victims {
            shared.destroy_later(Arc::clone(self), sandbox.id, sandbox.runtime);
        }
    }

    /// Ids of the sandboxes of this function on `runtime`.
    pub(crate) fn known_on(&self, runtime: usize) -> Vec<SandboxId> {
        self.lock()
            .known
            .iter()
            .filter(|(_, k)| k.runtime == runtime)
            .map(|(id, _)| id.clone())
            .collect()
    }
}

enum Step {
    Ready(Lease),
    Create(Slot),
    Wait(Queued),
    Evict(Queued),
}

/// A place in a function's queue; leaving it (timeout, cancellation) removes it.
struct Queued {
    function: Arc<FunctionPool>,
    id: u64,
    rx: oneshot::Receiver<Grant>,
    done: bool,
}

impl Queued {
    async fn wait(mut self, deadline: Instant, started: Instant) -> Result<Grant, PoolError> {
        let result = tokio::time::timeout_at(deadline, &mut self.rx).await;
        let grant = match result {
            Ok(Ok(grant)) => Ok(grant),
            Ok(Err(_)) => Err(PoolError::Shutdown),
            // A grant that raced with the deadline is still taken.
            Err(_) => self.rx.try_recv().map_err(|_| {
                self.function.metrics.throttles.increment(1);
                PoolError::Throttled {
                    function: self.function.name.to_string(),
                    waited: started.elapsed(),
                }
            }),
        };
        if grant.is_ok() {
            self.done = true;
            self.function
                .metrics
                .queue_wait
                .record(started.elapsed().as_secs_f64());
        }
        grant
    }
}

impl Drop for Queued {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut st = self.function.lock();
        if let Some(i) = st.waiters.iter().position(|w| w.id == self.id) {
            st.waiters.remove(i);
            self.function.publish(&st);
        }
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
    /// Creates the sandbox and leases it.
    pub(crate) async fn create(mut self) -> Result<Lease, PoolError> {
        let runtime = Arc::clone(&self.shared.runtimes[self.runtime].runtime);
        let result = runtime.create(self.function.config.spec.clone()).await;
        self.armed = false;
        match result {
            Ok(info) => Ok(self
                .function
                .admit(&self.shared, self.runtime, info, self.on_demand)),
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
        if !self.armed {
            return;
        }
        {
            let mut st = self.function.lock();
            st.creating -= 1;
            self.function.publish(&st);
        }
        self.shared.unreserve(self.runtime);
        self.shared.wake_waiters();
    }
}

/// What happened to a leased sandbox, applied when it is released.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Report {
    /// It was invoked: its idle time restarts.
    pub used: bool,
    /// It must be destroyed.
    pub discard: bool,
    /// Outcome for the breaker: success, infrastructure failure, or nothing to say.
    pub breaker: Option<bool>,
    /// This lease is the half-open probe.
    pub probe: bool,
    /// An invocation was in flight when the lease was dropped.
    pub in_flight: bool,
}

/// One sandbox leased for one invocation; dropping it returns the sandbox to the pool.
///
/// Dropping a lease while [`Lease::invoke`] is in flight destroys the sandbox, since its
/// state is unknown; [`Pool::invoke`] runs invocations in their own task to avoid that.
pub struct Lease {
    shared: Arc<Shared>,
    function: Arc<FunctionPool>,
    sandbox: Sandbox,
    live: bool,
    pub(crate) report: Report,
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
        &self.shared.runtimes[self.sandbox.runtime].runtime
    }

    /// Runs one invocation on the sandbox and records its outcome.
    pub async fn invoke(&mut self, request: InvokeRequest) -> Result<InvokeResponse, PoolError> {
        let runtime = Arc::clone(self.runtime());
        self.report.in_flight = true;
        let result = runtime.invoke(&self.sandbox.id, request).await;
        self.report.in_flight = false;
        self.record(&result);
        result.map_err(PoolError::Runtime)
    }

    /// Records the outcome of an invocation run on this sandbox by other means.
    pub fn record(&mut self, result: &Result<InvokeResponse, RuntimeError>) {
        self.report.used = true;
        match result {
            Ok(_) => self.report.breaker = Some(true),
            Err(err) => {
                if err.is_sandbox_fatal()
                    || matches!(
                        err,
                        RuntimeError::Unavailable(_)
                            | RuntimeError::Busy(_)
                            | RuntimeError::Paused(_)
                    )
                {
                    self.report.discard = true;
                }
                if matches!(err, RuntimeError::Unavailable(_)) {
                    self.shared.mark_unhealthy(self.sandbox.runtime);
                }
                if is_infrastructure_failure(err) {
                    self.report.breaker = Some(false);
                }
            }
        }
    }

    /// Destroys the sandbox instead of returning it to the pool.
    pub fn discard(mut self) {
        self.report.discard = true;
    }

    /// Thaws a frozen sandbox; a sandbox that cannot be thawed is destroyed.
    async fn ensure_running(mut self) -> Option<Lease> {
        if !self.sandbox.paused {
            return Some(self);
        }
        match self.runtime().resume(&self.sandbox.id).await {
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

    pub(crate) fn sandbox_mut(&mut self) -> &mut Sandbox {
        &mut self.sandbox
    }

    /// Takes the sandbox out without releasing it (the caller accounts for it).
    fn disarm(mut self) -> Sandbox {
        self.live = false;
        std::mem::take(&mut self.sandbox)
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if self.live {
            self.live = false;
            let sandbox = std::mem::take(&mut self.sandbox);
            self.function.release(&self.shared, sandbox, self.report);
        }
    }
}

/// Errors that say the function's sandboxes cannot run, as opposed to the function's own failures.
fn is_infrastructure_failure(err: &RuntimeError) -> bool {
    matches!(
        err,
        RuntimeError::InitFailed { .. }
            | RuntimeError::InitTimeout { .. }
            | RuntimeError::SandboxLost { .. }
            | RuntimeError::Unavailable(_)
            | RuntimeError::Backend(_)
            | RuntimeError::Io(_)
            | RuntimeError::NotFound(_)
    )
}

/// Abandons the half-open probe if the acquire ends without a lease.
struct ProbeGuard {
    function: Option<Arc<FunctionPool>>,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if let Some(function) = self.function.take() {
            function.lock().breaker.abandon_probe();
        }
    }
}

impl Pool {
    /// A pool over these runtimes; starts the janitor and the `min_capacity` sandboxes.
    ///
    /// Must be called inside a Tokio runtime.
    pub fn new(config: PoolConfig, runtimes: Vec<Arc<dyn Runtime>>) -> Result<Self, PoolError> {
        config.validate()?;
        if runtimes.is_empty() {
            return Err(PoolError::InvalidConfig {
                function: String::new(),
                field: "runtimes",
                reason: "a pool needs at least one runtime".into(),
            });
        }
        let handle = Handle::try_current().map_err(|_| PoolError::NoTokio)?;
        let mut functions = HashMap::new();
        for function in config.functions {
            let name: Arc<str> = Arc::from(function.name());
            if functions.contains_key(&name) {
                return Err(PoolError::AlreadyRegistered(name.to_string()));
            }
            functions.insert(name, Arc::new(FunctionPool::new(function, config.breaker)));
        }
        let shared = Arc::new(Shared {
            host_cap: config.host_cap,
            janitor_interval: config.janitor_interval,
            orphan_grace: config.orphan_grace,
            breaker: config.breaker,
            env: config.env,
            runtimes: runtimes
                .into_iter()
                .map(|runtime| RuntimeSlot {
                    pausable: runtime.capabilities().pause,
                    runtime,
                    healthy: AtomicBool::new(true),
                    load: AtomicUsize::new(0),
                })
                .collect(),
            functions: RwLock::new(functions),
            handle,
            closed: AtomicBool::new(false),
        });
        for function in shared.snapshot() {
            function.ensure_min(&shared);
        }
        shared.handle.spawn(janitor::run(
            Arc::downgrade(&shared),
            shared.janitor_interval,
        ));
        Ok(Self { shared })
    }

    /// Adds a function to the pool and starts its `min_capacity` sandboxes.
    pub fn register(&self, config: FunctionPoolConfig) -> Result<(), PoolError> {
        config.validate()?;
        let function = {
            let mut functions = self
                .shared
                .functions
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            if functions.contains_key(config.name()) {
                return Err(PoolError::AlreadyRegistered(config.name().to_owned()));
            }
            let function = Arc::new(FunctionPool::new(config, self.shared.breaker));
            functions.insert(Arc::clone(&function.name), Arc::clone(&function));
            function
        };
        function.ensure_min(&self.shared);
        Ok(())
    }

    /// The names of the pooled functions.
    pub fn functions(&self) -> Vec<String> {
        self.shared
            .snapshot()
            .iter()
            .map(|f| f.name.to_string())
            .collect()
    }

    /// A snapshot of one function's pool.
    pub fn stats(&self, function: &str) -> Result<FunctionStats, PoolError> {
        Ok(self.shared.function(function)?.stats())
    }

    /// Leases a sandbox of `function`: a warm one, a new one, or one freed within `acquire_timeout`.
    pub async fn acquire(&self, function: &str) -> Result<Lease, PoolError> {
        if self.shared.closed.load(Ordering::Acquire) {
            return Err(PoolError::Shutdown);
        }
        let function = self.shared.function(function)?;
        let started = Instant::now();
        let deadline = started + function.config.acquire_timeout;
        let mut probe = ProbeGuard { function: None };
        let mut admit = true;
        loop {
            let (step, is_probe) = function.try_acquire(&self.shared, admit)?;
            if is_probe {
                probe.function = Some(Arc::clone(&function));
            }
            admit = false;
            let lease = match step {
                Step::Ready(lease) => lease,
                Step::Create(slot) => self.create(slot).await?,
                Step::Wait(queued) => self.granted(queued.wait(deadline, started).await?).await?,
                Step::Evict(queued) => {
                    self.shared.evict_for(&function);
                    self.granted(queued.wait(deadline, started).await?).await?
                }
            };
            if let Some(mut lease) = lease.ensure_running().await {
                lease.report.probe = probe.function.take().is_some();
                return Ok(lease);
            }
        }
    }

    async fn granted(&self, grant: Grant) -> Result<Lease, PoolError> {
        match grant {
            Grant::Sandbox(lease) => Ok(lease),
            Grant::Slot(slot) => self.create(slot).await,
            Grant::Reject(err) => Err(err),
        }
    }

    /// Creates a sandbox in its own task, so that it reaches the pool even if the caller leaves.
    async fn create(&self, slot: Slot) -> Result<Lease, PoolError> {
        let function = slot.function.name.to_string();
        let (tx, rx) = oneshot::channel();
        self.shared.handle.spawn(async move {
            let result = slot.create().await;
            // If the caller left, the lease comes back here and its drop returns it to the pool.
            drop(tx.send(result));
        });
        rx.await.map_err(|_| PoolError::Aborted {
            function,
            reason: "the sandbox creation task ended without an answer".into(),
        })?
    }

    /// Runs one invocation on a leased sandbox; the invocation finishes even if the caller leaves.
    pub async fn invoke(&self, invocation: Invocation) -> Result<PoolResponse, PoolError> {
        let lease = self.acquire(&invocation.function).await?;
        crate::service::run_on_lease(lease, crate::service::RuntimeInvoker, invocation).await
    }

    /// Runs the janitor once now (it also runs every `janitor_interval`).
    pub async fn run_janitor(&self) {
        janitor::sweep(&self.shared).await;
    }

    /// Stops the pool: rejects new and queued requests and destroys idle sandboxes; leased
    /// ones are destroyed when released.
    pub async fn shutdown(&self) {
        self.shared.closed.store(true, Ordering::Release);
        let mut pending = Vec::new();
        for function in self.shared.snapshot() {
            let (rejected, victims) = {
                let mut st = function.lock();
                let rejected = st.drain_waiters();
                let victims: Vec<Sandbox> = std::mem::take(&mut st.idle);
                st.paused_idle = 0;
                for sandbox in &victims {
                    st.known.remove(&sandbox.id);
                }
                st.destroying += victims.len();
                function.publish(&st);
                (rejected, victims)
            };
            for waiter in rejected {
                let _ = waiter.tx.send(Grant::Reject(PoolError::Shutdown));
            }
            for sandbox in victims {
                let shared = Arc::clone(&self.shared);
                let function = Arc::clone(&function);
                pending.push(async move {
                    let runtime = &shared.runtimes[sandbox.runtime].runtime;
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
