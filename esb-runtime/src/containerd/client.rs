//! A containerd connection bound to one namespace, and how its errors become ours.

use std::path::Path;

use containerd_client::tonic::metadata::MetadataValue;
use containerd_client::tonic::transport::Channel;
use containerd_client::tonic::{Code, Request, Status};

use crate::Error;

/// The gRPC header containerd reads the namespace from.
const NAMESPACE_HEADER: &str = "containerd-namespace";
/// The gRPC header that puts what a request creates under a lease.
const LEASE_HEADER: &str = "containerd-lease";

/// A channel to containerd and the namespace every request is made in.
#[derive(Clone, Debug)]
pub(crate) struct Ctr {
    pub(crate) channel: Channel,
    namespace: MetadataValue<containerd_client::tonic::metadata::Ascii>,
}

impl Ctr {
    /// Connects to containerd's socket at `address`; requests go to `namespace`.
    pub(crate) async fn connect(address: &Path, namespace: &str) -> crate::Result<Self> {
        let namespace = MetadataValue::try_from(namespace).map_err(|_| {
            Error::Backend(format!(
                "namespace {namespace:?} is not a valid gRPC header value"
            ))
        })?;
        let channel = containerd_client::connect(address).await.map_err(|err| {
            Error::Unavailable(format!(
                "cannot connect to containerd at {}: {err}",
                address.display()
            ))
        })?;
        Ok(Self { channel, namespace })
    }

    /// A request in this namespace.
    pub(crate) fn req<T>(&self, message: T) -> Request<T> {
        let mut request = Request::new(message);
        request
            .metadata_mut()
            .insert(NAMESPACE_HEADER, self.namespace.clone());
        request
    }

    /// A request in this namespace whose new resources belong to `lease`.
    pub(crate) fn leased<T>(&self, message: T, lease: &str) -> Request<T> {
        let mut request = self.req(message);
        if let Ok(lease) = MetadataValue::try_from(lease) {
            request.metadata_mut().insert(LEASE_HEADER, lease);
        }
        request
    }
}

/// The error of a containerd call, naming the operation and the object.
pub(crate) fn status_error(operation: &str, object: &str, status: Status) -> Error {
    match status.code() {
        Code::Unavailable => Error::Unavailable(format!(
            "containerd {operation} {object}: {}",
            status.message()
        )),
        _ => Error::Grpc {
            call: format!("containerd {operation} {object}"),
            source: status,
        },
    }
}

/// Treats NotFound as done: for removals, where a missing object is the goal.
pub(crate) fn ignore_not_found<T>(
    operation: &str,
    object: &str,
    result: Result<T, Status>,
) -> crate::Result<()> {
    match result {
        Ok(_) => Ok(()),
        Err(status) if status.code() == Code::NotFound => Ok(()),
        Err(status) => Err(status_error(operation, object, status)),
    }
}
