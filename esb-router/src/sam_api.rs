//! The APIs of a SAM template (`AWS::Serverless::Api` / `HttpApi`, and the implicit ones
//! `Globals` configure): their Lambda authorizers (`Auth.Authorizers`, `DefaultAuthorizer`)
//! and CORS (`Cors` / `CorsConfiguration`), as routes of their events use them.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use serde_norway::{Mapping, Value};

use crate::config::{
    ApiKind, Auth, AuthorizerConfig, AuthorizerType, CorsConfig, DEFAULT_AUTHORIZER_TTL,
    IdentitySource, PayloadFormat,
};
use crate::error::Report;
use crate::fields::{read_count, read_payload_format, read_ttl};
use crate::files::check_authorizer;
use crate::yaml::{key_text, mapping, text_value};

/// The logical ids SAM gives the implicit APIs.
pub(crate) const IMPLICIT_REST: &str = "ServerlessRestApi";
pub(crate) const IMPLICIT_HTTP: &str = "ServerlessHttpApi";

/// What routes of one API share.
#[derive(Default)]
pub(crate) struct ApiDef {
    /// Lambda authorizers by their name in the template, with their key in `Config::authorizers`.
    authorizers: HashMap<String, String>,
    default_authorizer: Option<String>,
    cors: Option<Arc<CorsConfig>>,
}

/// Every API of a template, by logical id; authorizers gathered for `Config::authorizers`.
#[derive(Default)]
pub(crate) struct Apis {
    apis: HashMap<String, ApiDef>,
    pub(crate) authorizers: BTreeMap<String, AuthorizerConfig>,
}

/// Resolves what the template's functions give (`!GetAtt Fn.Arn`, an ARN, a name) to a
/// function name.
pub(crate) trait FunctionNames {
    fn function_name(&self, value: &Value) -> Option<String>;
}

impl Apis {
    /// Reads `Globals.Api` / `Globals.HttpApi` and every API resource.
    pub(crate) fn read(
        globals: Option<&Mapping>,
        resources: &Mapping,
        names: &dyn FunctionNames,
        report: &mut Report<'_>,
    ) -> Self {
        let mut apis = Apis::default();
        let global = |kind: &str| {
            globals
                .and_then(|g| g.get(kind))
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default()
        };
        let (rest_globals, http_globals) = (global("Api"), global("HttpApi"));
        let mut read = |id: &str, kind: ApiKind, props: &Mapping, apis: &mut Apis| {
            let defaults = match kind {
                ApiKind::Http => &http_globals,
                _ => &rest_globals,
            };
            let mut merged = defaults.clone();
            for (k, v) in props {
                merged.insert(k.clone(), v.clone());
            }
            let def = apis.api(id, kind, &merged, names, report);
            apis.apis.insert(id.to_owned(), def);
        };
        read(IMPLICIT_REST, ApiKind::Rest, &Mapping::new(), &mut apis);
        read(IMPLICIT_HTTP, ApiKind::Http, &Mapping::new(), &mut apis);
        for (key, resource) in resources {
            let kind = match resource.get("Type").and_then(Value::as_str) {
                Some("AWS::Serverless::Api") => ApiKind::Rest,
                Some("AWS::Serverless::HttpApi") => ApiKind::Http,
                _ => continue,
            };
            let props = resource
                .get("Properties")
                .and_then(Value::as_mapping)
                .cloned()
                .unwrap_or_default();
            read(&key_text(key), kind, &props, &mut apis);
        }
        apis
    }

    fn api(
        &mut self,
        id: &str,
        kind: ApiKind,
        props: &Mapping,
        names: &dyn FunctionNames,
        report: &mut Report<'_>,
    ) -> ApiDef {
        let item = format!("Resources.{id}");
        let mut def = ApiDef::default();
        let cors_field = match kind {
            ApiKind::Http => "CorsConfiguration",
            _ => "Cors",
        };
        if let Some(cors) = props.get(cors_field) {
            def.cors = read_sam_cors(kind, cors, report, &item, cors_field).map(Arc::new);
        }
        let Some(auth) = props.get("Auth").and_then(Value::as_mapping) else {
            return def;
        };
        def.default_authorizer = auth.get("DefaultAuthorizer").and_then(text_value);
        let Some(authorizers) = auth.get("Authorizers") else {
            return def;
        };
        let Some(authorizers) = mapping(authorizers, report, &item, "Auth.Authorizers") else {
            return def;
        };
        for (key, value) in authorizers {
            let name = key_text(key);
            let field = format!("Auth.Authorizers.{name}");
            let Some(map) = value.as_mapping() else {
                report.push(&item, &field, "expected a mapping");
                continue;
            };
            // JWT and Cognito authorizers are the gateway's own JWT check.
            let Some(arn) = map.get("FunctionArn") else {
                continue;
            };
            let Some(function) = names.function_name(arn) else {
                report.push(
                    &item,
                    &format!("{field}.FunctionArn"),
                    "names no function of this template (expected !GetAtt Fn.Arn)",
                );
                continue;
            };
            let key = format!("{id}/{name}");
            if let Some(authorizer) =
                read_sam_authorizer(&key, function, kind, map, report, &item, &field)
            {
                self.authorizers.insert(key.clone(), authorizer);
                def.authorizers.insert(name, key);
            }
        }
        def
    }

    /// The API an event belongs to: `RestApiId` / `ApiId`, else the implicit one.
    fn of(&self, kind: ApiKind, api_id: Option<&str>) -> Option<&ApiDef> {
        let implicit = match kind {
            ApiKind::Http => IMPLICIT_HTTP,
            _ => IMPLICIT_REST,
        };
        self.apis.get(api_id.unwrap_or(implicit))
    }

    /// How a route of an event authorizes: its `Auth.Authorizer`, else its API's default;
    /// `NONE` or no authorizer at all opens it (as on API Gateway); a name that is no Lambda
    /// authorizer (a JWT or Cognito authorizer) is the JWT check.
    pub(crate) fn auth(
        &self,
        kind: ApiKind,
        api_id: Option<&str>,
        authorizer: Option<&str>,
    ) -> Auth {
        let api = self.of(kind, api_id);
        let name = authorizer.or_else(|| api.and_then(|a| a.default_authorizer.as_deref()));
        match name {
            Some(name) if name.eq_ignore_ascii_case("NONE") => Auth::None,
            Some(name) => api
                .and_then(|a| a.authorizers.get(name))
                .map_or(Auth::Jwt, |key| Auth::Lambda(Arc::from(key.as_str()))),
            None => Auth::None,
        }
    }

    /// The CORS of an event's API.
    pub(crate) fn cors(&self, kind: ApiKind, api_id: Option<&str>) -> Option<Arc<CorsConfig>> {
        self.of(kind, api_id).and_then(|a| a.cors.clone())
    }
}

fn read_sam_authorizer(
    key: &str,
    function: String,
    kind: ApiKind,
    map: &Mapping,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<AuthorizerConfig> {
    let mut authorizer = AuthorizerConfig::new(key, function);
    authorizer.api = kind;
    let mut ok = true;
    match kind {
        ApiKind::Http => {
            authorizer.authorizer_type = AuthorizerType::Request;
            match map.get("AuthorizerPayloadFormatVersion") {
                Some(v) => {
                    let f = format!("{field}.AuthorizerPayloadFormatVersion");
                    match read_payload_format(v, report, item, &f) {
                        Some(format) => authorizer.payload_format = format,
                        None => ok = false,
                    }
                }
                None => {
                    report.push(
                        item,
                        &format!("{field}.AuthorizerPayloadFormatVersion"),
                        "missing: \"1.0\" or \"2.0\"",
                    );
                    ok = false;
                }
            }
            authorizer.simple_responses = map
                .get("EnableSimpleResponses")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        _ => {
            authorizer.authorizer_type =
                match map.get("FunctionPayloadType").and_then(Value::as_str) {
                    None | Some("TOKEN") => AuthorizerType::Token,
                    Some("REQUEST") => AuthorizerType::Request,
                    Some(other) => {
                        report.push(
                            item,
                            &format!("{field}.FunctionPayloadType"),
                            format!("{other:?} is not TOKEN or REQUEST"),
                        );
                        ok = false;
                        AuthorizerType::Token
                    }
                };
        }
    }
    let empty = Mapping::new();
    let identity = map
        .get("Identity")
        .and_then(Value::as_mapping)
        .unwrap_or(&empty);
    let mut sources = Vec::new();
    if authorizer.authorizer_type == AuthorizerType::Token {
        let header = identity
            .get("Header")
            .and_then(text_value)
            .unwrap_or_else(|| "Authorization".into());
        sources.push(IdentitySource::Header(header.to_ascii_lowercase()));
        authorizer.validation_expression =
            identity.get("ValidationExpression").and_then(text_value);
    } else {
        for (list, header) in [("Headers", true), ("QueryStrings", false)] {
            for name in identity
                .get(list)
                .and_then(Value::as_sequence)
                .into_iter()
                .flatten()
            {
                let Some(name) = text_value(name) else {
                    continue;
                };
                sources.push(if header {
                    IdentitySource::Header(name.to_ascii_lowercase())
                } else {
                    IdentitySource::Query(name)
                });
            }
        }
    }
    let ttl_field = format!("{field}.Identity.ReauthorizeEvery");
    authorizer.ttl = match identity.get("ReauthorizeEvery") {
        Some(v) => read_ttl(v, report, item, &ttl_field).unwrap_or_else(|| {
            ok = false;
            Duration::ZERO
        }),
        None if sources.is_empty() => Duration::ZERO,
        None => DEFAULT_AUTHORIZER_TTL,
    };
    authorizer.identity_sources = sources;
    if authorizer.payload_format != PayloadFormat::V2 && kind == ApiKind::Rest {
        authorizer.payload_format = PayloadFormat::V1;
    }
    ok &= check_authorizer(&mut authorizer, report, &format!("{item}.{field}"));
    ok.then_some(authorizer)
}

/// SAM's REST `Cors`: a quoted origin (`"'*'"`), or quoted `AllowOrigin`, `AllowMethods`,
/// `AllowHeaders`, `MaxAge` and a boolean `AllowCredentials`. HTTP `CorsConfiguration`:
/// `true`, or lists `AllowOrigins`, `AllowMethods`, `AllowHeaders`, `ExposeHeaders`, and
/// `MaxAge`, `AllowCredentials`.
fn read_sam_cors(
    kind: ApiKind,
    value: &Value,
    report: &mut Report<'_>,
    item: &str,
    field: &str,
) -> Option<CorsConfig> {
    const ALL_METHODS: &str = "DELETE,GET,HEAD,OPTIONS,PATCH,POST,PUT";
    let split = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect()
    };
    let mut cors = CorsConfig::new(kind, Vec::new());
    match (kind, value) {
        (ApiKind::Http, Value::Bool(false)) => return None,
        (ApiKind::Http, Value::Bool(true)) => {
            cors.allow_origins = vec!["*".into()];
            cors.allow_methods = vec!["*".into()];
            cors.allow_headers = vec!["*".into()];
        }
        (ApiKind::Http, Value::Mapping(map)) => {
            let list = |name: &str| -> Vec<String> {
                match map.get(name) {
                    Some(Value::Sequence(items)) => items.iter().filter_map(text_value).collect(),
                    Some(other) => text_value(other).map(|s| split(&s)).unwrap_or_default(),
                    None => Vec::new(),
                }
            };
            cors.allow_origins = list("AllowOrigins");
            cors.allow_methods = list("AllowMethods");
            cors.allow_headers = list("AllowHeaders");
            cors.expose_headers = list("ExposeHeaders");
            cors.allow_credentials = map
                .get("AllowCredentials")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            if let Some(v) = map.get("MaxAge") {
                cors.max_age = read_count(v, report, item, &format!("{field}.MaxAge"), 0);
            }
        }
        (_, Value::String(origin)) => {
            cors.allow_origins = vec![unquote(origin, report, item, field)?];
            cors.allow_methods = split(ALL_METHODS);
        }
        (_, Value::Mapping(map)) => {
            let quoted = |name: &str, report: &mut Report<'_>| -> Option<String> {
                let v = map.get(name)?;
                let text = text_value(v)?;
                unquote(&text, report, item, &format!("{field}.{name}"))
            };
            cors.allow_origins = quoted("AllowOrigin", report).into_iter().collect();
            cors.allow_methods = quoted("AllowMethods", report)
                .map(|m| split(&m))
                .unwrap_or_else(|| split(ALL_METHODS));
            cors.allow_headers = quoted("AllowHeaders", report)
                .map(|h| split(&h))
                .unwrap_or_default();
            cors.max_age = quoted("MaxAge", report).and_then(|m| m.parse().ok());
            cors.allow_credentials = map
                .get("AllowCredentials")
                .and_then(Value::as_bool)
                .unwrap_or(false);
        }
        _ => {
            report.push(item, field, "expected a quoted origin or a mapping");
            return None;
        }
    }
    if cors.allow_origins.is_empty() {
        report.push(item, field, "names no allowed origin");
        return None;
    }
    Some(cors)
}

/// A SAM CORS value is a quoted string (`"'*'"`), as API Gateway's header mappings are.
fn unquote(text: &str, report: &mut Report<'_>, item: &str, field: &str) -> Option<String> {
    match text.strip_prefix('\'').and_then(|t| t.strip_suffix('\'')) {
        Some(inner) => Some(inner.to_owned()),
        None => {
            report.push(
                item,
                field,
                format!("{text:?} must be quoted: \"'{text}'\""),
            );
            None
        }
    }
}
