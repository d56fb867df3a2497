//! `pgshard dev`: the local playground. Starts N Postgres shards under one directory,
//! writes a shard map for them, runs the proxy in-process, loads a demo table through it,
//! and serves until Ctrl-C / SIGTERM; then stops the proxy and the shards.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::config::{self, ConfigError};
use crate::devcluster::shardmap::{self, ShardMapSpec};
use crate::devcluster::{DevClusterError, PgCluster, PgInstall};
use crate::server::Server;
use crate::sharding::ring::{RingMember, assign_slots};

/// Database created on every shard; clients connect to it through the proxy.
const DB: &str = "app";
/// Proxy user (password = name).
const USER: &str = "app";
/// The demo's admin console user (password the same).
const ADMIN_USER: &str = "admin";
/// Slot count of the generated map.
const SLOTS: u32 = 1024;
/// Ring points per shard.
const VNODES: u32 = 256;
/// Backend connections per shard.
const POOL_SIZE: usize = 8;
/// Rows in the demo table.
const DEMO_ROWS: i64 = 100;
/// How long the proxy may take to drain after Ctrl-C.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

const DEMO_TABLE: &str = "[[tables]]\nname = \"accounts\"\nkey = \"aid\"\ntype = \"bigint\"\n";
const CREATE_DEMO_TABLE: &str = "CREATE TABLE IF NOT EXISTS accounts \
     (aid bigint PRIMARY KEY, name text, balance numeric NOT NULL DEFAULT 0)";

/// What went wrong; every variant is a message for the person at the terminal.
#[derive(Debug, thiserror::Error)]
enum DevError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Cluster(#[from] DevClusterError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("the generated shard map does not validate: {0}")]
    Config(#[from] ConfigError),
    #[error("loading the demo table through the proxy failed: {}", pg_error_text(.0))]
    Demo(#[source] tokio_postgres::Error),
    #[error("the proxy stopped: {0}")]
    Proxy(#[source] std::io::Error),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> DevError {
    let what = what.into();
    move |source| DevError::Io { what, source }
}

/// A tokio-postgres error with the server's message and SQLSTATE, which its `Display`
/// leaves out ("db error").
fn pg_error_text(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!(
            "{}: {} (SQLSTATE {})",
            db.severity(),
            db.message(),
            db.code().code()
        ),
        None => err.to_string(),
    }
}

/// Run the subcommand.
pub fn run(shards: usize, spare: usize, listen: &str, dir: &Path) -> ExitCode {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .try_init();
    match dev(shards, spare, listen, dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("pgshard dev: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Everything, in order; the clusters are stopped when they go out of scope, whatever
/// happens after they start.
fn dev(shards: usize, spare: usize, listen: &str, dir: &Path) -> Result<(), DevError> {
    if shards == 0 {
        return Err(DevError::Usage("--shards must be at least 1".into()));
    }
    let listen_addr: SocketAddr = listen.parse().map_err(|_| {
        DevError::Usage(format!(
            "--listen {listen:?} is not an address like 127.0.0.1:6432"
        ))
    })?;
    std::fs::create_dir_all(dir).map_err(io_err(format!("cannot create {}", dir.display())))?;
    let dir =
        std::fs::canonicalize(dir).map_err(io_err(format!("cannot open {}", dir.display())))?;
    check_previous_layout(&dir, shards)?;
    check_map_unchanged(&dir, shards)?;

    let install = PgInstall::discover()?;
    let mut clusters = start_shards(&install, &dir, shards)?;
    let spares = start_spares(&install, &dir, spare);
    let map_path = write_shard_map(&dir, listen, &clusters)?;
    let config = config::load(&map_path)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(io_err("cannot start the async runtime"))?;
    let served = match spares {
        Ok(spares) => {
            let served =
                runtime.block_on(serve(config, listen_addr, &clusters, &spares, &map_path));
            clusters.extend(spares);
            served
        }
        Err(e) => Err(e),
    };
    drop(runtime);

    for cluster in &mut clusters {
        if let Err(err) = cluster.stop() {
            eprintln!("pgshard dev: warning: {err}");
        }
    }
    served
}

/// Refuse to reuse a directory set up for a different number of shards: the rows
/// already there are placed for the old slot map, and queries would miss them.
fn check_previous_layout(dir: &Path, shards: usize) -> Result<(), DevError> {
    let previous = (0..)
        .take_while(|i| shard_dir(dir, *i).join("data/PG_VERSION").is_file())
        .count();
    if previous != 0 && previous != shards {
        return Err(DevError::Usage(format!(
            "{} holds {previous} shards from an earlier run, but --shards {shards} was given; \
             use --shards {previous}, or remove the directory to start over",
            dir.display()
        )));
    }
    Ok(())
}

/// Refuse to restart on a map a rebalance changed: the map is regenerated at every
/// start from `--shards`, which would hide the rows of shards added since.
fn check_map_unchanged(dir: &Path, shards: usize) -> Result<(), DevError> {
    let path = dir.join("shardmap.toml");
    let Ok(config) = config::load(&path) else {
        return Ok(());
    };
    let expected: Vec<String> = (0..shards).map(shard_name).collect();
    if config.map.shard_names != expected || config.map.epoch > 1 {
        return Err(DevError::Usage(format!(
            "{} was changed by a rebalance (shards {}, epoch {}); `pgshard dev` writes a fresh \
             map at every start, so remove {} to start over",
            path.display(),
            config.map.shard_names.join(", "),
            config.map.epoch,
            dir.display()
        )));
    }
    Ok(())
}

fn shard_dir(dir: &Path, i: usize) -> PathBuf {
    dir.join(format!("shard{i}"))
}

fn shard_name(i: usize) -> String {
    format!("s{i}")
}

/// Init (or reuse) and start every shard on a fresh free port, with database `app`.
fn start_shards(
    install: &PgInstall,
    dir: &Path,
    shards: usize,
) -> Result<Vec<PgCluster>, DevError> {
    let mut clusters = Vec::with_capacity(shards);
    for i in 0..shards {
        let shard_dir = shard_dir(dir, i);
        if !shard_dir.join("data/PG_VERSION").is_file() {
            say!(
                "pgshard dev: initialising {} in {}",
                shard_name(i),
                shard_dir.display()
            );
        }
        let mut cluster = PgCluster::init(install, &shard_dir)?;
        cluster.start_on_free_port()?;
        // pushed before anything else can fail, so it is stopped on error
        clusters.push(cluster);
        clusters[i].create_database(DB)?;
    }
    Ok(clusters)
}

/// Start `n` servers that are not in the map (`DIR/spare{i}`, database `app`): room to
/// try `pgshard rebalance apply --add-shard`.
fn start_spares(install: &PgInstall, dir: &Path, n: usize) -> Result<Vec<PgCluster>, DevError> {
    let mut spares: Vec<PgCluster> = Vec::with_capacity(n);
    for i in 0..n {
        let spare_dir = dir.join(format!("spare{i}"));
        let started = (|| {
            let mut cluster = PgCluster::init(install, &spare_dir)?;
            cluster.start_on_free_port()?;
            cluster.create_database(DB)?;
            Ok::<_, DevClusterError>(cluster)
        })();
        match started {
            Ok(cluster) => spares.push(cluster),
            Err(e) => {
                for mut s in spares {
                    let _ = s.stop();
                }
                return Err(e.into());
            }
        }
    }
    Ok(spares)
}

/// Write `DIR/shardmap.toml` for the running shards; slots assigned by the ring.
fn write_shard_map(dir: &Path, listen: &str, clusters: &[PgCluster]) -> Result<PathBuf, DevError> {
    let mut shards = Vec::with_capacity(clusters.len());
    for (i, cluster) in clusters.iter().enumerate() {
        shards.push((shard_name(i), cluster.url(DB)?));
    }
    let members: Vec<RingMember<'_>> = shards
        .iter()
        .map(|(name, _)| RingMember { name, weight: 1 })
        .collect();
    let slot_owner = assign_slots(&members, SLOTS, VNODES);
    let text = shardmap::render(&ShardMapSpec {
        listen,
        pool_size: POOL_SIZE,
        users: &[(USER, USER, false), (ADMIN_USER, ADMIN_USER, true)],
        shards: &shards,
        slots: SLOTS,
        vnodes: VNODES,
        tables_toml: DEMO_TABLE,
        slot_owner: &slot_owner,
    });
    let path = dir.join("shardmap.toml");
    std::fs::write(&path, text).map_err(io_err(format!("cannot write {}", path.display())))?;
    Ok(path)
}

/// Run the proxy, load the demo table, print how to connect, and wait for Ctrl-C or
/// SIGTERM; then drain the proxy.
async fn serve(
    config: config::Config,
    listen: SocketAddr,
    clusters: &[PgCluster],
    spares: &[PgCluster],
    map_path: &Path,
) -> Result<(), DevError> {
    let server = Server::bind(Arc::new(config))
        .await
        .map_err(io_err(format!("cannot listen on {listen}")))?
        .with_config_path(map_path)
        .reload_on_sighup();
    let addr = connectable(server.local_addr());
    let shutdown = CancellationToken::new();
    let mut proxy = tokio::spawn(server.run(shutdown.clone()));

    let waited = match StopSignals::new() {
        Ok(mut signals) => {
            tokio::select! {
                loaded = load_demo(addr) => match loaded {
                    Ok((inserted, present)) => {
                        print_banner(addr, clusters, map_path, inserted, present);
                        print_spares(spares, clusters.len(), map_path);
                        tokio::select! {
                            _ = signals.recv() => Ok(()),
                            ended = &mut proxy => Err(proxy_ended(ended)),
                        }
                    }
                    Err(err) => Err(err),
                },
                _ = signals.recv() => Ok(()),
                ended = &mut proxy => Err(proxy_ended(ended)),
            }
        }
        Err(err) => Err(err),
    };

    shutdown.cancel();
    if !proxy.is_finished() {
        match tokio::time::timeout(DRAIN_TIMEOUT, &mut proxy).await {
            Ok(Ok(Err(err))) if waited.is_ok() => return Err(DevError::Proxy(err)),
            Ok(_) => {}
            Err(_) => eprintln!(
                "pgshard dev: the proxy did not drain within {}s; stopping anyway",
                DRAIN_TIMEOUT.as_secs()
            ),
        }
    }
    waited
}

/// The proxy task finished before we asked it to.
fn proxy_ended(ended: Result<std::io::Result<()>, tokio::task::JoinError>) -> DevError {
    DevError::Proxy(match ended {
        Ok(Err(err)) => err,
        Ok(Ok(())) => std::io::Error::other("it exited on its own"),
        Err(join) => std::io::Error::other(join.to_string()),
    })
}

/// Where a client can reach a listener bound to `addr` (a wildcard address becomes
/// loopback).
fn connectable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip = match addr.ip() {
            IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// Create `accounts` on every shard (broadcast DDL) and insert the demo rows, one
/// routed INSERT per row; rows already present are kept. Returns (inserted, present).
async fn load_demo(proxy: SocketAddr) -> Result<(u64, u64), DevError> {
    let (client, connection) = tokio_postgres::Config::new()
        .host(proxy.ip().to_string())
        .port(proxy.port())
        .user(USER)
        .password(USER)
        .dbname(DB)
        .connect(tokio_postgres::NoTls)
        .await
        .map_err(DevError::Demo)?;
    let connection = tokio::spawn(connection);
    client
        .batch_execute(CREATE_DEMO_TABLE)
        .await
        .map_err(DevError::Demo)?;
    let mut inserted = 0;
    for aid in 1..=DEMO_ROWS {
        let sql = format!(
            "INSERT INTO accounts (aid, name, balance) VALUES ({aid}, 'account {aid}', {}.{:02}) \
             ON CONFLICT (aid) DO NOTHING",
            aid * 10,
            aid % 100
        );
        for message in client.simple_query(&sql).await.map_err(DevError::Demo)? {
            if let tokio_postgres::SimpleQueryMessage::CommandComplete(rows) = message {
                inserted += rows;
            }
        }
    }
    drop(client);
    let _ = connection.await;
    Ok((inserted, DEMO_ROWS as u64 - inserted))
}

fn print_banner(
    proxy: SocketAddr,
    clusters: &[PgCluster],
    map_path: &Path,
    inserted: u64,
    present: u64,
) {
    let shards: Vec<String> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let port = c.port().map_or_else(|| "?".to_string(), |p| p.to_string());
            format!("{} on 127.0.0.1:{port}", shard_name(i))
        })
        .collect();
    let plural = if clusters.len() == 1 { "" } else { "s" };
    say!(
        "pgshard dev: {} shard{plural} up ({}), proxy on {proxy}",
        clusters.len(),
        shards.join(", ")
    );
    say!("demo data: accounts, {inserted} rows inserted, {present} already present");
    say!("shard map: {}", map_path.display());
    say!("connect:   psql \"postgres://{USER}:{USER}@{proxy}/{DB}\"");
    say!("try:       SELECT * FROM accounts WHERE aid = 42;");
    say!(
        "console:   psql \"postgres://{ADMIN_USER}:{ADMIN_USER}@{proxy}/pgshard\" -c 'SHOW SHARDS'"
    );
    say!("Ctrl-C stops the proxy and the shards.");
}

/// The spare servers and the commands that add one.
fn print_spares(spares: &[PgCluster], shards: usize, map_path: &Path) {
    for (i, spare) in spares.iter().enumerate() {
        let Ok(url) = spare.url(DB) else { continue };
        let name = shard_name(shards + i);
        say!("spare:     {url} (not in the map)");
        say!(
            "add it:    pgshard rebalance apply -c {} --add-shard {name}={url}",
            map_path.display()
        );
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, watched from the moment this is created, so a signal
/// that arrives while the demo data loads is not lost.
struct StopSignals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    fn new() -> Result<StopSignals, DevError> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())
                .map_err(io_err("cannot watch for Ctrl-C"))?,
            terminate: signal(SignalKind::terminate())
                .map_err(io_err("cannot watch for SIGTERM"))?,
        })
    }

    /// Wait for either signal.
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
        say!("pgshard dev: stopping");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcard_listen_is_reached_over_loopback() {
        let addr: SocketAddr = "0.0.0.0:6432".parse().expect("addr");
        assert_eq!(connectable(addr).to_string(), "127.0.0.1:6432");
        let addr: SocketAddr = "127.0.0.2:6432".parse().expect("addr");
        assert_eq!(connectable(addr), addr);
    }

    #[test]
    fn changed_shard_count_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        for i in 0..2 {
            let data = shard_dir(dir.path(), i).join("data");
            std::fs::create_dir_all(&data).expect("mkdir");
            std::fs::write(data.join("PG_VERSION"), "15\n").expect("write");
        }
        assert!(check_previous_layout(dir.path(), 2).is_ok());
        let err = check_previous_layout(dir.path(), 3).expect_err("3 != 2");
        assert!(err.to_string().contains("holds 2 shards"), "{err}");
        assert!(check_previous_layout(&dir.path().join("fresh"), 3).is_ok());
    }
}
