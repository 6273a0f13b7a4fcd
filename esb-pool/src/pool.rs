//! The public handle: [`Pool`] creates the shared state, starts the janitor, registers
//! functions, reports stats, and gives the advanced [`Pool::acquire`].

use std::collections::HashMap;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, RwLock};

use esb_runtime::{Capacity, Runtime, SandboxSpec};
use tokio::runtime::Handle;

use crate::accounting::FunctionStats;
use crate::config::{FunctionPoolConfig, PoolConfig};
use crate::error::PoolError;
use crate::invoke::{self, Invocation, PoolResponse, RuntimeInvoker};
use crate::janitor;
use crate::lease::{self, Lease};
use crate::placement::Placement;
use crate::state::Shared;

/// One runtime of a pool as [`Pool::runtimes`] reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct RuntimeStatus {
    /// Its index ([`Pool::add_runtime`]).
    pub index: usize,
    /// It answered last time it was asked.
    pub healthy: bool,
    /// It takes no new sandboxes ([`Pool::set_draining`]).
    pub draining: bool,
    /// This pool's sandboxes on it, including those being created or destroyed.
    pub sandboxes: usize,
}

/// How much of one runtime a pool uses.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RuntimeUsage {
    /// The runtime's name (an agent's endpoint).
    pub name: String,
    /// The runtime answers.
    pub healthy: bool,
    /// It takes no new sandboxes ([`Pool::set_draining`]).
    pub draining: bool,
    /// This pool's sandboxes on it, including those being created or destroyed.
    pub sandboxes: u64,
    /// The `memory_size` of this pool's sandboxes on it (MB).
    pub memory_mb: u64,
    /// The runtime's limits.
    pub capacity: Capacity,
}

impl RuntimeUsage {
    /// Sandboxes over capacity (0..1, above 1 past a limit); `None` for an unlimited runtime.
    pub fn utilisation(&self) -> Option<f64> {
        self.capacity.utilisation(self.sandboxes, self.memory_mb)
    }
}

/// A pool of sandboxes for several functions over one or more runtimes. Cheap to clone.
///
/// Invoke through it as a tower [`Service<Invocation>`](tower::Service) (see the crate docs);
/// [`Pool::acquire`] leases a sandbox for callers that drive it themselves.
#[derive(Clone)]
pub struct Pool {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("functions", &self.shared.snapshot().len())
            .field("runtimes", &self.shared.placement.len())
            .finish_non_exhaustive()
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
        let handle = Handle::try_current().map_err(PoolError::NoTokio)?;
        let shared = Arc::new(Shared {
            janitor_interval: config.janitor_interval,
            orphan_grace: config.orphan_grace,
            breaker: config.breaker,
            env: config.env,
            owner: config.owner,
            placement: Placement::new(runtimes, config.host_cap),
            functions: RwLock::new(HashMap::new()),
            handle,
            closed: AtomicBool::new(false),
            warmup: lease::Warmup::new(config.warmup_concurrency),
        });
        for function in config.functions {
            shared.insert(function)?;
        }
        for function in shared.snapshot() {
            lease::ensure_min(&shared, &function);
        }
        shared.handle.spawn(janitor::run(
            Arc::downgrade(&shared),
            shared.janitor_interval,
        ));
        Ok(Self { shared })
    }

    /// With [`PoolConfig::owner`]: lists every runtime now and adopts the sandboxes of this
    /// owner that the pool does not know (an earlier run's), so that they serve at once
    /// instead of after the janitor's next pass; returns how many were adopted.
    pub async fn adopt(&self) -> usize {
        let mut adopted = 0;
        for runtime in 0..self.shared.placement.len() {
            adopted += janitor::reconcile(&self.shared, runtime).await;
        }
        adopted
    }

    /// Adds a runtime (a host found while the pool runs) that new sandboxes may be placed
    /// on; returns its index, which names it in the other runtime methods.
    pub fn add_runtime(&self, runtime: Arc<dyn Runtime>) -> usize {
        self.shared.add_runtime(runtime)
    }

    /// Drains the runtime at `index` (a host that went away): no new sandboxes go to it,
    /// its idle sandboxes are destroyed now and its busy ones when their invocation ends.
    /// `false` takes it back. An unknown index is ignored.
    pub fn set_draining(&self, index: usize, draining: bool) {
        if index < self.shared.placement.len() {
            self.shared.set_draining(index, draining);
        }
    }

    /// Declares the runtime at `index` down (it stopped answering a health check): its
    /// invocations in flight end with [`esb_runtime::Error::Unavailable`], its sandboxes
    /// are dropped and new ones go elsewhere until [`Pool::runtime_up`]. An unknown index
    /// is ignored.
    pub fn runtime_down(&self, index: usize) {
        if index < self.shared.placement.len() {
            self.shared.runtime_down(index);
        }
    }

    /// Declares the runtime at `index` reachable again. An unknown index is ignored.
    pub fn runtime_up(&self, index: usize) {
        if index < self.shared.placement.len() {
            self.shared.runtime_up(index);
        }
    }

    /// The runtimes, in index order, with their state and load.
    pub fn runtimes(&self) -> Vec<RuntimeStatus> {
        let placement = &self.shared.placement;
        (0..placement.len())
            .map(|index| RuntimeStatus {
                index,
                healthy: placement.is_healthy(index),
                draining: placement.is_draining(index),
                sandboxes: placement.load(index),
            })
            .collect()
    }

    /// Adds a function to the pool and starts its `min_capacity` sandboxes.
    pub fn register(&self, config: FunctionPoolConfig) -> Result<(), PoolError> {
        config.validate()?;
        let function = self.shared.insert(config)?;
        lease::ensure_min(&self.shared, &function);
        Ok(())
    }

    /// Retires a function's sandboxes, as after a change of its code: idle ones are
    /// destroyed now, busy ones when their invocation ends; the next request gets a new
    /// sandbox. Returns how many idle sandboxes were destroyed.
    pub fn retire(&self, function: &str) -> Result<usize, PoolError> {
        let pool = self.shared.function(function)?;
        let count = pool.retire(&self.shared);
        lease::ensure_min(&self.shared, &pool);
        Ok(count)
    }

    /// Makes a function's new sandboxes from `spec` (new code, layers or environment) and
    /// retires the ones it has, as [`Pool::retire`] does. The function's name cannot change.
    pub fn replace_spec(&self, spec: SandboxSpec) -> Result<usize, PoolError> {
        let pool = self.shared.function(&spec.function_name)?;
        pool.set_spec(spec);
        let count = pool.retire(&self.shared);
        lease::ensure_min(&self.shared, &pool);
        Ok(count)
    }

    /// The names of the pooled functions.
    pub fn functions(&self) -> Vec<String> {
        self.shared
            .snapshot()
            .iter()
            .map(|f| f.name.to_string())
            .collect()
    }

    /// The config one function is pooled with (its scaling, e.g. `acquire_timeout`).
    pub fn function_config(&self, function: &str) -> Result<FunctionPoolConfig, PoolError> {
        let pool = self.shared.function(function)?;
        let mut config = pool.config.clone();
        config.spec = pool.spec();
        Ok(config)
    }

    /// A snapshot of one function's pool.
    pub fn stats(&self, function: &str) -> Result<FunctionStats, PoolError> {
        Ok(self.shared.function(function)?.stats())
    }

    /// Leases a sandbox of `function`: a warm one, a new one, or one freed within
    /// `acquire_timeout`. For advanced use; invocations normally go through the pool's service.
    pub async fn acquire(&self, function: &str) -> Result<Lease, PoolError> {
        lease::acquire(&self.shared, function).await
    }

    /// Runs one invocation on a leased sandbox; the invocation finishes even if the caller
    /// leaves. A shorthand for calling the pool as a [`Service<Invocation>`](tower::Service)
    /// (the same code path), for callers without tower.
    pub async fn invoke(&self, invocation: Invocation) -> Result<PoolResponse, PoolError> {
        invoke::serve(&self.shared, RuntimeInvoker, invocation).await
    }

    /// How much of each runtime this pool uses, in placement order.
    pub fn runtime_usage(&self) -> Vec<RuntimeUsage> {
        let placement = &self.shared.placement;
        let functions = self.shared.snapshot();
        (0..placement.len())
            .map(|index| {
                let runtime = placement.runtime(index);
                let memory_mb = functions
                    .iter()
                    .map(|f| f.known_on(index).len() as u64 * u64::from(f.spec().memory_mb))
                    .sum();
                RuntimeUsage {
                    name: runtime.name(),
                    healthy: placement.is_healthy(index),
                    draining: placement.is_draining(index),
                    sandboxes: placement.load(index) as u64,
                    memory_mb,
                    capacity: runtime.capacity(),
                }
            })
            .collect()
    }

    /// The per-runtime series (`esb_pool_agent_*`, see [`crate::metrics`]) of the runtimes
    /// the pool has now, in Prometheus text: append it to the recorder's.
    pub fn runtime_metrics(&self) -> String {
        crate::metrics::render_runtimes(&self.runtime_usage())
    }

    /// The runtime at `index` ([`Pool::runtimes`]), if there is one.
    pub fn runtime(&self, index: usize) -> Option<Arc<dyn Runtime>> {
        (index < self.shared.placement.len()).then(|| self.shared.placement.runtime(index))
    }

    /// Runs the janitor once now (it also runs every `janitor_interval`).
    pub async fn run_janitor(&self) {
        janitor::sweep(&self.shared).await;
    }

    /// Stops the pool: rejects new and queued requests and destroys idle sandboxes; leased
    /// ones are destroyed when released.
    pub async fn shutdown(&self) {
        self.shared.shutdown().await;
    }
}
