//! Raw → validated configuration. Every error names the TOML line.
//!
//! Checks run in file order (server, users, shards, sharding, tables, slot map) and stop
//! at the first problem, so the message always points at one concrete line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::Path;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use percent_encoding::percent_decode_str;
use toml::Spanned;

use super::raw::{self, RawFile, RawServer, RawShard, RawSharding, RawSlotMap, RawTable, RawUser};
use super::{
    Config, ServerConfig, ShardConfig, ShardMap, TableRule, UnparsedPolicy, UserConfig, UserSecret,
};
use crate::sharding::ring::{RingMember, assign_slots};
use crate::sharding::{KeyType, ShardId};

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
        let shards = self.shards(&raw.shards)?;
        let shard_names: Vec<String> = shards.iter().map(|s| s.name.clone()).collect();
        let (slots, vnodes, default_shard) = self.sharding(&raw.sharding, &shard_names)?;
        let tables = self.tables(&raw.tables)?;
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
        Ok(Config {
            server,
            users,
            shards,
            map: ShardMap {
                epoch: 1,
                slots,
                shard_names,
                slot_owner,
                tables,
                default_shard,
                vnodes,
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
        Ok(ServerConfig {
            listen,
            pool_size,
            pool_timeout,
            connect_timeout,
            max_clients,
            max_message_size,
            unparsed,
        })
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

    fn tables(
        &self,
        tables: &[Spanned<RawTable>],
    ) -> Result<HashMap<String, TableRule>, ConfigError> {
        let mut out: HashMap<String, TableRule> = HashMap::new();
        let mut lines: HashMap<String, usize> = HashMap::new();
        for t in tables {
            let t = t.get_ref();
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
            let key = fold_identifier(self.name(&t.key, "key column")?);
            let key_type: KeyType = t.key_type.get_ref().parse().map_err(|m: String| {
                self.at(&t.key_type.span(), format!("table \"{name}\": {m}"))
            })?;
            if let Some(first) = lines.get(&name) {
                return Err(self.at(
                    &t.name.span(),
                    format!("duplicate table \"{name}\" (first defined on line {first})"),
                ));
            }
            lines.insert(name.clone(), self.line(&t.name.span()));
            out.insert(
                name.clone(),
                TableRule {
                    name,
                    key,
                    key_type,
                },
            );
        }
        Ok(out)
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

/// `"a-b"` or `"n"` → inclusive range within `0..slots`.
fn parse_range(s: &str, slots: u32) -> Result<(u32, u32), String> {
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
    let mut out: Vec<(u32, u32)> = Vec::new();
    for (slot, o) in owner.iter().enumerate() {
        if o.is_some() {
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

/// The parts of a `postgres://` URL the proxy needs to log in to a shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgUrl {
    /// host name or IP (without IPv6 brackets)
    pub host: String,
    /// TCP port (default 5432)
    pub port: u16,
    /// login user
    pub user: String,
    /// login password, if given
    pub password: Option<String>,
    /// database name
    pub dbname: String,
}

impl PgUrl {
    /// Parse `postgres[ql]://user[:password]@host[:port]/database`. User, host and database
    /// are required; connection parameters (`?…`), several hosts and Unix sockets are not
    /// supported. Percent-escapes are decoded in user, password and database.
    pub fn parse(url: &str) -> Result<PgUrl, String> {
        let rest = url
            .strip_prefix("postgres://")
            .or_else(|| url.strip_prefix("postgresql://"))
            .ok_or_else(|| {
                format!(
                    "url \"{}\" is not a postgres:// or postgresql:// URL",
                    redact_url(url)
                )
            })?;
        if rest.contains('?') || rest.contains('#') {
            return Err(
                "connection parameters (?…) are not supported in shard urls: \
                 write postgres://user[:password]@host[:port]/database"
                    .into(),
            );
        }
        let (authority, path) = rest
            .split_once('/')
            .ok_or("url has no database name: write postgres://user@host:port/database")?;
        let dbname = decode(path, "database name")?;
        if dbname.is_empty() {
            return Err(
                "url has no database name: write postgres://user@host:port/database".into(),
            );
        }
        if dbname.contains('/') || path.contains('/') {
            return Err(format!("database name \"{dbname}\" must not contain '/'"));
        }
        let (userinfo, hostport) = authority
            .rsplit_once('@')
            .ok_or("url has no user: write postgres://user@host:port/database")?;
        let (user, password) = match userinfo.split_once(':') {
            Some((u, p)) => (decode(u, "user")?, Some(decode(p, "password")?)),
            None => (decode(userinfo, "user")?, None),
        };
        if user.is_empty() {
            return Err("url has no user: write postgres://user@host:port/database".into());
        }
        if hostport.contains(',') {
            return Err("several hosts in one shard url are not supported".into());
        }
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6
                .split_once(']')
                .ok_or("url has an unterminated [IPv6] host")?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or("url has junk after the [IPv6] host")?,
                ),
            };
            (h.to_string(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (h.to_string(), Some(p)),
                None => (hostport.to_string(), None),
            }
        };
        if host.is_empty() {
            return Err(
                "url has no host (Unix sockets are not supported): write postgres://user@host:port/database"
                    .into(),
            );
        }
        let port = match port {
            None => 5432,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => n,
                _ => return Err(format!("url port \"{p}\" is not a TCP port (1-65535)")),
            },
        };
        Ok(PgUrl {
            host,
            port,
            user,
            password,
            dbname,
        })
    }
}

/// Percent-decode a URL part into UTF-8.
fn decode(part: &str, what: &str) -> Result<String, String> {
    percent_decode_str(part)
        .decode_utf8()
        .map(|s| s.into_owned())
        .map_err(|_| format!("url {what} is not valid UTF-8 after percent-decoding"))
}

/// The URL with any password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!(
                "{}{user}:***@{host}{}",
                &url[..scheme_end],
                &rest[authority_end..]
            ),
            None => url.to_string(),
        },
        None => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("testdata/base.toml");

    /// The base map with `from` (which must occur exactly once) replaced by `to`.
    fn edit(from: &str, to: &str) -> String {
        assert_eq!(
            BASE.matches(from).count(),
            1,
            "{from:?} must occur once in base"
        );
        BASE.replacen(from, to, 1)
    }

    /// The (line, message) of the error the text must produce.
    fn err(text: &str) -> (usize, String) {
        match parse(text, "test.toml") {
            Err(ConfigError::Invalid {
                path,
                line,
                message,
            }) => {
                assert_eq!(path, "test.toml");
                (line, message)
            }
            Err(other) => panic!("unexpected error {other}"),
            Ok(_) => panic!("accepted:\n{text}"),
        }
    }

    fn err_edit(from: &str, to: &str) -> (usize, String) {
        err(&edit(from, to))
    }

    #[test]
    fn base_is_valid() {
        let c = parse(BASE, "test.toml").expect("base map");
        assert_eq!(c.server.listen, "127.0.0.1:6432".parse().unwrap());
        assert_eq!(c.server.pool_size, 10);
        assert_eq!(c.server.pool_timeout, Duration::from_millis(5000));
        assert_eq!(c.server.max_clients, 10_000);
        assert_eq!(c.server.max_message_size, 64 << 20);
        assert_eq!(c.server.unparsed, UnparsedPolicy::DefaultShard);
        assert_eq!(c.users.len(), 1);
        assert!(matches!(&c.users[0].secret, UserSecret::Plain(p) if p == "app"));
        assert_eq!(c.shards[1].password.as_deref(), Some("se/cret"));
        assert_eq!(c.shards[1].port, 5602);
        assert_eq!(c.shards[1].dbname, "app");
        assert_eq!(c.shards[1].weight, 1);
        let m = &c.map;
        assert_eq!(m.epoch, 1);
        assert_eq!(m.slots, 16);
        assert_eq!(m.vnodes, 8);
        assert_eq!(m.default_shard, 0);
        assert_eq!(m.shard_names, ["s0", "s1"]);
        assert_eq!(
            m.slot_owner,
            [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1]
        );
        assert_eq!(m.ranges_of(1), [(8, 15)]);
        assert_eq!(m.slot_counts(), [8, 8]);
    }

    #[test]
    fn table_names_and_keys_fold_to_lower_case() {
        let c = parse(BASE, "test.toml").unwrap();
        let t = c.map.table("accounts").expect("folded name");
        assert_eq!(t.key, "aid");
        assert_eq!(t.key_type, KeyType::BigInt);
        assert!(c.map.table("Accounts").is_none());
    }

    #[test]
    fn toml_syntax_error() {
        let (line, msg) = err_edit("vnodes = 8", "vnodes = 8 8");
        assert_eq!(line, 20);
        assert!(msg.contains("expected"), "{msg}");
    }

    #[test]
    fn unknown_field() {
        let (line, msg) = err_edit("pool_size = 10\n", "pool_size = 10\npool_sise = 3\n");
        assert_eq!(line, 5);
        assert!(
            msg.starts_with("unknown field `pool_sise`, expected one of"),
            "{msg}"
        );
    }

    #[test]
    fn unknown_section() {
        let (line, msg) = err(&format!("{BASE}\n[extra]\nx = 1\n"));
        assert_eq!(line, 31);
        assert!(msg.starts_with("unknown field `extra`"), "{msg}");
    }

    #[test]
    fn missing_field() {
        let (line, msg) = err_edit("pool_size = 10\n", "");
        assert_eq!((line, msg.as_str()), (2, "missing field `pool_size`"));
    }

    #[test]
    fn wrong_value_type() {
        let (line, msg) = err_edit("pool_size = 10", "pool_size = \"ten\"");
        assert_eq!(line, 4);
        assert!(msg.contains("invalid type: string \"ten\""), "{msg}");
    }

    #[test]
    fn listen_not_a_socket_address() {
        let (line, msg) = err_edit("\"127.0.0.1:6432\"", "\"localhost\"");
        assert_eq!(line, 3);
        assert_eq!(
            msg,
            "listen = \"localhost\" is not a socket address (expected e.g. \"127.0.0.1:6432\")"
        );
    }

    #[test]
    fn pool_size_zero() {
        let (line, msg) = err_edit("pool_size = 10", "pool_size = 0");
        assert_eq!(
            (line, msg.as_str()),
            (4, "pool_size must be at least 1 (got 0)")
        );
    }

    #[test]
    fn optional_server_settings() {
        let text = edit(
            "pool_size = 10\n",
            "pool_size = 10\npool_timeout_ms = 250\nconnect_timeout_ms = 1000\nmax_clients = 7\n\
             max_message_size = 4096\nunparsed = \"refuse\"\n",
        );
        let c = parse(&text, "t").unwrap();
        assert_eq!(c.server.pool_timeout, Duration::from_millis(250));
        assert_eq!(c.server.connect_timeout, Duration::from_millis(1000));
        assert_eq!(c.server.max_clients, 7);
        assert_eq!(c.server.max_message_size, 4096);
        assert_eq!(c.server.unparsed, UnparsedPolicy::Refuse);
    }

    #[test]
    fn bad_unparsed_policy() {
        let (line, msg) = err_edit("pool_size = 10\n", "pool_size = 10\nunparsed = \"shrug\"\n");
        assert_eq!(line, 5);
        assert_eq!(
            msg,
            "unparsed = \"shrug\" is not a policy (expected \"default_shard\" or \"refuse\")"
        );
    }

    #[test]
    fn tiny_max_message_size() {
        let (line, msg) = err_edit(
            "pool_size = 10\n",
            "pool_size = 10\nmax_message_size = 10\n",
        );
        assert_eq!(line, 5);
        assert_eq!(msg, "max_message_size must be at least 1024 bytes");
    }

    #[test]
    fn duplicate_user() {
        let (line, msg) = err_edit(
            "password = \"app\"\n",
            "password = \"app\"\n\n[[users]]\nname = \"app\"\npassword = \"x\"\n",
        );
        assert_eq!(
            (line, msg.as_str()),
            (11, "duplicate user \"app\" (first defined on line 7)")
        );
    }

    #[test]
    fn no_users() {
        let (line, msg) = err_edit("[[users]]\nname = \"app\"\npassword = \"app\"\n", "");
        assert_eq!(line, 26);
        assert_eq!(
            msg,
            "no [[users]]: add at least one user (name, password) that may connect"
        );
    }

    #[test]
    fn malformed_scram_verifier() {
        let (line, msg) = err_edit(
            "password = \"app\"",
            "password = \"SCRAM-SHA-256$4096:abc\"",
        );
        assert_eq!(line, 8);
        assert_eq!(
            msg,
            "user \"app\": malformed SCRAM-SHA-256 verifier: expected \
             SCRAM-SHA-256$<iterations>:<base64 salt>$<base64 StoredKey>:<base64 ServerKey>"
        );
        let (line, msg) = err_edit(
            "password = \"app\"",
            "password = \"SCRAM-SHA-256$4096:c2FsdA==$!!!:AAAA\"",
        );
        assert_eq!(line, 8);
        assert_eq!(
            msg,
            "user \"app\": SCRAM-SHA-256 verifier: StoredKey is not valid base64"
        );
    }

    #[test]
    fn md5_hash_is_refused() {
        let (line, msg) = err_edit(
            "password = \"app\"",
            "password = \"md5c4ca4238a0b923820dcc509a6f75849b\"",
        );
        assert_eq!(line, 8);
        assert!(
            msg.starts_with("user \"app\": md5 password hashes cannot be used"),
            "{msg}"
        );
    }

    #[test]
    fn scram_verifier_round_trips() {
        let derived = UserSecret::Plain("app".into()).to_verifier(b"0123456789abcdef", 4096);
        let UserSecret::Scram {
            iterations,
            salt,
            stored_key,
            server_key,
        } = derived
        else {
            panic!("not a verifier");
        };
        let verifier = format!(
            "SCRAM-SHA-256${iterations}:{}${}:{}",
            BASE64.encode(&salt),
            BASE64.encode(&stored_key),
            BASE64.encode(&server_key)
        );
        let text = edit("password = \"app\"", &format!("password = \"{verifier}\""));
        let c = parse(&text, "t").unwrap();
        match &c.users[0].secret {
            UserSecret::Scram {
                iterations: i,
                salt: s,
                stored_key: k,
                server_key: v,
            } => {
                assert_eq!((*i, s, k, v), (4096, &salt, &stored_key, &server_key));
            }
            other => panic!("{other:?}"),
        }
        assert!(c.users[0].secret.scram_secret().is_some());
    }

    #[test]
    fn duplicate_shard() {
        let (line, msg) = err_edit("name = \"s1\"", "name = \"s0\"");
        assert_eq!(
            (line, msg.as_str()),
            (15, "duplicate shard \"s0\" (first defined on line 11)")
        );
    }

    #[test]
    fn non_postgres_url() {
        let (line, msg) = err_edit(
            "postgres://postgres@127.0.0.1:5601/app",
            "mysql://root:pw@127.0.0.1/app",
        );
        assert_eq!(line, 12);
        assert_eq!(
            msg,
            "shard \"s0\": url \"mysql://root:***@127.0.0.1/app\" is not a postgres:// or postgresql:// URL"
        );
    }

    #[test]
    fn url_without_database() {
        let (line, msg) = err_edit(
            "postgres://postgres@127.0.0.1:5601/app",
            "postgres://postgres@127.0.0.1:5601",
        );
        assert_eq!(line, 12);
        assert_eq!(
            msg,
            "shard \"s0\": url has no database name: write postgres://user@host:port/database"
        );
    }

    #[test]
    fn url_bad_port() {
        let (line, msg) = err_edit("127.0.0.1:5601", "127.0.0.1:99999");
        assert_eq!(line, 12);
        assert_eq!(
            msg,
            "shard \"s0\": url port \"99999\" is not a TCP port (1-65535)"
        );
    }

    #[test]
    fn shards_on_different_databases() {
        let (line, msg) = err_edit("5602/app", "5602/other");
        assert_eq!(line, 16);
        assert_eq!(
            msg,
            "shard \"s1\" uses database \"other\" but shard \"s0\" uses \"app\": \
             every shard must hold the same logical database"
        );
    }

    #[test]
    fn bad_weight() {
        let (line, msg) = err_edit("5601/app\"\n", "5601/app\"\nweight = 0\n");
        assert_eq!(line, 13);
        assert_eq!(
            msg,
            "shard \"s0\": weight must be between 1 and 100 (got 0)"
        );
    }

    #[test]
    fn slots_not_a_power_of_two() {
        for bad in ["12", "0", "-16", "131072"] {
            let (line, msg) = err_edit("slots = 16", &format!("slots = {bad}"));
            assert_eq!(line, 19);
            assert_eq!(
                msg,
                format!("slots must be a power of two between 1 and 65536 (got {bad})")
            );
        }
    }

    #[test]
    fn vnodes_zero() {
        let (line, msg) = err_edit("vnodes = 8", "vnodes = 0");
        assert_eq!(
            (line, msg.as_str()),
            (20, "vnodes must be between 1 and 4096 (got 0)")
        );
    }

    #[test]
    fn default_shard() {
        let ok = edit("vnodes = 8\n", "vnodes = 8\ndefault_shard = \"s1\"\n");
        assert_eq!(parse(&ok, "t").unwrap().map.default_shard, 1);
        let (line, msg) = err_edit("vnodes = 8\n", "vnodes = 8\ndefault_shard = \"s7\"\n");
        assert_eq!(line, 21);
        assert_eq!(msg, "default_shard \"s7\" is not a shard (shards: s0, s1)");
    }

    #[test]
    fn bad_key_type() {
        let (line, msg) = err_edit("type = \"bigint\"", "type = \"float\"");
        assert_eq!(line, 25);
        assert_eq!(
            msg,
            "table \"accounts\": unsupported key type \"float\" \
             (expected smallint, integer, bigint, text or uuid)"
        );
    }

    #[test]
    fn duplicate_table_after_folding() {
        let (line, msg) = err_edit(
            "type = \"bigint\"\n",
            "type = \"bigint\"\n\n[[tables]]\nname = \"ACCOUNTS\"\nkey = \"id\"\ntype = \"integer\"\n",
        );
        assert_eq!(
            (line, msg.as_str()),
            (
                28,
                "duplicate table \"accounts\" (first defined on line 23)"
            )
        );
    }

    #[test]
    fn schema_qualified_table() {
        let (line, msg) = err_edit("\"Accounts\"", "\"public.accounts\"");
        assert_eq!(line, 23);
        assert_eq!(
            msg,
            "table name \"public.accounts\" must not be schema-qualified: write just the table name"
        );
    }

    #[test]
    fn slot_map_missing() {
        let cut = BASE.find("[slot_map]").unwrap();
        let (line, msg) = err(&BASE[..cut]);
        assert_eq!(line, 25);
        assert_eq!(
            msg,
            "no [slot_map]: run `pgshard map init -c test.toml` to assign slots to shards"
        );
        // ... but the ring can fill it in.
        let c = parse_with(&BASE[..cut], "t", SlotMapSource::Ring).unwrap();
        assert_eq!(c.map.slot_owner.len(), 16);
    }

    #[test]
    fn slot_map_unknown_shard() {
        let (line, msg) = err_edit("s1 = [", "s9 = [");
        assert_eq!(line, 29);
        assert_eq!(
            msg,
            "[slot_map] names unknown shard \"s9\" (shards: s0, s1)"
        );
    }

    #[test]
    fn slot_range_out_of_bounds() {
        let (line, msg) = err_edit("\"15\"", "\"15-16\"");
        assert_eq!(line, 29);
        assert_eq!(
            msg,
            "[slot_map] s1: slot range \"15-16\" is out of bounds: slots are 0-15"
        );
    }

    #[test]
    fn slot_range_malformed() {
        for bad in ["8..14", "-3", "8-", "x", "8-14-15", ""] {
            let (line, msg) = err_edit("\"8-14\"", &format!("\"{bad}\""));
            assert_eq!(line, 29);
            assert_eq!(
                msg,
                format!("[slot_map] s1: \"{bad}\" is not a slot range (expected \"a-b\" or \"n\")")
            );
        }
        let (line, msg) = err_edit("\"8-14\"", "\"14-8\"");
        assert_eq!(line, 29);
        assert_eq!(
            msg,
            "[slot_map] s1: slot range \"14-8\" is reversed (write \"8-14\")"
        );
    }

    #[test]
    fn slot_assigned_twice() {
        let (line, msg) = err_edit("\"0-7\"", "\"0-8\"");
        assert_eq!(line, 29);
        assert_eq!(
            msg,
            "slot 8 is assigned twice: to s0 (line 28) and to s1 (line 29)"
        );
    }

    #[test]
    fn slot_missing() {
        let (line, msg) = err_edit("s1 = [\"8-14\", \"15\"]", "s1 = [\"9\", \"11-13\"]");
        assert_eq!(line, 27);
        assert_eq!(
            msg,
            "[slot_map] leaves 4 slot(s) without a shard: 8, 10, 14-15; \
             every slot 0-15 must be assigned exactly once"
        );
    }

    #[test]
    fn many_missing_ranges_are_abbreviated() {
        let (line, msg) = err_edit(
            "s0 = [\"0-7\"]\ns1 = [\"8-14\", \"15\"]",
            "s0 = [\"1\", \"3\", \"5\"]\ns1 = [\"9\", \"11\", \"13\", \"15\"]",
        );
        assert_eq!(line, 27);
        assert_eq!(
            msg,
            "[slot_map] leaves 9 slot(s) without a shard: 0, 2, 4, 6-8, 10, and 2 more ranges; \
             every slot 0-15 must be assigned exactly once"
        );
    }

    #[test]
    fn shard_without_slots_is_allowed() {
        let text = edit(
            "s0 = [\"0-7\"]\ns1 = [\"8-14\", \"15\"]",
            "s0 = []\ns1 = [\"0-15\"]",
        );
        let c = parse(&text, "t").unwrap();
        assert_eq!(c.map.slot_counts(), [0, 16]);
        assert!(c.map.ranges_of(0).is_empty());
    }

    #[test]
    fn url_forms() {
        let u = PgUrl::parse("postgresql://u%40x:p%3Aw@[::1]/d%20b").unwrap();
        assert_eq!(
            u,
            PgUrl {
                host: "::1".into(),
                port: 5432,
                user: "u@x".into(),
                password: Some("p:w".into()),
                dbname: "d b".into(),
            }
        );
        let u = PgUrl::parse("postgres://me@db.example:6000/app").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.password),
            ("db.example", 6000, None)
        );
        for bad in [
            "postgres://@h/db",
            "postgres://u@/db",
            "postgres://u@h/db?sslmode=require",
            "postgres://u@h1,h2/db",
            "postgres://u@h:0/db",
            "postgres://u@[::1/db",
            "postgres://u@h/a/b",
            "http://u@h/db",
        ] {
            assert!(PgUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn redaction_hides_passwords_only() {
        assert_eq!(redact_url("postgres://u:pw@h/db"), "postgres://u:***@h/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    #[test]
    fn unreadable_file_is_io_error() {
        let e = load(Path::new("/nonexistent/shardmap.toml")).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }));
    }
}
