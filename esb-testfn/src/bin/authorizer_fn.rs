//! `authorizer_fn`: a Lambda authorizer built with `lambda_runtime`, for the gateway's tests.
//!
//! It reads the caller's token from a TOKEN event (`authorizationToken`), a REQUEST event's
//! `authorization` header, or a payload 2.0 event's `identitySource`, and answers:
//! - `deny...`: a Deny policy (or `isAuthorized: false`);
//! - `unauthorized`: fails with the message `Unauthorized`;
//! - `garbage`: an answer that is neither a policy nor a simple response;
//! - anything else: an Allow policy on the method (or `isAuthorized: true`), with a `context`
//!   of the token, how many times this sandbox was invoked (`calls`), a number and a boolean.
//!
//! `AUTH_SIMPLE=1` in its environment makes it answer simple responses.

use std::sync::atomic::{AtomicU64, Ordering};

use lambda_runtime::{Error, LambdaEvent, service_fn};
use serde_json::{Value, json};

static CALLS: AtomicU64 = AtomicU64::new(0);

fn token(event: &Value) -> String {
    let text = |v: &Value| v.as_str().map(str::to_owned);
    text(&event["authorizationToken"])
        .or_else(|| text(&event["headers"]["authorization"]))
        .or_else(|| text(&event["identitySource"][0]))
        .unwrap_or_default()
}

async fn handler(event: LambdaEvent<Value>) -> Result<Value, Error> {
    let calls = CALLS.fetch_add(1, Ordering::SeqCst) + 1;
    let event = event.payload;
    let token = token(&event);
    if token == "unauthorized" {
        return Err("Unauthorized".into());
    }
    if token == "garbage" {
        return Ok(json!({"hello": "world"}));
    }
    let allow = !token.starts_with("deny");
    let arn = event["methodArn"]
        .as_str()
        .or_else(|| event["routeArn"].as_str())
        .unwrap_or("*")
        .to_owned();
    let mut context = json!({
        "token": token,
        "calls": calls,
        "number": 7,
        "flag": true,
        "type": event["type"],
        "arn": arn,
    });
    // What a REQUEST event carries besides the identity, for the tests to see.
    for (key, value) in [
        ("resource", &event["resource"]),
        ("version", &event["version"]),
        ("rawPath", &event["rawPath"]),
        ("id", &event["pathParameters"]["id"]),
    ] {
        if value.is_string() {
            context[key] = value.clone();
        }
    }
    if std::env::var("AUTH_SIMPLE").as_deref() == Ok("1") {
        return Ok(json!({"isAuthorized": allow, "context": context}));
    }
    let resource = arn;
    Ok(json!({
        "principalId": format!("user-{token}"),
        "policyDocument": {
            "Version": "2012-10-17",
            "Statement": [{
                "Action": "execute-api:Invoke",
                "Effect": if allow { "Allow" } else { "Deny" },
                "Resource": resource,
            }],
        },
        "context": context,
    }))
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    lambda_runtime::run(service_fn(handler)).await
}
