//! Creates one process sandbox, invokes it N times, prints each response, and destroys it.
//!
//! ```text
//! cargo run --example invoke -- --command ./target/debug/esb-testfn --payload '{"hello":"world"}' --count 3
//! ```
//!
//! Each response (or function error as `{"errorType":..,"errorMessage":..}`) is printed on its
//! own line on stdout; the function's log and the REPORT lines go to stderr.

use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use esb::runtime::process::{ProcessConfig, ProcessRuntime};
use esb::runtime::{InvokeRequest, Runtime, SandboxSpec};

/// Invoke a Lambda function bootstrap with the process backend.
#[derive(Parser, Debug)]
struct Args {
    /// The function's bootstrap command (its arguments follow, space-separated).
    #[arg(long, num_args = 1.., required = true)]
    command: Vec<String>,
    /// The function's name.
    #[arg(long, default_value = "function")]
    name: String,
    /// An environment variable for the function, KEY=VALUE (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    /// Invocation timeout in seconds.
    #[arg(long, default_value_t = 3.0)]
    timeout: f64,
    /// Memory size in MB.
    #[arg(long, default_value_t = 128)]
    memory: u32,
    /// The event, as JSON.
    #[arg(long, default_value = "{}")]
    payload: String,
    /// How many invocations.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    serde_json::from_str::<serde_json::Value>(&args.payload)
        .with_context(|| format!("--payload is not JSON: {}", args.payload))?;
    if !(args.timeout > 0.0 && args.timeout <= 900.0) {
        bail!(
            "--timeout must be within 0..900 seconds, got {}",
            args.timeout
        );
    }
    let mut spec = SandboxSpec::new(&args.name)
        .command(args.command.clone())
        .memory_mb(args.memory)
        .timeout(Duration::from_secs_f64(args.timeout));
    for pair in &args.env {
        let (key, value) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
        spec = spec.env(key, value);
    }

    let runtime = ProcessRuntime::new(ProcessConfig::default());
    let sandbox = runtime.create(spec).await?;
    let mut outcome = Ok(());
    for _ in 0..args.count {
        match runtime
            .invoke(&sandbox.id, InvokeRequest::new(args.payload.clone()))
            .await
        {
            Ok(response) => println!("{}", String::from_utf8_lossy(&response.body())),
            Err(err) => {
                println!(
                    "{}",
                    serde_json::json!({"errorType": err.lambda_error_type(), "errorMessage": err.to_string()})
                );
                if err.is_sandbox_fatal() {
                    outcome = Err(anyhow::anyhow!("the sandbox was lost: {err}"));
                    break;
                }
            }
        }
    }
    runtime.destroy(&sandbox.id).await?;
    outcome
}
