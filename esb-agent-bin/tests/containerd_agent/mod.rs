//! The `esb-agent` binary on containerd with a CNI network of its own, for the tests that
//! drive it over gRPC.
#![allow(dead_code, clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_testfn::oci;
pub use esb_testfn::ports::free_port;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The token the agents of these tests are started with.
pub const TOKEN: &str = "containerd-agent-token-0123";

/// The CNI set-up of one test: its bridge (also the network's name) and directories.
pub struct Net {
    pub bridge: String,
    pub conf: PathBuf,
    pub data: PathBuf,
    _dir: tempfile::TempDir,
}

impl Net {
    /// A bridge named `prefix` and six random hex digits.
    pub fn new(prefix: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self {
            bridge: format!(
                "{prefix}{}",
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            conf: dir.path().join("net.d"),
            data: dir.path().join("cni"),
            _dir: dir,
        }
    }

    /// Bridge, conflist and lease directory that exist now.
    pub fn left(&self) -> Vec<PathBuf> {
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
pub struct Agent(pub Child, pub u16);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The agent binary on containerd with a CNI network of `subnet` on `net`.
pub fn spawn(address: &Path, env: &str, net: &Net, subnet: &str, extra: &[&str]) -> Agent {
    let port = free_port().unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_esb-agent"))
        .args(["--runtime", "containerd", "--token", TOKEN])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--containerd-address")
        .arg(address)
        .args(["--env", env, "--state-dir", "/run/esb-test"])
        .args(["--insecure-registry", &oci::registry()])
        .args(["--cni-subnet", subnet, "--cni-bridge", &net.bridge])
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

/// A client of `agent`, once it answers.
pub async fn connect(agent: &mut Agent) -> RemoteRuntime {
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

/// Stops `agent` with SIGTERM and asserts a clean exit.
pub async fn stop(agent: &mut Agent) {
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
