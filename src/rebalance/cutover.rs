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
    let deadline = tokio::time::Instant::now() + cx.hold_timeout;
    // Nothing from here to the decision is cancelled half way: a statement cut off on
    // the client side may still finish on the server (a PREPARE among them). Deadlines
    // are checked between steps, and the move's statements carry a statement_timeout.
    let prepared = prepare(cx, group, &cut, source, dest, &src_tx, &dst_tx, deadline).await;
    let rows = match prepared {
        Ok(rows) => rows,
        Err(e) => {
            let mut reason = match e {
                Abort::Timeout => format!(
                    "not ready within the hold timeout ({} ms){}",
                    cx.hold_timeout.as_millis(),
                    oldest_writer(source, cx.tables).await
                ),
                Abort::Failed(e) => e.to_string(),
            };
            if let Err(undo) = undo(cx, group, &cut, &src_tx, &dst_tx).await {
                reason.push_str(&format!(
                    "; undoing it failed too ({undo}): `pgshard rebalance apply` settles it"
                ));
                return Err(aborted(group, reason));
            }
            state.cutover = None;
            state::save(cx.state_path, state).map_err(ApplyError::State)?;
            return Err(aborted(group, reason));
        }
    };
    if let Some(c) = state.cutover.as_mut() {
        c.stage = CutoverStage::Prepared;
    }
    state::save(cx.state_path, state).map_err(ApplyError::State)?;
    if cx.pause_at == Some("cutover") {
        pause("cutover").await;
    }

    // The decision: the map file names the destination. Before it, any failure undoes
    // the cutover; after it, the cutover is finished (here, or by settle on a re-run).
    let epoch = match decide(cx, group).await {
        Ok(epoch) => epoch,
        Err(e) => {
            let reason = e.to_string();
            undo(cx, group, &cut, &src_tx, &dst_tx).await?;
            state.cutover = None;
            state::save(cx.state_path, state).map_err(ApplyError::State)?;
            return Err(aborted(group, reason));
        }
    };

    if cx.pause_at == Some("committed") {
        commit_prepared(&dst_tx, &cut.destination_gid).await?;
        pause("committed").await;
    }
    let (d, s) = tokio::join!(
        commit_prepared(&dst_tx, &cut.destination_gid),
        commit_prepared(&src_tx, &cut.source_gid)
    );
    // Each step is tried even when an earlier one failed; the state keeps the cutover
    // for settle until all of them are done.
    let reloaded = cx.proxies.reload(epoch).await;
    let released = match &reloaded {
        Ok(()) => cx.proxies.release(&group.slots).await,
        Err(_) => Ok(()),
    };
    d?;
    s?;
    reloaded?;
    released?;
    let held = started.elapsed();
    state.cutover = None;
    state.cutovers_done += 1;
    state::save(cx.state_path, state).map_err(ApplyError::State)?;
    Ok(Done { rows, held, epoch })
}

/// The error of a cutover given up before its decision.
fn aborted(group: &Group, reason: String) -> ApplyError {
    ApplyError::CutoverAborted {
        from: group.from.clone(),
        to: group.to.clone(),
        slots: group.slots.len(),
        reason,
    }
}

/// Why a cutover is given up before its decision.
enum Abort {
    /// the hold timeout passed
    Timeout,
    /// a step failed
    Failed(ApplyError),
}

impl<E: Into<ApplyError>> From<E> for Abort {
    fn from(e: E) -> Abort {
        Abort::Failed(e.into())
    }
}

/// Check the proxies still hold the group, then rewrite the map file with the
/// destination owning it: the commit point. Returns the new epoch.
async fn decide(cx: &mut Context<'_>, group: &Group) -> Result<u64, ApplyError> {
    cx.proxies.check_held(&group.slots).await?;
    let text = std::fs::read_to_string(cx.map_path)
        .map_err(|e| ApplyError::Config(format!("{}: {e}", cx.map_path.display())))?;
    let origin = cx.map_path.display().to_string();
    let current = config::parse(&text, &origin).map_err(|e| ApplyError::Config(e.to_string()))?;
    let epoch = current.map.epoch + 1;
    let (new_text, _) = mapfile::move_slots(&text, &origin, &group.slots, &group.to, epoch)
        .map_err(|e| ApplyError::Config(e.to_string()))?;
    mapfile::write_atomically(cx.map_path, &new_text)
        .map_err(|e| ApplyError::Config(format!("{}: {e}", cx.map_path.display())))?;
    Ok(epoch)
}

/// Undo a cutover before its decision: end both transactions (prepared or not) and
/// release the slots, whatever fails on the way; the first error is returned.
async fn undo(
    cx: &mut Context<'_>,
    group: &Group,
    cut: &Cutover,
    src_tx: &ShardClient,
    dst_tx: &ShardClient,
) -> Result<(), ApplyError> {
    // ROLLBACK ends an open transaction (a warning when there is none); the prepared
    // ones are looked up by id, so a PREPARE that did finish is found.
    let _ = src_tx.execute("ROLLBACK").await;
    let _ = dst_tx.execute("ROLLBACK").await;
    let s = rollback_prepared(src_tx, &cut.source_gid).await;
    let d = rollback_prepared(dst_tx, &cut.destination_gid).await;
    let r = cx.proxies.release(&group.slots).await;
    s?;
    d?;
    r?;
    Ok(())
}

/// Steps 1 to 3 (hold, settle, move and prepare) within `deadline`; returns the rows
/// moved.
#[allow(clippy::too_many_arguments)]
async fn prepare(
    cx: &mut Context<'_>,
    group: &Group,
    cut: &Cutover,
    source: &ShardClient,
    dest: &ShardClient,
    src_tx: &ShardClient,
    dst_tx: &ShardClient,
    deadline: tokio::time::Instant,
) -> Result<u64, Abort> {
    // an admin command, safe to abandon: undo releases whatever was held
    match tokio::time::timeout_at(deadline, cx.proxies.hold(&group.slots)).await {
        Ok(held) => held?,
        Err(_) => return Err(Abort::Timeout),
    }
    wait_for_writers(source, cx.tables, deadline).await?;
    loop {
        let mut applied = 0;
        for t in cx.tables {
            if tokio::time::Instant::now() >= deadline {
                return Err(Abort::Timeout);
            }
            applied += catch_up(source, dest, t, &group.slots).await?;
        }
        if applied == 0 {
            break;
        }
    }
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    if left.is_zero() {
        return Err(Abort::Timeout);
    }
    // the server stops the move's statements at the deadline, cleanly
    let limit = format!("SET LOCAL statement_timeout = {}", left.as_millis().max(1));
    let slots = sql::slot_array(&group.slots);
    src_tx
        .execute(&format!(
            "BEGIN; SET LOCAL {} = 'internal'; {limit}",
            sql::INTERNAL_SETTING
        ))
        .await?;
    dst_tx.execute(&format!("BEGIN; {limit}")).await?;
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
                "WITH i AS (INSERT INTO {name} ({stored}) OVERRIDING SYSTEM VALUE SELECT {stored} FROM {} WHERE {slot} = ANY({slots}) RETURNING {all}) {}",
                sql::staging(&t.rule.name),
                sql::fingerprint("i", &slot)
            ),
        )
        .await?;
        if gone != came {
            return Err(Abort::Failed(ApplyError::Mismatch(format!(
                "{} on {} → {}: {}",
                t.rule.name,
                group.from,
                group.to,
                differences(&gone, &came)
            ))));
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
            return Err(Abort::Failed(ApplyError::Mismatch(format!(
                "{}: writes to moving slots arrived after the hold",
                t.rule.name
            ))));
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

/// SQL naming the moving tables' OIDs on a shard.
fn table_oids(tables: &[MovingTable]) -> String {
    let names: Vec<String> = tables
        .iter()
        .map(|t| sql::quote_literal(&sql::table_ident(&t.rule.name)))
        .collect();
    format!(
        "(SELECT to_regclass(n)::oid FROM unnest(ARRAY[{}]::text[]) n)",
        names.join(",")
    )
}

/// Wait until every transaction that has written to one of the moving tables (it holds
/// a RowExclusiveLock on it and has a transaction id) when this is called has ended —
/// prepared ones included. With the proxies holding the slots and no statement routed
/// before the hold still running, nothing else can write to the group on the source.
async fn wait_for_writers(
    shard: &ShardClient,
    tables: &[MovingTable],
    deadline: tokio::time::Instant,
) -> Result<(), Abort> {
    let writers = shard
        .value(&format!(
            "SELECT coalesce(array_agg(DISTINCT x.transactionid::text), '{{}}')::text \
             FROM pg_locks r JOIN pg_locks x ON x.virtualtransaction = r.virtualtransaction \
             AND x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' \
             WHERE r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' \
             AND r.relation IN {} AND r.pid IS DISTINCT FROM pg_backend_pid()",
            table_oids(tables)
        ))
        .await?
        .unwrap_or_else(|| "{}".into());
    if writers == "{}" {
        return Ok(());
    }
    let check = format!(
        "SELECT count(*)::text FROM pg_locks WHERE locktype = 'transactionid' \
         AND transactionid::text = ANY({}::text[])",
        sql::quote_literal(&writers)
    );
    loop {
        if shard.value(&check).await?.as_deref() == Some("0") {
            return Ok(());
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(Abort::Timeout);
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// What most likely kept the source from settling, for the abort message: its oldest
/// open transaction that writes, and prepared transactions (empty when none).
async fn oldest_writer(shard: &ShardClient, tables: &[MovingTable]) -> String {
    let oldest = shard
        .value(&format!(
            "SELECT format('pid %s (database %s, user %s, open %s s, %s): %s', a.pid, a.datname, \
             a.usename, round(extract(epoch FROM now() - a.xact_start)::numeric, 1), a.state, \
             left(regexp_replace(a.query, '\\s+', ' ', 'g'), 80)) \
             FROM pg_stat_activity a JOIN pg_locks r ON r.pid = a.pid \
             WHERE a.backend_xid IS NOT NULL AND a.pid <> pg_backend_pid() \
             AND r.locktype = 'relation' AND r.mode = 'RowExclusiveLock' AND r.relation IN {} \
             ORDER BY a.xact_start LIMIT 1",
            table_oids(tables)
        ))
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

/// Test hook: say where we are and wait to be killed — or, when
/// `PGSHARD_REBALANCE_RESUME_FILE` names a file, until that file exists.
pub async fn pause(point: &str) {
    let resume = std::env::var_os("PGSHARD_REBALANCE_RESUME_FILE").map(std::path::PathBuf::from);
    if resume.as_ref().is_some_and(|f| f.exists()) {
        return;
    }
    eprintln!("pgshard rebalance: paused at {point} (PGSHARD_REBALANCE_PAUSE)");
    loop {
        match &resume {
            Some(file) if file.exists() => return,
            Some(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            None => tokio::time::sleep(Duration::from_secs(3600)).await,
        }
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
