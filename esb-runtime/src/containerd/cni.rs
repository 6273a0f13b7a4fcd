//! Optional CNI bridge attachment of a sandbox's network namespace, by running the standard
//! plugins (`bridge` with `host-local` IPAM) as the CNI spec says: config on stdin, `CNI_*`
//! variables in the environment, the result on stdout.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::Error;

/// The bridge network sandboxes join, when they need to reach services.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CniConfig {
    /// Network name (CNI `name`; also names the IPAM lease directory).
    pub network: String,
    /// Linux bridge the sandboxes' veths are attached to.
    pub bridge: String,
    /// IPv4 subnet of the bridge, e.g. `10.88.0.0/16`; the IPAM range is this subnet.
    pub subnet: String,
    /// Directory of the CNI plugin binaries.
    pub bin_dir: PathBuf,
    /// Directory the generated `<network>.conflist` is written to.
    pub conf_dir: PathBuf,
    /// Where `host-local` keeps its IP leases.
    pub data_dir: PathBuf,
    /// Masquerade traffic leaving the subnet (needs iptables).
    pub ip_masq: bool,
}

impl Default for CniConfig {
    fn default() -> Self {
        Self {
            network: "esb".into(),
            bridge: "esb0".into(),
            subnet: "10.88.0.0/16".into(),
            bin_dir: PathBuf::from("/usr/lib/cni"),
            conf_dir: PathBuf::from("/etc/cni/net.d"),
            data_dir: PathBuf::from("/var/lib/esb/cni"),
            ip_masq: true,
        }
    }
}

impl CniConfig {
    /// Sets the network name.
    pub fn network(mut self, network: impl Into<String>) -> Self {
        self.network = network.into();
        self
    }

    /// Sets the Linux bridge.
    pub fn bridge(mut self, bridge: impl Into<String>) -> Self {
        self.bridge = bridge.into();
        self
    }

    /// Sets the IPv4 subnet of the bridge, e.g. `10.88.0.0/16`.
    pub fn subnet(mut self, subnet: impl Into<String>) -> Self {
        self.subnet = subnet.into();
        self
    }

    /// Sets the directory of the CNI plugin binaries.
    pub fn bin_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bin_dir = dir.into();
        self
    }

    /// Sets the directory the generated conflist is written to.
    pub fn conf_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.conf_dir = dir.into();
        self
    }

    /// Sets where IP leases are kept.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = dir.into();
        self
    }

    /// Sets whether traffic leaving the subnet is masqueraded.
    pub fn ip_masq(mut self, masquerade: bool) -> Self {
        self.ip_masq = masquerade;
        self
    }
}

/// Name of the interface inside each sandbox.
const IFNAME: &str = "eth0";
const CNI_VERSION: &str = "1.0.0";

/// A checked CNI setup.
#[derive(Clone, Debug)]
pub(crate) struct Cni {
    config: CniConfig,
    list: Value,
    /// The bridge is ESB's to remove: absent at start, or left by an earlier ESB of this
    /// network (whose lease directory was there).
    owns_bridge: bool,
}

/// What [`ContainerdRuntime::release_network`](super::ContainerdRuntime::release_network)
/// did with the CNI network.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NetworkRelease {
    /// No CNI network is configured.
    None,
    /// Sandboxes (of this or another process) still hold leases: everything is kept.
    InUse {
        /// The leases left.
        leases: usize,
    },
    /// The conflist and lease directory were removed, and the bridge unless it predates ESB.
    Removed {
        /// The bridge was removed too (false: it existed before ESB used it, and is kept).
        bridge: bool,
    },
}

/// Parses `a.b.c.d/n` with a usable prefix.
fn parse_subnet(subnet: &str) -> Option<(Ipv4Addr, u8)> {
    let (addr, prefix) = subnet.split_once('/')?;
    let addr: Ipv4Addr = addr.parse().ok()?;
    let prefix: u8 = prefix.parse().ok()?;
    (8..=30).contains(&prefix).then_some((addr, prefix))
}

impl Cni {
    /// Validates the config and writes the network list to `conf_dir`.
    pub(crate) fn new(config: CniConfig) -> crate::Result<Self> {
        let invalid = |field: &str, reason: String| {
            Error::Backend(format!("CNI config field {field}: {reason}"))
        };
        if parse_subnet(&config.subnet).is_none() {
            return Err(invalid(
                "subnet",
                format!(
                    "{:?} is not an IPv4 CIDR with a /8../30 prefix",
                    config.subnet
                ),
            ));
        }
        for (field, value) in [("network", &config.network), ("bridge", &config.bridge)] {
            if value.is_empty() || value.len() > 15 || value.contains('/') {
                return Err(invalid(field, format!("{value:?} is not a valid name")));
            }
        }
        if !config.bin_dir.join("bridge").exists() || !config.bin_dir.join("host-local").exists() {
            return Err(invalid(
                "bin_dir",
                format!(
                    "{} has no bridge and host-local plugins",
                    config.bin_dir.display()
                ),
            ));
        }
        let list = json!({
            "cniVersion": CNI_VERSION,
            "name": config.network,
            "plugins": [{
                "type": "bridge",
                "bridge": config.bridge,
                "isGateway": true,
                "ipMasq": config.ip_masq,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": config.subnet }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": config.data_dir,
                },
            }],
        });
        let bridge_existed = Path::new("/sys/class/net").join(&config.bridge).exists();
        let leases_existed = config.data_dir.join(&config.network).exists();
        let owns_bridge = !bridge_existed || leases_existed;
        std::fs::create_dir_all(&config.conf_dir)?;
        std::fs::write(
            config.conf_dir.join(format!("{}.conflist", config.network)),
            serde_json::to_vec_pretty(&list).map_err(|source| Error::Json {
                document: format!("CNI conflist {}", config.network),
                source,
            })?,
        )?;
        Ok(Self {
            config,
            list,
            owns_bridge,
        })
    }

    /// The generated conflist.
    pub(crate) fn conflist(&self) -> PathBuf {
        self.config
            .conf_dir
            .join(format!("{}.conflist", self.config.network))
    }

    /// The IP leases `host-local` holds in this network (files named by an address).
    pub(crate) fn leases(&self) -> usize {
        std::fs::read_dir(self.lease_dir())
            .map(|entries| {
                entries
                    .filter_map(|e| e.ok())
                    .filter(|e| {
                        e.file_name()
                            .to_str()
                            .is_some_and(|n| n.parse::<std::net::IpAddr>().is_ok())
                    })
                    .count()
            })
            .unwrap_or(0)
    }

    /// Removes the conflist, the lease directory and the bridge (when ESB's) once no
    /// sandbox holds a lease.
    pub(crate) async fn release(&self) -> crate::Result<NetworkRelease> {
        let leases = self.leases();
        if leases > 0 {
            return Ok(NetworkRelease::InUse { leases });
        }
        let bridge = Path::new("/sys/class/net").join(&self.config.bridge);
        let remove_bridge = self.owns_bridge && bridge.exists();
        if remove_bridge {
            let output = tokio::process::Command::new("ip")
                .args([
                    "link",
                    "delete",
                    "dev",
                    &self.config.bridge,
                    "type",
                    "bridge",
                ])
                .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
                .stdin(Stdio::null())
                .output()
                .await
                .map_err(|source| Error::Os {
                    operation: format!("ip link delete {}", self.config.bridge),
                    source,
                })?;
            if !output.status.success() && bridge.exists() {
                return Err(Error::Backend(format!(
                    "cannot delete bridge {}: {}",
                    self.config.bridge,
                    String::from_utf8_lossy(&output.stderr).trim()
                )));
            }
        }
        for removed in [
            std::fs::remove_file(self.conflist()),
            std::fs::remove_dir_all(self.lease_dir()),
        ] {
            match removed {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::Io(err));
                }
                _ => {}
            }
        }
        Ok(NetworkRelease::Removed {
            bridge: remove_bridge,
        })
    }

    /// The network's name, recorded in a label of each attached container.
    pub(crate) fn network(&self) -> &str {
        &self.config.network
    }

    /// Where the IPAM leases of this network are kept.
    pub(crate) fn lease_dir(&self) -> PathBuf {
        self.config.data_dir.join(&self.config.network)
    }

    /// Attaches the namespace at `netns` and returns the sandbox's IPv4 address.
    pub(crate) async fn add(&self, id: &str, netns: &Path) -> crate::Result<Ipv4Addr> {
        let mut prev: Option<Value> = None;
        for plugin in self.plugins() {
            let mut conf = plugin.clone();
            conf["cniVersion"] = json!(CNI_VERSION);
            conf["name"] = json!(self.config.network);
            if let Some(prev) = &prev {
                conf["prevResult"] = prev.clone();
            }
            prev = Some(self.exec("ADD", id, netns, &conf).await?);
        }
        let result = prev.unwrap_or(Value::Null);
        result["ips"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|ip| ip["address"].as_str()?.split('/').next()?.parse().ok())
            .next()
            .ok_or_else(|| {
                Error::Backend(format!(
                    "CNI ADD of {id} returned no IPv4 address: {result}"
                ))
            })
    }

    /// Detaches the sandbox and frees its IP; a sandbox never attached is fine.
    pub(crate) async fn del(&self, id: &str, netns: &Path) -> crate::Result<()> {
        for plugin in self.plugins().iter().rev() {
            let mut conf = plugin.clone();
            conf["cniVersion"] = json!(CNI_VERSION);
            conf["name"] = json!(self.config.network);
            self.exec("DEL", id, netns, &conf).await?;
        }
        Ok(())
    }

    fn plugins(&self) -> Vec<Value> {
        self.list["plugins"].as_array().cloned().unwrap_or_default()
    }

    async fn exec(
        &self,
        command: &str,
        id: &str,
        netns: &Path,
        conf: &Value,
    ) -> crate::Result<Value> {
        let plugin = conf["type"].as_str().unwrap_or_default().to_owned();
        let mut child = tokio::process::Command::new(self.config.bin_dir.join(&plugin))
            .env_clear()
            .env("CNI_COMMAND", command)
            .env("CNI_CONTAINERID", id)
            .env("CNI_NETNS", netns)
            .env("CNI_IFNAME", IFNAME)
            .env("CNI_PATH", &self.config.bin_dir)
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| Error::Os {
                operation: format!("CNI plugin {plugin}"),
                source,
            })?;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(conf.to_string().as_bytes()).await?;
        }
        let output = child.wait_with_output().await?;
        if !output.status.success() {
            return Err(Error::Backend(format!(
                "CNI {command} of {id} with {plugin} failed: {} {}",
                String::from_utf8_lossy(&output.stdout).trim(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        if output.stdout.is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_slice(&output.stdout).map_err(|source| Error::Json {
            document: format!("CNI {command} of {id}: {plugin} printed bad JSON"),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subnets_are_checked() {
        assert_eq!(
            parse_subnet("10.88.0.0/16"),
            Some((Ipv4Addr::new(10, 88, 0, 0), 16))
        );
        assert_eq!(parse_subnet("10.88.0.0/31"), None);
        assert_eq!(parse_subnet("10.88.0/16"), None);
        assert_eq!(parse_subnet("fd00::/64"), None);
    }
}
