//! `POST /2015-03-31/functions/{name}/invocations`, as Lambda's Invoke API answers it:
//! `RequestResponse` (with an optional log tail), `Event` (202, runs in the background
//! through the event queue, `event_queue.rs`) and `DryRun` (204).

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use bytes::Bytes;
use esb_pool::{Invocation, PoolError, PoolResponse};
use esb_runtime::{InvokeRequest, InvokeResult};
use http::header::{CONTENT_TYPE, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use tower::{Service, ServiceExt};

use crate::auth::Authenticator;
use crate::config::InvokeApiAccess;
use crate::endpoints::{empty, only};
use crate::error::RequestError;
use crate::event_queue::EventQueue;
use crate::layers::Body;
use crate::layers::BoxFuture;
use crate::layers::limit::read_body;
use crate::logs::LogTail;
use crate::trace::RequestIds;

/// The prefix and suffix of Lambda Invoke API paths.
const INVOKE_PREFIX: &str = "/2015-03-31/functions/";
const INVOKE_SUFFIX: &str = "/invocations";

/// The `{name}` segment of an Invoke API path, still percent-encoded.
pub(crate) fn invoke_path_segment(path: &str) -> Option<&str> {
    path.strip_prefix(INVOKE_PREFIX)
        .and_then(|rest| rest.strip_suffix(INVOKE_SUFFIX))
        .filter(|name| !name.is_empty() && !name.contains('/'))
}

/// What the Invoke API needs besides the invocation service.
pub(crate) struct InvokeApiConfig {
    pub auth: Arc<Authenticator>,
    pub access: InvokeApiAccess,
    /// `Memory Size` of each function's REPORT lines.
    pub memory_mb: HashMap<String, u32>,
    /// The aliases of each function that has any (they point to its version `1`).
    pub aliases: HashMap<String, Vec<String>>,
    pub max_body_bytes: usize,
    /// Where `Event` invocations wait, run and are retried.
    pub events: Arc<EventQueue>,
    pub log_tail: LogTail,
}

struct Shared {
    config: InvokeApiConfig,
}

/// The Invoke API over an invocation service `I`.
#[derive(Clone)]
pub(crate) struct InvokeApi<I> {
    shared: Arc<Shared>,
    invoker: I,
}

/// `X-Amz-Invocation-Type`, as given.
#[derive(Clone, Debug, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
    Other(String),
}

/// What the request's path and headers ask for.
#[derive(Debug)]
struct Call {
    function: String,
    memory_mb: u32,
    kind: InvocationType,
    client_context: Option<String>,
    tail: bool,
    /// The version or alias it was called through, as given.
    qualifier: Option<String>,
    /// `X-Amz-Executed-Version`: `$LATEST`, or `1` through an alias or version.
    executed_version: &'static str,
}

impl<I> InvokeApi<I> {
    pub fn new(config: InvokeApiConfig, invoker: I) -> Self {
        Self {
            shared: Arc::new(Shared { config }),
            invoker,
        }
    }
}

impl<I> Service<Request<Incoming>> for InvokeApi<I>
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = RequestError;
    type Future = BoxFuture<Result<Response<Body>, RequestError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move { this.invoke(req).await })
    }
}

impl<I> InvokeApi<I>
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    /// The steps of one call: what it asks for, its payload, then the invocation type's.
    async fn invoke(self, req: Request<Incoming>) -> Result<Response<Body>, RequestError> {
        let call = self.call_of(&req)?;
        let ids = match req.extensions().get::<RequestIds>() {
            Some(ids) => ids.clone(),
            None => RequestIds::new(req.headers()),
        };
        let payload = payload(req, self.shared.config.max_body_bytes).await?;
        let mut request = ids.invoke_request(payload);
        request.client_context = call.client_context.clone();
        request.qualifier = call.qualifier.clone();
        // A remote agent keeps the function's lines on its host: it sends the tail back.
        request.log_tail = call.tail && call.kind == InvocationType::RequestResponse;
        match &call.kind {
            InvocationType::DryRun => Ok(empty(StatusCode::NO_CONTENT)),
            InvocationType::Event => self.event(call.function, request),
            InvocationType::RequestResponse => {
                request_response(&self.shared, self.invoker, &call, &ids, request).await
            }
            InvocationType::Other(other) => Err(RequestError::BadRequest(format!(
                "X-Amz-Invocation-Type must be RequestResponse, Event or DryRun, got {other:?}"
            ))),
        }
    }

    /// The method, the caller's token, the function and the headers.
    fn call_of(&self, req: &Request<Incoming>) -> Result<Call, RequestError> {
        let config = &self.shared.config;
        only(req, &[Method::POST])?;
        if config.access == InvokeApiAccess::Jwt {
            config.auth.verify(req.headers())?;
        }
        let segment = invoke_path_segment(req.uri().path()).unwrap_or("");
        let name = percent_decode(segment);
        let function = function_name(&name);
        let Some(&memory_mb) = config.memory_mb.get(function) else {
            return Err(RequestError::FunctionNotFound(name));
        };
        let qualifier = qualifier(&name, req.uri().query())?;
        let aliases = config.aliases.get(function).map_or(&[][..], Vec::as_slice);
        let Some(executed_version) = executed_version(aliases, qualifier.as_deref()) else {
            let qualified = format!("{function}:{}", qualifier.unwrap_or_default());
            return Err(RequestError::FunctionNotFound(qualified));
        };
        let headers = req.headers();
        Ok(Call {
            function: function.to_owned(),
            memory_mb,
            kind: invocation_type(headers),
            client_context: headers
                .get("x-amz-client-context")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            tail: log_type_tail(headers)?,
            qualifier,
            executed_version,
        })
    }
}

/// The body: at most `limit` bytes, `{}` when empty, and JSON.
async fn payload(req: Request<Incoming>, limit: usize) -> Result<Bytes, RequestError> {
    let (parts, body) = req.into_parts();
    let mut payload = read_body(body, &parts.headers, limit).await?;
    if payload.is_empty() {
        payload = Bytes::from_static(b"{}");
    }
    serde_json::from_slice::<serde::de::IgnoredAny>(&payload)
        .map_err(RequestError::PayloadNotJson)?;
    Ok(payload)
}

impl<I> InvokeApi<I>
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    /// `Event`: 202 now, the invocation in the background, retried as Lambda does (429
    /// when the event queue is full).
    fn event(
        &self,
        function: String,
        request: InvokeRequest,
    ) -> Result<Response<Body>, RequestError> {
        let events = &self.shared.config.events;
        events.enqueue(self.invoker.clone(), function, request)?;
        Ok(empty(StatusCode::ACCEPTED))
    }
}

/// `RequestResponse`: the function's result as it is, its errors as 200 with
/// `X-Amz-Function-Error`, and the log tail when asked for.
async fn request_response<I>(
    shared: &Shared,
    invoker: I,
    call: &Call,
    ids: &RequestIds,
    request: InvokeRequest,
) -> Result<Response<Body>, RequestError>
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError>,
{
    // Only asked for: lines of other requests cost the tail one atomic load.
    let capture = call
        .tail
        .then(|| shared.config.log_tail.capture(&ids.request_id));
    let invocation = Invocation::new(call.function.as_str(), request);
    let outcome = match invoker.oneshot(invocation).await {
        Ok(answer) => Outcome::answered(answer, capture.is_some(), ids, call.memory_mb),
        // The function timed out, crashed or failed its init: a function error for the
        // Invoke API, as Lambda reports it.
        Err(RequestError::Pool(PoolError::Runtime(err))) if err.is_sandbox_fatal() => {
            Outcome::sandbox_failed(&err)
        }
        Err(err) => return Err(err),
    };
    let mut response = Response::new(Full::new(outcome.body));
    let headers = response.headers_mut();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(
        "x-amz-executed-version",
        HeaderValue::from_static(call.executed_version),
    );
    if outcome.function_error {
        headers.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    if let Some(capture) = capture {
        let log = match outcome.remote_log {
            Some(log) => log,
            None => capture.finish(outcome.report).await,
        };
        let encoded = base64::engine::general_purpose::STANDARD.encode(log);
        if let Ok(value) = HeaderValue::from_str(&encoded) {
            headers.insert("x-amz-log-result", value);
        }
    }
    Ok(response)
}

/// What a `RequestResponse` invocation came to.
struct Outcome {
    body: Bytes,
    function_error: bool,
    /// The REPORT line of the log tail.
    report: Option<String>,
    /// The tail a remote agent sent back.
    remote_log: Option<String>,
}

impl Outcome {
    /// The function answered (a result or its own error).
    fn answered(answer: PoolResponse, tail: bool, ids: &RequestIds, memory_mb: u32) -> Self {
        let function_error = matches!(answer.response.result, InvokeResult::FunctionError(_));
        let report = tail
            .then(|| esb_runtime::logs::report_line(&ids.request_id, &answer.response, memory_mb));
        Self {
            body: answer.response.body(),
            function_error,
            report,
            remote_log: answer.response.log_tail,
        }
    }

    /// The sandbox failed the invocation: an error document as Lambda writes it.
    fn sandbox_failed(err: &esb_runtime::Error) -> Self {
        let document = serde_json::json!({
            "errorType": err.lambda_error_type(),
            "errorMessage": err.to_string(),
        });
        Self {
            body: Bytes::from(document.to_string()),
            function_error: true,
            report: None,
            remote_log: None,
        }
    }
}

/// `X-Amz-Invocation-Type`, `RequestResponse` when absent.
fn invocation_type(headers: &HeaderMap) -> InvocationType {
    match headers.get("x-amz-invocation-type").map(|v| v.to_str()) {
        None | Some(Ok("RequestResponse")) => InvocationType::RequestResponse,
        Some(Ok("Event")) => InvocationType::Event,
        Some(Ok("DryRun")) => InvocationType::DryRun,
        Some(other) => InvocationType::Other(other.unwrap_or("").to_owned()),
    }
}

/// `X-Amz-Log-Type`: `Tail`, or `None` / absent.
fn log_type_tail(headers: &HeaderMap) -> Result<bool, RequestError> {
    match headers.get("x-amz-log-type").map(HeaderValue::to_str) {
        None | Some(Ok("None")) => Ok(false),
        Some(Ok("Tail")) => Ok(true),
        Some(other) => Err(RequestError::BadRequest(format!(
            "X-Amz-Log-Type must be None or Tail, got {:?}",
            other.unwrap_or("")
        ))),
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

/// The version or alias of a call: the one its name or ARN ends in (`name:live`,
/// `arn:aws:lambda:REGION:ACCOUNT:function:name:live`, `ACCOUNT:function:name:live`) or
/// the `Qualifier` query parameter (as boto3 sends it); 400 when they differ.
fn qualifier(name: &str, query: Option<&str>) -> Result<Option<String>, RequestError> {
    let parts: Vec<&str> = name.split(':').collect();
    let in_name = match parts.as_slice() {
        ["arn", _, _, _, _, "function", _, qualifier]
        | [_, "function", _, qualifier]
        | [_, qualifier] => Some(*qualifier),
        _ => None,
    };
    let in_query = query
        .into_iter()
        .flat_map(|query| query.split('&'))
        .find_map(|pair| pair.strip_prefix("Qualifier="))
        .map(percent_decode);
    match (in_name, in_query) {
        (Some(a), Some(b)) if a != b => Err(RequestError::BadRequest(format!(
            "The derived qualifier from the function name ({a}) does not match the specified qualifier ({b})."
        ))),
        (Some(qualifier), _) => Ok(Some(qualifier.to_owned())),
        (None, qualifier) => Ok(qualifier),
    }
}

/// The version a call through `qualifier` runs: `$LATEST` unqualified or through
/// `$LATEST`; `1` (the code as loaded, which every alias points to) through an alias of
/// the function or version `1`; `None` for any other qualifier.
fn executed_version(aliases: &[String], qualifier: Option<&str>) -> Option<&'static str> {
    match qualifier {
        None | Some("$LATEST") => Some("$LATEST"),
        Some(q) if !aliases.is_empty() && (q == "1" || aliases.iter().any(|a| a == q)) => Some("1"),
        Some(_) => None,
    }
}

fn percent_decode(segment: &str) -> String {
    percent_encoding::percent_decode_str(segment)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

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

    #[test]
    fn qualifiers_come_from_the_name_the_arn_or_the_query() {
        let q = |name: &str, query: Option<&str>| qualifier(name, query).unwrap();
        assert_eq!(q("hello", None), None);
        assert_eq!(q("hello:live", None).as_deref(), Some("live"));
        assert_eq!(q("hello", Some("Qualifier=live")).as_deref(), Some("live"));
        assert_eq!(
            q("hello:live", Some("a=b&Qualifier=live")).as_deref(),
            Some("live")
        );
        assert_eq!(
            q("hello", Some("Qualifier=%24LATEST")).as_deref(),
            Some("$LATEST")
        );
        let arn = "arn:aws:lambda:us-east-1:123456789012:function:hello";
        assert_eq!(q(arn, None), None);
        assert_eq!(q(&format!("{arn}:live"), None).as_deref(), Some("live"));
        assert_eq!(q("123456789012:function:hello", None), None);
        assert_eq!(
            q("123456789012:function:hello:live", None).as_deref(),
            Some("live")
        );
        assert!(matches!(
            qualifier("hello:live", Some("Qualifier=beta")),
            Err(RequestError::BadRequest(_))
        ));
    }

    #[test]
    fn aliases_run_version_1_and_unknown_qualifiers_nothing() {
        let aliases = ["live".to_owned()];
        assert_eq!(executed_version(&aliases, None), Some("$LATEST"));
        assert_eq!(executed_version(&aliases, Some("$LATEST")), Some("$LATEST"));
        assert_eq!(executed_version(&aliases, Some("live")), Some("1"));
        assert_eq!(executed_version(&aliases, Some("1")), Some("1"));
        assert_eq!(executed_version(&aliases, Some("beta")), None);
        assert_eq!(executed_version(&aliases, Some("2")), None);
        assert_eq!(executed_version(&[], Some("1")), None);
        assert_eq!(executed_version(&[], None), Some("$LATEST"));
    }

    #[test]
    fn invoke_api_paths_name_one_segment() {
        assert_eq!(
            invoke_path_segment("/2015-03-31/functions/f/invocations"),
            Some("f")
        );
        assert_eq!(
            invoke_path_segment("/2015-03-31/functions//invocations"),
            None
        );
        assert_eq!(
            invoke_path_segment("/2015-03-31/functions/a/b/invocations"),
            None
        );
        assert_eq!(invoke_path_segment("/v1/echo"), None);
    }

    #[test]
    fn invocation_and_log_types() {
        let mut headers = HeaderMap::new();
        assert_eq!(invocation_type(&headers), InvocationType::RequestResponse);
        assert!(!log_type_tail(&headers).unwrap());
        headers.insert("x-amz-invocation-type", "Bogus".parse().unwrap());
        headers.insert("x-amz-log-type", "Full".parse().unwrap());
        assert_eq!(
            invocation_type(&headers),
            InvocationType::Other("Bogus".into())
        );
        assert!(log_type_tail(&headers).is_err());
    }
}
