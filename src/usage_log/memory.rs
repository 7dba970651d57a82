//! [`MemoryLog`]: the usage log in a bounded ring in memory, for one process.

use alloc::collections::{BTreeMap, VecDeque};
use alloc::string::String;
use alloc::vec::Vec;
use core::future::{Future, ready};
use std::sync::{Mutex, MutexGuard, PoisonError};

use super::{AlertQuery, AlertRecord, LogBatch, LogPage, LogQuery, LogRecord, LogStore, UsageQuery, UsageRow};
use crate::Timestamp;
use crate::store::StoreError;

/// The usage log in memory: the newest `capacity` records (and as many alerts); an older one
/// makes room for a newer one. Per process, and gone with it.
///
/// ```
/// use keygate::usage_log::{LogBatch, LogQuery, LogRecord, LogStore, MemoryLog};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let log = MemoryLog::new(10_000);
/// let key = "4f9TqWm2Lx8RbC1d".parse()?;
/// let mut record = LogRecord::new(keygate::Timestamp::now());
/// record.key = Some(key);
/// log.append(&LogBatch { records: vec![record], alerts: vec![] }).await?;
/// assert_eq!(log.records(&LogQuery::new(key, 50)).await?.records.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct MemoryLog {
    capacity: usize,
    ring: Mutex<Ring>,
}

#[derive(Debug, Default)]
struct Ring {
    records: VecDeque<LogRecord>,
    alerts: VecDeque<AlertRecord>,
    next_id: u64,
}

impl MemoryLog {
    /// A ring of at most `capacity` records (at least one).
    #[must_use]
    pub fn new(capacity: usize) -> Self {
        Self { capacity: capacity.max(1), ring: Mutex::new(Ring::default()) }
    }

    /// How many records it holds.
    #[must_use]
    pub fn len(&self) -> usize {
        self.ring().records.len()
    }

    /// Whether it holds no record.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        self.ring.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for MemoryLog {
    /// A ring of 100 000 records.
    fn default() -> Self {
        Self::new(100_000)
    }
}

/// Pushes onto a ring of `capacity`, the oldest making room.
fn push<T>(ring: &mut VecDeque<T>, capacity: usize, item: T) {
    if ring.len() == capacity {
        ring.pop_front();
    }
    ring.push_back(item);
}

impl LogStore for MemoryLog {
    fn append(&self, batch: &LogBatch) -> impl Future<Output = Result<(), StoreError>> + Send {
        let mut ring = self.ring();
        for record in &batch.records {
            ring.next_id += 1;
            let record = LogRecord { id: ring.next_id, ..record.clone() };
            push(&mut ring.records, self.capacity, record);
        }
        for alert in &batch.alerts {
            push(&mut ring.alerts, self.capacity, alert.clone());
        }
        ready(Ok(()))
    }

    fn records(&self, query: &LogQuery) -> impl Future<Output = Result<LogPage, StoreError>> + Send {
        let ring = self.ring();
        let mut found: Vec<LogRecord> = ring.records.iter().filter(|r| query.matches(r)).cloned().collect();
        drop(ring);
        found.sort_unstable_by_key(|r| core::cmp::Reverse((r.at, r.id)));
        found.truncate(query.limit + 1);
        ready(Ok(LogPage::of(found, query.limit)))
    }

    fn usage(&self, query: &UsageQuery) -> impl Future<Output = Result<Vec<UsageRow>, StoreError>> + Send {
        let mut groups: BTreeMap<Option<String>, UsageRow> = BTreeMap::new();
        for r in self.ring().records.iter().filter(|r| query.matches(r)) {
            let group = query.group_of(r);
            groups.entry(group.clone()).or_insert_with(|| UsageRow { group, ..UsageRow::default() }).add(r);
        }
        ready(Ok(groups.into_values().collect()))
    }

    fn alerts(&self, query: &AlertQuery) -> impl Future<Output = Result<Vec<AlertRecord>, StoreError>> + Send {
        let mut found: Vec<AlertRecord> = self.ring().alerts.iter().filter(|a| query.matches(a)).cloned().collect();
        found.sort_by_key(|a| core::cmp::Reverse((a.at, a.key, a.percent)));
        found.truncate(query.limit);
        ready(Ok(found))
    }

    fn prune(&self, before: Timestamp) -> impl Future<Output = Result<u64, StoreError>> + Send {
        let mut ring = self.ring();
        let (records, alerts) = (ring.records.len(), ring.alerts.len());
        ring.records.retain(|r| r.at >= before);
        ring.alerts.retain(|a| a.at >= before);
        let removed = records - ring.records.len() + alerts - ring.alerts.len();
        ready(Ok(u64::try_from(removed).unwrap_or(u64::MAX)))
    }
}
