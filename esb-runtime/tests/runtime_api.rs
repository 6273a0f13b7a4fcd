//! Conformance of the Lambda Runtime API server, driven by a plain HTTP client.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use esb_runtime::runtime_api::{Broker, BrokerConfig, serve};
use esb_runtime::{Error, InvokeRequest, InvokeResult, MAX_PAYLOAD_BYTES, SandboxId};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

struct Api {
    broker: Broker,
    base: String,
    http: reqwest::Client,
}

async fn start(timeout: Duration) -> Api {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!(
        "http://{}/2018-06-01/runtime",
        listener.local_addr().unwrap()
    );
    let broker = Broker::new(BrokerConfig {
        sandbox_id: SandboxId::new("conformance"),
        function_name: "conformance".into(),
        region: "us-east-1".into(),
        account_id: "000000000000".into(),
        timeout,
        init_timeout: Duration::from_secs(5),
    });
    tokio::spawn(serve(listener, broker.clone(), std::future::pending()));
    Api {
        broker,
        base,
        http: reqwest::Client::new(),
    }
}

impl Api {
    fn invoke(
        &self,
        payload: &'static str,
    ) -> (
        String,
        JoinHandle<esb_runtime::Result<esb_runtime::InvokeResponse>>,
    ) {
        let request = InvokeRequest::new(payload);
        let id = request.request_id.clone();
        let broker = self.broker.clone();
        (
            id,
            tokio::spawn(async move { broker.invoke(request).await }),
        )
    }

    async fn next(&self) -> reqwest::Response {
        self.http
            .get(format!("{}/invocation/next", self.base))
            .send()
            .await
            .unwrap()
    }

    async fn post(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}/{path}", self.base))
            .body(body)
            .send()
            .await
            .unwrap()
    }
}

async fn error_type(response: reqwest::Response) -> String {
    let doc: serde_json::Value = response.json().await.unwrap();
    doc["errorType"].as_str().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn next_carries_the_lambda_headers_and_the_payload() {
    let api = start(Duration::from_secs(10)).await;
    let (id, pending) = api.invoke(r#"{"k":"v"}"#);
    let next = api.next().await;
    assert_eq!(next.status(), 200);
    let headers = next.headers().clone();
    assert_eq!(headers["lambda-runtime-aws-request-id"], id.as_str());
    assert_eq!(
        headers["lambda-runtime-invoked-function-arn"],
        "arn:aws:lambda:us-east-1:000000000000:function:conformance"
    );
    let deadline: u64 = headers["lambda-runtime-deadline-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert!(
        deadline > now && deadline <= now + 10_000,
        "{deadline} vs {now}"
    );
    assert_eq!(next.text().await.unwrap(), r#"{"k":"v"}"#);

    let answered = api
        .post(&format!("invocation/{id}/response"), r#"{"ok":1}"#)
        .await;
    assert_eq!(answered.status(), 202);
    let response = pending.await.unwrap().unwrap();
    assert_eq!(
        response.result,
        InvokeResult::Success(bytes::Bytes::from_static(br#"{"ok":1}"#))
    );
}

#[tokio::test]
async fn wrong_request_id_is_400_and_double_response_is_403() {
    let api = start(Duration::from_secs(10)).await;
    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);

    let wrong = api
        .post(
            "invocation/00000000-0000-0000-0000-000000000000/response",
            "{}",
        )
        .await;
    assert_eq!(wrong.status(), 400);
    assert_eq!(error_type(wrong).await, "InvalidRequestID");

    assert_eq!(
        api.post(&format!("invocation/{id}/response"), "1")
            .await
            .status(),
        202
    );
    let again = api.post(&format!("invocation/{id}/response"), "2").await;
    assert_eq!(again.status(), 403);
    assert_eq!(error_type(again).await, "InvalidStateTransition");
    let again = api.post(&format!("invocation/{id}/error"), "{}").await;
    assert_eq!(again.status(), 403);

    // The first answer is the one the caller got.
    let response = pending.await.unwrap().unwrap();
    assert_eq!(response.body(), bytes::Bytes::from_static(b"1"));
}

#[tokio::test]
async fn next_while_an_invocation_is_open_is_refused() {
    let api = start(Duration::from_secs(10)).await;
    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    let again = api.next().await;
    assert_eq!(again.status(), 403);
    assert_eq!(error_type(again).await, "InvalidStateTransition");
    assert_eq!(
        api.post(&format!("invocation/{id}/response"), "{}")
            .await
            .status(),
        202
    );
    pending.await.unwrap().unwrap();
}

#[tokio::test]
async fn oversize_response_is_413_and_the_caller_gets_a_size_error() {
    let api = start(Duration::from_secs(10)).await;
    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    let big = vec![b'x'; MAX_PAYLOAD_BYTES + 1];
    let answered = api.post(&format!("invocation/{id}/response"), big).await;
    assert_eq!(answered.status(), 413);
    let response = pending.await.unwrap().unwrap();
    match response.result {
        InvokeResult::FunctionError(err) => {
            assert_eq!(err.error_type, "Function.ResponseSizeTooLarge")
        }
        other => panic!("{other:?}"),
    }
    // A payload of exactly the limit is accepted.
    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    let exact = vec![b'y'; MAX_PAYLOAD_BYTES];
    assert_eq!(
        api.post(&format!("invocation/{id}/response"), exact)
            .await
            .status(),
        202
    );
    assert_eq!(
        pending.await.unwrap().unwrap().body().len(),
        MAX_PAYLOAD_BYTES
    );
}

#[tokio::test]
async fn oversize_request_is_refused_before_reaching_the_function() {
    let api = start(Duration::from_secs(10)).await;
    let request = InvokeRequest::new(vec![b'z'; MAX_PAYLOAD_BYTES + 1]);
    let err = api.broker.invoke(request).await.unwrap_err();
    assert!(matches!(err, Error::PayloadTooLarge { .. }), "{err}");
}

#[tokio::test]
async fn error_type_comes_from_the_header_or_the_body() {
    let api = start(Duration::from_secs(10)).await;
    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    let resp = api
        .http
        .post(format!("{}/invocation/{id}/error", api.base))
        .header("Lambda-Runtime-Function-Error-Type", "Custom.Header")
        .body(r#"{"errorMessage":"bad thing"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    match pending.await.unwrap().unwrap().result {
        InvokeResult::FunctionError(err) => {
            assert_eq!(err.error_type, "Custom.Header");
            assert_eq!(err.error_message, "bad thing");
        }
        other => panic!("{other:?}"),
    }

    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    // lambda_runtime's way: a generic header, the real type in the body.
    let resp = api
        .http
        .post(format!("{}/invocation/{id}/error", api.base))
        .header("Lambda-Runtime-Function-Error-Type", "unhandled")
        .body(r#"{"errorType":"FromBody","errorMessage":"other thing"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    match pending.await.unwrap().unwrap().result {
        InvokeResult::FunctionError(err) => {
            assert_eq!(err.error_type, "FromBody");
            assert_eq!(err.error_message, "other thing");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn init_error_fails_the_first_invoke() {
    let api = start(Duration::from_secs(10)).await;
    let (_, pending) = api.invoke("{}");
    let resp = api
        .post(
            "init/error",
            r#"{"errorType":"Runtime.ImportModuleError","errorMessage":"no module named app"}"#,
        )
        .await;
    assert_eq!(resp.status(), 202);
    let err = pending.await.unwrap().unwrap_err();
    match &err {
        Error::InitFailed {
            error_type,
            error_message,
        } => {
            assert_eq!(error_type, "Runtime.ImportModuleError");
            assert_eq!(error_message, "no module named app");
        }
        other => panic!("{other}"),
    }
    assert!(err.is_sandbox_fatal());
    // After init, an init error is out of place.
    let api = start(Duration::from_secs(10)).await;
    let (id, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    assert_eq!(api.post("init/error", "{}").await.status(), 403);
    api.post(&format!("invocation/{id}/response"), "{}").await;
    pending.await.unwrap().unwrap();
}

#[tokio::test]
async fn unknown_paths_are_404() {
    let api = start(Duration::from_secs(10)).await;
    assert_eq!(api.post("invocation/next", "").await.status(), 404);
    assert_eq!(api.post("nope", "").await.status(), 404);
}

#[tokio::test]
async fn an_invocation_past_its_deadline_times_out() {
    let api = start(Duration::from_millis(200)).await;
    let (_, pending) = api.invoke("{}");
    assert_eq!(api.next().await.status(), 200);
    let err = pending.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::Timeout { .. }), "{err}");
    assert_eq!(err.to_string(), "Task timed out after 0.20 seconds");
    assert!(api.broker.is_dead());
    // The sandbox is done for: the next invocation fails at once instead of waiting.
    let started = std::time::Instant::now();
    let (_, next) = api.invoke("{}");
    let err = next.await.unwrap().unwrap_err();
    assert!(matches!(err, Error::SandboxLost { .. }), "{err}");
    assert!(started.elapsed() < Duration::from_millis(150));
}
