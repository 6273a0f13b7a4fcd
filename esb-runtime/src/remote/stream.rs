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
/// hands the others theirs, so an answer costs no hand-over through a task of its own. The
/// reading invocation takes the answers' stream out of here while it reads, so that an
/// answer is decoded without the lock held (a large one does not hold up the invocations
/// that poll meanwhile).
struct Waiting {
    replies: HashMap<u64, Slot>,
    /// The answers; `None` while an invocation reads them and once the stream ended.
    inbound: Option<tonic::Streaming<pb::InvokeStreamResponse>>,
    /// An invocation is reading the answers (it holds `inbound`).
    reading: bool,
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

    /// Reads the answers that have come, with `waker` (the waker of `reader`, if any) left
    /// with the stream when it waits; every answer goes to its invocation (none when it was
    /// cancelled) and a stream that ended fails every invocation still waiting. `polling`:
    /// `reader` is the invocation being polled now, so its own answer needs no wake-up.
    ///
    /// When another invocation is reading already, that one delivers the answers (the
    /// caller left its waker in its slot). When the stream is left waiting with a waker
    /// that belongs to no waiting invocation, reading goes on with the waker of one.
    fn read(&self, reader: Option<u64>, waker: &Waker, polling: bool) {
        let mut inbound = {
            let mut waiting = self.lock();
            if waiting.reading {
                return;
            }
            let Some(inbound) = waiting.inbound.take() else {
                return;
            };
            waiting.reading = true;
            inbound
        };
        let (mut reader, mut polling) = (reader, polling);
        let mut other: Option<Waker> = None;
        loop {
            let current = other.as_ref().unwrap_or(waker);
            // Decoded without the lock held.
            let reason = match Pin::new(&mut inbound).poll_next(&mut Context::from_waker(current)) {
                Poll::Pending => {
                    let mut waiting = self.lock();
                    if reader.is_none_or(|id| !waiting.replies.contains_key(&id)) {
                        // Nobody to wake when an answer comes: read for one that waits.
                        let next = waiting.replies.iter().find_map(|(id, slot)| {
                            (slot.answer.is_none())
                                .then(|| slot.waker.clone().map(|waker| (*id, waker)))
                                .flatten()
                        });
                        if let Some((id, waker)) = next {
                            drop(waiting);
                            (reader, polling, other) = (Some(id), false, Some(waker));
                            continue;
                        }
                    }
                    waiting.inbound = Some(inbound);
                    waiting.reading = false;
                    waiting.reader = reader;
                    return;
                }
                Poll::Ready(Some(Ok(frame))) => {
                    let id = frame.id;
                    let reply = self.reply(frame);
                    let woken = {
                        let mut waiting = self.lock();
                        waiting.replies.get_mut(&id).and_then(|slot| {
                            slot.answer = Some(reply);
                            slot.waker
                                .take()
                                .filter(|_| !(polling && reader == Some(id)))
                        })
                    };
                    if let Some(woken) = woken {
                        woken.wake();
                    }
                    continue;
                }
                Poll::Ready(None) => "the agent closed the invocation stream".to_owned(),
                Poll::Ready(Some(Err(status))) => format!(
                    "the invocation stream broke: {}",
                    esb_logs::ErrorChain(&status)
                ),
            };
            drop(inbound);
            let mut waiting = self.lock();
            waiting.reading = false;
            self.end(&mut waiting, reason);
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
    /// waker of another invocation still waiting (read on its behalf; no wake-up). Returns
    /// that invocation, to be read for once the lock is released ([`Shared::read`]).
    fn hand_over(waiting: &mut Waiting, done: u64) -> Option<(u64, Waker)> {
        if waiting.reader != Some(done) {
            return None;
        }
        waiting.reader = None;
        waiting.replies.iter().find_map(|(id, slot)| {
            (slot.answer.is_none())
                .then(|| slot.waker.clone().map(|waker| (*id, waker)))
                .flatten()
        })
    }

    /// Reads on behalf of the invocation [`Shared::hand_over`] chose.
    fn read_for(&self, next: Option<(u64, Waker)>) {
        if let Some((id, waker)) = next {
            self.read(Some(id), &waker, false);
        }
    }
}

/// An invocation that could not be sent on a stream.
pub(super) enum Unsent {
    /// The stream had ended or closed before the request went out: nothing was sent, so it
    /// may go on a new stream.
    Ended(Box<pb::InvokeWorkerRequest>),
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
                reading: false,
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
        let idle = self.shared.lock().reader.is_none();
        if idle {
            self.shared.read(None, Waker::noop(), false);
        }
        self.shared.lock().ended.is_some()
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
        if let Err(mpsc::error::SendError(frame)) = self.outbound.send(frame) {
            // The stream closed just now (its requests' side is gone): nothing went out.
            self.shared.lock().replies.remove(&id);
            let request = match frame.kind {
                Some(Kind::Invoke(request)) => request,
                // What was built above; never a cancel.
                _ => pb::InvokeWorkerRequest::default(),
            };
            return Err(Unsent::Ended(Box::new(request)));
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
        {
            // The waker goes in first: an invocation reading meanwhile wakes it with its
            // answer.
            let mut waiting = shared.lock();
            match waiting.replies.get_mut(&id) {
                Some(slot) if slot.answer.is_none() => {
                    if !slot
                        .waker
                        .as_ref()
                        .is_some_and(|waker| waker.will_wake(cx.waker()))
                    {
                        slot.waker = Some(cx.waker().clone());
                    }
                    drop(waiting);
                    shared.read(Some(id), cx.waker(), true);
                }
                _ => {}
            }
        }
        let mut waiting = shared.lock();
        let Some(slot) = waiting.replies.get_mut(&id) else {
            self.answered = true;
            return Poll::Ready(Err(shared.unreachable("the invocation stream ended")));
        };
        let Some(reply) = slot.answer.take() else {
            return Poll::Pending;
        };
        waiting.replies.remove(&id);
        let next = Shared::hand_over(&mut waiting, id);
        drop(waiting);
        shared.read_for(next);
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
        let next = Shared::hand_over(&mut waiting, self.id);
        let ended = waiting.ended.is_some();
        drop(waiting);
        shared.read_for(next);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A stream whose requests' side has just closed, while its answers' side has not been
    /// found ended yet (the moment between `Streams::get` and `InvokeStream::send`).
    fn just_closed() -> Arc<InvokeStream> {
        let (outbound, requests) = mpsc::unbounded_channel();
        drop(requests);
        Arc::new(InvokeStream {
            outbound,
            next_id: AtomicU64::new(1),
            shared: Arc::new(Shared {
                agent: "http://agent:1".to_owned(),
                waiting: Mutex::new(Waiting {
                    replies: HashMap::new(),
                    inbound: None,
                    reading: false,
                    reader: None,
                    ended: None,
                }),
            }),
        })
    }

    #[test]
    fn an_invocation_not_sent_on_a_just_closed_stream_comes_back_to_be_sent_on_a_new_one() {
        let stream = just_closed();
        let request = pb::InvokeWorkerRequest {
            container_id: "sb-1".into(),
            payload: bytes::Bytes::from_static(br#"{"n":1}"#),
            request_id: "req-1".into(),
            ..Default::default()
        };
        match stream.send(request.clone()) {
            Err(Unsent::Ended(unsent)) => assert_eq!(*unsent, request),
            Ok(_) => panic!("sent on a closed stream"),
        }
        // Nothing is left waiting for an answer.
        assert!(stream.shared.lock().replies.is_empty());
    }
}
