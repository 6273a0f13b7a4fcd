//! The gateway end to end: real function processes (`lambda_http` and `lambda_runtime`)
//! behind a gateway on loopback, called over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use base64::Engine;
use esb_gateway::Gateway;
use reqwest::StatusCode;
use serde_json::{Value, json};

const FUNCTIONS: &str = r#"
functions:
  web:
    command: ["${HTTP_FN}"]
    timeout: 1
  solo:
    command: ["${HTTP_FN}"]
    timeout: 1
    scaling: { max_capacity: 1 }
  plain:
    command: ["${TESTFN}"]
  raw:
    command: ["${EVENT_FN}"]
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/v1/{proxy+}", method: ANY, function: web, auth: none }
  - { path: "/v2/{proxy+}", method: ANY, function: web, auth: none, payload_format: "2.0" }
  - { path: "/secure/v1/{proxy+}", method: ANY, function: web }
  - { path: "/secure/v2/{proxy+}", method: ANY, function: web, payload_format: "2.0" }
  - { path: "/items/{id}", method: GET, function: web, auth: none }
  - { path: "/solo/{proxy+}", method: GET, function: solo, auth: none }
  - { path: "/malformed", method: GET, function: plain, auth: none }
  - { path: "/raw/v1/{proxy+}", method: ANY, function: raw, auth: none }
  - { path: "/raw/v2/{proxy+}", method: ANY, function: raw, auth: none, payload_format: "2.0" }
"#;

async fn gateway() -> Gateway {
    support::start(support::config(FUNCTIONS, ROUTING)).await
}

async fn get_json(url: String) -> (StatusCode, Value) {
    let response = support::client().get(url).send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap())
}

fn assert_message(body: &Value, message: &str) {
    assert_eq!(body, &json!({ "message": message }));
}

/// An error answer: its status and its `{"message": ...}`.
async fn assert_error(response: reqwest::Response, status: StatusCode, message: &str) {
    assert_eq!(response.status(), status);
    assert_message(&response.json().await.unwrap(), message);
}

#[tokio::test]
async fn a_v1_route_carries_path_query_multi_value_headers_and_cookies_both_ways() {
    let gw = gateway().await;
    let response = support::client()
        .get(format!(
            "{}/v1/items/42/echo?a=1&a=2&b=x&status=201&cookie=s1%3Done&cookie=s2%3Dtwo",
            gw.url()
        ))
        .header("x-multi", "one")
        .header("x-multi", "two")
        .header("cookie", "c1=v1; c2=v2")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["x-echo"], "yes");
    let set_cookies: Vec<&str> = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(set_cookies, ["s1=one", "s2=two"]);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["method"], "GET");
    assert_eq!(body["path"], "/v1/items/42/echo");
    assert_eq!(body["pathParameters"]["proxy"], "items/42/echo");
    assert_eq!(body["query"]["a"], json!(["1", "2"]));
    assert_eq!(body["query"]["b"], json!(["x"]));
    // lambda_http keeps the last value of a repeated header, as it reads `headers` last.
    assert_eq!(body["headers"]["x-multi"], json!(["two"]));
    assert_eq!(body["cookies"], json!(["c1=v1", "c2=v2"]));
    gw.shutdown().await;
}

#[tokio::test]
async fn the_raw_events_hold_every_value_of_repeated_headers_and_query_parameters() {
    let gw = gateway().await;
    let send = |version: &str| {
        support::client()
            .get(format!("{}/raw/{version}/x?a=1&a=2", gw.url()))
            .header("x-multi", "one")
            .header("x-multi", "two")
            .send()
    };
    let v1: Value = send("v1").await.unwrap().json().await.unwrap();
    assert_eq!(
        v1["multiValueHeaders"]["x-multi"],
        json!(["one", "two"]),
        "{v1}"
    );
    assert_eq!(v1["headers"]["x-multi"], "two");
    assert_eq!(
        v1["multiValueQueryStringParameters"]["a"],
        json!(["1", "2"])
    );
    assert_eq!(v1["resource"], "/raw/v1/{proxy+}");
    assert_eq!(
        v1["requestContext"]["requestId"].as_str().map(str::len),
        Some(36)
    );
    let v2: Value = send("v2").await.unwrap().json().await.unwrap();
    assert_eq!(v2["version"], "2.0");
    assert_eq!(v2["headers"]["x-multi"], "one,two", "{v2}");
    assert_eq!(v2["queryStringParameters"]["a"], "1,2");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_v2_route_carries_path_parameters_cookies_and_status() {
    let gw = gateway().await;
    let response = support::client()
        .post(format!("{}/v2/orders/7?status=418&cookie=k%3Dv", gw.url()))
        .header("cookie", "c1=v1; c2=v2")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::IM_A_TEAPOT);
    assert_eq!(response.headers()["set-cookie"], "k=v");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["method"], "POST");
    assert_eq!(body["pathParameters"]["proxy"], "orders/7");
    assert_eq!(body["cookies"], json!(["c1=v1", "c2=v2"]));
    assert_eq!(
        base64::engine::general_purpose::STANDARD
            .decode(body["body"].as_str().unwrap())
            .unwrap(),
        b"hello"
    );
    assert_eq!(body["requestContext"]["routeKey"], "ANY /v2/{proxy+}");
    gw.shutdown().await;
}

#[tokio::test]
async fn binary_bodies_round_trip_on_v1_and_v2() {
    let gw = gateway().await;
    let bytes: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    for prefix in ["v1", "v2"] {
        let response = support::client()
            .post(format!("{}/{prefix}/blob/binary", gw.url()))
            .header("content-type", "application/octet-stream")
            .body(bytes.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK, "{prefix}");
        assert_eq!(
            response.headers()["content-type"],
            "application/octet-stream"
        );
        assert_eq!(
            response.bytes().await.unwrap().as_ref(),
            &bytes[..],
            "{prefix}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn every_response_carries_a_request_id_and_the_callers_trace_id_reaches_the_function() {
    let gw = gateway().await;
    let trace = "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1";
    let response = support::client()
        .get(format!("{}/v1/echo", gw.url()))
        .header("x-amzn-trace-id", trace)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-amzn-trace-id"], trace);
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = response.json().await.unwrap();
    // The function's header, as Lambda's: the caller's root and sampling, a segment of its own.
    let seen = body["traceId"].as_str().unwrap();
    let parent = seen
        .strip_prefix("Root=1-5759e988-bd862e3fe1be46a994272793;Parent=")
        .and_then(|rest| rest.strip_suffix(";Sampled=1"))
        .unwrap_or_else(|| panic!("{seen}"));
    assert_eq!(parent.len(), 16, "{seen}");
    assert_eq!(body["requestContext"]["requestId"], request_id.as_str());

    // Errors too, with a generated trace id.
    let response = support::client()
        .get(format!("{}/nowhere", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    assert!(response.headers().contains_key("x-amzn-requestid"));
    let generated = response.headers()["x-amzn-trace-id"].to_str().unwrap();
    assert!(generated.starts_with("Root=1-"), "{generated}");
    gw.shutdown().await;
}

#[tokio::test]
async fn jwt_claims_reach_the_function_and_bad_or_missing_tokens_get_401() {
    let gw = gateway().await;
    let token = support::token(&gw).await;
    let client = support::client();

    let v1: Value = client
        .get(format!("{}/secure/v1/me", gw.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v1["requestContext"]["authorizer"]["claims"]["sub"], "alice",
        "{v1}"
    );
    let v2: Value = client
        .get(format!("{}/secure/v2/me", gw.url()))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        v2["requestContext"]["authorizer"]["jwt"]["claims"]["sub"], "alice",
        "{v2}"
    );

    let forged = {
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let claims = json!({"sub": "mallory", "exp": 4_000_000_000u64}).to_string();
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(claims);
        parts.join(".")
    };
    for auth in [
        None,
        Some("Bearer not-a-jwt".to_owned()),
        Some(format!("Bearer {forged}")),
    ] {
        let mut request = client.get(format!("{}/secure/v1/me", gw.url()));
        if let Some(auth) = &auth {
            request = request.header("authorization", auth);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{auth:?}");
        assert_message(&response.json().await.unwrap(), "Unauthorized");
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn the_auth_endpoint_rejects_a_wrong_api_key_or_password() {
    let gw = gateway().await;
    let client = support::client();
    for (key, password) in [("wrong", "wonderland"), ("test-api-key", "wrong")] {
        let response = client
            .post(format!("{}/user/auth/v1", gw.url()))
            .header("x-api-key", key)
            .json(&json!({"AuthParameters": {"USERNAME": "alice", "PASSWORD": password}}))
            .send()
            .await
            .unwrap();
        assert_error(response, StatusCode::UNAUTHORIZED, "Unauthorized").await;
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_get_404_and_wrong_methods_405() {
    let gw = gateway().await;
    let (status, body) = get_json(format!("{}/nothing/here", gw.url())).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_message(&body, "Not Found");

    let response = support::client()
        .delete(format!("{}/items/1", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET");
    assert_error(
        response,
        StatusCode::METHOD_NOT_ALLOWED,
        "Method Not Allowed",
    )
    .await;

    let (status, body) = get_json(format!("{}/items/1", gw.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["pathParameters"]["id"], "1");
    gw.shutdown().await;
}

#[tokio::test]
async fn a_body_over_6_mb_gets_413() {
    let gw = gateway().await;
    let response = support::client()
        .post(format!("{}/v1/echo", gw.url()))
        .body(vec![b'a'; 6 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_error(
        response,
        StatusCode::PAYLOAD_TOO_LARGE,
        "Request Entity Too Large",
    )
    .await;
    gw.shutdown().await;
}

#[tokio::test]
async fn a_malformed_function_response_gets_502() {
    let gw = gateway().await;
    let (status, body) = get_json(format!("{}/malformed", gw.url())).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    assert_message(&body, "Internal server error");
    gw.shutdown().await;
}

/// `path` of the one-sandbox function answers `status` with `message`, and the next
/// request is served by a new sandbox.
async fn assert_a_new_sandbox_after(path: &str, status: StatusCode, message: &str) {
    let gw = gateway().await;
    let (_, first) = get_json(format!("{}/solo/echo", gw.url())).await;
    let (answered, body) = get_json(format!("{}{path}", gw.url())).await;
    assert_eq!(answered, status);
    assert_message(&body, message);
    let (answered, next) = get_json(format!("{}/solo/echo", gw.url())).await;
    assert_eq!(answered, StatusCode::OK);
    assert_ne!(next["pid"], first["pid"]);
    gw.shutdown().await;
}

#[tokio::test]
async fn a_timeout_gets_504_and_the_next_request_a_new_sandbox() {
    assert_a_new_sandbox_after(
        "/solo/sleep?ms=3000",
        StatusCode::GATEWAY_TIMEOUT,
        "Endpoint request timed out",
    )
    .await;
}

#[tokio::test]
async fn a_crash_gets_502_and_the_next_request_a_new_sandbox() {
    assert_a_new_sandbox_after(
        "/solo/crash",
        StatusCode::BAD_GATEWAY,
        "Internal server error",
    )
    .await;
}

#[tokio::test]
async fn health_and_metrics_answer() {
    let gw = gateway().await;
    let (status, health) = get_json(format!("{}/health", gw.url())).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(health["status"], "healthy");
    assert!(health["timestamp"].as_str().is_some());

    let (status, _) = get_json(format!("{}/v1/echo", gw.url())).await;
    assert_eq!(status, StatusCode::OK);
    let metrics = support::client()
        .get(format!("{}/metrics", gw.url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "esb_gateway_invocations_total{function=\"web\"}",
        "esb_gateway_duration_seconds_bucket{function=\"web\"",
        "esb_gateway_cold_starts_total{function=\"web\"}",
        "esb_pool_sandboxes{function=\"web\",state=\"idle\"}",
        "esb_pool_queue_depth{function=\"web\"}",
    ] {
        assert!(
            metrics.contains(series),
            "{series} missing from:\n{metrics}"
        );
    }
    gw.shutdown().await;
}

#[tokio::test]
async fn h2_is_served_on_plain_http_and_over_tls() {
    let mut config = support::config(FUNCTIONS, ROUTING);
    let gw = support::start(config.clone()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = h2
        .get(format!("{}/v1/echo", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    gw.shutdown().await;

    config.tls = Some(esb_gateway::TlsConfig::SelfSigned);
    let gw = support::start(config).await;
    assert!(gw.url().starts_with("https://"));
    let response = support::client()
        .get(format!("{}/v1/echo", gw.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    assert_eq!(response.status(), StatusCode::OK);
    gw.shutdown().await;
}

#[tokio::test]
async fn shutdown_lets_an_in_flight_request_finish() {
    let gw = gateway().await;
    let url = format!("{}/v1/sleep?ms=500", gw.url());
    let in_flight = tokio::spawn(async move { support::client().get(url).send().await });
    // Shut down only once the request is in the function (a loaded machine may take a while
    // to connect), so the test is about a request in flight, not one still connecting.
    let pools = format!("{}/metrics/pools", gw.url());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let status: serde_json::Value = support::client()
            .get(&pools)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let busy = status["pools"]
            .as_array()
            .unwrap()
            .iter()
            .any(|pool| pool["busy"].as_u64().unwrap_or(0) > 0);
        if busy {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the request never reached the function: {status}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let addr = gw.local_addr();
    gw.shutdown().await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
