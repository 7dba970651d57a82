//! The background sender: queued settlements sent in batches, concurrently on the one
//! connection (so the calls travel pipelined); those that fail and must not be lost go back to
//! the front of the queue.

use alloc::format;
use alloc::string::String;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::time::Duration;

use super::script::{Call, Reply};
use super::{BACKOFF, BATCH, Inner, Settlement};
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
        let hashes: Vec<String> = batch.iter().map(|s| format!("{}:{{{}}}", self.prefix, s.key)).collect();
        let calls: Vec<Call<'_>> = batch
            .iter()
            .zip(&hashes)
            .map(|(s, hash)| self.call(hash, s.batch.cells(), s.batch.ops(), s.now, s.once))
            .collect();
        let invocations: Vec<_> = calls.iter().map(|c| c.invocation(&self.script)).collect();
        let replies = futures_util::future::join_all(invocations.iter().map(|i| self.connector.eval(i))).await;
        let outcomes: Vec<_> =
            calls.iter().zip(replies).map(|(call, reply)| reply.and_then(|reply| call.decode(&reply))).collect();
        drop(invocations);
        drop(calls);
        let mut failed = Vec::new();
        let mut first_error = None;
        let mut sent = 0;
        for (settlement, outcome) in batch.into_iter().zip(outcomes) {
            match outcome {
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
