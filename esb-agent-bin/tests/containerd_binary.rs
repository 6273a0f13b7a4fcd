//! The `esb-agent` binary on containerd with the shared containerd flags: an `invoke: rie`
//! image from the local plain-HTTP registry on its CNI network, and the network removed by
//! the last agent that stops cleanly (kept while sandboxes remain). Skips with a printed
//! reason when no containerd is reachable, unless `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

mod containerd_agent;

use std::path::PathBuf;
use std::time::Duration;

use esb_runtime::{InvokeMode, InvokeRequest, InvokeResult, Runtime, SandboxSpec};
use esb_testfn::oci;
use serde_json::Value;

use containerd_agent::{Net, connect, spawn, stop};

#[tokio::test(flavor = "multi_thread")]
async fn the_last_agent_to_stop_removes_the_cni_network_and_an_rie_image_runs_meanwhile() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let image = tokio::task::block_in_place(oci::pushed_rie_image);
    let env = format!("ab-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let net = Net::new("esba");

    // First agent: a sandbox that outlives it (kept for adoption), so the network stays.
    let mut agent = spawn(&address, &env, &net, "10.237.0.0/24", &[]);
    let remote = connect(&mut agent).await;
    let spec = SandboxSpec::new("rie-agent")
        .image(image)
        .invoke_mode(InvokeMode::Rie)
        .timeout(Duration::from_secs(10));
    let sandbox = remote.create(spec).await.unwrap();
    let response = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"hi":1}"#))
        .await
        .unwrap();
    let InvokeResult::Success(body) = &response.result else {
        panic!("{:?}", response.result);
    };
    let answer: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(answer["echo"]["hi"], 1);
    assert!(response.init_duration.is_some());
    drop(remote);
    stop(&mut agent).await;
    assert_eq!(net.left().len(), 3, "a sandbox still uses the network");

    // The next agent removes what the first left and destroys its sandboxes on exit: it is
    // the last user, and a clean stop leaves nothing behind.
    let mut agent = spawn(
        &address,
        &env,
        &net,
        "10.237.0.0/24",
        &["--reconcile", "remove", "--destroy-on-exit"],
    );
    let remote = connect(&mut agent).await;
    assert!(remote.list().await.unwrap().is_empty());
    drop(remote);
    stop(&mut agent).await;
    assert_eq!(net.left(), Vec::<PathBuf>::new(), "left after a clean stop");
}
