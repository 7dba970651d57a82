//! How a [`RedisLimitStore`](super::RedisLimitStore) connects, names its keys and queues its
//! settlements.

use alloc::string::String;
use core::time::Duration;

/// How a [`RedisLimitStore`](super::RedisLimitStore) connects, names its keys and queues its
/// settlements.
///
/// ```
/// use core::time::Duration;
/// use keygate::limit::RedisConfig;
///
/// let config = RedisConfig::default()
///     .with_prefix("gw-eu")
///     .with_io_timeout(Duration::from_millis(100))
///     .with_concurrency_lease(Duration::from_secs(300));
/// assert_eq!(config.prefix, "gw-eu");
/// assert_eq!(config.max_pending, RedisConfig::default().max_pending);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisConfig {
    /// The longest wait for a connection (TCP connect and handshake); 1 s by default.
    pub connect_timeout: Duration,
    /// The longest wait for a reply; 250 ms by default. An admission that waits longer is
    /// refused with `503 auth_unavailable`.
    pub io_timeout: Duration,
    /// The first part of every key; `keygate` by default. Must not contain `{` or `}`.
    pub prefix: String,
    /// How long a lease stays held if its admission never settles (its process died, or its
    /// call timed out after Redis took it); 10 minutes by default (rounded up to whole
    /// milliseconds, at least 1 ms). A settlement that arrives later finds its lease gone and
    /// changes nothing, so make it longer than the longest request.
    pub concurrency_lease: Duration,
    /// How much longer than its state needs every key is kept; 0 by default.
    pub expiry_grace: Duration,
    /// The most settlements waiting to be sent (default 100 000). When the queue is full a new
    /// settlement is refused and counted
    /// ([`RedisLimitStore::dropped_settlements`](super::RedisLimitStore::dropped_settlements)):
    /// its request stays charged its estimates and its lease stays held until it expires.
    pub max_pending: usize,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(1),
            io_timeout: Duration::from_millis(250),
            prefix: String::from("keygate"),
            concurrency_lease: Duration::from_secs(600),
            expiry_grace: Duration::ZERO,
            max_pending: 100_000,
        }
    }
}

impl RedisConfig {
    /// The same configuration with this key prefix.
    #[must_use]
    pub fn with_prefix(mut self, prefix: &str) -> Self {
        self.prefix = String::from(prefix);
        self
    }

    /// The same configuration with this connect timeout.
    #[must_use]
    pub fn with_connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The same configuration with this reply timeout.
    #[must_use]
    pub fn with_io_timeout(mut self, timeout: Duration) -> Self {
        self.io_timeout = timeout;
        self
    }

    /// The same configuration with this concurrency lease.
    #[must_use]
    pub fn with_concurrency_lease(mut self, lease: Duration) -> Self {
        self.concurrency_lease = lease;
        self
    }

    /// The same configuration with this expiry grace.
    #[must_use]
    pub fn with_expiry_grace(mut self, grace: Duration) -> Self {
        self.expiry_grace = grace;
        self
    }

    /// The same configuration with this bound on queued settlements.
    #[must_use]
    pub fn with_max_pending(mut self, max: usize) -> Self {
        self.max_pending = max;
        self
    }
}
