//! API Gateway REST (v1) and HTTP API (v2) proxy events built from HTTP requests, and Lambda responses mapped back.
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::time::SystemTime;
//!
//! use esb_events::{EventContext, RouteInfo, build_v2, map_response_v2};
//!
//! let (parts, body) = http::Request::post("/items/42?color=red")
//!     .header("host", "api.example.com")
//!     .body(&b"{\"n\":1}"[..])
//!     .unwrap()
//!     .into_parts();
//! let params = BTreeMap::from([("id".to_owned(), "42".to_owned())]);
//! let route = RouteInfo { resource: "/items/{id}", route_key: "POST /items/{id}", path_parameters: &params };
//! let ctx = EventContext::new("req-1", "127.0.0.1", SystemTime::now());
//!
//! let event: serde_json::Value = serde_json::from_slice(&build_v2(&parts, body, &route, &ctx)?).unwrap();
//! assert_eq!(event["pathParameters"]["id"], "42");
//! assert_eq!(event["queryStringParameters"]["color"], "red");
//!
//! let response = map_response_v2(br#"{"statusCode":201,"body":"made","cookies":["a=1"]}"#)?;
//! assert_eq!(response.status(), 201);
//! assert_eq!(response.headers()["set-cookie"], "a=1");
//! # Ok::<(), esb_events::Error>(())
//! ```
//!
//! Events are serialized straight from the request (no intermediate `serde_json::Value`).
//! Calls through the Lambda Invoke API (`POST /2015-03-31/functions/{name}/invocations`) are
//! not API Gateway events: their payload goes to the function unchanged, and its result comes
//! back unchanged, so they do not use this crate.

mod error;
mod json;
mod request;
mod response;
mod v1;
mod v2;

pub use error::Error;
pub use request::{EventContext, RouteInfo};
pub use response::{map_response_v1, map_response_v2};
pub use v1::build_v1;
pub use v2::build_v2;
