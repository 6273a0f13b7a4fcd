//! The `remote` backend: a gRPC client of an `esb-agent`, and the wire form of [`Error`]
//! that the agent and this client share.
//!
//! ```no_run
//! # async fn run() -> Result<(), esb_runtime::Error> {
//! use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
//! use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};
//!
//! let config = RemoteConfig::new("http://127.0.0.1:50051").token("secret");
//! let runtime = RemoteRuntime::connect(config).await?;
//! let sandbox = runtime.create(SandboxSpec::new("echo").command(["./echo-fn"])).await?;
//! let response = runtime.invoke(&sandbox.id, InvokeRequest::new("{}")).await?;
//! println!("{:?}", response.body());
//! # Ok(()) }
//! ```
//!
//! Errors travel as a gRPC status whose code says what kind of failure it is (see
//! [`error_to_status`]) plus an `esb-error-bin` metadata entry holding the typed error as
//! JSON, so a [`RemoteRuntime`] gives its caller the same [`Error`] the agent's backend
//! returned. Function errors are not errors here: they are a normal invocation response.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, UNIX_EPOCH};

use async_trait::async_trait;
use esb_proto::agent::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use serde::{Deserialize, Serialize};
use tonic::metadata::{AsciiMetadataValue, BinaryMetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};

use crate::{
    Capabilities, Error, FunctionError, InvokeMode, InvokeRequest, InvokeResponse, InvokeResult,
    Result, Runtime, SandboxId, SandboxInfo, SandboxMetrics, SandboxSpec, SandboxState,
};

/// Largest gRPC message the agent and its clients exchange: a 6 MB payload plus its envelope.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// The metadata key that carries the typed error of a failed call.
pub const ERROR_METADATA_KEY: &str = "esb-error-bin";

// ---------------------------------------------------------------------------------------
// Errors on the wire
// ---------------------------------------------------------------------------------------

/// [`Error`] as it travels in [`ERROR_METADATA_KEY`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireError {
    NotFound {
        id: String,
    },
    InvalidSpec {
        function: String,
        reason: String,
    },
    Busy {
        id: String,
    },
    Paused {
        id: String,
    },
    Timeout {
        timeout_ms: u64,
    },
    InitTimeout {
        timeout_ms: u64,
    },
    InitFailed {
        error_type: String,
        error_message: String,
    },
    SandboxLost {
        id: String,
        reason: String,
    },
    PayloadTooLarge {
        size: usize,
        limit: usize,
    },
    Unsupported {
        operation: String,
        backend: String,
    },
    Unavailable {
        message: String,
    },
    Backend {
        message: String,
    },
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The gRPC status an agent answers for a runtime error.
///
/// NotFound -> `NOT_FOUND`, Timeout and InitTimeout -> `DEADLINE_EXCEEDED` (with Lambda's
/// "Task timed out after N seconds"), SandboxLost and InitFailed -> `ABORTED`, Busy ->
/// `RESOURCE_EXHAUSTED`, Paused -> `FAILED_PRECONDITION`, InvalidSpec and PayloadTooLarge ->
/// `INVALID_ARGUMENT`, Unsupported -> `UNIMPLEMENTED`, Unavailable -> `UNAVAILABLE`, anything
/// else -> `INTERNAL`. The typed error rides along in [`ERROR_METADATA_KEY`].
pub fn error_to_status(err: &Error) -> Status {
    let (code, wire) = match err {
        Error::NotFound(id) => (Code::NotFound, WireError::NotFound { id: id.to_string() }),
        Error::InvalidSpec { function, reason } => (
            Code::InvalidArgument,
            WireError::InvalidSpec {
                function: function.clone(),
                reason: reason.clone(),
            },
        ),
        Error::Busy(id) => (
            Code::ResourceExhausted,
            WireError::Busy { id: id.to_string() },
        ),
        Error::Paused(id) => (
            Code::FailedPrecondition,
            WireError::Paused { id: id.to_string() },
        ),
        Error::Timeout { timeout } => (
            Code::DeadlineExceeded,
            WireError::Timeout {
                timeout_ms: millis(*timeout),
            },
        ),
        Error::InitTimeout { timeout } => (
            Code::DeadlineExceeded,
            WireError::InitTimeout {
                timeout_ms: millis(*timeout),
            },
        ),
        Error::InitFailed {
            error_type,
            error_message,
        } => (
            Code::Aborted,
            WireError::InitFailed {
                error_type: error_type.clone(),
                error_message: error_message.clone(),
            },
        ),
        Error::SandboxLost { id, reason } => (
            Code::Aborted,
            WireError::SandboxLost {
                id: id.to_string(),
                reason: reason.clone(),
            },
        ),
        Error::PayloadTooLarge { size, limit } => (
            Code::InvalidArgument,
            WireError::PayloadTooLarge {
                size: *size,
                limit: *limit,
            },
        ),
        Error::Unsupported { operation, backend } => (
            Code::Unimplemented,
            WireError::Unsupported {
                operation: (*operation).to_owned(),
                backend: (*backend).to_owned(),
            },
        ),
        Error::Unavailable(message) => (
            Code::Unavailable,
            WireError::Unavailable {
                message: message.clone(),
            },
        ),
        Error::Backend(message) => (
            Code::Internal,
            WireError::Backend {
                message: message.clone(),
            },
        ),
        Error::Io(io) => (
            Code::Internal,
            WireError::Backend {
                message: io.to_string(),
            },
        ),
    };
    let mut status = Status::new(code, err.to_string());
    if let Ok(json) = serde_json::to_vec(&wire) {
        status
            .metadata_mut()
            .insert_bin(ERROR_METADATA_KEY, BinaryMetadataValue::from_bytes(&json));
    }
    status
}

/// Operation and backend names of [`Error::Unsupported`], which must be `'static`.
const KNOWN_NAMES: &[&str] = &[
    "create",
    "invoke",
    "pause",
    "resume",
    "destroy",
    "list",
    "metrics",
    "image",
    "images",
    "command",
    "commands",
    "network",
    "rie",
    "process",
    "containerd",
    "remote",
];

fn known_name(name: &str) -> Option<&'static str> {
    KNOWN_NAMES.iter().copied().find(|known| *known == name)
}

/// The runtime error a status from an agent (or from the transport) stands for.
///
/// `agent` names the agent in errors that have no typed detail.
pub fn status_to_error(status: &Status, agent: &str) -> Error {
    let wire = status
        .metadata()
        .get_bin(ERROR_METADATA_KEY)
        .and_then(|value| value.to_bytes().ok())
        .and_then(|json| serde_json::from_slice::<WireError>(&json).ok());
    if let Some(wire) = wire {
        return match wire {
            WireError::NotFound { id } => Error::NotFound(id.into()),
            WireError::InvalidSpec { function, reason } => Error::InvalidSpec { function, reason },
            WireError::Busy { id } => Error::Busy(id.into()),
            WireError::Paused { id } => Error::Paused(id.into()),
            WireError::Timeout { timeout_ms } => Error::Timeout {
                timeout: Duration::from_millis(timeout_ms),
            },
            WireError::InitTimeout { timeout_ms } => Error::InitTimeout {
                timeout: Duration::from_millis(timeout_ms),
            },
            WireError::InitFailed {
                error_type,
                error_message,
            } => Error::InitFailed {
                error_type,
                error_message,
            },
            WireError::SandboxLost { id, reason } => Error::SandboxLost {
                id: id.into(),
                reason,
            },
            WireError::PayloadTooLarge { size, limit } => Error::PayloadTooLarge { size, limit },
            WireError::Unsupported { operation, backend } => {
                match (known_name(&operation), known_name(&backend)) {
                    (Some(operation), Some(backend)) => Error::Unsupported { operation, backend },
                    _ => Error::Backend(format!(
                        "agent {agent}: {operation} is not supported by the {backend} backend"
                    )),
                }
            }
            WireError::Unavailable { message } => {
                Error::Unavailable(format!("agent {agent}: {message}"))
            }
            WireError::Backend { message } => Error::Backend(format!("agent {agent}: {message}")),
        };
    }
    let message = status.message();
    match status.code() {
        Code::Unavailable | Code::Cancelled => {
            Error::Unavailable(format!("agent {agent} unreachable: {message}"))
        }
        // Made on this side from a connection failure (e.g. a refused TLS handshake), not
        // received from the agent: statuses from the wire carry no source.
        Code::Unknown if std::error::Error::source(status).is_some() => Error::Unavailable(
            format!("agent {agent} unreachable: {}", source_chain(status)),
        ),
        Code::Unauthenticated | Code::PermissionDenied => {
            Error::Backend(format!("agent {agent} rejected the credentials: {message}"))
        }
        code => Error::Backend(format!("agent {agent} answered {code:?}: {message}")),
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

/// The agent's request for creating a sandbox from this spec.
pub fn spec_to_proto(spec: &SandboxSpec) -> pb::EnsureContainerRequest {
    pb::EnsureContainerRequest {
        function_name: spec.function_name.clone(),
        image: spec.image.clone().unwrap_or_default(),
        command: spec.command.clone().unwrap_or_default(),
        env: spec
            .env
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        memory_mb: spec.memory_mb,
        timeout_ms: u32::try_from(spec.timeout.as_millis()).unwrap_or(u32::MAX),
        invoke_mode: match spec.invoke_mode {
            InvokeMode::RuntimeApi => pb::InvokeMode::RuntimeApi,
            InvokeMode::Rie => pb::InvokeMode::Rie,
        } as i32,
        container_id: String::new(),
    }
}

/// The spec an agent builds from a create request; zero fields take Lambda's defaults.
pub fn spec_from_proto(request: pb::EnsureContainerRequest) -> Result<SandboxSpec> {
    let mut spec = SandboxSpec::new(request.function_name);
    if spec.function_name.is_empty() {
        return Err(Error::InvalidSpec {
            function: String::new(),
            reason: "function_name is empty".into(),
        });
    }
    spec.image = Some(request.image).filter(|image| !image.is_empty());
    spec.command = Some(request.command).filter(|argv| !argv.is_empty());
    spec.env = request.env.into_iter().collect();
    if request.memory_mb > 0 {
        spec.memory_mb = request.memory_mb;
    }
    if request.timeout_ms > 0 {
        spec.timeout = Duration::from_millis(u64::from(request.timeout_ms));
    }
    spec.invoke_mode = match pb::InvokeMode::try_from(request.invoke_mode) {
        Ok(pb::InvokeMode::RuntimeApi) => InvokeMode::RuntimeApi,
        Ok(pb::InvokeMode::Rie) => InvokeMode::Rie,
        Err(_) => {
            return Err(Error::InvalidSpec {
                function: spec.function_name,
                reason: format!("unknown invoke_mode {}", request.invoke_mode),
            });
        }
    };
    Ok(spec)
}

/// A sandbox as the agent lists it.
pub fn info_to_proto(info: SandboxInfo) -> pb::Container {
    let created_at_ms = info
        .created_at
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0);
    let status = match info.state {
        SandboxState::Running => pb::ContainerStatus::Running,
        SandboxState::Paused => pb::ContainerStatus::Paused,
        SandboxState::Stopped => pb::ContainerStatus::Stopped,
        SandboxState::Unknown => pb::ContainerStatus::Unknown,
    };
    pb::Container {
        container_id: info.id.to_string(),
        function_name: info.function_name,
        status: status as i32,
        created_at_ms,
        labels: info.labels.into_iter().collect(),
    }
}

/// A sandbox from the agent's listing.
pub fn info_from_proto(container: pb::Container) -> SandboxInfo {
    let state = match pb::ContainerStatus::try_from(container.status) {
        Ok(pb::ContainerStatus::Running) => SandboxState::Running,
        Ok(pb::ContainerStatus::Paused) => SandboxState::Paused,
        Ok(pb::ContainerStatus::Stopped) => SandboxState::Stopped,
        Ok(pb::ContainerStatus::Unknown) | Err(_) => SandboxState::Unknown,
    };
    let created_at = UNIX_EPOCH
        + Duration::from_millis(u64::try_from(container.created_at_ms).unwrap_or_default());
    SandboxInfo {
        id: container.container_id.into(),
        function_name: container.function_name,
        state,
        created_at,
        labels: container.labels.into_iter().collect::<BTreeMap<_, _>>(),
    }
}

/// The agent's request for one invocation.
pub fn invoke_to_proto(id: &SandboxId, request: InvokeRequest) -> pb::InvokeWorkerRequest {
    pb::InvokeWorkerRequest {
        container_id: id.to_string(),
        payload: request.payload,
        request_id: request.request_id,
        trace_id: request.trace_id.unwrap_or_default(),
        client_context: request.client_context.unwrap_or_default(),
        cognito_identity: request.cognito_identity.unwrap_or_default(),
        timeout_ms: request
            .timeout
            .map(|t| u32::try_from(t.as_millis().max(1)).unwrap_or(u32::MAX))
            .unwrap_or(0),
        log_tail: request.log_tail,
    }
}

/// The invocation an agent runs for a request; its sandbox id comes with it.
pub fn invoke_from_proto(request: pb::InvokeWorkerRequest) -> (SandboxId, InvokeRequest) {
    let request_id = if request.request_id.is_empty() {
        uuid::Uuid::new_v4().to_string()
    } else {
        request.request_id
    };
    let invoke = InvokeRequest {
        request_id,
        payload: request.payload,
        trace_id: Some(request.trace_id).filter(|s| !s.is_empty()),
        client_context: Some(request.client_context).filter(|s| !s.is_empty()),
        cognito_identity: Some(request.cognito_identity).filter(|s| !s.is_empty()),
        timeout: Some(request.timeout_ms)
            .filter(|&ms| ms > 0)
            .map(|ms| Duration::from_millis(u64::from(ms))),
        log_tail: request.log_tail,
    };
    (request.container_id.into(), invoke)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The agent's answer for a finished invocation (a function error included).
pub fn response_to_proto(response: InvokeResponse) -> pb::InvokeWorkerResponse {
    let result = match response.result {
        InvokeResult::Success(body) => pb::invoke_worker_response::Result::Payload(body),
        InvokeResult::FunctionError(err) => {
            pb::invoke_worker_response::Result::FunctionError(pb::FunctionError {
                error_type: err.error_type,
                error_message: err.error_message,
                payload: err.payload,
            })
        }
    };
    pb::InvokeWorkerResponse {
        result: Some(result),
        duration_us: micros(response.duration),
        billed_duration_ms: millis(response.billed_duration),
        max_memory_used_mb: response.max_memory_used_mb,
        init_duration_us: response.init_duration.map(micros),
        log_tail: response.log_tail,
    }
}

/// The invocation result in an agent's answer.
pub fn response_from_proto(response: pb::InvokeWorkerResponse) -> Result<InvokeResponse> {
    let result = match response.result {
        Some(pb::invoke_worker_response::Result::Payload(body)) => InvokeResult::Success(body),
        Some(pb::invoke_worker_response::Result::FunctionError(err)) => {
            InvokeResult::FunctionError(FunctionError {
                error_type: err.error_type,
                error_message: err.error_message,
                payload: err.payload,
            })
        }
        None => {
            return Err(Error::Backend(
                "the agent's invocation response has no result".into(),
            ));
        }
    };
    Ok(InvokeResponse {
        result,
        duration: Duration::from_micros(response.duration_us),
        billed_duration: Duration::from_millis(response.billed_duration_ms),
        max_memory_used_mb: response.max_memory_used_mb,
        init_duration: response.init_duration_us.map(Duration::from_micros),
        log_tail: response.log_tail,
    })
}

/// Resource usage as the agent reports it.
pub fn metrics_to_proto(metrics: SandboxMetrics) -> pb::GetContainerMetricsResponse {
    pb::GetContainerMetricsResponse {
        memory_current_bytes: metrics.memory_current_bytes,
        memory_max_bytes: metrics.memory_max_bytes,
        memory_limit_bytes: metrics.memory_limit_bytes,
        oom_events: metrics.oom_events,
        cpu_usage_ns: metrics.cpu_usage_ns,
        pids: metrics.pids,
    }
}

/// What a backend can do, as the agent reports it.
pub fn capabilities_to_proto(capabilities: Capabilities) -> pb::GetCapabilitiesResponse {
    pb::GetCapabilitiesResponse {
        pause: capabilities.pause,
        images: capabilities.images,
        commands: capabilities.commands,
        metrics: capabilities.metrics,
        network: capabilities.network,
        backend: capabilities.backend.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// TLS settings of the connection to an agent (PEM contents).
#[derive(Clone, Debug, Default)]
pub struct RemoteTls {
    /// CA certificate(s) that signed the agent's certificate; the system's roots when `None`.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for agents that require mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the agent's certificate against, when not the endpoint's host.
    pub domain: Option<String>,
}

/// How to reach one agent.
#[derive(Clone)]
pub struct RemoteConfig {
    /// `http://host:port` or `https://host:port`.
    pub endpoint: String,
    /// The agent's bearer token, if it requires one.
    pub token: Option<String>,
    /// TLS settings; required for `https://` endpoints with a private CA.
    pub tls: Option<RemoteTls>,
    /// How long one connection attempt may take.
    pub connect_timeout: Duration,
    /// Attempts of operations that are safe to repeat (connect, list, metrics, destroy).
    pub attempts: u32,
    /// Pause before the second attempt; doubled for each one after.
    pub retry_backoff: Duration,
    /// Added to an invocation's own timeout before the client gives up on the agent.
    pub invoke_margin: Duration,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("tls", &self.tls.is_some())
            .field("connect_timeout", &self.connect_timeout)
            .field("attempts", &self.attempts)
            .field("retry_backoff", &self.retry_backoff)
            .field("invoke_margin", &self.invoke_margin)
            .finish()
    }
}

impl RemoteConfig {
    /// Settings for this endpoint: no token, no TLS, 3 attempts 100 ms apart.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: None,
            tls: None,
            connect_timeout: Duration::from_secs(3),
            attempts: 3,
            retry_backoff: Duration::from_millis(100),
            invoke_margin: Duration::from_secs(5),
        }
    }

    /// Sets the bearer token.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// Sets the TLS settings.
    pub fn tls(mut self, tls: RemoteTls) -> Self {
        self.tls = Some(tls);
        self
    }
}

/// Adds `authorization: Bearer <token>` to every call.
#[derive(Clone)]
struct BearerToken(Option<AsciiMetadataValue>);

impl Interceptor for BearerToken {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

type Client = AgentServiceClient<InterceptedService<Channel, BearerToken>>;

/// A [`Runtime`] whose sandboxes live on a remote `esb-agent`.
#[derive(Clone)]
pub struct RemoteRuntime {
    client: Client,
    config: RemoteConfig,
    capabilities: Capabilities,
    agent_backend: String,
}

impl std::fmt::Debug for RemoteRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteRuntime")
            .field("config", &self.config)
            .field("agent_backend", &self.agent_backend)
            .finish_non_exhaustive()
    }
}

impl RemoteRuntime {
    /// Connects to the agent and reads its capabilities.
    ///
    /// An agent that cannot be reached after [`RemoteConfig::attempts`] gives [`Error::Unavailable`].
    pub async fn connect(config: RemoteConfig) -> Result<Self> {
        let endpoint = endpoint(&config)?;
        let token = match &config.token {
            Some(token) => Some(
                AsciiMetadataValue::try_from(format!("Bearer {token}"))
                    .map_err(|_| Error::Backend("the agent token is not valid ASCII".into()))?,
            ),
            None => None,
        };
        let channel = retry(&config, "connect", || {
            let endpoint = endpoint.clone();
            let agent = config.endpoint.clone();
            async move {
                endpoint.connect().await.map_err(|err| {
                    Error::Unavailable(format!("agent {agent} unreachable: {}", source_chain(&err)))
                })
            }
        })
        .await?;
        let client = AgentServiceClient::with_interceptor(channel, BearerToken(token))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut runtime = Self {
            client,
            config,
            capabilities: Capabilities {
                backend: "remote",
                ..Capabilities::default()
            },
            agent_backend: String::new(),
        };
        let reported = runtime
            .safe_call("capabilities", |mut client| async move {
                client
                    .get_capabilities(pb::GetCapabilitiesRequest {})
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        runtime.capabilities = Capabilities {
            backend: "remote",
            pause: reported.pause,
            images: reported.images,
            commands: reported.commands,
            metrics: reported.metrics,
            network: reported.network,
        };
        runtime.agent_backend = reported.backend;
        Ok(runtime)
    }

    /// The agent's endpoint.
    pub fn endpoint(&self) -> &str {
        &self.config.endpoint
    }

    /// The backend the agent itself runs (`containerd`, `process`).
    pub fn agent_backend(&self) -> &str {
        &self.agent_backend
    }

    fn error(&self, status: &Status) -> Error {
        status_to_error(status, &self.config.endpoint)
    }

    /// One call, repeated while the agent is unreachable: only for calls safe to repeat.
    async fn safe_call<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        retry(&self.config, operation, || {
            let client = self.client.clone();
            let fut = call(client);
            async move { fut.await.map_err(|status| self.error(&status)) }
        })
        .await
    }
}

fn endpoint(config: &RemoteConfig) -> Result<Endpoint> {
    let bad = |err: &dyn std::fmt::Display| {
        Error::Backend(format!("agent endpoint {:?}: {err}", config.endpoint))
    };
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(|err| bad(&err))?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5))
        .keep_alive_while_idle(true);
    let https = config.endpoint.starts_with("https://");
    if let Some(tls) = &config.tls {
        crate::ensure_crypto_provider();
        let mut tls_config = ClientTlsConfig::new();
        tls_config = match &tls.ca_pem {
            Some(ca) => tls_config.ca_certificate(Certificate::from_pem(ca)),
            None => tls_config.with_enabled_roots(),
        };
        if let Some((cert, key)) = &tls.identity {
            tls_config = tls_config.identity(Identity::from_pem(cert, key));
        }
        if let Some(domain) = &tls.domain {
            tls_config = tls_config.domain_name(domain.clone());
        }
        endpoint = endpoint.tls_config(tls_config).map_err(|err| bad(&err))?;
    } else if https {
        return Err(bad(
            &"an https:// endpoint needs TLS settings (RemoteConfig::tls)",
        ));
    }
    Ok(endpoint)
}

/// The error and its causes on one line (transport errors hide the useful part in sources).
fn source_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

async fn retry<T, F, Fut>(
    config: &RemoteConfig,
    operation: &'static str,
    mut attempt: F,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let attempts = config.attempts.max(1);
    let mut backoff = config.retry_backoff;
    let mut n = 1;
    loop {
        match attempt().await {
            Err(Error::Unavailable(reason)) if n < attempts => {
                tracing::debug!(agent = %config.endpoint, operation, attempt = n, %reason, "retrying");
                tokio::time::sleep(backoff).await;
                backoff = backoff.saturating_mul(2);
                n += 1;
            }
            other => return other,
        }
    }
}

#[async_trait]
impl Runtime for RemoteRuntime {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let mut client = self.client.clone();
        let response = client
            .ensure_container(spec_to_proto(&spec))
            .await
            .map_err(|status| self.error(&status))?
            .into_inner();
        let container = response.container.ok_or_else(|| {
            Error::Backend(format!(
                "agent {} created a sandbox for {} but did not describe it",
                self.config.endpoint, spec.function_name
            ))
        })?;
        Ok(info_from_proto(container))
    }

    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        let own_timeout = request.timeout;
        let mut grpc = tonic::Request::new(invoke_to_proto(id, request));
        if let Some(timeout) = own_timeout {
            grpc.set_timeout(timeout + self.config.invoke_margin);
        }
        let mut client = self.client.clone();
        let response = client
            .invoke_worker(grpc)
            .await
            .map_err(|status| match (status.code(), own_timeout) {
                // Our own deadline passed before the agent answered: the invocation timed out.
                (Code::Cancelled | Code::DeadlineExceeded, Some(timeout))
                    if status.metadata().get_bin(ERROR_METADATA_KEY).is_none() =>
                {
                    Error::Timeout { timeout }
                }
                _ => self.error(&status),
            })?
            .into_inner();
        response_from_proto(response)
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let mut client = self.client.clone();
        client
            .pause_container(pb::PauseContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let mut client = self.client.clone();
        client
            .resume_container(pb::ResumeContainerRequest {
                container_id: id.to_string(),
            })
            .await
            .map_err(|status| self.error(&status))?;
        Ok(())
    }

    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        self.safe_call("destroy", |mut client| async move {
            client
                .destroy_container(pb::DestroyContainerRequest {
                    container_id: id.to_string(),
                })
                .await
                .map(drop)
        })
        .await
    }

    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        let listed = self
            .safe_call("list", |mut client| async move {
                client
                    .list_containers(pb::ListContainersRequest::default())
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(listed.containers.into_iter().map(info_from_proto).collect())
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        let m = self
            .safe_call("metrics", |mut client| async move {
                client
                    .get_container_metrics(pb::GetContainerMetricsRequest {
                        container_id: id.to_string(),
                    })
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        Ok(SandboxMetrics {
            memory_current_bytes: m.memory_current_bytes,
            memory_max_bytes: m.memory_max_bytes,
            memory_limit_bytes: m.memory_limit_bytes,
            oom_events: m.oom_events,
            cpu_usage_ns: m.cpu_usage_ns,
            pids: m.pids,
        })
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(err: Error) -> Error {
        status_to_error(&error_to_status(&err), "test-agent")
    }

    #[test]
    fn timeout_keeps_lambda_message_and_duration() {
        let status = error_to_status(&Error::Timeout {
            timeout: Duration::from_secs(3),
        });
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(status.message(), "Task timed out after 3.00 seconds");
        assert!(matches!(
            status_to_error(&status, "a"),
            Error::Timeout { timeout } if timeout == Duration::from_secs(3)
        ));
    }

    #[test]
    fn typed_errors_survive_the_wire() {
        assert!(
            matches!(round_trip(Error::NotFound("sb-1".into())), Error::NotFound(id) if id.as_str() == "sb-1")
        );
        assert!(
            matches!(round_trip(Error::Busy("sb-2".into())), Error::Busy(id) if id.as_str() == "sb-2")
        );
        assert!(matches!(
            round_trip(Error::SandboxLost { id: "sb-3".into(), reason: "signal: killed".into() }),
            Error::SandboxLost { id, reason } if id.as_str() == "sb-3" && reason == "signal: killed"
        ));
        assert!(matches!(
            round_trip(Error::InitFailed { error_type: "Runtime.X".into(), error_message: "boom".into() }),
            Error::InitFailed { error_type, error_message } if error_type == "Runtime.X" && error_message == "boom"
        ));
        assert!(matches!(
            round_trip(Error::PayloadTooLarge { size: 7, limit: 6 }),
            Error::PayloadTooLarge { size: 7, limit: 6 }
        ));
        assert!(matches!(
            round_trip(Error::Unsupported {
                operation: "pause",
                backend: "process"
            }),
            Error::Unsupported {
                operation: "pause",
                backend: "process"
            }
        ));
        assert!(matches!(
            round_trip(Error::Unavailable("containerd down".into())),
            Error::Unavailable(msg) if msg.contains("containerd down")
        ));
    }

    #[test]
    fn status_codes_follow_the_kind_of_failure() {
        let code = |err: Error| error_to_status(&err).code();
        assert_eq!(code(Error::NotFound("x".into())), Code::NotFound);
        assert_eq!(code(Error::Busy("x".into())), Code::ResourceExhausted);
        assert_eq!(code(Error::Paused("x".into())), Code::FailedPrecondition);
        assert_eq!(
            code(Error::SandboxLost {
                id: "x".into(),
                reason: String::new()
            }),
            Code::Aborted
        );
        assert_eq!(code(Error::Unavailable(String::new())), Code::Unavailable);
        assert_eq!(code(Error::Backend(String::new())), Code::Internal);
    }

    #[test]
    fn untyped_unavailable_status_means_the_agent_is_unreachable() {
        let err = status_to_error(&Status::unavailable("connection refused"), "http://h:1");
        assert!(matches!(err, Error::Unavailable(msg) if msg.contains("http://h:1")));
        let err = status_to_error(&Status::unauthenticated("bad token"), "http://h:1");
        assert!(matches!(err, Error::Backend(msg) if msg.contains("rejected")));
    }

    #[test]
    fn invoke_messages_round_trip() {
        let mut request = InvokeRequest::new(r#"{"a":1}"#);
        request.trace_id = Some("Root=1-0-0".into());
        request.timeout = Some(Duration::from_millis(250));
        request.log_tail = true;
        let id = SandboxId::from("sb");
        let (back_id, back) = invoke_from_proto(invoke_to_proto(&id, request.clone()));
        assert_eq!(back_id, id);
        assert_eq!(back, request);

        let response = InvokeResponse {
            result: InvokeResult::FunctionError(FunctionError::new("E", "m")),
            duration: Duration::from_micros(1500),
            billed_duration: Duration::from_millis(2),
            max_memory_used_mb: 12,
            init_duration: Some(Duration::from_micros(40_000)),
            log_tail: Some("START RequestId: r Version: $LATEST\n".into()),
        };
        assert_eq!(
            response_from_proto(response_to_proto(response.clone())).ok(),
            Some(response)
        );
    }

    #[test]
    fn spec_defaults_apply_to_zero_fields() {
        let spec = SandboxSpec::new("f")
            .command(["/bin/f"])
            .env("K", "V")
            .timeout(Duration::from_secs(9));
        let back = spec_from_proto(spec_to_proto(&spec)).ok();
        assert_eq!(back, Some(spec));
        let request = pb::EnsureContainerRequest {
            function_name: "g".into(),
            ..Default::default()
        };
        let spec = spec_from_proto(request).ok();
        assert_eq!(spec, Some(SandboxSpec::new("g")));
        assert!(spec_from_proto(pb::EnsureContainerRequest::default()).is_err());
    }
}
