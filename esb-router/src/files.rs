//! The `functions.yml` / `routing.yml` loader.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use esb_runtime::InvokeMode;
use serde_norway::{Mapping, Value};

use crate::{Error, ScheduleConfig, ScheduleExpression};
use std::sync::Arc;

use crate::config::{
    ApiKind, Auth, AuthorizerConfig, AuthorizerType, Config, CorsConfig, FunctionConfig,
    IdentitySource, PayloadFormat, RouteConfig, Scaling,
};
use crate::error::Report;
use crate::fields::{
    POOL_DURATION, Partial, PartialEventInvoke, TIMEOUT, YAML_PACKAGE, build_route, check_alias,
    check_function_name, check_routes, read_count, read_environment, read_event_age, read_memory,
    read_payload_format, read_retry_attempts, read_seconds, read_ttl,
};
use crate::subst::{Env, substitute};
use crate::yaml::{self, Empty, key_text, mapping, text, text_value};

impl Config {
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
        let base = functions_path.parent().unwrap_or(Path::new(""));
        parse(
            base,
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
            Path::new(""),
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
    base: &Path,
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
    if let Some(mut root) = parse_yaml(functions_text, env, &mut report) {
        config.resources = crate::resources::read_yaml_section(
            &mut root,
            &mut report,
            &mut config.warnings,
            env("AWS_REGION").unwrap_or_else(|| crate::DEFAULT_REGION.to_owned()),
            env("AWS_ACCOUNT_ID").unwrap_or_else(|| crate::DEFAULT_ACCOUNT_ID.to_owned()),
        );
        read_functions(&root, base, &mut report, &mut config.functions);
        if let Some(services) = root.get("services") {
            config.services = crate::services::read_services(services, &mut report);
        }
    }

    let mut report = Report {
        file: routing_file,
        problems: &mut problems,
    };
    let mut labels = Vec::new();
    if let Some(root) = parse_yaml(routing_text, env, &mut report) {
        read_routes(&root, &mut report, &mut config.routes, &mut labels);
        config.authorizers = read_authorizers(&root, &mut report);
        if let Some(cors) = root.get("cors") {
            let cors = read_cors(cors, &mut report).map(Arc::new);
            for route in &mut config.routes {
                route.cors.clone_from(&cors);
            }
        }
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
    base: &Path,
    report: &mut Report<'_>,
    out: &mut BTreeMap<String, FunctionConfig>,
) {
    let defaults = read_defaults(root, report).relative_to(base);
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
        let partial = read_partial(map, report, &item, FUNCTION_FIELDS).relative_to(base);
        if let Some(function) =
            partial
                .under(&defaults)
                .finish(name.clone(), report, &item, &YAML_PACKAGE)
        {
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
            Some("functions" | "resources" | "services") => {}
            _ => report.push(
                "",
                &key_text(key),
                "unknown top-level key: expected defaults, functions, resources or services",
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
    "event_invoke",
    "runtime",
    "layers",
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
    "event_invoke",
    "aliases",
    "runtime",
    "handler",
    "code",
    "layers",
    "events",
];

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
            "runtime" => p.runtime = text(value, report, item, &field),
            "handler" => p.handler = text(value, report, item, &field),
            "code" => p.code = text(value, report, item, &field).map(PathBuf::from),
            "layers" => p.layers = read_paths(value, report, item, &field),
            "events" => p.schedules = read_events(value, report, item),
            "timeout" => p.timeout = read_seconds(value, report, item, &field, &TIMEOUT),
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
            "aliases" => p.aliases = read_aliases(value, report, item),
            "event_invoke" => {
                if let Some(map) = mapping(value, report, item, &field) {
                    p.event_invoke = read_event_invoke(map, report, item);
                }
            }
            _ => {}
        }
    }
    p
}

/// `events: [{ schedule: "rate(5 minutes)", enabled: false, input: {..}, name: .. }]`.
fn read_events(value: &Value, report: &mut Report<'_>, item: &str) -> Vec<ScheduleConfig> {
    let Value::Sequence(events) = value else {
        report.push(item, "events", "expected a list of events");
        return Vec::new();
    };
    let mut schedules = Vec::new();
    for (i, event) in events.iter().enumerate() {
        let field = format!("events[{i}]");
        let Some(map) = mapping(event, report, item, &field) else {
            continue;
        };
        let mut schedule = None;
        let (mut enabled, mut input, mut name) = (true, None, None);
        for (key, value) in map {
            let key = key_text(key);
            let at = format!("{field}.{key}");
            match key.as_str() {
                "schedule" => {
                    schedule = text(value, report, item, &at).and_then(|t| {
                        t.parse::<ScheduleExpression>()
                            .map_err(|reason| report.push(item, &at, reason))
                            .ok()
                    });
                }
                "enabled" => match value {
                    Value::Bool(b) => enabled = *b,
                    _ => report.push(item, &at, "expected true or false"),
                },
                "input" => {
                    input = match value {
                        Value::String(s) => Some(s.clone()),
                        other => serde_json::to_string(other)
                            .map_err(|err| report.push(item, &at, format!("not JSON: {err}")))
                            .ok(),
                    };
                }
                "name" => name = text(value, report, item, &at),
                _ => report.push(
                    item,
                    &at,
                    "unknown field: expected schedule, enabled, input or name",
                ),
            }
        }
        let Some(expression) = schedule else {
            if !map.contains_key("schedule") {
                report.push(
                    item,
                    &format!("{field}.schedule"),
                    "missing: rate(...) or cron(...)",
                );
            }
            continue;
        };
        let function = item.strip_prefix("functions.").unwrap_or(item);
        let mut config = ScheduleConfig::new(
            name.unwrap_or_else(|| format!("{function}-schedule-{i}")),
            expression,
        );
        config.enabled = enabled;
        config.input = input;
        schedules.push(config);
    }
    schedules
}

/// A list of paths (`layers`).
fn read_paths(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Vec<PathBuf>> {
    let Value::Sequence(items) = value else {
        report.push(item, field, "expected a list of paths");
        return None;
    };
    let mut paths = Vec::with_capacity(items.len());
    for (i, path) in items.iter().enumerate() {
        paths.push(PathBuf::from(text(
            path,
            report,
            item,
            &format!("{field}[{i}]"),
        )?));
    }
    Some(paths)
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

fn read_scaling(map: &Mapping, report: &mut Report<'_>, item: &str) -> Scaling {
    let mut s = Scaling::default();
    for (key, value) in map {
        let name = key_text(key);
        let field = format!("scaling.{name}");
        match name.as_str() {
            "max_capacity" => s.max_capacity = read_count(value, report, item, &field, 1),
            "min_capacity" => s.min_capacity = read_count(value, report, item, &field, 0),
            "idle_timeout" => {
                s.idle_timeout = read_seconds(value, report, item, &field, &POOL_DURATION);
            }
            "acquire_timeout" => {
                s.acquire_timeout = read_seconds(value, report, item, &field, &POOL_DURATION);
            }
            "breaker_threshold" => {
                s.breaker_threshold = read_count(value, report, item, &field, 0);
            }
            "breaker_open_time" => {
                s.breaker_open_time = read_seconds(value, report, item, &field, &POOL_DURATION);
            }
            _ => report.push(
                item,
                &field,
                "unknown field: expected one of max_capacity, min_capacity, idle_timeout, acquire_timeout, breaker_threshold, breaker_open_time",
            ),
        }
    }
    s
}

/// `event_invoke: { maximum_retry_attempts: 0..=2, maximum_event_age: 60..=21600 }`.
fn read_event_invoke(map: &Mapping, report: &mut Report<'_>, item: &str) -> PartialEventInvoke {
    let mut e = PartialEventInvoke::default();
    for (key, value) in map {
        let name = key_text(key);
        let field = format!("event_invoke.{name}");
        match name.as_str() {
            "maximum_retry_attempts" => {
                e.maximum_retry_attempts = read_retry_attempts(value, report, item, &field);
            }
            "maximum_event_age" => {
                e.maximum_event_age = read_event_age(value, report, item, &field);
            }
            _ => report.push(
                item,
                &field,
                "unknown field: expected maximum_retry_attempts or maximum_event_age",
            ),
        }
    }
    e
}

/// `aliases: [live, beta]`: names a function can be invoked through (`name:live`).
fn read_aliases(value: &Value, report: &mut Report<'_>, item: &str) -> Option<Vec<String>> {
    let Value::Sequence(items) = value else {
        report.push(item, "aliases", "expected a list of alias names");
        return None;
    };
    let mut aliases: Vec<String> = Vec::with_capacity(items.len());
    for (i, alias) in items.iter().enumerate() {
        let field = format!("aliases[{i}]");
        let Some(alias) = text(alias, report, item, &field)
            .and_then(|alias| check_alias(alias, report, item, &field))
        else {
            continue;
        };
        if aliases.contains(&alias) {
            report.push(item, &field, format!("alias {alias:?} is listed twice"));
        } else {
            aliases.push(alias);
        }
    }
    Some(aliases)
}

fn read_routes(
    root: &Mapping,
    report: &mut Report<'_>,
    out: &mut Vec<RouteConfig>,
    labels: &mut Vec<String>,
) {
    for (key, _) in root {
        if !matches!(key.as_str(), Some("routes" | "authorizers" | "cors")) {
            report.push(
                "",
                &key_text(key),
                "unknown top-level key: expected routes, authorizers or cors",
            );
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
        Some("") => {
            report.push(item, field, "expected jwt, none or an authorizer's name");
            None
        }
        // Checked against `authorizers` once every file is read.
        Some(name) => Some(Auth::Lambda(Arc::from(name))),
        None => None,
    }
}

/// Fields an entry of `authorizers` may set.
const AUTHORIZER_FIELDS: &[&str] = &[
    "function",
    "type",
    "api",
    "payload_format",
    "simple_responses",
    "identity_sources",
    "ttl",
    "validation_expression",
];

/// Reads the `authorizers` section of `routing.yml`.
fn read_authorizers(root: &Mapping, report: &mut Report<'_>) -> BTreeMap<String, AuthorizerConfig> {
    let mut out = BTreeMap::new();
    let Some(section) = root.get("authorizers").filter(|v| !v.is_null()) else {
        return out;
    };
    let Some(section) = mapping(section, report, "authorizers", "") else {
        return out;
    };
    for (key, value) in section {
        let name = key_text(key);
        let item = format!("authorizers.{name}");
        if matches!(name.as_str(), "jwt" | "none" | "") {
            report.push(
                &item,
                "",
                "jwt and none are reserved: give the authorizer another name",
            );
            continue;
        }
        let Some(map) = mapping(value, report, &item, "") else {
            continue;
        };
        if let Some(authorizer) = read_authorizer(&name, map, report, &item) {
            out.insert(name, authorizer);
        }
    }
    out
}

fn read_authorizer(
    name: &str,
    map: &Mapping,
    report: &mut Report<'_>,
    item: &str,
) -> Option<AuthorizerConfig> {
    let mut authorizer = AuthorizerConfig::new(name, "");
    let (mut ok, mut function, mut sources) = (true, None, None);
    for (key, value) in map {
        let field = key_text(key);
        match field.as_str() {
            "function" => function = text(value, report, item, &field),
            "type" => match text(value, report, item, &field).as_deref() {
                Some("token" | "TOKEN") => authorizer.authorizer_type = AuthorizerType::Token,
                Some("request" | "REQUEST") => {
                    authorizer.authorizer_type = AuthorizerType::Request;
                }
                Some(other) => {
                    report.push(item, &field, format!("{other:?} is not token or request"));
                    ok = false;
                }
                None => ok = false,
            },
            "api" => match text(value, report, item, &field).as_deref() {
                Some("rest") => authorizer.api = ApiKind::Rest,
                Some("http") => authorizer.api = ApiKind::Http,
                Some(other) => {
                    report.push(item, &field, format!("{other:?} is not rest or http"));
                    ok = false;
                }
                None => ok = false,
            },
            "payload_format" => match read_payload_format(value, report, item, &field) {
                Some(format) => authorizer.payload_format = format,
                None => ok = false,
            },
            "simple_responses" => match value.as_bool() {
                Some(simple) => authorizer.simple_responses = simple,
                None => {
                    report.push(item, &field, "expected true or false");
                    ok = false;
                }
            },
            "identity_sources" => {
                sources = read_identity_sources(value, report, item, &field);
                ok &= sources.is_some();
            }
            "ttl" => match read_ttl(value, report, item, &field) {
                Some(ttl) => authorizer.ttl = ttl,
                None => ok = false,
            },
            "validation_expression" => {
                authorizer.validation_expression = text(value, report, item, &field);
                ok &= authorizer.validation_expression.is_some();
            }
            _ => report.push(
                item,
                &field,
                format!(
                    "unknown field: expected one of {}",
                    AUTHORIZER_FIELDS.join(", ")
                ),
            ),
        }
    }
    match function {
        Some(function) => authorizer.function = function,
        None => {
            report.push(item, "function", "missing");
            ok = false;
        }
    }
    if let Some(sources) = sources {
        authorizer.identity_sources = sources;
    } else if authorizer.authorizer_type == AuthorizerType::Request {
        // A REQUEST authorizer has no identity unless one is named: every request invokes it.
        authorizer.identity_sources.clear();
        if !map.contains_key("ttl") {
            authorizer.ttl = std::time::Duration::ZERO;
        }
    }
    ok &= check_authorizer(&mut authorizer, report, item);
    ok.then_some(authorizer)
}

/// Checks what spans an authorizer's fields, as API Gateway does.
pub(crate) fn check_authorizer(
    authorizer: &mut AuthorizerConfig,
    report: &mut Report<'_>,
    item: &str,
) -> bool {
    let mut ok = true;
    if authorizer.authorizer_type == AuthorizerType::Token {
        if authorizer.api == ApiKind::Http {
            report.push(
                item,
                "type",
                "HTTP APIs have no TOKEN authorizers: use request",
            );
            ok = false;
        }
        if !matches!(
            authorizer.identity_sources.as_slice(),
            [IdentitySource::Header(_)]
        ) {
            report.push(
                item,
                "identity_sources",
                "a TOKEN authorizer reads exactly one header",
            );
            ok = false;
        }
    }
    if let Some(expression) = &authorizer.validation_expression {
        if authorizer.authorizer_type != AuthorizerType::Token {
            report.push(
                item,
                "validation_expression",
                "only TOKEN authorizers validate tokens",
            );
            ok = false;
        } else if let Err(err) = regex::Regex::new(expression) {
            report.push(
                item,
                "validation_expression",
                format!("{expression:?} is not a regular expression: {err}"),
            );
            ok = false;
        }
    }
    if authorizer.simple_responses
        && (authorizer.api != ApiKind::Http || authorizer.payload_format != PayloadFormat::V2)
    {
        report.push(
            item,
            "simple_responses",
            "only HTTP API authorizers of payload format 2.0 have simple responses",
        );
        ok = false;
    }
    if !authorizer.ttl.is_zero() && authorizer.identity_sources.is_empty() {
        report.push(
            item,
            "ttl",
            "caching needs an identity source (the cache key): name one or set ttl: 0",
        );
        ok = false;
    }
    ok
}

/// A list of identity sources (or one, as a string).
pub(crate) fn read_identity_sources(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Vec<IdentitySource>> {
    let texts = read_text_list(value, report, item, field)?;
    let mut sources = Vec::with_capacity(texts.len());
    for text in texts {
        match IdentitySource::parse(&text) {
            Ok(source) => sources.push(source),
            Err(message) => {
                report.push(item, field, message);
                return None;
            }
        }
    }
    Some(sources)
}

/// A list of strings, or one string (also comma-separated, as API Gateway writes lists).
pub(crate) fn read_text_list(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Vec<String>> {
    match value {
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .map(|(i, v)| text(v, report, item, &format!("{field}[{i}]")))
            .collect(),
        other => text(other, report, item, field).map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect()
        }),
    }
}

/// Fields of `cors` in `routing.yml`.
const CORS_FIELDS: &[&str] = &[
    "allow_origins",
    "allow_methods",
    "allow_headers",
    "expose_headers",
    "max_age",
    "allow_credentials",
];

/// Reads the `cors` section of `routing.yml`: HTTP API semantics, for every route.
fn read_cors(value: &Value, report: &mut Report<'_>) -> Option<CorsConfig> {
    let item = "cors";
    let map = mapping(value, report, item, "")?;
    let mut cors = CorsConfig::new(ApiKind::Http, Vec::new());
    let mut ok = true;
    for (key, value) in map {
        let field = key_text(key);
        let list = |report: &mut Report<'_>| read_text_list(value, report, item, &field);
        match field.as_str() {
            "allow_origins" => cors.allow_origins = list(report).unwrap_or_default(),
            "allow_methods" => cors.allow_methods = list(report).unwrap_or_default(),
            "allow_headers" => cors.allow_headers = list(report).unwrap_or_default(),
            "expose_headers" => cors.expose_headers = list(report).unwrap_or_default(),
            "max_age" => {
                cors.max_age = crate::fields::read_count(value, report, item, &field, 0);
                ok &= cors.max_age.is_some();
            }
            "allow_credentials" => match value.as_bool() {
                Some(b) => cors.allow_credentials = b,
                None => {
                    report.push(item, &field, "expected true or false");
                    ok = false;
                }
            },
            _ => report.push(
                item,
                &field,
                format!("unknown field: expected one of {}", CORS_FIELDS.join(", ")),
            ),
        }
    }
    if cors.allow_origins.is_empty() {
        report.push(
            item,
            "allow_origins",
            "missing: name the allowed origins, or \"*\"",
        );
        ok = false;
    }
    ok.then_some(cors)
}
