//! TCP forwarders that make loopback endpoints reachable from containerd sandboxes: bound
//! on the host's address on the sandboxes' bridge (with `IP_FREEBIND`, so they can be bound
//! before the bridge exists), each passing connections on to one loopback `host:port`.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::OwnedFd;

use nix::sys::socket::{
    AddressFamily, Backlog, SockFlag, SockType, SockaddrStorage, bind, listen, setsockopt, socket,
    sockopt,
};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

/// Whether `host` (as an endpoint writes it) is this machine's loopback: sandboxes in their
/// own network namespace cannot reach it.
pub(crate) fn is_loopback(host: &str) -> bool {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.eq_ignore_ascii_case("localhost")
        || bare
            .parse::<IpAddr>()
            .is_ok_and(|ip| ip.is_loopback() || ip.is_unspecified())
}

/// Listens on `host`:<ephemeral> and forwards every connection to `target` (`host:port`)
/// until `stopped`; returns the address it listens on.
pub(crate) fn start(
    host: IpAddr,
    target: String,
    mut stopped: watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::from_std(bind_free(SocketAddr::new(host, 0))?)?;
    let local = listener.local_addr()?;
    tokio::spawn(async move {
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((mut inbound, _)) = accepted else { continue };
                    let target = target.clone();
                    tokio::spawn(async move {
                        // A refused target closes the sandbox's connection: it sees an error.
                        if let Ok(mut outbound) = TcpStream::connect(target.as_str()).await {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
                _ = stopped.changed() => return,
            }
        }
    });
    Ok(local)
}

/// A non-blocking listening socket on `addr`, bound even when no interface has that
/// address yet.
fn bind_free(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd: OwnedFd = socket(
        family,
        SockType::Stream,
        SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    setsockopt(&fd, sockopt::IpFreebind, &true)?;
    setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    bind(
        std::os::fd::AsRawFd::as_raw_fd(&fd),
        &SockaddrStorage::from(addr),
    )?;
    listen(&fd, Backlog::new(1024).unwrap_or(Backlog::MAXCONN))?;
    Ok(std::net::TcpListener::from(fd))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[test]
    fn loopback_hosts_are_recognised() {
        for host in ["localhost", "127.0.0.1", "127.3.4.5", "[::1]", "0.0.0.0"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.1", "example.com", "[fd00::1]"] {
            assert!(!is_loopback(host), "{host}");
        }
    }

    #[tokio::test]
    async fn a_forwarder_passes_bytes_both_ways_and_stops() {
        let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let target = echo.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut conn, _) = echo.accept().await.unwrap();
            let mut buf = [0u8; 5];
            conn.read_exact(&mut buf).await.unwrap();
            conn.write_all(&buf).await.unwrap();
        });
        let (stop, stopped) = watch::channel(false);
        // 127.0.0.2 is on no interface's list as such, which FREEBIND does not mind.
        let local = start("127.0.0.2".parse().unwrap(), target, stopped).unwrap();
        let mut conn = TcpStream::connect(local).await.unwrap();
        conn.write_all(b"hello").await.unwrap();
        let mut buf = [0u8; 5];
        conn.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hello");
        stop.send(true).unwrap();
        for _ in 0..100 {
            if TcpStream::connect(local).await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        panic!("the forwarder still listens after stop");
    }
}
