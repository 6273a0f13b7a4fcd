//! Invocations over the agent's `InvokeStream`: many at once on one stream, cancellation,
//! a stream that breaks mid-invocation, an agent that stops, agents without the stream, and
//! the raw protocol. Tests wait on conditions (the function has started an invocation, the
//! agent reports it stops), never for a fixed time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use esb_proto::agent::v1 as pb;
use esb_proto::agent::v1::agent_service_client::AgentServiceClient;
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{Error, InvokeRequest, InvokeResponse, InvokeResult, Runtime, SandboxId};
use pb::invoke_stream_request::Kind;
use pb::invoke_stream_response::Result as Answer;
use serde_json::{Value, json};
use support::{TOKEN, TestAgent, testfn};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::UnboundedReceiverStream;

fn echoed(result: &InvokeResult) -> Value {
    match result {
        InvokeResult::Success(body) => {
            serde_json::from_slice::<Value>(body).unwrap()["echo"].clone()
        }
        InvokeResult::FunctionError(err) => panic!("function error: {err:?}"),
    }
}

/// A file the function appends each invocation's request id to as it starts it
/// (`count_file`): tells when an invocation is running.
struct Starts {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl Starts {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("starts");
        Self { _dir: dir, path }
    }

    /// `payload` with `count_file` set to this file.
    fn payload(&self, mut payload: Value) -> String {
        payload["count_file"] = json!(self.path.display().to_string());
        payload.to_string()
    }

    fn count(&self) -> usize {
        std::fs::read_to_string(&self.path)
            .map(|text| text.lines().count())
            .unwrap_or(0)
    }

    /// Sends an invocation that sleeps `sleep_ms` in the function on its own task, and waits
    /// until the function has started it.
    async fn sleeping(
        &self,
        remote: &RemoteRuntime,
        id: &SandboxId,
        sleep_ms: u64,
    ) -> JoinHandle<Result<InvokeResponse, Error>> {
        let before = self.count();
        let invocation = {
            let (remote, id) = (remote.clone(), id.clone());
            let payload = self.payload(json!({ "sleep_ms": sleep_ms }));
            tokio::spawn(async move { remote.invoke(&id, InvokeRequest::new(payload)).await })
        };
        self.started(before + 1).await;
        invocation
    }

    /// Waits until the function has started `n` invocations.
    async fn started(&self, n: usize) {
        tokio::time::timeout(Duration::from_secs(30), async {
            while self.count() < n {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the function starts the invocation");
    }
}

/// Asks the agent to stop and waits until it no longer reports that it serves (it is then
/// stopping: still up, finishing what is in flight).
async fn ask_to_stop(agent: &mut TestAgent, remote: &RemoteRuntime) {
    agent.ask_to_stop();
    tokio::time::timeout(Duration::from_secs(10), async {
        while remote.check_health(Duration::from_secs(5)).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the stopping agent's health check fails");
}

/// A sandbox of `function` that has answered one invocation (its init done).
async fn warm(remote: &RemoteRuntime, function: &str) -> SandboxId {
    let id = remote.create(testfn(function)).await.unwrap().id;
    remote.invoke(&id, InvokeRequest::new("{}")).await.unwrap();
    id
}

async fn sandboxes(remote: &RemoteRuntime, n: usize) -> Vec<SandboxId> {
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(remote.create(testfn("echo")).await.unwrap().id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_invocations_each_get_their_own_answer() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let ids = sandboxes(&remote, 8).await;
    // 8 callers, one per sandbox, 25 invocations each: 8 in flight on the stream at a time.
    let callers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(caller, id)| {
            let remote = remote.clone();
            let id = id.clone();
            tokio::spawn(async move {
                for n in 0..25 {
                    let request = InvokeRequest::new(json!({"caller": caller, "n": n}).to_string());
                    let request_id = request.request_id.clone();
                    let response = remote.invoke(&id, request).await.unwrap();
                    assert_eq!(echoed(&response.result), json!({"caller": caller, "n": n}));
                    let InvokeResult::Success(body) = &response.result else {
                        unreachable!()
                    };
                    let body: Value = serde_json::from_slice(body).unwrap();
                    assert_eq!(body["context"]["request_id"], json!(request_id));
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    for id in &ids {
        remote.destroy(id).await.unwrap();
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_and_small_answers_on_one_stream_each_reach_their_invocation() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let ids = sandboxes(&remote, 6).await;
    // Answers of ~200 KB (many HTTP/2 frames each, read while the others wait) among small
    // ones, all on the one stream.
    let large = "x".repeat(200 * 1024);
    let callers: Vec<_> = ids
        .iter()
        .enumerate()
        .map(|(caller, id)| {
            let remote = remote.clone();
            let id = id.clone();
            let large = large.clone();
            tokio::spawn(async move {
                for n in 0..15 {
                    let event = if caller % 2 == 0 {
                        json!({"caller": caller, "n": n, "fill": large})
                    } else {
                        json!({"caller": caller, "n": n})
                    };
                    let request = InvokeRequest::new(event.to_string());
                    let response = remote.invoke(&id, request).await.unwrap();
                    assert_eq!(echoed(&response.result), event);
                }
            })
        })
        .collect();
    for caller in callers {
        caller.await.unwrap();
    }
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_caller_that_goes_away_cancels_its_invocation_on_the_agent() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    // Warm: the first invocation's init is not part of what is cancelled.
    let sandbox = warm(&remote, "slow").await;
    let starts = Starts::new();
    let abandoned = starts.sleeping(&remote, &sandbox, 2000).await;
    // The caller goes away while the function runs its invocation.
    abandoned.abort();
    assert!(abandoned.await.unwrap_err().is_cancelled());
    // The agent dropped the abandoned invocation: the sandbox takes the next one (it runs
    // once the function is done sleeping) instead of answering that it is busy.
    let response = remote
        .invoke(
            &sandbox,
            InvokeRequest::new(starts.payload(json!({"n": 1}))),
        )
        .await
        .unwrap();
    assert_eq!(echoed(&response.result)["n"], json!(1));
    assert_eq!(starts.count(), 2);
    remote.destroy(&sandbox).await.unwrap();
    agent.stop().await;
}

/// A loopback TCP proxy to `target` whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    accept: JoinHandle<()>,
    cut: tokio::sync::watch::Sender<u32>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (cut, cuts) = tokio::sync::watch::channel(0u32);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Self { addr, accept, cut }
    }

    /// Closes every connection open now.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_broken_mid_invocation_fails_it_at_once_and_the_next_one_opens_a_new_stream() {
    let agent = TestAgent::start().await;
    let proxy = Proxy::start(agent.addr).await;
    let remote = RemoteRuntime::connect(
        RemoteConfig::new(format!("http://{}", proxy.addr))
            .token(TOKEN)
            .retry_backoff(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    let slow = remote.create(testfn("slow")).await.unwrap();
    let echo = remote.create(testfn("echo")).await.unwrap();
    remote
        .invoke(&echo.id, InvokeRequest::new("{}"))
        .await
        .unwrap();

    let starts = Starts::new();
    let pending = starts.sleeping(&remote, &slow.id, 60000).await;
    proxy.cut();
    // Well before the function would answer (60 s): the caller learns the stream broke.
    let err = tokio::time::timeout(Duration::from_secs(20), pending)
        .await
        .expect("the broken stream's invocation is failed, not left hanging")
        .unwrap()
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(message) if message.contains("invocation stream")),
        "{err:?}"
    );

    // The next invocation opens a new connection and stream.
    let response = remote
        .invoke(&echo.id, InvokeRequest::new(r#"{"after":"cut"}"#))
        .await
        .unwrap();
    assert_eq!(echoed(&response.result), json!({"after": "cut"}));
    remote.destroy(&echo.id).await.unwrap();
    remote.destroy(&slow.id).await.unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn one_call_per_invocation_still_works_when_asked() {
    let agent = TestAgent::start().await;
    let remote = RemoteRuntime::connect(
        RemoteConfig::new(agent.url())
            .token(TOKEN)
            .invoke_stream(false),
    )
    .await
    .unwrap();
    let sandbox = remote
        .create(testfn("slow").timeout(Duration::from_millis(500)))
        .await
        .unwrap();
    let response = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"n":1}"#))
        .await
        .unwrap();
    assert_eq!(echoed(&response.result), json!({"n": 1}));
    let err = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"sleep_ms":5000}"#))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    agent.stop().await;
}

/// Opens a raw `InvokeStream` with the token.
async fn raw_stream(
    agent: &TestAgent,
) -> (
    mpsc::UnboundedSender<pb::InvokeStreamRequest>,
    tonic::Streaming<pb::InvokeStreamResponse>,
) {
    let mut client = AgentServiceClient::connect(agent.url()).await.unwrap();
    let (requests, outbound) = mpsc::unbounded_channel();
    let mut request = tonic::Request::new(UnboundedReceiverStream::new(outbound));
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let answers = client.invoke_stream(request).await.unwrap().into_inner();
    (requests, answers)
}

fn invoke(id: u64, container_id: &SandboxId, payload: Value) -> pb::InvokeStreamRequest {
    pb::InvokeStreamRequest {
        id,
        kind: Some(Kind::Invoke(pb::InvokeWorkerRequest {
            container_id: container_id.to_string(),
            payload: payload.to_string().into(),
            ..Default::default()
        })),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_stream_answers_by_id_in_finishing_order_drops_cancelled_ones_and_ends_after_the_caller()
 {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let fast = remote.create(testfn("echo")).await.unwrap().id;
    let slow = remote.create(testfn("slow")).await.unwrap().id;
    let cancelled = remote.create(testfn("slow")).await.unwrap().id;
    for id in [&fast, &slow, &cancelled] {
        remote.invoke(id, InvokeRequest::new("{}")).await.unwrap();
    }

    let (requests, mut answers) = raw_stream(&agent).await;
    requests
        .send(invoke(7, &slow, json!({"sleep_ms": 500})))
        .unwrap();
    requests
        .send(invoke(8, &cancelled, json!({"sleep_ms": 300})))
        .unwrap();
    requests
        .send(pb::InvokeStreamRequest {
            id: 8,
            kind: Some(Kind::Cancel(pb::CancelInvocation {})),
        })
        .unwrap();
    requests.send(invoke(9, &fast, json!({"n": 9}))).unwrap();
    requests
        .send(invoke(10, &SandboxId::from("no-such-sandbox"), json!({})))
        .unwrap();
    // The caller closes its side: what is in flight still finishes, then the stream ends.
    drop(requests);

    let mut seen = Vec::new();
    while let Some(frame) = answers.message().await.unwrap() {
        let body = match frame.result.unwrap() {
            Answer::Response(response) => match response.result.unwrap() {
                pb::invoke_worker_response::Result::Payload(body) => {
                    serde_json::from_slice::<Value>(&body).unwrap()["echo"].clone()
                }
                other => panic!("function error: {other:?}"),
            },
            Answer::Failure(failure) => {
                assert_eq!(failure.code, tonic::Code::NotFound as i32, "{failure:?}");
                assert!(!failure.detail.is_empty(), "the typed error rides along");
                json!("not found")
            }
        };
        seen.push((frame.id, body));
    }
    // 9 and 10 answer first (10 and 9 in either order), the slow 7 last; 8 never.
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert_eq!(seen[2], (7, json!({"sleep_ms": 500})));
    let mut first: Vec<_> = seen[..2].to_vec();
    first.sort_by_key(|(id, _)| *id);
    assert_eq!(first, vec![(9, json!({"n": 9})), (10, json!("not found"))]);
    agent.stop().await;
}

#[tokio::test]
async fn a_stream_without_the_token_is_refused() {
    let agent = TestAgent::start().await;
    let mut client = AgentServiceClient::connect(agent.url()).await.unwrap();
    let (_requests, outbound) = mpsc::unbounded_channel::<pb::InvokeStreamRequest>();
    let status = client
        .invoke_stream(UnboundedReceiverStream::new(outbound))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_finishes_the_invocations_in_flight_and_ends_its_streams() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let sandbox = warm(&remote, "slow").await;
    let starts = Starts::new();
    let in_flight = starts.sleeping(&remote, &sandbox, 500).await;
    // The open stream does not hold the shutdown up beyond the invocation in flight.
    agent.stop().await;
    let response = in_flight.await.unwrap().unwrap();
    assert_eq!(echoed(&response.result)["sleep_ms"], json!(500));
    let err = remote
        .invoke(&sandbox, InvokeRequest::new("{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_agent_refuses_new_invocations_at_once_and_still_takes_cancels() {
    let mut agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let busy = warm(&remote, "slow").await;
    let free = warm(&remote, "echo").await;
    let starts = Starts::new();
    let in_flight = starts.sleeping(&remote, &busy, 60000).await;
    ask_to_stop(&mut agent, &remote).await;

    // A new invocation on the open stream is refused at once, so the caller can go
    // elsewhere, while the one in flight still runs.
    let err = remote
        .invoke(&free, InvokeRequest::new("{}"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(message) if message.contains("stopping")),
        "{err:?}"
    );
    assert!(!in_flight.is_finished(), "{:?}", in_flight.await);

    // Its caller goes away: the cancel still reaches the stopping agent, which then stops
    // without waiting for the function's 60 s (`stop` gives it 10 s).
    in_flight.abort();
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_raw_stream_of_a_stopping_agent_answers_new_invocations_unavailable_then_ends() {
    let mut agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let busy = warm(&remote, "slow").await;
    let free = warm(&remote, "echo").await;
    let starts = Starts::new();
    let (requests, mut answers) = raw_stream(&agent).await;
    let mut first = invoke(1, &busy, json!({"sleep_ms": 300}));
    if let Some(Kind::Invoke(request)) = &mut first.kind {
        request.payload = starts.payload(json!({"sleep_ms": 300})).into();
    }
    requests.send(first).unwrap();
    starts.started(1).await;
    ask_to_stop(&mut agent, &remote).await;
    requests.send(invoke(2, &free, json!({"n": 2}))).unwrap();

    // 2 is refused (before 1, which is still running), then 1 answers and the stream ends
    // although the caller keeps its side open.
    let refused = answers.message().await.unwrap().unwrap();
    assert_eq!(refused.id, 2);
    let Some(Answer::Failure(failure)) = refused.result else {
        panic!("{refused:?}")
    };
    assert_eq!(failure.code, tonic::Code::Unavailable as i32, "{failure:?}");
    assert!(!failure.detail.is_empty(), "the typed error rides along");
    let answered = answers.message().await.unwrap().unwrap();
    assert_eq!(answered.id, 1);
    assert!(
        matches!(answered.result, Some(Answer::Response(_))),
        "{answered:?}"
    );
    assert!(answers.message().await.unwrap().is_none());
    drop(requests);
    agent.stop().await;
}
