//! `POST /2015-03-31/functions/{name}/invocations`, as Lambda's Invoke API answers it:
//! `RequestResponse` (with an optional log tail), `Event` (202, runs in the background
//! through the event queue, `event_queue.rs`) and `DryRun` (204).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
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

/// Lambda's limit of an asynchronous (`Event`) invocation's payload: 1 MB.
pub(crate) const MAX_EVENT_PAYLOAD_BYTES: usize = 1024 * 1024;

/// The account of function ARNs when the caller names none (the runtimes' default).
const ACCOUNT_ID: &str = "000000000000";

/// The qualifier of the unpublished version, the only one every function has.
const LATEST: &str = "$LATEST";

/// What the Invoke API needs besides the invocation service.
pub(crate) struct InvokeApiConfig {
    pub auth: Arc<Authenticator>,
    /// The region of function ARNs when the caller names none.
    pub region: String,
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
    /// Why the command of a function could not be started, until one of its sandboxes
    /// answers: while the pool's breaker stays open over it, callers get that reason as
    /// Lambda's `Runtime.InvalidEntrypoint`, not a 503 that SDKs retry.
    bad_entrypoints: Mutex<HashMap<String, String>>,
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
    /// The decoded `X-Amz-Client-Context`: the JSON text the runtime hands to the function.
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
            shared: Arc::new(Shared {
                config,
                bad_entrypoints: Mutex::default(),
            }),
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
        // Errors are answered here, in the Invoke API's own shape, not the routes'.
        Box::pin(async move {
            Ok(this
                .invoke(req)
                .await
                .unwrap_or_else(RequestError::into_invoke_response))
        })
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
        crate::layers::access_log::AccessNote::route(&req, None, &call.function);
        let ids = match req.extensions().get::<RequestIds>() {
            Some(ids) => ids.clone(),
            None => RequestIds::new(req.headers()),
        };
        let payload = payload(req, self.shared.config.max_body_bytes).await?;
        if call.kind == InvocationType::Event && payload.len() > MAX_EVENT_PAYLOAD_BYTES {
            return Err(RequestError::PayloadTooLarge {
                limit: MAX_EVENT_PAYLOAD_BYTES,
            });
        }
        let mut request = ids.invoke_request(payload);
        // Lambda passes the client context to synchronous invocations only.
        if call.kind == InvocationType::RequestResponse {
            request.client_context = call.client_context.clone();
        }
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
        let mut target = FunctionRef::parse(&percent_decode(segment));
        if let Some(qualifier) = query_qualifier(req.uri().query()) {
            if target.qualifier.as_ref().is_some_and(|q| *q != qualifier) {
                return Err(RequestError::BadRequest(
                    "The derived qualifier from the function name does not match the specified qualifier."
                        .into(),
                ));
            }
            target.qualifier = Some(qualifier);
        }
        let Some(&memory_mb) = config.memory_mb.get(&target.name) else {
            return Err(RequestError::FunctionNotFound(target.arn(&config.region)));
        };
        let aliases = config
            .aliases
            .get(&target.name)
            .map_or(&[][..], Vec::as_slice);
        let Some(executed_version) = executed_version(aliases, target.qualifier.as_deref()) else {
            return Err(RequestError::FunctionNotFound(target.arn(&config.region)));
        };
        let headers = req.headers();
        Ok(Call {
            function: target.name,
            memory_mb,
            kind: invocation_type(headers),
            client_context: client_context(headers)?,
            tail: log_type_tail(headers)?,
            qualifier: target.qualifier,
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
    let trace = capture.as_ref().and(request.trace_id.clone());
    let invocation = Invocation::new(call.function.as_str(), request);
    let outcome = match invoker.oneshot(invocation).await {
        Ok(answer) => {
            shared.entrypoint_started(&call.function);
            let tail = capture.is_some().then_some(Tail {
                memory_mb: call.memory_mb,
                trace: trace.as_deref(),
            });
            Outcome::answered(answer, tail, ids)
        }
        // The function timed out, crashed or failed its init: a function error for the
        // Invoke API, as Lambda reports it.
        Err(RequestError::Pool(PoolError::Runtime(err))) if err.is_sandbox_fatal() => {
            Outcome::sandbox_failed(&ids.request_id, &err)
        }
        // The function's command cannot be started: Lambda's answer to a missing bootstrap.
        Err(RequestError::Pool(PoolError::Create {
            source: esb_runtime::Error::InvalidSpec { reason, .. },
            ..
        })) => {
            let outcome = Outcome::invalid_entrypoint(&ids.request_id, &reason);
            shared.entrypoint_failed(&call.function, reason);
            outcome
        }
        Err(RequestError::Pool(PoolError::CircuitOpen { function })) => {
            match shared.bad_entrypoint(&function) {
                Some(reason) => Outcome::invalid_entrypoint(&ids.request_id, &reason),
                None => return Err(RequestError::Pool(PoolError::CircuitOpen { function })),
            }
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

impl Shared {
    fn bad_entrypoints(&self) -> std::sync::MutexGuard<'_, HashMap<String, String>> {
        self.bad_entrypoints
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The function's command could not be started.
    fn entrypoint_failed(&self, function: &str, reason: String) {
        self.bad_entrypoints().insert(function.to_owned(), reason);
    }

    /// A sandbox of the function answered: its command starts.
    fn entrypoint_started(&self, function: &str) {
        let mut bad = self.bad_entrypoints();
        if !bad.is_empty() {
            bad.remove(function);
        }
    }

    /// Why the function's command could not be started, if that is the last news of it.
    fn bad_entrypoint(&self, function: &str) -> Option<String> {
        self.bad_entrypoints().get(function).cloned()
    }
}

/// What the log tail's REPORT line needs of the invocation.
struct Tail<'a> {
    memory_mb: u32,
    /// The trace header the function got.
    trace: Option<&'a str>,
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
    fn answered(answer: PoolResponse, tail: Option<Tail<'_>>, ids: &RequestIds) -> Self {
        let function_error = matches!(answer.response.result, InvokeResult::FunctionError(_));
        // The REPORT line as the sandbox logs it, with its X-Ray part when traced.
        let report = tail.map(|tail| {
            let mut line =
                esb_runtime::logs::report_line(&ids.request_id, &answer.response, tail.memory_mb);
            if let Some(xray) = tail.trace.and_then(esb_runtime::logs::xray_report) {
                line.push('\t');
                line.push_str(&xray);
            }
            line
        });
        Self {
            body: answer.response.body(),
            function_error,
            report,
            remote_log: answer.response.log_tail,
        }
    }

    /// No sandbox could be started from the function's command or entry point.
    fn invalid_entrypoint(request_id: &str, reason: &str) -> Self {
        let document = serde_json::json!({
            "errorType": "Runtime.InvalidEntrypoint",
            "errorMessage": format!("RequestId: {request_id} Error: {reason}"),
        });
        Self {
            body: Bytes::from(document.to_string()),
            function_error: true,
            report: None,
            remote_log: None,
        }
    }

    /// The sandbox failed the invocation: an error document as Lambda writes it.
    fn sandbox_failed(request_id: &str, err: &esb_runtime::Error) -> Self {
        let (error_type, message) = err.lambda_error(request_id);
        let document = serde_json::json!({
            "errorType": error_type,
            "errorMessage": message,
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

/// `X-Amz-Client-Context`, base64 of a JSON object, decoded to the JSON text that the
/// Runtime API's `Lambda-Runtime-Client-Context` carries.
fn client_context(headers: &HeaderMap) -> Result<Option<String>, RequestError> {
    let Some(value) = headers.get("x-amz-client-context") else {
        return Ok(None);
    };
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(value.as_bytes())
        .map_err(|err| RequestError::InvalidClientContext(err.into()))?;
    let text =
        String::from_utf8(bytes).map_err(|err| RequestError::InvalidClientContext(err.into()))?;
    let json: serde_json::Value = serde_json::from_str(&text)
        .map_err(|err| RequestError::InvalidClientContext(err.into()))?;
    if !json.is_object() {
        return Err(RequestError::InvalidClientContext(
            "not a JSON object".into(),
        ));
    }
    // The runtime sends it as a header value: one line, as compact as it came.
    Ok(Some(json.to_string()))
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

/// The function an Invoke API path names, as Lambda reads `FunctionName`: a name, a partial
/// ARN (`123456789012:function:name`) or an ARN, each with an optional `:qualifier`.
#[derive(Debug, PartialEq, Eq)]
struct FunctionRef {
    name: String,
    qualifier: Option<String>,
    region: Option<String>,
    account: Option<String>,
}

impl FunctionRef {
    fn parse(segment: &str) -> Self {
        let parts: Vec<&str> = segment.split(':').collect();
        // What comes before `function:` is `arn:PARTITION:lambda:REGION:ACCOUNT`, or a
        // shorter tail of it.
        let (prefix, rest) = match parts.iter().position(|part| *part == "function") {
            Some(at) if at + 1 < parts.len() => parts.split_at(at + 1),
            _ => (&parts[..0], &parts[..]),
        };
        let prefix = prefix.split_last().map_or(prefix, |(_, before)| before);
        let account = prefix
            .last()
            .filter(|a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()));
        let region = account
            .and(prefix.len().checked_sub(2))
            .and_then(|at| prefix.get(at))
            .filter(|r| !r.is_empty() && **r != "lambda");
        match rest {
            [name] | [name, _] if !name.is_empty() => Self {
                name: (*name).to_owned(),
                qualifier: rest.get(1).map(|q| (*q).to_owned()),
                region: region.map(|r| (*r).to_owned()),
                account: account.map(|a| (*a).to_owned()),
            },
            // Not a shape Lambda accepts: a name no function has.
            _ => Self {
                name: segment.to_owned(),
                qualifier: None,
                region: None,
                account: None,
            },
        }
    }

    /// The ARN Lambda names in its answers (`region` when the caller named none).
    fn arn(&self, region: &str) -> String {
        let mut arn = format!(
            "arn:aws:lambda:{}:{}:function:{}",
            self.region.as_deref().unwrap_or(region),
            self.account.as_deref().unwrap_or(ACCOUNT_ID),
            self.name
        );
        if let Some(qualifier) = &self.qualifier {
            arn.push(':');
            arn.push_str(qualifier);
        }
        arn
    }
}

/// The `Qualifier` query parameter, as SDKs send a version or alias.
fn query_qualifier(query: Option<&str>) -> Option<String> {
    query?
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .find(|(key, _)| *key == "Qualifier")
        .map(|(_, value)| percent_decode(value))
        .filter(|value| !value.is_empty())
}

/// The version a call through `qualifier` runs: `$LATEST` unqualified or through
/// `$LATEST`; `1` (the code as loaded, which every alias points to) through an alias of
/// the function or version `1`; `None` for any other qualifier.
fn executed_version(aliases: &[String], qualifier: Option<&str>) -> Option<&'static str> {
    match qualifier {
        None | Some(LATEST) => Some(LATEST),
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

    fn named(name: &str, qualifier: Option<&str>) -> FunctionRef {
        FunctionRef {
            name: name.into(),
            qualifier: qualifier.map(Into::into),
            region: None,
            account: None,
        }
    }

    #[test]
    fn invoke_api_names_arns_and_qualifiers() {
        assert_eq!(FunctionRef::parse("hello"), named("hello", None));
        assert_eq!(
            FunctionRef::parse("hello:$LATEST"),
            named("hello", Some("$LATEST"))
        );
        let full = FunctionRef::parse("arn:aws:lambda:eu-west-1:123456789012:function:hello");
        assert_eq!(full.name, "hello");
        assert_eq!(
            full.arn("us-east-1"),
            "arn:aws:lambda:eu-west-1:123456789012:function:hello"
        );
        let qualified =
            FunctionRef::parse("arn:aws:lambda:eu-west-1:123456789012:function:hello:prod");
        assert_eq!(
            (qualified.name.as_str(), qualified.qualifier.as_deref()),
            ("hello", Some("prod"))
        );
        let partial = FunctionRef::parse("123456789012:function:hello:$LATEST");
        assert_eq!(
            (partial.name.as_str(), partial.qualifier.as_deref()),
            ("hello", Some("$LATEST"))
        );
        assert_eq!(
            partial.arn("us-east-1"),
            "arn:aws:lambda:us-east-1:123456789012:function:hello:$LATEST"
        );
        assert_eq!(
            FunctionRef::parse("nope").arn("us-east-1"),
            "arn:aws:lambda:us-east-1:000000000000:function:nope"
        );
        // Not a shape Lambda accepts: no function has that name.
        assert_eq!(FunctionRef::parse("a:b:c").name, "a:b:c");
        assert_eq!(
            query_qualifier(Some("x=1&Qualifier=%24LATEST")),
            Some("$LATEST".into())
        );
        assert_eq!(query_qualifier(Some("Qualifier=")), None);
        assert_eq!(query_qualifier(None), None);
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
    fn client_contexts_are_base64_of_a_json_object() {
        let encode = |text: &str| base64::engine::general_purpose::STANDARD.encode(text);
        let mut headers = HeaderMap::new();
        assert_eq!(client_context(&headers).unwrap(), None);
        let context = r#"{"custom": {"k": "v"}, "env": {"e": "1"}, "client": {}}"#;
        headers.insert("x-amz-client-context", encode(context).parse().unwrap());
        let decoded = client_context(&headers).unwrap().unwrap();
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&decoded).unwrap(),
            serde_json::json!({"custom": {"k": "v"}, "env": {"e": "1"}, "client": {}})
        );
        assert!(!decoded.contains('\n'));
        for bad in [
            "not base64!".to_owned(),
            encode("{not json"),
            encode("[1]"),
            encode("\"s\""),
        ] {
            headers.insert("x-amz-client-context", bad.parse().unwrap());
            let err = client_context(&headers).unwrap_err();
            assert!(
                matches!(err, RequestError::InvalidClientContext(_)),
                "{bad}"
            );
        }
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
