//! Direct containerd access for tests: what a backend left behind, and containers that are
//! not ESB's. Shared by esb-runtime's and esb-agent's containerd tests.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::path::Path;

use esb_runtime::containerd::containerd_client;

use containerd_client::services::v1::containers_client::ContainersClient;
use containerd_client::services::v1::snapshots::StatSnapshotRequest;
use containerd_client::services::v1::snapshots::snapshots_client::SnapshotsClient;
use containerd_client::services::v1::tasks_client::TasksClient;
use containerd_client::services::v1::{
    Container, CreateContainerRequest, DeleteContainerRequest, GetContainerRequest,
    GetRequest as GetTaskRequest,
};
use containerd_client::tonic::{Code, Request};

/// Task status as containerd reports it.
#[allow(unused_imports)]
pub use containerd_client::types::v1::Status as TaskStatus;

/// A containerd client in one namespace.
pub struct Raw {
    pub channel: containerd_client::tonic::transport::Channel,
    pub namespace: String,
}

impl Raw {
    pub async fn new(address: &Path, namespace: &str) -> Self {
        Self {
            channel: containerd_client::connect(address).await.unwrap(),
            namespace: namespace.to_owned(),
        }
    }

    fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert("containerd-namespace", self.namespace.parse().unwrap());
        request
    }

    /// The task's status, or the gRPC code (`NotFound` when there is no task).
    pub async fn task_status(&self, id: &str) -> Result<i32, Code> {
        TasksClient::new(self.channel.clone())
            .get(self.req(GetTaskRequest {
                container_id: id.into(),
                exec_id: String::new(),
            }))
            .await
            .map(|r| r.into_inner().process.map(|p| p.status).unwrap_or(0))
            .map_err(|s| s.code())
    }

    pub async fn container_exists(&self, id: &str) -> bool {
        match ContainersClient::new(self.channel.clone())
            .get(self.req(GetContainerRequest { id: id.into() }))
            .await
        {
            Ok(_) => true,
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => panic!("get container {id}: {status}"),
        }
    }

    pub async fn snapshot_exists(&self, key: &str) -> bool {
        match SnapshotsClient::new(self.channel.clone())
            .stat(self.req(StatSnapshotRequest {
                snapshotter: "overlayfs".into(),
                key: key.into(),
            }))
            .await
        {
            Ok(_) => true,
            Err(status) if status.code() == Code::NotFound => false,
            Err(status) => panic!("stat snapshot {key}: {status}"),
        }
    }

    /// Creates a container of someone else (no ESB labels) and returns its id.
    pub async fn create_foreign_container(&self) -> String {
        let id = format!(
            "foreign-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let mut container = Container {
            id: id.clone(),
            labels: HashMap::from([("owner".to_owned(), "someone-else".to_owned())]),
            image: "none".into(),
            runtime: Some(containerd_client::services::v1::container::Runtime {
                name: "io.containerd.runc.v2".into(),
                options: None,
            }),
            ..Container::default()
        };
        let mut spec = container.spec.take().unwrap_or_default();
        spec.type_url = "types.containerd.io/opencontainers/runtime-spec/1/Spec".into();
        spec.value = b"{}".to_vec();
        container.spec = Some(spec);
        ContainersClient::new(self.channel.clone())
            .create(self.req(CreateContainerRequest {
                container: Some(container),
            }))
            .await
            .unwrap();
        id
    }

    pub async fn delete_container(&self, id: &str) {
        ContainersClient::new(self.channel.clone())
            .delete(self.req(DeleteContainerRequest { id: id.into() }))
            .await
            .unwrap();
    }
}

/// Whether the kernel reports the cgroup of sandbox `id` (made by the containerd backend in
/// `namespace`) frozen.
pub fn cgroup_frozen(namespace: &str, id: &str) -> bool {
    let root = Path::new("/sys/fs/cgroup");
    if root.join("cgroup.controllers").exists() {
        let events = root.join(format!("esb/{namespace}/{id}/cgroup.events"));
        std::fs::read_to_string(events)
            .unwrap()
            .lines()
            .any(|line| line.trim() == "frozen 1")
    } else {
        let state = root.join(format!("freezer/esb/{namespace}/{id}/freezer.state"));
        std::fs::read_to_string(state).unwrap().trim() == "FROZEN"
    }
}
