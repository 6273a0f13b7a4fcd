//! Network namespaces of sandboxes: made with loopback up, pinned by a bind mount at a path
//! runc can join, and the sandbox's Runtime API listener bound inside before the task starts.
//!
//! Entering a namespace changes the calling thread only, so each operation runs on a fresh
//! thread that ends right after; no pooled (tokio) thread ever leaves the host namespace.

use std::fs::File;
use std::net::TcpListener;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::{MntFlags, MsFlags, mount, umount2};
use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::socket::{
    AddressFamily, MsgFlags, NetlinkAddr, SockFlag, SockProtocol, SockType, recv, sendto, socket,
};

use crate::Error;

/// Where the Runtime API listens inside every sandbox, as on AWS Lambda.
pub(crate) const RUNTIME_API_ADDR: &str = "127.0.0.1:9001";

/// Creates a network namespace pinned at `path`, brings loopback up in it, and returns a
/// listener bound at [`RUNTIME_API_ADDR`] inside it.
pub(crate) async fn create(path: PathBuf) -> crate::Result<tokio::net::TcpListener> {
    let listener = on_fresh_thread(move || {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        File::create(&path)?;
        unshare(CloneFlags::CLONE_NEWNET).map_err(|err| errno("unshare(CLONE_NEWNET)", err))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            &path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|err| errno(&format!("bind mount of {own} on {}", path.display()), err))?;
        loopback_up()?;
        bind_runtime_api()
    })
    .await?;
    tokio::net::TcpListener::from_std(listener).map_err(Error::Io)
}

/// Binds a new Runtime API listener inside the existing namespace at `path` (after a restart).
pub(crate) async fn listen_in(path: PathBuf) -> crate::Result<tokio::net::TcpListener> {
    let listener = on_fresh_thread(move || {
        let ns = File::open(&path)?;
        setns(&ns, CloneFlags::CLONE_NEWNET)
            .map_err(|err| errno(&format!("setns({})", path.display()), err))?;
        bind_runtime_api()
    })
    .await?;
    tokio::net::TcpListener::from_std(listener).map_err(Error::Io)
}

/// Unpins and deletes the namespace at `path`; a missing one is fine.
pub(crate) fn remove(path: &Path) -> crate::Result<()> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::ENOENT | nix::errno::Errno::EINVAL) => {}
        Err(err) => return Err(errno(&format!("umount {}", path.display()), err)),
    }
    match std::fs::remove_file(path) {
        Err(err) if err.kind() != std::io::ErrorKind::NotFound => Err(Error::Io(err)),
        _ => Ok(()),
    }
}

fn bind_runtime_api() -> crate::Result<TcpListener> {
    let listener = TcpListener::bind(RUNTIME_API_ADDR)?;
    listener.set_nonblocking(true)?;
    Ok(listener)
}

async fn on_fresh_thread<T: Send + 'static>(
    work: impl FnOnce() -> crate::Result<T> + Send + 'static,
) -> crate::Result<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("esb-netns".into())
        .spawn(move || {
            let _ = tx.send(work());
        })?;
    rx.await
        .map_err(|_| Error::Backend("the network namespace thread died".into()))?
}

fn errno(what: &str, err: nix::errno::Errno) -> Error {
    Error::Os {
        operation: what.to_owned(),
        source: err.into(),
    }
}

/// Sets IFF_UP on `lo` (always interface 1 in a new namespace) with one rtnetlink request.
fn loopback_up() -> crate::Result<()> {
    const RTM_NEWLINK: u16 = 16;
    const NLM_F_REQUEST: u16 = 0x1;
    const NLM_F_ACK: u16 = 0x4;
    const NLMSG_ERROR: u16 = 2;
    const IFF_UP: u32 = 0x1;
    const LOOPBACK_INDEX: i32 = 1;

    let fd = socket(
        AddressFamily::Netlink,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkRoute,
    )
    .map_err(|err| errno("netlink socket", err))?;
    // struct nlmsghdr (16 bytes) + struct ifinfomsg (16 bytes), native endian.
    let mut msg = Vec::with_capacity(32);
    msg.extend_from_slice(&32u32.to_ne_bytes()); // nlmsg_len
    msg.extend_from_slice(&RTM_NEWLINK.to_ne_bytes()); // nlmsg_type
    msg.extend_from_slice(&(NLM_F_REQUEST | NLM_F_ACK).to_ne_bytes()); // nlmsg_flags
    msg.extend_from_slice(&1u32.to_ne_bytes()); // nlmsg_seq
    msg.extend_from_slice(&0u32.to_ne_bytes()); // nlmsg_pid
    msg.push(libc::AF_UNSPEC as u8); // ifi_family
    msg.push(0); // padding
    msg.extend_from_slice(&0u16.to_ne_bytes()); // ifi_type
    msg.extend_from_slice(&LOOPBACK_INDEX.to_ne_bytes()); // ifi_index
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_flags
    msg.extend_from_slice(&IFF_UP.to_ne_bytes()); // ifi_change
    sendto(
        fd.as_raw_fd(),
        &msg,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .map_err(|err| errno("netlink send", err))?;
    let mut reply = [0u8; 256];
    let n = recv(fd.as_raw_fd(), &mut reply, MsgFlags::empty())
        .map_err(|err| errno("netlink recv", err))?;
    // The ACK is an NLMSG_ERROR whose error code (after the 16-byte header) is 0.
    let field = |at: usize| reply.get(at..at + 4).and_then(|b| b.try_into().ok());
    let kind = reply
        .get(4..6)
        .and_then(|b| b.try_into().ok())
        .map(u16::from_ne_bytes);
    match (n >= 20, kind, field(16).map(i32::from_ne_bytes)) {
        (true, Some(NLMSG_ERROR), Some(0)) => Ok(()),
        (true, Some(NLMSG_ERROR), Some(code)) => {
            Err(errno("setting lo up", nix::errno::Errno::from_raw(-code)))
        }
        _ => Err(Error::Backend(
            "setting lo up: unexpected netlink reply".into(),
        )),
    }
}
