//! `rebalance apply`: run a plan online, resumable after a crash.
//!
//! Steps, each recorded in the state file before it starts: settle a cutover a crash
//! left in flight; list new shards in the map (owning nothing) and reload the proxies;
//! preflight; remove leftovers of an interrupted run; install change capture on the
//! sources; copy the moving slots into staging tables on the destinations; catch up;
//! cut over group by group ([`super::cutover`]); remove the capture objects; drop
//! removed shards from the map; verify every row is where the final map says.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio_util::sync::CancellationToken;

use crate::config::{self, Config, ShardConfig, TableRule};

use super::copy::{self, MovingTable};
use super::cutover::{self, Group};
use super::mapfile;
use super::plan::{Layout, ShardChange, plan};
use super::progress::Progress;
use super::proxies::{Proxies, ProxyError};
use super::shard::{ShardClient, ShardError};
use super::sql;
use super::state::{self, State};
use super::verify::{VerifyReport, verify};

/// Why `apply` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    /// the map file or the arguments
    #[error("{0}")]
    Config(String),
    /// a shard
    #[error(transparent)]
    Shard(#[from] ShardError),
    /// a proxy
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    /// a check before anything moved
    #[error("preflight: {0}")]
    Preflight(String),
    /// the state file
    #[error("state file: {0}")]
    State(String),
    /// a cutover gave up; the old owner keeps serving the group
    #[error("cutover of {slots} slots {from} → {to} aborted ({reason}); {from} keeps serving them")]
    CutoverAborted {
        /// source
        from: String,
        /// destination
        to: String,
        /// slots in the group
        slots: usize,
        /// why
        reason: String,
    },
    /// source and copy differ
    #[error("verification failed: {0}")]
    Mismatch(String),
    /// Ctrl-C / SIGTERM
    #[error("interrupted")]
    Interrupted,
}

/// How to run.
#[derive(Debug, Clone)]
pub struct Options {
    /// the map file
    pub map_path: PathBuf,
    /// shards to add (name, URL)
    pub add: Vec<(String, String)>,
    /// shards to remove
    pub remove: Vec<String>,
    /// admin URLs of the proxies serving the map (empty: offline)
    pub proxies: Vec<String>,
    /// longest a cutover may hold its slots
    pub hold_timeout: Duration,
    /// rows per cutover group (the hold grows with it)
    pub group_rows: u64,
    /// attempts per group before giving up
    pub attempts: u32,
    /// draw progress bars (stderr is a terminal)
    pub bars: bool,
    /// test hook: stop at this point and wait to be killed (`copy`, `cutover`,
    /// `committed`, `cleanup`)
    pub pause_at: Option<String>,
}

/// What `apply` did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Summary {
    /// rows copied by the snapshot copies
    pub copied_rows: u64,
    /// bytes of the snapshot copies (binary COPY stream)
    pub copied_bytes: u64,
    /// seconds the snapshot copies took
    pub copy_seconds: f64,
    /// rows moved by cutovers (after catching up)
    pub moved_rows: u64,
    /// cutovers done by this run
    pub cutovers: u32,
    /// cutovers that gave up and were retried
    pub aborted_cutovers: u32,
    /// longest time slots were held, milliseconds
    pub longest_hold_ms: u64,
    /// the map epoch at the end
    pub epoch: u64,
    /// seconds for the whole run
    pub seconds: f64,
    /// the final check
    pub verify: Option<VerifyReport>,
}

fn load_config(path: &Path) -> Result<Config, ApplyError> {
    config::load(path).map_err(|e| ApplyError::Config(e.to_string()))
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fresh state for a new rebalance of `config`.
fn new_state(config: &Config, opts: &Options) -> Result<State, ApplyError> {
    refuse_unsupported(config, opts)?;
    let layout = Layout {
        shards: config
            .shards
            .iter()
            .map(|s| (s.name.clone(), s.weight))
            .collect(),
        owner: config.map.slot_owner.clone(),
        vnodes: config.map.vnodes,
    };
    let mut changes: Vec<ShardChange> = opts
        .add
        .iter()
        .map(|(name, _)| ShardChange::Add {
            name: name.clone(),
            weight: 1,
        })
        .collect();
    changes.extend(
        opts.remove
            .iter()
            .map(|name| ShardChange::Remove { name: name.clone() }),
    );
    let plan = plan(&layout, &changes).map_err(|e| ApplyError::Config(e.to_string()))?;
    let target = plan
        .shards
        .iter()
        .enumerate()
        .map(|(id, name)| {
            (
                name.clone(),
                config::slot_runs(plan.owner.iter().map(|&o| o == id)),
            )
        })
        .collect();
    Ok(State {
        id: format!("{:08x}", rand::random::<u32>()),
        started: now_secs(),
        add: opts.add.clone(),
        remove: opts.remove.clone(),
        target,
        cutover: None,
        step: "planned".into(),
        cutovers_done: 0,
    })
}

/// Changes this version cannot make without losing rows from view, refused up front.
fn refuse_unsupported(config: &Config, opts: &Options) -> Result<(), ApplyError> {
    let map = &config.map;
    let default = map.shard_name(map.default_shard);
    if opts.remove.iter().any(|r| r == default) {
        return Err(ApplyError::Preflight(format!(
            "shard \"{default}\" is the default shard: the tables not in the map live there, \
             and a rebalance moves only sharded tables. Move those tables and set \
             [sharding] default_shard to a shard that stays first"
        )));
    }
    if !opts.add.is_empty() && !map.replicated.is_empty() {
        let names: Vec<&str> = map.replicated.iter().map(String::as_str).collect();
        return Err(ApplyError::Preflight(format!(
            "the map has reference tables ({}), which a new shard would need a full copy of \
             before it may answer reads; adding shards to such a map is not supported yet",
            names.join(", ")
        )));
    }
    Ok(())
}

/// The groups still to move: slots whose owner in `config` differs from the target,
/// by (source, destination), cut into groups of about `group_rows` rows.
fn remaining_groups(
    config: &Config,
    state: &State,
    rows_per_slot: &BTreeMap<(String, u32), u64>,
    group_rows: u64,
) -> Vec<Group> {
    let map = &config.map;
    let target = state.target_owner(map.slots);
    let mut moves: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for slot in 0..map.slots {
        let from = map.shard_name(map.shard_of_slot(slot));
        if let Some(to) = target[slot as usize]
            && to != from
        {
            moves
                .entry((from.to_owned(), to.to_owned()))
                .or_default()
                .push(slot);
        }
    }
    let mut groups = Vec::new();
    for ((from, to), slots) in moves {
        let mut current = Group {
            from: from.clone(),
            to: to.clone(),
            slots: Vec::new(),
            rows: 0,
        };
        for slot in slots {
            let rows = rows_per_slot
                .get(&(from.clone(), slot))
                .copied()
                .unwrap_or(0);
            if !current.slots.is_empty() && current.rows + rows > group_rows {
                groups.push(std::mem::replace(
                    &mut current,
                    Group {
                        from: from.clone(),
                        to: to.clone(),
                        slots: Vec::new(),
                        rows: 0,
                    },
                ));
            }
            current.slots.push(slot);
            current.rows += rows;
        }
        if !current.slots.is_empty() {
            groups.push(current);
        }
    }
    groups
}

fn shard_config<'a>(config: &'a Config, name: &str) -> Result<&'a ShardConfig, ApplyError> {
    config
        .shards
        .iter()
        .find(|s| s.name == name)
        .ok_or_else(|| ApplyError::Config(format!("shard \"{name}\" is not in the map")))
}

/// Connection settings of a shard given as `--add-shard NAME=URL` (TLS as for the map's
/// other shards).
fn shard_from_url(
    name: &str,
    url: &str,
    tls: &crate::tls::BackendTls,
) -> Result<ShardConfig, ApplyError> {
    let u = config::PgUrl::parse(url)
        .map_err(|e| ApplyError::Config(format!("--add-shard {name}: {e}")))?;
    Ok(ShardConfig {
        name: name.to_owned(),
        url: url.to_owned(),
        host: u.host,
        port: u.port,
        user: u.user,
        password: u.password,
        dbname: u.dbname,
        weight: 1,
        tls: tls.clone(),
    })
}

/// Change the map file with `edit` (given the text, its origin and the next epoch),
/// write it atomically and have the proxies load it.
async fn edit_map(
    path: &Path,
    proxies: &mut Proxies,
    edit: impl FnOnce(&str, &str, u64) -> Result<(String, Config), mapfile::MapFileError>,
) -> Result<Config, ApplyError> {
    let text = read_map(path)?;
    let origin = path.display().to_string();
    let epoch = config::parse(&text, &origin)
        .map_err(|e| ApplyError::Config(e.to_string()))?
        .map
        .epoch;
    let (new_text, config) =
        edit(&text, &origin, epoch + 1).map_err(|e| ApplyError::Config(e.to_string()))?;
    write_map(path, &new_text)?;
    if !proxies.is_empty() {
        proxies.reload(config.map.epoch).await?;
    }
    Ok(config)
}

fn write_map(path: &Path, text: &str) -> Result<(), ApplyError> {
    mapfile::write_atomically(path, text)
        .map_err(|e| ApplyError::Config(format!("{}: {e}", path.display())))
}

fn read_map(path: &Path) -> Result<String, ApplyError> {
    std::fs::read_to_string(path)
        .map_err(|e| ApplyError::Config(format!("{}: {e}", path.display())))
}

/// Settle a cutover a crash left in flight: commit both sides when the map file already
/// names the destination, roll back otherwise; then make the proxies serve the file and
/// release the group.
async fn settle(
    config: &Config,
    state: &mut State,
    state_path: &Path,
    proxies: &mut Proxies,
    progress: &Progress,
) -> Result<(), ApplyError> {
    let Some(cut) = state.cutover.clone() else {
        return Ok(());
    };
    let map = &config.map;
    let decided = map
        .shard_names
        .iter()
        .position(|n| *n == cut.to)
        .is_some_and(|to| {
            cut.slots
                .iter()
                .all(|&s| s < map.slots && map.shard_of_slot(s) == to)
        });
    for (name, gid) in [
        (&cut.to, &cut.destination_gid),
        (&cut.from, &cut.source_gid),
    ] {
        let shard = ShardClient::connect(shard_config(config, name)?).await?;
        if decided {
            cutover::commit_prepared(&shard, gid).await?;
        } else {
            cutover::rollback_prepared(&shard, gid).await?;
        }
    }
    if !proxies.is_empty() {
        proxies.reload(map.epoch).await?;
        proxies.release(&cut.slots).await?;
    }
    progress.line(format!(
        "settled the interrupted cutover of {} slots {} → {}: {}",
        cut.slots.len(),
        cut.from,
        cut.to,
        if decided { "committed" } else { "rolled back" }
    ));
    if decided {
        state.cutovers_done += 1;
    }
    state.cutover = None;
    state::save(state_path, state).map_err(ApplyError::State)
}

/// The sharded tables with their columns on `source`; checks each destination has the
/// same columns, creating the table from the source's definition where it is missing.
async fn preflight_tables(
    rules: &[TableRule],
    source: &ShardClient,
    dests: &[&ShardClient],
    progress: &Progress,
) -> Result<Vec<MovingTable>, ApplyError> {
    let mut tables = Vec::new();
    for rule in rules {
        let columns = source.columns(&rule.name).await?.ok_or_else(|| {
            ApplyError::Preflight(format!(
                "sharded table {} does not exist on shard \"{}\"",
                rule.name, source.name
            ))
        })?;
        if !columns.iter().any(|c| c.name == rule.key) {
            return Err(ApplyError::Preflight(format!(
                "table {} on shard \"{}\" has no key column {}",
                rule.name, source.name, rule.key
            )));
        }
        // A NULL key has no slot: such a row would never move (the proxy refuses to
        // write one, so it was written to the shard directly).
        let nulls = source
            .value(&format!(
                "SELECT count(*)::text FROM {} WHERE {} IS NULL",
                sql::table_ident(&rule.name),
                sql::quote_ident(&rule.key)
            ))
            .await?
            .unwrap_or_default();
        if nulls != "0" {
            return Err(ApplyError::Preflight(format!(
                "table {} on shard \"{}\" has {nulls} rows with a NULL {}: they belong to no \
                 slot and would never move; delete them or give them a key first",
                rule.name, source.name, rule.key
            )));
        }
        for dest in dests {
            match dest.columns(&rule.name).await? {
                Some(theirs) => {
                    let shape = |cols: &[sql::Column]| -> Vec<(String, String, bool)> {
                        cols.iter()
                            .map(|c| (c.name.clone(), c.sql_type.clone(), c.generated))
                            .collect()
                    };
                    if shape(&theirs) != shape(&columns) {
                        return Err(ApplyError::Preflight(format!(
                            "table {} differs between shard \"{}\" ({}) and shard \"{}\" ({}): \
                             the same columns, types and order are needed",
                            rule.name,
                            source.name,
                            describe_columns(&columns),
                            dest.name,
                            describe_columns(&theirs)
                        )));
                    }
                }
                None => {
                    create_like(rule, &columns, source, dest).await?;
                    progress.line(format!(
                        "created table {} on shard \"{}\" from the definition on \"{}\"",
                        rule.name, dest.name, source.name
                    ));
                }
            }
        }
        tables.push(MovingTable {
            rule: rule.clone(),
            columns,
        });
    }
    Ok(tables)
}

fn describe_columns(cols: &[sql::Column]) -> String {
    cols.iter()
        .map(|c| format!("{} {}", c.name, c.sql_type))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Create `rule`'s table on `dest` as it is on `source`: sequences its columns own,
/// the table with its constraints, then its other indexes, in one transaction.
async fn create_like(
    rule: &TableRule,
    columns: &[sql::Column],
    source: &ShardClient,
    dest: &ShardClient,
) -> Result<(), ApplyError> {
    let mut statements = vec!["BEGIN".to_string()];
    for seq in source.sequences(&rule.name).await? {
        // continue where the source's sequence is, not at 1
        let last = source
            .value(&format!("SELECT last_value::text FROM {seq}"))
            .await?
            .unwrap_or_else(|| "1".into());
        statements.push(format!("CREATE SEQUENCE IF NOT EXISTS {seq}"));
        statements.push(format!(
            "SELECT setval({}, {last})",
            sql::quote_literal(&seq)
        ));
    }
    let constraints = source.constraints(&rule.name).await?;
    statements.push(sql::create_table(&rule.name, columns, &constraints));
    statements.extend(source.indexes(&rule.name).await?);
    statements.push("COMMIT".into());
    if let Err(e) = dest.execute_all(&statements).await {
        let _ = dest.execute("ROLLBACK").await;
        return Err(e.into());
    }
    Ok(())
}

/// Rows per (source shard, slot) over the moving slots of all tables.
async fn count_moving(
    sources: &BTreeMap<String, ShardClient>,
    moving: &BTreeMap<String, Vec<u32>>,
    rules: &[TableRule],
    slots: u32,
) -> Result<BTreeMap<(String, u32), u64>, ApplyError> {
    let mut out = BTreeMap::new();
    for (name, shard) in sources {
        let Some(list) = moving.get(name) else {
            continue;
        };
        for rule in rules {
            let slot = sql::row_slot(rule, slots);
            let rows = shard
                .client
                .query(
                    &format!(
                        "SELECT ({slot})::int8, count(*)::int8 FROM {} WHERE {slot} = ANY({}) GROUP BY 1",
                        sql::table_ident(&rule.name),
                        sql::slot_array(list)
                    ),
                    &[],
                )
                .await
                .map_err(|e| shard.error(format!("counting {}: {}", rule.name, super::shard::describe(&e))))?;
            for r in rows {
                let s: i64 = r.get(0);
                let n: i64 = r.get(1);
                *out.entry((name.clone(), s as u32)).or_insert(0) += n as u64;
            }
        }
    }
    Ok(out)
}

/// Drop everything a rebalance created on every shard of `config` (best effort: one
/// unreachable shard does not stop the others; its error is returned at the end).
pub async fn teardown(config: &Config) -> Result<(), ApplyError> {
    let mut first_error = None;
    for shard in &config.shards {
        let result = async {
            let c = ShardClient::connect(shard).await?;
            // Dropping the triggers locks the user tables for a moment; under traffic
            // that can deadlock with a writer, which is simply retried.
            // Triggers first, one table at a time: each DROP TRIGGER takes one table
            // lock and waits for that table's writers, which cannot wait for it in
            // turn. Dropping the schema first would lock the change logs the writers'
            // triggers insert into as well — a lock cycle, and a deadlock error that
            // Postgres may hand to a client.
            let triggers = c
                .client
                .query(sql::TRIGGERS_QUERY, &[])
                .await
                .map_err(|e| c.error(super::shard::describe(&e)))?;
            for row in triggers {
                let (table, trigger): (String, String) = (row.get(0), row.get(1));
                retry_locked(
                    &c,
                    &format!(
                        "DROP TRIGGER IF EXISTS {} ON {table}",
                        sql::quote_ident(&trigger)
                    ),
                )
                .await?;
            }
            retry_locked(&c, &sql::teardown()).await
        }
        .await;
        if let Err(e) = result {
            first_error.get_or_insert(e);
        }
    }
    match first_error {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// Run a DDL statement with a short lock timeout, retrying while it cannot get its
/// locks (a long wait for a table lock would queue every writer of the table behind it).
async fn retry_locked(c: &ShardClient, statement: &str) -> Result<(), ShardError> {
    let mut attempt = 0u64;
    loop {
        let result = c
            .execute(&format!(
                "BEGIN; SET LOCAL lock_timeout = '500ms'; {statement}; COMMIT"
            ))
            .await;
        if result.is_err() {
            let _ = c.execute("ROLLBACK").await;
        }
        match result {
            Err(e)
                if attempt < 20
                    && (e.message.contains("(55P03)") || e.message.contains("(40P01)")) =>
            {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(20 * attempt)).await;
            }
            Err(e) if e.message.contains("(55P03)") => {
                return Err(c.error(format!(
                    "{e}: gave up after {attempt} tries; a long transaction keeps the table locked \
                     (see pg_stat_activity), end it and run apply again"
                )));
            }
            other => return other,
        }
    }
}

/// Run (or resume) the rebalance.
pub async fn apply(opts: &Options, cancel: &CancellationToken) -> Result<Summary, ApplyError> {
    let started = Instant::now();
    let progress = Progress::new(opts.bars);
    let state_path = state::path_for(&opts.map_path);
    // One rebalance per map at a time; the OS drops the lock when the process ends,
    // however it ends.
    let _lock = state::lock(&opts.map_path).map_err(ApplyError::State)?;
    let mut config = load_config(&opts.map_path)?;
    let loaded = state::load(&state_path).map_err(ApplyError::State)?;
    let resuming = loaded.is_some();
    let mut state = match loaded {
        Some(s) => {
            let same = (opts.add.is_empty() && opts.remove.is_empty())
                || (s.add == opts.add && s.remove == opts.remove);
            if !same {
                return Err(ApplyError::Config(format!(
                    "a rebalance is already in progress ({}): run `pgshard rebalance apply` \
                     with the same shard arguments (or none) to finish it first",
                    state_path.display()
                )));
            }
            progress.line(format!(
                "resuming the rebalance started at {} ({} cutovers done)",
                s.started, s.cutovers_done
            ));
            s
        }
        None => {
            if opts.add.is_empty() && opts.remove.is_empty() {
                return Err(ApplyError::Config(
                    "nothing to do: give --add-shard or --remove-shard".into(),
                ));
            }
            let s = new_state(&config, opts)?;
            state::save(&state_path, &s).map_err(ApplyError::State)?;
            s
        }
    };
    let mut proxies = Proxies::connect(&opts.proxies).await?;
    if !proxies.is_empty() {
        let epochs = proxies.epochs().await?;
        if let Some(&e) = epochs.iter().find(|&&e| e < config.map.epoch) {
            if !resuming {
                return Err(ApplyError::Preflight(format!(
                    "a proxy serves map epoch {e} but {} has epoch {}: RELOAD it first \
                     (or point --proxy at the proxies that serve this file)",
                    opts.map_path.display(),
                    config.map.epoch
                )));
            }
            // This rebalance wrote the file and stopped before the proxies read it.
            if state.cutover.is_none() {
                proxies.reload(config.map.epoch).await?;
            }
        }
    }
    settle(&config, &mut state, &state_path, &mut proxies, &progress).await?;

    // New shards join the map owning nothing, so the proxies open pools to them.
    let missing: Vec<(String, String)> = state
        .add
        .iter()
        .filter(|(name, _)| !config.map.shard_names.contains(name))
        .cloned()
        .collect();
    if !missing.is_empty() {
        // The tables exist on a new shard before it joins the map: scatter queries go
        // to every shard in the map, even one that owns no slots yet.
        let mut new_clients = Vec::new();
        for (name, url) in &missing {
            let cfg = shard_from_url(name, url, &config.tls.backend)?;
            new_clients.push(ShardClient::connect(&cfg).await.map_err(|e| {
                ApplyError::Preflight(format!("new shard \"{name}\" is not reachable: {e}"))
            })?);
        }
        let mut rules: Vec<TableRule> = config.map.tables.values().cloned().collect();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        let model = ShardClient::connect(&config.shards[config.map.default_shard]).await?;
        let dests: Vec<&ShardClient> = new_clients.iter().collect();
        preflight_tables(&rules, &model, &dests, &progress).await?;
        config = edit_map(&opts.map_path, &mut proxies, |text, origin, epoch| {
            mapfile::add_shards(text, origin, &missing, epoch)
        })
        .await?;
        progress.line(format!(
            "added {} to the map (epoch {})",
            missing
                .iter()
                .map(|(n, _)| n.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            config.map.epoch
        ));
    }

    let mut summary = Summary::default();
    let result = run_moves(
        opts,
        cancel,
        &mut config,
        &mut state,
        &state_path,
        &mut proxies,
        &progress,
        &mut summary,
    )
    .await;
    if let Err(e) = result {
        // Leave nothing behind that keeps capturing writes; the state file stays so a
        // re-run continues with the groups not yet moved.
        progress.line(format!(
            "stopping: {e}; removing the change capture and staging tables"
        ));
        if let Err(t) = teardown(&config).await {
            progress.line(format!(
                "cleanup incomplete: {t} (a re-run removes the rest)"
            ));
        }
        state.step = format!("stopped: {e}");
        let _ = state::save(&state_path, &state);
        return Err(e);
    }

    // Removed shards leave the map once they own nothing.
    let drained: Vec<String> = state
        .remove
        .iter()
        .filter(|name| config.map.shard_names.contains(name))
        .cloned()
        .collect();
    if !drained.is_empty() {
        config = edit_map(&opts.map_path, &mut proxies, |text, origin, epoch| {
            mapfile::remove_shards(text, origin, &drained, epoch)
        })
        .await?;
        progress.line(format!(
            "removed {} from the map (epoch {})",
            drained.join(", "),
            config.map.epoch
        ));
    }
    let report = verify(&config)
        .await
        .map_err(|e| ApplyError::Mismatch(e.to_string()))?;
    if !report.ok() {
        let wrong: u64 = report.misplaced.iter().map(|m| m.rows).sum();
        return Err(ApplyError::Mismatch(format!(
            "{wrong} rows are on a shard that does not own their slot (`pgshard rebalance verify` lists them)"
        )));
    }
    state::remove(&state_path).map_err(ApplyError::State)?;
    summary.epoch = config.map.epoch;
    summary.seconds = started.elapsed().as_secs_f64();
    summary.verify = Some(report);
    Ok(summary)
}

/// Capture, copy, catch up and cut over every remaining group.
#[allow(clippy::too_many_arguments)]
async fn run_moves(
    opts: &Options,
    cancel: &CancellationToken,
    config: &mut Config,
    state: &mut State,
    state_path: &Path,
    proxies: &mut Proxies,
    progress: &Progress,
    summary: &mut Summary,
) -> Result<(), ApplyError> {
    let checkpoint = |state: &mut State, step: &str| -> Result<(), ApplyError> {
        state.step = step.to_owned();
        state::save(state_path, state).map_err(ApplyError::State)
    };
    let interrupted = || {
        if cancel.is_cancelled() {
            Err(ApplyError::Interrupted)
        } else {
            Ok(())
        }
    };
    // Leftovers of an interrupted run (no cutover is in flight now).
    teardown(config).await?;

    let mut rules: Vec<TableRule> = config.map.tables.values().cloned().collect();
    rules.sort_by(|a, b| a.name.cmp(&b.name));
    let map_slots = config.map.slots;
    let no_counts = BTreeMap::new();
    let pending = remaining_groups(config, state, &no_counts, u64::MAX);
    if pending.is_empty() {
        return Ok(());
    }

    // Connections and preflight.
    let mut shards: BTreeMap<String, ShardClient> = BTreeMap::new();
    for g in &pending {
        for name in [&g.from, &g.to] {
            if !shards.contains_key(name) {
                let c = ShardClient::connect(shard_config(config, name)?).await?;
                let mpt = c
                    .value("SELECT current_setting('max_prepared_transactions')")
                    .await?
                    .and_then(|v| v.parse::<u32>().ok())
                    .unwrap_or(0);
                if mpt == 0 {
                    return Err(ApplyError::Preflight(format!(
                        "shard \"{name}\" has max_prepared_transactions = 0: each cutover commits \
                         on both shards with two-phase commit; set it to at least 2 and restart"
                    )));
                }
                shards.insert(name.clone(), c);
            }
        }
    }
    let sources: BTreeSet<&str> = pending.iter().map(|g| g.from.as_str()).collect();
    let dests: BTreeSet<&str> = pending.iter().map(|g| g.to.as_str()).collect();
    let first_source = sources.iter().next().copied().unwrap_or_default();
    let dest_clients: Vec<&ShardClient> = dests.iter().map(|d| &shards[*d]).collect();
    let tables = preflight_tables(&rules, &shards[first_source], &dest_clients, progress).await?;
    for s in sources.iter().skip(1) {
        preflight_tables(&rules, &shards[*s], &[], progress).await?;
    }
    checkpoint(state, "capture")?;

    // Capture on each source, for all of its moving slots.
    let mut moving: BTreeMap<String, Vec<(u32, String)>> = BTreeMap::new();
    for g in &pending {
        moving
            .entry(g.from.clone())
            .or_default()
            .extend(g.slots.iter().map(|&s| (s, g.to.clone())));
    }
    for (name, list) in &moving {
        let shard = &shards[name];
        shard.execute_all(&sql::setup_source(list)).await?;
        for t in &tables {
            // CREATE TRIGGER waits for the table's open transactions, and every writer
            // of the table would queue behind it: short lock timeouts, retried.
            let slots: Vec<u32> = list.iter().map(|(s, _)| *s).collect();
            for statement in sql::capture(&t.rule, map_slots, &slots) {
                retry_locked(shard, &statement).await?;
            }
        }
    }
    let moving_slots: BTreeMap<String, Vec<u32>> = moving
        .iter()
        .map(|(k, v)| (k.clone(), v.iter().map(|(s, _)| *s).collect()))
        .collect();
    let source_clients: BTreeMap<String, ShardClient> = {
        let mut m = BTreeMap::new();
        for name in moving.keys() {
            m.insert(
                name.clone(),
                ShardClient::connect(shard_config(config, name)?).await?,
            );
        }
        m
    };
    let counts = count_moving(&source_clients, &moving_slots, &rules, map_slots).await?;
    let groups = remaining_groups(config, state, &counts, opts.group_rows.max(1));
    let total_rows: u64 = groups.iter().map(|g| g.rows).sum();
    progress.line(format!(
        "moving {} slots in {} groups: about {total_rows} rows of {} tables",
        groups.iter().map(|g| g.slots.len()).sum::<usize>(),
        groups.len(),
        tables.len()
    ));
    interrupted()?;

    // Snapshot copies, per move and table.
    checkpoint(state, "copy")?;
    let copy_started = Instant::now();
    let overall = progress.overall(total_rows);
    let mut by_move: BTreeMap<(String, String), Vec<u32>> = BTreeMap::new();
    for g in &groups {
        by_move
            .entry((g.from.clone(), g.to.clone()))
            .or_default()
            .extend(&g.slots);
    }
    // one staging table per destination and table, whatever the number of sources
    for to in by_move.keys().map(|(_, to)| to).collect::<BTreeSet<_>>() {
        for t in &tables {
            copy::create_staging(&shards[to], t).await?;
        }
    }
    let mut done_rows = 0u64;
    for ((from, to), slots) in &by_move {
        for t in &tables {
            let expected: u64 = slots
                .iter()
                .map(|&s| counts.get(&(from.clone(), s)).copied().unwrap_or(0))
                .sum();
            let bar = progress.table(&format!("{from} → {to} {}", t.rule.name), expected);
            let base = done_rows;
            let copying = copy::snapshot(
                &shards[from],
                &shards[to],
                t,
                slots,
                map_slots,
                |rows, _| {
                    bar.set_position(rows);
                    overall.set_position(base + rows);
                },
            );
            let (rows, bytes) = tokio::select! {
                r = copying => r?,
                _ = cancel.cancelled() => return Err(ApplyError::Interrupted),
            };
            bar.finish();
            done_rows += rows;
            summary.copied_rows += rows;
            summary.copied_bytes += bytes;
            if opts.pause_at.as_deref() == Some("copy") {
                tokio::select! {
                    _ = cutover::pause("copy") => {}
                    _ = cancel.cancelled() => return Err(ApplyError::Interrupted),
                }
            }
        }
    }
    overall.finish();
    summary.copy_seconds = copy_started.elapsed().as_secs_f64();
    progress.line(format!(
        "copied {} rows ({:.1} MB) in {:.1} s: {:.0} rows/s, {:.1} MB/s",
        summary.copied_rows,
        summary.copied_bytes as f64 / 1e6,
        summary.copy_seconds,
        summary.copied_rows as f64 / summary.copy_seconds.max(1e-9),
        summary.copied_bytes as f64 / 1e6 / summary.copy_seconds.max(1e-9)
    ));

    // Catch up until the logs are short, so each cutover drains only a little.
    checkpoint(state, "catch-up")?;
    for ((from, to), slots) in &by_move {
        for _round in 0..100 {
            interrupted()?;
            let mut applied = 0;
            for t in &tables {
                applied += copy::catch_up(&shards[from], &shards[to], t, slots).await?;
            }
            if applied < copy::CATCH_UP_BATCH / 10 {
                break;
            }
        }
    }

    // Cutovers.
    let count = groups.len();
    for (i, group) in groups.iter().enumerate() {
        let mut attempt = 0;
        loop {
            interrupted()?;
            checkpoint(state, &format!("cutover {}/{count}", i + 1))?;
            let mut cx = cutover::Context {
                map_path: &opts.map_path,
                state_path,
                proxies,
                tables: &tables,
                map_slots,
                hold_timeout: opts.hold_timeout,
                source: shard_config(config, &group.from)?,
                dest: shard_config(config, &group.to)?,
                pause_at: opts.pause_at.as_deref(),
            };
            match cutover::run(
                &mut cx,
                state,
                group,
                &shards[&group.from],
                &shards[&group.to],
            )
            .await
            {
                Ok(done) => {
                    summary.cutovers += 1;
                    summary.moved_rows += done.rows;
                    summary.longest_hold_ms =
                        summary.longest_hold_ms.max(done.held.as_millis() as u64);
                    progress.line(format!(
                        "cutover {}/{count}: {} slots {} → {}, {} rows, held {} ms, epoch {}",
                        i + 1,
                        group.slots.len(),
                        group.from,
                        group.to,
                        done.rows,
                        done.held.as_millis(),
                        done.epoch
                    ));
                    break;
                }
                Err(e @ ApplyError::CutoverAborted { .. }) if attempt + 1 < opts.attempts => {
                    attempt += 1;
                    summary.aborted_cutovers += 1;
                    progress.line(format!("{e}; retrying ({attempt}/{})", opts.attempts - 1));
                    tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt))).await;
                    for t in &tables {
                        copy::catch_up(&shards[&group.from], &shards[&group.to], t, &group.slots)
                            .await?;
                    }
                }
                Err(e) => return Err(e),
            }
        }
    }
    *config = load_config(&opts.map_path)?;
    checkpoint(state, "cleanup")?;
    if opts.pause_at.as_deref() == Some("cleanup") {
        cutover::pause("cleanup").await;
    }
    drop(shards);
    drop(source_clients);
    teardown(config).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../config/testdata/base.toml");

    fn options(add: &[&str], remove: &[&str]) -> Options {
        Options {
            map_path: PathBuf::from("unused"),
            add: add
                .iter()
                .map(|n| (n.to_string(), "postgres://u@h/app".to_string()))
                .collect(),
            remove: remove.iter().map(|n| n.to_string()).collect(),
            proxies: vec![],
            hold_timeout: Duration::from_secs(1),
            group_rows: 10,
            attempts: 1,
            bars: false,
            pause_at: None,
        }
    }

    #[test]
    fn the_default_shard_and_maps_with_reference_tables_are_refused() {
        let config = config::parse(BASE, "base").unwrap();
        let err = new_state(&config, &options(&[], &["s0"])).unwrap_err();
        assert!(
            err.to_string().contains("\"s0\" is the default shard"),
            "{err}"
        );
        assert!(new_state(&config, &options(&[], &["s1"])).is_ok());
        let with_reference = BASE.replacen(
            "[slot_map]",
            "[[tables]]\nname = \"kinds\"\nreplicated = true\n\n[slot_map]",
            1,
        );
        let config = config::parse(&with_reference, "ref").unwrap();
        let err = new_state(&config, &options(&["s9"], &[])).unwrap_err();
        assert!(
            err.to_string().contains("reference tables (kinds)"),
            "{err}"
        );
        assert!(new_state(&config, &options(&[], &["s1"])).is_ok());
    }

    #[test]
    fn groups_follow_the_target_and_the_row_budget() {
        let config = config::parse(BASE, "base").unwrap();
        let opts = Options {
            map_path: PathBuf::from("unused"),
            add: vec![("s9".into(), "postgres://u@h/app".into())],
            remove: vec![],
            proxies: vec![],
            hold_timeout: Duration::from_secs(1),
            group_rows: 10,
            attempts: 1,
            bars: false,
            pause_at: None,
        };
        let state = new_state(&config, &opts).unwrap();
        let everything = remaining_groups(&config, &state, &BTreeMap::new(), u64::MAX);
        assert!(!everything.is_empty());
        assert!(everything.iter().all(|g| g.to == "s9"));
        let slots: Vec<u32> = everything.iter().flat_map(|g| g.slots.clone()).collect();
        // 6 rows per slot, budget 10: one slot per group
        let counts: BTreeMap<(String, u32), u64> = everything
            .iter()
            .flat_map(|g| g.slots.iter().map(|&s| ((g.from.clone(), s), 6)))
            .collect();
        let small = remaining_groups(&config, &state, &counts, 10);
        assert_eq!(small.len(), slots.len());
        assert!(small.iter().all(|g| g.slots.len() == 1 && g.rows == 6));
        // a slot bigger than the budget still moves, alone
        let big = remaining_groups(&config, &state, &counts, 1);
        assert_eq!(big.len(), slots.len());
    }
}
