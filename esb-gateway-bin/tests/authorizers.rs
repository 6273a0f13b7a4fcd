//! Lambda authorizers end to end: a `lambda_runtime` authorizer function (TOKEN, REQUEST,
//! HTTP API payload 1.0 and 2.0 with simple responses) in front of a function that answers
//! the event it received, behind a gateway on loopback. Also the JWT claims' placement.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::{Value, json};

const FUNCTIONS: &str = r#"
functions:
  web: { command: ["${EVENT_FN}"] }
  tokens: { command: ["${AUTHORIZER_FN}"], scaling: { max_capacity: 1 } }
  requests: { command: ["${AUTHORIZER_FN}"], scaling: { max_capacity: 1 } }
  simple:
    command: ["${AUTHORIZER_FN}"]
    environment: { AUTH_SIMPLE: "1" }
    scaling: { max_capacity: 1 }
  http10: { command: ["${AUTHORIZER_FN}"], scaling: { max_capacity: 1 } }
"#;

const ROUTING: &str = r#"
authorizers:
  token-auth:
    function: tokens
    type: token
    identity_sources: [method.request.header.Authorization]
    ttl: 300
    validation_expression: "[a-z]+(-[a-z]+)?"
  request-auth:
    function: requests
    type: request
    identity_sources: [method.request.header.Authorization, method.request.querystring.tenant]
  simple-auth:
    function: simple
    type: request
    api: http
    payload_format: "2.0"
    simple_responses: true
    identity_sources: [$request.header.Authorization]
  http10-auth:
    function: http10
    type: request
    api: http
    payload_format: "1.0"
    identity_sources: [$request.header.Authorization]
    ttl: 0
routes:
  - { path: "/token/{id}", method: GET, function: web, auth: token-auth }
  - { path: "/request/{id}", method: GET, function: web, auth: request-auth }
  - { path: "/simple/{id}", method: GET, function: web, auth: simple-auth, payload_format: "2.0" }
  - { path: "/http10", method: GET, function: web, auth: http10-auth }
  - { path: "/jwt/v1", method: GET, function: web }
  - { path: "/jwt/v2", method: GET, function: web, payload_format: "2.0" }
"#;

async fn gateway() -> Gateway {
    support::start(support::config(FUNCTIONS, ROUTING)).await
}

/// GETs `path` with `Authorization: token` (none when `None`): the status and the JSON body.
async fn get(gw: &Gateway, path: &str, token: Option<&str>) -> (StatusCode, Value) {
    let mut request = support::client().get(format!("{}{path}", gw.url()));
    if let Some(token) = token {
        request = request.header("authorization", token);
    }
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

/// The `requestContext.authorizer` the function saw, after a 200.
async fn authorizer_seen(gw: &Gateway, path: &str, token: &str) -> Value {
    let (status, event) = get(gw, path, Some(token)).await;
    assert_eq!(status, StatusCode::OK, "{path} with {token}: {event}");
    event["requestContext"]["authorizer"].clone()
}

/// API Gateway's answers to a request its authorizer did not let through.
const UNAUTHORIZED: (StatusCode, &str) = (StatusCode::UNAUTHORIZED, "Unauthorized");
const FORBIDDEN: (StatusCode, &str) = (StatusCode::FORBIDDEN, "Forbidden");
const EXPLICIT_DENY: (StatusCode, &str) = (
    StatusCode::FORBIDDEN,
    "User is not authorized to access this resource with an explicit deny",
);
const NOT_ALLOWED: (StatusCode, &str) = (
    StatusCode::FORBIDDEN,
    "User is not authorized to access this resource",
);
const AUTHORIZER_FAILED: (StatusCode, &str) =
    (StatusCode::INTERNAL_SERVER_ERROR, "Internal server error");

async fn assert_answer(
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
    (status, message): (StatusCode, &str),
) {
    let (got, body) = get(gw, path, token).await;
    assert_eq!(got, status, "{path} with {token:?}: {body}");
    assert_eq!(body, json!({ "message": message }), "{path} with {token:?}");
}

#[tokio::test]
async fn a_token_authorizer_denies_allows_with_context_and_is_cached_per_token() {
    let gw = gateway().await;
    assert_answer(&gw, "/token/1", None, UNAUTHORIZED).await;
    // Not matching the validation expression (as a whole): 401, the authorizer not invoked.
    for token in ["Allow-A", "allow-a-b", "allow a"] {
        assert_answer(&gw, "/token/1", Some(token), UNAUTHORIZED).await;
    }

    let seen = authorizer_seen(&gw, "/token/1", "allow-a").await;
    let arn = "arn:aws:execute-api:us-east-1:123456789012:esb-local/$default/GET/token/1";
    assert_eq!(
        seen,
        json!({
            "principalId": "user-allow-a",
            "token": "allow-a",
            "calls": "1",
            "number": "7",
            "flag": "true",
            "type": "TOKEN",
            "arn": arn,
        }),
        "REST passes the context as strings, with the principal"
    );
    // The same token within the TTL: the cached answer, the authorizer is not invoked again
    // (a cached policy is checked against each request's own method ARN).
    let again = authorizer_seen(&gw, "/token/1", "allow-a").await;
    assert_eq!(again["calls"], "1");
    // Another token: invoked again.
    let other = authorizer_seen(&gw, "/token/1", "allow-b").await;
    assert_eq!(other["calls"], "2");

    // The function's Deny statement: an explicit deny, as API Gateway words it.
    assert_answer(&gw, "/token/1", Some("deny-x"), EXPLICIT_DENY).await;
    // A denial is cached too: the next new token sees call 4, not 5.
    assert_answer(&gw, "/token/1", Some("deny-x"), EXPLICIT_DENY).await;
    assert_eq!(
        authorizer_seen(&gw, "/token/1", "allow-c").await["calls"],
        "4"
    );
    // A cached Allow for /token/1 does not allow /token/2: the policy names one method ARN,
    // and no statement matching is an implicit deny.
    assert_answer(&gw, "/token/2", Some("allow-a"), NOT_ALLOWED).await;

    assert_answer(&gw, "/token/1", Some("unauthorized"), UNAUTHORIZED).await;
    assert_answer(&gw, "/token/1", Some("garbage"), AUTHORIZER_FAILED).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_request_authorizer_gets_the_request_and_is_cached_by_all_its_identity_sources() {
    let gw = gateway().await;
    // One identity source missing (the query parameter): 401, the authorizer not invoked.
    assert_answer(&gw, "/request/7", Some("allow-a"), UNAUTHORIZED).await;

    let seen = authorizer_seen(&gw, "/request/7?tenant=t1", "allow-a").await;
    assert_eq!(seen["type"], "REQUEST");
    assert_eq!(seen["resource"], "/request/{id}");
    assert_eq!(seen["id"], "7");
    assert_eq!(seen["calls"], "1");
    assert_eq!(seen["principalId"], "user-allow-a");
    assert_eq!(
        authorizer_seen(&gw, "/request/7?tenant=t1", "allow-a").await["calls"],
        "1"
    );
    assert_eq!(
        authorizer_seen(&gw, "/request/7?tenant=t2", "allow-a").await["calls"],
        "2"
    );
    assert_answer(&gw, "/request/7?tenant=t1", Some("deny-a"), EXPLICIT_DENY).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http_api_simple_authorizer_passes_its_context_under_lambda() {
    let gw = gateway().await;
    assert_answer(&gw, "/simple/1", None, UNAUTHORIZED).await;
    let seen = authorizer_seen(&gw, "/simple/1", "allow-a").await;
    let lambda = &seen["lambda"];
    assert_eq!(lambda["token"], "allow-a");
    // HTTP APIs pass the context's values as they are.
    assert_eq!(lambda["calls"], 1);
    assert_eq!(lambda["number"], 7);
    assert_eq!(lambda["flag"], true);
    assert_eq!(lambda["version"], "2.0");
    assert_eq!(lambda["rawPath"], "/simple/1");
    assert_eq!(
        lambda["arn"],
        "arn:aws:execute-api:us-east-1:123456789012:esb-local/$default/GET/simple/1"
    );
    assert!(seen.get("jwt").is_none());
    assert_eq!(
        authorizer_seen(&gw, "/simple/1", "allow-a").await["lambda"]["calls"],
        1,
        "cached for the default 300 s"
    );
    assert_answer(&gw, "/simple/1", Some("deny"), FORBIDDEN).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn an_http_api_payload_1_authorizer_without_cache_is_invoked_every_time() {
    let gw = gateway().await;
    let first = authorizer_seen(&gw, "/http10", "allow-a").await;
    assert_eq!(first["version"], "1.0");
    assert_eq!(first["principalId"], "user-allow-a");
    assert_eq!(first["calls"], 1);
    let second = authorizer_seen(&gw, "/http10", "allow-a").await;
    assert_eq!(second["calls"], 2, "ttl: 0 caches nothing");
    assert_answer(&gw, "/http10", Some("deny"), FORBIDDEN).await;
    gw.shutdown().await;
}

#[tokio::test]
async fn jwt_claims_keep_the_earlier_placement_of_the_cognito_username() {
    let gw = gateway().await;
    let token = support::token(&gw).await;
    let bearer = format!("Bearer {token}");
    let v1 = authorizer_seen(&gw, "/jwt/v1", &bearer).await;
    assert_eq!(v1["claims"]["cognito:username"], "alice");
    assert_eq!(
        v1["cognito:username"], "alice",
        "also at requestContext.authorizer"
    );
    let v2 = authorizer_seen(&gw, "/jwt/v2", &bearer).await;
    assert_eq!(v2["jwt"]["claims"]["cognito:username"], "alice");
    assert_answer(&gw, "/jwt/v1", None, UNAUTHORIZED).await;
    gw.shutdown().await;
}

const TEMPLATE: &str = r#"
Transform: AWS::Serverless-2016-10-31
Resources:
  Authorizer:
    Type: AWS::Serverless::Function
    Properties: { PackageType: Image, ImageUri: "auth:1" }
  SimpleAuthorizer:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: "auth:1"
      Environment: { Variables: { AUTH_SIMPLE: "1" } }
  App:
    Type: AWS::Serverless::Function
    Properties:
      PackageType: Image
      ImageUri: "app:1"
      Events:
        Rest: { Type: Api, Properties: { Path: "/rest/{id}", Method: get, RestApiId: !Ref Rest } }
        Open:
          Type: Api
          Properties: { Path: /open, Method: get, RestApiId: !Ref Rest, Auth: { Authorizer: NONE } }
        Http: { Type: HttpApi, Properties: { Path: /http, Method: get, ApiId: !Ref Http } }
  Rest:
    Type: AWS::Serverless::Api
    Properties:
      StageName: Prod
      Cors: "'https://app.example.com'"
      Auth:
        DefaultAuthorizer: Tokens
        Authorizers:
          Tokens: { FunctionArn: !GetAtt Authorizer.Arn }
  Http:
    Type: AWS::Serverless::HttpApi
    Properties:
      Auth:
        DefaultAuthorizer: Simple
        Authorizers:
          Simple:
            FunctionArn: !GetAtt SimpleAuthorizer.Arn
            AuthorizerPayloadFormatVersion: "2.0"
            EnableSimpleResponses: true
            Identity: { Headers: [Authorization] }
"#;

#[tokio::test]
async fn authorizers_and_cors_of_a_sam_template_run() {
    let mut functions = esb_router::Config::from_sam_str(TEMPLATE, &|_| None).unwrap();
    // The template's images, run as the process backend's commands.
    for (name, function) in &mut functions.functions {
        let bin = match name.as_str() {
            "App" => support::event_fn(),
            _ => support::authorizer_fn(),
        };
        function.image = None;
        function.command = Some(vec![bin.display().to_string()]);
    }
    let gw = support::start(esb_gateway::GatewayConfig::new(
        functions,
        "127.0.0.1:0".parse().unwrap(),
    ))
    .await;
    assert_answer(&gw, "/rest/1", None, UNAUTHORIZED).await;
    let seen = authorizer_seen(&gw, "/rest/1", "allow-a").await;
    assert_eq!(seen["type"], "TOKEN");
    assert_eq!(seen["principalId"], "user-allow-a");
    assert_answer(&gw, "/rest/1", Some("deny"), EXPLICIT_DENY).await;
    let (status, _) = get(&gw, "/open", None).await;
    assert_eq!(status, StatusCode::OK);
    let simple = authorizer_seen(&gw, "/http", "allow-b").await;
    assert_eq!(simple["lambda"]["token"], "allow-b");
    assert_answer(&gw, "/http", Some("deny"), FORBIDDEN).await;
    // The Api's Cors: its OPTIONS answered by the gateway, without the authorizer.
    let response = support::client()
        .request(reqwest::Method::OPTIONS, format!("{}/rest/1", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(
        response.headers()["access-control-allow-origin"],
        "https://app.example.com"
    );
    gw.shutdown().await;
}
