//! One access record per request (method, path, route, function, status, duration, request
//! id, trace id, client ip) at `info` on the `esb_gateway::access` target, and a `request`
//! span around the request, so that every record written while it is served (errors
//! included) carries its request id, trace id and function.
//!
//! The access record is written when [`TARGET`] is enabled (the binary's `--access-log
//! false` turns the target off); the span is there whatever the filter.

use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tower::{Layer, Service};
use tracing::Instrument;
use tracing::field::Empty;

use super::{BoxFuture, RemoteAddr};
use crate::trace::RequestIds;

/// The `tracing` target of access records.
pub(crate) const TARGET: &str = "esb_gateway::access";

/// The route and function of a request once they are known: the route layer and the Invoke
/// API note them in the request's extensions.
#[derive(Clone, Debug)]
pub(crate) struct AccessNote(Arc<Note>);

#[derive(Debug)]
struct Note {
    span: tracing::Span,
    route: OnceLock<String>,
    function: OnceLock<String>,
}

impl AccessNote {
    /// Notes the route (`METHOD /template`) and the function of `req`, if it has a note.
    pub(crate) fn route<B>(req: &Request<B>, route: Option<&str>, function: &str) {
        if let Some(note) = req.extensions().get::<Self>() {
            if let Some(route) = route {
                let _ = note.0.route.set(route.to_owned());
            }
            if note.0.function.set(function.to_owned()).is_ok() {
                note.0.span.record("function", function);
            }
        }
    }
}

/// Wraps each request in a `request` span and writes its access record.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct AccessLogLayer;

impl<S> Layer<S> for AccessLogLayer {
    type Service = AccessLog<S>;

    fn layer(&self, inner: S) -> Self::Service {
        AccessLog { inner }
    }
}

/// See [`AccessLogLayer`].
#[derive(Clone, Debug)]
pub(crate) struct AccessLog<S> {
    inner: S,
}

/// What the record says of the request, taken before it goes in.
struct Entry {
    method: http::Method,
    path: String,
    request_id: String,
    trace_id: String,
    client_ip: Option<std::net::IpAddr>,
    started: Instant,
    note: AccessNote,
}

impl<S, B, R> Service<Request<B>> for AccessLog<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<R>;
    type Error = S::Error;
    type Future = BoxFuture<Result<Response<R>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let (request_id, trace_id) = req
            .extensions()
            .get::<RequestIds>()
            .map(|ids| {
                (
                    ids.request_id.clone(),
                    ids.trace.to_str().unwrap_or_default().to_owned(),
                )
            })
            .unwrap_or_default();
        // At `error`, so that it is there whenever any record of the request is.
        let span = tracing::error_span!(
            target: "esb_gateway::request",
            "request",
            request_id = %request_id,
            trace_id = %trace_id,
            function = Empty,
        );
        let note = AccessNote(Arc::new(Note {
            span: span.clone(),
            route: OnceLock::new(),
            function: OnceLock::new(),
        }));
        req.extensions_mut().insert(note.clone());
        let entry = tracing::enabled!(target: TARGET, tracing::Level::INFO).then(|| Entry {
            method: req.method().clone(),
            path: req.uri().path().to_owned(),
            request_id,
            trace_id,
            client_ip: req.extensions().get::<RemoteAddr>().map(|addr| addr.0.ip()),
            started: Instant::now(),
            note,
        });
        let response = span.in_scope(|| self.inner.call(req));
        Box::pin(
            async move {
                let response = response.await?;
                if let Some(entry) = entry {
                    entry.write(response.status().as_u16());
                }
                Ok(response)
            }
            .instrument(span),
        )
    }
}

impl Entry {
    fn write(self, status: u16) {
        let duration_ms = self.started.elapsed().as_secs_f64() * 1000.0;
        let note = &self.note.0;
        let route = note.route.get().map(String::as_str);
        let function = note.function.get().map(String::as_str);
        let client_ip = self.client_ip.map(tracing::field::display);
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %self.path,
            route,
            function,
            status,
            duration_ms,
            request_id = %self.request_id,
            trace_id = %self.trace_id,
            client_ip,
            "{} {} {status} {duration_ms:.2} ms",
            self.method,
            self.path,
        );
    }
}
