//! The quickstart: the gateway on the process backend serving one `lambda_http` function.
//!
//! ```text
//! cargo run -p esb-gateway-bin --example quickstart
//! curl http://127.0.0.1:8080/hello/world
//! ```
//!
//! The routes and the function are `examples/quickstart/routing.yml` and `functions.yml`.
//! This one program is both: run from a terminal it starts the gateway; started by the
//! gateway as a Lambda sandbox (`AWS_LAMBDA_RUNTIME_API` is set) it is the function.
//! `ESB_LISTEN` changes the address (default 127.0.0.1:8080).

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use esb_gateway::{Gateway, GatewayConfig};
use esb_runtime::logs::TerminalLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use lambda_http::{Body, Error, IntoResponse, Request, RequestExt, service_fn};
use serde_json::json;

/// The function: greets `{name}` (or the world), with `GREETING` from functions.yml.
async fn hello(req: Request) -> Result<impl IntoResponse, Error> {
    let name = req
        .path_parameters_ref()
        .and_then(|params| params.first("name"))
        .unwrap_or("world")
        .to_owned();
    let greeting = std::env::var("GREETING").unwrap_or_else(|_| "Hello".into());
    println!("greeting {name}");
    let body = json!({ "message": format!("{greeting}, {name}!") }).to_string();
    Ok(lambda_http::Response::builder()
        .header("content-type", "application/json")
        .body(Body::Text(body))?)
}

fn examples_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join("examples")
        .join("quickstart")
}

async fn gateway() -> anyhow::Result<()> {
    let me = std::env::current_exe().context("cannot find this program's path")?;
    let env = |name: &str| match name {
        "QUICKSTART_FUNCTION" => Some(me.display().to_string()),
        _ => std::env::var(name).ok(),
    };
    let dir = examples_dir();
    let functions =
        esb_router::Config::load(dir.join("functions.yml"), dir.join("routing.yml"), &env)?;
    let listen = match std::env::var("ESB_LISTEN") {
        Ok(addr) => addr.parse().with_context(|| format!("ESB_LISTEN={addr}"))?,
        Err(_) => "127.0.0.1:8080".parse()?,
    };
    let config = GatewayConfig::new(functions, listen);
    // Function logs on the terminal, and in the Invoke API's `X-Amz-Log-Type: Tail` answers.
    let runtime = Arc::new(ProcessRuntime::new(
        ProcessConfig::default().log_sink(config.log_tail.tee(Arc::new(TerminalLogSink))),
    ));
    let gateway = Gateway::start(config, vec![runtime]).await?;
    println!("esb-gateway listening on {}", gateway.url());
    println!("try:  curl {}/hello/world", gateway.url());
    println!("Ctrl-C stops it.");
    gateway
        .run_until(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return lambda_http::run(service_fn(hello))
            .await
            .map_err(|err| anyhow::anyhow!(err));
    }
    gateway().await
}
