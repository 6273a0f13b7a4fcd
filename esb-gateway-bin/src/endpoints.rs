//! The reserved endpoints besides the Invoke API: `/health`, `/metrics` and the auth
//! endpoint, each a small service.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures::future::{Ready, ready};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::Service;

use crate::auth::Authenticator;
use crate::error::RequestError;
use crate::layers::Body;
use crate::layers::BoxFuture;
use crate::layers::limit::read_body;
use crate::metrics::GatewayMetrics;

/// `GET /health`: `{"status":"healthy","timestamp":...}`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Health;

impl<B> Service<Request<B>> for Health {
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = Ready<Result<Response<Body>, RequestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(only(&req, &[Method::GET, Method::HEAD]).map(|()| {
            let body = serde_json::json!({
                "status": "healthy",
                "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            });
            json(StatusCode::OK, body.to_string())
        }))
    }
}

/// `GET /metrics`: every series in Prometheus text.
#[derive(Clone)]
pub(crate) struct MetricsText {
    metrics: Arc<GatewayMetrics>,
}

impl MetricsText {
    pub fn new(metrics: Arc<GatewayMetrics>) -> Self {
        Self { metrics }
    }
}

impl<B> Service<Request<B>> for MetricsText {
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = Ready<Result<Response<Body>, RequestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        ready(only(&req, &[Method::GET]).map(|()| {
            text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            )
        }))
    }
}

/// `POST` to the auth endpoint: credentials in, an `IdToken` out.
#[derive(Clone)]
pub(crate) struct Login {
    auth: Arc<Authenticator>,
    limit: usize,
}

impl Login {
    /// The endpoint, when `auth` is configured to issue tokens.
    pub fn new(auth: Arc<Authenticator>, limit: usize) -> Option<Self> {
        auth.issues_tokens().then_some(Self { auth, limit })
    }
}

impl Service<Request<Incoming>> for Login {
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = BoxFuture<Result<Response<Body>, RequestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            only(&req, &[Method::POST])?;
            let (parts, body) = req.into_parts();
            let body = read_body(body, &parts.headers, this.limit).await?;
            let answer = this.auth.login(&parts.headers, &body)?;
            Ok(json(StatusCode::OK, answer.to_string()))
        })
    }
}

/// 405 unless the request's method is one of `methods`.
pub(crate) fn only<B>(req: &Request<B>, methods: &[Method]) -> Result<(), RequestError> {
    if methods.contains(req.method()) {
        Ok(())
    } else {
        Err(RequestError::MethodNotAllowed {
            allowed: methods.to_vec(),
        })
    }
}

/// A JSON answer.
pub(crate) fn json(status: StatusCode, body: String) -> Response<Body> {
    text(status, "application/json", body)
}

fn text(status: StatusCode, content_type: &'static str, body: String) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// An answer without a body.
pub(crate) fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}
