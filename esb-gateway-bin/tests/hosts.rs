//! Several hosts on one machine: three (then four) esb-agents, each in its own network
//! namespace with its own address, found by the real gateway binary through DNS (dnsmasq).
//! The gateway spreads sandboxes over them, keeps serving when one agent is killed and when
//! another's link is cut (its in-flight requests fail with an error instead of hanging),
//! takes the cut one back when it answers again, picks up a fourth added to DNS and drains
//! one removed from it. Needs root; skipped with a reason otherwise (a failure under CI=true).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/hosts.rs"]
mod hosts;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use esb_runtime::Runtime;
use esb_runtime::remote::{RemoteConfig, RemoteRuntime};
use esb_testfn::ports::free_port;
use hosts::{Hosts, NAME, Proc, TOKEN};

async fn wait_port(port: u16) {
    for _ in 0..400 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on {port}");
}

fn write_config(dir: &Path) {
    std::fs::write(
        dir.join("functions.yml"),
        format!(
            "functions:\n  f:\n    command: [\"{}\"]\n    timeout: 20\n    scaling: {{ max_capacity: 64, acquire_timeout: 10 }}\n",
            support::testfn().display()
        ),
    )
    .unwrap();
    std::fs::write(dir.join("routing.yml"), "routes: []\n").unwrap();
}

/// The gateway binary, finding its agents by DNS through the test's dnsmasq.
fn gateway(hosts: &Hosts, id: &str, port: u16) -> Proc {
    gateway_with(hosts, id, port, "1")
}

/// [`gateway`] with `--agent-health-timeout` and `--agent-keepalive-timeout` `bound`
/// (seconds; the health timeout is also what a call to an agent may take, at least 5 s).
fn gateway_with(hosts: &Hosts, id: &str, port: u16, bound: &str) -> Proc {
    let dir = hosts.dir.path();
    Proc(
        hosts
            .with_resolver(Path::new(env!("CARGO_BIN_EXE_esb-gateway")))
            .args([
                "--functions",
                &dir.join("functions.yml").display().to_string(),
            ])
            .args(["--routing", &dir.join("routing.yml").display().to_string()])
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--runtime", "agent", "--agent-token", TOKEN])
            .args(["--agents-dns", &format!("{NAME}:{}", hosts::AGENT_PORT)])
            .args(["--agents-dns-interval", "0.5"])
            .args([
                "--agent-health-interval",
                "0.5",
                "--agent-health-timeout",
                bound,
            ])
            .args([
                "--agent-keepalive-interval",
                "1",
                "--agent-keepalive-timeout",
                bound,
            ])
            .args(["--env", &format!("hosts{}", hosts.tag), "--gateway-id", id])
            .env("JWT_SECRET_KEY", support::SECRET)
            .env_remove("ESB_FUNCTIONS")
            .env_remove("ESB_ROUTING")
            .env_remove("ESB_AGENTS")
            .env_remove("ESB_AGENTS_DNS")
            .env("RUST_BACKTRACE", "0")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join(format!("gateway-{id}-{port}.log"))).unwrap())
            .spawn()
            .unwrap(),
    )
}

/// The host of a sandbox that is gone by the time it is looked up.
const UNKNOWN_HOST: usize = usize::MAX;

/// The pids of the sandboxes that served `answers`; every one must have been served.
fn pids(answers: &[Answer]) -> BTreeSet<u64> {
    answers
        .iter()
        .map(|a| match a {
            Answer::Served { pid, .. } => *pid,
            Answer::Failed(status, message) => panic!("{status} {message}"),
        })
        .collect()
}

/// The ids of the sandboxes gateway `id` owns on the hosts (their `esb.owner` label).
async fn owned_by(hosts: &Hosts, id: &str) -> BTreeSet<String> {
    let owner = format!("hosts{}/{id}", hosts.tag);
    let mut ids = BTreeSet::new();
    for host in &hosts.hosts {
        let agent = RemoteRuntime::connect(RemoteConfig::new(host.url()).token(TOKEN))
            .await
            .unwrap();
        for sandbox in agent.list().await.unwrap() {
            if sandbox.labels.get(esb_pool::OWNER_LABEL) == Some(&owner) {
                ids.insert(sandbox.id.to_string());
            }
        }
    }
    ids
}

/// One request as an AWS SDK makes it (boto3's legacy retry mode): up to 5 attempts,
/// retried on a refused or reset connection and on 502/503/504, with a doubling pause; the
/// gateways stand behind one address as behind a Kubernetes Service, so each attempt goes to
/// the next of `ports`, starting with `first`.
async fn invoke_retried(ports: [u16; 2], first: usize) -> Result<u16, String> {
    let client = support::client();
    let mut pause = Duration::from_millis(250);
    let mut last = String::new();
    for attempt in 0..5 {
        let port = ports[(first + attempt) % 2];
        let sent = client
            .post(format!(
                "http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"
            ))
            .body(r#"{"sleep_ms":100}"#)
            .timeout(Duration::from_secs(40))
            .send()
            .await;
        match sent {
            Ok(response) if [502, 503, 504].contains(&response.status().as_u16()) => {
                last = format!("{}", response.status());
            }
            Ok(response) => return Ok(response.status().as_u16()),
            Err(err) if err.is_connect() || err.is_request() => last = err.to_string(),
            Err(err) => return Err(err.to_string()),
        }
        tokio::time::sleep(pause).await;
        pause *= 2;
    }
    Err(format!("gave up after 5 attempts: {last}"))
}

/// One answer: the HTTP status, and the host that ran the function (for a 200) or the
/// error message.
#[derive(Debug)]
enum Answer {
    Served { host: usize, pid: u64 },
    Failed(u16, String),
}

async fn invoke(hosts: &Hosts, port: u16, sleep_ms: u64) -> Answer {
    let response = support::client()
        .post(format!(
            "http://127.0.0.1:{port}/2015-03-31/functions/f/invocations"
        ))
        .body(format!(r#"{{"sleep_ms":{sleep_ms}}}"#))
        // Longer than any bound of the gateway: a request that gets here has hung.
        .timeout(Duration::from_secs(40))
        .send()
        .await
        .expect("the gateway answers every request (none hangs)");
    let status = response.status().as_u16();
    let function_error = response.headers().get("x-amz-function-error").cloned();
    let body: serde_json::Value = response.json().await.unwrap();
    if let Some(kind) = function_error {
        // The sandbox failed (Lambda's 200 with X-Amz-Function-Error): a failure with its
        // message, never a hang.
        return Answer::Failed(status, format!("{kind:?}: {body}"));
    }
    if status == 200 {
        let pid = body["pid"]
            .as_u64()
            .unwrap_or_else(|| panic!("a pid in {body}"));
        // A sandbox destroyed right after it answered (its host drained or lost) can no
        // longer be placed: counted as on an unknown host.
        Answer::Served {
            host: hosts.host_of(pid).unwrap_or(UNKNOWN_HOST),
            pid,
        }
    } else {
        let message = body["message"]
            .as_str()
            .or(body["Message"].as_str())
            .unwrap_or_default();
        Answer::Failed(status, format!("{message} ({body})"))
    }
}

/// `n` requests at once; each sleeps `sleep_ms` in the function, so that they overlap.
async fn burst(hosts: &Hosts, port: u16, n: usize, sleep_ms: u64) -> Vec<Answer> {
    futures::future::join_all((0..n).map(|_| invoke(hosts, port, sleep_ms))).await
}

/// How many requests each host served, or `None` when one failed.
fn served(answers: &[Answer]) -> Option<BTreeMap<usize, usize>> {
    let mut by_host = BTreeMap::new();
    for answer in answers {
        match answer {
            Answer::Served { host, .. } => *by_host.entry(*host).or_default() += 1,
            Answer::Failed(status, message) => {
                // A failure while a host is being found down is an answer, never a hang or
                // an anonymous error.
                assert!(
                    [200, 502, 503].contains(status) && !message.is_empty(),
                    "{status} {message}"
                );
                eprintln!("failed while a host changes: {status} {message}");
                return None;
            }
        }
    }
    Some(by_host)
}

/// Sends bursts until one is served in full by hosts `ok` accepts (at most 60 s, a bound
/// for the test, not a figure); returns the hosts of that burst. A burst of `n` requests,
/// or with `n == 0` four more than the sandboxes there are, so that new ones are made (and
/// placed on the least-loaded host).
async fn until_served(
    hosts: &Hosts,
    port: u16,
    n: usize,
    what: &str,
    ok: impl Fn(&BTreeMap<usize, usize>) -> bool,
) -> BTreeMap<usize, usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = if n > 0 {
            n
        } else {
            let mut live = 0;
            for i in 0..hosts.hosts.len() {
                if hosts.hosts[i].agent.is_some() {
                    live += sandboxes_on(hosts, i).await;
                }
            }
            (live + 4).min(60)
        };
        if let Some(by_host) = served(&burst(hosts, port, n, 300).await)
            && ok(&by_host)
        {
            return by_host;
        }
        assert!(Instant::now() < deadline, "never {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A gateway page's text.
async fn get_text(port: u16, path: &str) -> String {
    let response = support::client()
        .get(format!("http://127.0.0.1:{port}{path}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    response.text().await.unwrap()
}

/// The busy sandboxes of function `f` (`/metrics/pools`).
async fn busy(port: u16) -> u64 {
    let page: serde_json::Value =
        serde_json::from_str(&get_text(port, "/metrics/pools").await).unwrap();
    page["pools"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|p| p["function"] == "f")
        .and_then(|p| p["busy"].as_u64())
        .unwrap_or(0)
}

/// The sandboxes `/metrics/containers` lists on the agent at `url`.
async fn containers_on(port: u16, url: &str) -> usize {
    let page: serde_json::Value =
        serde_json::from_str(&get_text(port, "/metrics/containers").await).unwrap();
    page["containers"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["runtime_name"] == url)
        .count()
}

/// The sandboxes of function `f` host `i`'s agent holds.
async fn sandboxes_on(hosts: &Hosts, i: usize) -> usize {
    let agent = RemoteRuntime::connect(RemoteConfig::new(hosts.hosts[i].url()).token(TOKEN))
        .await
        .unwrap();
    agent
        .list()
        .await
        .unwrap()
        .iter()
        .filter(|s| s.function_name == "f")
        .count()
}

/// `count` hosts with the test's functions and an agent up on each; `None`, after printing
/// why, where this machine cannot make hosts.
async fn hosts_with_agents(count: usize, agent: &Path) -> Option<Hosts> {
    if let Some(reason) = hosts::unavailable() {
        eprintln!("skipped: {reason}");
        return None;
    }
    let mut hosts = Hosts::new(count);
    write_config(hosts.dir.path());
    for i in 0..count {
        hosts.start_agent(i, agent);
    }
    for i in 0..count {
        hosts.wait_agent(i).await;
    }
    Some(hosts)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn agents_found_by_dns_share_the_load_and_the_gateway_outlives_a_lost_host() {
    let agent = support::agent_binary();
    let Some(mut hosts) = hosts_with_agents(3, &agent).await else {
        return;
    };
    let port = free_port().unwrap();
    let _gateway = gateway(&hosts, "g1", port);
    wait_port(port).await;

    // All three found; six overlapping requests make six sandboxes, two on each host.
    let by_host = served(&burst(&hosts, port, 6, 500).await).expect("all served");
    assert_eq!(
        by_host,
        BTreeMap::from([(0, 2), (1, 2), (2, 2)]),
        "sandboxes are spread over the three hosts"
    );

    // Host 0's agent is killed: once it is found down, everything is served by 1 and 2.
    hosts.kill_agent(0);
    until_served(&hosts, port, 6, "served without host 0", |by| {
        !by.contains_key(&0)
    })
    .await;
    let by_host = served(&burst(&hosts, port, 6, 300).await).expect("all served");
    assert!(!by_host.contains_key(&0), "{by_host:?}");

    // Host 1's link is cut while requests run on it: those fail with an error (no hang),
    // and the gateway goes on with host 2 alone.
    let long = burst(&hosts, port, 6, 8000);
    let cut = async {
        // Once all six run (busy sandboxes, on hosts 1 and 2).
        let deadline = Instant::now() + Duration::from_secs(60);
        while busy(port).await < 6 {
            assert!(Instant::now() < deadline, "the six requests never all ran");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        hosts.set_link(1, false);
    };
    let (answers, ()) = tokio::join!(long, cut);
    let lost: Vec<&Answer> = answers
        .iter()
        .filter(|a| matches!(a, Answer::Failed(..)))
        .collect();
    assert!(!lost.is_empty(), "no request ran on host 1: {answers:?}");
    for answer in &lost {
        let Answer::Failed(status, message) = answer else {
            unreachable!()
        };
        assert_eq!(*status, 503, "{message}");
        assert!(
            message.contains("stopped answering") || message.contains("unreachable"),
            "{message}"
        );
    }
    assert!(
        answers
            .iter()
            .all(|a| matches!(a, Answer::Failed(..) | Answer::Served { host: 2, .. }))
    );
    until_served(&hosts, port, 6, "served by host 2 alone", |by| {
        by.keys().all(|&h| h == 2)
    })
    .await;

    // The link comes back: host 1 answers its health checks and takes sandboxes again.
    hosts.set_link(1, true);
    until_served(&hosts, port, 0, "served by host 1 again", |by| {
        by.contains_key(&1)
    })
    .await;

    // A fourth host added to DNS is found and takes new sandboxes.
    let fourth = hosts.add_host();
    hosts.start_agent(fourth, &agent);
    hosts.wait_agent(fourth).await;
    hosts.set_dns(&[0, 1, 2, fourth]);
    // More requests at once than the sandboxes there are: the new ones go to the fourth,
    // the least loaded.
    let by_host = until_served(&hosts, port, 0, "served by the fourth host", |by| {
        by.contains_key(&fourth)
    })
    .await;
    assert!(!by_host.contains_key(&0));
    // It is in the per-agent metrics and in /metrics/containers; host 0, dead but still in
    // DNS, is there as down.
    let fourth_url = hosts.hosts[fourth].url();
    let metrics = get_text(port, "/metrics").await;
    assert!(
        metrics.contains(&format!("esb_pool_agent_up{{agent=\"{fourth_url}\"}} 1")),
        "{metrics}"
    );
    assert!(
        metrics.contains(&format!(
            "esb_pool_agent_up{{agent=\"{}\"}} 0",
            hosts.hosts[0].url()
        )),
        "{metrics}"
    );
    let containers = containers_on(port, &fourth_url).await;
    assert!(
        containers > 0,
        "no sandbox of the fourth host in /metrics/containers"
    );

    // Removed from DNS, it is drained: its sandboxes go and it gets no new ones.
    hosts.set_dns(&[0, 1, 2]);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sandboxes_on(&hosts, fourth).await > 0 {
        assert!(
            Instant::now() < deadline,
            "the fourth host is never drained"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Once drained it leaves the metrics (no stale `up` or utilisation of a host that is
    // gone) and /metrics/containers.
    let label = format!("{{agent=\"{fourth_url}\"}}");
    loop {
        let metrics = get_text(port, "/metrics").await;
        if !metrics.contains(&label) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the drained fourth host stays in the metrics: {metrics}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let page = get_text(port, "/metrics/containers").await;
    assert!(!page.contains(&fourth_url), "{page}");
    let by_host = served(&burst(&hosts, port, 12, 300).await).expect("all served");
    let used: BTreeSet<usize> = by_host.keys().copied().collect();
    assert!(!used.contains(&fourth) && !used.contains(&0), "{by_host:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_gateways_share_the_hosts_keep_their_own_sandboxes_and_restart_without_loss() {
    let agent = support::agent_binary();
    let Some(hosts) = hosts_with_agents(3, &agent).await else {
        return;
    };
    let (a_port, b_port) = (free_port().unwrap(), free_port().unwrap());
    let mut a = gateway(&hosts, "a", a_port);
    let mut b = gateway(&hosts, "b", b_port);
    wait_port(a_port).await;
    wait_port(b_port).await;

    // Both serve, each from sandboxes of its own on the three hosts.
    let a_pids = pids(&burst(&hosts, a_port, 6, 500).await);
    let b_pids = pids(&burst(&hosts, b_port, 6, 500).await);
    assert_eq!((a_pids.len(), b_pids.len()), (6, 6));
    assert!(a_pids.is_disjoint(&b_pids));
    let a_sandboxes = owned_by(&hosts, "a").await;
    let b_sandboxes = owned_by(&hosts, "b").await;
    assert_eq!((a_sandboxes.len(), b_sandboxes.len()), (6, 6));

    // `a` is killed: none of b's sandboxes is lost, and b goes on with the same ones.
    a.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = a.0.wait();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(owned_by(&hosts, "b").await, b_sandboxes);
    assert_eq!(pids(&burst(&hosts, b_port, 6, 500).await), b_pids);

    // `a` restarted adopts its own: its first requests are served warm by its old sandboxes.
    let a_port = free_port().unwrap();
    a = gateway(&hosts, "a", a_port);
    wait_port(a_port).await;
    assert_eq!(pids(&burst(&hosts, a_port, 6, 500).await), a_pids);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(owned_by(&hosts, "b").await, b_sandboxes);
    assert_eq!(owned_by(&hosts, "a").await, a_sandboxes);

    // A rolling restart (SIGTERM, drain, start again on the same port) of a, then b, while
    // clients keep calling both: no request a client retried as an SDK does is lost (each
    // retry goes to the next gateway, as through a Service in front of both).
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let stop = stop.clone();
            let total = answered.clone();
            tokio::spawn(async move {
                let mut answered = 0;
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    match invoke_retried([a_port, b_port], i % 2).await {
                        Ok(200) => answered += 1,
                        other => panic!("a request was lost: {other:?}"),
                    }
                    total.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
                answered
            })
        })
        .collect();
    // Waits until the clients have had `n` more answers (at most 60 s).
    let more_answers = |n: usize| {
        let answered = answered.clone();
        async move {
            let target = answered.load(std::sync::atomic::Ordering::SeqCst) + n;
            let deadline = Instant::now() + Duration::from_secs(60);
            while answered.load(std::sync::atomic::Ordering::SeqCst) < target {
                assert!(Instant::now() < deadline, "the clients got no answers");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    for (id, port, gateway) in [("a", a_port, &mut a), ("b", b_port, &mut b)] {
        more_answers(8).await;
        gateway.signal(nix::sys::signal::Signal::SIGTERM);
        let _ = gateway.0.wait();
        *gateway = self::gateway(&hosts, id, port);
        wait_port(port).await;
    }
    more_answers(8).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    for client in clients {
        assert!(client.await.unwrap() > 0);
    }
}

/// The gateway's log lines so far (`gateway-<id>-<port>.log`).
fn gateway_log(hosts: &Hosts, id: &str, port: u16) -> Vec<String> {
    std::fs::read_to_string(hosts.dir.path().join(format!("gateway-{id}-{port}.log")))
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Waits (at most 60 s, a bound for the test) until a line of the gateway's log has every
/// one of `parts`; returns its index.
async fn wait_log(hosts: &Hosts, id: &str, port: u16, parts: &[&str]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log = gateway_log(hosts, id, port);
        if let Some(index) = log.iter().position(|l| parts.iter().all(|p| l.contains(p))) {
            return index;
        }
        assert!(
            Instant::now() < deadline,
            "no log line with {parts:?}:\n{}",
            log.join("\n")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_address_that_never_answers_does_not_hold_up_finding_an_agent_down() {
    let agent = support::agent_binary();
    let Some(mut hosts) = hosts_with_agents(2, &agent).await else {
        return;
    };
    let port = free_port().unwrap();
    // Calls to agents (connecting to a new one included) and unanswered PINGs may take
    // 20 s; a dead agent's health checks fail at once (its connection is refused).
    let _gateway = gateway_with(&hosts, "g1", port, "20");
    wait_port(port).await;
    for i in 0..2 {
        wait_log(
            &hosts,
            "g1",
            port,
            &["agent connected", &hosts.hosts[i].url()],
        )
        .await;
    }

    // A third address in DNS where a listener accepts connections and never answers: the
    // gateway's connection to it waits for HTTP/2 and its capabilities until its bound.
    let silent = hosts.add_host();
    let silent_url = hosts.hosts[silent].url();
    let _listener = Proc(
        std::process::Command::new("ip")
            .args(["netns", "exec", &hosts.hosts[silent].netns, "python3", "-c"])
            .arg(format!(
                "import socket, time\ns = socket.socket()\ns.bind(('{}', {}))\ns.listen(64)\ntime.sleep(3600)",
                hosts.hosts[silent].addr,
                hosts::AGENT_PORT
            ))
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    hosts.wait_agent(silent).await;
    hosts.set_dns(&[0, 1, silent]);
    let connecting = wait_log(
        &hosts,
        "g1",
        port,
        &["agent found in DNS: connecting", &silent_url],
    )
    .await;

    // While that connection attempt is pending, agent 1 dies: it is found down before the
    // attempt ends (the health checks do not wait for it).
    hosts.kill_agent(1);
    let down = wait_log(&hosts, "g1", port, &["agent down", &hosts.hosts[1].url()]).await;
    let log = gateway_log(&hosts, "g1", port);
    let attempt_ended = log.iter().enumerate().position(|(i, l)| {
        i > connecting
            && l.contains(&silent_url)
            && (l.contains("not reachable yet") || l.contains("agent connected"))
    });
    assert!(
        connecting < down && attempt_ended.is_none_or(|ended| down < ended),
        "agent 1 was found down only after the attempt on {silent_url} ended:\n{}",
        log.join("\n")
    );
    // And the gateway serves from host 0 alone.
    until_served(&hosts, port, 4, "served by host 0 alone", |by| {
        by.keys().all(|&h| h == 0)
    })
    .await;
}
