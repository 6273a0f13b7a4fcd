//! Gives each request its ids (`x-amzn-RequestId`, `X-Amzn-Trace-Id`) and stamps them on
//! its response.

use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::trace::RequestIds;

/// Puts [`RequestIds`] in the request's extensions and both headers on the response.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RequestIdLayer;

impl<S> Layer<S> for RequestIdLayer {
    type Service = RequestId<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestId { inner }
    }
}

/// See [`RequestIdLayer`].
#[derive(Clone, Debug)]
pub(crate) struct RequestId<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestId<S>
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

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let ids = RequestIds::new(req.headers());
        let stamp = ids.stamp();
        req.extensions_mut().insert(ids);
        let response = self.inner.call(req);
        Box::pin(async move {
            let mut response = response.await?;
            stamp.apply(response.headers_mut());
            Ok(response)
        })
    }
}
