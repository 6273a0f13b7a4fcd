//! The listener: plain or TLS connections, HTTP/1.1 and h2, connection limit, graceful shutdown.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio_rustls::TlsAcceptor;

use tower::{Service, ServiceExt};

use crate::config::Limits;
use crate::layers::Body;
use crate::layers::RemoteAddr;

/// Connections held per client address, so that one client cannot take every slot.
#[derive(Default)]
struct PerClient {
    held: Mutex<HashMap<IpAddr, usize>>,
}

/// One connection counted against its client; uncounted on drop.
struct ClientSlot {
    clients: Arc<PerClient>,
    ip: IpAddr,
}

impl PerClient {
    /// Counts a connection of `ip`, or `None` when it holds `cap` already.
    fn enter(self: &Arc<Self>, ip: IpAddr, cap: usize) -> Option<ClientSlot> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let count = held.entry(ip).or_insert(0);
        if *count >= cap {
            return None;
        }
        *count += 1;
        Some(ClientSlot {
            clients: Arc::clone(self),
            ip,
        })
    }
}

impl Drop for ClientSlot {
    fn drop(&mut self) {
        let mut held = self
            .clients
            .held
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = held.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.ip);
            }
        }
    }
}

/// Waits until the client sent its first byte, at most `timeout`; false when it did not
/// (or the connection failed).
async fn first_byte(stream: &tokio::net::TcpStream, timeout: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(timeout, stream.peek(&mut byte)).await,
        Ok(Ok(n)) if n > 0
    )
}

/// Accepts connections until `shutdown` turns true, then drains in-flight requests.
pub(crate) async fn serve<S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    service: S,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX));
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let clients = Arc::new(PerClient::default());
    let per_client = limits.per_client_cap();
    let head_timeout = limits.header_timeout;
    let graceful = GracefulShutdown::new();
    loop {
        let permit = tokio::select! {
            permit = Arc::clone(&connections).acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
            () = stopped(&mut shutdown) => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: wait a little rather than spin.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = stopped(&mut shutdown) => break,
        };
        let Some(client) = clients.enter(remote.ip(), per_client) else {
            tracing::debug!(%remote, per_client, "client holds its share of connections: closed");
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let stack = service.clone();
        let builder = builder.clone();
        let tls = tls.clone();
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let _client = client;
            // A client that connects and sends nothing holds no slot for long (protocol
            // detection and the TLS handshake wait for its first bytes).
            if !first_byte(&stream, head_timeout).await {
                tracing::debug!(%remote, "no request within the header timeout: closed");
                return;
            }
            let service = service_fn(move |mut req: Request<Incoming>| {
                req.extensions_mut().insert(RemoteAddr(remote));
                stack.clone().oneshot(req)
            });
            let result = match tls {
                None => {
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    watcher.watch(conn.into_owned()).await
                }
                Some(tls) => match tokio::time::timeout(head_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => {
                        let conn = builder.serve_connection(TokioIo::new(stream), service);
                        watcher.watch(conn.into_owned()).await
                    }
                    Ok(Err(err)) => {
                        tracing::debug!(%remote, error = %err, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        tracing::debug!(%remote, "TLS handshake timed out");
                        return;
                    }
                },
            };
            if let Err(err) = result {
                tracing::debug!(%remote, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace = ?limits.shutdown_grace,
            "in-flight requests did not finish in time; closing their connections"
        );
    }
}

/// Completes once the stop flag is set (or its sender is gone).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await.map(|_| ());
}

/// Binds the listener.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, crate::error::StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| crate::error::StartError::Bind { addr, source })
}
