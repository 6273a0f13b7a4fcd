//! Services ESB starts itself (`command:` in `services`): a service that never becomes
//! healthy stops the gateway's start-up with an error naming it, leaving no process, its
//! output logged under its name; a
//! started `moto_server` killed mid-run is restarted, and a function calling it during the
//! outage gets an error, not a hang.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use esb_gateway::services::Supervisor;
use esb_gateway::{Gateway, GatewayConfig};
use serde_json::{Value, json};
use support::clients;
use support::moto;

fn alive(pid: i32) -> bool {
    // A zombie is gone for our purpose: /proc/<pid>/stat says Z.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat
            .rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

#[test]
fn a_service_that_never_becomes_healthy_stops_start_up_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let port = moto::free_port().unwrap();
    let pidfile = dir.path().join("service.pid");
    let functions = format!(
        r#"
services:
  dynamodb:
    endpoint: "http://127.0.0.1:{port}"
    command: ["sh", "-c", "echo $$ > {pidfile}; echo starting up; exec sleep 1000"]
    health: {{ timeout: 1, interval: 0.1 }}
functions:
  f: {{ command: ["/bin/true"] }}
"#,
        pidfile = pidfile.display()
    );
    let functions_path = dir.path().join("functions.yml");
    std::fs::write(&functions_path, functions).unwrap();
    let routing_path = dir.path().join("routing.yml");
    std::fs::write(&routing_path, "routes: []\n").unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
        .arg("--functions")
        .arg(&functions_path)
        .arg("--routing")
        .arg(&routing_path)
        .args(["--listen", "127.0.0.1:0"])
        .env_remove("ESB_FUNCTIONS")
        .env_remove("ESB_ROUTING")
        .env_remove("ESB_TEMPLATE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bounded: a gateway that hangs is killed and fails the test.
    let output = support::bounded_output(output, Duration::from_secs(60), || {});
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "service dynamodb: not healthy after 1 s (TCP connect to 127.0.0.1:{port})"
        )),
        "{stderr}"
    );
    // Its output lines are log records, prefixed with its name.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains("[dynamodb] starting up") || stderr.contains("[dynamodb] starting up"),
        "{stdout}\n{stderr}"
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(!alive(pid), "the service's process {pid} was left running");
}

/// A Python HTTPS server on `port` answering every GET with `status`, noting each request
/// it served in `seen`; its certificate is self-signed.
const HTTPS_SERVER: &str = r#"
import http.server, ssl, sys
port, status, cert, key, seen = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        with open(seen, "a") as f:
            f.write(self.command + " " + self.path + "\n")
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", port), Handler)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(cert, key)
server.socket = context.wrap_socket(server.socket, server_side=True)
server.serve_forever()
"#;

#[tokio::test]
async fn an_https_health_url_is_probed_over_https_and_its_status_decides() {
    let Some(python) = clients::python_with(&["ssl"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let generated = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.signing_key.serialize_pem()).unwrap();
    let script = dir.path().join("server.py");
    std::fs::write(&script, HTTPS_SERVER).unwrap();
    let services = |status: u16, seen: &std::path::Path| {
        let port = moto::free_port().unwrap();
        let command = json!([
            python.display().to_string(),
            script.display().to_string(),
            port.to_string(),
            status.to_string(),
            cert.display().to_string(),
            key.display().to_string(),
            seen.display().to_string(),
        ]);
        let yaml = format!(
            "services:\n  s3:\n    endpoint: \"https://127.0.0.1:{port}\"\n    command: {command}\n    health: {{ url: \"https://127.0.0.1:{port}/health\", timeout: 3, interval: 0.1 }}\nfunctions: {{}}\n"
        );
        (port, support::load(&yaml, "routes: []\n").services)
    };

    // Listening, but answering 503: not healthy (a TCP connection alone is not enough),
    // and the probes were HTTP requests over TLS.
    let seen = dir.path().join("seen-503");
    let (port, unhealthy) = services(503, &seen);
    let err = Supervisor::start(&unhealthy).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("service s3: not healthy after 3 s (GET https://127.0.0.1:{port}/health)")
    );
    let requests = std::fs::read_to_string(&seen).unwrap_or_default();
    assert!(requests.lines().any(|l| l == "GET /health"), "{requests:?}");

    // Answering 404 (below 500): healthy.
    let seen = dir.path().join("seen-404");
    let (_, healthy) = services(404, &seen);
    let supervisor = Supervisor::start(&healthy).await.unwrap();
    let pid = supervisor.pid("s3").unwrap();
    let requests = std::fs::read_to_string(&seen).unwrap();
    assert!(requests.lines().any(|l| l == "GET /health"), "{requests:?}");
    supervisor.stop().await;
    assert!(!alive(pid as i32), "the service outlived stop()");
}

#[tokio::test]
async fn a_started_service_that_dies_is_restarted_and_callers_get_errors_meanwhile() {
    let Some(python) = clients::python_with(&["boto3", "awslambdaric"]) else {
        return;
    };
    let Some(moto_server) = moto::program() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let hold = dir.path().join("hold");
    let port = moto::free_port().unwrap();
    // While `hold` exists a restarted service waits before it starts listening: an outage
    // as long as the test needs.
    let script = format!(
        "while [ -e {hold} ]; do sleep 0.1; done; exec {moto_server} -H 127.0.0.1 -p {port}",
        hold = hold.display()
    );
    let launch =
        clients::python_ric(&clients::fixture_functions("python"), "companions.buckets").unwrap();
    let yaml = format!(
        "services:\n  s3:\n    endpoint: \"http://127.0.0.1:{port}\"\n    command: [\"sh\", \"-c\", {script}]\n    health: {{ url: \"http://127.0.0.1:{port}/moto-api/\", timeout: 60 }}\nfunctions:\n{}",
        launch.function_yaml("buckets", &["timeout: 60"]),
        script = serde_json::Value::from(script.clone()),
    );
    let config = GatewayConfig::new(
        support::load(&yaml, "routes: []\n"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let supervisor = Supervisor::start(&config.functions.services).await.unwrap();
    let first = supervisor.pid("s3").unwrap();
    // The service is healthy: the test's own boto3 can make a bucket in it.
    let created = std::process::Command::new(&python)
        .args(["-c", &format!("import boto3; boto3.client('s3', endpoint_url='http://127.0.0.1:{port}', region_name='us-east-1', aws_access_key_id='k', aws_secret_access_key='s').create_bucket(Bucket='before')")])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let created = support::bounded_output(created, Duration::from_secs(60), || {});
    assert!(
        created.status.success(),
        "{}",
        String::from_utf8_lossy(&created.stderr)
    );
    let gateway = support::start(config).await;
    let invoke = |gateway: &Gateway| {
        let url = format!("{}/2015-03-31/functions/buckets/invocations", gateway.url());
        async move {
            let response = support::client()
                .post(url)
                .json(&json!({}))
                .send()
                .await
                .unwrap();
            let error = response.headers().get("x-amz-function-error").cloned();
            (error, response.json::<Value>().await.unwrap())
        }
    };
    let (error, answer) = invoke(&gateway).await;
    assert!(error.is_none(), "{answer}");
    assert_eq!(answer["buckets"], json!(["before"]));

    // Killed mid-run, and held down until the test lets it start again.
    std::fs::write(&hold, "").unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    for _ in 0..600 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (error, answer) = invoke(&gateway).await;
    assert_eq!(error.unwrap(), "Unhandled", "{answer}");
    assert_eq!(answer["errorType"], "EndpointConnectionError", "{answer}");

    // Let go: the supervisor's restart becomes healthy, with a new process.
    std::fs::remove_file(&hold).unwrap();
    let mut second = None;
    for _ in 0..1200 {
        second = supervisor.pid("s3").filter(|&pid| pid != first);
        if second.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let second = second.expect("the service was restarted and became healthy");
    let (error, answer) = invoke(&gateway).await;
    assert!(error.is_none(), "{answer}");
    // A fresh moto: the bucket made before the outage is gone.
    assert_eq!(answer["buckets"], json!([]));

    gateway.shutdown().await;
    supervisor.stop().await;
    assert!(!alive(second as i32), "the service outlived stop()");
}
