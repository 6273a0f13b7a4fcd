//! `esb-gateway --template` with SAM's own flags: `--parameter-overrides`, `--env-vars`,
//! and zip functions checked at start-up.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Output};

const TEMPLATE: &str = r#"
Parameters:
  TableName: { Type: String }
Resources:
  Fn:
    Type: AWS::Serverless::Function
    Properties:
      Runtime: provided.al2023
      Handler: bootstrap
      CodeUri: code
      Environment: { Variables: { TABLE: !Ref TableName } }
      Events:
        Get: { Type: Api, Properties: { Path: /x, Method: get } }
  Py:
    Type: AWS::Serverless::Function
    Properties: { Runtime: python3.12, Handler: app.handler, CodeUri: code }
"#;

fn project() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("code")).unwrap();
    let bootstrap = dir.path().join("code/bootstrap");
    std::fs::write(&bootstrap, "#!/bin/sh\n").unwrap();
    std::fs::set_permissions(&bootstrap, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.path().join("template.yaml"), TEMPLATE).unwrap();
    dir
}

fn check(dir: &tempfile::TempDir, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_esb-gateway"))
        .arg("--check")
        .arg("--template")
        .arg(dir.path().join("template.yaml"))
        .args([
            "--code-cache",
            &dir.path().join("cache").display().to_string(),
        ])
        .args(args)
        .env_remove("ESB_TEMPLATE")
        .env_remove("ESB_RUNTIME_COMMANDS")
        .env_remove("TableName")
        .output()
        .unwrap()
}

#[test]
fn an_unresolved_parameter_names_the_flag_and_overrides_resolve_it() {
    let dir = project();
    let output = check(&dir, &["--runtime-command", "python3.12=/bin/true"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "Parameters.TableName: has no Default and no value: give it one with a parameter \
             override (--parameter-overrides TableName=VALUE)"
        ),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn a_missing_runtime_client_stops_start_up_naming_function_runtime_and_install() {
    let dir = project();
    let output = check(
        &dir,
        &[
            "--parameter-overrides",
            "TableName=items",
            "--runtime-command",
            "python3.12=/nonexistent/python3",
        ],
    );
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("functions.Py.runtime: python3.12: no Python with awslambdaric"),
        "{stderr}"
    );
    assert!(stderr.contains("pip install awslambdaric"), "{stderr}");
    assert!(!stderr.contains("functions.Fn"), "{stderr}");
    assert!(!stderr.contains("Parameters.TableName"), "{stderr}");
}
