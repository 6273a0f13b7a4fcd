//! A sandbox's resource usage, read from its cgroup (v1 or v2).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::SandboxMetrics;

const ROOT: &str = "/sys/fs/cgroup";
/// How long a freeze or thaw may take before it is reported as failed.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(5);

/// The cgroup of one sandbox: `cgroups_path` as set in its OCI spec.
#[derive(Clone, Debug)]
pub(crate) struct Cgroup {
    path: String,
}

impl Cgroup {
    /// The cgroup at `path` (absolute, as in `linux.cgroupsPath`).
    pub(crate) fn new(path: impl Into<String>) -> Self {
        Self { path: path.into() }
    }

    fn unified() -> bool {
        Path::new(ROOT).join("cgroup.controllers").exists()
    }

    fn file(&self, controller: &str, name: &str) -> PathBuf {
        let rel = self.path.trim_start_matches('/');
        if Self::unified() {
            Path::new(ROOT).join(rel).join(name)
        } else {
            Path::new(ROOT).join(controller).join(rel).join(name)
        }
    }

    fn read_u64(&self, controller: &str, name: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.file(controller, name)).ok()?;
        let text = text.trim();
        if text == "max" {
            return Some(0);
        }
        text.parse().ok()
    }

    fn keyed(&self, controller: &str, name: &str, key: &str) -> Option<u64> {
        let text = std::fs::read_to_string(self.file(controller, name)).ok()?;
        text.lines().find_map(|line| {
            let (k, v) = line.split_once(' ')?;
            (k == key).then(|| v.trim().parse().ok()).flatten()
        })
    }

    /// How many times the OOM killer killed a process of this cgroup.
    pub(crate) fn oom_kills(&self) -> u64 {
        if Self::unified() {
            self.keyed("memory", "memory.events", "oom_kill")
        } else {
            self.keyed("memory", "memory.oom_control", "oom_kill")
        }
        .unwrap_or(0)
    }

    /// The most memory used so far, in bytes.
    pub(crate) fn memory_peak(&self) -> u64 {
        if Self::unified() {
            self.read_u64("memory", "memory.peak")
                .or_else(|| self.read_u64("memory", "memory.current"))
        } else {
            self.read_u64("memory", "memory.max_usage_in_bytes")
        }
        .unwrap_or(0)
    }

    /// Freezes (or thaws) every process of the cgroup through the kernel's freezer and
    /// waits until the kernel reports it done: `cgroup.freeze` and `cgroup.events` on
    /// cgroup v2, `freezer.state` on v1.
    pub(crate) async fn set_frozen(&self, frozen: bool) -> std::io::Result<()> {
        let unified = Self::unified();
        let (control, value) = match (unified, frozen) {
            (true, true) => ("cgroup.freeze", "1"),
            (true, false) => ("cgroup.freeze", "0"),
            (false, true) => ("freezer.state", "FROZEN"),
            (false, false) => ("freezer.state", "THAWED"),
        };
        let control = self.file("freezer", control);
        std::fs::write(&control, value).map_err(|err| {
            std::io::Error::new(err.kind(), format!("writing {}: {err}", control.display()))
        })?;
        let started = Instant::now();
        loop {
            if self.is_frozen()? == frozen {
                return Ok(());
            }
            if started.elapsed() > FREEZE_TIMEOUT {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!(
                        "{} did not become {value} within {FREEZE_TIMEOUT:?}",
                        control.display()
                    ),
                ));
            }
            tokio::task::yield_now().await;
        }
    }

    /// Whether the kernel reports the cgroup fully frozen.
    pub(crate) fn is_frozen(&self) -> std::io::Result<bool> {
        if Self::unified() {
            let events = std::fs::read_to_string(self.file("freezer", "cgroup.events"))?;
            Ok(events.lines().any(|line| line.trim() == "frozen 1"))
        } else {
            let state = std::fs::read_to_string(self.file("freezer", "freezer.state"))?;
            Ok(state.trim() == "FROZEN")
        }
    }

    /// Everything [`SandboxMetrics`] holds.
    pub(crate) fn metrics(&self) -> SandboxMetrics {
        let unified = Self::unified();
        let (current, limit, cpu_ns) = if unified {
            (
                self.read_u64("memory", "memory.current"),
                self.read_u64("memory", "memory.max"),
                self.keyed("cpu", "cpu.stat", "usage_usec")
                    .map(|us| us * 1000),
            )
        } else {
            (
                self.read_u64("memory", "memory.usage_in_bytes"),
                self.read_u64("memory", "memory.limit_in_bytes"),
                self.read_u64("cpuacct", "cpuacct.usage"),
            )
        };
        SandboxMetrics {
            memory_current_bytes: current.unwrap_or(0),
            memory_max_bytes: self.memory_peak(),
            memory_limit_bytes: limit.unwrap_or(0),
            oom_events: self.oom_kills(),
            cpu_usage_ns: cpu_ns.unwrap_or(0),
            pids: self
                .read_u64("pids", "pids.current")
                .and_then(|n| u32::try_from(n).ok())
                .unwrap_or(0),
        }
    }
}
