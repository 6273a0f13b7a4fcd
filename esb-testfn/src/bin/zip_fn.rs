//! `zip_fn`: a `lambda_runtime` function run as the `bootstrap` of a `provided.al2023` zip
//! function: answers a proxy response describing its event, context and environment; an
//! event mentioning `fail` is a function error of type `CustomFailure`.

use lambda_runtime::{Diagnostic, LambdaEvent, service_fn};
use serde_json::{Value, json};

const KEYS: [&str; 7] = [
    "_HANDLER",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "GREETING",
    "LD_LIBRARY_PATH",
];

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Diagnostic> {
    if event.payload.to_string().contains("fail") {
        return Err(Diagnostic {
            error_type: "CustomFailure".into(),
            error_message: "asked to fail".into(),
        });
    }
    let env: serde_json::Map<String, Value> = KEYS
        .iter()
        .map(|k| {
            (
                (*k).to_owned(),
                std::env::var(k).map_or(Value::Null, Value::from),
            )
        })
        .collect();
    let context = &event.context;
    let body = json!({
        "lang": "rust",
        "event": event.payload,
        "request_id": context.request_id,
        "function_name": context.env_config.function_name,
        "memory": context.env_config.memory,
        "arn": context.invoked_function_arn,
        "remaining": context.deadline > 0,
        "env": env,
        "cwd": std::env::current_dir().map(|d| d.display().to_string()).unwrap_or_default(),
        "pid": std::process::id(),
    });
    Ok(json!({
        "statusCode": 200,
        "headers": { "content-type": "application/json" },
        "body": body.to_string(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    lambda_runtime::run(service_fn(handler)).await
}
