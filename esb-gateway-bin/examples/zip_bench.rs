//! Zip functions on the process backend, with the host's Python and awslambdaric:
//!
//! - cold start: sandbox create (`python3 -m awslambdaric app.handler`, as Lambda's bootstrap
//!   starts it) through the answer of its first invocation, p50/p99 over `--runs`;
//! - hot reload: the handler file saved -> the first answer of the new code through the
//!   gateway's Invoke API with `--watch`'s watcher, p50/p99 over `--edits` edits.
//!
//! ```text
//! pip install awslambdaric
//! cargo run --release -p esb-gateway-bin --example zip_bench -- [--runs 30] [--edits 12] [--python python3]
//! ```

use std::time::{Duration, Instant};

use clap::Parser;
use esb_gateway::hot_reload::{DEFAULT_POLL, spawn, targets};
use esb_gateway::{Gateway, GatewayConfig};
use esb_runtime::logs::NullLogSink;
use esb_runtime::managed::{Managed, ManagedConfig, ZipFunction};
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};

/// Benchmark Python zip functions: cold start and hot reload.
#[derive(Parser, Debug)]
struct Args {
    /// Sandboxes to start (each: create + first invoke + destroy).
    #[arg(long, default_value_t = 30)]
    runs: usize,
    /// Edits of the handler to time.
    #[arg(long, default_value_t = 12)]
    edits: usize,
    /// The Python with awslambdaric.
    #[arg(long, default_value = "python3")]
    python: String,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, mut samples: Vec<Duration>) {
    samples.sort();
    println!(
        "{name:<44} n={:<4} p50={:>7.1} ms  p99={:>7.1} ms",
        samples.len(),
        percentile(&samples, 0.50).as_secs_f64() * 1e3,
        percentile(&samples, 0.99).as_secs_f64() * 1e3,
    );
}

fn handler(answer: &str) -> String {
    format!("def handler(event, context):\n    return {{\"answer\": \"{answer}\"}}\n")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let dir = std::env::temp_dir().join(format!("esb-zip-bench-{}", std::process::id()));
    let code = dir.join("code");
    std::fs::create_dir_all(&code)?;
    std::fs::write(code.join("app.py"), handler("0"))?;
    let managed = std::sync::Arc::new(Managed::new(
        ManagedConfig::new(dir.join("cache"), std::env::var("PATH").unwrap_or_default())
            .interpreter("python3.12", &args.python),
    ));
    let result = run(&args, &dir, &code, &managed).await;
    let _ = std::fs::remove_dir_all(&dir);
    result
}

async fn run(
    args: &Args,
    dir: &std::path::Path,
    code: &std::path::Path,
    managed: &std::sync::Arc<Managed>,
) -> anyhow::Result<()> {
    // Cold start, on the runtime itself.
    let boot = managed.prepare(&ZipFunction::new(
        "bench-py",
        "python3.12",
        "app.handler",
        code,
        &[],
    ))?;
    let runtime =
        ProcessRuntime::new(ProcessConfig::default().log_sink(std::sync::Arc::new(NullLogSink)));
    let mut spec = SandboxSpec::new("bench-py")
        .command(boot.command.clone())
        .timeout(Duration::from_secs(10));
    spec.env = boot.env.clone();
    let mut cold = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let t = Instant::now();
        let sandbox = runtime.create(spec.clone()).await?;
        runtime
            .invoke(&sandbox.id, InvokeRequest::new(r#"{"ping":1}"#))
            .await?;
        cold.push(t.elapsed());
        runtime.destroy(&sandbox.id).await?;
    }
    summary("python zip cold start (create + 1st invoke)", cold);

    // Hot reload, through the gateway.
    let functions = format!(
        "functions:\n  bench-py:\n    runtime: python3.12\n    handler: app.handler\n    code: {}\n",
        code.display()
    );
    let loaded = esb_router::Config::from_yaml_str(&functions, "routes: []\n", &|_| None)?;
    let watched = targets(&loaded);
    let mut config = loaded;
    esb_gateway::packages::prepare(&mut config, managed, None)?;
    let gateway = Gateway::start(
        GatewayConfig::new(config, "127.0.0.1:0".parse()?),
        vec![std::sync::Arc::new(ProcessRuntime::new(
            ProcessConfig::default().log_sink(std::sync::Arc::new(NullLogSink)),
        ))],
    )
    .await?;
    let watcher = spawn(
        gateway.pool().clone(),
        watched,
        std::sync::Arc::clone(managed),
        DEFAULT_POLL,
    );
    let client = reqwest::Client::new();
    let url = format!(
        "{}/2015-03-31/functions/bench-py/invocations",
        gateway.url()
    );
    let answer = || async {
        let body: serde_json::Value = client.post(&url).body("{}").send().await?.json().await?;
        anyhow::Ok(body["answer"].as_str().unwrap_or_default().to_owned())
    };
    answer().await?;
    let mut reloads = Vec::with_capacity(args.edits);
    for edit in 1..=args.edits {
        // Let the watcher see a quiet tree first, as between two saves in an editor.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let expected = format!("edit-{edit}");
        let t = Instant::now();
        std::fs::write(code.join("app.py"), handler(&expected))?;
        loop {
            if answer().await? == expected {
                break;
            }
            if t.elapsed() > Duration::from_secs(30) {
                anyhow::bail!("edit {edit} not served after 30 s");
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        reloads.push(t.elapsed());
    }
    summary("hot reload (save -> 1st new answer)", reloads);
    watcher.abort();
    gateway.shutdown().await;
    let _ = dir;
    Ok(())
}
