//! The JSON status endpoints: `/functions`, `/routes`, `/metrics/pools`, `/metrics/containers`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::StatusCode;
use serde_json::{Value, json};

const FUNCTIONS: &str = r#"
functions:
  web:
    command: ["${HTTP_FN}"]
    timeout: 3
    memory_size: 256
    environment: { SECRET_TOKEN: "do-not-show" }
    scaling: { max_capacity: 3, min_capacity: 0, acquire_timeout: 2.0, idle_timeout: 60 }
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/web/{proxy+}", method: GET, function: web, auth: none }
  - { path: "/private", method: POST, function: web }
"#;

async fn get(url: String) -> Value {
    let response = support::client().get(url).send().await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["content-type"], "application/json");
    response.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_endpoints_describe_functions_routes_pools_and_sandboxes() {
    let gateway = support::start(support::config(FUNCTIONS, ROUTING)).await;
    let base = gateway.url();
    let response = support::client()
        .get(format!("{base}/web/echo"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);

    let functions = get(format!("{base}/functions")).await;
    let web = &functions["functions"][0];
    assert_eq!(web["name"], "web");
    assert_eq!(web["command"][0], support::http_fn().display().to_string());
    assert_eq!(web["image"], Value::Null);
    assert_eq!(web["timeout"], 3.0);
    assert_eq!(web["memory_size"], 256);
    assert_eq!(web["invoke"], "runtime-api");
    assert_eq!(web["payload_format"], "1.0");
    assert_eq!(web["environment"], json!(["SECRET_TOKEN"]));
    assert!(!functions.to_string().contains("do-not-show"));
    assert_eq!(
        web["scaling"],
        json!({"min_capacity": 0, "max_capacity": 3, "idle_timeout": 60.0, "acquire_timeout": 2.0})
    );

    let routes = get(format!("{base}/routes")).await;
    assert_eq!(
        routes["routes"],
        json!([
            {"path": "/web/{proxy+}", "method": "GET", "function": "web", "auth": "none", "payload_format": null, "cors": false},
            {"path": "/private", "method": "POST", "function": "web", "auth": "jwt", "payload_format": null, "cors": false},
        ])
    );

    let pools = get(format!("{base}/metrics/pools")).await;
    let pool = &pools["pools"][0];
    assert_eq!(pool["function"], "web");
    assert_eq!(pool["total"], 1);
    assert_eq!(
        pool["idle"].as_u64().unwrap() + pool["paused"].as_u64().unwrap(),
        1
    );
    assert_eq!(pool["busy"], 0);
    assert_eq!(pool["creating"], 0);
    assert_eq!(pool["destroying"], 0);
    assert_eq!(pool["waiting"], 0);
    assert_eq!(pool["min_capacity"], 0);
    assert_eq!(pool["max_capacity"], 3);
    assert_eq!(pool["breaker"], "closed");

    let containers = get(format!("{base}/metrics/containers")).await;
    assert_eq!(containers["errors"], json!([]));
    let sandboxes = containers["containers"].as_array().unwrap();
    assert_eq!(sandboxes.len(), 1, "{containers}");
    let sandbox = &sandboxes[0];
    assert!(
        sandbox["id"].as_str().unwrap().starts_with("web-"),
        "{sandbox}"
    );
    assert_eq!(sandbox["function"], "web");
    assert!(["running", "paused"].contains(&sandbox["state"].as_str().unwrap()));
    assert!(sandbox["created_at"].as_f64().unwrap() > 1.7e9);
    assert_eq!(sandbox["runtime"], 0);
    assert_eq!(sandbox["backend"], "process");
    assert!(sandbox["memory_current_bytes"].as_u64().unwrap() > 0);
    assert!(sandbox["memory_max_bytes"].as_u64().unwrap() > 0);
    assert!(sandbox["cpu_usage_ns"].as_u64().is_some());
    assert!(sandbox["pids"].as_u64().unwrap() >= 1);

    let response = support::client()
        .post(format!("{base}/functions"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    gateway.shutdown().await;
}
