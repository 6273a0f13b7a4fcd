//! Field readers and checks both loaders share (`functions.yml` and SAM templates).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use esb_runtime::{InvokeMode, ManagedRuntime};
use serde_norway::{Mapping, Value};

use crate::config::{
    Auth, Config, DEFAULT_MEMORY_SIZE, DEFAULT_TIMEOUT, EventInvoke, FunctionConfig,
    MAXIMUM_EVENT_AGE_RANGE_SECS, MAXIMUM_RETRY_ATTEMPTS_RANGE, MEMORY_SIZE_RANGE, PayloadFormat,
    RouteConfig, RouteMethod, Scaling, TIMEOUT_RANGE_SECS,
};
use crate::config::{ImageConfig, ScheduleConfig, ZipPackage};
use crate::error::{Problem, Report};
use crate::yaml::{integer, key_text, number, value_debug};
use crate::{Error, PathTemplate};

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

/// What a duration field accepts, in seconds.
pub(crate) struct Seconds {
    valid: fn(f64) -> bool,
    /// Follows `<n> s` in the problem reported for an invalid value.
    problem: &'static str,
}

/// A function timeout: 1..=900 seconds, as AWS Lambda allows.
pub(crate) const TIMEOUT: Seconds = Seconds {
    valid: |secs| TIMEOUT_RANGE_SECS.contains(&secs),
    problem: "is outside 1..=900 seconds",
};

/// A pool duration (`idle_timeout`, `acquire_timeout`): above 0 and at most a year.
pub(crate) const POOL_DURATION: Seconds = Seconds {
    valid: |secs| secs > 0.0 && secs <= 31_536_000.0,
    problem: "must be above 0 (and at most a year)",
};

/// A number of seconds that `accepts` allows, as a duration.
pub(crate) fn read_seconds(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
    accepts: &Seconds,
) -> Option<Duration> {
    let secs = number(value, report, item, field)?;
    if !(accepts.valid)(secs) {
        report.push(item, field, format!("{secs} s {}", accepts.problem));
        return None;
    }
    Some(Duration::from_secs_f64(secs))
}

/// A whole number of `field` that `accepts` takes; `None` after reporting `field` with
/// `problem` otherwise.
fn bounded(
    value: &Value,
    report: &mut Report<'_>,
    (item, field): (&str, &str),
    accepts: impl Fn(u32) -> bool,
    problem: impl Fn(i64) -> String,
) -> Option<u32> {
    let n = integer(value, report, item, field)?;
    match u32::try_from(n) {
        Ok(n) if accepts(n) => Some(n),
        _ => {
            report.push(item, field, problem(n));
            None
        }
    }
}

pub(crate) fn read_memory(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<u32> {
    let accepts = |mb| MEMORY_SIZE_RANGE.contains(&mb);
    bounded(value, report, (item, field), accepts, |mb| {
        format!("{mb} MB is outside 128..=10240 MB")
    })
}

pub(crate) fn read_count(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
    min: i64,
) -> Option<u32> {
    bounded(
        value,
        report,
        (item, field),
        |n| i64::from(n) >= min,
        |n| format!("{n} must be at least {min}"),
    )
}

/// `MaximumRetryAttempts` / `maximum_retry_attempts`: 0..=2, as Lambda accepts.
pub(crate) fn read_retry_attempts(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<u32> {
    let accepts = |n| MAXIMUM_RETRY_ATTEMPTS_RANGE.contains(&n);
    bounded(value, report, (item, field), accepts, |n| {
        format!("{n} is outside 0..=2 retries")
    })
}

/// `MaximumEventAgeInSeconds` / `maximum_event_age`: 60..=21600 whole seconds, as Lambda
/// accepts.
pub(crate) fn read_event_age(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Duration> {
    let accepts = |secs| MAXIMUM_EVENT_AGE_RANGE_SECS.contains(&u64::from(secs));
    let secs = bounded(value, report, (item, field), accepts, |secs| {
        format!("{secs} s is outside 60..=21600 seconds")
    })?;
    Some(Duration::from_secs(u64::from(secs)))
}

/// An alias name as Lambda allows it: 1 to 128 letters, digits, `-` or `_`, not only digits
/// (that is a version); `None` after reporting `field` otherwise.
pub(crate) fn check_alias(
    alias: String,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<String> {
    let valid = (1..=128).contains(&alias.len())
        && alias
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        && !alias.chars().all(|c| c.is_ascii_digit());
    if valid {
        Some(alias)
    } else {
        report.push(
            item,
            field,
            format!(
                "{alias:?} is not an alias name: 1 to 128 letters, digits, '-' or '_', not only digits"
            ),
        );
        None
    }
}

/// Asynchronous invocation settings as read: each `None` when not stated.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct PartialEventInvoke {
    pub(crate) maximum_retry_attempts: Option<u32>,
    pub(crate) maximum_event_age: Option<Duration>,
}

impl PartialEventInvoke {
    /// Fills every field left unset from `defaults`.
    fn or(self, defaults: PartialEventInvoke) -> Self {
        Self {
            maximum_retry_attempts: self
                .maximum_retry_attempts
                .or(defaults.maximum_retry_attempts),
            maximum_event_age: self.maximum_event_age.or(defaults.maximum_event_age),
        }
    }

    /// Lambda's defaults under what is stated.
    fn finish(self) -> EventInvoke {
        let mut event_invoke = EventInvoke::default();
        if let Some(retries) = self.maximum_retry_attempts {
            event_invoke.maximum_retry_attempts = retries;
        }
        if let Some(age) = self.maximum_event_age {
            event_invoke.maximum_event_age = age;
        }
        event_invoke
    }
}

/// How a file names the zip package fields, for its problems.
pub(crate) struct PackageFields {
    pub(crate) runtime: &'static str,
    pub(crate) handler: &'static str,
    pub(crate) code: &'static str,
    pub(crate) layers: &'static str,
}

/// `functions.yml`'s names.
pub(crate) const YAML_PACKAGE: PackageFields = PackageFields {
    runtime: "runtime",
    handler: "handler",
    code: "code",
    layers: "layers",
};

/// SAM's names.
pub(crate) const SAM_PACKAGE: PackageFields = PackageFields {
    runtime: "Runtime",
    handler: "Handler",
    code: "CodeUri",
    layers: "Layers",
};

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
    pub(crate) event_invoke: PartialEventInvoke,
    pub(crate) aliases: Option<Vec<String>>,
    pub(crate) runtime: Option<String>,
    pub(crate) handler: Option<String>,
    pub(crate) code: Option<PathBuf>,
    /// `code` was given but could not be read (already reported).
    pub(crate) code_invalid: bool,
    pub(crate) layers: Option<Vec<PathBuf>>,
    pub(crate) image_config: ImageConfig,
    pub(crate) schedules: Vec<ScheduleConfig>,
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
        self.event_invoke = self.event_invoke.or(defaults.event_invoke);
        self.aliases = self.aliases.or_else(|| defaults.aliases.clone());
        self.runtime = self.runtime.or_else(|| defaults.runtime.clone());
        self.handler = self.handler.or_else(|| defaults.handler.clone());
        self.code = self.code.or_else(|| defaults.code.clone());
        self.layers = self.layers.or_else(|| defaults.layers.clone());
        self
    }

    /// Makes relative `code` and `layers` paths relative to `base` (the file's directory).
    pub(crate) fn relative_to(mut self, base: &Path) -> Partial {
        self.code = self.code.map(|code| base.join(code));
        self.layers = self
            .layers
            .map(|layers| layers.into_iter().map(|l| base.join(l)).collect());
        self
    }

    /// Drops the zip package fields (an image function ignores the globals that set them).
    pub(crate) fn without_package(mut self) -> Partial {
        self.runtime = None;
        self.handler = None;
        self.code = None;
        self.layers = None;
        self
    }

    /// The zip package, when `runtime`, `handler` or `code` is set; problems reported under
    /// `item` (`names` gives the field names as the file spells them).
    fn package(
        &self,
        report: &mut Report<'_>,
        item: &str,
        names: &PackageFields,
    ) -> Result<Option<ZipPackage>, ()> {
        if self.runtime.is_none()
            && self.handler.is_none()
            && self.code.is_none()
            && !self.code_invalid
        {
            return Ok(None);
        }
        let mut ok = true;
        if self.image.is_some() || self.command.is_some() {
            report.push(
                item,
                names.runtime,
                format!(
                    "a function is an image, a command, or {} + {} + {}, not several",
                    names.runtime, names.handler, names.code
                ),
            );
            ok = false;
        }
        let runtime = self.runtime.clone().unwrap_or_default();
        if self.runtime.is_none() {
            report.push(
                item,
                names.runtime,
                "missing: a zip function needs a runtime",
            );
            ok = false;
        } else if ManagedRuntime::parse(&runtime).is_none() {
            report.push(
                item,
                names.runtime,
                format!(
                    "{runtime:?} is not a runtime ESB runs: python3.x, nodejsNN.x, provided, \
                     provided.al2 or provided.al2023"
                ),
            );
            ok = false;
        }
        let provided = runtime.starts_with("provided");
        let handler = self.handler.clone().unwrap_or_default();
        if handler.is_empty() && !provided {
            report.push(
                item,
                names.handler,
                "missing: a zip function needs a handler",
            );
            ok = false;
        }
        match &self.code {
            None if self.code_invalid => ok = false,
            None => {
                report.push(item, names.code, "missing: a zip function needs its code");
                ok = false;
            }
            Some(code) if !code.exists() => {
                report.push(
                    item,
                    names.code,
                    format!("{} does not exist", code.display()),
                );
                ok = false;
            }
            Some(_) => {}
        }
        let layers = self.layers.clone().unwrap_or_default();
        for (i, layer) in layers.iter().enumerate() {
            if !layer.exists() {
                report.push(
                    item,
                    &format!("{}[{i}]", names.layers),
                    format!("{} does not exist", layer.display()),
                );
                ok = false;
            }
        }
        if !ok {
            return Err(());
        }
        let mut package = ZipPackage::new(runtime, handler, self.code.clone().unwrap_or_default());
        package.layers = layers;
        Ok(Some(package))
    }

    /// Applies the built-in defaults and checks what spans fields.
    pub(crate) fn finish(
        self,
        name: String,
        report: &mut Report<'_>,
        item: &str,
        names: &PackageFields,
    ) -> Option<FunctionConfig> {
        let scaling = self.scaling;
        let mut ok = true;
        let package = self.package(report, item, names);
        ok &= package.is_ok();
        let package = package.ok().flatten();
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
        if self.image.is_none() && self.command.is_none() && ok && package.is_none() {
            report.push(
                item,
                "",
                format!(
                    "needs an image (containerd backend), a command (process backend), or {} + \
                     {} + {} (a zip function, both backends)",
                    names.runtime, names.handler, names.code
                ),
            );
            ok = false;
        }
        ok.then(|| FunctionConfig {
            name,
            image: self.image,
            command: self.command,
            package,
            image_config: self.image_config,
            schedules: self.schedules,
            timeout: self.timeout.unwrap_or(DEFAULT_TIMEOUT),
            memory_size: self.memory_size.unwrap_or(DEFAULT_MEMORY_SIZE),
            environment: self.environment,
            scaling,
            invoke: self.invoke.unwrap_or_default(),
            payload_format: self.payload_format.unwrap_or_default(),
            event_invoke: self.event_invoke.finish(),
            aliases: self.aliases.unwrap_or_default(),
            mounts: Vec::new(),
        })
    }
}

/// Reads an authorizer's `ttl` / `ReauthorizeEvery`: whole seconds, 0..=3600 as API Gateway.
pub(crate) fn read_ttl(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Duration> {
    let secs = integer(value, report, item, field)?;
    match u64::try_from(secs) {
        Ok(secs) if secs <= 3600 => Some(Duration::from_secs(secs)),
        _ => {
            report.push(item, field, format!("{secs} s is outside 0..=3600 seconds"));
            None
        }
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
        cors: None,
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
    for (name, authorizer) in &config.authorizers {
        if !config.functions.contains_key(&authorizer.function) {
            report.push(
                &format!("authorizers.{name}"),
                "function",
                format!("unknown function {:?}", authorizer.function),
            );
        }
    }
    let mut seen: HashMap<(String, RouteMethod), &str> = HashMap::new();
    for (route, label) in config.routes.iter().zip(labels) {
        if let Auth::Lambda(name) = &route.auth
            && !config.authorizers.contains_key(&**name)
        {
            report.push(
                label,
                "auth",
                format!(
                    "unknown authorizer {name:?}: expected jwt, none or a name under authorizers"
                ),
            );
        }
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
