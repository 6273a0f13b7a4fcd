//! Measures the process backend: warm invoke latency through `Runtime::invoke` (p50, p99),
//! sequential invokes per second, and pause + resume + invoke latency, for a no-op function.
//!
//! ```text
//! cargo run --release --example bench_runtime -- [--invokes 5000] [--pauses 300]
//! ```
//!
//! The example runs itself as the function (a `lambda_runtime` handler that returns its event),
//! so nothing else needs building.

use std::time::{Duration, Instant};

use clap::Parser;
use esb::runtime::process::{ProcessConfig, ProcessRuntime};
use esb::runtime::{InvokeRequest, Runtime, SandboxSpec, logs::NullLogSink};
use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};

const ROLE: &str = "ESB_BENCH_ROLE";

/// Benchmark the process backend.
#[derive(Parser, Debug)]
struct Args {
    /// Warm invocations to time.
    #[arg(long, default_value_t = 5000)]
    invokes: usize,
    /// Pause + resume + invoke rounds to time.
    #[arg(long, default_value_t = 300)]
    pauses: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let total: Duration = samples.iter().sum();
    println!(
        "{name:<28} n={:<6} p50={:>8.1} us  p99={:>8.1} us  mean={:>8.1} us",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e6,
        percentile(&samples, 0.99).as_secs_f64() * 1e6,
        total.as_secs_f64() * 1e6 / samples.len() as f64,
    );
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os(ROLE).is_some() {
        let handler = service_fn(|event: LambdaEvent<serde_json::Value>| async move {
            Ok::<_, Diagnostic>(event.payload)
        });
        return lambda_runtime::run(handler)
            .await
            .map_err(|e| anyhow::anyhow!(e));
    }
    let args = Args::parse();
    let me = std::env::current_exe()?.display().to_string();
    let runtime =
        ProcessRuntime::new(ProcessConfig::default().log_sink(std::sync::Arc::new(NullLogSink)));
    let spec = SandboxSpec::new("noop")
        .command([me])
        .env(ROLE, "function")
        .timeout(Duration::from_secs(10));
    let sandbox = runtime.create(spec).await?;
    let payload = bytes::Bytes::from_static(br#"{"ping":1}"#);
    // Cold start, then warm up.
    let cold = Instant::now();
    runtime
        .invoke(&sandbox.id, InvokeRequest::new(payload.clone()))
        .await?;
    println!(
        "cold start (create excluded): {:.2} ms",
        cold.elapsed().as_secs_f64() * 1e3
    );
    for _ in 0..200 {
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(payload.clone()))
            .await?;
    }

    let mut warm = Vec::with_capacity(args.invokes);
    let started = Instant::now();
    for _ in 0..args.invokes {
        let t = Instant::now();
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(payload.clone()))
            .await?;
        warm.push(t.elapsed());
    }
    let rate = args.invokes as f64 / started.elapsed().as_secs_f64();
    summary("warm invoke", warm);
    println!("sequential invokes/s         {rate:.0}");

    let mut paused = Vec::with_capacity(args.pauses);
    for _ in 0..args.pauses {
        runtime.pause(&sandbox.id).await?;
        let t = Instant::now();
        runtime.resume(&sandbox.id).await?;
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(payload.clone()))
            .await?;
        paused.push(t.elapsed());
    }
    summary("resume + invoke", paused);
    runtime.destroy(&sandbox.id).await?;
    Ok(())
}
