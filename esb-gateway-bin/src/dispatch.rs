//! Chooses the service of a request: a reserved path (`/health`, `/metrics`, the auth
//! endpoint, the Invoke API) or the routes.

use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use tower::{Service, ServiceExt};

use crate::endpoints::{Health, Login, MetricsText};
use crate::error::RequestError;
use crate::invoke_api::invoke_path_segment;
use crate::layers::{Body, BoxFuture};
use crate::status::{Page, Status};

/// Where a request goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    Health,
    Metrics,
    Status(Page),
    Login,
    InvokeApi,
    Routes,
}

/// Reserved paths come before routes; the auth endpoint and the Invoke API only when they
/// are on.
pub(crate) fn target(path: &str, auth_path: Option<&str>, invoke_api: bool) -> Target {
    match path {
        "/health" => Target::Health,
        "/metrics" => Target::Metrics,
        _ if Page::at(path).is_some() => Page::at(path).map_or(Target::Routes, Target::Status),
        _ if auth_path == Some(path) => Target::Login,
        _ if invoke_api && invoke_path_segment(path).is_some() => Target::InvokeApi,
        _ => Target::Routes,
    }
}

/// The services a request can be sent to.
pub(crate) struct Services<I, R> {
    pub metrics: MetricsText,
    pub status: Status,
    /// With the path it answers on.
    pub login: Option<(String, Login)>,
    pub invoke_api: Option<I>,
    pub routes: R,
}

/// Sends each request to its [`Target`]'s service.
pub(crate) struct Dispatch<I, R> {
    services: Arc<Services<I, R>>,
}

impl<I, R> Clone for Dispatch<I, R> {
    fn clone(&self) -> Self {
        Self {
            services: Arc::clone(&self.services),
        }
    }
}

impl<I, R> Dispatch<I, R> {
    pub fn new(services: Services<I, R>) -> Self {
        Self {
            services: Arc::new(services),
        }
    }
}

impl<I, R> Service<Request<Incoming>> for Dispatch<I, R>
where
    I: Service<Request<Incoming>, Response = Response<Body>, Error = RequestError>
        + Clone
        + Send
        + 'static,
    I::Future: Send + 'static,
    R: Service<Request<Incoming>, Response = Response<Body>, Error = RequestError>
        + Clone
        + Send
        + 'static,
    R::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = BoxFuture<Result<Response<Body>, RequestError>>;

    /// Always ready: the chosen service is made ready within the call.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let services = &*self.services;
        let auth_path = services.login.as_ref().map(|(path, _)| path.as_str());
        match target(req.uri().path(), auth_path, services.invoke_api.is_some()) {
            Target::Health => Box::pin(Health.oneshot(req)),
            Target::Metrics => Box::pin(services.metrics.clone().oneshot(req)),
            Target::Status(page) => Box::pin(services.status.page(page).oneshot(req)),
            Target::Login => match &services.login {
                Some((_, login)) => Box::pin(login.clone().oneshot(req)),
                None => Box::pin(services.routes.clone().oneshot(req)),
            },
            Target::InvokeApi => match &services.invoke_api {
                Some(api) => Box::pin(api.clone().oneshot(req)),
                None => Box::pin(services.routes.clone().oneshot(req)),
            },
            Target::Routes => Box::pin(services.routes.clone().oneshot(req)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserved_paths_come_before_routes() {
        let invoke = "/2015-03-31/functions/f/invocations";
        assert_eq!(target("/health", None, true), Target::Health);
        assert_eq!(target("/metrics", None, true), Target::Metrics);
        assert_eq!(target("/login", Some("/login"), true), Target::Login);
        assert_eq!(target("/login", None, true), Target::Routes);
        assert_eq!(target(invoke, None, true), Target::InvokeApi);
        assert_eq!(target(invoke, None, false), Target::Routes);
        assert_eq!(target("/v1/echo", Some("/login"), true), Target::Routes);
    }
}
