//! A stand-in for the AWS Lambda Runtime Interface Emulator (RIE), for tests where the real
//! one cannot be fetched. It follows the emulator's source (aws-lambda-runtime-interface-emulator
//! v1.30, `internal/lambda/rie` and `rapidcore/server.go`) at the protocol level:
//!
//! - `aws-lambda-rie [--runtime-interface-emulator-address 0.0.0.0:8080]
//!   [--runtime-api-address 127.0.0.1:9001] [bootstrap args..]`; without a bootstrap it runs
//!   the first of `/var/task/bootstrap`, `/opt/bootstrap`, `/var/runtime/bootstrap`.
//! - It listens only after `ESB_RIE_LISTEN_DELAY_MS` (default 1000 ms; the real emulator
//!   also takes a while to come up in a fresh container), then serves
//!   `POST /2015-03-31/functions/function/invocations`, one invocation at a time (400 while
//!   busy, as RIE's reservation refuses a second one).
//! - The bootstrap is started on the first invocation (init inside it, as RIE does) with the
//!   container's environment plus RIE's defaults, and polls the stand-in's own Runtime API.
//! - It reads `AWS_LAMBDA_FUNCTION_TIMEOUT` (whole seconds, default 300),
//!   `AWS_LAMBDA_FUNCTION_MEMORY_SIZE` (default 3008), `AWS_LAMBDA_FUNCTION_NAME` (default
//!   `test_function`), `AWS_LAMBDA_FUNCTION_VERSION` (default `$LATEST`); from the request it
//!   honours `X-Amzn-Trace-Id` and `X-Amz-Client-Context` (base64), and makes its own
//!   request id; the ARN is `arn:aws:lambda:us-east-1:012345678912:function:<name>`.
//! - Success: 200 and the runtime's answer. Function error (`/error`): 200 and the error
//!   document the runtime posted, without any error header. Timeout: 200 and the plain text
//!   `Task timed out after N.00 seconds`, the runtime killed (the next call inits again).
//!   Runtime exit mid-invocation: 502 and `{"errorMessage":"RequestId: <id> Error: Runtime
//!   exited with error: exit status N","errorType":"Runtime.ExitError"}`; the next call
//!   inits again.
//! - It prints `START`, `END` and `REPORT` lines to stdout as RIE does.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use base64::Engine;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use tokio::sync::{oneshot, watch};

type Answer = Response<Full<Bytes>>;

/// One invocation handed to the runtime's `next`.
struct Invocation {
    id: String,
    payload: Bytes,
    deadline_ms: u128,
    arn: String,
    trace_id: String,
    client_context: String,
}

/// What the runtime did with an invocation.
enum Outcome {
    Response(Bytes),
    Error(Bytes),
}

/// The running bootstrap.
struct Bootstrap {
    /// Some(status text) once it exited.
    exited: watch::Receiver<Option<String>>,
    kill: Option<oneshot::Sender<()>>,
}

#[derive(Default)]
struct Shared {
    /// The runtime's pending `next`, waiting for an invocation.
    next: Mutex<Option<oneshot::Sender<Invocation>>>,
    /// Wakes the invoker when a `next` arrives.
    next_ready: tokio::sync::Notify,
    /// Where the current invocation's outcome goes.
    outcome: Mutex<Option<(String, oneshot::Sender<Outcome>)>>,
}

struct Emulator {
    shared: Arc<Shared>,
    bootstrap_cmd: Vec<String>,
    runtime_api: String,
    /// The bootstrap, when started; also the one-at-a-time lock.
    running: tokio::sync::Mutex<Option<Bootstrap>>,
}

fn env_or(key: &str, default: &str) -> String {
    std::env::var(key)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| default.to_owned())
}

fn text(status: StatusCode, body: impl Into<Bytes>) -> Answer {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response
}

/// Runs the emulator until the process is killed.
///
/// # Errors
/// When a flag is malformed, no bootstrap is found or an address cannot be bound.
pub async fn run() -> std::io::Result<()> {
    let mut listen = "0.0.0.0:8080".to_owned();
    let mut runtime_api = "127.0.0.1:9001".to_owned();
    let mut bootstrap_cmd = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--runtime-interface-emulator-address" => listen = args.next().unwrap_or_default(),
            "--runtime-api-address" => runtime_api = args.next().unwrap_or_default(),
            "--log-level" => {
                args.next();
            }
            "--enable-init-caching" => {}
            _ => {
                bootstrap_cmd.push(arg);
                bootstrap_cmd.extend(args.by_ref());
            }
        }
    }
    if bootstrap_cmd.is_empty() {
        let found = [
            "/var/task/bootstrap",
            "/opt/bootstrap",
            "/var/runtime/bootstrap",
        ]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .ok_or_else(|| std::io::Error::other("no bootstrap found"))?;
        bootstrap_cmd.push(found.to_owned());
    }
    let bad = |what: &str, value: &str| {
        std::io::Error::other(format!("{what} {value:?} is not a network address"))
    };
    let listen: SocketAddr = listen.parse().map_err(|_| bad("listen", &listen))?;
    let api_addr: SocketAddr = runtime_api
        .parse()
        .map_err(|_| bad("runtime api", &runtime_api))?;
    // RIE parses the timeout with ParseInt and panics on anything else.
    let timeout = env_or("AWS_LAMBDA_FUNCTION_TIMEOUT", "300");
    timeout.parse::<u64>().map_err(|_| {
        std::io::Error::other(format!(
            "AWS_LAMBDA_FUNCTION_TIMEOUT {timeout:?} is no integer"
        ))
    })?;

    let shared = Arc::new(Shared::default());
    let api = tokio::net::TcpListener::bind(api_addr).await?;
    tokio::spawn(serve(api, {
        let shared = shared.clone();
        move |req| runtime_api_handler(shared.clone(), req)
    }));

    let delay = env_or("ESB_RIE_LISTEN_DELAY_MS", "1000")
        .parse()
        .unwrap_or(1000);
    tokio::time::sleep(Duration::from_millis(delay)).await;
    let emulator = Arc::new(Emulator {
        shared,
        bootstrap_cmd,
        runtime_api,
        running: tokio::sync::Mutex::new(None),
    });
    let listener = tokio::net::TcpListener::bind(listen).await?;
    eprintln!("rie stand-in listening on {listen}");
    serve(listener, move |req| invoke_handler(emulator.clone(), req)).await;
    Ok(())
}

/// Serves HTTP/1.1 on `listener` with `handler`.
async fn serve<F, Fut>(listener: tokio::net::TcpListener, handler: F)
where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Answer> + Send + 'static,
{
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let handler = handler.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let handler = handler.clone();
                async move { Ok::<_, Infallible>(handler(req).await) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn runtime_api_handler(shared: Arc<Shared>, req: Request<Incoming>) -> Answer {
    let path = req.uri().path().to_owned();
    let Some(rest) = path.strip_prefix("/2018-06-01/runtime/") else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    if rest == "invocation/next" {
        let (tx, rx) = oneshot::channel();
        *shared.next.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        shared.next_ready.notify_one();
        let Ok(invocation) = rx.await else {
            return text(StatusCode::INTERNAL_SERVER_ERROR, "shutting down");
        };
        let mut response = text(StatusCode::OK, invocation.payload);
        let headers = response.headers_mut();
        let mut set = |name: &'static str, value: &str| {
            if let Ok(value) = value.parse() {
                headers.insert(name, value);
            }
        };
        set("lambda-runtime-aws-request-id", &invocation.id);
        set(
            "lambda-runtime-deadline-ms",
            &invocation.deadline_ms.to_string(),
        );
        set("lambda-runtime-invoked-function-arn", &invocation.arn);
        if !invocation.trace_id.is_empty() {
            set("lambda-runtime-trace-id", &invocation.trace_id);
        }
        if !invocation.client_context.is_empty() {
            set("lambda-runtime-client-context", &invocation.client_context);
        }
        set("content-type", "application/json");
        return response;
    }
    if rest == "init/error" {
        return text(StatusCode::ACCEPTED, r#"{"status":"OK"}"#);
    }
    let Some((id, kind)) = rest
        .strip_prefix("invocation/")
        .and_then(|r| r.split_once('/'))
    else {
        return text(StatusCode::NOT_FOUND, "not found");
    };
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let outcome = match kind {
        "response" => Outcome::Response(body),
        "error" => Outcome::Error(body),
        _ => return text(StatusCode::NOT_FOUND, "not found"),
    };
    let pending = shared
        .outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take_if(|(current, _)| current == id);
    match pending {
        Some((_, tx)) => {
            let _ = tx.send(outcome);
            text(StatusCode::ACCEPTED, r#"{"status":"OK"}"#)
        }
        None => text(StatusCode::BAD_REQUEST, "invalid request id"),
    }
}

impl Emulator {
    /// Starts the bootstrap with the container's environment plus RIE's defaults.
    fn start_bootstrap(&self) -> std::io::Result<Bootstrap> {
        let mut command = tokio::process::Command::new(&self.bootstrap_cmd[0]);
        command.args(&self.bootstrap_cmd[1..]);
        for (key, value) in [
            ("AWS_LAMBDA_LOG_GROUP_NAME", "/aws/lambda/Functions"),
            ("AWS_LAMBDA_LOG_STREAM_NAME", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008"),
            ("AWS_LAMBDA_FUNCTION_NAME", "test_function"),
        ] {
            if std::env::var_os(key).is_none() {
                command.env(key, value);
            }
        }
        command
            .env("AWS_LAMBDA_RUNTIME_API", &self.runtime_api)
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn()?;
        let (exit_tx, exited) = watch::channel(None);
        let (kill, kill_rx) = oneshot::channel::<()>();
        tokio::spawn(async move {
            let status = tokio::select! {
                status = child.wait() => status,
                _ = kill_rx => {
                    let _ = child.kill().await;
                    child.wait().await
                }
            };
            let reason = match status {
                Ok(status) => match (
                    status.code(),
                    std::os::unix::process::ExitStatusExt::signal(&status),
                ) {
                    (Some(code), _) => format!("exit status {code}"),
                    (None, Some(signal)) => format!("signal: {signal}"),
                    _ => "unknown".to_owned(),
                },
                Err(err) => err.to_string(),
            };
            let _ = exit_tx.send(Some(reason));
        });
        Ok(Bootstrap {
            exited,
            kill: Some(kill),
        })
    }
}

async fn invoke_handler(emulator: Arc<Emulator>, req: Request<Incoming>) -> Answer {
    if req.method() != hyper::Method::POST
        || req.uri().path() != "/2015-03-31/functions/function/invocations"
    {
        return text(StatusCode::NOT_FOUND, "404 page not found\n");
    }
    // One at a time, as RIE's reservation allows.
    let Ok(mut running) = emulator.running.try_lock() else {
        return text(StatusCode::BAD_REQUEST, "");
    };
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let trace_id = header("x-amzn-trace-id");
    let Ok(client_context) = base64::engine::general_purpose::STANDARD
        .decode(header("x-amz-client-context"))
        .map(|raw| String::from_utf8_lossy(&raw).into_owned())
    else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "");
    };
    let Ok(payload) = req.into_body().collect().await.map(|b| b.to_bytes()) else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "");
    };

    let timeout_s: u64 = env_or("AWS_LAMBDA_FUNCTION_TIMEOUT", "300")
        .parse()
        .unwrap_or(300);
    let timeout = Duration::from_secs(timeout_s);
    let version = env_or("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST");
    let memory = env_or("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008");
    let name = env_or("AWS_LAMBDA_FUNCTION_NAME", "test_function");
    let id = uuid::Uuid::new_v4().to_string();

    // Init inside the first invocation: start the runtime and wait for its first `next`.
    let mut init = String::new();
    let alive = running
        .as_ref()
        .is_some_and(|b| b.exited.borrow().is_none());
    if !alive {
        let init_start = Instant::now();
        let bootstrap = match emulator.start_bootstrap() {
            Ok(b) => b,
            Err(err) => {
                let doc = serde_json::json!({
                    "errorMessage": format!("RequestId: {id} Error: {err}"),
                    "errorType": "Runtime.InvalidEntrypoint",
                });
                return text(StatusCode::BAD_GATEWAY, doc.to_string());
            }
        };
        *running = Some(bootstrap);
        let ready = async {
            loop {
                let notified = emulator.shared.next_ready.notified();
                if emulator
                    .shared
                    .next
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .is_some()
                {
                    return;
                }
                notified.await;
            }
        };
        let mut exited = running.as_ref().map(|b| b.exited.clone());
        tokio::select! {
            () = ready => {}
            _ = async { if let Some(e) = exited.as_mut() { let _ = e.wait_for(Option::is_some).await; } } => {}
            () = tokio::time::sleep(timeout) => {}
        }
        init = format!(
            "Init Duration: {:.2} ms\t",
            init_start.elapsed().as_secs_f64() * 1000.0
        );
    }
    let Some(bootstrap) = running.as_mut() else {
        return text(StatusCode::INTERNAL_SERVER_ERROR, "");
    };

    let started = Instant::now();
    println!("START RequestId: {id} Version: {version}");
    let (outcome_tx, outcome_rx) = oneshot::channel();
    *emulator
        .shared
        .outcome
        .lock()
        .unwrap_or_else(|e| e.into_inner()) = Some((id.clone(), outcome_tx));
    let deadline_ms = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis()
        + timeout.as_millis();
    let invocation = Invocation {
        id: id.clone(),
        payload,
        deadline_ms,
        arn: format!("arn:aws:lambda:us-east-1:012345678912:function:{name}"),
        trace_id,
        client_context,
    };
    // Delivered once the runtime asks for it: after an answer, its next `next` may still be
    // on its way, and the invocation waits for it (within the function's timeout).
    let shared = &emulator.shared;
    let outcome = async move {
        loop {
            let notified = shared.next_ready.notified();
            let next = shared.next.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(next) = next {
                let _ = next.send(invocation);
                break;
            }
            notified.await;
        }
        outcome_rx.await
    };
    let mut exited = bootstrap.exited.clone();
    let report = |started: Instant| {
        let ms = started.elapsed().min(timeout).as_secs_f64() * 1000.0;
        println!("END RequestId: {id}");
        println!(
            "REPORT RequestId: {id}\t{init}Duration: {ms:.2} ms\tBilled Duration: {:.0} ms\tMemory Size: {memory} MB\tMax Memory Used: {memory} MB\t",
            ms.ceil()
        );
    };
    let remaining = timeout.saturating_sub(started.elapsed());
    enum Done {
        Outcome(Result<Outcome, oneshot::error::RecvError>),
        Exited(String),
        TimedOut,
    }
    let done = tokio::select! {
        outcome = outcome => Done::Outcome(outcome),
        reason = exited.wait_for(Option::is_some) => {
            Done::Exited(reason.ok().and_then(|r| r.clone()).unwrap_or_default())
        }
        () = tokio::time::sleep(remaining) => Done::TimedOut,
    };
    report(started);
    match done {
        Done::Outcome(Ok(Outcome::Response(body) | Outcome::Error(body))) => {
            text(StatusCode::OK, body)
        }
        Done::Outcome(Err(_)) => text(StatusCode::INTERNAL_SERVER_ERROR, ""),
        Done::Exited(reason) => {
            *running = None;
            take(&emulator.shared.outcome);
            let doc = serde_json::json!({
                "errorMessage": format!("RequestId: {id} Error: Runtime exited with error: {reason}"),
                "errorType": "Runtime.ExitError",
            });
            text(StatusCode::BAD_GATEWAY, doc.to_string())
        }
        Done::TimedOut => {
            if let Some(kill) = bootstrap.kill.take() {
                let _ = kill.send(());
            }
            let mut gone = bootstrap.exited.clone();
            let _ = gone.changed().await;
            *running = None;
            take(&emulator.shared.outcome);
            take(&emulator.shared.next);
            text(
                StatusCode::OK,
                format!("Task timed out after {timeout_s}.00 seconds"),
            )
        }
    }
}

/// Empties a slot.
fn take<T>(slot: &Mutex<Option<T>>) {
    slot.lock().unwrap_or_else(|e| e.into_inner()).take();
}
