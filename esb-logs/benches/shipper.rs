//! Caller-side cost of `LogShipper::push` and records per second shipped to an in-process
//! VictoriaLogs endpoint on 127.0.0.1.
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::num::NonZeroUsize;
use std::time::{Duration, Instant, SystemTime};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use esb_logs::{LogLine, LogShipper, LogStream, Record, VictoriaLogsConfig, function_record};
use support::VictoriaLogs;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A typical function line: a request in flight, 80 characters of text.
fn function_line(i: usize) -> Record {
    function_record(LogLine {
        time: SystemTime::now(),
        function_name: "orders".into(),
        sandbox_id: "orders-0-1a2b3c4d".into(),
        request_id: Some("0e2b8f6a-8e8d-4c1a-9d53-1c1f0f6b3a41".into()),
        trace_id: Some("Root=1-65a0b0c0-0123456789abcdef01234567".into()),
        stream: LogStream::Stdout,
        message: format!(
            "order {i:08} accepted: 3 items, total 42.00 EUR, shipping to warehouse 7"
        ),
    })
}

fn config(server: &VictoriaLogs) -> VictoriaLogsConfig {
    let mut config = VictoriaLogsConfig::new(&server.url);
    config.flush_interval = Duration::from_millis(50);
    config.queue_capacity = NonZeroUsize::new(200_000).unwrap();
    config
}

/// Nanoseconds a caller spends in `push`, with the server accepting, and with it hung
/// (every push then also drops the oldest record).
fn caller_cost(c: &mut Criterion) {
    let rt = runtime();
    let mut group = c.benchmark_group("push");
    group.throughput(Throughput::Elements(1));

    let server = rt.block_on(VictoriaLogs::start_counting());
    let shipper = rt.block_on(async { LogShipper::start(config(&server)).unwrap() });
    let template = function_line(1);
    group.bench_function("server_accepting", |b| {
        b.iter_batched(
            || template.clone(),
            |record| shipper.push(record),
            BatchSize::SmallInput,
        );
    });
    rt.block_on(shipper.shutdown(Duration::from_secs(5)));

    let hung = rt.block_on(VictoriaLogs::start_counting());
    hung.hang(true);
    let mut hung_config = config(&hung);
    hung_config.queue_capacity = NonZeroUsize::new(10_000).unwrap();
    let shipper = rt.block_on(async { LogShipper::start(hung_config).unwrap() });
    for _ in 0..20_000 {
        shipper.push(template.clone());
    }
    group.bench_function("server_hung_queue_full", |b| {
        b.iter_batched(
            || template.clone(),
            |record| shipper.push(record),
            BatchSize::SmallInput,
        );
    });
    hung.hang(false);
    rt.block_on(shipper.shutdown(Duration::from_secs(5)));
    group.finish();
}

/// Records per second from `push` until the server has received them all.
fn shipped(c: &mut Criterion) {
    const RECORDS: usize = 20_000;
    let rt = runtime();
    let mut group = c.benchmark_group("ship");
    group.throughput(Throughput::Elements(RECORDS as u64));
    group.sample_size(10);
    for (name, gzip) in [("plain", None), ("gzip", Some(1024))] {
        let server = rt.block_on(VictoriaLogs::start_counting());
        let mut config = config(&server);
        config.gzip_min_bytes = gzip;
        let shipper = rt.block_on(async { LogShipper::start(config).unwrap() });
        let records: Vec<Record> = (0..RECORDS).map(function_line).collect();
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let target = server.accepted() + RECORDS;
                    let batch = records.clone();
                    let start = Instant::now();
                    for record in batch {
                        shipper.push(record);
                    }
                    rt.block_on(server.wait_until("all records", |s| s.accepted() >= target));
                    total += start.elapsed();
                }
                total
            });
        });
        let metrics = rt.block_on(shipper.shutdown(Duration::from_secs(5)));
        assert_eq!(metrics.dropped, 0, "{metrics:?}");
    }
    group.finish();
}

criterion_group!(benches, caller_cost, shipped);
criterion_main!(benches);
