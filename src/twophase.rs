//! Two-phase commit of transactions that used several shards: transaction ids, the
//! durable commit decision, and recovery of prepared transactions left in doubt.
//!
//! A commit prepares the transaction on every participant (`PREPARE TRANSACTION`), then
//! records the decision by inserting the transaction's id into `pgshard.decisions` on
//! the default shard in a transaction of its own — once that commits, the decision is
//! as durable as that shard's WAL and no longer depends on this process — and only then
//! runs `COMMIT PREPARED` everywhere and deletes the decision. A prepared transaction of
//! this proxy (its ids start with `pgshard:<node>:`) that no session is working on is in
//! doubt after a crash: recovery commits it if its decision exists and rolls it back
//! otherwise (presumed abort), at startup and every `recover_interval`.

use std::collections::{BTreeSet, HashSet};
use std::sync::Mutex;

use crate::backend::{BackendError, Pools, SimpleAnswer};
use crate::config::Config;
use crate::sharding::ShardId;

/// The schema and table holding commit decisions, on the default shard.
pub const DECISIONS: &str = "pgshard.decisions";

/// Create the decisions table if it is missing (idempotent; concurrent creators may
/// collide, which is retried by the caller's next attempt).
pub const CREATE_DECISIONS: &str = "CREATE SCHEMA IF NOT EXISTS pgshard; \
     CREATE TABLE IF NOT EXISTS pgshard.decisions (gid text PRIMARY KEY, \
     decided_at timestamptz NOT NULL DEFAULT now())";

/// Ids of the transactions this process is committing right now: recovery leaves them
/// alone.
#[derive(Default)]
pub struct InFlight(Mutex<HashSet<String>>);

impl InFlight {
    /// Mark `base` as being committed (until [`InFlight::done`]).
    pub fn start(&self, base: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base.to_owned());
    }

    /// The commit of `base` is over (committed, rolled back, or left to recovery).
    pub fn done(&self, base: &str) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(base);
    }

    fn contains(&self, base: &str) -> bool {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(base)
    }
}

/// The prefix of every prepared-transaction id of proxy `node`.
pub fn prefix(node: &str) -> String {
    format!("pgshard:{node}:")
}

/// A new transaction id base for proxy `node` (unique across restarts: random).
pub fn new_base(node: &str) -> String {
    format!("{}{:016x}", prefix(node), rand::random::<u64>())
}

/// The prepared-transaction id of base `base` on shard `shard_name`.
pub fn gid(base: &str, shard_name: &str) -> String {
    format!("{base}:{shard_name}")
}

/// The base of a prepared-transaction id of proxy `node`, or None if it is not one.
pub fn base_of<'g>(gid: &'g str, node: &str) -> Option<&'g str> {
    let rest = gid.strip_prefix(&prefix(node))?;
    let (unique, _shard) = rest.split_once(':')?;
    Some(&gid[..prefix(node).len() + unique.len()])
}

/// `'text'` as an SQL string literal.
pub fn literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A test hook: with `PGSHARD_TEST_2PC_PAUSE` set to `point`, the commit stops there
/// for good after creating the file named by `PGSHARD_TEST_2PC_MARKER`, so a test can
/// kill the process between the phases. Never set in production.
pub async fn test_pause(point: &str) {
    if std::env::var("PGSHARD_TEST_2PC_PAUSE").as_deref() != Ok(point) {
        return;
    }
    if let Ok(marker) = std::env::var("PGSHARD_TEST_2PC_MARKER") {
        let _ = std::fs::write(marker, point);
    }
    tracing::warn!(point, "two-phase commit paused by PGSHARD_TEST_2PC_PAUSE");
    std::future::pending::<()>().await;
}

/// What one recovery pass did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// prepared transactions committed (their decision existed)
    pub committed: usize,
    /// prepared transactions rolled back (no decision)
    pub rolled_back: usize,
    /// shards that could not be checked (down), by name
    pub unreachable: Vec<String>,
}

/// Resolve this proxy's in-doubt prepared transactions on every shard: commit those with
/// a decision, roll back the others, then delete decisions nothing refers to any more.
pub async fn recover(config: &Config, pools: &Pools, in_flight: &InFlight) -> Recovered {
    let node = &config.transactions.node;
    let mut out = Recovered::default();
    // The decisions first: a transaction decided after this read is not deleted by this
    // pass, whatever happens to it meanwhile.
    let default = config.map.default_shard;
    let Ok(decided) = decisions(pools, default, node).await else {
        // without the decisions nothing can be resolved safely
        tracing::warn!("cannot read two-phase commit decisions; recovery postponed");
        out.unreachable.push(pools.shard_name(default).to_owned());
        return out;
    };
    // prepared transactions of ours, per shard; those a session is committing are left
    // alone, and their decisions kept, for this whole pass
    let mut doubtful: Vec<(ShardId, String)> = Vec::new();
    let mut busy: BTreeSet<String> = BTreeSet::new();
    for shard in 0..config.shards.len() {
        let name = pools.shard_name(shard).to_owned();
        match query(
            pools,
            shard,
            "SELECT gid FROM pg_catalog.pg_prepared_xacts WHERE database = pg_catalog.current_database()",
        )
        .await
        {
            Ok(a) if a.error.is_none() => {
                for row in a.rows {
                    if let Some(Some(gid)) = row.into_iter().next()
                        && let Some(base) = base_of(&gid, node)
                    {
                        if in_flight.contains(base) {
                            busy.insert(base.to_owned());
                        } else {
                            doubtful.push((shard, gid));
                        }
                    }
                }
            }
            Ok(a) => {
                tracing::warn!(shard = %name, error = ?a.error, "cannot list prepared transactions");
                out.unreachable.push(name);
            }
            Err(e) => {
                tracing::warn!(shard = %name, error = %e, "cannot reach shard to resolve prepared transactions");
                out.unreachable.push(name);
            }
        }
    }
    let mut still_prepared: BTreeSet<String> = BTreeSet::new();
    for (shard, gid) in &doubtful {
        let Some(base) = base_of(gid, node) else {
            continue;
        };
        let commit = decided.contains(base);
        let sql = format!(
            "{} PREPARED {}",
            if commit { "COMMIT" } else { "ROLLBACK" },
            literal(gid)
        );
        match query(pools, *shard, &sql).await {
            Ok(a) if a.error.is_none() => {
                tracing::warn!(gid, commit, "resolved an in-doubt prepared transaction");
                if commit {
                    out.committed += 1;
                } else {
                    out.rolled_back += 1;
                }
            }
            other => {
                tracing::warn!(
                    gid,
                    ?other,
                    "could not resolve a prepared transaction; retrying later"
                );
                still_prepared.insert(base.to_owned());
            }
        }
    }
    // decisions whose transactions are resolved everywhere (or were never prepared
    // anywhere reachable) can go, unless a session is still committing them
    if out.unreachable.is_empty() {
        for base in decided {
            if still_prepared.contains(&base) || busy.contains(&base) || in_flight.contains(&base) {
                continue;
            }
            let sql = format!("DELETE FROM {DECISIONS} WHERE gid = {}", literal(&base));
            let _ = query(pools, default, &sql).await;
        }
    }
    out
}

/// The decided transaction bases of proxy `node` (none if the table does not exist yet).
async fn decisions(
    pools: &Pools,
    shard: ShardId,
    node: &str,
) -> Result<HashSet<String>, BackendError> {
    let sql = format!(
        "SELECT gid FROM {DECISIONS} WHERE starts_with(gid, {})",
        literal(&prefix(node))
    );
    let a = query(pools, shard, &sql).await?;
    match (&a.error, a.sqlstate.as_deref()) {
        (None, _) => Ok(a
            .rows
            .into_iter()
            .filter_map(|r| r.into_iter().next().flatten())
            .collect()),
        // no table, no schema: nothing was ever decided
        (Some(_), Some("42P01" | "3F000")) => Ok(HashSet::new()),
        (Some(e), _) => Err(BackendError::Protocol(e.clone())),
    }
}

/// One statement on a pooled connection to `shard`.
async fn query(pools: &Pools, shard: ShardId, sql: &str) -> Result<SimpleAnswer, BackendError> {
    let mut conn = pools.get(shard).await?;
    let answer = conn.simple_query(sql).await;
    if answer.is_err() {
        conn.broken = true;
    }
    Pools::release(conn);
    answer
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_carry_node_base_and_shard() {
        let base = new_base("east-1");
        assert!(base.starts_with("pgshard:east-1:"));
        let g = gid(&base, "s0");
        assert_eq!(base_of(&g, "east-1"), Some(base.as_str()));
        assert_eq!(base_of(&g, "east"), None);
        assert_eq!(
            base_of("pgshard:east-1:abc:shard:with:colons", "east-1"),
            Some("pgshard:east-1:abc")
        );
        assert_eq!(base_of("pgshard:east-1:nocolon", "east-1"), None);
        assert_eq!(base_of("other", "east-1"), None);
        assert_ne!(new_base("n"), new_base("n"));
        assert_eq!(literal("it's"), "'it''s'");
    }
}
