//! `InvokeStream`: many invocations over one long-lived stream, each run in a task of its own.

use std::collections::HashMap;

use esb_proto::agent::v1 as pb;
use pb::invoke_stream_request::Kind;
use pb::invoke_stream_response::Result as Answer;
use tokio::sync::{mpsc, watch};
use tokio::task::{AbortHandle, JoinSet};
use tonic::{Status, Streaming};

use crate::service::Agent;
use esb_runtime::remote::wire::status_to_failure;

/// The answers of one stream, as tonic sends them.
pub type Answers = mpsc::UnboundedSender<Result<pb::InvokeStreamResponse, Status>>;

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

/// Serves one stream: reads requests until the caller closes its side (the invocations in
/// flight then finish) or the agent stops (likewise), or the connection breaks (they are
/// dropped). The answers' channel closes when this returns and the last invocation is done.
pub async fn serve(
    agent: Agent,
    mut requests: Streaming<pb::InvokeStreamRequest>,
    answers: Answers,
    mut stop: Option<watch::Receiver<bool>>,
) {
    let mut running: JoinSet<()> = JoinSet::new();
    let mut by_invocation: HashMap<u64, AbortHandle> = HashMap::new();
    let mut by_task: HashMap<tokio::task::Id, u64> = HashMap::new();
    let mut reading = true;
    loop {
        tokio::select! {
            request = requests.message(), if reading => match request {
                Ok(Some(pb::InvokeStreamRequest { id, kind: Some(Kind::Invoke(request)) })) => {
                    let agent = agent.clone();
                    let answers = answers.clone();
                    let task = running.spawn(async move {
                        let result = match agent.run_invocation(request).await {
                            Ok(response) => Answer::Response(response),
                            Err(status) => Answer::Failure(status_to_failure(&status)),
                        };
                        let _ = answers.send(Ok(pb::InvokeStreamResponse { id, result: Some(result) }));
                    });
                    by_task.insert(task.id(), id);
                    if let Some(earlier) = by_invocation.insert(id, task) {
                        // A reused id: the caller no longer waits for the earlier one.
                        earlier.abort();
                    }
                }
                Ok(Some(pb::InvokeStreamRequest { id, kind: Some(Kind::Cancel(_)) })) => {
                    if let Some(task) = by_invocation.remove(&id) {
                        task.abort();
                    }
                }
                Ok(Some(pb::InvokeStreamRequest { id, kind: None })) => {
                    let failure = status_to_failure(&Status::invalid_argument(
                        "InvokeStream: a request without invoke or cancel",
                    ));
                    let _ = answers.send(Ok(pb::InvokeStreamResponse {
                        id,
                        result: Some(Answer::Failure(failure)),
                    }));
                }
                Ok(None) => reading = false,
                Err(status) => {
                    tracing::debug!(%status, in_flight = running.len(), "invocation stream broke; dropping its invocations");
                    return;
                }
            },
            Some(done) = running.join_next_with_id() => {
                let task = match &done {
                    Ok((task, ())) => *task,
                    Err(err) => err.id(),
                };
                if let Some(id) = by_task.remove(&task) {
                    if by_invocation.get(&id).is_some_and(|handle| handle.id() == task) {
                        by_invocation.remove(&id);
                    }
                    if let Err(err) = done
                        && err.is_panic()
                    {
                        let failure = status_to_failure(&Status::internal(format!(
                            "the invocation failed inside the agent: {err}"
                        )));
                        let _ = answers.send(Ok(pb::InvokeStreamResponse {
                            id,
                            result: Some(Answer::Failure(failure)),
                        }));
                    }
                }
            },
            () = stopping(&mut stop), if reading => reading = false,
        }
        if !reading && running.is_empty() {
            return;
        }
    }
}
