//! The crate's errors: [`StartError`] when the gateway cannot start, [`RequestError`] when
//! one request cannot be served, and the one place a request error becomes an HTTP answer
//! ([`RequestError::into_response`]).

use std::borrow::Cow;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;
use tower::BoxError;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid; every problem found is listed.
    #[error(transparent)]
    Config(#[from] Problems),
    /// `functions.yml` / `routing.yml` / the SAM template could not be loaded.
    #[error(transparent)]
    Router(#[from] esb_router::Error),
    /// The pools could not be set up.
    #[error(transparent)]
    Pool(#[from] esb_pool::PoolError),
    /// The TLS certificate or key could not be loaded or generated.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Why the TLS settings could not be made.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or parsed.
    #[error("TLS: {}: {source}", .path.display())]
    Pem {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: tokio_rustls::rustls::pki_types::pem::Error,
    },
    /// The certificate file holds no certificate.
    #[error("TLS: {}: no certificate in the file", .0.display())]
    NoCertificate(PathBuf),
    /// The self-signed certificate could not be generated.
    #[error("TLS: cannot generate a certificate: {0}")]
    Generate(#[source] rcgen::Error),
    /// rustls refused the settings (e.g. a certificate and key that do not fit).
    #[error("TLS: {0}")]
    Settings(#[source] tokio_rustls::rustls::Error),
}

/// One problem of a configuration: the field it is about, and what is wrong.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Problem {
    /// The field, as a dotted path of [`crate::GatewayConfig`] (`auth.jwt_secret`,
    /// `limits.max_connections`) or of the functions (`functions.NAME`).
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl Problem {
    /// A problem of `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Every problem found in a configuration (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Problems(pub Vec<Problem>);

impl Problems {
    /// The problems, each line's field named by `name` (the binary names its flags).
    pub fn render(&self, name: impl Fn(&str) -> Option<&'static str>) -> String {
        let count = self.0.len();
        let mut text = format!(
            "invalid configuration ({count} problem{}):",
            if count == 1 { "" } else { "s" }
        );
        for problem in &self.0 {
            let field = name(&problem.field).unwrap_or(&problem.field);
            text.push_str(&format!("\n  {field}: {}", problem.message));
        }
        text
    }
}

impl fmt::Display for Problems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(|_| None))
    }
}

/// Why one request could not be served; becomes an HTTP answer in [`Self::into_response`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RequestError {
    /// The request's path and method match no route (404).
    #[error("no route for this path")]
    NoRoute,
    /// Routes match the path but not the method (405).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the path accepts.
        allowed: Vec<Method>,
    },
    /// A missing or malformed token, or wrong credentials (401).
    #[error("unauthorized: {0}")]
    Unauthorized(&'static str),
    /// An expired or badly signed token (401).
    #[error("unauthorized: invalid token: {0}")]
    InvalidToken(#[source] jsonwebtoken::errors::Error),
    /// A Lambda authorizer denied the request (403; the message is API Gateway's for the
    /// authorizer's kind of API).
    #[error("the authorizer {authorizer} denied the request")]
    AuthorizerDenied {
        /// The authorizer.
        authorizer: String,
        /// REST or HTTP API.
        api: esb_router::ApiKind,
        /// Whether a Deny statement matched (REST says so in its message).
        explicit: bool,
    },
    /// A Lambda authorizer failed or answered something API Gateway does not accept (500).
    #[error("the authorizer {authorizer} {reason}")]
    AuthorizerFailed {
        /// The authorizer.
        authorizer: String,
        /// What went wrong.
        reason: String,
    },
    /// The request body is over the limit (413).
    #[error("request body over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request body could not be read (400).
    #[error("cannot read the request body: {0}")]
    ReadBody(#[source] BoxError),
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// The auth endpoint's body is not the expected JSON (400).
    #[error("expected {{\"AuthParameters\":{{\"USERNAME\":..,\"PASSWORD\":..}}}}: {0}")]
    LoginBody(#[source] serde_json::Error),
    /// An issued token could not be signed (400).
    #[error("cannot sign the token: {0}")]
    SignToken(#[source] jsonwebtoken::errors::Error),
    /// The Invoke API's payload is not JSON (400).
    #[error("Could not parse request body into json: Could not parse payload into json: {0}")]
    PayloadNotJson(#[source] serde_json::Error),
    /// The Invoke API's `X-Amz-Client-Context` is not base64 of a JSON object (400).
    #[error("Client context must be a valid Base64-encoded JSON object.")]
    InvalidClientContext(#[source] BoxError),
    /// The Invoke API names a function (its ARN, on the Invoke API) or a qualifier that is
    /// not configured (404).
    #[error("Function not found: {0}")]
    FunctionNotFound(String),
    /// Too many asynchronous (`Event`) invocations are in flight (429).
    #[error("too many asynchronous invocations in flight for function {0}")]
    EventQueueFull(String),
    /// The pool could not serve the invocation (429 throttled, 503 no sandbox).
    #[error(transparent)]
    Pool(#[from] esb_pool::PoolError),
    /// An invocation service other than the pool failed (504 on a tower timeout, 503 when
    /// load was shed, else 502).
    #[error("the invocation failed: {0}")]
    Invoke(#[source] BoxError),
    /// The function's handler returned an error on a routed path (502).
    #[error("function {function} failed: {error_type}: {error_message}")]
    FunctionFailed {
        /// The function.
        function: String,
        /// `errorType`.
        error_type: String,
        /// `errorMessage`.
        error_message: String,
    },
    /// The function's response is not a valid Lambda proxy response (502).
    #[error("function {function} returned a malformed response: {source}")]
    MalformedResponse {
        /// The function.
        function: String,
        /// What is wrong with it.
        #[source]
        source: esb_events::Error,
    },
    /// The event could not be built (500).
    #[error("cannot build the event: {0}")]
    Event(#[source] esb_events::Error),
    /// No answer within the function's timeout plus the queue wait and a margin (504).
    #[error("function {function} did not answer within {:.1} s", .waited.as_secs_f64())]
    GatewayTimeout {
        /// The function.
        function: String,
        /// How long the gateway waited.
        waited: std::time::Duration,
    },
}

/// The errors of a custom invocation service (tower timeout, load shedding, ...): the
/// pool's own are kept as they are.
impl From<BoxError> for RequestError {
    fn from(err: BoxError) -> Self {
        match err.downcast::<esb_pool::PoolError>() {
            Ok(pool) => Self::Pool(*pool),
            Err(err) => match err.downcast::<RequestError>() {
                Ok(request) => *request,
                Err(err) => Self::Invoke(err),
            },
        }
    }
}

/// The status, `{"message": ...}` and `x-amzn-ErrorType` of an error answer.
struct Answer {
    status: StatusCode,
    message: Cow<'static, str>,
    error_type: &'static str,
}

const fn answer(status: StatusCode, message: &'static str, error_type: &'static str) -> Answer {
    Answer {
        status,
        message: Cow::Borrowed(message),
        error_type,
    }
}

/// The fixed answers, one a line: status, message, `x-amzn-ErrorType`.
#[rustfmt::skip]
mod fixed {
    use super::{answer, Answer};
    use http::StatusCode as S;

    pub(super) const NOT_FOUND: Answer = answer(S::NOT_FOUND, "Not Found", "NotFoundException");
    pub(super) const METHOD_NOT_ALLOWED: Answer = answer(S::METHOD_NOT_ALLOWED, "Method Not Allowed", "MethodNotAllowedException");
    pub(super) const UNAUTHORIZED: Answer = answer(S::UNAUTHORIZED, "Unauthorized", "UnauthorizedException");
    pub(super) const TOO_LARGE: Answer = answer(S::PAYLOAD_TOO_LARGE, "Request Entity Too Large", "RequestEntityTooLargeException");
    pub(super) const THROTTLED: Answer = answer(S::TOO_MANY_REQUESTS, "Too Many Requests", "TooManyRequestsException");
    pub(super) const TIMED_OUT: Answer = answer(S::GATEWAY_TIMEOUT, "Endpoint request timed out", "IntegrationTimeout");
    pub(super) const UNAVAILABLE: Answer = answer(S::SERVICE_UNAVAILABLE, "Service Unavailable", "ServiceUnavailableException");
    pub(super) const BAD_GATEWAY: Answer = answer(S::BAD_GATEWAY, "Internal server error", "InternalServerErrorException");
    pub(super) const DENIED_REST: Answer = answer(S::FORBIDDEN, "User is not authorized to access this resource", "AccessDeniedException");
    pub(super) const DENIED_REST_EXPLICIT: Answer = answer(S::FORBIDDEN, "User is not authorized to access this resource with an explicit deny", "AccessDeniedException");
    pub(super) const DENIED_HTTP: Answer = answer(S::FORBIDDEN, "Forbidden", "AccessDeniedException");
    pub(super) const AUTHORIZER_FAILED: Answer = answer(S::INTERNAL_SERVER_ERROR, "Internal server error", "AuthorizerConfigurationException");
    pub(super) const INTERNAL: Answer = answer(S::INTERNAL_SERVER_ERROR, "Internal server error", "InternalServerErrorException");
}

use fixed::*;

impl Answer {
    /// The same answer with the error's own text as the message.
    fn saying(status: StatusCode, error: &RequestError, error_type: &'static str) -> Self {
        Self {
            status,
            message: Cow::Owned(error.to_string()),
            error_type,
        }
    }
}

impl RequestError {
    fn answer(&self) -> Answer {
        use RequestError as E;
        match self {
            E::NoRoute => NOT_FOUND,
            E::MethodNotAllowed { .. } => METHOD_NOT_ALLOWED,
            E::Unauthorized(_) | E::InvalidToken(_) => UNAUTHORIZED,
            E::AuthorizerDenied { api, explicit, .. } => match (api, explicit) {
                (esb_router::ApiKind::Http, _) => DENIED_HTTP,
                (_, true) => DENIED_REST_EXPLICIT,
                (_, false) => DENIED_REST,
            },
            E::AuthorizerFailed { .. } => AUTHORIZER_FAILED,
            E::PayloadTooLarge { .. } => TOO_LARGE,
            E::ReadBody(_)
            | E::BadRequest(_)
            | E::LoginBody(_)
            | E::SignToken(_)
            | E::PayloadNotJson(_) => Answer::saying(
                StatusCode::BAD_REQUEST,
                self,
                "InvalidParameterValueException",
            ),
            E::InvalidClientContext(_) => Answer::saying(
                StatusCode::BAD_REQUEST,
                self,
                "InvalidRequestContentException",
            ),
            E::FunctionNotFound(_) => {
                Answer::saying(StatusCode::NOT_FOUND, self, "ResourceNotFoundException")
            }
            E::EventQueueFull(_) => Answer::saying(
                StatusCode::TOO_MANY_REQUESTS,
                self,
                "TooManyRequestsException",
            ),
            E::Pool(err) => pool_answer(err),
            E::Invoke(err) if err.is::<tower::timeout::error::Elapsed>() => TIMED_OUT,
            E::Invoke(err) if err.is::<tower::load_shed::error::Overloaded>() => UNAVAILABLE,
            E::Invoke(_) | E::FunctionFailed { .. } | E::MalformedResponse { .. } => BAD_GATEWAY,
            E::GatewayTimeout { .. } => TIMED_OUT,
            E::Event(_) => INTERNAL,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.answer().status
    }

    /// The error as a response: JSON `{"message": ...}`, its status and `x-amzn-ErrorType`.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let answer = self.answer();
        let body = serde_json::json!({ "message": answer.message });
        self.respond(answer.status, answer.error_type, &body)
    }

    /// The answer of the Lambda Invoke API, as Lambda's own: its status and error type
    /// (botocore's `lambda` model), `x-amzn-ErrorType`, and `{"Type": "User" | "Service",
    /// "Message": ...}`.
    pub fn into_invoke_response(self) -> Response<Full<Bytes>> {
        use RequestError as E;
        let answer = self.answer();
        let (status, error_type, message) = match &self {
            E::PayloadTooLarge { limit } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "RequestTooLargeException",
                format!(
                    "Request must be smaller than {limit} bytes for the InvokeFunction operation"
                ),
            ),
            E::PayloadNotJson(_) | E::ReadBody(_) | E::InvalidClientContext(_) => (
                StatusCode::BAD_REQUEST,
                "InvalidRequestContentException",
                self.to_string(),
            ),
            E::Pool(esb_pool::PoolError::Throttled { .. }) => (
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequestsException",
                "Rate Exceeded.".to_owned(),
            ),
            // No runtime (agent) is reachable: the README's 503 `ServiceUnavailableException`.
            E::Pool(
                esb_pool::PoolError::NoCapacity { .. }
                | esb_pool::PoolError::Runtime(esb_runtime::Error::Unavailable(_))
                | esb_pool::PoolError::Create {
                    source: esb_runtime::Error::Unavailable(_),
                    ..
                },
            ) => (
                StatusCode::SERVICE_UNAVAILABLE,
                "ServiceUnavailableException",
                self.to_string(),
            ),
            // Lambda's own failures: one type SDKs know (`ServiceException`), the status kept.
            _ if answer.status.is_server_error() => {
                (answer.status, "ServiceException", self.to_string())
            }
            _ => (
                answer.status,
                answer.error_type,
                answer.message.into_owned(),
            ),
        };
        let kind = if status.is_server_error() {
            "Service"
        } else {
            "User"
        };
        let body = serde_json::json!({ "Type": kind, "Message": message });
        self.respond(status, error_type, &body)
    }

    /// Logs the error and answers it with `body`.
    fn respond(
        self,
        status: StatusCode,
        error_type: &'static str,
        body: &serde_json::Value,
    ) -> Response<Full<Bytes>> {
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
        if let RequestError::MethodNotAllowed { allowed } = &self {
            let allow = allowed
                .iter()
                .map(Method::as_str)
                .collect::<Vec<_>>()
                .join(", ");
            if let Ok(value) = HeaderValue::from_str(&allow) {
                headers.insert(ALLOW, value);
            }
        }
        response
    }
}

/// The answer to a pool error.
fn pool_answer(err: &esb_pool::PoolError) -> Answer {
    use esb_pool::PoolError as P;
    use esb_runtime::Error as R;
    match err {
        P::Throttled { .. } => THROTTLED,
        P::UnknownFunction(name) => Answer {
            status: StatusCode::NOT_FOUND,
            message: Cow::Owned(format!("Function not found: {name}")),
            error_type: "ResourceNotFoundException",
        },
        P::Runtime(R::Timeout { .. }) => TIMED_OUT,
        P::Runtime(R::PayloadTooLarge { .. }) => TOO_LARGE,
        P::Runtime(R::Unavailable(_)) => UNAVAILABLE,
        P::CircuitOpen { .. } => Answer {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: Cow::Owned(err.to_string()),
            error_type: "ServiceUnavailableException",
        },
        P::Runtime(_) => BAD_GATEWAY,
        P::InvalidConfig { .. } | P::AlreadyRegistered(_) | P::NoTokio(_) => INTERNAL,
        // NoCapacity, Create, Aborted, Inner, Shutdown (PoolError is non-exhaustive).
        _ => UNAVAILABLE,
        #[allow(unreachable_patterns)]
        _ => INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn problems_are_counted_and_renamed_by_the_caller() {
        let problems = Problems(vec![
            Problem::new("auth.jwt_secret", "not set"),
            Problem::new("functions.a", "command: required"),
        ]);
        assert_eq!(
            problems.to_string(),
            "invalid configuration (2 problems):\n  auth.jwt_secret: not set\n  functions.a: command: required"
        );
        let renamed = problems.render(|field| (field == "auth.jwt_secret").then_some("JWT"));
        assert!(renamed.contains("\n  JWT: not set\n"), "{renamed}");
    }

    #[test]
    fn foreign_invocation_errors_keep_the_pools_own() {
        let err: BoxError = Box::new(esb_pool::PoolError::Shutdown);
        assert!(matches!(
            RequestError::from(err),
            RequestError::Pool(esb_pool::PoolError::Shutdown)
        ));
        let err: BoxError = Box::new(tower::timeout::error::Elapsed::new());
        assert_eq!(
            RequestError::from(err).status(),
            StatusCode::GATEWAY_TIMEOUT
        );
    }
}
