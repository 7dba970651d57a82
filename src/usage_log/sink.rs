//! [`UsageLog`]: the event sink that turns decisions and usage into records, and writes them to
//! a [`LogStore`] in batches, off the request path.

use alloc::string::String;
use alloc::sync::Arc;
use core::sync::atomic::{AtomicU64, Ordering};
use core::time::Duration;
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{AlertRecord, LogBatch, LogRecord, LogStore};
use crate::Timestamp;
use crate::events::{DecisionEvent, EventSink, SpendAlert, UsageEvent};
use crate::store::StoreError;

/// How the usage log buffers and keeps records.
///
/// ```
/// use keygate::usage_log::LogConfig;
/// let config = LogConfig::default();
/// assert_eq!(config.capacity, 65_536);
/// assert!(!config.client_ip); // client addresses are not logged unless asked for
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogConfig {
    /// The most records (and alerts) waiting for a flush; past it new ones are dropped and
    /// counted. Default 65 536.
    pub capacity: usize,
    /// Whether records keep the client's address. Default `false`.
    pub client_ip: bool,
    /// How long records are kept: [`UsageLog::prune`] deletes older ones. Default 30 days;
    /// `None` keeps them.
    pub retention: Option<Duration>,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { capacity: 65_536, client_ip: false, retention: Some(Duration::from_secs(30 * 86_400)) }
    }
}

/// What one [`UsageLog::flush`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Flushed {
    /// Records and alerts written.
    pub written: usize,
    /// Records and alerts dropped since the previous flush, the buffer being full.
    pub dropped: u64,
}

/// The usage log: an [`EventSink`] that makes a [`LogRecord`] of every decided request and an
/// [`AlertRecord`] of every spend alert, and keeps them in a bounded buffer until
/// [`UsageLog::flush`] writes them to its [`LogStore`] in one batch.
///
/// On the request path it only copies the event's fields into the buffer, under a lock held
/// for one push: it never waits for the store. A full buffer drops the record and counts it
/// ([`UsageLog::dropped`]); the next flush reports the drops as a `tracing` warning (feature
/// `tracing`) and the counter `keygate_usage_log_dropped_total` (feature `metrics`). Call
/// `flush` every fraction of a second from a task of your own, and once more at shutdown, after
/// the last request has ended. A clone is another handle to the same log.
///
/// ```
/// use keygate::usage_log::{LogConfig, MemoryLog, UsageLog};
/// use keygate::{Gate, MemoryLimitStore, MemoryStore, Pepper, Verifier};
/// use keygate::format::SelectorFormat;
/// use keygate::limit::Limiter;
/// use keygate::secret::{PepperId, Peppers};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = UsageLog::new(MemoryLog::default(), LogConfig::default());
/// # let verifier = Verifier::new(SelectorFormat::new("aistats")?, Peppers::new(Pepper::new(PepperId(1), &[7; 32])?));
/// let gate = Gate::new(verifier, MemoryStore::new(), Limiter::new(MemoryLimitStore::new())).with_events(log.clone());
/// // ... serve requests; every so often, and at shutdown:
/// let flushed = log.flush().await?;
/// # let _ = (gate, flushed); Ok(()) }
/// ```
pub struct UsageLog<S> {
    shared: Arc<Shared<S>>,
}

struct Shared<S> {
    store: S,
    config: LogConfig,
    buffer: Mutex<LogBatch>,
    dropped: AtomicU64,
    reported: AtomicU64,
}

impl<S> Clone for UsageLog<S> {
    fn clone(&self) -> Self {
        Self { shared: Arc::clone(&self.shared) }
    }
}

impl<S> core::fmt::Debug for UsageLog<S> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UsageLog")
            .field("config", &self.shared.config)
            .field("pending", &self.pending())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl<S> UsageLog<S> {
    /// A log writing to `store`.
    #[must_use]
    pub fn new(store: S, config: LogConfig) -> Self {
        let shared =
            Shared { store, config, buffer: Mutex::default(), dropped: AtomicU64::new(0), reported: AtomicU64::new(0) };
        Self { shared: Arc::new(shared) }
    }

    /// The store, for queries.
    #[must_use]
    pub fn store(&self) -> &S {
        &self.shared.store
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &LogConfig {
        &self.shared.config
    }

    /// Records and alerts waiting for a flush.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.buffer().len()
    }

    /// Records and alerts dropped since the log was made, the buffer being full.
    #[must_use]
    pub fn dropped(&self) -> u64 {
        self.shared.dropped.load(Ordering::Relaxed)
    }

    fn buffer(&self) -> MutexGuard<'_, LogBatch> {
        self.shared.buffer.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues a record (or counts it dropped): what the sink does with each event, for a
    /// server that logs a request the gate did not decide.
    pub fn record(&self, record: LogRecord) {
        let mut buffer = self.buffer();
        if buffer.len() < self.shared.config.capacity {
            buffer.records.push(record);
        } else {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn record_alert(&self, alert: AlertRecord) {
        let mut buffer = self.buffer();
        if buffer.len() < self.shared.config.capacity {
            buffer.alerts.push(alert);
        } else {
            drop(buffer);
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The drops not reported yet, reported (a warning and a counter).
    fn report_drops(&self) -> u64 {
        let dropped = self.dropped();
        let new = dropped.saturating_sub(self.shared.reported.swap(dropped, Ordering::Relaxed));
        if new > 0 {
            #[cfg(feature = "tracing")]
            tracing::warn!(target: "keygate::usage_log", dropped = new, "usage log buffer full: records dropped");
            #[cfg(feature = "metrics")]
            metrics::counter!("keygate_usage_log_dropped_total").increment(new);
        }
        new
    }
}

impl<S: LogStore> UsageLog<S> {
    /// Writes what is buffered to the store in one batch. On a store failure the batch goes
    /// back to the buffer as far as it fits (the rest is counted as dropped), to be tried again
    /// by the next flush.
    ///
    /// # Errors
    ///
    /// The store's [`StoreError`].
    pub async fn flush(&self) -> Result<Flushed, StoreError> {
        let batch = core::mem::take(&mut *self.buffer());
        let dropped = self.report_drops();
        if batch.is_empty() {
            return Ok(Flushed { written: 0, dropped });
        }
        match self.shared.store.append(&batch).await {
            Ok(()) => Ok(Flushed { written: batch.len(), dropped }),
            Err(e) => {
                self.requeue(batch);
                Err(e)
            }
        }
    }

    /// Puts a batch that failed back in front of what came since, as far as it fits.
    fn requeue(&self, mut batch: LogBatch) {
        let mut buffer = self.buffer();
        let room = self.shared.config.capacity.saturating_sub(buffer.len());
        let lost = batch.len().saturating_sub(room);
        let alerts_kept = batch.alerts.len().min(room);
        batch.alerts.truncate(alerts_kept);
        batch.records.truncate(room - alerts_kept);
        batch.records.append(&mut buffer.records);
        batch.alerts.append(&mut buffer.alerts);
        *buffer = batch;
        drop(buffer);
        self.shared.dropped.fetch_add(u64::try_from(lost).unwrap_or(u64::MAX), Ordering::Relaxed);
    }

    /// Deletes what is older than the retention ([`LogConfig::retention`]) at `now`; returns
    /// how many records and alerts went.
    ///
    /// # Errors
    ///
    /// The store's [`StoreError`].
    pub async fn prune(&self, now: Timestamp) -> Result<u64, StoreError> {
        match self.shared.config.retention {
            Some(keep) => self.shared.store.prune(now.saturating_sub(keep)).await,
            None => Ok(0),
        }
    }
}

fn owned(text: Option<&str>) -> Option<String> {
    text.map(String::from)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl<S: Send + Sync> EventSink for UsageLog<S> {
    /// A denial becomes a record now; an admitted request when its usage is reported.
    fn decision(&self, e: &DecisionEvent<'_>) {
        let Some(code) = e.code else { return };
        let mut record = LogRecord::new(e.at);
        record.key = e.key;
        record.verified = e.verified;
        record.team = owned(e.team);
        record.route = owned(e.route);
        record.model = owned(e.model);
        record.provider = owned(e.provider);
        record.code = Some(code);
        record.status = Some(code.status());
        record.latency_us = e.latency.map(micros);
        record.client_ip = e.client_ip.filter(|_| self.shared.config.client_ip);
        self.record(record);
    }

    fn usage(&self, e: &UsageEvent<'_>) {
        let request = &e.request;
        let mut record = LogRecord::new(request.admitted_at.unwrap_or(e.at));
        record.key = Some(e.key);
        record.verified = true;
        record.team = owned(e.team);
        record.route = owned(request.route);
        record.model = owned(request.model);
        record.provider = owned(request.provider);
        record.status = request.status;
        record.tokens = e.tokens;
        record.tokens_in = request.tokens_in;
        record.tokens_out = request.tokens_out;
        record.cost_micros = e.spend_micros;
        record.latency_us = request.latency.map(micros);
        record.client_ip = request.client_ip.filter(|_| self.shared.config.client_ip);
        self.record(record);
    }

    fn alert(&self, a: &SpendAlert<'_>) {
        let mut alert = AlertRecord::new(a.at, a.key, a.percent, a.spend_micros, a.cap_micros, a.period);
        alert.team = owned(a.team);
        self.record_alert(alert);
    }
}
