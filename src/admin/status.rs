//! The admin console's status tables: SHOW SHARDS, POOLS, CLIENTS, STATS, CONFIG and
//! VERSION, built from plain inputs the session gathers (pure, so they are unit-tested
//! without a running proxy).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::{ColumnType, Table};
use crate::backend::BreakerState;
use crate::config::{Config, LogFormat, ShardMap, UnparsedPolicy};
use crate::metrics::{ClientInfo, HistogramSnapshot, RouteKind, ShardStats};

/// What the session knows about one installed shard when a SHOW runs.
#[derive(Debug, Clone, Default)]
pub struct ShardStatus {
    /// shard name
    pub name: String,
    /// host from the shard URL
    pub host: String,
    /// port from the shard URL
    pub port: u16,
    /// database from the shard URL
    pub database: String,
    /// PAUSEd from the admin console
    pub paused: bool,
    /// circuit breaker state
    pub breaker: BreakerState,
    /// times the breaker opened
    pub breaker_opened: u64,
    /// failed health checks in a row
    pub failures: u32,
    /// the last health check error, if the last check failed
    pub last_error: Option<String>,
    /// pool size limit
    pub pool_max: usize,
    /// connections checked out
    pub active: usize,
    /// connections idle in the pool
    pub idle: usize,
    /// checkouts waiting
    pub waiting: usize,
    /// longest checkout wait since start
    pub max_wait: Duration,
}

fn ms(d: Duration) -> String {
    format!("{:.3}", d.as_secs_f64() * 1000.0)
}

/// `SHOW SHARDS`: one row per installed shard, in map order.
pub fn shards_table(map: &ShardMap, shards: &[ShardStatus]) -> Table {
    let counts = map.slot_counts();
    let rows = shards
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let state = if s.breaker == BreakerState::Open {
                "unavailable"
            } else if s.paused {
                "paused"
            } else {
                "serving"
            };
            vec![
                s.name.clone(),
                s.host.clone(),
                s.port.to_string(),
                s.database.clone(),
                state.to_owned(),
                s.breaker.as_str().to_owned(),
                s.failures.to_string(),
                counts.get(i).copied().unwrap_or(0).to_string(),
                map.epoch.to_string(),
                s.last_error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    Table {
        columns: vec![
            ("shard", ColumnType::Text),
            ("host", ColumnType::Text),
            ("port", ColumnType::Int8),
            ("database", ColumnType::Text),
            ("state", ColumnType::Text),
            ("breaker", ColumnType::Text),
            ("failures", ColumnType::Int8),
            ("slots", ColumnType::Int8),
            ("epoch", ColumnType::Int8),
            ("last_error", ColumnType::Text),
        ],
        rows,
    }
}

/// `SHOW POOLS`: one row per installed shard.
pub fn pools_table(shards: &[ShardStatus]) -> Table {
    Table {
        columns: vec![
            ("shard", ColumnType::Text),
            ("pool_size", ColumnType::Int8),
            ("active", ColumnType::Int8),
            ("idle", ColumnType::Int8),
            ("waiting", ColumnType::Int8),
            ("max_wait_ms", ColumnType::Float8),
            ("paused", ColumnType::Bool),
        ],
        rows: shards
            .iter()
            .map(|s| {
                vec![
                    s.name.clone(),
                    s.pool_max.to_string(),
                    s.active.to_string(),
                    s.idle.to_string(),
                    s.waiting.to_string(),
                    ms(s.max_wait),
                    if s.paused { "t" } else { "f" }.to_owned(),
                ]
            })
            .collect(),
    }
}

/// `SHOW CLIENTS`: one row per connected client, oldest first.
pub fn clients_table(clients: &[std::sync::Arc<ClientInfo>], now: Instant) -> Table {
    Table {
        columns: vec![
            ("id", ColumnType::Int8),
            ("user", ColumnType::Text),
            ("database", ColumnType::Text),
            ("address", ColumnType::Text),
            ("tls", ColumnType::Bool),
            ("state", ColumnType::Text),
            ("connected_s", ColumnType::Int8),
            ("statements", ColumnType::Int8),
        ],
        rows: clients
            .iter()
            .map(|c| {
                let (user, database) = c.login().cloned().unwrap_or_default();
                vec![
                    c.id.to_string(),
                    user,
                    database,
                    c.addr.map(|a| a.to_string()).unwrap_or_default(),
                    if c.tls() { "t" } else { "f" }.to_owned(),
                    c.state().as_str().to_owned(),
                    now.saturating_duration_since(c.connected)
                        .as_secs()
                        .to_string(),
                    c.statements.load(Ordering::Relaxed).to_string(),
                ]
            })
            .collect(),
    }
}

/// Bucket-wise sum of two histogram snapshots.
fn combined(a: &HistogramSnapshot, b: &HistogramSnapshot) -> HistogramSnapshot {
    HistogramSnapshot {
        buckets: a
            .buckets
            .iter()
            .zip(&b.buckets)
            .map(|(x, y)| x + y)
            .collect(),
        sum: a.sum + b.sum,
        count: a.count + b.count,
    }
}

/// `SHOW STATS`: per shard counted since start: statements (single-shard and
/// scatter), errors, bytes, mean and 99th-percentile latency (the upper bound of the
/// histogram bucket holding it).
pub fn stats_table(shards: &[(String, std::sync::Arc<ShardStats>)]) -> Table {
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Table {
        columns: vec![
            ("shard", ColumnType::Text),
            ("queries", ColumnType::Int8),
            ("single", ColumnType::Int8),
            ("scatter", ColumnType::Int8),
            ("errors", ColumnType::Int8),
            ("bytes_sent", ColumnType::Int8),
            ("bytes_received", ColumnType::Int8),
            ("avg_ms", ColumnType::Float8),
            ("p99_ms", ColumnType::Float8),
        ],
        rows: shards
            .iter()
            .map(|(name, s)| {
                let (single, scatter) = (s.kind(RouteKind::Single), s.kind(RouteKind::Scatter));
                let h = combined(&single.latency.snapshot(), &scatter.latency.snapshot());
                vec![
                    name.clone(),
                    (load(&single.queries) + load(&scatter.queries)).to_string(),
                    load(&single.queries).to_string(),
                    load(&scatter.queries).to_string(),
                    (load(&single.errors) + load(&scatter.errors)).to_string(),
                    load(&s.bytes_to_server).to_string(),
                    load(&s.bytes_to_client).to_string(),
                    ms(h.mean()),
                    ms(h.quantile_bound(0.99).unwrap_or_default()),
                ]
            })
            .collect(),
    }
}

/// `SHOW CONFIG`: every setting in effect, and whether a RELOAD applies a change to it
/// (`reload`) or only a restart does (`restart`). Passwords are never shown.
/// `log_level` is the level in force (a reload may have changed it).
pub fn config_table(
    config: &Config,
    log_level: &str,
    map: &ShardMap,
    shard_urls: &[(String, String)],
) -> Table {
    let s = &config.server;
    let h = &config.health;
    let t = &config.transactions;
    let ms = |d: Duration| d.as_millis().to_string();
    // (key, value, when a change applies)
    let row = |key: &str, value: String, applies: &str| [key.to_owned(), value, applies.to_owned()];
    let restart = |key: &str, value: String| row(key, value, "restart");
    let reload = |key: &str, value: String| row(key, value, "reload");
    let unparsed = match s.unparsed {
        UnparsedPolicy::DefaultShard => "default_shard",
        UnparsedPolicy::Refuse => "refuse",
    };
    let format = match config.log.format {
        LogFormat::Text => "text",
        LogFormat::Json => "json",
    };
    let users = config
        .users
        .iter()
        .map(|u| {
            if u.admin {
                format!("{} (admin)", u.name)
            } else {
                u.name.clone()
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    let mut rows: Vec<[String; 3]> = vec![
        restart("server.listen", s.listen.to_string()),
        restart(
            "server.metrics_listen",
            s.metrics_listen.map(|a| a.to_string()).unwrap_or_default(),
        ),
        restart("server.pool_size", s.pool_size.to_string()),
        restart("server.pool_timeout_ms", ms(s.pool_timeout)),
        restart("server.connect_timeout_ms", ms(s.connect_timeout)),
        restart("server.max_clients", s.max_clients.to_string()),
        restart("server.max_message_size", s.max_message_size.to_string()),
        restart("server.unparsed", unparsed.into()),
        restart("server.merge_memory_mb", (s.merge_memory >> 20).to_string()),
        restart("server.hold_timeout_ms", ms(s.hold_timeout)),
        restart("server.shutdown_timeout_ms", ms(s.shutdown_timeout)),
        restart("server.drain_delay_ms", ms(s.drain_delay)),
        restart("server.login_timeout_ms", ms(s.login_timeout)),
        reload("log.level", log_level.to_owned()),
        restart("log.format", format.into()),
        restart("health.enabled", h.enabled.to_string()),
        restart("health.interval_ms", ms(h.interval)),
        restart("health.timeout_ms", ms(h.timeout)),
        restart("health.failure_threshold", h.failure_threshold.to_string()),
        restart("health.success_threshold", h.success_threshold.to_string()),
        restart("health.open_ms", ms(h.open)),
        restart("transactions.two_phase", t.two_phase.to_string()),
        restart("transactions.node", t.node.clone()),
        restart(
            "transactions.recover_interval_s",
            t.recover_interval.as_secs().to_string(),
        ),
        restart("users", users),
        row("sharding.slots", map.slots.to_string(), "fixed"),
        reload("sharding.vnodes", map.vnodes.to_string()),
        reload("sharding.epoch", map.epoch.to_string()),
        reload(
            "sharding.default_shard",
            map.shard_name(map.default_shard).to_owned(),
        ),
        reload(
            "sharding.broadcast_writes",
            map.broadcast_writes.to_string(),
        ),
    ];
    for (name, url) in shard_urls {
        rows.push(reload(&format!("shards.{name}"), url.clone()));
    }
    Table {
        columns: vec![
            ("key", ColumnType::Text),
            ("value", ColumnType::Text),
            ("applies", ColumnType::Text),
        ],
        rows: rows.into_iter().map(Vec::from).collect(),
    }
}

/// `SHOW VERSION`.
pub fn version_table() -> Table {
    Table {
        columns: vec![("version", ColumnType::Text)],
        rows: vec![vec![format!("pgshard {}", env!("CARGO_PKG_VERSION"))]],
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::{ClientRegistry, ClientState, Metrics};

    fn config() -> Config {
        crate::config::parse(include_str!("../config/testdata/base.toml"), "t")
            .expect("test map parses")
    }

    #[test]
    fn shards_and_pools() {
        let c = config();
        let status = vec![
            ShardStatus {
                name: "s0".into(),
                host: "127.0.0.1".into(),
                port: 5601,
                database: "app".into(),
                breaker: BreakerState::Closed,
                pool_max: 10,
                active: 2,
                idle: 3,
                ..Default::default()
            },
            ShardStatus {
                name: "s1".into(),
                breaker: BreakerState::Open,
                failures: 4,
                last_error: Some("connection refused".into()),
                paused: true,
                max_wait: Duration::from_micros(1500),
                ..Default::default()
            },
        ];
        let t = shards_table(&c.map, &status);
        assert_eq!(
            t.rows[0],
            [
                "s0",
                "127.0.0.1",
                "5601",
                "app",
                "serving",
                "closed",
                "0",
                "8",
                "1",
                ""
            ]
        );
        assert_eq!(t.rows[1][4], "unavailable");
        assert_eq!(t.rows[1][9], "connection refused");
        let t = pools_table(&status);
        assert_eq!(t.rows[0], ["s0", "10", "2", "3", "0", "0.000", "f"]);
        assert_eq!(t.rows[1][5..], ["1.500", "t"]);
    }

    #[test]
    fn clients_and_stats() {
        let registry = Arc::new(ClientRegistry::default());
        let g = registry.register(Some("10.0.0.9:40000".parse().unwrap()));
        g.info.set_login("app", "app");
        g.info.set_state(ClientState::Active);
        let t = clients_table(&registry.list(), Instant::now());
        assert_eq!(
            t.rows[0],
            ["1", "app", "app", "10.0.0.9:40000", "f", "active", "0", "0"]
        );

        let m = Metrics::default();
        let s = m.shard("s0");
        s.record(RouteKind::Single, Duration::from_micros(800), false);
        s.record(RouteKind::Scatter, Duration::from_millis(3), true);
        s.bytes_to_server.fetch_add(10, Ordering::Relaxed);
        let t = stats_table(&m.shards());
        assert_eq!(
            t.rows[0],
            ["s0", "2", "1", "1", "1", "10", "0", "1.900", "5.000"]
        );
    }

    #[test]
    fn config_hides_passwords_and_says_what_reload_applies() {
        let c = config();
        let t = config_table(
            &c,
            "debug",
            &c.map,
            &[("s0".into(), "postgres://u:***@h:1/app".into())],
        );
        let get = |k: &str| t.rows.iter().find(|r| r[0] == k).cloned().unwrap();
        assert_eq!(
            get("server.pool_size"),
            ["server.pool_size", "10", "restart"]
        );
        assert_eq!(get("sharding.epoch")[2], "reload");
        assert_eq!(get("log.level"), ["log.level", "debug", "reload"]);
        assert_eq!(
            get("health.timeout_ms"),
            ["health.timeout_ms", "5000", "restart"]
        );
        assert_eq!(get("shards.s0")[1], "postgres://u:***@h:1/app");
        assert_eq!(get("users")[1], "app");
        assert_eq!(
            version_table().rows[0][0],
            format!("pgshard {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
