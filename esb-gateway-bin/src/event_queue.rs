//! Asynchronous (`Event`) invocations as Lambda runs them: a bounded queue, retries after
//! function errors (Lambda's 1 then 2 minutes by default) and after throttles (exponential
//! backoff), each function's `MaximumRetryAttempts` and `MaximumEventAgeInSeconds`, and no
//! event dropped without a WARN log naming its function and request id, and a count.
//!
//! | name | kind | labels | meaning |
//! |---|---|---|---|
//! | `esb_gateway_event_queue_depth` | gauge | | events held: waiting for a sandbox, running or waiting for a retry |
//! | `esb_gateway_event_retries_total` | counter | `function`, `cause` = `function_error` / `throttled` | attempts after the first |
//! | `esb_gateway_events_dropped_total` | counter | `function`, `reason` | events given up (see [`DropReason`]) |

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use esb_pool::{Invocation, PoolError, PoolResponse};
use esb_router::EventInvoke;
use esb_runtime::{InvokeRequest, InvokeResult};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::config::EventRetry;
use crate::error::RequestError;

/// Why an event was given up, as the `reason` label of `esb_gateway_events_dropped_total`
/// says it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DropReason {
    /// It failed its first attempt and every retry (`MaximumRetryAttempts`).
    RetriesExhausted,
    /// It would be older than `MaximumEventAgeInSeconds` at its next attempt.
    MaxEventAge,
    /// It failed in a way a retry cannot mend (e.g. the function is not configured).
    NotRetryable,
    /// The queue was full: it was refused with 429 and never held.
    QueueFull,
    /// The gateway shut down while it waited.
    Shutdown,
}

impl DropReason {
    /// The label value.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            DropReason::RetriesExhausted => "retries_exhausted",
            DropReason::MaxEventAge => "max_event_age",
            DropReason::NotRetryable => "not_retryable",
            DropReason::QueueFull => "queue_full",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// The queue of asynchronous invocations, shared by the Invoke API and the gateway's shutdown.
pub(crate) struct EventQueue {
    /// One permit per event held; `capacity` in all.
    held: Arc<Semaphore>,
    capacity: u32,
    retry: EventRetry,
    /// Each function's `EventInvokeConfig`; Lambda's defaults for one not listed.
    functions: HashMap<String, EventInvoke>,
    stop: watch::Sender<bool>,
}

/// How one attempt ended.
enum Attempt {
    /// The function answered without an error.
    Done,
    /// The function failed: its own error, a timeout, a crash or a failed init (retried
    /// `MaximumRetryAttempts` times).
    FunctionError(String),
    /// No sandbox could run it now: throttled, breaker open, no agent (retried with backoff
    /// while the event is young enough).
    Throttled(String),
    /// A failure a retry cannot mend.
    Fatal(String, DropReason),
}

/// An event's place in the queue: the permit, and the depth gauge while it is held.
struct Held {
    _permit: OwnedSemaphorePermit,
}

impl Held {
    fn new(permit: OwnedSemaphorePermit) -> Self {
        metrics::gauge!("esb_gateway_event_queue_depth").increment(1.0);
        Self { _permit: permit }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        metrics::gauge!("esb_gateway_event_queue_depth").decrement(1.0);
    }
}

impl EventQueue {
    /// A queue holding at most `capacity` events, retrying as `retry` says, with each
    /// function's `EventInvokeConfig`.
    pub fn new(
        capacity: usize,
        retry: EventRetry,
        functions: impl IntoIterator<Item = (String, EventInvoke)>,
    ) -> Arc<Self> {
        let capacity = u32::try_from(capacity.min(Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        Arc::new(Self {
            held: Arc::new(Semaphore::new(capacity as usize)),
            capacity,
            retry,
            functions: functions.into_iter().collect(),
            stop: watch::channel(false).0,
        })
    }

    /// Events held now.
    pub fn depth(&self) -> usize {
        (self.capacity as usize).saturating_sub(self.held.available_permits())
    }

    /// Takes `request` for `function`, to be run in the background by `invoker`; 429
    /// (`EventQueueFull`) when the queue is full.
    pub fn enqueue<I>(
        self: &Arc<Self>,
        invoker: I,
        function: String,
        request: InvokeRequest,
    ) -> Result<(), RequestError>
    where
        I: Service<Invocation, Response = PoolResponse, Error = RequestError>
            + Clone
            + Send
            + 'static,
        I::Future: Send + 'static,
    {
        let permit = match Arc::clone(&self.held).try_acquire_owned() {
            Ok(permit) if !*self.stop.borrow() => permit,
            refused => {
                let (reason, why) = match refused {
                    Ok(_) => (DropReason::Shutdown, "the gateway is shutting down"),
                    Err(_) => (DropReason::QueueFull, "the event queue is full"),
                };
                dropped(&function, &request.request_id, reason, why);
                return Err(RequestError::EventQueueFull(function));
            }
        };
        let held = Held::new(permit);
        let queue = Arc::clone(self);
        tokio::spawn(async move {
            queue.run(invoker, function, request).await;
            drop(held);
        });
        Ok(())
    }

    /// Stops the retries: events waiting for one are dropped (and logged); then waits up to
    /// `grace` for the attempts running now.
    pub async fn shutdown(&self, grace: Duration) {
        self.stop.send_replace(true);
        let all = self.held.acquire_many(self.capacity);
        if tokio::time::timeout(grace, all).await.is_err() {
            tracing::warn!(
                events = self.depth(),
                "asynchronous invocations still running at shutdown"
            );
        }
    }

    /// Runs one event until it succeeds or is given up.
    async fn run<I>(&self, invoker: I, function: String, request: InvokeRequest)
    where
        I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone,
    {
        let settings = self.functions.get(&function).copied().unwrap_or_default();
        let expires = Instant::now() + settings.maximum_event_age;
        let mut stopped = self.stop.subscribe();
        let (mut retries, mut throttles) = (0u32, 0u32);
        let request_id = request.request_id.clone();
        loop {
            let invocation = Invocation::new(function.clone(), request.clone());
            let (wait, cause, why) = match attempt(invoker.clone(), invocation).await {
                Attempt::Done => return,
                Attempt::FunctionError(why) => {
                    if retries >= settings.maximum_retry_attempts {
                        let why = format!(
                            "{why} (attempt {} of {})",
                            retries + 1,
                            settings.maximum_retry_attempts + 1
                        );
                        dropped(&function, &request_id, DropReason::RetriesExhausted, &why);
                        return;
                    }
                    retries += 1;
                    (self.retry.delay(retries), "function_error", why)
                }
                Attempt::Throttled(why) => {
                    throttles = throttles.saturating_add(1);
                    (self.retry.backoff_delay(throttles), "throttled", why)
                }
                Attempt::Fatal(why, reason) => {
                    dropped(&function, &request_id, reason, &why);
                    return;
                }
            };
            if Instant::now() + wait >= expires {
                let why = format!(
                    "{why}; the next attempt would come after its maximum age of {} s",
                    settings.maximum_event_age.as_secs()
                );
                dropped(&function, &request_id, DropReason::MaxEventAge, &why);
                return;
            }
            tracing::info!(
                %function,
                request_id = %request_id,
                error = %why,
                retry_in_ms = wait.as_millis() as u64,
                "asynchronous invocation failed; retrying"
            );
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stopped.wait_for(|stop| *stop) => {
                    dropped(&function, &request_id, DropReason::Shutdown, &why);
                    return;
                }
            }
            metrics::counter!(
                "esb_gateway_event_retries_total",
                "function" => function.clone(),
                "cause" => cause
            )
            .increment(1);
        }
    }
}

/// Runs one attempt and sorts its outcome.
async fn attempt<I>(invoker: I, invocation: Invocation) -> Attempt
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError>,
{
    match invoker.oneshot(invocation).await {
        Ok(answer) => match &answer.response.result {
            InvokeResult::FunctionError(err) => {
                Attempt::FunctionError(format!("{}: {}", err.error_type, err.error_message))
            }
            _ => Attempt::Done,
        },
        Err(RequestError::Pool(PoolError::Runtime(err))) if err.is_sandbox_fatal() => {
            Attempt::FunctionError(format!("{}: {err}", err.lambda_error_type()))
        }
        Err(
            err @ (RequestError::Pool(PoolError::UnknownFunction(_))
            | RequestError::Pool(PoolError::InvalidConfig { .. })
            | RequestError::Pool(PoolError::Runtime(esb_runtime::Error::PayloadTooLarge {
                ..
            }))),
        ) => Attempt::Fatal(err.to_string(), DropReason::NotRetryable),
        Err(err @ RequestError::Pool(PoolError::Shutdown)) => {
            Attempt::Fatal(err.to_string(), DropReason::Shutdown)
        }
        // Throttled, breaker open, no capacity, no agent, the gateway's own deadline: as
        // Lambda does for throttles and system errors.
        Err(err) => Attempt::Throttled(err.to_string()),
    }
}

/// Logs and counts an event given up.
fn dropped(function: &str, request_id: &str, reason: DropReason, why: &str) {
    tracing::warn!(
        %function,
        %request_id,
        reason = reason.as_str(),
        error = why,
        "asynchronous invocation dropped"
    );
    metrics::counter!(
        "esb_gateway_events_dropped_total",
        "function" => function.to_owned(),
        "reason" => reason.as_str()
    )
    .increment(1);
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Mutex;

    use bytes::Bytes;
    use esb_runtime::{FunctionError, InvokeResponse};

    use super::*;

    /// What the fake function does on each attempt, in order; then it succeeds.
    #[derive(Clone, Copy, Debug)]
    enum Step {
        Fail,
        Throttle,
        Ok,
    }

    /// A fake invocation service that records when each attempt came.
    #[derive(Clone)]
    struct Fake {
        steps: Arc<Mutex<Vec<Step>>>,
        started: Instant,
        calls: Arc<Mutex<Vec<Duration>>>,
    }

    impl Fake {
        fn new(steps: &[Step]) -> Self {
            Self {
                steps: Arc::new(Mutex::new(steps.iter().rev().copied().collect())),
                started: Instant::now(),
                calls: Arc::default(),
            }
        }

        /// Seconds after the start at which each attempt came.
        fn calls(&self) -> Vec<u64> {
            let calls = self.calls.lock().unwrap();
            calls.iter().map(Duration::as_secs).collect()
        }
    }

    impl Service<Invocation> for Fake {
        type Response = PoolResponse;
        type Error = RequestError;
        type Future = std::future::Ready<Result<PoolResponse, RequestError>>;

        fn poll_ready(
            &mut self,
            _cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Result<(), RequestError>> {
            std::task::Poll::Ready(Ok(()))
        }

        fn call(&mut self, _invocation: Invocation) -> Self::Future {
            self.calls.lock().unwrap().push(self.started.elapsed());
            let step = self.steps.lock().unwrap().pop().unwrap_or(Step::Ok);
            let result = match step {
                Step::Ok => InvokeResult::Success(Bytes::from_static(b"{}")),
                Step::Fail => InvokeResult::FunctionError(FunctionError {
                    error_type: "Oops".into(),
                    error_message: "no".into(),
                    payload: Bytes::new(),
                }),
                Step::Throttle => {
                    return std::future::ready(Err(RequestError::Pool(PoolError::Throttled {
                        function: "f".into(),
                        waited: Duration::from_secs(5),
                    })));
                }
            };
            let response = InvokeResponse {
                result,
                duration: Duration::from_millis(1),
                billed_duration: Duration::from_millis(1),
                max_memory_used_mb: 1,
                init_duration: None,
                log_tail: None,
            };
            std::future::ready(Ok(PoolResponse::new(
                response,
                false,
                esb_runtime::SandboxId::new("fake"),
            )))
        }
    }

    /// A queue of function `f` with these settings and Lambda's delays.
    fn queue(event_invoke: EventInvoke) -> Arc<EventQueue> {
        crate::metrics::recorder();
        EventQueue::new(4, EventRetry::default(), [("f".to_owned(), event_invoke)])
    }

    /// Lets the queue run until it holds no event.
    async fn drain(queue: &EventQueue) {
        while queue.depth() > 0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn request(id: &str) -> InvokeRequest {
        let mut request = InvokeRequest::new(Bytes::from_static(b"{}"));
        request.request_id = id.into();
        request
    }

    /// The value of a counter in the recorder's text, 0 when absent.
    fn counter(name: &str, labels: &str) -> u64 {
        let text = crate::metrics::recorder().render();
        let prefix = format!("{name}{{{labels}}} ");
        text.lines()
            .find_map(|line| line.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn a_function_failing_twice_then_succeeding_runs_three_times_after_1_and_2_minutes() {
        let queue = queue(EventInvoke::default());
        let fake = Fake::new(&[Step::Fail, Step::Fail, Step::Ok]);
        queue
            .enqueue(fake.clone(), "f".into(), request("twice"))
            .unwrap();
        assert_eq!(queue.depth(), 1);
        drain(&queue).await;
        assert_eq!(fake.calls(), [0, 60, 180]);
    }

    #[tokio::test(start_paused = true)]
    async fn maximum_retry_attempts_bounds_the_runs_and_the_last_failure_is_counted() {
        let dropped = |function: &str| {
            counter(
                "esb_gateway_events_dropped_total",
                &format!("function=\"{function}\",reason=\"retries_exhausted\""),
            )
        };
        let before = dropped("f");
        for (retries, runs) in [(0, 1), (1, 2), (2, 3)] {
            let queue = queue(EventInvoke::default().maximum_retry_attempts(retries));
            let fake = Fake::new(&[Step::Fail; 5]);
            queue
                .enqueue(fake.clone(), "f".into(), request("always"))
                .unwrap();
            drain(&queue).await;
            assert_eq!(fake.calls().len(), runs, "MaximumRetryAttempts {retries}");
        }
        assert_eq!(dropped("f") - before, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_older_than_its_maximum_age_is_dropped_and_counted() {
        let labels = "function=\"aged\",reason=\"max_event_age\"";
        let before = counter("esb_gateway_events_dropped_total", labels);
        let queue = EventQueue::new(
            4,
            EventRetry::default(),
            [(
                "aged".to_owned(),
                EventInvoke::default().maximum_event_age(Duration::from_secs(90)),
            )],
        );
        crate::metrics::recorder();
        // Throttled at 0, 1, 3, 7, 15, 31, 63 s; the next wait (64 s) ends past 90 s.
        let fake = Fake::new(&[Step::Throttle; 20]);
        queue
            .enqueue(fake.clone(), "aged".into(), request("old"))
            .unwrap();
        drain(&queue).await;
        assert_eq!(fake.calls(), [0, 1, 3, 7, 15, 31, 63]);
        assert_eq!(
            counter("esb_gateway_events_dropped_total", labels) - before,
            1
        );

        // A function error at 0 s: the retry at 60 s would be past an age of 60 s.
        let queue = queue_with_age("aged", 60);
        let fake = Fake::new(&[Step::Fail]);
        queue
            .enqueue(fake.clone(), "aged".into(), request("old2"))
            .unwrap();
        drain(&queue).await;
        assert_eq!(fake.calls(), [0]);
        assert_eq!(
            counter("esb_gateway_events_dropped_total", labels) - before,
            2
        );
    }

    fn queue_with_age(function: &str, secs: u64) -> Arc<EventQueue> {
        EventQueue::new(
            4,
            EventRetry::default(),
            [(
                function.to_owned(),
                EventInvoke::default().maximum_event_age(Duration::from_secs(secs)),
            )],
        )
    }

    /// Log lines written while it lives (this thread's, as a current-thread test runs).
    #[derive(Clone, Default)]
    struct Logs(Arc<Mutex<Vec<u8>>>);

    impl Logs {
        fn capture(&self) -> tracing::subscriber::DefaultGuard {
            let logs = self.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_ansi(false)
                .with_writer(move || logs.clone())
                .finish();
            tracing::subscriber::set_default(subscriber)
        }

        fn lines(&self) -> Vec<String> {
            let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
            text.lines().map(str::to_owned).collect()
        }
    }

    impl std::io::Write for Logs {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_refuses_and_counts_and_shutdown_drops_waiting_events() {
        let logs = Logs::default();
        let _guard = logs.capture();
        let queue = EventQueue::new(1, EventRetry::default(), []);
        crate::metrics::recorder();
        let labels = "function=\"full\",reason=\"queue_full\"";
        let before = counter("esb_gateway_events_dropped_total", labels);
        let fake = Fake::new(&[Step::Fail; 3]);
        queue
            .enqueue(fake.clone(), "full".into(), request("a"))
            .unwrap();
        let refused = queue.enqueue(fake.clone(), "full".into(), request("b"));
        assert!(matches!(refused, Err(RequestError::EventQueueFull(_))));
        assert_eq!(
            counter("esb_gateway_events_dropped_total", labels) - before,
            1
        );

        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(fake.calls(), [0], "waiting for its retry");
        let shutdown_labels = "function=\"full\",reason=\"shutdown\"";
        let before = counter("esb_gateway_events_dropped_total", shutdown_labels);
        queue.shutdown(Duration::from_secs(5)).await;
        assert_eq!(queue.depth(), 0);
        assert_eq!(fake.calls(), [0]);
        assert_eq!(
            counter("esb_gateway_events_dropped_total", shutdown_labels) - before,
            1
        );
        // Every event given up is a WARN line naming its function, request id and reason.
        let warned: Vec<String> = logs
            .lines()
            .into_iter()
            .filter(|line| line.contains("WARN") && line.contains("dropped"))
            .collect();
        assert_eq!(warned.len(), 2, "{warned:#?}");
        for (line, id, reason) in [
            (&warned[0], "b", "queue_full"),
            (&warned[1], "a", "shutdown"),
        ] {
            assert!(line.contains("function=full"), "{line}");
            assert!(line.contains(&format!("request_id={id}")), "{line}");
            assert!(line.contains(&format!("reason=\"{reason}\"")), "{line}");
        }
    }
}
