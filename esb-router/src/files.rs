//! The `functions.yml` / `routing.yml` loader.

use std::collections::BTreeMap;
use std::path::Path;

use esb_runtime::InvokeMode;
use serde_norway::{Mapping, Value};

use crate::Error;
use crate::config::{Auth, Config, FunctionConfig, RouteConfig, Scaling};
use crate::error::Report;
use crate::fields::{
    POOL_DURATION, Partial, PartialEventInvoke, TIMEOUT, build_route, check_alias,
    check_function_name, check_routes, read_count, read_environment, read_event_age, read_memory,
    read_payload_format, read_retry_attempts, read_seconds,
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
    "event_invoke",
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
            _ => report.push(
                item,
                &field,
                "unknown field: expected one of max_capacity, min_capacity, idle_timeout, acquire_timeout",
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
