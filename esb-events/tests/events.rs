//! Events built from fixture requests: compared with expected files, and read back by
//! `aws_lambda_events` and `lambda_http`, which nobody here wrote.
//!
//! `UPDATE_FIXTURES=1 cargo test -p esb-events --test events` rewrites the expected files.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::time::{Duration, UNIX_EPOCH};

use aws_lambda_events::apigw::{ApiGatewayProxyRequest, ApiGatewayV2httpRequest};
use base64::Engine;
use esb_events::{EventContext, RouteInfo, build_v1, build_v2};
use lambda_http::RequestExt;
use lambda_http::request::RequestContext;
use serde::Deserialize;
use serde_json::{Map, Value};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Fixture {
    method: String,
    uri: String,
    #[serde(default)]
    version: Option<String>,
    headers: Vec<(String, String)>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    body_base64: Option<String>,
    route: Route,
    context: Context,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Route {
    resource: String,
    route_key: String,
    path_parameters: BTreeMap<String, String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Context {
    request_id: String,
    source_ip: String,
    #[serde(default)]
    stage: Option<String>,
    request_time_epoch_ms: u64,
    #[serde(default)]
    binary_media_types: Vec<String>,
    #[serde(default)]
    stage_variables: Option<BTreeMap<String, String>>,
    #[serde(default)]
    claims: Option<Map<String, Value>>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
}

fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn load(name: &str) -> (Fixture, http::request::Parts, Vec<u8>) {
    let text =
        std::fs::read_to_string(fixtures_dir().join(format!("{name}.request.json"))).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    let mut builder = http::Request::builder()
        .method(fixture.method.as_str())
        .uri(&fixture.uri);
    builder = builder.version(match fixture.version.as_deref() {
        Some("HTTP/2.0") => http::Version::HTTP_2,
        _ => http::Version::HTTP_11,
    });
    for (name, value) in &fixture.headers {
        builder = builder.header(name, value);
    }
    let body = match (&fixture.body, &fixture.body_base64) {
        (Some(text), _) => text.as_bytes().to_vec(),
        (None, Some(b64)) => base64::engine::general_purpose::STANDARD
            .decode(b64)
            .unwrap(),
        (None, None) => Vec::new(),
    };
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    (fixture, parts, body)
}

/// Builds both events of a fixture.
fn build(name: &str) -> (Fixture, Vec<u8>, Value, Value) {
    let (fixture, parts, body) = load(name);
    let route = RouteInfo {
        resource: &fixture.route.resource,
        route_key: &fixture.route.route_key,
        path_parameters: &fixture.route.path_parameters,
    };
    let c = &fixture.context;
    let mut ctx = EventContext::new(
        &c.request_id,
        &c.source_ip,
        UNIX_EPOCH + Duration::from_millis(c.request_time_epoch_ms),
    );
    if let Some(stage) = &c.stage {
        ctx.stage = stage;
    }
    ctx.binary_media_types = &c.binary_media_types;
    ctx.stage_variables = c.stage_variables.as_ref();
    ctx.claims = c.claims.as_ref();
    ctx.scopes = c.scopes.as_deref();
    let v1: Value =
        serde_json::from_slice(&build_v1(&parts, &body, &route, &ctx).unwrap()).unwrap();
    let v2: Value =
        serde_json::from_slice(&build_v2(&parts, &body, &route, &ctx).unwrap()).unwrap();
    (fixture, body, v1, v2)
}

/// Compares a built event with its expected file (or rewrites it with `UPDATE_FIXTURES=1`).
fn expect(name: &str, suffix: &str, event: &Value) {
    let path = fixtures_dir().join(format!("{name}.{suffix}.json"));
    if std::env::var_os("UPDATE_FIXTURES").is_some() {
        std::fs::write(&path, serde_json::to_string_pretty(event).unwrap() + "\n").unwrap();
    }
    let expected: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    assert_eq!(
        event,
        &expected,
        "{} differs from the built event",
        path.display()
    );
}

const FIXTURES: [&str; 4] = ["get_query", "post_binary", "post_json", "invalid_utf8"];

#[test]
fn events_match_expected_files() {
    for name in FIXTURES {
        let (_, _, v1, v2) = build(name);
        expect(name, "v1", &v1);
        expect(name, "v2", &v2);
    }
}

#[test]
fn v1_events_deserialize_as_aws_lambda_events_proxy_requests() {
    for name in FIXTURES {
        let (fixture, body, v1, _) = build(name);
        let event: ApiGatewayProxyRequest = serde_json::from_value(v1).unwrap();
        assert_eq!(event.http_method.as_str(), fixture.method);
        assert_eq!(
            event.resource.as_deref(),
            Some(fixture.route.resource.as_str())
        );
        assert_eq!(
            event.request_context.resource_path.as_deref(),
            Some(fixture.route.resource.as_str())
        );
        assert_eq!(
            event.request_context.request_id.as_deref(),
            Some(fixture.context.request_id.as_str())
        );
        assert_eq!(
            event.request_context.identity.source_ip.as_deref(),
            Some(fixture.context.source_ip.as_str())
        );
        assert_eq!(
            event.request_context.request_time_epoch,
            fixture.context.request_time_epoch_ms as i64
        );
        let path_parameters: HashMap<_, _> =
            fixture.route.path_parameters.clone().into_iter().collect();
        assert_eq!(event.path_parameters, path_parameters);
        // Every header value, in order.
        for (name, _) in &fixture.headers {
            let expected: Vec<&str> = fixture
                .headers
                .iter()
                .filter(|(n, _)| n == name)
                .map(|(_, v)| v.as_str())
                .collect();
            let got: Vec<&str> = event
                .multi_value_headers
                .get_all(name)
                .iter()
                .map(|v| v.to_str().unwrap())
                .collect();
            assert_eq!(got, expected, "{name}");
            assert_eq!(event.headers[name.as_str()], *expected.last().unwrap());
        }
        assert_eq!(
            decoded_body(event.body.as_deref(), event.is_base64_encoded),
            body,
            "{name}"
        );
    }
}

#[test]
fn v2_events_deserialize_as_aws_lambda_events_http_requests() {
    for name in FIXTURES {
        let (fixture, body, _, v2) = build(name);
        let event: ApiGatewayV2httpRequest = serde_json::from_value(v2).unwrap();
        assert_eq!(event.version.as_deref(), Some("2.0"));
        assert_eq!(
            event.route_key.as_deref(),
            Some(fixture.route.route_key.as_str())
        );
        let ctx = &event.request_context;
        assert_eq!(ctx.http.method.as_str(), fixture.method);
        assert_eq!(ctx.stage.as_deref(), Some("$default"));
        assert_eq!(ctx.time_epoch, fixture.context.request_time_epoch_ms as i64);
        assert_eq!(
            ctx.http.source_ip.as_deref(),
            Some(fixture.context.source_ip.as_str())
        );
        let (path, query) = fixture.uri.split_once('?').unwrap_or((&fixture.uri, ""));
        assert_eq!(event.raw_path.as_deref(), Some(path));
        assert_eq!(event.raw_query_string.as_deref(), Some(query));
        assert!(!event.headers.contains_key("cookie"));
        assert_eq!(
            decoded_body(event.body.as_deref(), event.is_base64_encoded),
            body,
            "{name}"
        );
    }
}

#[test]
fn query_strings_headers_cookies_and_claims_as_aws_sends_them() {
    let (_, _, v1, v2) = build("get_query");
    let event: ApiGatewayProxyRequest = serde_json::from_value(v1.clone()).unwrap();
    assert_eq!(event.query_string_parameters.all("size"), Some(vec!["XL"]));
    assert_eq!(
        event.multi_value_query_string_parameters.all("size"),
        Some(vec!["L", "XL"])
    );
    assert_eq!(
        event.multi_value_query_string_parameters.first("name"),
        Some("Jürgen+M")
    );
    assert_eq!(
        event.multi_value_query_string_parameters.first("flag"),
        Some("")
    );
    assert_eq!(event.stage_variables["tableName"], "items-prod");
    assert_eq!(event.request_context.stage.as_deref(), Some("prod"));
    assert_eq!(
        event.request_context.request_time.as_deref(),
        Some("04/Mar/2020:19:03:58 +0000")
    );
    assert_eq!(
        v1["requestContext"]["authorizer"]["claims"]["cognito:groups"],
        "[admin dev]"
    );
    assert_eq!(
        v1["requestContext"]["authorizer"]["claims"]["exp"],
        "1900000000"
    );

    let event: ApiGatewayV2httpRequest = serde_json::from_value(v2.clone()).unwrap();
    assert_eq!(
        event.cookies,
        Some(vec![
            "session=abc".into(),
            "theme=dark".into(),
            "lang=en".into()
        ])
    );
    assert_eq!(event.headers["accept"], "text/html,application/json");
    // v2 joins repeated parameters with commas (which aws_lambda_events splits again).
    assert_eq!(v2["queryStringParameters"]["size"], "L,XL");
    assert_eq!(
        event.query_string_parameters.all("size"),
        Some(vec!["L", "XL"])
    );
    let jwt = event.request_context.authorizer.unwrap().jwt.unwrap();
    assert_eq!(jwt.claims["username"], "alice");
    assert_eq!(jwt.claims["email_verified"], "true");
    assert_eq!(jwt.scopes, Some(vec!["items/read".to_owned()]));

    // Nothing to say is null in v1 and absent in v2, as AWS sends it.
    let (_, _, v1, v2) = build("post_json");
    for key in [
        "queryStringParameters",
        "multiValueQueryStringParameters",
        "pathParameters",
        "stageVariables",
    ] {
        assert_eq!(v1[key], Value::Null, "{key}");
        assert!(v1.as_object().unwrap().contains_key(key), "{key}");
        assert!(!v2.as_object().unwrap().contains_key(key), "{key}");
    }
    assert!(!v2.as_object().unwrap().contains_key("cookies"));
    assert!(
        !v1["requestContext"]
            .as_object()
            .unwrap()
            .contains_key("authorizer")
    );
}

#[test]
fn lambda_http_reads_back_the_original_request() {
    for name in FIXTURES {
        let (fixture, body, v1, v2) = build(name);
        for (format, event) in [("v1", v1), ("v2", v2)] {
            let request = lambda_http::request::from_str(&event.to_string()).unwrap_or_else(|e| {
                panic!("{name} {format}: lambda_http cannot read the event: {e}")
            });
            let what = format!("{name} {format}");
            match (format, request.request_context()) {
                ("v1", RequestContext::ApiGatewayV1(_))
                | ("v2", RequestContext::ApiGatewayV2(_)) => {}
                (_, other) => panic!("{what}: read as {other:?}"),
            }
            assert_eq!(request.method().as_str(), fixture.method, "{what}");
            let path = fixture
                .uri
                .split_once('?')
                .map_or(fixture.uri.as_str(), |(p, _)| p);
            assert_eq!(request.raw_http_path(), path, "{what}");
            // lambda_http puts a v1 stage other than $default in front of the path, as on AWS.
            let uri_path = match (format, &fixture.context.stage) {
                ("v1", Some(stage)) => format!("/{stage}{path}"),
                _ => path.to_owned(),
            };
            assert_eq!(request.uri().path(), uri_path, "{what}");
            assert_eq!(request.body().as_ref(), body.as_slice(), "{what}");
            for (name, value) in fixture.path_parameters_pairs() {
                assert_eq!(request.path_parameters().first(name), Some(value), "{what}");
            }
            if name == "get_query" {
                let query = request.query_string_parameters();
                assert_eq!(query.all("size"), Some(vec!["L", "XL"]), "{what}");
                assert_eq!(query.first("color"), Some("red"), "{what}");
            }
            for (header, _) in &fixture.headers {
                if header == "cookie" {
                    continue;
                }
                let expected: Vec<&str> = fixture
                    .headers
                    .iter()
                    .filter(|(n, _)| n == header)
                    .map(|(_, v)| v.as_str())
                    .collect();
                let got: Vec<&str> = request
                    .headers()
                    .get_all(header)
                    .iter()
                    .map(|v| v.to_str().unwrap())
                    .collect();
                match format {
                    // lambda_http lets `headers` (the last value) replace `multiValueHeaders`.
                    "v1" => assert_eq!(
                        got,
                        expected[expected.len() - 1..],
                        "{what}: header {header}"
                    ),
                    _ => assert_eq!(got, [expected.join(",")], "{what}: header {header}"),
                }
            }
        }
    }
}

impl Fixture {
    fn path_parameters_pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.route
            .path_parameters
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

fn decoded_body(body: Option<&str>, base64: bool) -> Vec<u8> {
    match body {
        None => Vec::new(),
        Some(b) if base64 => base64::engine::general_purpose::STANDARD.decode(b).unwrap(),
        Some(b) => b.as_bytes().to_vec(),
    }
}
