//! Copying moving slots while clients keep writing: change capture on the source, a
//! snapshot copy into a staging table on the destination, and catch-up rounds.
//!
//! Why COPY plus change capture rather than logical replication: pgshard shards keep the
//! same table names, so rows copied into the destination's real table before the cutover
//! would be seen twice by every scatter query (the source still has them). The staging
//! table keeps them invisible until the cutover moves them in one transaction; logical
//! replication can only write into the table of the same name. Change capture needs no
//! `wal_level = logical`, no replication slots and no shard-to-shard connection, and a
//! killed rebalance leaves nothing behind that retains WAL.
//!
//! The order makes it exact: the capture trigger is created (committed) before the
//! snapshot, so every write after the snapshot is logged; writes both in the snapshot and
//! in the log are simply applied again, since catching up replaces all rows of a logged
//! key with what the source holds at that moment.

use futures_util::{SinkExt, StreamExt, pin_mut};

use crate::config::TableRule;

use super::shard::{ShardClient, ShardError, describe};
use super::sql::{self, Column};

/// Keys taken from the change log per catch-up round.
pub const CATCH_UP_BATCH: usize = 5_000;

/// Counts rows in a binary COPY stream as it passes, chunk by chunk (rows may span
/// chunks), so progress can be shown without decoding values.
#[derive(Debug, Default)]
pub struct RowCounter {
    phase: Phase,
    need: Vec<u8>,
    skip: u64,
    rows: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// signature (11), flags (4), extension length (4)
    #[default]
    Header,
    /// field count of the next tuple, or -1 for the trailer
    Tuple,
    /// length of a field, with the fields left in this tuple
    FieldLen(u16),
    /// after the trailer
    Done,
}

impl RowCounter {
    /// Rows seen so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Account for the next chunk of the stream.
    pub fn feed(&mut self, mut chunk: &[u8]) {
        while !chunk.is_empty() {
            if self.skip > 0 {
                let n = (self.skip.min(chunk.len() as u64)) as usize;
                self.skip -= n as u64;
                chunk = &chunk[n..];
                continue;
            }
            let want = match self.phase {
                Phase::Header => 19,
                Phase::Tuple => 2,
                Phase::FieldLen(_) => 4,
                Phase::Done => return,
            };
            let take = (want - self.need.len()).min(chunk.len());
            self.need.extend_from_slice(&chunk[..take]);
            chunk = &chunk[take..];
            if self.need.len() < want {
                return;
            }
            match self.phase {
                Phase::Header => {
                    let ext = u32::from_be_bytes([
                        self.need[15],
                        self.need[16],
                        self.need[17],
                        self.need[18],
                    ]);
                    self.skip = u64::from(ext);
                    self.phase = Phase::Tuple;
                }
                Phase::Tuple => {
                    let n = i16::from_be_bytes([self.need[0], self.need[1]]);
                    if n < 0 {
                        self.phase = Phase::Done;
                    } else {
                        self.rows += 1;
                        self.phase = if n > 0 {
                            Phase::FieldLen(n as u16)
                        } else {
                            Phase::Tuple
                        };
                    }
                }
                Phase::FieldLen(left) => {
                    let len = i32::from_be_bytes([
                        self.need[0],
                        self.need[1],
                        self.need[2],
                        self.need[3],
                    ]);
                    if len > 0 {
                        self.skip = len as u64;
                    }
                    self.phase = if left > 1 {
                        Phase::FieldLen(left - 1)
                    } else {
                        Phase::Tuple
                    };
                }
                Phase::Done => {}
            }
            self.need.clear();
        }
    }
}

/// Pipe a binary `COPY … TO STDOUT` on `from` into a `COPY … FROM STDIN` on `to`,
/// calling `progress` with the rows and bytes copied so far; returns the rows the
/// destination stored and the bytes of the stream.
pub async fn pipe(
    from: &ShardClient,
    out_sql: &str,
    to: &ShardClient,
    in_sql: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<(u64, u64), ShardError> {
    let stream = from
        .client
        .copy_out(out_sql)
        .await
        .map_err(|e| from.error(format!("COPY out: {}", describe(&e))))?;
    let sink = to
        .client
        .copy_in::<_, bytes::Bytes>(in_sql)
        .await
        .map_err(|e| to.error(format!("COPY in: {}", describe(&e))))?;
    pin_mut!(stream);
    pin_mut!(sink);
    let mut counter = RowCounter::default();
    let mut bytes = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| from.error(format!("COPY out: {}", describe(&e))))?;
        counter.feed(&chunk);
        bytes += chunk.len() as u64;
        sink.send(chunk)
            .await
            .map_err(|e| to.error(format!("COPY in: {}", describe(&e))))?;
        progress(counter.rows(), bytes);
    }
    let rows = sink
        .as_mut()
        .finish()
        .await
        .map_err(|e| to.error(format!("COPY in: {}", describe(&e))))?;
    Ok((rows, bytes))
}

/// What one sharded table needs for a move: its rule and its stored columns.
#[derive(Debug, Clone)]
pub struct MovingTable {
    /// the routing rule (name, key)
    pub rule: TableRule,
    /// all columns, as the source's catalog lists them
    pub columns: Vec<Column>,
}

impl MovingTable {
    /// The stored (not generated) column names, in order: what COPY and the staging
    /// table carry.
    pub fn stored(&self) -> Vec<String> {
        self.columns
            .iter()
            .filter(|c| !c.generated)
            .map(|c| c.name.clone())
            .collect()
    }

    /// All column names, in order.
    pub fn all(&self) -> Vec<String> {
        self.columns.iter().map(|c| c.name.clone()).collect()
    }
}

/// Create the staging table of `table` on a destination (dropping an old one).
pub async fn create_staging(dest: &ShardClient, table: &MovingTable) -> Result<(), ShardError> {
    dest.execute_all(&[
        format!("CREATE SCHEMA IF NOT EXISTS {}", sql::SCHEMA),
        format!("DROP TABLE IF EXISTS {}", sql::staging(&table.rule.name)),
        sql::create_staging(&table.rule.name, &table.columns),
    ])
    .await
}

/// Copy the rows of `slots` of `table` from the source into the destination's staging
/// table, then index the staging table on the key for the catch-up rounds.
pub async fn snapshot(
    source: &ShardClient,
    dest: &ShardClient,
    table: &MovingTable,
    slots: &[u32],
    map_slots: u32,
    progress: impl FnMut(u64, u64),
) -> Result<(u64, u64), ShardError> {
    let cols = sql::column_list(&table.stored());
    let out_sql = format!(
        "COPY (SELECT {cols} FROM {} WHERE {} = ANY({})) TO STDOUT (FORMAT binary)",
        sql::table_ident(&table.rule.name),
        sql::row_slot(&table.rule, map_slots),
        sql::slot_array(slots),
    );
    let in_sql = format!(
        "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
        sql::staging(&table.rule.name)
    );
    let copied = pipe(source, &out_sql, dest, &in_sql, progress).await?;
    dest.execute(&format!(
        "CREATE INDEX ON {} ({})",
        sql::staging(&table.rule.name),
        sql::quote_ident(&table.rule.key)
    ))
    .await?;
    Ok(copied)
}

/// One catch-up round for `table` and `slots`: take up to [`CATCH_UP_BATCH`] logged
/// keys from the source's change log and replace their rows in the staging table with
/// what the source holds now. The log entries are removed in a source transaction that
/// commits only after the destination did, so a crash in between only repeats work.
/// Returns the number of keys applied (0: nothing was logged).
pub async fn catch_up(
    source: &ShardClient,
    dest: &ShardClient,
    table: &MovingTable,
    slots: &[u32],
) -> Result<usize, ShardError> {
    let log = sql::changes(&table.rule.name);
    source.execute("BEGIN").await?;
    let result = async {
        let taken = source
            .client
            .query(
                &format!(
                    "DELETE FROM {log} WHERE ctid IN (SELECT ctid FROM {log} WHERE slot = ANY({}) LIMIT {CATCH_UP_BATCH}) RETURNING k::text",
                    sql::slot_array(slots)
                ),
                &[],
            )
            .await
            .map_err(|e| source.error(format!("reading the change log of {}: {}", table.rule.name, describe(&e))))?;
        let mut keys: Vec<String> = taken
            .iter()
            .filter_map(|r| r.get::<_, Option<String>>(0))
            .collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return Ok(taken.len());
        }
        let key_col = sql::quote_ident(&table.rule.key);
        let keys_sql = sql::key_array(&keys, table.rule.key_type);
        let cols = sql::column_list(&table.stored());
        dest.execute("BEGIN").await?;
        let applied = async {
            dest.execute(&format!(
                "DELETE FROM {} WHERE {key_col} = ANY({keys_sql})",
                sql::staging(&table.rule.name)
            ))
            .await?;
            pipe(
                source,
                &format!(
                    "COPY (SELECT {cols} FROM {} WHERE {key_col} = ANY({keys_sql})) TO STDOUT (FORMAT binary)",
                    sql::table_ident(&table.rule.name)
                ),
                dest,
                &format!(
                    "COPY {} ({cols}) FROM STDIN (FORMAT binary)",
                    sql::staging(&table.rule.name)
                ),
                |_, _| {},
            )
            .await
        }
        .await;
        match applied {
            Ok(_) => dest.execute("COMMIT").await?,
            Err(e) => {
                let _ = dest.execute("ROLLBACK").await;
                return Err(e);
            }
        }
        Ok(keys.len())
    }
    .await;
    match result {
        Ok(n) => {
            source.execute("COMMIT").await?;
            Ok(n)
        }
        Err(e) => {
            let _ = source.execute("ROLLBACK").await;
            Err(e)
        }
    }
}

/// Entries left in the change logs of `tables` for `slots` on a source.
pub async fn backlog(
    source: &ShardClient,
    tables: &[MovingTable],
    slots: &[u32],
) -> Result<u64, ShardError> {
    let mut total = 0;
    for t in tables {
        let n = source
            .value(&format!(
                "SELECT count(*)::text FROM {} WHERE slot = ANY({})",
                sql::changes(&t.rule.name),
                sql::slot_array(slots)
            ))
            .await?
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        total += n;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A binary COPY stream: header, `rows` tuples of (int4, text), trailer.
    fn stream(rows: &[(i32, &str)]) -> Vec<u8> {
        let mut out = b"PGCOPY\n\xff\r\n\0".to_vec();
        out.extend_from_slice(&0u32.to_be_bytes());
        out.extend_from_slice(&4u32.to_be_bytes()); // 4 bytes of header extension
        out.extend_from_slice(b"abcd");
        for (n, s) in rows {
            out.extend_from_slice(&2i16.to_be_bytes());
            out.extend_from_slice(&4i32.to_be_bytes());
            out.extend_from_slice(&n.to_be_bytes());
            if s.is_empty() {
                out.extend_from_slice(&(-1i32).to_be_bytes()); // NULL
            } else {
                out.extend_from_slice(&(s.len() as i32).to_be_bytes());
                out.extend_from_slice(s.as_bytes());
            }
        }
        out.extend_from_slice(&(-1i16).to_be_bytes());
        out
    }

    #[test]
    fn counts_rows_whatever_the_chunking() {
        let data = stream(&[(1, "one"), (2, ""), (3, "a much longer value"), (4, "x")]);
        for size in [1, 2, 3, 7, 19, 64, data.len()] {
            let mut c = RowCounter::default();
            for chunk in data.chunks(size) {
                c.feed(chunk);
            }
            assert_eq!(c.rows(), 4, "chunk size {size}");
        }
        let mut empty = RowCounter::default();
        empty.feed(&stream(&[]));
        assert_eq!(empty.rows(), 0);
        // bytes after the trailer are ignored
        let mut c = RowCounter::default();
        c.feed(&data);
        c.feed(&[0, 1, 0, 0]);
        assert_eq!(c.rows(), 4);
    }
}
