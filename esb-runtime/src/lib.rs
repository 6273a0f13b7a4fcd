//! Lambda sandboxes: the [`Runtime`] trait, the Lambda Runtime API server, and backends.
//!
//! A [`Runtime`] creates sandboxes from a [`SandboxSpec`], invokes them one request at a
//! time, freezes and thaws them, and destroys them. The `process` backend runs each sandbox
//! as a child process polling its own Lambda Runtime API on 127.0.0.1; it needs no root.
//!
//! ```no_run
//! # #[cfg(feature = "process")]
//! # async fn run() -> Result<(), esb_runtime::Error> {
//! use esb_runtime::{InvokeRequest, Runtime, SandboxSpec};
//! use esb_runtime::process::{ProcessConfig, ProcessRuntime};
//!
//! let runtime = ProcessRuntime::new(ProcessConfig::default());
//! let spec = SandboxSpec::new("echo").command(["./target/debug/examples/echo_fn"]);
//! let sandbox = runtime.create(spec).await?;
//! let response = runtime.invoke(&sandbox.id, InvokeRequest::new(r#"{"hello":"world"}"#)).await?;
//! println!("{:?}", response.body());
//! runtime.destroy(&sandbox.id).await?;
//! # Ok(()) }
//! ```
//!
//! Zip functions on managed runtimes (`python3.x`, `nodejsNN.x`, `provided.*`) become a
//! command line and Lambda's environment through [`managed::Managed::prepare`] (feature
//! `managed`, on with `process`).

mod error;
mod invoke;
pub mod logs;
pub mod managed;
mod output;
pub use output::{MAX_LINE_BYTES, SPLIT_MARKER};
pub mod runtime_api;
#[cfg(any(feature = "process", feature = "containerd"))]
mod sandbox;
pub mod shutdown;
mod spec;

#[cfg(feature = "process")]
mod child;
#[cfg(feature = "process")]
pub use child::die_with_parent;
#[cfg(feature = "containerd")]
pub mod containerd;
#[cfg(feature = "cli")]
pub mod containerd_args;
#[cfg(any(feature = "process", feature = "containerd"))]
pub mod limits;
#[cfg(feature = "process")]
mod peer;
#[cfg(feature = "process")]
pub mod process;
#[cfg(feature = "process")]
mod record;
#[cfg(feature = "remote")]
pub mod remote;

/// Makes sure rustls has a process-wide crypto provider, installing `ring` when the
/// program chose none.
///
/// rustls cannot pick a provider by itself once both `ring` and `aws-lc-rs` are compiled
/// in (as happens when a program's dependencies ask for both), and TLS set-up would then
/// panic. A provider the program installed first is kept.
#[cfg(any(feature = "containerd", feature = "remote"))]
pub fn ensure_crypto_provider() {
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        // Losing a race to another thread's install leaves that provider in place: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
}

use std::sync::Arc;

use async_trait::async_trait;

pub use error::{BoxError, Error, Result};
pub use invoke::{FunctionError, InvokeRequest, InvokeResponse, InvokeResult, billed};
pub use logs::{LogLine, LogSink, LogStream};
pub use managed::ManagedRuntime;
#[cfg(any(feature = "process", feature = "containerd"))]
pub use sandbox::{
    DEFAULT_ACCESS_KEY_ID, DEFAULT_SECRET_ACCESS_KEY, FunctionCredentials, LambdaSettings,
};
pub use spec::{
    BindMount, Capabilities, Capacity, InvokeMode, SandboxId, SandboxInfo, SandboxMetrics,
    SandboxSpec, SandboxState,
};

/// Lambda's limit on request and response payloads of synchronous invocations: 6 MB.
pub const MAX_PAYLOAD_BYTES: usize = 6 * 1024 * 1024;

/// A place that runs Lambda sandboxes.
#[async_trait]
pub trait Runtime: Send + Sync + 'static {
    /// Creates and starts a sandbox. Its init runs in the background; the first
    /// [`invoke`](Runtime::invoke) waits for it and reports its duration.
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo>;

    /// Runs one invocation. A sandbox runs one invocation at a time.
    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse>;

    /// Freezes a sandbox: it uses no CPU and answers nothing until resumed.
    async fn pause(&self, id: &SandboxId) -> Result<()>;

    /// Thaws a paused sandbox.
    async fn resume(&self, id: &SandboxId) -> Result<()>;

    /// Stops a sandbox and releases everything it holds. Destroying an unknown id succeeds.
    async fn destroy(&self, id: &SandboxId) -> Result<()>;

    /// The sandboxes this runtime knows.
    async fn list(&self) -> Result<Vec<SandboxInfo>>;

    /// Resource usage of one sandbox.
    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics>;

    /// What this backend can do.
    fn capabilities(&self) -> Capabilities;

    /// A name that tells this runtime from others of a pool (an agent's endpoint).
    fn name(&self) -> String {
        self.capabilities().backend.to_owned()
    }

    /// How much this runtime may hold at once; unlimited unless the backend says otherwise.
    fn capacity(&self) -> Capacity {
        Capacity::default()
    }
}

#[async_trait]
impl<R: Runtime + ?Sized> Runtime for Arc<R> {
    async fn create(&self, spec: SandboxSpec) -> Result<SandboxInfo> {
        (**self).create(spec).await
    }
    async fn invoke(&self, id: &SandboxId, request: InvokeRequest) -> Result<InvokeResponse> {
        (**self).invoke(id, request).await
    }
    async fn pause(&self, id: &SandboxId) -> Result<()> {
        (**self).pause(id).await
    }
    async fn resume(&self, id: &SandboxId) -> Result<()> {
        (**self).resume(id).await
    }
    async fn destroy(&self, id: &SandboxId) -> Result<()> {
        (**self).destroy(id).await
    }
    async fn list(&self) -> Result<Vec<SandboxInfo>> {
        (**self).list().await
    }
    async fn metrics(&self, id: &SandboxId) -> Result<SandboxMetrics> {
        (**self).metrics(id).await
    }
    fn capabilities(&self) -> Capabilities {
        (**self).capabilities()
    }
    fn name(&self) -> String {
        (**self).name()
    }
    fn capacity(&self) -> Capacity {
        (**self).capacity()
    }
}
