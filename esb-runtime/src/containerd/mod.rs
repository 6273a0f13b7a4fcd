//! The `containerd` backend: each sandbox is a containerd container in namespace `esb-<env>`,
//! in its own network namespace where the backend serves the Lambda Runtime API at
//! `127.0.0.1:9001`.
//!
//! ```no_run
//! # async fn run() -> Result<(), esb_runtime::Error> {
//! use esb_runtime::containerd::{ContainerdConfig, ContainerdRuntime};
//! use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};
//!
//! let runtime = ContainerdRuntime::connect(ContainerdConfig::default().env("dev")).await?;
//! let spec = SandboxSpec::new("echo").image("127.0.0.1:5000/lambda-echo:latest");
//! let sandbox = runtime.create(spec).await?;
//! let response = runtime.invoke(&sandbox.id, InvokeRequest::new("{}")).await?;
//! println!("{:?}", response.body());
//! runtime.destroy(&sandbox.id).await?;
//! # Ok(()) }
//! ```

mod cgroup;
mod client;
mod cni;
mod image;
mod netns;
mod oci;
mod reference;
mod rie;

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use containerd_client::services::v1::container::Runtime as ContainerRuntimeInfo;
use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::snapshots::{
    MountsRequest, PrepareSnapshotRequest, RemoveSnapshotRequest,
};
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, CreateTaskRequest, DeleteContainerRequest,
    DeleteTaskRequest, GetContainerRequest, GetRequest as GetTaskRequest, KillRequest,
    ListContainersRequest, PauseTaskRequest, ResumeTaskRequest, StartRequest, WaitRequest,
};
use containerd_client::tonic::Code;
use containerd_client::types::v1::Status as TaskStatus;
use http_body_util::{BodyExt, Full};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use cni::{CniConfig, NetworkRelease};
/// The containerd API client this backend is built on, for callers that need more of it.
pub use containerd_client;
pub use image::{RegistryConfig, RegistryCredentials};

use self::cgroup::Cgroup;
use self::client::{Ctr, ignore_not_found, status_error};
use self::cni::Cni;
use self::image::Images;
use self::oci::ImageRunConfig;
use crate::logs::LogStream;
use crate::runtime_api::Broker;
use crate::sandbox::{self, Core, Exit, LambdaSettings, WhenPaused, lock};
use crate::{
    Capabilities, Error, InvokeMode, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId,
    SandboxInfo, SandboxMetrics, SandboxSpec, SandboxState, billed,
};

/// Label every ESB container carries: who made it.
pub const LABEL_CREATED_BY: &str = "esb.created-by";
/// Value of [`LABEL_CREATED_BY`].
pub const CREATED_BY: &str = "esb-agent";
/// Label naming the ESB environment of a container.
pub const LABEL_ENV: &str = "esb.env";
/// Label naming the function a container runs.
pub const LABEL_FUNCTION: &str = "esb.function";
/// Label naming the CNI network a container is attached to.
pub const LABEL_NETWORK: &str = "esb.network";
/// Label holding a container's address on its CNI network.
pub const LABEL_IP: &str = "esb.ip";
/// Label holding a container's invoke mode.
pub const LABEL_INVOKE: &str = "esb.invoke";
/// Label holding a sandbox's memory size in MB.
pub const LABEL_MEMORY: &str = "esb.memory-mb";
/// Label holding a sandbox's function timeout in milliseconds.
pub const LABEL_TIMEOUT: &str = "esb.timeout-ms";

/// How long destroy waits for a killed task to be reported gone.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// Settings of the containerd backend.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct ContainerdConfig {
    /// containerd's gRPC socket.
    pub address: PathBuf,
    /// ESB environment: sandboxes live in namespace `esb-<env>` and carry `esb.env=<env>`.
    pub env: String,
    /// Snapshotter of images and sandboxes.
    pub snapshotter: String,
    /// containerd runtime (shim) of the tasks.
    pub runtime: String,
    /// Where network namespaces and I/O FIFOs are kept (a tmpfs such as /run).
    pub state_dir: PathBuf,
    /// Region, account, init timeout and log sink, as every local backend has them.
    pub lambda: LambdaSettings,
    /// CPUs each sandbox may use (CFS quota); `None` leaves only the memory-proportional shares.
    pub cpus: Option<f64>,
    /// Maximum number of processes and threads in a sandbox.
    pub pids_limit: u32,
    /// Size of each sandbox's writable `/tmp`, in MB.
    pub tmp_size_mb: u32,
    /// Extra variables every sandbox gets after the Lambda ones, e.g. `AWS_ENDPOINT_URL_S3`.
    pub endpoints: BTreeMap<String, String>,
    /// Registries: insecure (plain HTTP) ones and credentials.
    pub registries: RegistryConfig,
    /// Attach sandboxes to a CNI bridge (needed for `rie` mode and to reach services).
    pub cni: Option<CniConfig>,
    /// How sandboxes are frozen and thawed.
    pub freezer: Freezer,
}

/// How [`ContainerdRuntime`] pauses and resumes sandboxes: both use the kernel's cgroup
/// freezer, and differ in the path to it (see README for their measured cost).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Freezer {
    /// Write the sandbox's cgroup freezer directly (`cgroup.freeze` on v2, `freezer.state`
    /// on v1). containerd keeps reporting such a task as running.
    #[default]
    Cgroup,
    /// Ask containerd (Tasks.Pause / Tasks.Resume), which runs `runc pause` / `runc resume`.
    Tasks,
}

impl Default for ContainerdConfig {
    fn default() -> Self {
        Self {
            address: PathBuf::from("/run/containerd/containerd.sock"),
            env: "default".into(),
            snapshotter: "overlayfs".into(),
            runtime: "io.containerd.runc.v2".into(),
            state_dir: PathBuf::from("/run/esb"),
            lambda: LambdaSettings::default(),
            cpus: Some(1.0),
            pids_limit: 1024,
            tmp_size_mb: 512,
            endpoints: BTreeMap::new(),
            registries: RegistryConfig::default(),
            cni: None,
            freezer: Freezer::default(),
        }
    }
}

impl ContainerdConfig {
    /// The containerd namespace of this environment: `esb-<env>`.
    pub fn namespace(&self) -> String {
        format!("esb-{}", self.env)
    }

    /// Sets containerd's gRPC socket.
    pub fn address(mut self, address: impl Into<PathBuf>) -> Self {
        self.address = address.into();
        self
    }

    /// Sets the ESB environment (namespace `esb-<env>`).
    pub fn env(mut self, env: impl Into<String>) -> Self {
        self.env = env.into();
        self
    }

    /// Sets where network namespaces and I/O FIFOs are kept.
    pub fn state_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.state_dir = dir.into();
        self
    }

    crate::sandbox::lambda_setters!(lambda);

    /// Sets the CPUs each sandbox may use (`None`: memory-proportional shares only).
    pub fn cpus(mut self, cpus: Option<f64>) -> Self {
        self.cpus = cpus;
        self
    }

    /// Adds a variable every sandbox gets after the Lambda ones.
    pub fn endpoint(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.endpoints.insert(key.into(), value.into());
        self
    }

    /// Sets the registries: insecure ones and credentials.
    pub fn registries(mut self, registries: RegistryConfig) -> Self {
        self.registries = registries;
        self
    }

    /// Attaches sandboxes to this CNI bridge.
    pub fn cni(mut self, cni: Option<CniConfig>) -> Self {
        self.cni = cni;
        self
    }

    /// Sets how sandboxes are frozen and thawed.
    pub fn freezer(mut self, freezer: Freezer) -> Self {
        self.freezer = freezer;
        self
    }
}

/// What [`ContainerdRuntime::reconcile`] does with sandboxes of this env it did not create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ReconcilePolicy {
    /// Take the sandboxes over, keeping their ids: a running `rie` sandbox keeps its task
    /// (logs re-attached, exit followed); a `runtime-api` sandbox gets a fresh task in the
    /// same container and network namespace behind a new Runtime API listener (its runtime
    /// client does not poll again once the old listener is gone), so its next invocation is
    /// a cold start. Sandboxes that cannot be taken over are removed.
    Adopt,
    /// Remove them all.
    Remove,
}

/// What a reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconciled {
    /// Sandboxes taken over.
    pub adopted: Vec<SandboxId>,
    /// Sandboxes removed.
    pub removed: Vec<SandboxId>,
}

struct Sandbox {
    core: Core,
    timeout: Duration,
    mode: InvokeMode,
    ip: Option<Ipv4Addr>,
    cgroup: Cgroup,
    workers: Mutex<Vec<JoinHandle<()>>>,
    /// When its task started (the init timeout counts from here).
    started: std::time::Instant,
    /// `rie` mode: the emulator has been seen listening.
    rie_ready: std::sync::atomic::AtomicBool,
    /// `rie` mode: the wait for the emulator, reported once as the first invocation's init.
    rie_init: Mutex<Option<Duration>>,
}

impl Sandbox {
    fn stop_workers(&self) {
        self.core.stop_server();
        for worker in lock(&self.workers).drain(..) {
            worker.abort();
        }
    }
}

impl Drop for Sandbox {
    /// The FIFO readers never see EOF by themselves: a forgotten sandbox must stop them.
    fn drop(&mut self) {
        self.stop_workers();
    }
}

/// What [`ContainerdRuntime::launch`] needs to start a task in an existing container.
struct Launch {
    function_name: String,
    memory_mb: u32,
    timeout: Duration,
    mode: InvokeMode,
    /// The Runtime API listener bound in the sandbox's namespace (`runtime-api` mode).
    listener: Option<tokio::net::TcpListener>,
    rootfs: Vec<containerd_client::types::Mount>,
    ip: Option<Ipv4Addr>,
    labels: BTreeMap<String, String>,
    created_at: SystemTime,
}

impl Launch {
    /// The sandbox `id` this launch makes, as `list` shows it.
    fn info(&self, id: &SandboxId) -> SandboxInfo {
        SandboxInfo {
            id: id.clone(),
            function_name: self.function_name.clone(),
            state: SandboxState::Running,
            created_at: self.created_at,
            labels: self.labels.clone(),
        }
    }
}

/// Aborts spawned workers unless disarmed: a launch that fails half-way leaves none behind.
struct Workers(Vec<JoinHandle<()>>);

impl Drop for Workers {
    fn drop(&mut self) {
        for worker in self.0.drain(..) {
            worker.abort();
        }
    }
}

type HttpClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

/// Runs sandboxes as containerd containers.
pub struct ContainerdRuntime {
    config: ContainerdConfig,
    namespace: String,
    ctr: Ctr,
    images: Images,
    cni: Option<Cni>,
    http: HttpClient,
    sandboxes: Mutex<HashMap<SandboxId, Arc<Sandbox>>>,
    /// Teardowns under way (the network is released only once none is).
    teardowns: watch::Sender<usize>,
}

/// Counts a teardown as under way while it lives.
struct TeardownGuard<'a>(&'a watch::Sender<usize>);

impl<'a> TeardownGuard<'a> {
    fn new(count: &'a watch::Sender<usize>) -> Self {
        count.send_modify(|n| *n += 1);
        Self(count)
    }
}

impl Drop for TeardownGuard<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl std::fmt::Debug for ContainerdRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerdRuntime")
            .field("namespace", &self.namespace)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

fn timestamp_to_system(ts: Option<prost_types::Timestamp>) -> SystemTime {
    ts.and_then(|ts| {
        let secs = u64::try_from(ts.seconds).ok()?;
        let nanos = u32::try_from(ts.nanos).ok()?;
        Some(SystemTime::UNIX_EPOCH + Duration::new(secs, nanos))
    })
    .unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Why the containerd backend could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// containerd cannot be reached or used.
    #[error("cannot use containerd at {} (namespace {namespace})", .address.display())]
    Connect {
        /// containerd's socket.
        address: PathBuf,
        /// The namespace of the environment.
        namespace: String,
        /// What failed.
        #[source]
        source: Error,
    },
    /// The sandboxes an earlier process left could not be adopted or removed.
    #[error("cannot reconcile the sandboxes left in containerd namespace {namespace}")]
    Reconcile {
        /// The namespace of the environment.
        namespace: String,
        /// What failed.
        #[source]
        source: Error,
    },
}

/// The start-up both binaries share: connects to containerd, then adopts or removes (by
/// `policy`) the sandboxes an earlier process left in this environment.
pub async fn connect(
    config: ContainerdConfig,
    policy: ReconcilePolicy,
) -> std::result::Result<ContainerdRuntime, StartError> {
    let namespace = config.namespace();
    let address = config.address.clone();
    let runtime =
        ContainerdRuntime::connect(config)
            .await
            .map_err(|source| StartError::Connect {
                address,
                namespace: namespace.clone(),
                source,
            })?;
    let reconciled = runtime
        .reconcile(policy)
        .await
        .map_err(|source| StartError::Reconcile {
            namespace: namespace.clone(),
            source,
        })?;
    tracing::info!(
        %namespace,
        adopted = reconciled.adopted.len(),
        removed = reconciled.removed.len(),
        "containerd sandboxes reconciled"
    );
    Ok(runtime)
}

impl ContainerdRuntime {
    /// Connects to containerd and prepares the CNI network if one is configured.
    pub async fn connect(config: ContainerdConfig) -> Result<Self> {
        let namespace = config.namespace();
        let ctr = Ctr::connect(&config.address, &namespace).await?;
        let mut version = containerd_client::services::v1::version_client::VersionClient::new(
            ctr.channel.clone(),
        );
        version.version(()).await.map_err(|status| {
            Error::Unavailable(format!(
                "containerd at {} does not answer: {}",
                config.address.display(),
                status.message()
            ))
        })?;
        let cni = config.cni.clone().map(Cni::new).transpose()?;
        let images = Images::new(
            ctr.clone(),
            config.registries.clone(),
            config.snapshotter.clone(),
        );
        let http =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http();
        Ok(Self {
            config,
            namespace,
            ctr,
            images,
            cni,
            http,
            sandboxes: Mutex::new(HashMap::new()),
            teardowns: watch::channel(0).0,
        })
    }

    /// The containerd namespace this runtime works in.
    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    /// Pulls and unpacks an image now, so the first sandbox of it starts faster.
    pub async fn pull_image(&self, name: &str) -> Result<()> {
        self.images.ensure(name).await.map(|_| ())
    }

    /// Imports an OCI layout or `docker save` tarball and records its image under `name`.
    pub async fn import_image(&self, archive: &Path, name: &str) -> Result<()> {
        self.images.import(archive, name).await.map(|_| ())
    }

    /// The address of a sandbox on the CNI network, if it is attached to one.
    pub fn sandbox_ip(&self, id: &SandboxId) -> Option<Ipv4Addr> {
        self.get(id).ok()?.ip
    }

    /// Where the IPAM leases of the CNI network are kept, if one is configured.
    pub fn cni_lease_dir(&self) -> Option<PathBuf> {
        self.cni.as_ref().map(Cni::lease_dir)
    }

    /// The generated CNI conflist, if a network is configured.
    pub fn cni_conflist(&self) -> Option<PathBuf> {
        self.cni.as_ref().map(Cni::conflist)
    }

    /// At stop: removes the CNI conflist, lease directory and bridge this runtime set up,
    /// when no sandbox (of this process or another on the same network) holds a lease any
    /// more. A bridge that existed before ESB first used the network is kept.
    pub async fn release_network(&self) -> Result<NetworkRelease> {
        // A destroy still under way (e.g. of a crashed sandbox) is about to free its lease.
        let mut teardowns = self.teardowns.subscribe();
        let _ = tokio::time::timeout(KILL_WAIT * 2, teardowns.wait_for(|n| *n == 0)).await;
        match &self.cni {
            Some(cni) => cni.release().await,
            None => Ok(NetworkRelease::None),
        }
    }

    /// The path of a sandbox's network namespace.
    pub fn netns_path(&self, id: &SandboxId) -> PathBuf {
        self.config
            .state_dir
            .join(&self.namespace)
            .join("netns")
            .join(id.as_str())
    }

    fn io_dir(&self, id: &SandboxId) -> PathBuf {
        self.config
            .state_dir
            .join(&self.namespace)
            .join("io")
            .join(id.as_str())
    }

    fn cgroups_path(&self, id: &SandboxId) -> String {
        format!("/esb/{}/{}", self.namespace, id)
    }

    fn get(&self, id: &SandboxId) -> Result<Arc<Sandbox>> {
        lock(&self.sandboxes)
            .get(id)
            .cloned()
            .ok_or_else(|| Error::NotFound(id.clone()))
    }

    fn tasks(&self) -> TasksClient<containerd_client::tonic::transport::Channel> {
        TasksClient::new(self.ctr.channel.clone())
    }

    fn containers(&self) -> ContainersClient<containerd_client::tonic::transport::Channel> {
        ContainersClient::new(self.ctr.channel.clone())
    }

    fn snapshots(&self) -> SnapshotsClient<containerd_client::tonic::transport::Channel> {
        SnapshotsClient::new(self.ctr.channel.clone())
    }

    fn labels(&self, spec: &SandboxSpec, ip: Option<Ipv4Addr>) -> HashMap<String, String> {
        let mut labels = HashMap::from([
            (LABEL_CREATED_BY.to_owned(), CREATED_BY.to_owned()),
            (LABEL_ENV.to_owned(), self.config.env.clone()),
            (LABEL_FUNCTION.to_owned(), spec.function_name.clone()),
            (
                LABEL_INVOKE.to_owned(),
                match spec.invoke_mode {
                    InvokeMode::RuntimeApi => "runtime-api",
                    InvokeMode::Rie => "rie",
                }
                .to_owned(),
            ),
            (LABEL_MEMORY.to_owned(), spec.memory_mb.to_string()),
            (
                LABEL_TIMEOUT.to_owned(),
                spec.timeout.as_millis().to_string(),
            ),
        ]);
        if let (Some(cni), Some(ip)) = (&self.cni, ip) {
            labels.insert(LABEL_NETWORK.to_owned(), cni.network().to_owned());
            labels.insert(LABEL_IP.to_owned(), ip.to_string());
        }
        // The caller's labels (e.g. its owner), never over the backend's own.
        for (key, value) in &spec.labels {
            labels.entry(key.clone()).or_insert_with(|| value.clone());
        }
        labels
    }

    fn environment(
        &self,
        spec: &SandboxSpec,
        id: &SandboxId,
        image_env: &[String],
    ) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = image_env
            .iter()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        env.entry("PATH".into()).or_insert_with(|| {
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into()
        });
        let runtime_api =
            (spec.invoke_mode == InvokeMode::RuntimeApi).then_some(netns::RUNTIME_API_ADDR);
        env.extend(self.config.lambda.environment(
            spec,
            id,
            "/var/task",
            runtime_api,
            "containerd",
        ));
        env.insert("LAMBDA_RUNTIME_DIR".into(), "/var/runtime".into());
        if spec.invoke_mode == InvokeMode::Rie {
            // The emulator's deadline: it reads whole seconds from here (300 when unset).
            env.insert(
                "AWS_LAMBDA_FUNCTION_TIMEOUT".into(),
                rie::timeout_env(spec.timeout),
            );
        }
        env.extend(self.config.endpoints.clone());
        env.extend(spec.env.clone());
        env
    }

    /// Opens the task's output FIFOs (creating them if needed) and reads them line by line
    /// into the log sink for as long as the sandbox lives.
    fn attach_output(
        &self,
        info: &SandboxInfo,
        broker: &Broker,
    ) -> Result<(PathBuf, PathBuf, Vec<JoinHandle<()>>)> {
        let dir = self.io_dir(&info.id);
        std::fs::create_dir_all(&dir)?;
        let rie = info
            .labels
            .get(LABEL_INVOKE)
            .is_some_and(|mode| mode == "rie");
        let mut workers = Vec::new();
        let mut paths = Vec::new();
        for (name, stream) in [("stdout", LogStream::Stdout), ("stderr", LogStream::Stderr)] {
            let path = dir.join(name);
            if !path.exists() {
                nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600))
                    .map_err(|errno| Error::Os {
                        operation: format!("mkfifo {}", path.display()),
                        source: errno.into(),
                    })?;
            }
            // Read-write: the open never blocks, and the FIFO never reports EOF, so the
            // reader stays until the sandbox is destroyed and the shim never blocks on it.
            let fifo = tokio::net::unix::pipe::OpenOptions::new()
                .read_write(true)
                .open_receiver(&path)?;
            // END and REPORT wait until what the function wrote before its answer is read.
            broker.output().watch(&fifo);
            let lambda = &self.config.lambda;
            if stream == LogStream::Stdout && rie {
                // The emulator prints its own START/END/REPORT (under its own request id);
                // ESB prints Lambda's.
                let (filtered, filter) = rie::without_platform_lines(fifo);
                workers.push(filter);
                workers.push(lambda.spawn_log_reader(filtered, stream, broker.clone(), info));
            } else {
                workers.push(lambda.spawn_log_reader(fifo, stream, broker.clone(), info));
            }
            paths.push(path);
        }
        let stderr = paths.pop().unwrap_or_default();
        let stdout = paths.pop().unwrap_or_default();
        Ok((stdout, stderr, workers))
    }

    /// Follows the task until it exits, then fails its broker with the reason.
    fn watch_exit(
        &self,
        id: &SandboxId,
        broker: Broker,
        cgroup: Cgroup,
        memory_mb: u32,
    ) -> (watch::Receiver<Option<String>>, JoinHandle<()>) {
        let (exited_tx, exited_rx) = watch::channel(None);
        let mut tasks = self.tasks();
        let request = self.ctr.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        let handle = tokio::spawn(async move {
            let reason = match tasks.wait(request).await {
                Ok(response) => {
                    let status = response.into_inner().exit_status;
                    exit_reason(status, cgroup.oom_kills() > 0, memory_mb)
                }
                Err(status) => format!("lost track of the task: {}", status.message()),
            };
            broker.lost(reason.clone());
            let _ = exited_tx.send(Some(reason));
        });
        (exited_rx, handle)
    }

    /// Thaws a task however it was frozen (by either [`Freezer`]), so that it can handle
    /// its SIGKILL; a task that is not frozen, or gone, is fine.
    async fn thaw(&self, id: &SandboxId) {
        let cgroup = self.cgroup_of(id);
        if cgroup.is_frozen().unwrap_or(false) {
            let resumed = self
                .tasks()
                .resume(self.ctr.req(ResumeTaskRequest {
                    container_id: id.to_string(),
                }))
                .await;
            if resumed.is_err()
                && let Err(err) = cgroup.set_frozen(false).await
            {
                tracing::warn!(sandbox = %id, %err, "cannot thaw the task");
            }
        }
    }

    /// Waits (at most [`KILL_WAIT`]) for a killed task no watcher follows, then deletes it.
    async fn reap_task(&self, id: &SandboxId) -> Result<()> {
        let request = self.ctr.req(WaitRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
        });
        let mut tasks = self.tasks();
        let _ = tokio::time::timeout(KILL_WAIT, tasks.wait(request)).await;
        self.delete_task(id).await
    }

    /// Deletes a stopped task; a missing one is fine.
    async fn delete_task(&self, id: &SandboxId) -> Result<()> {
        let deleted = self
            .tasks()
            .delete(self.ctr.req(DeleteTaskRequest {
                container_id: id.to_string(),
            }))
            .await;
        ignore_not_found("delete task", id.as_str(), deleted)
    }

    async fn kill_task(&self, id: &SandboxId) -> Result<()> {
        let request = KillRequest {
            container_id: id.to_string(),
            exec_id: String::new(),
            signal: 9,
            all: true,
        };
        match self.tasks().kill(self.ctr.req(request)).await {
            Ok(_) => Ok(()),
            Err(status) if matches!(status.code(), Code::NotFound | Code::FailedPrecondition) => {
                Ok(())
            }
            Err(status) => Err(status_error("kill task", id.as_str(), status)),
        }
    }

    /// Kills a sandbox's task and waits until it is reported gone; the records stay.
    async fn kill(&self, sandbox: &Sandbox) {
        let id = &sandbox.core.info.id;
        if let Err(err) = self.kill_task(id).await {
            tracing::warn!(sandbox = %id, %err, "cannot kill task");
        }
        sandbox.core.wait_exit(Some(KILL_WAIT)).await;
    }

    /// Removes everything of sandbox `id` that exists: task, snapshot, container, CNI
    /// attachment, network namespace and FIFOs. Missing pieces are fine.
    async fn teardown(&self, id: &SandboxId, sandbox: Option<&Sandbox>) -> Result<()> {
        let _under_way = TeardownGuard::new(&self.teardowns);
        let container = self
            .containers()
            .get(self.ctr.req(GetContainerRequest { id: id.to_string() }))
            .await
            .ok()
            .and_then(|r| r.into_inner().container);
        self.thaw(id).await;
        self.kill_task(id).await?;
        match sandbox {
            Some(sandbox) => {
                sandbox.core.wait_exit(Some(KILL_WAIT)).await;
                sandbox.stop_workers();
                self.delete_task(id).await?;
            }
            None => self.reap_task(id).await?,
        }
        let removed = self
            .snapshots()
            .remove(self.ctr.req(RemoveSnapshotRequest {
                snapshotter: self.config.snapshotter.clone(),
                key: id.to_string(),
            }))
            .await;
        ignore_not_found("remove snapshot", id.as_str(), removed)?;
        let deleted = self
            .containers()
            .delete(self.ctr.req(DeleteContainerRequest { id: id.to_string() }))
            .await;
        ignore_not_found("delete container", id.as_str(), deleted)?;
        let netns = self.netns_path(id);
        let attached = container
            .as_ref()
            .is_some_and(|c| c.labels.contains_key(LABEL_NETWORK));
        if let Some(cni) = &self.cni
            && (attached || container.is_none())
            && let Err(err) = cni.del(id.as_str(), &netns).await
        {
            tracing::warn!(sandbox = %id, %err, "CNI DEL failed");
        }
        netns::remove(&netns)?;
        match std::fs::remove_dir_all(self.io_dir(id)) {
            Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::Io(err)),
            _ => Ok(()),
        }
    }

    /// Everything `create` does after the sandbox's id is chosen; on error the caller tears
    /// down what was made.
    async fn start(&self, id: &SandboxId, spec: &SandboxSpec) -> Result<Arc<Sandbox>> {
        let image_name = self.check(spec)?;
        let image = self.images.ensure(image_name).await?;
        let args = Self::args(spec, image_name, &image.run)?;
        let netns_path = self.netns_path(id);
        let listener = netns::create(netns_path.clone()).await?;
        let ip = match &self.cni {
            Some(cni) => Some(cni.add(id.as_str(), &netns_path).await?),
            None => None,
        };
        let runtime_spec = self.runtime_spec(id, spec, args, &image.run, &netns_path);
        let rootfs = self
            .create_container(id, spec, &image, runtime_spec, ip)
            .await?;
        self.launch(
            id,
            Launch {
                function_name: spec.function_name.clone(),
                memory_mb: spec.memory_mb,
                timeout: spec.timeout,
                mode: spec.invoke_mode,
                listener: (spec.invoke_mode == InvokeMode::RuntimeApi).then_some(listener),
                rootfs,
                ip,
                labels: self.labels(spec, ip).into_iter().collect(),
                created_at: SystemTime::now(),
            },
        )
        .await
    }

    /// The image of a spec this backend can run.
    fn check<'a>(&self, spec: &'a SandboxSpec) -> Result<&'a str> {
        let image_name = spec.image.as_deref().ok_or_else(|| Error::InvalidSpec {
            function: spec.function_name.clone(),
            reason: "the containerd backend needs an image".into(),
        })?;
        for mount in &spec.mounts {
            if !mount.source.is_absolute() || !mount.source.is_dir() {
                return Err(Error::InvalidSpec {
                    function: spec.function_name.clone(),
                    reason: format!(
                        "mount source {} (for {}) is not an existing absolute directory",
                        mount.source.display(),
                        mount.destination
                    ),
                });
            }
        }
        if spec.invoke_mode == InvokeMode::Rie && self.cni.is_none() {
            return Err(Error::InvalidSpec {
                function: spec.function_name.clone(),
                reason: "invoke mode rie needs a CNI network (none is configured)".into(),
            });
        }
        Ok(image_name)
    }

    /// The command line of the task: the spec's, or the image's entrypoint and cmd.
    fn args(spec: &SandboxSpec, image_name: &str, run: &ImageRunConfig) -> Result<Vec<String>> {
        let args: Vec<String> = match &spec.command {
            Some(command) => command.clone(),
            None => run
                .entrypoint
                .iter()
                .flatten()
                .chain(run.cmd.iter().flatten())
                .cloned()
                .collect(),
        };
        if args.is_empty() {
            return Err(Error::InvalidSpec {
                function: spec.function_name.clone(),
                reason: format!(
                    "image {image_name} has no entrypoint or cmd, and no command was given"
                ),
            });
        }
        Ok(args)
    }

    /// The OCI runtime spec of the sandbox's task.
    fn runtime_spec(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        args: Vec<String>,
        run: &ImageRunConfig,
        netns_path: &Path,
    ) -> serde_json::Value {
        let cgroups_path = self.cgroups_path(id);
        let netns_str = netns_path.display().to_string();
        let hostname: String = id.as_str().chars().take(63).collect();
        oci::runtime_spec(&oci::SpecInput {
            args,
            env: self.environment(spec, id, run.env.as_deref().unwrap_or_default()),
            cwd: run
                .working_dir
                .clone()
                .filter(|d| !d.is_empty())
                .unwrap_or_else(|| "/".into()),
            user: run.user.as_deref(),
            hostname: &hostname,
            memory_bytes: u64::from(spec.memory_mb) * 1024 * 1024,
            cpu_quota_us: self
                .config
                .cpus
                .map(|cpus| (cpus * oci::CPU_PERIOD_US as f64) as u64),
            cpu_shares: (u64::from(spec.memory_mb) * 1024 / 1769).max(2),
            pids: self.config.pids_limit,
            tmp_size_mb: self.config.tmp_size_mb,
            cgroups_path: &cgroups_path,
            netns_path: &netns_str,
            mounts: &spec.mounts,
        })
    }

    /// Prepares the sandbox's snapshot on the image and creates its container; returns the
    /// snapshot's mounts (the task's root filesystem).
    async fn create_container(
        &self,
        id: &SandboxId,
        spec: &SandboxSpec,
        image: &image::ReadyImage,
        runtime_spec: serde_json::Value,
        ip: Option<Ipv4Addr>,
    ) -> Result<Vec<containerd_client::types::Mount>> {
        // The lease keeps containerd's GC off the new snapshot until the container holds it.
        let lease = self.images.lease("create").await?;
        let prepared = async {
            let mounts = self
                .snapshots()
                .prepare(self.ctr.leased(
                    PrepareSnapshotRequest {
                        snapshotter: self.config.snapshotter.clone(),
                        key: id.to_string(),
                        parent: image.chain_id.clone(),
                        labels: HashMap::new(),
                    },
                    &lease,
                ))
                .await
                .map_err(|s| status_error("prepare snapshot", id.as_str(), s))?
                .into_inner()
                .mounts;
            let container = Container {
                id: id.to_string(),
                labels: self.labels(spec, ip),
                image: spec.image.clone().unwrap_or_default(),
                runtime: Some(ContainerRuntimeInfo {
                    name: self.config.runtime.clone(),
                    options: None,
                }),
                spec: Some(prost_types::Any {
                    type_url: "types.containerd.io/opencontainers/runtime-spec/1/Spec".into(),
                    value: runtime_spec.to_string().into_bytes(),
                }),
                snapshotter: self.config.snapshotter.clone(),
                snapshot_key: id.to_string(),
                ..Container::default()
            };
            self.containers()
                .create(self.ctr.leased(
                    CreateContainerRequest {
                        container: Some(container),
                    },
                    &lease,
                ))
                .await
                .map_err(|s| status_error("create container", id.as_str(), s))?;
            Ok::<_, Error>(mounts)
        }
        .await;
        self.images.release(&lease).await;
        prepared
    }

    /// Starts a task in the existing container `id`: output readers first (a FIFO needs its
    /// reader before Tasks.Create), the Runtime API server, then create, exit watch, start.
    async fn launch(&self, id: &SandboxId, launch: Launch) -> Result<Arc<Sandbox>> {
        let info = launch.info(id);
        let broker = self
            .config
            .lambda
            .broker(id, &info.function_name, launch.timeout);
        let (stdout, stderr, workers) = self.attach_output(&info, &broker)?;
        let mut workers = Workers(workers);
        let stop_server = launch.listener.map(|listener| {
            let (stop, server) = sandbox::serve_runtime_api(listener, broker.clone());
            workers.0.push(server);
            stop
        });

        self.tasks()
            .create(self.ctr.req(CreateTaskRequest {
                container_id: id.to_string(),
                rootfs: launch.rootfs,
                stdout: stdout.display().to_string(),
                stderr: stderr.display().to_string(),
                ..CreateTaskRequest::default()
            }))
            .await
            .map_err(|s| status_error("create task", id.as_str(), s))?;
        let cgroup = self.cgroup_of(id);
        let (exited, waiter) =
            self.watch_exit(id, broker.clone(), cgroup.clone(), launch.memory_mb);
        workers.0.push(waiter);
        self.tasks()
            .start(self.ctr.req(StartRequest {
                container_id: id.to_string(),
                exec_id: String::new(),
            }))
            .await
            .map_err(|s| status_error("start task", id.as_str(), s))?;

        Ok(Arc::new(Sandbox {
            core: Core::new(info, launch.memory_mb, broker, exited, stop_server)
                .runtime_api(launch.mode == InvokeMode::RuntimeApi),
            timeout: launch.timeout,
            mode: launch.mode,
            ip: launch.ip,
            cgroup,
            workers: Mutex::new(std::mem::take(&mut workers.0)),
            started: std::time::Instant::now(),
            rie_ready: std::sync::atomic::AtomicBool::new(false),
            rie_init: Mutex::new(None),
        }))
    }

    /// The ESB containers of this env in containerd.
    async fn esb_containers(&self) -> Result<Vec<Container>> {
        let filter = format!(
            "labels.\"{LABEL_CREATED_BY}\"=={CREATED_BY},labels.\"{LABEL_ENV}\"=={}",
            self.config.env
        );
        Ok(self
            .containers()
            .list(self.ctr.req(ListContainersRequest {
                filters: vec![filter],
            }))
            .await
            .map_err(|s| status_error("list containers", &self.namespace, s))?
            .into_inner()
            .containers)
    }

    async fn task_state(&self, id: &str) -> Result<SandboxState> {
        let request = self.ctr.req(GetTaskRequest {
            container_id: id.to_owned(),
            exec_id: String::new(),
        });
        match self.tasks().get(request).await {
            Ok(response) => Ok(
                match response
                    .into_inner()
                    .process
                    .map(|p| TaskStatus::try_from(p.status).unwrap_or(TaskStatus::Unknown))
                {
                    Some(TaskStatus::Running | TaskStatus::Created) => SandboxState::Running,
                    Some(TaskStatus::Paused | TaskStatus::Pausing) => SandboxState::Paused,
                    Some(TaskStatus::Stopped) => SandboxState::Stopped,
                    _ => SandboxState::Unknown,
                },
            ),
            Err(status) if status.code() == Code::NotFound => Ok(SandboxState::Stopped),
            Err(status) => Err(status_error("get task", id, status)),
        }
    }

    /// Finds this env's sandboxes that this runtime does not track (left by an earlier
    /// process) and adopts or removes them. Containers without this env's labels are never
    /// touched.
    pub async fn reconcile(&self, policy: ReconcilePolicy) -> Result<Reconciled> {
        let mut done = Reconciled::default();
        for container in self.esb_containers().await? {
            let id = SandboxId::new(container.id.clone());
            if self.get(&id).is_ok() {
                continue;
            }
            if policy == ReconcilePolicy::Adopt {
                match self.adopt(&container).await {
                    Ok(sandbox) => {
                        lock(&self.sandboxes).insert(id.clone(), sandbox);
                        done.adopted.push(id);
                        continue;
                    }
                    Err(err) => tracing::warn!(sandbox = %id, %err, "cannot adopt; removing it"),
                }
            }
            self.teardown(&id, None).await?;
            done.removed.push(id);
        }
        Ok(done)
    }

    /// Takes over a sandbox left by an earlier process.
    ///
    /// A running `rie` sandbox keeps its task: its FIFOs are read again and its exit
    /// followed. A `runtime-api` sandbox's runtime client lost the Runtime API connection of
    /// the process that made it and does not poll again, so its task is replaced by a fresh
    /// one in the same container, snapshot, network namespace and address, behind a new
    /// Runtime API listener: the sandbox keeps its id, and its next invocation is a cold start.
    async fn adopt(&self, container: &Container) -> Result<Arc<Sandbox>> {
        let id = SandboxId::new(container.id.clone());
        let label = |key: &str| container.labels.get(key).cloned().unwrap_or_default();
        let mode = if label(LABEL_INVOKE) == "rie" {
            InvokeMode::Rie
        } else {
            InvokeMode::RuntimeApi
        };
        let launch = |listener, rootfs| Launch {
            function_name: label(LABEL_FUNCTION),
            memory_mb: label(LABEL_MEMORY).parse().unwrap_or(128),
            timeout: label(LABEL_TIMEOUT)
                .parse()
                .map(Duration::from_millis)
                .unwrap_or(Duration::from_secs(3)),
            mode,
            listener,
            rootfs,
            ip: label(LABEL_IP).parse().ok(),
            labels: container.labels.clone().into_iter().collect(),
            created_at: timestamp_to_system(container.created_at),
        };
        let state = self.task_state(&container.id).await?;
        if mode == InvokeMode::Rie {
            if state != SandboxState::Running {
                return Err(Error::Backend(format!("its task is {state:?}")));
            }
            return Ok(self.follow(&id, launch(None, Vec::new())));
        }

        let netns_path = self.netns_path(&id);
        if !netns_path.exists() {
            return Err(Error::Backend(format!(
                "its network namespace {} is gone",
                netns_path.display()
            )));
        }
        self.thaw(&id).await;
        self.kill_task(&id).await?;
        self.reap_task(&id).await?;
        let rootfs = self
            .snapshots()
            .mounts(self.ctr.req(MountsRequest {
                snapshotter: container.snapshotter.clone(),
                key: container.snapshot_key.clone(),
            }))
            .await
            .map_err(|s| status_error("snapshot mounts", id.as_str(), s))?
            .into_inner()
            .mounts;
        let listener = netns::listen_in(netns_path).await?;
        self.launch(&id, launch(Some(listener), rootfs)).await
    }

    /// Follows a running task this process did not start: output FIFOs read, exit watched.
    fn follow(&self, id: &SandboxId, launch: Launch) -> Arc<Sandbox> {
        let info = launch.info(id);
        let broker = self
            .config
            .lambda
            .broker(id, &info.function_name, launch.timeout);
        let mut workers = match self.attach_output(&info, &broker) {
            Ok((_, _, workers)) => workers,
            Err(err) => {
                tracing::warn!(sandbox = %id, %err, "cannot read the adopted task's output");
                Vec::new()
            }
        };
        let cgroup = self.cgroup_of(id);
        let (exited, waiter) =
            self.watch_exit(id, broker.clone(), cgroup.clone(), launch.memory_mb);
        workers.push(waiter);
        Arc::new(Sandbox {
            core: Core::new(info, launch.memory_mb, broker, exited, None)
                .runtime_api(launch.mode == InvokeMode::RuntimeApi),
            timeout: launch.timeout,
            mode: launch.mode,
            ip: launch.ip,
            cgroup,
            workers: Mutex::new(workers),
            started: std::time::Instant::now(),
            // A running task taken over was already serving.
            rie_ready: std::sync::atomic::AtomicBool::new(true),
            rie_init: Mutex::new(None),
        })
    }

    /// Freezes (`frozen`) or thaws a sandbox with the configured [`Freezer`].
    async fn freeze(&self, id: &SandboxId, frozen: bool) -> Result<()> {
        let sandbox = self.get(id)?;
        match self.config.freezer {
            Freezer::Cgroup => {
                sandbox
                    .cgroup
                    .set_frozen(frozen)
                    .await
                    .map_err(|source| Error::Os {
                        operation: format!(
                            "cannot {} sandbox {id}",
                            if frozen { "freeze" } else { "thaw" }
                        ),
                        source,
                    })?
            }
            Freezer::Tasks => {
                let container_id = id.to_string();
                let done = if frozen {
                    let request = self.ctr.req(PauseTaskRequest { container_id });
                    self.tasks().pause(request).await.map(drop)
                } else {
                    let request = self.ctr.req(ResumeTaskRequest { container_id });
                    self.tasks().resume(request).await.map(drop)
                };
                let operation = if frozen { "pause task" } else { "resume task" };
                done.map_err(|s| status_error(operation, id.as_str(), s))?;
            }
        }
        sandbox.core.set_paused(frozen);
        Ok(())
    }

    fn cgroup_of(&self, id: &SandboxId) -> Cgroup {
        Cgroup::new(self.cgroups_path(id))
    }

    /// One invocation, the way the sandbox's invoke mode reaches the function.
    async fn run(&self, sandbox: &Sandbox, request: InvokeRequest) -> Result<InvokeResponse> {
        match sandbox.mode {
            InvokeMode::RuntimeApi => sandbox.core.broker.invoke(request).await,
            InvokeMode::Rie => self.invoke_rie(sandbox, request).await,
        }
    }

    /// `rie` mode, before a sandbox's first invocation: waits (within the init timeout,
    /// counted from the task's start) until the emulator listens, and keeps the wait as the
    /// invocation's init duration.
    async fn wait_rie_ready(&self, sandbox: &Sandbox) -> Result<()> {
        use std::sync::atomic::Ordering;
        if sandbox.mode != InvokeMode::Rie || sandbox.rie_ready.load(Ordering::Acquire) {
            return Ok(());
        }
        let info = &sandbox.core.info;
        let ip = sandbox.ip.ok_or_else(|| Error::InvalidSpec {
            function: info.function_name.clone(),
            reason: "rie mode needs the sandbox's CNI address, and it has none".into(),
        })?;
        let init_timeout = self.config.lambda.init_timeout;
        rie::wait_ready(
            &info.id,
            ip,
            sandbox.started + init_timeout,
            init_timeout,
            sandbox.core.exited.clone(),
        )
        .await?;
        *lock(&sandbox.rie_init) = Some(sandbox.started.elapsed());
        sandbox.rie_ready.store(true, Ordering::Release);
        Ok(())
    }

    /// One invocation in `rie` mode: a POST to the emulator on the sandbox's address, its
    /// answer read as the emulator writes function errors, timeouts and crashes.
    async fn invoke_rie(
        &self,
        sandbox: &Sandbox,
        request: InvokeRequest,
    ) -> Result<InvokeResponse> {
        let info = &sandbox.core.info;
        if let Some(reason) = sandbox.core.exited.borrow().clone() {
            return Err(Error::SandboxLost {
                id: info.id.clone(),
                reason,
            });
        }
        let ip = sandbox.ip.ok_or_else(|| Error::InvalidSpec {
            function: info.function_name.clone(),
            reason: "rie mode needs the sandbox's CNI address, and it has none".into(),
        })?;
        let timeout = request.timeout.unwrap_or(sandbox.timeout);
        let uri = format!("http://{ip}:{}{}", rie::PORT, rie::PATH);
        let mut builder = http::Request::post(&uri);
        for (name, value) in rie::headers(
            request.trace_id.as_deref(),
            request.client_context.as_deref(),
        ) {
            builder = builder.header(name, value);
        }
        let http_request =
            builder
                .body(Full::new(request.payload))
                .map_err(|err| Error::Other {
                    operation: format!("building request to {uri}"),
                    source: err.into(),
                })?;
        sandbox
            .core
            .broker
            .note_request(&request.request_id, request.trace_id.clone());
        let started = std::time::Instant::now();
        let mut exited = sandbox.core.exited.clone();
        let outcome = tokio::select! {
            response = tokio::time::timeout(timeout, async {
                let response = self.http.request(http_request).await
                    .map_err(|err| Error::Other { operation: format!("POST {uri}"), source: err.into() })?;
                let status = response.status();
                let function_error = response.headers().get("x-amz-function-error")
                    .and_then(|v| v.to_str().ok()).map(str::to_owned);
                let body = response.into_body().collect().await
                    .map_err(|err| Error::Other {
                        operation: format!("reading the answer of {uri}"),
                        source: err.into(),
                    })?
                    .to_bytes();
                Ok::<_, Error>((status, function_error, body))
            }) => response,
            reason = exited.wait_for(Option::is_some) => {
                let reason = reason.ok().and_then(|r| r.clone()).unwrap_or_default();
                return Err(Error::SandboxLost { id: info.id.clone(), reason });
            }
        };
        let (status, function_error, body) = match outcome {
            Ok(answer) => answer?,
            Err(_) => return Err(Error::Timeout { timeout }),
        };
        let duration = started.elapsed();
        let result = rie::classify(&info.id, status, function_error.as_deref(), body, timeout)?;
        Ok(InvokeResponse {
            result,
            duration,
            billed_duration: billed(duration),
            max_memory_used_mb: 0,
            init_duration: lock(&sandbox.rie_init).take(),
            log_tail: None,
        })
    }
}

/// Lambda's wording for a task that exited with `status`, naming an OOM kill.
fn exit_reason(status: u32, oom_killed: bool, memory_mb: u32) -> String {
    match status {
        137 if oom_killed => sandbox::oom_reason(memory_mb),
        s if s > 128 => sandbox::exit_reason(Exit::Signal(i32::try_from(s - 128).unwrap_or(0))),
        s => sandbox::exit_reason(Exit::Code(i64::from(s))),
    }
}

impl ContainerdRuntime {
    /// What this backend can do, known before one is made (to check a config against it);
    /// `network` holds only with a CNI network configured.
    pub const CAPABILITIES: Capabilities = Capabilities {
        backend: "containerd",
        pause: true,
        images: true,
        commands: true,
        metrics: true,
        network: true,
    };
}

#[async_trait]
impl Runtime for ContainerdRuntime {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let id = sandbox::new_id(&spec.function_name);
        match self.start(&id, &spec).await {
            Ok(sandbox) => {
                let info = sandbox.core.info.clone();
                lock(&self.sandboxes).insert(id, sandbox);
                Ok(info)
            }
            Err(err) => {
                if let Err(cleanup) = self.teardown(&id, None).await {
                    tracing::warn!(sandbox = %id, %cleanup, "cleanup after a failed create");
                }
                Err(err)
            }
        }
    }

    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        let sandbox = self.get(id)?;
        if sandbox.core.state() != SandboxState::Paused
            && let Err(err) = self.wait_rie_ready(&sandbox).await
        {
            if err.is_sandbox_fatal() {
                self.kill(&sandbox).await;
            }
            return Err(err);
        }
        let run = |request| self.run(&sandbox, request);
        let peak = || sandbox.cgroup.memory_peak();
        let kill = || self.kill(&sandbox);
        let lambda = &self.config.lambda;
        let core = &sandbox.core;
        core.invoke(lambda, WhenPaused::Reject, request, run, peak, kill)
            .await
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, true).await
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        self.freeze(id, false).await
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        let sandbox = lock(&self.sandboxes).remove(id);
        self.teardown(id, sandbox.as_deref()).await
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let mut infos = Vec::new();
        for container in self.esb_containers().await? {
            let id = SandboxId::new(container.id.clone());
            let state = match self.get(&id) {
                Ok(sandbox) => sandbox.core.state(),
                // Not ours (yet): containerd's word, but a task frozen through its cgroup is
                // reported running by containerd.
                Err(_) => match self.task_state(&container.id).await? {
                    SandboxState::Running if self.cgroup_of(&id).is_frozen().unwrap_or(false) => {
                        SandboxState::Paused
                    }
                    state => state,
                },
            };
            infos.push(SandboxInfo {
                function_name: container
                    .labels
                    .get(LABEL_FUNCTION)
                    .cloned()
                    .unwrap_or_default(),
                id,
                state,
                created_at: timestamp_to_system(container.created_at),
                labels: container.labels.into_iter().collect(),
            });
        }
        Ok(infos)
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        let sandbox = self.get(id)?;
        Ok(sandbox.cgroup.metrics())
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES.network(self.cni.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_named() {
        assert!(exit_reason(137, true, 128).contains("OOM"));
        assert_eq!(
            exit_reason(137, false, 128),
            "Runtime exited with error: signal: killed"
        );
        assert_eq!(
            exit_reason(3, false, 128),
            "Runtime exited with error: exit status 3"
        );
    }
}
