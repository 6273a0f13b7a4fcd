//! Flags and environment of the `esb-gateway` binary, turned into a [`GatewayConfig`] and runtimes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Parser, ValueEnum};
use esb_logs::{LogShipper, ShipperLayer};
use esb_runtime::Runtime;
use esb_runtime::logs::{LogSink, TerminalLogSink};
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime, RemoteTls};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::prelude::*;

use esb_runtime::Capabilities;

use crate::config::{AuthConfig, EventRetry, GatewayConfig, InvokeApiAccess, Limits, TlsConfig};
use crate::error::StartError;
use crate::{Gateway, logs};

/// Where sandboxes run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum RuntimeKind {
    /// Child processes of the gateway ("all-in-one"; no root, no containerd).
    Process,
    /// containerd containers on this host (needs the `containerd` feature, root and containerd).
    Containerd,
    /// Remote `esb-agent`s (`--agent URL`, one per host).
    Agent,
}

/// An API-Gateway-compatible HTTP(S) front door for Lambda functions.
#[derive(Debug, Parser)]
#[command(name = "esb-gateway", version, about)]
#[command(group(ArgGroup::new("definitions").args(["functions", "template"]).required(true)))]
#[command(group(ArgGroup::new("certificate").args(["tls_cert", "tls_self_signed"])))]
pub struct Args {
    /// functions.yml: the functions and their sandboxes.
    #[arg(long, env = "ESB_FUNCTIONS", requires = "routing")]
    pub functions: Option<PathBuf>,

    /// routing.yml: the routes.
    #[arg(long, env = "ESB_ROUTING", requires = "functions")]
    pub routing: Option<PathBuf>,

    /// A SAM template.yaml, instead of functions.yml + routing.yml.
    #[arg(long, env = "ESB_TEMPLATE")]
    pub template: Option<PathBuf>,

    /// Address to listen on [default: 127.0.0.1:8443 with TLS, 127.0.0.1:8080 without].
    #[arg(long, env = "ESB_LISTEN")]
    pub listen: Option<SocketAddr>,

    /// Where sandboxes run.
    #[arg(long, env = "ESB_RUNTIME", value_enum, default_value_t = RuntimeKind::Process)]
    pub runtime: RuntimeKind,

    /// An esb-agent to place sandboxes on, `http(s)://host:port` (repeatable; with --runtime agent).
    #[arg(long = "agent", env = "ESB_AGENTS", value_delimiter = ',')]
    pub agents: Vec<String>,

    /// Bearer token of the agents.
    #[arg(long, env = "ESB_AGENT_TOKEN", hide_env_values = true)]
    pub agent_token: Option<String>,

    /// CA certificate (PEM) that signed the agents' certificates.
    #[arg(long, env = "ESB_AGENT_CA")]
    pub agent_ca: Option<PathBuf>,

    /// Client certificate (PEM) for agents that require mTLS.
    #[arg(long, env = "ESB_AGENT_CERT", requires = "agent_key")]
    pub agent_cert: Option<PathBuf>,

    /// Client private key (PEM) for agents that require mTLS.
    #[arg(long, env = "ESB_AGENT_KEY", requires = "agent_cert")]
    pub agent_key: Option<PathBuf>,

    /// TLS certificate chain (PEM).
    #[arg(long, env = "ESB_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,

    /// TLS private key (PEM).
    #[arg(long, env = "ESB_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,

    /// Serve HTTPS with a certificate generated at start-up for localhost (local use only).
    #[arg(long, env = "ESB_TLS_SELF_SIGNED")]
    pub tls_self_signed: bool,

    /// HS256 secret of Bearer tokens (at least 32 characters).
    #[arg(long, env = "JWT_SECRET_KEY", hide_env_values = true)]
    pub jwt_secret_key: Option<String>,

    /// The x-api-key the auth endpoint requires.
    #[arg(long, env = "X_API_KEY", hide_env_values = true)]
    pub x_api_key: Option<String>,

    /// The user the auth endpoint accepts.
    #[arg(long, env = "AUTH_USER")]
    pub auth_user: Option<String>,

    /// That user's password.
    #[arg(long, env = "AUTH_PASS", hide_env_values = true)]
    pub auth_pass: Option<String>,

    /// Path of the auth endpoint.
    #[arg(long, env = "AUTH_ENDPOINT_PATH", default_value = "/user/auth/v1")]
    pub auth_endpoint_path: String,

    /// Lifetime of issued tokens, in seconds.
    #[arg(long, env = "JWT_EXPIRES_DELTA", default_value_t = 3000)]
    pub jwt_expires_delta: u64,

    /// Who may call the Lambda Invoke API (POST /2015-03-31/functions/NAME/invocations).
    #[arg(long, env = "ESB_INVOKE_API", value_enum, default_value_t = InvokeApiAccess::Open)]
    pub invoke_api: InvokeApiAccess,

    /// Ship function and gateway logs to this VictoriaLogs (http(s)://host:9428).
    #[arg(long, env = "VICTORIALOGS_URL", hide_env_values = true)]
    pub victorialogs_url: Option<String>,

    /// AWS_REGION of the functions.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub region: String,

    /// AWS_ACCESS_KEY_ID given to functions (their own `environment` wins).
    #[arg(long, env = "ESB_FUNCTION_AWS_ACCESS_KEY_ID", default_value = esb_runtime::DEFAULT_ACCESS_KEY_ID)]
    pub function_access_key_id: String,

    /// AWS_SECRET_ACCESS_KEY given to functions (default: a harmless local one).
    #[arg(
        long,
        env = "ESB_FUNCTION_AWS_SECRET_ACCESS_KEY",
        hide_env_values = true
    )]
    pub function_secret_access_key: Option<String>,

    /// AWS_SESSION_TOKEN given to functions (default: none).
    #[arg(long, env = "ESB_FUNCTION_AWS_SESSION_TOKEN", hide_env_values = true)]
    pub function_session_token: Option<String>,

    /// Largest request body, in bytes.
    #[arg(long, env = "ESB_MAX_BODY_BYTES", default_value_t = esb_runtime::MAX_PAYLOAD_BYTES)]
    pub max_body_bytes: usize,

    /// Largest request head (request line and headers), in bytes.
    #[arg(long, env = "ESB_MAX_HEADER_BYTES", default_value_t = 64 * 1024)]
    pub max_header_bytes: usize,

    /// Connections served at once.
    #[arg(long, env = "ESB_MAX_CONNECTIONS", default_value_t = 10_000)]
    pub max_connections: usize,

    /// Asynchronous (Event) invocations held at once (waiting, running or waiting for a
    /// retry): the bound of the event queue; more answer 429.
    #[arg(long, env = "ESB_EVENT_CONCURRENCY", default_value_t = 64)]
    pub event_concurrency: usize,

    /// Seconds before each retry of an Event invocation after a function error or timeout
    /// (Lambda's 1 then 2 minutes; the last repeats; retries per function:
    /// MaximumRetryAttempts / event_invoke.maximum_retry_attempts).
    #[arg(
        long,
        env = "ESB_EVENT_RETRY_DELAYS",
        value_delimiter = ',',
        value_name = "SECONDS,..",
        default_value = "60,120"
    )]
    pub event_retry_delays: Vec<f64>,

    /// First and longest wait, in seconds, before retrying an Event invocation that was
    /// throttled or met a system error (Lambda's 1 and 300; doubled each time, for as long
    /// as the event is younger than its maximum age).
    #[arg(
        long,
        env = "ESB_EVENT_RETRY_BACKOFF",
        value_delimiter = ',',
        value_name = "INITIAL,MAX",
        default_value = "1,300"
    )]
    pub event_retry_backoff: Vec<f64>,

    /// Seconds in-flight requests get to finish on shutdown.
    #[arg(long, env = "ESB_SHUTDOWN_GRACE", default_value_t = 30)]
    pub shutdown_grace: u64,

    /// containerd's socket (with --runtime containerd).
    #[arg(
        long,
        env = "ESB_CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_address: PathBuf,

    /// Environment name: containerd sandboxes live in the namespace `esb-<env>`.
    #[arg(long = "env", env = "ESB_ENV", default_value = "default")]
    pub env_name: String,

    /// Validate the configuration and exit.
    #[arg(long)]
    pub check: bool,

    // Logs: VictoriaLogs credentials, TLS, host, spool; the access log.
    /// How logs reach VictoriaLogs besides its URL.
    #[command(flatten)]
    pub logs: esb_logs::cli::VictoriaLogsArgs,

    /// An access record per request, on the terminal and in VictoriaLogs (false: none).
    #[arg(
        long,
        env = "ESB_ACCESS_LOG",
        default_value_t = true,
        action = clap::ArgAction::Set,
        value_name = "BOOL"
    )]
    pub access_log: bool,
}

impl Args {
    /// What the chosen runtime can do, known before it is made; `None` for agents (each
    /// agent's backend decides) and for a backend this build does not have.
    pub fn capabilities(&self) -> Option<Capabilities> {
        match self.runtime {
            RuntimeKind::Process => Some(ProcessRuntime::CAPABILITIES),
            #[cfg(feature = "containerd")]
            RuntimeKind::Containerd => {
                Some(esb_runtime::containerd::ContainerdRuntime::CAPABILITIES)
            }
            #[cfg(not(feature = "containerd"))]
            RuntimeKind::Containerd => None,
            RuntimeKind::Agent => None,
        }
    }

    /// Loads the functions and routes, and builds the gateway's config (not yet validated).
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let env = |name: &str| std::env::var(name).ok();
        let functions = match (&self.template, &self.functions, &self.routing) {
            (Some(template), _, _) => esb_router::Config::from_sam_template(template, &env)?,
            (None, Some(functions), Some(routing)) => {
                esb_router::Config::load(functions, routing, &env)?
            }
            _ => anyhow::bail!("give --functions and --routing, or --template"),
        };
        let tls = match (&self.tls_cert, &self.tls_key) {
            (Some(cert), Some(key)) => Some(TlsConfig::Files {
                cert: cert.clone(),
                key: key.clone(),
            }),
            _ if self.tls_self_signed => Some(TlsConfig::SelfSigned),
            _ => None,
        };
        let default_port = if tls.is_some() { 8443 } else { 8080 };
        let listen = self
            .listen
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], default_port)));
        let mut auth = AuthConfig::default()
            .endpoint_path(&self.auth_endpoint_path)
            .token_ttl(Duration::from_secs(self.jwt_expires_delta));
        auth.jwt_secret = self.jwt_secret_key.clone();
        auth.api_key = self.x_api_key.clone();
        auth.user = self.auth_user.clone();
        auth.password = self.auth_pass.clone();
        let limits = Limits::default()
            .max_body_bytes(self.max_body_bytes)
            .max_header_bytes(self.max_header_bytes)
            .max_connections(self.max_connections)
            .event_concurrency(self.event_concurrency)
            .shutdown_grace(Duration::from_secs(self.shutdown_grace));
        let seconds = |flag: &str, secs: f64| {
            Duration::try_from_secs_f64(secs)
                .map_err(|err| anyhow::anyhow!("{flag}: {secs} is not a number of seconds: {err}"))
        };
        let delays = self
            .event_retry_delays
            .iter()
            .map(|&secs| seconds("--event-retry-delays", secs))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let (initial, max) = match self.event_retry_backoff[..] {
            [initial, max] => (
                seconds("--event-retry-backoff", initial)?,
                seconds("--event-retry-backoff", max)?,
            ),
            _ => {
                anyhow::bail!("--event-retry-backoff: expected two numbers of seconds, INITIAL,MAX")
            }
        };
        let event_retry = EventRetry::default().delays(delays).backoff(initial, max);
        let mut config = GatewayConfig::new(functions, listen)
            .auth(auth)
            .invoke_api(self.invoke_api)
            .limits(limits)
            .event_retry(event_retry)
            .region(&self.region);
        config.tls = tls;
        Ok(config)
    }

    /// The credentials functions get in `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` /
    /// `AWS_SESSION_TOKEN`.
    pub fn function_credentials(&self) -> esb_runtime::FunctionCredentials {
        esb_runtime::FunctionCredentials::new(
            &self.function_access_key_id,
            self.function_secret_access_key
                .as_deref()
                .unwrap_or(esb_runtime::DEFAULT_SECRET_ACCESS_KEY),
            self.function_session_token.clone(),
        )
    }

    /// The runtimes sandboxes are placed on.
    pub async fn runtimes(
        &self,
        log_sink: Arc<dyn LogSink>,
    ) -> anyhow::Result<Vec<Arc<dyn Runtime>>> {
        match self.runtime {
            RuntimeKind::Process => Ok(vec![Arc::new(ProcessRuntime::new(
                ProcessConfig::default()
                    .region(&self.region)
                    .credentials(self.function_credentials())
                    .log_sink(log_sink),
            ))]),
            RuntimeKind::Containerd => Ok(vec![containerd_runtime(self, log_sink).await?]),
            RuntimeKind::Agent => self.agent_runtimes().await,
        }
    }

    /// One remote runtime per `--agent`; agents that cannot be reached are left out (and
    /// logged) as long as one can.
    async fn agent_runtimes(&self) -> anyhow::Result<Vec<Arc<dyn Runtime>>> {
        if self.agents.is_empty() {
            anyhow::bail!("--runtime agent needs at least one --agent URL (or ESB_AGENTS)");
        }
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
        };
        let tls = if self.agent_ca.is_some() || self.agent_cert.is_some() {
            let mut tls = RemoteTls::default();
            tls.ca_pem = self.agent_ca.as_ref().map(read).transpose()?;
            if let (Some(cert), Some(key)) = (&self.agent_cert, &self.agent_key) {
                tls = tls.identity(read(cert)?, read(key)?);
            }
            Some(tls)
        } else {
            None
        };
        let mut runtimes: Vec<Arc<dyn Runtime>> = Vec::new();
        let mut failures = Vec::new();
        for url in &self.agents {
            let mut config = RemoteConfig::new(url);
            config.token = self.agent_token.clone();
            config.tls = tls.clone();
            match RemoteRuntime::connect(config).await {
                Ok(runtime) => {
                    tracing::info!(agent = %url, backend = runtime.agent_backend(), "agent connected");
                    runtimes.push(Arc::new(runtime));
                }
                Err(err) => {
                    tracing::warn!(agent = %url, error = %err, "agent left out");
                    failures.push(format!("{url}: {err}"));
                }
            }
        }
        if runtimes.is_empty() {
            anyhow::bail!("no agent can be reached:\n  {}", failures.join("\n  "));
        }
        Ok(runtimes)
    }
}

#[cfg(feature = "containerd")]
async fn containerd_runtime(
    args: &Args,
    log_sink: Arc<dyn LogSink>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    use esb_runtime::containerd::{self, ContainerdConfig, ReconcilePolicy};
    let config = ContainerdConfig::default()
        .address(&args.containerd_address)
        .env(&args.env_name)
        .region(&args.region)
        .credentials(args.function_credentials())
        .log_sink(log_sink);
    // Sandboxes an earlier gateway left in this env are removed, never adopted.
    let runtime = containerd::connect(config, ReconcilePolicy::Remove).await?;
    Ok(Arc::new(runtime))
}

#[cfg(not(feature = "containerd"))]
async fn containerd_runtime(
    _args: &Args,
    _log_sink: Arc<dyn LogSink>,
) -> anyhow::Result<Arc<dyn Runtime>> {
    anyhow::bail!(
        "this esb-gateway was built without the `containerd` feature: \
         rebuild with `cargo build -p esb-gateway-bin --features containerd`, or use --runtime process"
    )
}

/// Sets up logging, loads and validates the configuration, and serves until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let shipper = match args
        .victorialogs_url
        .as_deref()
        .filter(|url| !url.is_empty())
    {
        Some(url) => Some(start_shipper(&args.logs, url)?),
        None => None,
    };
    let mut filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    if !args.access_log {
        filter = filter.add_directive(
            format!("{}=off", crate::layers::access_log::TARGET)
                .parse()
                .context("the access log's filter")?,
        );
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(tracing_subscriber::fmt::layer().with_writer(esb_logs::TerminalWriter))
        .with(shipper.clone().map(|s| ShipperLayer::new(s, "esb-gateway")))
        .try_init();

    let config = args.config()?;
    config
        .validate(args.capabilities().as_ref())
        .map_err(|problems| explain(problems.into()))?;
    if args.check {
        println!(
            "configuration OK: {} functions, {} routes",
            config.functions.functions.len(),
            config.functions.routes.len()
        );
        return Ok(());
    }
    let log_sink = config
        .log_tail
        .tee(logs::function_log_sink(shipper.clone()));
    let runtimes = args.runtimes(log_sink).await?;
    let gateway = Gateway::start(config, runtimes).await.map_err(explain)?;
    // The metrics recorder is in place now: the shipper's series exist from the start.
    if let Some(shipper) = &shipper {
        shipper.register_metrics();
    }
    tracing::info!(url = %gateway.url(), "esb-gateway listening");
    gateway.run_until(shutdown_signal()).await;
    if let Some(shipper) = shipper {
        shipper.shutdown(Duration::from_secs(5)).await;
    }
    let _ = tokio::task::spawn_blocking(|| TerminalLogSink::flush(Duration::from_secs(2))).await;
    Ok(())
}

/// The VictoriaLogs shipper of `--victorialogs-url` and its companion flags; errors never
/// show the URL's password.
fn start_shipper(logs: &esb_logs::cli::VictoriaLogsArgs, url: &str) -> anyhow::Result<LogShipper> {
    let context = || format!("--victorialogs-url {}", esb_logs::redact_url(url));
    let config = logs.config(url).with_context(context)?;
    LogShipper::start(config).with_context(context)
}

/// A start-up error as this binary says it: configuration fields by their flag or
/// environment variable.
fn explain(err: StartError) -> anyhow::Error {
    match err {
        StartError::Config(problems) => anyhow::anyhow!(problems.render(flag_of)),
        other => other.into(),
    }
}

/// The flag or environment variable that sets a [`GatewayConfig`] field.
fn flag_of(field: &str) -> Option<&'static str> {
    Some(match field {
        "auth.jwt_secret" => "JWT_SECRET_KEY",
        "auth.api_key" => "X_API_KEY",
        "auth.user" => "AUTH_USER",
        "auth.password" => "AUTH_PASS",
        "auth.endpoint_path" => "AUTH_ENDPOINT_PATH",
        "auth.token_ttl" => "JWT_EXPIRES_DELTA",
        "limits.max_connections" => "--max-connections",
        "limits.event_concurrency" => "--event-concurrency",
        "event_retry.delays" => "--event-retry-delays",
        "event_retry.backoff_initial" => "--event-retry-backoff",
        "limits.max_body_bytes" => "--max-body-bytes",
        _ => return None,
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    esb_runtime::shutdown::shutdown_signal().await;
    tracing::info!("shutting down: draining in-flight requests");
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_flags_are_consistent() {
        Args::command().debug_assert();
    }

    #[test]
    fn one_source_of_definitions_and_of_certificates() {
        let parse = |args: &[&str]| Args::try_parse_from([&["esb-gateway"], args].concat());
        assert!(parse(&[]).is_err());
        assert!(parse(&["--template", "t.yaml"]).is_ok());
        assert!(parse(&["--functions", "f.yml", "--routing", "r.yml"]).is_ok());
        assert!(parse(&["--functions", "f.yml"]).is_err());
        assert!(parse(&["--template", "t", "--functions", "f", "--routing", "r"]).is_err());
        let tls = ["--tls-cert", "c", "--tls-key", "k", "--tls-self-signed"];
        assert!(parse(&[&["--template", "t"][..], &tls].concat()).is_err());
    }
}
