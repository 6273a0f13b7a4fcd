//! Load bench: a no-op function with 8 warm sandboxes, driven by a keep-alive HTTP/1.1 load
//! generator, three ways in one run:
//!
//! - `direct`: a bare HTTP server that hands each request to `Runtime::invoke` on a free
//!   sandbox, i.e. the function through its Lambda Runtime API with no gateway in between;
//! - `all-in-one`: the gateway over the embedded process backend;
//! - `remote`: the gateway over an `esb-agent` (only with `--agent URL`).
//!
//! ```text
//! cargo run --release -p esb-gateway-bin --example load -- --seconds 10 --connections 64
//! # with an agent (same host, so it can start this program as the function):
//! cargo run --release -p esb-agent-bin --no-default-features -- --runtime process --insecure-no-auth &
//! cargo run --release -p esb-gateway-bin --example load -- --agent http://127.0.0.1:50051
//! ```
//!
//! Started as a Lambda sandbox (`AWS_LAMBDA_RUNTIME_API` is set) this program is the no-op
//! function: `{"statusCode":200,"body":"ok"}`.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use clap::Parser;
use esb_gateway::{Gateway, GatewayConfig};
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};
use http_body_util::{BodyExt, Empty, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

/// The gateway binary's allocator, so the bench measures what it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Load bench of the gateway against the function's Runtime API.
#[derive(Parser, Debug)]
struct Args {
    /// Seconds of load per mode (after one second of warm-up).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Warm sandboxes.
    #[arg(long, default_value_t = 8)]
    sandboxes: usize,
    /// An esb-agent to run the remote mode against.
    #[arg(long)]
    agent: Option<String>,
    /// The agent's token.
    #[arg(long)]
    agent_token: Option<String>,
}

/// The no-op function.
async fn noop(_: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
    Ok(json!({"statusCode": 200, "body": "ok"}))
}

fn functions_yml(command: &str, sandboxes: usize) -> String {
    format!(
        r#"
functions:
  noop:
    command: [{command:?}]
    timeout: 30
    scaling: {{ max_capacity: {sandboxes}, min_capacity: {sandboxes}, acquire_timeout: 30.0 }}
"#
    )
}

const ROUTING: &str = r#"
routes:
  - { path: "/noop", method: GET, function: noop, auth: none }
"#;

/// What one mode achieved.
struct Outcome {
    requests: usize,
    errors: usize,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Outcome {
    fn print(&mut self, name: &str) {
        self.latencies.sort_unstable();
        let at = |p: f64| {
            let i = ((self.latencies.len() as f64 * p) as usize)
                .min(self.latencies.len().saturating_sub(1));
            self.latencies
                .get(i)
                .copied()
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0
        };
        println!(
            "{name:<11} {:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   ({} requests, {} errors, {:.1} s)",
            self.requests as f64 / self.elapsed.as_secs_f64(),
            at(0.50),
            at(0.99),
            self.requests,
            self.errors,
            self.elapsed.as_secs_f64(),
        );
    }
}

/// Keep-alive HTTP/1.1 load on `addr` and `path` from `connections` connections for `duration`.
async fn load(
    addr: SocketAddr,
    path: &str,
    connections: usize,
    duration: Duration,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let until = started + duration;
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let (mut sender, conn) =
                hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(conn);
            let mut latencies = Vec::new();
            let mut errors = 0usize;
            while Instant::now() < until {
                let request = http::Request::get(&path)
                    .header("host", "localhost")
                    .body(Empty::<Bytes>::new())?;
                let sent = Instant::now();
                let response = sender.send_request(request).await?;
                let ok = response.status().is_success();
                response.into_body().collect().await?;
                latencies.push(sent.elapsed());
                if !ok {
                    errors += 1;
                }
            }
            anyhow::Ok((latencies, errors))
        }));
    }
    let mut outcome = Outcome {
        requests: 0,
        errors: 0,
        elapsed: Duration::ZERO,
        latencies: Vec::new(),
    };
    for task in tasks {
        let (latencies, errors) = task.await??;
        outcome.requests += latencies.len();
        outcome.errors += errors;
        outcome.latencies.extend(latencies);
    }
    outcome.elapsed = started.elapsed();
    Ok(outcome)
}

/// Warm-up, then the measured load.
async fn measure(name: &str, addr: SocketAddr, path: &str, args: &Args) -> anyhow::Result<()> {
    load(addr, path, args.connections, Duration::from_secs(1)).await?;
    load(
        addr,
        path,
        args.connections,
        Duration::from_secs(args.seconds),
    )
    .await?
    .print(name);
    Ok(())
}

/// A bare HTTP server invoking free sandboxes directly: the baseline without a gateway.
async fn direct(me: &str, args: &Args) -> anyhow::Result<()> {
    let runtime = Arc::new(ProcessRuntime::new(ProcessConfig {
        log_sink: Arc::new(NullLogSink),
        ..ProcessConfig::default()
    }));
    let (free_tx, free_rx) = async_channel(args.sandboxes);
    let mut ids = Vec::new();
    for _ in 0..args.sandboxes {
        let info = runtime
            .create(
                SandboxSpec::new("noop")
                    .command([me])
                    .timeout(Duration::from_secs(30)),
            )
            .await?;
        ids.push(info.id.clone());
        free_tx.send(info.id).await?;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let server = {
        let runtime = Arc::clone(&runtime);
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let _ = stream.set_nodelay(true);
                let runtime = Arc::clone(&runtime);
                let free_tx = free_tx.clone();
                let free_rx = free_rx.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |_req| {
                        let runtime = Arc::clone(&runtime);
                        let free_tx = free_tx.clone();
                        let free_rx = free_rx.clone();
                        async move {
                            let Ok(id) = free_rx.recv().await else {
                                let mut busy = http::Response::new(Full::new(Bytes::new()));
                                *busy.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
                                return Ok::<_, Infallible>(busy);
                            };
                            let answer = runtime
                                .invoke(&id, InvokeRequest::new(Bytes::from_static(b"{}")))
                                .await;
                            let _ = free_tx.send(id).await;
                            let body = answer.map(|a| a.body()).unwrap_or_default();
                            Ok::<_, Infallible>(http::Response::new(Full::new(body)))
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    measure("direct", addr, "/", args).await?;
    server.abort();
    for id in ids {
        runtime.destroy(&id).await?;
    }
    Ok(())
}

/// A bounded MPMC queue of free sandbox ids (tokio's mpsc receiver behind a mutex).
fn async_channel<T: Send + 'static>(
    capacity: usize,
) -> (tokio::sync::mpsc::Sender<T>, SharedReceiver<T>) {
    let (tx, rx) = tokio::sync::mpsc::channel(capacity);
    (tx, SharedReceiver(Arc::new(tokio::sync::Mutex::new(rx))))
}

struct SharedReceiver<T>(Arc<tokio::sync::Mutex<tokio::sync::mpsc::Receiver<T>>>);

impl<T> Clone for SharedReceiver<T> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<T> SharedReceiver<T> {
    async fn recv(&self) -> Result<T, ()> {
        self.0.lock().await.recv().await.ok_or(())
    }
}

async fn gateway(
    name: &str,
    me: &str,
    runtime: Arc<dyn Runtime>,
    args: &Args,
) -> anyhow::Result<()> {
    let functions =
        esb_router::Config::from_yaml_str(&functions_yml(me, args.sandboxes), ROUTING, &|_| None)?;
    let gateway = Gateway::start(
        GatewayConfig::new(functions, "127.0.0.1:0".parse()?),
        vec![runtime],
    )
    .await?;
    // min_capacity sandboxes start in the background: wait until they are idle.
    for _ in 0..200 {
        if gateway.pool().stats("noop")?.idle + gateway.pool().stats("noop")?.paused
            >= args.sandboxes
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    measure(name, gateway.local_addr(), "/noop", args).await?;
    gateway.shutdown().await;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return runtime
            .block_on(lambda_runtime::run(service_fn(noop)))
            .map_err(|err| anyhow::anyhow!(err));
    }
    let args = Args::parse();
    let me = std::env::current_exe()
        .context("this program's path")?
        .display()
        .to_string();
    runtime.block_on(async {
        println!(
            "{} connections, {} warm sandboxes, {} s per mode",
            args.connections, args.sandboxes, args.seconds
        );
        direct(&me, &args).await?;
        let process = Arc::new(ProcessRuntime::new(ProcessConfig {
            log_sink: Arc::new(NullLogSink),
            ..ProcessConfig::default()
        }));
        gateway("all-in-one", &me, process, &args).await?;
        if let Some(url) = &args.agent {
            let mut config = RemoteConfig::new(url);
            config.token = args.agent_token.clone();
            let remote = RemoteRuntime::connect(config)
                .await
                .with_context(|| format!("cannot reach the agent at {url}"))?;
            gateway("remote", &me, Arc::new(remote), &args).await?;
        }
        anyhow::Ok(())
    })
}
