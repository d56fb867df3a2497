//! Reference tables (`replicated = true`): a full copy on every shard. Writes through the
//! proxy change every copy; reads are answered by one shard, spread over the shards;
//! joins with a sharded table route like the sharded table; what would duplicate rows or
//! split a transaction is refused.

use std::collections::BTreeSet;

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, SimpleQueryMessage};

use crate::harness::{ACCOUNTS, Cluster, Proxy};

const KINDS: &str = r#"
[[tables]]
name = "kinds"
replicated = true
"#;

/// Three shards; `accounts` sharded (aid 1..=60, kind = aid % 4) and `kinds` replicated,
/// both created and loaded through the proxy.
async fn setup() -> (Cluster, Proxy) {
    let cluster = Cluster::start(3).await;
    let toml = cluster.shardmap_toml(&format!("{ACCOUNTS}{KINDS}"), 4);
    let proxy = Proxy::start(&toml).await;
    let client = proxy.client().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (aid bigint PRIMARY KEY, kind int NOT NULL); \
             CREATE TABLE kinds (id int PRIMARY KEY, label text)",
        )
        .await
        .unwrap();
    for aid in 1..=60i64 {
        client
            .batch_execute(&format!("INSERT INTO accounts VALUES ({aid}, {})", aid % 4))
            .await
            .unwrap();
    }
    client
        .batch_execute("INSERT INTO kinds VALUES (0, 'zero'), (1, 'one'), (2, 'two')")
        .await
        .unwrap();
    (cluster, proxy)
}

/// `SELECT id, label FROM kinds` on shard `i` directly, as "id:label" strings.
async fn copy_on(cluster: &Cluster, i: usize) -> Vec<String> {
    cluster
        .shard(i)
        .client("app")
        .await
        .query(
            "SELECT id::text || ':' || coalesce(label, '-') FROM kinds ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}

async fn assert_copies(cluster: &Cluster, expected: &[&str]) {
    for i in 0..cluster.len() {
        assert_eq!(copy_on(cluster, i).await, expected, "copy on shard {i}");
    }
}

fn rows(msgs: &[SimpleQueryMessage]) -> Vec<String> {
    msgs.iter()
        .filter_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(
                (0..r.len())
                    .map(|i| r.get(i).unwrap_or("NULL"))
                    .collect::<Vec<_>>()
                    .join("|"),
            ),
            _ => None,
        })
        .collect()
}

fn tag(msgs: &[SimpleQueryMessage]) -> Option<u64> {
    msgs.iter().find_map(|m| match m {
        SimpleQueryMessage::CommandComplete(n) => Some(*n),
        _ => None,
    })
}

async fn refused(client: &Client, sql: &str) -> String {
    let e = client
        .simple_query(sql)
        .await
        .expect_err(&format!("{sql} must be refused"));
    assert_eq!(
        e.code(),
        Some(&SqlState::FEATURE_NOT_SUPPORTED),
        "{sql}: {e}"
    );
    e.as_db_error()
        .map(|d| d.message().to_owned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_reach_every_copy() {
    let (cluster, proxy) = setup().await;
    assert_copies(&cluster, &["0:zero", "1:one", "2:two"]).await;
    let client = proxy.client().await;
    let m = client
        .simple_query("INSERT INTO kinds VALUES (3, 'three'), (4, NULL) RETURNING id")
        .await
        .unwrap();
    // the answer is one shard's, not the sum of three
    assert_eq!(rows(&m), ["3", "4"]);
    assert_eq!(tag(&m), Some(2));
    let m = client
        .simple_query("UPDATE kinds SET label = upper(label) WHERE id >= 2")
        .await
        .unwrap();
    assert_eq!(tag(&m), Some(3));
    let m = client
        .simple_query("DELETE FROM kinds WHERE id = 0 RETURNING label")
        .await
        .unwrap();
    assert_eq!(rows(&m), ["zero"]);
    assert_copies(&cluster, &["1:one", "2:TWO", "3:THREE", "4:-"]).await;
    // a failing write changes no copy
    let e = client
        .simple_query("INSERT INTO kinds VALUES (5, 'five'), (1, 'dup')")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_copies(&cluster, &["1:one", "2:TWO", "3:THREE", "4:-"]).await;
    // inside a transaction: refused (cross-shard transactions do not exist), and the
    // transaction is aborted as a failed statement would leave it
    client.batch_execute("BEGIN").await.unwrap();
    let message = refused(&client, "INSERT INTO kinds VALUES (9, 'nine')").await;
    assert!(message.contains("reference table"), "{message}");
    client.batch_execute("ROLLBACK").await.unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute("SELECT * FROM accounts WHERE aid = 1")
        .await
        .unwrap();
    refused(&client, "DELETE FROM kinds").await;
    client.batch_execute("ROLLBACK").await.unwrap();
    // the extended protocol writes every copy too (parameters, RETURNING, errors)
    let n = client
        .execute(
            "UPDATE kinds SET label = $2 WHERE id = $1",
            &[&3i32, &"three"],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_copies(&cluster, &["1:one", "2:TWO", "3:three", "4:-"]).await;
    let r = client
        .query(
            "INSERT INTO kinds VALUES ($1, $2) RETURNING id, label",
            &[&6i32, &"six"],
        )
        .await
        .unwrap();
    assert_eq!(
        (r[0].get::<_, i32>(0), r[0].get::<_, String>(1)),
        (6, "six".to_owned())
    );
    let e = client
        .execute(
            "INSERT INTO kinds VALUES ($1, $2), (1, 'dup')",
            &[&7i32, &"seven"],
        )
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    client
        .execute("DELETE FROM kinds WHERE id = $1", &[&6i32])
        .await
        .unwrap();
    client
        .execute(
            "UPDATE kinds SET label = upper($1) WHERE id = 3",
            &[&"three"],
        )
        .await
        .unwrap();
    // inside a transaction block: refused
    client.batch_execute("BEGIN").await.unwrap();
    let e = client
        .execute("UPDATE kinds SET label = 'x' WHERE id = $1", &[&1i32])
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    client.batch_execute("ROLLBACK").await.unwrap();
    // reading sharded rows into a reference table would differ per shard
    refused(
        &client,
        "INSERT INTO kinds SELECT aid, 'x' FROM accounts WHERE aid = 7",
    )
    .await;
    assert_copies(&cluster, &["1:one", "2:TWO", "3:THREE", "4:-"]).await;
    // the session still works
    let m = client
        .simple_query("SELECT count(*) FROM kinds")
        .await
        .unwrap();
    assert_eq!(rows(&m), ["4"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_are_spread_over_the_copies() {
    let (cluster, proxy) = setup().await;
    // mark each copy so the answer tells which shard gave it
    for i in 0..cluster.len() {
        cluster
            .shard(i)
            .client("app")
            .await
            .batch_execute(&format!("UPDATE kinds SET label = 'shard{i}' WHERE id = 0"))
            .await
            .unwrap();
    }
    let client = proxy.client().await;
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let m = client
            .simple_query("SELECT label FROM kinds WHERE id = 0")
            .await
            .unwrap();
        seen.extend(rows(&m));
    }
    assert_eq!(
        seen,
        ["shard0", "shard1", "shard2"].map(String::from).into(),
        "simple protocol"
    );
    let mut seen = BTreeSet::new();
    for _ in 0..6 {
        let row = client
            .query_one("SELECT label FROM kinds WHERE id = $1", &[&0i32])
            .await
            .unwrap();
        seen.insert(row.get::<_, String>(0));
    }
    assert_eq!(seen.len(), 3, "extended protocol: {seen:?}");
    // inside a transaction: the transaction's shard
    let key = 42i64;
    client.batch_execute("BEGIN").await.unwrap();
    client
        .batch_execute(&format!(
            "UPDATE accounts SET kind = kind WHERE aid = {key}"
        ))
        .await
        .unwrap();
    let mut in_txn = BTreeSet::new();
    for _ in 0..4 {
        let m = client
            .simple_query("SELECT label FROM kinds WHERE id = 0")
            .await
            .unwrap();
        in_txn.extend(rows(&m));
    }
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(in_txn.len(), 1, "{in_txn:?}");
    let owner = in_txn.iter().next().unwrap().clone();
    let i: usize = owner.trim_start_matches("shard").parse().unwrap();
    let here = cluster
        .shard(i)
        .client("app")
        .await
        .query("SELECT 1 FROM accounts WHERE aid = $1", &[&key])
        .await
        .unwrap();
    assert_eq!(here.len(), 1, "the transaction's shard holds aid {key}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joins_with_a_sharded_table_route_like_it() {
    let (_cluster, proxy) = setup().await;
    let client = proxy.client().await;
    // with a key: one shard
    let m = client
        .simple_query(
            "SELECT a.aid, k.label FROM accounts a JOIN kinds k ON k.id = a.kind WHERE a.aid = 6",
        )
        .await
        .unwrap();
    assert_eq!(rows(&m), ["6|two"]);
    // without: every shard, merged
    let m = client
        .simple_query("SELECT count(*) FROM accounts a JOIN kinds k ON k.id = a.kind")
        .await
        .unwrap();
    assert_eq!(rows(&m), ["45"]); // kind 3 has no row in kinds
    let m = client
        .simple_query(
            "SELECT k.label, count(*) FROM accounts a LEFT JOIN kinds k ON k.id = a.kind \
             GROUP BY k.label ORDER BY k.label NULLS LAST",
        )
        .await
        .unwrap();
    assert_eq!(rows(&m), ["one|15", "two|15", "zero|15", "NULL|15"]);
    let m = client
        .simple_query(
            "SELECT a.aid FROM accounts a JOIN kinds k ON k.id = a.kind \
             WHERE k.label = 'one' AND a.aid IN (1, 2, 5, 9, 13, 60) ORDER BY a.aid",
        )
        .await
        .unwrap();
    assert_eq!(rows(&m), ["1", "5", "9", "13"]);
    let n: i64 = client
        .query_one(
            "SELECT count(*) FROM accounts a, kinds k WHERE k.id = a.kind AND k.id = $1",
            &[&2i32],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 15);
    // writes to the sharded table reading the reference table
    let m = client
        .simple_query(
            "UPDATE accounts a SET kind = k.id FROM kinds k WHERE k.label = 'two' AND a.aid = 7 \
             RETURNING a.aid, a.kind",
        )
        .await
        .unwrap();
    assert_eq!(rows(&m), ["7|2"]);
    // the unmatched rows of the reference table would come back once per shard
    let message = refused(
        &client,
        "SELECT k.id, a.aid FROM kinds k LEFT JOIN accounts a ON a.kind = k.id",
    )
    .await;
    assert!(message.contains("outer join"), "{message}");
    refused(
        &client,
        "SELECT k.id, a.aid FROM kinds k FULL JOIN accounts a ON a.kind = k.id",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_any_array_parameter_in_binary() {
    let (_cluster, proxy) = setup().await;
    let client = proxy.client().await;
    let keys: Vec<i64> = vec![1, 2, 3, 30, 59, 1000];
    let rows = client
        .query(
            "SELECT aid FROM accounts WHERE aid = ANY($1) ORDER BY aid",
            &[&keys],
        )
        .await
        .unwrap();
    let got: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    assert_eq!(got, [1, 2, 3, 30, 59]);
    let none: Vec<Option<i64>> = vec![None];
    let rows = client
        .query("SELECT aid FROM accounts WHERE aid = ANY($1)", &[&none])
        .await
        .unwrap();
    assert!(rows.is_empty());
}
