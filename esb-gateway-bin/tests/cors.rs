//! CORS answered by the gateway: HTTP API preflights (204) and headers on proxied answers
//! from `routing.yml`'s `cors`, and REST preflights (200, SAM's mock `OPTIONS`), never
//! invoking a function or an authorizer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use esb_gateway::{Gateway, GatewayConfig};
use esb_router::{ApiKind, CorsConfig};
use reqwest::{Method, StatusCode};

const FUNCTIONS: &str = r#"
functions:
  web: { command: ["${EVENT_FN}"] }
  echo: { command: ["${HTTP_FN}"] }
  ghost: { command: ["/nonexistent/esb-cors-test-fn"] }
"#;

const ROUTING: &str = r#"
cors:
  allow_origins: ["https://app.example.com"]
  allow_methods: [GET, POST]
  allow_headers: [content-type, authorization]
  expose_headers: [x-total]
  max_age: 600
  allow_credentials: true
routes:
  - { path: "/open", method: GET, function: web, auth: none }
  - { path: "/ghost", method: POST, function: ghost }
  - { path: "/echo", method: GET, function: echo, auth: none }
"#;

fn header(response: &reqwest::Response, name: &str) -> Option<String> {
    response
        .headers()
        .get(name)
        .map(|v| v.to_str().unwrap().to_owned())
}

async fn preflight(gw: &Gateway, path: &str, origin: &str) -> reqwest::Response {
    support::client()
        .request(Method::OPTIONS, format!("{}{path}", gw.url()))
        .header("origin", origin)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_http_api_preflight_is_answered_by_the_gateway_and_answers_carry_the_origin() {
    let gw = support::start(support::config(FUNCTIONS, ROUTING)).await;

    // The route needs a JWT and its function cannot start: a 204 shows neither ran.
    let response = preflight(&gw, "/ghost", "https://app.example.com").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&response, "access-control-allow-methods").as_deref(),
        Some("GET,POST")
    );
    assert_eq!(
        header(&response, "access-control-allow-headers").as_deref(),
        Some("content-type,authorization")
    );
    assert_eq!(
        header(&response, "access-control-max-age").as_deref(),
        Some("600")
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials").as_deref(),
        Some("true")
    );

    // An origin not allowed: 204 without CORS headers, so the browser refuses.
    let response = preflight(&gw, "/ghost", "https://evil.example.com").await;
    assert_eq!(response.status(), StatusCode::NO_CONTENT);
    assert_eq!(header(&response, "access-control-allow-origin"), None);

    // A proxied answer to an allowed origin carries the origin, credentials and exposed headers.
    let response = support::client()
        .get(format!("{}/open", gw.url()))
        .header("origin", "https://app.example.com")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("https://app.example.com")
    );
    assert_eq!(
        header(&response, "access-control-expose-headers").as_deref(),
        Some("x-total")
    );
    assert_eq!(
        header(&response, "access-control-allow-credentials").as_deref(),
        Some("true")
    );
    // Without an Origin (not a CORS request) or from another origin: none.
    for origin in [None, Some("https://evil.example.com")] {
        let mut request = support::client().get(format!("{}/open", gw.url()));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(
            header(&response, "access-control-allow-origin"),
            None,
            "{origin:?}"
        );
    }
    // The function's own CORS headers give way to the configuration's, or go.
    let own = "/echo?header=access-control-allow-origin:https://fn.example&header=access-control-max-age:9";
    for (origin, expected) in [
        (
            Some("https://app.example.com"),
            Some("https://app.example.com"),
        ),
        (Some("https://evil.example.com"), None),
        (None, None),
    ] {
        let mut request = support::client().get(format!("{}{own}", gw.url()));
        if let Some(origin) = origin {
            request = request.header("origin", origin);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(header(&response, "x-echo").as_deref(), Some("yes"));
        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            expected,
            "{origin:?}"
        );
        assert_eq!(header(&response, "access-control-max-age"), None);
    }
    // An OPTIONS that is no preflight, on a path without an OPTIONS route: 405 as before.
    let response = support::client()
        .request(Method::OPTIONS, format!("{}/open", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_rest_api_preflight_gets_the_configured_headers_and_answers_are_left_alone() {
    let mut functions = support::load(FUNCTIONS, "routes: []");
    let mut cors = CorsConfig::new(ApiKind::Rest, vec!["*".into()]);
    cors.allow_methods = vec!["GET".into(), "OPTIONS".into()];
    cors.allow_headers = vec!["X-Custom".into()];
    let cors = Arc::new(cors);
    let routing = support::load(FUNCTIONS, ROUTING);
    functions.routes = routing
        .routes
        .into_iter()
        .map(|mut route| {
            route.cors = Some(Arc::clone(&cors));
            route
        })
        .collect();
    let config = GatewayConfig::new(functions, "127.0.0.1:0".parse().unwrap())
        .auth(esb_gateway::AuthConfig::default().jwt_secret(support::SECRET));
    let gw = support::start(config).await;

    // Any OPTIONS of the path, preflight or not, is SAM's mock method: 200.
    for preflight in [true, false] {
        let mut request = support::client().request(Method::OPTIONS, format!("{}/ghost", gw.url()));
        if preflight {
            request = request
                .header("origin", "https://anywhere.example")
                .header("access-control-request-method", "GET");
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK, "preflight: {preflight}");
        assert_eq!(
            header(&response, "access-control-allow-origin").as_deref(),
            Some("*")
        );
        assert_eq!(
            header(&response, "access-control-allow-methods").as_deref(),
            Some("GET,OPTIONS")
        );
        assert_eq!(
            header(&response, "access-control-allow-headers").as_deref(),
            Some("X-Custom")
        );
        assert_eq!(header(&response, "access-control-max-age"), None);
    }
    // A REST API leaves the proxied answer's headers to the function.
    let response = support::client()
        .get(format!("{}/open", gw.url()))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(header(&response, "access-control-allow-origin"), None);
    let response = support::client()
        .get(format!(
            "{}/echo?header=access-control-allow-origin:https://fn.example",
            gw.url()
        ))
        .header("origin", "https://anywhere.example")
        .send()
        .await
        .unwrap();
    assert_eq!(
        header(&response, "access-control-allow-origin").as_deref(),
        Some("https://fn.example")
    );
    gw.shutdown().await;
}
