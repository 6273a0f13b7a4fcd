//! The gateway's set of agents: those named by URL and those found by DNS (every address
//! of a name, re-resolved periodically), each health-checked. New agents are added to the
//! pool, agents gone from DNS are drained, agents that stop answering are declared down
//! and taken back when they answer again.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use esb_pool::Pool;
use esb_runtime::Runtime;
use esb_runtime::remote::{RemoteConfig, RemoteRuntime, RemoteTls};
use tokio::task::JoinHandle;

/// A DNS name whose addresses are agents, all on `port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsTarget {
    /// The name, e.g. a Kubernetes headless Service `esb-agent.esb.svc.cluster.local`.
    pub name: String,
    /// The agents' gRPC port.
    pub port: u16,
}

impl std::str::FromStr for DnsTarget {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let (name, port) = text
            .rsplit_once(':')
            .ok_or_else(|| format!("{text:?}: expected NAME:PORT"))?;
        let port: u16 = port
            .parse()
            .map_err(|_| format!("{text:?}: {port:?} is not a port"))?;
        if name.is_empty() || port == 0 {
            return Err(format!("{text:?}: expected NAME:PORT"));
        }
        Ok(Self {
            name: name.to_owned(),
            port,
        })
    }
}

/// How the gateway finds, reaches and watches its agents.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct AgentSettings {
    /// Agents named by URL.
    pub urls: Vec<String>,
    /// Names whose addresses are agents.
    pub dns: Vec<DnsTarget>,
    /// How often the names are resolved again.
    pub dns_interval: Duration,
    /// How often each agent's health is checked.
    pub health_interval: Duration,
    /// A health check unanswered this long fails.
    pub health_timeout: Duration,
    /// Consecutive failed health checks that mark an agent down (at least 1).
    pub health_failures: u32,
    /// The agents' bearer token.
    pub token: Option<String>,
    /// TLS to the agents (`https://` when set).
    pub tls: Option<RemoteTls>,
    /// HTTP/2 keepalive interval and timeout of the connections to the agents.
    pub keepalive: (Duration, Duration),
}

impl AgentSettings {
    /// The connection settings of the agent at `url`; `name` is the DNS name it was found
    /// under (its certificate is checked against it).
    fn remote(&self, url: &str, name: Option<&str>) -> RemoteConfig {
        let mut config = RemoteConfig::new(url)
            .keepalive(self.keepalive.0, self.keepalive.1)
            .call_timeout(self.health_timeout.max(Duration::from_secs(5)));
        config.token = self.token.clone();
        config.tls = self.tls.clone().map(|mut tls| {
            if tls.domain.is_none()
                && let Some(name) = name
            {
                tls.domain = Some(name.to_owned());
            }
            tls
        });
        config
    }

    /// How long connecting to one agent (TCP, then its capabilities) may take.
    fn connect_bound(&self) -> Duration {
        let config = self.remote("", None);
        config.connect_timeout + config.call_timeout + Duration::from_secs(1)
    }

    fn url(&self, addr: SocketAddr) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://{addr}")
    }
}

/// One agent the gateway knows; its index in the pool is its index in [`State::agents`].
struct Agent {
    url: String,
    runtime: Arc<RemoteRuntime>,
    /// Found by DNS (and drained when it leaves it).
    from_dns: bool,
    /// Gone from DNS.
    draining: bool,
    /// Failed its last `health_failures` health checks.
    down: bool,
    /// Health checks failed in a row.
    failures: u32,
}

/// An address that was found but could not be connected to yet.
#[derive(Clone)]
struct Pending {
    url: String,
    name: Option<String>,
}

struct State {
    agents: Vec<Agent>,
    pending: Vec<Pending>,
    /// The pool the agents are placed in; replaced when the gateway restarts (`--watch`).
    pool: Option<Pool>,
}

/// The agents of a gateway, kept up to date by a background task ([`AgentSet::watch`]).
#[derive(Clone)]
pub struct AgentSet {
    settings: Arc<AgentSettings>,
    state: Arc<Mutex<State>>,
}

impl AgentSet {
    /// Resolves the names and connects to every agent found; agents that cannot be reached
    /// are left out (and retried later) as long as one can.
    pub async fn connect(settings: AgentSettings) -> anyhow::Result<Self> {
        if settings.urls.is_empty() && settings.dns.is_empty() {
            anyhow::bail!(
                "--runtime agent needs at least one --agent URL (or ESB_AGENTS) or --agents-dns NAME:PORT (or ESB_AGENTS_DNS)"
            );
        }
        let set = Self {
            settings: Arc::new(settings),
            state: Arc::new(Mutex::new(State {
                agents: Vec::new(),
                pending: Vec::new(),
                pool: None,
            })),
        };
        let mut wanted: Vec<Pending> = set
            .settings
            .urls
            .iter()
            .map(|url| Pending {
                url: url.clone(),
                name: None,
            })
            .collect();
        for target in &set.settings.dns {
            match resolve(target).await {
                Ok(addrs) => wanted.extend(addrs.into_iter().map(|addr| Pending {
                    url: set.settings.url(addr),
                    name: Some(target.name.clone()),
                })),
                Err(err) => {
                    tracing::warn!(name = %target.name, error = %err, "cannot resolve the agents' name")
                }
            }
        }
        let mut failures = Vec::new();
        for (pending, outcome) in set.connect_all(wanted).await {
            if let Err(err) = outcome {
                failures.push(format!("{}: {err}", pending.url));
                set.lock().pending.push(pending);
            }
        }
        if set.lock().agents.is_empty() {
            anyhow::bail!(
                "no agent can be reached:\n  {}",
                if failures.is_empty() {
                    "the agents' names resolve to no address".to_owned()
                } else {
                    failures.join("\n  ")
                }
            );
        }
        Ok(set)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Connects to every one of `wanted` at once, each bounded by [`AgentSettings::connect_bound`],
    /// adding those that answer; returns each with its outcome.
    async fn connect_all(
        &self,
        wanted: Vec<Pending>,
    ) -> Vec<(Pending, Result<(), esb_runtime::Error>)> {
        let bound = self.settings.connect_bound();
        let attempts = wanted.into_iter().map(|pending| async move {
            let outcome = match tokio::time::timeout(bound, self.connect_one(&pending)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(esb_runtime::Error::Unavailable(format!(
                    "agent {} did not answer within {bound:?}",
                    pending.url
                ))),
            };
            (pending, outcome)
        });
        futures::future::join_all(attempts).await
    }

    /// Connects to one agent and adds it (to the pool too, once there is one).
    async fn connect_one(&self, pending: &Pending) -> Result<(), esb_runtime::Error> {
        let config = self
            .settings
            .remote(&pending.url, pending.name.as_deref())
            .attempts(1);
        let runtime = Arc::new(RemoteRuntime::connect(config).await?);
        tracing::info!(agent = %pending.url, backend = runtime.agent_backend(), "agent connected");
        let mut state = self.lock();
        if state.agents.iter().any(|a| a.url == pending.url) {
            return Ok(());
        }
        if let Some(pool) = &state.pool {
            let index = pool.add_runtime(runtime.clone());
            debug_assert_eq!(index, state.agents.len());
        }
        state.agents.push(Agent {
            url: pending.url.clone(),
            runtime,
            from_dns: pending.name.is_some(),
            draining: false,
            down: false,
            failures: 0,
        });
        Ok(())
    }

    /// The agents' runtimes, in pool order: a pool made over them is then given to
    /// [`AgentSet::attach`].
    pub fn runtimes(&self) -> Vec<Arc<dyn Runtime>> {
        self.lock()
            .agents
            .iter()
            .map(|a| a.runtime.clone() as Arc<dyn Runtime>)
            .collect()
    }

    /// Places the agents in `pool` from now on (made over [`AgentSet::runtimes`]): the
    /// agents that are draining or down are so in it too.
    pub fn attach(&self, pool: Pool) {
        let mut state = self.lock();
        let known = pool.runtimes().len();
        for (index, agent) in state.agents.iter().enumerate() {
            if index >= known {
                pool.add_runtime(agent.runtime.clone());
            }
            if agent.draining {
                pool.set_draining(index, true);
            }
            if agent.down {
                pool.runtime_down(index);
            }
        }
        state.pool = Some(pool);
    }

    /// Checks the agents' health every `health_interval` and resolves the names again every
    /// `dns_interval`, until the task is aborted.
    pub fn watch(&self) -> JoinHandle<()> {
        let set = self.clone();
        tokio::spawn(async move {
            let mut health = tokio::time::interval(set.settings.health_interval);
            health.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut dns = tokio::time::interval(set.settings.dns_interval);
            dns.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            dns.tick().await;
            // Resolving and connecting to new agents run beside the health checks, one
            // round at a time: a slow or unreachable new address holds up no health check.
            // Aborting this task drops the set, which aborts a round in progress.
            let mut rediscovery = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    _ = health.tick() => set.check_health().await,
                    _ = dns.tick() => {
                        if rediscovery.is_empty() {
                            let set = set.clone();
                            rediscovery.spawn(async move { set.rediscover().await });
                        }
                    }
                    Some(_) = rediscovery.join_next(), if !rediscovery.is_empty() => {}
                }
            }
        })
    }

    /// One health check of every agent, all at once.
    async fn check_health(&self) {
        let agents: Vec<(usize, String, Arc<RemoteRuntime>)> = self
            .lock()
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| !(a.draining && a.down))
            .map(|(i, a)| (i, a.url.clone(), a.runtime.clone()))
            .collect();
        let timeout = self.settings.health_timeout;
        let checks = agents.into_iter().map(|(index, url, runtime)| async move {
            (index, url, runtime.check_health(timeout).await)
        });
        for (index, url, outcome) in futures::future::join_all(checks).await {
            let mut state = self.lock();
            let pool = state.pool.clone();
            let agent = &mut state.agents[index];
            let threshold = self.settings.health_failures.max(1);
            if outcome.is_err() {
                agent.failures = agent.failures.saturating_add(1);
            } else {
                agent.failures = 0;
            }
            match outcome {
                Err(err) if !agent.down && agent.failures >= threshold => {
                    tracing::warn!(agent = %url, error = %err, "agent down: its sandboxes are dropped, new ones go elsewhere");
                    agent.down = true;
                    if let Some(pool) = pool {
                        pool.runtime_down(index);
                    }
                }
                Err(_) => {}
                Ok(()) => {
                    if agent.down {
                        tracing::info!(agent = %url, "agent answers again");
                        agent.down = false;
                    }
                    // The pool may have marked it unreachable itself (a failed call or
                    // listing); taking it back is a no-op when it is not, so no copy of
                    // the pool's runtime list is needed to find out.
                    if let Some(pool) = pool {
                        pool.runtime_up(index);
                    }
                }
            }
        }
    }

    /// Resolves the names again: adds the new addresses, drains those gone, takes back those
    /// that return, and retries agents that could not be connected to.
    async fn rediscover(&self) {
        let mut found: HashMap<String, Option<String>> = HashMap::new();
        let mut resolved_all = true;
        for target in &self.settings.dns {
            match resolve(target).await {
                Ok(addrs) => {
                    for addr in addrs {
                        found.insert(self.settings.url(addr), Some(target.name.clone()));
                    }
                }
                Err(err) => {
                    // A failed lookup says nothing about the agents: the set stays as it is.
                    tracing::warn!(name = %target.name, error = %err, "cannot resolve the agents' name");
                    resolved_all = false;
                }
            }
        }
        let pending = {
            let mut state = self.lock();
            let pool = state.pool.clone();
            for (index, agent) in state.agents.iter_mut().enumerate() {
                if !agent.from_dns {
                    continue;
                }
                let present = found.contains_key(&agent.url);
                if resolved_all && !present && !agent.draining {
                    tracing::info!(agent = %agent.url, "agent gone from DNS: draining");
                    agent.draining = true;
                    if let Some(pool) = &pool {
                        pool.set_draining(index, true);
                    }
                } else if present && agent.draining {
                    tracing::info!(agent = %agent.url, "agent back in DNS");
                    agent.draining = false;
                    if let Some(pool) = &pool {
                        pool.set_draining(index, false);
                    }
                }
            }
            let known: Vec<String> = state.agents.iter().map(|a| a.url.clone()).collect();
            // Addresses left out earlier (DNS ones only while still in DNS), then new ones.
            let mut pending: Vec<Pending> = std::mem::take(&mut state.pending)
                .into_iter()
                .filter(|p| p.name.is_none() || !resolved_all || found.contains_key(&p.url))
                .collect();
            for (url, name) in found {
                if !known.contains(&url) && !pending.iter().any(|p| p.url == url) {
                    tracing::info!(agent = %url, "agent found in DNS: connecting");
                    pending.push(Pending { url, name });
                }
            }
            pending
        };
        for (pending, outcome) in self.connect_all(pending).await {
            if let Err(err) = outcome {
                tracing::warn!(agent = %pending.url, error = %err, "agent not reachable yet");
                self.lock().pending.push(pending);
            }
        }
    }
}

/// Every address of a name, by the system's resolver (so `/etc/resolv.conf`, a Kubernetes
/// Pod's cluster DNS included).
async fn resolve(target: &DnsTarget) -> std::io::Result<Vec<SocketAddr>> {
    let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((target.name.as_str(), target.port))
        .await?
        .collect();
    addrs.sort();
    addrs.dedup();
    Ok(addrs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dns_target_is_name_colon_port() {
        let target: DnsTarget = "esb-agent.esb.svc.cluster.local:50051".parse().unwrap();
        assert_eq!(target.name, "esb-agent.esb.svc.cluster.local");
        assert_eq!(target.port, 50051);
        for bad in ["agents", "agents:", ":50051", "agents:http", "agents:0"] {
            assert!(bad.parse::<DnsTarget>().is_err(), "{bad}");
        }
    }
}
