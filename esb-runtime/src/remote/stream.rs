//! Invocations multiplexed over one long-lived `InvokeStream` per agent: an invocation is one
//! message each way on an open HTTP/2 stream instead of a call of its own (headers, trailers,
//! a stream and a task on both sides, the token check).
//!
//! A caller that stops waiting (its future dropped, or its deadline passed) sends `cancel`,
//! and the agent drops the invocation as it would a cancelled call. When the stream ends or
//! breaks, every invocation still waiting gets [`Error::Unavailable`] at once (never a hang)
//! and the next invocation opens a new stream.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use esb_proto::agent::v1 as pb;
use pb::invoke_stream_request::Kind;
use pb::invoke_stream_response::Result as Answer;
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::Code;

use super::Client;
use super::wire::{failure_to_status, status_to_error};
use crate::{Error, Result};

/// An invocation's answer, or why it failed.
type Reply = Result<pb::InvokeWorkerResponse>;

/// The invocations of one stream still waiting for their answer.
#[derive(Default)]
struct Waiting {
    replies: HashMap<u64, oneshot::Sender<Reply>>,
    /// Why the stream ended, once it has: no invocation is added after that.
    ended: Option<String>,
}

/// What the stream's reader and its senders share.
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

    /// Hands an answer to the invocation that waits for it (none when it was cancelled).
    fn answer(&self, frame: pb::InvokeStreamResponse) {
        let Some(reply) = self.lock().replies.remove(&frame.id) else {
            return;
        };
        let result = match frame.result {
            Some(Answer::Response(response)) => Ok(response),
            Some(Answer::Failure(failure)) => {
                Err(status_to_error(&failure_to_status(failure), &self.agent))
            }
            None => Err(Error::Backend(format!(
                "agent {}: an invocation answer without a result",
                self.agent
            ))),
        };
        let _ = reply.send(result);
    }

    /// Marks the stream ended and fails every invocation still waiting.
    fn end(&self, reason: String) {
        let replies = {
            let mut waiting = self.lock();
            waiting.ended = Some(reason.clone());
            std::mem::take(&mut waiting.replies)
        };
        if !replies.is_empty() {
            tracing::debug!(agent = %self.agent, %reason, waiting = replies.len(), "invocation stream ended");
        }
        for (_, reply) in replies {
            let _ = reply.send(Err(self.unreachable(&reason)));
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

/// One open `InvokeStream`.
pub(super) struct InvokeStream {
    outbound: mpsc::UnboundedSender<pb::InvokeStreamRequest>,
    next_id: AtomicU64,
    shared: Arc<Shared>,
}

impl InvokeStream {
    /// Opens a stream on the client's connection and starts reading its answers.
    async fn open(client: &Client, agent: &str) -> std::result::Result<Arc<Self>, tonic::Status> {
        let (outbound, requests) = mpsc::unbounded_channel();
        let inbound = client
            .clone()
            .invoke_stream(UnboundedReceiverStream::new(requests))
            .await?
            .into_inner();
        let shared = Arc::new(Shared {
            agent: agent.to_owned(),
            waiting: Mutex::default(),
        });
        // The reader holds only what it shares with the senders: when the runtime lets the
        // stream go, `outbound` closes, the agent ends its side and the reader returns.
        tokio::spawn(read(inbound, Arc::clone(&shared)));
        Ok(Arc::new(Self {
            outbound,
            next_id: AtomicU64::new(1),
            shared,
        }))
    }

    fn ended(&self) -> bool {
        self.outbound.is_closed() || self.shared.lock().ended.is_some()
    }

    /// Sends an invocation; its answer comes through the returned [`Pending`].
    pub(super) fn send(
        self: &Arc<Self>,
        request: pb::InvokeWorkerRequest,
    ) -> std::result::Result<Pending, Unsent> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply, answer) = oneshot::channel();
        {
            let mut waiting = self.shared.lock();
            if waiting.ended.is_some() {
                return Err(Unsent::Ended(Box::new(request)));
            }
            waiting.replies.insert(id, reply);
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
            answer,
            answered: false,
        })
    }
}

/// Reads the agent's answers until the stream ends, then fails what still waits.
async fn read(mut inbound: tonic::Streaming<pb::InvokeStreamResponse>, shared: Arc<Shared>) {
    let reason = loop {
        match inbound.message().await {
            Ok(Some(frame)) => shared.answer(frame),
            Ok(None) => break "the agent closed the invocation stream".to_owned(),
            Err(status) => {
                break format!(
                    "the invocation stream broke: {}",
                    esb_logs::ErrorChain(&status)
                );
            }
        }
    };
    shared.end(reason);
}

/// An invocation sent on a stream. Dropped before its answer came, it is cancelled on the agent.
pub(super) struct Pending {
    stream: Arc<InvokeStream>,
    id: u64,
    answer: oneshot::Receiver<Reply>,
    answered: bool,
}

impl Pending {
    /// Waits for the answer.
    pub(super) async fn answer(mut self) -> Reply {
        let reply = (&mut self.answer).await;
        self.answered = true;
        reply.unwrap_or_else(|_| {
            Err(self
                .stream
                .shared
                .unreachable("the invocation stream ended"))
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        if self.answered {
            return;
        }
        // Still registered: the answer has not come, so the agent is told to drop it.
        if self.stream.shared.lock().replies.remove(&self.id).is_some() {
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
        match InvokeStream::open(client, agent).await {
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
