//! Counts invocations, their durations, cold starts and failures by function.

use std::sync::Arc;
use std::task::{Context, Poll};

use esb_pool::{Invocation, PoolError, PoolResponse};
use esb_runtime::InvokeResult;
use tower::{Layer, Service};

use super::BoxFuture;
use crate::error::RequestError;
use crate::metrics::{ErrorKind, FunctionSeries, GatewayMetrics};

/// Records each invocation's outcome in the function's series.
#[derive(Clone)]
pub(crate) struct CountInvocationsLayer {
    metrics: Arc<GatewayMetrics>,
}

impl CountInvocationsLayer {
    pub fn new(metrics: Arc<GatewayMetrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for CountInvocationsLayer {
    type Service = CountInvocations<S>;

    fn layer(&self, inner: S) -> Self::Service {
        CountInvocations {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// See [`CountInvocationsLayer`].
#[derive(Clone)]
pub(crate) struct CountInvocations<S> {
    inner: S,
    metrics: Arc<GatewayMetrics>,
}

impl<S> Service<Invocation> for CountInvocations<S>
where
    S: Service<Invocation, Response = PoolResponse, Error = RequestError>,
    S::Future: Send + 'static,
{
    type Response = PoolResponse;
    type Error = RequestError;
    type Future = BoxFuture<Result<PoolResponse, RequestError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        let series = self.metrics.function(&invocation.function).cloned();
        let answer = self.inner.call(invocation);
        Box::pin(async move {
            let answer = answer.await;
            if let Some(series) = series {
                record(&series, &answer);
            }
            answer
        })
    }
}

/// Records one outcome.
fn record(series: &FunctionSeries, answer: &Result<PoolResponse, RequestError>) {
    match answer {
        Ok(answer) => {
            let response = &answer.response;
            series.invoked(response.duration, answer.cold_start, response.init_duration);
            if matches!(response.result, InvokeResult::FunctionError(_)) {
                series.failed(ErrorKind::Function);
            }
        }
        Err(err) => {
            if let Some(kind) = error_kind(err) {
                series.failed(kind);
            }
        }
    }
}

/// The `kind` label of a failed invocation; `None` when it never reached the pool.
fn error_kind(err: &RequestError) -> Option<ErrorKind> {
    Some(match err {
        RequestError::GatewayTimeout { .. } => ErrorKind::Timeout,
        RequestError::Pool(PoolError::Throttled { .. }) => ErrorKind::Throttled,
        RequestError::Pool(PoolError::Runtime(esb_runtime::Error::Timeout { .. })) => {
            ErrorKind::Timeout
        }
        RequestError::Pool(PoolError::Runtime(esb_runtime::Error::Unavailable(_))) => {
            ErrorKind::Unavailable
        }
        RequestError::Pool(PoolError::Runtime(_)) => ErrorKind::Sandbox,
        RequestError::Pool(_) => ErrorKind::Unavailable,
        RequestError::Invoke(err) if err.is::<tower::timeout::error::Elapsed>() => {
            ErrorKind::Timeout
        }
        RequestError::Invoke(_) => ErrorKind::Unavailable,
        _ => return None,
    })
}
