//! Real Postgres shards and an in-process proxy for integration tests.
//!
//! - [`PgServer`]: one fresh cluster in a temp dir on a free port, stopped and deleted on
//!   drop (also when the test panics).
//! - [`Cluster`]: N servers, each with database `app`, plus a shard map for them.
//! - [`Proxy`]: the pgshard server bound to port 0, running on the test's runtime,
//!   stopped on drop.
//!
//! `initdb` runs once per Postgres installation into a template kept under Cargo's
//! target tmp dir (so `cargo clean` removes it); each server starts from a `cp -a` of it,
//! which is much faster than `initdb`.
// Not every test module uses every helper.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use pgshard::devcluster::shardmap::{self, ShardMapSpec};
use pgshard::devcluster::{PgCluster, PgInstall};
use tokio::task::JoinHandle;
use tokio_postgres::{Client, NoTls};
use tokio_util::sync::CancellationToken;

/// Database created on every shard of a [`Cluster`], and the one clients ask for.
pub const APP_DB: &str = "app";
/// Proxy user written into generated shard maps (password = name).
pub const APP_USER: &str = "app";
/// `[[tables]]` entry for the `accounts` table sharded on `aid bigint`, used by most
/// tests.
pub const ACCOUNTS: &str = r#"
[[tables]]
name = "accounts"
key = "aid"
type = "bigint"
"#;

/// Slot count of generated shard maps.
pub const SLOTS: u32 = 1024;
/// Ring points per shard of generated shard maps.
pub const VNODES: u32 = 256;

/// Bump when the template's setup changes, so stale templates are not reused.
const TEMPLATE_VERSION: u32 = 1;

/// One Postgres server for the duration of a test.
pub struct PgServer {
    // field order matters: the cluster is stopped before its directory is removed
    cluster: PgCluster,
    port: u16,
    _dir: tempfile::TempDir,
}

impl PgServer {
    /// A fresh cluster in a temp dir on a free port, accepting connections.
    pub async fn start() -> PgServer {
        blocking(start_server).await
    }

    /// The TCP port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Stop the server (fast shutdown), to test a shard going down.
    pub async fn stop(&mut self) {
        let cluster = &mut self.cluster;
        tokio::task::block_in_place(|| cluster.stop())
            .unwrap_or_else(|e| panic!("stop server on port {}: {e}", self.port));
    }

    /// Start a stopped server again on the same port.
    pub async fn restart(&mut self) {
        let port = self.port;
        let cluster = &mut self.cluster;
        tokio::task::block_in_place(|| cluster.start(port))
            .unwrap_or_else(|e| panic!("restart server on port {port}: {e}"));
    }

    /// Copy `from` into the data directory as `name` (mode 0600), owned by the server
    /// user: e.g. `server.crt` / `server.key` before turning `ssl` on.
    pub fn install_data_file(&self, from: &Path, name: &str) {
        use std::os::unix::fs::PermissionsExt;
        let to = self.cluster.data_dir().join(name);
        std::fs::copy(from, &to).unwrap_or_else(|e| panic!("copy {}: {e}", from.display()));
        std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", to.display()));
        install()
            .hand_over_file(&to)
            .unwrap_or_else(|e| panic!("hand {} to the server user: {e}", to.display()));
    }

    /// The cluster (data directory, log file).
    pub fn cluster(&self) -> &PgCluster {
        &self.cluster
    }

    /// A client connected to `db` as the superuser `postgres`; its connection task runs
    /// on the test's runtime.
    pub async fn client(&self, db: &str) -> Client {
        let (client, connection) = tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .connect(NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to Postgres on port {}: {e}", self.port));
        tokio::spawn(async move {
            let _ = connection.await;
        });
        client
    }
}

/// Query `accounts` for `aid` until the row comes back (a shard restarted, a breaker
/// closing), for at most 10 s; panics naming `what` past that.
pub async fn wait_until_served(client: &Client, aid: i64, what: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client
            .query("SELECT aid FROM accounts WHERE aid = $1", &[&aid])
            .await
        {
            Ok(rows) => {
                assert_eq!(rows.len(), 1, "{what}");
                assert_eq!(rows[0].get::<_, i64>(0), aid, "{what}");
                return;
            }
            Err(e) => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{what} never came back: {e}"
                );
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
    }
}

/// N Postgres servers acting as shards `s0..s{n-1}`, each with database `app`.
pub struct Cluster {
    shards: Vec<PgServer>,
}

impl Cluster {
    /// Start `n` servers in parallel and create database `app` on each.
    pub async fn start(n: usize) -> Cluster {
        let starting: Vec<JoinHandle<PgServer>> =
            (0..n).map(|_| tokio::spawn(PgServer::start())).collect();
        let mut shards = Vec::with_capacity(n);
        for handle in starting {
            shards.push(join(handle).await);
        }
        for shard in &shards {
            shard
                .client("postgres")
                .await
                .batch_execute(&format!("CREATE DATABASE {APP_DB}"))
                .await
                .unwrap_or_else(|e| panic!("create database {APP_DB}: {e}"));
        }
        Cluster { shards }
    }

    /// Number of shards.
    pub fn len(&self) -> usize {
        self.shards.len()
    }

    /// Shard `i` (`s{i}` in the shard map).
    pub fn shard(&self, i: usize) -> &PgServer {
        &self.shards[i]
    }

    /// Shard `i`, to stop or restart it.
    pub fn shard_mut(&mut self, i: usize) -> &mut PgServer {
        &mut self.shards[i]
    }

    /// Connection URL of shard `i`'s `app` database, as the superuser.
    pub fn shard_url(&self, i: usize) -> String {
        format!(
            "postgres://postgres@127.0.0.1:{}/{APP_DB}",
            self.shards[i].port()
        )
    }

    /// A complete shard map for these shards: listen `127.0.0.1:0`, user app/app,
    /// `SLOTS` slots split into equal contiguous ranges in shard order, and the caller's
    /// `[[tables]]` (TOML text).
    pub fn shardmap_toml(&self, extra_tables: &str, pool_size: usize) -> String {
        let shards: Vec<(String, String)> = (0..self.len())
            .map(|i| (format!("s{i}"), self.shard_url(i)))
            .collect();
        let owners = shardmap::contiguous_slots(self.len(), SLOTS);
        shardmap::render(&ShardMapSpec {
            listen: "127.0.0.1:0",
            pool_size,
            users: &[(APP_USER, APP_USER, true)],
            shards: &shards,
            slots: SLOTS,
            vnodes: VNODES,
            tables_toml: extra_tables,
            slot_owner: &owners,
        })
    }
}

impl Cluster {
    /// A shard map listing the first `shards` of these servers, with slot owners
    /// `owners` (index = slot, value = shard) and `[sharding] epoch = epoch`; otherwise
    /// like [`Cluster::shardmap_toml`].
    pub fn shardmap_toml_with(
        &self,
        shards: usize,
        owners: &[usize],
        epoch: u64,
        extra_tables: &str,
        pool_size: usize,
    ) -> String {
        let names: Vec<(String, String)> = (0..shards)
            .map(|i| (format!("s{i}"), self.shard_url(i)))
            .collect();
        let text = shardmap::render(&ShardMapSpec {
            listen: "127.0.0.1:0",
            pool_size,
            users: &[(APP_USER, APP_USER, true)],
            shards: &names,
            slots: SLOTS,
            vnodes: VNODES,
            tables_toml: extra_tables,
            slot_owner: owners,
        });
        text.replacen("[sharding]\n", &format!("[sharding]\nepoch = {epoch}\n"), 1)
    }
}

/// The pgshard proxy running in-process; stopped on drop.
pub struct Proxy {
    addr: SocketAddr,
    metrics: Option<SocketAddr>,
    shutdown: CancellationToken,
    task: Option<JoinHandle<std::io::Result<()>>>,
}

impl Proxy {
    /// Validate `toml_text`, bind its listen address and serve on the current runtime.
    pub async fn start(toml_text: &str) -> Proxy {
        let config = pgshard::config::parse(toml_text, "test")
            .unwrap_or_else(|e| panic!("shard map does not validate: {e}\n{toml_text}"));
        let server = pgshard::server::Server::bind(Arc::new(config))
            .await
            .unwrap_or_else(|e| panic!("proxy cannot bind: {e}"));
        let addr = server.local_addr();
        let metrics = server.metrics_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Proxy {
            addr,
            metrics,
            shutdown,
            task: Some(task),
        }
    }

    /// Load the shard map file at `path` and serve it like `pgshard serve` does, so the
    /// admin console's RELOAD reads that file again.
    pub async fn start_file(path: &Path) -> Proxy {
        let config = pgshard::config::load(path)
            .unwrap_or_else(|e| panic!("shard map does not validate: {e}"));
        let server = pgshard::server::Server::bind(Arc::new(config))
            .await
            .unwrap_or_else(|e| panic!("proxy cannot bind: {e}"))
            .with_config_path(path);
        let addr = server.local_addr();
        let metrics = server.metrics_addr();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(server.run(shutdown.clone()));
        Proxy {
            addr,
            metrics,
            shutdown,
            task: Some(task),
        }
    }

    /// Connect to the admin console (database `pgshard`); errors are returned so tests
    /// can check refusals.
    pub async fn admin(&self, user: &str, password: &str) -> Result<Client, tokio_postgres::Error> {
        let url = format!(
            "postgres://{user}:{password}@{}:{}/pgshard",
            self.addr.ip(),
            self.addr.port()
        );
        let (client, connection) = tokio_postgres::connect(&url, NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// The address the proxy listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The address of `/metrics` and `/health` (the map must set `metrics_listen`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .expect("the shard map sets [server] metrics_listen")
    }

    /// Start a graceful shutdown (what SIGTERM does) without waiting for it.
    pub fn begin_shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Wait until the server has shut down; returns how `run` ended.
    pub async fn wait(mut self) -> std::io::Result<()> {
        match self.task.take() {
            Some(task) => join(task).await,
            None => Ok(()),
        }
    }

    /// Connection URL for database `app` through the proxy.
    pub fn url(&self, user: &str, password: &str) -> String {
        format!(
            "postgres://{user}:{password}@{}:{}/{APP_DB}",
            self.addr.ip(),
            self.addr.port()
        )
    }

    /// Connect through the proxy as `user`/`password`; errors are returned so tests can
    /// check refusals.
    pub async fn connect(
        &self,
        user: &str,
        password: &str,
    ) -> Result<Client, tokio_postgres::Error> {
        let (client, connection) =
            tokio_postgres::connect(&self.url(user, password), NoTls).await?;
        tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A client through the proxy as app/app.
    pub async fn client(&self) -> Client {
        self.connect(APP_USER, APP_USER)
            .await
            .unwrap_or_else(|e| panic!("connect through the proxy at {}: {e}", self.addr))
    }

    /// Stop serving and wait until the server has drained; returns how `run` ended.
    pub async fn stop(mut self) -> std::io::Result<()> {
        self.shutdown.cancel();
        match self.task.take() {
            Some(task) => join(task).await,
            None => Ok(()),
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// Run blocking setup off the async workers, re-raising its panic in the test.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    join(tokio::task::spawn_blocking(f)).await
}

/// Await a task, re-raising its panic with the original message.
async fn join<T>(handle: JoinHandle<T>) -> T {
    match handle.await {
        Ok(value) => value,
        Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
        Err(err) => panic!("task did not finish: {err}"),
    }
}

fn start_server() -> PgServer {
    let install = install();
    let template = template(install);
    let dir = tempfile::Builder::new()
        .prefix("pgshard-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("create a temp dir: {e}"));
    let mut cluster = PgCluster::from_template(install, template, dir.path())
        .unwrap_or_else(|e| panic!("set up a cluster in {}: {e}", dir.path().display()));
    let port = cluster
        .start_on_free_port()
        .unwrap_or_else(|e| panic!("start Postgres: {e}"));
    PgServer {
        cluster,
        port,
        _dir: dir,
    }
}

/// The Postgres installation, discovered once per test run.
fn install() -> &'static PgInstall {
    static INSTALL: OnceLock<Result<PgInstall, String>> = OnceLock::new();
    match INSTALL.get_or_init(|| PgInstall::discover().map_err(|e| e.to_string())) {
        Ok(install) => install,
        Err(message) => panic!("{message}"),
    }
}

/// The template data directory: reused when a complete one exists, else built with
/// `initdb` in a scratch dir and renamed into place (atomic, so concurrent test runs
/// sharing the target dir never see half a template).
fn template(install: &PgInstall) -> &'static Path {
    static TEMPLATE: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match TEMPLATE.get_or_init(|| build_template(install)) {
        Ok(path) => path,
        Err(message) => panic!("{message}"),
    }
}

/// Build (or find) the template under Cargo's target tmp dir; if that is not writable
/// (a target dir shared with another user), under the system temp dir.
fn build_template(install: &PgInstall) -> Result<PathBuf, String> {
    let fallback = std::env::temp_dir().join("pgshard-test-templates");
    build_template_in(install, Path::new(env!("CARGO_TARGET_TMPDIR"))).or_else(|first| {
        build_template_in(install, &fallback)
            .map_err(|second| format!("{first}\nand in {}: {second}", fallback.display()))
    })
}

fn build_template_in(install: &PgInstall, root: &Path) -> Result<PathBuf, String> {
    let tag: String = install
        .bin_dir()
        .to_string_lossy()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let final_dir = root.join(format!("pg-template-v{TEMPLATE_VERSION}{tag}"));
    let ready = |dir: &Path| dir.join("ready").is_file() && dir.join("data/PG_VERSION").is_file();
    if ready(&final_dir) {
        return Ok(final_dir.join("data"));
    }
    let scratch = root.join(format!(
        "pg-template-build-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0)
    ));
    PgCluster::init(install, &scratch).map_err(|e| format!("initdb for the template: {e}"))?;
    std::fs::write(scratch.join("ready"), "")
        .map_err(|e| format!("write {}: {e}", scratch.display()))?;
    if ready(&final_dir) {
        // another run finished first
        let _ = std::fs::remove_dir_all(&scratch);
    } else if let Err(e) = std::fs::rename(&scratch, &final_dir) {
        let _ = std::fs::remove_dir_all(&scratch);
        if !ready(&final_dir) {
            return Err(format!(
                "install the template at {}: {e} (remove that directory and retry)",
                final_dir.display()
            ));
        }
    }
    Ok(final_dir.join("data"))
}
