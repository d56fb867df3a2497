//! Per-shard pools of [`BackendConn`] on deadpool's managed pool.
//!
//! deadpool only runs `recycle` on checkout, so the session decides at release time:
//! a connection goes back only when [`BackendConn::is_clean`]; otherwise it is taken
//! out of the pool and dropped (closing the socket), freeing its slot for a fresh one.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};

use super::{BackendConn, BackendError};
use crate::config::{Config, ServerConfig, ShardConfig};
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

/// One pool per shard, indexed by [`ShardId`]: the shard set of the installed map.
///
/// The set is swapped whole when a reload changes the `[[shards]]` list. A pool is kept
/// across a reload only when its shard keeps its name, URL and index: its manager stamps
/// that index on every connection, so a connection's `shard` always means the same
/// shard as in the set it came from.
pub struct Pools {
    set: ArcSwap<PoolSet>,
    server: ServerConfig,
}

/// The pools of one shard list.
pub struct PoolSet {
    pools: Vec<managed::Pool<Manager>>,
    /// the shards, index = ShardId
    pub shards: Vec<ShardConfig>,
}

/// Build the pool of one shard (connections are made lazily).
fn build_pool(shard: ShardId, cfg: &ShardConfig, server: &ServerConfig) -> managed::Pool<Manager> {
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
}

impl Pools {
    /// Build (lazily connecting) pools for every shard in `config`.
    pub fn new(config: &Config) -> Pools {
        let server = config.server.clone();
        let pools = config
            .shards
            .iter()
            .enumerate()
            .map(|(shard, cfg)| build_pool(shard, cfg, &server))
            .collect();
        Pools {
            set: ArcSwap::from_pointee(PoolSet {
                pools,
                shards: config.shards.clone(),
            }),
            server,
        }
    }

    /// Install the pools for a new shard list (index = ShardId of the new map). Pools
    /// of shards that keep name, URL and index are kept with their connections; the
    /// others are built fresh, and pools of shards no longer listed are dropped (their
    /// idle connections close; checked-out ones close when given back).
    pub fn install(&self, shards: &[ShardConfig]) {
        let old = self.set.load_full();
        let pools = shards
            .iter()
            .enumerate()
            .map(|(i, cfg)| match (old.shards.get(i), old.pools.get(i)) {
                (Some(prev), Some(pool)) if prev.name == cfg.name && prev.url == cfg.url => {
                    pool.clone()
                }
                _ => build_pool(i, cfg, &self.server),
            })
            .collect();
        self.set.store(Arc::new(PoolSet {
            pools,
            shards: shards.to_vec(),
        }));
    }

    /// The installed shard set (for cancel requests and listings).
    pub fn current(&self) -> Arc<PoolSet> {
        self.set.load_full()
    }

    /// Check out a connection to `shard`.
    pub async fn get(&self, shard: ShardId) -> Result<PooledConn, BackendError> {
        let Some(pool) = self.set.load().pools.get(shard).cloned() else {
            return Err(BackendError::Protocol(format!(
                "shard {shard} is no longer in the shard map"
            )));
        };
        match pool.get().await {
            Ok(conn) => Ok(conn),
            Err(PoolError::Backend(e)) => Err(e),
            Err(PoolError::Timeout(managed::TimeoutType::Wait)) => {
                Err(BackendError::PoolTimeout(self.server.pool_timeout))
            }
            Err(PoolError::Timeout(_)) => {
                Err(BackendError::ConnectTimeout(self.server.pool_timeout))
            }
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

    /// Shard name for messages (`"?"` for an index no longer in the shard set).
    pub fn shard_name(&self, shard: ShardId) -> String {
        self.set
            .load()
            .shards
            .get(shard)
            .map_or_else(|| "?".to_owned(), |s| s.name.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        crate::config::parse(include_str!("../config/testdata/base.toml"), "t")
            .expect("test map parses")
    }

    #[tokio::test]
    async fn install_replaces_the_shard_set() {
        let config = config();
        let pools = Pools::new(&config);
        assert_eq!(pools.shard_name(1), "s1");
        let mut added = config.shards.clone();
        let mut s2 = added[1].clone();
        s2.name = "s2".into();
        added.push(s2);
        pools.install(&added);
        assert_eq!(pools.current().shards.len(), 3);
        assert_eq!(pools.shard_name(2), "s2");
        // s0 removed: s1 is now index 0, s2 index 1, and index 2 is gone
        pools.install(&added[1..]);
        assert_eq!(pools.shard_name(0), "s1");
        assert_eq!(pools.shard_name(1), "s2");
        assert_eq!(pools.shard_name(2), "?");
        assert!(matches!(pools.get(2).await, Err(BackendError::Protocol(_))));
    }
}
