//! An in-process VictoriaLogs JSON-lines endpoint on 127.0.0.1 for the tests and benches.
//!
//! It checks requests as VictoriaLogs does: `POST /insert/jsonline`, the `_stream_fields`,
//! `_msg_field` and `_time_field` query parameters, an optional gzip body, and every line a
//! JSON object with an RFC 3339 time and a message. It can fail the next requests with given
//! statuses, or hang until released.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::io::Read;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};

/// A connection the server speaks HTTP over (plain TCP, or TLS over it).
pub trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Turns an accepted TCP connection into the stream HTTP is served on (`None` drops it).
pub type Wrap = Arc<
    dyn Fn(TcpStream) -> Pin<Box<dyn Future<Output = Option<Box<dyn Io>>> + Send>> + Send + Sync,
>;

/// One request the server answered.
#[derive(Clone, Debug)]
pub struct Received {
    /// Its query parameters.
    pub query: HashMap<String, String>,
    /// Its headers (lowercase names).
    pub headers: HashMap<String, String>,
    /// Whether the body was gzip-compressed.
    pub gzipped: bool,
    /// The decoded lines.
    pub lines: Vec<Value>,
    /// What the server answered.
    pub status: u16,
}

#[derive(Default)]
struct State {
    received: Mutex<Vec<Received>>,
    failures: Mutex<VecDeque<u16>>,
    hanging: Mutex<usize>,
    changed: Notify,
    /// When `true`, requests wait (after being counted in `hanging`) until it turns `false`.
    hang: Option<watch::Sender<bool>>,
    /// Count lines only, without checking them (for benches).
    count_only: bool,
    /// `true` while the server is down: no listener, every connection closed.
    down: Option<watch::Sender<bool>>,
    counted: Mutex<usize>,
}

/// The test server.
#[derive(Clone)]
pub struct VictoriaLogs {
    /// Base URL, e.g. `http://127.0.0.1:1234`.
    pub url: String,
    /// Its address.
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl VictoriaLogs {
    /// A server keeping every request.
    pub async fn start() -> Self {
        Self::start_with(false).await
    }

    /// A server that only counts the lines it receives, without checking them.
    pub async fn start_counting() -> Self {
        Self::start_with(true).await
    }

    async fn start_with(count_only: bool) -> Self {
        let plain: Wrap =
            Arc::new(|stream| Box::pin(async move { Some(Box::new(stream) as Box<dyn Io>) }));
        Self::start_wrapped(count_only, "http", plain).await
    }

    /// A server whose connections go through `wrap` (e.g. a TLS acceptor), at `scheme://`.
    pub async fn start_wrapped(count_only: bool, scheme: &str, wrap: Wrap) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (hang, _) = watch::channel(false);
        let (down, _) = watch::channel(false);
        let state = Arc::new(State {
            hang: Some(hang),
            down: Some(down),
            count_only,
            ..State::default()
        });
        let server_state = state.clone();
        tokio::spawn(async move {
            let Some(down) = &server_state.down else {
                return;
            };
            let mut down_rx = down.subscribe();
            let mut listener = Some(listener);
            loop {
                let Some(current) = listener.take() else {
                    // Down: back once told, on the same address.
                    let _ = down_rx.wait_for(|down| !*down).await;
                    listener = TcpListener::bind(addr).await.ok();
                    continue;
                };
                let accepted = tokio::select! {
                    accepted = current.accept() => accepted,
                    _ = down_rx.wait_for(|down| *down) => continue,
                };
                listener = Some(current);
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let state = server_state.clone();
                let wrap = wrap.clone();
                let mut conn_down = down.subscribe();
                tokio::spawn(async move {
                    let Some(stream) = wrap(stream).await else {
                        return;
                    };
                    let service = service_fn(move |req| handle(state.clone(), req));
                    let serve =
                        http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    // Going down closes every connection, as a restart does.
                    tokio::select! {
                        _ = serve => {}
                        _ = conn_down.wait_for(|down| *down) => {}
                    }
                });
            }
        });
        Self {
            url: format!("{scheme}://{addr}"),
            addr,
            state,
        }
    }

    /// Answers the next requests with these statuses, one each, before accepting again.
    pub fn fail_next(&self, statuses: &[u16]) {
        self.state
            .failures
            .lock()
            .unwrap()
            .extend(statuses.iter().copied());
    }

    /// Makes requests hang (`true`) or releases them (`false`).
    pub fn hang(&self, on: bool) {
        if let Some(hang) = &self.state.hang {
            hang.send_replace(on);
        }
    }

    /// Stops listening and closes every connection (`true`), as a VictoriaLogs being
    /// restarted; listens again on the same address (`false`).
    pub fn down(&self, on: bool) {
        if let Some(down) = &self.state.down {
            down.send_replace(on);
        }
    }

    /// Requests waiting in a hang.
    pub fn hanging(&self) -> usize {
        *self.state.hanging.lock().unwrap()
    }

    /// Every request answered so far.
    pub fn requests(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// The lines of accepted requests, in arrival order.
    pub fn lines(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.status == 200)
            .flat_map(|r| r.lines)
            .collect()
    }

    /// Lines accepted so far (also in counting mode).
    pub fn accepted(&self) -> usize {
        *self.state.counted.lock().unwrap()
    }

    /// Waits until `check` holds, re-checking after each request; panics after 10 s.
    pub async fn wait_until(&self, what: &str, check: impl Fn(&Self) -> bool) {
        let wait = async {
            loop {
                let changed = self.state.changed.notified();
                if check(self) {
                    return;
                }
                changed.await;
            }
        };
        if tokio::time::timeout(Duration::from_secs(10), wait)
            .await
            .is_err()
        {
            panic!(
                "timed out waiting for {what}; requests so far: {:?}",
                self.requests()
            );
        }
    }

    /// Waits until at least `n` lines were accepted and returns them all.
    pub async fn wait_for_lines(&self, n: usize) -> Vec<Value> {
        self.wait_until(&format!("{n} lines"), |s| s.accepted() >= n)
            .await;
        self.lines()
    }
}

fn reply(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text.to_owned())));
    *response.status_mut() = status;
    response
}

async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let (parts, body) = req.into_parts();
    let body = body.collect().await?.to_bytes();
    if let Some(hang) = &state.hang {
        let mut rx = hang.subscribe();
        if *rx.borrow_and_update() {
            *state.hanging.lock().unwrap() += 1;
            state.changed.notify_waiters();
            let _ = rx.wait_for(|on| !on).await;
            *state.hanging.lock().unwrap() -= 1;
        }
    }
    let query: HashMap<String, String> = reqwest::Url::parse(&format!("http://vl{}", parts.uri))
        .map(|url| url.query_pairs().into_owned().collect())
        .unwrap_or_default();
    let headers: HashMap<String, String> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
        .collect();
    let gzipped = headers.get("content-encoding").map(String::as_str) == Some("gzip");

    if parts.uri.path() == "/select/logsql/query" {
        return Ok(select(&state, &query, &body));
    }
    if state.count_only {
        return Ok(count(&state, gzipped, &body));
    }
    let (status, lines, text) = match check(&parts, &query, gzipped, &body) {
        Err(reason) => (StatusCode::BAD_REQUEST, Vec::new(), reason),
        Ok(lines) => match state.failures.lock().unwrap().pop_front() {
            Some(code) => (
                StatusCode::from_u16(code).unwrap(),
                lines,
                "scripted failure".to_owned(),
            ),
            None => (StatusCode::OK, lines, String::new()),
        },
    };
    if status == StatusCode::OK {
        *state.counted.lock().unwrap() += lines.len();
    }
    state.received.lock().unwrap().push(Received {
        query,
        headers,
        gzipped,
        lines,
        status: status.as_u16(),
    });
    state.changed.notify_waiters();
    Ok(reply(status, &text))
}

/// `/select/logsql/query` for the queries the tests use: `*`, or `field:value` /
/// `field:"value"` terms that all must equal (`_msg` is the message); JSON lines as
/// VictoriaLogs answers them (`_msg` for the message).
fn select(state: &State, query: &HashMap<String, String>, body: &[u8]) -> Response<Full<Bytes>> {
    let form: HashMap<String, String> =
        reqwest::Url::parse(&format!("http://vl/?{}", String::from_utf8_lossy(body)))
            .map(|url| url.query_pairs().into_owned().collect())
            .unwrap_or_default();
    let Some(text) = query.get("query").or_else(|| form.get("query")) else {
        return reply(StatusCode::BAD_REQUEST, "missing query");
    };
    let mut terms = Vec::new();
    for term in text.split_whitespace().filter(|t| *t != "*") {
        let Some((field, value)) = term.split_once(':') else {
            return reply(StatusCode::BAD_REQUEST, "unsupported query");
        };
        let field = if field == "_msg" { "message" } else { field };
        terms.push((field.to_owned(), value.trim_matches('"').to_owned()));
    }
    let received = state.received.lock().unwrap();
    let mut out = String::new();
    for line in received
        .iter()
        .filter(|r| r.status == 200)
        .flat_map(|r| &r.lines)
    {
        let matches = terms
            .iter()
            .all(|(field, value)| line.get(field).and_then(Value::as_str) == Some(value.as_str()));
        if matches {
            let mut object = line.as_object().cloned().unwrap_or_default();
            if let Some(message) = object.remove("message") {
                object.insert("_msg".into(), message);
            }
            out.push_str(&Value::Object(object).to_string());
            out.push('\n');
        }
    }
    reply(StatusCode::OK, &out)
}

/// Counting mode: accepts the body and counts its lines, for benches.
fn count(state: &State, gzipped: bool, body: &[u8]) -> Response<Full<Bytes>> {
    let mut text = Vec::new();
    let body = if gzipped {
        if flate2::read::GzDecoder::new(body)
            .read_to_end(&mut text)
            .is_err()
        {
            return reply(StatusCode::BAD_REQUEST, "bad gzip body");
        }
        &text[..]
    } else {
        body
    };
    let lines = body.iter().filter(|&&b| b == b'\n').count();
    *state.counted.lock().unwrap() += lines;
    state.changed.notify_waiters();
    reply(StatusCode::OK, "")
}

/// The request as VictoriaLogs would read it, or why it would refuse it.
fn check(
    parts: &hyper::http::request::Parts,
    query: &HashMap<String, String>,
    gzipped: bool,
    body: &[u8],
) -> Result<Vec<Value>, String> {
    if parts.method != hyper::Method::POST || parts.uri.path() != "/insert/jsonline" {
        return Err(format!("unexpected {} {}", parts.method, parts.uri.path()));
    }
    let msg_field = query.get("_msg_field").ok_or("missing _msg_field")?;
    let time_field = query.get("_time_field").ok_or("missing _time_field")?;
    let stream_fields: Vec<&str> = query
        .get("_stream_fields")
        .ok_or("missing _stream_fields")?
        .split(',')
        .collect();
    let mut text = Vec::new();
    if gzipped {
        flate2::read::GzDecoder::new(body)
            .read_to_end(&mut text)
            .map_err(|err| format!("bad gzip body: {err}"))?;
    } else {
        text = body.to_vec();
    }
    let text = String::from_utf8(text).map_err(|err| format!("body is not UTF-8: {err}"))?;
    let mut lines = Vec::new();
    for (n, line) in text.lines().enumerate().filter(|(_, l)| !l.is_empty()) {
        let value: Value =
            serde_json::from_str(line).map_err(|err| format!("line {n}: not JSON: {err}"))?;
        let object = value
            .as_object()
            .ok_or_else(|| format!("line {n}: not an object"))?;
        let time = object
            .get(time_field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("line {n}: no {time_field}"))?;
        chrono::DateTime::parse_from_rfc3339(time)
            .map_err(|err| format!("line {n}: bad {time_field} {time:?}: {err}"))?;
        object
            .get(msg_field)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("line {n}: no {msg_field}"))?;
        for field in &stream_fields {
            object
                .get(*field)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("line {n}: no stream field {field}"))?;
        }
        lines.push(value);
    }
    Ok(lines)
}
