//! SAM zip functions on managed runtimes, run by the process backend as Lambda's bootstrap
//! runs them: a Python (awslambdaric), a Node (aws-lambda-ric) and a `provided.al2023`
//! (a `lambda_runtime` bootstrap) function, each behind a REST (v1) and an HTTP API (v2)
//! route and the Invoke API, with layers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use esb_gateway::{Gateway, GatewayConfig};
use esb_runtime::managed::{Managed, ManagedConfig};
use serde_json::{Value, json};

use support::clients;

const TEMPLATE: &str = r#"
AWSTemplateFormatVersion: '2010-09-09'
Transform: AWS::Serverless-2016-10-31
Globals:
  Function:
    MemorySize: 256
    Timeout: 10
    Environment:
      Variables: { GREETING: hi }
Resources:
  PyFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: py-fn
      Runtime: python3.12
      Handler: app.handler
      CodeUri: py.zip
      Layers: [!Ref FirstLayer, !Ref SecondLayer]
      Environment:
        Variables: { PYTHONDONTWRITEBYTECODE: "1" }
      Events:
        V1: { Type: Api, Properties: { Path: /py, Method: get, Auth: { Authorizer: NONE } } }
        V2: { Type: HttpApi, Properties: { Path: /py2, Method: get, Auth: { Authorizer: NONE } } }
  NodeFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: node-fn
      Runtime: nodejs20.x
      Handler: index.handler
      CodeUri: node
      Layers: [!Ref NodeLayer]
      Events:
        V1: { Type: Api, Properties: { Path: /node, Method: get, Auth: { Authorizer: NONE } } }
        V2: { Type: HttpApi, Properties: { Path: /node2, Method: get, Auth: { Authorizer: NONE } } }
  RustFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: rust-fn
      Runtime: provided.al2023
      Handler: bootstrap
      CodeUri: rust.zip
      Events:
        V1: { Type: Api, Properties: { Path: /rust, Method: get, Auth: { Authorizer: NONE } } }
        V2: { Type: HttpApi, Properties: { Path: /rust2, Method: get, Auth: { Authorizer: NONE } } }
  FirstLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: { ContentUri: first.zip }
  SecondLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: { ContentUri: second }
  NodeLayer:
    Type: AWS::Serverless::LayerVersion
    Properties: { ContentUri: node_layer }
"#;

/// Zips the tree `dir` (modes kept) into `out`.
fn zip_dir(dir: &Path, out: &Path) {
    fn add(writer: &mut zip::ZipWriter<std::fs::File>, root: &Path, dir: &Path) {
        use std::os::unix::fs::PermissionsExt;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path
                .strip_prefix(root)
                .unwrap()
                .to_string_lossy()
                .into_owned();
            if path.is_dir() {
                add(writer, root, &path);
            } else {
                let mode = std::fs::metadata(&path).unwrap().permissions().mode();
                let options = zip::write::SimpleFileOptions::default().unix_permissions(mode);
                writer.start_file(name, options).unwrap();
                writer.write_all(&std::fs::read(&path).unwrap()).unwrap();
            }
        }
    }
    let mut writer = zip::ZipWriter::new(std::fs::File::create(out).unwrap());
    add(&mut writer, dir, dir);
    writer.finish().unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for entry in std::fs::read_dir(src).unwrap() {
        let path = entry.unwrap().path();
        let target = dst.join(path.file_name().unwrap());
        if path.is_dir() {
            copy_dir(&path, &target);
        } else {
            std::fs::copy(&path, &target).unwrap();
        }
    }
}

/// The project: template, zipped and plain code, zipped and plain layers.
fn project(dir: &Path) -> PathBuf {
    let fixtures = clients::fixtures().join("zip");
    zip_dir(&fixtures.join("python/code"), &dir.join("py.zip"));
    zip_dir(&fixtures.join("python/layer_first"), &dir.join("first.zip"));
    copy_dir(&fixtures.join("python/layer_second"), &dir.join("second"));
    copy_dir(&fixtures.join("node/code"), &dir.join("node"));
    copy_dir(&fixtures.join("node/layer"), &dir.join("node_layer"));
    let bootstrap_dir = dir.join("rust-build");
    std::fs::create_dir_all(&bootstrap_dir).unwrap();
    let binary = esb_testfn::build_bin("zip_fn").expect("build zip_fn");
    std::fs::copy(binary, bootstrap_dir.join("bootstrap")).unwrap();
    zip_dir(&bootstrap_dir, &dir.join("rust.zip"));
    let template = dir.join("template.yaml");
    std::fs::write(&template, TEMPLATE).unwrap();
    template
}

struct Started {
    gateway: Gateway,
    cache: PathBuf,
    _tmp: tempfile::TempDir,
}

/// A gateway over the project, with the host's clients; `None` (skipped) when one is missing.
async fn start() -> Option<Started> {
    let python = clients::python_with(&["awslambdaric"])?;
    let node = clients::node_ric(Path::new("."), "index.handler")?;
    let tmp = tempfile::tempdir().unwrap();
    let template = project(tmp.path());
    let cache = tmp.path().join("cache");
    let managed = Managed::new(
        ManagedConfig::new(&cache, std::env::var("PATH").unwrap())
            .interpreter("python3.12", &python)
            .interpreter("nodejs20.x", &node.command[0])
            .node_ric(&node.command[1]),
    );
    let mut functions = esb_router::Config::from_sam_template(&template, &|_| None).unwrap();
    esb_gateway::packages::prepare(&mut functions, &managed, None).unwrap();
    let config = GatewayConfig::new(functions, "127.0.0.1:0".parse().unwrap());
    let gateway = Gateway::start(
        config,
        vec![support::process_runtime(Arc::new(
            esb_runtime::logs::TerminalLogSink,
        ))],
    )
    .await
    .unwrap();
    Some(Started {
        gateway,
        cache,
        _tmp: tmp,
    })
}

async fn get(gateway: &Gateway, path: &str) -> (u16, Value) {
    let response = support::client()
        .get(format!("{}{path}?q=1", gateway.url()))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

async fn invoke(gateway: &Gateway, name: &str, event: Value) -> (u16, Option<String>, Value) {
    let response = support::client()
        .post(format!(
            "{}/2015-03-31/functions/{name}/invocations",
            gateway.url()
        ))
        .body(event.to_string())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let error = response
        .headers()
        .get("x-amz-function-error")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, error, response.json().await.unwrap())
}

#[tokio::test]
async fn python_node_and_provided_zip_functions_answer_v1_v2_and_invoke() {
    let Some(Started {
        gateway,
        cache,
        _tmp: _keep,
    }) = start().await
    else {
        return;
    };
    let cases = [
        (
            "py-fn",
            "/py",
            "python",
            "app.handler",
            Some("AWS_Lambda_python3.12"),
            "KeyError",
        ),
        (
            "node-fn",
            "/node",
            "node",
            "index.handler",
            Some("AWS_Lambda_nodejs20.x"),
            "CustomFailure",
        ),
        (
            "rust-fn",
            "/rust",
            "rust",
            "bootstrap",
            None,
            "CustomFailure",
        ),
    ];
    for (name, path, lang, handler, execution_env, error_type) in cases {
        // v1: a REST API proxy event.
        let (status, v1) = get(&gateway, path).await;
        assert_eq!(status, 200, "{name} v1: {v1}");
        assert_eq!(v1["lang"], lang);
        assert_eq!(v1["event"]["httpMethod"], "GET", "{name}: {v1}");
        assert_eq!(v1["event"]["path"], path);
        assert_eq!(v1["event"]["queryStringParameters"]["q"], "1");
        // Context fields.
        assert_eq!(v1["function_name"], name);
        assert_eq!(v1["memory"], 256);
        assert!(
            v1["arn"]
                .as_str()
                .unwrap()
                .ends_with(&format!(":function:{name}")),
            "{v1}"
        );
        assert!(!v1["request_id"].as_str().unwrap().is_empty());
        assert_eq!(v1["remaining"], true);
        // Lambda's environment: the code dir is LAMBDA_TASK_ROOT and the working dir.
        let env = &v1["env"];
        assert_eq!(env["_HANDLER"], handler, "{name}: {env}");
        assert_eq!(env["LAMBDA_TASK_ROOT"], v1["cwd"], "{name}: {env}");
        assert_eq!(env["GREETING"], "hi");
        assert_eq!(env["AWS_LAMBDA_FUNCTION_NAME"], name);
        if let Some(execution_env) = execution_env {
            assert_eq!(env["AWS_EXECUTION_ENV"], execution_env);
        }
        if name != "node-fn" {
            // Zipped code runs from the cache.
            let root = env["LAMBDA_TASK_ROOT"].as_str().unwrap();
            assert!(
                Path::new(root).starts_with(cache.join("code")),
                "{name}: {root}"
            );
        }
        // v2: an HTTP API event; the same warm sandbox answers.
        let (status, v2) = get(&gateway, &format!("{path}2")).await;
        assert_eq!(status, 200, "{name} v2: {v2}");
        assert_eq!(v2["event"]["version"], "2.0", "{name}: {v2}");
        assert_eq!(v2["event"]["rawPath"], format!("{path}2"));
        assert_eq!(v2["pid"], v1["pid"], "{name}: warm reuse");

        // The Invoke API: the event as sent, the answer as returned.
        let (status, error, answer) = invoke(&gateway, name, json!({"hello": name})).await;
        assert_eq!((status, error), (200, None), "{name}: {answer}");
        let body: Value = serde_json::from_str(answer["body"].as_str().unwrap()).unwrap();
        assert_eq!(body["event"], json!({"hello": name}));
        // A function error keeps its errorType.
        let (status, error, answer) = invoke(&gateway, name, json!({"fail": true})).await;
        assert_eq!(status, 200);
        assert_eq!(error.as_deref(), Some("Unhandled"), "{name}: {answer}");
        assert_eq!(answer["errorType"], error_type, "{name}: {answer}");
        // Behind a route, a function error is a 502.
        let response = support::client()
            .get(format!("{}{path}?fail=1", gateway.url()))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), 502, "{name}");
    }
    gateway.shutdown().await;
}

#[tokio::test]
async fn layers_merge_in_order_into_the_functions_paths() {
    let Some(Started {
        gateway,
        cache,
        _tmp: _keep,
    }) = start().await
    else {
        return;
    };
    let (status, py) = get(&gateway, "/py").await;
    assert_eq!(status, 200, "{py}");
    // `only_first` is only in the first layer; `helper` is in both and the second wins.
    assert_eq!(py["only_first"], true);
    assert_eq!(py["layer"], "second");
    let opt = cache.join("opt");
    let pythonpath = py["env"]["PYTHONPATH"].as_str().unwrap();
    assert!(
        pythonpath.starts_with(&opt.display().to_string()),
        "{pythonpath}"
    );
    assert!(
        pythonpath.contains("/python/lib/python3.12/site-packages:"),
        "{pythonpath}"
    );
    assert!(py["env"]["PATH"].as_str().unwrap().ends_with("/bin"));
    assert!(
        py["env"]["LD_LIBRARY_PATH"]
            .as_str()
            .unwrap()
            .ends_with("/lib")
    );

    let (status, node) = get(&gateway, "/node").await;
    assert_eq!(status, 200, "{node}");
    assert_eq!(node["layer"], "node-layer");
    let node_path = node["env"]["NODE_PATH"].as_str().unwrap();
    assert!(
        node_path.contains("/nodejs/node20/node_modules:"),
        "{node_path}"
    );
    gateway.shutdown().await;
}

#[tokio::test]
async fn a_missing_client_is_a_start_up_error_naming_function_runtime_and_install() {
    let tmp = tempfile::tempdir().unwrap();
    let template = project(tmp.path());
    let managed = Managed::new(
        ManagedConfig::new(tmp.path().join("cache"), "/nonexistent")
            .node_ric(tmp.path().join("nowhere/aws-lambda-ric")),
    );
    let mut functions = esb_router::Config::from_sam_template(&template, &|_| None).unwrap();
    let problems = esb_gateway::packages::prepare(&mut functions, &managed, None)
        .unwrap_err()
        .to_string();
    assert!(
        problems.contains("functions.py-fn.runtime: python3.12: no Python with awslambdaric"),
        "{problems}"
    );
    assert!(problems.contains("pip install awslambdaric"), "{problems}");
    assert!(
        problems.contains("functions.node-fn.runtime: nodejs20.x:"),
        "{problems}"
    );
    // The provided function has its bootstrap: no problem.
    assert!(!problems.contains("rust-fn"), "{problems}");
    let _ = Arc::new(());
}
