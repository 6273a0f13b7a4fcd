//! The `process` backend: each sandbox is a child process in its own process group, polling
//! its own Lambda Runtime API on 127.0.0.1. Needs no root and no containerd.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use nix::sched::CpuSet;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};

use crate::logs::{LogLine, LogSink, LogStream, TerminalLogSink};
use crate::runtime_api::{self, Broker, BrokerConfig};
use crate::{
    Capabilities, Error, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId, SandboxInfo,
    SandboxMetrics, SandboxSpec, SandboxState,
};

/// Settings of the process backend.
#[derive(Clone)]
pub struct ProcessConfig {
    /// `AWS_REGION` and the region in function ARNs.
    pub region: String,
    /// Account id in function ARNs.
    pub account_id: String,
    /// How long a sandbox's init may take before its first invocation fails.
    pub init_timeout: Duration,
    /// Working directory of the processes and `LAMBDA_TASK_ROOT`; the current directory when `None`.
    pub task_root: Option<PathBuf>,
    /// Variables of this process passed on to sandboxes (besides the Lambda ones).
    pub inherit_env: Vec<String>,
    /// Where function log lines and START/END/REPORT lines go.
    pub log_sink: Arc<dyn LogSink>,
    /// Pin each sandbox to as many CPUs as Lambda gives its memory size (one per 1,769 MB,
    /// at least one), chosen in turn among the CPUs this process may use.
    ///
    /// Besides sharing the machine fairly, this makes a function's runtime size its thread
    /// pool to its CPUs (tokio reads the affinity mask), as it does on Lambda or in a
    /// container with a CPU quota; a multi-threaded runtime on a small sandbox mostly pays
    /// for cross-thread wake-ups.
    pub pin_cpus: bool,
}

/// Memory that buys one vCPU on Lambda.
const MB_PER_VCPU: u32 = 1769;

impl std::fmt::Debug for ProcessConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessConfig")
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .field("init_timeout", &self.init_timeout)
            .field("task_root", &self.task_root)
            .field("inherit_env", &self.inherit_env)
            .field("pin_cpus", &self.pin_cpus)
            .finish_non_exhaustive()
    }
}

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            init_timeout: Duration::from_secs(10),
            task_root: None,
            inherit_env: ["PATH", "HOME", "LANG", "RUST_BACKTRACE"]
                .map(String::from)
                .to_vec(),
            log_sink: Arc::new(TerminalLogSink),
            pin_cpus: true,
        }
    }
}

struct Sandbox {
    info: SandboxInfo,
    spec: SandboxSpec,
    pgid: Pid,
    broker: Broker,
    paused: AtomicBool,
    exited: watch::Receiver<Option<String>>,
    stop_server: Mutex<Option<oneshot::Sender<()>>>,
    /// The leader's peak memory, for the REPORT line's `Max Memory Used`.
    peak: PeakMemory,
}

impl Sandbox {
    fn signal(&self, signal: Signal) -> Result<()> {
        if self.exited.borrow().is_some() {
            return Ok(());
        }
        match killpg(self.pgid, signal) {
            Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(err) => Err(Error::Io(std::io::Error::from(err))),
        }
    }

    /// Kills the whole group and waits until the leader is reaped.
    async fn kill(&self) {
        let _ = self.signal(Signal::SIGKILL);
        let mut exited = self.exited.clone();
        let _ = exited.wait_for(Option::is_some).await;
        if let Ok(mut stop) = self.stop_server.lock()
            && let Some(stop) = stop.take()
        {
            let _ = stop.send(());
        }
    }

    fn state(&self) -> SandboxState {
        if self.exited.borrow().is_some() {
            SandboxState::Stopped
        } else if self.paused.load(Ordering::Acquire) {
            SandboxState::Paused
        } else {
            SandboxState::Running
        }
    }
}

/// Runs sandboxes as child processes.
pub struct ProcessRuntime {
    config: ProcessConfig,
    sandboxes: Mutex<HashMap<SandboxId, Arc<Sandbox>>>,
    counter: AtomicU64,
    /// The CPUs this process may use, for [`ProcessConfig::pin_cpus`].
    cpus: Vec<usize>,
    next_cpu: AtomicU64,
}

impl std::fmt::Debug for ProcessRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessRuntime")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl ProcessRuntime {
    /// A runtime with these settings and no sandboxes.
    pub fn new(config: ProcessConfig) -> Self {
        let cpus = match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
            Ok(set) => (0..CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect(),
            Err(_) => Vec::new(),
        };
        Self {
            config,
            sandboxes: Mutex::new(HashMap::new()),
            counter: AtomicU64::new(0),
            cpus,
            next_cpu: AtomicU64::new(0),
        }
    }

    /// The CPUs a new sandbox of `memory_mb` is pinned to, or `None` to leave it unpinned.
    fn cpu_set(&self, memory_mb: u32) -> Option<CpuSet> {
        if !self.config.pin_cpus || self.cpus.is_empty() {
            return None;
        }
        let wanted = usize::try_from(memory_mb.div_ceil(MB_PER_VCPU))
            .unwrap_or(1)
            .clamp(1, self.cpus.len());
        if wanted == self.cpus.len() {
            return None;
        }
        let first = usize::try_from(self.next_cpu.fetch_add(1, Ordering::Relaxed)).unwrap_or(0);
        let mut set = CpuSet::new();
        for i in 0..wanted {
            set.set(self.cpus[(first + i) % self.cpus.len()]).ok()?;
        }
        Some(set)
    }

    fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SandboxId, Arc<Sandbox>>> {
        self.sandboxes
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The process id of a sandbox's leader process.
    pub fn pid(&self, id: &SandboxId) -> Result<u32> {
        let sandbox = self.get(id)?;
        u32::try_from(sandbox.pgid.as_raw()).map_err(|_| Error::NotFound(id.clone()))
    }

    fn new_id(&self, function: &str) -> SandboxId {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let clean: String = function
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
            .take(40)
            .collect();
        let random = uuid::Uuid::new_v4().simple().to_string();
        SandboxId::new(format!("{clean}-{n}-{}", &random[..8]))
    }

    fn environment(
        &self,
        spec: &SandboxSpec,
        id: &SandboxId,
        api: &str,
    ) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        for key in &self.config.inherit_env {
            if let Ok(value) = std::env::var(key) {
                env.insert(key.clone(), value);
            }
        }
        let task_root = self
            .config
            .task_root
            .clone()
            .or_else(|| std::env::current_dir().ok())
            .unwrap_or_else(|| PathBuf::from("/"));
        let date = crate::logs::utc_date(SystemTime::now());
        let lambda = [
            ("AWS_LAMBDA_RUNTIME_API", api.to_owned()),
            ("AWS_LAMBDA_FUNCTION_NAME", spec.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            ),
            ("AWS_REGION", self.config.region.clone()),
            ("AWS_DEFAULT_REGION", self.config.region.clone()),
            ("TZ", ":UTC".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.function_name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("{date}/[$LATEST]{}", id.as_str()),
            ),
            ("LAMBDA_TASK_ROOT", task_root.display().to_string()),
            ("AWS_EXECUTION_ENV", "AWS_Lambda_esb_process".to_owned()),
        ];
        for (key, value) in lambda {
            env.insert(key.to_owned(), value);
        }
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    fn platform_log(&self, sandbox: &Sandbox, request_id: &str, message: String) {
        self.config.log_sink.log(LogLine {
            time: SystemTime::now(),
            function_name: sandbox.info.function_name.clone(),
            sandbox_id: sandbox.info.id.as_str().into(),
            request_id: Some(request_id.to_owned()),
            trace_id: None,
            stream: LogStream::Platform,
            message,
        });
    }
}

fn exit_reason(status: std::io::Result<ExitStatus>) -> String {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => format!("Runtime exited with error: exit status {code}"),
            (None, Some(signal)) => {
                let name = Signal::try_from(signal)
                    .map(|s| s.as_str().trim_start_matches("SIG").to_lowercase())
                    .unwrap_or_else(|_| signal.to_string());
                let name = if name == "kill" {
                    "killed".to_owned()
                } else {
                    name
                };
                format!("Runtime exited with error: signal: {name}")
            }
            _ => "Runtime exited".to_owned(),
        },
        Err(err) => format!("Runtime exited: {err}"),
    }
}

fn pipe_lines<R: AsyncRead + Unpin + Send + 'static>(
    reader: R,
    stream: LogStream,
    sink: Arc<dyn LogSink>,
    broker: Broker,
    function_name: String,
    sandbox_id: SandboxId,
) {
    let sandbox_id: Arc<str> = sandbox_id.as_str().into();
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(message)) = lines.next_line().await {
            let current = broker.current_request();
            let (request_id, trace_id) = match current {
                Some((r, t)) => (Some(r), t),
                None => (None, None),
            };
            sink.log(LogLine {
                time: SystemTime::now(),
                function_name: function_name.clone(),
                sandbox_id: sandbox_id.clone(),
                request_id,
                trace_id,
                stream,
                message,
            });
        }
    });
}

/// Reads `key:  N kB` from `/proc/<pid>/status`, in bytes.
fn proc_status_kb(pid: Pid, key: &str) -> Option<u64> {
    let status = std::fs::read(format!("/proc/{pid}/status")).ok()?;
    status_kb(&status, key)
}

/// How often [`PeakMemory`] reads the kernel's own peak again.
const PEAK_REFRESH: Duration = Duration::from_millis(100);

/// A process's peak resident memory, as cheaply as an invocation can afford it.
///
/// The kernel's peak (`VmHWM` of `/proc/<pid>/status`) is read at most every
/// [`PEAK_REFRESH`]: rendering that file costs several microseconds. Between those reads, the
/// resident set of `/proc/<pid>/statm` (a fraction of the cost) raises the figure. Both files
/// stay open, so a reused pid is never read.
struct PeakMemory {
    status: Option<std::fs::File>,
    statm: Option<std::fs::File>,
    page_size: u64,
    /// Bytes, and when `VmHWM` was last read.
    seen: Mutex<(u64, Option<Instant>)>,
}

impl PeakMemory {
    fn open(pid: Pid) -> Self {
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(4096);
        Self {
            status: std::fs::File::open(format!("/proc/{pid}/status")).ok(),
            statm: std::fs::File::open(format!("/proc/{pid}/statm")).ok(),
            page_size,
            seen: Mutex::new((0, None)),
        }
    }

    /// The peak so far, in bytes (0 once the process is gone and was never read).
    fn bytes(&self) -> u64 {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        let fresh = seen
            .1
            .is_some_and(|at| now.duration_since(at) < PEAK_REFRESH);
        if !fresh && let Some(peak) = self.status.as_ref().and_then(read_hwm) {
            *seen = (seen.0.max(peak), Some(now));
        } else if let Some(pages) = self.statm.as_ref().and_then(read_resident_pages) {
            seen.0 = seen.0.max(pages * self.page_size);
        }
        seen.0
    }
}

/// `VmHWM` of an open `/proc/<pid>/status`, in bytes.
fn read_hwm(status: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 4096];
    let read = status.read_at(&mut buf, 0).ok()?;
    status_kb(&buf[..read], "VmHWM")
}

/// The resident pages of an open `/proc/<pid>/statm` (its second field).
fn read_resident_pages(statm: &std::fs::File) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 256];
    let read = statm.read_at(&mut buf, 0).ok()?;
    leading_number(buf[..read].split(|&b| b == b' ').nth(1)?)
}

fn leading_number(text: &[u8]) -> Option<u64> {
    let digits = text.iter().take_while(|b| b.is_ascii_digit()).count();
    std::str::from_utf8(&text[..digits]).ok()?.parse().ok()
}

/// `key:  N kB` of a `/proc/<pid>/status` text, in bytes.
fn status_kb(status: &[u8], key: &str) -> Option<u64> {
    let value = status
        .split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(key.as_bytes())?.strip_prefix(b":"))?;
    Some(leading_number(value.trim_ascii_start())? * 1024)
}

/// The process group's members, from /proc.
fn group_members(pgid: Pid) -> Vec<Pid> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    // Fields after the command name, which is in parentheses.
                    let after = stat.rsplit_once(')')?.1;
                    after.split_whitespace().nth(2)?.parse::<i32>().ok()
                })
                == Some(pgid.as_raw())
        })
        .map(Pid::from_raw)
        .collect()
}

/// CPU time (user + system) of a process, in nanoseconds.
fn cpu_ns(pid: Pid) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .and_then(|v| u64::try_from(v).ok())
        .filter(|&v| v > 0)
        .unwrap_or(100);
    ticks * (1_000_000_000 / hz)
}

impl ProcessRuntime {
    /// What this backend can do, known before one is made (to check a config against it).
    pub const CAPABILITIES: Capabilities = Capabilities {
        backend: "process",
        pause: true,
        images: false,
        commands: true,
        metrics: true,
        network: false,
    };
}

#[async_trait]
impl Runtime for ProcessRuntime {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let argv = match spec.command.as_deref() {
            Some([program, args @ ..]) => (program.clone(), args.to_vec()),
            _ => {
                return Err(Error::InvalidSpec {
                    function: spec.function_name.clone(),
                    reason: "the process backend needs a command".into(),
                });
            }
        };
        let id = self.new_id(&spec.function_name);
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let api = listener.local_addr()?.to_string();
        let broker = Broker::new(BrokerConfig {
            sandbox_id: id.clone(),
            function_name: spec.function_name.clone(),
            region: self.config.region.clone(),
            account_id: self.config.account_id.clone(),
            timeout: spec.timeout,
            init_timeout: self.config.init_timeout,
        });

        let mut command = tokio::process::Command::new(&argv.0);
        command
            .args(&argv.1)
            .env_clear()
            .envs(self.environment(&spec, &id, &api))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        if let Some(root) = &self.config.task_root {
            command.current_dir(root);
        }
        let spawned = match self.cpu_set(spec.memory_mb) {
            None => command.spawn(),
            // A child inherits the CPU affinity of the thread that forks it: fork from a
            // short-lived thread pinned to the sandbox's CPUs.
            Some(set) => {
                let runtime = tokio::runtime::Handle::current();
                std::thread::scope(|scope| {
                    scope
                        .spawn(|| {
                            let _entered = runtime.enter();
                            nix::sched::sched_setaffinity(Pid::from_raw(0), &set)
                                .map_err(std::io::Error::from)?;
                            command.spawn()
                        })
                        .join()
                        .unwrap_or_else(|_| {
                            Err(std::io::Error::other("the spawning thread panicked"))
                        })
                })
            }
        };
        let mut child = spawned.map_err(|err| Error::InvalidSpec {
            function: spec.function_name.clone(),
            reason: format!("cannot start command {:?}: {err}", argv.0),
        })?;
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .map(Pid::from_raw)
            .ok_or_else(|| Error::Backend("the child exited before its pid was read".into()))?;

        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        tokio::spawn(runtime_api::serve(listener, broker.clone(), async move {
            let _ = stop_rx.await;
        }));
        for (reader, stream) in [
            (
                child
                    .stdout
                    .take()
                    .map(|r| Box::new(r) as Box<dyn AsyncRead + Unpin + Send>),
                LogStream::Stdout,
            ),
            (
                child
                    .stderr
                    .take()
                    .map(|r| Box::new(r) as Box<dyn AsyncRead + Unpin + Send>),
                LogStream::Stderr,
            ),
        ] {
            if let Some(reader) = reader {
                pipe_lines(
                    reader,
                    stream,
                    self.config.log_sink.clone(),
                    broker.clone(),
                    spec.function_name.clone(),
                    id.clone(),
                );
            }
        }
        let (exited_tx, exited_rx) = watch::channel(None);
        {
            let broker = broker.clone();
            tokio::spawn(async move {
                let reason = exit_reason(child.wait().await);
                broker.lost(reason.clone());
                // Reap what is left of the group; the leader is gone already.
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = exited_tx.send(Some(reason));
            });
        }

        let info = SandboxInfo {
            id: id.clone(),
            function_name: spec.function_name.clone(),
            state: SandboxState::Running,
            created_at: SystemTime::now(),
            labels: BTreeMap::new(),
        };
        let sandbox = Arc::new(Sandbox {
            info: info.clone(),
            spec,
            pgid: pid,
            broker,
            paused: AtomicBool::new(false),
            exited: exited_rx,
            stop_server: Mutex::new(Some(stop_tx)),
            peak: PeakMemory::open(pid),
        });
        self.lock().insert(id, sandbox);
        Ok(info)
    }

    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        let sandbox = self.get(id)?;
        let request_id = request.request_id.clone();
        self.platform_log(
            &sandbox,
            &request_id,
            format!("START RequestId: {request_id} Version: $LATEST"),
        );
        let result = sandbox.broker.invoke(request).await;
        let max_memory_used_mb = sandbox.peak.bytes() / (1024 * 1024);
        match result {
            Ok(mut response) => {
                response.max_memory_used_mb = max_memory_used_mb.max(1);
                self.platform_log(
                    &sandbox,
                    &request_id,
                    format!("END RequestId: {request_id}"),
                );
                self.platform_log(
                    &sandbox,
                    &request_id,
                    crate::logs::report_line(&request_id, &response, sandbox.spec.memory_mb),
                );
                Ok(response)
            }
            Err(err) => {
                self.platform_log(&sandbox, &request_id, format!("{request_id} Error: {err}"));
                self.platform_log(
                    &sandbox,
                    &request_id,
                    format!("END RequestId: {request_id}"),
                );
                if err.is_sandbox_fatal() {
                    sandbox.kill().await;
                }
                Err(err)
            }
        }
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox.signal(Signal::SIGSTOP)?;
        sandbox.paused.store(true, Ordering::Release);
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox.signal(Signal::SIGCONT)?;
        sandbox.paused.store(false, Ordering::Release);
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let sandbox = self.lock().remove(id);
        if let Some(sandbox) = sandbox {
            sandbox.kill().await;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let sandboxes: Vec<Arc<Sandbox>> = self.lock().values().cloned().collect();
        Ok(sandboxes
            .iter()
            .map(|s| SandboxInfo {
                state: s.state(),
                ..s.info.clone()
            })
            .collect())
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        let sandbox = self.get(id)?;
        let members = group_members(sandbox.pgid);
        let mut metrics = SandboxMetrics {
            pids: u32::try_from(members.len()).unwrap_or(u32::MAX),
            ..SandboxMetrics::default()
        };
        for pid in members {
            metrics.memory_current_bytes += proc_status_kb(pid, "VmRSS").unwrap_or(0);
            metrics.memory_max_bytes += proc_status_kb(pid, "VmHWM").unwrap_or(0);
            metrics.cpu_usage_ns += cpu_ns(pid);
        }
        Ok(metrics)
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        for sandbox in self.lock().values() {
            let _ = sandbox.signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn peak_memory_follows_the_process_and_never_falls() {
        let me = Pid::this();
        let peak = PeakMemory::open(me);
        let before = peak.bytes();
        let status = std::fs::read("/proc/self/status").unwrap();
        let hwm = status_kb(&status, "VmHWM").unwrap();
        assert!(before > 0 && before <= hwm, "{before} vs VmHWM {hwm}");
        // 64 MB touched now raises the resident set between two VmHWM reads.
        let block = vec![1u8; 64 << 20];
        let after = peak.bytes();
        assert!(after >= before + (60 << 20), "{before} -> {after}");
        drop(block);
        assert!(peak.bytes() >= after);
        let statm = std::fs::File::open("/proc/self/statm").unwrap();
        assert!(read_resident_pages(&statm).unwrap() > 0);
    }
}
