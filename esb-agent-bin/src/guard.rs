//! The agent's runtime as its gRPC service sees it: the backend with the agent's limits
//! (`max_sandboxes`, a memory budget) and its Prometheus metrics (invocations, errors,
//! durations, cold starts, sandboxes by state, gRPC requests by method).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use esb_runtime::{
    Capabilities, Capacity, Error, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId,
    SandboxInfo, SandboxMetrics, SandboxSpec, SandboxState,
};

/// How much an agent may run at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct AgentLimits {
    /// Sandboxes at most; `None` for no limit.
    pub max_sandboxes: Option<usize>,
    /// The sum of the sandboxes' `memory_size` (MB) at most; `None` for no limit.
    pub memory_budget_mb: Option<u64>,
}

impl AgentLimits {
    /// At most `max` sandboxes.
    pub fn max_sandboxes(mut self, max: Option<usize>) -> Self {
        self.max_sandboxes = max;
        self
    }

    /// At most `mb` of sandbox memory in all.
    pub fn memory_budget_mb(mut self, mb: Option<u64>) -> Self {
        self.memory_budget_mb = mb;
        self
    }
}

/// Upper bounds (seconds) of the invocation duration histogram.
const BUCKETS: [f64; 12] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Upper bounds (seconds) of the sandbox creation histogram (a cold start's container start).
const CREATE_BUCKETS: [f64; 11] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0];

/// The gRPC methods counted, in the order of `grpc` below.
const METHODS: [&str; 7] = [
    "CreateContainer",
    "InvokeWorker",
    "PauseContainer",
    "ResumeContainer",
    "DestroyContainer",
    "ListContainers",
    "GetContainerMetrics",
];

#[derive(Default)]
struct Counters {
    invocations: AtomicU64,
    errors: AtomicU64,
    cold_starts: AtomicU64,
    creates_refused: AtomicU64,
    duration_buckets: [AtomicU64; BUCKETS.len()],
    duration_count: AtomicU64,
    duration_sum_us: AtomicU64,
    create_buckets: [AtomicU64; CREATE_BUCKETS.len()],
    create_count: AtomicU64,
    create_sum_us: AtomicU64,
    grpc: [AtomicU64; METHODS.len()],
}

/// The backend behind the agent's limits and metrics.
pub struct GuardedRuntime {
    inner: Arc<dyn Runtime>,
    limits: AgentLimits,
    counters: Counters,
    /// Live sandboxes and their memory size (MB); those not yet invoked are cold.
    sandboxes: Mutex<HashMap<SandboxId, (u64, bool)>>,
}

impl GuardedRuntime {
    /// `inner` under `limits`.
    pub fn new(inner: Arc<dyn Runtime>, limits: AgentLimits) -> Self {
        Self {
            inner,
            limits,
            counters: Counters::default(),
            sandboxes: Mutex::new(HashMap::new()),
        }
    }

    fn count(&self, method: usize) {
        self.counters.grpc[method].fetch_add(1, Ordering::Relaxed);
    }

    fn sandboxes(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, (u64, bool)>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every series in Prometheus text (the sandboxes by state are listed from the backend).
    pub async fn render(&self) -> String {
        let c = &self.counters;
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        counter(
            "esb_agent_invocations_total",
            "Invocations run.",
            c.invocations.load(Ordering::Relaxed),
        );
        counter(
            "esb_agent_invocation_errors_total",
            "Invocations that failed in the runtime (timeouts, lost sandboxes, ...).",
            c.errors.load(Ordering::Relaxed),
        );
        counter(
            "esb_agent_cold_starts_total",
            "First invocations of a sandbox.",
            c.cold_starts.load(Ordering::Relaxed),
        );
        counter(
            "esb_agent_creates_refused_total",
            "Sandboxes refused by max_sandboxes or the memory budget.",
            c.creates_refused.load(Ordering::Relaxed),
        );
        let _ = writeln!(
            out,
            "# HELP esb_agent_invocation_duration_seconds Duration of invocations.\n# TYPE esb_agent_invocation_duration_seconds histogram"
        );
        for (le, bucket) in BUCKETS.iter().zip(&c.duration_buckets) {
            let _ = writeln!(
                out,
                "esb_agent_invocation_duration_seconds_bucket{{le=\"{le}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = c.duration_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "esb_agent_invocation_duration_seconds_bucket{{le=\"+Inf\"}} {count}\nesb_agent_invocation_duration_seconds_sum {}\nesb_agent_invocation_duration_seconds_count {count}",
            c.duration_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let _ = writeln!(
            out,
            "# HELP esb_agent_grpc_requests_total gRPC requests of the agent service, by method.\n# TYPE esb_agent_grpc_requests_total counter"
        );
        for (method, n) in METHODS.iter().zip(&c.grpc) {
            let _ = writeln!(
                out,
                "esb_agent_grpc_requests_total{{method=\"{method}\"}} {}",
                n.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(
            out,
            "# HELP esb_agent_cold_start_duration_seconds Time to create and start a sandbox.\n# TYPE esb_agent_cold_start_duration_seconds histogram"
        );
        for (le, bucket) in CREATE_BUCKETS.iter().zip(&c.create_buckets) {
            let _ = writeln!(
                out,
                "esb_agent_cold_start_duration_seconds_bucket{{le=\"{le}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let created = c.create_count.load(Ordering::Relaxed);
        let _ = writeln!(
            out,
            "esb_agent_cold_start_duration_seconds_bucket{{le=\"+Inf\"}} {created}\nesb_agent_cold_start_duration_seconds_sum {}\nesb_agent_cold_start_duration_seconds_count {created}",
            c.create_sum_us.load(Ordering::Relaxed) as f64 / 1e6
        );
        let (held, memory) = {
            let sandboxes = self.sandboxes();
            let memory: u64 = sandboxes.values().map(|(mb, _)| mb).sum();
            (sandboxes.len() as u64, memory)
        };
        let capacity = self.capacity();
        if let Some(max) = capacity.max_sandboxes {
            let _ = writeln!(
                out,
                "# HELP esb_agent_capacity_sandboxes The most sandboxes this agent runs (max_sandboxes).\n# TYPE esb_agent_capacity_sandboxes gauge\nesb_agent_capacity_sandboxes {max}"
            );
        }
        if let Some(budget) = capacity.memory_budget_mb {
            let _ = writeln!(
                out,
                "# HELP esb_agent_memory_budget_mb The sandbox memory this agent runs at most (MB).\n# TYPE esb_agent_memory_budget_mb gauge\nesb_agent_memory_budget_mb {budget}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP esb_agent_memory_reserved_mb The memory_size of the sandboxes held or being created (MB).\n# TYPE esb_agent_memory_reserved_mb gauge\nesb_agent_memory_reserved_mb {memory}"
        );
        if let Some(utilisation) = capacity.utilisation(held, memory) {
            let _ = writeln!(
                out,
                "# HELP esb_agent_utilisation Sandboxes held over capacity (the larger of count / max_sandboxes and memory / budget).\n# TYPE esb_agent_utilisation gauge\nesb_agent_utilisation {utilisation}"
            );
        }
        let mut states: [(SandboxState, u64); 4] = [
            (SandboxState::Running, 0),
            (SandboxState::Paused, 0),
            (SandboxState::Stopped, 0),
            (SandboxState::Unknown, 0),
        ];
        let listed = self.inner.list().await;
        if let Ok(listed) = &listed {
            for info in listed {
                if let Some(slot) = states.iter_mut().find(|(s, _)| *s == info.state) {
                    slot.1 += 1;
                }
            }
        }
        let _ = writeln!(
            out,
            "# HELP esb_agent_sandboxes Sandboxes by state.\n# TYPE esb_agent_sandboxes gauge"
        );
        for (state, n) in states {
            let state = format!("{state:?}").to_lowercase();
            let _ = writeln!(out, "esb_agent_sandboxes{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP esb_agent_up 1 when the backend answers.\n# TYPE esb_agent_up gauge\nesb_agent_up {}",
            u8::from(listed.is_ok())
        );
        out
    }

    /// True while the backend answers (a listing succeeds).
    pub async fn healthy(&self) -> bool {
        self.inner.list().await.is_ok()
    }

    /// Refuses a sandbox over the limits; reserves its room otherwise.
    fn admit(&self, spec: &SandboxSpec) -> Result<()> {
        let sandboxes = self.sandboxes();
        let count = sandboxes.len();
        let memory: u64 = sandboxes.values().map(|(mb, _)| mb).sum();
        let wanted = u64::from(spec.memory_mb);
        let refusal = if self.limits.max_sandboxes.is_some_and(|max| count >= max) {
            Some(format!(
                "this agent runs its maximum of {count} sandboxes (max_sandboxes)"
            ))
        } else if self
            .limits
            .memory_budget_mb
            .is_some_and(|budget| memory + wanted > budget)
        {
            Some(format!(
                "a sandbox of {wanted} MB is over this agent's memory budget ({memory} MB in use of {} MB)",
                self.limits.memory_budget_mb.unwrap_or(0)
            ))
        } else {
            None
        };
        match refusal {
            Some(reason) => {
                self.counters
                    .creates_refused
                    .fetch_add(1, Ordering::Relaxed);
                Err(Error::Backend(format!(
                    "cannot create a sandbox of function {}: {reason}",
                    spec.function_name
                )))
            }
            None => Ok(()),
        }
    }
}

#[tonic::async_trait]
impl Runtime for GuardedRuntime {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        self.count(0);
        self.admit(&spec)?;
        let memory = u64::from(spec.memory_mb);
        // The room is taken before the (slow) create, so that parallel creates cannot overshoot.
        let placeholder = SandboxId::from(format!("creating-{}", uuid_like()));
        self.sandboxes()
            .insert(placeholder.clone(), (memory, false));
        let started = Instant::now();
        let created = self.inner.create(spec).await;
        if created.is_ok() {
            let c = &self.counters;
            let seconds = started.elapsed().as_secs_f64();
            for (le, bucket) in CREATE_BUCKETS.iter().zip(&c.create_buckets) {
                if seconds <= *le {
                    bucket.fetch_add(1, Ordering::Relaxed);
                }
            }
            c.create_count.fetch_add(1, Ordering::Relaxed);
            c.create_sum_us.fetch_add(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
        let mut sandboxes = self.sandboxes();
        sandboxes.remove(&placeholder);
        if let Ok(info) = &created {
            sandboxes.insert(info.id.clone(), (memory, false));
        }
        created
    }

    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        self.count(1);
        let cold = self
            .sandboxes()
            .get_mut(id)
            .is_some_and(|(_, used)| !std::mem::replace(used, true));
        let started = Instant::now();
        let result = self.inner.invoke(id, request).await;
        let c = &self.counters;
        c.invocations.fetch_add(1, Ordering::Relaxed);
        if cold {
            c.cold_starts.fetch_add(1, Ordering::Relaxed);
        }
        if result.is_err() {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        let seconds = started.elapsed().as_secs_f64();
        for (le, bucket) in BUCKETS.iter().zip(&c.duration_buckets) {
            if seconds <= *le {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        c.duration_count.fetch_add(1, Ordering::Relaxed);
        c.duration_sum_us.fetch_add(
            u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        result
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.count(2);
        self.inner.pause(id).await
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.count(3);
        self.inner.resume(id).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.count(4);
        let result = self.inner.destroy(id).await;
        if result.is_ok() {
            self.sandboxes().remove(id);
        }
        result
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        self.count(5);
        let listed = self.inner.list().await?;
        // Sandboxes that are gone (exited, destroyed by another path) free their room.
        let live: std::collections::HashSet<&SandboxId> = listed
            .iter()
            .filter(|i| i.state != SandboxState::Stopped)
            .map(|i| &i.id)
            .collect();
        self.sandboxes()
            .retain(|id, _| id.as_str().starts_with("creating-") || live.contains(id));
        Ok(listed)
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        self.count(6);
        self.inner.metrics(id).await
    }

    fn capabilities(&self) -> Capabilities {
        self.inner.capabilities()
    }

    fn capacity(&self) -> Capacity {
        Capacity::default()
            .max_sandboxes(
                self.limits
                    .max_sandboxes
                    .map(|max| u32::try_from(max).unwrap_or(u32::MAX)),
            )
            .memory_budget_mb(self.limits.memory_budget_mb)
    }
}

/// A unique enough placeholder name.
fn uuid_like() -> String {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed).to_string()
}
