//! Typed configuration and the `functions.yml` / `routing.yml` loader.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use esb_runtime::InvokeMode;

use crate::error::{Problem, Report};
use crate::subst::{Env, substitute};
use crate::yaml::{self, Empty, integer, key_text, mapping, number, text, text_value, value_debug};
use crate::{Error, PathTemplate};

/// Default function timeout, as AWS Lambda: 3 seconds.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3);
/// Default memory size in MB, as AWS Lambda.
pub const DEFAULT_MEMORY_SIZE: u32 = 128;
/// Smallest and largest memory size in MB AWS Lambda accepts.
pub const MEMORY_SIZE_RANGE: std::ops::RangeInclusive<u32> = 128..=10240;
/// Shortest and longest timeout in seconds AWS Lambda accepts.
pub const TIMEOUT_RANGE_SECS: std::ops::RangeInclusive<f64> = 1.0..=900.0;

/// The whole configuration: functions by name and routes in file order.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Config {
    /// Functions by name.
    pub functions: BTreeMap<String, FunctionConfig>,
    /// Routes, in the order they were declared (the order does not affect matching).
    pub routes: Vec<RouteConfig>,
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
}

impl FunctionConfig {
    /// A function with AWS Lambda's defaults and neither image nor command.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            image: None,
            command: None,
            timeout: DEFAULT_TIMEOUT,
            memory_size: DEFAULT_MEMORY_SIZE,
            environment: BTreeMap::new(),
            scaling: Scaling::default(),
            invoke: InvokeMode::default(),
            payload_format: PayloadFormat::default(),
        }
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

    /// Fills every field left unset from `defaults`.
    pub(crate) fn or(self, defaults: Scaling) -> Scaling {
        Scaling {
            max_capacity: self.max_capacity.or(defaults.max_capacity),
            min_capacity: self.min_capacity.or(defaults.min_capacity),
            idle_timeout: self.idle_timeout.or(defaults.idle_timeout),
            acquire_timeout: self.acquire_timeout.or(defaults.acquire_timeout),
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

/// Whether a route needs a Bearer JWT.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Auth {
    /// A valid JWT is required; its claims reach the event (`jwt`, the default).
    #[default]
    Jwt,
    /// No authentication (`none`).
    None,
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
        }
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
        Self { functions, routes }
    }

    /// Loads `functions.yml` and `routing.yml`, substituting `${VAR}` from `env`, and validates them.
    ///
    /// Every problem of both files is reported at once in [`Error::Invalid`].
    pub fn load(
        functions_path: impl AsRef<Path>,
        routing_path: impl AsRef<Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        let functions_path = functions_path.as_ref();
        let routing_path = routing_path.as_ref();
        let functions_text = read(functions_path)?;
        let routing_text = read(routing_path)?;
        parse(
            &functions_path.display().to_string(),
            &functions_text,
            &routing_path.display().to_string(),
            &routing_text,
            env,
        )
    }

    /// Like [`Config::load`], from the texts of `functions.yml` and `routing.yml`.
    pub fn from_yaml_str(
        functions_yml: &str,
        routing_yml: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Error> {
        parse(
            "functions.yml",
            functions_yml,
            "routing.yml",
            routing_yml,
            env,
        )
    }
}

pub(crate) fn read(path: &Path) -> Result<String, Error> {
    std::fs::read_to_string(path).map_err(|source| Error::Read {
        path: path.to_owned(),
        source,
    })
}

fn parse(
    functions_file: &str,
    functions_text: &str,
    routing_file: &str,
    routing_text: &str,
    env: Env<'_>,
) -> Result<Config, Error> {
    let mut problems = Vec::new();
    let mut config = Config::default();

    let mut report = Report {
        file: functions_file,
        problems: &mut problems,
    };
    if let Some(root) = parse_yaml(functions_text, env, &mut report) {
        read_functions(&root, &mut report, &mut config.functions);
    }

    let mut report = Report {
        file: routing_file,
        problems: &mut problems,
    };
    let mut labels = Vec::new();
    if let Some(root) = parse_yaml(routing_text, env, &mut report) {
        read_routes(&root, &mut report, &mut config.routes, &mut labels);
    }
    check_routes(&config, &labels, routing_file, &mut problems);

    if problems.is_empty() {
        Ok(config)
    } else {
        Err(Error::Invalid(problems))
    }
}

fn parse_yaml(text: &str, env: Env<'_>, report: &mut Report<'_>) -> Option<Mapping> {
    let text = substitute(text, env, report);
    yaml::root(&text, Empty::Allowed, report)
}

fn read_functions(
    root: &Mapping,
    report: &mut Report<'_>,
    out: &mut BTreeMap<String, FunctionConfig>,
) {
    let defaults = read_defaults(root, report);
    let Some(functions) = root.get("functions") else {
        report.push("", "functions", "missing: no functions are defined");
        return;
    };
    let Some(functions) = mapping(functions, report, "functions", "") else {
        return;
    };
    for (key, value) in functions {
        let name = key_text(key);
        let item = format!("functions.{name}");
        check_function_name(&name, report, &item);
        let Some(map) = mapping(value, report, &item, "") else {
            continue;
        };
        let partial = read_partial(map, report, &item, FUNCTION_FIELDS);
        if let Some(function) = partial.under(&defaults).finish(name.clone(), report, &item) {
            out.insert(name, function);
        }
    }
}

/// Reads `defaults` and reports unknown top-level keys of `functions.yml`.
fn read_defaults(root: &Mapping, report: &mut Report<'_>) -> Partial {
    let mut defaults = Partial::default();
    for (key, value) in root {
        match key.as_str() {
            Some("defaults") => {
                if let Some(map) = mapping(value, report, "defaults", "") {
                    defaults = read_partial(map, report, "defaults", DEFAULTS_FIELDS);
                }
            }
            Some("functions") => {}
            _ => report.push(
                "",
                &key_text(key),
                "unknown top-level key: expected defaults or functions",
            ),
        }
    }
    defaults
}

/// Fields `defaults` may set.
const DEFAULTS_FIELDS: &[&str] = &[
    "environment",
    "scaling",
    "timeout",
    "memory_size",
    "invoke",
    "payload_format",
];

/// Fields a function may set.
const FUNCTION_FIELDS: &[&str] = &[
    "image",
    "command",
    "timeout",
    "memory_size",
    "environment",
    "scaling",
    "invoke",
    "payload_format",
];

/// Function names as AWS Lambda allows them: 1..=64 of letters, digits, `-` and `_`.
pub(crate) fn check_function_name(name: &str, report: &mut Report<'_>, item: &str) {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        report.push(
            item,
            "",
            "function names must be 1 to 64 ASCII letters, digits, '-' or '_'",
        );
    }
}

fn read_partial(map: &Mapping, report: &mut Report<'_>, item: &str, allowed: &[&str]) -> Partial {
    let mut p = Partial::default();
    for (key, value) in map {
        let field = key_text(key);
        if !allowed.contains(&field.as_str()) {
            report.push(
                item,
                &field,
                format!("unknown field: expected one of {}", allowed.join(", ")),
            );
            continue;
        }
        match field.as_str() {
            "image" => p.image = text(value, report, item, &field),
            "command" => p.command = read_command(value, report, item),
            "timeout" => p.timeout = read_timeout(value, report, item, &field),
            "memory_size" => p.memory_size = read_memory(value, report, item, &field),
            "environment" => {
                if let Some(env) = mapping(value, report, item, &field) {
                    p.environment = read_environment(env, report, item, &|v| text_value(v));
                }
            }
            "scaling" => {
                if let Some(scaling) = mapping(value, report, item, &field) {
                    p.scaling = read_scaling(scaling, report, item);
                }
            }
            "invoke" => {
                p.invoke = text(value, report, item, &field).and_then(|name| {
                    let mode = InvokeMode::from_name(&name);
                    if mode.is_none() {
                        report.push(item, &field, format!("{name:?} is not runtime-api or rie"));
                    }
                    mode
                });
            }
            "payload_format" => p.payload_format = read_payload_format(value, report, item, &field),
            _ => {}
        }
    }
    p
}

fn read_command(value: &Value, report: &mut Report<'_>, item: &str) -> Option<Vec<String>> {
    let command = match value {
        Value::String(s) => vec![s.clone()],
        Value::Sequence(items) => {
            let mut args = Vec::with_capacity(items.len());
            for (i, arg) in items.iter().enumerate() {
                args.push(text(arg, report, item, &format!("command[{i}]"))?);
            }
            args
        }
        _ => {
            report.push(item, "command", "expected a list of strings");
            return None;
        }
    };
    if command.first().is_none_or(String::is_empty) {
        report.push(item, "command", "must name a program");
        return None;
    }
    Some(command)
}

pub(crate) fn read_environment(
    map: &Mapping,
    report: &mut Report<'_>,
    item: &str,
    value_text: &dyn Fn(&Value) -> Option<String>,
) -> BTreeMap<String, String> {
    let mut env = BTreeMap::new();
    for (key, value) in map {
        let name = key_text(key);
        match value_text(value) {
            Some(v) => {
                env.insert(name, v);
            }
            None => report.push(
                item,
                &format!("environment.{name}"),
                "expected a string, number or boolean",
            ),
        }
    }
    env
}

fn read_scaling(map: &Mapping, report: &mut Report<'_>, item: &str) -> Scaling {
    let mut s = Scaling::default();
    for (key, value) in map {
        let name = key_text(key);
        let field = format!("scaling.{name}");
        match name.as_str() {
            "max_capacity" => s.max_capacity = read_count(value, report, item, &field, 1),
            "min_capacity" => s.min_capacity = read_count(value, report, item, &field, 0),
            "idle_timeout" => s.idle_timeout = read_duration(value, report, item, &field),
            "acquire_timeout" => s.acquire_timeout = read_duration(value, report, item, &field),
            _ => report.push(
                item,
                &field,
                "unknown field: expected one of max_capacity, min_capacity, idle_timeout, acquire_timeout",
            ),
        }
    }
    s
}

pub(crate) fn read_payload_format(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<PayloadFormat> {
    match value {
        Value::String(s) if s == "1.0" => Some(PayloadFormat::V1),
        Value::String(s) if s == "2.0" => Some(PayloadFormat::V2),
        Value::Number(n) if n.as_f64() == Some(1.0) => Some(PayloadFormat::V1),
        Value::Number(n) if n.as_f64() == Some(2.0) => Some(PayloadFormat::V2),
        _ => {
            report.push(
                item,
                field,
                format!("{} is not \"1.0\" or \"2.0\"", value_debug(value)),
            );
            None
        }
    }
}

pub(crate) fn read_timeout(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Duration> {
    let secs = number(value, report, item, field)?;
    if !TIMEOUT_RANGE_SECS.contains(&secs) {
        report.push(item, field, format!("{secs} s is outside 1..=900 seconds"));
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

pub(crate) fn read_memory(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<u32> {
    let mb = integer(value, report, item, field)?;
    match u32::try_from(mb) {
        Ok(mb) if MEMORY_SIZE_RANGE.contains(&mb) => Some(mb),
        _ => {
            report.push(item, field, format!("{mb} MB is outside 128..=10240 MB"));
            None
        }
    }
}

pub(crate) fn read_count(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
    min: i64,
) -> Option<u32> {
    let n = integer(value, report, item, field)?;
    match u32::try_from(n) {
        Ok(n) if i64::from(n) >= min => Some(n),
        _ => {
            report.push(item, field, format!("{n} must be at least {min}"));
            None
        }
    }
}

fn read_duration(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Duration> {
    let secs = number(value, report, item, field)?;
    if !(secs > 0.0 && secs <= 31_536_000.0) {
        report.push(
            item,
            field,
            format!("{secs} s must be above 0 (and at most a year)"),
        );
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// Function fields as read, before defaults are applied.
#[derive(Clone, Debug, Default)]
pub(crate) struct Partial {
    pub(crate) image: Option<String>,
    pub(crate) command: Option<Vec<String>>,
    pub(crate) timeout: Option<Duration>,
    pub(crate) memory_size: Option<u32>,
    pub(crate) environment: BTreeMap<String, String>,
    pub(crate) scaling: Scaling,
    pub(crate) invoke: Option<InvokeMode>,
    pub(crate) payload_format: Option<PayloadFormat>,
}

impl Partial {
    /// Fills every field left unset from `defaults`; environments merge, the function's keys win.
    pub(crate) fn under(mut self, defaults: &Partial) -> Partial {
        self.image = self.image.or_else(|| defaults.image.clone());
        self.command = self.command.or_else(|| defaults.command.clone());
        self.timeout = self.timeout.or(defaults.timeout);
        self.memory_size = self.memory_size.or(defaults.memory_size);
        for (k, v) in &defaults.environment {
            self.environment
                .entry(k.clone())
                .or_insert_with(|| v.clone());
        }
        self.scaling = self.scaling.or(defaults.scaling);
        self.invoke = self.invoke.or(defaults.invoke);
        self.payload_format = self.payload_format.or(defaults.payload_format);
        self
    }

    /// Applies the built-in defaults and checks what spans fields.
    pub(crate) fn finish(
        self,
        name: String,
        report: &mut Report<'_>,
        item: &str,
    ) -> Option<FunctionConfig> {
        let scaling = self.scaling;
        let mut ok = true;
        if let (Some(min), Some(max)) = (scaling.min_capacity, scaling.max_capacity)
            && min > max
        {
            report.push(
                item,
                "scaling.min_capacity",
                format!("min_capacity {min} is above max_capacity {max}"),
            );
            ok = false;
        }
        if self.image.is_none() && self.command.is_none() {
            report.push(
                item,
                "",
                "needs an image (containerd backend) or a command (process backend)",
            );
            ok = false;
        }
        ok.then(|| FunctionConfig {
            name,
            image: self.image,
            command: self.command,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            memory_size: self.memory_size.unwrap_or(DEFAULT_MEMORY_SIZE),
            environment: self.environment,
            scaling,
            invoke: self.invoke.unwrap_or_default(),
            payload_format: self.payload_format.unwrap_or_default(),
        })
    }
}

fn read_routes(
    root: &Mapping,
    report: &mut Report<'_>,
    out: &mut Vec<RouteConfig>,
    labels: &mut Vec<String>,
) {
    for (key, _) in root {
        if key.as_str() != Some("routes") {
            report.push("", &key_text(key), "unknown top-level key: expected routes");
        }
    }
    let routes = match root.get("routes") {
        None | Some(Value::Null) => return,
        Some(Value::Sequence(routes)) => routes,
        Some(_) => {
            report.push("", "routes", "expected a list of routes");
            return;
        }
    };
    for (i, value) in routes.iter().enumerate() {
        let item = format!("routes[{i}]");
        let Some(map) = mapping(value, report, &item, "") else {
            continue;
        };
        if let Some((route, label)) = read_route(map, report, &item) {
            out.push(route);
            labels.push(label);
        }
    }
}

/// Reads one entry of `routes`: the route and its label for later problems (`routes[2] (GET /x)`).
fn read_route(map: &Mapping, report: &mut Report<'_>, item: &str) -> Option<(RouteConfig, String)> {
    let (mut path, mut method, mut function) = (None, None, None);
    let (mut auth, mut payload_format, mut ok) = (Auth::Jwt, None, true);
    for (key, value) in map {
        let field = key_text(key);
        match field.as_str() {
            "path" => path = text(value, report, item, &field),
            "method" => method = text(value, report, item, &field),
            "function" => function = text(value, report, item, &field),
            "auth" => match read_auth(value, report, item, &field) {
                Some(a) => auth = a,
                None => ok = false,
            },
            "payload_format" => {
                payload_format = read_payload_format(value, report, item, &field);
                ok &= payload_format.is_some();
            }
            _ => {
                report.push(
                    item,
                    &field,
                    "unknown field: expected path, method, function, auth or payload_format",
                );
            }
        }
    }
    let label = format!(
        "{item} ({} {})",
        method.as_deref().unwrap_or("?"),
        path.as_deref().unwrap_or("?")
    );
    for (field, present) in [
        ("path", path.is_some()),
        ("method", method.is_some()),
        ("function", function.is_some()),
    ] {
        if !present && !map.contains_key(field) {
            report.push(&label, field, "missing");
        }
    }
    let route = build_route(path, method, function, auth, payload_format, report, &label)?;
    ok.then_some((route, label))
}

fn read_auth(value: &Value, report: &mut Report<'_>, item: &str, field: &str) -> Option<Auth> {
    match text(value, report, item, field).as_deref() {
        Some("jwt") => Some(Auth::Jwt),
        Some("none") => Some(Auth::None),
        Some(other) => {
            report.push(item, field, format!("{other:?} is not jwt or none"));
            None
        }
        None => None,
    }
}

/// Parses a route's path and method, reporting what is wrong under `label`.
pub(crate) fn build_route(
    path: Option<String>,
    method: Option<String>,
    function: Option<String>,
    auth: Auth,
    payload_format: Option<PayloadFormat>,
    report: &mut Report<'_>,
    label: &str,
) -> Option<RouteConfig> {
    let path = path.and_then(|p| match PathTemplate::parse(&p) {
        Ok(t) => Some(t),
        Err(Error::Template { reason, .. }) => {
            report.push(label, "path", format!("bad path template {p:?}: {reason}"));
            None
        }
        Err(other) => {
            report.push(label, "path", other.to_string());
            None
        }
    });
    let method = method.and_then(|m| match m.parse::<RouteMethod>() {
        Ok(m) => Some(m),
        Err(reason) => {
            report.push(label, "method", reason);
            None
        }
    });
    Some(RouteConfig {
        path: path?,
        method: method?,
        function: function?,
        auth,
        payload_format,
    })
}

/// Reports routes naming unknown functions and duplicate routes (same method and path shape).
pub(crate) fn check_routes(
    config: &Config,
    labels: &[String],
    file: &str,
    problems: &mut Vec<Problem>,
) {
    let mut report = Report { file, problems };
    let mut seen: HashMap<(String, RouteMethod), &str> = HashMap::new();
    for (route, label) in config.routes.iter().zip(labels) {
        if !config.functions.contains_key(&route.function) {
            report.push(
                label,
                "function",
                format!("unknown function {:?}", route.function),
            );
        }
        let key = (route.path.shape(), route.method.clone());
        if let Some(first) = seen.get(&key) {
            report.push(
                label,
                "",
                format!(
                    "duplicate route: {} {} is already declared by {first}",
                    route.method, route.path
                ),
            );
        } else {
            seen.insert(key, label);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_syntax_errors_give_line_and_column() {
        let Err(Error::Invalid(problems)) =
            Config::from_yaml_str("functions:\n  f: [unclosed\n", "", &|_| None)
        else {
            panic!("expected a syntax error");
        };
        let message = &problems[0].message;
        assert!(message.starts_with("invalid YAML"), "{message}");
        assert!(message.contains("line 3 column 1"), "{message}");
        let cause = std::error::Error::source(&problems[0]).expect("the YAML error is kept");
        assert!(cause.to_string().contains("line 3 column 1"), "{cause}");
    }

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

    #[test]
    fn cloudformation_short_tags_are_kept() {
        let value: Value =
            serde_norway::from_str("a: !Ref P\nb: !GetAtt T.Arn\nc: !If [x, y, z]\n").unwrap();
        let tags: Vec<String> = value
            .as_mapping()
            .unwrap()
            .values()
            .map(|v| match v {
                Value::Tagged(t) => t.tag.to_string(),
                other => panic!("untagged {other:?}"),
            })
            .collect();
        assert_eq!(tags, ["!Ref", "!GetAtt", "!If"]);
    }
}
