//! State shared by all sessions of one proxy: configuration, the current shard map,
//! pools, the plan cache, and what was learned from the shards. Passed as `Arc`, never
//! a global.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use arc_swap::ArcSwap;
use tokio_util::sync::CancellationToken;

use super::auth::Verifier;
use super::reload::{self, ReloadError, ReloadOutcome};
use crate::admin::ShardStatus;
use crate::backend::{BreakerState, Pools};
use crate::config::{Config, ShardMap, UserConfig};
use crate::metrics::Metrics;
use crate::metrics::http::Scrape;
use crate::metrics::prometheus::{self, Gauges, ShardGauges};
use crate::router::KeyOrdinals;
use crate::sql::PlanCache;

/// Statements kept in the plan cache.
const PLAN_CACHE_SIZE: usize = 10_000;

/// ParameterStatus name/value pairs reported to clients at login.
pub type ServerParams = Arc<Vec<(String, String)>>;

/// Installs a new log filter (`[log] level`) in the running process's subscriber.
/// Given by `pgshard serve`, which owns the subscriber; absent in embedded servers
/// (tests) and when `PGSHARD_LOG` overrides the file.
pub type LogLevelSetter = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// Everything sessions share.
pub struct Shared {
    /// validated configuration (server settings, users, shards)
    pub config: Arc<Config>,
    /// the current shard map; replaced atomically on reload
    pub map: ArcSwap<ShardMap>,
    /// one pool per shard
    pub pools: Pools,
    /// SQL text → analysis
    pub plans: PlanCache,
    /// SCRAM verifiers by user name
    pub users: HashMap<String, Verifier>,
    /// key column positions learned from the catalog, for INSERT and COPY without a
    /// column list: (position among all columns, position among non-generated columns)
    pub ordinals: RwLock<HashMap<String, (usize, usize)>>,
    /// ParameterStatus values of the default shard, learned at the first login
    pub server_params: RwLock<Option<ServerParams>>,
    /// cancelled when the proxy shuts down
    pub shutdown: CancellationToken,
    /// client cancel keys → the backend process running their statement
    pub cancels: super::cancel::CancelRegistry,
    /// two-phase commits under way in this process (recovery leaves them alone)
    pub in_flight: crate::twophase::InFlight,
    /// slots held by a rebalance cutover: statements touching them wait
    pub holds: super::holds::SlotHolds,
    /// the shard map file the configuration came from; `None`: RELOAD is refused
    pub config_path: Option<PathBuf>,
    /// what the proxy counts (SHOW STATS, /metrics)
    pub metrics: Arc<Metrics>,
    /// shards PAUSEd from the admin console
    pub pauses: super::pause::Pauses,
    /// cancelling it asks the server to shut down gracefully (the admin console's
    /// SHUTDOWN); `shutdown` above is cancelled later, when sessions must end
    pub stop: CancellationToken,
    /// one reload at a time
    reload_lock: Mutex<()>,
    /// how a reload changes the log level (see [`LogLevelSetter`])
    log_level_setter: Option<LogLevelSetter>,
    /// the log level in force (`[log] level` at startup, then as reloaded)
    log_level: Mutex<String>,
}

impl Shared {
    /// Build the shared state for a configuration.
    pub fn new(config: Arc<Config>, shutdown: CancellationToken) -> Shared {
        let users = config
            .users
            .iter()
            .map(|u: &UserConfig| (u.name.clone(), Verifier::from_secret(&u.secret)))
            .collect();
        Shared {
            map: ArcSwap::from_pointee(config.map.clone()),
            pools: Pools::new(&config),
            plans: PlanCache::new(PLAN_CACHE_SIZE),
            users,
            ordinals: RwLock::new(HashMap::new()),
            server_params: RwLock::new(None),
            cancels: Default::default(),
            in_flight: Default::default(),
            holds: Default::default(),
            config_path: None,
            metrics: Default::default(),
            pauses: Default::default(),
            stop: shutdown.clone(),
            reload_lock: Mutex::new(()),
            log_level_setter: None,
            log_level: Mutex::new(config.log.level.clone()),
            shutdown,
            config,
        }
    }

    /// Let RELOAD apply `[log] level` through `setter`.
    pub fn with_log_level_setter(mut self, setter: Option<LogLevelSetter>) -> Shared {
        self.log_level_setter = setter;
        self
    }

    /// The log level in force.
    pub fn log_level(&self) -> String {
        self.log_level
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Apply a reloaded `[log] level`; a level that cannot be applied here is named in
    /// `ignored`.
    fn reload_log_level(&self, level: &str, ignored: &mut Vec<&'static str>) {
        let mut now = self.log_level.lock().unwrap_or_else(|e| e.into_inner());
        if *now == level {
            return;
        }
        match &self.log_level_setter {
            Some(set) => match set(level) {
                Ok(()) => {
                    tracing::info!(old = %now, new = level, "log level changed");
                    *now = level.to_owned();
                }
                Err(e) => {
                    tracing::warn!(level, error = %e, "cannot apply [log] level; keeping the running one");
                    ignored.push("[log] level");
                }
            },
            None => ignored.push("[log] level"),
        }
    }

    /// The token that starts a graceful shutdown (see [`Shared::stop`]).
    pub fn with_stop(mut self, stop: CancellationToken) -> Shared {
        self.stop = stop;
        self
    }

    /// Remember the file the configuration was read from, so RELOAD can read it again.
    pub fn with_config_path(mut self, path: Option<PathBuf>) -> Shared {
        self.config_path = path;
        self
    }

    /// Read the shard map file again and install its shards, sharding rules and slot
    /// map (see [`super::reload`]). On any error the running map is unchanged.
    pub fn reload(&self) -> Result<ReloadOutcome, ReloadError> {
        let result = self.reload_file();
        let counter = match result {
            Ok(_) => &self.metrics.reloads_ok,
            Err(_) => &self.metrics.reloads_failed,
        };
        counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        result
    }

    fn reload_file(&self) -> Result<ReloadOutcome, ReloadError> {
        let path = self.config_path.as_ref().ok_or(ReloadError::NoFile)?;
        let _one = self.reload_lock.lock().unwrap_or_else(|e| e.into_inner());
        let new = crate::config::load(path)?;
        let old_map = self.map.load_full();
        let old_set = self.pools.current();
        let changed = reload::check(&old_map, &old_set.shards, &new.map, &new.shards)
            .map_err(ReloadError::Refused)?;
        let mut ignored = reload::ignored_sections(&self.config, &new);
        self.reload_log_level(&new.log.level, &mut ignored);
        for section in &ignored {
            tracing::warn!(
                section,
                "shard map file changed {section}, which reload does not apply; restart pgshard to apply it"
            );
        }
        if changed {
            // A session may load the map and index the pools a moment apart. When shards
            // are only appended, old indexes keep their meaning in the new pool set, so
            // the pools go first; otherwise the map goes first, so no new index points
            // past the end of the old pools.
            let appended = new.shards.len() >= old_set.shards.len()
                && old_set
                    .shards
                    .iter()
                    .zip(&new.shards)
                    .all(|(a, b)| a.name == b.name && a.url == b.url);
            let mut shards = new.shards;
            // [tls] is not reloaded: every shard, new ones too, keeps the running mode
            for shard in &mut shards {
                shard.tls = self.config.tls.backend.clone();
            }
            if appended {
                self.pools.install(&shards);
                self.map.store(Arc::new(new.map));
            } else {
                self.map.store(Arc::new(new.map));
                self.pools.install(&shards);
                self.holds.renumbered();
            }
        }
        let now = self.map.load();
        let outcome = ReloadOutcome {
            old_epoch: old_map.epoch,
            new_epoch: now.epoch,
            shards: now.shard_count(),
            changed,
            ignored,
        };
        tracing::info!(
            old_epoch = outcome.old_epoch,
            new_epoch = outcome.new_epoch,
            shards = outcome.shards,
            changed,
            "shard map reloaded"
        );
        Ok(outcome)
    }

    /// Forget learned key positions (after DDL, which may change column order).
    pub fn forget_ordinals(&self) {
        self.ordinals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
    }
}

impl Shared {
    /// The installed shards as the admin console shows them.
    pub fn shard_statuses(&self) -> Vec<ShardStatus> {
        let set = self.pools.current();
        let health = self.pools.health();
        let pools = self.pools.status();
        set.shards
            .iter()
            .map(|s| {
                let h = health.iter().find(|h| h.shard == s.name);
                let p = pools.iter().find(|p| p.shard == s.name);
                ShardStatus {
                    name: s.name.clone(),
                    host: s.host.clone(),
                    port: s.port,
                    database: s.dbname.clone(),
                    paused: self.pauses.is_paused(&s.name),
                    breaker: h.map_or(BreakerState::Closed, |h| h.state),
                    breaker_opened: h.map_or(0, |h| h.opened_total),
                    failures: h.map_or(0, |h| h.consecutive_failures),
                    last_error: h.and_then(|h| h.last_error.clone()),
                    pool_max: p.map_or(self.config.server.pool_size, |p| p.max_size),
                    active: p.map_or(0, |p| p.active),
                    idle: p.map_or(0, |p| p.idle),
                    waiting: p.map_or(0, |p| p.waiting),
                    max_wait: p.map_or(std::time::Duration::ZERO, |p| p.max_wait),
                }
            })
            .collect()
    }

    /// Wait until no connection to these shards is checked out, at most `limit`;
    /// `Err(n)`: `n` still are.
    pub async fn wait_idle(
        &self,
        shards: &[String],
        limit: std::time::Duration,
    ) -> Result<(), usize> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let busy: usize = self
                .pools
                .status()
                .iter()
                .filter(|p| shards.contains(&p.shard))
                .map(|p| p.active)
                .sum();
            if busy == 0 {
                return Ok(());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(busy);
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// The gauges read at scrape time: pools, breakers, pauses, epoch.
    pub fn gauges(&self) -> Gauges {
        Gauges {
            epoch: self.map.load().epoch,
            shards: self
                .shard_statuses()
                .into_iter()
                .map(|s| ShardGauges {
                    breaker: s.breaker.gauge(),
                    breaker_opened: s.breaker_opened,
                    active: s.active,
                    idle: s.idle,
                    max: s.pool_max,
                    waiting: s.waiting,
                    max_wait: s.max_wait,
                    paused: s.paused,
                    shard: s.name,
                })
                .collect(),
        }
    }
}

impl Scrape for Shared {
    fn metrics_text(&self) -> String {
        prometheus::render(&self.metrics, &self.gauges())
    }

    fn serving(&self) -> bool {
        !self.metrics.is_draining()
    }
}

/// A snapshot of the learned key positions, for the router.
pub struct OrdinalSnapshot<'a>(pub &'a HashMap<String, (usize, usize)>);

impl KeyOrdinals for OrdinalSnapshot<'_> {
    fn key_ordinal(&self, table: &str) -> Option<usize> {
        self.0.get(table).map(|p| p.0)
    }

    fn copy_key_ordinal(&self, table: &str) -> Option<usize> {
        self.0.get(table).map(|p| p.1)
    }
}
