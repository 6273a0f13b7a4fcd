//! The one error type of this crate, and the one place errors become HTTP responses.

use bytes::Bytes;
use http::header::{ALLOW, CONTENT_TYPE, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::Full;

/// Why the gateway could not start, or why it could not serve a request.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid; every problem found is listed.
    #[error("invalid configuration ({} problem{}):\n  {}", .0.len(), if .0.len() == 1 { "" } else { "s" }, .0.join("\n  "))]
    Config(Vec<String>),
    /// `functions.yml` / `routing.yml` / the SAM template could not be loaded.
    #[error(transparent)]
    Router(#[from] esb_router::Error),
    /// The TLS certificate or key could not be loaded or generated.
    #[error("TLS: {0}")]
    Tls(String),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The request's path and method match no route (404).
    #[error("no route for this path")]
    NoRoute,
    /// Routes match the path but not the method (405).
    #[error("method not allowed")]
    MethodNotAllowed {
        /// The methods the path accepts.
        allowed: Vec<Method>,
    },
    /// A missing, malformed, expired or badly signed token, or wrong credentials (401).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The request body is over the limit (413).
    #[error("request body over the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// The request is malformed (400).
    #[error("bad request: {0}")]
    BadRequest(String),
    /// The Invoke API names a function that is not configured (404).
    #[error("Function not found: {0}")]
    FunctionNotFound(String),
    /// Too many asynchronous (`Event`) invocations are in flight (429).
    #[error("too many asynchronous invocations in flight for function {0}")]
    EventQueueFull(String),
    /// The pool could not serve the invocation (429 throttled, 503 no sandbox).
    #[error(transparent)]
    Pool(#[from] esb_pool::PoolError),
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

/// The JSON body, status and `x-amzn-ErrorType` of an error response.
struct Rendered {
    status: StatusCode,
    message: String,
    error_type: &'static str,
}

impl Error {
    fn render(&self) -> Rendered {
        use esb_pool::PoolError as P;
        use esb_runtime::Error as R;
        let (status, message, error_type): (StatusCode, String, &'static str) = match self {
            Error::NoRoute => (
                StatusCode::NOT_FOUND,
                "Not Found".into(),
                "NotFoundException",
            ),
            Error::MethodNotAllowed { .. } => (
                StatusCode::METHOD_NOT_ALLOWED,
                "Method Not Allowed".into(),
                "MethodNotAllowedException",
            ),
            Error::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                "Unauthorized".into(),
                "UnauthorizedException",
            ),
            Error::PayloadTooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "Request Entity Too Large".into(),
                "RequestEntityTooLargeException",
            ),
            Error::BadRequest(reason) => (
                StatusCode::BAD_REQUEST,
                reason.clone(),
                "InvalidParameterValueException",
            ),
            Error::FunctionNotFound(_) => (
                StatusCode::NOT_FOUND,
                self.to_string(),
                "ResourceNotFoundException",
            ),
            Error::EventQueueFull(_) => (
                StatusCode::TOO_MANY_REQUESTS,
                self.to_string(),
                "TooManyRequestsException",
            ),
            Error::Pool(err) => match err {
                P::Throttled { .. } => (
                    StatusCode::TOO_MANY_REQUESTS,
                    "Too Many Requests".into(),
                    "TooManyRequestsException",
                ),
                P::UnknownFunction(name) => (
                    StatusCode::NOT_FOUND,
                    format!("Function not found: {name}"),
                    "ResourceNotFoundException",
                ),
                P::Runtime(R::Timeout { .. }) => (
                    StatusCode::GATEWAY_TIMEOUT,
                    "Endpoint request timed out".into(),
                    "IntegrationTimeout",
                ),
                P::Runtime(R::PayloadTooLarge { .. }) => (
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "Request Entity Too Large".into(),
                    "RequestEntityTooLargeException",
                ),
                P::Runtime(R::Unavailable(_)) => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable".into(),
                    "ServiceUnavailableException",
                ),
                P::Runtime(_) => (
                    StatusCode::BAD_GATEWAY,
                    "Internal server error".into(),
                    "InternalServerErrorException",
                ),
                P::InvalidConfig { .. } | P::AlreadyRegistered(_) | P::NoTokio(_) => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Internal server error".into(),
                    "InternalServerErrorException",
                ),
                // CircuitOpen, NoCapacity, Create, Aborted, Inner, Shutdown (PoolError is non-exhaustive).
                _ => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Service Unavailable".into(),
                    "ServiceUnavailableException",
                ),
            },
            Error::FunctionFailed { .. } | Error::MalformedResponse { .. } => (
                StatusCode::BAD_GATEWAY,
                "Internal server error".into(),
                "InternalServerErrorException",
            ),
            Error::GatewayTimeout { .. } => (
                StatusCode::GATEWAY_TIMEOUT,
                "Endpoint request timed out".into(),
                "IntegrationTimeout",
            ),
            Error::Config(_)
            | Error::Router(_)
            | Error::Tls(_)
            | Error::Bind { .. }
            | Error::Event(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                "Internal server error".into(),
                "InternalServerErrorException",
            ),
        };
        Rendered {
            status,
            message,
            error_type,
        }
    }

    /// The HTTP status this error answers with.
    pub fn status(&self) -> StatusCode {
        self.render().status
    }

    /// The error as a response: JSON `{"message": ...}`, its status and `x-amzn-ErrorType`.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let Rendered {
            status,
            message,
            error_type,
        } = self.render();
        if status.is_server_error() {
            tracing::warn!(status = status.as_u16(), error = %self, "request failed");
        } else {
            tracing::debug!(status = status.as_u16(), error = %self, "request rejected");
        }
        let body = serde_json::json!({ "message": message }).to_string();
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert("x-amzn-errortype", HeaderValue::from_static(error_type));
        if let Error::MethodNotAllowed { allowed } = &self {
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
