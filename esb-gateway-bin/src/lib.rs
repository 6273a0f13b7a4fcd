//! `esb-gateway`: an API-Gateway-compatible HTTP(S) front door for Lambda functions.
//!
//! A [`Gateway`] serves the routes of `routing.yml` (or a SAM template) by invoking the
//! functions of `functions.yml` through warm sandbox pools ([`esb_pool`]) over one or more
//! [`Runtime`]s: the embedded `process` backend ("all-in-one"), or remote agents. It also
//! answers `/health`, `/metrics`, the auth endpoint and the Lambda Invoke API. The binary
//! parses flags and environment in [`cli`]; tests and examples start a [`Gateway`] directly.
//!
//! ```no_run
//! # async fn run() -> Result<(), esb_gateway::Error> {
//! use std::sync::Arc;
//! use esb_gateway::{Gateway, GatewayConfig};
//! use esb_runtime::logs::TerminalLogSink;
//! use esb_runtime::process::{ProcessConfig, ProcessRuntime};
//!
//! let functions = esb_router::Config::load(
//!     "examples/quickstart/functions.yml",
//!     "examples/quickstart/routing.yml",
//!     &|name| std::env::var(name).ok(),
//! )?;
//! let config = GatewayConfig::new(functions, "127.0.0.1:8080".parse().unwrap());
//! // Function logs go to the terminal and to the Invoke API's `X-Amz-Log-Type: Tail` answers.
//! let runtime = Arc::new(ProcessRuntime::new(
//!     ProcessConfig::default().log_sink(config.log_tail.tee(Arc::new(TerminalLogSink))),
//! ));
//! let gateway = Gateway::start(config, vec![runtime]).await?;
//! println!("listening on http://{}", gateway.local_addr());
//! gateway.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await;
//! # Ok(()) }
//! ```
//!
//! Reserved paths come before routes: `/health`, `/metrics`, the auth endpoint (when
//! configured) and `/2015-03-31/functions/{name}/invocations` (unless `--invoke-api off`).

mod app;
mod auth;
pub mod cli;
mod config;
mod error;
pub mod logs;
mod metrics;
mod server;
mod tls;
mod trace;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use esb_pool::{FunctionPoolConfig, Pool, PoolConfig, PoolLayer, RuntimeInvoker};
use esb_router::FunctionConfig;
use esb_runtime::{Runtime, SandboxSpec};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::Layer;

pub use config::{
    AuthConfig, FunctionSource, GatewayConfig, InvokeApiAccess, Limits, MIN_JWT_SECRET_LEN,
    TlsConfig,
};
pub use error::Error;
pub use trace::{REQUEST_ID_HEADER, TRACE_HEADER};

/// A running gateway: its listener, its pools, and the task serving connections.
pub struct Gateway {
    local_addr: SocketAddr,
    scheme: &'static str,
    pool: Pool,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    upkeep: JoinHandle<()>,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// The sandbox spec and pool settings of one configured function.
pub fn pool_config(function: &FunctionConfig) -> FunctionPoolConfig {
    let mut spec = SandboxSpec::new(&function.name)
        .memory_mb(function.memory_size)
        .timeout(function.timeout)
        .invoke_mode(match function.invoke {
            esb_router::InvokeMode::RuntimeApi => esb_runtime::InvokeMode::RuntimeApi,
            esb_router::InvokeMode::Rie => esb_runtime::InvokeMode::Rie,
        });
    spec.command = function.command.clone();
    spec.image = function.image.clone();
    spec.env = function.environment.clone();
    let scaling = &function.scaling;
    FunctionPoolConfig::new(spec)
        .max_capacity(scaling.max_capacity as usize)
        .min_capacity(scaling.min_capacity as usize)
        .acquire_timeout(scaling.acquire_timeout)
        .idle_timeout(scaling.idle_timeout)
}

impl Gateway {
    /// Validates `config`, starts the pools over `runtimes` and listens on `config.listen`.
    ///
    /// Functions are not checked against a backend here (see [`GatewayConfig::validate`]
    /// with [`FunctionSource`]); auth and limits are.
    pub async fn start(
        config: GatewayConfig,
        runtimes: Vec<Arc<dyn Runtime>>,
    ) -> Result<Self, Error> {
        config.validate(FunctionSource::Any)?;
        // The recorder must be in place before the pool registers its series.
        let metrics =
            metrics::GatewayMetrics::new(config.functions.functions.keys().map(String::as_str));
        let router = esb_router::Router::new(&config.functions)?;
        let pool = Pool::new(
            PoolConfig::new(config.functions.functions.values().map(pool_config)),
            runtimes,
        )?;
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = server::bind(config.listen).await?;
        let local_addr = listener.local_addr().map_err(|source| Error::Bind {
            addr: config.listen,
            source,
        })?;
        let invoker = PoolLayer::new(pool.clone()).layer(RuntimeInvoker);
        let app = Arc::new(app::App::new(&config, router, invoker, metrics));
        let (stop, stopped) = watch::channel(false);
        let upkeep = tokio::spawn({
            let app = Arc::clone(&app);
            async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    app.metrics.upkeep();
                }
            }
        });
        let scheme = if tls.is_some() { "https" } else { "http" };
        let server = tokio::spawn(server::serve(listener, tls, app, config.limits, stopped));
        Ok(Self {
            local_addr,
            scheme,
            pool,
            stop,
            server,
            upkeep,
        })
    }

    /// The address the gateway listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// The sandbox pools.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests finish (within the shutdown grace), and
    /// destroys every sandbox.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(err) = self.server.await {
            tracing::warn!(error = %err, "the server task failed");
        }
        self.upkeep.abort();
        self.pool.shutdown().await;
    }
}
