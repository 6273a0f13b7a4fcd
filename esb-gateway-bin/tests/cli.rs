//! The `esb-gateway` binary: `--check`, and a bad configuration stopping start-up with all
//! its problems listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::process::Command;

fn gateway() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_esb-gateway"));
    for var in [
        "JWT_SECRET_KEY",
        "X_API_KEY",
        "AUTH_USER",
        "AUTH_PASS",
        "ESB_FUNCTIONS",
        "ESB_ROUTING",
    ] {
        command.env_remove(var);
    }
    command
}

fn write(dir: &tempfile::TempDir, name: &str, text: &str) -> String {
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    path.display().to_string()
}

#[test]
fn check_accepts_the_quickstart() {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/quickstart");
    let output = gateway()
        .args(["--check", "--functions", &format!("{root}/functions.yml")])
        .args(["--routing", &format!("{root}/routing.yml")])
        .env("QUICKSTART_FUNCTION", "/bin/true")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(
        String::from_utf8_lossy(&output.stdout).trim(),
        "configuration OK: 1 functions, 2 routes"
    );
}

#[test]
fn a_bad_configuration_lists_every_problem_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let functions = write(
        &dir,
        "functions.yml",
        "functions:\n  a: { image: \"x:1\" }\n  b: { command: [\"/bin/true\"] }\n",
    );
    let routing = write(
        &dir,
        "routing.yml",
        "routes:\n  - { path: \"/a\", method: GET, function: a }\n",
    );
    let output = gateway()
        .args(["--functions", &functions, "--routing", &routing])
        .env("JWT_SECRET_KEY", "too-short")
        .env("X_API_KEY", "k")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in [
        "4 problems",
        "JWT_SECRET_KEY: must be at least 32 characters",
        "AUTH_USER: not set",
        "AUTH_PASS: not set",
        "functions.a: command: required by the process runtime",
    ] {
        assert!(
            stderr.contains(problem),
            "{problem:?} missing from:\n{stderr}"
        );
    }
}

#[test]
fn router_errors_name_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let functions = write(
        &dir,
        "functions.yml",
        "functions:\n  a: { command: [\"x\"], timeout: 0 }\n",
    );
    let routing = write(
        &dir,
        "routing.yml",
        "routes:\n  - { path: \"/a\", method: GET, function: missing, auth: none }\n",
    );
    let output = gateway()
        .args(["--check", "--functions", &functions, "--routing", &routing])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("functions.yml") && stderr.contains("timeout"),
        "{stderr}"
    );
    assert!(
        stderr.contains("routing.yml") && stderr.contains("missing"),
        "{stderr}"
    );
}
