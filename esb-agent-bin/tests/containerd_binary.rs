//! The `esb-agent` binary on containerd with the shared containerd flags: an `invoke: rie`
//! image from the local plain-HTTP registry on its CNI network, and the network removed by
//! the last agent that stops cleanly (kept while sandboxes remain). Skips with a printed
//! reason when no containerd is reachable, unless `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{InvokeMode, InvokeRequest, InvokeResult, Runtime, SandboxSpec};
use esb_testfn::oci;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

const TOKEN: &str = "containerd-binary-token-0123";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The CNI set-up of one test: its bridge (also the network's name) and directories.
struct Net {
    bridge: String,
    conf: PathBuf,
    data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Net {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            bridge: format!("esba{}", &uuid::Uuid::new_v4().simple().to_string()[..6]),
            conf: dir.path().join("net.d"),
            data: dir.path().join("cni"),
            _dir: dir,
        }
    }

    /// Bridge, conflist and lease directory that exist now.
    fn left(&self) -> Vec<PathBuf> {
        [
            Path::new("/sys/class/net").join(&self.bridge),
            self.conf.join(format!("{}.conflist", self.bridge)),
            self.data.join(&self.bridge),
        ]
        .into_iter()
        .filter(|p| p.exists())
        .collect()
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// The agent binary; killed if the test fails before it stops.
struct Agent(Child, u16);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn(address: &Path, env: &str, net: &Net, extra: &[&str]) -> Agent {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_esb-agent"))
        .args(["--runtime", "containerd", "--token", TOKEN])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--containerd-address")
        .arg(address)
        .args(["--env", env, "--state-dir", "/run/esb-test"])
        .args(["--insecure-registry", &oci::registry()])
        .args(["--cni-subnet", "10.237.0.0/24", "--cni-bridge", &net.bridge])
        .args(["--cni-network", &net.bridge])
        .arg("--cni-conf-dir")
        .arg(&net.conf)
        .arg("--cni-data-dir")
        .arg(&net.data)
        .args(extra)
        .env_remove("ESB_AGENT_TOKEN")
        .env_remove("ESB_DESTROY_ON_EXIT")
        .env_remove("ESB_RECONCILE")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    Agent(child, port)
}

async fn connect(agent: &mut Agent) -> RemoteRuntime {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut config = RemoteConfig::new(format!("http://127.0.0.1:{}", agent.1)).token(TOKEN);
        config.attempts = 1;
        match RemoteRuntime::connect(config).await {
            Ok(remote) => return remote,
            Err(err) if Instant::now() > deadline => panic!("agent never answered: {err}"),
            Err(_) => {
                if let Some(status) = agent.0.try_wait().unwrap() {
                    panic!("the agent exited: {status}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn stop(agent: &mut Agent) {
    kill(
        Pid::from_raw(i32::try_from(agent.0.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = agent.0.try_wait().unwrap() {
            assert!(status.success(), "{status}");
            return;
        }
        assert!(Instant::now() < deadline, "the agent did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_last_agent_to_stop_removes_the_cni_network_and_an_rie_image_runs_meanwhile() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let image = tokio::task::block_in_place(oci::pushed_rie_image);
    let env = format!("ab-{}", &uuid::Uuid::new_v4().simple().to_string()[..6]);
    let net = Net::new();

    // First agent: a sandbox that outlives it (kept for adoption), so the network stays.
    let mut agent = spawn(&address, &env, &net, &[]);
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
        &["--reconcile", "remove", "--destroy-on-exit"],
    );
    let remote = connect(&mut agent).await;
    assert!(remote.list().await.unwrap().is_empty());
    drop(remote);
    stop(&mut agent).await;
    assert_eq!(net.left(), Vec::<PathBuf>::new(), "left after a clean stop");
}
