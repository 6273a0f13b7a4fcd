//! Placement: which runtime (host) takes a new sandbox. The least-loaded healthy runtime
//! under the host cap that is not draining; load counts this pool's sandboxes on it, all
//! functions together, including those being created or destroyed. The set of runtimes
//! grows while the pool runs (agents found by DNS); one that leaves is drained, not removed.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

use esb_runtime::Runtime;
use tokio::sync::watch;

/// Why no runtime can take a new sandbox.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum NoRoom {
    /// No runtime is reachable.
    NoHealthy,
    /// Every reachable runtime is at the host cap.
    HostFull,
}

/// Picks, among `(healthy, load)` per runtime, the least-loaded healthy one under `cap`;
/// returns its index and load. Ties go to the first.
pub(crate) fn least_loaded(
    runtimes: impl IntoIterator<Item = (bool, usize)>,
    cap: Option<usize>,
) -> Result<(usize, usize), NoRoom> {
    let mut best: Option<(usize, usize)> = None;
    let mut any_healthy = false;
    for (i, (healthy, load)) in runtimes.into_iter().enumerate() {
        if !healthy {
            continue;
        }
        any_healthy = true;
        if cap.is_some_and(|cap| load >= cap) {
            continue;
        }
        if best.is_none_or(|(_, l)| load < l) {
            best = Some((i, load));
        }
    }
    best.ok_or(if any_healthy {
        NoRoom::HostFull
    } else {
        NoRoom::NoHealthy
    })
}

/// One runtime the pool places sandboxes on.
pub(crate) struct RuntimeSlot {
    pub runtime: Arc<dyn Runtime>,
    healthy: AtomicBool,
    /// Takes no new sandboxes; those it has are not reused and go when released.
    draining: AtomicBool,
    /// Sandboxes of this pool placed on it, including those being created or destroyed.
    load: AtomicUsize,
    /// The runtime can freeze sandboxes.
    pub pausable: bool,
    /// Bumped each time the runtime is declared down: invocations in flight on it end.
    lost: watch::Sender<u64>,
}

impl RuntimeSlot {
    fn new(runtime: Arc<dyn Runtime>) -> Self {
        Self {
            pausable: runtime.capabilities().pause,
            runtime,
            healthy: AtomicBool::new(true),
            draining: AtomicBool::new(false),
            load: AtomicUsize::new(0),
            lost: watch::Sender::new(0),
        }
    }
}

/// The runtimes of a pool and their load. Runtimes are only ever added; one that goes away
/// is drained and keeps its index, so an index names one runtime for the pool's life.
pub(crate) struct Placement {
    runtimes: RwLock<Vec<Arc<RuntimeSlot>>>,
    host_cap: Option<usize>,
}

impl Placement {
    pub(crate) fn new(runtimes: Vec<Arc<dyn Runtime>>, host_cap: Option<usize>) -> Self {
        Self {
            runtimes: RwLock::new(
                runtimes
                    .into_iter()
                    .map(|runtime| Arc::new(RuntimeSlot::new(runtime)))
                    .collect(),
            ),
            host_cap,
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Vec<Arc<RuntimeSlot>>> {
        self.runtimes
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Adds a runtime; returns its index.
    pub(crate) fn add(&self, runtime: Arc<dyn Runtime>) -> usize {
        let mut runtimes = self
            .runtimes
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        runtimes.push(Arc::new(RuntimeSlot::new(runtime)));
        runtimes.len() - 1
    }

    pub(crate) fn len(&self) -> usize {
        self.read().len()
    }

    /// The runtime at `index`.
    pub(crate) fn slot(&self, index: usize) -> Arc<RuntimeSlot> {
        Arc::clone(&self.read()[index])
    }

    /// The runtime at `index`, as a trait object.
    pub(crate) fn runtime(&self, index: usize) -> Arc<dyn Runtime> {
        Arc::clone(&self.read()[index].runtime)
    }

    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        self.read()[index].healthy.load(Ordering::Acquire)
    }

    pub(crate) fn is_draining(&self, index: usize) -> bool {
        self.read()[index].draining.load(Ordering::Acquire)
    }

    /// Sets whether the runtime is draining; returns what it was.
    pub(crate) fn set_draining(&self, index: usize, draining: bool) -> bool {
        self.read()[index].draining.swap(draining, Ordering::AcqRel)
    }

    /// The load of the runtime at `index`.
    pub(crate) fn load(&self, index: usize) -> usize {
        self.read()[index].load.load(Ordering::Acquire)
    }

    /// True when at least one runtime can take sandboxes.
    pub(crate) fn any_healthy(&self) -> bool {
        self.read().iter().any(|slot| {
            slot.healthy.load(Ordering::Acquire) && !slot.draining.load(Ordering::Acquire)
        })
    }

    /// Sets whether the runtime is reachable; returns what it was.
    pub(crate) fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        self.read()[index].healthy.swap(healthy, Ordering::AcqRel)
    }

    /// Ends the invocations in flight on the runtime at `index` (see [`Placement::lost`]).
    pub(crate) fn declare_lost(&self, index: usize) {
        self.read()[index].lost.send_modify(|epoch| *epoch += 1);
    }

    /// Changes each time the runtime at `index` is declared down.
    pub(crate) fn lost(&self, index: usize) -> watch::Receiver<u64> {
        self.read()[index].lost.subscribe()
    }

    /// True when the runtime is at the host cap.
    pub(crate) fn is_full(&self, index: usize) -> bool {
        let cap = self.host_cap.unwrap_or(usize::MAX);
        self.load(index) >= cap
    }

    /// Reserves room for one sandbox on the least-loaded healthy runtime under the host cap.
    pub(crate) fn reserve(&self) -> Result<usize, NoRoom> {
        let runtimes = self.read();
        loop {
            let loads = runtimes.iter().map(|slot| {
                (
                    slot.healthy.load(Ordering::Acquire) && !slot.draining.load(Ordering::Acquire),
                    slot.load.load(Ordering::Acquire),
                )
            });
            let (i, load) = least_loaded(loads, self.host_cap)?;
            if runtimes[i]
                .load
                .compare_exchange(load, load + 1, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
            {
                return Ok(i);
            }
        }
    }

    /// Counts one more sandbox on the runtime at `index`, whatever its load (an adopted one).
    pub(crate) fn reserve_on(&self, index: usize) {
        self.read()[index].load.fetch_add(1, Ordering::AcqRel);
    }

    /// Gives back the room of `count` sandboxes on the runtime at `index`.
    pub(crate) fn unreserve(&self, index: usize, count: usize) {
        self.read()[index].load.fetch_sub(count, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_loaded_healthy_runtime_wins_ties_to_the_first() {
        assert_eq!(
            least_loaded([(true, 3), (true, 1), (true, 1)], None),
            Ok((1, 1))
        );
        assert_eq!(least_loaded([(false, 0), (true, 5)], None), Ok((1, 5)));
    }

    #[test]
    fn the_host_cap_and_health_say_why_there_is_no_room() {
        assert_eq!(
            least_loaded([(true, 2), (true, 3)], Some(2)),
            Err(NoRoom::HostFull)
        );
        assert_eq!(
            least_loaded([(false, 0), (false, 0)], Some(2)),
            Err(NoRoom::NoHealthy)
        );
        assert_eq!(least_loaded([], None), Err(NoRoom::NoHealthy));
        assert_eq!(least_loaded([(true, 2), (true, 1)], Some(2)), Ok((1, 1)));
    }
}
