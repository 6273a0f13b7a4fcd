//! Shared by the containerd tests and the bench: the test image (from `esb_testfn::oci`), a
//! backend config per test, and a log sink that keeps every line.
#![allow(dead_code, clippy::expect_used, clippy::unwrap_used, missing_docs)]

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use esb_runtime::containerd::{ContainerdConfig, RegistryConfig};
use esb_runtime::{LogLine, LogSink};
#[allow(unused_imports)]
pub use esb_testfn::oci::{
    containerd, pushed_image, pushed_rie_image, registry, sha256, test_image, write_docker_archive,
    write_oci_archive,
};

/// A config for tests: its own env (namespace), state under /run/esb-test.
pub fn config(address: &Path, env: &str, sink: Arc<dyn LogSink>) -> ContainerdConfig {
    ContainerdConfig::default()
        .address(address)
        .env(env)
        .state_dir(PathBuf::from("/run/esb-test"))
        .registries(RegistryConfig::default().insecure([registry()]))
        .log_sink(sink)
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
