//! `InvokeStream`: many invocations over one long-lived stream.
//!
//! The answers' stream itself reads the requests and drives the invocations, so an
//! invocation costs no task of its own and no hand-over between tasks: hyper's task that
//! sends the answers polls them. When the agent stops, the stream still reads: cancels take
//! effect and new invocations are refused at once (`UNAVAILABLE`); it ends once the
//! invocations in flight have.

use std::collections::HashMap;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;

use esb_proto::agent::v1 as pb;
use esb_runtime::remote::wire::{error_to_status, status_to_failure};
use futures::FutureExt;
use futures::future::{AbortHandle, Abortable, BoxFuture};
use futures::stream::{FuturesUnordered, Stream, StreamExt};
use pb::invoke_stream_request::Kind;
use pb::invoke_stream_response::Result as Answer;
use tokio::sync::watch;
use tonic::{Status, Streaming};

use crate::service::Agent;

/// The answers of one stream, as tonic sends them.
pub type Answers = Pin<Box<dyn Stream<Item = Result<pb::InvokeStreamResponse, Status>> + Send>>;

/// An invocation's id and its answer (`None`: cancelled).
type Running = BoxFuture<'static, (u64, Option<Answer>)>;

/// Resolves once the agent is stopping; never when it cannot stop.
async fn stopping(stop: &mut Option<watch::Receiver<bool>>) {
    match stop {
        Some(stop) => {
            if stop.wait_for(|stopping| *stopping).await.is_err() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

/// What one stream holds between two answers.
struct State {
    agent: Agent,
    requests: Streaming<pb::InvokeStreamRequest>,
    stop: Option<watch::Receiver<bool>>,
    running: FuturesUnordered<Running>,
    cancels: HashMap<u64, AbortHandle>,
    /// The caller's side is still open.
    reading: bool,
    /// The agent stops: new invocations are refused at once, the stream ends once the
    /// invocations in flight have.
    stopped: bool,
}

impl State {
    fn start(&mut self, id: u64, request: pb::InvokeWorkerRequest) {
        let agent = self.agent.clone();
        let (cancel, registration) = AbortHandle::new_pair();
        if let Some(earlier) = self.cancels.insert(id, cancel) {
            // A reused id: the caller no longer waits for the earlier one.
            earlier.abort();
        }
        let invocation = Abortable::new(
            AssertUnwindSafe(async move { agent.run_invocation(request).await }).catch_unwind(),
            registration,
        );
        self.running.push(Box::pin(async move {
            let answer = match invocation.await {
                Err(_aborted) => None,
                Ok(Ok(Ok(response))) => Some(Answer::Response(response)),
                Ok(Ok(Err(status))) => Some(Answer::Failure(status_to_failure(&status))),
                Ok(Err(_panic)) => Some(Answer::Failure(status_to_failure(&Status::internal(
                    "the invocation failed inside the agent",
                )))),
            };
            (id, answer)
        }));
    }

    /// Whether the agent stops (also when the stop came just now, together with a request).
    fn stopping_now(&mut self) -> bool {
        if !self.stopped && self.stop.as_ref().is_some_and(|stop| *stop.borrow()) {
            self.stopped = true;
        }
        self.stopped
    }

    /// The next answer, or `None` when the stream is over: the caller closed its side or the
    /// agent stops (after the invocations in flight), or the connection broke (they are
    /// dropped). While the agent stops, requests are still read: cancels take effect and
    /// new invocations are answered at once with `UNAVAILABLE`, so that the caller can send
    /// them elsewhere.
    async fn next(&mut self) -> Option<pb::InvokeStreamResponse> {
        loop {
            if self.running.is_empty() && (!self.reading || self.stopped) {
                return None;
            }
            tokio::select! {
                Some((id, answer)) = self.running.next(), if !self.running.is_empty() => {
                    let Some(answer) = answer else { continue };
                    self.cancels.remove(&id);
                    return Some(pb::InvokeStreamResponse { id, result: Some(answer) });
                }
                request = self.requests.message(), if self.reading => match request {
                    Ok(Some(pb::InvokeStreamRequest { id, kind: Some(Kind::Invoke(_)) })) if self.stopping_now() => {
                        let refused = error_to_status(&esb_runtime::Error::Unavailable(
                            "the agent is stopping".to_owned(),
                        ));
                        return Some(pb::InvokeStreamResponse {
                            id,
                            result: Some(Answer::Failure(status_to_failure(&refused))),
                        });
                    }
                    Ok(Some(pb::InvokeStreamRequest { id, kind: Some(Kind::Invoke(request)) })) => {
                        self.start(id, request);
                    }
                    Ok(Some(pb::InvokeStreamRequest { id, kind: Some(Kind::Cancel(_)) })) => {
                        if let Some(cancel) = self.cancels.remove(&id) {
                            cancel.abort();
                        }
                    }
                    Ok(Some(pb::InvokeStreamRequest { id, kind: None })) => {
                        let failure = status_to_failure(&Status::invalid_argument(
                            "InvokeStream: a request without invoke or cancel",
                        ));
                        return Some(pb::InvokeStreamResponse { id, result: Some(Answer::Failure(failure)) });
                    }
                    Ok(None) => self.reading = false,
                    Err(status) => {
                        tracing::debug!(%status, in_flight = self.running.len(), "invocation stream broke; dropping its invocations");
                        return None;
                    }
                },
                () = stopping(&mut self.stop), if !self.stopped => self.stopped = true,
            }
        }
    }
}

/// The answers of the stream whose requests are `requests`.
pub fn serve(
    agent: Agent,
    requests: Streaming<pb::InvokeStreamRequest>,
    stop: Option<watch::Receiver<bool>>,
) -> Answers {
    let state = State {
        agent,
        requests,
        stop,
        running: FuturesUnordered::new(),
        cancels: HashMap::new(),
        reading: true,
        stopped: false,
    };
    Box::pin(futures::stream::unfold(state, |mut state| async move {
        let answer = state.next().await?;
        Some((Ok(answer), state))
    }))
}
