//! Per-shard pools of [`BackendConn`] on deadpool's managed pool.
//!
//! deadpool only runs `recycle` on checkout, so the session decides at release time:
//! a connection goes back only when [`BackendConn::is_clean`]; otherwise it is taken
//! out of the pool and dropped (closing the socket), freeing its slot for a fresh one.
//!
//! Each pool's manager carries the shard's circuit breaker ([`super::health`]), so the
//! breaker lives and dies with the pool: kept across a reload that keeps the pool,
//! fresh for a shard whose pool is rebuilt.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, Object, PoolError, RecycleError, RecycleResult};

use super::health::{ShardBreaker, ShardHealth};
use super::{BackendConn, BackendError};
use crate::config::{Config, HealthConfig, ServerConfig, ShardConfig};
use crate::sharding::ShardId;

/// Creates and checks connections for one shard.
pub struct Manager {
    shard: ShardId,
    cfg: ShardConfig,
    connect_timeout: Duration,
    /// the shard's circuit breaker; data-path connect results feed it
    breaker: ShardBreaker,
    /// longest a checkout has waited (µs), for [`PoolStatus::max_wait`]
    max_wait_us: AtomicU64,
}

impl managed::Manager for Manager {
    type Type = BackendConn;
    type Error = BackendError;

    async fn create(&self) -> Result<BackendConn, BackendError> {
        let result = BackendConn::connect(self.shard, &self.cfg, self.connect_timeout).await;
        self.breaker
            .record_connect(&self.cfg.name, result.as_ref().map(|_| ()));
        let mut conn = result?;
        conn.answered = Some(self.breaker.answered());
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

/// Gauges of one shard's pool, for the admin console and metrics.
#[derive(Debug, Clone)]
pub struct PoolStatus {
    /// shard name
    pub shard: String,
    /// most connections the pool opens (`[server] pool_size`)
    pub max_size: usize,
    /// connections open now
    pub size: usize,
    /// open connections not checked out
    pub idle: usize,
    /// connections checked out
    pub active: usize,
    /// checkouts waiting for a connection
    pub waiting: usize,
    /// longest a checkout has waited for a connection (including a connect) since the
    /// pool was built
    pub max_wait: Duration,
}

/// One pool per shard, indexed by [`ShardId`]: the shard set of the installed map.
///
/// The set is swapped whole when a reload changes the `[[shards]]` list. A pool is kept
/// across a reload only when its shard keeps its name, URL and index: its manager stamps
/// that index on every connection, so a connection's `shard` always means the same
/// shard as in the set it came from.
pub struct Pools {
    set: ArcSwap<PoolSet>,
    server: ServerConfig,
    health: HealthConfig,
}

/// The pools of one shard list.
pub struct PoolSet {
    pools: Vec<managed::Pool<Manager>>,
    /// the shards, index = ShardId
    pub shards: Vec<ShardConfig>,
}

/// Build the pool of one shard (connections are made lazily).
fn build_pool(
    shard: ShardId,
    cfg: &ShardConfig,
    server: &ServerConfig,
    health: &HealthConfig,
) -> managed::Pool<Manager> {
    let manager = Manager {
        shard,
        cfg: cfg.clone(),
        connect_timeout: server.connect_timeout,
        breaker: ShardBreaker::new(*health),
        max_wait_us: AtomicU64::new(0),
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
        let health = config.health;
        let pools = config
            .shards
            .iter()
            .enumerate()
            .map(|(shard, cfg)| build_pool(shard, cfg, &server, &health))
            .collect();
        Pools {
            set: ArcSwap::from_pointee(PoolSet {
                pools,
                shards: config.shards.clone(),
            }),
            server,
            health,
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
                _ => build_pool(i, cfg, &self.server, &self.health),
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

    /// Check out a connection to `shard`. Fails at once with
    /// [`BackendError::BreakerOpen`] while the shard's breaker is not closed, and
    /// checkouts already waiting fail the moment it opens: clients of a dead shard get
    /// an answer instead of queueing for the pool timeout.
    pub async fn get(&self, shard: ShardId) -> Result<PooledConn, BackendError> {
        let Some(pool) = self.set.load().pools.get(shard).cloned() else {
            return Err(BackendError::Protocol(format!(
                "shard {shard} is no longer in the shard map"
            )));
        };
        let manager = pool.manager();
        let breaker = &manager.breaker;
        // registered before the check, so an opening in between still wakes us
        let opened = breaker.opened();
        tokio::pin!(opened);
        opened.as_mut().enable();
        if !breaker.admits() {
            return Err(breaker.open_error(&manager.cfg.name));
        }
        let start = Instant::now();
        let got = tokio::select! {
            biased;
            got = pool.get() => got,
            () = &mut opened => return Err(breaker.open_error(&manager.cfg.name)),
        };
        let waited = u64::try_from(start.elapsed().as_micros()).unwrap_or(u64::MAX);
        manager.max_wait_us.fetch_max(waited, Ordering::Relaxed);
        match got {
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

    /// Start one health check of every shard of the installed set, each in its own
    /// task, and return: a shard whose check hangs until `timeout_ms` does not hold up
    /// the others' (a shard whose previous check still runs, or whose open breaker is
    /// inside its cool-down, is skipped). While a breaker refuses clients its pool's
    /// idle connections are dropped: they most likely point at a dead server process,
    /// and a recovered shard should be served by fresh ones.
    pub fn start_health_checks(&self) {
        let set = self.set.load_full();
        for (shard, (pool, cfg)) in set.pools.iter().zip(&set.shards).enumerate() {
            if pool.manager().breaker.checking() {
                continue;
            }
            let (pool, cfg) = (pool.clone(), cfg.clone());
            tokio::spawn(async move {
                let breaker = &pool.manager().breaker;
                breaker.check(shard, &cfg).await;
                if !breaker.admits() {
                    pool.retain(|_, _| false);
                }
            });
        }
    }

    /// Health of each shard, in the order of the installed shard set.
    pub fn health(&self) -> Vec<ShardHealth> {
        let set = self.set.load();
        set.pools
            .iter()
            .zip(&set.shards)
            .map(|(pool, cfg)| pool.manager().breaker.snapshot(&cfg.name))
            .collect()
    }

    /// Pool gauges of each shard, in the order of the installed shard set.
    pub fn status(&self) -> Vec<PoolStatus> {
        let set = self.set.load();
        set.pools
            .iter()
            .zip(&set.shards)
            .map(|(pool, cfg)| {
                let s = pool.status();
                PoolStatus {
                    shard: cfg.name.clone(),
                    max_size: s.max_size,
                    size: s.size,
                    idle: s.available,
                    active: s.size.saturating_sub(s.available),
                    waiting: s.waiting,
                    max_wait: Duration::from_micros(
                        pool.manager().max_wait_us.load(Ordering::Relaxed),
                    ),
                }
            })
            .collect()
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

    #[tokio::test]
    async fn a_hanging_shard_does_not_hold_up_the_other_shards_checks() {
        use crate::backend::BreakerState;
        let mut config = config();
        // s0 refuses connections; s1 takes them into its backlog and never answers
        let refusing = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        config.shards[0].port = refusing.local_addr().unwrap().port();
        drop(refusing);
        let hanging = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        config.shards[1].port = hanging.local_addr().unwrap().port();
        config.health.timeout = Duration::from_secs(5);
        config.health.failure_threshold = 3;
        let pools = Pools::new(&config);
        for _ in 0..10 {
            pools.start_health_checks();
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let health = pools.health();
        assert_eq!(health[0].state, BreakerState::Open, "{health:?}");
        // its first check still waits; no second one was started beside it
        assert_eq!(health[1].state, BreakerState::Closed, "{health:?}");
        assert_eq!(health[1].consecutive_failures, 0, "{health:?}");
        assert!(pools.current().pools[1].manager().breaker.checking());
    }

    #[tokio::test]
    async fn open_breaker_refuses_checkouts_and_stays_with_its_pool() {
        use crate::backend::BreakerState;
        let config = config();
        let pools = Pools::new(&config);
        let set = pools.current();
        for _ in 0..config.health.failure_threshold {
            set.pools[1]
                .manager()
                .breaker
                .record_connect("s1", Err(&BackendError::Closed));
        }
        let health = pools.health();
        assert_eq!(health.len(), 2);
        assert_eq!(
            (health[0].shard.as_str(), health[0].state),
            ("s0", BreakerState::Closed)
        );
        assert_eq!(
            (health[1].shard.as_str(), health[1].state),
            ("s1", BreakerState::Open)
        );
        assert_eq!(health[1].opened_total, 1);
        assert_eq!(
            health[1].last_check, None,
            "data-path failures are not checks"
        );
        match pools.get(1).await.err() {
            Some(BackendError::BreakerOpen {
                shard, failures, ..
            }) => assert_eq!((shard.as_str(), failures), ("s1", 3)),
            other => panic!("{other:?}"),
        }
        // kept across a reload that keeps the pool, fresh with a rebuilt one
        pools.install(&config.shards);
        assert_eq!(pools.health()[1].state, BreakerState::Open);
        let mut moved = config.shards.clone();
        moved[1].url = "postgres://postgres@127.0.0.1:5603/app".into();
        pools.install(&moved);
        assert_eq!(pools.health()[1].state, BreakerState::Closed);
        let status = pools.status();
        assert_eq!(status.len(), 2);
        assert_eq!(status[1].shard, "s1");
        assert_eq!(status[1].max_size, 10);
        assert_eq!(
            (
                status[1].size,
                status[1].idle,
                status[1].active,
                status[1].waiting
            ),
            (0, 0, 0, 0)
        );
    }

    #[test]
    fn disabled_health_never_opens() {
        let mut config = config();
        config.health.enabled = false;
        let pools = Pools::new(&config);
        let set = pools.current();
        for _ in 0..10 {
            set.pools[0]
                .manager()
                .breaker
                .record_connect("s0", Err(&BackendError::Closed));
        }
        assert!(set.pools[0].manager().breaker.admits());
    }
}
