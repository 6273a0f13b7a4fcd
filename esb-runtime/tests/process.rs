//! The process backend running a function built with the official `lambda_runtime` crate.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::{
    Error, InvokeRequest, InvokeResult, LogLine, LogSink, LogStream, Runtime, SandboxId,
    SandboxSpec, SandboxState,
};
use serde_json::{Value, json};

#[derive(Default)]
struct Collect(Mutex<Vec<LogLine>>);

impl LogSink for Collect {
    fn log(&self, line: LogLine) {
        self.0.lock().unwrap().push(line);
    }
}

impl Collect {
    fn lines(&self) -> Vec<LogLine> {
        self.0.lock().unwrap().clone()
    }
}

fn runtime() -> (ProcessRuntime, Arc<Collect>) {
    let logs = Arc::new(Collect::default());
    let runtime = ProcessRuntime::new(
        ProcessConfig::default()
            .log_sink(logs.clone())
            .region("eu-west-1"),
    );
    (runtime, logs)
}

fn spec(name: &str) -> SandboxSpec {
    let bin = esb_testfn::binary().expect("build esb-testfn");
    SandboxSpec::new(name)
        .command([bin.display().to_string()])
        .env("ESB_TEST_VAR", "from-spec")
        .memory_mb(256)
        .timeout(Duration::from_secs(5))
}

fn json_of(result: &InvokeResult) -> Value {
    match result {
        InvokeResult::Success(body) => serde_json::from_slice(body).expect("json response"),
        InvokeResult::FunctionError(err) => panic!("unexpected function error {err:?}"),
    }
}

fn request(payload: Value) -> InvokeRequest {
    InvokeRequest::new(payload.to_string())
}

fn alive(pid: u32) -> bool {
    // A zombie still has a /proc entry; its state is Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

async fn wait_gone(pid: u32) {
    for _ in 0..100 {
        if !alive(pid) && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("process {pid} still exists (alive or zombie)");
}

#[tokio::test]
async fn echo_round_trip_with_context_and_environment() {
    let (runtime, logs) = runtime();
    let sandbox = runtime.create(spec("echo-fn")).await.unwrap();
    let mut req = request(json!({"hello": "world", "n": 1}));
    req.trace_id = Some("Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1".into());
    let request_id = req.request_id.clone();
    let before_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let response = runtime.invoke(&sandbox.id, req).await.unwrap();
    let body = json_of(&response.result);

    assert_eq!(body["echo"], json!({"hello": "world", "n": 1}));
    let ctx = &body["context"];
    assert_eq!(ctx["request_id"], request_id);
    assert_eq!(
        ctx["invoked_function_arn"],
        "arn:aws:lambda:eu-west-1:000000000000:function:echo-fn"
    );
    assert_eq!(
        ctx["trace_id"],
        "Root=1-5759e988-bd862e3fe1be46a994272793;Sampled=1"
    );
    let deadline = ctx["deadline_ms"].as_u64().unwrap();
    assert!(
        deadline > before_ms,
        "deadline {deadline} not in the future"
    );
    assert!(
        deadline <= before_ms + 5_000 + 1_000,
        "deadline {deadline} beyond the 5 s timeout"
    );

    let env = &body["env"];
    assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], "echo-fn");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_VERSION"], "$LATEST");
    assert_eq!(env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"], "256");
    assert_eq!(env["AWS_REGION"], "eu-west-1");
    assert_eq!(env["TZ"], ":UTC");
    assert_eq!(env["AWS_LAMBDA_LOG_GROUP_NAME"], "/aws/lambda/echo-fn");
    let stream = env["AWS_LAMBDA_LOG_STREAM_NAME"].as_str().unwrap();
    assert!(
        stream.ends_with(&format!("/[$LATEST]{}", sandbox.id)),
        "{stream}"
    );
    assert!(env["LAMBDA_TASK_ROOT"].as_str().is_some());
    let api = env["AWS_LAMBDA_RUNTIME_API"].as_str().unwrap();
    assert!(api.starts_with("127.0.0.1:"), "{api}");
    assert_eq!(env["ESB_TEST_VAR"], "from-spec");

    // A cold start reports its init, a warm one does not.
    assert!(response.init_duration.is_some());
    assert!(response.max_memory_used_mb >= 1);
    assert!(response.billed_duration >= response.duration);
    let warm = runtime
        .invoke(&sandbox.id, request(json!({})))
        .await
        .unwrap();
    assert!(warm.init_duration.is_none());

    let platform: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.stream == LogStream::Platform && l.request_id.as_deref() == Some(&request_id))
        .map(|l| l.message)
        .collect();
    assert_eq!(
        platform[0],
        format!("START RequestId: {request_id} Version: $LATEST")
    );
    assert_eq!(platform[1], format!("END RequestId: {request_id}"));
    assert!(platform[2].starts_with(&format!("REPORT RequestId: {request_id}\tDuration: ")));
    assert!(platform[2].contains("\tMemory Size: 256 MB\tMax Memory Used: "));
    assert!(platform[2].contains("\tInit Duration: "));
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn stdout_and_stderr_lines_carry_the_request_id() {
    let (runtime, logs) = runtime();
    let sandbox = runtime.create(spec("printer")).await.unwrap();
    let req = request(json!({"print": ["line one", "line two"], "stderr": ["to stderr"]}));
    let request_id = req.request_id.clone();
    runtime.invoke(&sandbox.id, req).await.unwrap();
    // Output is read concurrently with the answer; give the reader a moment.
    for _ in 0..50 {
        if logs.lines().iter().any(|l| l.message == "to stderr") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let lines = logs.lines();
    for (text, stream) in [
        ("line one", LogStream::Stdout),
        ("line two", LogStream::Stdout),
        ("to stderr", LogStream::Stderr),
    ] {
        let line = lines
            .iter()
            .find(|l| l.message == text)
            .unwrap_or_else(|| panic!("{text} not logged: {lines:?}"));
        assert_eq!(line.stream, stream);
        assert_eq!(line.request_id.as_deref(), Some(request_id.as_str()));
        assert_eq!(line.function_name, "printer");
        assert_eq!(line.sandbox_id, sandbox.id);
    }
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn handler_error_is_a_function_error_with_type_and_message() {
    let (runtime, _) = runtime();
    let sandbox = runtime.create(spec("failing")).await.unwrap();
    let response = runtime
        .invoke(
            &sandbox.id,
            request(json!({"error": {"type": "ValidationError", "message": "name is required"}})),
        )
        .await
        .unwrap();
    match &response.result {
        InvokeResult::FunctionError(err) => {
            assert_eq!(err.error_type, "ValidationError");
            assert_eq!(err.error_message, "name is required");
            let doc: Value = serde_json::from_slice(&response.body()).unwrap();
            assert_eq!(doc["errorType"], "ValidationError");
            assert_eq!(doc["errorMessage"], "name is required");
        }
        other => panic!("expected a function error, got {other:?}"),
    }
    // The sandbox survives a handled error.
    let next = runtime
        .invoke(&sandbox.id, request(json!({"ok": true})))
        .await
        .unwrap();
    assert_eq!(json_of(&next.result)["echo"]["ok"], true);
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn exit_and_panic_are_sandbox_lost_and_leave_no_zombie() {
    let (runtime, _) = runtime();
    // lambda_runtime catches a handler's panic and reports it as a function error; a process
    // that exits or aborts is a lost sandbox.
    for payload in [
        json!({"exit": 1}),
        json!({"abort": true}),
        json!({"panic": "boom"}),
    ] {
        let sandbox = runtime.create(spec("crasher")).await.unwrap();
        let pid = runtime.pid(&sandbox.id).unwrap();
        // Warm it up first so the crash happens mid-invocation, not during init.
        runtime
            .invoke(&sandbox.id, request(json!({})))
            .await
            .unwrap();
        let err = runtime.invoke(&sandbox.id, request(payload.clone())).await;
        match err {
            Err(Error::SandboxLost { reason, .. }) => {
                assert!(reason.contains("Runtime exited with error"), "{reason}");
                assert_ne!(payload, json!({"panic": "boom"}));
                assert_eq!(
                    Error::SandboxLost {
                        id: SandboxId::new("x"),
                        reason
                    }
                    .lambda_error_type(),
                    "Runtime.ExitError"
                );
                wait_gone(pid).await;
                let listed = runtime.list().await.unwrap();
                let state = listed.iter().find(|s| s.id == sandbox.id).unwrap().state;
                assert_eq!(state, SandboxState::Stopped);
            }
            Ok(response) => {
                assert_eq!(payload, json!({"panic": "boom"}), "exit must not answer");
                match response.result {
                    InvokeResult::FunctionError(err) => {
                        assert!(err.error_message.contains("boom"), "{err:?}")
                    }
                    other => panic!("panic gave {other:?}"),
                }
            }
            Err(other) => panic!("unexpected error {other}"),
        }
        runtime.destroy(&sandbox.id).await.unwrap();
        wait_gone(pid).await;
    }
}

#[tokio::test]
async fn exit_during_init_fails_the_first_invoke_at_once() {
    let (runtime, logs) = runtime();
    let spec = SandboxSpec::new("no-init")
        .command(["/bin/sh", "-c", "echo starting; exit 3"])
        .timeout(Duration::from_secs(30));
    let sandbox = runtime.create(spec).await.unwrap();
    let started = std::time::Instant::now();
    let err = runtime
        .invoke(&sandbox.id, request(json!({})))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SandboxLost { reason, .. } if reason.contains("exit status 3")),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5), "it hung");
    // Logged as Lambda logs it.
    let platform: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.stream == LogStream::Platform && l.request_id.is_some())
        .map(|l| l.message)
        .collect();
    let request_id = platform[0]
        .strip_prefix("START RequestId: ")
        .and_then(|rest| rest.strip_suffix(" Version: $LATEST"))
        .unwrap();
    assert_eq!(
        platform[1..],
        [
            format!("RequestId: {request_id} Error: Runtime exited with error: exit status 3"),
            "Runtime.ExitError".to_owned(),
            format!("END RequestId: {request_id}"),
        ]
    );
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn timeout_kills_the_sandbox() {
    let (runtime, _) = runtime();
    let sandbox = runtime
        .create(spec("slow").timeout(Duration::from_millis(500)))
        .await
        .unwrap();
    let pid = runtime.pid(&sandbox.id).unwrap();
    let err = runtime
        .invoke(&sandbox.id, request(json!({"sleep_ms": 5_000})))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "Task timed out after 0.50 seconds");
    assert!(err.is_sandbox_fatal());
    wait_gone(pid).await;
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn hundred_sequential_invokes_reuse_one_process() {
    let (runtime, _) = runtime();
    let sandbox = runtime.create(spec("warm")).await.unwrap();
    let mut pids = HashSet::new();
    for i in 0..100 {
        let response = runtime
            .invoke(&sandbox.id, request(json!({"i": i})))
            .await
            .unwrap();
        let body = json_of(&response.result);
        assert_eq!(body["echo"]["i"], i);
        pids.insert(body["pid"].as_u64().unwrap());
    }
    assert_eq!(pids.len(), 1);
    assert_eq!(
        pids.into_iter().next().unwrap(),
        u64::from(runtime.pid(&sandbox.id).unwrap())
    );
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn paused_sandbox_answers_only_after_resume() {
    let (runtime, _) = runtime();
    let sandbox = Arc::new(runtime);
    let info = sandbox.create(spec("freezer")).await.unwrap();
    sandbox.invoke(&info.id, request(json!({}))).await.unwrap();
    sandbox.pause(&info.id).await.unwrap();
    let listed = sandbox.list().await.unwrap();
    assert_eq!(listed[0].state, SandboxState::Paused);

    let pending = {
        let runtime = sandbox.clone();
        let id = info.id.clone();
        tokio::spawn(async move {
            runtime
                .invoke(&id, request(json!({"after": "pause"})))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!pending.is_finished(), "a paused sandbox answered");

    sandbox.resume(&info.id).await.unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), pending)
        .await
        .expect("answer after resume")
        .unwrap()
        .unwrap();
    assert_eq!(json_of(&response.result)["echo"]["after"], "pause");
    assert_eq!(
        sandbox.list().await.unwrap()[0].state,
        SandboxState::Running
    );
    sandbox.destroy(&info.id).await.unwrap();
}

#[tokio::test]
async fn destroy_kills_and_reaps_the_process_group() {
    let (runtime, _) = runtime();
    let sandbox = runtime.create(spec("doomed")).await.unwrap();
    runtime
        .invoke(&sandbox.id, request(json!({})))
        .await
        .unwrap();
    let pid = runtime.pid(&sandbox.id).unwrap();
    let metrics = runtime.metrics(&sandbox.id).await.unwrap();
    assert!(metrics.memory_current_bytes > 0);
    assert!(metrics.pids >= 1);
    runtime.destroy(&sandbox.id).await.unwrap();
    wait_gone(pid).await;
    assert!(runtime.list().await.unwrap().is_empty());
    assert!(matches!(
        runtime.invoke(&sandbox.id, request(json!({}))).await,
        Err(Error::NotFound(_))
    ));
    // Destroying an unknown sandbox succeeds.
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn a_second_concurrent_invoke_is_refused() {
    let (runtime, _) = runtime();
    let runtime = Arc::new(runtime);
    let sandbox = runtime.create(spec("single")).await.unwrap();
    runtime
        .invoke(&sandbox.id, request(json!({})))
        .await
        .unwrap();
    let first = {
        let runtime = runtime.clone();
        let id = sandbox.id.clone();
        tokio::spawn(async move { runtime.invoke(&id, request(json!({"sleep_ms": 300}))).await })
    };
    tokio::time::sleep(Duration::from_millis(50)).await;
    let second = runtime.invoke(&sandbox.id, request(json!({}))).await;
    assert!(matches!(second, Err(Error::Busy(_))), "{second:?}");
    assert!(first.await.unwrap().is_ok());
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn a_missing_command_is_a_clear_error() {
    let (runtime, _) = runtime();
    let err = runtime
        .create(SandboxSpec::new("ghost").command(["/nonexistent/bootstrap"]))
        .await
        .unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("ghost") && text.contains("/nonexistent/bootstrap"),
        "{text}"
    );
    let err = runtime
        .create(SandboxSpec::new("nothing"))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("needs a command"), "{err}");
}

#[tokio::test]
async fn sandboxes_get_cpus_in_proportion_to_memory_like_lambda() {
    let host = std::thread::available_parallelism().unwrap().get();
    let cpus_seen = |runtime: ProcessRuntime, memory_mb: u32| async move {
        let sandbox = runtime
            .create(spec("cpus").memory_mb(memory_mb))
            .await
            .unwrap();
        let response = runtime
            .invoke(&sandbox.id, request(json!({})))
            .await
            .unwrap();
        runtime.destroy(&sandbox.id).await.unwrap();
        json_of(&response.result)["cpus"].as_u64().unwrap()
    };
    // One vCPU per 1,769 MB, at least one, at most the host's.
    assert_eq!(cpus_seen(runtime().0, 128).await, 1);
    assert_eq!(
        cpus_seen(runtime().0, 3538).await,
        2.min(host) as u64,
        "3,538 MB buys two vCPUs"
    );
    let unpinned = ProcessRuntime::new(ProcessConfig::default().pin_cpus(false));
    assert_eq!(cpus_seen(unpinned, 128).await, host as u64);
}

#[tokio::test]
async fn init_start_and_init_output_come_before_the_first_start() {
    let (runtime, logs) = runtime();
    let bin = esb_testfn::binary().expect("build esb-testfn");
    // The function prints during its init, then takes its first invocation.
    let script = format!("echo initializing; sleep 0.2; exec {}", bin.display());
    let spec = SandboxSpec::new("init-printer").command(["/bin/sh", "-c", script.as_str()]);
    let sandbox = runtime.create(spec).await.unwrap();
    let req = request(json!({}));
    let request_id = req.request_id.clone();
    runtime.invoke(&sandbox.id, req).await.unwrap();
    let messages: Vec<String> = logs
        .lines()
        .into_iter()
        .filter(|l| l.sandbox_id.as_ref() == sandbox.id.as_str())
        .map(|l| l.message)
        .collect();
    assert_eq!(
        messages[0],
        "INIT_START Runtime Version: esb.v1\tRuntime Version ARN: arn:aws:lambda:eu-west-1::runtime:esb.v1",
        "{messages:?}"
    );
    let init = messages.iter().position(|m| m == "initializing").unwrap();
    let start = messages
        .iter()
        .position(|m| *m == format!("START RequestId: {request_id} Version: $LATEST"))
        .unwrap();
    assert!(init < start, "init output after START: {messages:?}");
    let line = logs
        .lines()
        .into_iter()
        .find(|l| l.message == "initializing")
        .unwrap();
    assert_eq!(
        line.request_id, None,
        "init output belongs to no invocation"
    );
    runtime.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn invalid_utf8_and_long_lines_are_logged_and_the_function_keeps_serving() {
    let (runtime, logs) = runtime();
    let info = runtime.create(spec("bytes")).await.unwrap();
    // Invalid UTF-8, then a 600 KB line, then normal lines: all logged, the pipe stays open.
    let first = runtime
        .invoke(
            &info.id,
            request(json!({
                "raw": [0xff, 0xfe, b'!', b'\n'],
                "spew": {"bytes": 600 * 1024, "line_bytes": 600 * 1024},
                "print": ["after"],
            })),
        )
        .await
        .unwrap();
    json_of(&first.result);
    let second = runtime
        .invoke(&info.id, request(json!({"print": ["second"]})))
        .await
        .unwrap();
    json_of(&second.result);
    let messages: Vec<String> = logs.lines().into_iter().map(|l| l.message).collect();
    assert!(
        messages.contains(&"\u{fffd}\u{fffd}!".to_owned()),
        "{messages:?}"
    );
    assert!(messages.contains(&"after".to_owned()));
    assert!(messages.contains(&"second".to_owned()));
    let pieces: Vec<&String> = messages.iter().filter(|m| m.starts_with("xxx")).collect();
    assert_eq!(pieces.len(), 3, "a 600 KB line is three records");
    assert!(
        pieces
            .iter()
            .all(|p| p.len() <= esb_runtime::MAX_LINE_BYTES)
    );
    assert!(pieces[0].ends_with(esb_runtime::SPLIT_MARKER));
    assert!(pieces[1].ends_with(esb_runtime::SPLIT_MARKER));
    let total: usize = pieces
        .iter()
        .map(|p| p.trim_end_matches(esb_runtime::SPLIT_MARKER).len())
        .sum();
    assert_eq!(total, 600 * 1024);
    runtime.destroy(&info.id).await.unwrap();
}
