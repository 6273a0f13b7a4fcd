//! Services ESB starts itself (`command:` of a service): started before the gateway and
//! waited for until healthy, restarted with back-off when they die, their output logged
//! line by line, stopped (with their whole process group) when the gateway stops.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use esb_router::{HealthCheck, ServiceConfig, Services};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, BufReader};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// First wait before restarting a service that died; doubled on each death in a row.
const RESTART_INITIAL: Duration = Duration::from_millis(500);
/// Longest wait before a restart.
const RESTART_MAX: Duration = Duration::from_secs(30);
/// A service that ran this long healthy starts its back-off over.
const RESTART_RESET: Duration = Duration::from_secs(60);
/// How long a stopped service gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(5);
/// How long one health probe may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// Why a service could not be started.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// Its command could not be run.
    #[error("service {service}: cannot run {program}: {source}")]
    Spawn {
        /// The service (`s3`, `dynamodb`).
        service: String,
        /// The program.
        program: String,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// It exited before it became healthy.
    #[error("service {service}: exited before it became healthy ({status})")]
    Exited {
        /// The service.
        service: String,
        /// How it ended.
        status: std::process::ExitStatus,
    },
    /// It did not become healthy in time.
    #[error("service {service}: not healthy after {} s ({probe})", .timeout.as_secs_f64())]
    Unhealthy {
        /// The service.
        service: String,
        /// Its health timeout.
        timeout: Duration,
        /// What was probed.
        probe: String,
    },
    /// Its health probe's HTTP client could not be built.
    #[error("service {service}: cannot build its health probe: {source}")]
    Probe {
        /// The service.
        service: String,
        /// The client's error.
        #[source]
        source: reqwest::Error,
    },
}

/// The services ESB started; [`Supervisor::stop`] stops them.
#[derive(Debug)]
pub struct Supervisor {
    stop: watch::Sender<bool>,
    services: Vec<Supervised>,
}

#[derive(Debug)]
struct Supervised {
    name: &'static str,
    pid: Arc<AtomicU32>,
    task: JoinHandle<()>,
}

impl Supervisor {
    /// Starts every service of `services` that has a `command` and waits until each is
    /// healthy; on an error the ones already started are stopped.
    pub async fn start(services: &Services) -> Result<Self, ServiceError> {
        let (stop, stopped) = watch::channel(false);
        let mut supervisor = Self {
            stop,
            services: Vec::new(),
        };
        for (name, service) in services.iter() {
            let Some(command) = &service.command else {
                continue;
            };
            let started = match run(name, service, command).await {
                Ok(child) => child,
                Err(err) => {
                    supervisor.stop().await;
                    return Err(err);
                }
            };
            tracing::info!(service = name, pid = started.id(), "service healthy");
            let pid = Arc::new(AtomicU32::new(started.id().unwrap_or(0)));
            let task = tokio::spawn(watch_over(
                name,
                service.clone(),
                command.clone(),
                started,
                Arc::clone(&pid),
                stopped.clone(),
            ));
            supervisor.services.push(Supervised { name, pid, task });
        }
        Ok(supervisor)
    }

    /// The process id of service `name`'s current process, when ESB runs one.
    pub fn pid(&self, name: &str) -> Option<u32> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.pid.load(Ordering::SeqCst))
            .filter(|&pid| pid != 0)
    }

    /// Stops every service (SIGTERM to its process group, SIGKILL after a grace) and waits
    /// until they are gone.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for service in self.services {
            let _ = service.task.await;
        }
    }
}

/// Starts `service` and waits until it is healthy; its process is killed on an error.
async fn run(
    name: &'static str,
    service: &ServiceConfig,
    command: &[String],
) -> Result<Child, ServiceError> {
    let mut child = spawn(name, service, command)?;
    match wait_healthy(name, service, &mut child).await {
        Ok(()) => Ok(child),
        Err(err) => {
            terminate(&mut child).await;
            Err(err)
        }
    }
}

fn spawn(
    name: &'static str,
    service: &ServiceConfig,
    command: &[String],
) -> Result<Child, ServiceError> {
    let (program, args) = command.split_first().map_or(("", &[][..]), |(p, a)| (p, a));
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(&service.environment)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    esb_runtime::die_with_parent(&mut cmd);
    let mut child = cmd.spawn().map_err(|source| ServiceError::Spawn {
        service: name.to_owned(),
        program: program.to_owned(),
        source,
    })?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(log_lines(name, "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(log_lines(name, "stderr", err));
    }
    Ok(child)
}

/// Logs each line of a service's output as a record of its own (invalid UTF-8 replaced,
/// lines over [`esb_runtime::MAX_LINE_BYTES`] split), until the output ends.
async fn log_lines(name: &'static str, stream: &'static str, output: impl AsyncRead + Unpin) {
    let limit = u64::try_from(esb_runtime::MAX_LINE_BYTES).unwrap_or(u64::MAX);
    let mut reader = BufReader::new(output);
    let mut line = Vec::new();
    loop {
        line.clear();
        match (&mut reader).take(limit).read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let text = String::from_utf8_lossy(&line);
                let text = text.trim_end_matches(['\n', '\r']);
                tracing::info!(target: "esb::service", service = name, stream, "[{name}] {text}");
            }
        }
    }
}

/// Probes until healthy, the process exits, or the health timeout passes.
async fn wait_healthy(
    name: &'static str,
    service: &ServiceConfig,
    child: &mut Child,
) -> Result<(), ServiceError> {
    let health = &service.health;
    let deadline = Instant::now() + health.timeout;
    let prober = Prober::new(name)?;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(ServiceError::Exited {
                service: name.to_owned(),
                status,
            });
        }
        if prober.probe(service, health).await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(ServiceError::Unhealthy {
                service: name.to_owned(),
                timeout: health.timeout,
                probe: describe(service, health),
            });
        }
        tokio::select! {
            status = child.wait() => {
                if let Ok(status) = status {
                    return Err(ServiceError::Exited { service: name.to_owned(), status });
                }
            }
            () = tokio::time::sleep(health.interval) => {}
        }
    }
}

fn describe(service: &ServiceConfig, health: &HealthCheck) -> String {
    match &health.url {
        Some(url) => format!("GET {url}"),
        None => format!(
            "TCP connect to {}:{}",
            service.endpoint.host(),
            service.endpoint.port()
        ),
    }
}

/// Probes a service's health: an HTTP(S) GET of its health URL, healthy when answered
/// below 500, else a TCP connection to its endpoint.
///
/// An `https://` probe does not verify the service's certificate: it sends nothing
/// secret and only learns whether the process ESB started answers (a service started
/// locally commonly has a self-signed certificate the host does not trust).
struct Prober {
    http: reqwest::Client,
}

impl Prober {
    fn new(name: &'static str) -> Result<Self, ServiceError> {
        let http = reqwest::Client::builder()
            .timeout(PROBE_TIMEOUT)
            .connect_timeout(PROBE_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .danger_accept_invalid_certs(true)
            .pool_max_idle_per_host(0)
            .build()
            .map_err(|source| ServiceError::Probe {
                service: name.to_owned(),
                source,
            })?;
        Ok(Self { http })
    }

    /// One probe, bounded by [`PROBE_TIMEOUT`].
    async fn probe(&self, service: &ServiceConfig, health: &HealthCheck) -> bool {
        if let Some(url) = &health.url {
            return match self.http.get(url.uri().to_string()).send().await {
                Ok(response) => response.status().as_u16() < 500,
                Err(err) => {
                    tracing::debug!(url = %url, error = %err, "health probe failed");
                    false
                }
            };
        }
        let target = &service.endpoint;
        let host = target.host().trim_start_matches('[').trim_end_matches(']');
        let connect = TcpStream::connect((host, target.port()));
        matches!(
            tokio::time::timeout(PROBE_TIMEOUT, connect).await,
            Ok(Ok(_))
        )
    }
}

/// Keeps a service running until `stopped`: restarts it with back-off when it dies, then
/// stops it.
async fn watch_over(
    name: &'static str,
    service: ServiceConfig,
    command: Vec<String>,
    mut child: Child,
    pid: Arc<AtomicU32>,
    mut stopped: watch::Receiver<bool>,
) {
    let mut backoff = RESTART_INITIAL;
    let mut since = Instant::now();
    loop {
        tokio::select! {
            status = child.wait() => {
                let status = status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string());
                if since.elapsed() >= RESTART_RESET {
                    backoff = RESTART_INITIAL;
                }
                tracing::warn!(service = name, %status, restart_in = ?backoff, "service died");
                pid.store(0, Ordering::SeqCst);
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => return,
                }
                backoff = (backoff * 2).min(RESTART_MAX);
                // Restarted until it is healthy again (or the gateway stops).
                loop {
                    let attempt = tokio::select! {
                        attempt = run(name, &service, &command) => attempt,
                        _ = stopped.changed() => return,
                    };
                    match attempt {
                        Ok(started) => {
                            child = started;
                            pid.store(child.id().unwrap_or(0), Ordering::SeqCst);
                            tracing::info!(service = name, pid = child.id(), "service restarted and healthy");
                            since = Instant::now();
                            break;
                        }
                        Err(err) => {
                            tracing::warn!(service = name, error = %err, restart_in = ?backoff, "service restart failed");
                            tokio::select! {
                                () = tokio::time::sleep(backoff) => {}
                                _ = stopped.changed() => return,
                            }
                            backoff = (backoff * 2).min(RESTART_MAX);
                        }
                    }
                }
            }
            _ = stopped.changed() => {
                terminate(&mut child).await;
                pid.store(0, Ordering::SeqCst);
                tracing::info!(service = name, "service stopped");
                return;
            }
        }
    }
}

/// SIGTERM to the child's process group, SIGKILL after [`STOP_GRACE`], and reaped.
async fn terminate(child: &mut Child) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let group = nix::unistd::Pid::from_raw(pid);
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGTERM);
        if tokio::time::timeout(STOP_GRACE, child.wait())
            .await
            .is_err()
        {
            let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
        }
        // Whatever else is left of the group.
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    }
    let _ = child.kill().await;
}
