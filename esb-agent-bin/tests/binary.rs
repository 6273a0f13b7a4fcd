//! The `esb-agent` binary as a real process: flags, serving, and a clean stop on SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeRequest, InvokeResult, Runtime};
use esb_testfn::ports::free_port;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;
use support::{TOKEN, testfn};

fn spawn_agent(port: u16, extra: &[&str]) -> Child {
    Command::new(env!("CARGO_BIN_EXE_esb-agent"))
        .args([
            "--runtime",
            "process",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(extra)
        .env_remove("ESB_AGENT_TOKEN")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

async fn connect(port: u16) -> RemoteRuntime {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut config = RemoteConfig::new(format!("http://127.0.0.1:{port}")).token(TOKEN);
        config.attempts = 1;
        match RemoteRuntime::connect(config).await {
            Ok(remote) => return remote,
            Err(err) if Instant::now() > deadline => panic!("agent never answered: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

/// Waits without blocking the runtime, so the client's connection can see the agent go away.
async fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the agent did not exit within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// True while a process exists and is not a zombie.
fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| Some(stat.rsplit_once(')')?.1.split_whitespace().next()? != "Z"))
        .unwrap_or(false)
}

#[tokio::test]
async fn agent_binary_serves_and_finishes_in_flight_work_on_sigterm() {
    let spec = testfn("bin-echo");
    let port = free_port().unwrap();
    let mut agent = spawn_agent(port, &["--token", TOKEN]);
    let remote = connect(port).await;
    assert_eq!(remote.agent_backend(), "process");

    let sandbox = remote.create(spec).await.unwrap();
    let warm = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"ping":1}"#))
        .await
        .unwrap();
    let InvokeResult::Success(body) = &warm.result else {
        panic!("{:?}", warm.result);
    };
    let answer: Value = serde_json::from_slice(body).unwrap();
    let sandbox_pid = i32::try_from(answer["pid"].as_i64().unwrap()).unwrap();
    assert!(alive(sandbox_pid));

    // An invocation in flight when SIGTERM arrives still gets its answer.
    let in_flight = {
        let remote = remote.clone();
        let id = sandbox.id.clone();
        tokio::spawn(async move {
            remote
                .invoke(&id, InvokeRequest::new(r#"{"sleep_ms":700}"#))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    kill(
        Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let finished = in_flight.await.unwrap().unwrap();
    assert!(matches!(finished.result, InvokeResult::Success(_)));

    let status = wait_exit(&mut agent, Duration::from_secs(15)).await;
    assert!(status.success(), "exit status {status}");
    // Process sandboxes die with their agent.
    let deadline = Instant::now() + Duration::from_secs(5);
    while alive(sandbox_pid) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        !alive(sandbox_pid),
        "sandbox process {sandbox_pid} outlived the agent"
    );
}

#[tokio::test]
async fn agent_binary_refuses_to_start_without_a_token() {
    let port = free_port().unwrap();
    let mut agent = spawn_agent(port, &[]);
    let status = wait_exit(&mut agent, Duration::from_secs(15)).await;
    assert!(!status.success());

    let mut agent = spawn_agent(port, &["--insecure-no-auth"]);
    let mut config = RemoteConfig::new(format!("http://127.0.0.1:{port}"));
    config.attempts = 1;
    let deadline = Instant::now() + Duration::from_secs(30);
    let remote = loop {
        match RemoteRuntime::connect(config.clone()).await {
            Ok(remote) => break remote,
            Err(err) if Instant::now() > deadline => panic!("agent never answered: {err}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    };
    assert!(remote.list().await.unwrap().is_empty());
    kill(
        Pid::from_raw(i32::try_from(agent.id()).unwrap()),
        Signal::SIGINT,
    )
    .unwrap();
    assert!(
        wait_exit(&mut agent, Duration::from_secs(15))
            .await
            .success()
    );
}
