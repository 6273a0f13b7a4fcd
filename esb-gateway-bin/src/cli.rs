//! Flags and environment of the `esb-gateway` binary, turned into a [`GatewayConfig`] and runtimes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{ArgGroup, Parser, ValueEnum};
use esb_logs::{LogShipper, ShipperLayer};
use esb_runtime::Runtime;
use esb_runtime::containerd_args::ContainerdArgs;
use esb_runtime::logs::{LogSink, TerminalLogSink};
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::remote::RemoteTls;
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
#[derive(Clone, Debug, Parser)]
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

    /// With --runtime containerd: socket, env (namespace), snapshotter, registries, CNI
    /// network, freezer; the same flags and variables as esb-agent's.
    #[command(flatten)]
    pub containerd: ContainerdArgs,

    // Zip functions on managed runtimes (python3.x, nodejsNN.x, provided.*).
    /// The interpreter of a managed runtime, RUNTIME=PROGRAM (repeatable), e.g.
    /// `python3.12=/usr/bin/python3` [default: python3.x then python3, node, from PATH].
    #[arg(long = "runtime-command", env = "ESB_RUNTIME_COMMANDS", value_delimiter = ',', value_parser = parse_runtime_command)]
    pub runtime_commands: Vec<(String, PathBuf)>,

    /// Node's runtime interface client, `node_modules/.bin/aws-lambda-ric` of `npm install
    /// aws-lambda-ric` [default: aws-lambda-ric from PATH].
    #[arg(long, env = "ESB_NODE_RIC")]
    pub node_ric: Option<PathBuf>,

    /// Where extracted .zip code and merged layers are kept [default: esb-code-cache in the
    /// temporary directory].
    #[arg(long, env = "ESB_CODE_CACHE")]
    pub code_cache: Option<PathBuf>,

    // --- zip functions on containerd ---
    /// The base image of a managed runtime on containerd, RUNTIME=IMAGE (repeatable), e.g.
    /// `python3.12=127.0.0.1:5000/lambda/python:3.12` [default:
    /// public.ecr.aws/lambda/<language>:<version>, as SAM uses].
    #[arg(long = "runtime-image", env = "ESB_RUNTIME_IMAGES", value_delimiter = ',', value_parser = parse_runtime_image)]
    pub runtime_images: Vec<(String, String)>,

    /// Values of a SAM template's Parameters, KEY=VALUE (several, as `sam deploy
    /// --parameter-overrides`); they win over the environment and the parameters' Default.
    #[arg(long, env = "ESB_PARAMETER_OVERRIDES", num_args = 1.., value_parser = parse_parameter)]
    pub parameter_overrides: Vec<(String, String)>,

    /// A `sam local --env-vars` JSON file: `{"Parameters": {..}, "<FunctionName>": {..}}`
    /// replacing the functions' declared environment variables.
    #[arg(long, env = "ESB_ENV_VARS")]
    pub env_vars: Option<PathBuf>,

    /// Hot reload: after a zip function's code or layers change, its sandboxes are
    /// replaced (idle ones at once, busy ones after their invocation); a changed
    /// configuration file is applied when valid (requests in flight finish) and its
    /// problems printed when not.
    #[arg(long, env = "ESB_WATCH")]
    pub watch: bool,

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

    // --- Connection hardening ---
    /// Connections one client (IP address) may hold at once (at most half of
    /// --max-connections); more from it are closed at once.
    #[arg(long, env = "ESB_MAX_CONNECTIONS_PER_CLIENT", default_value_t = 1_000)]
    pub max_connections_per_client: usize,

    /// Seconds a client may take to send a request head (or finish a TLS handshake).
    #[arg(long, env = "ESB_HEADER_TIMEOUT", default_value_t = 10.0)]
    pub header_timeout: f64,

    /// Directory recording the process sandboxes started, so that the next start kills what
    /// a killed gateway left (default: $XDG_RUNTIME_DIR/esb/process-sandboxes, else
    /// /tmp/esb-<uid>/process-sandboxes).
    #[arg(long, env = "ESB_SANDBOX_RECORD_DIR")]
    pub sandbox_record_dir: Option<PathBuf>,

    /// This gateway's name among the replicas of its env (agent mode): its sandboxes carry
    /// `esb.owner=<env>/<id>`, a restarted gateway with the same id adopts them, and no
    /// gateway touches another's (default: the host name).
    #[arg(long, env = "ESB_GATEWAY_ID")]
    pub gateway_id: Option<String>,

    // --- Several hosts: agents found by DNS, failure detection ---
    /// Agents found by DNS, `NAME:PORT`: every address of NAME is an agent (e.g. a Kubernetes
    /// headless Service), resolved again every --agents-dns-interval; new addresses are
    /// added, vanished ones drained (repeatable; with --agent too).
    #[arg(
        long = "agents-dns",
        env = "ESB_AGENTS_DNS",
        value_delimiter = ',',
        value_name = "NAME:PORT"
    )]
    pub agents_dns: Vec<crate::agents::DnsTarget>,

    /// Seconds between two resolutions of --agents-dns.
    #[arg(long, env = "ESB_AGENTS_DNS_INTERVAL", default_value_t = 10.0)]
    pub agents_dns_interval: f64,

    /// Seconds between two health checks of each agent (grpc.health.v1).
    #[arg(long, env = "ESB_AGENT_HEALTH_INTERVAL", default_value_t = 2.0)]
    pub agent_health_interval: f64,

    /// Seconds a health check may take before it counts as failed.
    #[arg(long, env = "ESB_AGENT_HEALTH_TIMEOUT", default_value_t = 2.0)]
    pub agent_health_timeout: f64,

    /// Health checks failed in a row that mark an agent down: its sandboxes are dropped,
    /// its in-flight requests fail (503), new sandboxes go elsewhere, until it answers again.
    #[arg(long, env = "ESB_AGENT_HEALTH_FAILURES", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..))]
    pub agent_health_failures: u32,

    /// Seconds between HTTP/2 PINGs on each connection to an agent.
    #[arg(long, env = "ESB_AGENT_KEEPALIVE_INTERVAL", default_value_t = 10.0)]
    pub agent_keepalive_interval: f64,

    /// Seconds a PING may go unanswered before the connection to an agent is given up.
    #[arg(long, env = "ESB_AGENT_KEEPALIVE_TIMEOUT", default_value_t = 5.0)]
    pub agent_keepalive_timeout: f64,

    // --- Companion services (S3, DynamoDB) and the gateway's URL for functions ---
    /// Endpoints and keys of the services functions use, over functions.yml's `services`.
    #[command(flatten)]
    pub services: crate::services::ServiceArgs,

    // --- Resources (tables, buckets) created at start ---
    /// Seconds start-up waits for DynamoDB / S3 to answer, and for a new table to become
    /// ACTIVE, while creating the configuration's tables and buckets.
    #[arg(
        long,
        env = "ESB_PROVISION_TIMEOUT",
        default_value_t = 30.0,
        value_name = "SECONDS"
    )]
    pub provision_timeout: f64,
}

/// `KEY=VALUE` (or SAM's `ParameterKey=KEY,ParameterValue=VALUE`) of `--parameter-overrides`.
fn parse_parameter(text: &str) -> Result<(String, String), String> {
    if let Some(rest) = text.strip_prefix("ParameterKey=")
        && let Some((key, value)) = rest.split_once(",ParameterValue=")
    {
        return Ok((key.to_owned(), value.to_owned()));
    }
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("{text:?}: expected KEY=VALUE")),
    }
}

/// Names the flag that sets a template parameter in the problems of an unresolved one.
fn name_parameter_flag(err: esb_router::Error) -> anyhow::Error {
    let text = err.to_string();
    let lines: Vec<String> = text
        .lines()
        .map(|line| match line.split_once(": Parameters.") {
            Some((_, rest)) if line.ends_with("with a parameter override") => {
                let name = rest.split(':').next().unwrap_or(rest);
                format!("{line} (--parameter-overrides {name}=VALUE)")
            }
            _ => line.to_owned(),
        })
        .collect();
    anyhow::anyhow!(lines.join("\n"))
}

/// The host's address on the CNI bridge of `subnet`: its first address, the gateway the
/// bridge plugin gives the sandboxes.
fn bridge_host(subnet: &str) -> anyhow::Result<std::net::IpAddr> {
    let parsed = subnet.split_once('/').and_then(|(addr, prefix)| {
        let addr: std::net::Ipv4Addr = addr.parse().ok()?;
        let prefix: u32 = prefix.parse().ok().filter(|p| (1..=30).contains(p))?;
        let mask = u32::MAX << (32 - prefix);
        Some(std::net::Ipv4Addr::from((u32::from(addr) & mask) + 1))
    });
    parsed
        .map(std::net::IpAddr::V4)
        .ok_or_else(|| anyhow::anyhow!("--cni-subnet: {subnet:?} is not an IPv4 CIDR"))
}

/// `RUNTIME=PROGRAM` of `--runtime-command`.
fn parse_runtime_command(text: &str) -> Result<(String, PathBuf), String> {
    match text.split_once('=') {
        Some((runtime, program)) if !runtime.is_empty() && !program.is_empty() => {
            if esb_runtime::ManagedRuntime::parse(runtime).is_none() {
                return Err(format!(
                    "{runtime:?} is not a managed runtime (python3.x, nodejsNN.x)"
                ));
            }
            Ok((runtime.to_owned(), PathBuf::from(program)))
        }
        _ => Err(format!(
            "{text:?}: expected RUNTIME=PROGRAM, e.g. python3.12=/usr/bin/python3"
        )),
    }
}

/// `RUNTIME=IMAGE` of `--runtime-image`.
fn parse_runtime_image(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((runtime, image)) if !runtime.is_empty() && !image.is_empty() => {
            if esb_runtime::ManagedRuntime::parse(runtime).is_none() {
                return Err(format!(
                    "{runtime:?} is not a managed runtime (python3.x, nodejsNN.x, provided.al2023)"
                ));
            }
            Ok((runtime.to_owned(), image.to_owned()))
        }
        _ => Err(format!(
            "{text:?}: expected RUNTIME=IMAGE, e.g. python3.12=127.0.0.1:5000/lambda/python:3.12"
        )),
    }
}

impl Args {
    /// How zip functions are prepared: the code cache, interpreters and Node's client.
    pub fn managed(&self) -> esb_runtime::managed::Managed {
        let cache = self
            .code_cache
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("esb-code-cache"));
        let mut config = esb_runtime::managed::ManagedConfig::new(
            cache,
            std::env::var("PATH").unwrap_or_default(),
        );
        for (runtime, program) in &self.runtime_commands {
            config = config.interpreter(runtime, program);
        }
        if let Some(ric) = &self.node_ric {
            config = config.node_ric(ric);
        }
        for (runtime, image) in &self.runtime_images {
            config = config.image(runtime, image);
        }
        esb_runtime::managed::Managed::new(config)
    }

    /// What the chosen runtime can do, known before it is made; `None` for agents (each
    /// agent's backend decides) and for a backend this build does not have.
    pub fn capabilities(&self) -> Option<Capabilities> {
        match self.runtime {
            RuntimeKind::Process => Some(ProcessRuntime::CAPABILITIES),
            #[cfg(feature = "containerd")]
            RuntimeKind::Containerd => Some(
                esb_runtime::containerd::ContainerdRuntime::CAPABILITIES
                    .network(self.containerd.has_network()),
            ),
            #[cfg(not(feature = "containerd"))]
            RuntimeKind::Containerd => None,
            RuntimeKind::Agent => None,
        }
    }

    /// Loads the functions and routes as the files state them (parameters, `--env-vars`),
    /// zip functions not yet prepared.
    pub fn functions(&self) -> anyhow::Result<esb_router::Config> {
        let overrides: std::collections::BTreeMap<&str, &str> = self
            .parameter_overrides
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let env = |name: &str| {
            overrides
                .get(name)
                .map(|v| (*v).to_owned())
                // Resource ARNs carry the functions' region (--region).
                .or_else(|| (name == "AWS_REGION").then(|| self.region.clone()))
                .or_else(|| std::env::var(name).ok())
        };
        let functions = match (&self.template, &self.functions, &self.routing) {
            (Some(template), _, _) => esb_router::Config::from_sam_template(template, &env)
                .map_err(name_parameter_flag)?,
            (None, Some(functions), Some(routing)) => {
                esb_router::Config::load(functions, routing, &env)?
            }
            _ => anyhow::bail!("give --functions and --routing, or --template"),
        };
        let mut functions = functions;
        functions.services = self
            .services
            .apply(std::mem::take(&mut functions.services))?;
        if let Some(path) = &self.env_vars {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("--env-vars {}", path.display()))?;
            crate::packages::apply_env_vars(&mut functions, &text)
                .map_err(|err| anyhow::anyhow!("--env-vars {}: {err}", path.display()))?;
        }
        Ok(functions)
    }

    /// Loads the functions and routes, and builds the gateway's config (not yet validated).
    pub fn config(&self) -> anyhow::Result<GatewayConfig> {
        let mut functions = self.functions()?;
        for warning in &functions.warnings {
            tracing::warn!("not run: {warning}");
        }
        crate::packages::prepare(
            &mut functions,
            &self.managed(),
            self.capabilities().as_ref(),
        )
        .map_err(|problems| anyhow::anyhow!(problems.render(flag_of)))?;
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
        let seconds = |flag: &str, secs: f64| {
            Duration::try_from_secs_f64(secs)
                .map_err(|err| anyhow::anyhow!("{flag}: {secs} is not a number of seconds: {err}"))
        };
        let limits = Limits::default()
            .max_body_bytes(self.max_body_bytes)
            .max_header_bytes(self.max_header_bytes)
            .max_connections(self.max_connections)
            .max_connections_per_client(self.max_connections_per_client)
            .header_timeout(seconds("--header-timeout", self.header_timeout)?)
            .event_concurrency(self.event_concurrency)
            .shutdown_grace(Duration::from_secs(self.shutdown_grace));
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
        config.wiring = self.wiring()?;
        if self.runtime == RuntimeKind::Agent {
            let id = self.gateway_id.clone().unwrap_or_else(|| {
                std::fs::read_to_string("/proc/sys/kernel/hostname")
                    .map(|name| name.trim().to_owned())
                    .unwrap_or_else(|_| "esb-gateway".to_owned())
            });
            config = config.owner(format!("{}/{id}", self.containerd.env_name));
        }
        Ok(config)
    }

    /// What functions are told besides the services: `--gateway-internal-url`,
    /// `VICTORIALOGS_URL`.
    pub fn wiring(&self) -> anyhow::Result<crate::services::FunctionWiring> {
        let mut wiring = crate::services::FunctionWiring::default();
        if let Some(url) = self.services.internal_url()? {
            wiring = wiring.internal_url(url);
        }
        if let Some(url) = self
            .victorialogs_url
            .as_deref()
            .filter(|url| !url.is_empty())
        {
            wiring = wiring.victorialogs_url(url);
        }
        if self.runtime == RuntimeKind::Containerd {
            match self.containerd.cni_subnet.as_deref() {
                Some(subnet) => wiring = wiring.sandbox_host(bridge_host(subnet)?),
                None => tracing::warn!(
                    "containerd sandboxes without a CNI network (--cni-subnet) reach neither the services nor the gateway"
                ),
            }
        }
        Ok(wiring)
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
                    .log_sink(log_sink)
                    .record_dir(self.sandbox_record_dir.clone().unwrap_or_else(|| {
                        esb_runtime::process::default_record_dir(
                            std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from),
                        )
                    })),
            ))]),
            RuntimeKind::Containerd => Ok(vec![containerd_runtime(self, log_sink).await?.0]),
            RuntimeKind::Agent => self.agent_runtimes().await,
        }
    }

    /// One remote runtime per `--agent` and per address of `--agents-dns`; agents that
    /// cannot be reached are left out (and logged) as long as one can.
    async fn agent_runtimes(&self) -> anyhow::Result<Vec<Arc<dyn Runtime>>> {
        Ok(crate::agents::AgentSet::connect(self.agent_settings()?)
            .await?
            .runtimes())
    }

    /// How the agents are found, reached and watched.
    pub fn agent_settings(&self) -> anyhow::Result<crate::agents::AgentSettings> {
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
        Ok(crate::agents::AgentSettings {
            urls: self.agents.clone(),
            dns: self.agents_dns.clone(),
            dns_interval: positive_seconds("--agents-dns-interval", self.agents_dns_interval)?,
            health_interval: positive_seconds(
                "--agent-health-interval",
                self.agent_health_interval,
            )?,
            health_timeout: positive_seconds("--agent-health-timeout", self.agent_health_timeout)?,
            health_failures: self.agent_health_failures,
            token: self.agent_token.clone(),
            tls,
            keepalive: (
                positive_seconds("--agent-keepalive-interval", self.agent_keepalive_interval)?,
                positive_seconds("--agent-keepalive-timeout", self.agent_keepalive_timeout)?,
            ),
        })
    }
}

/// A flag's seconds as a duration above zero.
fn positive_seconds(flag: &str, secs: f64) -> anyhow::Result<Duration> {
    match Duration::try_from_secs_f64(secs) {
        Ok(duration) if !duration.is_zero() => Ok(duration),
        _ => anyhow::bail!("{flag}: {secs} is not a number of seconds above zero"),
    }
}

/// What to do when the gateway has stopped and destroyed its sandboxes: release the CNI
/// network of the embedded containerd runtime.
type Release =
    Option<Box<dyn FnOnce() -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send>>;

#[cfg(feature = "containerd")]
async fn containerd_runtime(
    args: &Args,
    log_sink: Arc<dyn LogSink>,
) -> anyhow::Result<(Arc<dyn Runtime>, Release)> {
    use esb_runtime::containerd::{self, ReconcilePolicy};
    let config = args
        .containerd
        .config()
        .region(&args.region)
        .credentials(args.function_credentials())
        .log_sink(log_sink);
    // Sandboxes an earlier gateway left in this env are removed, never adopted.
    let runtime = Arc::new(containerd::connect(config, ReconcilePolicy::Remove).await?);
    let owner = runtime.clone();
    let release: Release = Some(Box::new(move || {
        Box::pin(async move {
            // The pool has destroyed its sandboxes; one whose destroy was still under way
            // (a crashed sandbox being replaced) is finished here, so none keeps the network.
            if let Ok(left) = owner.list().await {
                for sandbox in left {
                    if let Err(err) = owner.destroy(&sandbox.id).await {
                        tracing::warn!(sandbox = %sandbox.id, %err, "destroy at stop failed");
                    }
                }
            }
            match owner.release_network().await {
                Ok(done) => tracing::info!(?done, "CNI network released"),
                Err(err) => tracing::warn!(%err, "cannot release the CNI network"),
            }
        })
    }));
    Ok((runtime, release))
}

#[cfg(not(feature = "containerd"))]
async fn containerd_runtime(
    _args: &Args,
    _log_sink: Arc<dyn LogSink>,
) -> anyhow::Result<(Arc<dyn Runtime>, Release)> {
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

    let mut config = args.config()?;
    let fd_limit = clamp_connections(&mut config.limits);
    if args.runtime != RuntimeKind::Agent
        && let Some(fd) = fd_limit
    {
        warn_min_capacity_over_fd_limit(&config, fd);
    }
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
    // Services ESB starts itself are healthy before any function can use them.
    let services = crate::services::Supervisor::start(&config.functions.services).await?;
    // Then the tables and buckets functions expect, before any function runs.
    if let Err(err) = provision(&args, &config.functions).await {
        services.stop().await;
        return Err(err);
    }
    let log_sink = config
        .log_tail
        .tee(logs::function_log_sink(shipper.clone()));
    let agents = match args.runtime {
        RuntimeKind::Agent => Some(crate::agents::AgentSet::connect(args.agent_settings()?).await?),
        _ => None,
    };
    let (runtimes, release) = match (args.runtime, &agents) {
        (RuntimeKind::Containerd, _) => {
            let (runtime, release) = containerd_runtime(&args, log_sink).await?;
            (vec![runtime], release)
        }
        (_, Some(agents)) => (agents.runtimes(), None),
        _ => (args.runtimes(log_sink).await?, None),
    };
    if args.runtime == RuntimeKind::Agent {
        // What the agents can run is known once they answer: rie needs one with a network.
        let network = runtimes.iter().any(|r| r.capabilities().network);
        config
            .validate(Some(&Capabilities::new("agent").network(network)))
            .map_err(|problems| explain(problems.into()))?;
    }
    let mut gateway = Gateway::start(config, runtimes.clone())
        .await
        .map_err(explain)?;
    let agents_watch = agents.as_ref().map(|agents| {
        agents.attach(gateway.pool().clone());
        agents.watch()
    });
    // The metrics recorder is in place now: the shipper's series exist from the start.
    if let Some(shipper) = &shipper {
        shipper.register_metrics();
    }
    tracing::info!(url = %gateway.url(), "esb-gateway listening");
    let signal = shutdown_signal();
    tokio::pin!(signal);
    if !args.watch {
        gateway.run_until(signal).await;
    } else {
        let (reloads, mut reloaded) = tokio::sync::mpsc::channel(1);
        let config_watch = watch_config(&args, reloads);
        let mut code_watch = watch_code(&args, &gateway)?;
        loop {
            tokio::select! {
                () = &mut signal => break,
                Some(config) = reloaded.recv() => {
                    // The running gateway stops accepting; its in-flight requests finish
                    // while the new one serves.
                    let counts = (config.functions.functions.len(), config.functions.routes.len());
                    gateway.stop_accepting();
                    let runtimes = match &agents {
                        Some(agents) => agents.runtimes(),
                        None => runtimes.clone(),
                    };
                    let new = start_again(config, runtimes).await.map_err(explain)?;
                    if let Some(agents) = &agents {
                        agents.attach(new.pool().clone());
                    }
                    let old = std::mem::replace(&mut gateway, new);
                    tokio::spawn(old.shutdown());
                    code_watch.abort();
                    code_watch = watch_code(&args, &gateway)?;
                    tracing::info!(functions = counts.0, routes = counts.1, "configuration reloaded");
                }
            }
        }
        config_watch.abort();
        code_watch.abort();
        gateway.shutdown().await;
    }
    if let Some(watch) = agents_watch {
        watch.abort();
    }
    if let Some(release) = release {
        release().await;
    }
    services.stop().await;
    if let Some(shipper) = shipper {
        shipper.shutdown(Duration::from_secs(5)).await;
    }
    let _ = tokio::task::spawn_blocking(|| TerminalLogSink::flush(Duration::from_secs(2))).await;
    Ok(())
}

/// Creates the configuration's tables and buckets that do not exist yet in the configured
/// DynamoDB and S3 (the gateway does it in every mode, agents never).
async fn provision(args: &Args, functions: &esb_router::Config) -> anyhow::Result<()> {
    if functions.resources.is_empty() {
        return Ok(());
    }
    let timeout = Duration::try_from_secs_f64(args.provision_timeout).map_err(|err| {
        anyhow::anyhow!(
            "--provision-timeout: {} is not a number of seconds: {err}",
            args.provision_timeout
        )
    })?;
    let targets = crate::provision::Targets::from_services(
        &functions.services,
        &args.region,
        &args.function_credentials(),
    )
    .timeout(timeout);
    crate::provision::provision(&functions.resources, &targets)
        .await
        .context("creating the configuration's tables and buckets")?;
    Ok(())
}

/// The VictoriaLogs shipper of `--victorialogs-url` and its companion flags; errors never
/// show the URL's password.
fn start_shipper(logs: &esb_logs::cli::VictoriaLogsArgs, url: &str) -> anyhow::Result<LogShipper> {
    let context = || format!("--victorialogs-url {}", esb_logs::redact_url(url));
    let config = logs.config(url).with_context(context)?;
    LogShipper::start(config).with_context(context)
}

/// Raises the open-file limit to its hard limit and keeps `--max-connections` under it
/// (with a warning), so that a full server still has descriptors for sandboxes and `/health`.
fn clamp_connections(limits: &mut crate::Limits) -> Option<esb_runtime::limits::FdLimit> {
    let (fd, budget) = match esb_runtime::limits::raise_fd_limit() {
        Ok(fd) => {
            tracing::debug!(
                soft = fd.soft,
                hard = fd.hard,
                before = fd.before,
                "open-file limit"
            );
            (fd, fd.connection_budget())
        }
        Err(err) => {
            tracing::warn!(error = %err, "cannot read or raise the open-file limit");
            return None;
        }
    };
    if limits.max_connections > budget {
        tracing::warn!(
            "--max-connections {} is over what the open-file limit allows; clamped to {budget} (raise `ulimit -n` for more)",
            limits.max_connections
        );
        limits.max_connections = budget;
    }
    Some(fd)
}

/// Warns when the functions' `min_capacity` sandboxes, which this process runs itself (the
/// process or containerd backend), cannot all fit under the open-file limit beside
/// `--max-connections`: they would fail to start for want of descriptors.
fn warn_min_capacity_over_fd_limit(config: &GatewayConfig, fd: esb_runtime::limits::FdLimit) {
    let wanted: u64 = config
        .functions
        .functions
        .values()
        .map(|f| u64::try_from(crate::pool_config(f).min_capacity).unwrap_or(u64::MAX))
        .fold(0, u64::saturating_add);
    let budget = fd.sandbox_budget(config.limits.max_connections);
    if wanted > budget {
        tracing::warn!(
            "the functions' min_capacity adds up to {wanted} sandboxes, but the open-file limit ({soft}, hard limit {hard}) leaves room for about {budget} beside --max-connections {connections}; raise `ulimit -n` or lower min_capacity or --max-connections",
            soft = fd.soft,
            hard = fd.hard,
            connections = config.limits.max_connections,
        );
    }
}

/// `--watch` of the configuration files: a valid change is sent to `reloads` (the gateway
/// is started anew with it); an invalid one is printed and the running one keeps serving.
fn watch_config(
    args: &Args,
    reloads: tokio::sync::mpsc::Sender<GatewayConfig>,
) -> tokio::task::JoinHandle<()> {
    use crate::hot_reload::{DEFAULT_POLL, spawn_config_watch};
    let files: Vec<PathBuf> = [
        &args.template,
        &args.functions,
        &args.routing,
        &args.env_vars,
    ]
    .into_iter()
    .flatten()
    .cloned()
    .collect();
    let args = args.clone();
    spawn_config_watch(files, DEFAULT_POLL, move || {
        let config = args.config().and_then(|config| {
            config
                .validate(args.capabilities().as_ref())
                .map_err(|problems| explain(problems.into()))?;
            Ok(config)
        });
        match config {
            Ok(config) => {
                if reloads.try_send(config).is_err() {
                    tracing::warn!("configuration changed again before the last reload: skipped");
                }
            }
            Err(err) => tracing::error!(
                "configuration changed but is invalid; the running one keeps serving:\n{err:#}"
            ),
        }
    })
}

/// `--watch` of the zip functions' code and layers of the running configuration.
fn watch_code(args: &Args, gateway: &Gateway) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut functions = args.functions()?;
    // Replaced sandboxes get the services' variables too, under the function's own.
    for function in functions.functions.values_mut() {
        function.environment =
            crate::services::under(gateway.function_environment(), &function.environment);
    }
    let targets = crate::hot_reload::targets(&functions);
    Ok(crate::hot_reload::spawn_for(
        gateway.pool().clone(),
        targets,
        Arc::new(args.managed()),
        crate::hot_reload::DEFAULT_POLL,
        args.capabilities(),
    ))
}

/// Starts a gateway on the address the one before it is giving up (retried for up to 2 s
/// while that listener closes).
async fn start_again(
    config: GatewayConfig,
    runtimes: Vec<Arc<dyn Runtime>>,
) -> Result<Gateway, StartError> {
    let mut tries = 0;
    loop {
        match Gateway::start(config.clone(), runtimes.clone()).await {
            Err(StartError::Bind { .. }) if tries < 40 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
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
        "limits.max_connections_per_client" => "--max-connections-per-client",
        "limits.header_timeout" => "--header-timeout",
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
    fn the_bridge_host_is_the_subnets_first_address() {
        assert_eq!(
            bridge_host("10.88.0.0/16").unwrap().to_string(),
            "10.88.0.1"
        );
        assert_eq!(
            bridge_host("10.235.0.7/24").unwrap().to_string(),
            "10.235.0.1"
        );
        assert!(bridge_host("fd00::/64").is_err());
    }

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
