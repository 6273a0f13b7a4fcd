//! The gateway's typed configuration, validated once at start-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use esb_router::{Auth, Config};

use crate::Error;
use crate::logs::LogTail;

/// Shortest HS256 secret accepted, as the earlier ESB required.
pub const MIN_JWT_SECRET_LEN: usize = 32;

/// Everything the gateway needs besides its runtimes.
#[derive(Clone, Debug)]
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
    /// The logs of invocations that ask for `X-Amz-Log-Type: Tail`: give the same handle to
    /// the runtimes as (part of) their log sink, else those answers carry only the `START` /
    /// `END` / `REPORT` lines.
    pub log_tail: LogTail,
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
            log_tail: LogTail::new(),
        }
    }

    /// Checks what the router cannot: every problem is listed in one [`Error::Config`].
    ///
    /// `needs` says what a function must name for the chosen backend (`command` for
    /// `process`, `image` for `containerd`).
    pub fn validate(&self, needs: FunctionSource) -> Result<(), Error> {
        let mut problems = Vec::new();
        let auth = &self.auth;
        match &auth.jwt_secret {
            Some(secret) if secret.len() < MIN_JWT_SECRET_LEN => problems.push(format!(
                "JWT_SECRET_KEY: must be at least {MIN_JWT_SECRET_LEN} characters, got {}",
                secret.len()
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
                    problems.push(format!(
                        "JWT_SECRET_KEY: not set, but these routes need a token (add `auth: none` to open them): {}",
                        guarded.join(", ")
                    ));
                }
                if self.invoke_api == InvokeApiAccess::Jwt {
                    problems.push("JWT_SECRET_KEY: not set, but --invoke-api jwt needs it".into());
                }
            }
        }
        let login = [
            ("X_API_KEY", auth.api_key.is_some()),
            ("AUTH_USER", auth.user.is_some()),
            ("AUTH_PASS", auth.password.is_some()),
        ];
        if login.iter().any(|(_, set)| *set) {
            for (name, set) in login {
                if !set {
                    problems.push(format!(
                        "{name}: not set, but the auth endpoint needs X_API_KEY, AUTH_USER and AUTH_PASS together"
                    ));
                }
            }
            if auth.jwt_secret.is_none() {
                problems.push(
                    "JWT_SECRET_KEY: not set, but the auth endpoint signs tokens with it".into(),
                );
            }
        }
        if !auth.endpoint_path.starts_with('/') {
            problems.push(format!(
                "AUTH_ENDPOINT_PATH: must start with '/', got {:?}",
                auth.endpoint_path
            ));
        }
        if auth.token_ttl.is_zero() {
            problems.push("JWT_EXPIRES_DELTA: must be at least 1 second".into());
        }
        for function in self.functions.functions.values() {
            match needs {
                FunctionSource::Command if function.command.is_none() => problems.push(format!(
                    "functions.{}: command: required by the process runtime",
                    function.name
                )),
                FunctionSource::Image if function.image.is_none() => problems.push(format!(
                    "functions.{}: image: required by the containerd runtime",
                    function.name
                )),
                _ => {}
            }
        }
        let limits = &self.limits;
        if limits.max_connections == 0 {
            problems.push("--max-connections: must be at least 1".into());
        }
        if limits.event_concurrency == 0 {
            problems.push("--event-concurrency: must be at least 1".into());
        }
        if limits.max_body_bytes == 0 {
            problems.push("--max-body-bytes: must be at least 1".into());
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::Config(problems))
        }
    }
}

/// What functions must name for the chosen backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FunctionSource {
    /// A `command` (process backend).
    Command,
    /// An `image` (containerd backend).
    Image,
    /// Either (remote agents: the agent's backend decides).
    Any,
}

/// HTTPS: certificate files or a generated self-signed certificate.
#[derive(Clone, Debug, PartialEq, Eq)]
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
pub struct Limits {
    /// Largest request body (Lambda's 6 MB).
    pub max_body_bytes: usize,
    /// Largest request head (request line and headers).
    pub max_header_bytes: usize,
    /// Connections served at once; more wait in the listen backlog.
    pub max_connections: usize,
    /// Asynchronous (`Event`) invocations in flight at once; more answer 429.
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
            event_concurrency: 64,
            timeout_margin: Duration::from_secs(2),
            shutdown_grace: Duration::from_secs(30),
        }
    }
}
