//! A Lambda function built with the official `lambda_runtime` crate, driven by its event,
//! for ESB's tests, examples and benches; and [`binary`] to build it from a test.
//!
//! The event is a JSON object; every key is optional and they apply in this order:
//! `count_file` (append the request id to that file as a line) with `fail_first` (fail the
//! first N runs counted in that file with `Test.Retry`), `print` (array of lines written to stdout, `{request_id}` replaced by the invocation's), `stderr` (array of lines written to stderr, the same),
//! `raw` (array of bytes written to stdout as they are, e.g. invalid UTF-8), `spew`
//! (`{"bytes": N, "line_bytes": M}`: N bytes of `x` to stdout, a newline after every M, none
//! when M is 0 or absent),
//! `alloc_mb` (allocate and touch that many MB), `sleep_ms`, `exit` (exit with that code),
//! `exit_after_ms` (answer, then exit with status 0 that many ms later, idle), `abort` (abort the process, as a
//! panic does under `panic = "abort"`),
//! `panic` (panic with that message), `error` (`{"type":..,"message":..}` returned as the
//! handler's error; through an API Gateway route, `?error=TYPE` does the same), `http` (array of
//! `{"method", "url_env", "path", "headers": {..}, "body"}`: plain unsigned HTTP/1.0 requests to
//! the `http://` URL held by the variable `url_env`, plus `path`; their `{"url", "status",
//! "body"}` or `{"url", "error"}` are answered under `http`). Otherwise the answer is
//! `{"echo": <event>, "context": {...}, "env": {...}, "pid": N, "cpus": N}`; `context.client_context`
//! is the client context the runtime parsed (`custom`, `environment`, `client`), or null.

pub mod limits;
pub mod noop;
#[cfg(feature = "oci")]
pub mod oci;
pub mod ports;
pub mod rie;

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

/// The Lambda variables the function reports back under `env`.
pub const REPORTED_ENV: &[&str] = &[
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_REGION",
    "TZ",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "LAMBDA_TASK_ROOT",
    "AWS_LAMBDA_RUNTIME_API",
    "ESB_TEST_VAR",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "LANG",
    "HOME",
    "RUST_BACKTRACE",
    "RUST_LOG",
];

/// The handler: see the crate docs for what the event can ask.
pub async fn handler(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    let (payload, context) = event.into_parts();
    if let Some(path) = payload.get("count_file").and_then(Value::as_str) {
        let runs = count_run(path, &context.request_id).map_err(|err| Diagnostic {
            error_type: "Test.CountFile".into(),
            error_message: format!("{path}: {err}"),
        })?;
        let fail_first = payload.get("fail_first").and_then(Value::as_u64);
        if fail_first.is_some_and(|n| runs <= n) {
            return Err(Diagnostic {
                error_type: "Test.Retry".into(),
                error_message: format!("run {runs} fails"),
            });
        }
    }
    for (key, to_stderr) in [("print", false), ("stderr", true)] {
        if let Some(lines) = payload.get(key).and_then(Value::as_array) {
            for line in lines {
                let text = line
                    .as_str()
                    .map(|text| text.replace("{request_id}", &context.request_id))
                    .unwrap_or(line.to_string());
                if to_stderr {
                    eprintln!("{text}");
                } else {
                    println!("{text}");
                }
            }
        }
    }
    write_raw(&payload).map_err(|err| Diagnostic {
        error_type: "Test.Write".into(),
        error_message: err.to_string(),
    })?;
    let mut hold = Vec::new();
    if let Some(mb) = payload.get("alloc_mb").and_then(Value::as_u64) {
        for _ in 0..mb {
            hold.push(vec![1u8; 1024 * 1024]);
        }
    }
    if let Some(ms) = payload.get("sleep_ms").and_then(Value::as_u64) {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(code) = payload.get("exit").and_then(Value::as_i64) {
        std::process::exit(i32::try_from(code).unwrap_or(1));
    }
    if let Some(ms) = payload.get("exit_after_ms").and_then(Value::as_u64) {
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(ms));
            std::process::exit(0);
        });
    }
    if payload.get("abort").is_some() {
        std::process::abort();
    }
    if let Some(message) = payload.get("panic") {
        panic!("{}", message.as_str().unwrap_or("panic requested"));
    }
    // Through an API Gateway route: `?error=TYPE` fails the same way.
    if let Some(kind) = payload["queryStringParameters"]["error"].as_str() {
        return Err(Diagnostic {
            error_type: kind.to_owned(),
            error_message: "error requested".to_owned(),
        });
    }
    if let Some(err) = payload.get("error") {
        return Err(Diagnostic {
            error_type: err["type"].as_str().unwrap_or("TestError").to_owned(),
            error_message: err["message"]
                .as_str()
                .unwrap_or("error requested")
                .to_owned(),
        });
    }
    let mut http = Vec::new();
    for request in payload
        .get("http")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
    {
        http.push(plain_http(request).await);
    }
    let env: serde_json::Map<String, Value> = REPORTED_ENV
        .iter()
        .filter_map(|key| Some((key.to_string(), Value::from(std::env::var(key).ok()?))))
        .collect();
    Ok(json!({
        "echo": payload,
        "context": {
            "request_id": context.request_id,
            "deadline_ms": context.deadline,
            "invoked_function_arn": context.invoked_function_arn,
            "trace_id": context.xray_trace_id,
            "client_context": context.client_context,
        },
        "env": env,
        "pid": std::process::id(),
        "cpus": std::thread::available_parallelism().map_or(0, |n| n.get()),
        "held_mb": hold.len(),
        "http": http,
    }))
}

/// One `http` request of the event (see the crate docs), answered as JSON.
async fn plain_http(request: &Value) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let base = request["url_env"]
        .as_str()
        .and_then(|name| std::env::var(name).ok())
        .unwrap_or_default();
    let url = format!("{base}{}", request["path"].as_str().unwrap_or("/"));
    let Some(rest) = url.strip_prefix("http://") else {
        return json!({"url": url, "error": "not an http:// URL"});
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let body = request["body"].as_str().unwrap_or("");
    let mut head = format!(
        "{} {path} HTTP/1.0\r\nHost: {authority}\r\nContent-Length: {}\r\n",
        request["method"].as_str().unwrap_or("GET"),
        body.len()
    );
    if let Some(headers) = request["headers"].as_object() {
        for (name, value) in headers {
            head.push_str(&format!("{name}: {}\r\n", value.as_str().unwrap_or("")));
        }
    }
    head.push_str("\r\n");
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    match tokio::time::timeout(Duration::from_secs(5), exchange).await {
        Ok(Ok(answer)) => {
            let text = String::from_utf8_lossy(&answer);
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let status = head
                .split_whitespace()
                .nth(1)
                .and_then(|code| code.parse::<u16>().ok())
                .unwrap_or(0);
            json!({"url": url, "status": status, "body": body})
        }
        Ok(Err(err)) => json!({"url": url, "error": err.to_string()}),
        Err(_) => json!({"url": url, "error": "timed out"}),
    }
}

/// The event's `raw` bytes and `spew` output, written to stdout.
fn write_raw(payload: &Value) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    if let Some(bytes) = payload.get("raw").and_then(Value::as_array) {
        let bytes: Vec<u8> = bytes
            .iter()
            .filter_map(|b| u8::try_from(b.as_u64()?).ok())
            .collect();
        out.write_all(&bytes)?;
    }
    if let Some(spew) = payload.get("spew") {
        let total = spew["bytes"].as_u64().unwrap_or(0);
        let line = spew["line_bytes"].as_u64().unwrap_or(0);
        let chunk = vec![b'x'; 64 * 1024];
        let (mut written, mut in_line) = (0u64, 0u64);
        while written < total {
            let mut n = (total - written).min(chunk.len() as u64);
            if line > 0 {
                n = n.min(line - in_line);
            }
            let n_usize = usize::try_from(n).unwrap_or(chunk.len());
            out.write_all(&chunk[..n_usize])?;
            written += n;
            in_line += n;
            if line > 0 && in_line == line {
                out.write_all(b"\n")?;
                in_line = 0;
            }
        }
    }
    out.flush()
}

/// Appends `request_id` as a line to `path`; returns the number of lines now in it.
fn count_run(path: &str, request_id: &str) -> std::io::Result<u64> {
    use std::io::Write as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    writeln!(file, "{request_id}")?;
    let text = std::fs::read_to_string(path)?;
    Ok(text.lines().count() as u64)
}

/// Runs the function against `AWS_LAMBDA_RUNTIME_API` until its sandbox is destroyed.
pub async fn serve() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handler)).await
}

/// Builds the `esb-testfn` binary with cargo (as a test runs) and returns its path.
///
/// Uses the `CARGO` and `CARGO_TARGET_DIR` that cargo gives tests; the build is cached.
pub fn binary() -> std::io::Result<PathBuf> {
    build_bin("esb-testfn")
}

/// Builds one binary of this crate and returns its path.
pub fn build_bin(name: &str) -> std::io::Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let workspace = workspace_dir();
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace.join("target"));
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args(["build", "--quiet", "-p", "esb-testfn", "--bin", name])
        .env("CARGO_TARGET_DIR", &target)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "cargo build -p esb-testfn --bin {name} failed: {status}"
        )));
    }
    Ok(target.join("debug").join(name))
}

/// The workspace root (this crate's parent directory).
fn workspace_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}
