//! One access record per request (method, path, status, duration, ids), at `debug` level
//! on the `esb_gateway::access` target: free when that target is off.

use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::trace::RequestIds;

/// The `tracing` target of access records.
pub(crate) const TARGET: &str = "esb_gateway::access";

/// Writes an access record for each response, when [`TARGET`] is enabled.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// See [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub(crate) struct AccessLog<S> {
    inner: S,
}

/// What the record says of the request, taken before it goes in.
struct Entry {
    method: http::Method,
    path: String,
    request_id: Option<String>,
    started: Instant,
}

impl<S, B, R> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let entry = tracing::enabled!(target: TARGET, tracing::Level::DEBUG).then(|| Entry {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            request_id: req
                .extensions()
                .get::<RequestIds>()
                .map(|ids| ids.request_id.clone()),
            started: Instant::now(),
        });
        let response = self.inner.call(req);
        Box::pin(async move {
            let response = response.await?;
            if let Some(entry) = entry {
                tracing::debug!(
                    target: TARGET,
                    method = %entry.method,
                    path = %entry.path,
                    status = response.status().as_u16(),
                    duration_ms = entry.started.elapsed().as_secs_f64() * 1000.0,
                    request_id = entry.request_id.as_deref().unwrap_or(""),
                    "access"
                );
            }
            Ok(response)
        })
    }
}
