//! The `esb-gateway` binary: `--check`, and a bad configuration stopping start-up with all
//! its problems listed.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use esb_testfn::ports::free_port;
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

/// `--check` of an example's functions.yml and routing.yml, with `var` naming the function
/// program: its standard output once it succeeds.
fn check_example(example: &str, var: &str) -> String {
    let root = format!("{}/../examples/{example}", env!("CARGO_MANIFEST_DIR"));
    let output = gateway()
        .args(["--check", "--functions", &format!("{root}/functions.yml")])
        .args(["--routing", &format!("{root}/routing.yml")])
        .env(var, "/bin/true")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

#[test]
fn check_accepts_the_quickstart() {
    assert_eq!(
        check_example("quickstart", "QUICKSTART_FUNCTION"),
        "configuration OK: 1 functions, 2 routes"
    );
}

#[test]
fn check_accepts_the_load_bench_configuration() {
    assert_eq!(
        check_example("load", "LOAD_FUNCTION"),
        "configuration OK: 1 functions, 1 routes"
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
fn check_names_a_command_that_does_not_exist() {
    let dir = tempfile::tempdir().unwrap();
    let functions = write(
        &dir,
        "functions.yml",
        "functions:\n  ok: { command: [\"/bin/true\"] }\n  broken: { command: [\"/nonexistent/bootstrap\", \"x\"] }\n  unknown: { command: [\"esb-no-such-program\"] }\n",
    );
    let routing = write(&dir, "routing.yml", "routes: []\n");
    let output = gateway()
        .args(["--check", "--functions", &functions, "--routing", &routing])
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    for problem in [
        "2 problems",
        "functions.broken.command: \"/nonexistent/bootstrap\" cannot be started: No such file",
        "functions.unknown.command: \"esb-no-such-program\" cannot be started: not found on PATH",
    ] {
        assert!(
            stderr.contains(problem),
            "{problem:?} missing from:\n{stderr}"
        );
    }
    assert!(!stderr.contains("functions.ok"), "{stderr}");
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

/// One plain HTTP/1.1 GET on a fresh connection: the status code and the body.
fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer[9..12].parse().unwrap();
    let body = answer.split_once("\r\n\r\n").unwrap().1.to_owned();
    (status, body)
}

#[test]
fn function_logs_reach_the_terminal_prefixed_and_are_flushed_on_shutdown() {
    let noop = esb_testfn::build_bin("noop_fn").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let functions = write(
        &dir,
        "functions.yml",
        &format!(
            "functions:\n  noop: {{ command: [{:?}] }}\n",
            noop.display()
        ),
    );
    let routing = write(
        &dir,
        "routing.yml",
        "routes:\n  - { path: \"/noop\", method: GET, function: noop, auth: none }\n",
    );
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], free_port().unwrap()));
    let child = gateway()
        .args(["--functions", &functions, "--routing", &routing])
        .args(["--listen", &addr.to_string()])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::net::TcpStream::connect(addr).is_err() {
        assert!(
            started.elapsed().as_secs() < 30,
            "the gateway did not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    const REQUESTS: usize = 25;
    for _ in 0..REQUESTS {
        assert_eq!(get(addr, "/noop"), (200, "ok".to_owned()));
    }
    // SIGTERM: the gateway drains and must still print every line it was given.
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let count = |prefix: &str| stderr.lines().filter(|l| l.starts_with(prefix)).count();
    assert_eq!(count("[noop] START RequestId: "), REQUESTS, "{stderr}");
    assert_eq!(count("[noop] END RequestId: "), REQUESTS, "{stderr}");
    let reports: Vec<&str> = stderr
        .lines()
        .filter(|l| l.starts_with("[noop] REPORT RequestId: "))
        .collect();
    assert_eq!(reports.len(), REQUESTS, "{stderr}");
    for report in reports {
        let used: u32 = report
            .split("Max Memory Used: ")
            .nth(1)
            .and_then(|rest| rest.split(' ').next())
            .and_then(|mb| mb.parse().ok())
            .unwrap_or_else(|| panic!("no Max Memory Used in {report:?}"));
        assert!(used >= 1, "{report}");
    }
}

#[test]
fn help_never_shows_the_function_secret() {
    for program in [
        std::path::PathBuf::from(env!("CARGO_BIN_EXE_esb-gateway")),
        support::agent_binary(),
    ] {
        let output = Command::new(program)
            .arg("--help")
            .env("ESB_FUNCTION_AWS_SECRET_ACCESS_KEY", "do-not-print-me")
            .env("ESB_FUNCTION_AWS_SESSION_TOKEN", "nor-this-token")
            .output()
            .unwrap();
        let help = String::from_utf8_lossy(&output.stdout);
        assert!(help.contains("--function-secret-access-key"), "{help}");
        assert!(!help.contains("do-not-print-me"), "{help}");
        assert!(!help.contains("nor-this-token"), "{help}");
    }
}
