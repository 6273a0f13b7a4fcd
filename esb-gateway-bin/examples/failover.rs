//! Failover bench: the gateway binary over three `esb-agent`s (process backend, loopback
//! ports), one of which fails again and again. Two ways of failing:
//!
//! - `kill`: the agent process is killed (SIGKILL): connections are refused at once;
//! - `hang`: the agent process is stopped (SIGSTOP): connections stay open and nothing
//!   answers, as when a host's link is cut; only the health checks find it.
//!
//! For each failure it measures the time from the failure until a burst of requests is
//! served in full by the other agents (the failover time; the burst is larger than the
//! sandboxes there are, so the failed agent's are among those it tries), and how many requests failed in
//! between; then brings the agent back and waits until it takes sandboxes again. It also
//! prints the placement spread of 9 concurrent requests over the three agents.
//!
//! ```text
//! cargo build --release -p esb-gateway-bin -p esb-agent-bin
//! cargo run --release -p esb-gateway-bin --example failover -- --failures 10
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use esb_testfn::ports::free_port;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// Failover bench of the gateway over three agents.
#[derive(Parser, Debug)]
struct Args {
    /// Failures of each kind (`kill`, `hang`).
    #[arg(long, default_value_t = 10)]
    failures: usize,
    /// Directory holding the `esb-gateway` and `esb-agent` binaries [default: the target
    /// directory this example was built in].
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// The gateway's --agent-health-interval, in seconds.
    #[arg(long, default_value_t = 0.5)]
    health_interval: f64,
    /// The gateway's --agent-health-timeout, in seconds.
    #[arg(long, default_value_t = 1.0)]
    health_timeout: f64,
    /// The gateway's --agent-health-failures.
    #[arg(long, default_value_t = 2)]
    health_failures: u32,
    /// Write the gateway's log (warnings and errors) to this file.
    #[arg(long)]
    gateway_log: Option<PathBuf>,
}

/// A child process killed (and reaped) when dropped.
struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = kill(self.pid(), Signal::SIGCONT);
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Proc {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.0.id() as i32)
    }
}

async fn wait_port(port: u16) -> anyhow::Result<()> {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    bail!("nothing listens on {port}")
}

fn start_agent(bin_dir: &Path, port: u16, record: &Path) -> anyhow::Result<Proc> {
    let child = Command::new(bin_dir.join("esb-agent"))
        .args(["--runtime", "process", "--insecure-no-auth"])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .arg("--sandbox-record-dir")
        .arg(record)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("cannot start esb-agent (cargo build --release -p esb-agent-bin)")?;
    Ok(Proc(child))
}

/// The parent of process `pid`: the agent that started the sandbox.
fn parent_of(pid: u64) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("PPid:"))
        .and_then(|ppid| ppid.trim().parse().ok())
}

/// `n` requests at once; the agent index each was served by, or `None` for a failure.
async fn burst(
    client: &reqwest::Client,
    port: u16,
    n: usize,
    sleep_ms: u64,
    agents: &[Proc],
) -> Vec<Option<usize>> {
    let one = || async {
        let response = client
            .post(format!(
                "http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"
            ))
            .body(format!(r#"{{"sleep_ms":{sleep_ms}}}"#))
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .ok()?;
        if !response.status().is_success() {
            return None;
        }
        let body: serde_json::Value = response.json().await.ok()?;
        let parent = parent_of(body["pid"].as_u64()?)?;
        agents.iter().position(|a| a.pid().as_raw() == parent)
    };
    futures::future::join_all((0..n).map(|_| one())).await
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin_dir = match &args.bin_dir {
        Some(dir) => dir.clone(),
        None => std::env::current_exe()?
            .parent()
            .and_then(Path::parent)
            .context("cannot tell the target directory")?
            .to_path_buf(),
    };
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args, bin_dir))
}

async fn run(args: Args, bin_dir: PathBuf) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let function = esb_testfn::binary()?;
    std::fs::write(
        dir.path().join("functions.yml"),
        format!(
            "functions:\n  f:\n    command: [\"{}\"]\n    timeout: 30\n    scaling: {{ max_capacity: 64, acquire_timeout: 30 }}\n",
            function.display()
        ),
    )?;
    std::fs::write(dir.path().join("routing.yml"), "routes: []\n")?;
    let ports: Vec<u16> = (0..3).map(|_| free_port()).collect::<Result<_, _>>()?;
    let record = |i: usize| dir.path().join(format!("record-{i}"));
    let mut agents = Vec::new();
    for (i, port) in ports.iter().enumerate() {
        agents.push(start_agent(&bin_dir, *port, &record(i))?);
    }
    for port in &ports {
        wait_port(*port).await?;
    }
    let port = free_port()?;
    let mut gateway = Command::new(bin_dir.join("esb-gateway"));
    gateway
        .arg("--functions")
        .arg(dir.path().join("functions.yml"))
        .arg("--routing")
        .arg(dir.path().join("routing.yml"))
        .args([
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--runtime",
            "agent",
        ])
        .args(["--agent-health-interval", &args.health_interval.to_string()])
        .args(["--agent-health-timeout", &args.health_timeout.to_string()])
        .args(["--agent-health-failures", &args.health_failures.to_string()])
        .args(["--env", "failover", "--gateway-id", "bench"])
        .env("RUST_LOG", "warn")
        .env_remove("ESB_AGENTS")
        .stdout(Stdio::null())
        .stderr(match &args.gateway_log {
            Some(path) => Stdio::from(std::fs::File::create(path)?),
            None => Stdio::null(),
        });
    for p in &ports {
        gateway.args(["--agent", &format!("http://127.0.0.1:{p}")]);
    }
    let _gateway = Proc(
        gateway
            .spawn()
            .context("cannot start esb-gateway (cargo build --release -p esb-gateway-bin)")?,
    );
    wait_port(port).await?;
    let client = reqwest::Client::new();

    // Placement spread: 9 requests at once make 9 sandboxes.
    let mut spread = BTreeMap::new();
    for agent in burst(&client, port, 9, 500, &agents).await {
        *spread
            .entry(agent.map_or("failed".to_owned(), |a| format!("agent {a}")))
            .or_insert(0) += 1;
    }
    println!("placement of 9 concurrent requests over 3 agents: {spread:?}");
    println!(
        "health checks every {} s, {} s timeout, down after {} failed in a row",
        args.health_interval, args.health_timeout, args.health_failures
    );

    for mode in ["kill", "hang"] {
        let mut times = Vec::new();
        let mut failed = 0;
        for round in 0..args.failures {
            let victim = round % 3;
            // Every agent takes sandboxes before the failure: bursts growing until new
            // sandboxes are made, which go to the least-loaded agent.
            let ready = Instant::now();
            for attempt in 0.. {
                let n = (12 + 6 * attempt).min(60);
                let served = burst(&client, port, n, 300, &agents).await;
                if (0..3).all(|a| served.contains(&Some(a))) {
                    break;
                }
                if ready.elapsed() > Duration::from_secs(60) {
                    bail!("an agent never came back after {mode}: {served:?}");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let failed_at = Instant::now();
            match mode {
                "kill" => {
                    let _ = agents[victim].0.kill();
                    let _ = agents[victim].0.wait();
                }
                _ => kill(agents[victim].pid(), Signal::SIGSTOP)?,
            }
            loop {
                // More requests than idle sandboxes: the failed agent's are among those used.
                let served = burst(&client, port, 18, 10, &agents).await;
                let misses = served.iter().filter(|s| s.is_none()).count();
                failed += misses;
                if misses == 0 && !served.contains(&Some(victim)) {
                    break;
                }
            }
            times.push(failed_at.elapsed());
            match mode {
                "kill" => agents[victim] = start_agent(&bin_dir, ports[victim], &record(victim))?,
                _ => kill(agents[victim].pid(), Signal::SIGCONT)?,
            }
            wait_port(ports[victim]).await?;
            // Found healthy again by the next health check.
            tokio::time::sleep(Duration::from_secs_f64(
                args.health_interval + args.health_timeout,
            ))
            .await;
        }
        times.sort();
        println!(
            "{mode}: failover (failure -> a burst of 18 served in full elsewhere) over {} failures: p50 {}, max {}, min {}; requests failed meanwhile: {failed}",
            times.len(),
            ms(percentile(&times, 0.5)),
            ms(times[times.len() - 1]),
            ms(times[0]),
        );
    }
    Ok(())
}
