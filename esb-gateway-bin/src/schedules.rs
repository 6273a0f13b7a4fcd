//! EventBridge schedules: each enabled schedule of a function invokes it when its `rate()`
//! or `cron()` expression fires, with EventBridge's "Scheduled Event" (or the schedule's
//! `Input`), never running more invocations of itself at once than the function's
//! capacity (a fire that finds them all busy is skipped, with a WARN log).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SecondsFormat, Utc};
use esb_pool::{Invocation, PoolResponse};
use esb_router::{Config, ScheduleConfig};
use esb_runtime::InvokeRequest;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::{Service, ServiceExt};

use crate::error::RequestError;

/// The time source of schedules: what time it is, and waiting for a time to come.
/// [`TokioClock`] (the wall clock) by default; [`ManualClock`] is moved by hand.
pub trait ScheduleClock: Send + Sync + 'static {
    /// The current time (UTC).
    fn now(&self) -> DateTime<Utc>;

    /// Resolves once [`ScheduleClock::now`] has reached `at`.
    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>>;
}

/// The wall clock as the tokio clock moves it: UTC at start plus tokio time elapsed since
/// (so a paused tokio clock moves schedules too).
#[derive(Clone, Copy, Debug)]
pub struct TokioClock {
    utc: DateTime<Utc>,
    instant: Instant,
}

impl TokioClock {
    /// The clock as of now.
    pub fn now() -> Self {
        Self {
            utc: Utc::now(),
            instant: Instant::now(),
        }
    }

    fn instant_at(&self, at: DateTime<Utc>) -> Instant {
        let offset = (at - self.utc).to_std().unwrap_or(Duration::ZERO);
        self.instant + offset
    }
}

impl ScheduleClock for TokioClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = chrono::Duration::from_std(self.instant.elapsed()).unwrap_or_default();
        self.utc + elapsed
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        Box::pin(tokio::time::sleep_until(self.instant_at(at)))
    }
}

/// A clock that stands still until it is moved ([`ManualClock::advance`]), for tests of
/// scheduled functions that should not wait for the wall clock; nothing else in the gateway
/// (timeouts, idle sandboxes) follows it.
#[derive(Debug)]
pub struct ManualClock {
    time: tokio::sync::watch::Sender<DateTime<Utc>>,
}

impl ManualClock {
    /// A clock showing `time`.
    pub fn new(time: DateTime<Utc>) -> Self {
        Self {
            time: tokio::sync::watch::Sender::new(time),
        }
    }

    /// Moves the clock `by` forward; schedules due by then fire.
    pub fn advance(&self, by: Duration) {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        self.time
            .send_modify(|time| *time = time.checked_add_signed(by).unwrap_or(*time));
    }
}

impl ScheduleClock for ManualClock {
    fn now(&self) -> DateTime<Utc> {
        *self.time.borrow()
    }

    fn sleep_until(&self, at: DateTime<Utc>) -> Pin<Box<dyn Future<Output = ()> + Send + '_>> {
        let mut time = self.time.subscribe();
        Box::pin(async move {
            // The sender lives as long as `self`, so this ends only when `at` has come.
            let _ = time.wait_for(|now| *now >= at).await;
        })
    }
}

/// Where Scheduled Events say they come from.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    /// `region` of the event and of the rule's ARN.
    pub(crate) region: String,
    /// `account` of the event and of the rule's ARN.
    pub(crate) account: String,
}

/// Starts one task per enabled schedule of `config`'s functions; aborting them stops
/// the schedules.
pub(crate) fn start<I>(
    config: &Config,
    invoker: I,
    origin: &Origin,
    clock: Arc<dyn ScheduleClock>,
) -> Vec<JoinHandle<()>>
where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    // Every schedule counts from here, whenever its task first runs.
    let started = clock.now();
    let mut tasks = Vec::new();
    for function in config.functions.values() {
        let capacity = function
            .scaling
            .max_capacity
            .map_or(esb_pool::DEFAULT_MAX_CAPACITY, |max| max as usize)
            .max(1);
        for schedule in function.schedules.iter().filter(|s| s.enabled) {
            tracing::info!(
                function = %function.name,
                schedule = %schedule.name,
                expression = %schedule.expression,
                "schedule started"
            );
            tasks.push(tokio::spawn(run(
                function.name.clone(),
                schedule.clone(),
                invoker.clone(),
                origin.clone(),
                Arc::clone(&clock),
                started,
                Arc::new(Semaphore::new(capacity)),
            )));
        }
    }
    tasks
}

/// Fires `schedule` of `function` for as long as the task lives.
async fn run<I>(
    function: String,
    schedule: ScheduleConfig,
    invoker: I,
    origin: Origin,
    clock: Arc<dyn ScheduleClock>,
    start: DateTime<Utc>,
    running: Arc<Semaphore>,
) where
    I: Service<Invocation, Response = PoolResponse, Error = RequestError> + Clone + Send + 'static,
    I::Future: Send + 'static,
{
    let mut last = start;
    while let Some(fire) = schedule.expression.next_after(start, last) {
        clock.sleep_until(fire).await;
        last = fire;
        let Ok(permit) = Arc::clone(&running).try_acquire_owned() else {
            tracing::warn!(
                function = %function,
                schedule = %schedule.name,
                time = %fire,
                "schedule fire skipped: its earlier invocations still use the function's whole capacity"
            );
            continue;
        };
        let payload = match &schedule.input {
            Some(input) => Bytes::from(input.clone()),
            None => Bytes::from(scheduled_event(&schedule.name, fire, &origin).to_string()),
        };
        let invocation = Invocation::new(function.clone(), InvokeRequest::new(payload));
        let invoker = invoker.clone();
        let (function, name) = (function.clone(), schedule.name.clone());
        tokio::spawn(async move {
            if let Err(err) = invoker.oneshot(invocation).await {
                tracing::warn!(function = %function, schedule = %name, error = %err, "scheduled invocation failed");
            }
            drop(permit);
        });
    }
}

/// EventBridge's Scheduled Event for a fire of rule `rule` at `time`.
pub(crate) fn scheduled_event(
    rule: &str,
    time: DateTime<Utc>,
    origin: &Origin,
) -> serde_json::Value {
    serde_json::json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": origin.account,
        "time": time.to_rfc3339_opts(SecondsFormat::Secs, true),
        "region": origin.region,
        "resources": [format!("arn:aws:events:{}:{}:rule/{rule}", origin.region, origin.account)],
        "detail": {},
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Mutex;

    use esb_runtime::{InvokeResponse, SandboxId};

    use super::*;

    /// Invocations seen: (tokio time since start, payload); each waits for `release`.
    #[derive(Clone)]
    struct Recorder {
        seen: Arc<Mutex<Vec<(Duration, serde_json::Value)>>>,
        release: Arc<Semaphore>,
        started: Instant,
    }

    impl Recorder {
        fn new(released: bool) -> Self {
            let release = Arc::new(Semaphore::new(0));
            if released {
                release.add_permits(Semaphore::MAX_PERMITS);
            }
            Self {
                seen: Arc::default(),
                release,
                started: Instant::now(),
            }
        }

        fn service(
            &self,
        ) -> impl Service<
            Invocation,
            Response = PoolResponse,
            Error = RequestError,
            Future: Send,
        > + Clone
        + Send
        + 'static {
            let this = self.clone();
            tower::service_fn(move |invocation: Invocation| {
                let this = this.clone();
                async move {
                    let payload = serde_json::from_slice(&invocation.request.payload).unwrap();
                    this.seen
                        .lock()
                        .unwrap()
                        .push((this.started.elapsed(), payload));
                    let _permit = this.release.acquire().await.unwrap();
                    Ok(PoolResponse::new(
                        InvokeResponse {
                            result: esb_runtime::InvokeResult::Success(Bytes::from_static(b"{}")),
                            duration: Duration::ZERO,
                            billed_duration: Duration::ZERO,
                            max_memory_used_mb: 0,
                            init_duration: None,
                            log_tail: None,
                        },
                        false,
                        SandboxId::new("s"),
                    ))
                }
            })
        }
    }

    fn config(schedules: Vec<ScheduleConfig>, max: Option<u32>) -> Config {
        let mut function = esb_router::FunctionConfig::new("job");
        function.command = Some(vec!["job".into()]);
        function.schedules = schedules;
        function.scaling.max_capacity = max;
        let mut config = Config::default();
        config.functions.insert("job".into(), function);
        config
    }

    fn origin() -> Origin {
        Origin {
            region: "eu-west-1".into(),
            account: "000000000000".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_rate_fires_every_period_with_the_scheduled_event() {
        let recorder = Recorder::new(true);
        let clock = Arc::new(TokioClock {
            utc: DateTime::parse_from_rfc3339("2026-03-01T10:02:30Z")
                .unwrap()
                .with_timezone(&Utc),
            instant: Instant::now(),
        });
        let schedule = ScheduleConfig::new("every5", "rate(5 minutes)".parse().unwrap());
        let tasks = start(
            &config(vec![schedule], None),
            recorder.service(),
            &origin(),
            clock,
        );
        tokio::time::sleep(Duration::from_secs(601)).await;
        let seen = recorder.seen.lock().unwrap().clone();
        assert_eq!(seen.len(), 2, "{seen:?}");
        assert_eq!(seen[0].0, Duration::from_secs(300));
        assert_eq!(seen[1].0, Duration::from_secs(600));
        let event = &seen[0].1;
        assert_eq!(event["detail-type"], "Scheduled Event");
        assert_eq!(event["source"], "aws.events");
        assert_eq!(event["version"], "0");
        assert_eq!(event["time"], "2026-03-01T10:07:30Z");
        assert_eq!(event["region"], "eu-west-1");
        assert_eq!(event["account"], "000000000000");
        assert_eq!(
            event["resources"],
            serde_json::json!(["arn:aws:events:eu-west-1:000000000000:rule/every5"])
        );
        assert_eq!(event["detail"], serde_json::json!({}));
        assert_ne!(event["id"], seen[1].1["id"]);
        for task in tasks {
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_cron_fires_on_its_minutes_and_input_replaces_the_event() {
        let recorder = Recorder::new(true);
        let clock = Arc::new(TokioClock {
            utc: DateTime::parse_from_rfc3339("2026-03-01T10:02:30Z")
                .unwrap()
                .with_timezone(&Utc),
            instant: Instant::now(),
        });
        let mut schedule = ScheduleConfig::new("quarter", "cron(0/15 * * * ? *)".parse().unwrap());
        schedule.input = Some(r#"{"fixed": true}"#.into());
        let tasks = start(
            &config(vec![schedule], None),
            recorder.service(),
            &origin(),
            clock,
        );
        tokio::time::sleep(Duration::from_secs(20 * 60)).await;
        let seen = recorder.seen.lock().unwrap().clone();
        // 10:15 only: 12.5 minutes after 10:02:30 (10:30 is past the 20 minutes).
        let times: Vec<Duration> = seen.iter().map(|(t, _)| *t).collect();
        assert_eq!(times, [Duration::from_secs(750)]);
        assert_eq!(seen[0].1, serde_json::json!({"fixed": true}));
        for task in tasks {
            task.abort();
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_schedule_never_overlaps_itself_beyond_capacity_and_disabled_ones_never_fire() {
        let recorder = Recorder::new(false);
        let every = ScheduleConfig::new("every", "rate(1 minute)".parse().unwrap());
        let mut off = ScheduleConfig::new("off", "rate(1 minute)".parse().unwrap());
        off.enabled = false;
        let tasks = start(
            &config(vec![every, off], Some(2)),
            recorder.service(),
            &origin(),
            Arc::new(TokioClock::now()),
        );
        assert_eq!(tasks.len(), 1, "the disabled schedule has no task");
        // Five fires while no invocation finishes: only two run.
        tokio::time::sleep(Duration::from_secs(5 * 60 + 1)).await;
        assert_eq!(recorder.seen.lock().unwrap().len(), 2);
        // Once they finish, the next fire runs again.
        recorder.release.add_permits(2);
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert_eq!(recorder.seen.lock().unwrap().len(), 3);
        recorder.release.add_permits(Semaphore::MAX_PERMITS / 2);
        for task in tasks {
            task.abort();
        }
    }
}
