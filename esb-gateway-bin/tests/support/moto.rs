//! A real S3 + DynamoDB server for tests: `moto_server` on a free 127.0.0.1 port, killed
//! when dropped. Missing `moto_server` skips the test, or fails it under `CI=true`.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::clients;
pub use esb_testfn::ports::free_port;

/// A running `moto_server`.
pub struct Moto {
    child: Child,
    /// Its port on 127.0.0.1.
    pub port: u16,
}

/// `moto_server` as found on PATH (`ESB_MOTO_SERVER` overrides), or why not.
pub fn program() -> Option<String> {
    let program = std::env::var("ESB_MOTO_SERVER").unwrap_or_else(|_| "moto_server".into());
    match Command::new(&program)
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(status) if status.success() => Some(program),
        Ok(status) => clients::missing("moto_server", &format!("{program} --help: {status}")),
        Err(err) => clients::missing(
            "moto_server",
            &format!("cannot run {program}: {err} (pip install 'moto[server]')"),
        ),
    }
}

/// Waits until something accepts connections on 127.0.0.1:`port` (up to 60 s).
pub fn wait_for_port(port: u16) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "nothing listens on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

impl Moto {
    /// Starts `moto_server` on a free port and waits until it answers; `None`: skipped.
    pub fn start() -> Option<Self> {
        let program = program()?;
        let port = free_port().unwrap();
        let child = Command::new(program)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let moto = Self { child, port };
        wait_for_port(port);
        Some(moto)
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Creates bucket `bucket` and table `table` (hash key `pk`, GSI `by-email` on `email`)
/// in the S3 + DynamoDB at `url`, with boto3 run by `python`.
pub fn create_bucket_and_table(python: &Path, url: &str, bucket: &str, table: &str) {
    let script = format!(
        r#"
import boto3
s3 = boto3.client("s3", endpoint_url="{url}", region_name="us-east-1")
s3.create_bucket(Bucket="{bucket}")
db = boto3.client("dynamodb", endpoint_url="{url}", region_name="us-east-1")
db.create_table(
    TableName="{table}",
    KeySchema=[{{"AttributeName": "pk", "KeyType": "HASH"}}],
    AttributeDefinitions=[
        {{"AttributeName": "pk", "AttributeType": "S"}},
        {{"AttributeName": "email", "AttributeType": "S"}},
    ],
    GlobalSecondaryIndexes=[{{
        "IndexName": "by-email",
        "KeySchema": [{{"AttributeName": "email", "KeyType": "HASH"}}],
        "Projection": {{"ProjectionType": "ALL"}},
    }}],
    BillingMode="PAY_PER_REQUEST",
)
"#
    );
    let output = Command::new(python)
        .args(["-c", &script])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env_remove("AWS_PROFILE")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "creating the bucket and table failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}
