//! What the gateway does with one request: reserved paths, the Invoke API, and routed paths.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use bytes::Bytes;
use esb_events::{EventContext, RouteInfo};
use esb_pool::{Invocation, PoolError, PoolResponse, PoolService, RuntimeInvoker};
use esb_router::{Auth, NoRoute, PayloadFormat, Router};
use esb_runtime::{InvokeRequest, InvokeResult};
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use tokio::sync::Semaphore;
use tower::ServiceExt;

use crate::Error;
use crate::auth::Authenticator;
use crate::config::{InvokeApiAccess, Limits};
use crate::logs::LogTail;
use crate::metrics::{ErrorKind, GatewayMetrics};
use crate::trace::RequestIds;

/// The response body of every answer.
pub type Body = Full<Bytes>;

/// The prefix and suffix of Lambda Invoke API paths.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const INVOKE_SUFFIX: &str = "/invocations";

/// What the request path needs of one function.
struct FunctionLimits {
    /// Queue wait + function timeout + margin: the whole invocation's deadline.
    deadline: Duration,
    /// `Memory Size` of its REPORT lines.
    memory_mb: u32,
}

/// The request handler shared by every connection.
pub(crate) struct App {
    pub router: Router,
    functions: HashMap<String, FunctionLimits>,
    invoker: PoolService<RuntimeInvoker>,
    auth: Authenticator,
    auth_path: String,
    invoke_api: InvokeApiAccess,
    limits: Limits,
    events: Arc<Semaphore>,
    log_tail: LogTail,
    pub metrics: GatewayMetrics,
}

impl App {
    pub fn new(
        config: &crate::GatewayConfig,
        router: Router,
        invoker: PoolService<RuntimeInvoker>,
        metrics: GatewayMetrics,
    ) -> Self {
        let functions = config
            .functions
            .functions
            .values()
            .map(|f| {
                let acquire_timeout = crate::pool_config(f).acquire_timeout;
                let deadline = acquire_timeout + f.timeout + config.limits.timeout_margin;
                let memory_mb = f.memory_size;
                let limits = FunctionLimits {
                    deadline,
                    memory_mb,
                };
                (f.name.clone(), limits)
            })
            .collect();
        Self {
            router,
            functions,
            invoker,
            auth: Authenticator::new(&config.auth),
            auth_path: config.auth.endpoint_path.clone(),
            invoke_api: config.invoke_api,
            limits: config.limits,
            events: Arc::new(Semaphore::new(config.limits.event_concurrency)),
            log_tail: config.log_tail.clone(),
            metrics,
        }
    }

    /// Answers one request; every answer carries `x-amzn-RequestId` and `X-Amzn-Trace-Id`.
    pub async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
    ) -> Response<Body> {
        let ids = RequestIds::new(req.headers());
        let mut response = match self.dispatch(req, remote, &ids).await {
            Ok(response) => response,
            Err(err) => err.into_response(),
        };
        self.metrics.responded(response.status());
        ids.stamp(response.headers_mut());
        response
    }

    async fn dispatch(
        self: &Arc<Self>,
        req: Request<Incoming>,
        remote: SocketAddr,
        ids: &RequestIds,
    ) -> Result<Response<Body>, Error> {
        let path = req.uri().path();
        if path == "/health" {
            return only(&req, &[Method::GET, Method::HEAD]).map(|()| health());
        }
        if path == "/metrics" {
            only(&req, &[Method::GET])?;
            return Ok(text(
                StatusCode::OK,
                "text/plain; version=0.0.4",
                self.metrics.render(),
            ));
        }
        if path == self.auth_path && self.auth.issues_tokens() {
            only(&req, &[Method::POST])?;
            let (parts, body) = req.into_parts();
            let body = self.read_body(body, &parts.headers).await?;
            let answer = self.auth.login(&parts.headers, &body)?;
            return Ok(json(StatusCode::OK, answer.to_string()));
        }
        if self.invoke_api != InvokeApiAccess::Off
            && let Some(name) = path
                .strip_prefix(INVOKE_PREFIX)
                .and_then(|rest| rest.strip_suffix(INVOKE_SUFFIX))
                .filter(|name| !name.is_empty() && !name.contains('/'))
        {
            let name = percent_decode(name);
            return self.invoke_api(req, &name, ids).await;
        }
        self.routed(req, remote, ids).await
    }

    /// A routed path: router -> auth -> event -> pool -> response mapping.
    async fn routed(
        &self,
        req: Request<Incoming>,
        remote: SocketAddr,
        ids: &RequestIds,
    ) -> Result<Response<Body>, Error> {
        let found =
            self.router
                .select(req.method(), req.uri().path())
                .map_err(|err| match err {
                    NoRoute::NotFound => Error::NoRoute,
                    NoRoute::MethodNotAllowed { allowed } => Error::MethodNotAllowed { allowed },
                    _ => Error::NoRoute,
                })?;
        let identity = match found.auth {
            Auth::Jwt => Some(self.auth.verify(req.headers())?),
            Auth::None => None,
        };
        let (parts, body) = req.into_parts();
        let body = self.read_body(body, &parts.headers).await?;
        let source_ip = remote.ip().to_string();
        let mut ctx = EventContext::new(&ids.request_id, &source_ip, SystemTime::now());
        if let Some(identity) = &identity {
            ctx.claims = Some(&identity.claims);
            ctx.scopes = Some(&identity.scopes);
        }
        let route = RouteInfo {
            resource: &found.resource,
            route_key: &found.route_key,
            path_parameters: &found.path_parameters,
        };
        let event = match found.payload_format {
            PayloadFormat::V1 => esb_events::build_v1(&parts, &body, &route, &ctx),
            PayloadFormat::V2 => esb_events::build_v2(&parts, &body, &route, &ctx),
        }
        .map_err(Error::Event)?;
        let function = &*found.function;
        let answer = self.invoke(function, ids.invoke_request(event)).await?;
        let payload = match answer.response.result {
            InvokeResult::Success(payload) => payload,
            InvokeResult::FunctionError(err) => {
                return Err(Error::FunctionFailed {
                    function: function.to_owned(),
                    error_type: err.error_type,
                    error_message: err.error_message,
                });
            }
        };
        let mapped = match found.payload_format {
            PayloadFormat::V1 => esb_events::map_response_v1(&payload),
            PayloadFormat::V2 => esb_events::map_response_v2(&payload),
        }
        .map_err(|source| Error::MalformedResponse {
            function: function.to_owned(),
            source,
        })?;
        Ok(mapped.map(Full::new))
    }

    /// `POST /2015-03-31/functions/{name}/invocations`, as Lambda's Invoke API answers it.
    async fn invoke_api(
        self: &Arc<Self>,
        req: Request<Incoming>,
        name: &str,
        ids: &RequestIds,
    ) -> Result<Response<Body>, Error> {
        only(&req, &[Method::POST])?;
        if self.invoke_api == InvokeApiAccess::Jwt {
            self.auth.verify(req.headers())?;
        }
        let function = function_name(name);
        let Some(limits) = self.functions.get(function) else {
            return Err(Error::FunctionNotFound(name.to_owned()));
        };
        let invocation_type = req
            .headers()
            .get("x-amz-invocation-type")
            .map(|v| v.to_str().unwrap_or("").to_owned())
            .unwrap_or_else(|| "RequestResponse".into());
        let client_context = req
            .headers()
            .get("x-amz-client-context")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let tail = match req.headers().get("x-amz-log-type").map(HeaderValue::to_str) {
            None | Some(Ok("None")) => false,
            Some(Ok("Tail")) => true,
            Some(other) => {
                return Err(Error::BadRequest(format!(
                    "X-Amz-Log-Type must be None or Tail, got {:?}",
                    other.unwrap_or("")
                )));
            }
        };
        let (parts, body) = req.into_parts();
        let mut payload = self.read_body(body, &parts.headers).await?;
        if payload.is_empty() {
            payload = Bytes::from_static(b"{}");
        }
        if serde_json::from_slice::<serde::de::IgnoredAny>(&payload).is_err() {
            return Err(Error::BadRequest(
                "Could not parse request body into json".into(),
            ));
        }
        let mut request = ids.invoke_request(payload);
        request.client_context = client_context;
        // A remote agent keeps the function's lines on its host: it sends the tail back.
        request.log_tail = tail && invocation_type == "RequestResponse";
        match invocation_type.as_str() {
            "DryRun" => Ok(empty(StatusCode::NO_CONTENT)),
            "Event" => {
                let permit = Arc::clone(&self.events)
                    .try_acquire_owned()
                    .map_err(|_| Error::EventQueueFull(function.to_owned()))?;
                let app = Arc::clone(self);
                let function = function.to_owned();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(err) = app.invoke(&function, request).await {
                        tracing::warn!(%function, error = %err, "asynchronous invocation failed");
                    }
                });
                Ok(empty(StatusCode::ACCEPTED))
            }
            "RequestResponse" => {
                // Only asked for: lines of other requests cost the tail one atomic load.
                let capture = tail.then(|| self.log_tail.capture(&ids.request_id));
                let (body, function_error, report, remote_log) =
                    match self.invoke(function, request).await {
                        Ok(answer) => {
                            let failed =
                                matches!(answer.response.result, InvokeResult::FunctionError(_));
                            let report = capture.as_ref().map(|_| {
                                esb_runtime::logs::report_line(
                                    &ids.request_id,
                                    &answer.response,
                                    limits.memory_mb,
                                )
                            });
                            let body = answer.response.body();
                            (body, failed, report, answer.response.log_tail)
                        }
                        // The function timed out, crashed or failed its init: a function error
                        // for the Invoke API, as Lambda reports it.
                        Err(Error::Pool(PoolError::Runtime(err))) if err.is_sandbox_fatal() => {
                            let document = serde_json::json!({
                                "errorType": err.lambda_error_type(),
                                "errorMessage": err.to_string(),
                            });
                            (Bytes::from(document.to_string()), true, None, None)
                        }
                        Err(err) => return Err(err),
                    };
                let mut response = Response::new(Full::new(body));
                let headers = response.headers_mut();
                headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
                headers.insert(
                    "x-amz-executed-version",
                    HeaderValue::from_static("$LATEST"),
                );
                if function_error {
                    headers.insert(
                        "x-amz-function-error",
                        HeaderValue::from_static("Unhandled"),
                    );
                }
                if let Some(capture) = capture {
                    let log = match remote_log {
                        Some(log) => log,
                        None => capture.finish(report).await,
                    };
                    let encoded = base64::engine::general_purpose::STANDARD.encode(log);
                    if let Ok(value) = HeaderValue::from_str(&encoded) {
                        headers.insert("x-amz-log-result", value);
                    }
                }
                Ok(response)
            }
            other => Err(Error::BadRequest(format!(
                "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, got {other:?}"
            ))),
        }
    }

    /// Runs one invocation through the pool within the function's deadline, and counts it.
    async fn invoke(&self, function: &str, request: InvokeRequest) -> Result<PoolResponse, Error> {
        let deadline = self
            .functions
            .get(function)
            .map(|f| f.deadline)
            .ok_or_else(|| Error::FunctionNotFound(function.to_owned()))?;
        let call = self
            .invoker
            .clone()
            .oneshot(Invocation::new(function, request));
        match tokio::time::timeout(deadline, call).await {
            Err(_) => {
                self.metrics.failed(function, ErrorKind::Timeout);
                Err(Error::GatewayTimeout {
                    function: function.to_owned(),
                    waited: deadline,
                })
            }
            Ok(Err(err)) => {
                self.metrics.failed(function, error_kind(&err));
                Err(Error::Pool(err))
            }
            Ok(Ok(answer)) => {
                let response = &answer.response;
                self.metrics.invoked(
                    function,
                    response.duration,
                    answer.cold_start,
                    response.init_duration,
                );
                if matches!(response.result, InvokeResult::FunctionError(_)) {
                    self.metrics.failed(function, ErrorKind::Function);
                }
                Ok(answer)
            }
        }
    }

    /// Reads a body of at most `max_body_bytes` (413 beyond).
    async fn read_body(&self, body: Incoming, headers: &HeaderMap) -> Result<Bytes, Error> {
        let limit = self.limits.max_body_bytes;
        let declared = headers
            .get(CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|len| len > limit as u64) {
            return Err(Error::PayloadTooLarge { limit });
        }
        match Limited::new(body, limit).collect().await {
            Ok(collected) => Ok(collected.to_bytes()),
            Err(err) if err.is::<http_body_util::LengthLimitError>() => {
                Err(Error::PayloadTooLarge { limit })
            }
            Err(err) => Err(Error::BadRequest(format!(
                "cannot read the request body: {err}"
            ))),
        }
    }
}

fn error_kind(err: &PoolError) -> ErrorKind {
    match err {
        PoolError::Throttled { .. } => ErrorKind::Throttled,
        PoolError::Runtime(esb_runtime::Error::Timeout { .. }) => ErrorKind::Timeout,
        PoolError::Runtime(esb_runtime::Error::Unavailable(_)) => ErrorKind::Unavailable,
        PoolError::Runtime(_) => ErrorKind::Sandbox,
        _ => ErrorKind::Unavailable,
    }
}

/// The function name of an Invoke API path segment: a name, `name:qualifier`, or an ARN.
fn function_name(segment: &str) -> &str {
    if let Some(rest) = segment.strip_prefix("arn:") {
        // arn:aws:lambda:REGION:ACCOUNT:function:NAME[:QUALIFIER]
        return rest.split(':').nth(5).unwrap_or(segment);
    }
    segment.split(':').next().unwrap_or(segment)
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

fn only(req: &Request<Incoming>, methods: &[Method]) -> Result<(), Error> {
    if methods.contains(req.method()) {
        Ok(())
    } else {
        Err(Error::MethodNotAllowed {
            allowed: methods.to_vec(),
        })
    }
}

fn health() -> Response<Body> {
    let body = serde_json::json!({
        "status": "healthy",
        "timestamp": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    });
    json(StatusCode::OK, body.to_string())
}

fn json(status: StatusCode, body: String) -> Response<Body> {
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

fn empty(status: StatusCode) -> Response<Body> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_api_names_arns_and_qualifiers() {
        assert_eq!(function_name("hello"), "hello");
        assert_eq!(function_name("hello:$LATEST"), "hello");
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:hello"),
            "hello"
        );
        assert_eq!(
            function_name("arn:aws:lambda:us-east-1:123456789012:function:hello:prod"),
            "hello"
        );
    }
}
