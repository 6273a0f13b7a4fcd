//! Density bench: many idle process sandboxes on one host. The gateway starts `--sandboxes`
//! sandboxes of a no-op function (its `min_capacity`), and this program reports how long
//! until the pool counts them all idle (or paused), and until every one's runtime client is
//! connected and waiting for an invocation (`/proc/net/tcp`), the
//! gateway's resident memory and descriptors then, and whether it still answers (`/health`
//! and an invocation through a route).
//!
//! ```text
//! cargo run --release -p esb-gateway-bin --example density -- --sandboxes 2000
//! ```
//!
//! Started as a Lambda sandbox (`AWS_LAMBDA_RUNTIME_API` is set) this program is the no-op
//! function (`esb_testfn::noop`). Its allocator is told not to use transparent huge pages
//! (`MIMALLOC_ALLOW_THP=0` in the function's environment; `--function-thp` leaves them on):
//! otherwise each sandbox's start zeroes megabytes of huge pages, which on a small host costs
//! more than everything the gateway does for it.

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use esb_gateway::{Gateway, GatewayConfig};
use esb_runtime::logs::NullLogSink;
use esb_runtime::process::{ProcessConfig, ProcessRuntime};
use std::sync::Arc;

/// The gateway binary's allocator, so the bench measures what it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Density bench of idle process sandboxes.
#[derive(Parser, Debug)]
struct Args {
    /// Idle sandboxes to start.
    #[arg(long, default_value_t = 2000)]
    sandboxes: usize,
    /// Give up waiting for them after this many seconds.
    #[arg(long, default_value_t = 120)]
    timeout: u64,
    /// Let the no-op function's allocator use transparent huge pages.
    #[arg(long)]
    function_thp: bool,
    /// The function's program (a no-op `provided`-style bootstrap such as
    /// `target/release/noop_fn`); by default this program, started as the function.
    #[arg(long)]
    function: Option<std::path::PathBuf>,
}

/// CPU time (user + system) this process has used, in seconds.
fn cpu_seconds() -> f64 {
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
    ticks as f64 / 100.0
}

/// `key:  N kB` of /proc/self/status, in MB.
fn status_mb(key: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            status.lines().find_map(|line| {
                line.strip_prefix(key)?
                    .strip_prefix(':')?
                    .split_whitespace()
                    .next()?
                    .parse::<f64>()
                    .ok()
            })
        })
        .unwrap_or(0.0)
        / 1024.0
}

/// Connections accepted on 127.0.0.1:`port` and established (server side), from /proc/net/tcp.
fn established_to(port: u16) -> usize {
    let local = format!("{:08X}:{port:04X}", u32::from_ne_bytes([127, 0, 0, 1]));
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|row| {
            let mut fields = row.split_whitespace();
            fields.nth(1).is_some_and(|from| from == local) && fields.nth(1) == Some("01")
        })
        .count()
}

/// The Runtime API port the sandboxes were given, from a child's environment.
fn runtime_api_port() -> Option<u16> {
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()? {
        let Some(pid) = entry
            .ok()
            .and_then(|e| e.file_name().to_str()?.parse::<u32>().ok())
        else {
            continue;
        };
        let parent = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')')?
                    .1
                    .split_whitespace()
                    .nth(1)?
                    .parse::<u32>()
                    .ok()
            });
        if parent != Some(me) {
            continue;
        }
        let env = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
        for var in env.split(|&b| b == 0) {
            if let Some(api) = var.strip_prefix(b"AWS_LAMBDA_RUNTIME_API=") {
                return std::str::from_utf8(api)
                    .ok()?
                    .rsplit_once(':')?
                    .1
                    .parse()
                    .ok();
            }
        }
    }
    None
}

/// The status line of one `GET path`.
fn get(addr: std::net::SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut stream = std::net::TcpStream::connect(addr)?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer)?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

fn main() -> anyhow::Result<()> {
    if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_some() {
        return Ok(esb_testfn::noop::run()?);
    }
    let args = Args::parse();
    let fd = esb_runtime::limits::raise_fd_limit().context("the open-file limit")?;
    let me = match &args.function {
        Some(program) => program
            .canonicalize()
            .with_context(|| format!("{}", program.display()))?,
        None => std::env::current_exe()?,
    }
    .display()
    .to_string();
    tokio::runtime::Runtime::new()?.block_on(async {
        let functions = esb_router::Config::from_yaml_str(
            &format!(
                "functions:\n  noop:\n    command: [{me:?}]\n    timeout: 30\n    environment: {{ {thp} }}\n    scaling: {{ min_capacity: {n}, max_capacity: {n}, acquire_timeout: 30.0 }}\n",
                n = args.sandboxes,
                thp = if args.function_thp { "" } else { "MIMALLOC_ALLOW_THP: \"0\"" },
            ),
            "routes:\n  - { path: \"/noop\", method: GET, function: noop, auth: none }\n",
            &|_| None,
        )?;
        let runtime = Arc::new(ProcessRuntime::new(
            ProcessConfig::default().log_sink(Arc::new(NullLogSink)),
        ));
        let rss_before = status_mb("VmRSS");
        let cpu_before = cpu_seconds();
        let start = Instant::now();
        let gateway = Gateway::start(
            GatewayConfig::new(functions, "127.0.0.1:0".parse()?),
            vec![runtime],
        )
        .await?;
        let until = start + Duration::from_secs(args.timeout);
        let mut port = None;
        let mut pool_idle_after = None;
        let idle_after = loop {
            if pool_idle_after.is_none() {
                let stats = gateway.pool().stats("noop")?;
                if stats.idle + stats.paused >= args.sandboxes {
                    pool_idle_after = Some(start.elapsed());
                }
            }
            if port.is_none() {
                port = runtime_api_port();
            }
            // /proc/net/tcp costs the host a walk of every socket: read once the pool is done.
            let connected = match (port, pool_idle_after) {
                (Some(port), Some(_)) => established_to(port),
                _ => 0,
            };
            if connected >= args.sandboxes {
                break start.elapsed();
            }
            if Instant::now() > until {
                gateway.shutdown().await;
                bail!(
                    "only {connected} of {} sandboxes connected within {} s",
                    args.sandboxes,
                    args.timeout
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let cpu = cpu_seconds() - cpu_before;
        let stats = gateway.pool().stats("noop")?;
        let rss = status_mb("VmRSS");
        let fds = std::fs::read_dir("/proc/self/fd")?.count();
        let addr = gateway.local_addr();
        let (health, invoke) = tokio::task::spawn_blocking(move || {
            (get(addr, "/health"), get(addr, "/noop"))
        })
        .await?;
        println!(
            "{} idle process sandboxes (pool: {} idle, {} paused): all idle in the pool after {:.2} s, all runtime clients connected after {:.2} s",
            args.sandboxes,
            stats.idle,
            stats.paused,
            pool_idle_after.unwrap_or(idle_after).as_secs_f64(),
            idle_after.as_secs_f64()
        );
        println!(
            "gateway: RSS {rss:.1} MB ({rss_before:.1} MB before the gateway started), {cpu:.2} s of CPU (user + system) until then, {fds} open descriptors ({:.2} per sandbox), open-file limit {}",
            fds as f64 / args.sandboxes as f64,
            fd.soft
        );
        println!("GET /health: {}; GET /noop: {}", health?, invoke?);
        gateway.shutdown().await;
        anyhow::Ok(())
    })
}
