//! The containerd backend against a real containerd (see `.ci/containerd.sh`). Each test
//! skips with a printed reason when no containerd is reachable, unless
//! `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::expect_used, clippy::unwrap_used, missing_docs)]

#[path = "support/raw.rs"]
mod raw;
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use esb_runtime::containerd::containerd_client::tonic::Code;
use esb_runtime::containerd::{
    CniConfig, ContainerdConfig, ContainerdRuntime, Freezer, LABEL_ENV, LABEL_FUNCTION,
    ReconcilePolicy,
};
use esb_runtime::{
    Error, InvokeRequest, InvokeResult, LogStream, Runtime, SandboxId, SandboxSpec, SandboxState,
};
use raw::{Raw, TaskStatus};
use serde_json::{Value, json};
use support::Collect;

struct Fixture {
    runtime: ContainerdRuntime,
    logs: Arc<Collect>,
    address: PathBuf,
}

async fn fixture_with(edit: impl FnOnce(&mut ContainerdConfig)) -> Option<Fixture> {
    let address = support::containerd()?;
    let logs = Arc::new(Collect::default());
    let mut config = support::config(&address, &support::unique_env("t"), logs.clone());
    edit(&mut config);
    let runtime = ContainerdRuntime::connect(config).await.unwrap();
    Some(Fixture {
        runtime,
        logs,
        address,
    })
}

async fn fixture() -> Option<Fixture> {
    fixture_with(|_| {}).await
}

fn spec(function: &str) -> SandboxSpec {
    let image = tokio::task::block_in_place(support::pushed_image);
    SandboxSpec::new(function)
        .image(image)
        .timeout(Duration::from_secs(10))
}

fn answer(response: &esb_runtime::InvokeResponse) -> Value {
    match &response.result {
        InvokeResult::Success(body) => serde_json::from_slice(body).unwrap(),
        InvokeResult::FunctionError(err) => panic!("function error: {err:?}"),
    }
}

async fn invoke(
    runtime: &ContainerdRuntime,
    id: &SandboxId,
    event: Value,
) -> esb_runtime::Result<Value> {
    runtime
        .invoke(id, InvokeRequest::new(event.to_string()))
        .await
        .map(|r| answer(&r))
}

#[tokio::test(flavor = "multi_thread")]
async fn create_then_invoke_returns_the_response_and_logs() {
    let Some(f) = fixture().await else { return };
    let sandbox = f
        .runtime
        .create(spec("echo-fn").env("ESB_TEST_VAR", "x1"))
        .await
        .unwrap();
    let request =
        InvokeRequest::new(json!({"hello": "world", "print": ["line from fn"]}).to_string());
    let request_id = request.request_id.clone();
    let response = f.runtime.invoke(&sandbox.id, request).await.unwrap();
    let body = answer(&response);
    assert_eq!(body["echo"]["hello"], "world");
    assert_eq!(body["env"]["AWS_LAMBDA_RUNTIME_API"], "127.0.0.1:9001");
    assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_NAME"], "echo-fn");
    assert_eq!(body["env"]["ESB_TEST_VAR"], "x1");
    assert_eq!(body["context"]["request_id"], request_id.as_str());
    assert!(
        response.init_duration.is_some(),
        "a cold start reports its init"
    );
    assert!(response.max_memory_used_mb >= 1);
    // The function's stdout reaches the sink, tagged with the invocation.
    let mut found = None;
    for _ in 0..50 {
        found = f
            .logs
            .0
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.message == "line from fn")
            .cloned();
        if found.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let line = found.expect("the function's stdout line was logged");
    assert_eq!(line.stream, LogStream::Stdout);
    assert_eq!(line.request_id.as_deref(), Some(request_id.as_str()));
    assert!(
        f.logs
            .messages()
            .iter()
            .any(|m| m.starts_with("REPORT RequestId:"))
    );
    let info = f.runtime.list().await.unwrap();
    assert_eq!(info.len(), 1);
    assert_eq!(
        info[0].labels.get("esb.created-by").map(String::as_str),
        Some("esb-agent")
    );
    assert_eq!(
        info[0].labels.get(LABEL_FUNCTION).map(String::as_str),
        Some("echo-fn")
    );
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn fifty_warm_invokes_reuse_one_container() {
    let Some(f) = fixture().await else { return };
    let sandbox = f.runtime.create(spec("warm")).await.unwrap();
    let mut pids = std::collections::BTreeSet::new();
    for i in 0..50 {
        let body = invoke(&f.runtime, &sandbox.id, json!({"n": i}))
            .await
            .unwrap();
        assert_eq!(body["echo"]["n"], i);
        pids.insert(body["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 1, "one process served every invocation");
    assert_eq!(f.runtime.list().await.unwrap().len(), 1);
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_through_the_cgroup_freezer() {
    pause_freezes_the_task_and_resume_thaws_it(Freezer::Cgroup).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn pause_and_resume_through_containerd_tasks() {
    pause_freezes_the_task_and_resume_thaws_it(Freezer::Tasks).await;
}

async fn pause_freezes_the_task_and_resume_thaws_it(freezer: Freezer) {
    let Some(f) = fixture_with(|c| c.freezer = freezer).await else {
        return;
    };
    let namespace = f.runtime.namespace().to_owned();
    let raw = Raw::new(&f.address, &namespace).await;
    let sandbox = f.runtime.create(spec("freeze")).await.unwrap();
    let id = sandbox.id.as_str();
    invoke(&f.runtime, &sandbox.id, json!({})).await.unwrap();
    f.runtime.pause(&sandbox.id).await.unwrap();
    assert!(raw::cgroup_frozen(&namespace, id), "the kernel froze it");
    if freezer == Freezer::Tasks {
        assert_eq!(raw.task_status(id).await, Ok(TaskStatus::Paused as i32));
    }
    assert_eq!(
        f.runtime.list().await.unwrap()[0].state,
        SandboxState::Paused
    );
    assert!(matches!(
        invoke(&f.runtime, &sandbox.id, json!({})).await,
        Err(Error::Paused(_))
    ));
    f.runtime.resume(&sandbox.id).await.unwrap();
    assert!(!raw::cgroup_frozen(&namespace, id));
    let body = invoke(&f.runtime, &sandbox.id, json!({"after": "resume"}))
        .await
        .unwrap();
    assert_eq!(body["echo"]["after"], "resume");
    assert_eq!(
        f.runtime.list().await.unwrap()[0].state,
        SandboxState::Running
    );
    // A frozen sandbox is destroyed without waiting on its kill.
    f.runtime.pause(&sandbox.id).await.unwrap();
    let started = std::time::Instant::now();
    f.runtime.destroy(&sandbox.id).await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(!raw.container_exists(id).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn allocating_past_memory_size_is_an_oom_kill() {
    let Some(f) = fixture().await else { return };
    let sandbox = f.runtime.create(spec("hog").memory_mb(64)).await.unwrap();
    let err = invoke(&f.runtime, &sandbox.id, json!({"alloc_mb": 200}))
        .await
        .expect_err("the allocation cannot succeed");
    match &err {
        Error::SandboxLost { reason, .. } => assert!(reason.contains("OOM"), "{reason}"),
        other => panic!("expected a lost sandbox, got {other:?}"),
    }
    let metrics = f.runtime.metrics(&sandbox.id).await.unwrap();
    assert!(metrics.oom_events >= 1, "{metrics:?}");
    assert_eq!(metrics.memory_limit_bytes, 64 << 20);
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timeout_kills_the_sandbox() {
    let Some(f) = fixture().await else { return };
    let raw = Raw::new(&f.address, f.runtime.namespace()).await;
    let sandbox = f
        .runtime
        .create(spec("slow").timeout(Duration::from_secs(1)))
        .await
        .unwrap();
    invoke(&f.runtime, &sandbox.id, json!({})).await.unwrap();
    let err = invoke(&f.runtime, &sandbox.id, json!({"sleep_ms": 10_000})).await;
    assert!(matches!(err, Err(Error::Timeout { .. })), "{err:?}");
    let stopped = TaskStatus::Stopped as i32;
    assert_eq!(raw.task_status(sandbox.id.as_str()).await, Ok(stopped));
    assert_eq!(
        f.runtime.list().await.unwrap()[0].state,
        SandboxState::Stopped
    );
    assert!(invoke(&f.runtime, &sandbox.id, json!({})).await.is_err());
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn destroy_leaves_no_task_container_snapshot_netns_or_ip_lease() {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let data_dir = tempfile::tempdir().unwrap();
    let conf_dir = tempfile::tempdir().unwrap();
    let cni = CniConfig::default()
        .network(format!("esbt{suffix}"))
        .bridge(format!("esbt{suffix}"))
        .subnet("10.231.0.0/24")
        .conf_dir(conf_dir.path())
        .data_dir(data_dir.path())
        .ip_masq(false);
    let Some(f) = fixture_with(|c| c.cni = Some(cni)).await else {
        return;
    };
    let raw = Raw::new(&f.address, f.runtime.namespace()).await;
    let sandbox = f.runtime.create(spec("gone")).await.unwrap();
    invoke(&f.runtime, &sandbox.id, json!({})).await.unwrap();
    let id = sandbox.id.as_str();
    let ip = f
        .runtime
        .sandbox_ip(&sandbox.id)
        .expect("attached to the bridge");
    assert!(
        ip.octets()[..3] == [10, 231, 0],
        "{ip} is in the configured subnet"
    );
    let lease_dir = f.runtime.cni_lease_dir().unwrap();
    assert!(
        lease_dir.join(ip.to_string()).exists(),
        "host-local holds a lease"
    );
    let netns = f.runtime.netns_path(&sandbox.id);
    assert!(netns.exists());
    assert!(raw.container_exists(id).await);
    assert!(raw.snapshot_exists(id).await);

    f.runtime.destroy(&sandbox.id).await.unwrap();
    assert_eq!(raw.task_status(id).await, Err(Code::NotFound));
    assert!(!raw.container_exists(id).await);
    assert!(!raw.snapshot_exists(id).await);
    assert!(!netns.exists());
    assert!(
        !lease_dir.join(ip.to_string()).exists(),
        "the IP lease is released"
    );
    assert!(f.runtime.list().await.unwrap().is_empty());
    // Destroying again (or an unknown id) succeeds.
    f.runtime.destroy(&sandbox.id).await.unwrap();
    let _ = std::process::Command::new("ip")
        .args(["link", "del", &format!("esbt{suffix}")])
        .status();
}

#[tokio::test(flavor = "multi_thread")]
async fn gc_after_a_restart_removes_only_this_envs_sandboxes() {
    let Some(first) = fixture().await else { return };
    let namespace = first.runtime.namespace().to_owned();
    let raw = Raw::new(&first.address, &namespace).await;
    let left = first.runtime.create(spec("left-behind")).await.unwrap();
    invoke(&first.runtime, &left.id, json!({})).await.unwrap();
    // A container of someone else in the same namespace: no ESB labels.
    let foreign = raw.create_foreign_container().await;

    // A new runtime of the same env, as after an agent restart, still lists the sandbox.
    let env = namespace.trim_start_matches("esb-").to_owned();
    let second = ContainerdRuntime::connect(support::config(
        &first.address,
        &env,
        Arc::new(Collect::default()),
    ))
    .await
    .unwrap();
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, left.id);
    assert_eq!(listed[0].labels.get(LABEL_ENV), Some(&env));

    let done = second.reconcile(ReconcilePolicy::Remove).await.unwrap();
    assert_eq!(done.removed, vec![left.id.clone()]);
    assert!(!raw.container_exists(left.id.as_str()).await);
    assert!(
        raw.container_exists(&foreign).await,
        "unlabelled containers survive GC"
    );
    raw.delete_container(&foreign).await;
    drop(first);
}

#[tokio::test(flavor = "multi_thread")]
async fn reconcile_adopt_after_a_restart_keeps_runtime_api_sandboxes_serving() {
    let Some(first) = fixture().await else { return };
    let raw = Raw::new(&first.address, first.runtime.namespace()).await;
    let sandbox = first
        .runtime
        .create(spec("adopt").memory_mb(192).timeout(Duration::from_secs(7)))
        .await
        .unwrap();
    invoke(&first.runtime, &sandbox.id, json!({}))
        .await
        .unwrap();
    let env = first
        .runtime
        .namespace()
        .trim_start_matches("esb-")
        .to_owned();
    let address = first.address.clone();
    // The old runtime goes away with its Runtime API listener, as an agent process would.
    drop(first);
    let logs = Arc::new(Collect::default());
    let second = ContainerdRuntime::connect(support::config(&address, &env, logs.clone()))
        .await
        .unwrap();
    assert_eq!(
        second.list().await.unwrap().len(),
        1,
        "still listed after the restart"
    );
    let done = second.reconcile(ReconcilePolicy::Adopt).await.unwrap();
    assert_eq!(done.adopted, vec![sandbox.id.clone()]);
    assert!(done.removed.is_empty());
    let listed = second.list().await.unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, sandbox.id);
    assert_eq!(listed[0].state, SandboxState::Running);

    // The same id serves again, from a fresh runtime client, with the old settings.
    let request =
        InvokeRequest::new(json!({"again": true, "print": ["after restart"]}).to_string());
    let response = second.invoke(&sandbox.id, request).await.unwrap();
    let after = answer(&response);
    assert_eq!(after["echo"]["again"], true);
    assert_eq!(after["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "192");
    assert!(response.init_duration.is_some(), "a fresh task starts cold");
    let metrics = second.metrics(&sandbox.id).await.unwrap();
    assert_eq!(metrics.memory_limit_bytes, 192 << 20);
    for _ in 0..50 {
        if logs.messages().iter().any(|m| m == "after restart") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        logs.messages().iter().any(|m| m == "after restart"),
        "the new task's output is read"
    );
    second.destroy(&sandbox.id).await.unwrap();
    assert!(!raw.container_exists(sandbox.id.as_str()).await);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_second_env_does_not_see_the_first() {
    let Some(a) = fixture().await else { return };
    let Some(b) = fixture().await else { return };
    let sandbox = a.runtime.create(spec("mine")).await.unwrap();
    assert!(b.runtime.list().await.unwrap().is_empty());
    let done = b.runtime.reconcile(ReconcilePolicy::Remove).await.unwrap();
    assert!(done.removed.is_empty());
    assert!(matches!(
        b.runtime
            .invoke(&sandbox.id, InvokeRequest::new("{}"))
            .await,
        Err(Error::NotFound(_))
    ));
    assert_eq!(a.runtime.list().await.unwrap().len(), 1);
    a.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_imported_from_an_oci_archive_runs() {
    let Some(f) = fixture().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("image.tar");
    let name = "esb.test/imported:latest";
    tokio::task::block_in_place(|| support::write_oci_archive(&archive, name));
    run_imported(&f, &archive, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn an_image_imported_from_a_docker_save_archive_runs() {
    let Some(f) = fixture().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("docker.tar");
    let name = "esb.test/docker-saved:latest";
    tokio::task::block_in_place(|| support::write_docker_archive(&archive, name));
    run_imported(&f, &archive, name).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broken_archive_is_refused_with_its_path() {
    let Some(f) = fixture().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("not-an-image.tar");
    std::fs::write(&archive, b"this is not a tar archive").unwrap();
    let err = f
        .runtime
        .import_image(&archive, "esb.test/broken:latest")
        .await
        .expect_err("not an image archive");
    assert!(
        err.to_string().contains(&archive.display().to_string()),
        "{err}"
    );
}

async fn run_imported(f: &Fixture, archive: &Path, name: &str) {
    f.runtime.import_image(archive, name).await.unwrap();
    let sandbox = f
        .runtime
        .create(
            SandboxSpec::new("imported")
                .image(name)
                .timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let body = invoke(&f.runtime, &sandbox.id, json!({"from": "archive"}))
        .await
        .unwrap();
    assert_eq!(body["echo"]["from"], "archive");
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_image_fails_create_and_leaves_nothing() {
    let Some(f) = fixture().await else { return };
    let image = format!("{}/esb-does-not-exist:latest", support::registry());
    let err = f
        .runtime
        .create(SandboxSpec::new("missing").image(image.clone()))
        .await
        .expect_err("no such image");
    assert!(err.to_string().contains("esb-does-not-exist"), "{err}");
    assert!(f.runtime.list().await.unwrap().is_empty());
}

/// A fixture whose sandboxes join a CNI bridge of their own (`rie` mode needs it), with
/// subnet `10.236.<n>.0/24`; removes the bridge when dropped.
struct RieFixture {
    f: Fixture,
    bridge: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Drop for RieFixture {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

async fn rie_fixture(n: u8) -> Option<RieFixture> {
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let bridge = format!("esbr{suffix}");
    let dirs = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let cni = CniConfig::default()
        .network(bridge.clone())
        .bridge(bridge.clone())
        .subnet(format!("10.236.{n}.0/24"))
        .conf_dir(dirs.0.path())
        .data_dir(dirs.1.path())
        .ip_masq(false);
    let f = fixture_with(|c| c.cni = Some(cni)).await?;
    Some(RieFixture {
        f,
        bridge,
        _dirs: dirs,
    })
}

/// The test function behind the RIE stand-in, which listens 1.5 s after its start.
fn rie_spec(function: &str) -> SandboxSpec {
    let image = tokio::task::block_in_place(support::pushed_rie_image);
    SandboxSpec::new(function)
        .image(image)
        .invoke_mode(esb_runtime::InvokeMode::Rie)
        .timeout(Duration::from_secs(7))
        .memory_mb(192)
        .env("ESB_RIE_LISTEN_DELAY_MS", "1500")
}

#[tokio::test(flavor = "multi_thread")]
async fn rie_the_first_call_waits_for_the_emulator_and_reports_init() {
    let Some(r) = rie_fixture(1).await else {
        return;
    };
    let f = &r.f;
    let sandbox = f.runtime.create(rie_spec("rie-first")).await.unwrap();
    // At once: the emulator is not listening yet.
    let first = f
        .runtime
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"n":1}"#))
        .await
        .unwrap();
    assert_eq!(answer(&first)["echo"]["n"], 1);
    assert!(first.init_duration.is_some(), "a cold start reports init");
    let second = f
        .runtime
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"n":2}"#))
        .await
        .unwrap();
    assert_eq!(answer(&second)["echo"]["n"], 2);
    assert!(second.init_duration.is_none());
    assert_eq!(
        answer(&first)["pid"],
        answer(&second)["pid"],
        "one runtime, warm"
    );
    f.runtime.destroy(&sandbox.id).await.unwrap();
    // One START/END/REPORT per invocation, ESB's: the emulator's own are left out.
    let messages = f.logs.messages();
    for kind in ["START", "END", "REPORT"] {
        let lines = messages
            .iter()
            .filter(|m| m.starts_with(&format!("{kind} RequestId: ")))
            .count();
        assert_eq!(lines, 2, "{kind} lines in {messages:#?}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn rie_an_emulator_that_never_listens_is_an_init_timeout() {
    let Some(r) = rie_fixture(2).await else {
        return;
    };
    let f = &r.f;
    let spec = rie_spec("rie-slow").env("ESB_RIE_LISTEN_DELAY_MS", "600000");
    let sandbox = f.runtime.create(spec).await.unwrap();
    let err = f
        .runtime
        .invoke(&sandbox.id, InvokeRequest::new("{}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::InitTimeout { .. }), "{err:?}");
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rie_function_errors_timeouts_and_crashes_are_recognised() {
    let Some(r) = rie_fixture(3).await else {
        return;
    };
    let f = &r.f;
    let sandbox = f.runtime.create(rie_spec("rie-errors")).await.unwrap();

    // A function error: the emulator answers 200 with the document, no header.
    let error = r#"{"error":{"type":"Test.Boom","message":"boom"}}"#;
    let response = f
        .runtime
        .invoke(&sandbox.id, InvokeRequest::new(error))
        .await
        .unwrap();
    match &response.result {
        InvokeResult::FunctionError(err) => {
            assert_eq!(err.error_type, "Test.Boom");
            assert_eq!(err.error_message, "boom");
        }
        other => panic!("a function error, got {other:?}"),
    }

    // A crash: the emulator answers 502 Runtime.ExitError; the sandbox is replaced.
    let err = f
        .runtime
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"exit":3}"#))
        .await
        .unwrap_err();
    match &err {
        Error::SandboxLost { reason, .. } => {
            assert_eq!(reason, "Runtime exited with error: exit status 3");
        }
        other => panic!("a lost sandbox, got {other:?}"),
    }
    assert_eq!(err.lambda_error_type(), "Runtime.ExitError");
    f.runtime.destroy(&sandbox.id).await.unwrap();

    // A timeout: Task timed out, the sandbox killed.
    let spec = rie_spec("rie-timeout").timeout(Duration::from_secs(1));
    let sandbox = f.runtime.create(spec).await.unwrap();
    let err = f
        .runtime
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"sleep_ms":5000}"#))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err:?}");
    assert_eq!(
        f.runtime.list().await.unwrap()[0].state,
        SandboxState::Stopped
    );
    f.runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test(flavor = "multi_thread")]
async fn rie_the_function_sees_its_name_memory_timeout_and_trace_id() {
    let Some(r) = rie_fixture(4).await else {
        return;
    };
    let f = &r.f;
    let sandbox = f.runtime.create(rie_spec("rie-context")).await.unwrap();
    let mut request = InvokeRequest::new(r#"{"print":["hello from rie"]}"#);
    let request_id = request.request_id.clone();
    request.trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into());
    request.client_context = Some(r#"{"custom":{"k":"v"}}"#.into());
    let sent_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let response = f.runtime.invoke(&sandbox.id, request).await.unwrap();
    let body = answer(&response);
    let context = &body["context"];
    assert_eq!(
        context["trace_id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    assert_eq!(context["client_context"]["custom"]["k"], "v");
    assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_NAME"], "rie-context");
    assert_eq!(body["env"]["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "192");
    assert!(
        context["invoked_function_arn"]
            .as_str()
            .unwrap()
            .ends_with(":function:rie-context")
    );
    // The emulator's deadline is the function's 7 s (read from AWS_LAMBDA_FUNCTION_TIMEOUT),
    // not its 300 s default.
    let deadline = context["deadline_ms"].as_u64().unwrap();
    assert!(
        deadline > sent_ms && deadline <= sent_ms + 7_000 + 60_000,
        "deadline {deadline} vs sent {sent_ms}"
    );
    assert!(deadline < sent_ms + 300_000 - 60_000);
    f.runtime.destroy(&sandbox.id).await.unwrap();
    // The function's output belongs to ESB's request id, as Lambda's log would show it.
    let lines = f.logs.0.lock().unwrap().clone();
    let printed = lines
        .iter()
        .find(|l| l.message == "hello from rie")
        .expect("the function's line is logged");
    assert_eq!(printed.request_id.as_deref(), Some(request_id.as_str()));
}
