//! Which local process is at the other end of a Runtime API connection: the process
//! backend's Runtime API answers only the processes of its own sandbox.
//!
//! TCP has no `SO_PEERCRED`; the client's socket is found in `/proc/net/tcp` by its address
//! (its inode), then among the open files of the sandbox's leader, else of the other
//! members of its process group. Checked once per connection: a runtime client keeps its
//! connection, so the warm path pays nothing.

use std::net::{SocketAddr, SocketAddrV4};

use nix::unistd::Pid;

/// Admits connections from the processes of one process group.
#[derive(Clone, Copy, Debug)]
pub(crate) struct GroupPeers {
    pgid: Pid,
}

impl GroupPeers {
    /// Admits the processes of group `pgid`.
    pub(crate) fn new(pgid: Pid) -> Self {
        Self { pgid }
    }

    /// True when the client socket at `peer`, connected to `server`, belongs to a process
    /// of the group.
    #[cfg(test)]
    pub(crate) fn admits(&self, peer: SocketAddr, server: SocketAddr) -> bool {
        client_socket(peer, server)
            .is_some_and(|link| self.leader_holds(&link) || self.members_hold(&link))
    }

    /// True when the group's leader holds the socket `link` (`socket:[inode]`).
    pub(crate) fn leader_holds(&self, link: &str) -> bool {
        holds(self.pgid, link)
    }

    /// True when a member of the group other than its leader holds the socket `link`
    /// (walks `/proc`: the slow path).
    #[cfg(test)]
    pub(crate) fn members_hold(&self, link: &str) -> bool {
        crate::process::group_members(self.pgid)
            .into_iter()
            .filter(|pid| *pid != self.pgid)
            .any(|pid| holds(pid, link))
    }

    /// The group leader (its pgid).
    pub(crate) fn pgid(&self) -> Pid {
        self.pgid
    }
}

/// The process group, among `groups`, of a process other than its group's leader that
/// holds the socket `link`: one walk of `/proc` for all the groups, whatever their number.
pub(crate) fn group_of_member_holding(
    groups: &std::collections::HashSet<i32>,
    link: &str,
) -> Option<Pid> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .find_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name, which is in parentheses.
            let pgid: i32 = stat
                .rsplit_once(')')?
                .1
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()?;
            (pgid != pid && groups.contains(&pgid) && holds(Pid::from_raw(pid), link))
                .then(|| Pid::from_raw(pgid))
        })
}

/// `socket:[inode]`, as `/proc/<pid>/fd` links name it, of the local client socket at
/// `peer` connected to `server`; `None` when no local socket is (IPv4 only).
pub(crate) fn client_socket(peer: SocketAddr, server: SocketAddr) -> Option<String> {
    let (SocketAddr::V4(peer), SocketAddr::V4(server)) = (peer, server) else {
        return None;
    };
    socket_inode(peer, server).map(|inode| format!("socket:[{inode}]"))
}

/// The inode of the IPv4 TCP socket at `local` connected to `remote`: asked of the kernel's
/// socket diagnostics (one hash lookup), else found in `/proc/net/tcp` (which the kernel
/// builds by walking every socket: milliseconds on a busy host).
fn socket_inode(local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    match diag_socket() {
        Some(fd) => diag_inode(&fd, local, remote),
        None => {
            let table = std::fs::read_to_string("/proc/net/tcp").ok()?;
            find_inode(&table, local, remote)
        }
    }
}

/// A netlink socket for socket diagnostics, if the kernel offers them.
fn diag_socket() -> Option<std::os::fd::OwnedFd> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockProtocol, SockType, socket};
    socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .ok()
}

/// `SOCK_DIAG_BY_FAMILY` over netlink for the one TCP socket `local` -> `remote`.
fn diag_inode(fd: &std::os::fd::OwnedFd, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    use std::os::fd::AsRawFd;

    use nix::sys::socket::{MsgFlags, NetlinkAddr, recv, sendto};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const NLM_F_REQUEST: u16 = 1;
    const HEADER: usize = 16;
    // nlmsghdr, then inet_diag_req_v2 with the socket's id (ports and addresses in network
    // order, no interface, no cookie).
    let mut request = Vec::with_capacity(HEADER + 56);
    request.extend_from_slice(&72u32.to_ne_bytes());
    request.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    request.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    request.extend_from_slice(&1u32.to_ne_bytes());
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[2, 6, 0, 0]); // AF_INET, IPPROTO_TCP, no extensions
    request.extend_from_slice(&u32::MAX.to_ne_bytes()); // any state
    request.extend_from_slice(&local.port().to_be_bytes());
    request.extend_from_slice(&remote.port().to_be_bytes());
    request.extend_from_slice(&local.ip().octets());
    request.extend_from_slice(&[0; 12]);
    request.extend_from_slice(&remote.ip().octets());
    request.extend_from_slice(&[0; 12]);
    request.extend_from_slice(&0u32.to_ne_bytes());
    request.extend_from_slice(&[0xff; 8]);
    sendto(
        fd.as_raw_fd(),
        &request,
        &NetlinkAddr::new(0, 0),
        MsgFlags::empty(),
    )
    .ok()?;
    let mut answer = [0u8; 1024];
    let read = recv(fd.as_raw_fd(), &mut answer, MsgFlags::empty()).ok()?;
    let answer = &answer[..read];
    let kind = u16::from_ne_bytes(answer.get(4..6)?.try_into().ok()?);
    if kind != SOCK_DIAG_BY_FAMILY {
        return None; // NLMSG_ERROR: no such socket
    }
    // inet_diag_msg: family, state, timer, retrans, id (48), expires, rqueue, wqueue, uid, inode.
    let msg = answer.get(HEADER..)?;
    let id_local = (msg.get(4..6)?, msg.get(8..12)?);
    let id_remote = (msg.get(6..8)?, msg.get(24..28)?);
    if id_local != (&local.port().to_be_bytes()[..], &local.ip().octets()[..])
        || id_remote != (&remote.port().to_be_bytes()[..], &remote.ip().octets()[..])
    {
        return None;
    }
    let inode = u32::from_ne_bytes(msg.get(68..72)?.try_into().ok()?);
    (inode != 0).then_some(u64::from(inode))
}

/// `/proc/net/tcp`'s spelling of an address: the raw 32-bit value in host order, then the port.
fn spelled(addr: SocketAddrV4) -> String {
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(addr.ip().octets()),
        addr.port()
    )
}

/// The inode of the row of `table` (`/proc/net/tcp`'s format) from `local` to `remote` (a
/// local port may serve connections to several servers; closed rows have inode 0).
fn find_inode(table: &str, local: SocketAddrV4, remote: SocketAddrV4) -> Option<u64> {
    let (local, remote) = (spelled(local), spelled(remote));
    table.lines().skip(1).find_map(|row| {
        // sl local rem st queues tr:when retrnsmt uid timeout inode
        let mut fields = row.split_whitespace();
        let from = fields.nth(1)?;
        let to = fields.next()?;
        if !from.eq_ignore_ascii_case(&local) || !to.eq_ignore_ascii_case(&remote) {
            return None;
        }
        fields.nth(6)?.parse().ok().filter(|&inode| inode != 0)
    })
}

/// True when process `pid` has `link` (`socket:[inode]`) among its open files.
fn holds(pid: Pid, link: &str) -> bool {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return false;
    };
    fds.filter_map(Result::ok)
        .any(|fd| std::fs::read_link(fd.path()).is_ok_and(|target| target.as_os_str() == link))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn a_row_is_found_by_its_local_address() {
        let ip = u32::from_ne_bytes([127, 0, 0, 1]);
        let table = format!(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n   \
             0: {ip:08X}:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 4242 1 0000000000000000 100 0 0 10 0\n   \
             1: {ip:08X}:C350 {ip:08X}:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 777 1 0000000000000000 20 4 30 10 -1\n"
        );
        let addr = |port| SocketAddrV4::new([127, 0, 0, 1].into(), port);
        let any = SocketAddrV4::new([0, 0, 0, 0].into(), 0);
        assert_eq!(find_inode(&table, addr(8080), any), Some(4242));
        assert_eq!(find_inode(&table, addr(50000), addr(8080)), Some(777));
        assert_eq!(find_inode(&table, addr(50000), addr(8081)), None);
        assert_eq!(find_inode(&table, addr(1), any), None);
    }

    #[tokio::test]
    async fn only_the_groups_own_sockets_are_admitted() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, peer) = listener.accept().await.unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
        let at = server.local_addr().unwrap();
        // This process holds the client socket: its own group admits it, pid 1's does not.
        let (SocketAddr::V4(p), SocketAddr::V4(a)) = (peer, at) else {
            panic!("IPv4");
        };
        let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
        let fd = diag_socket().unwrap();
        assert_eq!(diag_inode(&fd, p, a), find_inode(&table, p, a));
        assert!(diag_inode(&fd, p, a).is_some());
        let elsewhere = SocketAddrV4::new([127, 0, 0, 1].into(), 1);
        assert_eq!(diag_inode(&fd, p, elsewhere), None);
        let own = nix::unistd::getpgrp();
        assert!(GroupPeers::new(own).admits(peer, at));
        assert!(!GroupPeers::new(Pid::from_raw(1)).admits(peer, at));
    }
}
