//! The test function as a container image: built from the statically linked `esb-testfn`
//! (as `/var/runtime/bootstrap`, the image's entrypoint), pushed to a local registry, or
//! written as an OCI layout or `docker save` archive. Also finds the containerd to test
//! against.

// Test support: a failure to build or push the image panics, as the calling test would.
#![allow(clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// Sockets tried when `ESB_CONTAINERD_ADDRESS` is unset.
const DEFAULT_SOCKETS: &[&str] = &[
    "/run/esb-ci/containerd/containerd.sock",
    "/run/containerd/containerd.sock",
];
/// Media type of an OCI image manifest.
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image config.
pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of a gzip-compressed OCI layer.
pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// The containerd socket to test against, or `None` (with the reason printed) to skip.
///
/// # Panics
/// When `ESB_REQUIRE_CONTAINERD=1` and no containerd answers (or the test is not root).
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
    let is_root = is_root();
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

fn is_root() -> bool {
    std::os::unix::fs::MetadataExt::uid(
        &std::fs::metadata("/proc/self").expect("/proc/self is readable"),
    ) == 0
}

/// The local registry (`host:port`, plain HTTP): `ESB_TEST_REGISTRY` or `127.0.0.1:5000`.
pub fn registry() -> String {
    std::env::var("ESB_TEST_REGISTRY").unwrap_or_else(|_| "127.0.0.1:5000".into())
}

/// The statically linked `esb-testfn`, built once (release, `+crt-static`) in a target dir
/// of its own.
///
/// # Panics
/// When the build fails.
pub fn static_binary() -> PathBuf {
    static_bins().join("esb-testfn")
}

/// The statically linked RIE stand-in (`aws-lambda-rie`, see [`crate::rie`]).
///
/// # Panics
/// When the build fails.
pub fn static_rie() -> PathBuf {
    static_bins().join("aws-lambda-rie")
}

/// The statically linked stand-in for a Lambda base image's bootstrap (`lambda-base`).
///
/// # Panics
/// When the build fails.
pub fn static_lambda_base() -> PathBuf {
    static_bins().join("lambda-base")
}

/// Builds the static binaries once; returns their directory.
fn static_bins() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let workspace = crate::workspace_dir();
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
                "--bin",
                "aws-lambda-rie",
                "--bin",
                "lambda-base",
                "--target",
                "x86_64-unknown-linux-gnu",
            ])
            .env("CARGO_TARGET_DIR", &target_dir)
            .env("RUSTFLAGS", "-C target-feature=+crt-static")
            .status()
            .expect("cargo runs");
        assert!(status.success(), "static build of esb-testfn failed");
        target_dir.join("x86_64-unknown-linux-gnu/release")
    })
    .clone()
}

/// One blob of the test image.
#[derive(Clone, Debug)]
pub struct Blob {
    /// Its media type.
    pub media_type: &'static str,
    /// `sha256:<hex>` of `data`.
    pub digest: String,
    /// The bytes.
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

    /// Its OCI descriptor.
    pub fn descriptor(&self) -> Value {
        json!({"mediaType": self.media_type, "digest": self.digest, "size": self.data.len()})
    }

    fn hex(&self) -> &str {
        self.digest.trim_start_matches("sha256:")
    }
}

/// The test image: one layer (also kept uncompressed), its config and manifest.
#[derive(Clone, Debug)]
pub struct TestImage {
    /// The gzip layer.
    pub layer: Blob,
    /// The same layer as a plain tar, as `docker save` writes it.
    pub layer_tar: Vec<u8>,
    /// The image config.
    pub config: Blob,
    /// The OCI manifest.
    pub manifest: Blob,
}

/// `sha256:<hex>` of `data`.
pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{:x}", Sha256::digest(data))
}

fn tar_header(path: &str, mode: u32, size: usize, kind: tar::EntryType) -> tar::Header {
    let mut header = tar::Header::new_gnu();
    header.set_entry_type(kind);
    header.set_path(path).expect("a short path");
    header.set_mode(mode);
    header.set_size(size as u64);
    header.set_mtime(0);
    header.set_cksum();
    header
}

/// Builds the image from [`static_binary`] (once per test process).
pub fn test_image() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let bootstrap = std::fs::read(static_binary()).expect("the static binary is readable");
            build_image(
                &[("var/runtime/bootstrap", &bootstrap)],
                &["/var/runtime/bootstrap"],
            )
        })
        .clone()
}

/// The test function behind the RIE stand-in, as images that bundle the emulator are laid
/// out: `/usr/local/bin/aws-lambda-rie` (the stand-in) as the entrypoint, running
/// `/var/runtime/bootstrap` (the test function) through its own Runtime API.
pub fn rie_image() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let bootstrap = std::fs::read(static_binary()).expect("the static binary is readable");
            let rie = std::fs::read(static_rie()).expect("the static stand-in is readable");
            build_image(
                &[
                    ("var/runtime/bootstrap", &bootstrap),
                    ("usr/local/bin/aws-lambda-rie", &rie),
                ],
                &["/usr/local/bin/aws-lambda-rie", "/var/runtime/bootstrap"],
            )
        })
        .clone()
}

/// A stand-in for a Lambda base image (`public.ecr.aws/lambda/<language>:<version>`):
/// `/var/runtime/bootstrap` is `lambda-base`, which loads the module `_HANDLER` names from
/// `/var/task`; `/var/task` and `/opt` are empty, for the function's code and layers.
pub fn base_image() -> TestImage {
    static IMAGE: OnceLock<TestImage> = OnceLock::new();
    IMAGE
        .get_or_init(|| {
            let bootstrap =
                std::fs::read(static_lambda_base()).expect("the static stand-in is readable");
            build_image(
                &[("var/runtime/bootstrap", &bootstrap)],
                &["/var/runtime/bootstrap"],
            )
        })
        .clone()
}

/// Pushes [`base_image`] as `<registry>/esb-lambda-base:latest` (once per test process)
/// and returns its reference.
///
/// # Panics
/// When the registry refuses it.
pub fn pushed_base_image() -> String {
    static PUSHED: OnceLock<String> = OnceLock::new();
    PUSHED
        .get_or_init(|| push(base_image(), "esb-lambda-base:latest"))
        .clone()
}

/// One layer holding `files` (executables), with its config and manifest.
fn build_image(files: &[(&str, &[u8])], entrypoint: &[&str]) -> TestImage {
    let mut tar = tar::Builder::new(Vec::new());
    for (dir, mode) in [
        ("tmp/", 0o1777),
        ("usr/", 0o755),
        ("usr/local/", 0o755),
        ("usr/local/bin/", 0o755),
        ("var/", 0o755),
        ("var/runtime/", 0o755),
        ("var/task/", 0o755),
        ("opt/", 0o755),
    ] {
        tar.append(
            &tar_header(dir, mode, 0, tar::EntryType::Directory),
            std::io::empty(),
        )
        .expect("in memory");
    }
    for (path, data) in files {
        let header = tar_header(path, 0o755, data.len(), tar::EntryType::Regular);
        tar.append(&header, *data).expect("in memory");
    }
    let layer_tar = tar.into_inner().expect("in memory");
    let diff_id = sha256(&layer_tar);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&layer_tar).expect("in memory");
    let layer = Blob::new(OCI_LAYER_GZIP, gz.finish().expect("in memory"));
    let config = json!({
        "architecture": "amd64",
        "os": "linux",
        "config": {
            "Entrypoint": entrypoint,
            "Env": ["PATH=/usr/local/bin:/usr/bin:/bin"],
            "WorkingDir": "/var/task",
        },
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    });
    let config = Blob::new(
        OCI_CONFIG,
        serde_json::to_vec(&config).expect("serializable"),
    );
    let manifest = json!({
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": config.descriptor(),
        "layers": [layer.descriptor()],
    });
    let manifest = Blob::new(
        OCI_MANIFEST,
        serde_json::to_vec(&manifest).expect("serializable"),
    );
    TestImage {
        layer,
        layer_tar,
        config,
        manifest,
    }
}

/// Pushes the test image to the local registry as `<registry>/esb-testfn:latest` (once per
/// test process) and returns its reference.
///
/// # Panics
/// When the registry refuses it.
pub fn pushed_image() -> String {
    static PUSHED: OnceLock<String> = OnceLock::new();
    PUSHED
        .get_or_init(|| push(test_image(), "esb-testfn:latest"))
        .clone()
}

/// Pushes [`rie_image`] as `<registry>/esb-testfn-rie:latest` (once per test process) and
/// returns its reference.
///
/// # Panics
/// When the registry refuses it.
pub fn pushed_rie_image() -> String {
    static PUSHED: OnceLock<String> = OnceLock::new();
    PUSHED
        .get_or_init(|| push(rie_image(), "esb-testfn-rie:latest"))
        .clone()
}

/// Pushes `image` to the local registry as `<registry>/<name>`.
fn push(image: TestImage, name: &str) -> String {
    let name = format!("{}/{name}", registry());
    let reference: oci_client::Reference = name.parse().expect("a valid reference");
    if rustls::crypto::CryptoProvider::get_default().is_none() {
        let _ = rustls::crypto::ring::default_provider().install_default();
    }
    // A runtime of its own: this runs once, from whichever test gets here first.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a tokio runtime");
        rt.block_on(async {
            let client = oci_client::Client::new(oci_client::client::ClientConfig {
                protocol: oci_client::client::ClientProtocol::HttpsExcept(vec![registry()]),
                ..Default::default()
            });
            let auth = oci_client::secrets::RegistryAuth::Anonymous;
            client
                .auth(&reference, &auth, oci_client::RegistryOperation::Push)
                .await
                .expect("registry auth");
            for blob in [&image.layer, &image.config] {
                client
                    .push_blob(&reference, blob.data.clone(), &blob.digest)
                    .await
                    .expect("blob pushed");
            }
            client
                .push_manifest_raw(
                    &reference,
                    image.manifest.data.clone(),
                    http::HeaderValue::from_static(OCI_MANIFEST),
                )
                .await
                .expect("manifest pushed");
        });
    })
    .join()
    .expect("the push thread ends");
    name
}

fn write_tar(path: &Path, files: &[(String, &[u8])]) {
    let file = std::fs::File::create(path).expect("the archive can be created");
    let mut tar = tar::Builder::new(file);
    for (name, data) in files {
        tar.append(
            &tar_header(name, 0o644, data.len(), tar::EntryType::Regular),
            *data,
        )
        .expect("the archive is writable");
    }
    tar.finish().expect("the archive is writable");
}

/// Writes the test image as an OCI image layout tarball at `path`, tagged `name`.
pub fn write_oci_archive(path: &Path, name: &str) {
    let image = test_image();
    let mut entry = image.manifest.descriptor();
    entry["annotations"] = json!({"org.opencontainers.image.ref.name": name});
    let index = json!({"schemaVersion": 2, "manifests": [entry]}).to_string();
    let mut files: Vec<(String, &[u8])> = vec![
        ("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#),
        ("index.json".into(), index.as_bytes()),
    ];
    for blob in [&image.layer, &image.config, &image.manifest] {
        files.push((format!("blobs/sha256/{}", blob.hex()), &blob.data));
    }
    write_tar(path, &files);
}

/// Writes the test image as `docker save` writes it (manifest.json, `<id>.json` config,
/// `<layer id>/layer.tar` uncompressed) at `path`, tagged `name`.
pub fn write_docker_archive(path: &Path, name: &str) {
    let image = test_image();
    let layer_id = sha256(&image.layer_tar)
        .trim_start_matches("sha256:")
        .to_owned();
    let config_file = format!("{}.json", image.config.hex());
    let layer_file = format!("{layer_id}/layer.tar");
    let manifest = json!([{
        "Config": config_file,
        "RepoTags": [name],
        "Layers": [layer_file],
    }])
    .to_string();
    let version = b"1.0";
    write_tar(
        path,
        &[
            ("manifest.json".into(), manifest.as_bytes()),
            (config_file.clone(), &image.config.data),
            (format!("{layer_id}/VERSION"), version),
            (layer_file.clone(), &image.layer_tar),
        ],
    );
}
