//! Raw serde types mirroring `shardmap.toml`.
//!
//! Every struct denies unknown fields so a typo fails loudly instead of silently falling
//! back to a default. Values that a later check may reject are wrapped in
//! [`toml::Spanned`] so the error can name their line. Numbers are read as `i64` so that
//! a negative or zero value gets our own message rather than serde's type error.

use std::collections::BTreeMap;
use std::ops::Range;

use serde::Deserialize;
use toml::Spanned;

/// The whole file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawFile {
    /// `[server]`
    pub server: Spanned<RawServer>,
    /// `[[users]]`
    #[serde(default)]
    pub users: Vec<Spanned<RawUser>>,
    /// `[[shards]]`
    #[serde(default)]
    pub shards: Vec<Spanned<RawShard>>,
    /// `[sharding]`
    pub sharding: Spanned<RawSharding>,
    /// `[[tables]]`
    #[serde(default)]
    pub tables: Vec<Spanned<RawTable>>,
    /// `[slot_map]`: shard name → list of `"a-b"` / `"n"` slot ranges
    pub slot_map: Option<Spanned<RawSlotMap>>,
    /// `[transactions]`
    pub transactions: Option<Spanned<RawTransactions>>,
    /// `[log]`
    pub log: Option<Spanned<RawLog>>,
    /// `[health]`
    pub health: Option<Spanned<RawHealth>>,
    /// `[tls]`
    pub tls: Option<Spanned<RawTls>>,
}

/// `[log]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// a tracing filter: `info`, `debug`, `pgshard=trace,info`…
    pub level: Option<Spanned<String>>,
    /// `"text"` or `"json"`
    pub format: Option<Spanned<String>>,
}

/// `[health]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawHealth {
    /// run health checks and the circuit breaker (default true)
    pub enabled: Option<bool>,
    /// time between two checks of a shard (ms)
    pub interval_ms: Option<Spanned<i64>>,
    /// longest a check (connect + login + `SELECT 1`) may take (ms)
    pub timeout_ms: Option<Spanned<i64>>,
    /// consecutive failures that open the breaker
    pub failure_threshold: Option<Spanned<i64>>,
    /// consecutive successful half-open probes that close it
    pub success_threshold: Option<Spanned<i64>>,
    /// cool-down of an open breaker before a half-open probe (ms)
    pub open_ms: Option<Spanned<i64>>,
}

/// `[tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// certificate chain (PEM) presented to clients
    pub cert: Option<Spanned<String>>,
    /// private key (PEM) of `cert`
    pub key: Option<Spanned<String>>,
    /// refuse clients that do not use TLS
    pub require_tls: Option<Spanned<bool>>,
    /// TLS to the shards: `"disable"`, `"require"` or `"verify-full"`
    pub backend: Option<Spanned<String>>,
    /// CA certificates (PEM) shard certificates must chain to (`verify-full`)
    pub backend_ca: Option<Spanned<String>>,
}

/// `[transactions]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTransactions {
    /// commit transactions that wrote on several shards with two-phase commit
    pub two_phase: Option<bool>,
    /// this proxy's name in prepared-transaction ids
    pub node: Option<Spanned<String>>,
    /// how often in-doubt prepared transactions are resolved (seconds)
    pub recover_interval_s: Option<Spanned<i64>>,
}

/// `[slot_map]` entries, keyed by shard name (spans kept for both sides).
pub type RawSlotMap = BTreeMap<Spanned<String>, Spanned<Vec<Spanned<String>>>>;

/// `[server]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    /// socket address to listen on
    pub listen: Spanned<String>,
    /// backend connections per shard
    pub pool_size: Spanned<i64>,
    /// wait for a free backend connection (ms)
    pub pool_timeout_ms: Option<Spanned<i64>>,
    /// backend connect + login timeout (ms)
    pub connect_timeout_ms: Option<Spanned<i64>>,
    /// most concurrent clients
    pub max_clients: Option<Spanned<i64>>,
    /// largest frontend message (bytes)
    pub max_message_size: Option<Spanned<i64>>,
    /// `"default_shard"` or `"refuse"`
    pub unparsed: Option<Spanned<String>>,
    /// most bytes a cross-shard merge may buffer (MiB)
    pub merge_memory_mb: Option<Spanned<i64>>,
    /// longest wait of a statement for a held slot (ms)
    pub hold_timeout_ms: Option<Spanned<i64>>,
    /// address of the HTTP endpoint serving /metrics and /health
    pub metrics_listen: Option<Spanned<String>>,
    /// longest shutdown waits for transactions to finish (ms)
    pub shutdown_timeout_ms: Option<Spanned<i64>>,
    /// how long /health answers 503 before shutdown stops accepting clients (ms)
    pub drain_delay_ms: Option<Spanned<i64>>,
    /// longest TLS negotiation + startup + authentication of a client (ms)
    pub login_timeout_ms: Option<Spanned<i64>>,
}

/// `[[users]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawUser {
    /// user name
    pub name: Spanned<String>,
    /// plaintext password or SCRAM-SHA-256 verifier
    pub password: Spanned<String>,
    /// may use the admin console (database `pgshard`)
    pub admin: Option<bool>,
}

/// `[[shards]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawShard {
    /// shard name
    pub name: Spanned<String>,
    /// `postgres://user[:password]@host[:port]/database`
    pub url: Spanned<String>,
    /// ring weight (default 1)
    pub weight: Option<Spanned<i64>>,
}

/// `[sharding]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSharding {
    /// slot count (power of two)
    pub slots: Spanned<i64>,
    /// ring points per shard per unit of weight
    pub vnodes: Spanned<i64>,
    /// shard for statements that touch no sharded table
    pub default_shard: Option<Spanned<String>>,
    /// allow UPDATE/DELETE without a single key to run on every shard that may hold rows
    pub broadcast_writes: Option<bool>,
    /// map version, raised by every rebalance cutover
    pub epoch: Option<Spanned<i64>>,
}

/// `[[tables]]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTable {
    /// table name
    pub name: Spanned<String>,
    /// key column (sharded tables)
    pub key: Option<Spanned<String>>,
    /// key column type (sharded tables)
    #[serde(rename = "type")]
    pub key_type: Option<Spanned<String>>,
    /// `true`: a reference table, a full copy on every shard (no key, no type)
    pub replicated: Option<Spanned<bool>>,
}

/// 1-based line number of a byte offset in `text`. Offsets past the end map to the last
/// line, so an error "at end of file" still names a real line.
pub fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    // Byte offsets from the parser always fall on char boundaries, but count bytes
    // anyway so a bad offset can never panic.
    1 + text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
}

/// 1-based line number where a span starts.
pub fn line_of_span(text: &str, span: &Range<usize>) -> usize {
    line_of(text, span.start)
}

/// Parse the text into raw types; on failure return `(line, message)`.
pub fn from_str(text: &str) -> Result<RawFile, (usize, String)> {
    toml::from_str(text).map_err(|e| {
        let line = e.span().map_or(1, |s| line_of_span(text, &s));
        let message = e.message().trim_end();
        // toml quotes the offending value (`invalid type: integer `1234``); on a password
        // line that value is a secret, and this message reaches logs on a failed reload
        // any mention on the line: `password = …`, `'password' = …`, inline tables
        let secret = text
            .lines()
            .nth(line - 1)
            .is_some_and(|l| l.contains("password"));
        if secret && message.contains('`') {
            (
                line,
                "password must be a quoted string (its value is not shown)".into(),
            )
        } else {
            (line, message.to_string())
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_numbers_are_one_based() {
        let text = "a\nbc\n\nd";
        assert_eq!(line_of(text, 0), 1);
        assert_eq!(line_of(text, 2), 2);
        assert_eq!(line_of(text, 5), 3);
        assert_eq!(line_of(text, 6), 4);
        assert_eq!(line_of(text, 1000), 4);
    }

    #[test]
    fn a_bad_password_value_is_not_repeated_in_the_error() {
        let (line, message) =
            from_str("[[users]]\nname = \"app\"\npassword = 8675309\n").unwrap_err();
        assert_eq!(line, 3);
        assert!(!message.contains("8675309"), "{message}");
        assert!(message.contains("quoted string"), "{message}");
        let (_, message) =
            from_str("users = [{ name = \"app\", password = 8675309 }]\n").unwrap_err();
        assert!(!message.contains("8675309"), "{message}");
    }

    #[test]
    fn parse_error_carries_line() {
        let err = from_str("[server]\nlisten = \"x\"\npool_size = 3 3\n").unwrap_err();
        assert_eq!(err.0, 3);
    }
}
