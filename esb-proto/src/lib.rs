//! gRPC API of the ESB agent: package `esb.agent.v1`, service `AgentService`.
//!
//! ```no_run
//! use esb_proto::agent::v1::{agent_service_client::AgentServiceClient, ListContainersRequest};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let mut client = AgentServiceClient::connect("http://127.0.0.1:50051").await?;
//! let list = client.list_containers(ListContainersRequest::default()).await?;
//! println!("{} sandboxes", list.into_inner().containers.len());
//! # Ok(()) }
//! ```

pub use prost;
pub use tonic;

/// Generated code, one module per protobuf package.
pub mod agent {
    /// `esb.agent.v1`.
    pub mod v1 {
        #![allow(missing_docs, clippy::all)]
        tonic::include_proto!("esb.agent.v1");

        /// The encoded file descriptor set, for gRPC reflection.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            tonic::include_file_descriptor_set!("esb_agent_v1_descriptor");
    }
}
