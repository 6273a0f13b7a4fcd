//! Counts responses by status (`esb_gateway_http_requests_total`).

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::metrics::GatewayMetrics;

/// Counts every response's status.
#[derive(Clone)]
pub(crate) struct CountResponsesLayer {
    metrics: Arc<GatewayMetrics>,
}

impl CountResponsesLayer {
    pub fn new(metrics: Arc<GatewayMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CountResponsesLayer {
    type Service = CountResponses<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountResponses {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// See [`CountResponsesLayer`].
#[derive(Clone)]
pub(crate) struct CountResponses<S> {
    inner: S,
    metrics: Arc<GatewayMetrics>,
}

impl<S, B, R> Service<Request<B>> for CountResponses<S>
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
        let response = self.inner.call(req);
        let metrics = Arc::clone(&self.metrics);
        Box::pin(async move {
            let response = response.await?;
            metrics.responded(response.status());
            Ok(response)
        })
    }
}
