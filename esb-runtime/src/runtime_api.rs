//! The Lambda Runtime API, served to one sandbox, and the broker that hands it invocations.
//!
//! A [`Broker`] belongs to one sandbox. [`Broker::invoke`] queues one invocation and waits
//! for the function's runtime client to take it from `GET /2018-06-01/runtime/invocation/next`
//! and answer with `POST .../invocation/{id}/response` or `.../error`. [`serve`] runs the HTTP
//! side on a listener the backend bound (127.0.0.1:ephemeral for processes, 127.0.0.1:9001
//! inside a network namespace for containers).

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot, watch};

use crate::output::OutputGate;
use crate::{
    Error, FunctionError, InvokeRequest, InvokeResponse, InvokeResult, MAX_PAYLOAD_BYTES, Result,
    SandboxId, billed,
};

const PREFIX: &str = "/2018-06-01/runtime/";
/// How many answered request ids are remembered, to tell a double answer (403) from an unknown id (400).
const REMEMBERED_IDS: usize = 16;

/// What a broker needs to know about its sandbox.
#[derive(Clone, Debug)]
pub struct BrokerConfig {
    /// The sandbox.
    pub sandbox_id: SandboxId,
    /// The function's name.
    pub function_name: String,
    /// Region in the function ARN.
    pub region: String,
    /// Account id in the function ARN.
    pub account_id: String,
    /// The sandbox's default invocation timeout.
    pub timeout: Duration,
    /// How long init may take before the first invocation gives up.
    pub init_timeout: Duration,
}

/// Where a sandbox is in its life.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Phase {
    /// Started; its runtime has not asked for an invocation yet.
    Init,
    /// Its runtime has polled `/next` at least once.
    Ready,
    /// Gone: exited, killed, or failed its init.
    Dead(Death),
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Death {
    Lost(String),
    InitFailed {
        error_type: String,
        error_message: String,
    },
    InitTimeout(Duration),
    Timeout(Duration),
}

struct Job {
    request: InvokeRequest,
    deadline_ms: u64,
    answer: oneshot::Sender<Answer>,
}

struct Answer {
    result: InvokeResult,
    /// When the runtime took the invocation from `/next`.
    taken_at: Instant,
}

struct InFlight {
    request_id: String,
    taken_at: Instant,
    answer: oneshot::Sender<Answer>,
}

#[derive(Default)]
struct Slots {
    in_flight: Option<InFlight>,
    /// Request and trace id of the latest invocation handed to the runtime, kept after its
    /// answer: output lines read after the answer still belong to it.
    latest: Option<(String, Option<String>)>,
    answered: VecDeque<String>,
    init_reported: bool,
}

struct Inner {
    config: BrokerConfig,
    function_arn: String,
    created: Instant,
    phase: watch::Sender<Phase>,
    init_duration: Mutex<Option<Duration>>,
    /// Boxed: the channel allocates room for a block of messages up front, which for
    /// unboxed jobs is several kilobytes per idle sandbox.
    jobs_tx: mpsc::Sender<Box<Job>>,
    jobs_rx: tokio::sync::Mutex<mpsc::Receiver<Box<Job>>>,
    slots: Mutex<Slots>,
    busy: AtomicBool,
    #[cfg_attr(
        not(any(feature = "process", feature = "containerd")),
        allow(dead_code)
    )]
    output: OutputGate,
}

/// Hands invocations to one sandbox's runtime client and collects its answers.
#[derive(Clone)]
pub struct Broker {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Broker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Broker")
            .field("sandbox_id", &self.inner.config.sandbox_id)
            .finish_non_exhaustive()
    }
}

/// Releases the one-invocation slot of a broker when dropped.
struct BusyGuard<'a>(&'a AtomicBool);

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl Broker {
    /// A broker for a sandbox that is starting now.
    pub fn new(config: BrokerConfig) -> Self {
        let function_arn = format!(
            "arn:aws:lambda:{}:{}:function:{}",
            config.region, config.account_id, config.function_name
        );
        let (jobs_tx, jobs_rx) = mpsc::channel(1);
        let (phase, _) = watch::channel(Phase::Init);
        Self {
            inner: Arc::new(Inner {
                config,
                function_arn,
                created: Instant::now(),
                phase,
                init_duration: Mutex::new(None),
                jobs_tx,
                jobs_rx: tokio::sync::Mutex::new(jobs_rx),
                slots: Mutex::new(Slots::default()),
                busy: AtomicBool::new(false),
                output: OutputGate::default(),
            }),
        }
    }

    /// The function ARN the runtime sees (`Lambda-Runtime-Invoked-Function-Arn`).
    pub fn function_arn(&self) -> &str {
        &self.inner.function_arn
    }

    /// Whether the sandbox's output readers still hold lines.
    #[cfg_attr(
        not(any(feature = "process", feature = "containerd")),
        allow(dead_code)
    )]
    pub(crate) fn output(&self) -> &OutputGate {
        &self.inner.output
    }

    /// The ARN an invocation through `qualifier` (a version or alias) names: the function's
    /// ARN, with `:qualifier` when there is one.
    pub fn invoked_function_arn(&self, qualifier: Option<&str>) -> String {
        match qualifier {
            Some(qualifier) => format!("{}:{qualifier}", self.inner.function_arn),
            None => self.inner.function_arn.clone(),
        }
    }

    /// The request and trace id to tag a log line of the sandbox with: the invocation in
    /// flight, or the latest one until the next starts (its output may be read after its
    /// answer); `None` before the first invocation (init output).
    pub fn current_request(&self) -> Option<(String, Option<String>)> {
        self.slots().latest.clone()
    }

    /// Records an invocation handed to the function by another path (the emulator of `rie`
    /// images): output lines read from now on belong to it.
    #[cfg(feature = "containerd")]
    pub(crate) fn note_request(&self, request_id: &str, trace_id: Option<String>) {
        self.slots().latest = Some((request_id.to_owned(), trace_id));
    }

    /// True once the sandbox is gone (exited, killed, or failed init).
    pub fn is_dead(&self) -> bool {
        matches!(*self.inner.phase.borrow(), Phase::Dead(_))
    }

    /// Init duration, once the runtime has polled `/next` the first time.
    pub fn init_duration(&self) -> Option<Duration> {
        *lock(&self.inner.init_duration)
    }

    /// Marks the sandbox as gone: the invocation in flight, and any later one, fails at once
    /// with [`Error::SandboxLost`] carrying `reason`.
    pub fn lost(&self, reason: impl Into<String>) {
        let reason = reason.into();
        self.inner.phase.send_if_modified(|phase| {
            if matches!(phase, Phase::Dead(_)) {
                false
            } else {
                *phase = Phase::Dead(Death::Lost(reason));
                true
            }
        });
    }

    fn die(&self, death: Death) {
        self.inner.phase.send_if_modified(|phase| {
            if matches!(phase, Phase::Dead(_)) {
                false
            } else {
                *phase = Phase::Dead(death);
                true
            }
        });
    }

    fn slots(&self) -> MutexGuard<'_, Slots> {
        lock(&self.inner.slots)
    }

    fn death_error(&self, death: &Death) -> Error {
        match death {
            Death::Lost(reason) => Error::SandboxLost {
                id: self.inner.config.sandbox_id.clone(),
                reason: reason.clone(),
            },
            Death::InitFailed {
                error_type,
                error_message,
            } => Error::InitFailed {
                error_type: error_type.clone(),
                error_message: error_message.clone(),
            },
            Death::InitTimeout(timeout) => Error::InitTimeout { timeout: *timeout },
            Death::Timeout(_) => Error::SandboxLost {
                id: self.inner.config.sandbox_id.clone(),
                reason: "killed after a timeout".into(),
            },
        }
    }

    /// The error of an invocation the runtime never took, the sandbox having died by
    /// `death`: [`Error::ExitedIdle`] when the runtime exited after its init (the invocation
    /// can run elsewhere), the death's own error otherwise.
    fn untaken_error(&self, death: &Death, request_id: &str) -> Error {
        match death {
            Death::Lost(reason) if self.init_duration().is_some() => Error::ExitedIdle {
                id: self.inner.config.sandbox_id.clone(),
                request_id: request_id.to_owned(),
                reason: reason.clone(),
            },
            death => self.death_error(death),
        }
    }

    /// [`Error::ExitedIdle`] for `request_id` when the runtime exited after its init with no
    /// invocation in flight: an invocation now would fail without running.
    #[cfg_attr(
        not(any(feature = "process", feature = "containerd")),
        allow(dead_code)
    )]
    pub(crate) fn exited_idle(&self, request_id: &str) -> Option<Error> {
        let Phase::Dead(death) = self.inner.phase.borrow().clone() else {
            return None;
        };
        if self.slots().in_flight.is_some() {
            return None;
        }
        match self.untaken_error(&death, request_id) {
            err @ Error::ExitedIdle { .. } => Some(err),
            _ => None,
        }
    }

    /// Waits until the sandbox's init has ended (its runtime polled `/next` or it died), for
    /// at most the rest of the init timeout.
    #[cfg_attr(
        not(any(feature = "process", feature = "containerd")),
        allow(dead_code)
    )]
    pub(crate) async fn wait_init(&self) {
        let mut phase = self.inner.phase.subscribe();
        let deadline = self.inner.created + self.inner.config.init_timeout;
        let _ =
            tokio::time::timeout_at(deadline.into(), phase.wait_for(|p| *p != Phase::Init)).await;
    }

    /// Runs one invocation: waits for init on a new sandbox, hands the event to the runtime,
    /// and waits for its answer until the deadline.
    ///
    /// The returned response has `max_memory_used_mb` = 0: the backend fills it in. On
    /// [`Error::Timeout`] and [`Error::InitTimeout`] the broker is dead and the backend must
    /// kill the sandbox.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse> {
        if request.payload.len() > MAX_PAYLOAD_BYTES {
            return Err(Error::PayloadTooLarge {
                size: request.payload.len(),
                limit: MAX_PAYLOAD_BYTES,
            });
        }
        if self
            .inner
            .busy
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::Busy(self.inner.config.sandbox_id.clone()));
        }
        let _busy = BusyGuard(&self.inner.busy);
        let mut phase = self.inner.phase.subscribe();

        // Wait for init: the runtime's first poll of /next.
        let init_deadline = self.inner.created + self.inner.config.init_timeout;
        loop {
            let current = phase.borrow_and_update().clone();
            match current {
                Phase::Ready => break,
                Phase::Dead(death) => return Err(self.untaken_error(&death, &request.request_id)),
                Phase::Init => {}
            }
            if tokio::time::timeout_at(init_deadline.into(), phase.changed())
                .await
                .is_err()
            {
                let timeout = self.inner.config.init_timeout;
                self.die(Death::InitTimeout(timeout));
                return Err(Error::InitTimeout { timeout });
            }
        }

        let timeout = request.timeout.unwrap_or(self.inner.config.timeout);
        let deadline = Instant::now() + timeout;
        let deadline_ms = epoch_ms(SystemTime::now() + timeout);
        let (answer_tx, answer_rx) = oneshot::channel();
        let request_id = request.request_id.clone();
        let job = Job {
            request,
            deadline_ms,
            answer: answer_tx,
        };
        let send = self.inner.jobs_tx.send(Box::new(job));
        let outcome = tokio::select! {
            biased;
            answer = async { send.await.ok()?; answer_rx.await.ok() } => answer,
            death = wait_dead(&mut phase) => {
                let taken = self
                    .slots()
                    .latest
                    .as_ref()
                    .is_some_and(|(taken, _)| *taken == request_id);
                return Err(if taken {
                    self.death_error(&death)
                } else {
                    self.untaken_error(&death, &request_id)
                });
            }
            _ = tokio::time::sleep_until(deadline.into()) => None,
        };
        let Some(answer) = outcome else {
            // The deadline passed (or the sender vanished, which only happens as it dies).
            if let Phase::Dead(death) = phase.borrow().clone()
                && death != Death::Timeout(timeout)
            {
                return Err(self.death_error(&death));
            }
            self.die(Death::Timeout(timeout));
            return Err(Error::Timeout { timeout });
        };
        let duration = answer.taken_at.elapsed();
        let init_duration = {
            let mut slots = self.slots();
            if slots.init_reported {
                None
            } else {
                slots.init_reported = true;
                self.init_duration()
            }
        };
        Ok(InvokeResponse {
            result: answer.result,
            duration,
            billed_duration: billed(duration),
            max_memory_used_mb: 0,
            init_duration,
            log_tail: None,
        })
    }

    /// Serves `GET /invocation/next`.
    async fn next(&self) -> Response<Full<Bytes>> {
        if self.slots().in_flight.is_some() {
            return api_error(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                "an invocation is in flight: answer it before asking for the next one",
            );
        }
        let Ok(mut jobs) = self.inner.jobs_rx.try_lock() else {
            return api_error(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                "another /next request is already waiting",
            );
        };
        self.inner.phase.send_if_modified(|phase| {
            if *phase == Phase::Init {
                *lock(&self.inner.init_duration) = Some(self.inner.created.elapsed());
                *phase = Phase::Ready;
                true
            } else {
                false
            }
        });
        let mut phase = self.inner.phase.subscribe();
        let job = loop {
            let job = tokio::select! {
                job = jobs.recv() => job,
                _ = wait_dead(&mut phase) => None,
            };
            // Skip invocations whose caller gave up before the runtime took them.
            match job {
                Some(job) if job.answer.is_closed() => continue,
                job => break job,
            }
        };
        let Some(job) = job else {
            return api_error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Runtime.Gone",
                "the sandbox is shutting down",
            );
        };
        let taken_at = Instant::now();
        let request = job.request;
        let mut builder = Response::builder()
            .status(StatusCode::OK)
            .header("content-type", "application/json")
            .header("lambda-runtime-aws-request-id", &request.request_id)
            .header("lambda-runtime-deadline-ms", job.deadline_ms.to_string())
            .header(
                "lambda-runtime-invoked-function-arn",
                self.invoked_function_arn(request.qualifier.as_deref()),
            );
        for (name, value) in [
            ("lambda-runtime-trace-id", &request.trace_id),
            ("lambda-runtime-client-context", &request.client_context),
            ("lambda-runtime-cognito-identity", &request.cognito_identity),
        ] {
            if let Some(value) = value.as_deref().and_then(|v| HeaderValue::from_str(v).ok()) {
                builder = builder.header(name, value);
            }
        }
        let mut slots = self.slots();
        slots.latest = Some((request.request_id.clone(), request.trace_id.clone()));
        slots.in_flight = Some(InFlight {
            request_id: request.request_id,
            taken_at,
            answer: job.answer,
        });
        drop(slots);
        builder
            .body(Full::new(request.payload))
            .unwrap_or_else(|_| internal_error())
    }

    /// Takes the in-flight invocation if `request_id` names it.
    fn take_in_flight(&self, request_id: &str) -> Result<InFlight, Box<Response<Full<Bytes>>>> {
        let mut slots = self.slots();
        match &slots.in_flight {
            Some(f) if f.request_id == request_id => {
                let taken = slots
                    .in_flight
                    .take()
                    .ok_or_else(|| Box::new(internal_error()))?;
                if slots.answered.len() == REMEMBERED_IDS {
                    slots.answered.pop_front();
                }
                slots.answered.push_back(request_id.to_owned());
                Ok(taken)
            }
            _ if slots.answered.iter().any(|id| id == request_id) => Err(Box::new(api_error(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                &format!("invocation {request_id} was already answered"),
            ))),
            _ => Err(Box::new(api_error(
                StatusCode::BAD_REQUEST,
                "InvalidRequestID",
                &format!("invalid request id {request_id}: no such invocation in flight"),
            ))),
        }
    }

    /// Serves `POST /invocation/{id}/response`.
    async fn response(&self, request_id: &str, body: Incoming) -> Response<Full<Bytes>> {
        let body = read_limited(body).await;
        let in_flight = match self.take_in_flight(request_id) {
            Ok(f) => f,
            Err(resp) => return *resp,
        };
        let (status, result) = match body {
            Ok(body) => (StatusCode::ACCEPTED, InvokeResult::Success(body)),
            Err(BodyError::TooLarge) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                InvokeResult::FunctionError(FunctionError::new(
                    "Function.ResponseSizeTooLarge",
                    format!(
                        "Response payload size exceeded maximum allowed payload size ({MAX_PAYLOAD_BYTES} bytes)."
                    ),
                )),
            ),
            Err(BodyError::Broken(reason)) => (
                StatusCode::BAD_REQUEST,
                InvokeResult::FunctionError(FunctionError::new(
                    "Runtime.InvalidResponse",
                    format!("the response body could not be read: {reason}"),
                )),
            ),
        };
        let _ = in_flight.answer.send(Answer {
            result,
            taken_at: in_flight.taken_at,
        });
        if status == StatusCode::ACCEPTED {
            accepted()
        } else {
            api_error(
                status,
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    "RequestEntityTooLarge"
                } else {
                    "InvalidRequest"
                },
                "the response was not accepted",
            )
        }
    }

    /// Serves `POST /invocation/{id}/error`.
    async fn error(
        &self,
        request_id: &str,
        error_type_header: Option<String>,
        body: Incoming,
    ) -> Response<Full<Bytes>> {
        let body = read_limited(body).await;
        let in_flight = match self.take_in_flight(request_id) {
            Ok(f) => f,
            Err(resp) => return *resp,
        };
        let error = match body {
            Ok(body) => parse_error(error_type_header, body),
            Err(_) => FunctionError::new(
                "Function.ResponseSizeTooLarge",
                "the error document could not be read or was over the payload limit",
            ),
        };
        let _ = in_flight.answer.send(Answer {
            result: InvokeResult::FunctionError(error),
            taken_at: in_flight.taken_at,
        });
        accepted()
    }

    /// Serves `POST /init/error`.
    async fn init_error(
        &self,
        error_type_header: Option<String>,
        body: Incoming,
    ) -> Response<Full<Bytes>> {
        let body = read_limited(body).await.unwrap_or_default();
        if *self.inner.phase.borrow() != Phase::Init {
            return api_error(
                StatusCode::FORBIDDEN,
                "InvalidStateTransition",
                "init errors can only be reported during init",
            );
        }
        let error = parse_error(error_type_header, body);
        self.die(Death::InitFailed {
            error_type: error.error_type,
            error_message: error.error_message,
        });
        accepted()
    }

    /// Routes one Runtime API request.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        let (parts, body) = request.into_parts();
        let Some(rest) = parts.uri.path().strip_prefix(PREFIX) else {
            return api_error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint");
        };
        let error_type = parts
            .headers
            .get("lambda-runtime-function-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let segments: Vec<&str> = rest.split('/').collect();
        match (&parts.method, segments.as_slice()) {
            (&Method::GET, ["invocation", "next"]) => self.next().await,
            (&Method::POST, ["invocation", id, "response"]) => self.response(id, body).await,
            (&Method::POST, ["invocation", id, "error"]) => self.error(id, error_type, body).await,
            (&Method::POST, ["init", "error"]) => self.init_error(error_type, body).await,
            _ => api_error(StatusCode::NOT_FOUND, "NotFound", "no such endpoint"),
        }
    }
}

async fn wait_dead(phase: &mut watch::Receiver<Phase>) -> Death {
    loop {
        if let Phase::Dead(death) = &*phase.borrow_and_update() {
            return death.clone();
        }
        if phase.changed().await.is_err() {
            return Death::Lost("the sandbox's broker was dropped".into());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn epoch_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

enum BodyError {
    TooLarge,
    Broken(String),
}

async fn read_limited(body: Incoming) -> Result<Bytes, BodyError> {
    match Limited::new(body, MAX_PAYLOAD_BYTES).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Err(err) => Err(BodyError::Broken(err.to_string())),
    }
}

#[derive(Deserialize)]
struct ErrorDocument {
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(rename = "errorMessage", default)]
    error_message: Option<String>,
}

fn parse_error(error_type_header: Option<String>, body: Bytes) -> FunctionError {
    let doc: Option<ErrorDocument> = serde_json::from_slice(&body).ok();
    let (body_type, message) = match doc {
        Some(doc) => (doc.error_type, doc.error_message),
        None => (None, None),
    };
    // Runtime clients send a generic header (`unhandled`) and the real type in the body.
    let error_type = body_type
        .filter(|t| !t.is_empty())
        .or(error_type_header.filter(|t| !t.is_empty()))
        .unwrap_or_else(|| "Unhandled".to_owned());
    let error_message = message.unwrap_or_else(|| String::from_utf8_lossy(&body).trim().to_owned());
    let payload = if body.is_empty() {
        Bytes::from(
            serde_json::json!({"errorType": error_type, "errorMessage": error_message}).to_string(),
        )
    } else {
        body
    };
    FunctionError {
        error_type,
        error_message,
        payload,
    }
}

fn accepted() -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::ACCEPTED)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(br#"{"status":"OK"}"#)))
        .unwrap_or_else(|_| internal_error())
}

fn api_error(status: StatusCode, error_type: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"errorType": error_type, "errorMessage": message}).to_string();
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_else(|_| internal_error())
}

fn internal_error() -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    resp
}

/// Serves the Runtime API of `broker` on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    broker: Broker,
    shutdown: impl std::future::Future<Output = ()> + Send,
) {
    serve_admitting(listener, broker, shutdown, |_, _| true).await;
}

/// [`serve`], answering only connections that `admit` accepts, given the peer's address and
/// the server's own (others are closed at once, before a byte is read).
pub async fn serve_admitting(
    listener: TcpListener,
    broker: Broker,
    shutdown: impl std::future::Future<Output = ()> + Send,
    admit: impl Fn(std::net::SocketAddr, std::net::SocketAddr) -> bool + Clone + Send + 'static,
) {
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors (EMFILE) and the like: wait a little, never spin.
                tracing::warn!(error = %err, "Runtime API accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let broker = broker.clone();
        let admit = admit.clone();
        connections.spawn(async move {
            let admitted = stream.local_addr().is_ok_and(|local| admit(peer, local));
            if !admitted {
                tracing::warn!(%peer, "Runtime API connection from outside the sandbox refused");
                return;
            }
            serve_connection(stream, broker).await;
        });
        while connections.try_join_next().is_some() {}
    }
    connections.abort_all();
}

/// Serves the Runtime API of `broker` on one accepted connection until it closes.
pub(crate) async fn serve_connection(stream: tokio::net::TcpStream, broker: Broker) {
    let service = hyper::service::service_fn(move |req| {
        let broker = broker.clone();
        async move { Ok::<_, Infallible>(broker.handle(req).await) }
    });
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .http1_only()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}
