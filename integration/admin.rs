//! The admin console (database `pgshard`) against real shards: listings, slot holds and
//! what they do to client statements, RELOAD of the shard map file.
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::SinkExt;
use pgshard::sharding::KeyValue;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{ACCOUNTS, Cluster, Proxy, SLOTS};

/// How long a statement must stay pending to count as waiting.
const PENDING: Duration = Duration::from_millis(300);
/// How long a statement that must not wait may take.
const PROMPT: Duration = Duration::from_secs(5);

/// The rows of a simple query, as text (NULL as "").
async fn rows(client: &Client, sql: &str) -> Vec<Vec<String>> {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    messages
        .into_iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(row) => Some(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("").to_owned())
                    .collect(),
            ),
            _ => None,
        })
        .collect()
}

/// The SQLSTATE and message of a failed statement.
fn code_of(e: &tokio_postgres::Error) -> (SqlState, String) {
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    (db.code().clone(), db.message().to_owned())
}

/// Slot and owner (shard index) of a bigint key in the map at `path`.
fn locate(path: &Path, key: i64) -> (u32, usize) {
    let config = pgshard::config::load(path).expect("map file loads");
    config.map.locate(&KeyValue::Int(key))
}

/// Slot owners of the contiguous split of `shards` shards.
fn contiguous(shards: usize) -> Vec<usize> {
    pgshard::devcluster::shardmap::contiguous_slots(shards, SLOTS)
}

/// A temp dir holding `shardmap.toml` with `text`.
fn map_file(text: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("shardmap.toml");
    std::fs::write(&path, text).expect("write map file");
    (dir, path)
}

/// The accounts table on every shard listed in the map (through the proxy) with rows
/// `aid` = keys, `v` = `"v<aid>"`.
async fn accounts(client: &Client, keys: impl Iterator<Item = i64>) {
    client
        .batch_execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, v text)")
        .await
        .expect("create accounts");
    for k in keys {
        client
            .execute(
                "INSERT INTO accounts (aid, v) VALUES ($1, $2)",
                &[&k, &format!("v{k}")],
            )
            .await
            .expect("insert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_slots_and_map_describe_the_running_map_and_logins_are_checked() {
    let cluster = Cluster::start(2).await;
    let (_dir, path) = map_file(&cluster.shardmap_toml(ACCOUNTS, 2));
    let proxy = Proxy::start_file(&path).await;

    let err = proxy.admin("app", "wrong").await.expect_err("refused");
    assert_eq!(code_of(&err).0, SqlState::INVALID_PASSWORD);
    let err = proxy.admin("nobody", "app").await.expect_err("refused");
    assert_eq!(code_of(&err).0, SqlState::INVALID_PASSWORD);

    let admin = proxy.admin("app", "app").await.expect("admin login");
    assert_eq!(
        rows(&admin, "SHOW SLOTS").await,
        [["s0", "512", "0-511", ""], ["s1", "512", "512-1023", ""]]
    );
    let path_text = path.display().to_string();
    assert_eq!(
        rows(&admin, "show map;").await,
        [["1", "2", "1024", path_text.as_str(), ""]]
    );
    assert!(rows(&admin, "SHOW HOLDS").await.is_empty());

    // holds show up in the listings
    admin.simple_query("HOLD SLOTS '3-5,600'").await.unwrap();
    assert_eq!(
        rows(&admin, "SHOW SLOTS").await,
        [
            ["s0", "512", "0-511", "3-5"],
            ["s1", "512", "512-1023", "600"]
        ]
    );
    assert_eq!(rows(&admin, "SHOW MAP").await[0][4], "3-5,600");
    let holds = rows(&admin, "SHOW HOLDS").await;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0][0], "3-5,600");
    assert_eq!(holds[0][2], "0");
    admin.simple_query("RELEASE SLOTS '4'").await.unwrap();
    assert_eq!(rows(&admin, "SHOW MAP").await[0][4], "3,5,600");
    admin.simple_query("release all").await.unwrap();
    assert_eq!(rows(&admin, "SHOW MAP").await[0][4], "");

    // refusals keep the session usable
    let e = admin.simple_query("HOLD SLOTS '1024'").await.unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::INVALID_PARAMETER_VALUE);
    let e = admin.simple_query("SELECT 1").await.unwrap_err();
    let (code, message) = code_of(&e);
    assert_eq!(code, SqlState::SYNTAX_ERROR);
    assert!(message.contains("SHOW SLOTS"), "{message}");
    let e = admin.query("SHOW MAP", &[]).await.unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::FEATURE_NOT_SUPPORTED);
    assert_eq!(rows(&admin, "SHOW MAP").await[0][0], "1");
    // the data path is not affected by the admin login
    let client = proxy.client().await;
    assert_eq!(rows(&client, "SELECT 1").await, [["1"]]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_slot_holds_its_statements_and_scatters_until_release() {
    let cluster = Cluster::start(2).await;
    let (_dir, path) = map_file(&cluster.shardmap_toml(ACCOUNTS, 4));
    let proxy = Proxy::start_file(&path).await;
    let client = proxy.client().await;
    accounts(&client, 1..=20).await;
    let (slot, _) = locate(&path, 1);
    let other = (2..=20)
        .find(|&k| locate(&path, k).0 != slot)
        .expect("a key in another slot");
    // prime the lifted-constant fast path of the simple protocol for the point read
    assert_eq!(
        rows(&client, "SELECT v FROM accounts WHERE aid = 2").await,
        [["v2"]]
    );

    let admin = proxy.admin("app", "app").await.unwrap();
    admin
        .simple_query(&format!("HOLD SLOTS '{slot}'"))
        .await
        .unwrap();

    let writer = proxy.client().await;
    let write = tokio::spawn(async move {
        writer
            .execute("UPDATE accounts SET v = 'new' WHERE aid = $1", &[&1i64])
            .await
    });
    let reader = proxy.client().await;
    let simple_read =
        tokio::spawn(async move { rows(&reader, "SELECT v FROM accounts WHERE aid = 1").await });
    let scatter_client = proxy.client().await;
    let scatter =
        tokio::spawn(async move { rows(&scatter_client, "SELECT count(*) FROM accounts").await });
    let copier = proxy.client().await;
    let copy = tokio::spawn(async move {
        let sink = copier
            .copy_in::<_, Bytes>("COPY accounts (aid, v) FROM STDIN")
            .await?;
        let mut sink = std::pin::pin!(sink);
        sink.send(Bytes::from_static(b"100\tcopied\n")).await?;
        sink.as_mut().finish().await
    });
    tokio::time::sleep(PENDING).await;
    assert!(!copy.is_finished(), "the COPY ran while a slot was held");
    assert!(
        !write.is_finished(),
        "the point write ran while its slot was held"
    );
    assert!(
        !simple_read.is_finished(),
        "the point read ran while its slot was held"
    );
    assert!(
        !scatter.is_finished(),
        "the scatter ran while a slot was held"
    );

    // another slot, and statements without a sharded table, do not wait
    let free = proxy.client().await;
    let v: String = tokio::time::timeout(
        PROMPT,
        free.query_one("SELECT v FROM accounts WHERE aid = $1", &[&other]),
    )
    .await
    .expect("a key in another slot is served at once")
    .unwrap()
    .get(0);
    assert_eq!(v, format!("v{other}"));
    let one = tokio::time::timeout(PROMPT, rows(&free, "SELECT 1"))
        .await
        .expect("no sharded table: no wait");
    assert_eq!(one, [["1"]]);

    let holds = rows(&admin, "SHOW HOLDS").await;
    assert_eq!(holds.len(), 1);
    assert_eq!(holds[0][0], slot.to_string());
    assert_eq!(holds[0][2], "4", "four statements wait");

    admin
        .simple_query(&format!("RELEASE SLOTS '{slot}'"))
        .await
        .unwrap();
    let updated = tokio::time::timeout(PROMPT, write)
        .await
        .expect("write finishes after release")
        .unwrap()
        .expect("write succeeds");
    assert_eq!(updated, 1);
    let read = tokio::time::timeout(PROMPT, simple_read)
        .await
        .expect("read finishes after release")
        .unwrap();
    assert!(read == [["v1"]] || read == [["new"]], "{read:?}");
    let count = tokio::time::timeout(PROMPT, scatter)
        .await
        .expect("scatter finishes after release")
        .unwrap();
    // the scatter ran before or after the COPY
    assert!(count == [["20"]] || count == [["21"]], "{count:?}");
    let copied = tokio::time::timeout(PROMPT, copy)
        .await
        .expect("COPY finishes after release")
        .unwrap()
        .expect("COPY succeeds");
    assert_eq!(copied, 1);
    assert_eq!(
        rows(&client, "SELECT v FROM accounts WHERE aid = 100").await,
        [["copied"]]
    );
    assert_eq!(
        rows(&client, "SELECT v FROM accounts WHERE aid = 1").await,
        [["new"]]
    );
    assert!(rows(&admin, "SHOW HOLDS").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_waiting_through_a_map_flip_run_on_the_new_owner() {
    let cluster = Cluster::start(2).await;
    let (_dir, path) = map_file(&cluster.shardmap_toml_with(2, &contiguous(2), 1, ACCOUNTS, 4));
    let proxy = Proxy::start_file(&path).await;
    let client = proxy.client().await;
    // a key owned by s0
    let key = (1..1000)
        .find(|&k| locate(&path, k).1 == 0)
        .expect("a key on s0");
    let (slot, _) = locate(&path, key);
    accounts(&client, std::iter::once(key)).await;
    client
        .execute("UPDATE accounts SET v = 'on s0' WHERE aid = $1", &[&key])
        .await
        .unwrap();
    // the copy the rebalancer would have made on s1
    let s1 = cluster.shard(1).client("app").await;
    s1.execute(
        "INSERT INTO accounts (aid, v) VALUES ($1, 'on s1')",
        &[&key],
    )
    .await
    .unwrap();

    let admin = proxy.admin("app", "app").await.unwrap();
    admin
        .simple_query(&format!("HOLD SLOTS '{slot}'"))
        .await
        .unwrap();
    let reader = proxy.client().await;
    let read = tokio::spawn(async move {
        reader
            .query_one("SELECT v FROM accounts WHERE aid = $1", &[&key])
            .await
            .map(|r| r.get::<_, String>(0))
    });
    tokio::time::sleep(PENDING).await;
    assert!(!read.is_finished(), "the read ran while its slot was held");

    let mut owners = contiguous(2);
    owners[slot as usize] = 1;
    std::fs::write(
        &path,
        cluster.shardmap_toml_with(2, &owners, 2, ACCOUNTS, 4),
    )
    .unwrap();
    admin.simple_query("RELOAD").await.expect("reload");
    assert!(!read.is_finished(), "still held after the reload");
    admin.simple_query("RELEASE ALL").await.unwrap();
    let v = tokio::time::timeout(PROMPT, read)
        .await
        .expect("read finishes after release")
        .unwrap()
        .expect("read succeeds");
    assert_eq!(v, "on s1");
    let map = rows(&admin, "SHOW MAP").await;
    assert_eq!(map[0][0], "2");
    let slots = rows(&admin, "SHOW SLOTS").await;
    assert_eq!(slots[0][1], "511");
    assert_eq!(slots[1][1], "513");
    // later statements go to the new owner too
    let v: String = client
        .query_one("SELECT v FROM accounts WHERE aid = $1", &[&key])
        .await
        .unwrap()
        .get(0);
    assert_eq!(v, "on s1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_refuses_an_older_epoch_or_a_broken_file_and_keeps_the_map() {
    let cluster = Cluster::start(2).await;
    let (_dir, path) = map_file(&cluster.shardmap_toml_with(2, &contiguous(2), 3, ACCOUNTS, 2));
    let proxy = Proxy::start_file(&path).await;
    let admin = proxy.admin("app", "app").await.unwrap();
    let before = rows(&admin, "SHOW SLOTS").await;

    // the same file again: nothing to do
    admin
        .simple_query("RELOAD")
        .await
        .expect("same file reloads");

    let mut owners = contiguous(2);
    owners[0] = 1;
    std::fs::write(
        &path,
        cluster.shardmap_toml_with(2, &owners, 2, ACCOUNTS, 2),
    )
    .unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    let (code, message) = code_of(&e);
    assert_eq!(code, SqlState::CONFIG_FILE_ERROR);
    assert!(
        message.contains("map epoch 2 is older than the running epoch 3"),
        "{message}"
    );
    // a changed map with the same epoch
    std::fs::write(
        &path,
        cluster.shardmap_toml_with(2, &owners, 3, ACCOUNTS, 2),
    )
    .unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::CONFIG_FILE_ERROR);
    assert!(code_of(&e).1.contains("higher epoch"), "{}", code_of(&e).1);

    let good = cluster.shardmap_toml_with(2, &owners, 4, ACCOUNTS, 2);
    let broken = format!("{good}this is not toml\n");
    let bad_line = broken.lines().count();
    std::fs::write(&path, &broken).unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    let (code, message) = code_of(&e);
    assert_eq!(code, SqlState::CONFIG_FILE_ERROR);
    assert!(
        message.contains(&format!("shardmap.toml:{bad_line}:")),
        "line {bad_line} not named: {message}"
    );

    assert_eq!(rows(&admin, "SHOW MAP").await[0][0], "3");
    assert_eq!(rows(&admin, "SHOW SLOTS").await, before);

    // a proxy started without a file has nothing to reload
    let plain = Proxy::start(&cluster.shardmap_toml(ACCOUNTS, 2)).await;
    let admin = plain.admin("app", "app").await.unwrap();
    let e = admin.simple_query("RELOAD").await.unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE);
    assert_eq!(rows(&admin, "SHOW MAP").await[0][3], "");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hold_past_hold_timeout_fails_the_statement_with_55p03() {
    let cluster = Cluster::start(2).await;
    let text = cluster.shardmap_toml(ACCOUNTS, 2).replacen(
        "[server]\n",
        "[server]\nhold_timeout_ms = 500\n",
        1,
    );
    let (_dir, path) = map_file(&text);
    let proxy = Proxy::start_file(&path).await;
    let client = proxy.client().await;
    accounts(&client, 1..=10).await;
    let (slot, _) = locate(&path, 1);
    let other = (2..=10)
        .find(|&k| locate(&path, k).0 != slot)
        .expect("a key in another slot");
    let admin = proxy.admin("app", "app").await.unwrap();
    admin
        .simple_query(&format!("HOLD SLOTS '{slot}'"))
        .await
        .unwrap();

    let started = Instant::now();
    let e = client
        .query_one("SELECT v FROM accounts WHERE aid = $1", &[&1i64])
        .await
        .unwrap_err();
    let waited = started.elapsed();
    let (code, message) = code_of(&e);
    assert_eq!(code, SqlState::LOCK_NOT_AVAILABLE);
    assert!(message.contains(&format!("slot {slot} ")), "{message}");
    assert!(message.contains("500 ms"), "{message}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_secs(3),
        "waited {waited:?}"
    );
    // the simple protocol too, once
    let started = Instant::now();
    let e = client
        .simple_query("SELECT v FROM accounts WHERE aid = 1")
        .await
        .unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::LOCK_NOT_AVAILABLE);
    assert!(started.elapsed() < Duration::from_millis(1500));

    // the session is usable afterwards
    assert_eq!(
        rows(
            &client,
            &format!("SELECT v FROM accounts WHERE aid = {other}")
        )
        .await,
        [[format!("v{other}")]]
    );
    // inside a transaction block it fails the transaction like any statement error
    client.batch_execute("BEGIN").await.unwrap();
    rows(
        &client,
        &format!("SELECT v FROM accounts WHERE aid = {other}"),
    )
    .await;
    let e = client
        .simple_query("SELECT v FROM accounts WHERE aid = 1")
        .await
        .unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::LOCK_NOT_AVAILABLE);
    let e = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::IN_FAILED_SQL_TRANSACTION);
    client.batch_execute("ROLLBACK").await.unwrap();

    admin.simple_query("RELEASE ALL").await.unwrap();
    assert_eq!(
        rows(&client, "SELECT v FROM accounts WHERE aid = 1").await,
        [["v1"]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_adds_a_shard_and_moved_slots_route_to_it() {
    let cluster = Cluster::start(3).await;
    let first = contiguous(2);
    let (_dir, path) = map_file(&cluster.shardmap_toml_with(2, &first, 1, ACCOUNTS, 2));
    let proxy = Proxy::start_file(&path).await;
    let client = proxy.client().await;
    accounts(&client, 1..=50).await;
    // the new shard gets the table the way a rebalance would create it
    let s2 = cluster.shard(2).client("app").await;
    s2.batch_execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, v text)")
        .await
        .unwrap();

    // move every fourth slot of each shard to s2
    let mut second = first.clone();
    for (slot, owner) in second.iter_mut().enumerate() {
        if slot.is_multiple_of(4) {
            *owner = 2;
        }
    }
    let keys: Vec<i64> = (1000..1100).collect();
    let moved = |k: i64| locate(&path, k).0.is_multiple_of(4);
    assert!(keys.iter().any(|&k| moved(k)) && keys.iter().any(|&k| !moved(k)));

    std::fs::write(
        &path,
        cluster.shardmap_toml_with(3, &second, 2, ACCOUNTS, 2),
    )
    .unwrap();
    let admin = proxy.admin("app", "app").await.unwrap();
    admin.simple_query("RELOAD").await.expect("reload");
    let map = rows(&admin, "SHOW MAP").await;
    assert_eq!((map[0][0].as_str(), map[0][1].as_str()), ("2", "3"));
    let slots = rows(&admin, "SHOW SLOTS").await;
    assert_eq!(slots.len(), 3);
    assert_eq!(slots[2][0], "s2");
    assert_eq!(slots[2][1], "256");

    for &k in &keys {
        client
            .execute("INSERT INTO accounts (aid, v) VALUES ($1, 'new')", &[&k])
            .await
            .unwrap();
    }
    let s0 = cluster.shard(0).client("app").await;
    let s1 = cluster.shard(1).client("app").await;
    for &k in &keys {
        let mut found = Vec::new();
        for (i, shard) in [&s0, &s1, &s2].into_iter().enumerate() {
            let n: i64 = shard
                .query_one("SELECT count(*) FROM accounts WHERE aid = $1", &[&k])
                .await
                .unwrap()
                .get(0);
            if n == 1 {
                found.push(i);
            }
        }
        let expected = if moved(k) {
            2
        } else {
            first[locate(&path, k).0 as usize]
        };
        assert_eq!(found, [expected], "key {k}");
    }
    // keys of slots that did not move are still served from their old shard
    let v: String = client
        .query_one(
            "SELECT v FROM accounts WHERE aid = $1",
            &[&(1..=50).find(|&k| !moved(k)).unwrap()],
        )
        .await
        .unwrap()
        .get(0);
    assert!(v.starts_with('v'), "{v}");
    // a scatter now covers the three shards (the old rows of moved slots are still on
    // s0 and s1: deleting them is the rebalancer's cleanup)
    assert_eq!(
        rows(&client, "SELECT count(*) FROM accounts").await,
        [[(keys.len() + 50).to_string()]]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_removing_a_drained_middle_shard_renumbers_safely() {
    let cluster = Cluster::start(3).await;
    // s1 owns nothing (drained); s0 and s2 split the slots
    let first: Vec<usize> = contiguous(2)
        .into_iter()
        .map(|o| if o == 1 { 2 } else { 0 })
        .collect();
    let (_dir, path) = map_file(&cluster.shardmap_toml_with(3, &first, 1, ACCOUNTS, 2));
    let proxy = Proxy::start_file(&path).await;
    let client = proxy.client().await;
    accounts(&client, 1..=20).await;
    let on_s2 = (1..=20)
        .find(|&k| locate(&path, k).1 == 2)
        .expect("a key on s2");

    // a transaction holding a connection to s2 (ShardId 2) across the reload
    let txn = proxy.client().await;
    txn.batch_execute("BEGIN").await.unwrap();
    assert_eq!(
        rows(&txn, &format!("SELECT v FROM accounts WHERE aid = {on_s2}")).await,
        [[format!("v{on_s2}")]]
    );

    // the new file lists s0 and s2 only: s2 becomes ShardId 1
    let names = format!(
        "[[shards]]\nname = \"s1\"\nurl = \"{}\"\n\n",
        cluster.shard_url(1)
    );
    let text = cluster.shardmap_toml_with(3, &first, 2, ACCOUNTS, 2);
    assert!(text.contains(&names), "{text}");
    let text = text.replacen(&names, "", 1).replacen("s1 = []\n", "", 1);
    std::fs::write(&path, &text).unwrap();
    let admin = proxy.admin("app", "app").await.unwrap();
    admin
        .simple_query("RELOAD")
        .await
        .unwrap_or_else(|e| panic!("reload: {e}\n{text}"));
    let slots = rows(&admin, "SHOW SLOTS").await;
    assert_eq!(slots.len(), 2);
    assert_eq!(slots[1][0], "s2");

    // the open transaction must not mix the two numberings; statements that name no
    // shard still run
    assert_eq!(rows(&txn, "SELECT 1").await, [["1"]]);
    let e = txn
        .simple_query(&format!("SELECT v FROM accounts WHERE aid = {on_s2}"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::T_R_SERIALIZATION_FAILURE);
    txn.batch_execute("ROLLBACK").await.unwrap();
    // afterwards, and for every other client, keys of s2 are read from s2
    for c in [&txn, &client] {
        assert_eq!(
            rows(c, &format!("SELECT v FROM accounts WHERE aid = {on_s2}")).await,
            [[format!("v{on_s2}")]]
        );
    }
    let inserted = 1000;
    client
        .execute(
            "INSERT INTO accounts (aid, v) VALUES ($1, 'x')",
            &[&inserted],
        )
        .await
        .unwrap();
    let owner = locate(&path, inserted).1; // index in the new file: 0 = s0, 1 = s2
    let server = if owner == 0 { 0 } else { 2 };
    let n: i64 = cluster
        .shard(server)
        .client("app")
        .await
        .query_one("SELECT count(*) FROM accounts WHERE aid = $1", &[&inserted])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

/// A portal bound before a HOLD is not executed on the shard it was routed to while the
/// slot is held, nor after the map changed: its shard may have given the rows away.
/// Outside a hold, a portal bound in an earlier batch runs as usual.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portals_bound_before_a_move_are_refused() {
    let cluster = Cluster::start(2).await;
    let (_dir, path) = map_file(&cluster.shardmap_toml(ACCOUNTS, 2));
    let proxy = Proxy::start_file(&path).await;
    let mut client = proxy.client().await;
    accounts(&client, 1..=4).await;
    let (slot, _) = locate(&path, 1);
    let admin = proxy.admin("app", "app").await.unwrap();

    // control: bind in one exchange, execute in the next
    let txn = client.transaction().await.unwrap();
    let stmt = txn
        .prepare("SELECT v FROM accounts WHERE aid = $1")
        .await
        .unwrap();
    let portal = txn.bind(&stmt, &[&1i64]).await.unwrap();
    let got = txn.query_portal(&portal, 0).await.unwrap();
    assert_eq!(got[0].get::<_, String>(0), "v1");
    txn.rollback().await.unwrap();

    // bound, then the slot is held: the later Execute is refused, not run on the old owner
    let txn = client.transaction().await.unwrap();
    let stmt = txn
        .prepare("UPDATE accounts SET v = 'moved?' WHERE aid = $1")
        .await
        .unwrap();
    let portal = txn.bind(&stmt, &[&1i64]).await.unwrap();
    admin
        .simple_query(&format!("HOLD SLOTS '{slot}'"))
        .await
        .unwrap();
    let e = txn.query_portal(&portal, 0).await.unwrap_err();
    let (code, message) = code_of(&e);
    assert_eq!(code, SqlState::LOCK_NOT_AVAILABLE);
    assert!(message.contains("portal was bound before"), "{message}");
    txn.rollback().await.unwrap();
    admin.simple_query("RELEASE ALL").await.unwrap();

    // bound, then the map changes (a reload with a higher epoch): refused as well
    let txn = client.transaction().await.unwrap();
    let stmt = txn
        .prepare("SELECT v FROM accounts WHERE aid = $1")
        .await
        .unwrap();
    let portal = txn.bind(&stmt, &[&1i64]).await.unwrap();
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("[sharding]\n", "[sharding]\nepoch = 2\n", 1),
    )
    .unwrap();
    admin.simple_query("RELOAD").await.unwrap();
    let e = txn.query_portal(&portal, 0).await.unwrap_err();
    assert_eq!(code_of(&e).0, SqlState::LOCK_NOT_AVAILABLE);
    txn.rollback().await.unwrap();
    assert_eq!(
        rows(&client, "SELECT v FROM accounts WHERE aid = 1").await,
        vec![vec!["v1".to_string()]],
        "nothing was written"
    );
}

/// HOLD returns only once the statements routed before it have finished: a slow
/// statement on the held slot keeps HOLD waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hold_waits_for_statements_already_running() {
    let cluster = Cluster::start(2).await;
    let (_dir, path) = map_file(&cluster.shardmap_toml(ACCOUNTS, 2));
    let proxy = Proxy::start_file(&path).await;
    let client = proxy.client().await;
    accounts(&client, 1..=4).await;
    let (slot, _) = locate(&path, 1);
    let admin = proxy.admin("app", "app").await.unwrap();
    let slow = tokio::spawn(async move {
        client
            .simple_query("SELECT pg_sleep(1), v FROM accounts WHERE aid = 1")
            .await
            .map(|_| Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    admin
        .simple_query(&format!("HOLD SLOTS '{slot}'"))
        .await
        .unwrap();
    let held_at = Instant::now();
    let finished_at = slow
        .await
        .unwrap()
        .expect("the running statement completes");
    assert!(
        held_at >= finished_at,
        "HOLD returned {:?} before the statement routed earlier finished",
        finished_at - held_at
    );
    admin.simple_query("RELEASE ALL").await.unwrap();
}
