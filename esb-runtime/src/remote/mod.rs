//! The `remote` backend: a gRPC client of an `esb-agent`; [`wire`] holds the wire form of
//! this crate's types that the agent and this client share.
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
//! A [`RemoteRuntime`] gives its caller the same [`Error`] the agent's backend returned
//! (see [`wire`]). Function errors are not errors here: they are a normal invocation response.

mod stream;
pub mod wire;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use esb_proto::agent::v1 as pb;
use pb::agent_service_client::AgentServiceClient;
use tonic::metadata::AsciiMetadataValue;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic::{Code, Status};
use tower::ServiceExt;
use tower::retry::{Policy, Retry};

use self::wire::Invocation;
pub use self::wire::{ERROR_METADATA_KEY, error_to_status, status_to_error};
use crate::{
    Capabilities, Capacity, Error, InvokeRequest, InvokeResponse, Result, Runtime, SandboxId,
    SandboxInfo, SandboxMetrics, SandboxSpec,
};

/// Default [`RemoteConfig::keepalive_interval`].
pub const DEFAULT_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Default [`RemoteConfig::keepalive_timeout`].
pub const DEFAULT_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default [`RemoteConfig::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// The gRPC service whose `grpc.health.v1` status [`RemoteRuntime::check_health`] asks for.
pub const AGENT_SERVICE_NAME: &str = "esb.agent.v1.AgentService";

/// Largest gRPC message the agent and its clients exchange: a 6 MB payload plus its envelope.
pub const MAX_MESSAGE_BYTES: usize = 8 * 1024 * 1024;

/// Payloads larger than this take a call of their own rather than the shared invocation
/// stream, so that they do not hold up the small ones behind them.
pub const STREAM_PAYLOAD_LIMIT: usize = 256 * 1024;

// ---------------------------------------------------------------------------------------
// The client
// ---------------------------------------------------------------------------------------

/// TLS settings of the connection to an agent (PEM contents).
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct RemoteTls {
    /// CA certificate(s) that signed the agent's certificate; the system's roots when `None`.
    pub ca_pem: Option<Vec<u8>>,
    /// Client certificate and key, for agents that require mTLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
    /// Name to verify the agent's certificate against, when not the endpoint's host.
    pub domain: Option<String>,
}

impl RemoteTls {
    /// Sets the CA certificate(s) that signed the agent's certificate.
    pub fn ca_pem(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_pem = Some(pem.into());
        self
    }

    /// Sets the client certificate and key (mTLS).
    pub fn identity(mut self, cert_pem: impl Into<Vec<u8>>, key_pem: impl Into<Vec<u8>>) -> Self {
        self.identity = Some((cert_pem.into(), key_pem.into()));
        self
    }

    /// Sets the name to verify the agent's certificate against.
    pub fn domain(mut self, domain: impl Into<String>) -> Self {
        self.domain = Some(domain.into());
        self
    }
}

/// How to reach one agent.
#[derive(Clone)]
#[non_exhaustive]
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
    /// HTTP/2 PING interval on the connection to the agent, also while idle.
    pub keepalive_interval: Duration,
    /// A PING unanswered this long closes the connection: calls in flight on it fail with
    /// [`Error::Unavailable`] instead of waiting for a host that is gone.
    pub keepalive_timeout: Duration,
    /// How long one attempt of a call that is safe to repeat (list, metrics, destroy) may take.
    pub call_timeout: Duration,
    /// Sends invocations over one long-lived stream to the agent (`InvokeStream`) rather
    /// than one `InvokeWorker` call each; agents without the stream get calls.
    pub invoke_stream: bool,
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
            .field("keepalive_interval", &self.keepalive_interval)
            .field("keepalive_timeout", &self.keepalive_timeout)
            .field("call_timeout", &self.call_timeout)
            .field("invoke_stream", &self.invoke_stream)
            .finish()
    }
}

impl RemoteConfig {
    /// Settings for this endpoint: no token, no TLS, 3 attempts 100 ms apart, invocations
    /// over one stream.
    pub fn new(endpoint: impl Into<String>) -> Self {
        Self {
            endpoint: endpoint.into(),
            token: None,
            tls: None,
            connect_timeout: Duration::from_secs(3),
            attempts: 3,
            retry_backoff: Duration::from_millis(100),
            invoke_margin: Duration::from_secs(5),
            keepalive_interval: DEFAULT_KEEPALIVE_INTERVAL,
            keepalive_timeout: DEFAULT_KEEPALIVE_TIMEOUT,
            call_timeout: DEFAULT_CALL_TIMEOUT,
            invoke_stream: true,
        }
    }

    /// Sends invocations over one stream (`true`, the default) or one call each.
    pub fn invoke_stream(mut self, stream: bool) -> Self {
        self.invoke_stream = stream;
        self
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

    /// Sets the attempts of operations that are safe to repeat.
    pub fn attempts(mut self, attempts: u32) -> Self {
        self.attempts = attempts;
        self
    }

    /// Sets the pause before the second attempt (doubled for each one after).
    pub fn retry_backoff(mut self, backoff: Duration) -> Self {
        self.retry_backoff = backoff;
        self
    }

    /// Sets how long one connection attempt may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets the HTTP/2 PING interval and how long a PING may go unanswered before the
    /// connection (and every call on it) is given up.
    pub fn keepalive(mut self, interval: Duration, timeout: Duration) -> Self {
        self.keepalive_interval = interval;
        self.keepalive_timeout = timeout;
        self
    }

    /// Sets how long one attempt of a call that is safe to repeat may take.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout;
        self
    }

    /// Sets what is added to an invocation's own timeout before the client gives up.
    pub fn invoke_margin(mut self, margin: Duration) -> Self {
        self.invoke_margin = margin;
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
    /// The connection, for the health checks.
    channel: Channel,
    config: RemoteConfig,
    capabilities: Capabilities,
    capacity: Capacity,
    agent_backend: String,
    /// The invocation stream, shared by the clones.
    streams: Arc<stream::Streams>,
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
        let agent = config.endpoint.clone();
        let connect = tower::service_fn(|()| {
            let endpoint = endpoint.clone();
            let agent = agent.clone();
            async move {
                endpoint.connect().await.map_err(|err| {
                    Error::Unavailable(format!(
                        "agent {agent} unreachable: {}",
                        esb_logs::ErrorChain(&err)
                    ))
                })
            }
        });
        let channel = Retry::new(RetryUnavailable::new(&config, "connect"), connect)
            .oneshot(())
            .await?;
        let client = AgentServiceClient::with_interceptor(channel.clone(), BearerToken(token))
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES);
        let mut runtime = Self {
            client,
            channel,
            config,
            capabilities: Capabilities {
                backend: "remote",
                ..Capabilities::default()
            },
            capacity: Capacity::default(),
            agent_backend: String::new(),
            streams: Arc::default(),
        };
        let reported = runtime
            .safe_call("capabilities", |mut client| async move {
                client
                    .get_capabilities(pb::GetCapabilitiesRequest {})
                    .await
                    .map(tonic::Response::into_inner)
            })
            .await?;
        runtime.capabilities = Capabilities::from(&reported);
        runtime.capacity = Capacity::default()
            .max_sandboxes(reported.max_sandboxes)
            .memory_budget_mb(reported.memory_budget_mb);
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

    /// Asks the agent's `grpc.health.v1` service whether it serves; an agent that does not
    /// answer within `timeout`, cannot be reached or says it does not serve (it is
    /// shutting down) gives [`Error::Unavailable`].
    pub async fn check_health(&self, timeout: Duration) -> Result<()> {
        use tonic_health::pb::health_check_response::ServingStatus;
        use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
        let mut client = HealthClient::new(self.channel.clone());
        let request = HealthCheckRequest {
            service: AGENT_SERVICE_NAME.to_owned(),
        };
        let answer = match tokio::time::timeout(timeout, client.check(request)).await {
            Err(_) => return Err(self.silent("health check", timeout)),
            Ok(Err(status)) => {
                return Err(Error::Unavailable(format!(
                    "agent {} failed its health check: {}",
                    self.config.endpoint,
                    status.message()
                )));
            }
            Ok(Ok(answer)) => answer.into_inner(),
        };
        if answer.status == ServingStatus::Serving as i32 {
            Ok(())
        } else {
            Err(Error::Unavailable(format!(
                "agent {} reports it is not serving",
                self.config.endpoint
            )))
        }
    }

    /// The error of a call the agent did not answer within `waited`.
    fn silent(&self, operation: &str, waited: Duration) -> Error {
        Error::Unavailable(format!(
            "agent {} did not answer {operation} within {waited:?}",
            self.config.endpoint
        ))
    }

    fn error(&self, status: &Status) -> Error {
        status_to_error(status, &self.config.endpoint)
    }

    /// The message of a call's answer, or the runtime error its status stands for.
    fn answer<T>(&self, answered: Result<tonic::Response<T>, Status>) -> Result<T> {
        answered
            .map(tonic::Response::into_inner)
            .map_err(|status| self.error(&status))
    }

    /// One invocation as a call of its own (`InvokeWorker`).
    async fn invoke_call(
        &self,
        invocation: pb::InvokeWorkerRequest,
        own_timeout: Option<Duration>,
    ) -> Result<pb::InvokeWorkerResponse> {
        let mut grpc = tonic::Request::new(invocation);
        if let Some(timeout) = own_timeout {
            grpc.set_timeout(timeout + self.config.invoke_margin);
        }
        let mut client = self.client.clone();
        let response = client.invoke_worker(grpc).await.map_err(|status| {
            match (status.code(), own_timeout) {
                // Our own deadline passed before the agent answered: the invocation timed out.
                (Code::Cancelled | Code::DeadlineExceeded, Some(timeout))
                    if status.metadata().get_bin(ERROR_METADATA_KEY).is_none() =>
                {
                    Error::Timeout { timeout }
                }
                _ => self.error(&status),
            }
        })?;
        Ok(response.into_inner())
    }

    /// One invocation over the agent's invocation stream (a call of its own when the agent
    /// has none). A stream found ended or closed before the invocation went out (nothing of
    /// it was sent) is opened again once.
    async fn invoke_streamed(
        &self,
        mut invocation: pb::InvokeWorkerRequest,
        own_timeout: Option<Duration>,
    ) -> Result<pb::InvokeWorkerResponse> {
        let agent = &self.config.endpoint;
        for _ in 0..2 {
            let Some(stream) = self.streams.get(&self.client, agent).await? else {
                return self.invoke_call(invocation, own_timeout).await;
            };
            let pending = match stream.send(invocation) {
                Ok(pending) => pending,
                Err(stream::Unsent::Ended(unsent)) => {
                    invocation = *unsent;
                    continue;
                }
            };
            return match own_timeout {
                // Past our own deadline the invocation timed out; dropping `pending` cancels
                // it on the agent.
                Some(timeout) => {
                    tokio::time::timeout(timeout + self.config.invoke_margin, pending.answer())
                        .await
                        .unwrap_or(Err(Error::Timeout { timeout }))
                }
                None => pending.answer().await,
            };
        }
        Err(Error::Unavailable(format!(
            "agent {agent} unreachable: its invocation stream ended twice in a row"
        )))
    }

    /// One call, repeated while the agent is unreachable: only for calls safe to repeat.
    async fn safe_call<T, F, Fut>(&self, operation: &'static str, call: F) -> Result<T>
    where
        F: Fn(Client) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let attempt = tower::service_fn(|()| {
            let fut = call(self.client.clone());
            async move {
                match tokio::time::timeout(self.config.call_timeout, fut).await {
                    Ok(answered) => answered.map_err(|status| self.error(&status)),
                    Err(_) => Err(self.silent(operation, self.config.call_timeout)),
                }
            }
        });
        Retry::new(RetryUnavailable::new(&self.config, operation), attempt)
            .oneshot(())
            .await
    }
}

/// Retries a call while the agent is unreachable ([`Error::Unavailable`]), at most
/// [`RemoteConfig::attempts`] times in all, waiting [`RemoteConfig::retry_backoff`] before
/// the second attempt and twice as long before each one after.
#[derive(Clone, Debug)]
struct RetryUnavailable {
    agent: String,
    operation: &'static str,
    attempt: u32,
    attempts: u32,
    backoff: Duration,
}

impl RetryUnavailable {
    fn new(config: &RemoteConfig, operation: &'static str) -> Self {
        Self {
            agent: config.endpoint.clone(),
            operation,
            attempt: 1,
            attempts: config.attempts.max(1),
            backoff: config.retry_backoff,
        }
    }
}

impl<T> Policy<(), T, Error> for RetryUnavailable {
    type Future = tokio::time::Sleep;

    fn retry(&mut self, _request: &mut (), result: &mut Result<T>) -> Option<Self::Future> {
        match result {
            Err(Error::Unavailable(reason)) if self.attempt < self.attempts => {
                tracing::debug!(
                    agent = %self.agent,
                    operation = self.operation,
                    attempt = self.attempt,
                    %reason,
                    "retrying"
                );
                let wait = self.backoff;
                self.backoff = self.backoff.saturating_mul(2);
                self.attempt += 1;
                Some(tokio::time::sleep(wait))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, _request: &()) -> Option<()> {
        Some(())
    }
}

fn endpoint(config: &RemoteConfig) -> Result<Endpoint> {
    let bad = |source: tonic::transport::Error| Error::Other {
        operation: format!("agent endpoint {:?}", config.endpoint),
        source: source.into(),
    };
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())
        .map_err(bad)?
        .connect_timeout(config.connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(config.keepalive_interval)
        .keep_alive_timeout(config.keepalive_timeout)
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
        endpoint = endpoint.tls_config(tls_config).map_err(bad)?;
    } else if https {
        return Err(Error::Backend(format!(
            "agent endpoint {:?}: an https:// endpoint needs TLS settings (RemoteConfig::tls)",
            config.endpoint
        )));
    }
    Ok(endpoint)
}

#[async_trait]
impl Runtime for RemoteRuntime {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        let request = pb::EnsureContainerRequest::from(&spec);
        let response = self.answer(self.client.clone().ensure_container(request).await)?;
        let container = response.container.ok_or_else(|| {
            Error::Backend(format!(
                "agent {} created a sandbox for {} but did not describe it",
                self.config.endpoint, spec.function_name
            ))
        })?;
        Ok(SandboxInfo::from(container))
    }

    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        let own_timeout = request.timeout;
        let streamed = self.config.invoke_stream && request.payload.len() <= STREAM_PAYLOAD_LIMIT;
        let invocation = pb::InvokeWorkerRequest::from(Invocation {
            id: id.clone(),
            request,
        });
        let response = if streamed {
            self.invoke_streamed(invocation, own_timeout).await?
        } else {
            self.invoke_call(invocation, own_timeout).await?
        };
        InvokeResponse::try_from(response)
    }

    async fn pause(&self, id: &SandboxId) -> Result<()> {
        let container_id = id.to_string();
        let request = pb::PauseContainerRequest { container_id };
        self.answer(self.client.clone().pause_container(request).await)
            .map(drop)
    }

    async fn resume(&self, id: &SandboxId) -> Result<()> {
        let container_id = id.to_string();
        let request = pb::ResumeContainerRequest { container_id };
        self.answer(self.client.clone().resume_container(request).await)
            .map(drop)
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
        Ok(listed
            .containers
            .into_iter()
            .map(SandboxInfo::from)
            .collect())
    }

    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        self.safe_call("metrics", |mut client| async move {
            client
                .get_container_metrics(pb::GetContainerMetricsRequest {
                    container_id: id.to_string(),
                })
                .await
                .map(|response| SandboxMetrics::from(response.into_inner()))
        })
        .await
    }

    fn capabilities(&self) -> Capabilities {
        self.capabilities
    }

    fn name(&self) -> String {
        self.config.endpoint.clone()
    }

    fn capacity(&self) -> Capacity {
        self.capacity
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    /// Calls a service that fails with `errors` (in turn) before it answers, under the retry
    /// policy of `attempts`; returns the outcome and the number of calls.
    async fn retried(attempts: u32, errors: Vec<Error>) -> (Result<&'static str>, u32) {
        let calls = AtomicU32::new(0);
        let errors = std::sync::Mutex::new(errors.into_iter());
        let service = tower::service_fn(|()| {
            calls.fetch_add(1, Ordering::SeqCst);
            let next = errors.lock().ok().and_then(|mut e| e.next());
            async move {
                match next {
                    Some(err) => Err(err),
                    None => Ok("answer"),
                }
            }
        });
        let config = RemoteConfig::new("http://agent:1")
            .attempts(attempts)
            .retry_backoff(Duration::from_millis(100));
        let outcome = Retry::new(RetryUnavailable::new(&config, "test"), service)
            .oneshot(())
            .await;
        (outcome, calls.load(Ordering::SeqCst))
    }

    fn unavailable() -> Error {
        Error::Unavailable("down".into())
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_calls_are_repeated_with_a_doubling_pause() {
        let started = tokio::time::Instant::now();
        let (outcome, calls) = retried(3, vec![unavailable(), unavailable()]).await;
        assert_eq!(outcome.ok(), Some("answer"));
        assert_eq!(calls, 3);
        assert_eq!(started.elapsed(), Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn the_last_attempt_gives_its_error() {
        let (outcome, calls) = retried(2, vec![unavailable(), unavailable()]).await;
        assert!(matches!(outcome, Err(Error::Unavailable(_))));
        assert_eq!(calls, 2);
        let (outcome, calls) = retried(0, vec![unavailable()]).await;
        assert!(matches!(outcome, Err(Error::Unavailable(_))));
        assert_eq!(calls, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn other_errors_are_not_repeated() {
        let (outcome, calls) = retried(3, vec![Error::NotFound("sb".into())]).await;
        assert!(matches!(outcome, Err(Error::NotFound(_))));
        assert_eq!(calls, 1);
    }
}
