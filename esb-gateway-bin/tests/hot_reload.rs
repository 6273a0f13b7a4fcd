//! `--watch`: an edited handler answers the next request; a broken template keeps the running
//! configuration serving and prints its problem.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use esb_gateway::GatewayConfig;
use esb_gateway::hot_reload::{DEFAULT_POLL, spawn, targets};
use esb_runtime::managed::{Managed, ManagedConfig};
use esb_testfn::ports::free_port;
use support::clients;

fn handler(answer: &str) -> String {
    format!(
        "import helper\n\ndef handler(event, context):\n    return {{\"answer\": \"{answer}\", \"layer\": helper.WHO}}\n"
    )
}

async fn answer(gateway: &esb_gateway::Gateway) -> String {
    answers(gateway).await.0
}

/// The handler's answer and the layer's value.
async fn answers(gateway: &esb_gateway::Gateway) -> (String, String) {
    let body: serde_json::Value = support::client()
        .post(format!(
            "{}/2015-03-31/functions/reload/invocations",
            gateway.url()
        ))
        .body("{}")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = |key: &str| body[key].as_str().unwrap_or_default().to_owned();
    (text("answer"), text("layer"))
}

#[tokio::test]
async fn an_edited_handler_answers_the_next_requests() {
    let Some(python) = clients::python_with(&["awslambdaric"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let code = tmp.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    std::fs::write(code.join("app.py"), handler("one")).unwrap();
    let layer = tmp.path().join("layer/python");
    std::fs::create_dir_all(&layer).unwrap();
    std::fs::write(layer.join("helper.py"), "WHO = 'layer-1'\n").unwrap();
    let functions = format!(
        "functions:\n  reload:\n    runtime: python3.12\n    handler: app.handler\n    code: {}\n    \
         layers: [{}]\n    scaling: {{ idle_timeout: 3600 }}\n",
        code.display(),
        tmp.path().join("layer").display()
    );
    let loaded = esb_router::Config::from_yaml_str(&functions, "routes: []\n", &|_| None).unwrap();
    let managed = Arc::new(Managed::new(
        ManagedConfig::new(tmp.path().join("cache"), std::env::var("PATH").unwrap())
            .interpreter("python3.12", &python),
    ));
    let watched = targets(&loaded);
    assert_eq!(watched.len(), 1);
    let mut config = loaded.clone();
    esb_gateway::packages::prepare(&mut config, &managed, None).unwrap();
    let gateway = support::start(GatewayConfig::new(config, "127.0.0.1:0".parse().unwrap())).await;
    let watcher = spawn(gateway.pool().clone(), watched, managed, DEFAULT_POLL);

    // Warm: the same sandbox keeps answering the old code.
    assert_eq!(answer(&gateway).await, "one");
    assert_eq!(answer(&gateway).await, "one");
    for edit in ["two", "three"] {
        std::fs::write(code.join("app.py"), handler(edit)).unwrap();
        // The watcher replaces the warm sandbox once the edit has settled (two polls).
        let mut seen = String::new();
        for _ in 0..100 {
            seen = answer(&gateway).await;
            if seen == edit {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(seen, edit);
        // And it stays: the new sandbox is not replaced again.
        assert_eq!(answer(&gateway).await, edit);
    }
    // A layer edit: the layers are merged anew and the next sandbox sees them.
    assert_eq!(answers(&gateway).await.1, "layer-1");
    std::fs::write(layer.join("helper.py"), "WHO = 'layer-2'\n").unwrap();
    let mut seen = String::new();
    for _ in 0..100 {
        seen = answers(&gateway).await.1;
        if seen == "layer-2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, "layer-2");
    assert_eq!(
        answers(&gateway).await,
        ("three".to_owned(), "layer-2".to_owned())
    );
    watcher.abort();
    gateway.shutdown().await;
}

#[test]
fn a_broken_template_keeps_the_running_configuration_and_prints_the_problem() {
    let tmp = tempfile::tempdir().unwrap();
    let code = tmp.path().join("code");
    std::fs::create_dir_all(&code).unwrap();
    let bootstrap = code.join("bootstrap");
    std::fs::copy(esb_testfn::build_bin("zip_fn").unwrap(), &bootstrap).unwrap();
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    let template = tmp.path().join("template.yaml");
    let good = "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      \
                Runtime: provided.al2023\n      Handler: bootstrap\n      CodeUri: code\n      \
                FunctionName: fn\n";
    std::fs::write(&template, good).unwrap();
    let port = free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
        .arg("--watch")
        .arg("--template")
        .arg(&template)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args([
            "--code-cache",
            &tmp.path().join("cache").display().to_string(),
        ])
        .env_remove("ESB_TEMPLATE")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut child = Stopped(child);
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let wait_for = |what: &str| -> String {
        let mut seen = Vec::new();
        while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
            if line.contains(what) {
                return line;
            }
            seen.push(line);
        }
        panic!("no line with {what:?} in {seen:#?}");
    };
    wait_for("esb-gateway listening");
    let invoke = || -> u16 {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            support::client()
                .post(format!(
                    "http://127.0.0.1:{port}/2015-03-31/functions/fn/invocations"
                ))
                .body("{}")
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    assert_eq!(invoke(), 200);
    std::fs::write(&template, good.replace("provided.al2023", "java21")).unwrap();
    let problem = wait_for("is not a runtime ESB runs");
    assert!(problem.contains("Runtime"), "{problem}");
    assert_eq!(invoke(), 200, "the running configuration keeps serving");
    // A graceful stop, so the gateway destroys its sandbox.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
}

/// A child process stopped with SIGTERM (and waited for) when dropped, even by a failing
/// assertion.
struct Stopped(std::process::Child);

impl Drop for Stopped {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.0.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.0.wait();
    }
}

/// The gateway binary with `--watch` over `functions.yml` and `routing.yml` in `dir`,
/// and its standard error line by line.
fn watched_gateway(
    dir: &std::path::Path,
    port: u16,
) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
        .arg("--watch")
        .arg("--functions")
        .arg(dir.join("functions.yml"))
        .arg("--routing")
        .arg(dir.join("routing.yml"))
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env_remove("ESB_TEMPLATE")
        .env_remove("JWT_SECRET_KEY")
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    (child, lines)
}

fn wait_for(lines: &std::sync::mpsc::Receiver<String>, what: &str) -> String {
    let mut seen = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(20)) {
        if line.contains(what) {
            return line;
        }
        seen.push(line);
    }
    panic!("no line with {what:?} in {seen:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_edit_adds_and_removes_routes_and_functions_without_dropping_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let http_fn = support::http_fn().display().to_string();
    let testfn = support::testfn().display().to_string();
    let functions = |with_new: bool| {
        let mut yaml = format!(
            "functions:\n  web: {{ command: [\"{http_fn}\"] }}\n  slow: {{ command: [\"{testfn}\"], timeout: 10 }}\n"
        );
        if with_new {
            yaml.push_str(&format!("  web2: {{ command: [\"{http_fn}\"] }}\n"));
        }
        yaml
    };
    let routes = |paths: &[(&str, &str)]| {
        let mut yaml = "routes:\n".to_owned();
        for (path, function) in paths {
            yaml.push_str(&format!(
                "  - {{ path: \"{path}\", method: GET, function: {function}, auth: none }}\n"
            ));
        }
        yaml
    };
    std::fs::write(tmp.path().join("functions.yml"), functions(false)).unwrap();
    std::fs::write(tmp.path().join("routing.yml"), routes(&[("/a", "web")])).unwrap();
    let port = free_port().unwrap();
    let (child, lines) = watched_gateway(tmp.path(), port);
    let mut child = Stopped(child);
    let base = format!("http://127.0.0.1:{port}");
    let lines = tokio::task::spawn_blocking(move || {
        wait_for(&lines, "esb-gateway listening");
        lines
    })
    .await
    .unwrap();
    let get = |path: &str| {
        let url = format!("{base}{path}");
        async move {
            support::client()
                .get(url)
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(get("/a").await, 200);
    assert_eq!(get("/b").await, 404);

    // A long invocation in flight across the reload.
    let slow = tokio::spawn(
        support::client()
            .post(format!("{base}/2015-03-31/functions/slow/invocations"))
            .body(r#"{"sleep_ms": 2000}"#)
            .send(),
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    // A new function and a new route; the old route goes.
    std::fs::write(tmp.path().join("functions.yml"), functions(true)).unwrap();
    std::fs::write(tmp.path().join("routing.yml"), routes(&[("/b", "web2")])).unwrap();
    let lines = tokio::task::spawn_blocking(move || {
        wait_for(&lines, "configuration reloaded");
        lines
    })
    .await
    .unwrap();
    assert_eq!(get("/b").await, 200);
    assert_eq!(get("/a").await, 404);
    let slow = slow
        .await
        .unwrap()
        .expect("the in-flight request is answered");
    assert_eq!(slow.status().as_u16(), 200);
    drop(lines);

    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.0.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    assert!(child.0.wait().unwrap().success());
}
