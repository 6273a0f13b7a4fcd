//! The `esb-agent` binary on containerd (cgroup freezer, the default) keeps answering for
//! sandboxes it has paused: several sandboxes invoked, paused (their cgroups frozen), then
//! each resumed and invoked again; an image reference that is not valid is refused with a
//! message naming it. A create whose caller goes away mid-way leaves nothing behind (no
//! network namespace, no reserved slot). Skips with a printed reason when no containerd is reachable, unless
//! `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

#[path = "../../esb-runtime/tests/support/raw.rs"]
mod raw;

mod containerd_agent;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use esb_runtime::{InvokeRequest, InvokeResult, Runtime, SandboxSpec, SandboxState};
use esb_testfn::oci;
use serde_json::Value;

use containerd_agent::{Net, connect, spawn, stop};

#[tokio::test(flavor = "multi_thread")]
async fn paused_sandboxes_of_the_agent_binary_answer_after_a_resume() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let image = tokio::task::block_in_place(oci::pushed_image);
    let env = format!("ap-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let namespace = format!("esb-{env}");
    let net = Net::new("esbp");
    let mut agent = spawn(
        &address,
        &env,
        &net,
        "10.240.0.0/24",
        &["--reconcile", "remove", "--destroy-on-exit"],
    );
    let remote = connect(&mut agent).await;

    let refused = remote
        .create(SandboxSpec::new("bad-ref").image("Not A/valid:reference"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        refused.contains("\"Not A/valid:reference\" is not valid"),
        "{refused}"
    );

    let spec = SandboxSpec::new("paused")
        .image(image)
        .timeout(Duration::from_secs(10));
    let mut ids = Vec::new();
    for i in 0..4 {
        let sandbox = remote.create(spec.clone()).await.unwrap();
        let response = remote
            .invoke(
                &sandbox.id,
                InvokeRequest::new(format!(r#"{{"round":0,"i":{i}}}"#)),
            )
            .await
            .unwrap();
        assert!(
            matches!(response.result, InvokeResult::Success(_)),
            "{:?}",
            response.result
        );
        remote.pause(&sandbox.id).await.unwrap();
        ids.push(sandbox.id);
    }
    let listed = remote.list().await.unwrap();
    assert_eq!(listed.len(), ids.len());
    assert!(
        listed.iter().all(|info| info.state == SandboxState::Paused),
        "{listed:?}"
    );
    for id in &ids {
        assert!(
            raw::cgroup_frozen(&namespace, id.as_str()),
            "{id} is not frozen"
        );
    }
    // A paused sandbox refuses an invocation until it is resumed (the pool resumes first).
    let refused = remote.invoke(&ids[0], InvokeRequest::new("{}")).await;
    assert!(
        matches!(refused, Err(esb_runtime::Error::Paused(_))),
        "{refused:?}"
    );
    for (i, id) in ids.iter().enumerate() {
        remote.resume(id).await.unwrap();
        assert!(!raw::cgroup_frozen(&namespace, id.as_str()));
        let response = remote
            .invoke(id, InvokeRequest::new(format!(r#"{{"round":1,"i":{i}}}"#)))
            .await
            .unwrap();
        let InvokeResult::Success(body) = &response.result else {
            panic!("{:?}", response.result);
        };
        let answer: Value = serde_json::from_slice(body).unwrap();
        assert_eq!(answer["echo"]["round"], 1);
        assert_eq!(answer["echo"]["i"], i);
        assert!(
            response.init_duration.is_none(),
            "a resumed sandbox is warm"
        );
    }
    drop(remote);
    stop(&mut agent).await;
    assert_eq!(net.left(), Vec::<PathBuf>::new(), "left after a clean stop");
    let raw = raw::Raw::new(&address, &namespace).await;
    for id in &ids {
        assert!(!raw.container_exists(id.as_str()).await, "{id} is left");
        assert!(
            !raw.snapshot_exists(id.as_str()).await,
            "{id}'s snapshot is left"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_create_whose_caller_goes_away_leaves_no_network_namespace_or_slot() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let image = tokio::task::block_in_place(oci::pushed_image);
    let env = format!("ac-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let net = Net::new("esbp");
    // One sandbox at most: a slot still held by the abandoned create would refuse the next.
    let mut agent = spawn(
        &address,
        &env,
        &net,
        "10.241.0.0/24",
        &[
            "--reconcile",
            "remove",
            "--destroy-on-exit",
            "--max-sandboxes",
            "1",
        ],
    );
    let remote = connect(&mut agent).await;
    let spec = SandboxSpec::new("abandoned")
        .image(image)
        .timeout(Duration::from_secs(10));
    // The image pulled once, so that the abandoned create below is quick to reach its netns.
    let warm = remote.create(spec.clone()).await.unwrap();
    remote.destroy(&warm.id).await.unwrap();

    let netns_dir = Path::new("/run/esb-test")
        .join(format!("esb-{env}"))
        .join("netns");
    let entries = || {
        std::fs::read_dir(&netns_dir)
            .map(|dir| dir.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    assert_eq!(entries(), Vec::<PathBuf>::new());
    // The call is dropped as soon as the agent has made the sandbox's network namespace.
    let mut creating = Box::pin(remote.create(spec.clone()));
    let deadline = Instant::now() + Duration::from_secs(30);
    let abandoned = loop {
        tokio::select! {
            created = &mut creating => break created.ok(),
            () = tokio::time::sleep(Duration::from_millis(1)) => {
                if !entries().is_empty() {
                    break None;
                }
                assert!(Instant::now() < deadline, "the create never started");
            }
        }
    };
    drop(creating);
    if let Some(info) = abandoned {
        // It finished before the drop: nothing was abandoned after all.
        remote.destroy(&info.id).await.unwrap();
    }
    // The agent finishes the create and removes the sandbox no one claimed.
    let deadline = Instant::now() + Duration::from_secs(60);
    while !entries().is_empty() || !remote.list().await.unwrap().is_empty() {
        assert!(
            Instant::now() < deadline,
            "left: {:?}, listed: {:?}",
            entries(),
            remote.list().await.unwrap()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // And its slot is free again.
    let next = remote.create(spec).await.unwrap();
    let response = remote
        .invoke(&next.id, InvokeRequest::new(r#"{"after":"abandon"}"#))
        .await
        .unwrap();
    assert!(matches!(response.result, InvokeResult::Success(_)));
    remote.destroy(&next.id).await.unwrap();
    drop(remote);
    stop(&mut agent).await;
    assert_eq!(net.left(), Vec::<PathBuf>::new(), "left after a clean stop");
}
