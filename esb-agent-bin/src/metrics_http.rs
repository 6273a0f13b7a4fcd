//! `GET /metrics` of the agent: its Prometheus text on a plain HTTP listener of its own.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::guard::GuardedRuntime;

/// Serves `GET /metrics` (and 404 elsewhere) on `listener`, forever: the agent's own series
/// and, when it ships logs, its log shipper's (`esb_logs_*`).
pub async fn serve_metrics(
    listener: TcpListener,
    runtime: Arc<GuardedRuntime>,
    shipper: Option<esb_logs::LogShipper>,
) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(err) => {
                tracing::warn!(error = %err, "metrics accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let runtime = Arc::clone(&runtime);
        let shipper = shipper.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                let runtime = Arc::clone(&runtime);
                let shipper = shipper.clone();
                async move {
                    let mut response = if req.method() == Method::GET
                        && req.uri().path() == "/metrics"
                    {
                        let mut text = runtime.render().await;
                        if let Some(shipper) = &shipper {
                            text.push_str(&shipper.metrics().prometheus());
                        }
                        let mut response = Response::new(Full::new(Bytes::from(text)));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        response
                    } else {
                        Response::new(Full::new(Bytes::from_static(b"not found\n")))
                    };
                    if req.uri().path() != "/metrics" {
                        *response.status_mut() = StatusCode::NOT_FOUND;
                    } else if req.method() != Method::GET {
                        *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
                    }
                    Ok::<_, Infallible>(response)
                }
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .http1_only()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
