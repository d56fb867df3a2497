//! Cutover of one slot group: hold, catch up, move atomically, flip the map, release.
//!
//! 1. Every proxy holds statements for the group's slots (and waits for the ones already
//!    running on them), so nothing new is written to them on the source.
//! 2. Transactions that were writing on the source when the hold began are waited for
//!    (`pg_current_snapshot()` xmin passes the xmax seen at the start), then the change
//!    log of the group is drained into the staging table.
//! 3. One transaction on each side: the source deletes the group's rows, the destination
//!    inserts them from staging; each computes a fingerprint per slot (count + sum of
//!    row hashes) of exactly the rows it deleted or inserted, and they must match. Both are prepared
//!    (two-phase commit), and the prepared-transaction ids are saved in the state file.
//! 4. The decision is the map file: it is rewritten atomically with the destination
//!    owning the slots and a higher epoch. Only then are both prepared transactions
//!    committed; a crash anywhere before leaves the old map and rolls back on re-run, a
//!    crash after it commits on re-run.
//! 5. The proxies reload the map and release the slots; held statements resume on the
//!    destination.
//!
//! Steps 1–3 must finish within the hold timeout; otherwise everything is rolled back, the
//! slots are released and the old owner keeps serving them (the group is retried later).
//! Rows are deleted from the source in the same transaction that inserts them on the
//! destination, never later: with equal table names on every shard, a row left on the
//! source after the flip would be counted twice by scatter queries.

use std::path::Path;
use std::time::{Duration, Instant};

use crate::config::{self, ShardConfig};

use super::apply::ApplyError;
use super::copy::{MovingTable, catch_up};
use super::mapfile;
use super::proxies::Proxies;
use super::shard::{ShardClient, ShardError, describe};
use super::sql;
use super::state::{self, Cutover, CutoverStage, State};

/// A group of slots moving together from one shard to another.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Group {
    /// source shard
    pub from: String,
    /// destination shard
    pub to: String,
    /// the slots
    pub slots: Vec<u32>,
    /// rows counted in them when the rebalance started (all tables)
    pub rows: u64,
}

/// Everything a cutover needs besides the group.
pub struct Context<'a> {
    /// the map file
    pub map_path: &'a Path,
    /// the state file
    pub state_path: &'a Path,
    /// the proxies to hold, reload and release
    pub proxies: &'a mut Proxies,
    /// the sharded tables
    pub tables: &'a [MovingTable],
    /// slot count of the map
    pub map_slots: u32,
    /// longest the slots may be held before the cutover gives up
    pub hold_timeout: Duration,
    /// source shard settings (fresh connections carry the move's transactions)
    pub source: &'a ShardConfig,
    /// destination shard settings
    pub dest: &'a ShardConfig,
    /// stop before the map flip when this names the point (tests kill the process there)
    pub pause_at: Option<&'a str>,
}

/// What a finished cutover did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Done {
    /// rows moved (all tables)
    pub rows: u64,
    /// how long the slots were held
    pub held: Duration,
    /// the map epoch installed
    pub epoch: u64,
}

/// Move one group. `source` and `dest` are the catch-up connections.
pub async fn run(
    cx: &mut Context<'_>,
    state: &mut State,
    group: &Group,
    source: &ShardClient,
    dest: &ShardClient,
) -> Result<Done, ApplyError> {
    let base = format!("pgshard_rb_{}_{}", state.id, state.cutovers_done);
    let cut = Cutover {
        from: group.from.clone(),
        to: group.to.clone(),
        slots: group.slots.clone(),
        source_gid: format!("{base}_s"),
        destination_gid: format!("{base}_d"),
        stage: CutoverStage::Preparing,
    };
    state.cutover = Some(cut.clone());
    state::save(cx.state_path, state).map_err(ApplyError::State)?;

    // Connections for the move's transactions, opened before the hold to keep it short.
    let src_tx = ShardClient::connect(cx.source).await?;
    let dst_tx = ShardClient::connect(cx.dest).await?;

    let started = Instant::now();
    let prepared = tokio::time::timeout(cx.hold_timeout, async {
        cx.proxies.hold(&group.slots).await?;
        prepare(cx, group, &cut, source, dest, &src_tx, &dst_tx).await
    })
    .await;
    let rows = match prepared {
        Ok(Ok(rows)) => rows,
        failed => {
            let reason = match failed {
                Ok(Err(e)) => e.to_string(),
                _ => format!(
                    "not ready within the hold timeout ({} ms){}",
                    cx.hold_timeout.as_millis(),
                    oldest_writer(source).await
                ),
            };
            // Closing the connections rolls back whatever was not prepared.
            drop(src_tx);
            drop(dst_tx);
            rollback_prepared(source, &cut.source_gid).await?;
            rollback_prepared(dest, &cut.destination_gid).await?;
            cx.proxies.release(&group.slots).await?;
            state.cutover = None;
            state::save(cx.state_path, state).map_err(ApplyError::State)?;
            return Err(ApplyError::CutoverAborted {
                from: group.from.clone(),
                to: group.to.clone(),
                slots: group.slots.len(),
                reason,
            });
        }
    };
    if let Some(c) = state.cutover.as_mut() {
        c.stage = CutoverStage::Prepared;
    }
    state::save(cx.state_path, state).map_err(ApplyError::State)?;
    if cx.pause_at == Some("cutover") {
        pause("cutover").await;
    }

    // The decision: the map file names the destination.
    let text = std::fs::read_to_string(cx.map_path)
        .map_err(|e| ApplyError::Config(format!("{}: {e}", cx.map_path.display())))?;
    let origin = cx.map_path.display().to_string();
    let current = config::parse(&text, &origin).map_err(|e| ApplyError::Config(e.to_string()))?;
    let epoch = current.map.epoch + 1;
    let (new_text, _) = mapfile::move_slots(&text, &origin, &group.slots, &group.to, epoch)
        .map_err(|e| ApplyError::Config(e.to_string()))?;
    mapfile::write_atomically(cx.map_path, &new_text)
        .map_err(|e| ApplyError::Config(format!("{}: {e}", cx.map_path.display())))?;

    if cx.pause_at == Some("committed") {
        commit_prepared(&dst_tx, &cut.destination_gid).await?;
        pause("committed").await;
    }
    let (d, s) = tokio::join!(
        commit_prepared(&dst_tx, &cut.destination_gid),
        commit_prepared(&src_tx, &cut.source_gid)
    );
    d?;
    s?;
    cx.proxies.reload(epoch).await?;
    cx.proxies.release(&group.slots).await?;
    let held = started.elapsed();
    state.cutover = None;
    state.cutovers_done += 1;
    state::save(cx.state_path, state).map_err(ApplyError::State)?;
    Ok(Done { rows, held, epoch })
}

/// Steps 2 and 3; returns the rows moved.
async fn prepare(
    cx: &Context<'_>,
    group: &Group,
    cut: &Cutover,
    source: &ShardClient,
    dest: &ShardClient,
    src_tx: &ShardClient,
    dst_tx: &ShardClient,
) -> Result<u64, ApplyError> {
    wait_for_writers(source).await?;
    loop {
        let mut applied = 0;
        for t in cx.tables {
            applied += catch_up(source, dest, t, &group.slots).await?;
        }
        if applied == 0 {
            break;
        }
    }
    let slots = sql::slot_array(&group.slots);
    src_tx
        .execute(&format!(
            "BEGIN; SET LOCAL {} = 'internal'",
            sql::INTERNAL_SETTING
        ))
        .await?;
    dst_tx.execute("BEGIN").await?;
    let mut rows = 0;
    for t in cx.tables {
        let name = sql::table_ident(&t.rule.name);
        let slot = sql::row_slot(&t.rule, cx.map_slots);
        let all = sql::column_list(&t.all());
        let stored = sql::column_list(&t.stored());
        let gone = fingerprint(
            src_tx,
            &format!(
                "WITH d AS (DELETE FROM {name} WHERE {slot} = ANY({slots}) RETURNING {all}) {}",
                sql::fingerprint("d", &slot)
            ),
        )
        .await?;
        let came = fingerprint(
            dst_tx,
            &format!(
                "WITH i AS (INSERT INTO {name} ({stored}) SELECT {stored} FROM {} WHERE {slot} = ANY({slots}) RETURNING {all}) {}",
                sql::staging(&t.rule.name),
                sql::fingerprint("i", &slot)
            ),
        )
        .await?;
        if gone != came {
            return Err(ApplyError::Mismatch(format!(
                "{} on {} → {}: {}",
                t.rule.name,
                group.from,
                group.to,
                differences(&gone, &came)
            )));
        }
        rows += gone.iter().map(|f| f.rows).sum::<u64>();
        dst_tx
            .execute(&format!(
                "DELETE FROM {} WHERE {slot} = ANY({slots})",
                sql::staging(&t.rule.name)
            ))
            .await?;
        // Anything logged now was written after the drain: the copy would miss it.
        let late = src_tx
            .value(&format!(
                "SELECT count(*)::text FROM {} WHERE slot = ANY({slots})",
                sql::changes(&t.rule.name)
            ))
            .await?;
        if late.as_deref() != Some("0") {
            return Err(ApplyError::Mismatch(format!(
                "{}: writes to moving slots arrived after the hold",
                t.rule.name
            )));
        }
    }
    // both at once: each PREPARE waits for its server's WAL flush, inside the hold
    let dst_prepare = format!(
        "PREPARE TRANSACTION {}",
        sql::quote_literal(&cut.destination_gid)
    );
    let src_prepare = format!(
        "PREPARE TRANSACTION {}",
        sql::quote_literal(&cut.source_gid)
    );
    let (d, s) = tokio::join!(dst_tx.execute(&dst_prepare), src_tx.execute(&src_prepare));
    d?;
    s?;
    Ok(rows)
}

/// Rows and checksum of one slot of one table, as a fingerprint query returns them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SlotPrint {
    /// the slot
    pub slot: u32,
    /// rows in it
    pub rows: u64,
    /// sum of the rows' hashes (decimal)
    pub checksum: String,
}

/// Per-slot counts and checksums returned by a fingerprint query.
async fn fingerprint(shard: &ShardClient, sql_text: &str) -> Result<Vec<SlotPrint>, ShardError> {
    let rows = shard
        .client
        .query(sql_text, &[])
        .await
        .map_err(|e| shard.error(describe(&e)))?;
    Ok(rows
        .iter()
        .map(|r| SlotPrint {
            slot: r.get::<_, i64>(0) as u32,
            rows: r.get::<_, i64>(1).max(0) as u64,
            checksum: r.get(2),
        })
        .collect())
}

/// The slots whose rows differ between the source and the copy, for the error message.
pub fn differences(source: &[SlotPrint], copy: &[SlotPrint]) -> String {
    let find = |prints: &[SlotPrint], slot: u32| prints.iter().find(|p| p.slot == slot).cloned();
    let mut slots: Vec<u32> = source.iter().chain(copy).map(|p| p.slot).collect();
    slots.sort_unstable();
    slots.dedup();
    let mut out = Vec::new();
    for slot in slots {
        let (a, b) = (find(source, slot), find(copy, slot));
        if a != b {
            let describe = |p: Option<SlotPrint>| match p {
                Some(p) => format!("{} rows (checksum {})", p.rows, p.checksum),
                None => "no rows".to_string(),
            };
            out.push(format!(
                "slot {slot}: source {}, copy {}",
                describe(a),
                describe(b)
            ));
        }
    }
    let more = out.len().saturating_sub(5);
    out.truncate(5);
    if more > 0 {
        out.push(format!("{more} more slots differ"));
    }
    out.join("; ")
}

/// Wait until every transaction that had an id when this was called has ended on the
/// shard (statements for held slots cannot start new ones through the proxy).
async fn wait_for_writers(shard: &ShardClient) -> Result<(), ShardError> {
    let xmax = shard
        .value("SELECT pg_snapshot_xmax(pg_current_snapshot())::text")
        .await?
        .ok_or_else(|| shard.error("pg_current_snapshot() returned nothing"))?;
    let check = format!(
        "SELECT (pg_snapshot_xmin(pg_current_snapshot()) >= {}::xid8)::text",
        sql::quote_literal(&xmax)
    );
    loop {
        if shard.value(&check).await?.as_deref() == Some("true") {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What most likely kept the source from settling, for the abort message: its oldest
/// open transaction that writes, and prepared transactions (empty when none).
async fn oldest_writer(shard: &ShardClient) -> String {
    let oldest = shard
        .value(
            "SELECT format('pid %s (database %s, user %s, open %s s, %s): %s', pid, datname, \
             usename, round(extract(epoch FROM now() - xact_start)::numeric, 1), state, \
             left(regexp_replace(query, '\\s+', ' ', 'g'), 80)) \
             FROM pg_stat_activity WHERE backend_xid IS NOT NULL AND pid <> pg_backend_pid() \
             ORDER BY xact_start LIMIT 1",
        )
        .await
        .ok()
        .flatten();
    let prepared = shard
        .value("SELECT count(*)::text FROM pg_prepared_xacts")
        .await
        .ok()
        .flatten()
        .filter(|n| n != "0");
    let mut out = String::new();
    if let Some(o) = oldest {
        out.push_str(&format!(
            "; oldest writing transaction on \"{}\": {o}",
            shard.name
        ));
    }
    if let Some(n) = prepared {
        out.push_str(&format!(
            "; {n} prepared transactions on \"{}\" (pg_prepared_xacts)",
            shard.name
        ));
    }
    out
}

/// Whether a prepared transaction exists on the shard.
async fn is_prepared(shard: &ShardClient, gid: &str) -> Result<bool, ShardError> {
    Ok(shard
        .value(&format!(
            "SELECT 'yes' FROM pg_prepared_xacts WHERE gid = {}",
            sql::quote_literal(gid)
        ))
        .await?
        .is_some())
}

/// Roll back a prepared transaction if it exists.
pub async fn rollback_prepared(shard: &ShardClient, gid: &str) -> Result<(), ShardError> {
    if is_prepared(shard, gid).await? {
        shard
            .execute(&format!("ROLLBACK PREPARED {}", sql::quote_literal(gid)))
            .await?;
    }
    Ok(())
}

/// Commit a prepared transaction if it exists.
pub async fn commit_prepared(shard: &ShardClient, gid: &str) -> Result<(), ShardError> {
    if is_prepared(shard, gid).await? {
        shard
            .execute(&format!("COMMIT PREPARED {}", sql::quote_literal(gid)))
            .await?;
    }
    Ok(())
}

/// Test hook: say where we are and wait to be killed.
pub async fn pause(point: &str) {
    eprintln!("pgshard rebalance: paused at {point} (PGSHARD_REBALANCE_PAUSE)");
    loop {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn print(slot: u32, rows: u64, checksum: &str) -> SlotPrint {
        SlotPrint {
            slot,
            rows,
            checksum: checksum.into(),
        }
    }

    #[test]
    fn differences_name_the_slots() {
        let source = vec![print(1, 3, "10"), print(2, 1, "5"), print(4, 2, "7")];
        let copy = vec![print(1, 3, "10"), print(2, 1, "6"), print(3, 1, "1")];
        assert_eq!(
            differences(&source, &copy),
            "slot 2: source 1 rows (checksum 5), copy 1 rows (checksum 6); \
             slot 3: source no rows, copy 1 rows (checksum 1); \
             slot 4: source 2 rows (checksum 7), copy no rows"
        );
        assert_eq!(differences(&source, &source), "");
    }
}
