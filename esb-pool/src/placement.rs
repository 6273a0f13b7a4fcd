//! Placement: which runtime (host) takes a new sandbox. The least-loaded healthy runtime
//! under the host cap; load counts this pool's sandboxes on it, all functions together,
//! including those being created or destroyed.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use esb_runtime::Runtime;

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
    /// Sandboxes of this pool placed on it, including those being created or destroyed.
    load: AtomicUsize,
    /// The runtime can freeze sandboxes.
    pub pausable: bool,
}

/// The runtimes of a pool and their load.
pub(crate) struct Placement {
    runtimes: Vec<RuntimeSlot>,
    host_cap: Option<usize>,
}

impl Placement {
    pub(crate) fn new(runtimes: Vec<Arc<dyn Runtime>>, host_cap: Option<usize>) -> Self {
        Self {
            runtimes: runtimes
                .into_iter()
                .map(|runtime| RuntimeSlot {
                    pausable: runtime.capabilities().pause,
                    runtime,
                    healthy: AtomicBool::new(true),
                    load: AtomicUsize::new(0),
                })
                .collect(),
            host_cap,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.runtimes.len()
    }

    /// The runtime at `index`.
    pub(crate) fn slot(&self, index: usize) -> &RuntimeSlot {
        &self.runtimes[index]
    }

    /// The runtime at `index`, as a trait object.
    pub(crate) fn runtime(&self, index: usize) -> &Arc<dyn Runtime> {
        &self.runtimes[index].runtime
    }

    pub(crate) fn is_healthy(&self, index: usize) -> bool {
        self.runtimes[index].healthy.load(Ordering::Acquire)
    }

    /// True when at least one runtime is reachable.
    pub(crate) fn any_healthy(&self) -> bool {
        self.runtimes
            .iter()
            .any(|slot| slot.healthy.load(Ordering::Acquire))
    }

    /// Sets whether the runtime is reachable; returns what it was.
    pub(crate) fn set_healthy(&self, index: usize, healthy: bool) -> bool {
        self.runtimes[index].healthy.swap(healthy, Ordering::AcqRel)
    }

    /// True when the runtime is at the host cap.
    pub(crate) fn is_full(&self, index: usize) -> bool {
        let cap = self.host_cap.unwrap_or(usize::MAX);
        self.runtimes[index].load.load(Ordering::Acquire) >= cap
    }

    /// Reserves room for one sandbox on the least-loaded healthy runtime under the host cap.
    pub(crate) fn reserve(&self) -> Result<usize, NoRoom> {
        loop {
            let loads = self.runtimes.iter().map(|slot| {
                (
                    slot.healthy.load(Ordering::Acquire),
                    slot.load.load(Ordering::Acquire),
                )
            });
            let (i, load) = least_loaded(loads, self.host_cap)?;
            if self.runtimes[i]
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
        self.runtimes[index].load.fetch_add(1, Ordering::AcqRel);
    }

    /// Sandboxes of this pool on the runtime at `index`, including those being created.
    pub(crate) fn load(&self, index: usize) -> usize {
        self.runtimes[index].load.load(Ordering::Acquire)
    }

    /// Gives back the room of `count` sandboxes on the runtime at `index`.
    pub(crate) fn unreserve(&self, index: usize, count: usize) {
        self.runtimes[index].load.fetch_sub(count, Ordering::AcqRel);
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
