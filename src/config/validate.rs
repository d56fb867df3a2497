//! Raw → validated configuration. Every error names the TOML line.
//!
//! Checks run in file order (server, users, shards, sharding, tables, slot map) and stop
//! at the first problem, so the message always points at one concrete line.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use toml::Spanned;

use super::raw::{self, RawFile, RawServer, RawShard, RawSharding, RawSlotMap, RawTable, RawUser};
use super::{
    Config, HealthConfig, LogConfig, LogFormat, ServerConfig, ShardConfig, ShardMap, TableRule,
    TlsConfig, TransactionsConfig, UnparsedPolicy, UserConfig, UserSecret,
};
use crate::sharding::ring::{RingMember, assign_slots};
use crate::sharding::{KeyType, ShardId};
use crate::tls::BackendTls;

/// A shard map problem, with the file position it was found at.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// the file could not be read
    #[error("cannot read {path}: {source}")]
    Io {
        /// file path
        path: String,
        /// the I/O error
        source: std::io::Error,
    },
    /// the file is not valid, or a value is wrong; `line` is 1-based
    #[error("{path}:{line}: {message}")]
    Invalid {
        /// file path
        path: String,
        /// 1-based line number
        line: usize,
        /// what is wrong and how to fix it
        message: String,
    },
}

/// Where the slot → shard table comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotMapSource {
    /// `[slot_map]` in the file, which must exist and cover every slot exactly once.
    File,
    /// The consistent-hash ring over the file's shards; any `[slot_map]` in the file is
    /// ignored. This is what `map init` writes, and what a rebalance aims for.
    Ring,
}

/// Largest slot count accepted: keeps the slot map small enough to read and diff.
pub const MAX_SLOTS: u32 = 65_536;
/// Largest ring points per unit of weight accepted (the ring holds vnodes × weight points
/// per shard in memory; beyond a few thousand the balance no longer improves).
pub const MAX_VNODES: u32 = 4_096;
/// Largest shard weight accepted.
pub const MAX_WEIGHT: u32 = 100;
/// Smallest `max_message_size` accepted: below this, ordinary startup packets fail.
pub const MIN_MESSAGE_SIZE: usize = 1024;

/// Read and validate a shard map file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    load_with(path, SlotMapSource::File)
}

/// Read a shard map file and validate it, taking the slot map from `source`.
pub fn load_with(path: &Path, source: SlotMapSource) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.display().to_string(),
        source,
    })?;
    parse_with(&text, &path.display().to_string(), source)
}

/// Validate shard map text; `origin` names the file in errors.
pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
    parse_with(text, origin, SlotMapSource::File)
}

/// Validate shard map text, taking the slot map from `source`; `origin` names the file in
/// errors. With [`SlotMapSource::Ring`] a file without `[slot_map]` is valid.
pub fn parse_with(text: &str, origin: &str, source: SlotMapSource) -> Result<Config, ConfigError> {
    let cx = Cx { text, origin };
    let raw = raw::from_str(text).map_err(|(line, message)| cx.at_line(line, message))?;
    cx.config(raw, source)
}

/// The text being validated, for turning spans into `origin:line:` errors.
struct Cx<'a> {
    text: &'a str,
    origin: &'a str,
}

impl Cx<'_> {
    fn at_line(&self, line: usize, message: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            path: self.origin.to_string(),
            line,
            message: message.into(),
        }
    }

    fn at(&self, span: &Range<usize>, message: impl Into<String>) -> ConfigError {
        self.at_line(self.line(span), message)
    }

    fn line(&self, span: &Range<usize>) -> usize {
        raw::line_of_span(self.text, span)
    }

    /// The last non-blank line: where something missing would be appended.
    fn last_line(&self) -> usize {
        raw::line_of(self.text, self.text.trim_end().len())
    }

    fn config(&self, raw: RawFile, source: SlotMapSource) -> Result<Config, ConfigError> {
        let server = self.server(&raw.server)?;
        let users = self.users(&raw.users)?;
        let mut shards = self.shards(&raw.shards)?;
        let tls = self.tls(raw.tls.as_ref())?;
        for shard in &mut shards {
            shard.tls = tls.backend.clone();
        }
        let shard_names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
        let (slots, vnodes, default_shard) = self.sharding(&raw.sharding, &shard_names)?;
        let epoch = match &raw.sharding.get_ref().epoch {
            Some(v) => self.positive(v, "epoch")? as u64,
            None => 1,
        };
        let (tables, replicated) = self.tables(&raw.tables)?;
        let slot_owner = match source {
            SlotMapSource::File => match &raw.slot_map {
                Some(map) => self.slot_map(map, &shard_names, slots)?,
                None => {
                    return Err(self.at_line(
                        self.last_line(),
                        format!(
                            "no [slot_map]: run `pgshard map init -c {}` to assign slots to shards",
                            self.origin
                        ),
                    ));
                }
            },
            SlotMapSource::Ring => {
                let members: Vec<RingMember<'_>> = shards
                    .iter()
                    .map(|s| RingMember {
                        name: &s.name,
                        weight: s.weight,
                    })
                    .collect();
                assign_slots(&members, slots, vnodes)
            }
        };
        let transactions = self.transactions(raw.transactions.as_ref())?;
        let log = self.log(raw.log.as_ref())?;
        let health = self.health(raw.health.as_ref())?;
        Ok(Config {
            server,
            users,
            shards,
            transactions,
            log,
            health,
            tls,
            map: ShardMap {
                epoch,
                slots,
                shard_names,
                slot_owner,
                tables,
                default_shard,
                vnodes,
                broadcast_writes: raw.sharding.get_ref().broadcast_writes.unwrap_or(false),
                replicated,
            },
        })
    }

    fn server(&self, s: &Spanned<RawServer>) -> Result<ServerConfig, ConfigError> {
        let r = s.get_ref();
        let listen: SocketAddr = r.listen.get_ref().trim().parse().map_err(|_| {
            self.at(
                &r.listen.span(),
                format!(
                    "listen = \"{}\" is not a socket address (expected e.g. \"127.0.0.1:6432\")",
                    r.listen.get_ref()
                ),
            )
        })?;
        let pool_size = self.positive(&r.pool_size, "pool_size")?;
        let ms = |v: &Option<Spanned<i64>>, name: &str, default: u64| match v {
            Some(v) => self
                .positive(v, name)
                .map(|n| Duration::from_millis(n as u64)),
            None => Ok(Duration::from_millis(default)),
        };
        let pool_timeout = ms(&r.pool_timeout_ms, "pool_timeout_ms", 5000)?;
        let connect_timeout = ms(&r.connect_timeout_ms, "connect_timeout_ms", 5000)?;
        let hold_timeout = ms(&r.hold_timeout_ms, "hold_timeout_ms", 10_000)?;
        let shutdown_timeout = ms(&r.shutdown_timeout_ms, "shutdown_timeout_ms", 30_000)?;
        // Postgres's own authentication_timeout default
        let login_timeout = ms(&r.login_timeout_ms, "login_timeout_ms", 60_000)?;
        let drain_delay = match &r.drain_delay_ms {
            // zero is a sensible delay here (no load balancer in front)
            Some(v) if *v.get_ref() == 0 => Duration::ZERO,
            v => ms(v, "drain_delay_ms", 0)?,
        };
        let metrics_listen = match &r.metrics_listen {
            None => None,
            Some(v) => Some(v.get_ref().trim().parse::<SocketAddr>().map_err(|_| {
                self.at(
                    &v.span(),
                    format!(
                        "metrics_listen = \"{}\" is not a socket address (expected e.g. \"127.0.0.1:9930\")",
                        v.get_ref()
                    ),
                )
            })?),
        };
        let max_clients = match &r.max_clients {
            Some(v) => self.positive(v, "max_clients")?,
            None => 10_000,
        };
        let max_message_size = match &r.max_message_size {
            Some(v) => {
                let n = self.positive(v, "max_message_size")?;
                if n < MIN_MESSAGE_SIZE {
                    return Err(self.at(
                        &v.span(),
                        format!("max_message_size must be at least {MIN_MESSAGE_SIZE} bytes"),
                    ));
                }
                n
            }
            None => 64 * 1024 * 1024,
        };
        let unparsed = match &r.unparsed {
            None => UnparsedPolicy::DefaultShard,
            Some(v) => match v.get_ref().as_str() {
                "default_shard" => UnparsedPolicy::DefaultShard,
                "refuse" => UnparsedPolicy::Refuse,
                other => {
                    return Err(self.at(
                        &v.span(),
                        format!(
                            "unparsed = \"{other}\" is not a policy (expected \"default_shard\" or \"refuse\")"
                        ),
                    ));
                }
            },
        };
        let merge_memory = match &r.merge_memory_mb {
            Some(v) => self
                .positive(v, "merge_memory_mb")?
                .saturating_mul(1024 * 1024),
            None => 64 * 1024 * 1024,
        };
        Ok(ServerConfig {
            listen,
            pool_size,
            pool_timeout,
            connect_timeout,
            max_clients,
            max_message_size,
            unparsed,
            merge_memory,
            hold_timeout,
            metrics_listen,
            shutdown_timeout,
            drain_delay,
            login_timeout,
        })
    }

    fn log(&self, l: Option<&Spanned<raw::RawLog>>) -> Result<LogConfig, ConfigError> {
        let mut out = LogConfig::default();
        let Some(l) = l.map(Spanned::get_ref) else {
            return Ok(out);
        };
        if let Some(level) = &l.level {
            if let Err(e) = tracing_subscriber::EnvFilter::builder().parse(level.get_ref()) {
                return Err(self.at(
                    &level.span(),
                    format!("level = \"{}\" is not a log filter: {e}", level.get_ref()),
                ));
            }
            out.level = level.get_ref().clone();
        }
        if let Some(format) = &l.format {
            out.format = match format.get_ref().as_str() {
                "text" => LogFormat::Text,
                "json" => LogFormat::Json,
                other => {
                    return Err(self.at(
                        &format.span(),
                        format!("format = \"{other}\" is not a log format (expected \"text\" or \"json\")"),
                    ));
                }
            };
        }
        Ok(out)
    }

    fn transactions(
        &self,
        t: Option<&Spanned<raw::RawTransactions>>,
    ) -> Result<TransactionsConfig, ConfigError> {
        let Some(t) = t.map(Spanned::get_ref) else {
            return Ok(TransactionsConfig {
                two_phase: true,
                node: "pgshard".to_owned(),
                recover_interval: Duration::from_secs(30),
            });
        };
        let node = match &t.node {
            Some(n) => {
                let name = n.get_ref();
                // part of a prepared-transaction id and of a LIKE pattern: keep it plain
                if name.is_empty()
                    || name.len() > 40
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                {
                    return Err(self.at(
                        &n.span(),
                        format!("node = \"{name}\": use 1 to 40 ASCII letters, digits or '-'"),
                    ));
                }
                name.clone()
            }
            None => "pgshard".to_owned(),
        };
        let recover_interval = match &t.recover_interval_s {
            Some(v) => Duration::from_secs(self.positive(v, "recover_interval_s")? as u64),
            None => Duration::from_secs(30),
        };
        Ok(TransactionsConfig {
            two_phase: t.two_phase.unwrap_or(true),
            node,
            recover_interval,
        })
    }

    fn health(&self, h: Option<&Spanned<raw::RawHealth>>) -> Result<HealthConfig, ConfigError> {
        let default = HealthConfig::default();
        let Some(h) = h.map(Spanned::get_ref) else {
            return Ok(default);
        };
        let ms = |v: &Option<Spanned<i64>>, name: &str, default: Duration| match v {
            Some(v) => self
                .positive(v, name)
                .map(|n| Duration::from_millis(n as u64)),
            None => Ok(default),
        };
        let count = |v: &Option<Spanned<i64>>, name: &str, default: u32| match v {
            Some(v) => {
                let n = self.positive(v, name)?;
                u32::try_from(n)
                    .map_err(|_| self.at(&v.span(), format!("{name} is too large (got {n})")))
            }
            None => Ok(default),
        };
        Ok(HealthConfig {
            enabled: h.enabled.unwrap_or(default.enabled),
            interval: ms(&h.interval_ms, "interval_ms", default.interval)?,
            timeout: ms(&h.timeout_ms, "timeout_ms", default.timeout)?,
            failure_threshold: count(
                &h.failure_threshold,
                "failure_threshold",
                default.failure_threshold,
            )?,
            success_threshold: count(
                &h.success_threshold,
                "success_threshold",
                default.success_threshold,
            )?,
            open: ms(&h.open_ms, "open_ms", default.open)?,
        })
    }

    fn tls(&self, t: Option<&Spanned<raw::RawTls>>) -> Result<TlsConfig, ConfigError> {
        let Some(section) = t else {
            return Ok(TlsConfig::default());
        };
        let t = section.get_ref();
        let (cert_files, acceptor) = match (&t.cert, &t.key) {
            (None, None) => (None, None),
            (Some(cert), Some(key)) => {
                let (cert_path, key_path) = (self.path(cert.get_ref()), self.path(key.get_ref()));
                let acceptor = crate::tls::server_config(&cert_path, &key_path)
                    .map_err(|m| self.at(&cert.span(), format!("[tls] cert/key: {m}")))?;
                (Some((cert_path, key_path)), Some(acceptor))
            }
            (Some(v), None) | (None, Some(v)) => {
                return Err(self.at(
                    &v.span(),
                    "[tls] needs both cert and key to accept TLS from clients",
                ));
            }
        };
        let require_tls = match &t.require_tls {
            Some(v) if *v.get_ref() && acceptor.is_none() => {
                return Err(self.at(
                    &v.span(),
                    "require_tls = true needs cert and key in [tls]: clients could not use TLS",
                ));
            }
            Some(v) => *v.get_ref(),
            None => false,
        };
        let backend_ca = t.backend_ca.as_ref().map(|v| (v, self.path(v.get_ref())));
        let backend = match t.backend.as_ref().map(|v| (v, v.get_ref().as_str())) {
            None | Some((_, "disable")) => BackendTls::Disable,
            Some((v, "require")) => BackendTls::Require(
                crate::tls::require_config().map_err(|m| self.at(&v.span(), m))?,
            ),
            Some((v, "verify-full")) => {
                let Some((ca, path)) = &backend_ca else {
                    return Err(self.at(
                        &v.span(),
                        "backend = \"verify-full\" needs backend_ca (the CA file shard certificates chain to)",
                    ));
                };
                BackendTls::VerifyFull(
                    crate::tls::verify_full_config(path)
                        .map_err(|m| self.at(&ca.span(), format!("[tls] backend_ca: {m}")))?,
                )
            }
            Some((v, other)) => {
                return Err(self.at(
                    &v.span(),
                    format!(
                        "backend = \"{other}\" is not a mode (expected \"disable\", \"require\" or \"verify-full\")"
                    ),
                ));
            }
        };
        Ok(TlsConfig {
            cert_files,
            acceptor,
            require_tls,
            backend,
            backend_ca: backend_ca.map(|(_, p)| p),
        })
    }

    /// A file named in the map: relative paths are relative to the map file's directory.
    fn path(&self, value: &str) -> PathBuf {
        let path = PathBuf::from(value);
        if path.is_absolute() {
            return path;
        }
        match Path::new(self.origin).parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.join(path),
            _ => path,
        }
    }

    /// A value that must be ≥ 1.
    fn positive(&self, v: &Spanned<i64>, name: &str) -> Result<usize, ConfigError> {
        match usize::try_from(*v.get_ref()) {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(self.at(
                &v.span(),
                format!("{name} must be at least 1 (got {})", v.get_ref()),
            )),
        }
    }

    fn users(&self, users: &[Spanned<RawUser>]) -> Result<Vec<UserConfig>, ConfigError> {
        if users.is_empty() {
            return Err(self.at_line(
                self.last_line(),
                "no [[users]]: add at least one user (name, password) that may connect",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(users.len());
        for u in users {
            let u = u.get_ref();
            let name = self.name(&u.name, "user")?;
            if let Some(first) = seen.insert(name, self.line(&u.name.span())) {
                return Err(self.at(
                    &u.name.span(),
                    format!("duplicate user \"{name}\" (first defined on line {first})"),
                ));
            }
            let secret = parse_secret(u.password.get_ref())
                .map_err(|m| self.at(&u.password.span(), format!("user \"{name}\": {m}")))?;
            out.push(UserConfig {
                name: name.to_string(),
                secret,
                admin: u.admin.unwrap_or(false),
            });
        }
        Ok(out)
    }

    /// A non-empty name.
    fn name<'s>(&self, v: &'s Spanned<String>, what: &str) -> Result<&'s str, ConfigError> {
        let name = v.get_ref().as_str();
        if name.trim().is_empty() {
            return Err(self.at(&v.span(), format!("{what} name must not be empty")));
        }
        Ok(name)
    }

    fn shards(&self, shards: &[Spanned<RawShard>]) -> Result<Vec<ShardConfig>, ConfigError> {
        if shards.is_empty() {
            return Err(self.at_line(
                self.last_line(),
                "no [[shards]]: add at least one shard (name, url)",
            ));
        }
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out: Vec<ShardConfig> = Vec::with_capacity(shards.len());
        for s in shards {
            let s = s.get_ref();
            let name = self.name(&s.name, "shard")?;
            if let Some(first) = seen.insert(name, self.line(&s.name.span())) {
                return Err(self.at(
                    &s.name.span(),
                    format!("duplicate shard \"{name}\" (first defined on line {first})"),
                ));
            }
            let url = PgUrl::parse(s.url.get_ref())
                .map_err(|m| self.at(&s.url.span(), format!("shard \"{name}\": {m}")))?;
            if let Some(first) = out.first()
                && first.dbname != url.dbname
            {
                return Err(self.at(
                    &s.url.span(),
                    format!(
                        "shard \"{name}\" uses database \"{}\" but shard \"{}\" uses \"{}\": \
                         every shard must hold the same logical database",
                        url.dbname, first.name, first.dbname
                    ),
                ));
            }
            let weight = match &s.weight {
                None => 1,
                Some(w) => match u32::try_from(*w.get_ref()) {
                    Ok(n) if (1..=MAX_WEIGHT).contains(&n) => n,
                    _ => {
                        return Err(self.at(
                            &w.span(),
                            format!(
                                "shard \"{name}\": weight must be between 1 and {MAX_WEIGHT} (got {})",
                                w.get_ref()
                            ),
                        ));
                    }
                },
            };
            out.push(ShardConfig {
                name: name.to_string(),
                url: s.url.get_ref().clone(),
                host: url.host,
                port: url.port,
                user: url.user,
                password: url.password,
                dbname: url.dbname,
                weight,
                tls: BackendTls::Disable,
            });
        }
        Ok(out)
    }

    fn sharding(
        &self,
        s: &Spanned<RawSharding>,
        shard_names: &[String],
    ) -> Result<(u32, u32, ShardId), ConfigError> {
        let r = s.get_ref();
        let slots = match u32::try_from(*r.slots.get_ref()) {
            Ok(n) if n.is_power_of_two() && n <= MAX_SLOTS => n,
            _ => {
                return Err(self.at(
                    &r.slots.span(),
                    format!(
                        "slots must be a power of two between 1 and {MAX_SLOTS} (got {})",
                        r.slots.get_ref()
                    ),
                ));
            }
        };
        let vnodes = match u32::try_from(*r.vnodes.get_ref()) {
            Ok(n) if (1..=MAX_VNODES).contains(&n) => n,
            _ => {
                return Err(self.at(
                    &r.vnodes.span(),
                    format!(
                        "vnodes must be between 1 and {MAX_VNODES} (got {})",
                        r.vnodes.get_ref()
                    ),
                ));
            }
        };
        let default_shard = match &r.default_shard {
            None => 0,
            Some(d) => shard_names
                .iter()
                .position(|n| n == d.get_ref())
                .ok_or_else(|| {
                    self.at(
                        &d.span(),
                        format!(
                            "default_shard \"{}\" is not a shard (shards: {})",
                            d.get_ref(),
                            shard_names.join(", ")
                        ),
                    )
                })?,
        };
        Ok((slots, vnodes, default_shard))
    }

    /// Sharded tables by name, and the names of the reference tables.
    fn tables(
        &self,
        tables: &[Spanned<RawTable>],
    ) -> Result<(HashMap<String, TableRule>, BTreeSet<String>), ConfigError> {
        let mut out: HashMap<String, TableRule> = HashMap::new();
        let mut replicated = BTreeSet::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for entry in tables {
            let t = entry.get_ref();
            let name = fold_identifier(self.name(&t.name, "table")?);
            if name.contains('.') {
                return Err(self.at(
                    &t.name.span(),
                    format!(
                        "table name \"{}\" must not be schema-qualified: write just the table name",
                        t.name.get_ref()
                    ),
                ));
            }
            if let Some(first) = lines.get(&name) {
                return Err(self.at(
                    &t.name.span(),
                    format!("duplicate table \"{name}\" (first defined on line {first})"),
                ));
            }
            lines.insert(name.clone(), self.line(&t.name.span()));
            if t.replicated.as_ref().is_some_and(|r| *r.get_ref()) {
                let extra = t
                    .key
                    .as_ref()
                    .map(|k| (k.span(), "key"))
                    .or_else(|| t.key_type.as_ref().map(|k| (k.span(), "type")));
                if let Some((span, what)) = extra {
                    return Err(self.at(
                        &span,
                        format!(
                            "table \"{name}\" is replicated (a full copy on every shard): remove `{what}`, a reference table has no shard key"
                        ),
                    ));
                }
                replicated.insert(name);
                continue;
            }
            let (Some(key), Some(key_type)) = (&t.key, &t.key_type) else {
                let missing = if t.key.is_none() { "key" } else { "type" };
                return Err(self.at(
                    &t.name.span(),
                    format!(
                        "table \"{name}\" has no `{missing}`: a sharded table needs `key` and `type`, a reference table `replicated = true`"
                    ),
                ));
            };
            let key = fold_identifier(self.name(key, "key column")?);
            let key_type: KeyType = key_type
                .get_ref()
                .parse()
                .map_err(|m: String| self.at(&key_type.span(), format!("table \"{name}\": {m}")))?;
            out.insert(
                name.clone(),
                TableRule {
                    name,
                    key,
                    key_type,
                },
            );
        }
        Ok((out, replicated))
    }

    fn slot_map(
        &self,
        map: &Spanned<RawSlotMap>,
        shard_names: &[String],
        slots: u32,
    ) -> Result<Vec<ShardId>, ConfigError> {
        // Owner and the line that assigned it, per slot.
        let mut owner: Vec<Option<(ShardId, usize)>> = vec![None; slots as usize];
        // Visit entries in file order so "assigned twice" blames the later line.
        let mut entries: Vec<_> = map.get_ref().iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        for (name, ranges) in entries {
            let shard = shard_names
                .iter()
                .position(|n| n == name.get_ref())
                .ok_or_else(|| {
                    self.at(
                        &name.span(),
                        format!(
                            "[slot_map] names unknown shard \"{}\" (shards: {})",
                            name.get_ref(),
                            shard_names.join(", ")
                        ),
                    )
                })?;
            for range in ranges.get_ref() {
                let line = self.line(&range.span());
                let (lo, hi) = parse_range(range.get_ref(), slots).map_err(|m| {
                    self.at_line(line, format!("[slot_map] {}: {m}", name.get_ref()))
                })?;
                for slot in lo..=hi {
                    let cell = &mut owner[slot as usize];
                    if let Some((prev, prev_line)) = *cell {
                        return Err(self.at_line(
                            line,
                            format!(
                                "slot {slot} is assigned twice: to {} (line {prev_line}) and to {} (line {line})",
                                shard_names[prev],
                                name.get_ref()
                            ),
                        ));
                    }
                    *cell = Some((shard, line));
                }
            }
        }
        let missing = missing_ranges(&owner);
        if !missing.is_empty() {
            const SHOWN: usize = 5;
            let mut list: Vec<String> = missing
                .iter()
                .take(SHOWN)
                .map(|&(a, b)| format_range(a, b))
                .collect();
            if missing.len() > SHOWN {
                list.push(format!("and {} more ranges", missing.len() - SHOWN));
            }
            let count: u32 = missing.iter().map(|&(a, b)| b - a + 1).sum();
            return Err(self.at(
                &map.span(),
                format!(
                    "[slot_map] leaves {count} slot(s) without a shard: {}; every slot 0-{} must be assigned exactly once",
                    list.join(", "),
                    slots - 1
                ),
            ));
        }
        Ok(owner.into_iter().flatten().map(|(s, _)| s).collect())
    }
}

/// Postgres folds unquoted identifiers to lower case (ASCII only, as `downcase_identifier`
/// does for multi-byte encodings).
fn fold_identifier(s: &str) -> String {
    s.trim().to_ascii_lowercase()
}

/// `"a-b"` or `"n"` → inclusive range within `0..slots` (also the admin console's
/// spelling of slot ranges).
pub fn parse_range(s: &str, slots: u32) -> Result<(u32, u32), String> {
    let malformed = || format!("\"{s}\" is not a slot range (expected \"a-b\" or \"n\")");
    let num = |t: &str| -> Result<u32, String> {
        let t = t.trim();
        if t.is_empty() || !t.bytes().all(|b| b.is_ascii_digit()) {
            return Err(malformed());
        }
        t.parse::<u32>().map_err(|_| {
            format!(
                "slot range \"{s}\" is out of bounds: slots are 0-{}",
                slots - 1
            )
        })
    };
    let (lo, hi) = match s.split_once('-') {
        Some((a, b)) => (num(a)?, num(b)?),
        None => {
            let n = num(s)?;
            (n, n)
        }
    };
    if lo > hi {
        return Err(format!(
            "slot range \"{s}\" is reversed (write \"{hi}-{lo}\")"
        ));
    }
    if hi >= slots {
        return Err(format!(
            "slot range \"{s}\" is out of bounds: slots are 0-{}",
            slots - 1
        ));
    }
    Ok((lo, hi))
}

/// Maximal runs of unassigned slots.
fn missing_ranges(owner: &[Option<(ShardId, usize)>]) -> Vec<(u32, u32)> {
    super::slot_runs(owner.iter().map(Option::is_none))
}

/// `"a-b"`, or `"a"` for a single slot: the `[slot_map]` spelling.
pub fn format_range(lo: u32, hi: u32) -> String {
    if lo == hi {
        lo.to_string()
    } else {
        format!("{lo}-{hi}")
    }
}

/// A plaintext password or a `SCRAM-SHA-256$<iter>:<salt>$<StoredKey>:<ServerKey>`
/// verifier (the `pg_authid.rolpassword` format).
fn parse_secret(s: &str) -> Result<UserSecret, String> {
    const PREFIX: &str = "SCRAM-SHA-256$";
    if s.is_empty() {
        return Err("password must not be empty".into());
    }
    if let Some(rest) = s.strip_prefix(PREFIX) {
        let bad = || {
            "malformed SCRAM-SHA-256 verifier: expected \
             SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>"
                .to_string()
        };
        let (params, keys) = rest.split_once('$').ok_or_else(bad)?;
        let (iter, salt) = params.split_once(':').ok_or_else(bad)?;
        let (stored, server) = keys.split_once(':').ok_or_else(bad)?;
        let iterations: u32 = iter.parse().map_err(|_| bad())?;
        if iterations == 0 {
            return Err("SCRAM-SHA-256 verifier has 0 iterations".into());
        }
        let decode = |part: &str, what: &str| {
            BASE64
                .decode(part)
                .map_err(|_| format!("SCRAM-SHA-256 verifier: {what} is not valid base64"))
        };
        let salt = decode(salt, "salt")?;
        let stored_key = decode(stored, "StoredKey")?;
        let server_key = decode(server, "ServerKey")?;
        if salt.is_empty() {
            return Err("SCRAM-SHA-256 verifier: salt is empty".into());
        }
        if stored_key.len() != 32 || server_key.len() != 32 {
            return Err("SCRAM-SHA-256 verifier: StoredKey and ServerKey must be 32 bytes".into());
        }
        return Ok(UserSecret::Scram {
            iterations,
            salt,
            stored_key,
            server_key,
        });
    }
    if s.len() == 35 && s.starts_with("md5") && s[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(
            "md5 password hashes cannot be used: write the plaintext password or a \
             SCRAM-SHA-256 verifier"
                .into(),
        );
    }
    Ok(UserSecret::Plain(s.to_string()))
}

pub use super::url::{PgUrl, redact_url};

#[cfg(test)]
#[path = "validate_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "tls_tests.rs"]
mod tls_tests;
