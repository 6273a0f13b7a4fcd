//! Several hosts on one machine: agents each in a network namespace of its own with its own
//! address (veth pairs on a bridge made for the test), a dnsmasq answering their name, and
//! gateways run with that dnsmasq as their resolver (a bind-mounted resolv.conf in a mount
//! namespace of their own). Everything is removed when the [`Hosts`] is dropped.

#![allow(dead_code)]

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The agents' bearer token.
pub const TOKEN: &str = "hosts-agent-token-0123456789";
/// The agents' port.
pub const AGENT_PORT: u16 = 50051;
/// The name dnsmasq answers with the agents' addresses.
pub const NAME: &str = "agents.esb-hosts.test";

/// Why the test cannot run here, or `None`; under `CI=true` a missing piece is a failure.
pub fn unavailable() -> Option<String> {
    let reason = if !nix::unistd::Uid::effective().is_root() {
        Some("needs root (network namespaces, veth, a bridge)".to_owned())
    } else {
        ["/usr/sbin/dnsmasq", "/usr/bin/unshare", "/usr/sbin/ip"]
            .into_iter()
            .find(|tool| !Path::new(tool).exists() && which(tool).is_none())
            .map(|tool| format!("{tool} is missing (apt: dnsmasq-base, util-linux, iproute2)"))
    };
    if let Some(reason) = &reason
        && std::env::var("CI").as_deref() == Ok("true")
    {
        panic!("CI=true but {reason}");
    }
    reason
}

fn which(tool: &str) -> Option<PathBuf> {
    let name = Path::new(tool).file_name()?;
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.exists())
}

fn run(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success(), "ip {}", args.join(" "));
}

/// A child process killed (and reaped) when dropped.
pub struct Proc(pub Child);

impl Proc {
    /// Sends `signal`.
    pub fn signal(&self, signal: nix::sys::signal::Signal) {
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.0.id() as i32), signal);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One agent's host: its namespace, link and process.
pub struct Host {
    pub netns: String,
    pub veth: String,
    pub addr: String,
    pub agent: Option<Proc>,
}

impl Host {
    /// `http://ADDR:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}:{AGENT_PORT}", self.addr)
    }

    /// The inode of its network namespace.
    fn netns_inode(&self) -> u64 {
        std::fs::metadata(format!("/run/netns/{}", self.netns))
            .unwrap()
            .ino()
    }
}

/// The bridge, the hosts on it, dnsmasq and the files they use.
pub struct Hosts {
    pub tag: String,
    pub bridge: String,
    prefix: String,
    pub hosts: Vec<Host>,
    /// Which hosts dnsmasq answers with.
    pub in_dns: Vec<usize>,
    pub dir: tempfile::TempDir,
    dnsmasq: Option<Proc>,
}

impl Hosts {
    /// A bridge with `count` agent hosts, all in DNS.
    pub fn new(count: usize) -> Self {
        let seed = std::process::id()
            ^ (std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos());
        let tag = format!("{:04x}", seed & 0xffff);
        let prefix = format!("10.{}.{}", 100 + (seed >> 16) % 100, (seed >> 8) % 250 + 1);
        let mut hosts = Self {
            bridge: format!("eb{tag}"),
            tag,
            prefix,
            hosts: Vec::new(),
            in_dns: Vec::new(),
            dir: tempfile::tempdir().unwrap(),
            dnsmasq: None,
        };
        run(&["link", "add", &hosts.bridge, "type", "bridge"]);
        run(&[
            "addr",
            "add",
            &format!("{}.1/24", hosts.prefix),
            "dev",
            &hosts.bridge,
        ]);
        run(&["link", "set", &hosts.bridge, "up"]);
        for _ in 0..count {
            hosts.add_host();
        }
        hosts.in_dns = (0..count).collect();
        hosts.write_hosts_file();
        std::fs::write(
            hosts.dir.path().join("resolv.conf"),
            format!(
                "nameserver {}.1\noptions timeout:1 attempts:2\n",
                hosts.prefix
            ),
        )
        .unwrap();
        hosts.dnsmasq = Some(Proc(
            Command::new("dnsmasq")
                .args([
                    "--keep-in-foreground",
                    "--conf-file=/dev/null",
                    "--no-resolv",
                    "--no-hosts",
                ])
                .arg(format!("--addn-hosts={}", hosts.hosts_file().display()))
                .arg(format!("--listen-address={}.1", hosts.prefix))
                .args([
                    "--bind-interfaces",
                    "--port=53",
                    "--user=root",
                    "--pid-file=",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap(),
        ));
        hosts
    }

    fn hosts_file(&self) -> PathBuf {
        self.dir.path().join("agents.hosts")
    }

    fn write_hosts_file(&self) {
        let mut file = std::fs::File::create(self.hosts_file()).unwrap();
        for &i in &self.in_dns {
            writeln!(file, "{} {NAME}", self.hosts[i].addr).unwrap();
        }
    }

    /// Makes dnsmasq answer with exactly these hosts (its hosts file, then SIGHUP).
    pub fn set_dns(&mut self, hosts: &[usize]) {
        self.in_dns = hosts.to_vec();
        self.write_hosts_file();
        if let Some(dnsmasq) = &self.dnsmasq {
            dnsmasq.signal(nix::sys::signal::Signal::SIGHUP);
        }
    }

    /// A new host (namespace, veth on the bridge, address); returns its index.
    pub fn add_host(&mut self) -> usize {
        let i = self.hosts.len();
        let netns = format!("esb-{}-{i}", self.tag);
        let veth = format!("ev{}{i}", self.tag);
        let peer = format!("ep{}{i}", self.tag);
        let addr = format!("{}.{}", self.prefix, 10 + i);
        run(&["netns", "add", &netns]);
        // Recorded before the links exist: a failure below still removes the namespace.
        self.hosts.push(Host {
            netns: netns.clone(),
            veth: veth.clone(),
            addr: addr.clone(),
            agent: None,
        });
        run(&["link", "add", &veth, "type", "veth", "peer", "name", &peer]);
        run(&["link", "set", &peer, "netns", &netns]);
        run(&["link", "set", &veth, "master", &self.bridge, "up"]);
        let in_ns = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &netns, "ip"];
            all.extend_from_slice(args);
            run(&all);
        };
        in_ns(&["addr", "add", &format!("{addr}/24"), "dev", &peer]);
        in_ns(&["link", "set", &peer, "up"]);
        in_ns(&["link", "set", "lo", "up"]);
        i
    }

    /// Starts host `i`'s agent (process backend) in its namespace.
    pub fn start_agent(&mut self, i: usize, agent: &Path) {
        let host = &mut self.hosts[i];
        host.agent = Some(Proc(
            Command::new("ip")
                .args(["netns", "exec", &host.netns])
                .arg(agent)
                .args(["--runtime", "process", "--token", TOKEN, "--insecure"])
                .env("RUST_BACKTRACE", "0")
                .args(["--listen", &format!("{}:{AGENT_PORT}", host.addr)])
                .arg("--sandbox-record-dir")
                .arg(self.dir.path().join(format!("record-{i}")))
                .stdout(Stdio::null())
                .stderr(
                    std::fs::File::create(self.dir.path().join(format!("agent-{i}.log"))).unwrap(),
                )
                .spawn()
                .unwrap(),
        ));
    }

    /// Waits until host `i`'s agent accepts connections.
    pub async fn wait_agent(&self, i: usize) {
        let addr = format!("{}:{AGENT_PORT}", self.hosts[i].addr);
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = std::fs::read_to_string(self.dir.path().join(format!("agent-{i}.log")));
        panic!("agent {i} does not listen on {addr}: {log:?}");
    }

    /// Kills host `i`'s agent.
    pub fn kill_agent(&mut self, i: usize) {
        drop(self.hosts[i].agent.take());
    }

    /// Cuts (`false`) or restores host `i`'s link: with it cut, packets are dropped and
    /// TCP hangs.
    pub fn set_link(&self, i: usize, up: bool) {
        run(&[
            "link",
            "set",
            &self.hosts[i].veth,
            if up { "up" } else { "down" },
        ]);
    }

    /// The host whose namespace process `pid` runs in.
    pub fn host_of(&self, pid: u64) -> Option<usize> {
        let link = std::fs::read_link(format!("/proc/{pid}/ns/net")).ok()?;
        let link = link.to_string_lossy();
        let inode: u64 = link
            .strip_prefix("net:[")?
            .strip_suffix(']')?
            .parse()
            .ok()?;
        self.hosts.iter().position(|h| h.netns_inode() == inode)
    }

    /// A command running `program` with this dnsmasq as its resolver: in a mount namespace
    /// of its own, over a bind-mounted resolv.conf (the host's stays as it is).
    pub fn with_resolver(&self, program: &Path) -> Command {
        let mut command = Command::new("unshare");
        command
            .args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$0" /etc/resolv.conf && exec "$@""#)
            .arg(self.dir.path().join("resolv.conf"))
            .arg(program);
        command
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        if std::thread::panicking() {
            // What the gateways and agents said, to explain the failure.
            for entry in std::fs::read_dir(self.dir.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "log") {
                    let text = std::fs::read_to_string(&path).unwrap_or_default();
                    let lines: Vec<&str> = text.lines().collect();
                    let tail = &lines[lines.len().saturating_sub(40)..];
                    eprintln!("--- {}\n{}", path.display(), tail.join("\n"));
                }
            }
        }
        drop(self.dnsmasq.take());
        for host in &mut self.hosts {
            drop(host.agent.take());
            let _ = Command::new("ip")
                .args(["link", "del", &host.veth])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip")
                .args(["netns", "del", &host.netns])
                .stderr(Stdio::null())
                .status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .stderr(Stdio::null())
            .status();
    }
}
