//! One invocation end to end: the request and response types, the innermost service
//! ([`RuntimeInvoker`]), and [`serve`], the one path every way of invoking goes through:
//! acquire a lease, run the inner service on it in its own task, release the lease.

use std::sync::Arc;
use std::task::{Context, Poll};

use esb_runtime::{Error as RuntimeError, InvokeRequest, InvokeResponse, Runtime, SandboxId};
use futures::future::BoxFuture;
use tower::{BoxError, Service, ServiceExt};

use crate::error::PoolError;
use crate::lease;
use crate::state::Shared;

/// One invocation of a pooled function.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The function, as named in the pool.
    pub function: String,
    /// The request passed to the sandbox.
    pub request: InvokeRequest,
}

impl Invocation {
    /// An invocation of `function` with `request`.
    pub fn new(function: impl Into<String>, request: InvokeRequest) -> Self {
        Self {
            function: function.into(),
            request,
        }
    }
}

/// A finished invocation and where it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolResponse {
    /// What the runtime answered.
    pub response: InvokeResponse,
    /// True when the sandbox was created for this request.
    pub cold_start: bool,
    /// The sandbox that ran it.
    pub sandbox_id: SandboxId,
}

impl PoolResponse {
    /// The answer `response` of sandbox `sandbox_id`, created for this request when `cold_start`.
    pub fn new(response: InvokeResponse, cold_start: bool, sandbox_id: SandboxId) -> Self {
        Self {
            response,
            cold_start,
            sandbox_id,
        }
    }
}

/// One invocation bound to a leased sandbox: the request `PoolService`'s
/// inner service gets.
#[derive(Clone)]
#[non_exhaustive]
pub struct SandboxCall {
    /// The function.
    pub function: String,
    /// The leased sandbox.
    pub sandbox_id: SandboxId,
    /// The runtime holding it.
    pub runtime: Arc<dyn Runtime>,
    /// The request.
    pub request: InvokeRequest,
    /// True when the sandbox was created for this request.
    pub cold_start: bool,
}

impl SandboxCall {
    /// A call of `function` with `request` on sandbox `sandbox_id` of `runtime`, on a warm sandbox.
    pub fn new(
        function: impl Into<String>,
        sandbox_id: SandboxId,
        runtime: Arc<dyn Runtime>,
        request: InvokeRequest,
    ) -> Self {
        Self {
            function: function.into(),
            sandbox_id,
            runtime,
            request,
            cold_start: false,
        }
    }

    /// Sets `cold_start`.
    pub fn cold_start(mut self, cold_start: bool) -> Self {
        self.cold_start = cold_start;
        self
    }
}

impl std::fmt::Debug for SandboxCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxCall")
            .field("function", &self.function)
            .field("sandbox_id", &self.sandbox_id)
            .field("request_id", &self.request.request_id)
            .field("cold_start", &self.cold_start)
            .finish_non_exhaustive()
    }
}

/// The innermost service: [`Runtime::invoke`] on the leased sandbox.
#[derive(Clone, Copy, Debug, Default)]
pub struct RuntimeInvoker;

impl Service<SandboxCall> for RuntimeInvoker {
    type Response = InvokeResponse;
    type Error = RuntimeError;
    type Future = BoxFuture<'static, esb_runtime::Result<InvokeResponse>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<esb_runtime::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: SandboxCall) -> Self::Future {
        let SandboxCall {
            runtime,
            sandbox_id,
            request,
            ..
        } = call;
        Box::pin(async move { runtime.invoke(&sandbox_id, request).await })
    }
}

/// Leases a sandbox for `invocation` and runs `inner` on it in its own task, so a caller
/// that leaves does not cut an invocation short; the sandbox returns to the pool when the
/// invocation ends.
///
/// A sandbox whose runtime turns out to have exited while idle
/// ([`RuntimeError::ExitedIdle`]: the invocation never ran) is destroyed, and the
/// invocation runs once more on another sandbox, a new one if no other is idle.
pub(crate) async fn serve<S>(
    shared: &Arc<Shared>,
    inner: S,
    invocation: Invocation,
) -> Result<PoolResponse, PoolError>
where
    S: Service<SandboxCall, Response = InvokeResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let Invocation { function, request } = invocation;
    // The payload is reference-counted: keeping a copy for the retry is cheap.
    let mut retry = Some(request.clone());
    let mut attempt = (inner, request);
    loop {
        let (inner, request) = attempt;
        let (result, inner) = serve_once(shared, inner, &function, request).await?;
        match result {
            Err(err) if is_exited_idle(&err) => match retry.take() {
                Some(request) => {
                    tracing::info!(function = %function, %err, "sandbox had exited while idle: retrying on another");
                    attempt = (inner, request);
                }
                None => return Err(PoolError::from_inner(&function, err)),
            },
            result => return result.map_err(|err| PoolError::from_inner(&function, err)),
        }
    }
}

fn is_exited_idle(err: &BoxError) -> bool {
    matches!(
        err.downcast_ref::<RuntimeError>(),
        Some(RuntimeError::ExitedIdle { .. })
    )
}

/// One attempt of [`serve`]: the outcome, and the inner service back for another attempt.
async fn serve_once<S>(
    shared: &Arc<Shared>,
    mut inner: S,
    function: &str,
    request: InvokeRequest,
) -> Result<(Result<PoolResponse, BoxError>, S), PoolError>
where
    S: Service<SandboxCall, Response = InvokeResponse> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    let mut lease = lease::acquire(shared, function).await?;
    let call = SandboxCall::new(
        function.to_owned(),
        lease.id().clone(),
        Arc::clone(lease.runtime()),
        request,
    )
    .cold_start(lease.cold_start());
    let mut lost = lease.runtime_lost();
    let task = tokio::spawn(async move {
        let cold_start = call.cold_start;
        let sandbox_id = call.sandbox_id.clone();
        let ready: Result<&mut S, BoxError> = inner.ready().await.map_err(Into::into);
        let (result, called) = match ready {
            // A runtime declared down ends the call at once instead of leaving it to hang.
            Ok(inner) => tokio::select! {
                result = inner.call(call) => (result.map_err(Into::into), true),
                _ = lost.changed() => (Err(BoxError::from(lease::runtime_lost())), true),
            },
            Err(err) => (Err(err), false),
        };
        match &result {
            Ok(_) => lease.record_error(None),
            Err(err) => match err.downcast_ref::<RuntimeError>() {
                Some(err) => lease.record_error(Some(err)),
                // A layer failed or cut the invocation short: the sandbox's state is unknown.
                None if called => lease.record_unknown(),
                // The inner service never took the call: the sandbox goes back unused.
                None => {}
            },
        }
        drop(lease);
        let result = result.map(|response| PoolResponse::new(response, cold_start, sandbox_id));
        (result, inner)
    });
    task.await.map_err(|source| PoolError::Aborted {
        function: function.to_owned(),
        source,
    })
}
