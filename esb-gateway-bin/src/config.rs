//! The gateway's typed configuration, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use esb_router::{Auth, Config};
use esb_runtime::Capabilities;

use crate::error::{Problem, Problems};
use crate::logs::LogTail;

/// Shortest HS256 secret accepted, as the earlier ESB required.
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Everything the gateway needs besides its runtimes.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// Functions and routes.
    pub functions: Config,
    /// Where to listen.
    pub listen: SocketAddr,
    /// HTTPS settings; plain HTTP when `None`.
    pub tls: Option<TlsConfig>,
    /// Token issuing and checking.
    pub auth: AuthConfig,
    /// Who may call the Lambda Invoke API.
    pub invoke_api: InvokeApiAccess,
    /// Request and connection limits.
    pub limits: Limits,
    /// `AWS_REGION` of the functions and the region in their ARNs.
    pub region: String,
    /// How asynchronous (`Event`) invocations are retried (Lambda's delays by default).
    pub event_retry: EventRetry,
    /// The logs of invocations that ask for `X-Amz-Log-Type: Tail`: give the same handle to
    /// the runtimes as (part of) their log sink, else those answers carry only the `START` /
    /// `END` / `REPORT` lines.
    pub log_tail: LogTail,
    /// The `esb.owner` label of this gateway's sandboxes (agent mode): a restarted gateway of
    /// the same owner adopts them warm; sandboxes of other owners are never touched.
    pub owner: Option<String>,
    /// What functions are told besides the services: the gateway's URL as they reach it,
    /// `VICTORIALOGS_URL`, endpoint rewrites.
    pub wiring: crate::services::FunctionWiring,
}

impl GatewayConfig {
    /// A plain-HTTP config on `listen` with no auth secret and the default limits.
    pub fn new(functions: Config, listen: SocketAddr) -> Self {
        Self {
            functions,
            listen,
            tls: None,
            auth: AuthConfig::default(),
            invoke_api: InvokeApiAccess::Open,
            limits: Limits::default(),
            region: "us-east-1".into(),
            event_retry: EventRetry::default(),
            log_tail: LogTail::new(),
            owner: None,
            wiring: crate::services::FunctionWiring::default(),
        }
    }

    /// Sets what functions are told besides the services (see [`GatewayConfig::wiring`]).
    pub fn wiring(mut self, wiring: crate::services::FunctionWiring) -> Self {
        self.wiring = wiring;
        self
    }

    /// Owns its sandboxes under this name (see [`GatewayConfig::owner`]).
    pub fn owner(mut self, owner: impl Into<String>) -> Self {
        self.owner = Some(owner.into());
        self
    }

    /// Serves HTTPS with these settings.
    pub fn tls(mut self, tls: TlsConfig) -> Self {
        self.tls = Some(tls);
        self
    }

    /// Token issuing and checking.
    pub fn auth(mut self, auth: AuthConfig) -> Self {
        self.auth = auth;
        self
    }

    /// Who may call the Lambda Invoke API.
    pub fn invoke_api(mut self, access: InvokeApiAccess) -> Self {
        self.invoke_api = access;
        self
    }

    /// Request and connection limits.
    pub fn limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// How asynchronous (`Event`) invocations are retried.
    pub fn event_retry(mut self, retry: EventRetry) -> Self {
        self.event_retry = retry;
        self
    }

    /// `AWS_REGION` of the functions.
    pub fn region(mut self, region: impl Into<String>) -> Self {
        self.region = region.into();
        self
    }

    /// Checks what the router cannot; every problem is listed in one [`Problems`].
    ///
    /// `backend` is what the chosen backend can do: each function must name what it makes
    /// sandboxes from (an `image` where it runs images, else a `command`). `None` accepts
    /// either (remote agents: the agent's backend decides).
    pub fn validate(&self, backend: Option<&Capabilities>) -> Result<(), Problems> {
        let mut problems = Vec::new();
        self.check_jwt_secret(&mut problems);
        self.check_login(&mut problems);
        self.check_auth_endpoint(&mut problems);
        if let Some(backend) = backend {
            self.check_sources(backend, &mut problems);
        }
        self.check_pools(&mut problems);
        self.limits.check(&mut problems);
        self.event_retry.check(&mut problems);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Problems(problems))
        }
    }

    /// The secret is long enough, or, when unset, nothing needs it.
    fn check_jwt_secret(&self, problems: &mut Vec<Problem>) {
        match &self.auth.jwt_secret {
            Some(secret) if secret.len() < MIN_JWT_SECRET_LEN => problems.push(Problem::new(
                JWT_SECRET,
                format!(
                    "must be at least {MIN_JWT_SECRET_LEN} characters, got {}",
                    secret.len()
                ),
            )),
            Some(_) => {}
            None => {
                let guarded: Vec<String> = self
                    .functions
                    .routes
                    .iter()
                    .filter(|r| r.auth == Auth::Jwt)
                    .map(|r| format!("{} {}", r.method, r.path.as_str()))
                    .collect();
                if !guarded.is_empty() {
                    problems.push(Problem::new(
                        JWT_SECRET,
                        format!(
                            "not set, but these routes need a token (add `auth: none` to open them): {}",
                            guarded.join(", ")
                        ),
                    ));
                }
                if self.invoke_api == InvokeApiAccess::Jwt {
                    problems.push(Problem::new(
                        JWT_SECRET,
                        "not set, but the Invoke API is open to token holders only",
                    ));
                }
            }
        }
    }

    /// The auth endpoint's key, user and password come together, with a secret to sign.
    fn check_login(&self, problems: &mut Vec<Problem>) {
        let auth = &self.auth;
        let login = [
            ("auth.api_key", auth.api_key.is_some()),
            ("auth.user", auth.user.is_some()),
            ("auth.password", auth.password.is_some()),
        ];
        if !login.iter().any(|(_, set)| *set) {
            return;
        }
        for (field, set) in login {
            if !set {
                problems.push(Problem::new(
                    field,
                    "not set, but the auth endpoint needs the API key, the user and the password together",
                ));
            }
        }
        if auth.jwt_secret.is_none() {
            problems.push(Problem::new(
                JWT_SECRET,
                "not set, but the auth endpoint signs tokens with it",
            ));
        }
    }

    /// The endpoint's path and the tokens' lifetime.
    fn check_auth_endpoint(&self, problems: &mut Vec<Problem>) {
        let auth = &self.auth;
        if !auth.endpoint_path.starts_with('/') {
            problems.push(Problem::new(
                "auth.endpoint_path",
                format!("must start with '/', got {:?}", auth.endpoint_path),
            ));
        }
        if auth.token_ttl.is_zero() {
            problems.push(Problem::new("auth.token_ttl", "must be at least 1 second"));
        }
    }

    /// Every function names what `backend` makes sandboxes from.
    /// Each function's pool settings, with the pool's defaults applied, as the pool will check them.
    fn check_pools(&self, problems: &mut Vec<Problem>) {
        for function in self.functions.functions.values() {
            if let Err(esb_pool::PoolError::InvalidConfig { field, reason, .. }) =
                crate::pool_config(function).validate()
            {
                problems.push(Problem::new(
                    format!("functions.{}.scaling.{field}", function.name),
                    reason,
                ));
            }
        }
    }

    fn check_sources(&self, backend: &Capabilities, problems: &mut Vec<Problem>) {
        for function in self.functions.functions.values() {
            if function.invoke == esb_runtime::InvokeMode::Rie && !backend.network {
                problems.push(Problem::new(
                    format!("functions.{}.invoke", function.name),
                    format!(
                        "rie: the emulator is reached over the sandbox's network, and the {} runtime has none configured",
                        backend.backend
                    ),
                ));
            }
        }
        let Some(needed) = needed_source(backend) else {
            return;
        };
        for function in self.functions.functions.values() {
            let named = match needed {
                Source::Image => function.image.is_some(),
                Source::Command => function.command.is_some(),
            };
            if !named {
                problems.push(Problem::new(
                    format!("functions.{}", function.name),
                    format!(
                        "{}: required by the {} runtime",
                        needed.field(),
                        backend.backend
                    ),
                ));
            } else if needed == Source::Command
                && let Some(message) = function.command.as_deref().and_then(|c| {
                    missing_program(
                        c.first()?,
                        function.environment.get("PATH").map(String::as_str),
                    )
                })
            {
                problems.push(Problem::new(
                    format!("functions.{}.command", function.name),
                    message,
                ));
            }
        }
    }
}

/// Why `program` (a command's first word) cannot be started on this host, if it cannot:
/// a path that is no executable file, or a name found on no directory of `path` (the
/// function's own `PATH`, else this process's).
fn missing_program(program: &str, path: Option<&str>) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |candidate: &std::path::Path| {
        std::fs::metadata(candidate)
            .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if program.contains('/') {
        let candidate = std::path::Path::new(program);
        return match std::fs::metadata(candidate) {
            Err(err) => Some(format!("{program:?} cannot be started: {err}")),
            Ok(_) if !executable(candidate) => Some(format!(
                "{program:?} cannot be started: not an executable file"
            )),
            Ok(_) => None,
        };
    }
    let host_path = std::env::var("PATH").unwrap_or_default();
    let path = path.unwrap_or(&host_path);
    let found = std::env::split_paths(path).any(|dir| executable(&dir.join(program)));
    (!found).then(|| format!("{program:?} cannot be started: not found on PATH ({path})"))
}

/// The field of the JWT secret.
const JWT_SECRET: &str = "auth.jwt_secret";

/// What a function makes its sandboxes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    Image,
    Command,
}

impl Source {
    /// The function's field that names it.
    fn field(self) -> &'static str {
        match self {
            Source::Image => "image",
            Source::Command => "command",
        }
    }
}

/// What a function must name for `backend`: an image where it makes sandboxes from images
/// (a command then only overrides the entry point), else a command; `None` when it makes
/// them from neither (nothing to check).
fn needed_source(backend: &Capabilities) -> Option<Source> {
    if backend.images {
        Some(Source::Image)
    } else if backend.commands {
        Some(Source::Command)
    } else {
        None
    }
}

/// How asynchronous (`Event`) invocations are retried, as Lambda does by default.
///
/// After a function error or timeout (the function's own error, a crash, an init failure)
/// an event is run again after `delays[0]`, then `delays[1]`, ... (the last one repeats),
/// at most the function's `MaximumRetryAttempts` times. After a throttle or a system error
/// (no sandbox could be had, the breaker is open, an agent is lost) it is run again after
/// `backoff_initial`, doubled each time up to `backoff_max`, for as long as it is younger
/// than the function's `MaximumEventAgeInSeconds`. An event that is too old, or has failed
/// its last attempt, is dropped with a WARN log and counted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventRetry {
    /// Waits before the retries after a function error: Lambda's 1 minute, then 2 minutes.
    pub delays: Vec<Duration>,
    /// First wait after a throttle or system error (Lambda: 1 second).
    pub backoff_initial: Duration,
    /// Longest wait after a throttle or system error (Lambda: 5 minutes).
    pub backoff_max: Duration,
}

impl Default for EventRetry {
    fn default() -> Self {
        Self {
            delays: vec![Duration::from_secs(60), Duration::from_secs(120)],
            backoff_initial: Duration::from_secs(1),
            backoff_max: Duration::from_secs(300),
        }
    }
}

impl EventRetry {
    /// Waits before the retries after a function error (the last one repeats).
    pub fn delays(mut self, delays: impl IntoIterator<Item = Duration>) -> Self {
        self.delays = delays.into_iter().collect();
        self
    }

    /// First and longest wait after a throttle or system error.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.backoff_initial = initial;
        self.backoff_max = max;
        self
    }

    /// The wait before retry number `retry` (1-based) after a function error.
    pub(crate) fn delay(&self, retry: u32) -> Duration {
        let index = usize::try_from(retry.saturating_sub(1)).unwrap_or(usize::MAX);
        self.delays
            .get(index)
            .or(self.delays.last())
            .copied()
            .unwrap_or_default()
    }

    /// The wait after throttle number `throttle` (1-based).
    pub(crate) fn backoff_delay(&self, throttle: u32) -> Duration {
        let factor = 2u32.saturating_pow(throttle.saturating_sub(1).min(31));
        self.backoff_initial
            .saturating_mul(factor)
            .min(self.backoff_max)
    }

    /// There is a delay to wait, and the backoff grows from above zero.
    fn check(&self, problems: &mut Vec<Problem>) {
        if self.delays.is_empty() {
            problems.push(Problem::new(
                "event_retry.delays",
                "must name at least one delay",
            ));
        }
        if self.backoff_initial.is_zero() || self.backoff_initial > self.backoff_max {
            problems.push(Problem::new(
                "event_retry.backoff_initial",
                format!(
                    "must be above 0 and at most event_retry.backoff_max ({:?}), got {:?}",
                    self.backoff_max, self.backoff_initial
                ),
            ));
        }
    }
}

/// HTTPS: certificate files or a generated self-signed certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum TlsConfig {
    /// A PEM certificate chain and its PEM private key.
    Files {
        /// The certificate chain.
        cert: PathBuf,
        /// The private key.
        key: PathBuf,
    },
    /// A certificate for `localhost` and `127.0.0.1` generated at start-up (local use only).
    SelfSigned,
}

/// Token issuing (`POST AUTH_ENDPOINT_PATH`) and checking (Bearer JWT on routes).
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthConfig {
    /// HS256 secret (`JWT_SECRET_KEY`, at least 32 characters).
    pub jwt_secret: Option<String>,
    /// The `x-api-key` the auth endpoint requires (`X_API_KEY`).
    pub api_key: Option<String>,
    /// The user the auth endpoint accepts (`AUTH_USER`).
    pub user: Option<String>,
    /// Its password (`AUTH_PASS`).
    pub password: Option<String>,
    /// Path of the auth endpoint (`AUTH_ENDPOINT_PATH`).
    pub endpoint_path: String,
    /// Lifetime of issued tokens (`JWT_EXPIRES_DELTA`, seconds).
    pub token_ttl: Duration,
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            jwt_secret: None,
            api_key: None,
            user: None,
            password: None,
            endpoint_path: "/user/auth/v1".into(),
            token_ttl: Duration::from_secs(3000),
        }
    }
}

impl AuthConfig {
    /// The HS256 secret of Bearer tokens.
    pub fn jwt_secret(mut self, secret: impl Into<String>) -> Self {
        self.jwt_secret = Some(secret.into());
        self
    }

    /// The auth endpoint: the `x-api-key` it requires, and the user and password it accepts.
    pub fn login(
        mut self,
        api_key: impl Into<String>,
        user: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        self.api_key = Some(api_key.into());
        self.user = Some(user.into());
        self.password = Some(password.into());
        self
    }

    /// Path of the auth endpoint.
    pub fn endpoint_path(mut self, path: impl Into<String>) -> Self {
        self.endpoint_path = path.into();
        self
    }

    /// Lifetime of issued tokens.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }
}

impl std::fmt::Debug for AuthConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let set = |v: &Option<String>| if v.is_some() { "<set>" } else { "<unset>" };
        f.debug_struct("AuthConfig")
            .field("jwt_secret", &set(&self.jwt_secret))
            .field("api_key", &set(&self.api_key))
            .field("user", &self.user)
            .field("password", &set(&self.password))
            .field("endpoint_path", &self.endpoint_path)
            .field("token_ttl", &self.token_ttl)
            .finish()
    }
}

/// Who may call `POST /2015-03-31/functions/{name}/invocations`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
#[non_exhaustive]
pub enum InvokeApiAccess {
    /// Anyone who reaches the gateway (AWS SDKs and the AWS CLI work unchanged).
    Open,
    /// Callers with a valid Bearer JWT.
    Jwt,
    /// Nobody: the path answers 404.
    Off,
}

/// Request and connection limits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Limits {
    /// Largest request body (Lambda's 6 MB).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Connections one client (IP address) may hold at once, at most half of
    /// `max_connections`; more from it are closed at once, so that one client cannot take
    /// every slot.
    pub max_connections_per_client: usize,
    /// How long a client may take to send a request head (from connecting, and between
    /// requests of a kept-alive connection) and to finish a TLS handshake.
    pub header_timeout: Duration,
    /// Asynchronous (`Event`) invocations held at once: waiting for a sandbox, running, or
    /// waiting for a retry (the bound of the event queue); more answer 429.
    pub event_concurrency: usize,
    /// Added to a function's queue wait and timeout to give the whole request's deadline.
    pub timeout_margin: Duration,
    /// How long shutdown waits for in-flight requests.
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_body_bytes: esb_runtime::MAX_PAYLOAD_BYTES,
            max_header_bytes: 64 * 1024,
            max_connections: 10_000,
            max_connections_per_client: 1_000,
            header_timeout: Duration::from_secs(10),
            event_concurrency: 64,
            timeout_margin: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}

impl Limits {
    /// Largest request body.
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Largest request head.
    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    /// Connections served at once.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }

    /// Connections one client (IP address) may hold at once.
    pub fn max_connections_per_client(mut self, connections: usize) -> Self {
        self.max_connections_per_client = connections;
        self
    }

    /// How long a client may take to send a request head.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = timeout;
        self
    }

    /// The connections one client may hold: `max_connections_per_client`, at most half of
    /// `max_connections` (at least one).
    pub fn per_client_cap(&self) -> usize {
        self.max_connections_per_client
            .min(self.max_connections / 2)
            .max(1)
    }

    /// Asynchronous (`Event`) invocations held at once (the bound of the event queue).
    pub fn event_concurrency(mut self, invocations: usize) -> Self {
        self.event_concurrency = invocations;
        self
    }

    /// Added to a function's queue wait and timeout to give the whole request's deadline.
    pub fn timeout_margin(mut self, margin: Duration) -> Self {
        self.timeout_margin = margin;
        self
    }

    /// How long shutdown waits for in-flight requests.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = grace;
        self
    }

    /// Every limit lets at least one through.
    fn check(&self, problems: &mut Vec<Problem>) {
        for (field, value) in [
            ("limits.max_connections", self.max_connections),
            (
                "limits.max_connections_per_client",
                self.max_connections_per_client,
            ),
            ("limits.event_concurrency", self.event_concurrency),
            ("limits.max_body_bytes", self.max_body_bytes),
        ] {
            if value == 0 {
                problems.push(Problem::new(field, "must be at least 1"));
            }
        }
        if self.header_timeout.is_zero() {
            problems.push(Problem::new(
                "limits.header_timeout",
                "must be above 0 seconds",
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Field by field: other crates cannot name every field of `Capabilities`.
    #[allow(clippy::field_reassign_with_default)]
    fn capabilities(images: bool, commands: bool) -> Capabilities {
        let mut capabilities = Capabilities::default();
        capabilities.images = images;
        capabilities.commands = commands;
        capabilities
    }

    #[test]
    fn a_backend_that_runs_images_needs_an_image_else_a_command() {
        assert_eq!(
            needed_source(&capabilities(true, true)),
            Some(Source::Image)
        );
        assert_eq!(
            needed_source(&capabilities(true, false)),
            Some(Source::Image)
        );
        assert_eq!(
            needed_source(&capabilities(false, true)),
            Some(Source::Command)
        );
        assert_eq!(needed_source(&capabilities(false, false)), None);
    }

    #[test]
    fn commands_that_cannot_start_are_named() {
        assert_eq!(missing_program("/bin/sh", None), None);
        assert_eq!(missing_program("sh", Some("/usr/bin:/bin")), None);
        let absent = missing_program("/nonexistent/bootstrap", None).unwrap();
        assert!(absent.contains("\"/nonexistent/bootstrap\""), "{absent}");
        let plain = tempfile::NamedTempFile::new().unwrap();
        let not_executable = missing_program(plain.path().to_str().unwrap(), None).unwrap();
        assert!(
            not_executable.contains("not an executable file"),
            "{not_executable}"
        );
        let not_on_path = missing_program("esb-no-such-program", Some("/bin")).unwrap();
        assert!(
            not_on_path.contains("not found on PATH (/bin)"),
            "{not_on_path}"
        );
    }

    #[test]
    fn event_retries_wait_as_lambda_does_by_default() {
        let retry = EventRetry::default();
        assert_eq!(retry.delay(1), Duration::from_secs(60));
        assert_eq!(retry.delay(2), Duration::from_secs(120));
        assert_eq!(retry.delay(3), Duration::from_secs(120));
        let backoff: Vec<u64> = (1..=11).map(|n| retry.backoff_delay(n).as_secs()).collect();
        assert_eq!(backoff, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300]);
        assert_eq!(retry.backoff_delay(u32::MAX), Duration::from_secs(300));
        let mut problems = Vec::new();
        EventRetry::default()
            .delays([])
            .backoff(Duration::ZERO, Duration::from_secs(1))
            .check(&mut problems);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(
            fields,
            ["event_retry.delays", "event_retry.backoff_initial"]
        );
    }

    #[test]
    fn zero_limits_are_problems_named_by_field() {
        let mut problems = Vec::new();
        Limits::default()
            .max_connections(0)
            .max_body_bytes(0)
            .check(&mut problems);
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["limits.max_connections", "limits.max_body_bytes"]);
    }
}
