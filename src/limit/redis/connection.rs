//! One multiplexed connection per store, to a server or a cluster: made on first use, shared by
//! every call (concurrent calls are pipelined on it), re-established after a failure.

use alloc::boxed::Box;
use alloc::string::String;
use alloc::vec::Vec;
use core::time::Duration;
use std::sync::{Mutex, PoisonError};

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{Client, RedisError, ScriptInvocation, Value};

use super::super::LimitError;

/// Where the store's state lives.
pub(super) enum Target {
    Server(Client),
    Cluster(Box<ClusterClient>),
}

#[derive(Clone)]
enum Connection {
    Server(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The store's connection, and how long it may take.
pub(super) struct Connector {
    target: Target,
    connection: Mutex<Option<Connection>>,
    connect_timeout: Duration,
    io_timeout: Duration,
}

impl Connector {
    /// A connector to a single server at `url`.
    pub(super) fn server(url: &str, connect_timeout: Duration, io_timeout: Duration) -> Result<Self, LimitError> {
        let client = Client::open(url).map_err(|_| LimitError::Unavailable)?;
        Ok(Self::new(Target::Server(client), connect_timeout, io_timeout))
    }

    /// A connector to the Redis Cluster that `urls` (some of its nodes) belong to.
    pub(super) fn cluster(urls: &[&str], connect_timeout: Duration, io_timeout: Duration) -> Result<Self, LimitError> {
        let nodes: Vec<String> = urls.iter().map(|u| String::from(*u)).collect();
        let client = ClusterClient::builder(nodes)
            .connection_timeout(connect_timeout)
            .response_timeout(io_timeout)
            .retries(2)
            .min_retry_wait(10)
            .max_retry_wait(100)
            .build()
            .map_err(|_| LimitError::Unavailable)?;
        Ok(Self::new(Target::Cluster(Box::new(client)), connect_timeout, io_timeout))
    }

    fn new(target: Target, connect_timeout: Duration, io_timeout: Duration) -> Self {
        Self { target, connection: Mutex::new(None), connect_timeout, io_timeout }
    }

    /// The longest a call waits: the connect and reply timeouts.
    pub(super) fn wait(&self) -> Duration {
        self.connect_timeout.saturating_add(self.io_timeout)
    }

    /// Whether the store is on a Redis Cluster.
    pub(super) const fn is_cluster(&self) -> bool {
        matches!(self.target, Target::Cluster(_))
    }

    /// Runs `invocation` (loading the script first if the server does not know it), waiting at
    /// most the connect and reply timeouts.
    pub(super) async fn eval(&self, invocation: &ScriptInvocation<'_>) -> Result<Value, LimitError> {
        let within = self.wait();
        let call = async {
            let connection = self.connection().await?;
            let result = match connection {
                Connection::Server(mut c) => invocation.invoke_async(&mut c).await,
                Connection::Cluster(mut c) => invocation.invoke_async(&mut c).await,
            };
            result.map_err(|e| error(&e))
        };
        match tokio::time::timeout(within, call).await {
            Ok(result) => result,
            Err(_) => Err(LimitError::Timeout),
        }
    }

    /// The shared connection, made on first use: a server's reconnects by itself after a
    /// failure; a cluster's follows the cluster's topology.
    async fn connection(&self) -> Result<Connection, LimitError> {
        if let Some(connection) = self.slot().clone() {
            return Ok(connection);
        }
        let connection = match &self.target {
            Target::Server(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(self.connect_timeout))
                    .set_response_timeout(Some(self.io_timeout))
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(100))
                    .set_number_of_retries(3);
                let manager = ConnectionManager::new_lazy_with_config(client.clone(), config).map_err(|e| error(&e))?;
                Connection::Server(manager)
            }
            Target::Cluster(client) => {
                let connect = client.get_async_connection();
                match tokio::time::timeout(self.connect_timeout, connect).await {
                    Ok(Ok(connection)) => Connection::Cluster(connection),
                    Ok(Err(e)) => return Err(error(&e)),
                    Err(_) => return Err(LimitError::Timeout),
                }
            }
        };
        Ok(self.slot().get_or_insert(connection).clone())
    }

    fn slot(&self) -> std::sync::MutexGuard<'_, Option<Connection>> {
        self.connection.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn error(e: &RedisError) -> LimitError {
    if e.is_timeout() { LimitError::Timeout } else { LimitError::Unavailable }
}
