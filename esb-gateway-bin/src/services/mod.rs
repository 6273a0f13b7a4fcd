//! The box's companions: the S3 and DynamoDB services functions are wired to, their flags,
//! the variables every function gets, and the services ESB starts itself.

mod args;
mod env;
mod forward;
mod supervisor;

pub use args::ServiceArgs;
pub use env::{FunctionWiring, under};
pub use supervisor::{ServiceError, Supervisor};

use std::collections::BTreeMap;
use std::net::SocketAddr;

/// The variables every function gets from `config` and a gateway listening on `local`; for
/// sandboxes behind a bridge, starts a forwarder (until `stopped`) per loopback endpoint and
/// points the variables at it.
pub(crate) fn function_env(
    config: &crate::GatewayConfig,
    local: SocketAddr,
    scheme: &str,
    stopped: &tokio::sync::watch::Receiver<bool>,
) -> Result<BTreeMap<String, String>, crate::StartError> {
    let services = &config.functions.services;
    if let Some(warning) = env::key_pair_warning(services) {
        tracing::warn!("{warning}");
    }
    let mut wiring = config.wiring.clone();
    if let Some(host) = wiring.sandbox_host {
        for target in wiring.loopback_authorities(services, local) {
            let at = SocketAddr::new(host, 0);
            let forwarder = forward::start(host, target.clone(), stopped.clone())
                .map_err(|source| crate::StartError::Bind { addr: at, source })?;
            tracing::info!(%target, from = %forwarder, "forwarding for sandboxes");
            wiring = wiring.reachable_at(target, forwarder.to_string());
        }
    }
    Ok(wiring.variables(services, local, scheme))
}
