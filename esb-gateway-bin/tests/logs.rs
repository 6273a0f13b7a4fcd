//! Logs of the real binaries: credentials never printed, `https://` VictoriaLogs with a
//! given CA, and function lines shipped by the agent that ran them, with their host.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use support::write;

#[path = "../../esb-logs/tests/support/mod.rs"]
mod victorialogs;
#[path = "../../esb-logs/tests/support/tls.rs"]
mod victorialogs_tls;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use esb_testfn::ports::free_port;
use serde_json::Value;
use victorialogs::VictoriaLogs;

const PASSWORD: &str = "hunter2-never-printed";
const TOKEN: &str = "agent-token-for-tests";

fn gateway_binary() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_esb-gateway"))
}

fn free_addr() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()))
}

/// A URL whose user information carries [`PASSWORD`].
fn with_password(url: &str) -> String {
    url.replacen("://", &format!("://esb:{PASSWORD}@"), 1)
}

/// A binary running with its standard output and error in files.
struct Running {
    child: Child,
    out: PathBuf,
}

impl Running {
    fn spawn(mut command: Command, dir: &Path, name: &str) -> Self {
        let out = dir.join(format!("{name}.out"));
        let file = std::fs::File::create(&out).unwrap();
        let child = command
            .env_remove("VICTORIALOGS_URL")
            .env_remove("ESB_VICTORIALOGS_URL")
            .env("RUST_LOG", "info")
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .unwrap();
        Self { child, out }
    }

    fn wait_listening(&mut self, addr: SocketAddr) {
        let started = Instant::now();
        while std::net::TcpStream::connect(addr).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("exited with {status}: {}", self.output());
            }
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn output(&self) -> String {
        std::fs::read_to_string(&self.out).unwrap_or_default()
    }

    /// SIGTERM, then everything it printed.
    fn stop(mut self) -> String {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(self.child.id()).unwrap());
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let started = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            if started.elapsed() > Duration::from_secs(30) {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        self.output()
    }
}

/// functions.yml and routing.yml of one `esb-testfn` function `logfn` at `/log`.
fn definitions(dir: &Path) -> (String, String) {
    let functions = write(
        dir,
        "functions.yml",
        &format!(
            "functions:\n  logfn: {{ command: [{:?}] }}\n",
            support::testfn().display()
        ),
    );
    let routing = write(
        dir,
        "routing.yml",
        "routes:\n  - { path: \"/log\", method: POST, function: logfn, auth: none }\n",
    );
    (functions, routing)
}

fn gateway(dir: &Path, addr: SocketAddr, extra: &[&str]) -> Command {
    let (functions, routing) = definitions(dir);
    let mut command = Command::new(gateway_binary());
    for var in ["JWT_SECRET_KEY", "X_API_KEY", "AUTH_USER", "AUTH_PASS"] {
        command.env_remove(var);
    }
    command
        .args(["--functions", &functions, "--routing", &routing])
        .args(["--listen", &addr.to_string()])
        .args(extra);
    command
}

fn agent(addr: SocketAddr, extra: &[&str]) -> Command {
    let mut command = Command::new(support::agent_binary());
    command
        .args(["--runtime", "process", "--listen", &addr.to_string()])
        .args(["--token", TOKEN])
        .args(extra);
    command
}

/// Invokes `logfn` through the Invoke API with a log tail: its request id and decoded tail.
async fn invoke(addr: SocketAddr, payload: Value, trace: &str) -> (String, String) {
    let response = reqwest::Client::new()
        .post(format!(
            "http://{addr}/2015-03-31/functions/logfn/invocations"
        ))
        .header("X-Amz-Log-Type", "Tail")
        .header("X-Amzn-Trace-Id", trace)
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{response:?}");
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    let tail = response
        .headers()
        .get("x-amz-log-result")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let tail = String::from_utf8(
        base64::engine::general_purpose::STANDARD
            .decode(tail)
            .unwrap(),
    )
    .unwrap();
    (request_id, tail)
}

#[tokio::test]
async fn victorialogs_credentials_never_appear_in_any_output() {
    let dir = tempfile::tempdir().unwrap();
    let server = VictoriaLogs::start().await;
    // Every batch is refused: the binaries warn about it, naming the URL.
    server.fail_next(&[400; 1000]);

    // --help, with the URL and the password in the environment.
    for program in [gateway_binary(), support::agent_binary()] {
        let output = Command::new(program)
            .arg("--help")
            .env("VICTORIALOGS_URL", with_password(&server.url))
            .env("ESB_VICTORIALOGS_URL", with_password(&server.url))
            .env("VICTORIALOGS_PASSWORD", PASSWORD)
            .env(
                "VICTORIALOGS_HEADERS",
                format!("Authorization: Bearer {PASSWORD}"),
            )
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("--victorialogs-password"), "{help}");
        assert!(!help.contains(PASSWORD), "{help}");
    }

    // A URL that does not parse stops start-up, naming the flag but not the password.
    let bad = format!("http://esb:{PASSWORD}@127.0.0.1:99999");
    for (name, mut command) in [
        (
            "gateway-bad",
            gateway(dir.path(), free_addr(), &["--victorialogs-url", &bad]),
        ),
        (
            "agent-bad",
            agent(free_addr(), &["--victorialogs-url", &bad]),
        ),
    ] {
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        let output = command.env("RUST_LOG", "debug").output().unwrap();
        assert!(!output.status.success(), "{name}: {output:?}");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(text.contains("--victorialogs-url"), "{name}: {text}");
        assert!(text.contains("***@127.0.0.1:99999"), "{name}: {text}");
        assert!(!text.contains(PASSWORD), "{name}: {text}");
    }

    // Running: the gateway ships to a VictoriaLogs refusing every batch, the agent to one
    // nobody listens on; both warn, at debug level too.
    let closed = format!("http://{}", free_addr());
    let agent_addr = free_addr();
    let mut agent_run = Running::spawn(
        {
            let mut c = agent(agent_addr, &["--victorialogs-url", &with_password(&closed)]);
            c.env("RUST_LOG", "debug");
            c
        },
        dir.path(),
        "agent",
    );
    agent_run.wait_listening(agent_addr);
    let gateway_addr = free_addr();
    let mut gateway_run = Running::spawn(
        {
            let mut c = gateway(
                dir.path(),
                gateway_addr,
                &[
                    "--victorialogs-url",
                    &with_password(&server.url),
                    "--runtime",
                    "agent",
                    "--agent",
                    &format!("http://{agent_addr}"),
                    "--agent-token",
                    TOKEN,
                ],
            );
            c.env("RUST_LOG", "debug");
            c
        },
        dir.path(),
        "gateway",
    );
    gateway_run.wait_listening(gateway_addr);
    let _ = invoke(
        gateway_addr,
        serde_json::json!({"print": ["a line"]}),
        "Root=1-65a0b0c0-0123456789abcdef01234567",
    )
    .await;
    server
        .wait_until("a refused batch", |s| !s.requests().is_empty())
        .await;
    // The password was sent (as basic auth), only never printed.
    let sent = &server.requests()[0].headers["authorization"];
    let expected = base64::engine::general_purpose::STANDARD.encode(format!("esb:{PASSWORD}"));
    assert_eq!(sent, &format!("Basic {expected}"));
    // Let the agent's retries fail and be reported.
    tokio::time::sleep(Duration::from_secs(8)).await;
    let gateway_out = gateway_run.stop();
    let agent_out = agent_run.stop();
    assert!(
        gateway_out.contains("VictoriaLogs refused a batch"),
        "{gateway_out}"
    );
    assert!(agent_out.contains("VictoriaLogs"), "{agent_out}");
    for (name, text) in [("gateway", &gateway_out), ("agent", &agent_out)] {
        assert!(
            !text.contains(PASSWORD),
            "{name} printed the password:\n{text}"
        );
        let encoded = base64::engine::general_purpose::STANDARD.encode(format!("esb:{PASSWORD}"));
        assert!(
            !text.contains(&encoded),
            "{name} printed the credentials:\n{text}"
        );
    }
}

#[tokio::test]
async fn the_gateway_ships_to_an_https_victorialogs_with_a_given_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (server, ca) = victorialogs_tls::start_tls().await;
    let ca_path = write(dir.path(), "ca.pem", &ca);
    let addr = free_addr();
    let mut run = Running::spawn(
        gateway(
            dir.path(),
            addr,
            &[
                "--victorialogs-url",
                &server.url,
                "--victorialogs-ca",
                &ca_path,
                "--victorialogs-user",
                "esb",
                "--victorialogs-password",
                PASSWORD,
                "--log-host",
                "gw-tls",
            ],
        ),
        dir.path(),
        "gateway-tls",
    );
    run.wait_listening(addr);
    let _ = invoke(
        addr,
        serde_json::json!({"print": ["over https"]}),
        "Root=1-65a0b0c0-0123456789abcdef01234567",
    )
    .await;
    server
        .wait_until("the function's line over https", |s| {
            s.lines().iter().any(|l| l["message"] == "over https")
        })
        .await;
    let out = run.stop();
    assert!(!out.contains(PASSWORD), "{out}");
    let line = server
        .lines()
        .into_iter()
        .find(|l| l["message"] == "over https")
        .unwrap();
    assert_eq!(line["host"], "gw-tls");
    assert_eq!(line["function_name"], "logfn");
}

#[tokio::test]
async fn an_agents_function_lines_reach_victorialogs_with_their_invocation_and_host() {
    let dir = tempfile::tempdir().unwrap();
    let server = VictoriaLogs::start().await;
    let agent_addr = free_addr();
    let mut agent_run = Running::spawn(
        agent(
            agent_addr,
            &[
                "--victorialogs-url",
                &server.url,
                "--log-host",
                "agent-host-1",
            ],
        ),
        dir.path(),
        "agent",
    );
    agent_run.wait_listening(agent_addr);
    let gateway_addr = free_addr();
    let mut gateway_run = Running::spawn(
        gateway(
            dir.path(),
            gateway_addr,
            &[
                "--victorialogs-url",
                &server.url,
                "--log-host",
                "gateway-host-1",
                "--runtime",
                "agent",
                "--agent",
                &format!("http://{agent_addr}"),
                "--agent-token",
                TOKEN,
            ],
        ),
        dir.path(),
        "gateway",
    );
    gateway_run.wait_listening(gateway_addr);

    let root = "1-65a0b0c0-0123456789abcdef01234567";
    let marker = "marker-7f3a from the agent's sandbox";
    let (request_id, tail) = invoke(
        gateway_addr,
        serde_json::json!({"print": [marker]}),
        &format!("Root={root};Sampled=1"),
    )
    .await;
    // The caller's log tail still comes back through the agent.
    assert!(tail.contains(marker), "{tail}");

    server
        .wait_until(
            "the marker, the agent's and the gateway's own records",
            |s| {
                let lines = s.lines();
                lines.iter().any(|l| l["message"] == marker)
                    && lines.iter().any(|l| l["container_name"] == "esb-agent")
                    && lines.iter().any(|l| l["container_name"] == "esb-gateway")
            },
        )
        .await;
    let lines = server.lines();
    let markers: Vec<&Value> = lines.iter().filter(|l| l["message"] == marker).collect();
    assert_eq!(markers.len(), 1, "shipped once, by the agent: {markers:?}");
    let line = markers[0];
    assert_eq!(line["function_name"], "logfn");
    assert_eq!(line["container_name"], "logfn");
    assert_eq!(line["job"], "lambda");
    assert_eq!(line["aws_request_id"], request_id.as_str());
    assert!(
        line["trace_id"]
            .as_str()
            .unwrap()
            .contains(&format!("Root={root}")),
        "{line}"
    );
    assert_eq!(line["host"], "agent-host-1");
    assert_eq!(line["stream"], "stdout");
    // Every record names its host: the agent's own and the gateway's.
    for l in &lines {
        let expected = if l["container_name"] == "esb-gateway" {
            "gateway-host-1"
        } else {
            "agent-host-1"
        };
        assert_eq!(l["host"], expected, "{l}");
    }
    let agent_out = agent_run.stop();
    gateway_run.stop();
    assert!(
        agent_out.contains(marker),
        "the agent's terminal: {agent_out}"
    );
}

/// POSTs `payload` to the route `/log` with a trace header: the response's status and request id.
async fn post_route(addr: SocketAddr, payload: Value, trace: &str) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(format!("http://{addr}/log"))
        .header("X-Amzn-Trace-Id", trace)
        .body(payload.to_string())
        .send()
        .await
        .unwrap();
    let request_id = response.headers()["x-amzn-requestid"]
        .to_str()
        .unwrap()
        .to_owned();
    (response.status().as_u16(), request_id)
}

/// A gateway shipping its logs to a VictoriaLogs stand-in of its own (started first), with
/// `extra` arguments, once it listens: its directory, the stand-in, its address and process.
async fn shipping_gateway(
    extra: &[&str],
) -> (tempfile::TempDir, VictoriaLogs, SocketAddr, Running) {
    let dir = tempfile::tempdir().unwrap();
    let server = VictoriaLogs::start().await;
    let addr = free_addr();
    let mut args = vec!["--victorialogs-url", server.url.as_str()];
    args.extend_from_slice(extra);
    let mut run = Running::spawn(gateway(dir.path(), addr, &args), dir.path(), "gateway");
    run.wait_listening(addr);
    (dir, server, addr, run)
}

fn find(lines: &[Value], what: impl Fn(&Value) -> bool) -> Vec<&Value> {
    lines.iter().filter(|l| what(l)).collect()
}

#[tokio::test]
async fn every_request_has_an_access_record_and_errors_and_platform_lines_carry_its_ids() {
    let (_dir, server, addr, run) = shipping_gateway(&["--log-host", "gw-1"]).await;
    let trace = "Root=1-65a0b0c0-00000000000000000000a11e;Sampled=1";
    // esb-testfn's answer is no proxy response: the route answers 502, a logged error.
    let (status, request_id) =
        post_route(addr, serde_json::json!({"print": ["routed"]}), trace).await;
    assert_eq!(status, 502);
    let (invoke_id, _) = invoke(addr, serde_json::json!({"print": ["invoked"]}), trace).await;

    server
        .wait_until("both access records", |s| {
            let lines = s.lines();
            find(&lines, |l| l["target"] == "esb_gateway::access").len() >= 2
                && lines.iter().any(|l| {
                    l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("REPORT"))
                })
        })
        .await;
    let lines = server.lines();
    let access = find(&lines, |l| {
        l["target"] == "esb_gateway::access" && l["aws_request_id"] == request_id.as_str()
    });
    assert_eq!(access.len(), 1, "{lines:#?}");
    let record = access[0];
    assert_eq!(record["level"], "info");
    assert_eq!(record["container_name"], "esb-gateway");
    assert_eq!(record["job"], "services");
    assert_eq!(record["method"], "POST");
    assert_eq!(record["path"], "/log");
    assert_eq!(record["route"], "POST /log");
    assert_eq!(record["function_name"], "logfn");
    assert_eq!(record["status"], "502");
    assert_eq!(record["trace_id"], trace);
    assert_eq!(record["client_ip"], "127.0.0.1");
    assert_eq!(record["host"], "gw-1");
    assert!(
        record["duration_ms"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap()
            > 0.0
    );

    let invoked = find(&lines, |l| {
        l["target"] == "esb_gateway::access" && l["aws_request_id"] == invoke_id.as_str()
    });
    assert_eq!(invoked.len(), 1, "{lines:#?}");
    assert_eq!(invoked[0]["function_name"], "logfn");
    assert_eq!(invoked[0]["status"], "200");
    assert_eq!(
        invoked[0]["path"],
        "/2015-03-31/functions/logfn/invocations"
    );

    // The error record of the 502 names the request and the function.
    let errors = find(&lines, |l| l["level"] == "warn" && l["job"] == "services");
    assert!(
        errors
            .iter()
            .any(|l| l["aws_request_id"] == request_id.as_str()
                && l["function_name"] == "logfn"
                && l["trace_id"] == trace),
        "{errors:#?}"
    );

    // START / END / REPORT carry the function's trace id (the caller's root).
    for prefix in ["START", "END", "REPORT"] {
        let platform = find(&lines, |l| {
            l["aws_request_id"] == request_id.as_str()
                && l["message"].as_str().is_some_and(|m| m.starts_with(prefix))
        });
        assert_eq!(platform.len(), 1, "{prefix}: {lines:#?}");
        assert!(
            platform[0]["trace_id"]
                .as_str()
                .is_some_and(|t| t.contains("Root=1-65a0b0c0-00000000000000000000a11e")),
            "{prefix}: {:?}",
            platform[0]
        );
    }
    let out = run.stop();
    assert!(
        out.lines()
            .any(|l| l.contains("esb_gateway::access") && l.contains("POST /log 502")),
        "the terminal shows the access record: {out}"
    );
}

#[tokio::test]
async fn access_log_false_writes_none_and_errors_keep_their_ids() {
    let (_dir, server, addr, run) = shipping_gateway(&["--access-log", "false"]).await;
    let trace = "Root=1-65a0b0c0-00000000000000000000b0b0";
    let (status, request_id) = post_route(addr, serde_json::json!({}), trace).await;
    assert_eq!(status, 502);
    server
        .wait_until("the error record", |s| {
            s.lines()
                .iter()
                .any(|l| l["job"] == "services" && l["aws_request_id"] == request_id.as_str())
        })
        .await;
    let out = run.stop();
    let lines = server.lines();
    assert!(
        find(&lines, |l| l["target"] == "esb_gateway::access").is_empty(),
        "{lines:#?}"
    );
    assert!(!out.contains("esb_gateway::access"), "{out}");
    let error = find(&lines, |l| {
        l["job"] == "services" && l["aws_request_id"] == request_id.as_str()
    });
    assert_eq!(error[0]["function_name"], "logfn");
}

#[tokio::test]
async fn levels_are_kept_as_written_times_have_microseconds_and_the_drop_count_exists_at_zero() {
    let (_dir, server, addr, run) = shipping_gateway(&[]).await;
    // Exported before anything was dropped (or sent).
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("esb_logs_records_dropped_total") && l.ends_with(" 0")),
        "{metrics}"
    );

    let lines_printed = [
        r#"{"_time": 1704067200.123, "level": "DEBUG", "_msg": "earlier-esb debug"}"#,
        "[WARNING] python text warning",
        "2024-01-01T00:00:00.000Z\tabc\tINFO\tnode text info",
        "plain line",
    ];
    let (request_id, _) = invoke(
        addr,
        serde_json::json!({ "print": lines_printed }),
        "Root=1-65a0b0c0-0123456789abcdef01234567",
    )
    .await;
    server
        .wait_until("the invocation's REPORT", |s| {
            s.lines().iter().any(|l| {
                l["aws_request_id"] == request_id.as_str()
                    && l["message"]
                        .as_str()
                        .is_some_and(|m| m.starts_with("REPORT"))
            })
        })
        .await;
    run.stop();
    let lines: Vec<Value> = server
        .lines()
        .into_iter()
        .filter(|l| l["aws_request_id"] == request_id.as_str() && l["job"] == "lambda")
        .collect();
    let level_of = |message: &str| {
        lines
            .iter()
            .find(|l| l["message"] == message)
            .unwrap_or_else(|| panic!("no {message:?} in {lines:#?}"))["level"]
            .clone()
    };
    assert_eq!(level_of("earlier-esb debug"), "DEBUG");
    assert_eq!(level_of("[WARNING] python text warning"), "WARNING");
    assert_eq!(
        level_of("2024-01-01T00:00:00.000Z\tabc\tINFO\tnode text info"),
        "INFO"
    );
    assert_eq!(level_of("plain line"), "info");
    // Microseconds, and in the order they were written: START, the lines, END, REPORT.
    let times: Vec<&str> = lines.iter().map(|l| l["_time"].as_str().unwrap()).collect();
    for time in &times {
        assert_eq!(time.len(), "2024-01-01T00:00:00.000000Z".len(), "{time}");
    }
    let mut sorted = lines.clone();
    sorted.sort_by_key(|l| l["_time"].as_str().unwrap().to_owned());
    let order: Vec<&str> = sorted
        .iter()
        .map(|l| l["message"].as_str().unwrap())
        .collect();
    assert!(order[0].starts_with("START"), "{order:#?}");
    assert_eq!(order[1], "earlier-esb debug", "{order:#?}");
    assert_eq!(order[4], "plain line", "{order:#?}");
    assert!(order[5].starts_with("END"), "{order:#?}");
    assert!(order[6].starts_with("REPORT"), "{order:#?}");
}

/// The VictoriaLogs of an outage test: the in-process one, or a real `victoria-logs` binary.
enum Vl {
    InProcess(VictoriaLogs),
    Real(RealVl),
}

/// A `victoria-logs` process on a free port, restartable on the same data.
struct RealVl {
    bin: PathBuf,
    data: tempfile::TempDir,
    addr: SocketAddr,
    child: std::sync::Mutex<Option<Child>>,
}

impl RealVl {
    fn start(bin: PathBuf) -> Self {
        let vl = Self {
            bin,
            data: tempfile::tempdir().unwrap(),
            addr: free_addr(),
            child: std::sync::Mutex::new(None),
        };
        vl.spawn();
        vl
    }

    fn spawn(&self) {
        let child = Command::new(&self.bin)
            .arg(format!("-storageDataPath={}", self.data.path().display()))
            .arg(format!("-httpListenAddr={}", self.addr))
            .arg("-insert.maxLineSizeBytes=512KB")
            .arg("-loggerLevel=ERROR")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        *self.child.lock().unwrap() = Some(child);
        let started = Instant::now();
        while std::net::TcpStream::connect(self.addr).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "victoria-logs never listened"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        if let Some(child) = &*self.child.lock().unwrap() {
            let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
            let _ = nix::sys::signal::kill(pid, signal);
        }
    }

    fn stop(&self) {
        self.signal(nix::sys::signal::Signal::SIGCONT);
        self.signal(nix::sys::signal::Signal::SIGTERM);
        if let Some(mut child) = self.child.lock().unwrap().take() {
            let _ = child.wait();
        }
    }
}

impl Drop for RealVl {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Vl {
    fn url(&self) -> String {
        match self {
            Self::InProcess(vl) => vl.url.clone(),
            Self::Real(vl) => format!("http://{}", vl.addr),
        }
    }

    /// Down (no listener, connections closed: a restart) or back up.
    fn down(&self, on: bool) {
        match self {
            Self::InProcess(vl) => vl.down(on),
            Self::Real(vl) if on => vl.stop(),
            Self::Real(vl) => vl.spawn(),
        }
    }

    /// Stalled (requests accepted, never answered) or going on.
    fn hang(&self, on: bool) {
        match self {
            Self::InProcess(vl) => vl.hang(on),
            Self::Real(vl) => vl.signal(if on {
                nix::sys::signal::Signal::SIGSTOP
            } else {
                nix::sys::signal::Signal::SIGCONT
            }),
        }
    }

    /// The records a LogsQL query finds.
    async fn query(&self, query: &str) -> Vec<Value> {
        let text = reqwest::Client::new()
            .post(format!("{}/select/logsql/query", self.url()))
            .form(&[("query", query)])
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }
}

/// The VictoriaLogs an outage test runs against: in-process, and the real binary when
/// `ESB_VICTORIALOGS_BIN` names one.
fn backends() -> Vec<&'static str> {
    match std::env::var_os("ESB_VICTORIALOGS_BIN") {
        Some(_) => vec!["in-process", "real"],
        None => {
            eprintln!(
                "ESB_VICTORIALOGS_BIN is not set: the outage test runs against the in-process \
                 VictoriaLogs only, not against a real victoria-logs"
            );
            vec!["in-process"]
        }
    }
}

async fn backend(name: &str) -> Vl {
    match name {
        "real" => Vl::Real(RealVl::start(PathBuf::from(
            std::env::var_os("ESB_VICTORIALOGS_BIN").unwrap(),
        ))),
        _ => Vl::InProcess(VictoriaLogs::start().await),
    }
}

#[derive(Clone, Copy, Debug)]
enum Outage {
    /// Down (connections refused) for 5 s, from 3 s into a 12 s load.
    Refuse,
    /// Stalled for 12 s, from 2 s into a 16 s load.
    Hang,
}

/// Invocations at about 100 a second, each printing its own marker, through a VictoriaLogs
/// outage: every marker arrives, duplicates stay within 1%. Returns (sent, lost, duplicated).
async fn outage(vl: Vl, kind: Outage) -> (usize, usize, usize) {
    let dir = tempfile::tempdir().unwrap();
    let addr = free_addr();
    let mut run = Running::spawn(
        gateway(dir.path(), addr, &["--victorialogs-url", &vl.url()]),
        dir.path(),
        "gateway",
    );
    run.wait_listening(addr);
    let (total, start, end) = match kind {
        Outage::Refuse => (
            Duration::from_secs(12),
            Duration::from_secs(3),
            Duration::from_secs(8),
        ),
        Outage::Hang => (
            Duration::from_secs(16),
            Duration::from_secs(2),
            Duration::from_secs(14),
        ),
    };
    let client = reqwest::Client::new();
    let url = format!("http://{addr}/2015-03-31/functions/logfn/invocations");
    let began = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut calls = tokio::task::JoinSet::new();
    let (mut started_outage, mut ended_outage) = (false, false);
    let mut n = 0usize;
    while began.elapsed() < total && n < 2_000 {
        tick.tick().await;
        let elapsed = began.elapsed();
        if !started_outage && elapsed >= start {
            started_outage = true;
            match kind {
                Outage::Refuse => vl.down(true),
                Outage::Hang => vl.hang(true),
            }
        }
        if !ended_outage && elapsed >= end {
            ended_outage = true;
            match kind {
                Outage::Refuse => vl.down(false),
                Outage::Hang => vl.hang(false),
            }
        }
        let (client, url) = (client.clone(), url.clone());
        let marker = format!("outage-marker-{n}");
        calls.spawn(async move {
            let payload = serde_json::json!({ "print": [marker] }).to_string();
            let response = client.post(url).body(payload).send().await.unwrap();
            response.status().as_u16()
        });
        n += 1;
    }
    let mut ok = 0;
    while let Some(status) = calls.join_next().await {
        if status.unwrap() == 200 {
            ok += 1;
        }
    }
    assert_eq!(ok, n, "every invocation succeeded");
    // Wait for the backlog to arrive (bounded).
    let waited = Instant::now();
    let mut found: Vec<Value>;
    loop {
        found = vl.query("function_name:logfn").await;
        let markers = found
            .iter()
            .filter(|l| {
                l["_msg"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("outage-marker-"))
            })
            .count();
        if markers >= n || waited.elapsed() > Duration::from_secs(60) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let metrics = reqwest::get(format!("http://{addr}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    run.stop();
    let mut seen = std::collections::HashMap::<String, usize>::new();
    for line in &found {
        if let Some(m) = line["_msg"]
            .as_str()
            .filter(|m| m.starts_with("outage-marker-"))
        {
            *seen.entry(m.to_owned()).or_default() += 1;
        }
    }
    let lost = (0..n)
        .filter(|i| !seen.contains_key(&format!("outage-marker-{i}")))
        .count();
    let duplicated: usize = seen.values().map(|c| c - 1).sum();
    let metric = |name: &str| -> f64 {
        metrics
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {metrics}"))
    };
    eprintln!(
        "{kind:?}: {n} invocations, {ok} answered, markers lost {lost}, duplicated {duplicated}; \
         shipper dropped {}, resent after a timeout {}",
        metric("esb_logs_records_dropped_total"),
        metric("esb_logs_records_resent_after_timeout_total"),
    );
    assert_eq!(lost, 0, "every line arrives after the outage");
    assert_eq!(metric("esb_logs_records_dropped_total"), 0.0);
    assert!(duplicated * 100 <= n, "duplicates {duplicated} of {n}");
    (n, lost, duplicated)
}

#[tokio::test]
async fn a_victorialogs_down_for_5_seconds_loses_no_line() {
    for name in backends() {
        let (sent, lost, duplicated) = outage(backend(name).await, Outage::Refuse).await;
        eprintln!("{name}: refused 5 s: sent {sent}, lost {lost}, duplicated {duplicated}");
    }
}

#[tokio::test]
async fn a_victorialogs_stalled_for_12_seconds_loses_no_line_and_duplicates_at_most_1_percent() {
    for name in backends() {
        let (sent, lost, duplicated) = outage(backend(name).await, Outage::Hang).await;
        eprintln!("{name}: stalled 12 s: sent {sent}, lost {lost}, duplicated {duplicated}");
    }
}

#[tokio::test]
async fn with_a_spool_lines_unsent_at_shutdown_arrive_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let spool_arg = spool.display().to_string();
    let closed = format!("http://{}", free_addr());
    let addr = free_addr();
    let mut run = Running::spawn(
        gateway(
            dir.path(),
            addr,
            &["--victorialogs-url", &closed, "--logs-spool", &spool_arg],
        ),
        dir.path(),
        "gateway-1",
    );
    run.wait_listening(addr);
    let marker = "kept across a restart";
    let (request_id, _) = invoke(
        addr,
        serde_json::json!({ "print": [marker] }),
        "Root=1-65a0b0c0-0123456789abcdef01234567",
    )
    .await;
    run.stop();
    assert!(std::fs::read_dir(&spool).unwrap().count() > 0);

    let server = VictoriaLogs::start().await;
    let addr = free_addr();
    let mut run = Running::spawn(
        gateway(
            dir.path(),
            addr,
            &[
                "--victorialogs-url",
                &server.url,
                "--logs-spool",
                &spool_arg,
            ],
        ),
        dir.path(),
        "gateway-2",
    );
    run.wait_listening(addr);
    server
        .wait_until("the line of before the restart", |s| {
            s.lines().iter().any(|l| l["message"] == marker)
        })
        .await;
    run.stop();
    let lines = server.lines();
    let line = lines.iter().find(|l| l["message"] == marker).unwrap();
    assert_eq!(line["aws_request_id"], request_id.as_str());
    assert_eq!(lines.iter().filter(|l| l["message"] == marker).count(), 1);
}

#[tokio::test]
async fn in_a_burst_of_2000_invocations_every_line_carries_the_request_id_of_its_invocation() {
    const CLIENTS: usize = 16;
    const PER_CLIENT: usize = 125;
    let dir = tempfile::tempdir().unwrap();
    let server = VictoriaLogs::start().await;
    let addr = free_addr();
    let mut run = Running::spawn(
        {
            let mut command = gateway(dir.path(), addr, &["--victorialogs-url", &server.url]);
            // The terminal is not what this test reads.
            command.env("RUST_LOG", "warn");
            command
        },
        dir.path(),
        "gateway",
    );
    run.wait_listening(addr);
    let url = format!("http://{addr}/2015-03-31/functions/logfn/invocations");
    let payload = serde_json::json!({
        "print": ["rid={request_id} first", "rid={request_id} second"],
        "stderr": ["rid={request_id} third"],
    })
    .to_string();
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..CLIENTS {
        let (url, payload) = (url.clone(), payload.clone());
        clients.spawn(async move {
            let client = reqwest::Client::new();
            for _ in 0..PER_CLIENT {
                let response = client
                    .post(&url)
                    .body(payload.clone())
                    .send()
                    .await
                    .unwrap();
                assert_eq!(response.status(), 200);
            }
        });
    }
    while let Some(done) = clients.join_next().await {
        done.unwrap();
    }
    let expected = CLIENTS * PER_CLIENT * 3;
    let printed = |s: &VictoriaLogs| {
        s.lines()
            .into_iter()
            .filter(|l| l["message"].as_str().is_some_and(|m| m.starts_with("rid=")))
            .collect::<Vec<_>>()
    };
    server
        .wait_until("every printed line", |s| printed(s).len() >= expected)
        .await;
    run.stop();
    let lines = printed(&server);
    assert_eq!(lines.len(), expected);
    let misattributed: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            let message = l["message"].as_str().unwrap();
            let id = message["rid=".len()..].split(' ').next().unwrap();
            l["aws_request_id"].as_str() != Some(id)
        })
        .collect();
    assert!(
        misattributed.is_empty(),
        "{} of {expected} lines carry another invocation's request id: {:#?}",
        misattributed.len(),
        &misattributed[..misattributed.len().min(5)]
    );
}
