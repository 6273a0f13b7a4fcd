//! Embeds esb-pool and the process backend in a Rust program: invocations of a Lambda
//! function served from a warm pool, with no gateway.
//!
//! ```text
//! cargo run --example embed_pool -- --invocations 16 --max-capacity 4 --sleep-ms 100
//! ```
//!
//! The function is this very program run again with `ESB_EXAMPLE_ROLE=function`: it then
//! serves the `esb-testfn` handler (a `lambda_runtime` function) against the Lambda Runtime
//! API the process backend gives it, so nothing else needs to be built.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use esb::pool::{FunctionPoolConfig, Invocation, Pool, PoolConfig};
use esb::runtime::logs::{NullLogSink, TerminalLogSink};
use esb::runtime::process::{ProcessConfig, ProcessRuntime};
use esb::runtime::{InvokeRequest, Runtime, SandboxSpec};

/// The variable that makes this program act as the function.
const ROLE: &str = "ESB_EXAMPLE_ROLE";

#[derive(Parser, Debug)]
#[command(about = "Serve invocations of a Lambda function from an embedded esb-pool")]
struct Args {
    /// How many invocations to send, all at once.
    #[arg(long, default_value_t = 16)]
    invocations: usize,
    /// At most this many sandboxes (processes) of the function.
    #[arg(long, default_value_t = 4)]
    max_capacity: usize,
    /// How long each invocation sleeps inside the function, in milliseconds.
    #[arg(long, default_value_t = 100)]
    sleep_ms: u64,
    /// How long an invocation may wait for a free sandbox, in milliseconds.
    #[arg(long, default_value_t = 10_000)]
    acquire_timeout_ms: u64,
    /// Print the function's log lines (START, END, REPORT, its own output).
    #[arg(long)]
    logs: bool,
}

fn main() -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new().context("start the Tokio runtime")?;
    if std::env::var(ROLE).as_deref() == Ok("function") {
        return runtime
            .block_on(esb_testfn::serve())
            .map_err(|err| anyhow::anyhow!("function failed: {err}"));
    }
    runtime.block_on(serve(Args::parse()))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let me = std::env::current_exe().context("find this program's path")?;
    let spec = SandboxSpec::new("embedded-echo")
        .command([me.display().to_string()])
        .env(ROLE, "function")
        .timeout(Duration::from_secs(30));
    let function = FunctionPoolConfig::new(spec)
        .max_capacity(args.max_capacity)
        .acquire_timeout(Duration::from_millis(args.acquire_timeout_ms));
    let backend = ProcessRuntime::new(ProcessConfig::default().log_sink(if args.logs {
        Arc::new(TerminalLogSink)
    } else {
        Arc::new(NullLogSink)
    }));
    let pool = Pool::new(
        PoolConfig::new([function]),
        vec![Arc::new(backend) as Arc<dyn Runtime>],
    )?;

    println!(
        "sending {} invocations at once to a pool of at most {} sandboxes",
        args.invocations, args.max_capacity
    );
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..args.invocations {
        let pool = pool.clone();
        let event = serde_json::json!({ "n": n, "sleep_ms": args.sleep_ms }).to_string();
        tasks.spawn(async move {
            let sent = Instant::now();
            // `Pool::invoke` is the shorthand for calling the pool as a tower
            // `Service<Invocation>`; `PoolLayer` lets layers sit between pool and runtime.
            let answer = pool
                .invoke(Invocation::new("embedded-echo", InvokeRequest::new(event)))
                .await;
            (n, sent.elapsed(), answer)
        });
    }
    let mut pids = BTreeSet::new();
    let mut failures = 0;
    while let Some(joined) = tasks.join_next().await {
        let (n, elapsed, answer) = joined.context("invocation task")?;
        match answer {
            Ok(answer) => {
                let body: serde_json::Value = serde_json::from_slice(&answer.response.body())?;
                let pid = body["pid"].as_u64().unwrap_or_default();
                pids.insert(pid);
                println!(
                    "#{n:<3} pid {pid:<7} sandbox {:<24} {} in {:>4} ms",
                    answer.sandbox_id,
                    if answer.cold_start { "cold" } else { "warm" },
                    elapsed.as_millis()
                );
            }
            Err(err) => {
                failures += 1;
                println!("#{n:<3} failed: {err}");
            }
        }
    }
    let stats = pool.stats("embedded-echo")?;
    println!(
        "{} invocations in {} ms on {} processes; now {} idle, {} busy",
        args.invocations,
        started.elapsed().as_millis(),
        pids.len(),
        stats.idle + stats.paused,
        stats.busy
    );
    pool.shutdown().await;
    if failures > 0 {
        bail!("{failures} invocations failed");
    }
    Ok(())
}
