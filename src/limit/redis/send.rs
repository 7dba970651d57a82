//! The background sender: queued settlements sent in batches, one script call per key (up to
//! `MAX_PARTS` settlements each), concurrently on the one connection (so the calls travel
//! pipelined); those that fail and must not be lost go back to the front of the queue.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use super::script::{Call, MAX_PARTS, Part, Reply};
use super::{BACKOFF, BATCH, Inner, Settlement};
use crate::KeyId;
use crate::limit::LimitError;

/// The background sender: sends what is queued, in batches, until the store's last handle is
/// gone and nothing is left.
pub(super) async fn send_in_background(inner: Arc<Inner>) {
    loop {
        if inner.queue.is_empty() {
            if Arc::strong_count(&inner) == 1 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(100), inner.queue.wake.notified()).await;
            continue;
        }
        let batch = inner.queue.take(BATCH);
        if !batch.is_empty() && inner.send(batch).await.is_err() {
            tokio::time::sleep(BACKOFF).await;
        }
    }
}

impl Inner {
    /// Sends `batch` concurrently on the one connection (so the calls travel pipelined). Those
    /// that fail and must not be lost go back to the front of the queue.
    pub(super) async fn send(&self, batch: Vec<Settlement>) -> Result<(), LimitError> {
        // One call per key, at most MAX_PARTS settlements each, in the order they were queued.
        let mut groups: Vec<Vec<usize>> = Vec::new();
        let mut open: BTreeMap<KeyId, usize> = BTreeMap::new();
        for (i, s) in batch.iter().enumerate() {
            match open.get(&s.key) {
                Some(&g) if groups[g].len() < MAX_PARTS => groups[g].push(i),
                _ => {
                    open.insert(s.key, groups.len());
                    groups.push(alloc::vec![i]);
                }
            }
        }
        let hashes: Vec<String> = groups.iter().map(|g| format!("{}:{{{}}}", self.prefix, batch[g[0]].key)).collect();
        let parts: Vec<Vec<Part<'_>>> = groups
            .iter()
            .map(|g| {
                g.iter()
                    .map(|&i| {
                        let s = &batch[i];
                        Part { cells: s.batch.cells(), ops: s.batch.ops(), now: s.now, once: s.once }
                    })
                    .collect()
            })
            .collect();
        let calls: Vec<Call<'_>> = hashes.iter().zip(&parts).map(|(hash, parts)| self.call(hash, parts)).collect();
        let invocations: Vec<_> = calls.iter().map(|c| c.invocation(&self.script)).collect();
        let replies = futures_util::future::join_all(invocations.iter().map(|i| self.connector.eval(i))).await;
        let mut outcomes: Vec<Option<Result<Reply, LimitError>>> = batch.iter().map(|_| None).collect();
        for ((call, group), reply) in calls.iter().zip(&groups).zip(replies) {
            match reply.and_then(|reply| call.decode(&reply)) {
                Ok(decided) => {
                    for (&i, outcome) in group.iter().zip(decided) {
                        outcomes[i] = Some(Ok(outcome));
                    }
                }
                Err(e) => {
                    for &i in group {
                        outcomes[i] = Some(Err(e));
                    }
                }
            }
        }
        drop(invocations);
        drop(calls);
        drop(parts);
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut sent = 0;
        for (settlement, outcome) in batch.into_iter().zip(outcomes) {
            match outcome.unwrap_or(Err(LimitError::Corrupt)) {
                Ok(Reply::Decided(Ok(_)) | Reply::LeaseGone) => sent += 1,
                Ok(Reply::Decided(Err(_))) | Err(LimitError::Corrupt) => {
                    sent += 1;
                    self.queue.drop_one();
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    if settlement.once {
                        failed.push(settlement);
                    } else {
                        // It may have run: sent again, it could count twice.
                        sent += 1;
                        self.queue.drop_one();
                    }
                }
            }
        }
        self.queue.settled(sent, failed);
        first_error.map_or(Ok(()), Err)
    }
}
