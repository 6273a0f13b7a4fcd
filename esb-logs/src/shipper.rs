//! The handle callers push records into, and the background task that ships them.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use flate2::Compression;
use flate2::write::GzEncoder;
use reqwest::header::{CONTENT_ENCODING, CONTENT_TYPE};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::queue::{Pushed, Queue};
use crate::record::encode_line;
use crate::spool::{Spool, count_lines, take_lines};
use crate::{Auth, Error, ErrorChain, Record, VictoriaLogsConfig};

/// Counters of a shipper since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShipperMetrics {
    /// Records waiting to be sent.
    pub queued: usize,
    /// Their estimated bytes.
    pub queued_bytes: usize,
    /// Records VictoriaLogs accepted.
    pub sent: u64,
    /// Records lost: pushed out of a full queue, in a batch refused or failed after its
    /// retries, left at shutdown without a spool (or past its bound), or pushed after it.
    pub dropped: u64,
    /// Requests VictoriaLogs accepted.
    pub batches_sent: u64,
    /// Batches given up on.
    pub batches_failed: u64,
    /// Requests repeated after a failure.
    pub retries: u64,
    /// Bytes of accepted request bodies, as sent (compressed or not).
    pub bytes_sent: u64,
    /// Records sent again after a request timed out: VictoriaLogs may have stored them
    /// twice (an upper bound of the duplicates).
    pub resent_after_timeout: u64,
    /// Records written to the spool at shutdown (not dropped: the next shipper sends them).
    pub spooled: u64,
    /// Records of the spool sent.
    pub replayed: u64,
}

impl ShipperMetrics {
    /// The counters as Prometheus text, under the names the gateway exports them with
    /// (`esb_logs_records_dropped_total`, ...), for a process without a metrics recorder.
    pub fn prometheus(&self) -> String {
        let mut text = String::new();
        for (name, kind, value) in [
            ("esb_logs_records_dropped_total", "counter", self.dropped),
            ("esb_logs_records_sent_total", "counter", self.sent),
            ("esb_logs_bytes_sent_total", "counter", self.bytes_sent),
            ("esb_logs_retries_total", "counter", self.retries),
            (
                "esb_logs_batches_failed_total",
                "counter",
                self.batches_failed,
            ),
            (
                "esb_logs_records_resent_after_timeout_total",
                "counter",
                self.resent_after_timeout,
            ),
            ("esb_logs_queue_length", "gauge", self.queued as u64),
            ("esb_logs_queue_bytes", "gauge", self.queued_bytes as u64),
        ] {
            text.push_str(&format!("# TYPE {name} {kind}\n{name} {value}\n"));
        }
        text
    }
}

#[derive(Default)]
struct Counters {
    resent_after_timeout: AtomicU64,
    spooled: AtomicU64,
    replayed: AtomicU64,
    sent: AtomicU64,
    dropped: AtomicU64,
    batches_sent: AtomicU64,
    batches_failed: AtomicU64,
    retries: AtomicU64,
    bytes_sent: AtomicU64,
}

/// What the handles and the task share.
struct Core {
    queue: Queue,
    counters: Counters,
}

impl Core {
    fn dropped(&self, n: usize) {
        self.counters
            .dropped
            .fetch_add(u64::try_from(n).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Takes back a drop: records counted as dropped to make room were sent after all.
    fn undropped(&self, n: usize) {
        self.counters
            .dropped
            .fetch_sub(u64::try_from(n).unwrap_or(0), Ordering::Relaxed);
    }
}

/// Owned by the handles: when the last one goes, the task flushes and ends.
struct Handle {
    core: Arc<Core>,
    /// `Some(deadline)` once shutdown is asked.
    shutdown: watch::Sender<Option<Instant>>,
    task: Mutex<Option<JoinHandle<()>>>,
    drop_deadline: Duration,
}

impl Drop for Handle {
    fn drop(&mut self) {
        let deadline = Instant::now() + self.drop_deadline;
        self.shutdown.send_if_modified(|current| {
            let unset = current.is_none();
            if unset {
                *current = Some(deadline);
            }
            unset
        });
    }
}

/// Ships records to VictoriaLogs in the background; cloning gives another handle to the same queue.
///
/// [`push`](LogShipper::push) never waits: records go to a bounded queue that a background
/// task sends in batches. When VictoriaLogs is slow or away, the oldest records are dropped
/// past [`VictoriaLogsConfig::queue_capacity`] or [`VictoriaLogsConfig::queue_max_bytes`],
/// and counted.
#[derive(Clone)]
pub struct LogShipper {
    handle: Arc<Handle>,
}

impl std::fmt::Debug for LogShipper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogShipper")
            .field("metrics", &self.metrics())
            .finish_non_exhaustive()
    }
}

impl LogShipper {
    /// Validates `config` and starts the background task on the current Tokio runtime.
    pub fn start(config: VictoriaLogsConfig) -> Result<Self, Error> {
        config.validate()?;
        let url = config.insert_url()?;
        let auth = config.effective_auth()?;
        let runtime = tokio::runtime::Handle::try_current().map_err(|_| Error::NoRuntime)?;
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout);
        if let Some(pem) = &config.ca_pem {
            for certificate in reqwest::Certificate::from_pem_bundle(pem).map_err(Error::Ca)? {
                builder = builder.add_root_certificate(certificate);
            }
        }
        let mut headers = reqwest::header::HeaderMap::new();
        for (name, value) in &config.headers {
            let invalid = || Error::InvalidConfig {
                field: "headers",
                reason: format!("header {name:?} is not a valid HTTP header name and value"),
            };
            let name =
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
            let mut value = reqwest::header::HeaderValue::from_str(value).map_err(|_| invalid())?;
            value.set_sensitive(true);
            headers.append(name, value);
        }
        let client = builder.default_headers(headers).build()?;
        let stream_values = config.stream_values();
        let spool = config
            .spool_dir
            .as_deref()
            .map(|dir| Spool::open(dir, config.spool_max_bytes))
            .transpose()?;
        let core = Arc::new(Core {
            queue: Queue::new(
                config.queue_capacity.get(),
                config.queue_max_bytes.get(),
                config.batch_max_records.get(),
                config.batch_max_bytes.get(),
            ),
            counters: Counters::default(),
        });
        let (shutdown, shutdown_rx) = watch::channel(None);
        let drop_deadline = config.shutdown_deadline;
        let sender = Sender {
            core: core.clone(),
            client,
            url,
            auth,
            stream_values,
            config,
            shutdown: shutdown_rx,
            reported_drops: 0,
            spool,
        };
        register_metrics(&core);
        let task = runtime.spawn(sender.run());
        Ok(Self {
            handle: Arc::new(Handle {
                core,
                shutdown,
                task: Mutex::new(Some(task)),
                drop_deadline,
            }),
        })
    }

    /// Registers the shipper's metrics with the installed `metrics` recorder, at their
    /// current values, so that they are exported before anything happens (e.g. the count
    /// of dropped records at 0). Done at start and at each flush interval too; call it once
    /// the recorder is installed when that comes after the shipper.
    pub fn register_metrics(&self) {
        register_metrics(&self.handle.core);
    }

    /// Queues one record. Never waits; drops the oldest record when the queue is full.
    pub fn push(&self, record: Record) {
        let core = &self.handle.core;
        match core.queue.push(record) {
            Pushed::Queued => {}
            Pushed::DroppedOldest(n) => core.dropped(n),
            Pushed::Closed => core.dropped(1),
        }
    }

    /// The counters so far.
    pub fn metrics(&self) -> ShipperMetrics {
        let c = &self.handle.core.counters;
        ShipperMetrics {
            queued: self.handle.core.queue.len(),
            queued_bytes: self.handle.core.queue.bytes(),
            sent: c.sent.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            batches_sent: c.batches_sent.load(Ordering::Relaxed),
            batches_failed: c.batches_failed.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            bytes_sent: c.bytes_sent.load(Ordering::Relaxed),
            resent_after_timeout: c.resent_after_timeout.load(Ordering::Relaxed),
            spooled: c.spooled.load(Ordering::Relaxed),
            replayed: c.replayed.load(Ordering::Relaxed),
        }
    }

    /// Sends what is queued, for at most `deadline`, then stops; later pushes are dropped.
    ///
    /// Returns the final counters. Records still unsent at the deadline count as dropped.
    /// When several handles call it, the first one waits for the flush.
    pub async fn shutdown(&self, deadline: Duration) -> ShipperMetrics {
        let at = Instant::now() + deadline;
        self.handle.shutdown.send_if_modified(|current| {
            let unset = current.is_none();
            if unset {
                *current = Some(at);
            }
            unset
        });
        let task = self
            .handle
            .task
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .take();
        if let Some(task) = task {
            // The task honours the deadline itself; the margin covers its last bookkeeping.
            let margin = Duration::from_millis(250);
            if tokio::time::timeout_at(at + margin, task).await.is_err() {
                tracing::warn!("the VictoriaLogs shipper did not stop by its deadline");
            }
        }
        self.metrics()
    }
}

/// How one batch ended.
enum Outcome {
    Sent,
    Failed,
    /// The shutdown deadline passed while it was in flight.
    Aborted,
}

/// The background task.
struct Sender {
    core: Arc<Core>,
    client: reqwest::Client,
    /// The insert URL, without user information.
    url: reqwest::Url,
    auth: Option<Auth>,
    /// `host` and the extra stream fields, on every record.
    stream_values: Vec<(String, String)>,
    config: VictoriaLogsConfig,
    shutdown: watch::Receiver<Option<Instant>>,
    reported_drops: u64,
    spool: Option<Spool>,
}

impl Sender {
    async fn run(mut self) {
        let mut tick = tokio::time::interval(self.config.flush_interval);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        tick.reset();
        let mut in_time = self.replay().await;
        while in_time {
            if self.shutdown.borrow_and_update().is_some() {
                break;
            }
            let partial = tokio::select! {
                biased;
                changed = self.shutdown.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    true
                }
                () = self.core.queue.full() => false,
                _ = tick.tick() => {
                    self.report_drops();
                    true
                }
            };
            if !self.drain(partial).await {
                in_time = false;
                break;
            }
        }
        if in_time {
            self.drain(true).await;
        }
        let left = self.core.queue.close();
        if !left.is_empty() {
            let lines = self.encode(&left);
            self.spill(left.len(), &lines);
        }
        self.report_drops();
    }

    /// Sends batches while there are (full, unless `partial`) ones. False once the deadline passed.
    async fn drain(&mut self, partial: bool) -> bool {
        loop {
            let batch = self.core.queue.take_batch(partial);
            if batch.is_empty() {
                return true;
            }
            if let Outcome::Aborted = self.send(batch).await {
                return false;
            }
        }
    }

    /// Logs and exports the drops since the last report.
    fn report_drops(&mut self) {
        let dropped = self.core.counters.dropped.load(Ordering::Relaxed);
        let new = dropped.saturating_sub(self.reported_drops);
        self.reported_drops = dropped;
        register_metrics(&self.core);
        if new > 0 {
            metrics::counter!("esb_logs_records_dropped_total").increment(new);
            tracing::warn!(
                dropped = new,
                total = dropped,
                url = %self.config.redacted_url(),
                "VictoriaLogs shipper dropped log records"
            );
        }
    }

    /// The records as JSON lines; those that cannot be encoded are dropped (and counted).
    fn encode(&self, batch: &[Record]) -> Vec<u8> {
        let estimate: usize = batch.iter().map(Record::estimated_size).sum();
        let mut body = Vec::with_capacity(estimate);
        for record in batch {
            if let Err(err) = encode_line(
                &mut body,
                record,
                &self.stream_values,
                self.config.max_message_bytes,
            ) {
                self.core.dropped(1);
                tracing::warn!(error = %err, "a log record could not be encoded");
            }
        }
        body
    }

    /// The request body of `lines`, and whether it is gzipped.
    fn compress(&self, body: Vec<u8>) -> (Bytes, bool) {
        match self.config.gzip_min_bytes {
            Some(min) if body.len() >= min => match gzip(&body) {
                Ok(compressed) => (Bytes::from(compressed), true),
                Err(err) => {
                    tracing::warn!(error = %err, "gzip failed; sending the batch uncompressed");
                    (Bytes::from(body), false)
                }
            },
            _ => (Bytes::from(body), false),
        }
    }

    /// Sends a batch of the queue.
    async fn send(&mut self, batch: Vec<Record>) -> Outcome {
        let lines = self.encode(&batch);
        drop(batch);
        self.deliver(lines, true).await
    }

    /// Sends JSON lines, retried as the policy says: a batch of the queue (`from_queue`,
    /// given up when its room is needed, spooled when the shutdown deadline passes), or
    /// lines of the spool.
    async fn deliver(&mut self, lines: Vec<u8>, from_queue: bool) -> Outcome {
        let records = count_lines(&lines);
        // The plain lines are kept for the spool only.
        let keep = from_queue && self.spool.is_some();
        let plain = if keep { lines.clone() } else { Vec::new() };
        let (body, gzipped) = self.compress(lines);
        let attempts = self.config.retry.max_attempts.get();
        let mut failure = String::new();
        let mut timed_out = false;
        for attempt in 1..=attempts {
            if from_queue && self.core.queue.in_flight_dropped() {
                // Its records made room for newer ones (and were counted then).
                self.core.queue.batch_done();
                return Outcome::Failed;
            }
            if timed_out {
                let records = u64::try_from(records).unwrap_or(u64::MAX);
                self.core
                    .counters
                    .resent_after_timeout
                    .fetch_add(records, Ordering::Relaxed);
                metrics::counter!("esb_logs_records_resent_after_timeout_total").increment(records);
            }
            let mut request = self
                .client
                .post(self.url.clone())
                .header(CONTENT_TYPE, "application/stream+json")
                .body(body.clone());
            if gzipped {
                request = request.header(CONTENT_ENCODING, "gzip");
            }
            request = match &self.auth {
                Some(Auth::Basic { username, password }) => {
                    request.basic_auth(username, Some(password))
                }
                Some(Auth::Bearer(token)) => request.bearer_auth(token),
                None => request,
            };
            let exchange = async {
                let response = request.send().await?;
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                Ok::<_, reqwest::Error>((status, text))
            };
            let result = tokio::select! {
                result = exchange => result,
                () = deadline_passed(&mut self.shutdown) => return self.abort(records, from_queue, &plain),
            };
            timed_out = false;
            let retryable = match result {
                Ok((status, _)) if status.is_success() => {
                    if from_queue && self.core.queue.batch_done() {
                        self.core.undropped(records);
                    }
                    self.sent(records, body.len());
                    return Outcome::Sent;
                }
                Ok((status, text)) => {
                    failure = format!("HTTP {status}: {}", text.trim());
                    status.is_server_error()
                        || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                        || status == reqwest::StatusCode::REQUEST_TIMEOUT
                }
                Err(err) => {
                    timed_out = err.is_timeout();
                    failure = ErrorChain(&err).to_string();
                    true
                }
            };
            if !retryable || attempt == attempts {
                break;
            }
            self.core.counters.retries.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("esb_logs_retries_total").increment(1);
            tokio::select! {
                () = tokio::time::sleep(self.config.retry.backoff(attempt)) => {}
                () = deadline_passed(&mut self.shutdown) => return self.abort(records, from_queue, &plain),
            }
        }
        if !from_queue || !self.core.queue.batch_done() {
            self.core.dropped(records);
        }
        self.core
            .counters
            .batches_failed
            .fetch_add(1, Ordering::Relaxed);
        metrics::counter!("esb_logs_batches_failed_total").increment(1);
        tracing::warn!(
            records,
            url = %self.url,
            error = %failure,
            "VictoriaLogs refused a batch of log records; dropped it"
        );
        Outcome::Failed
    }

    /// Writes unsent records (`lines`, JSON) to the spool, or counts them as dropped.
    fn spill(&self, records: usize, lines: &[u8]) {
        let (written, lost) = match &self.spool {
            Some(spool) => spool.write(lines),
            None => (0, records),
        };
        self.core.dropped(lost);
        if written > 0 {
            self.core.counters.spooled.fetch_add(
                u64::try_from(written).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
        }
    }

    /// Sends the spool's files, oldest first, each removed once sent. False once the
    /// shutdown deadline passed.
    async fn replay(&mut self) -> bool {
        let Some(files) = self.spool.as_ref().map(Spool::files) else {
            return true;
        };
        for path in files {
            let Ok(mut rest) = std::fs::read(&path) else {
                continue;
            };
            while !rest.is_empty() {
                let (lines, end) = take_lines(&rest, self.config.batch_max_bytes.get());
                if lines == 0 {
                    // A last line without its newline: not a record.
                    rest.clear();
                    break;
                }
                let chunk = rest[..end].to_vec();
                match self.deliver(chunk, false).await {
                    Outcome::Aborted => {
                        Spool::keep_rest(&path, &rest);
                        return false;
                    }
                    Outcome::Sent => {
                        self.core
                            .counters
                            .replayed
                            .fetch_add(u64::try_from(lines).unwrap_or(u64::MAX), Ordering::Relaxed);
                    }
                    Outcome::Failed => {}
                }
                rest.drain(..end);
                Spool::keep_rest(&path, &rest);
            }
            Spool::keep_rest(&path, &[]);
        }
        true
    }

    fn sent(&self, records: usize, bytes: usize) {
        let records = u64::try_from(records).unwrap_or(u64::MAX);
        let bytes = u64::try_from(bytes).unwrap_or(u64::MAX);
        let c = &self.core.counters;
        c.sent.fetch_add(records, Ordering::Relaxed);
        c.batches_sent.fetch_add(1, Ordering::Relaxed);
        c.bytes_sent.fetch_add(bytes, Ordering::Relaxed);
        metrics::counter!("esb_logs_records_sent_total").increment(records);
        metrics::counter!("esb_logs_bytes_sent_total").increment(bytes);
    }

    /// The shutdown deadline passed while `records` were being sent: a batch of the queue
    /// goes to the spool (or is dropped); lines of the spool stay there.
    fn abort(&self, records: usize, from_queue: bool, plain: &[u8]) -> Outcome {
        if from_queue && !self.core.queue.batch_done() {
            self.spill(records, plain);
        }
        Outcome::Aborted
    }
}

/// Every metric of the shipper, so that each is exported from the start.
fn register_metrics(core: &Core) {
    for name in [
        "esb_logs_records_dropped_total",
        "esb_logs_records_sent_total",
        "esb_logs_bytes_sent_total",
        "esb_logs_retries_total",
        "esb_logs_batches_failed_total",
        "esb_logs_records_resent_after_timeout_total",
    ] {
        metrics::counter!(name).increment(0);
    }
    metrics::gauge!("esb_logs_queue_length").set(core.queue.len() as f64);
    metrics::gauge!("esb_logs_queue_bytes").set(core.queue.bytes() as f64);
}

/// Resolves once shutdown was asked and its deadline passed.
async fn deadline_passed(shutdown: &mut watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *shutdown.borrow_and_update();
        if let Some(deadline) = deadline {
            tokio::time::sleep_until(deadline).await;
            return;
        }
        if shutdown.changed().await.is_err() {
            // No handle is left and none set a deadline: nothing will ever end this wait.
            std::future::pending::<()>().await;
        }
    }
}

fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 4), Compression::fast());
    encoder.write_all(body)?;
    encoder.finish()
}
