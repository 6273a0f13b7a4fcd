//! Shared by the containerd tests and the bench: find containerd, build the test image
//! (the static `esb-testfn` as `/var/runtime/bootstrap`), push it to the local registry, and
//! write it as an OCI archive.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};

use esb_runtime::containerd::{ContainerdConfig, RegistryConfig};
use esb_runtime::{LogLine, LogSink};
use serde_json::json;
use sha2::{Digest, Sha256};

/// Sockets tried when `ESB_CONTAINERD_ADDRESS` is unset.
const DEFAULT_SOCKETS: &[&str] = &[
    "/run/esb-ci/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The containerd socket to test against, or `None` (with the reason printed) to skip.
/// Panics instead when `ESB_REQUIRE_CONTAINERD=1`.
pub fn containerd() -> Option<PathBuf> {
    let required = std::env::var("ESB_REQUIRE_CONTAINERD").is_ok_and(|v| v == "1");
    let candidates: Vec<PathBuf> = match std::env::var_os("ESB_CONTAINERD_ADDRESS") {
        Some(address) => vec![PathBuf::from(address)],
        None => DEFAULT_SOCKETS.iter().map(PathBuf::from).collect(),
    };
    let found = candidates
        .iter()
        .find(|path| std::os::unix::net::UnixStream::connect(path).is_ok())
        .cloned();
    let is_root =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0;
    match found {
        Some(path) if is_root => Some(path),
        _ => {
            let reason = if is_root {
                format!("no containerd answers at {candidates:?}")
            } else {
                "containerd tests need root".to_owned()
            };
            assert!(
                !required,
                "ESB_REQUIRE_CONTAINERD=1 but {reason} (run .ci/containerd.sh)"
            );
            eprintln!("skipped: {reason}; run .ci/containerd.sh as root to run it");
            None
        }
    }
}

/// The local registry (`host:port`), plain HTTP.
pub fn registry() -> String {
    std::env::var("ESB_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// A config for tests: its own env (namespace), state under /run/esb-test.
pub fn config(address: &Path, env: &str, sink: Arc<dyn LogSink>) -> ContainerdConfig {
    ContainerdConfig {
        address: address.to_path_buf(),
        env: env.to_owned(),
        state_dir: PathBuf::from("/run/esb-test"),
        registries: RegistryConfig {
            insecure: vec![registry()],
            ..RegistryConfig::default()
        },
        log_sink: sink,
        ..ContainerdConfig::default()
    }
}

/// A unique env name for one test.
pub fn unique_env(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Keeps every log line, for assertions.
#[derive(Default)]
pub struct Collect(pub Mutex<Vec<LogLine>>);

impl LogSink for Collect {
    fn log(&self, line: LogLine) {
        self.0.lock().unwrap().push(line);
    }
}

impl Collect {
    pub fn messages(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .map(|l| l.message.clone())
            .collect()
    }
}

/// The statically linked `esb-testfn`, built once with its own target dir.
pub fn static_testfn() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .to_path_buf();
        let base = std::env::var("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| workspace.join("target"));
        let target_dir = base.join("esb-testfn-static");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .current_dir(&workspace)
            .args([
                "build",
                "--quiet",
                "--release",
                "-p",
                "esb-testfn",
                "--bin",
                "esb-testfn",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "static build of esb-testfn failed");
        target_dir.join("x86_64-unknown-linux-gnu/release/esb-testfn")
    })
    .clone()
}

/// One blob of the test image.
#[derive(Clone, Debug)]
pub struct Blob {
    pub media_type: &'static str,
    pub digest: String,
    pub data: Vec<u8>,
}

impl Blob {
    fn new(media_type: &'static str, data: Vec<u8>) -> Self {
        Self {
            media_type,
            digest: sha256(&data),
            data,
        }
    }

    pub fn descriptor(&self) -> serde_json::Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }
}

/// The test image: one gzip layer, its config and manifest.
#[derive(Clone, Debug)]
pub struct TestImage {
    pub layer: Blob,
    pub config: Blob,
    pub manifest: Blob,
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn dir_header(path: &str, mode: u32) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_path(path).unwrap();
    header.set_mode(mode);
    header.set_size(0);
    header.set_mtime(0);
    header.set_cksum();
    header
}

/// Builds the image from the static test function (cached).
pub fn test_image() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let bootstrap = std::fs::read(static_testfn()).unwrap();
            let mut tar = tar::Builder::new(Vec::new());
            for (dir, mode) in [
                ("tmp/", 0o1777),
                ("var/", 0o755),
                ("var/runtime/", 0o755),
                ("var/task/", 0o755),
            ] {
                tar.append(&dir_header(dir, mode), std::io::empty())
                    .unwrap();
            }
            let mut header = tar::Header::new_gnu();
            header.set_path("var/runtime/bootstrap").unwrap();
            header.set_mode(0o755);
            header.set_size(bootstrap.len() as u64);
            header.set_mtime(0);
            header.set_cksum();
            tar.append(&header, bootstrap.as_slice()).unwrap();
            let layer_tar = tar.into_inner().unwrap();
            let diff_id = sha256(&layer_tar);
            let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            gz.write_all(&layer_tar).unwrap();
            let layer = Blob::new(OCI_LAYER_GZIP, gz.finish().unwrap());
            let config = json!({
                "architecture": "amd64",
                "os": "linux",
                "config": {
                    "Entrypoint": ["/var/runtime/bootstrap"],
                    "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
                    "WorkingDir": "/var/task",
                },
                "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            });
            let config = Blob::new(OCI_CONFIG, serde_json::to_vec(&config).unwrap());
            let manifest = json!({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": config.descriptor(),
                "layers": [layer.descriptor()],
            });
            let manifest = Blob::new(OCI_MANIFEST, serde_json::to_vec(&manifest).unwrap());
            TestImage {
                layer,
                config,
                manifest,
            }
        })
        .clone()
}

/// Pushes the test image to the local registry as `<registry>/esb-testfn:latest` (once) and
/// returns its reference.
pub fn pushed_image() -> String {
    static PUSHED: OnceLock<String> = OnceLock::new();
    PUSHED
        .get_or_init(|| {
            let image = test_image();
            let name = format!("{}/esb-testfn:latest", registry());
            let reference: oci_client::Reference = name.parse().unwrap();
            // A runtime of its own: this runs once, from whichever test gets here first.
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async {
                    let client = oci_client::Client::new(oci_client::client::ClientConfig {
                        protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry()]),
                        ..Default::default()
                    });
                    let auth = oci_client::secrets::RegistryAuth::Anonymous;
                    client
                        .auth(&reference, &auth, oci_client::RegistryOperation::Push)
                        .await
                        .unwrap();
                    for blob in [&image.layer, &image.config] {
                        client
                            .push_blob(&reference, blob.data.clone(), &blob.digest)
                            .await
                            .unwrap();
                    }
                    client
                        .push_manifest_raw(
                            &reference,
                            image.manifest.data.clone(),
                            http::HeaderValue::from_static(OCI_MANIFEST),
                        )
                        .await
                        .unwrap();
                });
            })
            .join()
            .unwrap();
            name
        })
        .clone()
}

/// Writes the test image as an OCI image layout tarball named `name` at `path`.
pub fn write_oci_archive(path: &Path, name: &str) {
    let image = test_image();
    let mut tar = tar::Builder::new(std::fs::File::create(path).unwrap());
    let mut add = |file: &str, data: &[u8]| {
        let mut header = tar::Header::new_gnu();
        header.set_path(file).unwrap();
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_mtime(0);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    };
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#);
    let mut entry = image.manifest.descriptor();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [entry]});
    add("index.json", index.to_string().as_bytes());
    for blob in [&image.layer, &image.config, &image.manifest] {
        let hex = blob.digest.trim_start_matches("sha256:");
        add(&format!("blobs/sha256/{hex}"), &blob.data);
    }
    tar.finish().unwrap();
}
