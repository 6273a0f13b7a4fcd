//! The shipper against an in-process VictoriaLogs JSON-lines endpoint.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/mod.rs"]
mod victorialogs;
use victorialogs as support;
#[path = "support/tls.rs"]
mod tls;

use std::num::NonZeroUsize;
use std::time::{Duration, SystemTime};

use esb_logs::{
    Auth, Error, JOB_SERVICES, Level, LogLine, LogShipper, LogStream, Record, RetryPolicy,
    ShipperLayer, VictoriaLogsConfig, function_record,
};
use serde_json::Value;
use support::VictoriaLogs;
use tracing_subscriber::prelude::*;

fn n(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap()
}

/// Settings for tests: a long flush interval, so only full batches and shutdown send.
fn config(server: &VictoriaLogs) -> VictoriaLogsConfig {
    let mut config = VictoriaLogsConfig::new(&server.url);
    config.flush_interval = Duration::from_secs(60);
    config.retry.initial_backoff = Duration::from_millis(10);
    config
}

fn record(message: impl Into<String>) -> Record {
    Record::new("esb-gateway", JOB_SERVICES, Level::Info, message)
}

fn messages(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn records_arrive_with_their_fields_and_the_query_parameters() {
    let server = VictoriaLogs::start().await;
    let mut config = config(&server);
    config.auth = Some(Auth::Basic {
        username: "esb".into(),
        password: "secret".into(),
    });
    config.extra_stream_fields = vec![("host".into(), "edge-1".into())];
    let shipper = LogShipper::start(config).unwrap();

    shipper.push(function_record(LogLine {
        time: SystemTime::now(),
        function_name: "orders".into(),
        sandbox_id: "orders-0-1a2b3c4d".into(),
        request_id: Some("req-1".into()),
        trace_id: Some("Root=1-65a0b0c0-0123456789abcdef01234567".into()),
        stream: LogStream::Stdout,
        message: r#"{"level":"ERROR","message":"out of stock"}"#.into(),
    }));
    shipper.push(record("listening"));
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!((metrics.sent, metrics.dropped), (2, 0));

    let requests = server.requests();
    assert_eq!(requests.len(), 1);
    let request = &requests[0];
    assert_eq!(request.status, 200);
    assert_eq!(request.query["_stream_fields"], "container_name,job,host");
    assert_eq!(request.query["_msg_field"], "message");
    assert_eq!(request.query["_time_field"], "_time");
    // "esb:secret" in base64.
    assert_eq!(request.headers["authorization"], "Basic ZXNiOnNlY3JldA==");
    assert_eq!(request.headers["content-type"], "application/stream+json");

    let function = &request.lines[0];
    assert_eq!(function["message"], "out of stock");
    // The level as the function wrote it.
    assert_eq!(function["level"], "ERROR");
    assert_eq!(function["container_name"], "orders");
    assert_eq!(function["job"], "lambda");
    assert_eq!(function["function_name"], "orders");
    assert_eq!(function["sandbox_id"], "orders-0-1a2b3c4d");
    assert_eq!(function["aws_request_id"], "req-1");
    assert_eq!(
        function["trace_id"],
        "Root=1-65a0b0c0-0123456789abcdef01234567"
    );
    assert_eq!(function["stream"], "stdout");
    assert_eq!(function["host"], "edge-1");
    let time = function["_time"].as_str().unwrap();
    assert!(
        time.ends_with('Z') && time.len() == "2024-01-01T00:00:00.000000Z".len(),
        "{time}"
    );

    let service = &request.lines[1];
    assert_eq!(service["message"], "listening");
    assert_eq!(service["job"], "services");
    assert_eq!(service["container_name"], "esb-gateway");
    assert!(service.get("aws_request_id").is_none());
}

#[tokio::test]
async fn a_bearer_token_is_sent() {
    let server = VictoriaLogs::start().await;
    let mut config = config(&server);
    config.auth = Some(Auth::Bearer("t0ken".into()));
    let shipper = LogShipper::start(config).unwrap();
    shipper.push(record("hello"));
    shipper.shutdown(DEADLINE).await;
    assert_eq!(
        server.requests()[0].headers["authorization"],
        "Bearer t0ken"
    );
}

#[tokio::test]
async fn full_batches_go_at_once_and_the_rest_at_shutdown() {
    let server = VictoriaLogs::start().await;
    let mut config = config(&server);
    config.batch_max_records = n(10);
    let shipper = LogShipper::start(config).unwrap();
    for i in 0..25 {
        shipper.push(record(format!("m{i}")));
    }
    // Two full batches leave without waiting for the (one minute) flush interval.
    let lines = server.wait_for_lines(20).await;
    assert_eq!(lines.len(), 20);
    assert_eq!(shipper.metrics().queued, 5);

    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!(metrics.sent, 25);
    assert_eq!(metrics.batches_sent, 3);
    let sizes: Vec<usize> = server.requests().iter().map(|r| r.lines.len()).collect();
    assert_eq!(sizes, [10, 10, 5]);
    let expected: Vec<String> = (0..25).map(|i| format!("m{i}")).collect();
    assert_eq!(messages(&server.lines()), expected);
}

#[tokio::test]
async fn batches_are_cut_by_bytes() {
    let server = VictoriaLogs::start().await;
    let mut config = config(&server);
    let one = record("x".repeat(1000)).estimated_size();
    config.batch_max_bytes = n(one * 3);
    let shipper = LogShipper::start(config).unwrap();
    for _ in 0..7 {
        shipper.push(record("x".repeat(1000)));
    }
    server.wait_for_lines(6).await;
    shipper.shutdown(DEADLINE).await;
    let sizes: Vec<usize> = server.requests().iter().map(|r| r.lines.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
}

#[tokio::test]
async fn a_partial_batch_goes_after_the_flush_interval() {
    let server = VictoriaLogs::start().await;
    let mut config = config(&server);
    config.flush_interval = Duration::from_millis(100);
    let shipper = LogShipper::start(config).unwrap();
    shipper.push(record("alone"));
    let lines = server.wait_for_lines(1).await;
    assert_eq!(messages(&lines), ["alone"]);
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!((metrics.sent, metrics.batches_sent), (1, 1));
}

#[tokio::test]
async fn large_bodies_are_gzipped_small_ones_are_not() {
    let server = VictoriaLogs::start().await;
    let mut config = config(&server);
    config.gzip_min_bytes = Some(2048);
    config.batch_max_records = n(50);
    let shipper = LogShipper::start(config).unwrap();
    for i in 0..50 {
        shipper.push(record(format!(
            "line {i} of a batch large enough to compress"
        )));
    }
    server.wait_for_lines(50).await;
    shipper.push(record("small"));
    let metrics = shipper.shutdown(DEADLINE).await;

    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    assert!(requests[0].gzipped);
    assert_eq!(requests[0].headers["content-encoding"], "gzip");
    assert_eq!(requests[0].lines.len(), 50);
    assert_eq!(
        requests[0].lines[49]["message"],
        "line 49 of a batch large enough to compress"
    );
    assert!(!requests[1].gzipped);
    assert!(!requests[1].headers.contains_key("content-encoding"));
    assert_eq!(messages(&requests[1].lines), ["small"]);
    let plain: usize = 50 * 100;
    assert!(
        metrics.bytes_sent < u64::try_from(plain).unwrap() / 2,
        "{metrics:?}"
    );
}

#[tokio::test]
async fn server_errors_are_retried() {
    let server = VictoriaLogs::start().await;
    server.fail_next(&[500, 503]);
    let shipper = LogShipper::start(config(&server)).unwrap();
    shipper.push(record("persistent"));
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!((metrics.sent, metrics.dropped), (1, 0));
    assert_eq!(metrics.retries, 2);
    let statuses: Vec<u16> = server.requests().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [500, 503, 200]);
    assert_eq!(messages(&server.lines()), ["persistent"]);
}

#[tokio::test]
async fn a_refused_batch_is_not_retried_and_counts_as_dropped() {
    let server = VictoriaLogs::start().await;
    server.fail_next(&[400]);
    let shipper = LogShipper::start(config(&server)).unwrap();
    shipper.push(record("refused"));
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!(metrics.sent, 0);
    assert_eq!(metrics.dropped, 1);
    assert_eq!(metrics.batches_failed, 1);
    assert_eq!(metrics.retries, 0);
    assert_eq!(server.requests().len(), 1);
}

#[tokio::test]
async fn connection_errors_are_retried_then_the_batch_is_dropped() {
    // A port that was just free: nothing listens on it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = VictoriaLogsConfig::new(url);
    config.flush_interval = Duration::from_millis(20);
    config.retry = RetryPolicy::new(n(3), Duration::from_millis(10), Duration::from_millis(20));
    let shipper = LogShipper::start(config).unwrap();
    shipper.push(record("lost"));
    let gave_up = async {
        while shipper.metrics().batches_failed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gave_up)
        .await
        .expect("the batch is given up after its attempts");
    let metrics = shipper.metrics();
    assert_eq!(metrics.retries, 2);
    assert_eq!(metrics.dropped, 1);
    assert_eq!(metrics.sent, 0);
}

#[tokio::test]
async fn a_hung_server_drops_the_oldest_records_and_pushes_still_return() {
    let server = VictoriaLogs::start().await;
    server.hang(true);
    let mut config = config(&server);
    config.queue_capacity = n(100);
    config.batch_max_records = n(10);
    let shipper = LogShipper::start(config).unwrap();

    for i in 0..10 {
        shipper.push(record(format!("m{i}")));
    }
    // The first batch is in flight, stuck in the server.
    server
        .wait_until("a hanging request", |s| s.hanging() == 1)
        .await;

    // 250 more from a plain thread: none of them waits for the server.
    let pusher = shipper.clone();
    std::thread::spawn(move || {
        for i in 10..260 {
            pusher.push(record(format!("m{i}")));
        }
    })
    .join()
    .unwrap();
    let metrics = shipper.metrics();
    assert_eq!(metrics.queued, 100);
    // The bound covers the batch in flight too: as the oldest, it made room first, and
    // counts as dropped while it hangs.
    assert_eq!(metrics.dropped, 160);

    server.hang(false);
    let final_metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!(final_metrics.sent, 110);
    // The hung request was answered after all: its 10 records are not lost.
    assert_eq!(final_metrics.dropped, 150);
    // The first batch and the newest 100 survive; m10..m160 were dropped.
    let expected: Vec<String> = (0..10).chain(160..260).map(|i| format!("m{i}")).collect();
    assert_eq!(messages(&server.lines()), expected);
}

#[tokio::test]
async fn shutdown_flushes_what_is_queued_and_later_pushes_are_dropped() {
    let server = VictoriaLogs::start().await;
    let shipper = LogShipper::start(config(&server)).unwrap();
    for i in 0..30 {
        shipper.push(record(format!("m{i}")));
    }
    assert!(server.requests().is_empty());
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!((metrics.sent, metrics.dropped, metrics.queued), (30, 0, 0));
    assert_eq!(server.lines().len(), 30);

    shipper.push(record("too late"));
    assert_eq!(shipper.metrics().dropped, 1);
    assert_eq!(server.lines().len(), 30);
}

#[tokio::test]
async fn shutdown_gives_up_at_its_deadline() {
    let server = VictoriaLogs::start().await;
    server.hang(true);
    let shipper = LogShipper::start(config(&server)).unwrap();
    for i in 0..5 {
        shipper.push(record(format!("m{i}")));
    }
    let metrics = tokio::time::timeout(
        Duration::from_secs(10),
        shipper.shutdown(Duration::from_millis(200)),
    )
    .await
    .expect("shutdown returns by its deadline even when the server hangs");
    assert_eq!((metrics.sent, metrics.dropped), (0, 5));
    server.hang(false);
}

#[tokio::test]
async fn dropping_every_handle_flushes() {
    let server = VictoriaLogs::start().await;
    let shipper = LogShipper::start(config(&server)).unwrap();
    shipper.push(record("last words"));
    drop(shipper);
    let lines = server.wait_for_lines(1).await;
    assert_eq!(messages(&lines), ["last words"]);
}

#[tokio::test]
async fn the_layer_ships_events_with_the_fields_of_their_spans() {
    let server = VictoriaLogs::start().await;
    let shipper = LogShipper::start(config(&server)).unwrap();
    let subscriber =
        tracing_subscriber::registry().with(ShipperLayer::new(shipper.clone(), "esb-gateway"));
    tracing::subscriber::with_default(subscriber, || {
        let request = tracing::info_span!(
            "request",
            request_id = "req-9",
            trace_id = tracing::field::Empty
        );
        let _request = request.enter();
        request.record("trace_id", "Root=1-2-3");
        let invoke = tracing::info_span!("invoke", function = %"orders", sandbox_id = "orders-1");
        let _invoke = invoke.enter();
        tracing::warn!(attempt = 3, "cold start took {} ms", 120);
        tracing::warn!(target: "esb_logs::shipper", "never shipped");
        tracing::warn!(target: "hyper::proto", "never shipped either");
    });
    tracing::subscriber::with_default(
        tracing_subscriber::registry().with(ShipperLayer::new(shipper.clone(), "esb-gateway")),
        || tracing::error!(request_id = "req-10", "outside any span"),
    );
    shipper.shutdown(DEADLINE).await;

    let lines = server.lines();
    assert_eq!(
        messages(&lines),
        ["cold start took 120 ms", "outside any span"]
    );
    let event = &lines[0];
    assert_eq!(event["level"], "warn");
    assert_eq!(event["job"], "services");
    assert_eq!(event["container_name"], "esb-gateway");
    assert_eq!(event["aws_request_id"], "req-9");
    assert_eq!(event["trace_id"], "Root=1-2-3");
    assert_eq!(event["function_name"], "orders");
    assert_eq!(event["sandbox_id"], "orders-1");
    assert_eq!(event["attempt"], "3");
    assert_eq!(event["target"], module_path!());
    let outside = &lines[1];
    assert_eq!(outside["level"], "error");
    assert_eq!(outside["aws_request_id"], "req-10");
    assert!(outside.get("function_name").is_none());
}

#[tokio::test]
async fn bad_settings_are_refused_with_the_field_named() {
    let mut config = VictoriaLogsConfig::new("http://127.0.0.1:9428");
    config.flush_interval = Duration::ZERO;
    let err = LogShipper::start(config).unwrap_err();
    assert!(
        matches!(
            err,
            Error::InvalidConfig {
                field: "flush_interval",
                ..
            }
        ),
        "{err}"
    );
    let err = LogShipper::start(VictoriaLogsConfig::new("127.0.0.1:9428")).unwrap_err();
    assert!(matches!(err, Error::InvalidUrl { .. }), "{err}");
}

#[test]
fn starting_outside_a_runtime_is_an_error() {
    let err = LogShipper::start(VictoriaLogsConfig::new("http://127.0.0.1:9428")).unwrap_err();
    assert!(matches!(err, Error::NoRuntime), "{err}");
}

#[tokio::test]
async fn https_with_a_given_ca_and_the_url_password_as_basic_auth() {
    let (server, ca) = tls::start_tls().await;
    let url = server.url.replace("https://", "https://esb:hunter2@");
    let mut config = config(&server);
    config.url = url.clone();
    config.ca_pem = Some(ca.into_bytes());
    config.host = Some("edge-7".into());
    config.headers = vec![("AccountID".into(), "3".into())];
    let shipper = LogShipper::start(config).unwrap();
    shipper.push(record("over tls"));
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!((metrics.sent, metrics.dropped), (1, 0), "{metrics:?}");
    let request = &server.requests()[0];
    // "esb:hunter2" in base64.
    assert_eq!(request.headers["authorization"], "Basic ZXNiOmh1bnRlcjI=");
    assert_eq!(request.headers["accountid"], "3");
    assert_eq!(request.query["_stream_fields"], "container_name,job,host");
    assert_eq!(request.lines[0]["host"], "edge-7");
    assert_eq!(request.lines[0]["message"], "over tls");
}

#[tokio::test]
async fn https_refuses_a_server_its_roots_do_not_trust() {
    let (server, _ca) = tls::start_tls().await;
    let mut config = config(&server);
    config.retry = RetryPolicy::new(n(1), Duration::from_millis(10), Duration::from_millis(10));
    config.flush_interval = Duration::from_millis(20);
    let shipper = LogShipper::start(config).unwrap();
    shipper.push(record("never trusted"));
    let gave_up = async {
        while shipper.metrics().batches_failed == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), gave_up)
        .await
        .expect("the untrusted server's batch fails");
    assert_eq!(shipper.metrics().sent, 0);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn a_line_of_256_kib_arrives_whole_and_longer_ones_are_cut_without_choking() {
    let server = VictoriaLogs::start().await;
    let shipper = LogShipper::start(config(&server)).unwrap();
    let whole = "w".repeat(esb_logs::MAX_MESSAGE_BYTES);
    shipper.push(record(whole.clone()));
    shipper.push(record("é".repeat(esb_logs::MAX_MESSAGE_BYTES)));
    shipper.push(record("after"));
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!((metrics.sent, metrics.dropped), (3, 0), "{metrics:?}");
    let lines = server.lines();
    assert_eq!(lines[0]["message"].as_str().unwrap(), whole);
    let cut = lines[1]["message"].as_str().unwrap();
    assert!(
        cut.len() <= esb_logs::MAX_MESSAGE_BYTES && cut.len() > esb_logs::MAX_MESSAGE_BYTES - 2
    );
    assert_eq!(lines[2]["message"], "after");
}

#[tokio::test]
async fn records_unsent_at_shutdown_are_spooled_and_sent_first_by_the_next_shipper() {
    let spool = tempfile::tempdir().unwrap();
    // Nobody listens: everything is still unsent at shutdown.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut first = VictoriaLogsConfig::new(url);
    first.spool_dir = Some(spool.path().to_owned());
    first.batch_max_records = n(10);
    first.flush_interval = Duration::from_millis(20);
    first.retry.initial_backoff = Duration::from_millis(10);
    let shipper = LogShipper::start(first).unwrap();
    for i in 0..25 {
        shipper.push(record(format!("m{i}")));
    }
    let metrics = shipper.shutdown(Duration::from_millis(300)).await;
    assert_eq!(
        (metrics.sent, metrics.dropped, metrics.spooled),
        (0, 0, 25),
        "{metrics:?}"
    );

    let server = VictoriaLogs::start().await;
    let mut second = config(&server);
    second.spool_dir = Some(spool.path().to_owned());
    let shipper = LogShipper::start(second).unwrap();
    shipper.push(record("after the restart"));
    let metrics = shipper.shutdown(DEADLINE).await;
    assert_eq!(
        (metrics.sent, metrics.dropped, metrics.replayed),
        (26, 0, 25),
        "{metrics:?}"
    );
    let expected: Vec<String> = (0..25)
        .map(|i| format!("m{i}"))
        .chain(["after the restart".to_owned()])
        .collect();
    assert_eq!(messages(&server.lines()), expected);
    // Sent once: the spool is empty.
    assert_eq!(std::fs::read_dir(spool.path()).unwrap().count(), 0);
}

#[tokio::test]
async fn the_spool_is_bounded_and_what_does_not_fit_is_counted() {
    let spool = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let mut config = VictoriaLogsConfig::new(url);
    config.spool_dir = Some(spool.path().to_owned());
    config.spool_max_bytes = 1000;
    let shipper = LogShipper::start(config).unwrap();
    for i in 0..100 {
        shipper.push(record(format!("m{i}")));
    }
    let metrics = shipper.shutdown(Duration::from_millis(200)).await;
    assert!(metrics.spooled > 0 && metrics.dropped > 0, "{metrics:?}");
    assert_eq!(metrics.spooled + metrics.dropped, 100, "{metrics:?}");
    let used: u64 = std::fs::read_dir(spool.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(used <= 1000, "{used}");
}
