//! Building v1 and v2 events for 1 KB and 1 MB bodies, and mapping responses.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::{Duration, SystemTime};

use criterion::{Bencher, Criterion, Throughput, criterion_group, criterion_main};
use esb_events::{EventContext, RouteInfo, build_v1, build_v2, map_response_v1, map_response_v2};
use nix::time::{ClockId, clock_gettime};

fn request(body_len: usize) -> (http::request::Parts, Vec<u8>) {
    let body: Vec<u8> =
        br#"{"key":"value","n":12345}"#.iter().copied().cycle().take(body_len).collect();
    let (parts, ()) = http::Request::post("/svc/items/42?color=red&size=L&size=XL")
        .header("host", "api.example.com")
        .header("user-agent", "curl/8.5.0")
        .header("accept", "*/*")
        .header("content-type", "application/json")
        .header(
            "authorization",
            "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1MSJ9.c2ln",
        )
        .header("x-forwarded-for", "10.0.0.1")
        .header("cookie", "session=abc; theme=dark")
        .body(())
        .unwrap()
        .into_parts();
    (parts, body)
}

/// Times `f` by the benchmarking thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), so that other
/// processes on a shared machine do not inflate the figures; `ESB_BENCH_WALL=1` uses wall time.
fn timed<R>(b: &mut Bencher<'_>, mut f: impl FnMut() -> R) {
    fn now() -> Option<Duration> {
        clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)
            .ok()
            .map(Duration::from)
    }
    if std::env::var_os("ESB_BENCH_WALL").is_some() || now().is_none() {
        b.iter(f);
        return;
    }
    b.iter_custom(|iters| {
        let start = now().unwrap();
        for _ in 0..iters {
            black_box(f());
        }
        now().unwrap() - start
    });
}

fn bench(c: &mut Criterion) {
    let params = BTreeMap::from([("id".to_owned(), "42".to_owned())]);
    let route = RouteInfo {
        resource: "/svc/items/{id}",
        route_key: "POST /svc/items/{id}",
        path_parameters: &params,
    };
    let claims: serde_json::Map<String, serde_json::Value> =
        serde_json::from_str(r#"{"sub":"u1","username":"alice","exp":1900000000}"#).unwrap();
    let mut ctx = EventContext::new(
        "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
        "127.0.0.1",
        SystemTime::now(),
    );
    ctx.claims = Some(&claims);

    let mut group = c.benchmark_group("build_event");
    for (label, len) in [("1KB", 1024), ("1MB", 1024 * 1024)] {
        let (parts, body) = request(len);
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(format!("v1_{label}"), |b| {
            timed(b, || {
                build_v1(black_box(&parts), black_box(&body), &route, &ctx).unwrap()
            })
        });
        group.bench_function(format!("v2_{label}"), |b| {
            timed(b, || {
                build_v2(black_box(&parts), black_box(&body), &route, &ctx).unwrap()
            })
        });
    }
    group.finish();

    let mut group = c.benchmark_group("map_response");
    let body = "x".repeat(1024);
    let v1 = serde_json::json!({
        "statusCode": 200,
        "headers": {"content-type": "application/json", "x-request": "abc"},
        "multiValueHeaders": {"set-cookie": ["a=1", "b=2"]},
        "body": body,
        "isBase64Encoded": false
    })
    .to_string();
    let v2 = serde_json::json!({"message": "hello", "items": [1, 2, 3]}).to_string();
    group.bench_function("v1_1KB", |b| {
        timed(b, || map_response_v1(black_box(v1.as_bytes())).unwrap())
    });
    group.bench_function("v2_inferred", |b| {
        timed(b, || map_response_v2(black_box(v2.as_bytes())).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
