//! CORS as API Gateway answers it for an API that has a CORS configuration: preflight
//! `OPTIONS` requests are answered by the gateway itself (no authorizer, no function), and
//! HTTP APIs add `Access-Control-Allow-Origin` (and the rest) to proxied answers.
//!
//! - REST (SAM `Cors`): every `OPTIONS` of a routed path gets 200 with the configured
//!   headers as they are, as the mock `OPTIONS` method SAM adds answers.
//! - HTTP (SAM `CorsConfiguration`, `routing.yml` `cors`): a preflight (`OPTIONS` with
//!   `Origin` and `Access-Control-Request-Method`) gets 204, with the CORS headers when its
//!   origin is allowed; other requests from an allowed origin get the origin, credentials and
//!   exposed headers on their answer; the function's own `Access-Control-*` headers are
//!   dropped, as API Gateway ignores them when the API has CORS.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use esb_router::{ApiKind, CorsConfig, NoRoute, Router};
use futures::future::{Either, Ready, ready};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use tower::{Layer, Service};

use super::{Body, BoxFuture};
use crate::error::RequestError;

/// Answers preflights and adds CORS headers for routes whose API has CORS.
#[derive(Clone)]
pub(crate) struct CorsLayer {
    router: Arc<Router>,
    /// Whether any route has CORS (else requests pass untouched).
    enabled: bool,
}

impl CorsLayer {
    pub fn new(router: Arc<Router>, enabled: bool) -> Self {
        Self { router, enabled }
    }
}

impl<S> Layer<S> for CorsLayer {
    type Service = Cors<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Cors {
            inner,
            router: Arc::clone(&self.router),
            enabled: self.enabled,
        }
    }
}

/// See [`CorsLayer`].
#[derive(Clone)]
pub(crate) struct Cors<S> {
    inner: S,
    router: Arc<Router>,
    enabled: bool,
}

type Result<T> = std::result::Result<T, RequestError>;

impl<S, B> Service<Request<B>> for Cors<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = RequestError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = RequestError;
    type Future =
        Either<Ready<Result<Response<Body>>>, Either<S::Future, BoxFuture<Result<Response<Body>>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let cors = if self.enabled {
            cors_of(&self.router, req.method(), req.uri().path())
        } else {
            None
        };
        let Some(cors) = cors else {
            return Either::Right(Either::Left(self.inner.call(req)));
        };
        let origin = req.headers().get(header::ORIGIN).cloned();
        if req.method() == Method::OPTIONS {
            match cors.api {
                ApiKind::Http => {
                    let preflight = origin.is_some()
                        && req
                            .headers()
                            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
                    if preflight {
                        return Either::Left(ready(Ok(http_preflight(&cors, origin.as_ref()))));
                    }
                }
                _ => return Either::Left(ready(Ok(rest_preflight(&cors)))),
            }
        }
        if cors.api != ApiKind::Http {
            return Either::Right(Either::Left(self.inner.call(req)));
        }
        let allowed = origin.as_ref().and_then(|o| allowed_origin(&cors, o));
        let answer = self.inner.call(req);
        Either::Right(Either::Right(Box::pin(async move {
            let mut response = answer.await?;
            let headers = response.headers_mut();
            // As API Gateway: the configuration's CORS headers, never the function's.
            let theirs: Vec<_> = headers
                .keys()
                .filter(|name| name.as_str().starts_with("access-control-"))
                .cloned()
                .collect();
            for name in theirs {
                headers.remove(name);
            }
            let Some(allowed) = allowed else {
                return Ok(response);
            };
            headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
            if cors.allow_credentials {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            insert_list(
                headers,
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                &cors.expose_headers,
            );
            Ok(response)
        })))
    }
}

/// The CORS of the API a path belongs to: its route's for this method, or (for a method
/// the path has no route for, as a preflight's `OPTIONS`) that of any route of the path.
fn cors_of(router: &Router, method: &Method, path: &str) -> Option<Arc<CorsConfig>> {
    match router.select(method, path) {
        Ok(found) => found.cors,
        Err(NoRoute::MethodNotAllowed { allowed }) => allowed
            .first()
            .and_then(|other| router.select(other, path).ok())
            .and_then(|found| found.cors),
        Err(_) => None,
    }
}

/// The `Access-Control-Allow-Origin` an HTTP API answers `origin` with, if it is allowed.
fn allowed_origin(cors: &CorsConfig, origin: &HeaderValue) -> Option<HeaderValue> {
    if cors.allow_origins.iter().any(|o| o == "*") {
        return Some(HeaderValue::from_static("*"));
    }
    let origin_text = origin.to_str().ok()?;
    cors.allow_origins
        .iter()
        .any(|o| o.eq_ignore_ascii_case(origin_text))
        .then(|| origin.clone())
}

/// HTTP API preflight: 204, with the CORS headers when the origin is allowed.
fn http_preflight(cors: &CorsConfig, origin: Option<&HeaderValue>) -> Response<Body> {
    let mut response = empty(StatusCode::NO_CONTENT);
    if let Some(allowed) = origin.and_then(|o| allowed_origin(cors, o)) {
        let headers = response.headers_mut();
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allowed);
        common(headers, cors);
    }
    response
}

/// REST API preflight (SAM's mock `OPTIONS` method): 200 with the configured headers.
fn rest_preflight(cors: &CorsConfig) -> Response<Body> {
    let mut response = empty(StatusCode::OK);
    let headers = response.headers_mut();
    insert_list(
        headers,
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        &cors.allow_origins,
    );
    common(headers, cors);
    response
}

/// Methods, headers, max age and credentials of a preflight answer.
fn common(headers: &mut HeaderMap, cors: &CorsConfig) {
    insert_list(
        headers,
        header::ACCESS_CONTROL_ALLOW_METHODS,
        &cors.allow_methods,
    );
    insert_list(
        headers,
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        &cors.allow_headers,
    );
    if let Some(max_age) = cors.max_age {
        headers.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(max_age));
    }
    if cors.allow_credentials {
        headers.insert(
            header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
            HeaderValue::from_static("true"),
        );
    }
}

/// Sets `name` to the values joined with commas, unless there are none (or they are not
/// valid header text).
fn insert_list(headers: &mut HeaderMap, name: header::HeaderName, values: &[String]) {
    if values.is_empty() {
        return;
    }
    if let Ok(value) = HeaderValue::from_str(&values.join(",")) {
        headers.insert(name, value);
    }
}

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
