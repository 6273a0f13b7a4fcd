//! What an idle process sandbox costs the process that runs it in file descriptors: at most
//! three (its runtime client's Runtime API connection, its stdout and its stderr, nothing
//! else: no listener, no pidfd, no /proc file kept open), so that
//! thousands of sandboxes fit under an ordinary open-file limit.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::{InvokeRequest, InvokeResult, Runtime, SandboxSpec};

/// Open descriptors of this process.
fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_process_sandbox_holds_at_most_three_descriptors() {
    // A runtime client on one keep-alive connection (`lambda_runtime`'s pool sometimes keeps
    // a second one open: the client's own, not the sandbox's cost).
    let bin = esb_testfn::build_bin("noop_fn").expect("build noop_fn");
    let runtime =
        ProcessRuntime::new(ProcessConfig::default().log_sink(std::sync::Arc::new(NullLogSink)));
    let spec = || {
        SandboxSpec::new("idle")
            .command([bin.display().to_string()])
            .timeout(Duration::from_secs(10))
    };
    // The first sandbox brings what all share (the Runtime API listener, the SIGCHLD
    // listener); it is counted out.
    let first = runtime.create(spec()).await.unwrap();
    let answer = runtime
        .invoke(&first.id, InvokeRequest::new("{}"))
        .await
        .unwrap();
    assert!(matches!(answer.result, InvokeResult::Success(_)));
    const SANDBOXES: usize = 10;
    let mut ids = Vec::new();
    let mut counts = Vec::new();
    for round in 0..2 {
        for _ in 0..SANDBOXES {
            let info = runtime.create(spec()).await.unwrap();
            // Answered once: its runtime client is connected, then polls again and idles.
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
        // Every client polls again and idles; a descriptor open for a moment (a lookup's
        // netlink socket, a connection being replaced) is not the sandbox's: the least of a
        // few counts is.
        let mut least = usize::MAX;
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            least = least.min(open_fds());
        }
        counts.push(least);
        eprintln!(
            "round {round}: {} sandboxes, {} descriptors",
            ids.len() + 1,
            counts[round]
        );
    }
    // What the second ten added: each one's own descriptors, nothing shared.
    let held = counts[1] - counts[0];
    let listing: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    assert!(
        held <= 3 * SANDBOXES,
        "{SANDBOXES} idle sandboxes hold {held} descriptors ({:.1} each): {listing:?}",
        held as f64 / SANDBOXES as f64
    );
    let before = counts[0];
    for id in ids.iter().chain([&first.id]) {
        runtime.destroy(id).await.unwrap();
    }
    // Destroyed sandboxes leave none behind.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        open_fds() < before,
        "{} descriptors after destroying all, {before} with {} sandboxes",
        open_fds(),
        SANDBOXES + 1
    );
}
