//! What an idle process sandbox costs the process that runs it in file descriptors: exactly
//! three (its runtime client's Runtime API connection, its stdout and its stderr, nothing
//! else: no listener, no pidfd, no /proc file kept open), so that thousands of sandboxes
//! fit under an ordinary open-file limit; a destroyed sandbox leaves none behind.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::{InvokeRequest, InvokeResult, Runtime, SandboxSpec};

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// What this process's descriptors point to.
fn listing() -> Vec<String> {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect()
}

/// Waits until this process holds `expected` descriptors (a lookup's netlink socket or a
/// closing connection is open for a moment), for at most 20 s; the count then.
async fn settle_at(expected: usize) -> usize {
    for _ in 0..400 {
        if open_fds() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    open_fds()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_sandbox_holds_three_descriptors() {
    // A runtime client on one keep-alive connection (`esb_testfn::noop`).
    let bin = esb_testfn::build_bin("noop_fn").expect("build noop_fn");
    let runtime =
        ProcessRuntime::new(ProcessConfig::default().log_sink(std::sync::Arc::new(NullLogSink)));
    let spec = || {
        SandboxSpec::new("idle")
            .command([bin.display().to_string()])
            .timeout(Duration::from_secs(10))
    };
    // The first sandbox brings what all share (the Runtime API listener, the SIGCHLD
    // listener); it is counted in the baseline.
    let first = runtime.create(spec()).await.unwrap();
    let answer = runtime
        .invoke(&first.id, InvokeRequest::new("{}"))
        .await
        .unwrap();
    assert!(matches!(answer.result, InvokeResult::Success(_)));
    let baseline = open_fds();
    const SANDBOXES: usize = 10;
    let mut ids = Vec::new();
    for round in 1..=2 {
        for _ in 0..SANDBOXES {
            // Created: its runtime client is connected and waits for an invocation.
            let info = runtime.create(spec()).await.unwrap();
            let answer = runtime
                .invoke(&info.id, InvokeRequest::new("{}"))
                .await
                .unwrap();
            assert!(
                matches!(answer.result, InvokeResult::Success(_)),
                "{answer:?}"
            );
            ids.push(info.id);
        }
        let expected = baseline + 3 * SANDBOXES * round;
        let held = settle_at(expected).await;
        assert_eq!(
            held,
            expected,
            "{} idle sandboxes over the baseline of {baseline}: {:?}",
            ids.len(),
            listing()
        );
    }
    for id in ids.iter().chain([&first.id]) {
        runtime.destroy(id).await.unwrap();
    }
    // Destroyed sandboxes leave none behind: the first one's three go too.
    let left = settle_at(baseline - 3).await;
    assert_eq!(left, baseline - 3, "after destroying all: {:?}", listing());
}
