//! The process backend's Runtime API listener, out of file descriptors (EMFILE on every
//! accept while connections wait), backs off instead of spinning: it says so in a warning
//! naming the error, this process's CPU stays low, and once descriptors are free again the
//! sandbox still answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write as _;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use esb_runtime::{InvokeRequest, InvokeResult, Runtime, SandboxSpec};
use nix::sys::resource::{Resource, getrlimit, setrlimit};

/// CPU time of this process (all threads), in clock ticks of 10 ms, from its open
/// `/proc/self/stat` (opened before the descriptors run out).
fn cpu_ticks(file: &std::fs::File) -> u64 {
    use std::os::unix::fs::FileExt;
    let mut buf = [0u8; 1024];
    let read = file.read_at(&mut buf, 0).unwrap();
    let stat = String::from_utf8_lossy(&buf[..read]);
    let (_, after) = stat.rsplit_once(')').unwrap();
    after
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(|v| v.parse::<u64>().unwrap())
        .sum()
}

/// The log lines this process writes, kept in memory (no descriptor needed).
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// The Runtime API address in the environment of process `pid`.
fn runtime_api_of(pid: u32) -> String {
    let env = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    env.split(|&b| b == 0)
        .find_map(|var| var.strip_prefix(b"AWS_LAMBDA_RUNTIME_API="))
        .map(|api| String::from_utf8(api.to_vec()).unwrap())
        .unwrap()
}

/// A `bash` that opens 8 connections to `api` once a line arrives on its stdin, says
/// `connected`, and holds them.
fn clients_on_signal(api: std::net::SocketAddr) -> Child {
    let script = format!(
        "read -r go; for i in 1 2 3 4 5 6 7 8; do exec {{fd}}<>/dev/tcp/{}/{} || exit 1; done; echo connected; sleep 30",
        api.ip(),
        api.port()
    );
    Command::new("bash")
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("bash")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn accept_backs_off_while_descriptors_are_exhausted() {
    let logs = Captured::default();
    let writer = logs.clone();
    tracing::subscriber::set_global_default(
        tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish(),
    )
    .unwrap();
    let runtime =
        ProcessRuntime::new(ProcessConfig::default().log_sink(std::sync::Arc::new(NullLogSink)));
    let bin = esb_testfn::build_bin("noop_fn").expect("build noop_fn");
    let info = runtime
        .create(
            SandboxSpec::new("backoff")
                .command([bin.display().to_string()])
                .timeout(Duration::from_secs(10)),
        )
        .await
        .unwrap();
    let answer = runtime
        .invoke(&info.id, InvokeRequest::new("{}"))
        .await
        .unwrap();
    assert!(matches!(answer.result, InvokeResult::Success(_)));
    let api: std::net::SocketAddr = runtime_api_of(runtime.pid(&info.id).unwrap())
        .parse()
        .unwrap();
    // Clients of another process (its descriptors are its own), told to connect once this
    // one has run out: were they opened here first, the listener could accept them all
    // before the descriptors ran out, and nothing would be left waiting.
    let mut clients = clients_on_signal(api);
    let stat = std::fs::File::open("/proc/self/stat").unwrap();
    // Every descriptor taken: each accept fails with EMFILE while they wait.
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let open = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
    setrlimit(Resource::RLIMIT_NOFILE, open + 16, hard).unwrap();
    let mut hog = Vec::new();
    while let Ok(file) = std::fs::File::open("/dev/null") {
        hog.push(file);
    }
    clients.stdin.as_mut().unwrap().write_all(b"go\n").unwrap();
    // Read through the pipe already open: no descriptor needed.
    let mut said = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(clients.stdout.as_mut().unwrap()),
        &mut said,
    )
    .unwrap();
    let before = cpu_ticks(&stat);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let ticks = cpu_ticks(&stat) - before;
    let elapsed = started.elapsed();
    let during = logs.text();
    drop(hog);
    setrlimit(Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    clients.kill().unwrap();
    clients.wait().unwrap();
    assert_eq!(
        said, "connected\n",
        "bash could not connect to {api} through /dev/tcp"
    );
    // The accepts did fail for want of descriptors, and said so.
    let warnings: Vec<&str> = during
        .lines()
        .filter(|line| line.contains("Runtime API accept failed"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("WARN") && line.contains("Too many open files")),
        "no EMFILE warning while out of descriptors: {during}"
    );
    // A spinning accept loop burns a whole core (200 ticks in 2 s).
    assert!(
        ticks * 10 < elapsed.as_millis() as u64 / 4,
        "{ticks} ticks of CPU in {elapsed:?} while out of descriptors"
    );
    let answer = runtime
        .invoke(&info.id, InvokeRequest::new("{}"))
        .await
        .unwrap();
    assert!(matches!(answer.result, InvokeResult::Success(_)));
    runtime.destroy(&info.id).await.unwrap();
}
