//! Ports for the servers a test or bench starts as separate processes, which must be told their
//! port before they bind it.
//!
//! Asking the kernel for a free port (binding port 0) and closing the socket again is racy: the
//! kernel may hand the same port to the next socket bound to port 0, or to a client connection,
//! before the server binds it. Two tests running side by side then end up talking to each
//! other's servers. [`free_port`] avoids both: its ports lie below the kernel's ephemeral range
//! (32768 and up on Linux), which the kernel never picks by itself, and it never hands out the
//! same port twice in one process.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::ops::Range;
use std::sync::{Mutex, PoisonError};

/// Where [`free_port`] looks: below the ephemeral range, above the usual fixed service ports.
pub const PORTS: Range<u16> = 20_000..32_000;

/// Ports this process has handed out.
static GIVEN: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A port in [`PORTS`] that nothing listens on now on 127.0.0.1 and that this process has not
/// handed out before, taken from a random start so that separate processes rarely meet. Keep
/// using it for a server that restarts: no other caller in the process gets it.
pub fn free_port() -> std::io::Result<u16> {
    let mut given = GIVEN.lock().unwrap_or_else(PoisonError::into_inner);
    let start = usize::try_from(RandomState::new().hash_one(std::process::id())).unwrap_or(0);
    let port = first_free(PORTS, start, &given).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::AddrInUse,
            format!(
                "no free port on 127.0.0.1 in {}..{}",
                PORTS.start, PORTS.end
            ),
        )
    })?;
    given.insert(port);
    Ok(port)
}

/// The first port of `ports`, going round from offset `start`, that is not in `given` and that
/// a listener can bind on 127.0.0.1 now.
fn first_free(ports: Range<u16>, start: usize, given: &BTreeSet<u16>) -> Option<u16> {
    let span = usize::from(ports.end.saturating_sub(ports.start));
    (0..span)
        .filter_map(|step| u16::try_from(start.wrapping_add(step) % span).ok())
        .map(|offset| ports.start + offset)
        .find(|port| !given.contains(port) && TcpListener::bind(("127.0.0.1", *port)).is_ok())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn ports_are_bindable_outside_the_ephemeral_range_and_never_repeat() {
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(PORTS.contains(&port), "{port} outside {PORTS:?}");
            TcpListener::bind(("127.0.0.1", port)).unwrap();
        }
    }

    #[test]
    fn a_port_something_listens_on_or_already_given_is_skipped() {
        let mut given = BTreeSet::new();
        // Three neighbouring free ports: hold the first, give the second.
        let (held, port) = loop {
            let port = free_port().unwrap();
            if port + 2 < PORTS.end
                && let Ok(held) = TcpListener::bind(("127.0.0.1", port))
                && TcpListener::bind(("127.0.0.1", port + 1)).is_ok()
                && TcpListener::bind(("127.0.0.1", port + 2)).is_ok()
            {
                break (held, port);
            }
        };
        given.insert(port + 1);
        assert_eq!(first_free(port..port + 3, 0, &given), Some(port + 2));
        assert_eq!(first_free(port..port + 2, 0, &given), None);
        drop(held);
        assert_eq!(first_free(port..port + 3, 0, &given), Some(port));
    }
}
