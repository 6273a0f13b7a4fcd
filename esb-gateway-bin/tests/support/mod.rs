//! Shared helpers of the gateway's end-to-end tests: test functions, a gateway on a free
//! loopback port over the process backend, and an HTTP client.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

pub mod clients;
pub mod moto;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use esb_gateway::{AuthConfig, Gateway, GatewayConfig};
use esb_runtime::Runtime;
use esb_runtime::logs::{LogSink, NullLogSink};
use esb_runtime::process::{ProcessConfig, ProcessRuntime};

/// A JWT secret of the accepted length.
pub const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// The `lambda_http` test function (`esb-testfn/src/bin/http_fn.rs`), built once.
pub fn http_fn() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| esb_testfn::build_bin("http_fn").expect("build http_fn"))
        .clone()
}

/// The `lambda_runtime` test function (its answer is no API Gateway response).
pub fn testfn() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| esb_testfn::binary().expect("build esb-testfn"))
        .clone()
}

/// A `lambda_runtime` function answering its raw event as the body of a proxy response.
pub fn event_fn() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| esb_testfn::build_bin("event_fn").expect("build event_fn"))
        .clone()
}

/// A `lambda_runtime` Lambda authorizer (`esb-testfn/src/bin/authorizer_fn.rs`).
pub fn authorizer_fn() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| esb_testfn::build_bin("authorizer_fn").expect("build authorizer_fn"))
        .clone()
}

/// Loads functions.yml and routing.yml texts, with `${HTTP_FN}`, `${EVENT_FN}` and `${TESTFN}`
/// set, and `${AUTHORIZER_FN}` when the texts use it.
pub fn load(functions: &str, routing: &str) -> esb_router::Config {
    let http_fn = http_fn().display().to_string();
    let testfn = testfn().display().to_string();
    let event_fn = event_fn().display().to_string();
    let authorizer = functions
        .contains("${AUTHORIZER_FN}")
        .then(|| authorizer_fn().display().to_string());
    let env = move |name: &str| match name {
        "HTTP_FN" => Some(http_fn.clone()),
        "EVENT_FN" => Some(event_fn.clone()),
        "TESTFN" => Some(testfn.clone()),
        "AUTHORIZER_FN" => authorizer.clone(),
        _ => None,
    };
    esb_router::Config::from_yaml_str(functions, routing, &env).unwrap()
}

/// A config on 127.0.0.1:0 with login and token checks configured.
pub fn config(functions: &str, routing: &str) -> GatewayConfig {
    GatewayConfig::new(load(functions, routing), "127.0.0.1:0".parse().unwrap()).auth(
        AuthConfig::default()
            .jwt_secret(SECRET)
            .login("test-api-key", "alice", "wonderland"),
    )
}

/// A process runtime whose function logs go to `sink`.
pub fn process_runtime(sink: Arc<dyn LogSink>) -> Arc<dyn Runtime> {
    Arc::new(ProcessRuntime::new(ProcessConfig::default().log_sink(sink)))
}

/// Starts a gateway over one quiet process runtime.
pub async fn start(config: GatewayConfig) -> Gateway {
    Gateway::start(config, vec![process_runtime(Arc::new(NullLogSink))])
        .await
        .unwrap()
}

/// An HTTP/1.1 client that accepts the self-signed certificate.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .unwrap()
}

/// A token from the gateway's auth endpoint.
pub async fn token(gateway: &Gateway) -> String {
    let answer: serde_json::Value = client()
        .post(format!("{}/user/auth/v1", gateway.url()))
        .header("x-api-key", "test-api-key")
        .json(
            &serde_json::json!({"AuthParameters": {"USERNAME": "alice", "PASSWORD": "wonderland"}}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["AuthenticationResult"]["IdToken"]
        .as_str()
        .expect("an IdToken")
        .to_owned()
}

/// Keeps every function log line, for tests to look at.
#[derive(Default)]
pub struct CapturingSink(pub std::sync::Mutex<Vec<esb_runtime::LogLine>>);

impl LogSink for CapturingSink {
    fn log(&self, line: esb_runtime::LogLine) {
        self.0.lock().unwrap().push(line);
    }
}

impl CapturingSink {
    /// Waits (up to 10 s) for a line with this message and returns it.
    pub async fn wait_for(&self, message: &str) -> esb_runtime::LogLine {
        for _ in 0..200 {
            if let Some(line) = self.0.lock().unwrap().iter().find(|l| l.message == message) {
                return line.clone();
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        panic!("no log line {message:?}");
    }
}

/// The gateway binary, without the variables of the environment that would change it (the
/// `ESB_` ones but the containerd address the tests are given, and the auth secrets).
pub fn gateway_command() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_esb-gateway"));
    for (var, _) in std::env::vars() {
        let ours = var.starts_with("ESB_") && var != "ESB_CONTAINERD_ADDRESS";
        if ours || ["JWT_SECRET_KEY", "X_API_KEY", "AUTH_USER", "AUTH_PASS"].contains(&var.as_str())
        {
            command.env_remove(var);
        }
    }
    command
}

/// Writes `text` to `dir/name`; its path.
pub fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

/// Builds the `esb-agent` binary without containerd (no protoc needed) and returns its path.
pub fn agent_binary() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let target = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace.join("target"));
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = std::process::Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--quiet",
                "-p",
                "esb-agent-bin",
                "--no-default-features",
            ])
            .args(["--bin", "esb-agent"])
            .env("CARGO_TARGET_DIR", &target)
            .status()
            .expect("run cargo");
        assert!(status.success(), "cargo build -p esb-agent-bin failed");
        target.join("debug").join("esb-agent")
    })
    .clone()
}

/// Runs `during` while `child` runs, then collects its output (its stdout and stderr must
/// be piped); the child is killed when it has not exited `limit` after this was called.
pub fn bounded_output(
    mut child: std::process::Child,
    limit: std::time::Duration,
    during: impl FnOnce(),
) -> std::process::Output {
    use std::io::Read;
    let started = std::time::Instant::now();
    fn drain(pipe: Option<impl Read + Send + 'static>) -> std::thread::JoinHandle<Vec<u8>> {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut buf);
            }
            buf
        })
    }
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    during();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
    }
}
