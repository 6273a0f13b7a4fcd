//! Authorizes routed requests as their [`Match`] says: a Bearer JWT (401 otherwise), whose
//! [`Identity`](crate::auth::Identity) goes in the request's extensions, or a Lambda
//! authorizer invoked through the pool (401 without its identity, 403 when it denies, 500
//! when it fails), whose [`LambdaAuthorization`] goes in the extensions.

use std::sync::Arc;
use std::task::{Context, Poll};

use esb_pool::{Invocation, PoolResponse};
use esb_router::{Auth, Match};
use esb_runtime::InvokeResult;
use futures::future::{Either, Ready, ready};
use http::Request;
use http::request::Parts;
use tower::{Layer, Service, ServiceExt};

use super::BoxFuture;
use super::event::{build_event, request_ids};
use crate::auth::Authenticator;
use crate::authorizers::{self, Authorizers, LambdaAuthorization, Verdict};
use crate::error::RequestError;

/// Authorizes routed requests; Lambda authorizers are invoked through `invoker`.
#[derive(Clone)]
pub(crate) struct AuthorizeLayer<I> {
    auth: Arc<Authenticator>,
    authorizers: Arc<Authorizers>,
    invoker: I,
}

impl<I> AuthorizeLayer<I> {
    pub fn new(auth: Arc<Authenticator>, authorizers: Arc<Authorizers>, invoker: I) -> Self {
        Self {
            auth,
            authorizers,
            invoker,
        }
    }
}

impl<S, I: Clone> Layer<S> for AuthorizeLayer<I> {
    type Service = Authorize<S, I>;

    fn layer(&self, inner: S) -> Self::Service {
        Authorize {
            inner,
            auth: Arc::clone(&self.auth),
            authorizers: Arc::clone(&self.authorizers),
            invoker: self.invoker.clone(),
        }
    }
}

/// See [`AuthorizeLayer`].
#[derive(Clone)]
pub(crate) struct Authorize<S, I> {
    inner: S,
    auth: Arc<Authenticator>,
    authorizers: Arc<Authorizers>,
    invoker: I,
}

type Result<T> = std::result::Result<T, RequestError>;

impl<S, I, B> Service<Request<B>> for Authorize<S, I>
where
    S: Service<Request<B>, Error = RequestError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
    I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone + Send + 'static,
    I::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = S::Response;
    type Error = RequestError;
    type Future =
        Either<Ready<Result<S::Response>>, Either<S::Future, BoxFuture<Result<S::Response>>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<()>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let needs = req
            .extensions()
            .get::<Match>()
            .map(|found| found.auth.clone());
        match needs {
            Some(Auth::None) => {}
            Some(Auth::Lambda(name)) => {
                // The inner service that was made ready serves this request.
                let clone = self.inner.clone();
                let inner = std::mem::replace(&mut self.inner, clone);
                let authorizers = Arc::clone(&self.authorizers);
                let invoker = self.invoker.clone();
                return Either::Right(Either::Right(Box::pin(async move {
                    let (mut parts, body) = req.into_parts();
                    let allowed = authorize(&authorizers, invoker, &name, &parts).await?;
                    parts.extensions.insert(allowed);
                    let mut inner = inner;
                    inner.call(Request::from_parts(parts, body)).await
                })));
            }
            // JWT, and a request that reached here without a route (the stricter rule).
            _ => match self.auth.verify(req.headers()) {
                Ok(identity) => {
                    req.extensions_mut().insert(identity);
                }
                Err(err) => return Either::Left(ready(Err(err))),
            },
        }
        Either::Right(Either::Left(self.inner.call(req)))
    }
}

/// Runs the Lambda authorizer `name` for a request: from the cache, or by invoking its
/// function.
async fn authorize<I>(
    authorizers: &Authorizers,
    invoker: I,
    name: &str,
    parts: &Parts,
) -> Result<LambdaAuthorization>
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError>,
{
    let pending = authorizers.pending(name, parts)?;
    let config = pending.config;
    let answer = match authorizers.cached(&pending) {
        Some(answer) => answer,
        None => {
            let found = parts
                .extensions
                .get::<Match>()
                .ok_or(RequestError::NoRoute)?;
            let event =
                authorizers::event(&pending, |format| build_event(parts, &[], found, format))?;
            let request = request_ids(parts).invoke_request(event);
            let answer = invoker
                .oneshot(Invocation::new(&config.function, request))
                .await?;
            let failed = |reason: String| RequestError::AuthorizerFailed {
                authorizer: config.name.clone(),
                reason,
            };
            let payload = match answer.response.result {
                InvokeResult::Success(payload) => payload,
                // As API Gateway: an authorizer that fails with "Unauthorized" means 401.
                InvokeResult::FunctionError(err) if err.error_message == "Unauthorized" => {
                    return Err(RequestError::Unauthorized(
                        "the authorizer said Unauthorized",
                    ));
                }
                InvokeResult::FunctionError(err) => {
                    return Err(failed(format!(
                        "failed: {}: {}",
                        err.error_type, err.error_message
                    )));
                }
            };
            let answer = authorizers::parse_answer(config, &payload)
                .map_err(|reason| failed(format!("answered wrongly: {reason}")))?;
            let answer = Arc::new(answer);
            authorizers.remember(&pending, Arc::clone(&answer));
            answer
        }
    };
    match answer.verdict(&pending.method_arn) {
        Verdict::Allow => Ok(answer.authorization()),
        verdict => Err(RequestError::AuthorizerDenied {
            authorizer: config.name.clone(),
            api: config.api,
            explicit: verdict == Verdict::ExplicitDeny,
        }),
    }
}
