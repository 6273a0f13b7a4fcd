//! `esb-gateway`: an API-Gateway-compatible HTTP(S) front door for Lambda functions.
//!
//! A [`Gateway`] serves the routes of `routing.yml` (or a SAM template) by invoking the
//! functions of `functions.yml` through warm sandbox pools ([`esb_pool`]) over one or more
//! [`Runtime`]s: the embedded `process` backend ("all-in-one"), or remote agents. It also
//! answers `/health`, `/metrics`, the auth endpoint and the Lambda Invoke API. The binary
//! parses flags and environment in [`cli`]; tests and examples start a [`Gateway`] directly.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
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
//! configured) and `/2015-03-31/functions/{name}/invocations` (unless [`InvokeApiAccess::Off`]).
//! Requests go through a tower stack of named layers (see `app.rs`); an embedder adds its
//! own with [`Gateway::builder`] and [`GatewayBuilder::layer`].

pub mod agents;
mod app;
mod auth;
mod authorizers;
pub mod cli;
mod config;
mod dispatch;
mod endpoints;
mod error;
mod event_queue;
pub mod hot_reload;
mod invoke_api;
mod layers;
pub mod logs;
mod metrics;
pub mod packages;
pub mod provision;
mod schedules;
mod server;
pub mod services;
mod status;
mod tls;
mod trace;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use esb_pool::{FunctionPoolConfig, Pool, PoolConfig, PoolLayer, PoolService, RuntimeInvoker};
use esb_router::FunctionConfig;
use esb_runtime::{Runtime, SandboxSpec};
use http::{Request, Response};
use hyper::body::Incoming;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::layer::util::{Identity, Stack};
use tower::{Layer, Service, ServiceBuilder};

pub use config::{
    AuthConfig, EventRetry, GatewayConfig, InvokeApiAccess, Limits, MIN_JWT_SECRET_LEN, TlsConfig,
};
pub use error::{Problem, Problems, RequestError, StartError, TlsError};
pub use layers::Body;
pub use schedules::{ManualClock, ScheduleClock, TokioClock};
pub use trace::{REQUEST_ID_HEADER, TRACE_HEADER};

/// A running gateway: its listener, its pools, and the task serving connections.
pub struct Gateway {
    local_addr: SocketAddr,
    scheme: &'static str,
    pool: Pool,
    /// `Event` invocations waiting, running or waiting for a retry.
    events: Arc<event_queue::EventQueue>,
    shutdown_grace: Duration,
    stop: watch::Sender<bool>,
    server: JoinHandle<()>,
    upkeep: JoinHandle<()>,
    /// One task per enabled schedule.
    schedules: Vec<JoinHandle<()>>,
    /// The services' and gateway's variables every function gets under its own.
    function_env: Arc<std::collections::BTreeMap<String, String>>,
    /// Dropped with the gateway: its forwarders for sandboxes stop.
    _forwarding: watch::Sender<bool>,
}

/// A gateway before it starts: its config, runtimes, and the embedder's layers.
///
/// Layers added with [`GatewayBuilder::layer`] see every request after it got its ids
/// (`x-amzn-RequestId`, `X-Amzn-Trace-Id`) and before the gateway's own services
/// ([`GatewayService`]) dispatch it; the first added is the outermost.
pub struct GatewayBuilder<L = Identity> {
    config: GatewayConfig,
    runtimes: Vec<Arc<dyn Runtime>>,
    layers: ServiceBuilder<L>,
    schedule_clock: Option<Arc<dyn ScheduleClock>>,
}

impl<L> GatewayBuilder<L> {
    /// Adds a layer around the gateway's own services.
    pub fn layer<T>(self, layer: T) -> GatewayBuilder<Stack<T, L>> {
        GatewayBuilder {
            config: self.config,
            runtimes: self.runtimes,
            layers: self.layers.layer(layer),
            schedule_clock: self.schedule_clock,
        }
    }

    /// Sets the time source of the functions' schedules ([`TokioClock`] by default).
    pub fn schedule_clock(mut self, clock: Arc<dyn ScheduleClock>) -> Self {
        self.schedule_clock = Some(clock);
        self
    }

    /// Validates the config, starts the pools over the runtimes and listens.
    pub async fn start(self) -> Result<Gateway, StartError>
    where
        L: Layer<GatewayService>,
        L::Service: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        <L::Service as Service<Request<Incoming>>>::Future: Send + 'static,
    {
        let Self {
            config,
            runtimes,
            layers,
            schedule_clock,
        } = self;
        config.validate(None)?;
        // The recorder must be in place before the pool registers its series.
        let metrics = Arc::new(metrics::GatewayMetrics::new(
            config.functions.functions.keys().map(String::as_str),
        ));
        let router = esb_router::Router::new(&config.functions)?;
        let tls = config.tls.as_ref().map(tls::acceptor).transpose()?;
        // Bound before the pools start: functions are told the gateway's own address.
        let listener = server::bind(config.listen).await?;
        let local_addr = listener.local_addr().map_err(|source| StartError::Bind {
            addr: config.listen,
            source,
        })?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        // Forwarders for sandboxes behind a bridge live as long as this gateway: in-flight
        // invocations still use them after it stops accepting.
        let (forwarding, forwarders) = watch::channel(false);
        let function_env = Arc::new(services::function_env(
            &config,
            local_addr,
            scheme,
            &forwarders,
        )?);
        let pool = Pool::new(
            PoolConfig::new(config.functions.functions.values().map(|function| {
                let mut pool = pool_config(function);
                pool.spec.env = services::under(&function_env, &pool.spec.env);
                pool
            }))
            .owner(config.owner.clone()),
            runtimes,
        )?;
        metrics.attach_pool(pool.clone());
        if config.owner.is_some() {
            let adopted = pool.adopt().await;
            if adopted > 0 {
                tracing::info!(adopted, "adopted the sandboxes of an earlier run");
            }
        }
        let status = status::Status::new(&config, pool.clone());
        let invocations = PoolLayer::new(pool.clone()).layer(RuntimeInvoker);
        let schedules = schedules::start(
            &config.functions,
            tower::ServiceExt::map_err(invocations.clone(), RequestError::from),
            &schedules::Origin {
                region: config.region.clone(),
                account: esb_runtime::LambdaSettings::default().account_id,
            },
            schedule_clock.unwrap_or_else(|| Arc::new(schedules::TokioClock::now())),
        );
        let events = event_queue::EventQueue::new(
            config.limits.event_concurrency,
            config.event_retry.clone(),
            config
                .functions
                .functions
                .values()
                .map(|f| (f.name.clone(), f.event_invoke)),
        );
        let service = app::stack(
            &config,
            router,
            Arc::clone(&metrics),
            Arc::clone(&events),
            status,
            invocations,
            layers.layer_fn(GatewayService),
        );
        let (stop, stopped) = watch::channel(false);
        let upkeep = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(5));
            loop {
                tick.tick().await;
                metrics.upkeep();
            }
        });
        let server = tokio::spawn(server::serve(
            listener,
            tls,
            service,
            config.limits,
            stopped,
        ));
        Ok(Gateway {
            local_addr,
            scheme,
            pool,
            events,
            shutdown_grace: config.limits.shutdown_grace,
            stop,
            server,
            upkeep,
            schedules,
            function_env,
            _forwarding: forwarding,
        })
    }
}

impl<L> std::fmt::Debug for GatewayBuilder<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayBuilder")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The gateway's own services, below the embedder's layers: `/health`, `/metrics`, the
/// auth endpoint, the Invoke API and the routes, with every error already an answer.
#[derive(Clone)]
pub struct GatewayService(app::Core<PoolService<RuntimeInvoker>>);

impl Service<Request<Incoming>> for GatewayService {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = std::pin::Pin<
        Box<dyn Future<Output = Result<Response<Body>, Infallible>> + Send + 'static>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        self.0.call(req)
    }
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("local_addr", &self.local_addr)
            .field("scheme", &self.scheme)
            .finish_non_exhaustive()
    }
}

/// The sandbox spec and pool settings of one configured function: the scaling the
/// configuration states, over the pool's defaults ([`FunctionPoolConfig::new`]).
pub fn pool_config(function: &FunctionConfig) -> FunctionPoolConfig {
    let mut spec = SandboxSpec::new(&function.name)
        .memory_mb(function.memory_size)
        .timeout(function.timeout)
        .invoke_mode(function.invoke);
    spec.command = function.command.clone();
    // SAM ImageConfig: an EntryPoint (with its Command) replaces the image's.
    if spec.command.is_none()
        && let Some(entry_point) = &function.image_config.entry_point
    {
        let mut argv = entry_point.clone();
        argv.extend(function.image_config.command.iter().flatten().cloned());
        spec.command = Some(argv);
    }
    spec.image = function.image.clone();
    spec.env = function.environment.clone();
    spec.mounts = function.mounts.clone();
    let scaling = &function.scaling;
    let mut config = FunctionPoolConfig::new(spec);
    if let Some(max) = scaling.max_capacity {
        config = config.max_capacity(max as usize);
    }
    if let Some(min) = scaling.min_capacity {
        config = config.min_capacity(min as usize);
    }
    if let Some(timeout) = scaling.acquire_timeout {
        config = config.acquire_timeout(timeout);
    }
    if let Some(timeout) = scaling.idle_timeout {
        config = config.idle_timeout(timeout);
    }
    if scaling.breaker_threshold.is_some() || scaling.breaker_open_time.is_some() {
        let mut breaker = esb_pool::BreakerConfig::default();
        if let Some(failures) = scaling.breaker_threshold {
            breaker = breaker.failure_threshold(failures);
        }
        if let Some(time) = scaling.breaker_open_time {
            breaker = breaker.recovery_time(time);
        }
        config = config.breaker(Some(breaker));
    }
    config
}

impl Gateway {
    /// Validates `config`, starts the pools over `runtimes` and listens on `config.listen`.
    ///
    /// Functions are not checked against a backend here (see [`GatewayConfig::validate`]);
    /// auth and limits are.
    pub async fn start(
        config: GatewayConfig,
        runtimes: Vec<Arc<dyn Runtime>>,
    ) -> Result<Self, StartError> {
        Self::builder(config, runtimes).start().await
    }

    /// A gateway to which layers of one's own can be added before it starts.
    pub fn builder(config: GatewayConfig, runtimes: Vec<Arc<dyn Runtime>>) -> GatewayBuilder {
        GatewayBuilder {
            config,
            runtimes,
            layers: ServiceBuilder::new(),
            schedule_clock: None,
        }
    }

    /// The address the gateway listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The variables every function gets under its own `environment`: the services'
    /// endpoints, the gateway's URL, `VICTORIALOGS_URL`, the services' keys.
    pub fn function_environment(&self) -> &std::collections::BTreeMap<String, String> {
        &self.function_env
    }

    /// `http://ADDR` or `https://ADDR`.
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme, self.local_addr)
    }

    /// The sandbox pools.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Stops accepting connections (the listener closes); requests in flight go on until
    /// [`Gateway::shutdown`].
    pub fn stop_accepting(&self) {
        let _ = self.stop.send(true);
    }

    /// Serves until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl std::future::Future<Output = ()>) {
        signal.await;
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests and `Event` invocations finish (within the
    /// shutdown grace; events waiting for a retry are dropped, each with a WARN log), and
    /// destroys every sandbox.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for schedule in &self.schedules {
            schedule.abort();
        }
        if let Err(err) = self.server.await {
            tracing::warn!(error = %err, "the server task failed");
        }
        self.events.shutdown(self.shutdown_grace).await;
        self.upkeep.abort();
        self.pool.shutdown().await;
    }
}
