//! Proof that every row lives on the shard that owns its slot: each shard counts its
//! rows per slot (the router's slot arithmetic, in SQL), and any slot another shard owns
//! is reported with its row count.

use crate::config::Config;

use super::estimate::{EstimateError, SlotCount, TableCounts, count_all};

/// Rows found on a shard that does not own their slot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Misplaced {
    /// shard holding the rows
    pub shard: String,
    /// sharded table
    pub table: String,
    /// their slot
    pub slot: u32,
    /// the shard that owns the slot
    pub owner: String,
    /// how many rows
    pub rows: u64,
}

/// What [`verify`] found.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// rows checked, all tables and shards
    pub rows: u64,
    /// (shard, table) pairs checked
    pub tables_checked: usize,
    /// rows on the wrong shard, by shard, table and slot
    pub misplaced: Vec<Misplaced>,
}

impl VerifyReport {
    /// Every row is where the map says.
    pub fn ok(&self) -> bool {
        self.misplaced.is_empty()
    }
}

/// Check every sharded table on every shard of `config` against its slot map.
pub async fn verify(config: &Config) -> Result<VerifyReport, EstimateError> {
    let map = &config.map;
    let mut report = VerifyReport::default();
    for TableCounts {
        shard,
        table,
        counts,
    } in count_all(config).await?
    {
        report.tables_checked += 1;
        for SlotCount { slot, rows, .. } in counts {
            report.rows += rows;
            let owner = map.shard_of_slot(slot);
            if owner != shard {
                report.misplaced.push(Misplaced {
                    shard: map.shard_name(shard).to_owned(),
                    table: table.clone(),
                    slot,
                    owner: map.shard_name(owner).to_owned(),
                    rows,
                });
            }
        }
    }
    Ok(report)
}
