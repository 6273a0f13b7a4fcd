//! The official runtime interface clients and SDKs that tests run against the gateway:
//! Python's `awslambdaric`, Node's `aws-lambda-ric` and boto3, each found once.
//!
//! The handlers they run live in `tests/fixtures/functions/{python,node}/` (see
//! `tests/fixtures/README.md`). A test asks for a client with [`python_ric`], [`node_ric`]
//! or [`python_with`]; when it is missing the test is skipped with a printed reason, except
//! under `CI=true`, where a missing client fails the test.
//!
//! Variables: `ESB_PYTHON` (default `python3`), `ESB_NODE` (default `node`) and
//! `ESB_NODE_RIC` (default `/tmp/ricnode/node_modules/.bin/aws-lambda-ric`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// `tests/fixtures` of this crate.
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

/// The directory of the fixture functions of one language (`python`, `node`).
pub fn fixture_functions(language: &str) -> PathBuf {
    fixtures().join("functions").join(language)
}

/// A client is missing: `None` (the caller skips) after saying why, or a panic under `CI=true`.
pub fn missing<T>(what: &str, why: &str) -> Option<T> {
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{what} is required under CI=true: {why}");
    }
    eprintln!("SKIPPED: {what} is not available: {why}");
    None
}

/// How the process backend starts a function: its command and the environment it needs.
#[derive(Clone, Debug)]
pub struct Launch {
    /// The argv.
    pub command: Vec<String>,
    /// Variables the function needs to find its handler.
    pub environment: Vec<(String, String)>,
}

impl Launch {
    /// The function's entry of a functions.yml (`extra` lines are added as they are, indented
    /// under the function, e.g. `"timeout: 5"`).
    pub fn function_yaml(&self, name: &str, extra: &[&str]) -> String {
        let quote = |s: &str| serde_json::Value::from(s).to_string();
        let command: Vec<String> = self.command.iter().map(|s| quote(s)).collect();
        let environment: Vec<String> = self
            .environment
            .iter()
            .map(|(k, v)| format!("{k}: {}", quote(v)))
            .collect();
        let mut yaml = format!(
            "  {name}:\n    command: [{}]\n    environment: {{ {} }}\n",
            command.join(", "),
            environment.join(", ")
        );
        for line in extra {
            yaml.push_str(&format!("    {line}\n"));
        }
        yaml
    }
}

/// The Python interpreter (`ESB_PYTHON`, default `python3`) as an absolute path, if it can
/// import every one of `modules`; else why not.
fn python(modules: &[&str]) -> Result<PathBuf, String> {
    let python = std::env::var("ESB_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = format!(
        "import sys\n{}\nprint(sys.executable)",
        modules
            .iter()
            .map(|m| format!("import {m}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let output = Command::new(&python)
        .args(["-c", &script])
        .output()
        .map_err(|err| format!("cannot run {python}: {err}"))?;
    if !output.status.success() {
        return Err(format!(
            "{python} cannot import {}: {} (pip install {})",
            modules.join(", "),
            String::from_utf8_lossy(&output.stderr).trim(),
            modules.join(" ")
        ));
    }
    Ok(PathBuf::from(
        String::from_utf8_lossy(&output.stdout).trim().to_owned(),
    ))
}

/// A Python interpreter that can import `modules` (e.g. `boto3`), or `None` (skipped).
pub fn python_with(modules: &[&str]) -> Option<PathBuf> {
    match python(modules) {
        Ok(python) => Some(python),
        Err(why) => missing(&format!("Python with {}", modules.join(", ")), &why),
    }
}

/// `python3 -m awslambdaric <handler>` with the handler's module found in `dir`.
pub fn python_ric(dir: &Path, handler: &str) -> Option<Launch> {
    let python = match python(&["awslambdaric"]) {
        Ok(python) => python,
        Err(why) => return missing("awslambdaric", &why),
    };
    Some(Launch {
        command: vec![
            python.display().to_string(),
            "-m".into(),
            "awslambdaric".into(),
            handler.into(),
        ],
        environment: vec![
            ("PYTHONPATH".into(), dir.display().to_string()),
            ("PYTHONDONTWRITEBYTECODE".into(), "1".into()),
            ("_HANDLER".into(), handler.into()),
        ],
    })
}

/// Node's `aws-lambda-ric <handler>` with the handler's module found in `dir`.
pub fn node_ric(dir: &Path, handler: &str) -> Option<Launch> {
    let ric = PathBuf::from(
        std::env::var("ESB_NODE_RIC")
            .unwrap_or_else(|_| "/tmp/ricnode/node_modules/.bin/aws-lambda-ric".into()),
    );
    let Ok(ric) = ric.canonicalize() else {
        return missing(
            "aws-lambda-ric",
            &format!(
                "{} does not exist (npm install aws-lambda-ric, and set ESB_NODE_RIC)",
                ric.display()
            ),
        );
    };
    let node = std::env::var("ESB_NODE").unwrap_or_else(|_| "node".into());
    let node = match Command::new(&node)
        .args(["-e", "console.log(process.execPath)"])
        .output()
    {
        Ok(output) if output.status.success() => {
            String::from_utf8_lossy(&output.stdout).trim().to_owned()
        }
        Ok(output) => return missing("node", &String::from_utf8_lossy(&output.stderr)),
        Err(err) => return missing("node", &format!("cannot run {node}: {err}")),
    };
    Some(Launch {
        command: vec![node, ric.display().to_string(), handler.into()],
        // aws-lambda-ric loads the handler named by _HANDLER from LAMBDA_TASK_ROOT.
        environment: vec![
            ("LAMBDA_TASK_ROOT".into(), dir.display().to_string()),
            ("_HANDLER".into(), handler.into()),
        ],
    })
}
