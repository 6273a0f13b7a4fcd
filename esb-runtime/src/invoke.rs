//! One invocation: what goes into a sandbox and what comes out.

use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

/// One invocation of a function.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InvokeRequest {
    /// The Lambda request id (`Lambda-Runtime-Aws-Request-Id`).
    pub request_id: String,
    /// The event, passed to the function unchanged.
    pub payload: Bytes,
    /// The X-Ray trace header (`Lambda-Runtime-Trace-Id`).
    pub trace_id: Option<String>,
    /// The client context as JSON text (`Lambda-Runtime-Client-Context`); the Invoke API's
    /// base64 is decoded before it gets here.
    pub client_context: Option<String>,
    /// Cognito identity JSON (`Lambda-Runtime-Cognito-Identity`).
    pub cognito_identity: Option<String>,
    /// A shorter deadline than the sandbox's own timeout, if any.
    pub timeout: Option<Duration>,
    /// Asks a runtime whose log lines stay on another host (`remote`) to send back the last
    /// 4 KB of this invocation's log in [`InvokeResponse::log_tail`]; others ignore it.
    pub log_tail: bool,
    /// The version or alias the function was invoked through (`name:live`); the invoked
    /// function ARN the runtime sees (`Lambda-Runtime-Invoked-Function-Arn`) ends in it.
    pub qualifier: Option<String>,
}

impl InvokeRequest {
    /// A request with a fresh request id.
    pub fn new(payload: impl Into<Bytes>) -> Self {
        Self {
            request_id: uuid::Uuid::new_v4().to_string(),
            payload: payload.into(),
            ..Self::default()
        }
    }
}

/// An error the function itself reported (its handler returned an error).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionError {
    /// `errorType`, e.g. `&str` or `Runtime.ExitError`.
    #[serde(rename = "errorType")]
    pub error_type: String,
    /// `errorMessage`.
    #[serde(rename = "errorMessage")]
    pub error_message: String,
    /// The raw error document the function posted (JSON), if any.
    #[serde(skip)]
    pub payload: Bytes,
}

impl FunctionError {
    /// An error of this type and message, with the standard JSON document as payload.
    pub fn new(error_type: impl Into<String>, error_message: impl Into<String>) -> Self {
        let mut err = Self {
            error_type: error_type.into(),
            error_message: error_message.into(),
            payload: Bytes::new(),
        };
        err.payload = Bytes::from(err.to_json());
        err
    }

    /// `{"errorType":..,"errorMessage":..}`, as Lambda's Invoke API returns it.
    pub fn to_json(&self) -> String {
        serde_json::json!({"errorType": self.error_type, "errorMessage": self.error_message})
            .to_string()
    }
}

/// The result the function produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InvokeResult {
    /// The handler's response document.
    Success(Bytes),
    /// The handler's error.
    FunctionError(FunctionError),
}

/// A finished invocation, with the figures of Lambda's REPORT line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvokeResponse {
    /// The function's response or error.
    pub result: InvokeResult,
    /// Wall time of the invocation.
    pub duration: Duration,
    /// Duration rounded up to the next millisecond.
    pub billed_duration: Duration,
    /// Peak memory of the sandbox, in MB.
    pub max_memory_used_mb: u64,
    /// Time the sandbox took to initialize, on its first invocation only.
    pub init_duration: Option<Duration>,
    /// The last 4 KB of the invocation's log, from a runtime that was asked
    /// ([`InvokeRequest::log_tail`]) and keeps the lines elsewhere.
    pub log_tail: Option<String>,
}

impl InvokeResponse {
    /// The body Lambda's Invoke API would return: the response, or the error document.
    pub fn body(&self) -> Bytes {
        match &self.result {
            InvokeResult::Success(body) => body.clone(),
            InvokeResult::FunctionError(err) if !err.payload.is_empty() => err.payload.clone(),
            InvokeResult::FunctionError(err) => Bytes::from(err.to_json()),
        }
    }
}

/// Billed duration: rounded up to the next whole millisecond, as Lambda bills.
pub fn billed(duration: Duration) -> Duration {
    let ms = duration.as_nanos().div_ceil(1_000_000);
    Duration::from_millis(u64::try_from(ms.max(1)).unwrap_or(u64::MAX))
}
