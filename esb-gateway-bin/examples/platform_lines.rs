//! What Lambda's platform lines (START, END, REPORT) cost per invocation: the three lines
//! formatted and handed to the gateway's function-log sink (the terminal, through its writer
//! thread, and the log tail), against a sink that drops them, at 20,000 invocations a
//! second. CPU time of the whole process (writer thread included), interleaved rounds; send
//! stderr to a file to check that every line was written (`wc -l`: 3 lines an invocation).
//!
//! ```text
//! cargo run --release -p esb-gateway-bin --example platform_lines 2>/tmp/lines; wc -l /tmp/lines
//! ```

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use esb_gateway::logs::{LogTail, function_log_sink};
use esb_runtime::logs::{LogLine, LogSink, LogStream, NullLogSink};

/// The gateway binary's allocator, so the bench measures what it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const INVOCATIONS: u32 = 100_000;
/// Invocations a second, about what a loaded gateway serves: the terminal writer keeps up
/// (a faster loop would measure its queue dropping lines when full).
const RATE: f64 = 20_000.0;

/// User + system CPU time of this process (all threads), from `/proc/self/stat`.
fn cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, after)| {
            after
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100.
    Duration::from_millis(ticks * 10)
}

/// The platform lines of `INVOCATIONS` invocations into `sink`: CPU per invocation, in us.
fn run(sink: &dyn LogSink) -> f64 {
    let sandbox: Arc<str> = Arc::from("noop-0123456789ab");
    let line = |request_id: &str, message: String| LogLine {
        time: SystemTime::now(),
        function_name: "noop".to_owned(),
        sandbox_id: Arc::clone(&sandbox),
        request_id: Some(request_id.to_owned()),
        trace_id: Some("Root=1-5759e988-bd862e3fe1be46a994272793".to_owned()),
        stream: LogStream::Platform,
        message,
    };
    let start = cpu();
    let began = std::time::Instant::now();
    for n in 0..INVOCATIONS {
        if n % 500 == 0 {
            let due = Duration::from_secs_f64(f64::from(n) / RATE);
            if let Some(wait) = due.checked_sub(began.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        let request_id = format!("c6af9ac6-7b61-11e6-9a41-{n:012x}");
        sink.log(line(
            &request_id,
            format!("START RequestId: {request_id} Version: $LATEST"),
        ));
        sink.log(line(&request_id, format!("END RequestId: {request_id}")));
        sink.log(line(
            &request_id,
            format!(
                "REPORT RequestId: {request_id}\tDuration: {:.2} ms\tBilled Duration: {} ms\tMemory Size: 128 MB\tMax Memory Used: {} MB",
                0.42, 1, 6
            ),
        ));
    }
    // Let the writer thread finish what it was handed.
    std::thread::sleep(Duration::from_millis(300));
    (cpu() - start).as_secs_f64() * 1e6 / f64::from(INVOCATIONS)
}

fn main() {
    let terminal = LogTail::new().tee(function_log_sink(None));
    let null = NullLogSink;
    println!(
        "{INVOCATIONS} invocations a round, CPU per invocation (writer thread included, 300 ms idle each round):"
    );
    for round in 1..=3 {
        let on = run(terminal.as_ref());
        let off = run(&null);
        println!(
            "round {round}: terminal {on:.2} us, null {off:.2} us, platform lines {:+.2} us",
            on - off
        );
    }
}
