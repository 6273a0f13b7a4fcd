//! Checks the Bearer JWT of routes that need one (401 otherwise) and puts the caller's
//! [`Identity`] in the request's extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use esb_router::{Auth, Match};
use futures::future::{Either, Ready, ready};
use http::Request;
use tower::{Layer, Service};

use crate::auth::Authenticator;
use crate::error::RequestError;

/// Authorizes routed requests as their [`Match`] says.
#[derive(Clone)]
pub(crate) struct AuthorizeLayer {
    auth: Arc<Authenticator>,
}

impl AuthorizeLayer {
    pub fn new(auth: Arc<Authenticator>) -> Self {
        Self { auth }
    }
}

impl<S> Layer<S> for AuthorizeLayer {
    type Service = Authorize<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            auth: Arc::clone(&self.auth),
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Clone)]
pub(crate) struct Authorize<S> {
    inner: S,
    auth: Arc<Authenticator>,
}

impl<S, B> Service<Request<B>> for Authorize<S>
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
        let needs = req.extensions().get::<Match>().map(|found| found.auth);
        // A request that reached here without a route is held to the stricter rule.
        if needs != Some(Auth::None) {
            match self.auth.verify(req.headers()) {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                }
                Err(err) => return Either::Left(ready(Err(err))),
            }
        }
        Either::Right(self.inner.call(req))
    }
}
