//! The usage log (needs `std`): every decided request as a record, written off the request
//! path in batches, and read back per key, summed per key, model or day, with the spend alerts.
//!
//! ```text
//! Gate ──events──► UsageLog (an EventSink: a bounded buffer; a full one drops and counts)
//!                      │ flush(), every fraction of a second and at shutdown: one batch
//!                      ▼
//!                  LogStore: MemoryLog (a bounded ring), SqliteStore, PostgresStore
//!                      ▲
//! management API ──────┘ keys/{id}/logs, usage?group_by=key|model|day, alerts (module api)
//! ```
//!
//! A denial becomes a record when it is decided; an admitted request when it is settled (at
//! the end of its response body behind the tower layer, by a [`Principal`](crate::Principal),
//! or by [`Gate::finish_request`](crate::Gate::finish_request)), with what it used and what
//! the server reported of it ([`RequestInfo`](crate::events::RequestInfo)). A record holds the
//! key's public id, never the key, its secret or the request's body; the client's address
//! only when [`LogConfig::client_ip`] says so.

#![cfg(feature = "std")]

#[cfg(feature = "json")]
mod api;
mod memory;
mod sink;

#[cfg(feature = "json")]
pub use api::{LogRoute, handle_log_request};
pub use memory::MemoryLog;
pub use sink::{Flushed, LogConfig, UsageLog};

use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::fmt;
use core::future::Future;
use core::net::IpAddr;

use crate::store::StoreError;
use crate::{DenialCode, KeyId, SpendPeriod, Timestamp};

/// The most records one page of a key's log holds.
pub const MAX_LOG_PAGE: usize = 250;

/// One decided request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogRecord {
    /// The store's id for the record (0 until it is stored); orders records of the same time.
    pub id: u64,
    /// When the request was decided.
    pub at: Timestamp,
    /// The key's public id: the verified key's, or the kid a refused token named.
    pub key: Option<KeyId>,
    /// Whether `key`'s secret was proven.
    pub verified: bool,
    /// The key's team.
    pub team: Option<String>,
    /// The route label the server gave the request.
    pub route: Option<String>,
    /// The model the request asked for.
    pub model: Option<String>,
    /// The provider the request went to.
    pub provider: Option<String>,
    /// `None` if the request was admitted, else the denial's code.
    pub code: Option<DenialCode>,
    /// The HTTP status answered, when known.
    pub status: Option<u16>,
    /// Tokens used.
    pub tokens: u32,
    /// Tokens of the request (a chat's prompt), when the server split them.
    pub tokens_in: Option<u32>,
    /// Tokens of the reply (a chat's completion), when the server split them.
    pub tokens_out: Option<u32>,
    /// Cost in micro-units of currency.
    pub cost_micros: u64,
    /// How long the request took, in microseconds (a denial: its check).
    pub latency_us: Option<u64>,
    /// The client's address, when [`LogConfig::client_ip`] is set.
    pub client_ip: Option<IpAddr>,
}

impl LogRecord {
    /// A record of a request decided at `at`, with nothing else known.
    #[must_use]
    pub const fn new(at: Timestamp) -> Self {
        Self {
            id: 0,
            at,
            key: None,
            verified: false,
            team: None,
            route: None,
            model: None,
            provider: None,
            code: None,
            status: None,
            tokens: 0,
            tokens_in: None,
            tokens_out: None,
            cost_micros: 0,
            latency_us: None,
            client_ip: None,
        }
    }

    /// `ok`, or the denial's code.
    #[must_use]
    pub const fn outcome(&self) -> &'static str {
        match self.code {
            Some(code) => code.as_str(),
            None => "ok",
        }
    }

    /// The cursor that pages on after this record.
    #[must_use]
    pub const fn cursor(&self) -> Cursor {
        Cursor { at: self.at, id: self.id }
    }
}

/// A spend alert as the log keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlertRecord {
    /// When the crossing request's spend was recorded.
    pub at: Timestamp,
    /// The key.
    pub key: KeyId,
    /// The key's team.
    pub team: Option<String>,
    /// The threshold crossed, in percent of the cap.
    pub percent: u8,
    /// The key's spend in the period, in micro-units.
    pub spend_micros: u64,
    /// The cap, in micro-units.
    pub cap_micros: u64,
    /// The cap's period.
    pub period: SpendPeriod,
}

impl AlertRecord {
    /// An alert of `key` crossing `percent` of its cap `cap_micros` per `period`, at `at`.
    #[must_use]
    pub const fn new(
        at: Timestamp,
        key: KeyId,
        percent: u8,
        spend_micros: u64,
        cap_micros: u64,
        period: SpendPeriod,
    ) -> Self {
        Self { at, key, team: None, percent, spend_micros, cap_micros, period }
    }
}

/// What one flush writes: records and alerts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogBatch {
    /// The requests, in the order they were decided.
    pub records: Vec<LogRecord>,
    /// The spend alerts.
    pub alerts: Vec<AlertRecord>,
}

impl LogBatch {
    /// Whether there is nothing to write.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.alerts.is_empty()
    }

    /// Records and alerts together.
    #[must_use]
    pub fn len(&self) -> usize {
        self.records.len() + self.alerts.len()
    }
}

/// Where a page of a key's log ends: the next page holds the records before it (newest first).
/// Its text form (`<nanoseconds>-<id>`) is what the API hands out; treat it as opaque.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cursor {
    /// The last record's time.
    pub at: Timestamp,
    /// The last record's id.
    pub id: u64,
}

impl Cursor {
    /// Whether a record at `at` with `id` comes after this cursor, newest first.
    #[must_use]
    pub fn precedes(&self, at: Timestamp, id: u64) -> bool {
        (at, id) < (self.at, self.id)
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.at.unix_nanos(), self.id)
    }
}

/// The text is not a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor from a previous page")]
pub struct InvalidCursor;

impl core::str::FromStr for Cursor {
    type Err = InvalidCursor;
    fn from_str(s: &str) -> Result<Self, InvalidCursor> {
        let (at, id) = s.split_once('-').ok_or(InvalidCursor)?;
        let digits = |t: &str| !t.is_empty() && t.bytes().all(|c| c.is_ascii_digit());
        if !digits(at) || !digits(id) {
            return Err(InvalidCursor);
        }
        Ok(Self {
            at: Timestamp::from_unix_nanos(at.parse().map_err(|_| InvalidCursor)?),
            id: id.parse().map_err(|_| InvalidCursor)?,
        })
    }
}

/// A page of one key's log, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogQuery {
    /// The key.
    pub key: KeyId,
    /// Records at or after this time.
    pub from: Option<Timestamp>,
    /// Records before this time.
    pub to: Option<Timestamp>,
    /// The page size, 1 to [`MAX_LOG_PAGE`].
    pub limit: usize,
    /// Records after this cursor (from the previous page).
    pub cursor: Option<Cursor>,
}

impl LogQuery {
    /// The newest `limit` records of `key` (at most [`MAX_LOG_PAGE`]).
    #[must_use]
    pub fn new(key: KeyId, limit: usize) -> Self {
        Self { key, from: None, to: None, limit: limit.clamp(1, MAX_LOG_PAGE), cursor: None }
    }

    /// Whether a record falls in the query's key and window, after its cursor.
    #[must_use]
    pub fn matches(&self, r: &LogRecord) -> bool {
        r.key == Some(self.key)
            && self.from.is_none_or(|from| r.at >= from)
            && self.to.is_none_or(|to| r.at < to)
            && self.cursor.is_none_or(|c| c.precedes(r.at, r.id))
    }
}

/// One page of a key's log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogPage {
    /// The records, newest first.
    pub records: Vec<LogRecord>,
    /// The cursor of the next page, if there may be one.
    pub next: Option<Cursor>,
}

impl LogPage {
    /// The page of `records` (newest first, one more than `limit` if there are more).
    #[must_use]
    pub fn of(mut records: Vec<LogRecord>, limit: usize) -> Self {
        let more = records.len() > limit;
        records.truncate(limit);
        let next = if more { records.last().map(LogRecord::cursor) } else { None };
        Self { records, next }
    }
}

/// How usage is summed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GroupBy {
    /// Per key.
    Key,
    /// Per model.
    Model,
    /// Per UTC day.
    Day,
}

impl GroupBy {
    /// `key`, `model` or `day`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Model => "model",
            Self::Day => "day",
        }
    }
}

/// Usage summed over a period.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageQuery {
    /// Only this team's records (`None`: every team's).
    pub team: Option<String>,
    /// Only this key's records.
    pub key: Option<KeyId>,
    /// Records at or after this time.
    pub from: Option<Timestamp>,
    /// Records before this time.
    pub to: Option<Timestamp>,
    /// How the sums are grouped.
    pub group_by: GroupBy,
}

impl UsageQuery {
    /// Every record, grouped by `group_by`.
    #[must_use]
    pub const fn new(group_by: GroupBy) -> Self {
        Self { team: None, key: None, from: None, to: None, group_by }
    }

    /// Whether a record counts in the sums.
    #[must_use]
    pub fn matches(&self, r: &LogRecord) -> bool {
        self.team.as_ref().is_none_or(|t| r.team.as_ref() == Some(t))
            && self.key.is_none_or(|k| r.key == Some(k))
            && self.from.is_none_or(|from| r.at >= from)
            && self.to.is_none_or(|to| r.at < to)
    }

    /// The group a record sums into: the key's id, the model, or the day (`YYYY-MM-DD`).
    #[must_use]
    pub fn group_of(&self, r: &LogRecord) -> Option<String> {
        match self.group_by {
            GroupBy::Key => r.key.map(|k| String::from(k.as_str())),
            GroupBy::Model => r.model.clone(),
            GroupBy::Day => Some(day(r.at.unix_nanos() / DAY_NANOS)),
        }
    }
}

const DAY_NANOS: u64 = 86_400 * 1_000_000_000;

/// Day `n` since the Unix epoch as `YYYY-MM-DD`.
pub(crate) fn day(n: u64) -> String {
    let date = Timestamp::from_unix_secs(n.saturating_mul(86_400)).date();
    alloc::format!("{:04}-{:02}-{:02}", date.year, date.month, date.day)
}

/// The sums of one group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct UsageRow {
    /// The key's id, the model, or the day (`YYYY-MM-DD`); `None` for records without one.
    pub group: Option<String>,
    /// Requests decided.
    pub requests: u64,
    /// Of those, denied.
    pub denied: u64,
    /// Tokens used.
    pub tokens: u64,
    /// Tokens of the requests.
    pub tokens_in: u64,
    /// Tokens of the replies.
    pub tokens_out: u64,
    /// Cost in micro-units.
    pub cost_micros: u64,
}

impl UsageRow {
    /// Adds a record.
    pub fn add(&mut self, r: &LogRecord) {
        self.requests += 1;
        self.denied += u64::from(r.code.is_some());
        self.tokens += u64::from(r.tokens);
        self.tokens_in += u64::from(r.tokens_in.unwrap_or(0));
        self.tokens_out += u64::from(r.tokens_out.unwrap_or(0));
        self.cost_micros = self.cost_micros.saturating_add(r.cost_micros);
    }
}

/// Which spend alerts to read, newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AlertQuery {
    /// Only this team's alerts (`None`: every team's).
    pub team: Option<String>,
    /// Only this key's alerts.
    pub key: Option<KeyId>,
    /// Alerts at or after this time.
    pub from: Option<Timestamp>,
    /// Alerts before this time.
    pub to: Option<Timestamp>,
    /// The most alerts returned, 1 to [`MAX_LOG_PAGE`].
    pub limit: usize,
}

impl AlertQuery {
    /// The newest `limit` alerts of every key.
    #[must_use]
    pub fn new(limit: usize) -> Self {
        Self { team: None, key: None, from: None, to: None, limit: limit.clamp(1, MAX_LOG_PAGE) }
    }

    /// Whether an alert matches.
    #[must_use]
    pub fn matches(&self, a: &AlertRecord) -> bool {
        self.team.as_ref().is_none_or(|t| a.team.as_ref() == Some(t))
            && self.key.is_none_or(|k| a.key == k)
            && self.from.is_none_or(|from| a.at >= from)
            && self.to.is_none_or(|to| a.at < to)
    }
}

/// Where the usage log keeps its records: [`MemoryLog`] (a bounded ring in memory), and with
/// the `sqlite` and `postgres` features [`SqliteStore`](crate::SqliteStore) and
/// [`PostgresStore`](crate::PostgresStore) (tables created by their migrations).
///
/// Every method is asynchronous and its future `Send`; a store in memory answers at once.
pub trait LogStore: Send + Sync {
    /// Writes a batch.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store fails: nothing of the batch may have been written.
    fn append(&self, batch: &LogBatch) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// One page of a key's records, newest first.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store fails.
    fn records(&self, query: &LogQuery) -> impl Future<Output = Result<LogPage, StoreError>> + Send;

    /// Usage summed per group, in the group's order (keys and models by name, days by date;
    /// records without a group first).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store fails.
    fn usage(&self, query: &UsageQuery) -> impl Future<Output = Result<Vec<UsageRow>, StoreError>> + Send;

    /// Spend alerts, newest first (of the same time: by key, then the highest threshold
    /// first, all descending).
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store fails.
    fn alerts(&self, query: &AlertQuery) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send;

    /// Deletes records and alerts from before `before`; returns how many.
    ///
    /// # Errors
    ///
    /// A [`StoreError`] if the store fails.
    fn prune(&self, before: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send;
}

impl<T: LogStore + ?Sized> LogStore for Arc<T> {
    fn append(&self, batch: &LogBatch) -> impl Future<Output = Result<(), StoreError>> + Send {
        (**self).append(batch)
    }
    fn records(&self, query: &LogQuery) -> impl Future<Output = Result<LogPage, StoreError>> + Send {
        (**self).records(query)
    }
    fn usage(&self, query: &UsageQuery) -> impl Future<Output = Result<Vec<UsageRow>, StoreError>> + Send {
        (**self).usage(query)
    }
    fn alerts(&self, query: &AlertQuery) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        (**self).alerts(query)
    }
    fn prune(&self, before: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        (**self).prune(before)
    }
}
