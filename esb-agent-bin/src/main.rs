//! `esb-agent`: runs Lambda sandboxes on one host, served over gRPC.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use esb_agent::{BearerAuth, ServeOptions, TlsFiles};
use esb_logs::{LogShipper, ShipperLayer};
use esb_runtime::Runtime;
use esb_runtime::containerd_args::ContainerdArgs;
use esb_runtime::logs::{LogSink, LogTail, TerminalLogSink};
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use tracing_subscriber::prelude::*;

/// The sandbox engine behind the agent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum RuntimeKind {
    /// containerd containers (needs root and a containerd socket).
    Containerd,
    /// Child processes of the agent (no isolation; for development and tests).
    Process,
}

impl RuntimeKind {
    /// containerd when this build has it, else process.
    const DEFAULT: Self = if cfg!(feature = "containerd") {
        Self::Containerd
    } else {
        Self::Process
    };
}

/// What to do at start with the sandboxes an earlier agent of this env left in containerd.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Reconcile {
    /// Take them over, keeping their ids (a runtime-api sandbox gets a fresh task).
    Adopt,
    /// Remove them all.
    Remove,
}

/// Runs Lambda sandboxes on this host and serves them over gRPC (esb.agent.v1).
#[derive(Debug, Parser)]
#[command(name = "esb-agent", version, about)]
struct Args {
    /// Sandbox engine.
    #[arg(long, env = "ESB_RUNTIME", value_enum, default_value_t = RuntimeKind::DEFAULT)]
    runtime: RuntimeKind,

    /// AWS_ACCESS_KEY_ID given to functions (their own `environment` wins).
    #[arg(long, env = "ESB_FUNCTION_AWS_ACCESS_KEY_ID", default_value = esb_runtime::DEFAULT_ACCESS_KEY_ID)]
    function_access_key_id: String,

    /// AWS_SECRET_ACCESS_KEY given to functions (default: a harmless local one).
    #[arg(
        long,
        env = "ESB_FUNCTION_AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    function_secret_access_key: Option<String>,

    /// AWS_SESSION_TOKEN given to functions (default: none).
    #[arg(long, env = "ESB_FUNCTION_AWS_SESSION_TOKEN", hide_env_values = true)]
    function_session_token: Option<String>,

    /// Address the gRPC server listens on.
    #[arg(long, env = "ESB_AGENT_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// Bearer token every client must present.
    #[arg(
        long,
        env = "ESB_AGENT_TOKEN",
        hide_env_values = true,
        required_unless_present = "insecure_no_auth"
    )]
    token: Option<String>,

    /// Accept calls without a token (only behind another authenticating layer).
    #[arg(long, env = "ESB_AGENT_INSECURE_NO_AUTH", conflicts_with = "token")]
    insecure_no_auth: bool,

    /// TLS certificate chain (PEM).
    #[arg(long, env = "ESB_AGENT_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "ESB_AGENT_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// CA of client certificates: when given, clients must present one (mTLS).
    #[arg(long, env = "ESB_AGENT_TLS_CLIENT_CA", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,

    /// containerd: socket, env (namespace), snapshotter, registries, CNI network, freezer.
    #[command(flatten)]
    containerd: ContainerdArgs,

    /// At start, adopt or remove the sandboxes of this env found in containerd.
    #[arg(long, env = "ESB_RECONCILE", value_enum, default_value_t = Reconcile::Adopt)]
    reconcile: Reconcile,

    /// Serve gRPC reflection (grpc.reflection.v1), e.g. for grpcurl.
    #[arg(long, env = "ESB_AGENT_REFLECTION")]
    reflection: bool,

    /// VictoriaLogs base URL, http(s)://host:9428, for function and agent logs (also read
    /// from VICTORIALOGS_URL).
    #[arg(long, env = "ESB_VICTORIALOGS_URL", hide_env_values = true)]
    victorialogs_url: Option<String>,

    /// Destroy every sandbox when shutting down (process sandboxes are always destroyed).
    #[arg(long, env = "ESB_DESTROY_ON_EXIT")]
    destroy_on_exit: bool,

    /// Seconds in-flight calls may take to finish after SIGTERM/SIGINT.
    #[arg(long, env = "ESB_SHUTDOWN_GRACE", default_value = "30", value_parser = parse_seconds)]
    shutdown_grace: Duration,

    // --- Hardening ---
    /// Directory recording the process sandboxes started, so that the next start kills what
    /// a killed agent left (default: $XDG_RUNTIME_DIR/esb/process-sandboxes, else
    /// /tmp/esb-<uid>/process-sandboxes).
    #[arg(long, env = "ESB_SANDBOX_RECORD_DIR")]
    sandbox_record_dir: Option<PathBuf>,

    /// Sandboxes this agent runs at most; more are refused (the gateway places them elsewhere).
    #[arg(long, env = "ESB_MAX_SANDBOXES")]
    max_sandboxes: Option<usize>,

    /// The sum of the sandboxes' memory sizes (MB) at most.
    #[arg(long, env = "ESB_MEMORY_BUDGET_MB")]
    memory_budget_mb: Option<u64>,

    /// Address of the Prometheus `GET /metrics` and the `GET /health` probe listener (plain
    /// HTTP; none by default).
    #[arg(long, env = "ESB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,

    /// Listen on a non-loopback address without TLS (the token then crosses the network in
    /// clear text, and the token is root on this host).
    #[arg(long, env = "ESB_AGENT_INSECURE")]
    insecure: bool,

    // Logs: VictoriaLogs credentials, TLS, host, spool.
    /// How logs reach VictoriaLogs besides its URL.
    #[command(flatten)]
    logs: esb_logs::cli::VictoriaLogsArgs,
}

impl Args {
    /// The credentials functions get in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`.
    fn function_credentials(&self) -> esb_runtime::FunctionCredentials {
        esb_runtime::FunctionCredentials::new(
            &self.function_access_key_id,
            self.function_secret_access_key
                .as_deref()
                .unwrap_or(esb_runtime::DEFAULT_SECRET_ACCESS_KEY),
            self.function_session_token.clone(),
        )
    }
}

fn parse_seconds(value: &str) -> Result<Duration, String> {
    value
        .parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s >= 0.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| format!("{value:?} is not a number of seconds"))
}

/// The VictoriaLogs shipper of `--victorialogs-url` (or VICTORIALOGS_URL), if one is given;
/// errors never show the URL's password.
fn shipper(args: &Args) -> anyhow::Result<Option<LogShipper>> {
    let url = args
        .victorialogs_url
        .clone()
        .or_else(|| std::env::var("VICTORIALOGS_URL").ok())
        .filter(|url| !url.is_empty());
    let Some(url) = url else {
        return Ok(None);
    };
    let context = || format!("--victorialogs-url {}", esb_logs::redact_url(&url));
    let config = args.logs.config(&url).with_context(context)?;
    Ok(Some(LogShipper::start(config).with_context(context)?))
}

/// The backend, and what to release when the agent stops.
struct Backend {
    runtime: Arc<dyn Runtime>,
    #[cfg(feature = "containerd")]
    containerd: Option<Arc<esb_runtime::containerd::ContainerdRuntime>>,
}

impl Backend {
    /// Removes the CNI network this agent set up, if no sandbox uses it any more.
    async fn release(&self) {
        #[cfg(feature = "containerd")]
        if let Some(containerd) = &self.containerd {
            match containerd.release_network().await {
                Ok(done) => tracing::info!(?done, "CNI network released"),
                Err(err) => tracing::warn!(%err, "cannot release the CNI network"),
            }
        }
    }
}

async fn runtime(args: &Args, log_sink: Arc<dyn LogSink>) -> anyhow::Result<Backend> {
    match args.runtime {
        RuntimeKind::Process => {
            let record_dir = args.sandbox_record_dir.clone().unwrap_or_else(|| {
                esb_runtime::process::default_record_dir(
                    std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
                )
            });
            let config = ProcessConfig::default()
                .credentials(args.function_credentials())
                .log_sink(log_sink)
                .record_dir(record_dir);
            Ok(Backend {
                runtime: Arc::new(ProcessRuntime::new(config)),
                #[cfg(feature = "containerd")]
                containerd: None,
            })
        }
        RuntimeKind::Containerd => containerd_runtime(args, log_sink).await,
    }
}

#[cfg(feature = "containerd")]
async fn containerd_runtime(args: &Args, log_sink: Arc<dyn LogSink>) -> anyhow::Result<Backend> {
    use esb_runtime::containerd::{self, ReconcilePolicy};
    let config = args
        .containerd
        .config()
        .credentials(args.function_credentials())
        .log_sink(log_sink);
    let policy = match args.reconcile {
        Reconcile::Adopt => ReconcilePolicy::Adopt,
        Reconcile::Remove => ReconcilePolicy::Remove,
    };
    let containerd = Arc::new(containerd::connect(config, policy).await?);
    Ok(Backend {
        runtime: containerd.clone(),
        containerd: Some(containerd),
    })
}

#[cfg(not(feature = "containerd"))]
async fn containerd_runtime(_args: &Args, _log_sink: Arc<dyn LogSink>) -> anyhow::Result<Backend> {
    anyhow::bail!(
        "this esb-agent was built without the `containerd` feature; run with --runtime process"
    )
}

/// SIGTERM or SIGINT.
async fn shutdown_signal() {
    let signal = esb_runtime::shutdown::shutdown_signal().await;
    tracing::info!(signal, "shutdown requested");
}

/// mimalloc, as the gateway: fewer cycles per invocation than glibc's allocator under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let result = serve_until_shutdown(Args::parse()).await;
    // Records are written by a background thread: let it finish, whatever the outcome.
    let _ = tokio::task::spawn_blocking(|| TerminalLogSink::flush(Duration::from_secs(2))).await;
    result
}

/// Starts logging and the runtime, serves until SIGTERM/SIGINT, then stops.
async fn serve_until_shutdown(args: Args) -> anyhow::Result<()> {
    let shipper = shipper(&args)?;
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with(tracing_subscriber::fmt::layer().with_writer(esb_logs::TerminalWriter))
        .with(shipper.clone().map(|s| ShipperLayer::new(s, "esb-agent")))
        .try_init();
    match esb_runtime::limits::raise_fd_limit() {
        Ok(fd) => tracing::debug!(soft = fd.soft, hard = fd.hard, "open-file limit"),
        Err(err) => tracing::warn!(error = %err, "cannot raise the open-file limit"),
    }

    if !args.listen.ip().is_loopback() && args.tls_cert.is_none() && !args.insecure {
        anyhow::bail!(
            "--listen {}: not a loopback address, and no --tls-cert/--tls-key: the agent's token grants root on this host and would cross the network in clear text; give TLS, or --insecure to accept that",
            args.listen
        );
    }
    // Function lines go to the terminal, VictoriaLogs, and the invocations that ask for their log.
    let log_tail = LogTail::new();
    let sink = log_tail.tee(esb_logs::function_log_sink(shipper.clone()));
    let backend = runtime(&args, sink).await?;
    let limits = esb_agent::AgentLimits::default()
        .max_sandboxes(args.max_sandboxes)
        .memory_budget_mb(args.memory_budget_mb);
    let guarded = Arc::new(esb_agent::GuardedRuntime::new(
        backend.runtime.clone(),
        limits,
    ));
    if let Some(addr) = args.metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("--metrics-listen {addr}"))?;
        tracing::info!(listen = %addr, "agent metrics on /metrics");
        tokio::spawn(esb_agent::serve_metrics(
            listener,
            Arc::clone(&guarded),
            shipper.clone(),
        ));
    }
    let runtime: Arc<dyn Runtime> = guarded;
    let auth = match (&args.token, args.insecure_no_auth) {
        (Some(token), _) if !token.is_empty() => BearerAuth::token(token),
        (_, true) => {
            tracing::warn!(
                "authentication disabled (--insecure-no-auth): any client can run sandboxes"
            );
            BearerAuth::disabled()
        }
        _ => anyhow::bail!("--token (ESB_AGENT_TOKEN) must not be empty"),
    };
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
            client_ca: args.tls_client_ca.clone(),
        }),
        _ => None,
    };
    let options = ServeOptions {
        auth,
        tls,
        reflection: args.reflection,
        shutdown_grace: args.shutdown_grace,
        log_tail: Some(log_tail),
    };

    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(
        listen = %listener.local_addr().unwrap_or(args.listen),
        backend = runtime.capabilities().backend,
        env = %args.containerd.env_name,
        tls = options.tls.is_some(),
        mtls = args.tls_client_ca.is_some(),
        reflection = options.reflection,
        "esb-agent serving"
    );
    let served = esb_agent::serve(runtime.clone(), options, listener, shutdown_signal()).await;

    if args.destroy_on_exit || args.runtime == RuntimeKind::Process {
        let destroyed = esb_agent::destroy_all(runtime.as_ref()).await;
        tracing::info!(destroyed, "sandboxes destroyed");
    }
    // Sandboxes left for the next agent to adopt keep the network.
    backend.release().await;
    tracing::info!("esb-agent stopped");
    if let Some(shipper) = shipper {
        shipper.shutdown(Duration::from_secs(5)).await;
    }
    let _ = tokio::task::spawn_blocking(|| TerminalLogSink::flush(Duration::from_secs(2))).await;
    served.context("esb-agent stopped with an error")?;
    Ok(())
}
