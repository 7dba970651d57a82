//! Per-key usage counters for the current day, week and month, kept in memory.

use alloc::vec::Vec;
use core::hash::BuildHasher;
use std::sync::{Mutex, MutexGuard, PoisonError};

use foldhash::quality::RandomState;
use hashbrown::HashTable;

use super::{DecisionEvent, EventSink, UsageEvent};
use crate::{DenialCode, KeyId, SpendPeriod, Timestamp};

const SHARDS: usize = 32;
const CODES: usize = DenialCode::ALL.len();

/// A key's usage in one calendar period (UTC).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PeriodUsage {
    /// When the period began.
    pub start: Timestamp,
    /// Requests allowed.
    pub requests: u64,
    /// Denials after the key's secret was proven, by code (see [`PeriodUsage::denials`]).
    denials: [u64; CODES],
    /// Tokens used.
    pub tokens: u64,
    /// Spend in micro-units.
    pub spend_micros: u64,
    /// When the period ends (the next one's start); a check inside `start..end` needs no
    /// calendar arithmetic.
    end: Timestamp,
}

impl PeriodUsage {
    /// The denials with a non-zero count, by code.
    pub fn denials(&self) -> impl Iterator<Item = (DenialCode, u64)> + '_ {
        DenialCode::ALL.iter().zip(self.denials).filter(|(_, n)| *n > 0).map(|(c, n)| (*c, n))
    }

    /// The number of denials with `code`.
    #[must_use]
    pub fn denied(&self, code: DenialCode) -> u64 {
        DenialCode::ALL.iter().position(|c| *c == code).map_or(0, |i| self.denials[i])
    }

    #[inline]
    fn roll(&mut self, period: SpendPeriod, now: Timestamp) {
        if now < self.start || now >= self.end {
            self.roll_to(period, now);
        }
    }

    #[cold]
    fn roll_to(&mut self, period: SpendPeriod, now: Timestamp) {
        let (start, end) = period.bounds(now);
        if self.start != start {
            *self = Self { start, ..Self::default() };
        }
        self.end = end;
    }
}

/// A key's usage: the current day, ISO week and month, and when it was last used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyUsage {
    /// Since 00:00 UTC today.
    pub day: PeriodUsage,
    /// Since Monday 00:00 UTC.
    pub week: PeriodUsage,
    /// Since the first of the month, 00:00 UTC.
    pub month: PeriodUsage,
    /// The last allowed request.
    pub last_used: Option<Timestamp>,
}

impl KeyUsage {
    fn periods(&mut self, now: Timestamp) -> [&mut PeriodUsage; 3] {
        self.day.roll(SpendPeriod::Day, now);
        self.week.roll(SpendPeriod::Week, now);
        self.month.roll(SpendPeriod::Month, now);
        [&mut self.day, &mut self.week, &mut self.month]
    }
}

/// An [`EventSink`] that counts, per key, requests, denials by code, tokens and spend for the
/// current day, week and month.
///
/// Only keys whose secret was proven are counted (an attacker presenting made-up kids cannot
/// grow it); counters reset when their period ends. It is per process: instances behind a load
/// balancer each count their own traffic (the spend cap itself is enforced by the shared limit
/// store).
///
/// ```
/// use keygate::events::UsageStats;
/// let stats = UsageStats::new();
/// assert!(stats.get(&"4f9TqWm2Lx8RbC1d".parse()?, keygate::Timestamp::EPOCH).is_none());
/// # Ok::<(), keygate::format::InvalidKeyId>(())
/// ```
pub struct UsageStats {
    shards: Vec<Mutex<HashTable<(KeyId, KeyUsage)>>>,
    hasher: RandomState,
}

impl UsageStats {
    /// Empty counters.
    #[must_use]
    pub fn new() -> Self {
        Self { shards: (0..SHARDS).map(|_| Mutex::new(HashTable::new())).collect(), hasher: RandomState::default() }
    }

    /// The key's hash, and its shard, locked.
    fn shard(&self, key: &KeyId) -> (u64, MutexGuard<'_, HashTable<(KeyId, KeyUsage)>>) {
        let hash = self.hasher.hash_one(key);
        let shard = crate::shard::shard_of(hash, SHARDS);
        (hash, self.shards[shard].lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `f` on the key's usage under its shard's lock, creating it if `create`. The key is
    /// hashed once: it picks the shard, and the table probes with the same hash.
    fn with<T>(&self, key: &KeyId, create: bool, f: impl FnOnce(&mut KeyUsage) -> T) -> Option<T> {
        let (hash, mut table) = self.shard(key);
        if let Some((_, usage)) = table.find_mut(hash, |(k, _)| k == key) {
            return Some(f(usage));
        }
        if !create {
            return None;
        }
        let hasher = &self.hasher;
        let entry = table.insert_unique(hash, (*key, KeyUsage::default()), |(k, _)| hasher.hash_one(k));
        Some(f(&mut entry.into_mut().1))
    }

    /// The key's usage as of `now` (periods that ended read as empty), if it was ever seen.
    #[must_use]
    pub fn get(&self, key: &KeyId, now: Timestamp) -> Option<KeyUsage> {
        self.with(key, false, |usage| {
            let _ = usage.periods(now);
            *usage
        })
    }

    /// Forgets a key (when it is deleted).
    pub fn forget(&self, key: &KeyId) {
        let (hash, mut table) = self.shard(key);
        if let Ok(entry) = table.find_entry(hash, |(k, _)| k == key) {
            entry.remove();
        }
    }
}

impl Default for UsageStats {
    fn default() -> Self {
        Self::new()
    }
}

impl core::fmt::Debug for UsageStats {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("UsageStats").finish_non_exhaustive()
    }
}

impl EventSink for UsageStats {
    fn decision(&self, event: &DecisionEvent<'_>) {
        let Some(key) = event.key.filter(|_| event.verified) else { return };
        let code = event.code.and_then(|code| DenialCode::ALL.iter().position(|c| *c == code));
        self.with(&key, true, |usage| {
            for period in usage.periods(event.at) {
                match code {
                    Some(i) => period.denials[i] += 1,
                    None => period.requests += 1,
                }
            }
            if code.is_none() {
                usage.last_used = Some(usage.last_used.map_or(event.at, |t| t.max(event.at)));
            }
        });
    }

    fn usage(&self, event: &UsageEvent<'_>) {
        self.with(&event.key, true, |usage| {
            for period in usage.periods(event.at) {
                period.tokens = period.tokens.saturating_add(u64::from(event.tokens));
                period.spend_micros = period.spend_micros.saturating_add(event.spend_micros);
            }
        });
    }

    /// Counters do not read the check's latency: no clock is read for them.
    fn timed(&self) -> bool {
        false
    }
}
