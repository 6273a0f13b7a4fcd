//! The named layers of the gateway's tower stack, one job each; [`crate::app`] puts them
//! together.
//!
//! Outermost first: [`request_id`] (ids + trace header), [`access_log`], [`responses`]
//! (status metrics), the embedder's layers, [`answer`] (errors become responses), then the
//! dispatcher of reserved paths and routes (`crate::dispatch`). A routed request goes on
//! through [`cors`] (preflights and CORS headers), [`route`],
//! [`authorize`], [`limit`] (body), [`event`] (request -> invocation -> response), then
//! [`invocations`] (metrics) and [`deadline`] over the invocation service (the pool).

pub(crate) mod access_log;
pub(crate) mod answer;
pub(crate) mod authorize;
pub(crate) mod cors;
pub(crate) mod deadline;
pub(crate) mod event;
pub(crate) mod invocations;
pub(crate) mod limit;
pub(crate) mod request_id;
pub(crate) mod responses;
pub(crate) mod route;

use std::net::SocketAddr;
use std::pin::Pin;

use bytes::Bytes;

/// The body of every answer.
pub type Body = http_body_util::Full<Bytes>;

/// The future of most layers: boxed, as one allocation per layer costs little here.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// The client's address, put in each request's extensions by the server.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RemoteAddr(pub SocketAddr);
