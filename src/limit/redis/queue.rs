//! The settlement queue: what requests did, waiting to be sent in batches by a background task.
//!
//! Bounded: past [`RedisConfig::max_pending`](super::RedisConfig::max_pending) a settlement is
//! refused and counted. A settlement is kept until Redis answered it, or until its lease has
//! expired (sending it then would change nothing); one that failed goes back to the front.

use alloc::collections::VecDeque;
use alloc::vec::Vec;
use core::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use super::super::{LimitBatch, LimitError};
use crate::{KeyId, Timestamp};

/// A settlement waiting to be sent.
pub(super) struct Settlement {
    pub(super) key: KeyId,
    pub(super) batch: LimitBatch,
    pub(super) now: Timestamp,
    /// It releases a lease, and is applied only while that lease is held: exactly once, however
    /// often it is sent. Without one it is sent at most once.
    pub(super) once: bool,
    /// When its lease expires: past it, it is dropped.
    pub(super) until: Instant,
}

pub(super) struct Queue {
    items: Mutex<VecDeque<Settlement>>,
    /// Settlements taken by a sender and not yet answered.
    sending: AtomicUsize,
    capacity: usize,
    dropped: AtomicU64,
    pub(super) wake: tokio::sync::Notify,
    pub(super) started: AtomicBool,
}

impl Queue {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            sending: AtomicUsize::new(0),
            capacity: capacity.max(1),
            dropped: AtomicU64::new(0),
            wake: tokio::sync::Notify::new(),
            started: AtomicBool::new(false),
        }
    }

    fn items(&self) -> MutexGuard<'_, VecDeque<Settlement>> {
        self.items.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `settlement`; refuses it (and counts it) when the queue is full: as many are
    /// waiting or being sent as it holds.
    pub(super) fn push(&self, settlement: Settlement) -> Result<(), LimitError> {
        let mut items = self.items();
        if items.len() + self.sending.load(Ordering::Acquire) >= self.capacity {
            drop(items);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(LimitError::Unavailable);
        }
        items.push_back(settlement);
        drop(items);
        self.wake.notify_one();
        Ok(())
    }

    /// Up to `max` settlements, oldest first, to send; those whose lease expired are dropped.
    pub(super) fn take(&self, max: usize) -> Vec<Settlement> {
        let now = Instant::now();
        let mut items = self.items();
        let mut taken = Vec::with_capacity(max.min(items.len()));
        while taken.len() < max {
            let Some(next) = items.pop_front() else { break };
            if next.until < now {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            } else {
                taken.push(next);
            }
        }
        self.sending.fetch_add(taken.len(), Ordering::AcqRel);
        taken
    }

    /// `sent` settlements were answered (or given up); `failed` go back to the front, in order.
    pub(super) fn settled(&self, sent: usize, failed: Vec<Settlement>) {
        let back = failed.len();
        if back > 0 {
            let mut items = self.items();
            for settlement in failed.into_iter().rev() {
                items.push_front(settlement);
            }
        }
        self.sending.fetch_sub(sent + back, Ordering::AcqRel);
    }

    /// Counts a settlement given up.
    pub(super) fn drop_one(&self) {
        self.dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Settlements queued or being sent.
    pub(super) fn pending(&self) -> usize {
        self.items().len() + self.sending.load(Ordering::Acquire)
    }

    pub(super) fn is_empty(&self) -> bool {
        self.items().is_empty()
    }

    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}
