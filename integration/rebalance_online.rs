//! `pgshard rebalance apply` under live traffic, against real shards and a real proxy:
//! writers record every acknowledged change, readers check point reads and a scatter
//! count that must never see a moved row twice; afterwards every acknowledged write is
//! present exactly once with its last value, every row is on the shard owning its slot,
//! and nothing the rebalance created is left on any shard. Also killed (SIGKILL) at
//! several points and re-run, and removing a shard.
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use pgshard::devcluster::shardmap::{self, ShardMapSpec};
use pgshard::rebalance::slot_expr;
use pgshard::sharding::KeyType;
use rand::Rng;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use crate::harness::{APP_USER, Cluster, Proxy, SLOTS, VNODES};

const TABLES: &str = r#"
[[tables]]
name = "rb_accounts"
key = "id"
type = "bigint"

[[tables]]
name = "rb_events"
key = "tag"
type = "text"

[[tables]]
name = "rb_docs"
key = "id"
type = "uuid"
"#;

/// Rows loaded per table.
struct Sizes {
    accounts: i64,
    events: i64,
    docs: i64,
}

/// Ids 1..=READ_ONLY are never written: readers check them.
const READ_ONLY: i64 = 1000;

const SCHEMA: &str = "
CREATE TABLE rb_accounts (id bigint PRIMARY KEY, balance bigint NOT NULL, note text DEFAULT 'n');
CREATE TABLE rb_events (tag text NOT NULL, id bigint NOT NULL, payload text, n bigint GENERATED ALWAYS AS IDENTITY, PRIMARY KEY (tag, id));
CREATE INDEX rb_events_payload ON rb_events (payload);
CREATE TABLE rb_docs (id uuid PRIMARY KEY, v int CHECK (v >= 0), len int GENERATED ALWAYS AS (v * 2) STORED);
";

/// A map file listing the first `shards` servers of `cluster`, equal contiguous slots.
fn map_text(cluster: &Cluster, shards: usize) -> String {
    let list: Vec<(String, String)> = (0..shards)
        .map(|i| (format!("s{i}"), cluster.shard_url(i)))
        .collect();
    let owners = shardmap::contiguous_slots(shards, SLOTS);
    let text = shardmap::render(&ShardMapSpec {
        listen: "127.0.0.1:0",
        pool_size: 8,
        users: &[(APP_USER, APP_USER, true)],
        shards: &list,
        slots: SLOTS,
        vnodes: VNODES,
        tables_toml: TABLES,
        slot_owner: &owners,
    });
    // Statements held by a killed rebalance wait for the re-run instead of failing.
    text.replacen("[server]\n", "[server]\nhold_timeout_ms = 60000\n", 1)
}

/// Create the tables on the first `shards` servers and load each with the rows of the
/// slots it owns (computed by the server with the router's slot arithmetic).
async fn load(cluster: &Cluster, shards: usize, sizes: &Sizes) {
    let owners = shardmap::contiguous_slots(shards, SLOTS);
    for i in 0..shards {
        let owned: Vec<String> = (0..SLOTS)
            .filter(|&s| owners[s as usize] == i)
            .map(|s| s.to_string())
            .collect();
        let owned = format!("ARRAY[{}]::int8[]", owned.join(","));
        let c = cluster.shard(i).client("app").await;
        c.batch_execute(SCHEMA).await.unwrap();
        let acc = slot_expr("g", KeyType::BigInt, SLOTS);
        let ev = slot_expr("('tag' || (g % 997))", KeyType::Text, SLOTS);
        let doc = slot_expr("md5(g::text)::uuid", KeyType::Uuid, SLOTS);
        c.batch_execute(&format!(
            "INSERT INTO rb_accounts (id, balance) SELECT g, g * 10 FROM generate_series(1, {}) g WHERE {acc} = ANY({owned});
             INSERT INTO rb_events SELECT 'tag' || (g % 997), g, repeat('p', 20) FROM generate_series(1, {}) g WHERE {ev} = ANY({owned});
             INSERT INTO rb_docs (id, v) SELECT md5(g::text)::uuid, g FROM generate_series(1, {}) g WHERE {doc} = ANY({owned});
             ANALYZE",
            sizes.accounts, sizes.events, sizes.docs
        ))
        .await
        .unwrap();
    }
}

/// What the writers had acknowledged.
#[derive(Default)]
struct Acked {
    /// account id → last acknowledged balance (None: deleted)
    accounts: HashMap<i64, Option<i64>>,
    /// events inserted
    events: HashSet<(String, i64)>,
    /// operations acknowledged
    ops: u64,
    /// errors seen (must stay empty)
    errors: Vec<String>,
    /// the longest a single statement (or transaction) took
    longest: Duration,
}

/// What the readers saw.
#[derive(Default)]
struct Seen {
    reads: u64,
    errors: Vec<String>,
    longest: Duration,
}

struct Traffic {
    stop: Arc<AtomicBool>,
    writers: Vec<JoinHandle<Acked>>,
    readers: Vec<JoinHandle<Seen>>,
}

impl Traffic {
    /// Two writers (autocommit and explicit transactions, disjoint keys) and two readers
    /// (point reads of never-written ids, and a scatter count of a table nobody writes).
    async fn start(proxy: &Proxy, sizes: &Sizes, writer_base: i64) -> Traffic {
        let stop = Arc::new(AtomicBool::new(false));
        let mut writers = Vec::new();
        for w in 0..2i64 {
            let client = proxy.client().await;
            let stop = stop.clone();
            let live_max = sizes.accounts;
            writers.push(tokio::spawn(async move {
                write_loop(client, stop, w, writer_base + w * 10_000_000, live_max).await
            }));
        }
        let mut readers = Vec::new();
        {
            let client = proxy.client().await;
            let stop = stop.clone();
            readers.push(tokio::spawn(async move { point_reads(client, stop).await }));
        }
        {
            let client = proxy.client().await;
            let stop = stop.clone();
            let docs = sizes.docs;
            readers.push(tokio::spawn(async move {
                scatter_counts(client, stop, docs).await
            }));
        }
        Traffic {
            stop,
            writers,
            readers,
        }
    }

    async fn finish(self) -> (Acked, Seen) {
        self.stop.store(true, Ordering::Relaxed);
        let mut acked = Acked::default();
        for w in self.writers {
            let a = w.await.unwrap();
            acked.accounts.extend(a.accounts);
            acked.events.extend(a.events);
            acked.ops += a.ops;
            acked.errors.extend(a.errors);
            acked.longest = acked.longest.max(a.longest);
        }
        let mut seen = Seen::default();
        for r in self.readers {
            let s = r.await.unwrap();
            seen.reads += s.reads;
            seen.errors.extend(s.errors);
            seen.longest = seen.longest.max(s.longest);
        }
        (acked, seen)
    }
}

/// Writer `w`: inserts new accounts (ids from `base`), updates and deletes accounts it
/// owns (initial ids ≡ w mod 2 above READ_ONLY, and its own inserts), inserts events.
/// Writer 1 wraps each change in BEGIN … COMMIT with a second statement on the same key.
async fn write_loop(
    client: Client,
    stop: Arc<AtomicBool>,
    w: i64,
    base: i64,
    live_max: i64,
) -> Acked {
    let mut acked = Acked::default();
    let mut next = base;
    let mut live: Vec<i64> = ((READ_ONLY + 1)..=live_max)
        .filter(|i| i % 2 == w)
        .collect();
    let mut op = 0i64;
    while !stop.load(Ordering::Relaxed) {
        op += 1;
        let value = base + op;
        let choice = rand::rng().random_range(0..10);
        let started = Instant::now();
        let result: Result<(), String> = async {
            match choice {
                0..=2 => {
                    let id = next;
                    next += 1;
                    exec(
                        &client,
                        w,
                        &format!("INSERT INTO rb_accounts (id, balance) VALUES ({id}, {value})"),
                        1,
                    )
                    .await?;
                    live.push(id);
                    acked.accounts.insert(id, Some(value));
                }
                3..=6 => {
                    let idx = rand::rng().random_range(0..live.len());
                    let id = live[idx];
                    exec(
                        &client,
                        w,
                        &format!("UPDATE rb_accounts SET balance = {value} WHERE id = {id}"),
                        1,
                    )
                    .await?;
                    acked.accounts.insert(id, Some(value));
                }
                7 => {
                    let idx = rand::rng().random_range(0..live.len());
                    let id = live.swap_remove(idx);
                    exec(
                        &client,
                        w,
                        &format!("DELETE FROM rb_accounts WHERE id = {id}"),
                        1,
                    )
                    .await?;
                    acked.accounts.insert(id, None);
                }
                _ => {
                    let tag = format!("w{w}-{}", op % 5000);
                    exec(
                        &client,
                        w,
                        &format!("INSERT INTO rb_events VALUES ('{tag}', {value}, 'x')"),
                        1,
                    )
                    .await?;
                    acked.events.insert((tag, value));
                }
            }
            Ok(())
        }
        .await;
        acked.longest = acked.longest.max(started.elapsed());
        match result {
            Ok(()) => acked.ops += 1,
            Err(e) => {
                acked.errors.push(e);
                if acked.errors.len() > 20 {
                    break;
                }
            }
        }
    }
    acked
}

/// Run one change; writer 1 runs it in a transaction with a no-op read of the same row.
/// Fails unless exactly `rows` rows were changed.
async fn exec(client: &Client, w: i64, sql: &str, rows: u64) -> Result<(), String> {
    let n = if w == 1 {
        client
            .batch_execute("BEGIN")
            .await
            .map_err(|e| format!("BEGIN: {e}"))?;
        let n = client.execute(sql, &[]).await;
        match n {
            Ok(n) => {
                client
                    .batch_execute("COMMIT")
                    .await
                    .map_err(|e| format!("COMMIT: {e}"))?;
                n
            }
            Err(e) => {
                let _ = client.batch_execute("ROLLBACK").await;
                return Err(format!("{sql}: {}", describe(&e)));
            }
        }
    } else {
        client
            .execute(sql, &[])
            .await
            .map_err(|e| format!("{sql}: {}", describe(&e)))?
    };
    if n != rows {
        return Err(format!("{sql}: {n} rows, expected {rows}"));
    }
    Ok(())
}

async fn point_reads(client: Client, stop: Arc<AtomicBool>) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let id = rand::rng().random_range(1..=READ_ONLY);
        let started = Instant::now();
        match client
            .query("SELECT balance FROM rb_accounts WHERE id = $1", &[&id])
            .await
        {
            Ok(rows) if rows.len() == 1 && rows[0].get::<_, i64>(0) == id * 10 => seen.reads += 1,
            Ok(rows) => seen.errors.push(format!("id {id}: {} rows", rows.len())),
            Err(e) => seen.errors.push(format!("id {id}: {}", describe(&e))),
        }
        seen.longest = seen.longest.max(started.elapsed());
    }
    seen
}

async fn scatter_counts(client: Client, stop: Arc<AtomicBool>, docs: i64) -> Seen {
    let mut seen = Seen::default();
    while !stop.load(Ordering::Relaxed) {
        let started = Instant::now();
        match client.query_one("SELECT count(*) FROM rb_docs", &[]).await {
            Ok(row) if row.get::<_, i64>(0) == docs => seen.reads += 1,
            Ok(row) => seen.errors.push(format!(
                "count(*) = {}, expected {docs}",
                row.get::<_, i64>(0)
            )),
            Err(e) => seen.errors.push(format!("count: {}", describe(&e))),
        }
        seen.longest = seen.longest.max(started.elapsed());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    seen
}

fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} {}", db.code().code(), db.message()),
        None => e.to_string(),
    }
}

fn admin_url(proxy: &Proxy) -> String {
    format!(
        "postgres://app:app@127.0.0.1:{}/pgshard",
        proxy.addr().port()
    )
}

/// Run `pgshard rebalance apply`; with `pause`, wait until it reports that point, kill it
/// with SIGKILL and return None.
async fn apply(
    path: &Path,
    proxy: &Proxy,
    shard_args: &[String],
    pause: Option<&str>,
) -> Option<String> {
    run_apply(path, proxy, shard_args, pause, Signal::Kill, true).await
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Signal {
    Kill,
    Interrupt,
}

async fn run_apply(
    path: &Path,
    proxy: &Proxy,
    shard_args: &[String],
    pause: Option<&str>,
    signal: Signal,
    must_succeed: bool,
) -> Option<String> {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgshard"));
    cmd.args([
        "rebalance",
        "apply",
        "--yes",
        "--group-rows",
        "6000",
        "--hold-timeout-ms",
        "1000",
        "--attempts",
        "2",
        "-c",
    ])
    .arg(path)
    .args(["--proxy", &admin_url(proxy)])
    .args(shard_args)
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .kill_on_drop(true);
    if let Some(p) = pause {
        cmd.env("PGSHARD_REBALANCE_PAUSE", p);
    }
    let mut child = cmd.spawn().expect("run pgshard rebalance apply");
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let mut log = String::new();
    if let Some(point) = pause {
        let marker = format!("paused at {point}");
        let found = tokio::time::timeout(Duration::from_secs(120), async {
            while let Ok(Some(line)) = lines.next_line().await {
                log.push_str(&line);
                log.push('\n');
                if line.contains(&marker) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        assert!(found, "apply never paused at {point}:\n{log}");
        if signal == Signal::Kill {
            child.kill().await.expect("SIGKILL");
            return None;
        }
        let pid = child.id().expect("running").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap();
        assert!(sent.success());
        let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
            .await
            .expect("apply stops after SIGINT")
            .unwrap();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        assert_eq!(status.code(), Some(1), "interrupted apply exits 1:\n{log}");
        return Some(log);
    }
    let drain = tokio::spawn(async move {
        let mut log = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            log.push_str(&line);
            log.push('\n');
        }
        log
    });
    let out = tokio::time::timeout(Duration::from_secs(300), child.wait_with_output())
        .await
        .expect("apply finished within 5 minutes")
        .unwrap();
    let log = drain.await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if must_succeed {
        assert!(
            out.status.success(),
            "apply failed: {}\nstderr:\n{log}\nstdout:\n{stdout}",
            out.status
        );
    } else {
        assert_eq!(
            out.status.code(),
            Some(1),
            "apply should fail:\n{log}\n{stdout}"
        );
    }
    Some(format!("{log}{stdout}"))
}

fn dir_of(path: &Path) -> PathBuf {
    path.parent().unwrap().to_path_buf()
}

/// A running `pgshard rebalance apply` (resuming, no shard arguments), paused at a
/// point until `resume` exists, whose log the test follows line by line.
struct Running {
    child: tokio::process::Child,
    lines: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>,
    log: String,
}

impl Running {
    fn start(path: &Path, proxy: &Proxy, point: &str, resume: &Path) -> Running {
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
            .args([
                "rebalance",
                "apply",
                "--yes",
                "--hold-timeout-ms",
                "1000",
                "--attempts",
                "2",
                "-c",
            ])
            .arg(path)
            .args(["--proxy", &admin_url(proxy)])
            .env("PGSHARD_REBALANCE_PAUSE", point)
            .env("PGSHARD_REBALANCE_RESUME_FILE", resume)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("run pgshard rebalance apply");
        let lines = BufReader::new(child.stderr.take().unwrap()).lines();
        Running {
            child,
            lines,
            log: String::new(),
        }
    }

    /// Read the log until a line contains `needle`.
    async fn until(&mut self, needle: &str) {
        loop {
            let line = tokio::time::timeout(Duration::from_secs(120), self.lines.next_line())
                .await
                .unwrap_or_else(|_| panic!("no \"{needle}\" within 2 minutes:\n{}", self.log))
                .unwrap()
                .unwrap_or_else(|| panic!("apply ended before \"{needle}\":\n{}", self.log));
            self.log.push_str(&line);
            self.log.push('\n');
            if line.contains(needle) {
                return;
            }
        }
    }

    /// Wait for the end: exit code and the whole log.
    async fn finish(mut self) -> (Option<i32>, String) {
        while let Ok(Some(line)) = self.lines.next_line().await {
            self.log.push_str(&line);
            self.log.push('\n');
        }
        let status = tokio::time::timeout(Duration::from_secs(120), self.child.wait())
            .await
            .expect("apply ends")
            .unwrap();
        (status.code(), self.log)
    }
}

fn status_text(path: &Path, proxy: &Proxy) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["rebalance", "status", "--proxy", &admin_url(proxy), "-c"])
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn verify_exit(path: &Path) -> (i32, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["rebalance", "verify", "-c"])
        .arg(path)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

/// Everything a rebalance might leave behind, on every server of the cluster.
async fn assert_clean(cluster: &Cluster) {
    for i in 0..cluster.len() {
        let c = cluster.shard(i).client("app").await;
        let row = c
            .query_one(
                "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'pgshard_rebalance'),
                        (SELECT count(*) FROM pg_trigger WHERE tgname LIKE 'pgshard%'),
                        (SELECT count(*) FROM pg_prepared_xacts),
                        (SELECT count(*) FROM pg_publication),
                        (SELECT count(*) FROM pg_subscription),
                        (SELECT count(*) FROM pg_replication_slots)",
                &[],
            )
            .await
            .unwrap();
        let counts: Vec<i64> = (0..6).map(|k| row.get(k)).collect();
        assert_eq!(
            counts,
            vec![0; 6],
            "shard {i}: schema, triggers, prepared xacts, publications, subscriptions, slots left"
        );
    }
}

/// Every acknowledged write is present exactly once with its last value, and the totals
/// add up, counting on every server directly.
async fn assert_acked(cluster: &Cluster, sizes: &Sizes, acked: &Acked) {
    let mut accounts: HashMap<i64, Vec<i64>> = HashMap::new();
    let mut events: HashMap<(String, i64), u32> = HashMap::new();
    let mut docs = 0i64;
    for i in 0..cluster.len() {
        let c = cluster.shard(i).client("app").await;
        let exists = c
            .query_one("SELECT to_regclass('rb_accounts') IS NOT NULL", &[])
            .await
            .unwrap()
            .get::<_, bool>(0);
        if !exists {
            continue;
        }
        for r in c
            .query("SELECT id, balance FROM rb_accounts", &[])
            .await
            .unwrap()
        {
            accounts.entry(r.get(0)).or_default().push(r.get(1));
        }
        for r in c.query("SELECT tag, id FROM rb_events", &[]).await.unwrap() {
            *events.entry((r.get(0), r.get(1))).or_insert(0) += 1;
        }
        docs += c
            .query_one("SELECT count(*) FROM rb_docs", &[])
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    for (id, want) in &acked.accounts {
        let have = accounts.get(id).cloned().unwrap_or_default();
        match want {
            Some(v) => assert_eq!(have, vec![*v], "account {id}: acknowledged balance {v}"),
            None => assert!(have.is_empty(), "account {id} was deleted but is {have:?}"),
        }
    }
    let dup = accounts.iter().find(|(_, v)| v.len() != 1);
    assert!(dup.is_none(), "account on several shards: {dup:?}");
    for id in 1..=READ_ONLY {
        assert_eq!(
            accounts.get(&id),
            Some(&vec![id * 10]),
            "read-only account {id}"
        );
    }
    let inserted = acked
        .accounts
        .iter()
        .filter(|(id, v)| **id > sizes.accounts && v.is_some())
        .count() as i64;
    let deleted = acked
        .accounts
        .iter()
        .filter(|(id, v)| **id <= sizes.accounts && v.is_none())
        .count() as i64;
    assert_eq!(
        accounts.len() as i64,
        sizes.accounts + inserted - deleted,
        "account rows"
    );
    for e in &acked.events {
        assert_eq!(events.get(e), Some(&1), "event {e:?}");
    }
    assert!(
        events.values().all(|&n| n == 1),
        "an event is on several shards"
    );
    assert_eq!(
        events.len() as i64,
        sizes.events + acked.events.len() as i64,
        "event rows"
    );
    assert_eq!(docs, sizes.docs, "doc rows");
}

async fn rows_on(cluster: &Cluster, i: usize) -> i64 {
    let c = cluster.shard(i).client("app").await;
    c.query_one(
        "SELECT CASE WHEN to_regclass('rb_accounts') IS NULL THEN 0 ELSE (SELECT count(*) FROM rb_accounts) END",
        &[],
    )
    .await
    .unwrap()
    .get(0)
}

fn write_map(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("shardmap.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Three servers, the first two loaded with `sizes` and in the map file (returned with
/// its directory), a proxy serving that file.
async fn two_of_three(sizes: &Sizes) -> (Cluster, tempfile::TempDir, PathBuf, Proxy) {
    let cluster = Cluster::start(3).await;
    load(&cluster, 2, sizes).await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_map(dir.path(), &map_text(&cluster, 2));
    let proxy = Proxy::start_file(&path).await;
    (cluster, dir, path, proxy)
}

fn report(what: &str, acked: &Acked, seen: &Seen, log: &str) {
    eprintln!(
        "{what}: {} writes acknowledged, {} reads; longest write {:?}, longest read {:?}\n{log}",
        acked.ops, seen.reads, acked.longest, seen.longest
    );
    assert!(
        acked.errors.is_empty(),
        "{what}: writers saw errors: {:?}",
        acked.errors
    );
    assert!(
        seen.errors.is_empty(),
        "{what}: readers saw errors: {:?}",
        seen.errors
    );
    assert!(acked.ops > 0 && seen.reads > 0, "{what}: no traffic ran");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_a_shard_under_live_traffic() {
    let sizes = Sizes {
        accounts: 60_000,
        events: 30_000,
        docs: 15_000,
    };
    let (cluster, _dir, path, proxy) = two_of_three(&sizes).await;
    let traffic = Traffic::start(&proxy, &sizes, 100_000_000).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let add = vec![
        "--add-shard".to_string(),
        format!("s2={}", cluster.shard_url(2)),
    ];
    let log = apply(&path, &proxy, &add, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (acked, seen) = traffic.finish().await;
    report("add s2", &acked, &seen, &log);
    assert!(log.contains("verified: "), "{log}");
    let (code, out) = verify_exit(&path);
    assert_eq!(code, 0, "{out}");
    assert!(rows_on(&cluster, 2).await > 10_000, "s2 got its share");
    assert_acked(&cluster, &sizes, &acked).await;
    assert_clean(&cluster).await;
    assert!(!pgshard::rebalance::state::path_for(&path).exists());
    // the proxy serves the new map
    let config = pgshard::config::load(&path).unwrap();
    assert_eq!(config.map.shard_count(), 3);
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_rebalances_resume_and_a_shard_is_removed() {
    let sizes = Sizes {
        accounts: 20_000,
        events: 6_000,
        docs: 3_000,
    };
    let (cluster, _dir, path, proxy) = two_of_three(&sizes).await;
    let traffic = Traffic::start(&proxy, &sizes, 200_000_000).await;
    let add = vec![
        "--add-shard".to_string(),
        format!("s2={}", cluster.shard_url(2)),
    ];
    // killed while copying, then after preparing a cutover, then between the commits of
    // a cutover; each re-run settles what the last one left and goes on
    for point in ["copy", "cutover", "committed"] {
        assert!(apply(&path, &proxy, &add, Some(point)).await.is_none());
        if point == "cutover" {
            let status = status_text(&path, &proxy);
            assert!(
                status.contains("cutover in flight: 176 slots s0 → s2 (Prepared)"),
                "{status}"
            );
            assert!(
                status.contains("1 prepared cutover transactions"),
                "{status}"
            );
            assert!(!status.contains("held slots: none"), "{status}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = apply(&path, &proxy, &add, None).await.unwrap();
    assert!(log.contains("settled the interrupted cutover"), "{log}");
    let (code, out) = verify_exit(&path);
    assert_eq!(code, 0, "{out}");
    assert_clean(&cluster).await;
    assert!(rows_on(&cluster, 2).await > 0);

    // remove s1 (a shard in the middle: the proxies renumber): its slots go to s0 and s2
    let remove = vec!["--remove-shard".to_string(), "s1".to_string()];
    let log2 = apply(&path, &proxy, &remove, None).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (acked, seen) = traffic.finish().await;
    report("kill + remove", &acked, &seen, &format!("{log}{log2}"));
    let (code, out) = verify_exit(&path);
    assert_eq!(code, 0, "{out}");
    let config = pgshard::config::load(&path).unwrap();
    assert_eq!(
        config.map.shard_names,
        vec!["s0".to_string(), "s2".to_string()]
    );
    assert_eq!(rows_on(&cluster, 1).await, 0, "s1 is empty");
    assert_acked(&cluster, &sizes, &acked).await;
    assert_clean(&cluster).await;
    proxy.stop().await.unwrap();
}

/// A transaction left open on a source shard keeps it from settling: every
/// cutover gives up after the hold timeout, the old owner keeps serving (the open
/// transaction commits there), and the apply stops with the change capture removed.
/// Ctrl-C during the copy also cleans up. A re-run then finishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_timeout_and_ctrl_c_leave_the_old_owner_serving() {
    let sizes = Sizes {
        accounts: 4_000,
        events: 1_000,
        docs: 500,
    };
    let (cluster, _dir, path, proxy) = two_of_three(&sizes).await;
    let add = vec![
        "--add-shard".to_string(),
        format!("s2={}", cluster.shard_url(2)),
    ];

    // Ctrl-C while copying: exit 1, nothing left on the shards, the map keeps s2 listed
    // (owning nothing) and the state file stays for the re-run.
    let log = run_apply(&path, &proxy, &add, Some("copy"), Signal::Interrupt, false)
        .await
        .unwrap();
    assert!(log.contains("interrupted"), "{log}");
    assert_clean(&cluster).await;
    assert!(pgshard::rebalance::state::path_for(&path).exists());

    // A transaction that writes to a moving table on s0 (the source of the first
    // groups) and stays open, begun once the capture is installed: the source never
    // settles, so each cutover gives up after the hold timeout.
    let open = proxy.client().await;
    let resume = dir_of(&path).join("resume");
    let mut running = Running::start(&path, &proxy, "copy", &resume);
    running.until("paused at copy").await;
    // a second apply on the same map is refused while this one runs
    let second = std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["rebalance", "apply", "--yes", "--offline", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains("another `pgshard rebalance apply` is running"),
        "{err}"
    );
    assert!(status_text(&path, &proxy).contains("is running now"));
    open.batch_execute("BEGIN; UPDATE rb_accounts SET balance = -1 WHERE id = 1")
        .await
        .unwrap();
    std::fs::write(&resume, "").unwrap();
    running.until("stopping: ").await;
    // the cleanup waits for the table lock of the open transaction: end it now
    open.batch_execute("COMMIT").await.unwrap();
    let (code, log) = running.finish().await;
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("not ready within the hold timeout (1000 ms)"),
        "{log}"
    );
    assert!(log.contains("keeps serving them"), "{log}");
    assert!(log.contains("retrying (1/1)"), "{log}");
    assert!(
        log.contains("oldest writing transaction on ")
            && log.contains("UPDATE rb_accounts SET balance = -1"),
        "{log}"
    );
    assert!(!log.contains("cleanup incomplete"), "{log}");
    assert_clean(&cluster).await;
    // the map did not change for the groups that gave up, and reads are right
    let reader = proxy.client().await;
    let n: i64 = reader
        .query_one("SELECT count(*) FROM rb_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, sizes.accounts);

    // nothing in the way now: the re-run finishes
    let log = apply(&path, &proxy, &[], None).await.unwrap();
    assert!(log.contains("verified: "), "{log}");
    let (code, out) = verify_exit(&path);
    assert_eq!(code, 0, "{out}");
    let n: i64 = reader
        .query_one("SELECT count(*) FROM rb_accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, sizes.accounts);
    let balance: i64 = reader
        .query_one("SELECT balance FROM rb_accounts WHERE id = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        balance, -1,
        "the update committed during the rebalance is kept"
    );
    assert_clean(&cluster).await;
    proxy.stop().await.unwrap();
}
