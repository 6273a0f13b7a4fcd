//! The pool's typed configuration: plain structs, validated once by `Pool::new`,
//! and the project's one set of scaling defaults.

use std::time::Duration;

use esb_runtime::SandboxSpec;

use crate::error::PoolError;

/// Default `max_capacity` of a function.
pub const DEFAULT_MAX_CAPACITY: usize = 10;
/// Default `min_capacity` of a function.
pub const DEFAULT_MIN_CAPACITY: usize = 0;
/// Default `acquire_timeout` of a function: how long a request may wait in the queue.
pub const DEFAULT_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(5);
/// Default `idle_timeout` of a function.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Default `pause_idle` of a function.
pub const DEFAULT_PAUSE_IDLE: Option<Duration> = Some(Duration::from_secs(1));
/// Default `janitor_interval` of a pool.
pub const DEFAULT_JANITOR_INTERVAL: Duration = Duration::from_secs(1);
/// Default `orphan_grace` of a pool.
pub const DEFAULT_ORPHAN_GRACE: Duration = Duration::from_secs(60);
/// Default `failure_threshold` of the circuit breaker.
pub const DEFAULT_FAILURE_THRESHOLD: u32 = 5;
/// Default `recovery_time` of the circuit breaker.
pub const DEFAULT_RECOVERY_TIME: Duration = Duration::from_secs(30);

/// Builder setters `fn field(self, value) -> Self` for the named fields.
macro_rules! setters {
    ($($field:ident: $ty:ty,)*) => {
        $(
            #[doc = concat!("Sets `", stringify!($field), "`.")]
            pub fn $field(mut self, value: $ty) -> Self {
                self.$field = value;
                self
            }
        )*
    };
}

/// How one function's sandboxes are pooled.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct FunctionPoolConfig {
    /// What each sandbox is made from; `spec.function_name` names the function in the pool.
    pub spec: SandboxSpec,
    /// Sandboxes of this function never exceed this, counting those being created or destroyed.
    pub max_capacity: usize,
    /// Sandboxes created at start and kept (provisioned concurrency).
    pub min_capacity: usize,
    /// How long a request may wait in the queue for a free or new sandbox before it is throttled.
    pub acquire_timeout: Duration,
    /// An idle sandbox is destroyed after this long (never below `min_capacity`).
    pub idle_timeout: Duration,
    /// Freeze a sandbox once it has been idle this long; `None` never freezes.
    pub pause_idle: Option<Duration>,
    /// This function's circuit breaker; `None` takes the pool's ([`PoolConfig::breaker`]).
    pub breaker: Option<BreakerConfig>,
}

impl FunctionPoolConfig {
    /// A config with ESB's defaults (the `DEFAULT_*` constants): max 10, min 0, 5 s queue
    /// wait, 300 s idle, freeze after 1 s.
    pub fn new(spec: SandboxSpec) -> Self {
        Self {
            spec,
            max_capacity: DEFAULT_MAX_CAPACITY,
            min_capacity: DEFAULT_MIN_CAPACITY,
            acquire_timeout: DEFAULT_ACQUIRE_TIMEOUT,
            idle_timeout: DEFAULT_IDLE_TIMEOUT,
            pause_idle: DEFAULT_PAUSE_IDLE,
            breaker: None,
        }
    }

    setters! {
        max_capacity: usize,
        min_capacity: usize,
        acquire_timeout: Duration,
        idle_timeout: Duration,
        pause_idle: Option<Duration>,
        breaker: Option<BreakerConfig>,
    }

    /// The function's name.
    pub fn name(&self) -> &str {
        &self.spec.function_name
    }

    /// Checks the config as [`crate::Pool::new`] does (name, capacities), naming the field at fault.
    pub fn validate(&self) -> Result<(), PoolError> {
        let invalid = |field: &'static str, reason: String| PoolError::InvalidConfig {
            function: self.name().to_owned(),
            field,
            reason,
        };
        if self.name().is_empty() {
            return Err(invalid("spec.function_name", "must not be empty".into()));
        }
        if self.max_capacity == 0 {
            return Err(invalid("max_capacity", "must be at least 1".into()));
        }
        if self.min_capacity > self.max_capacity {
            return Err(invalid(
                "min_capacity",
                format!(
                    "{} is over max_capacity {}",
                    self.min_capacity, self.max_capacity
                ),
            ));
        }
        Ok(())
    }
}

/// When a function's circuit breaker opens and how it recovers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct BreakerConfig {
    /// Consecutive infrastructure failures (failed creates, lost sandboxes) that open it; 0 disables it.
    pub failure_threshold: u32,
    /// How long it stays open before one probe request is let through (half-open).
    pub recovery_time: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self::new(DEFAULT_FAILURE_THRESHOLD, DEFAULT_RECOVERY_TIME)
    }
}

impl BreakerConfig {
    /// A breaker opening after `failure_threshold` consecutive failures (0 disables it) and
    /// probing again after `recovery_time`.
    pub fn new(failure_threshold: u32, recovery_time: Duration) -> Self {
        Self {
            failure_threshold,
            recovery_time,
        }
    }

    setters! {
        failure_threshold: u32,
        recovery_time: Duration,
    }
}

/// Settings of a whole pool.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct PoolConfig {
    /// The functions pooled from the start (more can be added with `Pool::register`).
    pub functions: Vec<FunctionPoolConfig>,
    /// At most this many sandboxes on one runtime (host), all functions together.
    pub host_cap: Option<usize>,
    /// How often the janitor runs (idle destroy, freeze, reconcile, min capacity).
    pub janitor_interval: Duration,
    /// A sandbox the pool does not know is destroyed by the janitor once it is this old.
    pub orphan_grace: Duration,
    /// The per-function circuit breaker.
    pub breaker: BreakerConfig,
    /// When set, the sandboxes of this pool are those labelled `esb.env=<env>`; otherwise
    /// those whose function is pooled. Only those are ever destroyed as orphans.
    pub env: Option<String>,
    /// When set, the sandboxes of this pool are those labelled `esb.owner=<owner>` (its
    /// functions' specs get that label): those found on a runtime that the pool does not
    /// know (left by an earlier run of the same owner) are adopted as warm idle sandboxes
    /// up to `max_capacity`, and no other sandbox is ever destroyed.
    pub owner: Option<String>,
    /// At most this many sandboxes are created at once on one runtime to reach the
    /// functions' `min_capacity` (a request waiting for a cold start does not wait behind
    /// them); by default four per CPU of this host.
    pub warmup_concurrency: usize,
}

/// The default [`PoolConfig::warmup_concurrency`]: four per CPU this process may use.
fn default_warmup_concurrency() -> usize {
    std::thread::available_parallelism().map_or(4, |cpus| cpus.get() * 4)
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            functions: Vec::new(),
            host_cap: None,
            janitor_interval: DEFAULT_JANITOR_INTERVAL,
            orphan_grace: DEFAULT_ORPHAN_GRACE,
            breaker: BreakerConfig::default(),
            env: None,
            owner: None,
            warmup_concurrency: default_warmup_concurrency(),
        }
    }
}

impl PoolConfig {
    /// A config pooling these functions, with the defaults otherwise.
    pub fn new(functions: impl IntoIterator<Item = FunctionPoolConfig>) -> Self {
        Self {
            functions: functions.into_iter().collect(),
            ..Self::default()
        }
    }

    setters! {
        host_cap: Option<usize>,
        janitor_interval: Duration,
        orphan_grace: Duration,
        breaker: BreakerConfig,
        env: Option<String>,
        owner: Option<String>,
        warmup_concurrency: usize,
    }

    pub(crate) fn validate(&self) -> Result<(), PoolError> {
        if self.janitor_interval.is_zero() {
            return Err(PoolError::InvalidConfig {
                function: String::new(),
                field: "janitor_interval",
                reason: "must be more than zero".into(),
            });
        }
        if self.warmup_concurrency == 0 {
            return Err(PoolError::InvalidConfig {
                function: String::new(),
                field: "warmup_concurrency",
                reason: "must be at least 1".into(),
            });
        }
        if self.host_cap == Some(0) {
            return Err(PoolError::InvalidConfig {
                function: String::new(),
                field: "host_cap",
                reason: "must be at least 1".into(),
            });
        }
        for function in &self.functions {
            function.validate()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_over_max_names_function_and_field() {
        let config = FunctionPoolConfig::new(SandboxSpec::new("echo"))
            .max_capacity(2)
            .min_capacity(3);
        let err = config.validate().unwrap_err().to_string();
        assert!(
            err.contains("echo") && err.contains("min_capacity"),
            "{err}"
        );
    }

    #[test]
    fn zero_max_is_rejected() {
        let config = FunctionPoolConfig::new(SandboxSpec::new("echo")).max_capacity(0);
        assert!(matches!(
            config.validate(),
            Err(PoolError::InvalidConfig {
                field: "max_capacity",
                ..
            })
        ));
    }

    #[test]
    fn defaults_are_valid() {
        let config = PoolConfig::new([FunctionPoolConfig::new(SandboxSpec::new("echo"))]);
        assert!(config.validate().is_ok());
    }

    #[test]
    fn defaults_are_the_named_constants() {
        let f = FunctionPoolConfig::new(SandboxSpec::new("echo"));
        assert_eq!(
            (f.max_capacity, f.min_capacity, f.acquire_timeout),
            (
                DEFAULT_MAX_CAPACITY,
                DEFAULT_MIN_CAPACITY,
                DEFAULT_ACQUIRE_TIMEOUT
            )
        );
        assert_eq!(
            (f.idle_timeout, f.pause_idle),
            (DEFAULT_IDLE_TIMEOUT, DEFAULT_PAUSE_IDLE)
        );
        let pool = PoolConfig::default();
        assert_eq!(pool.janitor_interval, DEFAULT_JANITOR_INTERVAL);
        assert_eq!(pool.orphan_grace, DEFAULT_ORPHAN_GRACE);
        assert_eq!(
            pool.breaker,
            BreakerConfig::new(DEFAULT_FAILURE_THRESHOLD, DEFAULT_RECOVERY_TIME)
        );
    }

    #[test]
    fn a_zero_janitor_interval_or_host_cap_is_rejected() {
        let zero = PoolConfig::default().janitor_interval(Duration::ZERO);
        assert!(matches!(
            zero.validate(),
            Err(PoolError::InvalidConfig {
                field: "janitor_interval",
                ..
            })
        ));
        let no_room = PoolConfig::default().host_cap(Some(0));
        assert!(matches!(
            no_room.validate(),
            Err(PoolError::InvalidConfig {
                field: "host_cap",
                ..
            })
        ));
    }
}
