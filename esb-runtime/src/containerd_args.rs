//! The containerd set-up both binaries share: one clap argument group (same flags,
//! environment variables and defaults in `esb-agent` and `esb-gateway --runtime containerd`),
//! turned into a [`ContainerdConfig`](crate::containerd::ContainerdConfig).
//!
//! ```
//! use clap::Parser;
//! use esb_runtime::containerd_args::ContainerdArgs;
//!
//! #[derive(Parser)]
//! struct Cli {
//!     #[command(flatten)]
//!     containerd: ContainerdArgs,
//! }
//!
//! let cli = Cli::parse_from(["x", "--env", "dev", "--cni-subnet", "10.88.0.0/16"]);
//! assert_eq!(cli.containerd.namespace(), "esb-dev");
//! assert!(cli.containerd.has_network());
//! ```

use std::net::Ipv4Addr;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

/// How containerd sandboxes are paused and resumed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
#[non_exhaustive]
pub enum FreezerKind {
    /// Write the sandbox's cgroup freezer directly (fastest).
    Cgroup,
    /// Through containerd (Tasks.Pause / Tasks.Resume, i.e. `runc pause` / `runc resume`).
    Tasks,
}

/// The containerd flags of `esb-agent` and `esb-gateway`.
#[derive(Clone, Debug, Args)]
#[non_exhaustive]
pub struct ContainerdArgs {
    /// containerd's socket.
    #[arg(
        long,
        env = "ESB_CONTAINERD_ADDRESS",
        default_value = "/run/containerd/containerd.sock"
    )]
    pub containerd_address: PathBuf,

    /// Environment name: sandboxes live in the containerd namespace `esb-<env>`.
    #[arg(long = "env", env = "ESB_ENV", default_value = "default", value_parser = parse_env_name)]
    pub env_name: String,

    /// containerd snapshotter of images and sandboxes.
    #[arg(long, env = "ESB_SNAPSHOTTER", default_value = "overlayfs")]
    pub snapshotter: String,

    /// Where network namespaces and I/O FIFOs of sandboxes are kept (a tmpfs).
    #[arg(long, env = "ESB_STATE_DIR", default_value = "/run/esb")]
    pub state_dir: PathBuf,

    /// A registry (HOST:PORT) spoken to over plain HTTP; repeatable.
    #[arg(
        long = "insecure-registry",
        env = "ESB_INSECURE_REGISTRIES",
        value_delimiter = ',',
        value_parser = parse_host_port
    )]
    pub insecure_registries: Vec<String>,

    /// Subnet of the CNI bridge sandboxes join (e.g. 10.88.0.0/16); no CNI network when
    /// absent (then `invoke: rie` functions cannot run).
    #[arg(long, env = "ESB_CNI_SUBNET", value_parser = parse_cidr)]
    pub cni_subnet: Option<String>,

    /// Linux bridge of the CNI network.
    #[arg(long, env = "ESB_CNI_BRIDGE", default_value = "esb0")]
    pub cni_bridge: String,

    /// Name of the CNI network (its conflist and lease directory).
    #[arg(long, env = "ESB_CNI_NETWORK", default_value = "esb")]
    pub cni_network: String,

    /// Directory of the CNI plugin binaries (bridge, host-local).
    #[arg(long, env = "ESB_CNI_BIN_DIR", default_value = "/usr/lib/cni")]
    pub cni_bin_dir: PathBuf,

    /// Directory the CNI conflist is written to.
    #[arg(long, env = "ESB_CNI_CONF_DIR", default_value = "/etc/cni/net.d")]
    pub cni_conf_dir: PathBuf,

    /// Where the CNI IP leases are kept.
    #[arg(long, env = "ESB_CNI_DATA_DIR", default_value = "/var/lib/esb/cni")]
    pub cni_data_dir: PathBuf,

    /// How containerd sandboxes are frozen between invocations.
    #[arg(long, env = "ESB_FREEZER", value_enum, default_value_t = FreezerKind::Cgroup)]
    pub freezer: FreezerKind,
}

impl ContainerdArgs {
    /// The containerd namespace of the environment: `esb-<env>`.
    pub fn namespace(&self) -> String {
        format!("esb-{}", self.env_name)
    }

    /// Whether sandboxes join a CNI network (needed by `invoke: rie`).
    pub fn has_network(&self) -> bool {
        self.cni_subnet.is_some()
    }

    /// The backend's config: these settings on top of the defaults.
    #[cfg(feature = "containerd")]
    pub fn config(&self) -> crate::containerd::ContainerdConfig {
        use crate::containerd::{CniConfig, ContainerdConfig, Freezer, RegistryConfig};
        let cni = self.cni_subnet.as_ref().map(|subnet| {
            CniConfig::default()
                .subnet(subnet)
                .bridge(&self.cni_bridge)
                .network(&self.cni_network)
                .bin_dir(&self.cni_bin_dir)
                .conf_dir(&self.cni_conf_dir)
                .data_dir(&self.cni_data_dir)
        });
        let mut config = ContainerdConfig::default()
            .address(&self.containerd_address)
            .env(&self.env_name)
            .state_dir(&self.state_dir)
            .registries(RegistryConfig::default().insecure(self.insecure_registries.clone()))
            .cni(cni)
            .freezer(match self.freezer {
                FreezerKind::Cgroup => Freezer::Cgroup,
                FreezerKind::Tasks => Freezer::Tasks,
            });
        config.snapshotter.clone_from(&self.snapshotter);
        config
    }
}

/// An env name: letters, digits, `-` and `_`, at most 50.
fn parse_env_name(name: &str) -> Result<String, String> {
    let ok = !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if ok {
        Ok(name.to_owned())
    } else {
        Err("letters, digits, '-' and '_' only (at most 50)".into())
    }
}

fn parse_host_port(value: &str) -> Result<String, String> {
    match value.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(value.to_owned())
        }
        _ => Err(format!("{value:?} is not HOST:PORT")),
    }
}

fn parse_cidr(value: &str) -> Result<String, String> {
    let parsed = value.split_once('/').and_then(|(addr, prefix)| {
        Some((addr.parse::<Ipv4Addr>().ok()?, prefix.parse::<u8>().ok()?))
    });
    match parsed {
        Some((_, prefix)) if (8..=30).contains(&prefix) => Ok(value.to_owned()),
        _ => Err(format!(
            "{value:?} is not an IPv4 CIDR such as 10.88.0.0/16 (prefix 8 to 30)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        containerd: ContainerdArgs,
    }

    #[test]
    fn the_flags_are_consistent_and_checked() {
        Cli::command().debug_assert();
        let parse = |args: &[&str]| Cli::try_parse_from([&["x"], args].concat());
        assert!(parse(&["--cni-subnet", "10.88.0.0/31"]).is_err());
        assert!(parse(&["--insecure-registry", "nohost"]).is_err());
        assert!(parse(&["--env", "a/b"]).is_err());
        let cli = parse(&["--insecure-registry", "127.0.0.1:5000,r:1"]).unwrap();
        assert_eq!(
            cli.containerd.insecure_registries,
            ["127.0.0.1:5000", "r:1"]
        );
        assert!(!cli.containerd.has_network());
    }
}
