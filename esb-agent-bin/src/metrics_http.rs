//! `GET /metrics` and `GET /health` of the agent: its Prometheus text and a probe for
//! orchestrators (Kubernetes httpGet probes), on a plain HTTP listener of its own.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

use crate::guard::GuardedRuntime;

/// Serves `GET /metrics` and `GET /health` (and 404 elsewhere) on `listener`, forever:
/// the agent's own series and, when it ships logs, its log shipper's (`esb_logs_*`); health
/// is 200 while the backend answers (a listing succeeds), 503 otherwise.
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
                    let path = req.uri().path();
                    let response = if path != "/metrics" && path != "/health" {
                        plain(StatusCode::NOT_FOUND, "not found\n".into())
                    } else if req.method() != Method::GET && req.method() != Method::HEAD {
                        plain(
                            StatusCode::METHOD_NOT_ALLOWED,
                            "method not allowed\n".into(),
                        )
                    } else if path == "/health" {
                        if runtime.healthy().await {
                            plain(StatusCode::OK, "{\"status\":\"healthy\"}\n".into())
                        } else {
                            plain(
                                StatusCode::SERVICE_UNAVAILABLE,
                                "{\"status\":\"unhealthy\"}\n".into(),
                            )
                        }
                    } else {
                        let mut text = runtime.render().await;
                        if let Some(shipper) = &shipper {
                            text.push_str(&shipper.metrics().prometheus());
                        }
                        let mut response = plain(StatusCode::OK, text);
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                        response
                    };
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

fn plain(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
