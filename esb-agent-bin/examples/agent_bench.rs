//! Warm invocations through the agent's gRPC API: p50/p99 latency and invokes/s, beside the
//! same invocations made directly on the backend, in the same run.
//!
//! ```text
//! cargo run --release -p esb-agent-bin --example agent_bench -- --invokes 5000
//! # the containerd backend (root; containerd and the test registry of .ci/containerd.sh):
//! eval "$(.ci/containerd.sh)"
//! cargo run --release -p esb-agent-bin --example agent_bench -- --backend containerd
//! ```
//! Goal: warm gRPC invoke ≤ 0.5 ms p50.

#![allow(clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use esb_agent::{BearerAuth, ServeOptions};
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};

/// Benchmark settings.
#[derive(Debug, Parser)]
struct Args {
    /// Measured invocations per series.
    #[arg(long, default_value_t = 5000)]
    invokes: usize,
    /// Unmeasured invocations before each series.
    #[arg(long, default_value_t = 500)]
    warmup: usize,
    /// Concurrent callers (each with its own sandbox) for the throughput series.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
    /// The function binary (process backend); esb-testfn built by cargo when absent.
    #[arg(long)]
    function: Option<String>,
    /// `process`, or `containerd` (the esb-testfn image pushed to the test registry).
    #[arg(long, default_value = "process")]
    backend: String,
}

const TOKEN: &str = "bench-token";
const EVENT: &str = r#"{"path":"/bench","body":"hello"}"#;

struct Series {
    name: &'static str,
    latencies: Vec<Duration>,
}

impl Series {
    fn percentile(&self, p: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1]
    }

    fn print(&self) {
        let total: Duration = self.latencies.iter().sum();
        println!(
            "{:<28} n={:<6} p50={:>8.1} µs  p99={:>8.1} µs  mean={:>8.1} µs  ({:.0} invokes/s sequential)",
            self.name,
            self.latencies.len(),
            self.percentile(50.0).as_secs_f64() * 1e6,
            self.percentile(99.0).as_secs_f64() * 1e6,
            total.as_secs_f64() * 1e6 / self.latencies.len() as f64,
            self.latencies.len() as f64 / total.as_secs_f64(),
        );
    }
}

async fn sequential(
    name: &'static str,
    runtime: &dyn Runtime,
    spec: &SandboxSpec,
    args: &Args,
) -> Series {
    let sandbox = runtime.create(spec.clone()).await.expect("create");
    for _ in 0..args.warmup {
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(EVENT))
            .await
            .expect("warm-up invoke");
    }
    let mut latencies = Vec::with_capacity(args.invokes);
    for _ in 0..args.invokes {
        let request = InvokeRequest::new(EVENT);
        let start = Instant::now();
        runtime.invoke(&sandbox.id, request).await.expect("invoke");
        latencies.push(start.elapsed());
    }
    runtime.destroy(&sandbox.id).await.expect("destroy");
    Series { name, latencies }
}

/// `concurrency` callers, each invoking its own warm sandbox in a loop.
async fn throughput(runtime: Arc<dyn Runtime>, spec: &SandboxSpec, args: &Args) -> f64 {
    let mut sandboxes = Vec::new();
    for _ in 0..args.concurrency {
        let sandbox = runtime.create(spec.clone()).await.expect("create");
        for _ in 0..50 {
            runtime
                .invoke(&sandbox.id, InvokeRequest::new(EVENT))
                .await
                .expect("warm-up invoke");
        }
        sandboxes.push(sandbox.id);
    }
    let per_caller = args.invokes / args.concurrency.max(1);
    let start = Instant::now();
    let callers: Vec<_> = sandboxes
        .iter()
        .map(|id| {
            let runtime = runtime.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for _ in 0..per_caller {
                    runtime
                        .invoke(&id, InvokeRequest::new(EVENT))
                        .await
                        .expect("invoke");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.expect("caller");
    }
    let rate = (per_caller * sandboxes.len()) as f64 / start.elapsed().as_secs_f64();
    for id in &sandboxes {
        runtime.destroy(id).await.expect("destroy");
    }
    rate
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let (backend, spec) = match args.backend.as_str() {
        "process" => {
            let function = match &args.function {
                Some(path) => path.clone(),
                None => esb_testfn::binary()
                    .expect("build esb-testfn")
                    .display()
                    .to_string(),
            };
            let process: Arc<dyn Runtime> = Arc::new(ProcessRuntime::new(
                ProcessConfig::default().log_sink(Arc::new(NullLogSink)),
            ));
            (process, SandboxSpec::new("bench").command([function]))
        }
        #[cfg(feature = "containerd")]
        "containerd" => containerd().await,
        other => panic!("unknown backend {other} (process or containerd)"),
    };
    let process = backend;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("local addr"));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(esb_agent::serve(
        process.clone(),
        ServeOptions::new(BearerAuth::token(TOKEN)),
        listener,
        async move {
            let _ = stopped.await;
        },
    ));
    let remote: Arc<dyn Runtime> = Arc::new(
        RemoteRuntime::connect(RemoteConfig::new(url).token(TOKEN))
            .await
            .expect("connect to the agent"),
    );

    println!(
        "warm invoke, {} backend, {} cores, payload {} bytes",
        args.backend,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        EVENT.len()
    );
    sequential("direct (in process)", process.as_ref(), &spec, &args)
        .await
        .print();
    sequential("gRPC (remote -> agent)", remote.as_ref(), &spec, &args)
        .await
        .print();
    let direct_rate = throughput(process.clone(), &spec, &args).await;
    let grpc_rate = throughput(remote.clone(), &spec, &args).await;
    println!(
        "throughput with {} callers: direct {:.0} invokes/s, gRPC {:.0} invokes/s",
        args.concurrency, direct_rate, grpc_rate
    );

    let _ = stop.send(());
    let _ = server.await;
}

/// A containerd runtime in an env of its own, and a spec of the test image.
#[cfg(feature = "containerd")]
async fn containerd() -> (Arc<dyn Runtime>, SandboxSpec) {
    use esb_runtime::containerd::{ContainerdConfig, ContainerdRuntime, RegistryConfig};
    use esb_testfn::oci;
    let address = oci::containerd().expect("a containerd to bench against");
    let image = tokio::task::spawn_blocking(oci::pushed_image)
        .await
        .expect("image pushed");
    let runtime = ContainerdRuntime::connect(
        ContainerdConfig::default()
            .address(address)
            .env(format!("bench-{}", std::process::id()))
            .state_dir("/run/esb-bench")
            .registries(RegistryConfig::default().insecure([oci::registry()]))
            .log_sink(Arc::new(NullLogSink)),
    )
    .await
    .expect("containerd answers");
    (Arc::new(runtime), SandboxSpec::new("bench").image(image))
}
