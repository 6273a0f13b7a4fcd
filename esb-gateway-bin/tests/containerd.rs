//! The all-in-one gateway on containerd (`esb-gateway --runtime containerd`): the real
//! binary, its containerd flags (the same group as esb-agent's), images pulled from the
//! local plain-HTTP registry, `--check` refusing what the backend cannot run, and the CNI
//! network removed at a clean stop. The tests
//! that need containerd skip with a printed reason when none is reachable, unless
//! `ESB_REQUIRE_CONTAINERD=1`.
#![cfg(feature = "containerd")]
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod support;

use support::{gateway_command as gateway, write};

use esb_testfn::oci;
use esb_testfn::ports::free_port;
use serde_json::{Value, json};

/// functions.yml and routing.yml of one function per `(name, image, invoke)`, each routed
/// at `POST /<name>` without auth.
fn definitions(dir: &Path, functions: &[(&str, &str, &str)]) -> (String, String) {
    let mut f = String::from("functions:\n");
    let mut r = String::from("routes:\n");
    for (name, image, invoke) in functions {
        f.push_str(&format!(
            "  {name}: {{ image: \"{image}\", invoke: {invoke}, timeout: 10 }}\n"
        ));
        r.push_str(&format!(
            "  - {{ path: \"/{name}\", method: POST, function: {name}, auth: none, payload_format: \"2.0\" }}\n"
        ));
    }
    (
        write(dir, "functions.yml", &f),
        write(dir, "routing.yml", &r),
    )
}

#[test]
fn check_refuses_an_rie_function_without_a_network_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let (functions, routing) = definitions(
        dir.path(),
        &[
            ("plain", "127.0.0.1:5000/x:1", "runtime-api"),
            ("emulated", "127.0.0.1:5000/x:1", "rie"),
        ],
    );
    let check = |extra: &[&str]| {
        gateway()
            .args(["--check", "--runtime", "containerd"])
            .args(["--functions", &functions, "--routing", &routing])
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = check(&[]);
    assert!(!refused.status.success(), "{refused:?}");
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("functions.emulated.invoke: rie"),
        "the function and field are named: {stderr}"
    );
    assert!(!stderr.contains("functions.plain"), "{stderr}");

    let accepted = check(&["--cni-subnet", "10.234.0.0/24"]);
    assert!(accepted.status.success(), "{accepted:?}");
}

#[tokio::test(flavor = "multi_thread")]
async fn start_up_refuses_an_rie_function_when_no_agent_has_a_network() {
    let port = free_port().unwrap();
    let agent = Command::new(support::agent_binary())
        .args(["--runtime", "process", "--insecure-no-auth"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("ESB_AGENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Running(agent);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let (functions, routing) =
        definitions(dir.path(), &[("emulated", "127.0.0.1:5000/x:1", "rie")]);
    let output = gateway()
        .args([
            "--runtime",
            "agent",
            "--agent",
            &format!("http://127.0.0.1:{port}"),
        ])
        .args(["--functions", &functions, "--routing", &routing])
        .args(["--listen", &format!("127.0.0.1:{}", free_port().unwrap())])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("functions.emulated.invoke: rie"),
        "the function and field are named: {stderr}"
    );
}

/// The gateway process, killed if a test fails before stopping it.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Deletes a CNI bridge when dropped, so that a test that fails before the gateway's clean
/// stop leaves no bridge holding its subnet's address for the next run.
struct Bridge(String);

impl Drop for Bridge {
    fn drop(&mut self) {
        if Path::new("/sys/class/net").join(&self.0).exists() {
            let _ = Command::new("ip").args(["link", "del", &self.0]).status();
        }
    }
}

async fn wait_healthy(client: &reqwest::Client, url: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(response) = client.get(format!("{url}/health")).send().await
            && response.status().is_success()
        {
            return;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the gateway exited: {status}");
        }
        assert!(
            Instant::now() < deadline,
            "the gateway never became healthy"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_all_in_one_containerd_gateway_runs_local_registry_images_in_both_invoke_modes() {
    let Some(address) = oci::containerd() else {
        return;
    };
    let image = tokio::task::block_in_place(oci::pushed_image);
    let rie_image = tokio::task::block_in_place(oci::pushed_rie_image);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let dir = tempfile::tempdir().unwrap();
    let cni_conf = dir.path().join("net.d");
    let cni_data = dir.path().join("cni");
    let bridge = format!("esbw{suffix}");
    let _bridge = Bridge(bridge.clone());
    let (functions, routing) = definitions(
        dir.path(),
        &[("api", &image, "runtime-api"), ("rie", &rie_image, "rie")],
    );
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let child = gateway()
        .args([
            "--runtime",
            "containerd",
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .args(["--functions", &functions, "--routing", &routing])
        .arg("--containerd-address")
        .arg(&address)
        .args([
            "--env",
            &format!("gw-{suffix}"),
            "--state-dir",
            "/run/esb-test",
        ])
        .args(["--insecure-registry", &oci::registry()])
        .args(["--cni-subnet", "10.235.0.0/24", "--cni-bridge", &bridge])
        .args(["--cni-network", &bridge])
        .arg("--cni-conf-dir")
        .arg(&cni_conf)
        .arg("--cni-data-dir")
        .arg(&cni_data)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut gateway = Running(child);
    let client = reqwest::Client::new();
    wait_healthy(&client, &url, &mut gateway.0).await;

    for function in ["api", "rie"] {
        let response = client
            .post(format!("{url}/{function}"))
            .json(&json!({"hello": function}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{function}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["echo"]["body"],
            json!({"hello": function}).to_string(),
            "{function}: {answer}"
        );

        // A function error, in both modes: 502 on a route; on the Invoke API, 200 with
        // X-Amz-Function-Error: Unhandled and the function's error document.
        let routed = client
            .post(format!("{url}/{function}?error=Test.Route"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(routed.status(), 502, "{function}");
        let boom = json!({"error": {"type": "Test.Boom", "message": "boom"}});
        let invoked = client
            .post(format!("{url}/2015-03-31/functions/{function}/invocations"))
            .json(&boom)
            .send()
            .await
            .unwrap();
        assert_eq!(invoked.status(), 200, "{function}");
        assert_eq!(
            invoked.headers().get("x-amz-function-error").unwrap(),
            "Unhandled",
            "{function}"
        );
        let document: Value = invoked.json().await.unwrap();
        assert_eq!(document["errorType"], "Test.Boom", "{function}: {document}");
        assert_eq!(document["errorMessage"], "boom", "{function}: {document}");

        // A crash, in both modes: Unhandled, Runtime.ExitError with the exit status.
        let crashed = client
            .post(format!("{url}/2015-03-31/functions/{function}/invocations"))
            .json(&json!({"exit": 3}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            crashed.headers().get("x-amz-function-error").unwrap(),
            "Unhandled",
            "{function}"
        );
        let document: Value = crashed.json().await.unwrap();
        assert_eq!(
            document["errorType"], "Runtime.ExitError",
            "{function}: {document}"
        );
        assert!(
            document["errorMessage"]
                .as_str()
                .unwrap()
                .ends_with("Error: Runtime exited with error: exit status 3"),
            "{function}: {document}"
        );
    }

    assert!(
        Path::new("/sys/class/net").join(&bridge).exists(),
        "the bridge is up"
    );
    assert!(cni_conf.join(format!("{bridge}.conflist")).exists());
    assert!(
        cni_data.join(&bridge).exists(),
        "the lease directory exists"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(gateway.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = gateway.0.wait().unwrap();
    assert!(status.success(), "{status}");

    // A clean stop leaves no CNI bridge, conflist or lease directory behind.
    let bridge_dev = Path::new("/sys/class/net").join(&bridge);
    let conflist = cni_conf.join(format!("{bridge}.conflist"));
    let leases = cni_data.join(&bridge);
    let left: Vec<_> = [&bridge_dev, &conflist, &leases]
        .into_iter()
        .filter(|p| p.exists())
        .collect();
    let _ = Command::new("ip").args(["link", "del", &bridge]).status();
    assert!(left.is_empty(), "left after a clean stop: {left:?}");
}

/// `ctr` against the test's containerd in namespace `namespace`; its stdout.
fn ctr(address: &Path, namespace: &str, args: &[&str]) -> String {
    let output = Command::new("ctr")
        .arg("--address")
        .arg(address)
        .args(["--namespace", namespace])
        .args(args)
        .output()
        .expect("ctr (containerd's client) runs");
    assert!(output.status.success(), "ctr {args:?}: {output:?}");
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A SAM zip function (`Runtime` + `Handler` + `CodeUri` + two `Layers`) on the all-in-one
/// containerd gateway runs as SAM runs it: from the runtime's base image (here a stand-in
/// built by the test and pushed to the local registry, named with `--runtime-image`), its
/// code mounted read-only at `/var/task`, the merged layers read-only at `/opt`, `_HANDLER`
/// naming the module the image's bootstrap loads. Through a route and the Invoke API; with
/// `--watch`, an edit of the code is served by new sandboxes of the same image; after a
/// clean stop no container, active snapshot or mount of its namespace is left.
#[tokio::test(flavor = "multi_thread")]
async fn a_zip_function_runs_on_containerd_from_its_runtimes_base_image_with_task_and_opt_mounted()
{
    let Some(address) = oci::containerd() else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but no containerd to test against"
        );
        return;
    };
    let base = tokio::task::block_in_place(oci::pushed_base_image);
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..6];
    let env = format!("zip-{suffix}");
    let namespace = format!("esb-{env}");
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("src")).unwrap();
    std::fs::write(
        root.join("src/app.json"),
        r#"{"greeting": "loaded from /var/task"}"#,
    )
    .unwrap();
    for (layer, files) in [
        (
            "first",
            &[("shared.txt", "first"), ("only-first.txt", "one")][..],
        ),
        ("second", &[("shared.txt", "second")][..]),
    ] {
        std::fs::create_dir_all(root.join(layer)).unwrap();
        for (name, text) in files {
            std::fs::write(root.join(layer).join(name), text).unwrap();
        }
    }
    let template = r#"
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Globals:
  Function: { Timeout: 10 }
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: python3.12
      Handler: app.handler
      CodeUri: src/
      Layers: [!Ref First, !Ref Second]
      Environment: { Variables: { GREETING: hello } }
      Events:
        Api: { Type: HttpApi, Properties: { Path: /zip, Method: post } }
  First:
    Type: AWS::Serverless::LayerVersion
    Properties: { ContentUri: first }
  Second:
    Type: AWS::Serverless::LayerVersion
    Properties: { ContentUri: second }
"#;
    let template_path = write(root, "template.yaml", template);
    let port = free_port().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let child = gateway()
        .args(["--runtime", "containerd"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--template", &template_path])
        .args(["--runtime-image", &format!("python3.12={base}")])
        .arg("--watch")
        .arg("--code-cache")
        .arg(root.join("cache"))
        .arg("--containerd-address")
        .arg(&address)
        .args(["--env", &env, "--state-dir", "/run/esb-test"])
        .args(["--insecure-registry", &oci::registry()])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut gateway = Running(child);
    let client = reqwest::Client::new();
    wait_healthy(&client, &url, &mut gateway.0).await;

    let check = |body: &Value, via: &str| {
        assert_eq!(
            body["module"]["greeting"], "loaded from /var/task",
            "{via}: {body}"
        );
        assert_eq!(
            body["opt"],
            json!({"shared.txt": "second", "only-first.txt": "one"}),
            "{via}: layers merged in order at /opt: {body}"
        );
        assert_eq!(body["task_read_only"], true, "{via}: {body}");
        assert_eq!(body["opt_read_only"], true, "{via}: {body}");
        assert_eq!(body["env"]["_HANDLER"], "app.handler", "{via}: {body}");
        assert_eq!(
            body["env"]["LAMBDA_TASK_ROOT"], "/var/task",
            "{via}: {body}"
        );
        assert_eq!(
            body["env"]["AWS_EXECUTION_ENV"], "AWS_Lambda_python3.12",
            "{via}: {body}"
        );
        assert_eq!(body["env"]["GREETING"], "hello", "{via}: {body}");
        assert_eq!(body["cwd"], "/var/task", "{via}: {body}");
    };

    let routed = client
        .post(format!("{url}/zip"))
        .json(&json!({"via": "route"}))
        .send()
        .await
        .unwrap();
    assert_eq!(routed.status(), 200);
    let body: Value = routed.json().await.unwrap();
    check(&body, "route");
    assert_eq!(body["event"]["body"], json!({"via": "route"}).to_string());

    let invoked = client
        .post(format!("{url}/2015-03-31/functions/Fn/invocations"))
        .json(&json!({"via": "invoke"}))
        .send()
        .await
        .unwrap();
    assert_eq!(invoked.status(), 200);
    assert!(invoked.headers().get("x-amz-function-error").is_none());
    let proxy: Value = invoked.json().await.unwrap();
    let body: Value = serde_json::from_str(proxy["body"].as_str().unwrap()).unwrap();
    check(&body, "invoke");
    assert_eq!(body["event"], json!({"via": "invoke"}));

    // The bootstrap loads the module once, at start: the edit shows once --watch has
    // replaced the sandbox with one started as the first was.
    std::fs::write(root.join("src/app.json"), r#"{"greeting": "edited"}"#).unwrap();
    let mut answer = Value::Null;
    for _ in 0..150 {
        let response = client
            .post(format!("{url}/zip"))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        answer = response.json().await.unwrap();
        if answer["module"]["greeting"] == "edited" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(answer["module"]["greeting"], "edited", "{answer}");
    assert_eq!(answer["task_read_only"], true, "{answer}");
    assert_eq!(answer["opt"]["shared.txt"], "second", "{answer}");

    assert!(
        !ctr(&address, &namespace, &["containers", "ls", "-q"])
            .trim()
            .is_empty(),
        "a sandbox runs in {namespace}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(gateway.0.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let status = gateway.0.wait().unwrap();
    assert!(status.success(), "{status}");

    let containers = ctr(&address, &namespace, &["containers", "ls", "-q"]);
    assert!(containers.trim().is_empty(), "left: {containers}");
    let active: Vec<String> = ctr(&address, &namespace, &["snapshots", "ls"])
        .lines()
        .filter(|line| line.contains("Active"))
        .map(str::to_owned)
        .collect();
    assert!(active.is_empty(), "snapshots left: {active:?}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let left: Vec<&str> = mounts
        .lines()
        .filter(|line| line.contains(&format!("/{namespace}/")) || line.contains(&env))
        .collect();
    assert!(left.is_empty(), "mounts left: {left:?}");
}
