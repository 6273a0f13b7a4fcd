//! Invocations multiplexed over one long-lived `InvokeStream` per agent: an invocation is one
//! message each way on an open HTTP/2 stream instead of a call of its own (headers, trailers,
//! a stream and a task on both sides, the token check).
//!
//! A caller that stops waiting (its future dropped, or its deadline passed) sends `cancel`,
//! and the agent drops the invocation as it would a cancelled call. When the stream ends or
//! breaks, every invocation still waiting gets [`Error::Unavailable`] at once (never a hang)
//! and the next invocation opens a new stream.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

use esb_proto::agent::v1 as pb;
use futures::Stream;
use pb::invoke_stream_request::Kind;
use pb::invoke_stream_response::Result as Answer;
use tokio::sync::mpsc;
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

use super::Client;
use super::wire::{failure_to_status, status_to_error};
use crate::{Error, Result};

/// An invocation's answer, or why it failed.
type Reply = Result<pb::InvokeWorkerResponse>;

/// One invocation waiting for its answer.
#[derive(Default)]
struct Slot {
    /// The answer, once it came (or the stream ended).
    answer: Option<Reply>,
    /// Wakes the invocation once it has polled.
    waker: Option<Waker>,
}

/// The invocations of one stream still waiting for their answer, and the answers' side of
/// the stream. There is no reader task: a waiting invocation reads the answers itself and
/// hands the others theirs, so an answer costs no hand-over through a task of its own.
struct Waiting {
    replies: HashMap<u64, Slot>,
    /// The answers; `None` once the stream ended.
    inbound: Option<tonic::Streaming<pb::InvokeStreamResponse>>,
    /// The invocation whose waker the answers' stream holds, if any.
    reader: Option<u64>,
    /// Why the stream ended, once it has: no invocation is added after that.
    ended: Option<String>,
}

/// What the stream's invocations share.
struct Shared {
    agent: String,
    waiting: Mutex<Waiting>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Waiting> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn unreachable(&self, reason: &str) -> Error {
        Error::Unavailable(format!("agent {} unreachable: {reason}", self.agent))
    }

    /// An answer frame as the invocation's reply.
    fn reply(&self, frame: pb::InvokeStreamResponse) -> Reply {
        match frame.result {
            Some(Answer::Response(response)) => Ok(response),
            Some(Answer::Failure(failure)) => {
                Err(status_to_error(&failure_to_status(failure), &self.agent))
            }
            None => Err(Error::Backend(format!(
                "agent {}: an invocation answer without a result",
                self.agent
            ))),
        }
    }

    /// Reads the answers that have come, with `cx`'s waker left with the stream when it
    /// waits; every answer goes to its invocation (none when it was cancelled) and a stream
    /// that ended fails every invocation still waiting.
    fn read(&self, waiting: &mut Waiting, reader: Option<u64>, cx: &mut Context<'_>) {
        loop {
            let Some(inbound) = waiting.inbound.as_mut() else {
                return;
            };
            let reason = match Pin::new(inbound).poll_next(cx) {
                Poll::Pending => {
                    waiting.reader = reader;
                    return;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let id = frame.id;
                    if let Some(slot) = waiting.replies.get_mut(&id) {
                        slot.answer = Some(self.reply(frame));
                        if reader != Some(id)
                            && let Some(waker) = slot.waker.take()
                        {
                            waker.wake();
                        }
                    }
                    continue;
                }
                Poll::Ready(None) => "the agent closed the invocation stream".to_owned(),
                Poll::Ready(Some(Err(status))) => format!(
                    "the invocation stream broke: {}",
                    esb_logs::ErrorChain(&status)
                ),
            };
            self.end(waiting, reason);
            return;
        }
    }

    /// Marks the stream ended and fails every invocation still waiting.
    fn end(&self, waiting: &mut Waiting, reason: String) {
        waiting.inbound = None;
        waiting.reader = None;
        let open = waiting
            .replies
            .values()
            .filter(|slot| slot.answer.is_none())
            .count();
        if open > 0 {
            tracing::debug!(agent = %self.agent, %reason, waiting = open, "invocation stream ended");
        }
        for slot in waiting.replies.values_mut() {
            if slot.answer.is_none() {
                slot.answer = Some(Err(self.unreachable(&reason)));
                if let Some(waker) = slot.waker.take() {
                    waker.wake();
                }
            }
        }
        waiting.ended = Some(reason);
    }

    /// `done` no longer waits: when the answers' stream held its waker, it now holds the
    /// waker of another invocation still waiting (read on its behalf; no wake-up).
    fn hand_over(&self, waiting: &mut Waiting, done: u64) {
        if waiting.reader != Some(done) {
            return;
        }
        waiting.reader = None;
        let next = waiting.replies.iter().find_map(|(id, slot)| {
            (slot.answer.is_none())
                .then(|| slot.waker.clone().map(|waker| (*id, waker)))
                .flatten()
        });
        if let Some((id, waker)) = next {
            self.read(waiting, Some(id), &mut Context::from_waker(&waker));
        }
    }
}

/// An invocation that could not be sent on a stream.
pub(super) enum Unsent {
    /// The stream had ended before: the request may go on a new one.
    Ended(Box<pb::InvokeWorkerRequest>),
    /// The stream broke while it was sent.
    Failed(Error),
}

/// Attempts at opening a stream when the connection is being re-established.
const OPEN_ATTEMPTS: usize = 3;
/// Pause between those attempts.
const OPEN_RETRY_BACKOFF: std::time::Duration = std::time::Duration::from_millis(50);

/// One open `InvokeStream`.
pub(super) struct InvokeStream {
    outbound: mpsc::UnboundedSender<pb::InvokeStreamRequest>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
}

impl InvokeStream {
    /// Opens a stream on the client's connection.
    async fn open(client: &Client, agent: &str) -> std::result::Result<Arc<Self>, tonic::Status> {
        let (outbound, requests) = mpsc::unbounded_channel();
        let inbound = client
            .clone()
            .invoke_stream(UnboundedReceiverStream::new(requests))
            .await?
            .into_inner();
        let shared = Arc::new(Shared {
            agent: agent.to_owned(),
            waiting: Mutex::new(Waiting {
                replies: HashMap::new(),
                inbound: Some(inbound),
                reader: None,
                ended: None,
            }),
        });
        Ok(Arc::new(Self {
            outbound,
            next_id: AtomicU64::new(1),
            shared,
        }))
    }

    /// Whether the stream is over. With no invocation reading, the answers that have come are
    /// read here, so a stream the agent ended while idle is found ended before it is used.
    fn ended(&self) -> bool {
        if self.outbound.is_closed() {
            return true;
        }
        let mut waiting = self.shared.lock();
        if waiting.reader.is_none() {
            self.shared
                .read(&mut waiting, None, &mut Context::from_waker(Waker::noop()));
        }
        waiting.ended.is_some()
    }

    /// Sends an invocation; its answer comes through the returned [`Pending`].
    pub(super) fn send(
        self: &Arc<Self>,
        request: pb::InvokeWorkerRequest,
    ) -> std::result::Result<Pending, Unsent> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        {
            let mut waiting = self.shared.lock();
            if waiting.ended.is_some() {
                return Err(Unsent::Ended(Box::new(request)));
            }
            waiting.replies.insert(id, Slot::default());
        }
        let frame = pb::InvokeStreamRequest {
            id,
            kind: Some(Kind::Invoke(request)),
        };
        if self.outbound.send(frame).is_err() {
            self.shared.lock().replies.remove(&id);
            return Err(Unsent::Failed(
                self.shared.unreachable("the invocation stream closed"),
            ));
        }
        Ok(Pending {
            stream: Arc::clone(self),
            id,
            answered: false,
        })
    }
}

/// An invocation sent on a stream. Dropped before its answer came, it is cancelled on the agent.
pub(super) struct Pending {
    stream: Arc<InvokeStream>,
    id: u64,
    answered: bool,
}

impl Pending {
    /// Waits for the answer.
    pub(super) async fn answer(self) -> Reply {
        self.await
    }
}

impl Future for Pending {
    type Output = Reply;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Reply> {
        let id = self.id;
        let shared = Arc::clone(&self.stream.shared);
        let mut waiting = shared.lock();
        let answered = waiting
            .replies
            .get(&id)
            .is_none_or(|slot| slot.answer.is_some());
        if !answered {
            shared.read(&mut waiting, Some(id), cx);
        }
        let Some(slot) = waiting.replies.get_mut(&id) else {
            self.answered = true;
            return Poll::Ready(Err(shared.unreachable("the invocation stream ended")));
        };
        let Some(reply) = slot.answer.take() else {
            if !slot
                .waker
                .as_ref()
                .is_some_and(|waker| waker.will_wake(cx.waker()))
            {
                slot.waker = Some(cx.waker().clone());
            }
            return Poll::Pending;
        };
        waiting.replies.remove(&id);
        shared.hand_over(&mut waiting, id);
        self.answered = true;
        Poll::Ready(reply)
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        let shared = &self.stream.shared;
        let mut waiting = shared.lock();
        let Some(slot) = waiting.replies.remove(&self.id) else {
            return;
        };
        shared.hand_over(&mut waiting, self.id);
        let ended = waiting.ended.is_some();
        drop(waiting);
        // The answer has not come: the agent is told to drop the invocation.
        if slot.answer.is_none() && !ended {
            let _ = self.stream.outbound.send(pb::InvokeStreamRequest {
                id: self.id,
                kind: Some(Kind::Cancel(pb::CancelInvocation {})),
            });
        }
    }
}

/// The stream of one agent, opened when first needed and again after it ended.
#[derive(Default)]
pub(super) struct Streams {
    current: Mutex<Option<Arc<InvokeStream>>>,
    opening: tokio::sync::Mutex<()>,
    /// The agent has no `InvokeStream` (an older one): invocations are calls of their own.
    unsupported: AtomicBool,
}

impl Streams {
    fn live(&self) -> Option<Arc<InvokeStream>> {
        self.current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .filter(|stream| !stream.ended())
            .cloned()
    }

    /// The open stream, opened now if there is none; `None` when the agent has no streams.
    pub(super) async fn get(
        &self,
        client: &Client,
        agent: &str,
    ) -> Result<Option<Arc<InvokeStream>>> {
        if self.unsupported.load(Ordering::Relaxed) {
            return Ok(None);
        }
        if let Some(stream) = self.live() {
            return Ok(Some(stream));
        }
        let _opening = self.opening.lock().await;
        if let Some(stream) = self.live() {
            return Ok(Some(stream));
        }
        // Opening sends nothing, so it is safe to repeat: the first request on a connection
        // that just broke is cancelled while the channel connects again.
        let mut opened = InvokeStream::open(client, agent).await;
        for _ in 1..OPEN_ATTEMPTS {
            match &opened {
                Err(status) if matches!(status.code(), Code::Unavailable | Code::Cancelled) => {
                    tokio::time::sleep(OPEN_RETRY_BACKOFF).await;
                    opened = InvokeStream::open(client, agent).await;
                }
                _ => break,
            }
        }
        match opened {
            Ok(stream) => {
                *self.current.lock().unwrap_or_else(PoisonError::into_inner) =
                    Some(Arc::clone(&stream));
                Ok(Some(stream))
            }
            Err(status) if status.code() == Code::Unimplemented => {
                tracing::debug!(agent, "the agent has no invocation stream; one call each");
                self.unsupported.store(true, Ordering::Relaxed);
                Ok(None)
            }
            Err(status) => Err(status_to_error(&status, agent)),
        }
    }
}
