//! The box's companions seen from functions: unchanged boto3 code (default clients only) in
//! Python functions run by awslambdaric on the process backend reads and writes a real S3 +
//! DynamoDB (`moto_server`, started here) through the variables ESB injects, and invokes
//! other functions through the gateway (`AWS_ENDPOINT_URL_LAMBDA`), trace root kept.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;

use esb_gateway::{Gateway, GatewayConfig};
use esb_testfn::ports::free_port;
use serde_json::{Value, json};
use support::clients;
use support::moto::{self, Moto};

/// functions.yml: the handlers of `companions.py`, and `services` at `moto`.
fn functions_yml(moto: &Moto) -> Option<String> {
    let dir = clients::fixture_functions("python");
    let mut yaml = format!(
        "services:\n  s3: {{ endpoint: \"{url}\", access_key: test-key, secret_key: test-secret }}\n  dynamodb: {{ endpoint: \"{url}\" }}\nfunctions:\n",
        url = moto.url()
    );
    for (name, handler, extra) in [
        ("env", "companions.env", &["timeout: 30"][..]),
        ("own", "companions.env", &["timeout: 30"][..]),
        ("s3", "companions.s3", &["timeout: 60"][..]),
        ("dynamodb", "companions.dynamodb", &["timeout: 60"][..]),
        ("chain", "companions.chain", &["timeout: 60"][..]),
        ("traced", "companions.traced", &["timeout: 30"][..]),
    ] {
        let launch = clients::python_ric(&dir, handler)?;
        let mut entry = launch.function_yaml(name, extra);
        if name == "own" {
            // The function's own environment wins over what ESB injects.
            entry = entry.replace(
                "environment: { ",
                "environment: { S3_ENDPOINT: \"http://own.example:1\", AWS_REGION: eu-west-3, ",
            );
        }
        yaml.push_str(&entry);
    }
    Some(yaml)
}

async fn invoke(gateway: &Gateway, name: &str, event: Value, trace: Option<&str>) -> Value {
    let mut request = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .json(&event);
    if let Some(trace) = trace {
        request = request.header("x-amzn-trace-id", trace);
    }
    let response = request.send().await.unwrap();
    let error = response.headers().get("x-amz-function-error").cloned();
    let body: Value = response.json().await.unwrap();
    assert!(error.is_none(), "{name} failed: {body}");
    body
}

struct Setup {
    moto: Moto,
    gateway: Gateway,
    logs: Arc<support::CapturingSink>,
}

async fn setup() -> Option<Setup> {
    let python = clients::python_with(&["boto3", "awslambdaric"])?;
    let moto = Moto::start()?;
    moto::create_bucket_and_table(&python, &moto.url(), "box-bucket", "box-table");
    let yaml = functions_yml(&moto)?;
    let config = GatewayConfig::new(
        support::load(&yaml, "routes: []\n"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let logs = Arc::new(support::CapturingSink::default());
    let gateway = Gateway::start(config, vec![support::process_runtime(logs.clone())])
        .await
        .unwrap();
    Some(Setup {
        moto,
        gateway,
        logs,
    })
}

#[tokio::test]
async fn functions_get_the_companions_variables_and_their_own_win() {
    let Some(Setup { moto, gateway, .. }) = setup().await else {
        return;
    };
    let env = invoke(&gateway, "env", json!({}), None).await;
    assert_eq!(env["AWS_ENDPOINT_URL_S3"], moto.url());
    assert_eq!(env["S3_ENDPOINT"], moto.url());
    assert_eq!(env["AWS_ENDPOINT_URL_DYNAMODB"], moto.url());
    assert_eq!(env["DYNAMODB_ENDPOINT"], moto.url());
    assert_eq!(env["AWS_ENDPOINT_URL_LAMBDA"], gateway.url());
    assert_eq!(env["GATEWAY_INTERNAL_URL"], gateway.url());
    assert_eq!(env["AWS_REGION"], "us-east-1");
    assert_eq!(env["AWS_DEFAULT_REGION"], "us-east-1");
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "test-key");
    assert_eq!(env["VICTORIALOGS_URL"], Value::Null);
    let own = invoke(&gateway, "own", json!({}), None).await;
    assert_eq!(own["S3_ENDPOINT"], "http://own.example:1");
    assert_eq!(own["AWS_REGION"], "eu-west-3");
    assert_eq!(own["AWS_ENDPOINT_URL_S3"], moto.url());
    gateway.shutdown().await;
}

#[tokio::test]
async fn unchanged_boto3_code_uses_s3_and_dynamodb() {
    let Some(Setup { gateway, moto, .. }) = setup().await else {
        return;
    };
    let s3 = invoke(&gateway, "s3", json!({"bucket": "box-bucket"}), None).await;
    assert_eq!(s3["got"], "alpha");
    assert_eq!(s3["listed"], json!(["a.txt", "b.txt"]));
    assert_eq!(s3["after_delete"], json!(["a.txt"]));
    let presigned = s3["presigned"].as_str().unwrap();
    assert!(presigned.starts_with(&moto.url()), "{presigned}");
    assert!(presigned.contains("Signature"), "{presigned}");
    let fetched = support::client().get(presigned).send().await.unwrap();
    assert!(fetched.status().is_success(), "{}", fetched.status());
    assert_eq!(fetched.text().await.unwrap(), "alpha");

    let db = invoke(&gateway, "dynamodb", json!({"table": "box-table"}), None).await;
    assert_eq!(
        db,
        json!({"got": "u1@example.com", "updated": "42", "queried": ["u2"], "deleted": true})
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_function_invokes_another_through_the_gateway_with_its_trace_root() {
    let Some(Setup { gateway, logs, .. }) = setup().await else {
        return;
    };
    let root = "1-5759e988-bd862e3fe1be46a994272793";
    let trace = format!("Root={root};Parent=53995c3f42cd8ad8;Sampled=1");
    let answer = invoke(
        &gateway,
        "chain",
        json!({"target": "traced", "marker": "m1"}),
        Some(&trace),
    )
    .await;
    assert!(
        answer["my_trace"].as_str().unwrap().contains(root),
        "{answer}"
    );
    assert_eq!(answer["sync_status"], 200, "{answer}");
    assert_eq!(answer["sync_error"], Value::Null, "{answer}");
    assert_eq!(answer["event_status"], 202, "{answer}");
    let b = &answer["answer"];
    assert_eq!(b["echo"], json!({"marker": "m1-sync"}));
    assert_eq!(
        b["client_context"],
        json!({"custom": {"from": "chain"}, "env": {"caller": "A"}})
    );
    assert!(
        b["trace_env"]
            .as_str()
            .unwrap()
            .contains(&format!("Root={root}")),
        "{b}"
    );
    // B's log lines of both invocations carry A's trace root.
    for marker in ["traced m1-sync", "traced m1-event"] {
        let line = logs.wait_for(marker).await;
        assert_eq!(line.function_name, "traced");
        let trace_id = line.trace_id.unwrap_or_default();
        assert!(
            trace_id.contains(&format!("Root={root}")),
            "{marker}: {trace_id}"
        );
    }
    gateway.shutdown().await;
}

/// An `esb-agent --runtime process` on a free loopback port; killed on drop.
struct Agent(std::process::Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_on_an_agent_get_the_same_variables() {
    let Some(python) = clients::python_with(&["boto3", "awslambdaric"]) else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    moto::create_bucket_and_table(&python, &moto.url(), "box-bucket", "box-table");
    let port = moto::free_port().unwrap();
    let agent = Agent(
        std::process::Command::new(support::agent_binary())
            .args(["--runtime", "process", "--insecure-no-auth"])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env_remove("ESB_AGENT_TOKEN")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    moto::wait_for_port(port);
    let runtime = esb_runtime::remote::RemoteRuntime::connect(
        esb_runtime::remote::RemoteConfig::new(format!("http://127.0.0.1:{port}")),
    )
    .await
    .unwrap();
    let config = GatewayConfig::new(
        support::load(&functions_yml(&moto).unwrap(), "routes: []\n"),
        "127.0.0.1:0".parse().unwrap(),
    );
    let gateway = Gateway::start(config, vec![Arc::new(runtime)])
        .await
        .unwrap();
    let env = invoke(&gateway, "env", json!({}), None).await;
    assert_eq!(env["AWS_ENDPOINT_URL_S3"], moto.url());
    assert_eq!(env["AWS_ENDPOINT_URL_DYNAMODB"], moto.url());
    assert_eq!(env["AWS_ENDPOINT_URL_LAMBDA"], gateway.url());
    assert_eq!(env["AWS_ACCESS_KEY_ID"], "test-key");
    let s3 = invoke(&gateway, "s3", json!({"bucket": "box-bucket"}), None).await;
    assert_eq!(s3["got"], "alpha");
    gateway.shutdown().await;
    drop(agent);
}

/// The gateway process; killed on drop.
struct Binary(std::process::Child);

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn a_sam_zip_function_uses_the_services_given_as_flags() {
    let Some(python) = clients::python_with(&["boto3", "awslambdaric"]) else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    moto::create_bucket_and_table(&python, &moto.url(), "box-bucket", "box-table");
    let dir = tempfile::tempdir().unwrap();
    let code = dir.path().join("code");
    std::fs::create_dir(&code).unwrap();
    std::fs::copy(
        clients::fixture_functions("python").join("companions.py"),
        code.join("companions.py"),
    )
    .unwrap();
    let template = dir.path().join("template.yaml");
    std::fs::write(
        &template,
        "Transform: AWS::Serverless-2016-10-31\nResources:\n  Store:\n    Type: AWS::Serverless::Function\n    Properties:\n      FunctionName: store\n      Runtime: python3.12\n      Handler: companions.s3\n      CodeUri: code\n      Timeout: 60\n",
    )
    .unwrap();
    let port = moto::free_port().unwrap();
    let gateway = Binary(
        std::process::Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
            .arg("--template")
            .arg(&template)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .arg("--runtime-command")
            .arg(format!("python3.12={}", python.display()))
            .args(["--s3-endpoint", &moto.url()])
            .args([
                "--s3-access-key",
                "flag-key",
                "--s3-secret-key",
                "flag-secret",
            ])
            .arg("--code-cache")
            .arg(dir.path().join("cache"))
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING")
            .env_remove("ESB_S3_ENDPOINT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    moto::wait_for_port(port);
    let response = support::client()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/store/invocations"
        ))
        .json(&json!({"bucket": "box-bucket"}))
        .send()
        .await
        .unwrap();
    let failed = response.headers().contains_key("x-amz-function-error");
    let answer: Value = response.json().await.unwrap();
    assert!(!failed, "{answer}");
    assert_eq!(answer["got"], "alpha");
    assert_eq!(answer["after_delete"], json!(["a.txt"]));
    drop(gateway);
}

/// Services with different key pairs: the gateway says once, at start, that functions get
/// S3's pair, naming both services and neither pair.
#[test]
fn different_key_pairs_are_warned_about_once_without_the_secrets() {
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions.yml");
    std::fs::write(
        &functions,
        "services:\n  s3: { endpoint: \"http://127.0.0.1:9\", access_key: s3-access-id, secret_key: s3-secret-value }\n  dynamodb: { endpoint: \"http://127.0.0.1:9\", access_key: db-access-id, secret_key: db-secret-value }\nfunctions:\n  f: { command: [\"/bin/true\"] }\n",
    )
    .unwrap();
    let routing = dir.path().join("routing.yml");
    std::fs::write(&routing, "routes: []\n").unwrap();
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
        .arg("--functions")
        .arg(&functions)
        .arg("--routing")
        .arg(&routing)
        .args(["--listen", &addr.to_string()])
        .env_remove("ESB_FUNCTIONS")
        .env_remove("ESB_ROUTING")
        .env_remove("ESB_TEMPLATE")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    // Bounded: killed if it never listens or never exits.
    let mut listened = false;
    let output = support::bounded_output(child, std::time::Duration::from_secs(60), || {
        // Started: its health endpoint answers (the port alone is bound earlier).
        let healthy = || {
            use std::io::{Read, Write};
            let mut stream = std::net::TcpStream::connect(addr).ok()?;
            stream
                .set_read_timeout(Some(std::time::Duration::from_secs(10)))
                .ok()?;
            stream
                .write_all(b"GET /health HTTP/1.1\r\nHost: esb\r\nConnection: close\r\n\r\n")
                .ok()?;
            let mut answer = String::new();
            stream.read_to_string(&mut answer).ok()?;
            answer.starts_with("HTTP/1.1 200").then_some(())
        };
        let started = std::time::Instant::now();
        while healthy().is_none() {
            if started.elapsed() > std::time::Duration::from_secs(30) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        listened = true;
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let warnings: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("have different keys"))
        .collect();
    assert_eq!(warnings.len(), 1, "{text}");
    assert!(
        warnings[0].contains("services s3 and dynamodb have different keys: functions get s3's as AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY"),
        "{text}"
    );
    assert!(listened, "the gateway did not start: {text}");
    assert!(output.status.success(), "{text}");
    for secret in [
        "s3-secret-value",
        "db-secret-value",
        "s3-access-id",
        "db-access-id",
    ] {
        assert!(!text.contains(secret), "{secret} shown: {text}");
    }
}

/// An endpoint with `user:password@` in it is refused at load, in functions.yml and as a
/// flag, naming the file or flag and the field, never showing the password.
#[test]
fn credentials_in_an_endpoint_url_are_refused_without_showing_them() {
    let dir = tempfile::tempdir().unwrap();
    let routing = dir.path().join("routing.yml");
    std::fs::write(&routing, "routes: []\n").unwrap();
    let check = |functions: &str, args: &[&str]| {
        let path = dir.path().join("functions.yml");
        std::fs::write(&path, functions).unwrap();
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
            .arg("--check")
            .arg("--functions")
            .arg(&path)
            .arg("--routing")
            .arg(&routing)
            .args(args)
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING")
            .env_remove("ESB_TEMPLATE")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let output = support::bounded_output(child, std::time::Duration::from_secs(60), || {});
        let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
        assert!(!output.status.success(), "{stderr}");
        assert!(
            !stderr.contains("pa55word"),
            "the password is shown: {stderr}"
        );
        stderr
    };
    let stderr = check(
        "services:\n  s3: { endpoint: \"http://admin:pa55word@127.0.0.1:9000\" }\n  dynamodb:\n    endpoint: \"http://127.0.0.1:8001\"\n    health: { url: \"http://pa55word@127.0.0.1:8001/health\" }\nfunctions: {}\n",
        &[],
    );
    for field in ["services.s3: endpoint", "services.dynamodb: health.url"] {
        let line = stderr
            .lines()
            .find(|l| l.contains(field))
            .unwrap_or_else(|| panic!("no error naming {field}: {stderr}"));
        assert!(line.contains("functions.yml"), "{line}");
        assert!(
            line.contains("@127.0.0.1:") && line.contains("has credentials in it"),
            "{line}"
        );
    }
    let stderr = check(
        "functions: {}\n",
        &["--s3-endpoint", "http://admin:pa55word@127.0.0.1:9000"],
    );
    assert!(
        stderr.contains(
            "--s3-endpoint: \"http://***@127.0.0.1:9000\" has credentials in it (user:password@)"
        ),
        "{stderr}"
    );
}
