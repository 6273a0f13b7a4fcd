//! The pool over a mocked `Runtime`, with a paused clock so waits and timeouts are exact.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use esb_pool::{
    BreakerConfig, BreakerState, FunctionPoolConfig, Invocation, Pool, PoolConfig, PoolError,
    PoolLayer, RuntimeInvoker, SandboxCall,
};
use esb_runtime::{Error as RuntimeError, InvokeRequest, Runtime, SandboxId, SandboxSpec};
use support::advance;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};

fn function(name: &str, max: usize) -> FunctionPoolConfig {
    FunctionPoolConfig::new(SandboxSpec::new(name))
        .max_capacity(max)
        .acquire_timeout(Duration::from_secs(60))
        .idle_timeout(Duration::from_secs(300))
        .pause_idle(None)
}

fn config(functions: Vec<FunctionPoolConfig>) -> PoolConfig {
    PoolConfig::new(functions).janitor_interval(Duration::from_secs(1))
}

fn invocation(function: &str) -> Invocation {
    Invocation::new(function, InvokeRequest::new("{}"))
}

fn count(n: &AtomicUsize) -> usize {
    n.load(Ordering::SeqCst)
}

#[tokio::test(start_paused = true)]
async fn max_capacity_is_never_exceeded_under_1000_concurrent_invocations() {
    let (runtime, knobs, seen) = support::runtime("a");
    knobs.create_delay_ms.store(50, Ordering::SeqCst);
    knobs.invoke_delay_ms.store(10, Ordering::SeqCst);
    let pool = Pool::new(config(vec![function("f", 8)]), vec![runtime]).unwrap();

    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { pool.invoke(invocation("f")).await })
        })
        .collect();
    let mut max_total = 0;
    while !tasks.iter().all(|t| t.is_finished()) {
        max_total = max_total.max(pool.stats("f").unwrap().total());
        advance(1).await;
    }
    let mut cold = 0;
    for task in tasks {
        let answer = task.await.unwrap().expect("every invocation is answered");
        cold += usize::from(answer.cold_start);
    }
    assert!(count(&seen.max_live) <= 8, "{} live", count(&seen.max_live));
    assert!(count(&seen.max_invoking) <= 8);
    assert!(max_total <= 8, "pool counted {max_total}");
    assert_eq!(count(&seen.creates), 8, "warm sandboxes are reused");
    assert_eq!(cold, 8);
    assert_eq!(count(&seen.invokes), 1000);
}

#[tokio::test(start_paused = true)]
async fn waiters_are_served_in_arrival_order() {
    let (runtime, _knobs, _seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 1)]), vec![runtime]).unwrap();
    let held = pool.acquire("f").await.unwrap();
    let order = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..5 {
        let (pool, order) = (pool.clone(), order.clone());
        tasks.push(tokio::spawn(async move {
            let lease = pool.acquire("f").await.unwrap();
            order.lock().unwrap().push(i);
            advance(5).await;
            drop(lease);
        }));
        advance(1).await;
    }
    assert_eq!(pool.stats("f").unwrap().waiting, 5);
    drop(held);
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(*order.lock().unwrap(), vec![0, 1, 2, 3, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_queued_request_is_throttled_exactly_at_acquire_timeout() {
    let (runtime, _knobs, _seen) = support::runtime("a");
    let f = function("f", 1).acquire_timeout(Duration::from_secs(2));
    let pool = Pool::new(config(vec![f]), vec![runtime]).unwrap();
    let _held = pool.acquire("f").await.unwrap();
    let start = Instant::now();
    let waiter = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("f").await.map(drop) })
    };
    advance(1999).await;
    assert!(
        !waiter.is_finished(),
        "still queued 1 ms before the timeout"
    );
    let result = waiter.await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(2));
    match result {
        Err(PoolError::Throttled { function, waited }) => {
            assert_eq!(function, "f");
            assert_eq!(waited, Duration::from_secs(2));
        }
        other => panic!("expected Throttled, got {other:?}"),
    }
    assert_eq!(pool.stats("f").unwrap().waiting, 0);
}

#[tokio::test(start_paused = true)]
async fn min_capacity_is_created_at_start_kept_when_idle_and_replaced_when_lost() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let f = function("f", 4)
        .min_capacity(2)
        .idle_timeout(Duration::from_secs(10));
    let pool = Pool::new(config(vec![f]), vec![runtime]).unwrap();
    advance(10).await;
    assert_eq!(count(&seen.creates), 2);
    assert_eq!(pool.stats("f").unwrap().idle, 2);

    advance(30_000).await;
    assert_eq!(
        count(&seen.creates),
        2,
        "min sandboxes survive idle_timeout"
    );
    assert!(seen.destroyed.lock().unwrap().is_empty());

    // One sandbox crashes: the runtime no longer lists it.
    let crashed = seen.alive.lock().unwrap().remove(0);
    seen.live.fetch_sub(1, Ordering::SeqCst);
    advance(1_500).await;
    assert!(seen.destroyed.lock().unwrap().contains(&crashed.id));
    assert_eq!(count(&seen.creates), 3, "the lost sandbox is replaced");
    assert_eq!(pool.stats("f").unwrap().idle, 2);
}

#[tokio::test(start_paused = true)]
async fn idle_sandboxes_are_destroyed_after_idle_timeout() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let f = function("f", 4).idle_timeout(Duration::from_secs(10));
    let pool = Pool::new(config(vec![f]), vec![runtime]).unwrap();
    pool.invoke(invocation("f")).await.unwrap();
    advance(9_000).await;
    assert!(seen.destroyed.lock().unwrap().is_empty());
    assert_eq!(pool.stats("f").unwrap().idle, 1);
    advance(2_000).await;
    assert_eq!(seen.destroyed.lock().unwrap().len(), 1);
    assert_eq!(pool.stats("f").unwrap().total(), 0);
    assert_eq!(count(&seen.live), 0);
}

#[tokio::test(start_paused = true)]
async fn an_idle_sandbox_is_frozen_after_pause_idle_and_thawed_on_acquire() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let f = function("f", 4).pause_idle(Some(Duration::from_secs(2)));
    let pool = Pool::new(config(vec![f]), vec![runtime]).unwrap();
    let first = pool.invoke(invocation("f")).await.unwrap();
    advance(1_500).await;
    assert_eq!(count(&seen.pauses), 0);
    advance(1_000).await;
    assert_eq!(count(&seen.pauses), 1);
    let stats = pool.stats("f").unwrap();
    assert_eq!((stats.paused, stats.idle), (1, 0));

    let second = pool.invoke(invocation("f")).await.unwrap();
    assert_eq!(count(&seen.resumes), 1);
    assert_eq!(second.sandbox_id, first.sandbox_id);
    assert!(!second.cold_start);
    assert_eq!(count(&seen.creates), 1);
}

#[tokio::test(start_paused = true)]
async fn reconcile_destroys_old_orphans_of_this_pool_only() {
    let (runtime, knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 4)]), vec![runtime]).unwrap();
    *knobs.listing.lock().unwrap() = Some(vec![
        support::info("old-orphan", "f", SystemTime::UNIX_EPOCH),
        support::info("young-orphan", "f", SystemTime::now()),
        support::info("someone-elses", "other", SystemTime::UNIX_EPOCH),
    ]);
    pool.run_janitor().await;
    assert_eq!(
        *seen.destroyed.lock().unwrap(),
        vec![SandboxId::new("old-orphan")]
    );
}

#[tokio::test(start_paused = true)]
async fn breaker_opens_fails_fast_and_closes_after_a_good_probe() {
    let (runtime, knobs, seen) = support::runtime("a");
    let mut cfg = config(vec![function("f", 4)]);
    cfg.breaker = BreakerConfig::new(2, Duration::from_secs(10));
    let pool = Pool::new(cfg, vec![runtime]).unwrap();
    knobs.fail_create.store(true, Ordering::SeqCst);
    for _ in 0..2 {
        let err = pool.invoke(invocation("f")).await.unwrap_err();
        assert!(matches!(err, PoolError::Create { .. }), "{err:?}");
    }
    assert_eq!(pool.stats("f").unwrap().breaker, BreakerState::Open);
    let err = pool.invoke(invocation("f")).await.unwrap_err();
    assert!(matches!(err, PoolError::CircuitOpen { .. }), "{err:?}");
    assert_eq!(count(&seen.create_calls), 2, "no create while open");

    knobs.fail_create.store(false, Ordering::SeqCst);
    knobs.create_delay_ms.store(100, Ordering::SeqCst);
    advance(10_000).await;
    let probe = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(invocation("f")).await })
    };
    advance(10).await;
    assert_eq!(pool.stats("f").unwrap().breaker, BreakerState::HalfOpen);
    let err = pool.invoke(invocation("f")).await.unwrap_err();
    assert!(
        matches!(err, PoolError::CircuitOpen { .. }),
        "one probe at a time"
    );
    probe.await.unwrap().expect("the probe succeeds");
    assert_eq!(pool.stats("f").unwrap().breaker, BreakerState::Closed);
    pool.invoke(invocation("f")).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_functions_own_breaker_wins_over_the_pools() {
    let (runtime, knobs, _) = support::runtime("a");
    let own = function("own", 4).breaker(Some(BreakerConfig::new(1, Duration::from_secs(2))));
    let mut cfg = config(vec![own, function("pooled", 4)]);
    cfg.breaker = BreakerConfig::new(3, Duration::from_secs(60));
    let pool = Pool::new(cfg, vec![runtime]).unwrap();
    knobs.fail_create.store(true, Ordering::SeqCst);

    pool.invoke(invocation("own")).await.unwrap_err();
    assert_eq!(pool.stats("own").unwrap().breaker, BreakerState::Open);
    for _ in 0..2 {
        pool.invoke(invocation("pooled")).await.unwrap_err();
    }
    assert_eq!(pool.stats("pooled").unwrap().breaker, BreakerState::Closed);
    pool.invoke(invocation("pooled")).await.unwrap_err();
    assert_eq!(pool.stats("pooled").unwrap().breaker, BreakerState::Open);

    // The function's own open time (2 s), not the pool's (60 s).
    knobs.fail_create.store(false, Ordering::SeqCst);
    advance(2_000).await;
    pool.invoke(invocation("own")).await.unwrap();
    assert_eq!(pool.stats("own").unwrap().breaker, BreakerState::Closed);
    let err = pool.invoke(invocation("pooled")).await.unwrap_err();
    assert!(matches!(err, PoolError::CircuitOpen { .. }), "{err:?}");
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_the_breaker() {
    let (runtime, knobs, seen) = support::runtime("a");
    let mut cfg = config(vec![function("f", 4)]);
    cfg.breaker = BreakerConfig::new(1, Duration::from_secs(10));
    let pool = Pool::new(cfg, vec![runtime]).unwrap();
    knobs.fail_create.store(true, Ordering::SeqCst);
    pool.invoke(invocation("f")).await.unwrap_err();
    advance(10_000).await;
    let err = pool.invoke(invocation("f")).await.unwrap_err();
    assert!(
        matches!(err, PoolError::Create { .. }),
        "the probe ran: {err:?}"
    );
    assert_eq!(pool.stats("f").unwrap().breaker, BreakerState::Open);
    let err = pool.invoke(invocation("f")).await.unwrap_err();
    assert!(matches!(err, PoolError::CircuitOpen { .. }));
    assert_eq!(count(&seen.create_calls), 2);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_mid_create_leaks_nothing_and_its_sandbox_serves_the_next() {
    let (runtime, knobs, seen) = support::runtime("a");
    knobs.create_delay_ms.store(5_000, Ordering::SeqCst);
    let pool = Pool::new(config(vec![function("f", 1)]), vec![runtime]).unwrap();
    let leaving = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(invocation("f")).await })
    };
    advance(1_000).await;
    let waiting = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(invocation("f")).await })
    };
    advance(10).await;
    assert_eq!(pool.stats("f").unwrap().waiting, 1);
    leaving.abort();
    advance(10).await;
    assert_eq!(pool.stats("f").unwrap().creating, 1, "the create goes on");

    let answer = waiting
        .await
        .unwrap()
        .expect("the waiter gets the new sandbox");
    assert!(answer.cold_start);
    assert_eq!(count(&seen.creates), 1);
    let stats = pool.stats("f").unwrap();
    assert_eq!(
        (stats.idle, stats.busy, stats.creating, stats.waiting),
        (1, 0, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_leaves_the_queue_leaks_nothing() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 1)]), vec![runtime]).unwrap();
    let mut held = pool.acquire("f").await.unwrap();
    held.invoke(InvokeRequest::new("{}")).await.unwrap();
    let leaving = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("f").await.map(drop) })
    };
    advance(10).await;
    assert_eq!(pool.stats("f").unwrap().waiting, 1);
    leaving.abort();
    advance(10).await;
    assert_eq!(pool.stats("f").unwrap().waiting, 0);
    drop(held);
    let stats = pool.stats("f").unwrap();
    assert_eq!((stats.idle, stats.busy), (1, 0));
    let lease = pool.acquire("f").await.unwrap();
    assert!(!lease.cold_start());
    assert_eq!(count(&seen.creates), 1);
}

#[tokio::test(start_paused = true)]
async fn a_failed_create_frees_its_slot_for_a_waiter() {
    let (runtime, knobs, seen) = support::runtime("a");
    knobs.create_delay_ms.store(1_000, Ordering::SeqCst);
    knobs.fail_create.store(true, Ordering::SeqCst);
    let pool = Pool::new(config(vec![function("f", 1)]), vec![runtime]).unwrap();
    let first = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(invocation("f")).await })
    };
    advance(10).await;
    let second = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(invocation("f")).await })
    };
    // The first create fails at 1 s; the waiter's create starts then and reads the knob at 2 s.
    advance(1_500).await;
    knobs.fail_create.store(false, Ordering::SeqCst);
    let first = first.await.unwrap();
    assert!(matches!(first, Err(PoolError::Create { .. })), "{first:?}");
    let second = second
        .await
        .unwrap()
        .expect("the waiter creates its own sandbox");
    assert!(second.cold_start);
    assert_eq!(count(&seen.create_calls), 2);
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_lost_mid_invocation_is_removed_and_the_caller_told() {
    let (runtime, knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 2)]), vec![runtime]).unwrap();
    knobs.invoke_error.store(1, Ordering::SeqCst);
    let err = pool.invoke(invocation("f")).await.unwrap_err();
    assert!(
        matches!(err, PoolError::Runtime(RuntimeError::SandboxLost { .. })),
        "{err:?}"
    );
    advance(10).await;
    assert_eq!(seen.destroyed.lock().unwrap().len(), 1);
    assert_eq!(pool.stats("f").unwrap().total(), 0);
    knobs.invoke_error.store(0, Ordering::SeqCst);
    let answer = pool.invoke(invocation("f")).await.unwrap();
    assert!(answer.cold_start);
    assert_eq!(count(&seen.creates), 2);
}

#[tokio::test(start_paused = true)]
async fn new_sandboxes_go_to_the_least_loaded_healthy_runtime() {
    let (a, a_knobs, a_seen) = support::runtime("a");
    let (b, _b_knobs, b_seen) = support::runtime("b");
    let mut cfg = config(vec![function("f", 4)]);
    cfg.janitor_interval = Duration::from_secs(3600);
    let pool = Pool::new(cfg, vec![a, b]).unwrap();
    a_knobs.invoke_delay_ms.store(100, Ordering::SeqCst);
    let batch = |pool: &Pool| {
        (0..4)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move { pool.invoke(invocation("f")).await })
            })
            .collect::<Vec<_>>()
    };
    for task in batch(&pool) {
        task.await.unwrap().unwrap();
    }
    assert_eq!((count(&a_seen.creates), count(&b_seen.creates)), (2, 2));

    // Runtime a becomes unreachable: the first call that lands on it marks it unhealthy.
    a_knobs.invoke_error.store(2, Ordering::SeqCst);
    let mut unavailable = 0;
    for _ in 0..4 {
        if let Err(PoolError::Runtime(RuntimeError::Unavailable(_))) =
            pool.invoke(invocation("f")).await
        {
            unavailable += 1;
        }
    }
    assert_eq!(unavailable, 1, "a's other sandbox was dropped with it");
    for task in batch(&pool) {
        task.await.unwrap().unwrap();
    }
    assert_eq!(
        count(&a_seen.creates),
        2,
        "nothing new on the unhealthy runtime"
    );
    assert_eq!(count(&b_seen.creates), 4);
}

#[tokio::test(start_paused = true)]
async fn a_full_host_evicts_the_least_recently_used_idle_sandbox_of_another_function() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let mut cfg = config(vec![function("f", 2), function("g", 2)]);
    cfg.host_cap = Some(2);
    let pool = Pool::new(cfg, vec![runtime]).unwrap();
    let (x, y) = (
        pool.acquire("f").await.unwrap(),
        pool.acquire("f").await.unwrap(),
    );
    let lru = x.id().clone();
    drop(x);
    advance(5).await;
    drop(y);
    let answer = pool.invoke(invocation("g")).await.unwrap();
    assert!(answer.cold_start);
    assert_eq!(*seen.destroyed.lock().unwrap(), vec![lru]);
    assert!(count(&seen.max_live) <= 2);
}

#[tokio::test(start_paused = true)]
async fn the_pool_is_a_service_and_a_layer() {
    let (runtime, _knobs, _seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 2)]), vec![runtime]).unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let inner = {
        let calls = calls.clone();
        tower::service_fn(move |call: SandboxCall| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { call.runtime.invoke(&call.sandbox_id, call.request).await }
        })
    };
    let service = PoolLayer::new(pool.clone()).layer(inner);
    let first = service.clone().oneshot(invocation("f")).await.unwrap();
    let second = service.oneshot(invocation("f")).await.unwrap();
    assert!(first.cold_start && !second.cold_start);
    assert_eq!(first.sandbox_id, second.sandbox_id);
    assert_eq!(count(&calls), 2);

    let direct = pool.clone().oneshot(invocation("f")).await.unwrap();
    assert_eq!(direct.sandbox_id, first.sandbox_id);
    let err = pool.oneshot(invocation("nope")).await.unwrap_err();
    assert!(matches!(err, PoolError::UnknownFunction(name) if name == "nope"));
}

#[tokio::test(start_paused = true)]
async fn functions_can_be_registered_at_runtime_and_shutdown_destroys_idle() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![]), vec![runtime]).unwrap();
    pool.register(function("late", 2).min_capacity(1)).unwrap();
    assert!(matches!(
        pool.register(function("late", 2)),
        Err(PoolError::AlreadyRegistered(_))
    ));
    advance(10).await;
    assert_eq!(pool.stats("late").unwrap().idle, 1);
    pool.shutdown().await;
    assert_eq!(count(&seen.live), 0);
    assert!(matches!(
        pool.invoke(invocation("late")).await,
        Err(PoolError::Shutdown)
    ));
}

#[test]
fn a_pool_needs_a_runtime_and_a_valid_config() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let err = Pool::new(
            config(vec![function("f", 1)]),
            Vec::<Arc<dyn Runtime>>::new(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            PoolError::InvalidConfig {
                field: "runtimes",
                ..
            }
        ));
        let (runtime, _, _) = support::runtime("a");
        let err = Pool::new(
            config(vec![function("f", 1), function("f", 2)]),
            vec![runtime],
        )
        .unwrap_err();
        assert!(matches!(err, PoolError::AlreadyRegistered(_)));
    });
}

#[tokio::test(start_paused = true)]
async fn a_leased_sandbox_that_vanishes_is_destroyed_when_released() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 2)]), vec![runtime]).unwrap();
    let lease = pool.acquire("f").await.unwrap();
    let id = lease.id().clone();
    advance(10).await;
    seen.alive.lock().unwrap().clear();
    seen.live.store(0, Ordering::SeqCst);
    pool.run_janitor().await;
    pool.run_janitor().await;
    assert!(
        seen.destroyed.lock().unwrap().is_empty(),
        "not destroyed under its caller"
    );
    drop(lease);
    advance(10).await;
    assert_eq!(*seen.destroyed.lock().unwrap(), vec![id]);
    assert_eq!(pool.stats("f").unwrap().total(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_tower_timeout_between_pool_and_runtime_cuts_the_call_and_drops_its_sandbox() {
    let (runtime, knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 2)]), vec![runtime]).unwrap();
    let service = tower::ServiceBuilder::new()
        .layer(PoolLayer::new(pool.clone()))
        .layer(tower::timeout::TimeoutLayer::new(Duration::from_secs(1)))
        .service(RuntimeInvoker);

    knobs.invoke_delay_ms.store(5_000, Ordering::SeqCst);
    let started = Instant::now();
    let err = service.clone().oneshot(invocation("f")).await.unwrap_err();
    assert_eq!(started.elapsed(), Duration::from_secs(1));
    match &err {
        PoolError::Inner { function, source } => {
            assert_eq!(function, "f");
            assert!(source.is::<tower::timeout::error::Elapsed>(), "{source:?}");
        }
        other => panic!("expected the timeout, got {other:?}"),
    }
    advance(10).await;
    assert_eq!(
        seen.destroyed.lock().unwrap().len(),
        1,
        "a sandbox cut mid-invocation is not reused"
    );
    assert_eq!(pool.stats("f").unwrap().total(), 0);

    knobs.invoke_delay_ms.store(0, Ordering::SeqCst);
    knobs.invoke_error.store(1, Ordering::SeqCst);
    let err = service.clone().oneshot(invocation("f")).await.unwrap_err();
    assert!(
        matches!(err, PoolError::Runtime(RuntimeError::SandboxLost { .. })),
        "a runtime error keeps its type through the layer: {err:?}"
    );

    knobs.invoke_error.store(0, Ordering::SeqCst);
    let answer = service.oneshot(invocation("f")).await.unwrap();
    assert!(answer.cold_start);
    assert_eq!(count(&seen.creates), 3);
}

#[tokio::test(start_paused = true)]
async fn a_sandbox_granted_to_a_waiter_that_leaves_before_taking_it_returns_to_the_pool() {
    let (runtime, _knobs, seen) = support::runtime("a");
    let pool = Pool::new(config(vec![function("f", 1)]), vec![runtime]).unwrap();
    let held = pool.acquire("f").await.unwrap();
    let leaving = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.acquire("f").await.map(drop) })
    };
    advance(10).await;
    assert_eq!(pool.stats("f").unwrap().waiting, 1);
    // The sandbox goes to the waiter's channel; the waiter leaves before it runs again.
    drop(held);
    assert_eq!(pool.stats("f").unwrap().busy, 1);
    leaving.abort();
    advance(10).await;
    let stats = pool.stats("f").unwrap();
    assert_eq!((stats.idle, stats.busy, stats.waiting), (1, 0, 0));
    let lease = pool.acquire("f").await.unwrap();
    assert_eq!(count(&seen.creates), 1);
    drop(lease);
}

#[tokio::test(start_paused = true)]
async fn min_capacity_is_created_a_few_at_a_time_and_a_cold_start_does_not_wait_behind_it() {
    let (runtime, knobs, seen) = support::runtime("a");
    knobs.create_delay_ms.store(1000, Ordering::SeqCst);
    let pool = Pool::new(
        config(vec![function("f", 41).min_capacity(40)]).warmup_concurrency(4),
        vec![runtime],
    )
    .unwrap();
    // Creations under way = calls begun - calls ended.
    let creating = || count(&seen.create_calls) - count(&seen.creates);
    let invocation = {
        let pool = pool.clone();
        tokio::spawn(async move { pool.invoke(invocation("f")).await })
    };
    let mut most = 0;
    while !invocation.is_finished() {
        most = most.max(creating());
        advance(1).await;
    }
    let answer = invocation.await.unwrap().unwrap();
    assert!(answer.cold_start, "its own sandbox, created for it");
    // Answered while the warm-up had only begun: it took no turn among them.
    let warm = count(&seen.creates) - 1;
    assert!(
        warm < 40,
        "the cold start was answered after the whole warm-up ({warm} created)"
    );
    while pool.stats("f").unwrap().idle < 41 {
        most = most.max(creating());
        advance(1).await;
    }
    // Four warm-up creations at a time, and the request's own.
    assert_eq!(most, 5, "creations at once");
    assert_eq!(count(&seen.creates), 41);
}

#[tokio::test]
async fn a_warmup_concurrency_of_zero_is_refused() {
    let (runtime, _knobs, _seen) = support::runtime("a");
    let err = Pool::new(config(vec![]).warmup_concurrency(0), vec![runtime]).unwrap_err();
    assert!(err.to_string().contains("warmup_concurrency"), "{err}");
}
