//! The shard map file: raw serde types ([`raw`]) → validated runtime types
//! ([`Config`], [`ShardMap`]) ([`validate`]). A bad map fails at startup naming the TOML
//! line; it is never a warning.

pub mod raw;
pub mod url;
pub mod validate;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use pgwire::api::auth::sasl::scram::{ScramSecret, gen_salted_password};

use crate::sharding::{KeyType, KeyValue, ShardId, slot_of};

pub use validate::{ConfigError, PgUrl, SlotMapSource, load, load_with, parse, parse_with};

/// The validated configuration: everything the proxy needs, passed around as `Arc`.
#[derive(Debug, Clone)]
pub struct Config {
    /// `[server]`
    pub server: ServerConfig,
    /// `[[users]]`: who may connect to the proxy.
    pub users: Vec<UserConfig>,
    /// `[[shards]]` with parsed connection parameters, in file order (index = ShardId).
    pub shards: Vec<ShardConfig>,
    /// The routing table built from `[sharding]`, `[[tables]]` and `[slot_map]`.
    pub map: ShardMap,
    /// `[transactions]`
    pub transactions: TransactionsConfig,
    /// `[log]`
    pub log: LogConfig,
    /// `[health]`
    pub health: HealthConfig,
    /// `[tls]`
    pub tls: TlsConfig,
}

/// `[log]`: what `pgshard serve` logs, and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// a tracing filter directive (`info`, `pgshard=debug,info`…); the environment
    /// variable `PGSHARD_LOG` overrides it
    pub level: String,
    /// one line of text per event, or one JSON object per line (for log shippers)
    pub format: LogFormat,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// human-readable text
    Text,
    /// one JSON object per line
    Json,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: "info".to_owned(),
            format: LogFormat::Text,
        }
    }
}

/// `[health]`: per-shard health checks and circuit breaker.
///
/// A shard that stops answering should cost clients one quick error, not a wait for
/// the pool or connect timeout each: after `failure_threshold` consecutive failed
/// checks the shard's breaker opens and checkouts for it fail at once with 08006.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthConfig {
    /// run the checks; false: no checks and the breaker never opens
    pub enabled: bool,
    /// time between two checks of each shard
    pub interval: Duration,
    /// longest a check (connect, login, `SELECT 1`) may take before it counts as failed
    pub timeout: Duration,
    /// consecutive failures (checks or refused data-path connects) that open the breaker
    pub failure_threshold: u32,
    /// consecutive successful half-open probes that close it again
    pub success_threshold: u32,
    /// how long an open breaker waits before its first half-open probe, so a shard
    /// that is restarting is not probed while it comes up
    pub open: Duration,
}

impl Default for HealthConfig {
    fn default() -> HealthConfig {
        HealthConfig {
            enabled: true,
            interval: Duration::from_millis(1000),
            // as long as a data-path connect may take: a check must not call a shard
            // dead that a client's connect would still have reached
            timeout: Duration::from_millis(5000),
            failure_threshold: 3,
            success_threshold: 1,
            open: Duration::from_millis(5000),
        }
    }
}

/// `[tls]`: TLS towards clients and towards the shards.
#[derive(Clone, Default)]
pub struct TlsConfig {
    /// certificate chain and key files (resolved paths), when clients may use TLS
    pub cert_files: Option<(PathBuf, PathBuf)>,
    /// the loaded certificate and key: SSLRequest is answered `S` when present
    pub acceptor: Option<Arc<rustls::ServerConfig>>,
    /// refuse clients that log in without TLS (cancel requests stay allowed)
    pub require_tls: bool,
    /// how pgshard connects to the shards (also in every [`ShardConfig::tls`])
    pub backend: crate::tls::BackendTls,
    /// CA file (resolved path) for `backend = "verify-full"`
    pub backend_ca: Option<PathBuf>,
}

impl std::fmt::Debug for TlsConfig {
    // the file names and modes only: a reload compares configurations by their Debug
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsConfig")
            .field("cert_files", &self.cert_files)
            .field("require_tls", &self.require_tls)
            .field("backend", &self.backend)
            .field("backend_ca", &self.backend_ca)
            .finish()
    }
}

/// `[transactions]`: transactions that touch several shards.
#[derive(Debug, Clone)]
pub struct TransactionsConfig {
    /// commit a transaction that used several shards with two-phase commit (default
    /// true); false refuses statements that would take a transaction to a second shard
    pub two_phase: bool,
    /// this proxy's name, part of every prepared-transaction id it creates: recovery
    /// resolves only its own, so every proxy sharing shards needs its own name
    pub node: String,
    /// how often prepared transactions left by a crash are resolved (also at startup)
    pub recover_interval: Duration,
}

/// `[server]`
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// address to listen on
    pub listen: SocketAddr,
    /// backend connections per shard
    pub pool_size: usize,
    /// how long a statement waits for a free backend connection before failing
    pub pool_timeout: Duration,
    /// how long to wait for a backend TCP connect + login
    pub connect_timeout: Duration,
    /// most client connections served at once; more wait in the accept queue
    pub max_clients: usize,
    /// largest frontend message accepted (bytes); larger → 08P01 and disconnect
    pub max_message_size: usize,
    /// statements the parser cannot read: refuse, or send to the default shard when they
    /// mention no sharded table
    pub unparsed: UnparsedPolicy,
    /// most bytes a statement on several shards may buffer while its replies are
    /// merged; more → the statement fails with 54000 instead of exhausting memory
    pub merge_memory: usize,
    /// longest a statement waits for a slot held by a rebalance cutover before it fails
    /// with 55P03 (the client retries; a stuck cutover must not hang clients forever)
    pub hold_timeout: Duration,
    /// where `/metrics` and `/health` are served over HTTP (None: not served)
    pub metrics_listen: Option<SocketAddr>,
    /// how long shutdown lets open transactions finish before closing their clients
    pub shutdown_timeout: Duration,
    /// how long shutdown answers 503 on `/health` while still accepting clients, so
    /// load balancers stop sending new ones before the listener closes
    pub drain_delay: Duration,
    /// how long a client may take to send its startup packet (and finish TLS), and again
    /// to authenticate. A client that stalls there holds one of
    /// `max_clients`; without a bound a few silent sockets could lock everyone out.
    pub login_timeout: Duration,
}

/// What to do with a statement sqlparser cannot parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnparsedPolicy {
    /// refuse every unparseable statement with 0A000
    Refuse,
    /// send it to the default shard unless its text names a sharded table (then refuse)
    DefaultShard,
}

/// A proxy user and the secret it authenticates with.
#[derive(Debug, Clone)]
pub struct UserConfig {
    /// user name clients connect as
    pub name: String,
    /// the password, plaintext or a SCRAM verifier
    pub secret: UserSecret,
    /// may log in to the admin console (database `pgshard`)
    pub admin: bool,
}

/// How a user's password is stored in the map.
#[derive(Clone)]
pub enum UserSecret {
    /// plaintext password (a SCRAM verifier is derived from it at load time)
    Plain(String),
    /// `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`
    Scram {
        /// PBKDF2 iterations
        iterations: u32,
        /// raw salt
        salt: Vec<u8>,
        /// SHA-256(ClientKey)
        stored_key: Vec<u8>,
        /// HMAC(SaltedPassword, "Server Key")
        server_key: Vec<u8>,
    },
}

impl UserSecret {
    /// This secret as a SCRAM verifier. A plaintext password is salted with `salt` and
    /// stretched with `iterations` rounds of PBKDF2 (Postgres uses 4096). That is slow on
    /// purpose, so do it once per user at load time, not per login.
    pub fn to_verifier(&self, salt: &[u8], iterations: u32) -> UserSecret {
        match self {
            UserSecret::Scram { .. } => self.clone(),
            UserSecret::Plain(password) => {
                let salted = gen_salted_password(password, salt, iterations as usize);
                match ScramSecret::verifier_from_salted_password(
                    salt.to_vec(),
                    salted,
                    iterations as usize,
                ) {
                    ScramSecret::Verifier {
                        salt,
                        stored_key,
                        server_key,
                        ..
                    } => UserSecret::Scram {
                        iterations,
                        salt,
                        stored_key,
                        server_key,
                    },
                    // verifier_from_salted_password only builds verifiers; keep the
                    // password rather than panic if that ever changes.
                    ScramSecret::SaltedPassword { .. } => self.clone(),
                }
            }
        }
    }

    /// The stored verifier in pgwire's form, for its SCRAM server; `None` for a plaintext
    /// password (derive one with [`UserSecret::to_verifier`] first).
    pub fn scram_secret(&self) -> Option<ScramSecret> {
        match self {
            UserSecret::Plain(_) => None,
            UserSecret::Scram {
                iterations,
                salt,
                stored_key,
                server_key,
            } => Some(ScramSecret::Verifier {
                salt: salt.clone(),
                iterations: *iterations as usize,
                stored_key: stored_key.clone(),
                server_key: server_key.clone(),
            }),
        }
    }
}

impl std::fmt::Debug for UserSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UserSecret::Plain(_) => f.write_str("Plain(<redacted>)"),
            UserSecret::Scram { iterations, .. } => write!(f, "Scram(iterations={iterations})"),
        }
    }
}

/// One `[[shards]]` entry with its URL taken apart.
#[derive(Clone)]
pub struct ShardConfig {
    /// shard name
    pub name: String,
    /// the URL as written (password redacted when displayed)
    pub url: String,
    /// backend host
    pub host: String,
    /// backend port
    pub port: u16,
    /// backend user (the proxy's own credentials)
    pub user: String,
    /// backend password, if any
    pub password: Option<String>,
    /// backend database name (the logical database clients ask for)
    pub dbname: String,
    /// ring weight
    pub weight: u32,
    /// TLS to this shard (`[tls] backend`); the certificate must name `host`
    pub tls: crate::tls::BackendTls,
}

impl std::fmt::Debug for ShardConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShardConfig")
            .field("name", &self.name)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("user", &self.user)
            .field("dbname", &self.dbname)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}

/// A sharded table: its key column and type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableRule {
    /// table name, lower-case as Postgres folds unquoted identifiers
    pub name: String,
    /// key column, lower-case
    pub key: String,
    /// key column type
    pub key_type: KeyType,
}

/// The routing table: which shard owns each slot, and which tables are sharded on what.
#[derive(Debug, Clone)]
pub struct ShardMap {
    /// `[sharding] epoch`: raised by every rebalance cutover; a reload refuses a map
    /// older than the running one, so a stale file cannot undo a move
    pub epoch: u64,
    /// number of slots (a power of two)
    pub slots: u32,
    /// shard names, index = ShardId
    pub shard_names: Vec<String>,
    /// owner of each slot (len == slots)
    pub slot_owner: Vec<ShardId>,
    /// sharded tables by lower-case name
    pub tables: HashMap<String, TableRule>,
    /// shard for statements that touch no sharded table
    pub default_shard: ShardId,
    /// ring points per shard per unit of weight
    pub vnodes: u32,
    /// UPDATE/DELETE without a single key may run on several shards (each shard in its
    /// own transaction: not atomic across shards)
    pub broadcast_writes: bool,
    /// reference tables (`replicated = true`) by lower-case name: a full copy on every
    /// shard; reads go to one shard, writes to all
    pub replicated: BTreeSet<String>,
}

impl ShardMap {
    /// The sharding rule of a table, if it is sharded. `name` must already be folded
    /// (lower-case unless quoted); a schema-qualified name matches on its last part.
    pub fn table(&self, name: &str) -> Option<&TableRule> {
        self.tables.get(name)
    }

    /// Whether a table is a reference table (a full copy on every shard). `name` must be
    /// folded like for [`table`](Self::table).
    pub fn is_replicated(&self, name: &str) -> bool {
        self.replicated.contains(name)
    }

    /// Which shard owns a slot.
    #[inline]
    pub fn shard_of_slot(&self, slot: u32) -> ShardId {
        self.slot_owner[slot as usize]
    }

    /// Slot and owning shard of a key value.
    #[inline]
    pub fn locate(&self, key: &KeyValue) -> (u32, ShardId) {
        let slot = slot_of(key.partition_hash(), self.slots);
        (slot, self.shard_of_slot(slot))
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.shard_names.len()
    }

    /// Name of a shard (`"?"` for an id not in this map, e.g. one taken under a map a
    /// reload has replaced).
    pub fn shard_name(&self, id: ShardId) -> &str {
        self.shard_names.get(id).map_or("?", String::as_str)
    }

    /// The slots a shard owns, as maximal inclusive ranges in ascending order (the
    /// `[slot_map]` spelling). Empty for a shard without slots or an unknown id.
    pub fn ranges_of(&self, shard: ShardId) -> Vec<(u32, u32)> {
        slot_runs(self.slot_owner.iter().map(|&owner| owner == shard))
    }

    /// Number of slots each shard owns, index = ShardId.
    pub fn slot_counts(&self) -> Vec<u32> {
        let mut counts = vec![0u32; self.shard_names.len()];
        for &owner in &self.slot_owner {
            if let Some(c) = counts.get_mut(owner) {
                *c += 1;
            }
        }
        counts
    }

    /// Names of the sharded tables, sorted (for messages and listings).
    pub fn table_names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tables.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }
}

/// Inclusive runs of consecutive slots for which `selected` yields true, in order.
pub fn slot_runs(selected: impl Iterator<Item = bool>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (slot, hit) in selected.enumerate() {
        if !hit {
            continue;
        }
        let slot = slot as u32;
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == slot => *hi = slot,
            _ => out.push((slot, slot)),
        }
    }
    out
}
