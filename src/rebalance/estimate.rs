//! How many rows and bytes a plan moves, counted by the source shards themselves.
//!
//! Each source shard computes the slot of every row of each sharded table with the same
//! arithmetic pgshard routes by ([`slot_expr`]: Postgres' own extended hash functions,
//! `hash_combine64`, and a mask, since the slot count is a power of two), grouped by
//! slot; the counts of the slots in a move are then added up. Nothing is copied.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::backend::BackendConn;
use crate::config::{Config, TableRule};
use crate::sharding::KeyType;
use crate::sharding::hash::{HASH_COMBINE64_CONST, HASH_PARTITION_SEED};

use super::Plan;
use super::sql::{quote_ident, quote_literal, table_ident};

/// SQL computing the slot (`0..slots`) of a row from its key column `column` (already
/// quoted), exactly as pgshard's router does: the masks keep the addition inside
/// bigint (`slots` is a power of two, so `mod slots` is the low bits, and the low bits of
/// a sum are the low bits of the sum of the low bits).
pub fn slot_expr(column: &str, key: KeyType, slots: u32) -> String {
    let seed = HASH_PARTITION_SEED as i64;
    let hash = match key {
        KeyType::SmallInt | KeyType::Integer | KeyType::BigInt => {
            format!("hashint8extended({column}::int8, {seed})")
        }
        KeyType::Text => format!("hashtextextended({column}::text, {seed})"),
        KeyType::Uuid => format!("uuid_hash_extended({column}, {seed})"),
    };
    let mask = u64::from(slots.max(1) - 1);
    let combine = HASH_COMBINE64_CONST & mask;
    format!("((({hash}) & {mask}) + {combine}) & {mask}")
}

/// What one move carries of one table.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TableMove {
    /// source shard
    pub from: String,
    /// destination shard
    pub to: String,
    /// sharded table
    pub table: String,
    /// rows in the moving slots
    pub rows: u64,
    /// their size as stored (sum of `pg_column_size` of the rows)
    pub bytes: u64,
}

/// Rows and bytes of a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Estimate {
    /// per move and table
    pub moves: Vec<TableMove>,
    /// rows of every sharded table on every current shard
    pub total_rows: u64,
    /// their bytes
    pub total_bytes: u64,
}

impl Estimate {
    /// Rows that move.
    pub fn moved_rows(&self) -> u64 {
        self.moves.iter().map(|m| m.rows).sum()
    }

    /// Bytes that move.
    pub fn moved_bytes(&self) -> u64 {
        self.moves.iter().map(|m| m.bytes).sum()
    }
}

/// Why rows could not be counted.
#[derive(Debug, thiserror::Error)]
pub enum EstimateError {
    /// a shard could not be reached
    #[error("shard \"{shard}\": {message}")]
    Shard {
        /// shard name
        shard: String,
        /// what failed
        message: String,
    },
}

/// The per-slot counts of one sharded table on one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableCounts {
    /// the shard (index in the map)
    pub shard: usize,
    /// the table
    pub table: String,
    /// rows and bytes per slot (slots without rows are absent)
    pub counts: Vec<SlotCount>,
}

/// Count the rows and bytes per slot of every sharded table on every shard of `config`
/// (tables in name order, shards in map order).
pub async fn count_all(config: &Config) -> Result<Vec<TableCounts>, EstimateError> {
    let map = &config.map;
    let mut tables: Vec<_> = map.tables.values().collect();
    tables.sort_by(|a, b| a.name.cmp(&b.name));
    let mut all = Vec::new();
    for (id, shard) in config.shards.iter().enumerate() {
        let fail = |message: String| EstimateError::Shard {
            shard: shard.name.clone(),
            message,
        };
        let mut conn = BackendConn::connect(id, shard, Duration::from_secs(10))
            .await
            .map_err(|e| fail(e.to_string()))?;
        for table in &tables {
            let mut counts = slot_counts(&mut conn, table, map.slots)
                .await
                .map_err(fail)?;
            counts.sort_by_key(|c| c.slot);
            all.push(TableCounts {
                shard: id,
                table: table.name.clone(),
                counts,
            });
        }
    }
    Ok(all)
}

/// Count, on each current shard, the rows and bytes per slot of every sharded table, and
/// add up those of each move of `plan`.
pub async fn estimate(config: &Config, plan: &Plan) -> Result<Estimate, EstimateError> {
    // (source shard name, slot) → destination name
    let mut moving: BTreeMap<(&str, u32), &str> = BTreeMap::new();
    for m in &plan.moves {
        for &(lo, hi) in &m.ranges {
            for slot in lo..=hi {
                moving.insert((m.from.as_str(), slot), m.to.as_str());
            }
        }
    }
    let mut sums: BTreeMap<(String, String, String), (u64, u64)> = BTreeMap::new();
    let mut estimate = Estimate::default();
    for TableCounts {
        shard,
        table,
        counts,
    } in count_all(config).await?
    {
        let shard = config.shards[shard].name.as_str();
        for SlotCount { slot, rows, bytes } in counts {
            estimate.total_rows += rows;
            estimate.total_bytes += bytes;
            if let Some(to) = moving.get(&(shard, slot)) {
                let e = sums
                    .entry((shard.to_owned(), (*to).to_owned(), table.clone()))
                    .or_default();
                e.0 += rows;
                e.1 += bytes;
            }
        }
    }
    estimate.moves = sums
        .into_iter()
        .map(|((from, to, table), (rows, bytes))| TableMove {
            from,
            to,
            table,
            rows,
            bytes,
        })
        .collect();
    Ok(estimate)
}

/// Rows and bytes of one slot of one table on one shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotCount {
    /// the slot
    pub slot: u32,
    /// rows in it
    pub rows: u64,
    /// their size as stored
    pub bytes: u64,
}

/// Count the rows and bytes of `table` per slot on the shard behind `conn`.
pub async fn slot_counts(
    conn: &mut BackendConn,
    table: &TableRule,
    slots: u32,
) -> Result<Vec<SlotCount>, String> {
    let sql = format!(
        "SELECT {slot} AS slot, count(*), coalesce(sum(pg_column_size(t.*)), 0) \
         FROM {name} t GROUP BY 1",
        slot = slot_expr(&quote_ident(&table.key), table.key_type, slots),
        name = table_ident(&table.name),
    );
    let answer = conn.simple_query(&sql).await.map_err(|e| e.to_string())?;
    if let Some(error) = answer.error {
        return Err(format!("table {}: {error}", table.name));
    }
    answer
        .rows
        .iter()
        .map(|row| {
            let number = |i: usize| -> Result<u64, String> {
                row.get(i)
                    .and_then(|v| v.as_deref())
                    .and_then(|v| v.parse().ok())
                    .ok_or_else(|| format!("table {}: unexpected answer", table.name))
            };
            Ok(SlotCount {
                slot: u32::try_from(number(0)?).map_err(|e| e.to_string())?,
                rows: number(1)?,
                bytes: number(2)?,
            })
        })
        .collect()
}

/// The slot expression for a literal value (tests compare it with pgshard's own slot).
pub fn slot_of_literal(value: &str, key: KeyType, slots: u32) -> String {
    let cast = match key {
        KeyType::SmallInt => "int2",
        KeyType::Integer => "int4",
        KeyType::BigInt => "int8",
        KeyType::Text => "text",
        KeyType::Uuid => "uuid",
    };
    slot_expr(&format!("{}::{cast}", quote_literal(value)), key, slots)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_expression_shape() {
        // 0x49a0f4dd15e5a8e3 & 1023 = 227, as in the design notes
        assert_eq!(
            slot_expr("\"aid\"", KeyType::BigInt, 1024),
            "(((hashint8extended(\"aid\"::int8, 8816678312871386365)) & 1023) + 227) & 1023"
        );
        assert!(slot_expr("k", KeyType::Text, 64).starts_with("(((hashtextextended(k::text"));
        assert!(slot_expr("k", KeyType::Uuid, 64).starts_with("(((uuid_hash_extended(k,"));
    }
}
