//! The ESB agent: the Lambda sandboxes of one host, served over gRPC
//! (`esb.agent.v1.AgentService`, `grpc.health.v1`, and reflection when asked).
//!
//! The `esb-agent` binary parses flags into [`ServeOptions`] and calls [`serve`]; tests and
//! the all-in-one gateway can run the same server in-process over any [`Runtime`].
//!
//! ```no_run
//! use std::sync::Arc;
//! use esb_agent::{BearerAuth, ServeOptions, serve};
//! use esb_runtime::process::{ProcessConfig, ProcessRuntime};
//!
//! # async fn run() -> Result<(), esb_agent::Error> {
//! let runtime = Arc::new(ProcessRuntime::new(ProcessConfig::default()));
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
//! let options = ServeOptions::new(BearerAuth::token("secret"));
//! serve(runtime, options, listener, async {
//!     let _ = tokio::signal::ctrl_c().await;
//! })
//! .await
//! # }
//! ```

mod auth;
mod guard;
mod metrics_http;
mod service;
mod stream;

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use esb_proto::agent::v1::FILE_DESCRIPTOR_SET;
use esb_proto::agent::v1::agent_service_server::AgentServiceServer;
use esb_runtime::Runtime;
use esb_runtime::logs::LogTail;
use esb_runtime::remote::MAX_MESSAGE_BYTES;
use tokio::net::TcpListener;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Certificate, Identity, Server, ServerTlsConfig};
use tonic_health::ServingStatus;

pub use auth::{BearerAuth, constant_time_eq};
pub use guard::{AgentLimits, GuardedRuntime};
pub use metrics_http::serve_metrics;
pub use service::Agent;

/// Why the agent could not start or serve.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A TLS file could not be read.
    #[error("cannot read the {what} {}: {source}", .path.display())]
    ReadFile {
        /// Which file (`TLS certificate`, `TLS key`, `client CA`).
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS settings were refused.
    #[error("TLS configuration: {0}")]
    Tls(#[source] tonic::transport::Error),
    /// The reflection service could not be built from the descriptor set.
    #[error("reflection service: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The server failed while serving.
    #[error("gRPC server: {0}")]
    Serve(#[source] tonic::transport::Error),
    /// An I/O error (binding the listener).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Certificate files for TLS, and the CA that signs client certificates for mTLS.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM).
    pub cert: PathBuf,
    /// The server's private key (PEM).
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA (PEM).
    pub client_ca: Option<PathBuf>,
}

impl TlsFiles {
    /// Reads the files into a server TLS configuration.
    pub fn load(&self) -> Result<ServerTlsConfig, Error> {
        let read = |what: &'static str, path: &PathBuf| {
            std::fs::read(path).map_err(|source| Error::ReadFile {
                what,
                path: path.clone(),
                source,
            })
        };
        let cert = read("TLS certificate", &self.cert)?;
        let key = read("TLS key", &self.key)?;
        esb_runtime::ensure_crypto_provider();
        let mut config = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        if let Some(ca) = &self.client_ca {
            config = config.client_ca_root(Certificate::from_pem(read("client CA", ca)?));
        }
        Ok(config)
    }
}

/// How the agent serves.
#[derive(Clone, Debug)]
pub struct ServeOptions {
    /// Authentication of `AgentService` and reflection calls (health checks need none).
    pub auth: BearerAuth,
    /// TLS, and mTLS when a client CA is given; plain HTTP/2 when `None`.
    pub tls: Option<TlsFiles>,
    /// Serve `grpc.reflection.v1`.
    pub reflection: bool,
    /// After shutdown is asked, how long in-flight calls may take before they are dropped.
    pub shutdown_grace: Duration,
    /// The tail the runtime's log sink feeds (see [`LogTail::tee`]), to answer invocations
    /// that ask for their log (`log_tail`); without it they get none.
    pub log_tail: Option<LogTail>,
}

impl ServeOptions {
    /// Plain HTTP/2, no reflection, 30 s of grace at shutdown.
    pub fn new(auth: BearerAuth) -> Self {
        Self {
            auth,
            tls: None,
            reflection: false,
            shutdown_grace: Duration::from_secs(30),
            log_tail: None,
        }
    }
}

type AgentServer = AgentServiceServer<Agent>;

/// Serves the agent on `listener` until `shutdown` completes, then stops accepting calls,
/// reports NOT_SERVING to health checks and waits for in-flight calls (up to the grace period).
pub async fn serve<F>(
    runtime: Arc<dyn Runtime>,
    options: ServeOptions,
    listener: TcpListener,
    shutdown: F,
) -> Result<(), Error>
where
    F: Future<Output = ()> + Send,
{
    // Invocation streams end once the agent stops, after their invocations in flight.
    let (streams_stop, streams_stopping) = tokio::sync::watch::channel(false);
    let mut agent = Agent::new(runtime).with_stopping(streams_stopping);
    if let Some(tail) = options.log_tail.clone() {
        agent = agent.with_log_tail(tail);
    }
    let agent = AgentServiceServer::new(agent)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<AgentServer>().await;

    let reflection = if options.reflection {
        let service = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        Some(InterceptedService::new(service, options.auth.clone()))
    } else {
        None
    };

    let mut builder = Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(20)))
        .http2_keepalive_timeout(Some(Duration::from_secs(10)));
    if let Some(tls) = &options.tls {
        builder = builder.tls_config(tls.load()?).map_err(Error::Tls)?;
    }
    let router = builder
        .add_service(health_service)
        .add_service(InterceptedService::new(agent, options.auth.clone()))
        .add_optional_service(reflection);

    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        shutdown.await;
        tracing::info!("shutting down: no new calls, finishing those in flight");
        let _ = streams_stop.send(true);
        health.set_not_serving::<AgentServer>().await;
        health
            .set_service_status("", ServingStatus::NotServing)
            .await;
        let _ = stopping_tx.send(());
    });
    let grace = options.shutdown_grace;
    let grace_over = async move {
        if stopping_rx.await.is_err() {
            std::future::pending::<()>().await;
        }
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        served = server => served.map_err(Error::Serve),
        () = grace_over => {
            tracing::warn!(?grace, "in-flight calls still running after the grace period; dropping them");
            Ok(())
        }
    }
}

/// Destroys every sandbox of the runtime, logging (not failing on) each error.
pub async fn destroy_all(runtime: &dyn Runtime) -> usize {
    let sandboxes = match runtime.list().await {
        Ok(sandboxes) => sandboxes,
        Err(err) => {
            tracing::warn!(%err, "cannot list sandboxes to destroy them");
            return 0;
        }
    };
    let mut destroyed = 0;
    for sandbox in sandboxes {
        match runtime.destroy(&sandbox.id).await {
            Ok(()) => destroyed += 1,
            Err(err) => tracing::warn!(sandbox = %sandbox.id, %err, "cannot destroy sandbox"),
        }
    }
    destroyed
}
