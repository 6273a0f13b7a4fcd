//! Turns every [`RequestError`] into its HTTP answer: below this layer services fail with
//! typed errors, above it they only answer.

use std::convert::Infallible;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{Layer, Service};

use super::Body;
use super::BoxFuture;
use crate::error::RequestError;

/// Answers errors with [`RequestError::into_response`].
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AnswerLayer;

impl<S> Layer<S> for AnswerLayer {
    type Service = Answer<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Answer { inner }
    }
}

/// See [`AnswerLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Answer<S> {
    inner: S,
}

impl<S, B> Service<Request<B>> for Answer<S>
where
    S: Service<Request<B>, Response = Response<Body>, Error = RequestError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        match self.inner.poll_ready(cx) {
            Poll::Ready(_) => Poll::Ready(Ok(())),
            Poll::Pending => Poll::Pending,
        }
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let response = self.inner.call(req);
        Box::pin(async move { Ok(response.await.unwrap_or_else(RequestError::into_response)) })
    }
}
