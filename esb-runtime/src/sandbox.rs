//! What every local backend does the same way: the sandbox id scheme, the Lambda
//! environment, how an exit reads, the readers of a sandbox's output, and the
//! START/END/REPORT wrapper around an invocation.
//!
//! `process` and `containerd` keep only what differs between them: how a sandbox is
//! spawned, frozen, killed and measured.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::io::AsyncRead;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;

use crate::logs::{LogLine, LogSink, LogStream, TerminalLogSink};
use crate::runtime_api::{self, Broker, BrokerConfig};
use crate::{Error, InvokeRequest, InvokeResponse, Result, SandboxId, SandboxInfo, SandboxSpec};
use crate::{SandboxState, logs};

/// What Lambda tells every sandbox about where it runs, and where its log lines go: the
/// settings the local backends share.
#[derive(Clone)]
#[non_exhaustive]
pub struct LambdaSettings {
    /// `AWS_REGION` and the region in function ARNs.
    pub region: String,
    /// Account id in function ARNs.
    pub account_id: String,
    /// How long a sandbox's init may take before its first invocation fails.
    pub init_timeout: Duration,
    /// Where function log lines and START/END/REPORT lines go.
    pub log_sink: Arc<dyn LogSink>,
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` of every sandbox.
    pub credentials: FunctionCredentials,
}

/// The credentials Lambda hands a function in `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`
/// and `AWS_SESSION_TOKEN`; by default harmless local ones, so that SDKs inside functions
/// sign requests to the box's companions. The secret and the token never appear in `Debug`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionCredentials {
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
    /// `AWS_SESSION_TOKEN`, unset when `None`.
    pub session_token: Option<String>,
}

/// `AWS_ACCESS_KEY_ID` of functions unless configured.
pub const DEFAULT_ACCESS_KEY_ID: &str = "esb-local";
/// `AWS_SECRET_ACCESS_KEY` of functions unless configured.
pub const DEFAULT_SECRET_ACCESS_KEY: &str = "esb-local-secret";

impl Default for FunctionCredentials {
    fn default() -> Self {
        Self::new(DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY, None)
    }
}

impl FunctionCredentials {
    /// Credentials from a key id, its secret and an optional session token.
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Self {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token,
        }
    }

    /// The variables a sandbox gets.
    fn variables(&self) -> impl Iterator<Item = (&'static str, String)> + '_ {
        [
            ("AWS_ACCESS_KEY_ID", Some(&self.access_key_id)),
            ("AWS_SECRET_ACCESS_KEY", Some(&self.secret_access_key)),
            ("AWS_SESSION_TOKEN", self.session_token.as_ref()),
        ]
        .into_iter()
        .filter_map(|(key, value)| Some((key, value?.clone())))
    }
}

impl std::fmt::Debug for FunctionCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FunctionCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Default for LambdaSettings {
    fn default() -> Self {
        Self {
            region: "us-east-1".into(),
            account_id: "000000000000".into(),
            init_timeout: Duration::from_secs(10),
            log_sink: Arc::new(TerminalLogSink),
            credentials: FunctionCredentials::default(),
        }
    }
}

impl std::fmt::Debug for LambdaSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LambdaSettings")
            .field("region", &self.region)
            .field("account_id", &self.account_id)
            .field("init_timeout", &self.init_timeout)
            .field("credentials", &self.credentials)
            .finish_non_exhaustive()
    }
}

/// The builder setters of the [`LambdaSettings`] a backend's config holds in a field: the
/// same methods on each config.
macro_rules! lambda_setters {
    ($field:ident) => {
        /// Sets `AWS_REGION` and the region in function ARNs.
        pub fn region(mut self, region: impl Into<String>) -> Self {
            self.$field.region = region.into();
            self
        }

        /// Sets the account id in function ARNs.
        pub fn account_id(mut self, account_id: impl Into<String>) -> Self {
            self.$field.account_id = account_id.into();
            self
        }

        /// Sets how long a sandbox's init may take before its first invocation fails.
        pub fn init_timeout(mut self, timeout: std::time::Duration) -> Self {
            self.$field.init_timeout = timeout;
            self
        }

        /// Sets where function log lines and START/END/REPORT lines go.
        pub fn log_sink(mut self, sink: std::sync::Arc<dyn crate::logs::LogSink>) -> Self {
            self.$field.log_sink = sink;
            self
        }

        /// Sets the `AWS_ACCESS_KEY_ID` / `AWS_SECRET_ACCESS_KEY` / `AWS_SESSION_TOKEN` of
        /// every sandbox.
        pub fn credentials(mut self, credentials: crate::FunctionCredentials) -> Self {
            self.$field.credentials = credentials;
            self
        }
    };
}
pub(crate) use lambda_setters;

impl LambdaSettings {
    /// A broker of the Lambda Runtime API for a sandbox that starts now; logs the sandbox's
    /// `INIT_START` line, as Lambda does before any output of its init.
    pub(crate) fn broker(&self, id: &SandboxId, function_name: &str, timeout: Duration) -> Broker {
        self.log_sink.log(LogLine {
            time: SystemTime::now(),
            function_name: function_name.into(),
            sandbox_id: id.as_str().into(),
            request_id: None,
            trace_id: None,
            stream: LogStream::Platform,
            message: logs::init_start_line(&self.region),
        });
        Broker::new(BrokerConfig {
            sandbox_id: id.clone(),
            function_name: function_name.to_owned(),
            region: self.region.clone(),
            account_id: self.account_id.clone(),
            timeout,
            init_timeout: self.init_timeout,
        })
    }

    /// The variables Lambda sets in every sandbox of `spec`, credentials included; a
    /// backend adds the function's own variables after them, so those win.
    ///
    /// `task_root` is `LAMBDA_TASK_ROOT`; `runtime_api` is `AWS_LAMBDA_RUNTIME_API` when the
    /// function polls one; `backend` ends `AWS_EXECUTION_ENV` (`AWS_Lambda_esb_<backend>`).
    pub(crate) fn environment(
        &self,
        spec: &SandboxSpec,
        id: &SandboxId,
        task_root: &str,
        runtime_api: Option<&str>,
        backend: &str,
    ) -> BTreeMap<String, String> {
        let date = logs::utc_date(SystemTime::now());
        let mut env: BTreeMap<String, String> = [
            ("AWS_LAMBDA_FUNCTION_NAME", spec.function_name.clone()),
            ("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST".to_owned()),
            (
                "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
                spec.memory_mb.to_string(),
            ),
            ("AWS_REGION", self.region.clone()),
            ("AWS_DEFAULT_REGION", self.region.clone()),
            ("TZ", ":UTC".to_owned()),
            (
                "AWS_LAMBDA_LOG_GROUP_NAME",
                format!("/aws/lambda/{}", spec.function_name),
            ),
            (
                "AWS_LAMBDA_LOG_STREAM_NAME",
                format!("{date}/[$LATEST]{}", id.as_str()),
            ),
            ("LAMBDA_TASK_ROOT", task_root.to_owned()),
            ("AWS_EXECUTION_ENV", format!("AWS_Lambda_esb_{backend}")),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        if let Some(api) = runtime_api {
            env.insert("AWS_LAMBDA_RUNTIME_API".into(), api.to_owned());
        }
        env.extend(
            self.credentials
                .variables()
                .map(|(key, value)| (key.to_owned(), value)),
        );
        env
    }

    /// Writes a platform line (`START`, `END`, `REPORT`, errors) of an invocation.
    fn platform_log(
        &self,
        info: &SandboxInfo,
        request_id: &str,
        trace_id: Option<&str>,
        message: String,
    ) {
        self.log_sink.log(LogLine {
            time: SystemTime::now(),
            function_name: info.function_name.clone(),
            sandbox_id: info.id.as_str().into(),
            request_id: Some(request_id.to_owned()),
            trace_id: trace_id.map(str::to_owned),
            stream: LogStream::Platform,
            message,
        });
    }

    /// Reads a sandbox's output line by line into the log sink, each line tagged with the
    /// invocation in flight, until the output ends.
    pub(crate) fn spawn_log_reader<R>(
        &self,
        reader: R,
        stream: LogStream,
        broker: Broker,
        info: &SandboxInfo,
    ) -> JoinHandle<()>
    where
        R: AsyncRead + Unpin + Send + 'static,
    {
        let sink = self.log_sink.clone();
        let function_name = info.function_name.clone();
        let sandbox_id: std::sync::Arc<str> = info.id.as_str().into();
        tokio::spawn(async move {
            let output = broker.output().clone();
            let mut lines = crate::output::LineReader::new(output.track(reader, stream));
            while let Some(message) = lines.next_line().await {
                let (request_id, trace_id) = match broker.current_request() {
                    Some((request, trace)) => (Some(request), trace),
                    None => (None, None),
                };
                sink.log(LogLine {
                    time: SystemTime::now(),
                    function_name: function_name.clone(),
                    sandbox_id: sandbox_id.clone(),
                    request_id,
                    trace_id,
                    stream,
                    message,
                });
            }
            output.closed(stream);
        })
    }
}

/// A sandbox id from a function name: `[a-z0-9-]`, the name's first 40 characters, and a
/// random suffix that makes it unique.
pub(crate) fn new_id(function: &str) -> SandboxId {
    let mut clean = String::new();
    for c in function.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            clean.push(c);
        } else if !clean.ends_with('-') && !clean.is_empty() {
            clean.push('-');
        }
        if clean.len() >= 40 {
            break;
        }
    }
    let clean = clean.trim_end_matches('-');
    let clean = if clean.is_empty() { "fn" } else { clean };
    let random = uuid::Uuid::new_v4().simple().to_string();
    SandboxId::new(format!("{clean}-{}", &random[..12]))
}

/// How a sandbox's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this status.
    Code(i64),
    /// A signal of this number killed it.
    Signal(i32),
}

/// Lambda's wording for an exit: `Runtime exited with error: exit status 3`, or
/// `...: signal: killed`.
pub(crate) fn exit_reason(exit: Exit) -> String {
    match exit {
        Exit::Code(code) => format!("Runtime exited with error: exit status {code}"),
        Exit::Signal(signal) => {
            let name = nix::sys::signal::Signal::try_from(signal)
                .map(|s| s.as_str().trim_start_matches("SIG").to_lowercase())
                .unwrap_or_else(|_| signal.to_string());
            let name = if name == "kill" {
                "killed".to_owned()
            } else {
                name
            };
            format!("Runtime exited with error: signal: {name}")
        }
    }
}

/// Lambda's wording for a sandbox the kernel killed at its memory limit (only the
/// containerd backend enforces one).
#[cfg(feature = "containerd")]
pub(crate) fn oom_reason(memory_mb: u32) -> String {
    format!(
        "Runtime.OutOfMemory: Runtime exited with error: signal: killed (OOM: the sandbox went \
         past its memory limit of {memory_mb} MB)"
    )
}

/// Locks a mutex, taking over the data of a poisoned one.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Serves the Lambda Runtime API of one sandbox on `listener` until the returned sender
/// is used or dropped.
#[cfg_attr(not(feature = "containerd"), allow(dead_code))]
pub(crate) fn serve_runtime_api(
    listener: TcpListener,
    broker: Broker,
) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(runtime_api::serve(listener, broker, async move {
        let _ = stop_rx.await;
    }));
    (stop_tx, server)
}

/// What every local sandbox has, whatever runs it.
pub(crate) struct Core {
    /// The sandbox as `list` shows it (its state aside).
    pub(crate) info: SandboxInfo,
    /// Its memory size, for the REPORT line.
    pub(crate) memory_mb: u32,
    /// The Runtime API broker of its invocations.
    pub(crate) broker: Broker,
    /// Frozen by `pause`.
    pub(crate) paused: AtomicBool,
    /// The reason it exited, once it has.
    pub(crate) exited: watch::Receiver<Option<String>>,
    /// Stops its Runtime API server (the containerd backend's; a process sandbox's
    /// registration with the shared listener is its own).
    #[cfg_attr(not(feature = "containerd"), allow(dead_code))]
    stop_server: Mutex<Option<oneshot::Sender<()>>>,
    /// Its function polls the Runtime API (not an emulator's HTTP endpoint).
    runtime_api: bool,
}

/// What [`Core::invoke`] does with an invocation of a paused sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WhenPaused {
    /// Fail it at once with [`Error::Paused`].
    Reject,
    /// Let it wait: the sandbox answers once resumed.
    #[cfg_attr(not(feature = "process"), allow(dead_code))]
    Wait,
}

impl Core {
    /// A running sandbox.
    pub(crate) fn new(
        info: SandboxInfo,
        memory_mb: u32,
        broker: Broker,
        exited: watch::Receiver<Option<String>>,
        stop_server: Option<oneshot::Sender<()>>,
    ) -> Self {
        Self {
            info,
            memory_mb,
            broker,
            paused: AtomicBool::new(false),
            exited,
            stop_server: Mutex::new(stop_server),
            runtime_api: true,
        }
    }

    /// Says whether its function polls the Runtime API (the default); one that does not
    /// has no init for an invocation to wait for.
    #[cfg_attr(not(feature = "containerd"), allow(dead_code))]
    pub(crate) fn runtime_api(mut self, runtime_api: bool) -> Self {
        self.runtime_api = runtime_api;
        self
    }

    /// Its state now.
    pub(crate) fn state(&self) -> SandboxState {
        if self.exited.borrow().is_some() {
            SandboxState::Stopped
        } else if self.paused.load(Ordering::Acquire) {
            SandboxState::Paused
        } else {
            SandboxState::Running
        }
    }

    /// True once its process or task has exited.
    #[cfg_attr(not(feature = "process"), allow(dead_code))]
    pub(crate) fn has_exited(&self) -> bool {
        self.exited.borrow().is_some()
    }

    /// Records a pause or a resume.
    pub(crate) fn set_paused(&self, paused: bool) {
        self.paused.store(paused, Ordering::Release);
    }

    /// Its listing, with its state now.
    #[cfg_attr(not(feature = "process"), allow(dead_code))]
    pub(crate) fn listing(&self) -> SandboxInfo {
        SandboxInfo {
            state: self.state(),
            ..self.info.clone()
        }
    }

    /// Waits until it has exited, for at most `limit`.
    pub(crate) async fn wait_exit(&self, limit: Option<Duration>) {
        let mut exited = self.exited.clone();
        let wait = exited.wait_for(Option::is_some);
        match limit {
            Some(limit) => {
                let _ = tokio::time::timeout(limit, wait).await;
            }
            None => {
                let _ = wait.await;
            }
        }
    }

    /// Stops its Runtime API server.
    #[cfg_attr(not(feature = "containerd"), allow(dead_code))]
    pub(crate) fn stop_server(&self) {
        if let Some(stop) = lock(&self.stop_server).take() {
            let _ = stop.send(());
        }
    }

    /// Runs one invocation as Lambda logs it: `START`, then `run`, then `END` and `REPORT`
    /// (with the peak memory `peak_bytes` reads), or the error and `END`. A sandbox the
    /// error leaves unusable is killed with `kill` before the error is returned.
    pub(crate) async fn invoke<Run, Kill>(
        &self,
        lambda: &LambdaSettings,
        when_paused: WhenPaused,
        request: InvokeRequest,
        run: impl FnOnce(InvokeRequest) -> Run,
        peak_bytes: impl FnOnce() -> u64,
        kill: impl FnOnce() -> Kill,
    ) -> Result<InvokeResponse>
    where
        Run: Future<Output = Result<InvokeResponse>>,
        Kill: Future<Output = ()>,
    {
        if when_paused == WhenPaused::Reject && self.paused.load(Ordering::Acquire) {
            return Err(Error::Paused(self.info.id.clone()));
        }
        let request_id = request.request_id.clone();
        // A runtime that exited while idle never sees the invocation: no START, and the
        // caller may run it elsewhere.
        if let Some(err) = self.broker.exited_idle(&request_id) {
            kill().await;
            return Err(err);
        }
        // A new sandbox's init output comes before its first START, as on Lambda.
        if self.runtime_api {
            self.broker.wait_init().await;
            self.broker.output().settle().await;
        }
        let xray = request.trace_id.as_deref().and_then(logs::xray_report);
        let trace_id = request.trace_id.clone();
        let log =
            |message| lambda.platform_log(&self.info, &request_id, trace_id.as_deref(), message);
        log(format!("START RequestId: {request_id} Version: $LATEST"));
        let result = run(request).await;
        // The lines the function wrote before its answer come before END, as on Lambda.
        self.broker.output().settle().await;
        match result {
            Ok(mut response) => {
                response.max_memory_used_mb = (peak_bytes() / (1024 * 1024)).max(1);
                log(format!("END RequestId: {request_id}"));
                let mut report = logs::report_line(&request_id, &response, self.memory_mb);
                if let Some(xray) = xray {
                    report.push('\t');
                    report.push_str(&xray);
                }
                log(report);
                Ok(response)
            }
            Err(err) => {
                match &err {
                    // Lambda's two lines for a runtime that exited.
                    Error::SandboxLost { reason, .. } => {
                        log(format!("RequestId: {request_id} Error: {reason}"));
                        log(err.lambda_error_type().to_owned());
                    }
                    _ => log(format!("{request_id} Error: {err}")),
                }
                log(format!("END RequestId: {request_id}"));
                if err.is_sandbox_fatal() {
                    kill().await;
                }
                Err(err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_sanitized_and_unique() {
        let a = new_id("My_Function.v2--x");
        let b = new_id("My_Function.v2--x");
        assert_ne!(a, b);
        assert!(a.as_str().starts_with("my-function-v2-x-"), "{a}");
        assert!(
            a.as_str()
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        assert!(new_id("___").as_str().starts_with("fn-"));
        assert!(new_id(&"x".repeat(100)).as_str().len() <= 53);
    }

    #[test]
    fn exits_read_as_lambda_writes_them() {
        assert_eq!(
            exit_reason(Exit::Signal(9)),
            "Runtime exited with error: signal: killed"
        );
        assert_eq!(
            exit_reason(Exit::Signal(15)),
            "Runtime exited with error: signal: term"
        );
        assert_eq!(
            exit_reason(Exit::Code(3)),
            "Runtime exited with error: exit status 3"
        );
    }

    #[cfg(feature = "containerd")]
    #[test]
    fn oom_kills_name_the_limit() {
        assert!(oom_reason(128).contains("OOM") && oom_reason(128).contains("128 MB"));
    }

    #[test]
    fn the_lambda_environment_names_the_sandbox() {
        let lambda = LambdaSettings {
            region: "eu-west-1".into(),
            ..LambdaSettings::default()
        };
        let spec = SandboxSpec::new("f").memory_mb(256);
        let id = SandboxId::new("f-1");
        let env = lambda.environment(&spec, &id, "/var/task", Some("127.0.0.1:9001"), "x");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
        assert_eq!(env["AWS_REGION"], "eu-west-1");
        assert_eq!(env["AWS_EXECUTION_ENV"], "AWS_Lambda_esb_x");
        assert_eq!(env["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
        assert!(env["AWS_LAMBDA_LOG_STREAM_NAME"].ends_with("/[$LATEST]f-1"));
        let without = lambda.environment(&spec, &id, "/var/task", None, "x");
        assert!(!without.contains_key("AWS_LAMBDA_RUNTIME_API"));
    }
}
