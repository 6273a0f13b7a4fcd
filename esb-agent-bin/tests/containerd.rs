//! The agent over its gRPC API (a tonic client on loopback) with the containerd backend,
//! against a real containerd (see `.ci/containerd.sh`). Each test skips with a printed reason
//! when no containerd is reachable, unless `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../esb-runtime/tests/support/raw.rs"]
mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use esb_agent::{BearerAuth, ServeOptions};
use esb_proto::agent::v1 as pb;
use esb_proto::agent::v1::agent_service_client::AgentServiceClient;
use esb_runtime::containerd::{
    CniConfig, ContainerdConfig, ContainerdRuntime, ReconcilePolicy, RegistryConfig,
};
use esb_runtime::logs::NullLogSink;
use esb_testfn::oci;
use pb::ContainerStatus;
use raw::Raw;
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

const TOKEN: &str = "containerd-test-token-0123";

/// Adds `authorization: Bearer <token>` to every call, when a token is set.
#[derive(Clone)]
struct Token(Option<String>);

impl tonic::service::Interceptor for Token {
    fn call(&mut self, mut request: Request<()>) -> Result<Request<()>, Status> {
        if let Some(token) = &self.0 {
            let value = format!("Bearer {token}").parse().unwrap();
            request.metadata_mut().insert("authorization", value);
        }
        Ok(request)
    }
}

type Client = AgentServiceClient<InterceptedService<Channel, Token>>;

/// An in-process agent serving a containerd runtime on an ephemeral loopback port.
struct TestAgent {
    addr: SocketAddr,
    runtime: Arc<ContainerdRuntime>,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), esb_agent::Error>>>,
}

impl TestAgent {
    /// Connects a runtime of `env`, reconciles what an earlier agent of that env left (as the
    /// binary does at start), and serves it.
    async fn start(address: &Path, env: &str, cni: Option<CniConfig>) -> Self {
        let config = ContainerdConfig::default()
            .address(address)
            .env(env)
            .state_dir(PathBuf::from("/run/esb-test"))
            .registries(RegistryConfig::default().insecure([oci::registry()]))
            .cni(cni)
            .log_sink(Arc::new(NullLogSink));
        let runtime = Arc::new(ContainerdRuntime::connect(config).await.unwrap());
        runtime.reconcile(ReconcilePolicy::Adopt).await.unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let options = ServeOptions::new(BearerAuth::token(TOKEN));
        let task = tokio::spawn(esb_agent::serve(
            runtime.clone(),
            options,
            listener,
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            addr,
            runtime,
            stop: Some(stop),
            task: Some(task),
        }
    }

    async fn client_with(&self, token: Option<&str>) -> Client {
        let channel = Channel::from_shared(format!("http://{}", self.addr))
            .unwrap()
            .connect()
            .await
            .unwrap();
        AgentServiceClient::with_interceptor(channel, Token(token.map(str::to_owned)))
    }

    async fn client(&self) -> Client {
        self.client_with(Some(TOKEN)).await
    }

    /// Stops serving and forgets the runtime, as when the agent process goes away; the
    /// sandboxes stay in containerd.
    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("agent stops")
                .unwrap()
                .unwrap();
        }
    }
}

fn unique_env() -> String {
    format!("g-{}", &uuid::Uuid::new_v4().simple().to_string()[..8])
}

fn ensure_request(function: &str) -> pb::EnsureContainerRequest {
    pb::EnsureContainerRequest {
        function_name: function.into(),
        image: tokio::task::block_in_place(oci::pushed_image),
        memory_mb: 128,
        timeout_ms: 10_000,
        ..Default::default()
    }
}

async fn ensure(client: &mut Client, request: pb::EnsureContainerRequest) -> pb::Container {
    let response = client.ensure_container(request).await.unwrap().into_inner();
    response.container.expect("the sandbox")
}

async fn invoke_raw(
    client: &mut Client,
    id: &str,
    event: Value,
) -> Result<pb::InvokeWorkerResponse, Status> {
    client
        .invoke_worker(pb::InvokeWorkerRequest {
            container_id: id.into(),
            payload: event.to_string().into_bytes().into(),
            request_id: uuid::Uuid::new_v4().to_string(),
            ..Default::default()
        })
        .await
        .map(tonic::Response::into_inner)
}

/// The function's answer to `event`; panics on a function error.
async fn invoke(client: &mut Client, id: &str, event: Value) -> Value {
    let response = invoke_raw(client, id, event).await.unwrap();
    match response.result.expect("a result") {
        pb::invoke_worker_response::Result::Payload(payload) => {
            serde_json::from_slice(&payload).unwrap()
        }
        pb::invoke_worker_response::Result::FunctionError(err) => {
            panic!("function error: {err:?}")
        }
    }
}

async fn list(client: &mut Client) -> Vec<pb::Container> {
    client
        .list_containers(pb::ListContainersRequest::default())
        .await
        .unwrap()
        .into_inner()
        .containers
}

#[tokio::test(flavor = "multi_thread")]
async fn ensure_invoke_warm_pause_resume_and_destroy_over_grpc() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let data_dir = tempfile::tempdir().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let cni = CniConfig::default()
        .network(format!("esbg{suffix}"))
        .bridge(format!("esbg{suffix}"))
        .subnet("10.232.0.0/24")
        .conf_dir(conf_dir.path())
        .data_dir(data_dir.path())
        .ip_masq(false);
    let agent = TestAgent::start(&address, &unique_env(), Some(cni)).await;
    let raw = Raw::new(&address, agent.runtime.namespace()).await;
    let mut client = agent.client().await;

    // Ensure -> invoke -> response, with a cold start's init duration.
    let container = ensure(&mut client, ensure_request("grpc-echo")).await;
    let id = container.container_id.clone();
    assert_eq!(container.function_name, "grpc-echo");
    assert_eq!(container.status(), ContainerStatus::Running);
    let first = invoke_raw(&mut client, &id, json!({"hello": "grpc"}))
        .await
        .unwrap();
    assert!(
        first.init_duration_us.is_some(),
        "a cold start reports init"
    );
    assert!(first.max_memory_used_mb >= 1);

    // Ensuring the same id again does not create another.
    let again = client
        .ensure_container(pb::EnsureContainerRequest {
            container_id: id.clone(),
            ..ensure_request("grpc-echo")
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!again.created);

    // 50 warm invokes reuse one container and one process.
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..50 {
        let body = invoke(&mut client, &id, json!({"n": i})).await;
        assert_eq!(body["echo"]["n"], i);
        pids.insert(body["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 1, "one process served every invocation");
    assert_eq!(list(&mut client).await.len(), 1);

    // Pause: the task is frozen and reported PAUSED; an invoke is refused until resumed.
    client
        .pause_container(pb::PauseContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert!(raw::cgroup_frozen(agent.runtime.namespace(), &id));
    assert_eq!(list(&mut client).await[0].status(), ContainerStatus::Paused);
    let refused = invoke_raw(&mut client, &id, json!({})).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    client
        .resume_container(pb::ResumeContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    let body = invoke(&mut client, &id, json!({"after": "resume"})).await;
    assert_eq!(body["echo"]["after"], "resume");
    assert_eq!(
        list(&mut client).await[0].status(),
        ContainerStatus::Running
    );

    // Destroy leaves no task, container, snapshot, netns or IP lease.
    let ip = agent
        .runtime
        .sandbox_ip(&id.as_str().into())
        .expect("attached to the bridge");
    let lease = agent.runtime.cni_lease_dir().unwrap().join(ip.to_string());
    let netns = agent.runtime.netns_path(&id.as_str().into());
    assert!(lease.exists() && netns.exists());
    client
        .destroy_container(pb::DestroyContainerRequest {
            container_id: id.clone(),
        })
        .await
        .unwrap();
    assert_eq!(raw.task_status(&id).await, Err(raw_not_found()));
    assert!(!raw.container_exists(&id).await);
    assert!(!raw.snapshot_exists(&id).await);
    assert!(!netns.exists(), "the network namespace is removed");
    assert!(!lease.exists(), "the IP lease is released");
    assert!(list(&mut client).await.is_empty());
    let gone = invoke_raw(&mut client, &id, json!({})).await.unwrap_err();
    assert_eq!(gone.code(), Code::NotFound);

    agent.stop().await;
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &format!("esbg{suffix}")])
        .status();
}

fn raw_not_found() -> esb_runtime::containerd::containerd_client::tonic::Code {
    esb_runtime::containerd::containerd_client::tonic::Code::NotFound
}

#[tokio::test(flavor = "multi_thread")]
async fn oom_and_timeout_are_reported_over_grpc() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let agent = TestAgent::start(&address, &unique_env(), None).await;
    let mut client = agent.client().await;

    // Allocating past memory_size: OOM-killed, the error names it, the metrics count it.
    let hog = ensure(
        &mut client,
        pb::EnsureContainerRequest {
            memory_mb: 64,
            ..ensure_request("grpc-hog")
        },
    )
    .await;
    let err = invoke_raw(&mut client, &hog.container_id, json!({"alloc_mb": 200}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Aborted, "{err:?}");
    assert!(err.message().contains("OOM"), "{}", err.message());
    let metrics = client
        .get_container_metrics(pb::GetContainerMetricsRequest {
            container_id: hog.container_id.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(metrics.oom_events >= 1, "{metrics:?}");
    assert_eq!(metrics.memory_limit_bytes, 64 << 20);

    // A timeout kills the sandbox: DEADLINE_EXCEEDED, then the sandbox is STOPPED.
    let slow = ensure(
        &mut client,
        pb::EnsureContainerRequest {
            timeout_ms: 1_000,
            ..ensure_request("grpc-slow")
        },
    )
    .await;
    invoke(&mut client, &slow.container_id, json!({})).await;
    let err = invoke_raw(&mut client, &slow.container_id, json!({"sleep_ms": 10_000}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::DeadlineExceeded, "{err:?}");
    let stopped = list(&mut client)
        .await
        .into_iter()
        .find(|c| c.container_id == slow.container_id)
        .expect("still listed until destroyed");
    assert_eq!(stopped.status(), ContainerStatus::Stopped);

    for id in [hog.container_id, slow.container_id] {
        client
            .destroy_container(pb::DestroyContainerRequest { container_id: id })
            .await
            .unwrap();
    }
    assert!(list(&mut client).await.is_empty());
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread")]
async fn restart_gc_env_isolation_and_authentication() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let env = unique_env();
    let agent = TestAgent::start(&address, &env, None).await;
    let namespace = agent.runtime.namespace().to_owned();
    let raw = Raw::new(&address, &namespace).await;
    let mut client = agent.client().await;

    // Calls without the token, or with another, are rejected.
    for token in [None, Some("not-the-token")] {
        let mut stranger = agent.client_with(token).await;
        let err = stranger
            .list_containers(pb::ListContainersRequest::default())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated, "token {token:?}");
        let err = stranger
            .ensure_container(ensure_request("intruder"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }

    let kept = ensure(&mut client, ensure_request("grpc-kept")).await;
    invoke(&mut client, &kept.container_id, json!({})).await;
    let foreign = raw.create_foreign_container().await;

    // A second env does not see the first's sandboxes, nor can it reach them.
    let other = TestAgent::start(&address, &unique_env(), None).await;
    let mut other_client = other.client().await;
    assert!(list(&mut other_client).await.is_empty());
    let err = invoke_raw(&mut other_client, &kept.container_id, json!({}))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    other.stop().await;

    // The agent restarts: the sandbox is still listed, keeps its id, and serves again.
    agent.stop().await;
    let agent = TestAgent::start(&address, &env, None).await;
    let mut client = agent.client().await;
    let listed = list(&mut client).await;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].container_id, kept.container_id);
    assert_eq!(listed[0].function_name, "grpc-kept");
    assert_eq!(listed[0].status(), ContainerStatus::Running);
    let body = invoke(&mut client, &kept.container_id, json!({"after": "restart"})).await;
    assert_eq!(body["echo"]["after"], "restart");
    assert!(raw.container_exists(&foreign).await);

    // GC (reconcile with removal) takes this env's sandboxes, never the unlabelled one.
    agent.stop().await;
    let runtime = ContainerdRuntime::connect(
        ContainerdConfig::default()
            .address(address.clone())
            .env(env.clone())
            .state_dir(PathBuf::from("/run/esb-test"))
            .log_sink(Arc::new(NullLogSink)),
    )
    .await
    .unwrap();
    let done = runtime.reconcile(ReconcilePolicy::Remove).await.unwrap();
    assert_eq!(done.removed.len(), 1);
    assert_eq!(done.removed[0].as_str(), kept.container_id);
    assert!(!raw.container_exists(&kept.container_id).await);
    assert!(
        raw.container_exists(&foreign).await,
        "a container without ESB labels survives GC"
    );
    raw.delete_container(&foreign).await;
}
