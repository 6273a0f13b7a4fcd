//! The pool as a tower `Service<Invocation>`, and [`PoolLayer`] in front of a service that
//! runs one invocation on a leased sandbox.

use std::task::{Context, Poll};

use esb_runtime::InvokeResponse;
use futures::future::BoxFuture;
use tower::{BoxError, Layer, Service};

use crate::error::PoolError;
use crate::invoke::{Invocation, PoolResponse, RuntimeInvoker, SandboxCall, serve};
use crate::pool::Pool;

/// The future of the pool's services.
pub type ResponseFuture = BoxFuture<'static, Result<PoolResponse, PoolError>>;

/// Puts a [`Pool`] in front of a service that runs [`SandboxCall`]s: [`RuntimeInvoker`], or
/// a stack of tower layers (timeout, retry, load shedding, ...) over it.
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
///
/// The inner service's errors convert: a runtime error stays [`PoolError::Runtime`], any
/// other becomes [`PoolError::Inner`] and the sandbox it ran on is destroyed (its state is
/// unknown). Each call runs in its own task, so a caller that leaves does not cut it short.
#[derive(Clone, Debug)]
pub struct PoolService<S> {
    pool: Pool,
    inner: S,
}

impl<S> Service<Invocation> for PoolService<S>
where
    S: Service<SandboxCall, Response = InvokeResponse> + Clone + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
{
    type Response = PoolResponse;
    type Error = PoolError;
    type Future = ResponseFuture;

    /// Always ready: backpressure is the per-function queue inside the future.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        let shared = self.pool.shared.clone();
        let inner = self.inner.clone();
        Box::pin(async move { serve(&shared, inner, invocation).await })
    }
}

/// The pool over [`RuntimeInvoker`]: the same as `PoolLayer::new(pool).layer(RuntimeInvoker)`.
impl Service<Invocation> for Pool {
    type Response = PoolResponse;
    type Error = PoolError;
    type Future = ResponseFuture;

    /// Always ready, as [`PoolService`] is.
    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), PoolError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        PoolLayer::new(self.clone())
            .layer(RuntimeInvoker)
            .call(invocation)
    }
}
