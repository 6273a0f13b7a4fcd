//! The per-function circuit breaker: a small state machine over a monotonic clock.

use tokio::time::Instant;

use crate::config::BreakerConfig;

/// The state of a function's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BreakerState {
    /// Requests pass; consecutive failures are counted.
    Closed,
    /// Requests fail fast until the recovery time has passed.
    Open,
    /// One probe request is let through; its outcome closes or reopens the breaker.
    HalfOpen,
}

impl BreakerState {
    /// The value of the `esb_pool_breaker_state` gauge: 0 closed, 1 open, 2 half-open.
    pub fn gauge_value(self) -> f64 {
        match self {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        }
    }
}

/// What the breaker says to a request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Go ahead.
    Pass,
    /// Go ahead as the half-open probe.
    Probe,
    /// Fail fast.
    Reject,
}

#[derive(Debug)]
enum Inner {
    Closed { failures: u32 },
    Open { until: Instant },
    HalfOpen { probing: bool },
}

/// A circuit breaker.
#[derive(Debug)]
pub(crate) struct Breaker {
    config: BreakerConfig,
    inner: Inner,
}

impl Breaker {
    pub(crate) fn new(config: BreakerConfig) -> Self {
        Self {
            config,
            inner: Inner::Closed { failures: 0 },
        }
    }

    pub(crate) fn state(&self) -> BreakerState {
        match self.inner {
            Inner::Closed { .. } => BreakerState::Closed,
            Inner::Open { .. } => BreakerState::Open,
            Inner::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    /// True when a request would pass without changing anything (the hot path).
    pub(crate) fn is_closed(&self) -> bool {
        matches!(self.inner, Inner::Closed { .. })
    }

    pub(crate) fn admit(&mut self, now: Instant) -> Admit {
        match self.inner {
            Inner::Closed { .. } => Admit::Pass,
            Inner::Open { until } if now < until => Admit::Reject,
            Inner::Open { .. } | Inner::HalfOpen { probing: false } => {
                self.inner = Inner::HalfOpen { probing: true };
                Admit::Probe
            }
            Inner::HalfOpen { probing: true } => Admit::Reject,
        }
    }

    /// A success closes the breaker.
    pub(crate) fn success(&mut self) {
        self.inner = Inner::Closed { failures: 0 };
    }

    /// Counts a failure; returns true when this failure opened the breaker. Any failure
    /// while half-open reopens it.
    pub(crate) fn failure(&mut self, now: Instant) -> bool {
        if self.config.failure_threshold == 0 {
            return false;
        }
        let until = now + self.config.recovery_time;
        match &mut self.inner {
            Inner::Closed { failures } => {
                *failures += 1;
                if *failures >= self.config.failure_threshold {
                    self.inner = Inner::Open { until };
                    return true;
                }
                false
            }
            Inner::HalfOpen { .. } => {
                self.inner = Inner::Open { until };
                true
            }
            Inner::Open { .. } => false,
        }
    }

    /// The probe left without an outcome: let the next request probe.
    pub(crate) fn abandon_probe(&mut self) {
        if let Inner::HalfOpen { probing: true } = self.inner {
            self.inner = Inner::HalfOpen { probing: false };
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn breaker() -> Breaker {
        Breaker::new(BreakerConfig::new(3, Duration::from_secs(10)))
    }

    /// A breaker opened at `now` by three failures, and the moment its recovery time ends.
    fn opened(now: Instant) -> (Breaker, Instant) {
        let mut b = breaker();
        for _ in 0..3 {
            b.failure(now);
        }
        (b, now + Duration::from_secs(10))
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let now = Instant::now();
        let mut b = breaker();
        assert!(!b.failure(now));
        assert!(!b.failure(now));
        assert_eq!(b.admit(now), Admit::Pass);
        assert!(b.failure(now));
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.admit(now + Duration::from_secs(9)), Admit::Reject);
    }

    #[test]
    fn a_success_resets_the_count() {
        let now = Instant::now();
        let mut b = breaker();
        b.failure(now);
        b.failure(now);
        b.success();
        b.failure(now);
        b.failure(now);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_lets_one_probe_then_closes_or_reopens() {
        let (mut b, later) = opened(Instant::now());
        assert_eq!(b.admit(later), Admit::Probe);
        assert_eq!(b.admit(later), Admit::Reject);
        assert!(b.failure(later));
        assert_eq!(b.admit(later + Duration::from_secs(5)), Admit::Reject);
        let again = later + Duration::from_secs(10);
        assert_eq!(b.admit(again), Admit::Probe);
        b.success();
        assert_eq!(b.admit(again), Admit::Pass);
    }

    #[test]
    fn an_abandoned_probe_lets_another_probe() {
        let (mut b, later) = opened(Instant::now());
        assert_eq!(b.admit(later), Admit::Probe);
        b.abandon_probe();
        assert_eq!(b.admit(later), Admit::Probe);
    }

    #[test]
    fn threshold_zero_never_opens() {
        let now = Instant::now();
        let mut b = Breaker::new(BreakerConfig::new(0, Duration::from_secs(1)));
        for _ in 0..100 {
            b.failure(now);
        }
        assert_eq!(b.admit(now), Admit::Pass);
    }
}
