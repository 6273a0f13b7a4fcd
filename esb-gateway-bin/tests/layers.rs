//! An embedder's own tower layer in the gateway's stack: it sees every answer, the
//! gateway's reserved paths, routes and errors alike, and the ids are still stamped.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use esb_gateway::{Body, Gateway};
use esb_runtime::logs::NullLogSink;
use http::HeaderValue;
use reqwest::StatusCode;
use tower::util::MapResponseLayer;

const FUNCTIONS: &str = r#"
functions:
  web:
    command: ["${HTTP_FN}"]
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/v1/{proxy+}", method: ANY, function: web, auth: none }
"#;

#[tokio::test]
async fn an_embedders_layer_sees_every_answer() {
    let tag = MapResponseLayer::new(|mut response: http::Response<Body>| {
        response
            .headers_mut()
            .insert("x-embedder", HeaderValue::from_static("yes"));
        response
    });
    let gateway = Gateway::builder(
        support::config(FUNCTIONS, ROUTING),
        vec![support::process_runtime(Arc::new(NullLogSink))],
    )
    .layer(tag)
    .start()
    .await
    .unwrap();
    for (path, status) in [
        ("/v1/echo", StatusCode::OK),
        ("/health", StatusCode::OK),
        ("/nowhere", StatusCode::NOT_FOUND),
    ] {
        let response = support::client()
            .get(format!("{}{path}", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "{path}");
        assert_eq!(response.headers()["x-embedder"], "yes", "{path}");
        assert!(
            response.headers().contains_key("x-amzn-requestid"),
            "{path}"
        );
    }
    gateway.shutdown().await;
}
