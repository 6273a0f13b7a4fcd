//! Selects the route of a request (404 / 405 otherwise) and puts its [`Match`] in the
//! request's extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use esb_router::{Match, NoRoute, Router};
use futures::future::{Either, Ready, ready};
use http::Request;
use tower::{Layer, Service};

use crate::error::RequestError;

/// Routes requests with a [`Router`].
#[derive(Clone)]
pub(crate) struct RouteLayer {
    router: Arc<Router>,
}

impl RouteLayer {
    pub fn new(router: Arc<Router>) -> Self {
        Self { router }
    }
}

impl<S> Layer<S> for RouteLayer {
    type Service = Route<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Route {
            inner,
            router: Arc::clone(&self.router),
        }
    }
}

/// See [`RouteLayer`].
#[derive(Clone)]
pub(crate) struct Route<S> {
    inner: S,
    router: Arc<Router>,
}

impl<S, B> Service<Request<B>> for Route<S>
where
    S: Service<Request<B>, Error = RequestError>,
{
    type Response = S::Response;
    type Error = RequestError;
    type Future = Either<Ready<Result<S::Response, RequestError>>, S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        match self.router.select(req.method(), req.uri().path()) {
            Ok(found) => {
                super::access_log::AccessNote::route(&req, Some(&found.route_key), &found.function);
                req.extensions_mut().insert::<Match>(found);
                Either::Right(self.inner.call(req))
            }
            Err(NoRoute::NotFound) => Either::Left(ready(Err(RequestError::NoRoute))),
            Err(NoRoute::MethodNotAllowed { allowed }) => {
                Either::Left(ready(Err(RequestError::MethodNotAllowed { allowed })))
            }
            // NoRoute is non-exhaustive: a kind of miss this gateway does not know is a 404.
            Err(_) => Either::Left(ready(Err(RequestError::NoRoute))),
        }
    }
}
