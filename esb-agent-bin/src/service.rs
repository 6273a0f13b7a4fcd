//! `esb.agent.v1.AgentService` over any [`Runtime`].

use std::sync::Arc;

use esb_proto::agent::v1 as pb;
use esb_runtime::logs::LogTail;
use esb_runtime::remote::wire::Invocation;
use esb_runtime::{Runtime, SandboxId, SandboxInfo, SandboxSpec, SandboxState};
use pb::agent_service_server::AgentService;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

/// The agent's gRPC service: each call is one [`Runtime`] operation.
///
/// Runtime errors become a status in one place, [`error_to_status`](esb_runtime::remote::error_to_status) (through `?`); a
/// function's own error is a normal [`pb::InvokeWorkerResponse`]. Messages convert with the
/// `From`/`TryFrom` impls of [`esb_runtime::remote::wire`].
///
/// Invocations come one call each (`InvokeWorker`) or many over one stream
/// (`InvokeStream`, see [`crate::stream`]); both run [`Agent::run_invocation`].
#[derive(Clone)]
pub struct Agent {
    runtime: Arc<dyn Runtime>,
    log_tail: Option<LogTail>,
    /// Turns `true` when the agent stops: invocation streams then take no new invocations.
    stopping: Option<watch::Receiver<bool>>,
}

impl std::fmt::Debug for Agent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Agent")
            .field("backend", &self.runtime.capabilities().backend)
            .finish()
    }
}

impl Agent {
    /// A service over this runtime.
    pub fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self {
            runtime,
            log_tail: None,
            stopping: None,
        }
    }

    /// Ends invocation streams once `stopping` turns `true` (after their invocations in
    /// flight), so that a graceful shutdown does not wait for callers to close them.
    pub fn with_stopping(mut self, stopping: watch::Receiver<bool>) -> Self {
        self.stopping = Some(stopping);
        self
    }

    /// Answers invocations that ask for their log (`log_tail`) from this tail, which the
    /// runtime's log sink must feed ([`LogTail::tee`]).
    pub fn with_log_tail(mut self, tail: LogTail) -> Self {
        self.log_tail = Some(tail);
        self
    }

    /// The runtime it serves.
    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.runtime
    }

    /// Runs one invocation, as `InvokeWorker` and `InvokeStream` receive it.
    pub(crate) async fn run_invocation(
        &self,
        request: pb::InvokeWorkerRequest,
    ) -> Result<pb::InvokeWorkerResponse, Status> {
        let Invocation {
            id,
            request: invoke,
        } = request.into();
        if id.as_str().is_empty() {
            return Err(Status::invalid_argument(
                "InvokeWorker: container_id is empty",
            ));
        }
        let capture = match &self.log_tail {
            Some(tail) if invoke.log_tail => Some(tail.capture(&invoke.request_id)),
            _ => None,
        };
        let mut response = self.runtime.invoke(&id, invoke).await?;
        if let Some(capture) = capture {
            // The runtime wrote END and REPORT before it returned.
            response.log_tail = Some(capture.finish(None).await);
        }
        Ok(response.into())
    }
}

/// Creates a sandbox on a task of its own, so that a caller who goes away mid-way (a
/// cancelled call, a closed connection) cannot cut the create short and leave half a sandbox
/// behind (a network namespace, an IP lease, a reserved slot); a sandbox finished after its
/// caller left is destroyed.
async fn create_detached(
    runtime: &Arc<dyn Runtime>,
    spec: SandboxSpec,
) -> esb_runtime::Result<SandboxInfo> {
    let (done, created) = tokio::sync::oneshot::channel();
    let runtime = runtime.clone();
    tokio::spawn(async move {
        let result = runtime.create(spec).await;
        if let Err(Ok(info)) = done.send(result) {
            tracing::info!(sandbox = %info.id, "the caller left before the create finished; destroying the sandbox");
            if let Err(err) = runtime.destroy(&info.id).await {
                tracing::warn!(sandbox = %info.id, %err, "cannot destroy an unclaimed sandbox");
            }
        }
    });
    created.await.unwrap_or_else(|_| {
        Err(esb_runtime::Error::Backend(
            "the sandbox create task ended without an answer".into(),
        ))
    })
}

/// The sandbox id of a request, which must not be empty.
fn sandbox_id(id: String, rpc: &str) -> Result<SandboxId, Status> {
    if id.is_empty() {
        Err(Status::invalid_argument(format!(
            "{rpc}: container_id is empty"
        )))
    } else {
        Ok(SandboxId::from(id))
    }
}

#[tonic::async_trait]
impl AgentService for Agent {
    async fn ensure_container(
        &self,
        request: Request<pb::EnsureContainerRequest>,
    ) -> Result<Response<pb::EnsureContainerResponse>, Status> {
        let request = request.into_inner();
        if !request.container_id.is_empty() {
            let wanted = SandboxId::from(request.container_id.as_str());
            let existing = self
                .runtime
                .list()
                .await?
                .into_iter()
                .find(|info| info.id == wanted && info.state != SandboxState::Stopped);
            if let Some(info) = existing {
                return Ok(Response::new(pb::EnsureContainerResponse {
                    container: Some(info.into()),
                    created: false,
                }));
            }
        }
        let spec = SandboxSpec::try_from(request)?;
        let function = spec.function_name.clone();
        let info = create_detached(&self.runtime, spec).await?;
        tracing::info!(%function, sandbox = %info.id, "sandbox created");
        Ok(Response::new(pb::EnsureContainerResponse {
            container: Some(info.into()),
            created: true,
        }))
    }

    async fn destroy_container(
        &self,
        request: Request<pb::DestroyContainerRequest>,
    ) -> Result<Response<pb::DestroyContainerResponse>, Status> {
        let id = sandbox_id(request.into_inner().container_id, "DestroyContainer")?;
        self.runtime.destroy(&id).await?;
        tracing::info!(sandbox = %id, "sandbox destroyed");
        Ok(Response::new(pb::DestroyContainerResponse {}))
    }

    async fn pause_container(
        &self,
        request: Request<pb::PauseContainerRequest>,
    ) -> Result<Response<pb::PauseContainerResponse>, Status> {
        let id = sandbox_id(request.into_inner().container_id, "PauseContainer")?;
        self.runtime.pause(&id).await?;
        Ok(Response::new(pb::PauseContainerResponse {}))
    }

    async fn resume_container(
        &self,
        request: Request<pb::ResumeContainerRequest>,
    ) -> Result<Response<pb::ResumeContainerResponse>, Status> {
        let id = sandbox_id(request.into_inner().container_id, "ResumeContainer")?;
        self.runtime.resume(&id).await?;
        Ok(Response::new(pb::ResumeContainerResponse {}))
    }

    async fn list_containers(
        &self,
        request: Request<pb::ListContainersRequest>,
    ) -> Result<Response<pb::ListContainersResponse>, Status> {
        let function = request.into_inner().function_name;
        let containers = self
            .runtime
            .list()
            .await?
            .into_iter()
            .filter(|info| function.is_empty() || info.function_name == function)
            .map(pb::Container::from)
            .collect();
        Ok(Response::new(pb::ListContainersResponse { containers }))
    }

    async fn get_container_metrics(
        &self,
        request: Request<pb::GetContainerMetricsRequest>,
    ) -> Result<Response<pb::GetContainerMetricsResponse>, Status> {
        let id = sandbox_id(request.into_inner().container_id, "GetContainerMetrics")?;
        let metrics = self.runtime.metrics(&id).await?;
        Ok(Response::new(metrics.into()))
    }

    async fn invoke_worker(
        &self,
        request: Request<pb::InvokeWorkerRequest>,
    ) -> Result<Response<pb::InvokeWorkerResponse>, Status> {
        self.run_invocation(request.into_inner())
            .await
            .map(Response::new)
    }

    type InvokeStreamStream = crate::stream::Answers;

    async fn invoke_stream(
        &self,
        request: Request<Streaming<pb::InvokeStreamRequest>>,
    ) -> Result<Response<Self::InvokeStreamStream>, Status> {
        Ok(Response::new(crate::stream::serve(
            self.clone(),
            request.into_inner(),
            self.stopping.clone(),
        )))
    }

    async fn get_capabilities(
        &self,
        _request: Request<pb::GetCapabilitiesRequest>,
    ) -> Result<Response<pb::GetCapabilitiesResponse>, Status> {
        let mut reported: pb::GetCapabilitiesResponse = self.runtime.capabilities().into();
        let capacity = self.runtime.capacity();
        reported.max_sandboxes = capacity.max_sandboxes;
        reported.memory_budget_mb = capacity.memory_budget_mb;
        Ok(Response::new(reported))
    }
}
