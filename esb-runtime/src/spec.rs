//! What a sandbox is made from and what it looks like once made.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// How an invocation reaches the function inside a sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum InvokeMode {
    /// The runtime serves the Lambda Runtime API and the function polls it (as AWS Lambda does).
    #[default]
    RuntimeApi,
    /// The image runs the Runtime Interface Emulator on port 8080.
    Rie,
}

impl InvokeMode {
    /// Every mode, in the order configuration errors list them.
    pub const ALL: [InvokeMode; 2] = [InvokeMode::RuntimeApi, InvokeMode::Rie];

    /// The name configuration files use: `runtime-api` or `rie`.
    pub const fn as_str(self) -> &'static str {
        match self {
            InvokeMode::RuntimeApi => "runtime-api",
            InvokeMode::Rie => "rie",
        }
    }

    /// The mode named `name` in configuration files (`runtime-api`, `rie`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|mode| mode.as_str() == name)
    }
}

impl fmt::Display for InvokeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything needed to create one sandbox of a function.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxSpec {
    /// The function's name, as in `functions.yml`.
    pub function_name: String,
    /// OCI image reference (containerd backend).
    pub image: Option<String>,
    /// Command line (process backend; overrides the image entrypoint on containerd).
    pub command: Option<Vec<String>>,
    /// The function's own environment, applied after the Lambda variables.
    pub env: BTreeMap<String, String>,
    /// Memory size in MB (`AWS_LAMBDA_FUNCTION_MEMORY_SIZE`, and the limit where enforced).
    pub memory_mb: u32,
    /// Maximum duration of one invocation.
    pub timeout: Duration,
    /// How invocations reach the function.
    pub invoke_mode: InvokeMode,
    /// Labels the sandbox carries, listed back in [`SandboxInfo::labels`] (e.g. its owner).
    pub labels: BTreeMap<String, String>,
    /// Host directories bind-mounted into the sandbox (containerd backend): a zip
    /// function's code at `/var/task` and its merged layers at `/opt`.
    pub mounts: Vec<BindMount>,
}

/// A host directory bind-mounted into a sandbox.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BindMount {
    /// The host directory (absolute).
    pub source: std::path::PathBuf,
    /// Where it appears in the sandbox (absolute).
    pub destination: String,
    /// Whether the sandbox may not write to it.
    pub read_only: bool,
}

impl BindMount {
    /// `source` mounted read-only at `destination`.
    pub fn read_only(
        source: impl Into<std::path::PathBuf>,
        destination: impl Into<String>,
    ) -> Self {
        Self {
            source: source.into(),
            destination: destination.into(),
            read_only: true,
        }
    }
}

impl SandboxSpec {
    /// A spec with Lambda's defaults: 128 MB, 3 s timeout, Runtime API mode.
    pub fn new(function_name: impl Into<String>) -> Self {
        Self {
            function_name: function_name.into(),
            image: None,
            command: None,
            env: BTreeMap::new(),
            memory_mb: 128,
            timeout: Duration::from_secs(3),
            invoke_mode: InvokeMode::RuntimeApi,
            labels: BTreeMap::new(),
            mounts: Vec::new(),
        }
    }

    /// Adds one label.
    pub fn label(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.labels.insert(key.into(), value.into());
        self
    }

    /// Sets the command line.
    pub fn command<I, S>(mut self, argv: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.command = Some(argv.into_iter().map(Into::into).collect());
        self
    }

    /// Sets the image reference.
    pub fn image(mut self, image: impl Into<String>) -> Self {
        self.image = Some(image.into());
        self
    }

    /// Adds one environment variable.
    pub fn env(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.env.insert(key.into(), value.into());
        self
    }

    /// Sets the memory size in MB.
    pub fn memory_mb(mut self, mb: u32) -> Self {
        self.memory_mb = mb;
        self
    }

    /// Sets the invocation timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets the invoke mode.
    pub fn invoke_mode(mut self, mode: InvokeMode) -> Self {
        self.invoke_mode = mode;
        self
    }

    /// Adds a bind mount.
    pub fn mount(mut self, mount: BindMount) -> Self {
        self.mounts.push(mount);
        self
    }
}

/// A sandbox's identifier, unique within one runtime.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct SandboxId(String);

impl SandboxId {
    /// Wraps an identifier.
    pub fn new(id: impl Into<String>) -> Self {
        Self(id.into())
    }

    /// The identifier as a string.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SandboxId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<String> for SandboxId {
    fn from(id: String) -> Self {
        Self(id)
    }
}

impl From<&str> for SandboxId {
    fn from(id: &str) -> Self {
        Self(id.to_owned())
    }
}

/// The normalized state of a sandbox, whatever the backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SandboxState {
    /// Running (idle or invoking).
    Running,
    /// Frozen: it uses no CPU and answers nothing until resumed.
    Paused,
    /// Its process or task has exited.
    Stopped,
    /// The backend could not tell.
    Unknown,
}

/// A sandbox as a runtime lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SandboxInfo {
    /// Its identifier.
    pub id: SandboxId,
    /// The function it runs.
    pub function_name: String,
    /// Its state now.
    pub state: SandboxState,
    /// When it was created.
    pub created_at: SystemTime,
    /// Backend labels (containerd labels; empty elsewhere).
    pub labels: BTreeMap<String, String>,
}

/// Resource usage of one sandbox.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SandboxMetrics {
    /// Memory in use now, in bytes.
    pub memory_current_bytes: u64,
    /// The most memory used so far, in bytes.
    pub memory_max_bytes: u64,
    /// The memory limit, in bytes (0 when none is enforced).
    pub memory_limit_bytes: u64,
    /// How many times the sandbox hit its memory limit and was OOM-killed.
    pub oom_events: u64,
    /// CPU time used, in nanoseconds.
    pub cpu_usage_ns: u64,
    /// Processes or threads in the sandbox.
    pub pids: u32,
}

/// What a backend can do.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// Name of the backend (`process`, `containerd`, `remote`).
    pub backend: &'static str,
    /// Pause and resume are supported.
    pub pause: bool,
    /// Sandboxes can be made from OCI images.
    pub images: bool,
    /// Sandboxes can be made from a command line.
    pub commands: bool,
    /// Metrics are reported.
    pub metrics: bool,
    /// Sandboxes get their own network.
    pub network: bool,
}

impl Capabilities {
    /// A backend named `backend` that can do nothing yet; the setters add what it can.
    pub const fn new(backend: &'static str) -> Self {
        Self {
            backend,
            pause: false,
            images: false,
            commands: false,
            metrics: false,
            network: false,
        }
    }

    /// Sets whether pause and resume are supported.
    pub const fn pause(mut self, yes: bool) -> Self {
        self.pause = yes;
        self
    }

    /// Sets whether sandboxes can be made from OCI images.
    pub const fn images(mut self, yes: bool) -> Self {
        self.images = yes;
        self
    }

    /// Sets whether sandboxes can be made from a command line.
    pub const fn commands(mut self, yes: bool) -> Self {
        self.commands = yes;
        self
    }

    /// Sets whether metrics are reported.
    pub const fn metrics(mut self, yes: bool) -> Self {
        self.metrics = yes;
        self
    }

    /// Sets whether sandboxes get their own network.
    pub const fn network(mut self, yes: bool) -> Self {
        self.network = yes;
        self
    }
}

/// How much a runtime may hold at once, as its operator limited it (`None`: no limit).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capacity {
    /// Sandboxes at most.
    pub max_sandboxes: Option<u32>,
    /// The sum of the sandboxes' `memory_size` (MB) at most.
    pub memory_budget_mb: Option<u64>,
}

impl Capacity {
    /// At most `max` sandboxes.
    pub const fn max_sandboxes(mut self, max: Option<u32>) -> Self {
        self.max_sandboxes = max;
        self
    }

    /// At most `mb` of sandbox memory in all.
    pub const fn memory_budget_mb(mut self, mb: Option<u64>) -> Self {
        self.memory_budget_mb = mb;
        self
    }

    /// The share of this capacity that `sandboxes` holding `memory_mb` in all use: the larger
    /// of the limited ratios; `None` when nothing is limited.
    pub fn utilisation(&self, sandboxes: u64, memory_mb: u64) -> Option<f64> {
        let by_count = self
            .max_sandboxes
            .filter(|max| *max > 0)
            .map(|max| sandboxes as f64 / f64::from(max));
        let by_memory = self
            .memory_budget_mb
            .filter(|budget| *budget > 0)
            .map(|budget| memory_mb as f64 / budget as f64);
        match (by_count, by_memory) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod capacity_tests {
    use super::Capacity;

    #[test]
    fn utilisation_is_the_larger_limited_ratio() {
        assert_eq!(Capacity::default().utilisation(5, 500), None);
        let count = Capacity::default().max_sandboxes(Some(4));
        assert_eq!(count.utilisation(1, 10_000), Some(0.25));
        let both = count.memory_budget_mb(Some(1000));
        assert_eq!(both.utilisation(1, 500), Some(0.5));
        assert_eq!(both.utilisation(3, 500), Some(0.75));
    }
}
