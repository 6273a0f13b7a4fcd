//! No lock-out: a low open-file limit clamps `--max-connections`, and one client holding many
//! slow connections leaves `/health` and the functions answering everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use esb_gateway::Limits;
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
async fn one_client_holding_2000_slow_connections_does_not_lock_out_the_others() {
    let limits = Limits::default().max_connections(1_000);
    let mut config = support::config(FUNCTIONS, ROUTING);
    config.limits = limits;
    let gateway = support::start(config).await;
    let addr: SocketAddr = gateway.url().trim_start_matches("http://").parse().unwrap();
    let held = slow_connections(addr, Ipv4Addr::new(127, 0, 0, 2), 2_000).await;
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
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let stderr = dir.path().join("stderr");
        let child = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "ulimit -n {fd_limit} && exec \"$0\" \"$@\" 2>{}",
                stderr.display()
            ))
            .arg(env!("CARGO_BIN_EXE_esb-gateway"))
            .args(["--functions", &functions.display().to_string()])
            .args(["--routing", &routing.display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--max-connections", &max_connections.to_string()])
            .env("JWT_SECRET_KEY", support::SECRET)
            .env("X_API_KEY", "test-api-key")
            .env("AUTH_USER", "alice")
            .env("AUTH_PASS", "wonderland")
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING")
            .stdout(Stdio::null())
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
