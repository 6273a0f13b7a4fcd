//! The wire form of this crate's types: conversions between them and the messages of
//! `esb.agent.v1`, which the agent and [`RemoteRuntime`](super::RemoteRuntime) share.
//!
//! Errors travel as a gRPC status whose code says what kind of failure it is (see
//! [`error_to_status`]) plus an `esb-error-bin` metadata entry holding the typed error as
//! JSON, so a remote caller gets the same [`Error`] the agent's backend returned. Function
//! errors are not errors here: they are a normal invocation response.

use std::time::{Duration, UNIX_EPOCH};

use esb_proto::agent::v1 as pb;
use serde::{Deserialize, Serialize};
use tonic::metadata::BinaryMetadataValue;
use tonic::{Code, Status};

use crate::{
    Capabilities, Error, FunctionError, InvokeMode, InvokeRequest, InvokeResponse, InvokeResult,
    Result, SandboxId, SandboxInfo, SandboxMetrics, SandboxSpec, SandboxState,
};

/// The metadata key that carries the typed error of a failed call.
pub const ERROR_METADATA_KEY: &str = "esb-error-bin";

// ---------------------------------------------------------------------------------------
// Errors on the wire
// ---------------------------------------------------------------------------------------

/// [`Error`] as it travels in [`ERROR_METADATA_KEY`].
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireError {
    NotFound {
        id: String,
    },
    InvalidSpec {
        function: String,
        reason: String,
    },
    Busy {
        id: String,
    },
    Paused {
        id: String,
    },
    Timeout {
        timeout_ms: u64,
    },
    InitTimeout {
        timeout_ms: u64,
    },
    InitFailed {
        error_type: String,
        error_message: String,
    },
    SandboxLost {
        id: String,
        reason: String,
    },
    ExitedIdle {
        id: String,
        request_id: String,
        reason: String,
    },
    PayloadTooLarge {
        size: usize,
        limit: usize,
    },
    Unsupported {
        operation: String,
        backend: String,
    },
    Unavailable {
        message: String,
    },
    Backend {
        message: String,
    },
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The gRPC status an agent answers for a runtime error.
///
/// NotFound -> `NOT_FOUND`, Timeout and InitTimeout -> `DEADLINE_EXCEEDED` (with Lambda's
/// "Task timed out after N seconds"), SandboxLost, ExitedIdle and InitFailed -> `ABORTED`, Busy ->
/// `RESOURCE_EXHAUSTED`, Paused -> `FAILED_PRECONDITION`, InvalidSpec and PayloadTooLarge ->
/// `INVALID_ARGUMENT`, Unsupported -> `UNIMPLEMENTED`, Unavailable -> `UNAVAILABLE`, anything
/// else -> `INTERNAL`. The typed error rides along in [`ERROR_METADATA_KEY`].
pub fn error_to_status(err: &Error) -> Status {
    let (code, wire) = match err {
        Error::NotFound(id) => (Code::NotFound, WireError::NotFound { id: id.to_string() }),
        Error::InvalidSpec { function, reason } => (
            Code::InvalidArgument,
            WireError::InvalidSpec {
                function: function.clone(),
                reason: reason.clone(),
            },
        ),
        Error::Busy(id) => (
            Code::ResourceExhausted,
            WireError::Busy { id: id.to_string() },
        ),
        Error::Paused(id) => (
            Code::FailedPrecondition,
            WireError::Paused { id: id.to_string() },
        ),
        Error::Timeout { timeout } => (
            Code::DeadlineExceeded,
            WireError::Timeout {
                timeout_ms: millis(*timeout),
            },
        ),
        Error::InitTimeout { timeout } => (
            Code::DeadlineExceeded,
            WireError::InitTimeout {
                timeout_ms: millis(*timeout),
            },
        ),
        Error::InitFailed {
            error_type,
            error_message,
        } => (
            Code::Aborted,
            WireError::InitFailed {
                error_type: error_type.clone(),
                error_message: error_message.clone(),
            },
        ),
        Error::SandboxLost { id, reason } => (
            Code::Aborted,
            WireError::SandboxLost {
                id: id.to_string(),
                reason: reason.clone(),
            },
        ),
        Error::ExitedIdle {
            id,
            request_id,
            reason,
        } => (
            Code::Aborted,
            WireError::ExitedIdle {
                id: id.to_string(),
                request_id: request_id.clone(),
                reason: reason.clone(),
            },
        ),
        Error::PayloadTooLarge { size, limit } => (
            Code::InvalidArgument,
            WireError::PayloadTooLarge {
                size: *size,
                limit: *limit,
            },
        ),
        Error::Unsupported { operation, backend } => (
            Code::Unimplemented,
            WireError::Unsupported {
                operation: (*operation).to_owned(),
                backend: (*backend).to_owned(),
            },
        ),
        Error::Unavailable(message) => (
            Code::Unavailable,
            WireError::Unavailable {
                message: message.clone(),
            },
        ),
        other => (
            Code::Internal,
            WireError::Backend {
                message: other.backend_detail().unwrap_or_else(|| other.to_string()),
            },
        ),
    };
    let mut status = Status::new(code, err.to_string());
    if let Ok(json) = serde_json::to_vec(&wire) {
        status
            .metadata_mut()
            .insert_bin(ERROR_METADATA_KEY, BinaryMetadataValue::from_bytes(&json));
    }
    status
}

/// Operation and backend names of [`Error::Unsupported`], which must be `'static`.
const KNOWN_NAMES: &[&str] = &[
    "create",
    "invoke",
    "pause",
    "resume",
    "destroy",
    "list",
    "metrics",
    "image",
    "images",
    "command",
    "commands",
    "network",
    "rie",
    "process",
    "containerd",
    "remote",
];

fn known_name(name: &str) -> Option<&'static str> {
    KNOWN_NAMES.iter().copied().find(|known| *known == name)
}

/// The runtime error a status from an agent (or from the transport) stands for.
///
/// `agent` names the agent in errors that have no typed detail.
pub fn status_to_error(status: &Status, agent: &str) -> Error {
    let wire = status
        .metadata()
        .get_bin(ERROR_METADATA_KEY)
        .and_then(|value| value.to_bytes().ok())
        .and_then(|json| serde_json::from_slice::<WireError>(&json).ok());
    if let Some(wire) = wire {
        return match wire {
            WireError::NotFound { id } => Error::NotFound(id.into()),
            WireError::InvalidSpec { function, reason } => Error::InvalidSpec { function, reason },
            WireError::Busy { id } => Error::Busy(id.into()),
            WireError::Paused { id } => Error::Paused(id.into()),
            WireError::Timeout { timeout_ms } => Error::Timeout {
                timeout: Duration::from_millis(timeout_ms),
            },
            WireError::InitTimeout { timeout_ms } => Error::InitTimeout {
                timeout: Duration::from_millis(timeout_ms),
            },
            WireError::InitFailed {
                error_type,
                error_message,
            } => Error::InitFailed {
                error_type,
                error_message,
            },
            WireError::SandboxLost { id, reason } => Error::SandboxLost {
                id: id.into(),
                reason,
            },
            WireError::ExitedIdle {
                id,
                request_id,
                reason,
            } => Error::ExitedIdle {
                id: id.into(),
                request_id,
                reason,
            },
            WireError::PayloadTooLarge { size, limit } => Error::PayloadTooLarge { size, limit },
            WireError::Unsupported { operation, backend } => {
                match (known_name(&operation), known_name(&backend)) {
                    (Some(operation), Some(backend)) => Error::Unsupported { operation, backend },
                    _ => Error::Backend(format!(
                        "agent {agent}: {operation} is not supported by the {backend} backend"
                    )),
                }
            }
            WireError::Unavailable { message } => {
                Error::Unavailable(format!("agent {agent}: {message}"))
            }
            WireError::Backend { message } => Error::Backend(format!("agent {agent}: {message}")),
        };
    }
    let message = status.message();
    match status.code() {
        Code::Unavailable | Code::Cancelled => {
            Error::Unavailable(format!("agent {agent} unreachable: {message}"))
        }
        // Made on this side from a connection failure (e.g. a refused TLS handshake), not
        // received from the agent: statuses from the wire carry no source.
        Code::Unknown if std::error::Error::source(status).is_some() => {
            Error::Unavailable(format!(
                "agent {agent} unreachable: {}",
                esb_logs::ErrorChain(status)
            ))
        }
        Code::Unauthenticated | Code::PermissionDenied => {
            Error::Backend(format!("agent {agent} rejected the credentials: {message}"))
        }
        code => Error::Backend(format!("agent {agent} answered {code:?}: {message}")),
    }
}

/// A failed invocation of an `InvokeStream`: the status `InvokeWorker` would answer, its
/// typed error ([`ERROR_METADATA_KEY`]) included.
pub fn status_to_failure(status: &Status) -> pb::InvokeFailure {
    pb::InvokeFailure {
        code: status.code() as i32,
        message: status.message().to_owned(),
        detail: status
            .metadata()
            .get_bin(ERROR_METADATA_KEY)
            .and_then(|value| value.to_bytes().ok())
            .unwrap_or_default(),
    }
}

/// The status a failed invocation of an `InvokeStream` stands for (see [`status_to_error`]).
pub fn failure_to_status(failure: pb::InvokeFailure) -> Status {
    let mut status = Status::new(Code::from_i32(failure.code), failure.message);
    if !failure.detail.is_empty() {
        status.metadata_mut().insert_bin(
            ERROR_METADATA_KEY,
            BinaryMetadataValue::from_bytes(&failure.detail),
        );
    }
    status
}

impl From<&Error> for Status {
    fn from(err: &Error) -> Self {
        error_to_status(err)
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        error_to_status(&err)
    }
}

// ---------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------

impl From<InvokeMode> for pb::InvokeMode {
    fn from(mode: InvokeMode) -> Self {
        match mode {
            InvokeMode::RuntimeApi => pb::InvokeMode::RuntimeApi,
            InvokeMode::Rie => pb::InvokeMode::Rie,
        }
    }
}

impl From<pb::InvokeMode> for InvokeMode {
    fn from(mode: pb::InvokeMode) -> Self {
        match mode {
            pb::InvokeMode::RuntimeApi => InvokeMode::RuntimeApi,
            pb::InvokeMode::Rie => InvokeMode::Rie,
        }
    }
}

/// The agent's request for creating a sandbox from this spec.
impl From<&SandboxSpec> for pb::EnsureContainerRequest {
    fn from(spec: &SandboxSpec) -> Self {
        pb::EnsureContainerRequest {
            function_name: spec.function_name.clone(),
            image: spec.image.clone().unwrap_or_default(),
            command: spec.command.clone().unwrap_or_default(),
            env: spec
                .env
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            memory_mb: spec.memory_mb,
            timeout_ms: u32::try_from(spec.timeout.as_millis()).unwrap_or(u32::MAX),
            invoke_mode: pb::InvokeMode::from(spec.invoke_mode) as i32,
            container_id: String::new(),
            labels: spec
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        }
    }
}

/// The spec an agent builds from a create request; zero fields take Lambda's defaults.
impl TryFrom<pb::EnsureContainerRequest> for SandboxSpec {
    type Error = Error;

    fn try_from(request: pb::EnsureContainerRequest) -> Result<Self> {
        let mut spec = SandboxSpec::new(request.function_name);
        if spec.function_name.is_empty() {
            return Err(Error::InvalidSpec {
                function: String::new(),
                reason: "function_name is empty".into(),
            });
        }
        spec.image = Some(request.image).filter(|image| !image.is_empty());
        spec.command = Some(request.command).filter(|argv| !argv.is_empty());
        spec.env = request.env.into_iter().collect();
        spec.labels = request.labels.into_iter().collect();
        if request.memory_mb > 0 {
            spec.memory_mb = request.memory_mb;
        }
        if request.timeout_ms > 0 {
            spec.timeout = Duration::from_millis(u64::from(request.timeout_ms));
        }
        spec.invoke_mode = match pb::InvokeMode::try_from(request.invoke_mode) {
            Ok(mode) => mode.into(),
            Err(_) => {
                return Err(Error::InvalidSpec {
                    function: spec.function_name,
                    reason: format!("unknown invoke_mode {}", request.invoke_mode),
                });
            }
        };
        Ok(spec)
    }
}

impl From<SandboxState> for pb::ContainerStatus {
    fn from(state: SandboxState) -> Self {
        match state {
            SandboxState::Running => pb::ContainerStatus::Running,
            SandboxState::Paused => pb::ContainerStatus::Paused,
            SandboxState::Stopped => pb::ContainerStatus::Stopped,
            SandboxState::Unknown => pb::ContainerStatus::Unknown,
        }
    }
}

impl From<pb::ContainerStatus> for SandboxState {
    fn from(status: pb::ContainerStatus) -> Self {
        match status {
            pb::ContainerStatus::Running => SandboxState::Running,
            pb::ContainerStatus::Paused => SandboxState::Paused,
            pb::ContainerStatus::Stopped => SandboxState::Stopped,
            pb::ContainerStatus::Unknown => SandboxState::Unknown,
        }
    }
}

/// A sandbox as the agent lists it.
impl From<SandboxInfo> for pb::Container {
    fn from(info: SandboxInfo) -> Self {
        let created_at_ms = info
            .created_at
            .duration_since(UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        pb::Container {
            container_id: info.id.to_string(),
            function_name: info.function_name,
            status: pb::ContainerStatus::from(info.state) as i32,
            created_at_ms,
            labels: info.labels.into_iter().collect(),
        }
    }
}

/// A sandbox from the agent's listing.
impl From<pb::Container> for SandboxInfo {
    fn from(container: pb::Container) -> Self {
        let state = pb::ContainerStatus::try_from(container.status)
            .map(SandboxState::from)
            .unwrap_or(SandboxState::Unknown);
        let created_at = UNIX_EPOCH
            + Duration::from_millis(u64::try_from(container.created_at_ms).unwrap_or_default());
        SandboxInfo {
            id: container.container_id.into(),
            function_name: container.function_name,
            state,
            created_at,
            labels: container.labels.into_iter().collect(),
        }
    }
}

/// One invocation of one sandbox: what `InvokeWorker` carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invocation {
    /// The sandbox.
    pub id: SandboxId,
    /// The invocation.
    pub request: InvokeRequest,
}

/// The agent's request for one invocation.
impl From<Invocation> for pb::InvokeWorkerRequest {
    fn from(Invocation { id, request }: Invocation) -> Self {
        pb::InvokeWorkerRequest {
            container_id: id.to_string(),
            payload: request.payload,
            request_id: request.request_id,
            trace_id: request.trace_id.unwrap_or_default(),
            client_context: request.client_context.unwrap_or_default(),
            cognito_identity: request.cognito_identity.unwrap_or_default(),
            timeout_ms: request
                .timeout
                .map(|t| u32::try_from(t.as_millis().max(1)).unwrap_or(u32::MAX))
                .unwrap_or(0),
            log_tail: request.log_tail,
            qualifier: request.qualifier.unwrap_or_default(),
        }
    }
}

/// The invocation an agent runs for a request; an empty request id gets a fresh one.
impl From<pb::InvokeWorkerRequest> for Invocation {
    fn from(request: pb::InvokeWorkerRequest) -> Self {
        let request_id = if request.request_id.is_empty() {
            uuid::Uuid::new_v4().to_string()
        } else {
            request.request_id
        };
        let invoke = InvokeRequest {
            request_id,
            payload: request.payload,
            trace_id: Some(request.trace_id).filter(|s| !s.is_empty()),
            client_context: Some(request.client_context).filter(|s| !s.is_empty()),
            cognito_identity: Some(request.cognito_identity).filter(|s| !s.is_empty()),
            timeout: Some(request.timeout_ms)
                .filter(|&ms| ms > 0)
                .map(|ms| Duration::from_millis(u64::from(ms))),
            log_tail: request.log_tail,
            qualifier: Some(request.qualifier).filter(|s| !s.is_empty()),
        };
        Invocation {
            id: request.container_id.into(),
            request: invoke,
        }
    }
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// The agent's answer for a finished invocation (a function error included).
impl From<InvokeResponse> for pb::InvokeWorkerResponse {
    fn from(response: InvokeResponse) -> Self {
        let result = match response.result {
            InvokeResult::Success(body) => pb::invoke_worker_response::Result::Payload(body),
            InvokeResult::FunctionError(err) => {
                pb::invoke_worker_response::Result::FunctionError(pb::FunctionError {
                    error_type: err.error_type,
                    error_message: err.error_message,
                    payload: err.payload,
                })
            }
        };
        pb::InvokeWorkerResponse {
            result: Some(result),
            duration_us: micros(response.duration),
            billed_duration_ms: millis(response.billed_duration),
            max_memory_used_mb: response.max_memory_used_mb,
            init_duration_us: response.init_duration.map(micros),
            log_tail: response.log_tail,
        }
    }
}

/// The invocation result in an agent's answer.
impl TryFrom<pb::InvokeWorkerResponse> for InvokeResponse {
    type Error = Error;

    fn try_from(response: pb::InvokeWorkerResponse) -> Result<Self> {
        let result = match response.result {
            Some(pb::invoke_worker_response::Result::Payload(body)) => InvokeResult::Success(body),
            Some(pb::invoke_worker_response::Result::FunctionError(err)) => {
                InvokeResult::FunctionError(FunctionError {
                    error_type: err.error_type,
                    error_message: err.error_message,
                    payload: err.payload,
                })
            }
            None => {
                return Err(Error::Backend(
                    "the agent's invocation response has no result".into(),
                ));
            }
        };
        Ok(InvokeResponse {
            result,
            duration: Duration::from_micros(response.duration_us),
            billed_duration: Duration::from_millis(response.billed_duration_ms),
            max_memory_used_mb: response.max_memory_used_mb,
            init_duration: response.init_duration_us.map(Duration::from_micros),
            log_tail: response.log_tail,
        })
    }
}

/// Resource usage as the agent reports it.
impl From<SandboxMetrics> for pb::GetContainerMetricsResponse {
    fn from(metrics: SandboxMetrics) -> Self {
        pb::GetContainerMetricsResponse {
            memory_current_bytes: metrics.memory_current_bytes,
            memory_max_bytes: metrics.memory_max_bytes,
            memory_limit_bytes: metrics.memory_limit_bytes,
            oom_events: metrics.oom_events,
            cpu_usage_ns: metrics.cpu_usage_ns,
            pids: metrics.pids,
        }
    }
}

/// Resource usage from the agent's report.
impl From<pb::GetContainerMetricsResponse> for SandboxMetrics {
    fn from(m: pb::GetContainerMetricsResponse) -> Self {
        SandboxMetrics {
            memory_current_bytes: m.memory_current_bytes,
            memory_max_bytes: m.memory_max_bytes,
            memory_limit_bytes: m.memory_limit_bytes,
            oom_events: m.oom_events,
            cpu_usage_ns: m.cpu_usage_ns,
            pids: m.pids,
        }
    }
}

/// What a backend can do, as the agent reports it.
impl From<Capabilities> for pb::GetCapabilitiesResponse {
    fn from(capabilities: Capabilities) -> Self {
        pb::GetCapabilitiesResponse {
            pause: capabilities.pause,
            images: capabilities.images,
            commands: capabilities.commands,
            metrics: capabilities.metrics,
            network: capabilities.network,
            backend: capabilities.backend.to_owned(),
            max_sandboxes: None,
            memory_budget_mb: None,
        }
    }
}

/// What an agent's backend can do, seen through the agent: the backend is `remote`.
impl From<&pb::GetCapabilitiesResponse> for Capabilities {
    fn from(reported: &pb::GetCapabilitiesResponse) -> Self {
        Capabilities {
            backend: "remote",
            pause: reported.pause,
            images: reported.images,
            commands: reported.commands,
            metrics: reported.metrics,
            network: reported.network,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn round_trip(err: Error) -> Error {
        status_to_error(&error_to_status(&err), "test-agent")
    }

    #[test]
    fn timeout_keeps_lambda_message_and_duration() {
        let status = error_to_status(&Error::Timeout {
            timeout: Duration::from_secs(3),
        });
        assert_eq!(status.code(), Code::DeadlineExceeded);
        assert_eq!(status.message(), "Task timed out after 3.00 seconds");
        assert!(matches!(
            status_to_error(&status, "a"),
            Error::Timeout { timeout } if timeout == Duration::from_secs(3)
        ));
    }

    #[test]
    fn typed_errors_survive_the_wire() {
        assert!(
            matches!(round_trip(Error::NotFound("sb-1".into())), Error::NotFound(id) if id.as_str() == "sb-1")
        );
        assert!(
            matches!(round_trip(Error::Busy("sb-2".into())), Error::Busy(id) if id.as_str() == "sb-2")
        );
        assert!(matches!(
            round_trip(Error::SandboxLost { id: "sb-3".into(), reason: "signal: killed".into() }),
            Error::SandboxLost { id, reason } if id.as_str() == "sb-3" && reason == "signal: killed"
        ));
        assert!(matches!(
            round_trip(Error::InitFailed { error_type: "Runtime.X".into(), error_message: "boom".into() }),
            Error::InitFailed { error_type, error_message } if error_type == "Runtime.X" && error_message == "boom"
        ));
        assert!(matches!(
            round_trip(Error::PayloadTooLarge { size: 7, limit: 6 }),
            Error::PayloadTooLarge { size: 7, limit: 6 }
        ));
        assert!(matches!(
            round_trip(Error::Unsupported {
                operation: "pause",
                backend: "process"
            }),
            Error::Unsupported {
                operation: "pause",
                backend: "process"
            }
        ));
        assert!(matches!(
            round_trip(Error::Unavailable("containerd down".into())),
            Error::Unavailable(msg) if msg.contains("containerd down")
        ));
    }

    #[test]
    fn stream_failures_carry_the_same_typed_errors_as_call_statuses() {
        let through_a_stream = |err: Error| {
            let failure = status_to_failure(&error_to_status(&err));
            status_to_error(&failure_to_status(failure), "test-agent")
        };
        assert!(matches!(
            through_a_stream(Error::Timeout { timeout: Duration::from_millis(1500) }),
            Error::Timeout { timeout } if timeout == Duration::from_millis(1500)
        ));
        assert!(matches!(
            through_a_stream(Error::SandboxLost { id: "sb-3".into(), reason: "exit status 3".into() }),
            Error::SandboxLost { id, reason } if id.as_str() == "sb-3" && reason == "exit status 3"
        ));
        // A status without a typed error (e.g. a refused request) keeps its code and message.
        let failure = status_to_failure(&Status::invalid_argument("container_id is empty"));
        assert!(failure.detail.is_empty());
        let status = failure_to_status(failure);
        assert_eq!(status.code(), Code::InvalidArgument);
        assert_eq!(status.message(), "container_id is empty");
    }

    #[test]
    fn status_codes_follow_the_kind_of_failure() {
        let code = |err: Error| error_to_status(&err).code();
        assert_eq!(code(Error::NotFound("x".into())), Code::NotFound);
        assert_eq!(code(Error::Busy("x".into())), Code::ResourceExhausted);
        assert_eq!(code(Error::Paused("x".into())), Code::FailedPrecondition);
        assert_eq!(
            code(Error::SandboxLost {
                id: "x".into(),
                reason: String::new()
            }),
            Code::Aborted
        );
        assert_eq!(code(Error::Unavailable(String::new())), Code::Unavailable);
        assert_eq!(code(Error::Backend(String::new())), Code::Internal);
    }

    #[test]
    fn untyped_unavailable_status_means_the_agent_is_unreachable() {
        let err = status_to_error(&Status::unavailable("connection refused"), "http://h:1");
        assert!(matches!(err, Error::Unavailable(msg) if msg.contains("http://h:1")));
        let err = status_to_error(&Status::unauthenticated("bad token"), "http://h:1");
        assert!(matches!(err, Error::Backend(msg) if msg.contains("rejected")));
    }

    #[test]
    fn invoke_messages_round_trip() {
        let mut request = InvokeRequest::new(r#"{"a":1}"#);
        request.trace_id = Some("Root=1-0-0".into());
        request.timeout = Some(Duration::from_millis(250));
        request.log_tail = true;
        request.qualifier = Some("live".into());
        let id = SandboxId::from("sb");
        let invocation = Invocation {
            id: id.clone(),
            request: request.clone(),
        };
        let back = Invocation::from(pb::InvokeWorkerRequest::from(invocation));
        assert_eq!(back.id, id);
        assert_eq!(back.request, request);

        let response = InvokeResponse {
            result: InvokeResult::FunctionError(FunctionError::new("E", "m")),
            duration: Duration::from_micros(1500),
            billed_duration: Duration::from_millis(2),
            max_memory_used_mb: 12,
            init_duration: Some(Duration::from_micros(40_000)),
            log_tail: Some("START RequestId: r Version: $LATEST\n".into()),
        };
        assert_eq!(
            InvokeResponse::try_from(pb::InvokeWorkerResponse::from(response.clone())).ok(),
            Some(response)
        );
    }

    #[test]
    fn spec_defaults_apply_to_zero_fields() {
        let spec = SandboxSpec::new("f")
            .command(["/bin/f"])
            .env("K", "V")
            .timeout(Duration::from_secs(9));
        let back = SandboxSpec::try_from(pb::EnsureContainerRequest::from(&spec)).ok();
        assert_eq!(back, Some(spec));
        let request = pb::EnsureContainerRequest {
            function_name: "g".into(),
            ..Default::default()
        };
        let spec = SandboxSpec::try_from(request).ok();
        assert_eq!(spec, Some(SandboxSpec::new("g")));
        assert!(SandboxSpec::try_from(pb::EnsureContainerRequest::default()).is_err());
    }

    #[test]
    fn listings_metrics_and_capabilities_round_trip() {
        let info = SandboxInfo {
            id: "sb".into(),
            function_name: "f".into(),
            state: SandboxState::Paused,
            created_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            labels: [("k".to_owned(), "v".to_owned())].into(),
        };
        assert_eq!(SandboxInfo::from(pb::Container::from(info.clone())), info);
        let unknown = pb::Container {
            status: 99,
            ..pb::Container::default()
        };
        assert_eq!(SandboxInfo::from(unknown).state, SandboxState::Unknown);

        let metrics = SandboxMetrics {
            memory_current_bytes: 1,
            memory_max_bytes: 2,
            memory_limit_bytes: 3,
            oom_events: 4,
            cpu_usage_ns: 5,
            pids: 6,
        };
        assert_eq!(
            SandboxMetrics::from(pb::GetContainerMetricsResponse::from(metrics)),
            metrics
        );

        let capabilities = Capabilities {
            backend: "containerd",
            pause: true,
            images: true,
            commands: false,
            metrics: true,
            network: true,
        };
        let reported = pb::GetCapabilitiesResponse::from(capabilities);
        assert_eq!(reported.backend, "containerd");
        assert_eq!(
            Capabilities::from(&reported),
            Capabilities {
                backend: "remote",
                ..capabilities
            }
        );
    }

    #[test]
    fn backend_failures_keep_their_message_on_the_wire() {
        let err = Error::Json {
            document: "manifest.json".into(),
            source: serde_json::from_str::<u8>("x").unwrap_err(),
        };
        let back = round_trip(err);
        assert!(
            matches!(&back, Error::Backend(msg) if msg.starts_with("agent test-agent: manifest.json: ")),
            "{back:?}"
        );
    }
}
