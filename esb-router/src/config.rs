//! Typed configuration: what the loaders produce and the router and gateway read.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use esb_runtime::InvokeMode;

use crate::PathTemplate;

/// Default function timeout, as AWS Lambda: 3 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default memory size in MB, as AWS Lambda.
pub const DEFAULT_MEMORY_SIZE: u32 = 128;
/// Smallest and largest memory size in MB AWS Lambda accepts.
pub const MEMORY_SIZE_RANGE: std::ops::RangeInclusive<u32> = 128..=10240;
/// Shortest and longest timeout in seconds AWS Lambda accepts.
pub const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<f64> = 1.0..=900.0;
/// Retries of an asynchronous invocation Lambda accepts (`MaximumRetryAttempts`).
pub const MAXIMUM_RETRY_ATTEMPTS_RANGE: std::ops::RangeInclusive<u32> = 0..=2;
/// Ages in seconds of an asynchronous event Lambda accepts (`MaximumEventAgeInSeconds`).
pub const MAXIMUM_EVENT_AGE_RANGE_SECS: std::ops::RangeInclusive<u64> = 60..=21_600;

/// The whole configuration: functions by name and routes in file order.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Functions by name.
    pub functions: BTreeMap<String, FunctionConfig>,
    /// Routes, in the order they were declared (the order does not affect matching).
    pub routes: Vec<RouteConfig>,
    /// Lambda authorizers by name, which routes name in [`Auth::Lambda`].
    pub authorizers: BTreeMap<String, AuthorizerConfig>,
    /// What the files ask for and ESB does not do, one entry per resource and property
    /// (the configuration still loads).
    pub warnings: Vec<crate::Problem>,
    /// Tables and buckets to create in the configured services at start (a template's
    /// resources, `resources:` of `functions.yml`).
    pub resources: crate::Resources,
    /// The companions functions are wired to (`services` of `functions.yml`).
    pub services: crate::Services,
}

/// One function: what to run and its limits.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct FunctionConfig {
    /// The function name (`AWS_LAMBDA_FUNCTION_NAME`).
    pub name: String,
    /// OCI image reference, for the containerd backend.
    pub image: Option<String>,
    /// Program and arguments, for the process backend.
    pub command: Option<Vec<String>>,
    /// A zip function's package: managed runtime, handler, code and layers.
    pub package: Option<ZipPackage>,
    /// An image function's `ImageConfig` (SAM): entry point, command, working directory.
    pub image_config: ImageConfig,
    /// EventBridge schedules that invoke it (SAM `Schedule` / `ScheduleV2` events,
    /// `events: [{schedule: ...}]` in `functions.yml`).
    pub schedules: Vec<ScheduleConfig>,
    /// Invocation timeout (default 3 s, range 1..=900 s).
    pub timeout: Duration,
    /// Memory size in MB (default 128, range 128..=10240).
    pub memory_size: u32,
    /// Environment variables: the function's own over `defaults.environment`.
    pub environment: BTreeMap<String, String>,
    /// Sandbox pool limits: the function's own fields over `defaults.scaling`.
    pub scaling: Scaling,
    /// How invocations reach the sandbox.
    pub invoke: InvokeMode,
    /// The event format its routes send, unless a route overrides it.
    pub payload_format: PayloadFormat,
    /// Retries and age limit of its asynchronous (`Event`) invocations.
    pub event_invoke: EventInvoke,
    /// Aliases it can be invoked through (`name:alias`): `aliases` in `functions.yml`,
    /// `AutoPublishAlias` in SAM. Each points to version `1`, the code as loaded.
    pub aliases: Vec<String>,
    /// Host directories bind-mounted into its sandboxes: a zip function's code and layers on
    /// a backend of images (set when it is prepared, not read from the files).
    pub mounts: Vec<esb_runtime::BindMount>,
}

impl FunctionConfig {
    /// A function with AWS Lambda's defaults and neither image nor command.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: None,
            command: None,
            package: None,
            mounts: Vec::new(),
            image_config: ImageConfig::default(),
            schedules: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            memory_size: DEFAULT_MEMORY_SIZE,
            environment: BTreeMap::new(),
            scaling: Scaling::default(),
            invoke: InvokeMode::default(),
            payload_format: PayloadFormat::default(),
            event_invoke: EventInvoke::default(),
            aliases: Vec::new(),
        }
    }
}

/// A zip function as Lambda defines it: `runtime` + `handler` + `code` (+ `layers`).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ZipPackage {
    /// The managed runtime (`python3.12`, `nodejs20.x`, `provided.al2023`).
    pub runtime: String,
    /// The handler (`app.handler`; empty for `provided.*` runtimes that name none).
    pub handler: String,
    /// The code: a directory or a `.zip` file.
    pub code: PathBuf,
    /// Layers (directories or `.zip` files), merged in order into Lambda's `/opt`, a later
    /// one winning.
    pub layers: Vec<PathBuf>,
}

impl ZipPackage {
    /// A package of `code` run by `runtime` through `handler`, without layers.
    pub fn new(
        runtime: impl Into<String>,
        handler: impl Into<String>,
        code: impl Into<PathBuf>,
    ) -> Self {
        Self {
            runtime: runtime.into(),
            handler: handler.into(),
            code: code.into(),
            layers: Vec::new(),
        }
    }
}

/// One schedule of a function: an EventBridge rule that invokes it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ScheduleConfig {
    /// The rule's name (`resources` of the Scheduled Event names it).
    pub name: String,
    /// When it fires.
    pub expression: crate::ScheduleExpression,
    /// `Enabled: false` / `State: DISABLED` keep it from firing.
    pub enabled: bool,
    /// A fixed event (JSON text) sent instead of the Scheduled Event (`Input`).
    pub input: Option<String>,
}

impl ScheduleConfig {
    /// An enabled schedule `name` firing at `expression`, sending the Scheduled Event.
    pub fn new(name: impl Into<String>, expression: crate::ScheduleExpression) -> Self {
        Self {
            name: name.into(),
            expression,
            enabled: true,
            input: None,
        }
    }
}

/// What SAM's `ImageConfig` overrides in an image's configuration.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ImageConfig {
    /// Replaces the image's `ENTRYPOINT`.
    pub entry_point: Option<Vec<String>>,
    /// Replaces the image's `CMD` (the handler, on AWS base images).
    pub command: Option<Vec<String>>,
    /// Replaces the image's working directory.
    pub working_directory: Option<String>,
}

/// How Lambda handles a function's asynchronous (`Event`) invocations: SAM
/// `EventInvokeConfig`, `event_invoke` in `functions.yml`.
///
/// The defaults are Lambda's: 2 retries after a function error or timeout, and events
/// kept for up to 6 hours.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventInvoke {
    /// Retries after a function error or timeout (`MaximumRetryAttempts`, 0..=2).
    pub maximum_retry_attempts: u32,
    /// An event not yet processed after this long is dropped (`MaximumEventAgeInSeconds`,
    /// 60..=21600 s).
    pub maximum_event_age: Duration,
}

impl Default for EventInvoke {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: 2,
            maximum_event_age: Duration::from_secs(21_600),
        }
    }
}

impl EventInvoke {
    /// Sets `maximum_retry_attempts`.
    pub fn maximum_retry_attempts(mut self, retries: u32) -> Self {
        self.maximum_retry_attempts = retries;
        self
    }

    /// Sets `maximum_event_age`.
    pub fn maximum_event_age(mut self, age: Duration) -> Self {
        self.maximum_event_age = age;
        self
    }
}

/// Sandbox pool limits of one function, as the configuration states them.
///
/// A field is `None` when neither the function nor `defaults` set it; the pool's own defaults
/// (`esb_pool::FunctionPoolConfig::new`) then apply.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Scaling {
    /// Most sandboxes at once (at least 1); `ReservedConcurrentExecutions` in SAM.
    pub max_capacity: Option<u32>,
    /// Sandboxes kept warm (at most `max_capacity`); provisioned concurrency in SAM.
    pub min_capacity: Option<u32>,
    /// An idle sandbox above `min_capacity` is destroyed after this long.
    pub idle_timeout: Option<Duration>,
    /// How long a request waits for a sandbox when all are busy.
    pub acquire_timeout: Option<Duration>,
    /// Consecutive sandbox failures that open the function's circuit breaker (0 disables it).
    pub breaker_threshold: Option<u32>,
    /// How long the breaker stays open before one request probes again.
    pub breaker_open_time: Option<Duration>,
}

impl Scaling {
    /// Sets `max_capacity`.
    pub fn max_capacity(mut self, max: u32) -> Self {
        self.max_capacity = Some(max);
        self
    }

    /// Sets `min_capacity`.
    pub fn min_capacity(mut self, min: u32) -> Self {
        self.min_capacity = Some(min);
        self
    }

    /// Sets `idle_timeout`.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Sets `acquire_timeout`.
    pub fn acquire_timeout(mut self, timeout: Duration) -> Self {
        self.acquire_timeout = Some(timeout);
        self
    }

    /// Sets `breaker_threshold`.
    pub fn breaker_threshold(mut self, failures: u32) -> Self {
        self.breaker_threshold = Some(failures);
        self
    }

    /// Sets `breaker_open_time`.
    pub fn breaker_open_time(mut self, time: Duration) -> Self {
        self.breaker_open_time = Some(time);
        self
    }

    /// Fills every field left unset from `defaults`.
    pub(crate) fn or(self, defaults: Scaling) -> Scaling {
        Scaling {
            max_capacity: self.max_capacity.or(defaults.max_capacity),
            min_capacity: self.min_capacity.or(defaults.min_capacity),
            idle_timeout: self.idle_timeout.or(defaults.idle_timeout),
            acquire_timeout: self.acquire_timeout.or(defaults.acquire_timeout),
            breaker_threshold: self.breaker_threshold.or(defaults.breaker_threshold),
            breaker_open_time: self.breaker_open_time.or(defaults.breaker_open_time),
        }
    }
}

/// API Gateway payload format of the event a route sends.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum PayloadFormat {
    /// REST API proxy event (`"1.0"`, the default).
    #[default]
    V1,
    /// HTTP API event (`"2.0"`).
    V2,
}

/// How a route authorizes its requests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Auth {
    /// A valid JWT is required; its claims reach the event (`jwt`, the default).
    #[default]
    Jwt,
    /// No authentication (`none`).
    None,
    /// The Lambda authorizer of this name decides (a key of [`Config::authorizers`]).
    Lambda(Arc<str>),
}

/// Which API Gateway flavour an authorizer or a CORS configuration behaves as.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ApiKind {
    /// A REST API (`AWS::Serverless::Api`): IAM policy answers, `403 User is not authorized
    /// to access this resource`; CORS only as the preflight answer.
    #[default]
    Rest,
    /// An HTTP API (`AWS::Serverless::HttpApi`): payload 1.0 or 2.0 authorizers, `403
    /// Forbidden`; CORS headers also on proxied answers.
    Http,
}

/// The event a Lambda authorizer receives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AuthorizerType {
    /// `{"type":"TOKEN","authorizationToken":..,"methodArn":..}` (REST APIs only).
    #[default]
    Token,
    /// The request's headers, query, path and context.
    Request,
}

/// Where a Lambda authorizer's identity comes from.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum IdentitySource {
    /// A request header (case-insensitive name, stored in lowercase).
    Header(String),
    /// A query string parameter (case-sensitive).
    Query(String),
}

impl IdentitySource {
    /// Parses `method.request.header.X`, `$request.header.X`, `method.request.querystring.x`,
    /// `$request.querystring.x`, or a bare header name.
    pub fn parse(text: &str) -> Result<Self, String> {
        let header = ["method.request.header.", "$request.header."]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix));
        let query = ["method.request.querystring.", "$request.querystring."]
            .iter()
            .find_map(|prefix| text.strip_prefix(prefix));
        let (source, name) = match (header, query) {
            (Some(name), _) => (IdentitySource::Header(name.to_ascii_lowercase()), name),
            (None, Some(name)) => (IdentitySource::Query(name.to_owned()), name),
            (None, None) if !text.starts_with('$') && !text.contains('.') => {
                (IdentitySource::Header(text.to_ascii_lowercase()), text)
            }
            (None, None) => {
                return Err(format!(
                    "identity source {text:?} is not a header ($request.header.NAME) or a query \
                     parameter ($request.querystring.NAME)"
                ));
            }
        };
        if name.is_empty() || http::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(format!(
                "identity source {text:?} names no valid header or parameter"
            ));
        }
        Ok(source)
    }
}

/// Default time an authorizer's answer is cached, as API Gateway: 300 s.
pub const DEFAULT_AUTHORIZER_TTL: Duration = Duration::from_secs(300);

/// A Lambda authorizer: the function that decides, what it receives, and for how long its
/// answer is cached.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AuthorizerConfig {
    /// The authorizer's name, as routes name it.
    pub name: String,
    /// The function it invokes (a key of [`Config::functions`]).
    pub function: String,
    /// REST or HTTP API semantics.
    pub api: ApiKind,
    /// TOKEN or REQUEST.
    pub authorizer_type: AuthorizerType,
    /// The authorizer payload format of an HTTP API authorizer (`1.0` or `2.0`); REST
    /// authorizers ignore it.
    pub payload_format: PayloadFormat,
    /// HTTP API payload 2.0: the function answers `{"isAuthorized": bool, "context": {..}}`.
    pub simple_responses: bool,
    /// Where the identity comes from; a request missing one is answered 401 without
    /// invoking the authorizer. Also the cache key.
    pub identity_sources: Vec<IdentitySource>,
    /// How long an answer is cached per identity (0: not cached).
    pub ttl: Duration,
    /// TOKEN authorizers: a regular expression the whole token must match, else 401 without
    /// invoking the authorizer (SAM `Identity.ValidationExpression`).
    pub validation_expression: Option<String>,
}

impl AuthorizerConfig {
    /// A REST TOKEN authorizer reading `Authorization`, cached for 300 s.
    pub fn new(name: impl Into<String>, function: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            function: function.into(),
            api: ApiKind::Rest,
            authorizer_type: AuthorizerType::Token,
            payload_format: PayloadFormat::V2,
            simple_responses: false,
            identity_sources: vec![IdentitySource::Header("authorization".into())],
            ttl: DEFAULT_AUTHORIZER_TTL,
            validation_expression: None,
        }
    }
}

/// CORS of an API, answered by the gateway.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct CorsConfig {
    /// REST: preflight `OPTIONS` answered 200 with the configured headers as they are;
    /// HTTP: preflight answered 204 for allowed origins, and answers get
    /// `Access-Control-Allow-Origin`.
    pub api: ApiKind,
    /// Allowed origins (`*` for any).
    pub allow_origins: Vec<String>,
    /// Allowed methods (`*` for any).
    pub allow_methods: Vec<String>,
    /// Allowed request headers.
    pub allow_headers: Vec<String>,
    /// Response headers exposed to scripts (HTTP APIs).
    pub expose_headers: Vec<String>,
    /// `Access-Control-Max-Age` in seconds.
    pub max_age: Option<u32>,
    /// `Access-Control-Allow-Credentials: true`.
    pub allow_credentials: bool,
}

impl CorsConfig {
    /// A configuration of this flavour allowing these origins, and nothing else set.
    pub fn new(api: ApiKind, allow_origins: Vec<String>) -> Self {
        Self {
            api,
            allow_origins,
            ..Self::default()
        }
    }
}

/// The method a route answers: one HTTP method or `ANY`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RouteMethod {
    /// Every method.
    Any,
    /// One method.
    Method(http::Method),
}

/// Methods a route may name besides `ANY`, as API Gateway allows.
const METHODS: [http::Method; 7] = [
    http::Method::GET,
    http::Method::POST,
    http::Method::PUT,
    http::Method::DELETE,
    http::Method::PATCH,
    http::Method::HEAD,
    http::Method::OPTIONS,
];

impl FromStr for RouteMethod {
    type Err = String;

    /// Parses `GET`, `post`, `ANY`, ... (case-insensitive).
    fn from_str(s: &str) -> Result<Self, String> {
        let upper = s.to_ascii_uppercase();
        if upper == "ANY" {
            return Ok(RouteMethod::Any);
        }
        METHODS
            .iter()
            .find(|m| m.as_str() == upper)
            .map(|m| RouteMethod::Method(m.clone()))
            .ok_or_else(|| format!("unknown method {s:?}: expected one of GET, POST, PUT, DELETE, PATCH, HEAD, OPTIONS, ANY"))
    }
}

impl fmt::Display for RouteMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RouteMethod::Any => f.write_str("ANY"),
            RouteMethod::Method(m) => f.write_str(m.as_str()),
        }
    }
}

impl fmt::Display for PayloadFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            PayloadFormat::V1 => "1.0",
            PayloadFormat::V2 => "2.0",
        })
    }
}

/// One route: a method and path template sent to a function.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct RouteConfig {
    /// The resource path template.
    pub path: PathTemplate,
    /// The method, or `ANY`.
    pub method: RouteMethod,
    /// The function it invokes.
    pub function: String,
    /// Whether a JWT is required (default: required).
    pub auth: Auth,
    /// Overrides the function's payload format.
    pub payload_format: Option<PayloadFormat>,
    /// The CORS of the route's API, if it has one.
    pub cors: Option<Arc<CorsConfig>>,
}

impl RouteConfig {
    /// A route that needs a JWT and sends the function's payload format.
    pub fn new(path: PathTemplate, method: RouteMethod, function: impl Into<String>) -> Self {
        Self {
            path,
            method,
            function: function.into(),
            auth: Auth::default(),
            payload_format: None,
            cors: None,
        }
    }

    /// Sets the CORS of the route's API.
    pub fn cors(mut self, cors: Arc<CorsConfig>) -> Self {
        self.cors = Some(cors);
        self
    }

    /// Sets `auth`.
    pub fn auth(mut self, auth: Auth) -> Self {
        self.auth = auth;
        self
    }

    /// Sets the payload format that overrides the function's.
    pub fn payload_format(mut self, format: PayloadFormat) -> Self {
        self.payload_format = Some(format);
        self
    }
}

impl Config {
    /// A configuration of these functions (by name) and routes, not yet validated.
    pub fn new(functions: BTreeMap<String, FunctionConfig>, routes: Vec<RouteConfig>) -> Self {
        Self {
            functions,
            routes,
            authorizers: BTreeMap::new(),
            warnings: Vec::new(),
            resources: crate::Resources::default(),
            services: crate::Services::default(),
        }
    }

    /// Sets the tables and buckets to create at start.
    pub fn resources(mut self, resources: crate::Resources) -> Self {
        self.resources = resources;
        self
    }

    /// Sets the companions functions are wired to.
    pub fn services(mut self, services: crate::Services) -> Self {
        self.services = services;
        self
    }

    /// Adds a Lambda authorizer, under its name.
    pub fn authorizer(mut self, authorizer: AuthorizerConfig) -> Self {
        self.authorizers.insert(authorizer.name.clone(), authorizer);
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Error;

    #[test]
    fn scaling_keeps_what_is_stated_and_fills_the_rest_from_defaults() {
        let own = Scaling::default().max_capacity(2);
        let defaults = Scaling::default()
            .max_capacity(8)
            .idle_timeout(Duration::from_secs(60));
        assert_eq!(
            own.or(defaults),
            Scaling::default()
                .max_capacity(2)
                .idle_timeout(Duration::from_secs(60))
        );
        assert_eq!(
            Scaling::default().or(Scaling::default()),
            Scaling::default()
        );
    }

    #[test]
    fn invoke_modes_are_read_by_their_names() {
        for mode in InvokeMode::ALL {
            assert_eq!(InvokeMode::from_name(mode.as_str()), Some(mode));
        }
        assert_eq!(InvokeMode::from_name("grpc"), None);
    }

    #[test]
    fn min_capacity_is_checked_only_against_a_stated_max() {
        let load = |scaling: &str| {
            Config::from_yaml_str(
                &format!("functions: {{ f: {{ command: [f], scaling: {scaling} }} }}"),
                "",
                &|_| None,
            )
        };
        assert!(load("{ min_capacity: 12 }").is_ok());
        assert!(matches!(
            load("{ min_capacity: 3, max_capacity: 2 }"),
            Err(Error::Invalid(_))
        ));
    }
}
