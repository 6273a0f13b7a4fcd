//! The gateway raises its soft open-file limit to the hard one at start; one whose functions'
//! `min_capacity` cannot fit under the limit says so at start, in one line naming the figures,
//! and keeps answering.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Child, Command};
use std::time::Duration;

use esb_testfn::limits::{hard_limit_above, open_file_limits, under_ulimit};
use esb_testfn::ports::free_port;

/// An `esb-gateway` started under `ulimit <ulimit>` (e.g. `-n 256`) with `min_capacity`
/// sandboxes of the no-op function; killed on drop.
struct Gateway {
    child: Child,
    url: String,
    stderr: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Gateway {
    fn spawn(ulimit: &str, min_capacity: u32, max_connections: u32) -> Self {
        let noop = esb_testfn::build_bin("noop_fn").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let functions = dir.path().join("functions.yml");
        std::fs::write(
            &functions,
            format!(
                "functions:\n  noop:\n    command: [{:?}]\n    timeout: 5\n    scaling: {{ min_capacity: {min_capacity}, max_capacity: {min_capacity} }}\n",
                noop.display().to_string()
            ),
        )
        .unwrap();
        let routing = dir.path().join("routing.yml");
        std::fs::write(
            &routing,
            "routes:\n  - { path: \"/noop\", method: GET, function: noop, auth: none }\n",
        )
        .unwrap();
        let port = free_port().unwrap();
        let stderr = dir.path().join("stderr");
        let mut gateway = Command::new(env!("CARGO_BIN_EXE_esb-gateway"));
        gateway
            .args(["--functions", &functions.display().to_string()])
            .args(["--routing", &routing.display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--max-connections", &max_connections.to_string()])
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING");
        let child = under_ulimit(ulimit, &gateway, &stderr)
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

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// The status of `GET path`, retried while the gateway is not listening yet.
    async fn get(&self, path: &str) -> reqwest::StatusCode {
        let client = reqwest::Client::new();
        for _ in 0..200 {
            if let Ok(response) = client.get(format!("{}{path}", self.url)).send().await {
                return response.status();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("esb-gateway did not answer {path}: {}", self.stderr());
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_capacity_over_the_fd_limit_is_a_startup_warning_and_the_gateway_keeps_answering() {
    // 256 descriptors, 32 of them for connections, 64 kept aside: room for 53 idle sandboxes.
    let gateway = Gateway::spawn("-n 256", 120, 32);
    assert_eq!(gateway.get("/health").await, reqwest::StatusCode::OK);
    // Still answering while the sandboxes that cannot fit fail to start, for want of
    // descriptors, which the failure says (not an invalid spec).
    let mut stderr = gateway.stderr();
    for _ in 0..100 {
        if stderr.contains("sandbox creation failed") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(gateway.get("/health").await, reqwest::StatusCode::OK);
        stderr = gateway.stderr();
    }
    let failure = stderr
        .lines()
        .find(|line| line.contains("sandbox creation failed"))
        .unwrap_or_else(|| panic!("no sandbox creation failed: {stderr}"));
    assert!(
        failure.contains("of function noop (out of file descriptors, processes or memory)")
            && failure.contains("Too many open files"),
        "{failure}"
    );
    assert!(!stderr.contains("invalid sandbox spec"), "{stderr}");
    assert_eq!(gateway.get("/health").await, reqwest::StatusCode::OK);
    assert!(
        stderr.contains(
            "the functions' min_capacity adds up to 120 sandboxes, but the open-file limit (256, hard limit 256) leaves room for about 53 beside --max-connections 32"
        ),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_capacity_that_fits_draws_no_warning() {
    let gateway = Gateway::spawn("-n 256", 4, 32);
    assert_eq!(gateway.get("/health").await, reqwest::StatusCode::OK);
    assert_eq!(gateway.get("/noop").await, reqwest::StatusCode::OK);
    let stderr = gateway.stderr();
    assert!(!stderr.contains("min_capacity adds up"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_soft_open_file_limit_is_raised_to_the_hard_one_at_start() {
    let Some(hard) = hard_limit_above(256) else {
        return;
    };
    let gateway = Gateway::spawn("-Sn 256", 4, 32);
    assert_eq!(gateway.get("/health").await, reqwest::StatusCode::OK);
    assert_eq!(open_file_limits(gateway.child.id()).unwrap(), (hard, hard));
    assert_eq!(gateway.get("/noop").await, reqwest::StatusCode::OK);
    let stderr = gateway.stderr();
    assert!(!stderr.contains("open-file limit"), "{stderr}");
}
