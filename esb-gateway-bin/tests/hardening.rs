//! No lock-out: a low open-file limit clamps `--max-connections`, one client holding many
//! slow connections leaves `/health` and the functions answering everyone else, and 1,000
//! random malformed requests get no 5xx and leave the gateway serving.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command};
use std::time::Duration;

use esb_gateway::Limits;
use esb_testfn::ports::free_port;
use reqwest::StatusCode;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const FUNCTIONS: &str = r#"
functions:
  web:
    command: ["${HTTP_FN}"]
    timeout: 3
"#;

const ROUTING: &str = r#"
routes:
  - { path: "/web/{proxy+}", method: ANY, function: web, auth: none }
"#;

/// Opens `count` connections from `source` (another loopback address than the checks'
/// 127.0.0.1) that send half a request head and stay open; connections the server closed
/// at once are counted out.
async fn slow_connections(target: SocketAddr, source: Ipv4Addr, count: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(count);
    for _ in 0..count {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(SocketAddr::from((source, 0))).unwrap();
        let Ok(mut stream) = socket.connect(target).await else {
            continue;
        };
        if stream
            .write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            .await
            .is_ok()
        {
            held.push(stream);
        }
    }
    held
}

/// GET `url` with a bound on the wait, so that a locked-out server fails the test instead
/// of hanging it.
async fn get(url: &str) -> Result<StatusCode, reqwest::Error> {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_holding_10000_slow_connections_does_not_lock_out_the_others() {
    // The default limits: 10,000 connections, 1,000 per client.
    assert_eq!(Limits::default().max_connections, 10_000);
    let fd = esb_runtime::limits::raise_fd_limit().unwrap();
    let count = 10_000.min(usize::try_from(fd.soft).unwrap().saturating_sub(1_000));
    // A header timeout longer than the checks' wait: the per-client cap is what keeps slots free.
    let mut config = support::config(FUNCTIONS, ROUTING);
    config.limits = Limits::default().header_timeout(Duration::from_secs(120));
    let gateway = support::start(config).await;
    let addr: SocketAddr = gateway.url().trim_start_matches("http://").parse().unwrap();
    let held = slow_connections(addr, Ipv4Addr::new(127, 0, 0, 2), count).await;
    assert!(!held.is_empty());
    assert_eq!(
        get(&format!("{}/health", gateway.url())).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        get(&format!("{}/web/echo", gateway.url())).await.unwrap(),
        StatusCode::OK
    );
    drop(held);
    gateway.shutdown().await;
}

/// An `esb-gateway` started by `sh` under `ulimit -n <limit>`; killed on drop.
struct LimitedGateway {
    child: Child,
    url: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl LimitedGateway {
    fn spawn(fd_limit: u32, max_connections: u32) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let functions = dir.path().join("functions.yml");
        std::fs::write(
            &functions,
            FUNCTIONS.replace("${HTTP_FN}", &support::http_fn().display().to_string()),
        )
        .unwrap();
        let routing = dir.path().join("routing.yml");
        std::fs::write(&routing, ROUTING).unwrap();
        let port = free_port().unwrap();
        let stderr = dir.path().join("stderr");
        let mut gateway = Command::new(env!("CARGO_BIN_EXE_esb-gateway"));
        gateway
            .args(["--functions", &functions.display().to_string()])
            .args(["--routing", &routing.display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--max-connections", &max_connections.to_string()])
            .env("JWT_SECRET_KEY", support::SECRET)
            .env("X_API_KEY", "test-api-key")
            .env("AUTH_USER", "alice")
            .env("AUTH_PASS", "wonderland")
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING");
        let child = esb_testfn::limits::under_ulimit(&format!("-n {fd_limit}"), &gateway, &stderr)
            .unwrap()
            .spawn()
            .unwrap();
        Self {
            child,
            url: format!("http://127.0.0.1:{port}"),
            stderr,
            _dir: dir,
        }
    }

    async fn wait_listening(&self) {
        let addr = self.url.trim_start_matches("http://").to_owned();
        for _ in 0..200 {
            if TcpStream::connect(&addr).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("esb-gateway did not listen: {}", self.stderr());
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for LimitedGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_connections_over_the_fd_limit_is_clamped_and_health_and_sandboxes_keep_working() {
    let gateway = LimitedGateway::spawn(256, 10_000);
    gateway.wait_listening().await;
    let addr: SocketAddr = gateway.url.trim_start_matches("http://").parse().unwrap();
    // More connections than file descriptors, from one client.
    let held = slow_connections(addr, Ipv4Addr::new(127, 0, 0, 3), 400).await;
    assert_eq!(
        get(&format!("{}/health", gateway.url)).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        get(&format!("{}/web/echo", gateway.url)).await.unwrap(),
        StatusCode::OK
    );
    drop(held);
    let stderr = gateway.stderr();
    assert!(
        stderr.contains(
            "--max-connections 10000 is over what the open-file limit allows; clamped to 192"
        ),
        "{stderr}"
    );
}

/// A small deterministic generator (xorshift64*), so that a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % n as u64).unwrap()
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| (self.next() >> 32) as u8).collect()
    }
}

/// One malformed (or odd) HTTP/1.x request.
fn malformed(rng: &mut Rng) -> Vec<u8> {
    let methods = [
        "GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD", "BREW", "G\tET", "", "get",
        "CONNECT", "TRACE", "PRI",
    ];
    let paths = [
        "/health",
        "/web/x",
        "/web/%zz",
        "/web/%00",
        "/web/../../etc/passwd",
        "/2015-03-31/functions/nope/invocations",
        "/2015-03-31/functions//invocations",
        "/2015-03-31/functions/%ff/invocations",
        "/user/auth/v1",
        "/functions",
        "/metrics/pools",
        "*",
        "",
        "http://other/web/x",
        "/\u{7f}",
        "//",
        "/web/x?a=%&b",
    ];
    let versions = [
        "HTTP/1.1",
        "HTTP/1.0",
        "HTTP/2.0",
        "HTTP/1.1x",
        "",
        "HTTP/9.9",
    ];
    let headers = [
        "Host: x",
        "Content-Length: 5",
        "Content-Length: -1",
        "Content-Length: 99999999999999999999",
        "Content-Length: 3\r\nContent-Length: 4",
        "Transfer-Encoding: chunked",
        "Transfer-Encoding: gzip, chunked",
        "Authorization: Bearer not.a.jwt",
        "Authorization: Bearer",
        "X-Amz-Invocation-Type: Nope",
        "X-Amz-Client-Context: !!!",
        "X-Amz-Log-Type: Tail",
        "x-api-key: test-api-key",
        "Expect: 100-continue",
        "Content-Type: application/json",
        ": no-name",
        "No-Colon",
        "Bad Header: x",
        "X-Long: ",
        "Connection: close",
        "Connection: upgrade\r\nUpgrade: websocket",
        "Origin: http://evil",
    ];
    let mut request = Vec::new();
    match rng.below(10) {
        // Random bytes.
        0 => {
            let len = 1 + rng.below(512);
            request = rng.bytes(len);
        }
        // A request line only, maybe without an end.
        1 => request.extend_from_slice(
            format!(
                "{} {} {}",
                rng.pick(&methods),
                rng.pick(&paths),
                rng.pick(&versions)
            )
            .as_bytes(),
        ),
        _ => {
            request.extend_from_slice(
                format!(
                    "{} {} {}\r\n",
                    rng.pick(&methods),
                    rng.pick(&paths),
                    rng.pick(&versions)
                )
                .as_bytes(),
            );
            for _ in 0..rng.below(6) {
                let header = rng.pick(&headers);
                request.extend_from_slice(header.as_bytes());
                if header == "X-Long: " {
                    request.extend(std::iter::repeat_n(b'a', rng.below(100_000)));
                }
                request.extend_from_slice(if rng.below(8) == 0 { b"\n" } else { b"\r\n" });
            }
            if rng.below(10) != 0 {
                request.extend_from_slice(b"\r\n");
            }
            match rng.below(4) {
                0 => {}
                1 => request.extend_from_slice(b"{\"x\": 1}"),
                2 => request.extend_from_slice(b"5\r\nhello\r\nzz\r\n"),
                _ => {
                    let len = rng.below(300);
                    let junk = rng.bytes(len);
                    request.extend_from_slice(&junk);
                }
            }
        }
    }
    request
}

/// Sends `request`, closes the sending side, reads the answer: its status, if any.
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    if stream.write_all(&request).await.is_err() {
        return None;
    }
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        Duration::from_secs(30),
        tokio::io::AsyncReadExt::read_to_end(&mut stream, &mut answer),
    )
    .await;
    assert!(read.is_ok(), "no answer and no close within 30 s");
    let head = String::from_utf8_lossy(&answer[..answer.len().min(64)]).into_owned();
    let status = head.strip_prefix("HTTP/1.")?.get(2..5)?;
    status.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_random_malformed_requests_get_no_5xx_and_the_gateway_keeps_serving() {
    let gateway = support::start(support::config(FUNCTIONS, ROUTING)).await;
    let addr: SocketAddr = gateway.url().trim_start_matches("http://").parse().unwrap();
    // A new seed each run; `ESB_FUZZ_SEED` replays one.
    let seed = std::env::var("ESB_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        })
        | 1;
    eprintln!("malformed-request seed: {seed}");
    let mut rng = Rng(seed);
    let requests: Vec<Vec<u8>> = (0..1_000).map(|_| malformed(&mut rng)).collect();
    let mut answers = Vec::new();
    for batch in requests.chunks(16) {
        let statuses =
            futures::future::join_all(batch.iter().map(|request| exchange(addr, request.clone())))
                .await;
        for (request, status) in batch.iter().zip(statuses) {
            if let Some(status) = status {
                assert!(
                    status < 500,
                    "{status} for {:?} (seed {seed})",
                    String::from_utf8_lossy(&request[..request.len().min(300)])
                );
                answers.push(status);
            }
        }
    }
    assert!(answers.len() > 100, "most malformed requests get an answer");
    assert_eq!(
        get(&format!("{}/health", gateway.url())).await.unwrap(),
        StatusCode::OK
    );
    assert_eq!(
        get(&format!("{}/web/echo", gateway.url())).await.unwrap(),
        StatusCode::OK
    );
    gateway.shutdown().await;
}
