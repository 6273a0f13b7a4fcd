//! `esb-agent`: runs Lambda sandboxes on one host, served over gRPC.

use std::net::{Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, ValueEnum};
use esb_agent::{BearerAuth, ServeOptions, TlsFiles};
use esb_logs::{LogShipper, ShipperLayer};
use esb_runtime::Runtime;
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

/// How containerd sandboxes are paused and resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum FreezerKind {
    /// Write the sandbox's cgroup freezer directly (fastest).
    Cgroup,
    /// Through containerd (Tasks.Pause / Tasks.Resume, i.e. `runc pause` / `runc resume`).
    Tasks,
}

/// Runs Lambda sandboxes on this host and serves them over gRPC (esb.agent.v1).
#[derive(Debug, Parser)]
#[command(name = "esb-agent", version, about)]
struct Args {
    /// Sandbox engine.
    #[arg(long, env = "ESB_RUNTIME", value_enum, default_value_t = RuntimeKind::DEFAULT)]
    runtime: RuntimeKind,

    /// containerd's socket.
    #[arg(
        long,
        env = "ESB_CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    containerd_address: PathBuf,

    /// Environment name: sandboxes live in the containerd namespace `esb-<env>`.
    #[arg(long = "env", env = "ESB_ENV", default_value = "default", value_parser = parse_env_name)]
    env_name: String,

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

    /// A registry (HOST:PORT) spoken to over plain HTTP; repeatable.
    #[arg(
        long = "insecure-registry",
        env = "ESB_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_parser = parse_host_port
    )]
    insecure_registries: Vec<String>,

    /// Subnet of the CNI bridge sandboxes join (e.g. 10.88.0.0/16); no CNI network when absent.
    #[arg(long, env = "ESB_CNI_SUBNET", value_parser = parse_cidr)]
    cni_subnet: Option<String>,

    /// How containerd sandboxes are frozen between invocations.
    #[arg(long, env = "ESB_FREEZER", value_enum, default_value_t = FreezerKind::Cgroup)]
    freezer: FreezerKind,

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

    // Logs: VictoriaLogs credentials, TLS, host, spool.
    /// How logs reach VictoriaLogs besides its URL.
    #[command(flatten)]
    logs: esb_logs::cli::VictoriaLogsArgs,
}

fn parse_env_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err("letters, digits, '-' and '_' only (at most 50)".into())
    }
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

fn parse_host_port(value: &str) -> Result<String, String> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_owned())
        }
        _ => Err(format!("{value:?} is not HOST:PORT")),
    }
}

fn parse_cidr(value: &str) -> Result<String, String> {
    let parsed = value.split_once('/').and_then(|(addr, prefix)| {
        Some((addr.parse::<Ipv4Addr>().ok()?, prefix.parse::<u8>().ok()?))
    });
    match parsed {
        Some((_, prefix)) if (8..=30).contains(&prefix) => Ok(value.to_owned()),
        _ => Err(format!(
            "{value:?} is not an IPv4 CIDR such as 10.88.0.0/16 (prefix 8 to 30)"
        )),
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

async fn runtime(args: &Args, log_sink: Arc<dyn LogSink>) -> anyhow::Result<Arc<dyn Runtime>> {
    match args.runtime {
        RuntimeKind::Process => {
            let config = ProcessConfig::default()
                .credentials(args.function_credentials())
                .log_sink(log_sink);
            Ok(Arc::new(ProcessRuntime::new(config)))
        }
        RuntimeKind::Containerd => containerd_runtime(args, log_sink).await,
    }
}

#[cfg(feature = "containerd")]
async fn containerd_runtime(
    args: &Args,
    log_sink: Arc<dyn LogSink>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    use esb_runtime::containerd::{
        self, CniConfig, ContainerdConfig, Freezer, ReconcilePolicy, RegistryConfig,
    };
    let config = ContainerdConfig::default()
        .address(&args.containerd_address)
        .env(&args.env_name)
        .registries(RegistryConfig::default().insecure(args.insecure_registries.clone()))
        .cni(
            args.cni_subnet
                .clone()
                .map(|subnet| CniConfig::default().subnet(subnet)),
        )
        .credentials(args.function_credentials())
        .log_sink(log_sink)
        .freezer(match args.freezer {
            FreezerKind::Cgroup => Freezer::Cgroup,
            FreezerKind::Tasks => Freezer::Tasks,
        });
    let policy = match args.reconcile {
        Reconcile::Adopt => ReconcilePolicy::Adopt,
        Reconcile::Remove => ReconcilePolicy::Remove,
    };
    Ok(Arc::new(containerd::connect(config, policy).await?))
}

#[cfg(not(feature = "containerd"))]
async fn containerd_runtime(
    _args: &Args,
    _log_sink: Arc<dyn LogSink>,
) -> anyhow::Result<Arc<dyn Runtime>> {
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

    // Function lines go to the terminal, VictoriaLogs, and the invocations that ask for their log.
    let log_tail = LogTail::new();
    let sink = log_tail.tee(esb_logs::function_log_sink(shipper.clone()));
    let runtime = runtime(&args, sink).await?;
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
        env = %args.env_name,
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
    tracing::info!("esb-agent stopped");
    if let Some(shipper) = shipper {
        shipper.shutdown(Duration::from_secs(5)).await;
    }
    let _ = tokio::task::spawn_blocking(|| TerminalLogSink::flush(Duration::from_secs(2))).await;
    served.context("esb-agent stopped with an error")?;
    Ok(())
}
