//! `lambda-base`: the `/var/runtime/bootstrap` of a stand-in for a Lambda base image
//! (`public.ecr.aws/lambda/<language>:<version>`). As a managed runtime's bootstrap does, it
//! reads `_HANDLER` (`module.function`), loads the module from `/var/task` once, at start —
//! here `/var/task/<module>.json`, a JSON object — and serves the Runtime API loop. Each answer is
//! a proxy response whose body holds the loaded module, the event, the text of every file
//! directly under `/opt`, whether `/var/task` and `/opt` refused a write as a read-only file
//! system, and Lambda's variables. A module that is missing is Python's
//! `Runtime.ImportModuleError`.

use std::path::Path;

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Map, Value, json};

const KEYS: [&str; 5] = [
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_EXECUTION_ENV",
    "GREETING",
];

/// The module `_HANDLER` names, loaded from `/var/task`.
fn load_module() -> Result<Value, Diagnostic> {
    let handler = std::env::var("_HANDLER").unwrap_or_default();
    let module = handler.split('.').next().unwrap_or_default();
    let path = Path::new("/var/task").join(format!("{module}.json"));
    let text = std::fs::read_to_string(&path).map_err(|err| Diagnostic {
        error_type: "Runtime.ImportModuleError".into(),
        error_message: format!(
            "Unable to import module '{module}': {}: {err}",
            path.display()
        ),
    })?;
    serde_json::from_str(&text).map_err(|err| Diagnostic {
        error_type: "Runtime.UserCodeSyntaxError".into(),
        error_message: format!("{}: {err}", path.display()),
    })
}

/// Whether writing a file in `dir` fails as on a read-only file system (EROFS).
fn read_only(dir: &str) -> bool {
    let probe = Path::new(dir).join(".esb-write-probe");
    match std::fs::write(&probe, b"x") {
        Ok(()) => {
            let _ = std::fs::remove_file(&probe);
            false
        }
        Err(err) => err.raw_os_error() == Some(30),
    }
}

/// The text of every regular file directly under `dir`, by name.
fn files(dir: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(entry.path()) {
            out.insert(
                entry.file_name().to_string_lossy().into_owned(),
                text.into(),
            );
        }
    }
    out
}

async fn handler(
    module: &Result<Value, Diagnostic>,
    event: LambdaEvent<Value>,
) -> Result<Value, Diagnostic> {
    let module = module.clone()?;
    let env: Map<String, Value> = KEYS
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                std::env::var(k).map_or(Value::Null, Value::from),
            )
        })
        .collect();
    let body = json!({
        "module": module,
        "event": event.payload,
        "opt": files("/opt"),
        "task_read_only": read_only("/var/task"),
        "opt_read_only": read_only("/opt"),
        "env": env,
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
    });
    Ok(json!({
        "statusCode": 200,
        "headers": { "content-type": "application/json" },
        "body": body.to_string(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    // As a runtime imports the handler's module: once, before the first event.
    let module: &'static Result<Value, Diagnostic> = Box::leak(Box::new(load_module()));
    lambda_runtime::run(service_fn(move |event| handler(module, event))).await
}
