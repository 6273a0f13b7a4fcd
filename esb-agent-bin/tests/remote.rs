//! The agent served in-process on 127.0.0.1, driven through the `remote` runtime backend
//! and through raw gRPC clients.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use esb_proto::agent::v1::agent_service_client::AgentServiceClient;
use esb_proto::agent::v1::{InvokeWorkerRequest, ListContainersRequest};
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_runtime::{Error, InvokeRequest, InvokeResult, Runtime, SandboxState};
use esb_testfn::ports::free_port;
use serde_json::{Value, json};
use support::{TOKEN, TestAgent, testfn};
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

fn body(result: &InvokeResult) -> Value {
    match result {
        InvokeResult::Success(body) => serde_json::from_slice(body).unwrap(),
        InvokeResult::FunctionError(err) => panic!("function error: {err:?}"),
    }
}

#[tokio::test]
async fn ensure_invoke_response_through_the_remote_runtime() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    assert_eq!(remote.agent_backend(), "process");
    assert_eq!(remote.capabilities().backend, "remote");
    assert!(remote.capabilities().commands);

    let sandbox = remote.create(testfn("echo")).await.unwrap();
    assert_eq!(sandbox.function_name, "echo");

    let mut request = InvokeRequest::new(r#"{"hello":"world"}"#);
    request.trace_id = Some("Root=1-5e1b4151-5ac6c58f5b5dbd2a5ff2ef2a".into());
    let request_id = request.request_id.clone();
    let first = remote.invoke(&sandbox.id, request).await.unwrap();
    let answer = body(&first.result);
    assert_eq!(answer["echo"], json!({"hello": "world"}));
    assert_eq!(answer["context"]["request_id"], json!(request_id));
    assert_eq!(
        answer["context"]["trace_id"],
        json!("Root=1-5e1b4151-5ac6c58f5b5dbd2a5ff2ef2a")
    );
    assert_eq!(answer["env"]["AWS_LAMBDA_FUNCTION_NAME"], json!("echo"));
    assert!(
        first.init_duration.is_some(),
        "a cold start reports its init"
    );
    assert!(first.billed_duration >= Duration::from_millis(1));
    assert!(first.max_memory_used_mb > 0);

    let second = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"n":2}"#))
        .await
        .unwrap();
    assert_eq!(body(&second.result)["echo"], json!({"n": 2}));
    assert_eq!(body(&second.result)["pid"], answer["pid"], "warm reuse");
    assert_eq!(second.init_duration, None);

    remote.destroy(&sandbox.id).await.unwrap();
    agent.stop().await;
}

#[tokio::test]
async fn function_error_comes_back_as_a_typed_response() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let sandbox = remote.create(testfn("fails")).await.unwrap();
    let response = remote
        .invoke(
            &sandbox.id,
            InvokeRequest::new(
                r#"{"error":{"type":"ValidationError","message":"name is required"}}"#,
            ),
        )
        .await
        .unwrap();
    let InvokeResult::FunctionError(err) = &response.result else {
        panic!("expected a function error, got {:?}", response.result);
    };
    assert_eq!(err.error_type, "ValidationError");
    assert_eq!(err.error_message, "name is required");
    let document: Value = serde_json::from_slice(&response.body()).unwrap();
    assert_eq!(document["errorType"], json!("ValidationError"));

    // The sandbox survives its function's error.
    let again = remote.invoke(&sandbox.id, InvokeRequest::new("{}")).await;
    assert!(matches!(
        again.map(|r| r.result),
        Ok(InvokeResult::Success(_))
    ));
    remote.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn timeout_maps_back_to_a_timeout_error() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let sandbox = remote
        .create(testfn("slow").timeout(Duration::from_millis(500)))
        .await
        .unwrap();
    let err = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"sleep_ms":5000}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(err, Error::Timeout { timeout } if timeout == Duration::from_millis(500)),
        "{err:?}"
    );
    assert_eq!(err.to_string(), "Task timed out after 0.50 seconds");
    assert!(err.is_sandbox_fatal());
}

#[tokio::test]
async fn crashed_sandbox_is_reported_lost() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let sandbox = remote.create(testfn("crash")).await.unwrap();
    let err = remote
        .invoke(&sandbox.id, InvokeRequest::new(r#"{"exit":3}"#))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::SandboxLost { id, reason } if *id == sandbox.id && reason.contains("exit status 3")),
        "{err:?}"
    );
}

#[tokio::test]
async fn calls_without_a_valid_token_are_unauthenticated() {
    let agent = TestAgent::start().await;

    let mut anonymous = AgentServiceClient::connect(agent.url()).await.unwrap();
    let status = anonymous
        .list_containers(ListContainersRequest::default())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut request = tonic::Request::new(ListContainersRequest::default());
    request
        .metadata_mut()
        .insert("authorization", "Bearer wrong-token".parse().unwrap());
    let status = anonymous.list_containers(request).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    let mut request = tonic::Request::new(ListContainersRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    assert!(anonymous.list_containers(request).await.is_ok());

    let err = RemoteRuntime::connect(RemoteConfig::new(agent.url()).token("wrong-token"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Backend(msg) if msg.contains("rejected")),
        "{err:?}"
    );
}

#[tokio::test]
async fn health_reports_serving_without_a_token() {
    let agent = TestAgent::start().await;
    let channel = tonic::transport::Endpoint::from_shared(agent.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "esb.agent.v1.AgentService"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            response.status(),
            ServingStatus::Serving,
            "service {service:?}"
        );
    }
}

#[tokio::test]
async fn list_pause_resume_and_destroy() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let sandbox = remote.create(testfn("listed")).await.unwrap();
    remote
        .invoke(&sandbox.id, InvokeRequest::new("{}"))
        .await
        .unwrap();

    let listed = remote.list().await.unwrap();
    let found = listed.iter().find(|s| s.id == sandbox.id).expect("listed");
    assert_eq!(found.function_name, "listed");
    assert_eq!(found.state, SandboxState::Running);

    remote.pause(&sandbox.id).await.unwrap();
    let paused = remote.list().await.unwrap();
    assert_eq!(paused[0].state, SandboxState::Paused);
    remote.resume(&sandbox.id).await.unwrap();
    assert_eq!(remote.list().await.unwrap()[0].state, SandboxState::Running);
    remote
        .invoke(&sandbox.id, InvokeRequest::new("{}"))
        .await
        .unwrap();

    let metrics = remote.metrics(&sandbox.id).await.unwrap();
    assert!(metrics.memory_current_bytes > 0);

    remote.destroy(&sandbox.id).await.unwrap();
    assert!(remote.list().await.unwrap().is_empty());
    let err = remote
        .invoke(&sandbox.id, InvokeRequest::new("{}"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::NotFound(id) if *id == sandbox.id),
        "{err:?}"
    );
    // Destroying an unknown id succeeds, as the trait says.
    remote.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn payloads_of_lambdas_6_mb_limit_fit_through_grpc() {
    let agent = TestAgent::start().await;
    let remote = agent.remote().await;
    let sandbox = remote.create(testfn("big")).await.unwrap();
    let text = "x".repeat(5 * 1024 * 1024);
    let event = serde_json::to_vec(&json!({ "data": text })).unwrap();
    let response = remote
        .invoke(&sandbox.id, InvokeRequest::new(event))
        .await
        .unwrap();
    let answer = body(&response.result);
    assert_eq!(
        answer["echo"]["data"].as_str().map(str::len),
        Some(text.len())
    );
    remote.destroy(&sandbox.id).await.unwrap();
}

#[tokio::test]
async fn invoke_of_an_empty_container_id_is_an_invalid_argument() {
    let agent = TestAgent::start().await;
    let mut client = AgentServiceClient::connect(agent.url()).await.unwrap();
    let mut request = tonic::Request::new(InvokeWorkerRequest::default());
    request
        .metadata_mut()
        .insert("authorization", format!("Bearer {TOKEN}").parse().unwrap());
    let status = client.invoke_worker(request).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn unreachable_agent_is_unavailable() {
    // Nothing listens there.
    let port = free_port().unwrap();
    let mut config = RemoteConfig::new(format!("http://127.0.0.1:{port}")).token(TOKEN);
    config.retry_backoff = Duration::from_millis(10);
    let err = RemoteRuntime::connect(config).await.unwrap_err();
    assert!(
        matches!(&err, Error::Unavailable(msg) if msg.contains(&port.to_string())),
        "{err:?}"
    );
}

#[tokio::test]
async fn agent_that_goes_away_makes_calls_unavailable() {
    let agent = TestAgent::start().await;
    let mut config = RemoteConfig::new(agent.url()).token(TOKEN);
    config.retry_backoff = Duration::from_millis(10);
    let remote = RemoteRuntime::connect(config).await.unwrap();
    agent.stop().await;
    let err = remote.list().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err:?}");
}

/// The service names a reflection client lists, or the status of the call.
async fn reflected_services(agent: &TestAgent, token: Option<&str>) -> Result<Vec<String>, Code> {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let channel = tonic::transport::Endpoint::from_shared(agent.url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut client = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut request = tonic::Request::new(tokio_stream::iter([ask]));
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    let mut answers = client
        .server_reflection_info(request)
        .await
        .map_err(|s| s.code())?
        .into_inner();
    let answer = answers.message().await.map_err(|s| s.code())?.unwrap();
    match answer.message_response {
        Some(MessageResponse::ListServicesResponse(list)) => {
            Ok(list.service.into_iter().map(|s| s.name).collect())
        }
        other => panic!("unexpected reflection answer {other:?}"),
    }
}

#[tokio::test]
async fn reflection_is_served_only_when_asked_and_only_with_the_token() {
    let plain = TestAgent::start().await;
    assert_eq!(
        reflected_services(&plain, Some(TOKEN)).await,
        Err(Code::Unimplemented)
    );

    let mut options = esb_agent::ServeOptions::new(esb_agent::BearerAuth::token(TOKEN));
    options.reflection = true;
    let reflective = TestAgent::start_with(options).await;
    assert_eq!(
        reflected_services(&reflective, None).await,
        Err(Code::Unauthenticated)
    );
    let services = reflected_services(&reflective, Some(TOKEN)).await.unwrap();
    assert!(
        services.iter().any(|s| s == "esb.agent.v1.AgentService"),
        "{services:?}"
    );
    assert!(
        services.iter().any(|s| s == "grpc.health.v1.Health"),
        "{services:?}"
    );
}
