//! Load bench: a no-op function with 8 warm sandboxes, under keep-alive HTTP/1.1 load from
//! `wrk` (Debian's package `wrk`), which runs in its own process. Three ways in one run:
//!
//! - `direct`: a bare HTTP server that hands each request to `Runtime::invoke` on a free
//!   sandbox, i.e. the function through its Lambda Runtime API with no gateway in between;
//! - `all-in-one`: the gateway over the embedded process backend;
//! - `remote`: the gateway over an `esb-agent` (only with `--agent URL`);
//! - `cargo-lambda`: the peer, `cargo lambda watch --concurrency N` (N = `--sandboxes`) on
//!   the same function binary, loaded through its Invoke API (only when `cargo lambda` is on
//!   `PATH`: `pip install cargo-lambda`; `--no-peer` leaves it out).
//!
//! With `--slices N` (and `--agent`), an all-in-one and a remote gateway stay up together and
//! are loaded in turn, `--seconds` each, N times: on a machine whose speed drifts, pairs of
//! short slices compare the two more fairly than one long run of each.
//!
//! With `--null-sink-too`, all-in-one runs again with function logs discarded: the
//! difference is the cost of the platform lines (START, END, REPORT) on the terminal.
//!
//! The gateway is loaded through each of `--entry`: a REST API route (payload 1.0, the
//! default), an HTTP API route (payload 2.0) and the Lambda Invoke API, in the same run.
//!
//! Each is run with two no-op functions: `minimal`, a custom runtime that costs a few system
//! calls per invocation (`esb_testfn::noop`), so the figures are those of what stands in front
//! of it; and `lambda-runtime`, the official `lambda_runtime` crate on `#[tokio::main]`, as a
//! Rust function is usually written.
//!
//! ```text
//! apt-get install wrk
//! cargo run --release -p esb-gateway-bin --example load -- --seconds 5 --connections 16
//! # with an agent (same host, so it can start this program as the function):
//! cargo run --release -p esb-agent-bin --no-default-features -- --runtime process --insecure-no-auth --listen 127.0.0.1:29551 &
//! cargo run --release -p esb-gateway-bin --example load -- --agent http://127.0.0.1:29551
//! ```
//!
//! Started as a Lambda sandbox (`AWS_LAMBDA_RUNTIME_API` is set) this program is the no-op
//! function that `ESB_BENCH_FUNCTION` names: `{"statusCode":200,"body":"ok"}`.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use esb_gateway::logs::{LogTail, function_log_sink};
use esb_gateway::{Gateway, GatewayConfig};
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};
use esb_testfn::ports::free_port;
use http_body_util::Full;
use hyper_util::rt::{TokioExecutor, TokioIo};
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};

/// The gateway binary's allocator, so the bench measures what it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The sandbox's variable naming which no-op function to be.
const FUNCTION_VAR: &str = "ESB_BENCH_FUNCTION";

/// Load bench of the gateway against the function's Runtime API.
#[derive(Parser, Debug, Clone)]
struct Args {
    /// Seconds of load per mode (after one second of warm-up).
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 16)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Warm sandboxes.
    #[arg(long, default_value_t = 8)]
    sandboxes: usize,
    /// Runs of each mode, interleaved; with more than one, the run of median req/s is
    /// reported too.
    #[arg(long, default_value_t = 1)]
    runs: usize,
    /// The no-op functions to run (default: both).
    #[arg(long, value_enum)]
    function: Vec<Function>,
    /// An esb-agent to run the remote mode against.
    #[arg(long)]
    agent: Option<String>,
    /// The agent's token.
    #[arg(long)]
    agent_token: Option<String>,

    // The peer and the gateway's entries.
    /// How the gateway is called (default: all three, in this order).
    #[arg(long, value_enum, value_delimiter = ',')]
    entry: Vec<Entry>,
    /// Seconds the `cargo lambda watch` peer may take to answer its first invocation (it
    /// builds this example with its own flags first: minutes on a small host).
    #[arg(long, default_value_t = 900)]
    peer_timeout: u64,
    /// Leave out the `cargo lambda watch` peer.
    #[arg(long)]
    no_peer: bool,
    /// Also run all-in-one with function logs discarded (`aio-*-null`): the difference is
    /// what the platform lines (START, END, REPORT) cost on the terminal.
    #[arg(long)]
    null_sink_too: bool,

    // The remote path's own figures.
    /// The agent's process id: its CPU time per request is reported in the remote mode.
    #[arg(long)]
    agent_pid: Option<u32>,
    /// With `--agent`: keep an all-in-one and a remote gateway up together and load them in
    /// turn, `--seconds` each, this many times (through the first `--entry`), instead of the
    /// modes above; slices this short compare the two at the same machine speed.
    #[arg(long, default_value_t = 0)]
    slices: usize,
}

/// How a request reaches the function through the gateway.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Entry {
    /// `GET /v1`: a REST API route, payload format 1.0 (the default format).
    RouteV1,
    /// `GET /v2`: an HTTP API route, payload format 2.0.
    RouteV2,
    /// `POST /2015-03-31/functions/noop/invocations` with `{}`: the Lambda Invoke API.
    InvokeApi,
}

impl Entry {
    /// The label's suffix.
    fn name(self) -> &'static str {
        match self {
            Entry::RouteV1 => "v1",
            Entry::RouteV2 => "v2",
            Entry::InvokeApi => "invoke",
        }
    }

    /// The path, and the body of a POST (`None`: a GET).
    fn request(self) -> (&'static str, Option<&'static str>) {
        match self {
            Entry::RouteV1 => ("/v1", None),
            Entry::RouteV2 => ("/v2", None),
            Entry::InvokeApi => ("/2015-03-31/functions/noop/invocations", Some("{}")),
        }
    }
}

/// A no-op function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Function {
    /// A custom runtime of a few system calls per invocation (`esb_testfn::noop`).
    Minimal,
    /// The official `lambda_runtime` crate on a multi-threaded tokio runtime.
    LambdaRuntime,
}

impl Function {
    fn name(self) -> &'static str {
        match self {
            Function::Minimal => "minimal",
            Function::LambdaRuntime => "lambda-runtime",
        }
    }
}

/// The `lambda_runtime` no-op handler.
async fn noop(_: LambdaEvent<Value>) -> Result<Value, lambda_runtime::Error> {
    Ok(json!({"statusCode": 200, "body": "ok"}))
}

/// Runs as the sandbox's function.
fn serve_function() -> anyhow::Result<()> {
    if std::env::var(FUNCTION_VAR).as_deref() == Ok("minimal") {
        return Ok(esb_testfn::noop::run()?);
    }
    tokio::runtime::Runtime::new()?
        .block_on(lambda_runtime::run(service_fn(noop)))
        .map_err(|err| anyhow::anyhow!(err))
}

fn functions_yml(command: &str, function: Function, sandboxes: usize) -> String {
    format!(
        r#"
functions:
  noop:
    command: [{command:?}]
    timeout: 30
    environment: {{ {FUNCTION_VAR}: {} }}
    scaling: {{ max_capacity: {sandboxes}, min_capacity: {sandboxes}, acquire_timeout: 30.0 }}
"#,
        function.name()
    )
}

const ROUTING: &str = r#"
routes:
  - { path: "/v1", method: GET, function: noop, auth: none }
  - { path: "/v2", method: GET, function: noop, auth: none, payload_format: "2.0" }
"#;

/// What wrk measured, and the CPU it cost.
struct Outcome {
    requests_per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
    errors: u64,
    /// CPU time of this process (the gateway or the direct server) per request.
    server_cpu_us: f64,
    /// CPU time of the function processes per request, when they are this process's children.
    function_cpu_us: Option<f64>,
    /// CPU time of the agent per request (remote mode with `--agent-pid`).
    agent_cpu_us: Option<f64>,
}

/// Whose CPU a run counts: the server process, and the function processes (when known).
#[derive(Clone, Copy, Debug)]
enum Processes {
    /// This process serves; the functions are its children (the process backend) or
    /// elsewhere (`false`: an agent's).
    Me { functions_are_children: bool },
    /// The peer: its server process, and the processes running `exe` below it.
    Peer { server: u32, root: u32 },
}

impl Processes {
    /// CPU ticks of the server, and of the functions.
    fn ticks(self, me: &str) -> (u64, Option<u64>) {
        match self {
            Processes::Me {
                functions_are_children,
            } => {
                let pid = std::process::id();
                let functions = functions_are_children
                    .then(|| children_of(pid).iter().map(|p| cpu_ticks(*p)).sum());
                (cpu_ticks(pid), functions)
            }
            Processes::Peer { server, root } => {
                let functions = descendants_of(root)
                    .into_iter()
                    .filter(|pid| runs(*pid, me))
                    .map(cpu_ticks)
                    .sum();
                (cpu_ticks(server), Some(functions))
            }
        }
    }
}

/// A wrk script that sends `body` with POST.
fn post_script(body: &str) -> anyhow::Result<tempfile::NamedTempFile> {
    use std::io::Write;
    let mut script = tempfile::Builder::new().suffix(".lua").tempfile()?;
    writeln!(
        script,
        "wrk.method = \"POST\"\nwrk.body = {body:?}\nwrk.headers[\"Content-Type\"] = \"application/json\""
    )?;
    Ok(script)
}

/// Runs wrk against `url` (a POST of `body` when given): `warm_up` seconds, then the
/// measured run.
fn wrk(
    url: &str,
    body: Option<&str>,
    warm_up: u64,
    args: &Args,
    processes: Processes,
) -> anyhow::Result<Outcome> {
    let script = body.map(post_script).transpose()?;
    let run = |seconds: u64, latency: bool| -> anyhow::Result<String> {
        let mut command = Command::new("wrk");
        command
            .arg(format!("-t{}", args.threads))
            .arg(format!("-c{}", args.connections))
            .arg(format!("-d{seconds}s"));
        if latency {
            command.arg("--latency");
        }
        if let Some(script) = &script {
            command.arg("-s").arg(script.path());
        }
        let output = command
            .arg(url)
            .output()
            .context("cannot run wrk (apt-get install wrk)")?;
        if !output.status.success() {
            bail!("wrk failed: {}", String::from_utf8_lossy(&output.stderr));
        }
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    };
    if warm_up > 0 {
        run(warm_up, false)?;
    }
    let me = std::env::current_exe()
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    // The remote mode is the one whose functions are not this process's children.
    let agent = args.agent_pid.filter(|_| {
        matches!(
            processes,
            Processes::Me {
                functions_are_children: false
            }
        )
    });
    let agent_before = agent.map(cpu_ticks);
    let before = processes.ticks(&me);
    let report = run(args.seconds, true)?;
    let after = processes.ticks(&me);
    let agent_ticks = agent
        .map(cpu_ticks)
        .zip(agent_before)
        .map(|(a, b)| a.saturating_sub(b));
    let requests_per_second = field(&report, "Requests/sec:")
        .and_then(|v| v.parse::<f64>().ok())
        .with_context(|| format!("no Requests/sec in wrk's report:\n{report}"))?;
    if requests_per_second < 1.0 {
        bail!("no request was answered:\n{report}");
    }
    let requests = requests_per_second * args.seconds as f64;
    // /proc reports CPU time in USER_HZ ticks, 100 a second.
    let per_request = |ticks: u64| ticks as f64 * 10_000.0 / requests;
    let non_2xx = field(&report, "Non-2xx or 3xx responses:")
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let socket_errors = report
        .lines()
        .find_map(|l| l.trim().strip_prefix("Socket errors:"))
        .map(|errors| {
            errors
                .split(',')
                .filter_map(|e| e.split_whitespace().last()?.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    Ok(Outcome {
        requests_per_second,
        p50_ms: percentile(&report, "50%")?,
        p99_ms: percentile(&report, "99%")?,
        errors: non_2xx + socket_errors,
        server_cpu_us: per_request(after.0.saturating_sub(before.0)),
        function_cpu_us: after
            .1
            .zip(before.1)
            .map(|(after, before)| per_request(after.saturating_sub(before))),
        agent_cpu_us: agent_ticks.map(per_request),
    })
}

/// The word after `label` on the report line that starts with it.
fn field<'a>(report: &'a str, label: &str) -> Option<&'a str> {
    report
        .lines()
        .find_map(|line| line.trim().strip_prefix(label))
        .and_then(|rest| rest.split_whitespace().next())
}

/// A latency percentile of wrk's `--latency` distribution, in milliseconds.
fn percentile(report: &str, label: &str) -> anyhow::Result<f64> {
    let value =
        field(report, label).with_context(|| format!("no {label} latency in:\n{report}"))?;
    let split = value
        .find(|c: char| c.is_ascii_alphabetic())
        .unwrap_or(value.len());
    let (number, unit) = value.split_at(split);
    let number: f64 = number.parse().context("wrk latency")?;
    Ok(match unit {
        "us" => number / 1000.0,
        "ms" => number,
        "s" => number * 1000.0,
        "m" => number * 60_000.0,
        other => bail!("unknown latency unit {other:?} in {value:?}"),
    })
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0;
    };
    // Fields after the command name (in parentheses); utime and stime are the 14th and 15th.
    let Some((_, after)) = stat.rsplit_once(')') else {
        return 0;
    };
    after
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse::<u64>().ok())
        .sum()
}

/// The children of `parent` (the sandboxes of the process backend; wrk has exited by then).
fn children_of(parent: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| {
                    let after = stat.rsplit_once(')')?.1.to_owned();
                    after.split_whitespace().nth(1)?.parse::<u32>().ok()
                })
                == Some(parent)
        })
        .collect()
}

/// Every process below `root`.
fn descendants_of(root: u32) -> Vec<u32> {
    let mut found = Vec::new();
    let mut parents = vec![root];
    while let Some(parent) = parents.pop() {
        for child in children_of(parent) {
            found.push(child);
            parents.push(child);
        }
    }
    found
}

/// True when process `pid` runs the program at `exe`.
fn runs(pid: u32, exe: &str) -> bool {
    std::fs::read_link(format!("/proc/{pid}/exe")).is_ok_and(|p| p.display().to_string() == exe)
}

/// The run of median throughput.
fn median(mut runs: Vec<Outcome>) -> Outcome {
    runs.sort_by(|a, b| a.requests_per_second.total_cmp(&b.requests_per_second));
    let middle = runs.len() / 2;
    runs.swap_remove(middle)
}

fn print(function: Function, mode: &str, outcome: &Outcome) {
    let functions = outcome
        .function_cpu_us
        .map(|us| format!("{us:>5.1}"))
        .unwrap_or_else(|| "    -".into());
    println!(
        "{:<15} {mode:<12} {:>9.0} req/s   p50 {:>6.3} ms   p99 {:>6.3} ms   {:>3} errors   CPU/request: server {:>5.1} us, functions {functions} us",
        function.name(),
        outcome.requests_per_second,
        outcome.p50_ms,
        outcome.p99_ms,
        outcome.errors,
        outcome.server_cpu_us,
    );
    if let Some(agent) = outcome.agent_cpu_us {
        println!(
            "{:<15} {mode:<11} agent CPU/request {agent:>5.1} us, gateway + agent {:>5.1} us",
            function.name(),
            outcome.server_cpu_us + agent
        );
    }
}

/// A bare HTTP server invoking free sandboxes directly: the baseline without a gateway.
async fn direct(me: &str, function: Function, args: &Args) -> anyhow::Result<Outcome> {
    let runtime = Arc::new(ProcessRuntime::new(
        ProcessConfig::default().log_sink(Arc::new(NullLogSink)),
    ));
    let (free_tx, free_rx) = async_channel(args.sandboxes);
    let mut ids = Vec::new();
    for _ in 0..args.sandboxes {
        let info = runtime
            .create(
                SandboxSpec::new("noop")
                    .command([me])
                    .env(FUNCTION_VAR, function.name())
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
                        // In its own task, as the pool does: a client that leaves mid-request
                        // (wrk at the end of a run) must not take a sandbox with it.
                        let invocation = tokio::spawn(async move {
                            let id = free_rx.recv().await.ok()?;
                            let answer = runtime
                                .invoke(&id, InvokeRequest::new(Bytes::from_static(b"{}")))
                                .await;
                            let _ = free_tx.send(id).await;
                            Some(answer.map(|a| a.body()).unwrap_or_default())
                        });
                        async move {
                            let mut response = http::Response::new(Full::new(Bytes::new()));
                            match invocation.await {
                                Ok(Some(body)) => *response.body_mut() = Full::new(body),
                                _ => *response.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE,
                            }
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    };
    let outcome = measure(
        format!("http://{addr}/"),
        None,
        1,
        args,
        Processes::Me {
            functions_are_children: true,
        },
    )
    .await;
    server.abort();
    for id in ids {
        runtime.destroy(&id).await?;
    }
    outcome
}

/// wrk in a blocking task, so this process's runtime keeps serving.
async fn measure(
    url: String,
    body: Option<&'static str>,
    warm_up: u64,
    args: &Args,
    processes: Processes,
) -> anyhow::Result<Outcome> {
    let args = args.clone();
    tokio::task::spawn_blocking(move || wrk(&url, body, warm_up, &args, processes)).await?
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

/// The gateway over `runtime`, loaded through each of `entries` in turn.
async fn gateway(
    me: &str,
    function: Function,
    runtime: Arc<dyn Runtime>,
    args: &Args,
    entries: &[Entry],
    functions_are_children: bool,
) -> anyhow::Result<Vec<(Entry, Outcome)>> {
    let gateway = start_gateway(me, function, runtime, args).await?;
    let mut outcomes = Vec::new();
    for &entry in entries {
        let (path, body) = entry.request();
        let outcome = measure(
            format!("http://{}{path}", gateway.local_addr()),
            body,
            1,
            args,
            Processes::Me {
                functions_are_children,
            },
        )
        .await;
        match outcome {
            Ok(outcome) => outcomes.push((entry, outcome)),
            Err(err) => {
                gateway.shutdown().await;
                return Err(err);
            }
        }
    }
    gateway.shutdown().await;
    Ok(outcomes)
}

/// A gateway over `runtime` with the no-op function, once its sandboxes are idle.
async fn start_gateway(
    me: &str,
    function: Function,
    runtime: Arc<dyn Runtime>,
    args: &Args,
) -> anyhow::Result<Gateway> {
    let functions = esb_router::Config::from_yaml_str(
        &functions_yml(me, function, args.sandboxes),
        ROUTING,
        &|_| None,
    )?;
    let gateway = Gateway::start(
        GatewayConfig::new(functions, "127.0.0.1:0".parse()?),
        vec![runtime],
    )
    .await?;
    // min_capacity sandboxes start in the background: wait until they are idle.
    for _ in 0..200 {
        let stats = gateway.pool().stats("noop")?;
        if stats.idle + stats.paused >= args.sandboxes {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(gateway)
}

/// `--slices`: an all-in-one and a remote gateway up together, loaded in turn; prints each
/// pair of slices and their medians.
async fn interleaved(
    me: &str,
    function: Function,
    args: &Args,
    agent: &str,
    entry: Entry,
) -> anyhow::Result<()> {
    let process = Arc::new(ProcessRuntime::new(
        ProcessConfig::default().log_sink(LogTail::new().tee(function_log_sink(None))),
    ));
    let mut config = RemoteConfig::new(agent);
    config.token = args.agent_token.clone();
    let remote = RemoteRuntime::connect(config)
        .await
        .with_context(|| format!("cannot reach the agent at {agent}"))?;
    let aio = start_gateway(me, function, process, args).await?;
    let remote = start_gateway(me, function, Arc::new(remote), args).await?;
    let (path, body) = entry.request();
    let modes = [
        (format!("http://{}{path}", aio.local_addr()), true),
        (format!("http://{}{path}", remote.local_addr()), false),
    ];
    // Per pair: remote / all-in-one req/s, gateway + agent CPU over all-in-one's, and the
    // two req/s.
    let mut pairs: Vec<(f64, f64, f64, f64)> = Vec::new();
    let slices = async {
        for slice in 0..args.slices {
            let mut outcomes = Vec::new();
            for (url, functions_are_children) in &modes {
                // One warm-up second before the first slice of each.
                let warm_up = u64::from(slice == 0);
                let processes = Processes::Me {
                    functions_are_children: *functions_are_children,
                };
                outcomes.push(measure(url.clone(), body, warm_up, args, processes).await?);
            }
            let (aio, remote) = (&outcomes[0], &outcomes[1]);
            let ratio = remote.requests_per_second / aio.requests_per_second;
            let agent = remote.agent_cpu_us.unwrap_or_default();
            let extra = remote.server_cpu_us + agent - aio.server_cpu_us;
            println!(
                "{:<15} slice {:>2}: aio {:>6.0} req/s, remote {:>6.0} req/s: {ratio:.2}x, gateway + agent CPU {extra:+.1} us over all-in-one's {:.1} us",
                function.name(),
                slice + 1,
                aio.requests_per_second,
                remote.requests_per_second,
                aio.server_cpu_us,
            );
            pairs.push((ratio, extra, aio.requests_per_second, remote.requests_per_second));
        }
        anyhow::Ok(())
    }
    .await;
    aio.shutdown().await;
    remote.shutdown().await;
    slices?;
    let middle = |pick: fn(&(f64, f64, f64, f64)) -> f64| {
        let mut values: Vec<f64> = pairs.iter().map(pick).collect();
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let total = |pick: fn(&(f64, f64, f64, f64)) -> f64| pairs.iter().map(pick).sum::<f64>();
    println!(
        "{:<15} {} slices of {} s: remote / aio-{} median {:.2}x req/s (totals {:.2}x), gateway + agent CPU per request median {:+.1} us over all-in-one",
        function.name(),
        pairs.len(),
        args.seconds,
        entry.name(),
        middle(|pair| pair.0),
        total(|pair| pair.3) / total(|pair| pair.2),
        middle(|pair| pair.1),
    );
    Ok(())
}

/// Why the `cargo lambda` peer cannot run here, if it cannot.
fn peer_missing() -> Option<String> {
    match Command::new("cargo").args(["lambda", "--version"]).output() {
        Ok(output) if output.status.success() => None,
        Ok(output) => Some(format!(
            "`cargo lambda --version` failed ({}): pip install cargo-lambda",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(err) => Some(format!("cannot run cargo: {err}")),
    }
}

/// A `cargo lambda watch` process group, killed when dropped.
struct Peer {
    child: std::process::Child,
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }
}

/// One blocking `POST path` with `body`, answered 200 with the no-op's answer.
fn post_once(port: u16, path: &str, body: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.read_to_string(&mut answer);
    answer.starts_with("HTTP/1.1 200") && answer.contains("statusCode")
}

/// The peer: `cargo lambda watch --concurrency N` running this example as the function (from
/// this build, so the same binary), loaded through its Invoke API.
async fn cargo_lambda(function: Function, args: &Args) -> anyhow::Result<Outcome> {
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let port = free_port()?;
    // Its output, shown when it does not answer.
    let output = tempfile::tempfile().context("a file for cargo lambda's output")?;
    let mut command = Command::new("cargo");
    command
        .args(["lambda", "watch", "--quiet", "--ignore-changes"])
        .args(["--manifest-path", workspace])
        .args(["-p", "esb-gateway-bin", "--example", "load"])
        .args(["-A", "127.0.0.1", "-P", &port.to_string()])
        .args(["--concurrency", &args.sandboxes.to_string()])
        .args(["--env-var", &format!("{FUNCTION_VAR}={}", function.name())])
        .stdin(std::process::Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output.try_clone()?);
    if !cfg!(debug_assertions) {
        command.arg("--release");
    }
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
    }
    let peer = Peer {
        child: command.spawn().context("cannot start cargo lambda watch")?,
    };
    let root = peer.child.id();
    // `_`: the package's one function (an example is no binary of its own to name).
    let path = "/2015-03-31/functions/_/invocations";
    // The first invocation builds (nothing, when this build is fresh) and starts the function.
    let timeout = args.peer_timeout;
    let ready = tokio::task::spawn_blocking(move || {
        let until = std::time::Instant::now() + Duration::from_secs(timeout);
        while std::time::Instant::now() < until {
            if post_once(port, path, "{}") {
                return true;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        false
    })
    .await?;
    if !ready {
        use std::io::{Read, Seek};
        let mut text = String::new();
        let mut output = output;
        output.rewind()?;
        output.read_to_string(&mut text)?;
        let tail: Vec<&str> = text.lines().rev().take(20).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "cargo lambda watch did not answer on 127.0.0.1:{port} within {timeout} s; its last lines:\n{}",
            tail.join("\n")
        );
    }
    // Its server: the `cargo-lambda` process below `cargo lambda`.
    let server = descendants_of(root)
        .into_iter()
        .find(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim() == "cargo-lambda")
        })
        .unwrap_or(root);
    // A longer warm-up: cargo lambda starts its instances as the concurrency asks for them.
    let outcome = measure(
        format!("http://127.0.0.1:{port}{path}"),
        Some("{}"),
        3,
        args,
        Processes::Peer { server, root },
    )
    .await;
    drop(peer);
    outcome
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return serve_function();
    }
    let args = Args::parse();
    if args.slices > 0 && (args.agent.is_none() || args.agent_pid.is_none()) {
        bail!(
            "--slices needs --agent and --agent-pid (the agent's CPU is half of what it compares)"
        );
    }
    let me = std::env::current_exe()
        .context("this program's path")?
        .display()
        .to_string();
    let functions = if args.function.is_empty() {
        vec![Function::Minimal, Function::LambdaRuntime]
    } else {
        args.function.clone()
    };
    let entries = if args.entry.is_empty() {
        vec![Entry::RouteV1, Entry::RouteV2, Entry::InvokeApi]
    } else {
        args.entry.clone()
    };
    let peer = if args.no_peer {
        None
    } else {
        match peer_missing() {
            None => Some(()),
            Some(reason) => {
                println!("cargo-lambda peer skipped: {reason}");
                None
            }
        }
    };
    tokio::runtime::Runtime::new()?.block_on(async {
        println!(
            "wrk -t{} -c{}, {} warm sandboxes, {} s per mode",
            args.threads, args.connections, args.sandboxes, args.seconds
        );
        if args.slices > 0 {
            let agent = args.agent.as_deref().context("--slices needs --agent")?;
            for function in functions {
                interleaved(&me, function, &args, agent, entries[0]).await?;
            }
            return Ok(());
        }
        for function in functions {
            let mut runs: BTreeMap<String, Vec<Outcome>> = BTreeMap::new();
            let mut order: Vec<String> = Vec::new();
            let mut record = |mode: String, outcome: Outcome| {
                print(function, &mode, &outcome);
                if !order.contains(&mode) {
                    order.push(mode.clone());
                }
                runs.entry(mode).or_default().push(outcome);
            };
            for _ in 0..args.runs.max(1) {
                let outcome = direct(&me, function, &args).await?;
                record("direct".into(), outcome);
                // The binary's sinks: the terminal (send stderr elsewhere) and the Tail capture.
                let process = Arc::new(ProcessRuntime::new(
                    ProcessConfig::default().log_sink(LogTail::new().tee(function_log_sink(None))),
                ));
                for (entry, outcome) in
                    gateway(&me, function, process, &args, &entries, true).await?
                {
                    record(format!("aio-{}", entry.name()), outcome);
                }
                if args.null_sink_too {
                    let process = Arc::new(ProcessRuntime::new(
                        ProcessConfig::default().log_sink(Arc::new(NullLogSink)),
                    ));
                    for (entry, outcome) in
                        gateway(&me, function, process, &args, &entries, true).await?
                    {
                        record(format!("aio-{}-null", entry.name()), outcome);
                    }
                }
                if let Some(url) = &args.agent {
                    let mut config = RemoteConfig::new(url);
                    config.token = args.agent_token.clone();
                    let remote = RemoteRuntime::connect(config)
                        .await
                        .with_context(|| format!("cannot reach the agent at {url}"))?;
                    for (entry, outcome) in
                        gateway(&me, function, Arc::new(remote), &args, &entries, false).await?
                    {
                        record(format!("remote-{}", entry.name()), outcome);
                    }
                }
                if peer.is_some() {
                    let outcome = cargo_lambda(function, &args).await?;
                    record("cargo-lambda".into(), outcome);
                }
            }
            // The remote path against all-in-one, run by run (issue 18's goal holds in each).
            for entry in &entries {
                let (aio, remote) = (format!("aio-{}", entry.name()), format!("remote-{}", entry.name()));
                if let (Some(aio), Some(remote)) = (runs.get(&aio), runs.get(&remote)) {
                    for (run, (aio, remote)) in aio.iter().zip(remote).enumerate() {
                        let extra = remote
                            .agent_cpu_us
                            .map(|agent| format!("{:+.1} us", remote.server_cpu_us + agent - aio.server_cpu_us))
                            .unwrap_or_else(|| "? (no --agent-pid)".into());
                        println!(
                            "{:<15} run {}: remote-{} / aio-{}: {:.2}x req/s, gateway + agent CPU per request {extra} over all-in-one",
                            function.name(),
                            run + 1,
                            entry.name(),
                            entry.name(),
                            remote.requests_per_second / aio.requests_per_second,
                        );
                    }
                }
            }
            let medians: BTreeMap<String, Outcome> = runs
                .into_iter()
                .map(|(mode, outcomes)| (mode, median(outcomes)))
                .collect();
            if args.runs > 1 {
                println!("median of {} runs:", args.runs);
                for mode in &order {
                    if let Some(outcome) = medians.get(mode) {
                        print(function, mode, outcome);
                    }
                }
            }
            let name = function.name();
            if let (Some(direct), Some(aio)) = (medians.get("direct"), medians.get("aio-v1")) {
                println!(
                    "{name:<15} gateway overhead at p50 (v1 route): {:.3} ms",
                    aio.p50_ms - direct.p50_ms
                );
            }
            if let Some(invoke) = medians.get("aio-invoke") {
                for route in ["aio-v1", "aio-v2"] {
                    if let Some(routed) = medians.get(route) {
                        println!(
                            "{name:<15} {route} vs aio-invoke: {:.2}x req/s, server CPU {:+.1} us per request",
                            routed.requests_per_second / invoke.requests_per_second,
                            routed.server_cpu_us - invoke.server_cpu_us,
                        );
                    }
                }
            }
            for entry in &entries {
                let mode = format!("aio-{}", entry.name());
                if let (Some(terminal), Some(null)) =
                    (medians.get(&mode), medians.get(&format!("{mode}-null")))
                {
                    println!(
                        "{name:<15} {mode}: platform lines on the terminal cost {:+.1} us of server CPU per request",
                        terminal.server_cpu_us - null.server_cpu_us
                    );
                }
            }
            if let Some(peer) = medians.get("cargo-lambda") {
                for mode in &order {
                    if mode == "cargo-lambda" || mode == "direct" {
                        continue;
                    }
                    if let Some(ours) = medians.get(mode) {
                        println!(
                            "{name:<15} {mode} vs cargo-lambda: {:.2}x req/s, p50 {:.2}x, server CPU per request {:.2}x",
                            ours.requests_per_second / peer.requests_per_second,
                            ours.p50_ms / peer.p50_ms,
                            ours.server_cpu_us / peer.server_cpu_us,
                        );
                    }
                }
            }
        }
        anyhow::Ok(())
    })
}
