//! The `services:` section of `functions.yml`: the box's companions (an S3-compatible store,
//! a DynamoDB-compatible database) that every function is wired to.
//!
//! ```yaml
//! services:
//!   s3: { endpoint: "http://127.0.0.1:9000", access_key: "..", secret_key: "..", region: us-east-1 }
//!   dynamodb:
//!     endpoint: "http://127.0.0.1:8001"
//!     command: ["moto_server", "-H", "127.0.0.1", "-p", "8001"]   # ESB starts it itself
//!     environment: { KEY: value }                                # of the command
//!     health: { url: "http://127.0.0.1:8001/", timeout: 30, interval: 0.5 }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use crate::error::Report;
use crate::fields::read_environment;
use crate::yaml::{key_text, mapping, number, text, text_value};

/// How long a started service may take to become healthy unless `health.timeout` says.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a starting service's health is probed unless `health.interval` says.
pub const DEFAULT_HEALTH_INTERVAL: Duration = Duration::from_millis(250);

/// The companions functions are wired to; absent ones are `None`.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct Services {
    /// The S3-compatible store (`AWS_ENDPOINT_URL_S3`, `S3_ENDPOINT`).
    pub s3: Option<ServiceConfig>,
    /// The DynamoDB-compatible database (`AWS_ENDPOINT_URL_DYNAMODB`, `DYNAMODB_ENDPOINT`).
    pub dynamodb: Option<ServiceConfig>,
}

impl Services {
    /// The configured services with their names (`s3`, `dynamodb`), in that order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &ServiceConfig)> {
        [
            ("s3", self.s3.as_ref()),
            ("dynamodb", self.dynamodb.as_ref()),
        ]
        .into_iter()
        .filter_map(|(name, service)| Some((name, service?)))
    }
}

/// One companion service: where it listens, its keys, and optionally how ESB starts it.
/// The secret key never appears in `Debug`.
#[derive(Clone, PartialEq)]
#[non_exhaustive]
pub struct ServiceConfig {
    /// Its URL, `http(s)://host:port` (a path is kept).
    pub endpoint: Endpoint,
    /// Access key id functions sign its requests with.
    pub access_key: Option<String>,
    /// The secret of `access_key`.
    pub secret_key: Option<String>,
    /// Its region, when it differs from the functions' own.
    pub region: Option<String>,
    /// A program and arguments ESB starts, watches and stops itself.
    pub command: Option<Vec<String>>,
    /// Variables the command gets besides ESB's own environment.
    pub environment: BTreeMap<String, String>,
    /// How a started service is known to be ready.
    pub health: HealthCheck,
}

impl ServiceConfig {
    /// A service at `endpoint`, without keys or command.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            access_key: None,
            secret_key: None,
            region: None,
            command: None,
            environment: BTreeMap::new(),
            health: HealthCheck::default(),
        }
    }
}

impl fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServiceConfig")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .field(
                "secret_key",
                &self.secret_key.as_ref().map(|_| "<redacted>"),
            )
            .field("region", &self.region)
            .field("command", &self.command)
            .field("environment", &self.environment.keys().collect::<Vec<_>>())
            .field("health", &self.health)
            .finish()
    }
}

/// How a service ESB starts is known to be healthy: an HTTP URL answering (any status
/// below 500), else a TCP connection to its endpoint.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct HealthCheck {
    /// A URL probed with `GET`; `None` probes a TCP connection to the endpoint.
    pub url: Option<Endpoint>,
    /// How long it may take to become healthy before start-up fails.
    pub timeout: Duration,
    /// Time between probes.
    pub interval: Duration,
}

impl Default for HealthCheck {
    fn default() -> Self {
        Self {
            url: None,
            timeout: DEFAULT_HEALTH_TIMEOUT,
            interval: DEFAULT_HEALTH_INTERVAL,
        }
    }
}

/// A validated `http(s)://host[:port][/path]` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct Endpoint {
    uri: http::Uri,
}

/// Why a text is not an [`Endpoint`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EndpointError {
    /// It does not parse as a URL.
    #[error("{text:?} is not a URL")]
    Syntax {
        /// The text as given.
        text: String,
        /// The parser's error.
        #[source]
        source: http::uri::InvalidUri,
    },
    /// It parses but is not `http(s)://host...`.
    #[error("{0:?} is not an http:// or https:// URL with a host")]
    NotHttp(String),
    /// It has a user or password in it (`user:password@`), which would show wherever the
    /// URL does; the text kept has them replaced by `***`.
    #[error(
        "{0:?} has credentials in it (user:password@): give the service's keys on their own, not in its URL"
    )]
    Credentials(String),
}

impl Endpoint {
    /// Parses and checks `text`.
    pub fn parse(text: &str) -> Result<Self, EndpointError> {
        if let Some(redacted) = without_userinfo(text) {
            return Err(EndpointError::Credentials(redacted));
        }
        let uri: http::Uri = text.parse().map_err(|source| EndpointError::Syntax {
            text: text.to_owned(),
            source,
        })?;
        let http = matches!(uri.scheme_str(), Some("http" | "https"));
        let host = uri.host().is_some_and(|host| !host.is_empty());
        if !http || !host {
            return Err(EndpointError::NotHttp(text.to_owned()));
        }
        Ok(Self { uri })
    }

    /// The URL.
    pub fn uri(&self) -> &http::Uri {
        &self.uri
    }

    /// The host as written (an IPv6 address in brackets).
    pub fn host(&self) -> &str {
        self.uri.host().unwrap_or_default()
    }

    /// The port, or the scheme's (80, 443).
    pub fn port(&self) -> u16 {
        self.uri
            .port_u16()
            .unwrap_or(if self.uri.scheme_str() == Some("https") {
                443
            } else {
                80
            })
    }

    /// The URL as text, without a trailing `/` when it has no path.
    pub fn as_str(&self) -> String {
        let text = self.uri.to_string();
        match self.uri.path_and_query().map(|p| p.as_str()) {
            None | Some("/") => text.trim_end_matches('/').to_owned(),
            _ => text,
        }
    }
}

/// `text` with the user information of its authority (`user:password@`) replaced by
/// `***`, when it has any; `None` when it has none.
fn without_userinfo(text: &str) -> Option<String> {
    let start = text.find("://").map_or(0, |i| i + 3);
    let authority_len = text[start..]
        .find(['/', '?', '#'])
        .unwrap_or(text.len() - start);
    let at = text[start..start + authority_len].rfind('@')?;
    Some(format!("{}***{}", &text[..start], &text[start + at..]))
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.as_str())
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.as_str())
    }
}

/// Reads the `services` section.
pub(crate) fn read_services(value: &Value, report: &mut Report<'_>) -> Services {
    let mut services = Services::default();
    let Some(map) = mapping(value, report, "services", "") else {
        return services;
    };
    for (key, value) in map {
        let name = key_text(key);
        let item = format!("services.{name}");
        let slot = match name.as_str() {
            "s3" => &mut services.s3,
            "dynamodb" => &mut services.dynamodb,
            _ => {
                report.push(&item, "", "unknown service: expected s3 or dynamodb");
                continue;
            }
        };
        if let Some(map) = mapping(value, report, &item, "") {
            *slot = read_service(map, report, &item);
        }
    }
    services
}

fn read_service(map: &Mapping, report: &mut Report<'_>, item: &str) -> Option<ServiceConfig> {
    let mut endpoint = None;
    let mut access_key = None;
    let mut secret_key = None;
    let mut region = None;
    let mut command = None;
    let mut environment = BTreeMap::new();
    let mut health = HealthCheck::default();
    for (key, value) in map {
        let field = key_text(key);
        match field.as_str() {
            "endpoint" => endpoint = read_endpoint(value, report, item, "endpoint"),
            "access_key" => access_key = non_empty(value, report, item, "access_key"),
            "secret_key" => secret_key = non_empty(value, report, item, "secret_key"),
            "region" => region = non_empty(value, report, item, "region"),
            "command" => command = read_command(value, report, item),
            "environment" => {
                if let Some(map) = mapping(value, report, item, "environment") {
                    environment = read_environment(map, report, item, &text_value);
                }
            }
            "health" => {
                if let Some(map) = mapping(value, report, item, "health") {
                    health = read_health(map, report, item);
                }
            }
            _ => report.push(
                item,
                &field,
                "unknown field: expected endpoint, access_key, secret_key, region, command, environment or health",
            ),
        }
    }
    if access_key.is_some() != secret_key.is_some() {
        let missing = if access_key.is_some() {
            "secret_key"
        } else {
            "access_key"
        };
        report.push(
            item,
            missing,
            "missing: access_key and secret_key go together",
        );
    }
    let Some(endpoint) = endpoint else {
        if !map.contains_key("endpoint") {
            report.push(item, "endpoint", "missing: the service's URL");
        }
        return None;
    };
    Some(ServiceConfig {
        endpoint,
        access_key,
        secret_key,
        region,
        command,
        environment,
        health,
    })
}

fn read_endpoint(
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<Endpoint> {
    let text = text(value, report, item, field)?;
    match Endpoint::parse(text.trim()) {
        Ok(endpoint) => Some(endpoint),
        Err(err) => {
            report.push(item, field, err.to_string());
            None
        }
    }
}

fn non_empty(value: &Value, report: &mut Report<'_>, item: &str, field: &str) -> Option<String> {
    let text = text(value, report, item, field)?;
    if text.is_empty() {
        report.push(item, field, "is empty");
        return None;
    }
    Some(text)
}

fn read_command(value: &Value, report: &mut Report<'_>, item: &str) -> Option<Vec<String>> {
    let Some(list) = value.as_sequence() else {
        report.push(item, "command", "expected a list: [program, args...]");
        return None;
    };
    let argv: Option<Vec<String>> = list.iter().map(text_value).collect();
    match argv {
        Some(argv) if argv.first().is_some_and(|program| !program.is_empty()) => Some(argv),
        Some(_) => {
            report.push(item, "command", "expected a program name first");
            None
        }
        None => {
            report.push(item, "command", "expected a list of strings");
            None
        }
    }
}

fn read_health(map: &Mapping, report: &mut Report<'_>, item: &str) -> HealthCheck {
    let mut health = HealthCheck::default();
    for (key, value) in map {
        let field = format!("health.{}", key_text(key));
        match field.as_str() {
            "health.url" => health.url = read_endpoint(value, report, item, &field),
            "health.timeout" | "health.interval" => {
                let Some(secs) = number(value, report, item, &field) else {
                    continue;
                };
                if !(secs > 0.0 && secs <= 3600.0) {
                    report.push(
                        item,
                        &field,
                        format!("{secs} s is outside 0..=3600 seconds"),
                    );
                    continue;
                }
                let duration = Duration::from_secs_f64(secs);
                if field == "health.timeout" {
                    health.timeout = duration;
                } else {
                    health.interval = duration;
                }
            }
            _ => report.push(
                item,
                &field,
                "unknown field: expected url, timeout or interval",
            ),
        }
    }
    health
}

#[cfg(test)]
mod tests {
    use crate::{Config, Error};

    use super::*;

    fn load(services: &str) -> Result<Config, Error> {
        let functions = format!("functions:\n  f: {{ command: [./f] }}\nservices:\n{services}");
        Config::from_yaml_str(&functions, "", &|_| None)
    }

    fn problems(services: &str) -> Vec<String> {
        match load(services) {
            Err(Error::Invalid(problems)) => problems.iter().map(ToString::to_string).collect(),
            other => panic!("expected problems, got {other:?}"),
        }
    }

    #[test]
    fn services_are_read_with_their_defaults() {
        let config = load(
            "  s3: { endpoint: \"http://127.0.0.1:9000/\", access_key: ak, secret_key: sk }\n  dynamodb:\n    endpoint: http://localhost:8001\n    region: eu-west-1\n    command: [moto_server, -p, \"8001\"]\n    environment: { A: 1 }\n    health: { url: \"http://localhost:8001/moto-api\", timeout: 2, interval: 0.1 }\n",
        )
        .unwrap();
        let s3 = config.services.s3.as_ref().unwrap();
        assert_eq!(s3.endpoint.as_str(), "http://127.0.0.1:9000");
        assert_eq!(s3.endpoint.port(), 9000);
        assert_eq!(s3.access_key.as_deref(), Some("ak"));
        assert_eq!(s3.health, HealthCheck::default());
        assert!(s3.command.is_none());
        let db = config.services.dynamodb.as_ref().unwrap();
        assert_eq!(db.endpoint.host(), "localhost");
        assert_eq!(db.region.as_deref(), Some("eu-west-1"));
        assert_eq!(
            db.command.as_deref().unwrap(),
            ["moto_server", "-p", "8001"]
        );
        assert_eq!(db.environment["A"], "1");
        assert_eq!(db.health.timeout, Duration::from_secs(2));
        assert_eq!(db.health.interval, Duration::from_millis(100));
        assert_eq!(
            db.health.url.as_ref().unwrap().as_str(),
            "http://localhost:8001/moto-api"
        );
        let names: Vec<_> = config.services.iter().map(|(name, _)| name).collect();
        assert_eq!(names, ["s3", "dynamodb"]);
    }

    #[test]
    fn no_services_section_means_none() {
        let config =
            Config::from_yaml_str("functions:\n  f: { command: [./f] }\n", "", &|_| None).unwrap();
        assert_eq!(config.services, Services::default());
    }

    #[test]
    fn bad_services_are_one_line_problems_naming_file_and_field() {
        let found = problems(
            "  s3: { endpoint: \"ftp://x\" }\n  dynamodb: { access_key: a }\n  sqs: { endpoint: \"http://x\" }\n",
        );
        assert_eq!(
            found,
            [
                "functions.yml: services.s3: endpoint: \"ftp://x\" is not an http:// or https:// URL with a host",
                "functions.yml: services.dynamodb: secret_key: missing: access_key and secret_key go together",
                "functions.yml: services.dynamodb: endpoint: missing: the service's URL",
                "functions.yml: services.sqs: unknown service: expected s3 or dynamodb",
            ]
        );
        let found = problems(
            "  s3: { endpoint: \"http://x\", command: [], health: { timeout: 0, colour: red } }\n",
        );
        assert_eq!(
            found,
            [
                "functions.yml: services.s3: command: expected a program name first",
                "functions.yml: services.s3: health.timeout: 0 s is outside 0..=3600 seconds",
                "functions.yml: services.s3: health.colour: unknown field: expected url, timeout or interval",
            ]
        );
        for problem in problems("  s3: { endpoint: \"http://x y\" }\n") {
            assert!(!problem.contains('\n'), "{problem}");
        }
    }

    #[test]
    fn the_secret_key_never_appears_in_debug() {
        let config = load(
            "  s3: { endpoint: \"http://x\", access_key: visible-id, secret_key: hush-hush-secret }\n",
        )
        .unwrap();
        let debug = format!("{config:?}");
        assert!(debug.contains("visible-id"), "{debug}");
        assert!(!debug.contains("hush-hush-secret"), "{debug}");
    }

    #[test]
    fn endpoints_parse_http_and_https_only() {
        assert_eq!(Endpoint::parse("https://s3.local").unwrap().port(), 443);
        assert_eq!(
            Endpoint::parse("http://[::1]:9000").unwrap().host(),
            "[::1]"
        );
        assert!(Endpoint::parse("127.0.0.1:9000").is_err());
        for (text, shown) in [
            (
                "http://user:s3cr3t@127.0.0.1:9000",
                "http://***@127.0.0.1:9000",
            ),
            (
                "https://s3cr3t@s3.local/path@x",
                "https://***@s3.local/path@x",
            ),
            ("user:s3cr3t@127.0.0.1:9000", "***@127.0.0.1:9000"),
            ("http://us er:s3cr3t@h", "http://***@h"),
        ] {
            let err = Endpoint::parse(text).unwrap_err().to_string();
            assert!(!err.contains("s3cr3t"), "{err}");
            assert!(
                err.starts_with(&format!("{shown:?} has credentials in it")),
                "{err}"
            );
        }
        assert!(Endpoint::parse("/just/a/path").is_err());
    }
}
