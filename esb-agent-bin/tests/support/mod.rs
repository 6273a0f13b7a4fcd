//! Shared helpers of the agent's integration tests: an in-process agent on 127.0.0.1.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use esb_agent::{BearerAuth, ServeOptions};
use esb_runtime::SandboxSpec;
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The token the test agents require.
pub const TOKEN: &str = "test-token-0123456789";

/// An agent serving a process runtime on an ephemeral loopback port.
pub struct TestAgent {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<(), esb_agent::Error>>>,
}

impl TestAgent {
    /// Starts an agent that requires [`TOKEN`].
    pub async fn start() -> Self {
        Self::start_with(ServeOptions::new(BearerAuth::token(TOKEN))).await
    }

    /// Starts an agent with these options.
    pub async fn start_with(options: ServeOptions) -> Self {
        let runtime = Arc::new(ProcessRuntime::new(
            ProcessConfig::default().log_sink(Arc::new(NullLogSink)),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(esb_agent::serve(runtime, options, listener, async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A remote runtime of this agent with the right token.
    pub async fn remote(&self) -> RemoteRuntime {
        RemoteRuntime::connect(RemoteConfig::new(self.url()).token(TOKEN))
            .await
            .unwrap()
    }

    /// Asks the agent to stop, without waiting for it (see [`TestAgent::stop`]).
    pub fn ask_to_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Asks the agent to stop and waits for it.
    pub async fn stop(mut self) {
        self.ask_to_stop();
        if let Some(task) = self.task.take() {
            tokio::time::timeout(Duration::from_secs(10), task)
                .await
                .expect("agent stops")
                .unwrap()
                .unwrap();
        }
    }
}

/// A spec running the esb-testfn function.
pub fn testfn(name: &str) -> SandboxSpec {
    let binary = esb_testfn::binary().expect("esb-testfn builds");
    SandboxSpec::new(name).command([binary.display().to_string()])
}
