//! Bounds each invocation by its function's deadline (504 beyond), and turns the
//! invocation service's errors into [`RequestError`]s.

use std::collections::HashMap;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use esb_pool::{Invocation, PoolResponse};
use futures::future::{Either, Ready, ready};
use tower::{Layer, Service};

use super::BoxFuture;
use crate::error::RequestError;

/// The deadline of one function.
#[derive(Clone, Debug)]
pub(crate) struct FunctionDeadline {
    name: Arc<str>,
    after: Duration,
}

/// Times invocations out after their function's deadline.
#[derive(Clone, Debug)]
pub(crate) struct DeadlineLayer {
    deadlines: Arc<HashMap<String, FunctionDeadline>>,
}

impl DeadlineLayer {
    /// The deadline of each function, by name.
    pub fn new(deadlines: impl IntoIterator<Item = (String, Duration)>) -> Self {
        let deadlines = deadlines
            .into_iter()
            .map(|(name, after)| {
                let deadline = FunctionDeadline {
                    name: Arc::from(name.as_str()),
                    after,
                };
                (name, deadline)
            })
            .collect();
        Self {
            deadlines: Arc::new(deadlines),
        }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = Deadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Deadline {
            inner,
            deadlines: Arc::clone(&self.deadlines),
        }
    }
}

/// See [`DeadlineLayer`].
#[derive(Clone, Debug)]
pub(crate) struct Deadline<S> {
    inner: S,
    deadlines: Arc<HashMap<String, FunctionDeadline>>,
}

impl<S> Service<Invocation> for Deadline<S>
where
    S: Service<Invocation, Response = PoolResponse>,
    S::Error: Into<RequestError>,
    S::Future: Send + 'static,
{
    type Response = PoolResponse;
    type Error = RequestError;
    type Future = Either<
        Ready<Result<PoolResponse, RequestError>>,
        BoxFuture<Result<PoolResponse, RequestError>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, invocation: Invocation) -> Self::Future {
        let Some(deadline) = self.deadlines.get(&invocation.function) else {
            return Either::Left(ready(Err(RequestError::FunctionNotFound(
                invocation.function,
            ))));
        };
        let FunctionDeadline { name, after } = deadline.clone();
        let answer = self.inner.call(invocation);
        Either::Right(Box::pin(async move {
            match tokio::time::timeout(after, answer).await {
                Ok(answer) => answer.map_err(Into::into),
                Err(_) => Err(RequestError::GatewayTimeout {
                    function: name.to_string(),
                    waited: after,
                }),
            }
        }))
    }
}
