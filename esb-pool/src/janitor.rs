//! The janitor: reconcile with the runtimes, destroy expired idle sandboxes, freeze idle
//! ones, and keep `min_capacity`.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime};

use esb_runtime::{Error as RuntimeError, SandboxId, SandboxState};
use tokio::time::{Instant, MissedTickBehavior};

use crate::lease::{Lease, ensure_min};
use crate::state::Shared;

/// Runs [`sweep`] every `interval` until the pool is dropped or shut down.
pub(crate) async fn run(shared: Weak<Shared>, interval: Duration) {
    let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        if shared.is_closed() {
            return;
        }
        sweep(&shared).await;
    }
}

/// One pass of the janitor.
pub(crate) async fn sweep(shared: &Arc<Shared>) {
    for runtime in 0..shared.placement.len() {
        // A drained runtime with nothing left of this pool is not asked any more.
        if shared.placement.is_draining(runtime) && shared.placement.load(runtime) == 0 {
            continue;
        }
        reconcile(shared, runtime).await;
    }
    for function in shared.snapshot() {
        function.expire_idle(shared);
        if let Some(after) = function.config.pause_idle {
            let now = Instant::now();
            let placement = &shared.placement;
            let leases: Vec<Lease> = function
                .take_idle(|s| {
                    !s.paused
                        && placement.slot(s.runtime).pausable
                        && placement.is_healthy(s.runtime)
                        && s.last_used.is_some_and(|t| now.duration_since(t) >= after)
                })
                .into_iter()
                .map(|sandbox| Lease::new(shared, &function, sandbox))
                .collect();
            for mut lease in leases {
                lease.pause().await;
            }
        }
        ensure_min(shared, &function);
    }
}

/// Compares what a runtime lists with what the pool knows: adopts its owner's unknown
/// sandboxes (with an owner), destroys orphans past the grace period and drops known
/// sandboxes that are gone or stopped; returns how many it adopted.
pub(crate) async fn reconcile(shared: &Arc<Shared>, runtime: usize) -> usize {
    let runtime_api = shared.placement.runtime(runtime);
    let listed_at = Instant::now();
    let listed = match runtime_api.list().await {
        Ok(listed) => listed,
        Err(RuntimeError::Unavailable(reason)) => {
            tracing::warn!(runtime, %reason, "runtime unavailable");
            shared.mark_unhealthy(runtime);
            return 0;
        }
        Err(err) => {
            tracing::warn!(runtime, %err, "cannot list sandboxes");
            return 0;
        }
    };
    shared.runtime_up(runtime);
    let draining = shared.placement.is_draining(runtime);
    let states: HashMap<&SandboxId, SandboxState> =
        listed.iter().map(|info| (&info.id, info.state)).collect();
    let gone = |id: &SandboxId| {
        states
            .get(id)
            .is_none_or(|state| *state == SandboxState::Stopped)
    };
    let mut known = HashSet::new();
    for function in shared.snapshot() {
        function.drop_vanished(shared, runtime, &gone, listed_at);
        known.extend(function.known_on(runtime));
    }
    let now = SystemTime::now();
    let mut adopted = 0;
    for info in &listed {
        if known.contains(&info.id) || !shared.owns(info) {
            continue;
        }
        if shared.owner.is_some()
            && !draining
            && info.state != SandboxState::Stopped
            && shared.function(&info.function_name).is_ok_and(|function| {
                function.adopt(
                    shared,
                    runtime,
                    info.id.clone(),
                    info.state == SandboxState::Paused,
                )
            })
        {
            tracing::info!(runtime, sandbox = %info.id, function = %info.function_name, "adopted a sandbox of an earlier run");
            adopted += 1;
            continue;
        }
        let age = now
            .duration_since(info.created_at)
            .unwrap_or(Duration::ZERO);
        if age < shared.orphan_grace {
            continue;
        }
        tracing::info!(runtime, sandbox = %info.id, function = %info.function_name, "destroying orphan sandbox");
        if let Err(err) = runtime_api.destroy(&info.id).await {
            tracing::warn!(runtime, sandbox = %info.id, %err, "cannot destroy orphan sandbox");
        }
    }
    adopted
}
