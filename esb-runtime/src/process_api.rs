//! One Runtime API listener for all the process backend's sandboxes: each connection is
//! handed to the sandbox whose processes hold its client socket (the peer check of
//! [`crate::peer`]), so an idle sandbox costs the gateway no listening socket, only its
//! runtime client's connection. A connection no sandbox holds is closed before a byte is
//! read.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::unistd::Pid;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::SandboxId;
use crate::peer::{GroupPeers, client_socket, group_of_member_holding};
use crate::runtime_api::{Broker, serve_connection};
use crate::sandbox::lock;

/// How long the accept loop waits after a failed accept (out of descriptors and the like).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// How long a connection no sandbox holds waits for new sandboxes to register.
const REGISTER_GRACE: Duration = Duration::from_millis(500);

/// A sandbox that may connect.
struct Member {
    id: SandboxId,
    peers: GroupPeers,
    broker: Broker,
    /// Its open connections.
    connections: AtomicUsize,
    /// Turns true when the sandbox is stopped: its connections close.
    stopped: watch::Sender<bool>,
}

/// The registered sandboxes: those no connection has come from yet (most likely the owners
/// of a new connection, since a runtime client keeps its connection), in the order they
/// registered, and the others.
#[derive(Default)]
struct Registry {
    waiting: Vec<Arc<Member>>,
    connected: Vec<Arc<Member>>,
}

type Members = Arc<Mutex<Registry>>;

/// The shared listener and the sandboxes it serves.
pub(crate) struct SharedApi {
    addr: SocketAddr,
    members: Members,
    /// Counts registrations, for connections that came first.
    registered: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl std::fmt::Debug for SharedApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedApi")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

/// A sandbox's registration with the shared listener: stopping it (or dropping it) forgets
/// the sandbox and closes its connections.
pub(crate) struct Registration {
    members: Members,
    member: Arc<Member>,
}

impl Registration {
    /// Forgets the sandbox and closes its connections.
    pub(crate) fn stop(&self) {
        let mut registry = lock(&self.members);
        let member = &self.member;
        registry.waiting.retain(|m| !Arc::ptr_eq(m, member));
        registry.connected.retain(|m| !Arc::ptr_eq(m, member));
        drop(registry);
        self.member.stopped.send_replace(true);
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.stop();
    }
}

impl SharedApi {
    /// Listens on 127.0.0.1 (an ephemeral port).
    pub(crate) async fn bind() -> std::io::Result<Self> {
        let listener = TcpListener::bind(("127.0.0.1", 0)).await?;
        let addr = listener.local_addr()?;
        let members: Members = Arc::default();
        let (registered, registrations) = watch::channel(0);
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&members), registrations));
        Ok(Self {
            addr,
            members,
            registered,
            accept,
        })
    }

    /// The address sandboxes are given (`AWS_LAMBDA_RUNTIME_API`).
    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Serves the processes of group `pgid` with `broker` until the registration is stopped
    /// or dropped; then its connections close.
    pub(crate) fn register(&self, id: SandboxId, pgid: Pid, broker: Broker) -> Registration {
        let member = Arc::new(Member {
            id,
            peers: GroupPeers::new(pgid),
            broker,
            connections: AtomicUsize::new(0),
            stopped: watch::Sender::new(false),
        });
        lock(&self.members).waiting.push(Arc::clone(&member));
        self.registered.send_modify(|count| *count += 1);
        Registration {
            members: Arc::clone(&self.members),
            member,
        }
    }
}

impl Drop for SharedApi {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, members: Members, registered: watch::Receiver<u64>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                // Out of file descriptors (EMFILE) and the like: wait a little, never spin.
                tracing::warn!(error = %err, "Runtime API accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let members = Arc::clone(&members);
        let registered = registered.clone();
        tokio::spawn(async move {
            let Some(member) = owner_soon(&members, registered, peer, &stream).await else {
                tracing::warn!(%peer, "Runtime API connection from outside the sandboxes refused");
                return;
            };
            serve(stream, &members, member).await;
        });
    }
}

/// The owner of a new connection; when none is known yet, asked again as sandboxes
/// register, for at most [`REGISTER_GRACE`] (a busy host may run a new sandbox's process
/// before its creator has registered it). The client socket is looked up once; a retry asks
/// only the leaders of sandboxes not asked before, and the other processes of every group
/// are asked (one walk of `/proc`) first and once more when the grace runs out, so the cost
/// of a connection does not grow with the number of sandboxes times the retries.
async fn owner_soon(
    members: &Members,
    mut registered: watch::Receiver<u64>,
    peer: SocketAddr,
    stream: &TcpStream,
) -> Option<Arc<Member>> {
    let local = stream.local_addr().ok()?;
    let link = client_socket(peer, local)?;
    let until = tokio::time::Instant::now() + REGISTER_GRACE;
    let mut asked = HashSet::new();
    registered.borrow_and_update();
    if let Some(member) = owner(members, &link, &mut asked, true) {
        return Some(member);
    }
    loop {
        match tokio::time::timeout_at(until, registered.changed()).await {
            Ok(Ok(())) => {
                registered.borrow_and_update();
                if let Some(member) = owner(members, &link, &mut asked, false) {
                    return Some(member);
                }
            }
            _ => {
                asked.clear();
                return owner(members, &link, &mut asked, true);
            }
        }
    }
}

/// Serves one connection of `member` until it closes or the sandbox stops.
async fn serve(stream: TcpStream, members: &Members, member: Arc<Member>) {
    if member.connections.fetch_add(1, Ordering::SeqCst) == 0 {
        let mut registry = lock(members);
        if let Some(at) = registry
            .waiting
            .iter()
            .position(|m| Arc::ptr_eq(m, &member))
        {
            let member = registry.waiting.remove(at);
            registry.connected.push(member);
        }
    }
    let mut stopped = member.stopped.subscribe();
    tokio::select! {
        () = serve_connection(stream, member.broker.clone()) => {}
        _ = stopped.wait_for(|stopped| *stopped) => {}
    }
    member.connections.fetch_sub(1, Ordering::SeqCst);
}

/// The sandbox whose processes hold the client socket `link` (`socket:[inode]`).
///
/// The sandboxes no connection has come from yet are asked first, in the order they
/// started (a runtime client keeps its connection, so a new one is most likely a starting
/// sandbox's: the pool starts few at a time, so few are asked), then the others; each by
/// its leader's open files, skipping those in `asked` (which gains the ones asked now).
/// With `walk_members`, and only when no leader holds the socket, the other processes of
/// all the groups are asked in one walk of `/proc`.
fn owner(
    members: &Members,
    link: &str,
    asked: &mut HashSet<SandboxId>,
    walk_members: bool,
) -> Option<Arc<Member>> {
    let waiting: Vec<Arc<Member>> = lock(members).waiting.clone();
    if let Some(member) = leader_holding(&waiting, link, asked) {
        return Some(member);
    }
    let connected: Vec<Arc<Member>> = lock(members).connected.clone();
    if let Some(member) = leader_holding(&connected, link, asked) {
        return Some(member);
    }
    if !walk_members || (waiting.is_empty() && connected.is_empty()) {
        return None;
    }
    let groups: HashSet<i32> = waiting
        .iter()
        .chain(&connected)
        .map(|m| m.peers.pgid().as_raw())
        .collect();
    let pgid = group_of_member_holding(&groups, link)?;
    waiting
        .into_iter()
        .chain(connected)
        .find(|m| m.peers.pgid() == pgid)
}

/// The first of `candidates` not in `asked` whose leader holds `link`; those asked join `asked`.
fn leader_holding(
    candidates: &[Arc<Member>],
    link: &str,
    asked: &mut HashSet<SandboxId>,
) -> Option<Arc<Member>> {
    candidates
        .iter()
        .find(|member| asked.insert(member.id.clone()) && member.peers.leader_holds(link))
        .cloned()
}
