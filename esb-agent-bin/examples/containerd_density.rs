//! Density of the containerd backend: the real `esb-agent` binary (containerd, cgroup
//! freezer) runs N sandboxes of the esb-testfn image (default 200), each invoked once and
//! then paused, as the gateway's pool freezes idle sandboxes. Prints the time to create them
//! all, the agent's RSS / descriptors / threads before and with all of them paused, and
//! that a paused sandbox still answers (resume + invoke). Everything it made — containers,
//! tasks, snapshots, network namespaces, CNI IP leases, the bridge — is removed at the end,
//! also after an error or Ctrl-C, and what is left (if anything) is printed.
//!
//! Needs root, containerd and the test registry (`.ci/containerd.sh`):
//!
//! ```text
//! eval "$(.ci/containerd.sh)"
//! cargo build --release -p esb-agent-bin --bin esb-agent --example containerd_density
//! target/release/examples/containerd_density --sandboxes 200
//! ```
//! Goal (issue 18): 200 paused sandboxes, agent RSS ≤ 60 MB.

#![allow(clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use esb_runtime::containerd::containerd_client;
use esb_runtime::containerd::{
    CniConfig, ContainerdConfig, ContainerdRuntime, ReconcilePolicy, RegistryConfig,
};
use esb_runtime::logs::NullLogSink;
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeRequest, InvokeResult, Runtime, SandboxId, SandboxSpec, SandboxState};
use esb_testfn::oci;
use esb_testfn::ports::free_port;
use futures::StreamExt;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Density bench of the agent's containerd backend.
#[derive(Debug, Parser)]
struct Args {
    /// Sandboxes to create, invoke once and pause.
    #[arg(long, default_value_t = 200)]
    sandboxes: usize,
    /// Creations (and invocations, pauses) in flight at once.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// CNI subnet of the bench's own bridge (other tests use 10.231–10.238).
    #[arg(long, default_value = "10.239.0.0/16")]
    subnet: String,
    /// The `esb-agent` binary [default: next to this example's directory].
    #[arg(long)]
    agent: Option<PathBuf>,
    /// Seconds to let the paused agent settle before its RSS is read.
    #[arg(long, default_value_t = 2.0)]
    settle: f64,
}

const TOKEN: &str = "density-bench-token-0123";
const STATE_DIR: &str = "/run/esb-bench";

/// What the bench set up, to be removed at the end.
struct Setup {
    address: PathBuf,
    env: String,
    bridge: String,
    subnet: String,
    conf: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Setup {
    fn namespace(&self) -> String {
        format!("esb-{}", self.env)
    }

    fn config(&self) -> ContainerdConfig {
        ContainerdConfig::default()
            .address(&self.address)
            .env(&self.env)
            .state_dir(STATE_DIR)
            .registries(RegistryConfig::default().insecure([oci::registry()]))
            .cni(Some(
                CniConfig::default()
                    .subnet(&self.subnet)
                    .bridge(&self.bridge)
                    .network(&self.bridge)
                    .conf_dir(&self.conf)
                    .data_dir(&self.data),
            ))
            .log_sink(Arc::new(NullLogSink))
    }
}

/// The agent process; killed if still running when dropped.
struct Agent {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

impl Agent {
    fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).unwrap_or(i32::MAX)
    }

    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// VmRSS / VmHWM (kB), threads and open descriptors of a process.
#[derive(Clone, Copy, Debug, Default)]
struct Usage {
    rss_kb: u64,
    anon_kb: u64,
    file_kb: u64,
    hwm_kb: u64,
    threads: u64,
    fds: usize,
}

impl Usage {
    fn of(pid: i32) -> anyhow::Result<Self> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("reading /proc/{pid}/status"))?;
        let field = |name: &str| {
            status
                .lines()
                .find_map(|line| line.strip_prefix(name))
                .and_then(|rest| rest.split_whitespace().next())
                .and_then(|n| n.parse::<u64>().ok())
                .unwrap_or(0)
        };
        Ok(Self {
            rss_kb: field("VmRSS:"),
            anon_kb: field("RssAnon:"),
            file_kb: field("RssFile:") + field("RssShmem:"),
            hwm_kb: field("VmHWM:"),
            threads: field("Threads:"),
            fds: std::fs::read_dir(format!("/proc/{pid}/fd"))?.count(),
        })
    }

    fn print(&self, what: &str) {
        println!(
            "{what:<34} RSS {:>6.1} MB (anon {:>5.1}, file {:>5.1}, peak {:>5.1})  {:>5} fds  {:>3} threads",
            self.rss_kb as f64 / 1024.0,
            self.anon_kb as f64 / 1024.0,
            self.file_kb as f64 / 1024.0,
            self.hwm_kb as f64 / 1024.0,
            self.fds,
            self.threads
        );
    }
}

fn spawn_agent(args: &Args, setup: &Setup) -> anyhow::Result<Agent> {
    let binary = match &args.agent {
        Some(path) => path.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("no directory above this example")?
            .join("esb-agent"),
    };
    let port = free_port()?;
    let log = setup._dir.path().join("agent.log");
    let mut command = Command::new(&binary);
    command
        .args(["--runtime", "containerd", "--token", TOKEN])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--containerd-address")
        .arg(&setup.address)
        .args(["--env", &setup.env, "--state-dir", STATE_DIR])
        .args(["--insecure-registry", &oci::registry()])
        .args(["--cni-subnet", &setup.subnet])
        .args([
            "--cni-bridge",
            &setup.bridge,
            "--cni-network",
            &setup.bridge,
        ])
        .arg("--cni-conf-dir")
        .arg(&setup.conf)
        .arg("--cni-data-dir")
        .arg(&setup.data)
        .args(["--freezer", "cgroup", "--reconcile", "remove"])
        .arg("--destroy-on-exit")
        .env_remove("ESB_AGENT_TOKEN")
        .env_remove("ESB_MAX_SANDBOXES")
        .env_remove("ESB_MEMORY_BUDGET_MB")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?);
    // Its own process group: Ctrl-C reaches the bench only, which then cleans up in order.
    std::os::unix::process::CommandExt::process_group(&mut command, 0);
    let child = command.spawn().with_context(|| {
        format!(
            "cannot start {} (cargo build --release -p esb-agent-bin --bin esb-agent)",
            binary.display()
        )
    })?;
    Ok(Agent { child, port, log })
}

async fn connect(agent: &mut Agent) -> anyhow::Result<RemoteRuntime> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let config = RemoteConfig::new(format!("http://127.0.0.1:{}", agent.port))
            .token(TOKEN)
            .attempts(1);
        match RemoteRuntime::connect(config).await {
            Ok(remote) => return Ok(remote),
            Err(err) if Instant::now() > deadline => bail!("the agent never answered: {err}"),
            Err(_) => {
                if let Some(status) = agent.child.try_wait()? {
                    bail!("the agent exited ({status}):\n{}", agent.log_tail());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// Whether the kernel reports the sandbox's cgroup frozen (v2 or v1).
fn cgroup_frozen(namespace: &str, id: &SandboxId) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        std::fs::read_to_string(root.join(format!("esb/{namespace}/{id}/cgroup.events")))
            .is_ok_and(|events| events.lines().any(|line| line.trim() == "frozen 1"))
    } else {
        std::fs::read_to_string(root.join(format!("freezer/esb/{namespace}/{id}/freezer.state")))
            .is_ok_and(|state| state.trim() == "FROZEN")
    }
}

fn answered(result: &InvokeResult) -> anyhow::Result<()> {
    match result {
        InvokeResult::Success(_) => Ok(()),
        other => bail!("the function did not answer: {other:?}"),
    }
}

/// Runs `op` on every item, `concurrency` at a time; the first error wins.
async fn each<T, F, Fut, R>(items: Vec<T>, concurrency: usize, op: F) -> anyhow::Result<Vec<R>>
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<R>>,
{
    futures::stream::iter(items.into_iter().map(op))
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

async fn bench(args: &Args, setup: &Setup, agent: &mut Agent) -> anyhow::Result<()> {
    let pid = agent.pid();
    let remote = connect(agent).await?;
    let image = tokio::task::spawn_blocking(oci::pushed_image).await?;
    let spec = SandboxSpec::new("density")
        .image(image.clone())
        .timeout(Duration::from_secs(30));
    let event = r#"{"density":true}"#;
    let started_usage = Usage::of(pid)?;

    // One sandbox first: the image is pulled and unpacked, and the agent's own caches warm.
    let warm = remote.create(spec.clone()).await?;
    answered(
        &remote
            .invoke(&warm.id, InvokeRequest::new(event))
            .await?
            .result,
    )?;
    remote.destroy(&warm.id).await?;
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let before = Usage::of(pid)?;

    let n = args.sandboxes;
    let started = Instant::now();
    let created = each(vec![(); n], args.concurrency, |()| {
        let (remote, spec) = (&remote, &spec);
        async move { Ok(remote.create(spec.clone()).await?.id) }
    })
    .await?;
    let create_time = started.elapsed();
    let started = Instant::now();
    each(created.clone(), args.concurrency, |id| {
        let remote = &remote;
        async move { answered(&remote.invoke(&id, InvokeRequest::new(event)).await?.result) }
    })
    .await?;
    let invoke_time = started.elapsed();
    let running = Usage::of(pid)?;
    let started = Instant::now();
    each(created.clone(), args.concurrency, |id| {
        let remote = &remote;
        async move { Ok(remote.pause(&id).await?) }
    })
    .await?;
    let pause_time = started.elapsed();

    // All paused: the agent says so, and the kernel has frozen every cgroup.
    let namespace = setup.namespace();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = remote.list().await?;
        let paused = listed
            .iter()
            .filter(|info| info.state == SandboxState::Paused)
            .count();
        let frozen = created
            .iter()
            .filter(|id| cgroup_frozen(&namespace, id))
            .count();
        if paused == n && frozen == n {
            break;
        }
        if Instant::now() > deadline {
            bail!("{paused} of {n} sandboxes paused, {frozen} frozen after 30 s");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    tokio::time::sleep(Duration::from_secs_f64(args.settle)).await;
    let paused = Usage::of(pid)?;

    // Still answering: a paused sandbox resumes and takes an invocation.
    let target = created.last().context("no sandbox was created")?;
    let started = Instant::now();
    remote.resume(target).await?;
    answered(
        &remote
            .invoke(target, InvokeRequest::new(event))
            .await?
            .result,
    )?;
    let resume_time = started.elapsed();
    let after = Usage::of(pid)?;

    println!(
        "containerd density: {n} sandboxes of {image}, concurrency {}, cgroup freezer",
        args.concurrency
    );
    println!(
        "{:<34} {:>8.2} s  ({:.1} ms each)",
        "create all",
        create_time.as_secs_f64(),
        create_time.as_secs_f64() * 1e3 / n as f64
    );
    println!(
        "{:<34} {:>8.2} s",
        "invoke all once",
        invoke_time.as_secs_f64()
    );
    println!("{:<34} {:>8.2} s", "pause all", pause_time.as_secs_f64());
    started_usage.print("agent at start");
    before.print("agent, image pulled, 0 sandboxes");
    running.print(&format!("agent, {n} running"));
    paused.print(&format!("agent, {n} paused"));
    println!(
        "{:<34} {:>7.1} kB RSS  {:>5.2} fds",
        "per paused sandbox",
        (paused.rss_kb as f64 - before.rss_kb as f64) / n as f64,
        (paused.fds as f64 - before.fds as f64) / n as f64
    );
    println!(
        "{:<34} {:>8.1} ms (answered)",
        "resume + invoke of a paused one",
        resume_time.as_secs_f64() * 1e3
    );
    after.print("agent after that invoke");
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("{:<34} {}", "load average", load.trim());
    let goal = if paused.rss_kb <= 60 * 1024 {
        "met"
    } else {
        "NOT met"
    };
    println!("goal: {n} paused sandboxes, agent RSS <= 60 MB: {goal}");
    Ok(())
}

/// Destroys through the agent what it still runs, stops it (it destroys the rest on exit),
/// then removes whatever is left directly in containerd.
async fn cleanup(setup: &Setup, agent: &mut Agent) {
    if agent.child.try_wait().ok().flatten().is_none() {
        let config = RemoteConfig::new(format!("http://127.0.0.1:{}", agent.port))
            .token(TOKEN)
            .attempts(1);
        if let Ok(Ok(remote)) =
            tokio::time::timeout(Duration::from_secs(5), RemoteRuntime::connect(config)).await
            && let Ok(listed) = remote.list().await
        {
            let ids = listed.into_iter().map(|info| info.id).collect();
            let _ = each(ids, 16, |id| {
                let remote = &remote;
                async move {
                    if let Err(err) = remote.destroy(&id).await {
                        eprintln!("cleanup: destroy {id}: {err}");
                    }
                    Ok(())
                }
            })
            .await;
        }
        let _ = kill(Pid::from_raw(agent.pid()), Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(90);
        while agent.child.try_wait().ok().flatten().is_none() {
            if Instant::now() > deadline {
                eprintln!("cleanup: the agent did not stop in 90 s; killing it");
                let _ = agent.child.kill();
                let _ = agent.child.wait();
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // What the agent could not remove (it crashed, or was killed): a runtime of the same
    // env and network removes it.
    match ContainerdRuntime::connect(setup.config()).await {
        Ok(sweeper) => {
            match sweeper.reconcile(ReconcilePolicy::Remove).await {
                Ok(done) if !done.removed.is_empty() => {
                    eprintln!("cleanup: removed {} left by the agent", done.removed.len());
                }
                Ok(_) => {}
                Err(err) => eprintln!("cleanup: {err}"),
            }
            if let Err(err) = sweeper.release_network().await {
                eprintln!("cleanup: cannot release the CNI network: {err}");
            }
        }
        Err(err) => eprintln!("cleanup: cannot connect to containerd: {err}"),
    }
    let _ = Command::new("ip")
        .args(["link", "del", &setup.bridge])
        .stderr(Stdio::null())
        .status();
    // Network namespaces no container holds (e.g. of a create cut short): unpinned, removed.
    let netns_dir = Path::new(STATE_DIR).join(setup.namespace()).join("netns");
    for entry in std::fs::read_dir(&netns_dir)
        .into_iter()
        .flatten()
        .flatten()
    {
        let path = entry.path();
        let _ = nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH);
        if std::fs::remove_file(&path).is_ok() {
            eprintln!("cleanup: removed the network namespace {}", path.display());
        }
    }
    let _ = std::fs::remove_dir(&netns_dir);
    let _ = std::fs::remove_dir(Path::new(STATE_DIR).join(setup.namespace()).join("io"));
    let _ = std::fs::remove_dir(Path::new(STATE_DIR).join(setup.namespace()));
}

/// Everything of the bench still there: containers, active snapshots, network namespaces,
/// FIFO directories, IP leases, the bridge and conflist, cgroups.
async fn leftovers(setup: &Setup) -> Vec<String> {
    use containerd_client::services::v1::ListContainersRequest;
    use containerd_client::services::v1::containers_client::ContainersClient;
    use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
    use containerd_client::services::v1::snapshots::{Kind, ListSnapshotsRequest};

    let namespace = setup.namespace();
    let mut left = Vec::new();
    fn request<T>(namespace: &str, message: T) -> containerd_client::tonic::Request<T> {
        let mut request = containerd_client::tonic::Request::new(message);
        if let Ok(value) = namespace.parse() {
            request.metadata_mut().insert("containerd-namespace", value);
        }
        request
    }
    match containerd_client::connect(&setup.address).await {
        Ok(channel) => {
            match ContainersClient::new(channel.clone())
                .list(request(&namespace, ListContainersRequest::default()))
                .await
            {
                Ok(listed) => left.extend(
                    listed
                        .into_inner()
                        .containers
                        .into_iter()
                        .map(|c| format!("container {}", c.id)),
                ),
                Err(status) => left.push(format!("cannot list containers: {status}")),
            }
            match SnapshotsClient::new(channel)
                .list(request(
                    &namespace,
                    ListSnapshotsRequest {
                        snapshotter: "overlayfs".into(),
                        filters: Vec::new(),
                    },
                ))
                .await
            {
                Ok(stream) => {
                    let mut stream = stream.into_inner();
                    while let Some(Ok(page)) = stream.next().await {
                        left.extend(
                            page.info
                                .into_iter()
                                .filter(|info| info.kind == Kind::Active as i32)
                                .map(|info| format!("active snapshot {}", info.name)),
                        );
                    }
                }
                Err(status) => left.push(format!("cannot list snapshots: {status}")),
            }
        }
        Err(err) => left.push(format!("cannot connect to containerd: {err}")),
    }
    let state = Path::new(STATE_DIR).join(&namespace);
    let cgroups = [
        PathBuf::from(format!("/sys/fs/cgroup/esb/{namespace}")),
        PathBuf::from(format!("/sys/fs/cgroup/freezer/esb/{namespace}")),
    ];
    for dir in [
        state.join("netns"),
        state.join("io"),
        setup.data.join(&setup.bridge),
    ]
    .into_iter()
    .chain(cgroups)
    {
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                if entry.file_type().is_ok_and(|t| !t.is_dir()) && dir.starts_with("/sys") {
                    continue; // a cgroup's own control files
                }
                left.push(format!("{}", entry.path().display()));
            }
        }
    }
    for path in [
        Path::new("/sys/class/net").join(&setup.bridge),
        setup.conf.join(format!("{}.conflist", setup.bridge)),
    ] {
        if path.exists() {
            left.push(format!("{}", path.display()));
        }
    }
    left
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let Some(address) = oci::containerd() else {
        bail!("no containerd (run .ci/containerd.sh as root)");
    };
    let dir = tempfile::tempdir()?;
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let setup = Setup {
        address,
        env: format!("density-{tag}"),
        bridge: format!("esbd{tag}"),
        subnet: args.subnet.clone(),
        conf: dir.path().join("net.d"),
        data: dir.path().join("cni"),
        _dir: dir,
    };
    let mut agent = spawn_agent(&args, &setup)?;
    let outcome = tokio::select! {
        outcome = bench(&args, &setup, &mut agent) => outcome,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    if outcome.is_err() {
        eprintln!("agent log (last lines):\n{}", agent.log_tail());
    }
    eprintln!("cleaning up …");
    let started = Instant::now();
    let cleaning = cleanup(&setup, &mut agent);
    tokio::pin!(cleaning);
    loop {
        tokio::select! {
            () = &mut cleaning => break,
            _ = tokio::signal::ctrl_c() => eprintln!("cleanup under way; please wait"),
        }
    }
    let left = leftovers(&setup).await;
    if left.is_empty() {
        println!(
            "cleanup: nothing left ({:.1} s)",
            started.elapsed().as_secs_f64()
        );
    } else {
        println!("cleanup: LEFT BEHIND ({}):", left.len());
        for item in &left {
            println!("  {item}");
        }
    }
    outcome?;
    if !left.is_empty() {
        bail!("{} things left behind", left.len());
    }
    Ok(())
}
