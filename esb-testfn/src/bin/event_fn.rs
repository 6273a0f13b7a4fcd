//! `event_fn`: a `lambda_runtime` function that answers a Lambda proxy response whose body is
//! the raw event it received, as JSON text, so tests can inspect the exact event sent.

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    Ok(json!({
        "statusCode": 200,
        "headers": { "content-type": "application/json" },
        "body": event.payload.to_string(),
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
