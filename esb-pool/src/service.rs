//! The pool as a tower `Service<Invocation>`, and [`PoolLayer`] in front of a service that
//! runs one invocation on a leased sandbox.

use std::sync::Arc;
use std::task::{Context, Poll};

use esb_runtime::{Error as RuntimeError, InvokeRequest, InvokeResponse, Runtime, SandboxId};
use futures::future::BoxFuture;
use tower::{Layer, Service, ServiceExt};

use crate::PoolError;
use crate::pool::{Lease, Pool};

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
pub struct PoolResponse {
    /// What the runtime answered.
    pub response: InvokeResponse,
    /// True when the sandbox was created for this request.
    pub cold_start: bool,
    /// The sandbox that ran it.
    pub sandbox_id: SandboxId,
}

/// One invocation bound to a leased sandbox: the request [`PoolService`]'s inner service gets.
#[derive(Clone)]
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
    type Future = BoxFuture<'static, Result<InvokeResponse, RuntimeError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: SandboxCall) -> Self::Future {
        Box::pin(async move { call.runtime.invoke(&call.sandbox_id, call.request).await })
    }
}

/// Runs `inner` on the lease in its own task, so a caller that leaves does not cut an
/// invocation short; the sandbox returns to the pool when the invocation ends.
pub(crate) async fn run_on_lease<S>(
    mut lease: Lease,
    mut inner: S,
    invocation: Invocation,
) -> Result<PoolResponse, PoolError>
where
    S: Service<SandboxCall, Response = InvokeResponse, Error = RuntimeError> + Send + 'static,
    S::Future: Send,
{
    let function = invocation.function;
    let call = SandboxCall {
        function: function.clone(),
        sandbox_id: lease.id().clone(),
        runtime: Arc::clone(lease.runtime()),
        request: invocation.request,
        cold_start: lease.cold_start(),
    };
    let task = tokio::spawn(async move {
        let cold_start = call.cold_start;
        let sandbox_id = call.sandbox_id.clone();
        let result = match inner.ready().await {
            Ok(inner) => inner.call(call).await,
            Err(err) => Err(err),
        };
        lease.record(&result);
        drop(lease);
        result.map(|response| PoolResponse {
            response,
            cold_start,
            sandbox_id,
        })
    });
    match task.await {
        Ok(result) => result.map_err(PoolError::Runtime),
        Err(err) => Err(PoolError::Aborted {
            function,
            reason: err.to_string(),
        }),
    }
}

impl Service<Invocation> for Pool {
    type Response = PoolResponse;
    type Error = PoolError;
    type Future = BoxFuture<'static, Result<PoolResponse, PoolError>>;

    /// Always ready: backpressure is the per-function queue inside the future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        let pool = self.clone();
        Box::pin(async move { pool.invoke(invocation).await })
    }
}

/// Puts a [`Pool`] in front of a service that runs [`SandboxCall`]s.
#[derive(Clone, Debug)]
pub struct PoolLayer {
    pool: Pool,
}

impl PoolLayer {
    /// A layer leasing sandboxes from `pool`.
    pub fn new(pool: Pool) -> Self {
        Self { pool }
    }
}

impl<S> Layer<S> for PoolLayer {
    type Service = PoolService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        PoolService {
            pool: self.pool.clone(),
            inner,
        }
    }
}

/// Leases a sandbox for each [`Invocation`] and hands the call to the inner service.
#[derive(Clone, Debug)]
pub struct PoolService<S> {
    pool: Pool,
    inner: S,
}

impl<S> Service<Invocation> for PoolService<S>
where
    S: Service<SandboxCall, Response = InvokeResponse, Error = RuntimeError>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = PoolResponse;
    type Error = PoolError;
    type Future = BoxFuture<'static, Result<PoolResponse, PoolError>>;

    /// Always ready: backpressure is the per-function queue inside the future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        let pool = self.pool.clone();
        let inner = self.inner.clone();
        Box::pin(async move {
            let lease = pool.acquire(&invocation.function).await?;
            run_on_lease(lease, inner, invocation).await
        })
    }
}
