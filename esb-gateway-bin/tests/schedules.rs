//! A schedule fires end to end: a gateway over the process backend invokes a Python zip
//! function with EventBridge's Scheduled Event when its rate comes round.
//!
//! The schedules follow a [`ManualClock`] that the test moves, so the fire a minute after
//! start-up comes at once; everything else (the sandbox, its timeouts) runs on real time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use esb_gateway::{Gateway, GatewayConfig, ManualClock};
use esb_runtime::managed::{Managed, ManagedConfig};
use support::{CapturingSink, clients};

#[tokio::test]
async fn a_rate_schedule_invokes_its_function_with_the_scheduled_event() {
    let Some(python) = clients::python_with(&["awslambdaric"]) else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let code = clients::fixtures().join("zip/python/scheduled");
    let functions = format!(
        "functions:\n  tick:\n    scaling: {{ idle_timeout: 3600 }}\n    runtime: python3.12\n    handler: app.handler\n    code: {}\n    \
         events:\n      - {{ schedule: \"rate(1 minute)\", name: every-minute }}\n      - \
         {{ schedule: \"rate(1 minute)\", enabled: false, name: off }}\n",
        code.display()
    );
    let mut config =
        esb_router::Config::from_yaml_str(&functions, "routes: []\n", &|_| None).unwrap();
    let managed = Managed::new(
        ManagedConfig::new(tmp.path().join("cache"), std::env::var("PATH").unwrap())
            .interpreter("python3.12", &python),
    );
    esb_gateway::packages::prepare(&mut config, &managed, None).unwrap();
    let sink = Arc::new(CapturingSink::default());
    let started = chrono::DateTime::parse_from_rfc3339("2026-03-01T10:02:30Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let clock = Arc::new(ManualClock::new(started));
    let gateway = Gateway::builder(
        GatewayConfig::new(config, "127.0.0.1:0".parse().unwrap()).region("eu-west-1"),
        vec![support::process_runtime(sink.clone())],
    )
    .schedule_clock(clock.clone())
    .start()
    .await
    .unwrap();

    // Nothing fires before its time: 59 s on the schedules' clock.
    clock.advance(Duration::from_secs(59));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(events(&sink).is_empty());
    // The fire is due 60 s after start-up.
    clock.advance(Duration::from_secs(1));
    let mut fired = Vec::new();
    // Up to 30 s of real time for Python's cold start.
    for _ in 0..300 {
        fired = events(&sink);
        if !fired.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let lines: Vec<String> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|l| l.message.clone())
        .collect();
    assert_eq!(
        fired.len(),
        1,
        "one fire of the enabled schedule: {lines:#?}"
    );
    let event = &fired[0];
    assert_eq!(event["detail-type"], "Scheduled Event");
    assert_eq!(event["source"], "aws.events");
    assert_eq!(event["region"], "eu-west-1");
    assert_eq!(
        event["resources"][0].as_str().unwrap(),
        format!(
            "arn:aws:events:eu-west-1:{}:rule/every-minute",
            event["account"].as_str().unwrap()
        )
    );
    assert_eq!(
        event["time"], "2026-03-01T10:03:30Z",
        "the fire's time: {event}"
    );
    assert_eq!(event["version"], "0");
    assert_eq!(event["detail"], serde_json::json!({}));
    assert!(
        uuid::Uuid::parse_str(event["id"].as_str().unwrap()).is_ok(),
        "{event}"
    );
    gateway.shutdown().await;
}

/// The events the function printed.
fn events(sink: &CapturingSink) -> Vec<serde_json::Value> {
    sink.0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|line| line.message.strip_prefix("EVENT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}
