//! Per-function bookkeeping, pure and synchronous: the idle list, the counts of leased,
//! creating and destroying sandboxes, the FIFO queue of waiters, the sandboxes the pool
//! knows, and the circuit breaker. No locks, no tasks, no runtime calls; the caller holds
//! the function's lock and acts on what these methods return.
//!
//! Invariant: `idle + leased + creating + destroying` is the number of sandboxes that exist
//! or may exist, and callers only add one while [`Accounts::has_room`] says so, so it never
//! exceeds `max_capacity`.

use std::collections::{HashMap, HashSet, VecDeque};
use std::time::Duration;

use esb_runtime::{Error as RuntimeError, SandboxId};
use tokio::time::Instant;

use crate::breaker::{Admit, Breaker, BreakerState};
use crate::config::BreakerConfig;

/// A snapshot of one function's pool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionStats {
    /// Idle sandboxes, running.
    pub idle: usize,
    /// Idle sandboxes, frozen.
    pub paused: usize,
    /// Sandboxes leased to a request (or to the janitor).
    pub busy: usize,
    /// Sandboxes being created.
    pub creating: usize,
    /// Sandboxes being destroyed.
    pub destroying: usize,
    /// Requests waiting in the queue.
    pub waiting: usize,
    /// The circuit breaker's state.
    pub breaker: BreakerState,
}

impl FunctionStats {
    /// Every sandbox counted against `max_capacity`.
    pub fn total(&self) -> usize {
        self.idle + self.paused + self.busy + self.creating + self.destroying
    }
}

/// A sandbox as the pool tracks it.
#[derive(Debug)]
pub(crate) struct Sandbox {
    pub id: SandboxId,
    /// Index of the runtime holding it.
    pub runtime: usize,
    pub last_used: Option<Instant>,
    pub paused: bool,
    /// Created for a waiting request and not yet invoked.
    pub cold: bool,
    /// The function's generation when it was created; an older one is retired.
    pub generation: u64,
}

impl Default for Sandbox {
    /// An empty placeholder left where a sandbox was taken out.
    fn default() -> Self {
        Self {
            id: SandboxId::new(String::new()),
            runtime: 0,
            last_used: None,
            paused: false,
            cold: false,
            generation: 0,
        }
    }
}

impl Sandbox {
    /// When it was last used; every pooled sandbox gets a time when it is admitted.
    pub(crate) fn last_used(&self) -> Instant {
        self.last_used.unwrap_or_else(Instant::now)
    }
}

/// Where and when a sandbox the pool knows was created.
#[derive(Clone, Copy, Debug)]
struct Known {
    runtime: usize,
    created: Instant,
}

/// A FIFO queue whose entries can also leave from the middle, by the id they got.
#[derive(Debug)]
pub(crate) struct Queue<T> {
    entries: VecDeque<(u64, T)>,
    next: u64,
}

impl<T> Queue<T> {
    fn new() -> Self {
        Self {
            entries: VecDeque::new(),
            next: 0,
        }
    }

    /// Appends `item`; returns its id.
    pub(crate) fn push(&mut self, item: T) -> u64 {
        let id = self.next;
        self.next += 1;
        self.entries.push_back((id, item));
        id
    }

    /// Takes out the entry with this id, wherever it is.
    pub(crate) fn remove(&mut self, id: u64) -> Option<T> {
        let i = self.entries.iter().position(|(e, _)| *e == id)?;
        self.entries.remove(i).map(|(_, item)| item)
    }

    /// Takes out the oldest entry.
    pub(crate) fn pop_front(&mut self) -> Option<T> {
        self.entries.pop_front().map(|(_, item)| item)
    }

    /// Takes out every entry, oldest first.
    pub(crate) fn drain(&mut self) -> Vec<T> {
        self.entries.drain(..).map(|(_, item)| item).collect()
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// What happened to a leased sandbox, applied when it is released.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Report {
    /// It was invoked: its idle time restarts.
    pub used: bool,
    /// It must be destroyed.
    pub discard: bool,
    /// Outcome for the breaker: success, infrastructure failure, or nothing to say.
    pub breaker: Option<bool>,
    /// This lease is the half-open probe.
    pub probe: bool,
    /// An invocation was in flight when the lease was dropped.
    pub in_flight: bool,
}

impl Report {
    /// Records the outcome of an invocation, `None` for a success; returns true when the
    /// error says the runtime is unreachable.
    pub(crate) fn record(&mut self, error: Option<&RuntimeError>) -> bool {
        self.used = true;
        let Some(err) = error else {
            self.breaker = Some(true);
            return false;
        };
        if err.is_sandbox_fatal()
            || matches!(
                err,
                RuntimeError::Unavailable(_) | RuntimeError::Busy(_) | RuntimeError::Paused(_)
            )
        {
            self.discard = true;
        }
        if is_infrastructure_failure(err) {
            self.breaker = Some(false);
        }
        matches!(err, RuntimeError::Unavailable(_))
    }

    /// Records an invocation that ended outside the runtime (a layer between pool and
    /// runtime failed or cut it short): the sandbox's state is unknown, so it is destroyed.
    pub(crate) fn record_unknown(&mut self) {
        self.used = true;
        self.discard = true;
    }
}

/// Errors that say the function's sandboxes cannot run, as opposed to the function's own
/// failures. An unreachable runtime is not one: it says nothing of the function (its
/// sandboxes go elsewhere), so a lost host never opens the breakers of its functions.
fn is_infrastructure_failure(err: &RuntimeError) -> bool {
    matches!(
        err,
        RuntimeError::InitFailed { .. }
            | RuntimeError::InitTimeout { .. }
            | RuntimeError::SandboxLost { .. }
            | RuntimeError::Backend(_)
            | RuntimeError::Io(_)
            | RuntimeError::NotFound(_)
    )
}

/// What becomes of a released sandbox.
#[derive(Debug)]
pub(crate) enum Fate {
    /// Hand it to the first waiter, or [`Accounts::return_idle`]; it still counts as leased.
    Reuse(Sandbox),
    /// Destroy it; it counts as destroying.
    Destroy(Sandbox),
    /// Its runtime is unreachable: it is forgotten and its room on that runtime is freed.
    Free(usize),
}

/// The outcome of [`Accounts::release`].
#[derive(Debug)]
pub(crate) struct Released {
    pub fate: Fate,
    /// This release opened the circuit breaker.
    pub opened: bool,
    /// The sandbox was lost (discarded, gone, or dropped mid-invocation).
    pub lost: bool,
}

/// The bookkeeping of one function; `W` is what a waiter in the queue holds.
#[derive(Debug)]
pub(crate) struct Accounts<W> {
    /// Idle sandboxes ordered by last use; the most recently used is last.
    idle: Vec<Sandbox>,
    paused_idle: usize,
    leased: usize,
    creating: usize,
    destroying: usize,
    waiters: Queue<W>,
    known: HashMap<SandboxId, Known>,
    /// Leased sandboxes found gone: destroyed when released.
    lost: HashSet<SandboxId>,
    breaker: Breaker,
    /// Bumped by [`Accounts::retire`]: sandboxes of an older generation are not reused.
    generation: u64,
}

impl<W> Accounts<W> {
    pub(crate) fn new(breaker: BreakerConfig) -> Self {
        Self {
            idle: Vec::new(),
            paused_idle: 0,
            leased: 0,
            creating: 0,
            destroying: 0,
            waiters: Queue::new(),
            known: HashMap::new(),
            lost: HashSet::new(),
            breaker: Breaker::new(breaker),
            generation: 0,
        }
    }

    /// Every sandbox counted against `max_capacity`.
    pub(crate) fn total(&self) -> usize {
        self.idle.len() + self.leased + self.creating + self.destroying
    }

    /// Sandboxes that are or will be usable.
    pub(crate) fn live(&self) -> usize {
        self.idle.len() + self.leased + self.creating
    }

    /// True when one more sandbox fits under `max`.
    pub(crate) fn has_room(&self, max: usize) -> bool {
        self.total() < max
    }

    pub(crate) fn stats(&self) -> FunctionStats {
        FunctionStats {
            idle: self.idle.len() - self.paused_idle,
            paused: self.paused_idle,
            busy: self.leased,
            creating: self.creating,
            destroying: self.destroying,
            waiting: self.waiters.len(),
            breaker: self.breaker.state(),
        }
    }

    pub(crate) fn breaker_state(&self) -> BreakerState {
        self.breaker.state()
    }

    pub(crate) fn breaker_closed(&self) -> bool {
        self.breaker.is_closed()
    }

    /// Asks the breaker whether a new request may go on.
    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        self.breaker.admit(now)
    }

    /// The half-open probe left without an outcome.
    pub(crate) fn abandon_probe(&mut self) {
        self.breaker.abandon_probe();
    }

    pub(crate) fn waiters(&mut self) -> &mut Queue<W> {
        &mut self.waiters
    }

    pub(crate) fn has_waiters(&self) -> bool {
        !self.waiters.is_empty()
    }

    /// Leases the most recently used idle sandbox.
    pub(crate) fn pop_idle(&mut self) -> Option<Sandbox> {
        let sandbox = self.idle.pop()?;
        if sandbox.paused {
            self.paused_idle -= 1;
        }
        self.leased += 1;
        Some(sandbox)
    }

    /// Leases the idle sandboxes `pick` chooses.
    pub(crate) fn take_idle(&mut self, mut pick: impl FnMut(&Sandbox) -> bool) -> Vec<Sandbox> {
        let mut taken = Vec::new();
        let mut kept = Vec::with_capacity(self.idle.len());
        for sandbox in std::mem::take(&mut self.idle) {
            if pick(&sandbox) {
                if sandbox.paused {
                    self.paused_idle -= 1;
                }
                taken.push(sandbox);
            } else {
                kept.push(sandbox);
            }
        }
        self.idle = kept;
        self.leased += taken.len();
        taken
    }

    /// A leased sandbox nobody took goes back to the idle list.
    pub(crate) fn return_idle(&mut self, sandbox: Sandbox) {
        self.leased -= 1;
        if sandbox.paused {
            self.paused_idle += 1;
        }
        let at = sandbox.last_used();
        let position = self.idle.partition_point(|s| s.last_used() <= at);
        self.idle.insert(position, sandbox);
    }

    /// Room for a new sandbox was taken.
    pub(crate) fn start_create(&mut self) {
        self.creating += 1;
    }

    /// Room for a new sandbox was given back unused.
    pub(crate) fn cancel_create(&mut self) {
        self.creating -= 1;
    }

    /// A new sandbox exists and is leased to whoever asked for it.
    pub(crate) fn created(
        &mut self,
        id: SandboxId,
        runtime: usize,
        now: Instant,
        cold: bool,
    ) -> Sandbox {
        self.creating -= 1;
        self.leased += 1;
        self.known.insert(
            id.clone(),
            Known {
                runtime,
                created: now,
            },
        );
        Sandbox {
            id,
            runtime,
            last_used: Some(now),
            paused: false,
            cold,
            generation: self.generation,
        }
    }

    /// A creation failed; returns true when this opened the breaker. `counts` when the
    /// failure is the function's (see [`is_infrastructure_failure`]).
    pub(crate) fn create_failed(&mut self, now: Instant, counts: bool) -> bool {
        self.creating -= 1;
        counts && self.breaker.failure(now)
    }

    /// A sandbox finished being destroyed.
    pub(crate) fn destroyed(&mut self) {
        self.destroying -= 1;
    }

    /// Applies a released lease's report to the breaker and the counts; a sandbox of a
    /// `draining` runtime is destroyed instead of reused.
    pub(crate) fn release(
        &mut self,
        mut sandbox: Sandbox,
        report: &Report,
        now: Instant,
        closed: bool,
        runtime_healthy: bool,
        draining: bool,
    ) -> Released {
        let opened = match report.breaker {
            Some(true) => {
                self.breaker.success();
                false
            }
            Some(false) => self.breaker.failure(now),
            None => {
                if report.probe {
                    self.breaker.abandon_probe();
                }
                false
            }
        };
        self.leased -= 1;
        let gone = !self.lost.is_empty() && self.lost.remove(&sandbox.id);
        let lost = report.discard || gone || report.in_flight;
        let retired = sandbox.generation < self.generation;
        if lost || closed || !runtime_healthy || retired || draining {
            self.known.remove(&sandbox.id);
            let fate = if runtime_healthy {
                self.destroying += 1;
                Fate::Destroy(sandbox)
            } else {
                Fate::Free(sandbox.runtime)
            };
            return Released { fate, opened, lost };
        }
        if report.used {
            sandbox.last_used = Some(now);
            sandbox.cold = false;
        }
        self.leased += 1;
        Released {
            fate: Fate::Reuse(sandbox),
            opened,
            lost,
        }
    }

    fn forget_idle(&mut self, sandbox: &Sandbox) {
        self.known.remove(&sandbox.id);
        if sandbox.paused {
            self.paused_idle -= 1;
        }
    }

    /// Retires every sandbox of now: the idle ones are taken out, to destroy; busy ones are
    /// destroyed when released, never reused.
    pub(crate) fn retire(&mut self) -> Vec<Sandbox> {
        self.generation += 1;
        let victims = std::mem::take(&mut self.idle);
        for sandbox in &victims {
            self.forget_idle(sandbox);
            self.destroying += 1;
        }
        victims
    }

    /// Takes out, to destroy, the idle sandboxes unused for `idle_timeout`, least recently
    /// used first, never going below `min`.
    pub(crate) fn expire_idle(
        &mut self,
        now: Instant,
        min: usize,
        idle_timeout: Duration,
    ) -> Vec<Sandbox> {
        let mut victims = Vec::new();
        while self.live() > min
            && self
                .idle
                .first()
                .is_some_and(|s| now.duration_since(s.last_used()) >= idle_timeout)
        {
            let sandbox = self.idle.remove(0);
            self.forget_idle(&sandbox);
            self.destroying += 1;
            victims.push(sandbox);
        }
        victims
    }

    /// The last use of the least recently used idle sandbox `full` accepts, when this
    /// function is above `min`: the candidate for eviction.
    pub(crate) fn evictable(&self, min: usize, full: impl Fn(&Sandbox) -> bool) -> Option<Instant> {
        if self.live() <= min {
            return None;
        }
        self.idle.iter().find(|s| full(s)).map(Sandbox::last_used)
    }

    /// Takes out, to destroy, the least recently used idle sandbox `full` accepts, when this
    /// function is above `min`.
    pub(crate) fn evict(&mut self, min: usize, full: impl Fn(&Sandbox) -> bool) -> Option<Sandbox> {
        let i = self.idle.iter().position(full)?;
        if self.live() <= min {
            return None;
        }
        let sandbox = self.idle.remove(i);
        self.forget_idle(&sandbox);
        self.destroying += 1;
        Some(sandbox)
    }

    /// Takes out, to destroy, the idle sandboxes of a draining runtime.
    pub(crate) fn drain_runtime(&mut self, runtime: usize) -> Vec<Sandbox> {
        let mut victims = Vec::new();
        let mut kept = Vec::with_capacity(self.idle.len());
        for sandbox in std::mem::take(&mut self.idle) {
            if sandbox.runtime == runtime {
                self.forget_idle(&sandbox);
                self.destroying += 1;
                victims.push(sandbox);
            } else {
                kept.push(sandbox);
            }
        }
        self.idle = kept;
        victims
    }

    /// Forgets the idle sandboxes of an unreachable runtime; returns how many.
    pub(crate) fn forget_runtime(&mut self, runtime: usize) -> usize {
        let before = self.idle.len();
        let mut kept = Vec::with_capacity(before);
        for sandbox in std::mem::take(&mut self.idle) {
            if sandbox.runtime == runtime {
                self.forget_idle(&sandbox);
            } else {
                kept.push(sandbox);
            }
        }
        self.idle = kept;
        before - self.idle.len()
    }

    /// Sandboxes of `runtime` created before `listed_at` that `gone` says have vanished:
    /// idle ones are taken out to destroy (returned), leased ones are destroyed when released.
    /// Also returns the ids of all that vanished.
    pub(crate) fn vanished(
        &mut self,
        runtime: usize,
        gone: &dyn Fn(&SandboxId) -> bool,
        listed_at: Instant,
    ) -> (Vec<SandboxId>, Vec<Sandbox>) {
        let vanished: Vec<SandboxId> = self
            .known
            .iter()
            .filter(|(id, k)| {
                k.runtime == runtime
                    && k.created < listed_at
                    && !self.lost.contains(*id)
                    && gone(id)
            })
            .map(|(id, _)| id.clone())
            .collect();
        let mut victims = Vec::new();
        for id in &vanished {
            if let Some(i) = self.idle.iter().position(|s| &s.id == id) {
                let sandbox = self.idle.remove(i);
                self.forget_idle(&sandbox);
                self.destroying += 1;
                victims.push(sandbox);
            } else {
                self.lost.insert(id.clone());
            }
        }
        (vanished, victims)
    }

    /// Ids of the sandboxes of this function on `runtime`.
    pub(crate) fn known_on(&self, runtime: usize) -> Vec<SandboxId> {
        self.known
            .iter()
            .filter(|(_, k)| k.runtime == runtime)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// How many sandboxes to create to reach `min` without going over `max`.
    pub(crate) fn min_deficit(&self, min: usize, max: usize) -> usize {
        let deficit = min.saturating_sub(self.live());
        let room = max.saturating_sub(self.total());
        deficit.min(room)
    }

    /// Shutdown: takes out every waiter (to reject) and every idle sandbox (to destroy).
    pub(crate) fn close(&mut self) -> (Vec<W>, Vec<Sandbox>) {
        let rejected = self.waiters.drain();
        let victims = std::mem::take(&mut self.idle);
        self.paused_idle = 0;
        for sandbox in &victims {
            self.known.remove(&sandbox.id);
        }
        self.destroying += victims.len();
        (rejected, victims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accounts() -> Accounts<u32> {
        Accounts::new(BreakerConfig::new(2, Duration::from_secs(10)))
    }

    /// Creates a sandbox `id` on `runtime` and releases it after one good invocation.
    fn warm(acc: &mut Accounts<u32>, id: &str, runtime: usize, at: Instant) {
        acc.start_create();
        let sandbox = acc.created(SandboxId::new(id), runtime, at, true);
        let report = Report {
            used: true,
            breaker: Some(true),
            ..Report::default()
        };
        match acc.release(sandbox, &report, at, false, true, false).fate {
            Fate::Reuse(sandbox) => acc.return_idle(sandbox),
            other => panic!("{other:?}"),
        }
    }

    /// Accounts holding these idle sandboxes, `(id, runtime, last use in seconds after t0)`,
    /// and t0.
    fn idle(sandboxes: &[(&str, usize, u64)]) -> (Accounts<u32>, Instant) {
        let t0 = Instant::now();
        let mut acc = accounts();
        for &(id, runtime, after) in sandboxes {
            warm(&mut acc, id, runtime, t0 + Duration::from_secs(after));
        }
        (acc, t0)
    }

    #[test]
    fn counts_follow_a_sandbox_through_its_life() {
        let now = Instant::now();
        let mut acc = accounts();
        assert!(acc.has_room(1));
        acc.start_create();
        assert_eq!(acc.stats().creating, 1);
        assert!(!acc.has_room(1));
        let sandbox = acc.created(SandboxId::new("a"), 0, now, true);
        assert!(sandbox.cold);
        assert_eq!((acc.stats().busy, acc.stats().creating), (1, 0));
        let used = Report {
            used: true,
            ..Report::default()
        };
        let Fate::Reuse(sandbox) = acc.release(sandbox, &used, now, false, true, false).fate else {
            panic!("a healthy sandbox is reused");
        };
        assert!(!sandbox.cold, "an invoked sandbox is warm");
        acc.return_idle(sandbox);
        assert_eq!((acc.stats().idle, acc.stats().busy), (1, 0));
        assert_eq!(acc.known_on(0), vec![SandboxId::new("a")]);
        let discard = Report {
            discard: true,
            ..Report::default()
        };
        let sandbox = acc.pop_idle().unwrap();
        let released = acc.release(sandbox, &discard, now, false, true, false);
        assert!(released.lost && matches!(released.fate, Fate::Destroy(_)));
        assert_eq!(acc.stats().destroying, 1);
        assert!(acc.known_on(0).is_empty());
        acc.destroyed();
        assert_eq!(acc.stats().total(), 0);
    }

    #[test]
    fn the_most_recently_used_idle_sandbox_is_leased_first() {
        let (mut acc, _) = idle(&[("old", 0, 0), ("new", 0, 1)]);
        assert_eq!(acc.pop_idle().unwrap().id, SandboxId::new("new"));
        assert_eq!(acc.pop_idle().unwrap().id, SandboxId::new("old"));
        assert!(acc.pop_idle().is_none());
        assert_eq!(acc.stats().busy, 2);
    }

    #[test]
    fn idle_expiry_goes_oldest_first_and_keeps_min() {
        let (mut acc, t0) = idle(&[("a", 0, 0), ("b", 0, 5), ("c", 0, 50)]);
        let later = t0 + Duration::from_secs(60);
        let victims = acc.expire_idle(later, 1, Duration::from_secs(30));
        let ids: Vec<_> = victims.iter().map(|s| s.id.clone()).collect();
        assert_eq!(ids, vec![SandboxId::new("a"), SandboxId::new("b")]);
        assert_eq!((acc.stats().idle, acc.stats().destroying), (1, 2));
        let much_later = t0 + Duration::from_secs(600);
        assert!(
            acc.expire_idle(much_later, 1, Duration::from_secs(30))
                .is_empty()
        );
    }

    #[test]
    fn the_queue_is_fifo_and_entries_can_leave() {
        let mut queue = Queue::new();
        let a = queue.push('a');
        let b = queue.push('b');
        queue.push('c');
        assert_ne!(a, b);
        assert_eq!(queue.remove(b), Some('b'));
        assert_eq!(queue.remove(b), None);
        assert_eq!(queue.pop_front(), Some('a'));
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.drain(), vec!['c']);
        assert!(queue.is_empty());
    }

    #[test]
    fn infrastructure_failures_open_the_breaker_and_discard() {
        let now = Instant::now();
        let mut acc = accounts();
        let mut report = Report::default();
        let lost = RuntimeError::NotFound(SandboxId::new("a"));
        assert!(!report.record(Some(&lost)));
        assert!(report.discard && report.breaker == Some(false));
        acc.start_create();
        let sandbox = acc.created(SandboxId::new("a"), 0, now, true);
        assert!(
            !acc.release(sandbox, &report, now, false, true, false)
                .opened
        );
        acc.start_create();
        let sandbox = acc.created(SandboxId::new("b"), 0, now, true);
        assert!(
            acc.release(sandbox, &report, now, false, true, false)
                .opened
        );
        assert_eq!(acc.breaker_state(), BreakerState::Open);
        let mut unknown = Report::default();
        unknown.record_unknown();
        assert!(unknown.discard && unknown.breaker.is_none());
    }

    #[test]
    fn an_unreachable_runtime_discards_without_counting_against_the_function() {
        let mut report = Report::default();
        assert!(report.record(Some(&RuntimeError::Unavailable("host gone".into()))));
        assert!(report.discard && report.breaker.is_none());
        let mut acc = accounts();
        for _ in 0..3 {
            acc.start_create();
            assert!(!acc.create_failed(Instant::now(), false));
        }
        assert_eq!(acc.breaker_state(), BreakerState::Closed);
    }

    #[test]
    fn an_unreachable_runtime_frees_instead_of_destroying() {
        let (mut acc, now) = idle(&[("a", 0, 0), ("b", 1, 0)]);
        assert_eq!(acc.forget_runtime(1), 1);
        assert_eq!(acc.stats().idle, 1);
        let sandbox = acc.pop_idle().unwrap();
        let released = acc.release(sandbox, &Report::default(), now, false, false, false);
        assert!(matches!(released.fate, Fate::Free(0)));
        assert_eq!(acc.stats().total(), 0);
    }

    #[test]
    fn a_draining_runtime_loses_its_idle_sandboxes_and_its_busy_ones_on_release() {
        let (mut acc, now) = idle(&[("a", 0, 0), ("b", 1, 0), ("c", 1, 1)]);
        let busy = acc.pop_idle().unwrap();
        assert_eq!(busy.id, SandboxId::new("c"));
        let victims = acc.drain_runtime(1);
        assert_eq!(victims.len(), 1);
        assert_eq!(victims[0].id, SandboxId::new("b"));
        assert_eq!((acc.stats().idle, acc.stats().destroying), (1, 1));
        let released = acc.release(busy, &Report::default(), now, false, true, true);
        assert!(matches!(released.fate, Fate::Destroy(_)));
        assert!(!released.lost);
        assert_eq!(acc.stats().destroying, 2);
    }

    #[test]
    fn vanished_sandboxes_are_destroyed_when_idle_and_on_release_when_leased() {
        let (mut acc, t0) = idle(&[("idle", 0, 0), ("leased", 0, 1)]);
        let leased = acc.pop_idle().unwrap();
        let listed_at = t0 + Duration::from_secs(2);
        let (ids, victims) = acc.vanished(0, &|_| true, listed_at);
        assert_eq!(ids.len(), 2);
        assert_eq!(victims.len(), 1);
        assert_eq!(victims[0].id, SandboxId::new("idle"));
        let released = acc.release(leased, &Report::default(), listed_at, false, true, false);
        assert!(released.lost && matches!(released.fate, Fate::Destroy(_)));
        assert_eq!(acc.stats().destroying, 2);
    }

    #[test]
    fn eviction_respects_min_and_the_full_runtime() {
        let (mut acc, t0) = idle(&[("a", 0, 0), ("b", 1, 1)]);
        let on_one = |s: &Sandbox| s.runtime == 1;
        assert_eq!(acc.evictable(2, on_one), None);
        assert_eq!(acc.evictable(1, on_one), Some(t0 + Duration::from_secs(1)));
        assert_eq!(acc.evict(1, on_one).unwrap().id, SandboxId::new("b"));
        assert!(acc.evict(1, |_| true).is_none(), "min is kept");
    }

    #[test]
    fn min_deficit_is_bounded_by_max() {
        let mut acc = accounts();
        assert_eq!(acc.min_deficit(3, 10), 3);
        assert_eq!(acc.min_deficit(3, 2), 2);
        acc.start_create();
        assert_eq!(acc.min_deficit(3, 10), 2);
    }

    #[test]
    fn close_takes_waiters_and_idle() {
        let (mut acc, _) = idle(&[("a", 0, 0)]);
        acc.waiters().push(7);
        let (rejected, victims) = acc.close();
        assert_eq!(rejected, vec![7]);
        assert_eq!(victims.len(), 1);
        assert_eq!(acc.stats().destroying, 1);
        assert!(!acc.has_waiters());
    }
}
