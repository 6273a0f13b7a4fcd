//! The pool over a set of runtimes that changes while it runs: runtimes added (hosts found
//! by DNS), drained (hosts gone from DNS) and declared down (hosts that stop answering).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use esb_pool::{FunctionPoolConfig, Invocation, Pool, PoolConfig, PoolError};
use esb_runtime::{Error as RuntimeError, InvokeRequest, SandboxSpec};
use support::advance;

fn config() -> PoolConfig {
    let function = FunctionPoolConfig::new(SandboxSpec::new("f"))
        .max_capacity(10)
        .acquire_timeout(Duration::from_secs(5))
        .pause_idle(None);
    PoolConfig::new([function]).janitor_interval(Duration::from_secs(1))
}

#[tokio::test(start_paused = true)]
async fn an_added_runtime_takes_new_sandboxes_and_a_drained_one_gives_its_own_up() {
    let (a, _, seen_a) = support::runtime("a");
    let (b, _, seen_b) = support::runtime("b");
    let pool = Pool::new(config(), vec![a]).unwrap();
    let first = pool.acquire("f").await.unwrap();
    assert_eq!(pool.add_runtime(b), 1);
    // The least-loaded runtime takes the next sandboxes: b, then a tie goes to the first.
    let second = pool.acquire("f").await.unwrap();
    let third = pool.acquire("f").await.unwrap();
    assert_eq!(seen_b.creates.load(Ordering::SeqCst), 1);
    assert_eq!(seen_a.creates.load(Ordering::SeqCst), 2);
    drop(third);
    advance(1).await;

    // Draining `a`: its idle sandbox goes now, its busy one when released; new ones go to b.
    pool.set_draining(0, true);
    advance(1).await;
    assert_eq!(seen_a.destroyed.lock().unwrap().len(), 1);
    drop(first);
    advance(1).await;
    assert_eq!(seen_a.destroyed.lock().unwrap().len(), 2);
    let fourth = pool.acquire("f").await.unwrap();
    let fifth = pool.acquire("f").await.unwrap();
    assert_eq!(seen_a.creates.load(Ordering::SeqCst), 2);
    assert_eq!(seen_b.creates.load(Ordering::SeqCst), 3);
    let status = pool.runtimes();
    assert!(status[0].draining && status[0].sandboxes == 0);
    assert_eq!(status[1].sandboxes, 3);
    drop((second, fourth, fifth));

    // Taken back, it is the least loaded again: once b's three idle sandboxes are leased,
    // the next new one goes to a.
    pool.set_draining(0, false);
    let mut leases = Vec::new();
    for _ in 0..4 {
        leases.push(pool.acquire("f").await.unwrap());
    }
    assert_eq!(seen_b.creates.load(Ordering::SeqCst), 3);
    assert_eq!(seen_a.creates.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_runtime_declared_down_ends_its_invocations_and_comes_back_when_up() {
    let (a, knobs_a, _) = support::runtime("a");
    let (b, _, seen_b) = support::runtime("b");
    let pool = Pool::new(config(), vec![a, b]).unwrap();
    // An invocation on `a` that would take a minute.
    knobs_a.invoke_delay_ms.store(60_000, Ordering::SeqCst);
    let in_flight = {
        let pool = pool.clone();
        tokio::spawn(async move {
            pool.invoke(Invocation::new("f", InvokeRequest::new("{}")))
                .await
        })
    };
    advance(10).await;
    assert!(!in_flight.is_finished());
    pool.runtime_down(0);
    advance(1).await;
    assert!(in_flight.is_finished(), "the invocation still hangs");
    let err = in_flight.await.unwrap().unwrap_err();
    assert!(
        matches!(err, PoolError::Runtime(RuntimeError::Unavailable(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("stopped answering"), "{err}");
    assert!(!pool.runtimes()[0].healthy);

    // New sandboxes go to b while a is down.
    knobs_a.invoke_delay_ms.store(0, Ordering::SeqCst);
    let _one = pool.acquire("f").await.unwrap();
    let _two = pool.acquire("f").await.unwrap();
    assert_eq!(seen_b.creates.load(Ordering::SeqCst), 2);
    pool.runtime_up(0);
    assert!(pool.runtimes()[0].healthy);
    let _three = pool.acquire("f").await.unwrap();
    assert_eq!(pool.runtimes()[0].sandboxes, 1);
}

#[tokio::test(start_paused = true)]
async fn a_runtime_declared_down_between_lease_and_call_ends_the_call() {
    let (a, knobs_a, _) = support::runtime("a");
    let pool = Pool::new(config(), vec![a]).unwrap();
    // An invocation on `a` would take a minute.
    knobs_a.invoke_delay_ms.store(60_000, Ordering::SeqCst);
    let mut lease = pool.acquire("f").await.unwrap();
    // Declared down after the lease was taken, before the call.
    pool.runtime_down(0);
    let call = tokio::spawn(async move { lease.invoke(InvokeRequest::new("{}")).await });
    advance(1).await;
    assert!(
        call.is_finished(),
        "the call waits for a runtime declared down"
    );
    let err = call.await.unwrap().unwrap_err();
    assert!(
        matches!(err, PoolError::Runtime(RuntimeError::Unavailable(_))),
        "{err:?}"
    );
    assert!(err.to_string().contains("stopped answering"), "{err}");
}
