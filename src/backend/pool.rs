//! Per-shard pools of [`BackendConn`] on deadpool's managed pool.
//!
//! deadpool only runs `recycle` on checkout, so the session decides at release time:
//! a connection goes back only when [`BackendConn::is_clean`]; otherwise it is taken
//! out of the pool and dropped (closing the socket), freeing its slot for a fresh one.

use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};

use super::{BackendConn, BackendError};
use crate::config::{Config, ShardConfig};
use crate::sharding::ShardId;

/// Creates and checks connections for one shard.
pub struct Manager {
    shard: ShardId,
    cfg: ShardConfig,
    connect_timeout: Duration,
}

impl managed::Manager for Manager {
    type Type = BackendConn;
    type Error = BackendError;

    async fn create(&self) -> Result<BackendConn, BackendError> {
        let conn = BackendConn::connect(self.shard, &self.cfg, self.connect_timeout).await?;
        tracing::debug!(shard = %self.cfg.name, pid = conn.key.0, "backend connection opened");
        Ok(conn)
    }

    async fn recycle(&self, conn: &mut BackendConn, _: &Metrics) -> RecycleResult<BackendError> {
        if conn.is_reusable() {
            Ok(())
        } else {
            Err(RecycleError::message("connection closed or not idle"))
        }
    }
}

/// A checked-out connection; returns to its pool on drop.
pub type PooledConn = Object<Manager>;

/// One pool per shard, indexed by [`ShardId`].
pub struct Pools {
    pools: Vec<managed::Pool<Manager>>,
    names: Vec<String>,
    wait_timeout: Duration,
}

impl Pools {
    /// Build (lazily connecting) pools for every shard in `config`.
    pub fn new(config: &Config) -> Pools {
        let server = &config.server;
        let pools = config
            .shards
            .iter()
            .enumerate()
            .map(|(shard, cfg)| {
                let manager = Manager {
                    shard,
                    cfg: cfg.clone(),
                    connect_timeout: server.connect_timeout,
                };
                managed::Pool::builder(manager)
                    .max_size(server.pool_size)
                    .wait_timeout(Some(server.pool_timeout))
                    .create_timeout(Some(server.connect_timeout))
                    .recycle_timeout(Some(Duration::from_secs(1)))
                    .runtime(Runtime::Tokio1)
                    .build()
                    .expect("pool builder with a runtime cannot fail")
            })
            .collect();
        Pools {
            pools,
            names: config.shards.iter().map(|s| s.name.clone()).collect(),
            wait_timeout: server.pool_timeout,
        }
    }

    /// Check out a connection to `shard`.
    pub async fn get(&self, shard: ShardId) -> Result<PooledConn, BackendError> {
        match self.pools[shard].get().await {
            Ok(conn) => Ok(conn),
            Err(PoolError::Backend(e)) => Err(e),
            Err(PoolError::Timeout(managed::TimeoutType::Wait)) => {
                Err(BackendError::PoolTimeout(self.wait_timeout))
            }
            Err(PoolError::Timeout(_)) => Err(BackendError::ConnectTimeout(self.wait_timeout)),
            Err(other) => Err(BackendError::Protocol(other.to_string())),
        }
    }

    /// Give a connection back: into the pool when reusable, otherwise closed.
    pub fn release(conn: PooledConn) {
        if !conn.is_clean() {
            let conn = Object::take(conn);
            tracing::debug!(shard = conn.shard, status = ?conn.status, broken = conn.broken,
                "discarding backend connection that is not clean");
            drop(conn);
        }
    }

    /// Shard name for messages.
    pub fn shard_name(&self, shard: ShardId) -> &str {
        &self.names[shard]
    }
}
