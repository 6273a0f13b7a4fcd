//! Tables and buckets of a SAM template (and of functions.yml's `resources:`) created by the
//! real `esb-gateway` binary at start in a real S3 + DynamoDB (`moto_server`), as boto3 sees
//! them; a second start leaves them as they are; a function's `!Ref` / `!GetAtt` variables;
//! an invalid key schema and an unreachable service stop start-up with an error naming them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::clients;
use support::moto::{Moto, free_port};

const TEMPLATE: &str = r#"
Resources:
  Items:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: items
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - { AttributeName: pk, AttributeType: S }
        - { AttributeName: sk, AttributeType: S }
        - { AttributeName: email, AttributeType: S }
        - { AttributeName: created, AttributeType: N }
      KeySchema:
        - { AttributeName: pk, KeyType: HASH }
        - { AttributeName: sk, KeyType: RANGE }
      GlobalSecondaryIndexes:
        - IndexName: by-email
          KeySchema: [{ AttributeName: email, KeyType: HASH }]
          Projection: { ProjectionType: ALL }
      LocalSecondaryIndexes:
        - IndexName: by-created
          KeySchema:
            - { AttributeName: pk, KeyType: HASH }
            - { AttributeName: created, KeyType: RANGE }
          Projection: { ProjectionType: KEYS_ONLY }
      StreamSpecification: { StreamViewType: NEW_IMAGE }
  Sessions:
    Type: AWS::Serverless::SimpleTable
    Properties:
      PrimaryKey: { Name: sessionId, Type: String }
  Uploads:
    Type: AWS::S3::Bucket
    Properties:
      LifecycleConfiguration:
        Rules:
          - { Id: expire-tmp, Status: Enabled, Prefix: tmp/, ExpirationInDays: 3 }
      CorsConfiguration:
        CorsRules:
          - AllowedMethods: [GET, PUT]
            AllowedOrigins: ["https://app.example"]
            AllowedHeaders: ["*"]
            MaxAge: 600
  Env:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: env
      Runtime: python3.12
      Handler: resource_env.handler
      CodeUri: CODE
      Environment:
        Variables:
          TABLE: !Ref Items
          TABLE_ARN: !GetAtt Items.Arn
          STREAM_ARN: !GetAtt Items.StreamArn
          SIMPLE: !Ref Sessions
          BUCKET: !Ref Uploads
          BUCKET_ARN: !GetAtt Uploads.Arn
"#;

/// The gateway binary without the variables a developer's shell may set.
fn gateway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esb-gateway"));
    for var in [
        "ESB_TEMPLATE",
        "ESB_FUNCTIONS",
        "ESB_ROUTING",
        "ESB_S3_ENDPOINT",
        "ESB_DYNAMODB_ENDPOINT",
        "ESB_RUNTIME_COMMANDS",
        "AWS_REGION",
    ] {
        command.env_remove(var);
    }
    command.env("RUST_LOG", "info");
    command
}

/// The project: template.yaml with `CodeUri` at the Python fixtures.
fn project(template: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let code = clients::fixture_functions("python");
    std::fs::write(
        dir.path().join("template.yaml"),
        template.replace("CODE", &code.display().to_string()),
    )
    .unwrap();
    dir
}

/// A started gateway: stopped with SIGTERM when dropped; its standard error collected.
struct Running {
    child: Child,
    port: u16,
    stderr: std::sync::mpsc::Receiver<String>,
}

impl Running {
    fn start(dir: &Path, python: &Path, moto: &str) -> Self {
        let port = free_port().unwrap();
        let mut child = gateway()
            .arg("--template")
            .arg(dir.join("template.yaml"))
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--code-cache", &dir.join("cache").display().to_string()])
            .args([
                "--runtime-command",
                &format!("python3.12={}", python.display()),
            ])
            .args(["--dynamodb-endpoint", moto, "--s3-endpoint", moto])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = lines(&mut child);
        Self {
            child,
            port,
            stderr,
        }
    }

    /// The lines up to the one containing `what` (panics after 60 s without it).
    fn wait_for(&self, what: &str) -> Vec<String> {
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(what);
                    seen.push(line);
                    if found {
                        return seen;
                    }
                }
                Err(_) => break,
            }
        }
        panic!("no line with {what:?} in {seen:#?}");
    }

    fn stop(mut self) {
        self.terminate();
    }

    fn terminate(&mut self) {
        if let Ok(pid) = i32::try_from(self.child.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        let _ = self.child.wait();
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.terminate();
    }
}

/// What boto3 sees in the service at `url` (after putting an item when `put` says).
fn boto3_view(python: &Path, url: &str, put: Option<(&str, &str)>) -> Value {
    boto3_view_as(python, url, put, ("testing", "testing"))
}

/// [`boto3_view`] with these keys.
fn boto3_view_as(
    python: &Path,
    url: &str,
    put: Option<(&str, &str)>,
    (key, secret): (&str, &str),
) -> Value {
    let mut command = Command::new(python);
    command
        .arg(clients::fixtures().join("boto3/provisioned.py"))
        .arg(url)
        .env("AWS_ACCESS_KEY_ID", key)
        .env("AWS_SECRET_ACCESS_KEY", secret)
        .env_remove("AWS_PROFILE")
        .env_remove("AWS_ENDPOINT_URL");
    if let Some((table, key)) = put {
        command.args(["put", table, key]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "boto3: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Waits (up to 120 s) for `child` to exit; its status and standard error.
fn exit_of(mut child: Child) -> (std::process::ExitStatus, String) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let mut stderr = String::new();
            child
                .stderr
                .take()
                .unwrap()
                .read_to_string(&mut stderr)
                .unwrap();
            return (status, stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("esb-gateway did not stop");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn template_tables_and_buckets_are_created_once_and_seen_by_boto3() {
    let Some(python) = clients::python_with(&["boto3", "awslambdaric"]) else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let dir = project(TEMPLATE);
    let gateway = Running::start(dir.path(), &python, &moto.url());
    let log = gateway.wait_for("esb-gateway listening");
    for created in [
        "table items created",
        "table Sessions created",
        "bucket uploads created",
    ] {
        assert!(
            log.iter().any(|l| l.contains(created)),
            "{created:?} in {log:#?}"
        );
    }

    let seen = boto3_view(&python, &moto.url(), None);
    let items = &seen["tables"]["items"];
    assert_eq!(items["status"], "ACTIVE");
    assert_eq!(
        items["keys"],
        json!([
            { "AttributeName": "pk", "KeyType": "HASH" },
            { "AttributeName": "sk", "KeyType": "RANGE" },
        ])
    );
    assert_eq!(items["gsi"][0]["name"], "by-email");
    assert_eq!(
        items["gsi"][0]["keys"],
        json!([{ "AttributeName": "email", "KeyType": "HASH" }])
    );
    assert_eq!(items["gsi"][0]["projection"]["ProjectionType"], "ALL");
    assert_eq!(items["lsi"][0]["name"], "by-created");
    assert_eq!(
        items["lsi"][0]["keys"][1],
        json!({ "AttributeName": "created", "KeyType": "RANGE" })
    );
    assert_eq!(items["billing"], "PAY_PER_REQUEST");
    assert_eq!(
        items["stream"],
        json!({ "StreamEnabled": true, "StreamViewType": "NEW_IMAGE" })
    );
    let sessions = &seen["tables"]["Sessions"];
    assert_eq!(
        sessions["keys"],
        json!([{ "AttributeName": "sessionId", "KeyType": "HASH" }])
    );
    assert_eq!(
        sessions["attributes"],
        json!([{ "AttributeName": "sessionId", "AttributeType": "S" }])
    );
    let uploads = &seen["buckets"]["uploads"];
    assert_eq!(uploads["lifecycle"][0]["ID"], "expire-tmp");
    assert_eq!(uploads["lifecycle"][0]["Status"], "Enabled");
    assert_eq!(uploads["lifecycle"][0]["Expiration"]["Days"], 3);
    assert_eq!(uploads["lifecycle"][0]["Filter"]["Prefix"], "tmp/");
    assert_eq!(
        uploads["cors"],
        json!([{
            "AllowedHeaders": ["*"],
            "AllowedMethods": ["GET", "PUT"],
            "AllowedOrigins": ["https://app.example"],
            "MaxAgeSeconds": 600,
        }])
    );

    // The function's environment: the names and ARNs of what was created.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let env: Value = runtime.block_on(async {
        let response = support::client()
            .post(format!(
                "http://127.0.0.1:{}/2015-03-31/functions/env/invocations",
                gateway.port
            ))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        response.json().await.unwrap()
    });
    assert_eq!(env["TABLE"], "items");
    assert_eq!(
        env["TABLE_ARN"],
        "arn:aws:dynamodb:us-east-1:000000000000:table/items"
    );
    let stream = env["STREAM_ARN"].as_str().unwrap();
    assert!(
        stream.starts_with("arn:aws:dynamodb:us-east-1:000000000000:table/items/stream/"),
        "{stream}"
    );
    assert_eq!(env["SIMPLE"], "Sessions");
    assert_eq!(env["BUCKET"], "uploads");
    assert_eq!(env["BUCKET_ARN"], "arn:aws:s3:::uploads");
    gateway.stop();

    // A second start finds everything and leaves it as it is: the item put in between stays.
    boto3_view(&python, &moto.url(), Some(("items", "kept")));
    let again = Running::start(dir.path(), &python, &moto.url());
    let log = again.wait_for("esb-gateway listening");
    for kept in [
        "table items exists: left as is",
        "table Sessions exists: left as is",
        "bucket uploads exists: left as is",
    ] {
        assert!(log.iter().any(|l| l.contains(kept)), "{kept:?} in {log:#?}");
    }
    for name in ["items", "Sessions", "uploads"] {
        let created = format!("{name} created");
        assert!(!log.iter().any(|l| l.contains(&created)), "{log:#?}");
    }
    let after = boto3_view(&python, &moto.url(), None);
    assert_eq!(after["tables"]["items"]["items"], 1);
    assert_eq!(after["tables"], {
        let mut before = seen["tables"].clone();
        before["items"]["items"] = json!(1);
        before
    });
    assert_eq!(after["buckets"], seen["buckets"]);
    again.stop();
}

/// A `moto_server` that checks every request's SigV4 signature and IAM policy (after the
/// first three requests, which make a user, its keys and an allow-all policy); killed when
/// dropped.
struct CheckingMoto {
    child: Child,
    port: u16,
    key: String,
    secret: String,
}

impl CheckingMoto {
    fn start(python: &Path) -> Option<Self> {
        let program = support::moto::program()?;
        let port = free_port().unwrap();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .env("INITIAL_NO_AUTH_ACTION_COUNT", "3")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut moto = Self {
            child,
            port,
            key: String::new(),
            secret: String::new(),
        };
        support::moto::wait_for_port(port);
        let script = format!(
            r#"
import json, boto3
iam = boto3.client("iam", endpoint_url="http://127.0.0.1:{port}", region_name="us-east-1")
iam.create_user(UserName="esb")
key = iam.create_access_key(UserName="esb")["AccessKey"]
iam.put_user_policy(UserName="esb", PolicyName="all", PolicyDocument=json.dumps(
    {{"Version": "2012-10-17", "Statement": [{{"Effect": "Allow", "Action": "*", "Resource": "*"}}]}}))
print(key["AccessKeyId"], key["SecretAccessKey"])
"#
        );
        let output = Command::new(python)
            .args(["-c", &script])
            .env("AWS_ACCESS_KEY_ID", "bootstrap")
            .env("AWS_SECRET_ACCESS_KEY", "bootstrap")
            .env_remove("AWS_PROFILE")
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let keys = String::from_utf8(output.stdout).unwrap();
        let (key, secret) = keys.trim().split_once(' ').unwrap();
        moto.key = key.to_owned();
        moto.secret = secret.to_owned();
        Some(moto)
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for CheckingMoto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// functions.yml with `services` at `url` signed with `key`/`secret`, a table and a bucket
/// with a lifecycle rule, in `dir`; the gateway started on it (not waited for).
fn start_on_functions_yml(dir: &Path, url: &str, keys: (&str, &str), args: &[&str]) -> Child {
    start_with_keys(dir, url, keys, keys, args)
}

/// As [`start_on_functions_yml`], DynamoDB's requests signed with `dynamodb_keys` and S3's
/// with `s3_keys`.
fn start_with_keys(
    dir: &Path,
    url: &str,
    dynamodb_keys: (&str, &str),
    s3_keys: (&str, &str),
    args: &[&str],
) -> Child {
    let functions = dir.join("functions.yml");
    let keys =
        |(key, secret): (&str, &str)| format!("access_key: \"{key}\", secret_key: \"{secret}\"");
    let (dynamodb_keys, s3_keys) = (keys(dynamodb_keys), keys(s3_keys));
    std::fs::write(
        &functions,
        format!(
            "services:\n  dynamodb: {{ endpoint: \"{url}\", {dynamodb_keys} }}\n  s3: {{ endpoint: \"{url}\", {s3_keys} }}\n\
             resources:\n  Orders:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      \
             BillingMode: PAY_PER_REQUEST\n      AttributeDefinitions: [{{ AttributeName: id, AttributeType: N }}]\n      \
             KeySchema: [{{ AttributeName: id, KeyType: HASH }}]\n  Reports:\n    Type: AWS::S3::Bucket\n    Properties:\n      \
             LifecycleConfiguration: {{ Rules: [{{ Status: Enabled, AbortIncompleteMultipartUpload: {{ DaysAfterInitiation: 2 }} }}] }}\n\
             functions:\n  f:\n    command: [/bin/true]\n    environment: {{ TABLE: !Ref Orders }}\n",
        ),
    )
    .unwrap();
    let routing = dir.join("routing.yml");
    std::fs::write(&routing, "routes: []\n").unwrap();
    gateway()
        .arg("--functions")
        .arg(&functions)
        .arg("--routing")
        .arg(&routing)
        .args(["--listen", &format!("127.0.0.1:{}", free_port().unwrap())])
        .args(["--provision-timeout", "5"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn requests_are_signed_as_a_checking_service_expects() {
    let Some(python) = clients::python_with(&["boto3"]) else {
        return;
    };
    let Some(moto) = CheckingMoto::start(&python) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // A wrong secret: the service's refusal stops start-up, naming service and resource.
    let child = start_on_functions_yml(dir.path(), &moto.url(), (&moto.key, "not-the-secret"), &[]);
    let (status, stderr) = exit_of(child);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "DynamoDB at {}: DescribeTable of \"Orders\" failed: HTTP 403 SignatureDoesNotMatch",
            moto.url()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
    // The right one: created, as boto3 with the same keys sees.
    let child = start_on_functions_yml(dir.path(), &moto.url(), (&moto.key, &moto.secret), &[]);
    let mut running = Running {
        port: 0,
        stderr: std::sync::mpsc::channel().1,
        child,
    };
    running.stderr = lines(&mut running.child);
    let log = running.wait_for("esb-gateway listening");
    assert!(
        log.iter().any(|l| l.contains("table Orders created")),
        "{log:#?}"
    );
    assert!(
        log.iter().any(|l| l.contains("bucket reports created")),
        "{log:#?}"
    );
    assert!(!log.iter().any(|l| l.contains(&moto.secret)), "{log:#?}");
    let seen = boto3_view_as(&python, &moto.url(), None, (&moto.key, &moto.secret));
    assert_eq!(
        seen["tables"]["Orders"]["keys"],
        json!([{ "AttributeName": "id", "KeyType": "HASH" }])
    );
    assert_eq!(
        seen["buckets"]["reports"]["lifecycle"][0]["AbortIncompleteMultipartUpload"],
        json!({ "DaysAfterInitiation": 2 })
    );
    running.stop();
    // S3's keys wrong: HeadBucket's 403 (a HEAD answer has no error document) is told as a
    // bucket (made above) that exists but these keys cannot reach in this region.
    let child = start_with_keys(
        dir.path(),
        &moto.url(),
        (&moto.key, &moto.secret),
        (&moto.key, "not-the-secret"),
        &[],
    );
    let (status, stderr) = exit_of(child);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "S3 at {}: bucket \"reports\" exists but is not accessible with the configured keys in region \"us-east-1\" (HeadBucket: HTTP 403)",
            moto.url()
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("no error document"), "{stderr}");
    assert!(!stderr.contains("not-the-secret"), "{stderr}");
}

#[test]
fn with_agents_the_gateway_creates_them() {
    let Some(python) = clients::python_with(&["boto3"]) else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let agent_port = free_port().unwrap();
    let agent = Command::new(support::agent_binary())
        .args(["--runtime", "process", "--insecure-no-auth"])
        .args(["--listen", &format!("127.0.0.1:{agent_port}")])
        .env_remove("ESB_AGENT_TOKEN")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _agent = Running {
        child: agent,
        port: agent_port,
        stderr: std::sync::mpsc::channel().1,
    };
    support::moto::wait_for_port(agent_port);
    let dir = tempfile::tempdir().unwrap();
    let agent_url = format!("http://127.0.0.1:{agent_port}");
    let child = start_on_functions_yml(
        dir.path(),
        &moto.url(),
        ("testing", "testing"),
        &["--runtime", "agent", "--agent", &agent_url],
    );
    let mut running = Running {
        port: 0,
        stderr: std::sync::mpsc::channel().1,
        child,
    };
    running.stderr = lines(&mut running.child);
    let log = running.wait_for("esb-gateway listening");
    assert!(
        log.iter().any(|l| l.contains("table Orders created")),
        "{log:#?}"
    );
    let seen = boto3_view(&python, &moto.url(), None);
    assert_eq!(
        seen["tables"]["Orders"]["keys"],
        json!([{ "AttributeName": "id", "KeyType": "HASH" }])
    );
    assert_eq!(
        seen["buckets"]["reports"]["lifecycle"][0]["Status"],
        "Enabled"
    );
    running.stop();
}

/// The standard error of `child`, line by line.
fn lines(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    rx
}

#[test]
fn functions_yml_resources_are_created_too() {
    let Some(python) = clients::python_with(&["boto3"]) else {
        return;
    };
    let Some(moto) = Moto::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let functions = dir.path().join("functions.yml");
    std::fs::write(
        &functions,
        format!(
            "services:\n  dynamodb: {{ endpoint: \"{url}\" }}\n  s3: {{ endpoint: \"{url}\" }}\n\
             resources:\n  Orders:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      \
             BillingMode: PAY_PER_REQUEST\n      AttributeDefinitions: [{{ AttributeName: id, AttributeType: N }}]\n      \
             KeySchema: [{{ AttributeName: id, KeyType: HASH }}]\n  Reports:\n    Type: AWS::S3::Bucket\n\
             functions:\n  f:\n    command: [/bin/true]\n    environment: {{ TABLE: !Ref Orders }}\n",
            url = moto.url()
        ),
    )
    .unwrap();
    let routing = dir.path().join("routing.yml");
    std::fs::write(&routing, "routes: []\n").unwrap();
    let port = free_port().unwrap();
    let child = gateway()
        .arg("--functions")
        .arg(&functions)
        .arg("--routing")
        .arg(&routing)
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut running = Running {
        child,
        port,
        stderr: std::sync::mpsc::channel().1,
    };
    running.stderr = lines(&mut running.child);
    running.wait_for("esb-gateway listening");
    let seen = boto3_view(&python, &moto.url(), None);
    assert_eq!(
        seen["tables"]["Orders"]["keys"],
        json!([{ "AttributeName": "id", "KeyType": "HASH" }])
    );
    assert_eq!(
        seen["buckets"]["reports"]["lifecycle"],
        "NoSuchLifecycleConfiguration"
    );
    running.stop();
}

#[test]
fn an_invalid_key_schema_stops_check_and_start_naming_the_resource() {
    let bad = TEMPLATE.replace(
        "        - { AttributeName: sk, KeyType: RANGE }\n      GlobalSecondaryIndexes",
        "        - { AttributeName: sk, KeyType: HASH }\n      GlobalSecondaryIndexes",
    );
    let dir = project(&bad);
    for check in [true, false] {
        let mut command = gateway();
        if check {
            command.arg("--check");
        }
        let child = command
            .arg("--template")
            .arg(dir.path().join("template.yaml"))
            .args(["--listen", &format!("127.0.0.1:{}", free_port().unwrap())])
            .args([
                "--code-cache",
                &dir.path().join("cache").display().to_string(),
            ])
            .args(["--runtime-command", "python3.12=/bin/true"])
            .args([
                "--dynamodb-endpoint",
                "http://127.0.0.1:9",
                "--s3-endpoint",
                "http://127.0.0.1:9",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (status, stderr) = exit_of(child);
        assert!(!status.success(), "check={check}: {stderr}");
        assert!(
            stderr.contains(
                "Resources.Items: KeySchema: has 2 HASH and 0 RANGE elements: a key has exactly one HASH element"
            ),
            "check={check}: {stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
}

#[test]
fn an_unreachable_service_stops_start_up_naming_it() {
    let template = "Resources:\n  Fn:\n    Type: AWS::Serverless::Function\n    Properties:\n      \
                    Runtime: python3.12\n      Handler: resource_env.handler\n      CodeUri: CODE\n  \
                    T:\n    Type: AWS::Serverless::SimpleTable\n";
    let dir = project(template);
    // A port nothing listens on.
    let closed = free_port().unwrap();
    let endpoint = format!("http://127.0.0.1:{closed}");
    let child = gateway()
        .arg("--template")
        .arg(dir.path().join("template.yaml"))
        .args(["--listen", &format!("127.0.0.1:{}", free_port().unwrap())])
        .args([
            "--code-cache",
            &dir.path().join("cache").display().to_string(),
        ])
        .args(["--runtime-command", "python3.12=/bin/true"])
        .args(["--dynamodb-endpoint", &endpoint])
        .args(["--provision-timeout", "1"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (status, stderr) = exit_of(child);
    assert!(!status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("DynamoDB at {endpoint} cannot be reached")),
        "{stderr}"
    );
    assert!(
        stderr.contains("creating the configuration's tables and buckets"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}
