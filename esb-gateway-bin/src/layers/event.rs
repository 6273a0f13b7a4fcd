//! A routed request becomes an API Gateway proxy event, the event an [`Invocation`], and
//! the function's answer an HTTP response (502 when it failed or is malformed).

use std::task::{Context, Poll};
use std::time::SystemTime;

use bytes::Bytes;
use esb_events::{EventContext, RouteInfo};
use esb_pool::{Invocation, PoolResponse};
use esb_router::{Match, PayloadFormat};
use esb_runtime::InvokeResult;
use futures::future::{Either, Ready, ready};
use http::request::Parts;
use http::{Request, Response};
use http_body_util::Full;
use tower::{Layer, Service};

use super::Body;
use super::{BoxFuture, RemoteAddr};
use crate::auth::Identity;
use crate::authorizers::LambdaAuthorization;
use crate::error::RequestError;
use crate::trace::RequestIds;

/// Builds events from routed requests and maps the answers back.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct EventLayer;

impl<S> Layer<S> for EventLayer {
    type Service = Event<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Event { inner }
    }
}

/// See [`EventLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Event<S> {
    inner: S,
}

impl<S> Service<Request<Bytes>> for Event<S>
where
    S: Service<Invocation, Response = PoolResponse, Error = RequestError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = Either<
        Ready<Result<Response<Body>, RequestError>>,
        BoxFuture<Result<Response<Body>, RequestError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Bytes>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let Some(found) = parts.extensions.remove::<Match>() else {
            return Either::Left(ready(Err(RequestError::NoRoute)));
        };
        let invocation = match invocation(&parts, &body, &found) {
            Ok(invocation) => invocation,
            Err(err) => return Either::Left(ready(Err(err))),
        };
        let answer = self.inner.call(invocation);
        let format = found.payload_format;
        let function = found.function;
        Either::Right(Box::pin(async move {
            respond(answer.await?, format, &function)
        }))
    }
}

/// The invocation of a routed request: its event, with the request's ids.
fn invocation(parts: &Parts, body: &[u8], found: &Match) -> Result<Invocation, RequestError> {
    let event = build_event(parts, body, found, found.payload_format)?;
    let ids = request_ids(parts);
    Ok(Invocation::new(&*found.function, ids.invoke_request(event)))
}

/// The request's ids, as the outer layer set them (fresh ones without it).
pub(crate) fn request_ids(parts: &Parts) -> std::borrow::Cow<'_, RequestIds> {
    match parts.extensions.get::<RequestIds>() {
        Some(ids) => std::borrow::Cow::Borrowed(ids),
        None => std::borrow::Cow::Owned(RequestIds::new(&parts.headers)),
    }
}

/// The API Gateway event of a routed request in `format`, with what the authorizers found.
pub(crate) fn build_event(
    parts: &Parts,
    body: &[u8],
    found: &Match,
    format: PayloadFormat,
) -> Result<Bytes, RequestError> {
    let extensions = &parts.extensions;
    let ids = request_ids(parts);
    let source_ip = extensions
        .get::<RemoteAddr>()
        .map(|remote| remote.0.ip().to_string())
        .unwrap_or_default();
    let mut ctx = EventContext::new(&ids.request_id, &source_ip, SystemTime::now());
    if let Some(identity) = extensions.get::<Identity>() {
        ctx.claims = Some(&identity.claims);
        ctx.scopes = Some(&identity.scopes);
    }
    if let Some(allowed) = extensions.get::<LambdaAuthorization>() {
        ctx.lambda_authorizer = Some(&allowed.context);
    }
    let route = RouteInfo {
        resource: &found.resource,
        route_key: &found.route_key,
        path_parameters: &found.path_parameters,
    };
    match format {
        PayloadFormat::V1 => esb_events::build_v1(parts, body, &route, &ctx),
        PayloadFormat::V2 => esb_events::build_v2(parts, body, &route, &ctx),
    }
    .map_err(RequestError::Event)
}

/// The function's answer as an HTTP response.
fn respond(
    answer: PoolResponse,
    format: PayloadFormat,
    function: &str,
) -> Result<Response<Body>, RequestError> {
    let payload = match answer.response.result {
        InvokeResult::Success(payload) => payload,
        InvokeResult::FunctionError(err) => {
            return Err(RequestError::FunctionFailed {
                function: function.to_owned(),
                error_type: err.error_type,
                error_message: err.error_message,
            });
        }
    };
    let mapped = match format {
        PayloadFormat::V1 => esb_events::map_response_v1(&payload),
        PayloadFormat::V2 => esb_events::map_response_v2(&payload),
    }
    .map_err(|source| RequestError::MalformedResponse {
        function: function.to_owned(),
        source,
    })?;
    Ok(mapped.map(Full::new))
}
