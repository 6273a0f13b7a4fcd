//! The `process` backend: each sandbox is a child process in its own process group, polling
//! the Lambda Runtime API on 127.0.0.1 (one listener for all, each connection served as the
//! sandbox whose processes hold it: see `process_api`). Needs no root and no containerd.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use nix::sched::CpuSet;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::WaitStatus;
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::child::Launch;
use crate::logs::LogStream;
use crate::output::SharedPipe;
use crate::process_api::{Registration, SharedApi};
use crate::record::Record;
use crate::runtime_api::Broker;
use crate::sandbox::{self, Core, Exit, LambdaSettings, WhenPaused, lock};
use crate::{
    Capabilities, Error, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId, SandboxInfo,
    SandboxMetrics, SandboxSpec, SandboxState,
};

/// Settings of the process backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ProcessConfig {
    /// Region, account, init timeout and log sink, as every local backend has them.
    pub lambda: LambdaSettings,
    /// Working directory of the processes and `LAMBDA_TASK_ROOT`; the current directory when `None`.
    pub task_root: Option<PathBuf>,
    /// Variables of this process passed on to sandboxes (besides the Lambda ones); by
    /// default only `PATH`, so that a function finds the host's interpreters. Nothing else
    /// of the host (`HOME`, `RUST_BACKTRACE`, `RUST_LOG`, credentials) reaches a sandbox.
    pub inherit_env: Vec<String>,
    /// Pin each sandbox to as many CPUs as Lambda gives its memory size (one per 1,769 MB,
    /// at least one), chosen in turn among the CPUs this process may use.
    ///
    /// Besides sharing the machine fairly, this makes a function's runtime size its thread
    /// pool to its CPUs (tokio reads the affinity mask), as it does on Lambda or in a
    /// container with a CPU quota; a multi-threaded runtime on a small sandbox mostly pays
    /// for cross-thread wake-ups.
    pub pin_cpus: bool,
    /// Where to record the sandboxes started, so that a later runtime given the same
    /// directory kills what this process left if it was killed (see [`ProcessRuntime::new`]);
    /// none by default.
    pub record_dir: Option<PathBuf>,
}

/// The usual [`ProcessConfig::record_dir`]: `<runtime_dir>/esb/process-sandboxes` (give
/// `$XDG_RUNTIME_DIR`), else `/tmp/esb-<uid>/process-sandboxes`.
pub fn default_record_dir(runtime_dir: Option<PathBuf>) -> PathBuf {
    match runtime_dir {
        Some(dir) if dir.is_absolute() => dir.join("esb").join("process-sandboxes"),
        _ => PathBuf::from(format!("/tmp/esb-{}", nix::unistd::getuid())).join("process-sandboxes"),
    }
}

/// Memory that buys one vCPU on Lambda.
const MB_PER_VCPU: u32 = 1769;

impl Default for ProcessConfig {
    fn default() -> Self {
        Self {
            lambda: LambdaSettings::default(),
            task_root: None,
            inherit_env: vec!["PATH".to_owned()],
            pin_cpus: true,
            record_dir: None,
        }
    }
}

impl ProcessConfig {
    crate::sandbox::lambda_setters!(lambda);

    /// Sets the working directory of the processes (and `LAMBDA_TASK_ROOT`).
    pub fn task_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.task_root = Some(root.into());
        self
    }

    /// Sets the variables of this process passed on to sandboxes.
    pub fn inherit_env<I, S>(mut self, keys: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.inherit_env = keys.into_iter().map(Into::into).collect();
        self
    }

    /// Sets where the sandboxes started are recorded ([`ProcessConfig::record_dir`]).
    pub fn record_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.record_dir = Some(dir.into());
        self
    }

    /// Sets whether sandboxes are pinned to CPUs ([`ProcessConfig::pin_cpus`]).
    pub fn pin_cpus(mut self, pin: bool) -> Self {
        self.pin_cpus = pin;
        self
    }
}

struct Sandbox {
    core: Core,
    pgid: Pid,
    /// Its place with the shared Runtime API listener.
    api: Registration,
    /// The leader's peak memory, for the REPORT line's `Max Memory Used`.
    peak: PeakMemory,
}

impl Sandbox {
    fn signal(&self, signal: Signal) -> Result<()> {
        if self.core.has_exited() {
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
        self.core.wait_exit(None).await;
        self.api.stop();
    }
}

/// Runs sandboxes as child processes.
///
/// A sandbox is killed when the thread that created it exits (`PR_SET_PDEATHSIG`, so that
/// none outlives a killed gateway): create sandboxes from a long-lived thread, such as a
/// tokio worker, not from `spawn_blocking` or a thread that ends after the call.
pub struct ProcessRuntime {
    config: ProcessConfig,
    sandboxes: Mutex<HashMap<SandboxId, Arc<Sandbox>>>,
    /// The CPUs this process may use, for [`ProcessConfig::pin_cpus`].
    cpus: Vec<usize>,
    next_cpu: AtomicU64,
    /// The record of started sandboxes, with [`ProcessConfig::record_dir`].
    record: Option<Arc<Record>>,
    /// The Runtime API listener of all sandboxes, bound with the first.
    api: tokio::sync::OnceCell<SharedApi>,
    /// Counts the SIGCHLDs this process received, so that exit watchers reap their child.
    children: tokio::sync::OnceCell<watch::Receiver<u64>>,
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
    ///
    /// Every sandbox's leader process dies with the thread that started it (SIGKILL on
    /// parent death). With [`ProcessConfig::record_dir`], the processes that sandboxes of a
    /// gone gateway or agent left there (a function's own children) are killed first.
    pub fn new(config: ProcessConfig) -> Self {
        let record = config.record_dir.as_deref().and_then(|dir| {
            match Record::open(dir) {
                Ok((record, _reaped)) => Some(Arc::new(record)),
                Err(err) => {
                    tracing::warn!(dir = %dir.display(), error = %err, "no record of sandboxes: orphans of a killed run are not reaped");
                    None
                }
            }
        });
        let cpus = match nix::sched::sched_getaffinity(Pid::from_raw(0)) {
            Ok(set) => (0..CpuSet::count())
                .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
                .collect(),
            Err(_) => Vec::new(),
        };
        Self {
            config,
            sandboxes: Mutex::new(HashMap::new()),
            cpus,
            next_cpu: AtomicU64::new(0),
            record,
            api: tokio::sync::OnceCell::new(),
            children: tokio::sync::OnceCell::new(),
        }
    }

    /// The SIGCHLD count, listened to from the first call on.
    async fn child_signals(&self) -> Result<watch::Receiver<u64>> {
        let signals = self
            .children
            .get_or_try_init(|| async {
                use tokio::signal::unix::{SignalKind, signal};
                let mut sigchld = signal(SignalKind::child())?;
                let (count_tx, count_rx) = watch::channel(0u64);
                tokio::spawn(async move {
                    while sigchld.recv().await.is_some() {
                        count_tx.send_modify(|count| *count += 1);
                        if count_tx.is_closed() {
                            break;
                        }
                    }
                });
                Ok::<_, std::io::Error>(count_rx)
            })
            .await?;
        Ok(signals.clone())
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
        lock(&self.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    /// The process id of a sandbox's leader process.
    pub fn pid(&self, id: &SandboxId) -> Result<u32> {
        let sandbox = self.get(id)?;
        u32::try_from(sandbox.pgid.as_raw()).map_err(|_| Error::NotFound(id.clone()))
    }

    fn environment(
        &self,
        spec: &SandboxSpec,
        id: &SandboxId,
        api: &str,
    ) -> BTreeMap<String, String> {
        // `LANG` as Lambda sets it; an inherited one wins.
        let mut env = BTreeMap::from([("LANG".to_owned(), "en_US.UTF-8".to_owned())]);
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
        env.extend(self.config.lambda.environment(
            spec,
            id,
            &task_root.display().to_string(),
            Some(api),
            "process",
        ));
        env.extend(spec.env.iter().map(|(k, v)| (k.clone(), v.clone())));
        env
    }

    /// How a sandbox's leader is started: its argv, the Lambda environment, its working
    /// directory and CPUs (see [`crate::child::spawn`]: piped output, its own process
    /// group, dying with this process).
    fn launch(&self, spec: &SandboxSpec, id: &SandboxId, api: &str) -> Result<Launch> {
        let Some([program, args @ ..]) = spec.command.as_deref() else {
            return Err(Error::InvalidSpec {
                function: spec.function_name.clone(),
                reason: "the process backend needs a command".into(),
            });
        };
        // A zip function's code directory (its LAMBDA_TASK_ROOT) is its working directory.
        let cwd = spec
            .env
            .get("LAMBDA_TASK_ROOT")
            .map(PathBuf::from)
            .or_else(|| self.config.task_root.clone());
        Ok(Launch {
            program: program.into(),
            args: args.iter().map(Into::into).collect(),
            env: self.environment(spec, id, api).into_iter().collect(),
            cwd,
            cpus: self.cpu_set(spec.memory_mb),
        })
    }
}

/// Why a command could not start: the spec's fault (no such file, not executable) or this
/// host's (out of file descriptors, processes or memory), which is no invalid spec.
fn spawn_error(function: &str, program: &std::ffi::OsStr, err: std::io::Error) -> Error {
    match err.raw_os_error() {
        Some(libc::EMFILE | libc::ENFILE | libc::EAGAIN | libc::ENOMEM) => Error::Os {
            operation: format!(
                "starting command {program:?} of function {function} (out of file descriptors, processes or memory)"
            ),
            source: err,
        },
        _ => Error::InvalidSpec {
            function: function.to_owned(),
            reason: format!("cannot start command {program:?}: {err}"),
        },
    }
}

/// How a child process ended, in Lambda's words.
fn exit_reason(status: std::io::Result<WaitStatus>) -> String {
    match status {
        Ok(WaitStatus::Exited(_, code)) => sandbox::exit_reason(Exit::Code(i64::from(code))),
        Ok(WaitStatus::Signaled(_, signal, _)) => sandbox::exit_reason(Exit::Signal(signal as i32)),
        Ok(_) => "Runtime exited".to_owned(),
        Err(err) => format!("Runtime exited: {err}"),
    }
}

/// Waits until child `pid` exits, and reaps it: tries at once, then at every SIGCHLD.
async fn wait_child(pid: Pid, mut sigchld: watch::Receiver<u64>) -> std::io::Result<WaitStatus> {
    use nix::sys::wait::{WaitPidFlag, waitpid};
    loop {
        sigchld.borrow_and_update();
        match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => {}
            Ok(status @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..))) => return Ok(status),
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(errno) => return Err(errno.into()),
        }
        if sigchld.changed().await.is_err() {
            // No more signals (the runtime is going away): poll, rarely.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// Follows the leader until it exits, then fails the broker with the reason and kills what
/// is left of the group.
fn watch_exit(
    pgid: Pid,
    sigchld: watch::Receiver<u64>,
    broker: Broker,
    record: Option<Arc<Record>>,
) -> watch::Receiver<Option<String>> {
    let (exited_tx, exited_rx) = watch::channel(None);
    tokio::spawn(async move {
        let reason = exit_reason(wait_child(pgid, sigchld).await);
        broker.lost(reason.clone());
        // Reap what is left of the group; the leader is gone already.
        let _ = killpg(pgid, Signal::SIGKILL);
        if let Some(record) = record {
            record.remove(pgid);
        }
        let _ = exited_tx.send(Some(reason));
    });
    exited_rx
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
/// resident set of `/proc/<pid>/statm` (a fraction of the cost) raises the figure. The files
/// are opened for each read (no descriptor is kept per sandbox); the pid is the sandbox's own
/// child, not reused before it is reaped, and read only while the sandbox runs.
struct PeakMemory {
    pid: Pid,
    page_size: u64,
    /// Bytes, and when `VmHWM` was last read.
    seen: Mutex<(u64, Option<Instant>)>,
}

impl PeakMemory {
    fn new(pid: Pid) -> Self {
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(4096);
        Self {
            pid,
            page_size,
            seen: Mutex::new((0, None)),
        }
    }

    /// The peak so far, in bytes (0 once the process is gone and was never read); without
    /// `read`, the figure last read.
    fn bytes(&self, read: bool) -> u64 {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        if !read {
            return seen.0;
        }
        let now = Instant::now();
        let fresh = seen
            .1
            .is_some_and(|at| now.duration_since(at) < PEAK_REFRESH);
        let open = |file: &str| std::fs::File::open(format!("/proc/{}/{file}", self.pid)).ok();
        if !fresh && let Some(peak) = open("status").as_ref().and_then(read_hwm) {
            *seen = (seen.0.max(peak), Some(now));
        } else if let Some(pages) = open("statm").as_ref().and_then(read_resident_pages) {
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
pub(crate) fn group_members(pgid: Pid) -> Vec<Pid> {
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
        let id = sandbox::new_id(&spec.function_name);
        let api = self.api.get_or_try_init(SharedApi::bind).await?;
        let sigchld = self.child_signals().await?;
        let launch = self.launch(&spec, &id, &api.addr().to_string())?;
        // Noted before the leader starts: it may start processes of its own before `spawn`
        // returns, and this process may be killed at any time.
        let starting = self
            .record
            .as_deref()
            .map(|record| record.starting(id.as_str()));
        let spawned = crate::child::spawn(&launch)
            .map_err(|err| spawn_error(&spec.function_name, &launch.program, err))?;
        // The child is followed by its pid (`watch_exit`): no handle, no pidfd.
        let pgid = spawned.pid;
        if let Some(starting) = starting {
            starting.started(pgid);
        }
        let stdout = Some(SharedPipe::new(spawned.stdout));
        let stderr = Some(SharedPipe::new(spawned.stderr));

        let lambda = &self.config.lambda;
        let broker = lambda.broker(&id, &spec.function_name, spec.timeout);
        // Only the sandbox's own processes may poll its Runtime API.
        let registration = api.register(id.clone(), pgid, broker.clone());
        let info = SandboxInfo {
            id: id.clone(),
            function_name: spec.function_name.clone(),
            state: SandboxState::Running,
            created_at: SystemTime::now(),
            labels: spec.labels.clone(),
        };
        for (pipe, stream) in [(stdout, LogStream::Stdout), (stderr, LogStream::Stderr)] {
            match pipe {
                Some(Ok(pipe)) => {
                    broker.output().watch_shared(&pipe);
                    lambda.spawn_log_reader(pipe, stream, broker.clone(), &info);
                }
                Some(Err(err)) => {
                    tracing::warn!(sandbox = %id, error = %err, "cannot read the sandbox's {}", stream.as_str());
                }
                None => {}
            }
        }
        let exited = watch_exit(pgid, sigchld, broker.clone(), self.record.clone());
        let sandbox = Arc::new(Sandbox {
            core: Core::new(info.clone(), spec.memory_mb, broker, exited, None),
            pgid,
            api: registration,
            peak: PeakMemory::new(pgid),
        });
        // Created means ready to be invoked: its runtime client has asked for its first
        // invocation (or the sandbox died, or its init timed out, which its first invocation
        // reports). So a pool counts it idle, and may freeze it, only once its client is
        // connected, and a pool that starts a few sandboxes at a time has few whose client
        // is still to connect (each new Runtime API connection is asked of those first).
        // Listed only then: nobody adopts or reaps a sandbox still being created.
        let unclaimed = Unclaimed(Some(Arc::clone(&sandbox)));
        sandbox.core.broker.wait_init().await;
        unclaimed.claim();
        lock(&self.sandboxes).insert(id, sandbox);
        Ok(info)
    }

    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        let sandbox = self.get(id)?;
        let run = |request| sandbox.core.broker.invoke(request);
        // Read only while the child runs: once reaped, its pid may be another process's.
        let peak = || sandbox.peak.bytes(!sandbox.core.has_exited());
        let kill = || sandbox.kill();
        // A stopped process group answers once continued: the invocation waits for resume.
        let core = &sandbox.core;
        core.invoke(
            &self.config.lambda,
            WhenPaused::Wait,
            request,
            run,
            peak,
            kill,
        )
        .await
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox.signal(Signal::SIGSTOP)?;
        sandbox.core.set_paused(true);
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let sandbox = self.get(id)?;
        sandbox.signal(Signal::SIGCONT)?;
        sandbox.core.set_paused(false);
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let sandbox = lock(&self.sandboxes).remove(id);
        if let Some(sandbox) = sandbox {
            sandbox.kill().await;
        }
        Ok(())
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let sandboxes: Vec<Arc<Sandbox>> = lock(&self.sandboxes).values().cloned().collect();
        Ok(sandboxes.iter().map(|s| s.core.listing()).collect())
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

/// A sandbox whose creation is still under way: killed if the creator leaves before it is
/// returned (nobody would know its id).
struct Unclaimed(Option<Arc<Sandbox>>);

impl Unclaimed {
    /// The sandbox is returned to its creator.
    fn claim(mut self) {
        self.0 = None;
    }
}

impl Drop for Unclaimed {
    fn drop(&mut self) {
        if let Some(sandbox) = self.0.take() {
            // Its exit watcher reaps the leader and the rest of the group.
            let _ = sandbox.signal(Signal::SIGKILL);
            sandbox.api.stop();
        }
    }
}

impl Drop for ProcessRuntime {
    fn drop(&mut self) {
        for sandbox in lock(&self.sandboxes).values() {
            let _ = sandbox.signal(Signal::SIGKILL);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn out_of_file_descriptors_is_no_invalid_spec() {
        let command = std::ffi::OsStr::new("/bin/true");
        let err = spawn_error(
            "f",
            command,
            std::io::Error::from_raw_os_error(libc::EMFILE),
        );
        assert!(matches!(err, Error::Os { .. }), "{err}");
        assert!(err.to_string().contains("out of file descriptors"), "{err}");
        let err = spawn_error(
            "f",
            command,
            std::io::Error::from_raw_os_error(libc::ENOENT),
        );
        assert!(matches!(err, Error::InvalidSpec { .. }), "{err}");
    }

    #[test]
    fn peak_memory_follows_the_process_and_never_falls() {
        let me = Pid::this();
        let peak = PeakMemory::new(me);
        let before = peak.bytes(true);
        let status = std::fs::read("/proc/self/status").unwrap();
        let hwm = status_kb(&status, "VmHWM").unwrap();
        assert!(before > 0 && before <= hwm, "{before} vs VmHWM {hwm}");
        // 64 MB touched now raises the resident set between two VmHWM reads. Other tests'
        // threads share this process's memory and may free some meanwhile: half of it must
        // show, over the resident set (the peak may be higher, from earlier tests).
        let statm = std::fs::File::open("/proc/self/statm").unwrap();
        let resident = read_resident_pages(&statm).unwrap() * peak.page_size;
        assert!(resident > 0);
        let block = vec![1u8; 64 << 20];
        let after = peak.bytes(true);
        assert!(after >= resident + (32 << 20), "{resident} -> {after}");
        drop(block);
        assert!(peak.bytes(true) >= after);
    }
}
