//! `http_fn`: a Lambda function built with the official `lambda_http` crate, for the gateway's
//! end-to-end tests. It answers API Gateway v1 and v2 events alike, by the path's last segment:
//!
//! - `.../binary`: the request body back, as binary (`application/octet-stream`);
//! - `.../sleep?ms=N`: sleeps N ms, then echoes;
//! - `.../crash`: exits with status 3 mid-invocation;
//! - anything else: echoes the request as JSON: `method`, `path`, `query` and `headers` (every
//!   value), `pathParameters`, `cookies`, `body` (base64), `requestContext`, `traceId`, `pid`.
//!
//! `?status=N` sets the status, each `?cookie=name=value` adds a `Set-Cookie`, each
//! `?header=name:value` adds that response header.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use lambda_http::{Body, Error, Request, RequestExt, Response, service_fn};
use serde_json::{Value, json};

async fn handler(req: Request) -> Result<Response<Body>, Error> {
    let query = req.query_string_parameters();
    let last = req.uri().path().rsplit('/').next().unwrap_or("").to_owned();
    let status = query
        .first("status")
        .and_then(|s| s.parse::<u16>().ok())
        .unwrap_or(200);
    match last.as_str() {
        "crash" => std::process::exit(3),
        "binary" => {
            return Ok(Response::builder()
                .status(status)
                .header("content-type", "application/octet-stream")
                .body(Body::Binary(req.body().to_vec()))?);
        }
        "sleep" => {
            let ms = query.first("ms").and_then(|s| s.parse().ok()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(ms)).await;
        }
        _ => {}
    }
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (name, value) in req.headers() {
        headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(String::from_utf8_lossy(value.as_bytes()).into_owned());
    }
    let query_all: BTreeMap<String, Vec<String>> = query
        .iter()
        .map(|(key, _)| {
            let values = query
                .all(key)
                .unwrap_or_default()
                .into_iter()
                .map(str::to_owned)
                .collect();
            (key.to_owned(), values)
        })
        .collect();
    let path_parameters: BTreeMap<String, String> = req
        .path_parameters()
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    let cookies: Vec<String> = req
        .headers()
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
        .collect();
    let answer = json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "query": query_all,
        "headers": headers,
        "pathParameters": path_parameters,
        "cookies": cookies,
        "body": base64::engine::general_purpose::STANDARD.encode(req.body().as_ref()),
        "requestContext": serde_json::to_value(req.request_context()).unwrap_or(Value::Null),
        "traceId": req.lambda_context().xray_trace_id,
        "pid": std::process::id(),
    });
    let mut response = Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .header("x-echo", "yes");
    for cookie in query.all("cookie").unwrap_or_default() {
        response = response.header("set-cookie", cookie);
    }
    for header in query.all("header").unwrap_or_default() {
        if let Some((name, value)) = header.split_once(':') {
            response = response.header(name, value);
        }
    }
    Ok(response.body(Body::Text(answer.to_string()))?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_http::run(service_fn(handler)).await
}
