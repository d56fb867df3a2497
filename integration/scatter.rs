//! Statements on several shards: plain reads without a key or with a key IN list are
//! answered from every shard that can hold matching rows, exactly as one Postgres would.

use std::collections::BTreeSet;

use tokio_postgres::SimpleQueryMessage;
use tokio_postgres::error::SqlState;

use crate::harness::{ACCOUNTS, Cluster, Proxy};

/// Three shards, 300 accounts loaded through the proxy; balance = aid % 7.
async fn setup(extra_server: &str) -> (Cluster, Proxy) {
    let cluster = Cluster::start(3).await;
    let toml = cluster
        .shardmap_toml(ACCOUNTS, 4)
        .replace("pool_size = 4", &format!("pool_size = 4\n{extra_server}"));
    let proxy = Proxy::start(&toml).await;
    let client = proxy.client().await;
    client
        .batch_execute(
            "CREATE TABLE accounts (aid bigint PRIMARY KEY, balance int NOT NULL, note text)",
        )
        .await
        .unwrap();
    let insert = client
        .prepare("INSERT INTO accounts (aid, balance, note) VALUES ($1, $2, $3)")
        .await
        .unwrap();
    for aid in 1..=300i64 {
        client
            .execute(&insert, &[&aid, &((aid % 7) as i32), &format!("n{aid}")])
            .await
            .unwrap();
    }
    (cluster, proxy)
}

/// The aids of rows matching `filter`, read from every shard directly.
async fn direct_aids(cluster: &Cluster, filter: &str) -> BTreeSet<i64> {
    let mut all = BTreeSet::new();
    for i in 0..cluster.len() {
        for row in cluster
            .shard(i)
            .client("app")
            .await
            .query(&format!("SELECT aid FROM accounts WHERE {filter}"), &[])
            .await
            .unwrap()
        {
            assert!(all.insert(row.get(0)), "a row is on two shards");
        }
    }
    all
}

fn simple_rows(msgs: &[SimpleQueryMessage]) -> (Vec<i64>, Option<u64>) {
    let mut rows = Vec::new();
    let mut tag = None;
    for m in msgs {
        match m {
            SimpleQueryMessage::Row(r) => rows.push(r.get(0).unwrap().parse().unwrap()),
            SimpleQueryMessage::CommandComplete(n) => tag = Some(*n),
            _ => {}
        }
    }
    (rows, tag)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_without_a_key_or_with_key_lists_see_every_matching_row() {
    let (cluster, proxy) = setup("").await;
    let client = proxy.client().await;
    for filter in [
        "balance = 3",
        "note LIKE 'n1%'",
        "true",
        "aid IN (1, 2, 3, 250, 299, 1000)",
    ] {
        let expected = direct_aids(&cluster, filter).await;
        assert!(!expected.is_empty());
        // simple protocol
        let (rows, tag) = simple_rows(
            &client
                .simple_query(&format!("SELECT aid FROM accounts WHERE {filter}"))
                .await
                .unwrap(),
        );
        assert_eq!(
            rows.iter().copied().collect::<BTreeSet<_>>(),
            expected,
            "{filter}"
        );
        assert_eq!(rows.len(), expected.len(), "{filter}: duplicated rows");
        assert_eq!(tag, Some(expected.len() as u64), "{filter}: command tag");
        // extended protocol
        let rows = client
            .query(&format!("SELECT aid FROM accounts WHERE {filter}"), &[])
            .await
            .unwrap();
        let got: BTreeSet<i64> = rows.iter().map(|r| r.get(0)).collect();
        assert_eq!(got, expected, "{filter} (extended)");
        assert_eq!(rows.len(), expected.len());
    }
    // key lists as parameters
    let rows = client
        .query(
            "SELECT aid, note FROM accounts WHERE aid IN ($1, $2, $3)",
            &[&7i64, &77i64, &177i64],
        )
        .await
        .unwrap();
    let mut got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    got.sort();
    assert_eq!(
        got,
        vec![(7, "n7".into()), (77, "n77".into()), (177, "n177".into())]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_cannot_be_merged_is_refused_and_errors_arrive_once() {
    let (_cluster, proxy) = setup("").await;
    let client = proxy.client().await;
    for (sql, construct) in [
        ("SELECT string_agg(note, ',') FROM accounts", "string_agg"),
        (
            "SELECT sum(balance) + 1 FROM accounts",
            "expression over an aggregate",
        ),
        ("SELECT aid FROM accounts LIMIT $1", "LIMIT"),
        (
            "SELECT count(DISTINCT balance), count(*) FROM accounts",
            "DISTINCT",
        ),
        (
            "SELECT DISTINCT ON (balance) aid FROM accounts",
            "DISTINCT ON",
        ),
        (
            "SELECT aid FROM accounts ORDER BY note COLLATE \"en_US\"",
            "COLLATE",
        ),
    ] {
        let err = client.simple_query(sql).await.unwrap_err();
        assert_eq!(
            err.code(),
            Some(&SqlState::FEATURE_NOT_SUPPORTED),
            "{sql}: {err}"
        );
        let msg = err.as_db_error().unwrap().message().to_owned();
        assert!(msg.contains(construct), "{sql}: {msg}");
    }
    // one shard's error is the statement's error, reported once
    let err = client
        .simple_query("SELECT 1 / (aid - 5) FROM accounts")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO), "{err}");
    // inside a transaction: on the transaction's connections, and a shard's error
    // aborts the transaction as one Postgres would
    client.batch_execute("BEGIN").await.unwrap();
    let msgs = client
        .simple_query("SELECT aid FROM accounts WHERE balance = 1")
        .await
        .unwrap();
    assert_eq!(simple_rows(&msgs).0.len(), 43);
    let err = client
        .simple_query("SELECT 1 / (aid - 5) FROM accounts")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO), "{err}");
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(
        err.code(),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{err}"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    // the session and the pools are fine afterwards
    let n = client
        .query("SELECT aid FROM accounts WHERE balance = 6", &[])
        .await
        .unwrap()
        .len();
    assert_eq!(n, 43);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merges_are_bounded_by_merge_memory() {
    let (_cluster, proxy) = setup("merge_memory_mb = 1").await;
    let client = proxy.client().await;
    // a merge that must hold the rows (ORDER BY) is capped…
    let err = client
        .simple_query("SELECT aid, repeat('x', 20000) FROM accounts ORDER BY aid")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::PROGRAM_LIMIT_EXCEEDED), "{err}");
    // …while a plain concatenation streams in chunks whatever its size (6 MB here)
    for _ in 0..2 {
        let msgs = client
            .simple_query("SELECT aid, repeat('x', 20000) FROM accounts")
            .await
            .unwrap();
        let (rows, tag) = simple_rows(&msgs);
        assert_eq!(rows.len(), 300);
        assert_eq!(tag, Some(300));
        let rows = client
            .query(
                "SELECT aid, repeat('y', 20000) AS pad FROM accounts WHERE balance <> 3",
                &[],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 300 - 43);
        assert!(rows.iter().all(|r| r.get::<_, String>(1).len() == 20000));
    }
    let rows = client
        .query("SELECT aid FROM accounts WHERE balance = 0", &[])
        .await
        .unwrap();
    assert_eq!(rows.len(), 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_summed_across_shards() {
    let (cluster, proxy) = setup("").await;
    let client = proxy.client().await;
    for (filter, expected) in [
        ("true", 300usize),
        (
            "balance = 3",
            direct_aids(&cluster, "balance = 3").await.len(),
        ),
        ("aid IN (1, 2, 250, 999)", 3),
        ("balance > 100", 0),
    ] {
        let sql = format!("SELECT count(*) FROM accounts WHERE {filter}");
        // extended protocol, binary result
        let n: i64 = client.query_one(&sql, &[]).await.unwrap().get(0);
        assert_eq!(n as usize, expected, "{sql}");
        // simple protocol, text result, one row, tag SELECT 1
        let (rows, tag) = simple_rows(&client.simple_query(&sql).await.unwrap());
        assert_eq!(rows, vec![expected as i64], "{sql}");
        assert_eq!(tag, Some(1));
    }
    let n: i64 = client
        .query_one(
            "SELECT count(note) AS n FROM accounts WHERE aid IN ($1, $2, $3)",
            &[&1i64, &2i64, &999i64],
        )
        .await
        .unwrap()
        .get("n");
    assert_eq!(n, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limit_without_order_by_returns_that_many_matching_rows() {
    let (cluster, proxy) = setup("").await;
    let client = proxy.client().await;
    let matching = direct_aids(&cluster, "balance = 2").await;
    for n in [0usize, 1, 7, 500] {
        let sql = format!("SELECT aid FROM accounts WHERE balance = 2 LIMIT {n}");
        let (rows, tag) = simple_rows(&client.simple_query(&sql).await.unwrap());
        let want = n.min(matching.len());
        assert_eq!(rows.len(), want, "{sql}");
        assert_eq!(tag, Some(want as u64), "{sql}");
        let distinct: BTreeSet<i64> = rows.iter().copied().collect();
        assert_eq!(distinct.len(), want, "{sql}: duplicates");
        assert!(
            distinct.is_subset(&matching),
            "{sql}: rows that do not match"
        );
        let rows = client.query(&sql, &[]).await.unwrap();
        assert_eq!(rows.len(), want, "{sql} (extended)");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_without_a_key_run_everywhere_only_when_allowed() {
    let (cluster, proxy) = setup("").await;
    let client = proxy.client().await;
    // off by default: refused, nothing changed
    let err = client
        .simple_query("UPDATE accounts SET balance = 100 WHERE balance = 3")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    assert!(direct_aids(&cluster, "balance = 100").await.is_empty());
    drop(client);
    drop(proxy);

    let toml = cluster
        .shardmap_toml(crate::harness::ACCOUNTS, 4)
        .replace("[sharding]", "[sharding]\nbroadcast_writes = true");
    let proxy = Proxy::start(&toml).await;
    let client = proxy.client().await;
    let threes = direct_aids(&cluster, "balance = 3").await;
    let n = client
        .execute("UPDATE accounts SET balance = 100 WHERE balance = 3", &[])
        .await
        .unwrap();
    assert_eq!(n as usize, threes.len(), "UPDATE count summed over shards");
    assert_eq!(direct_aids(&cluster, "balance = 100").await, threes);
    // DELETE … RETURNING through the simple protocol: every deleted row comes back once
    let (rows, tag) = simple_rows(
        &client
            .simple_query("DELETE FROM accounts WHERE aid IN (1, 2, 3, 299, 1000) RETURNING aid")
            .await
            .unwrap(),
    );
    let deleted: BTreeSet<i64> = rows.into_iter().collect();
    assert_eq!(deleted, BTreeSet::from([1, 2, 3, 299]));
    assert_eq!(tag, Some(4));
    assert!(
        direct_aids(&cluster, "aid IN (1, 2, 3, 299)")
            .await
            .is_empty()
    );
    // inside a transaction: part of it (two-phase commit), undone by its ROLLBACK
    client.batch_execute("BEGIN").await.unwrap();
    let msgs = client
        .simple_query("DELETE FROM accounts WHERE balance = 100")
        .await
        .unwrap();
    assert!(simple_rows(&msgs).1.unwrap_or(0) > 0);
    client.batch_execute("ROLLBACK").await.unwrap();
    let kept: BTreeSet<i64> = threes.difference(&deleted).copied().collect();
    assert_eq!(direct_aids(&cluster, "balance = 100").await, kept);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_row_inserts_split_per_shard_and_return_rows_in_input_order() {
    let (cluster, proxy) = setup("").await;
    let client = proxy.client().await;
    // extended protocol, parameters renumbered per shard; the same statement twice
    let insert = client
        .prepare(
            "INSERT INTO accounts (aid, balance, note) VALUES ($1, $2, $3), ($4, $2, $5), ($6, 0, $7), ($8, $2, 'lit') RETURNING aid, note",
        )
        .await
        .unwrap();
    for base in [1000i64, 2000] {
        let aids: Vec<i64> = (1..=4).map(|i| base + i).collect();
        let notes: Vec<String> = (1..=3).map(|i| format!("p{base}-{i}")).collect();
        let rows = client
            .query(
                &insert,
                &[
                    &aids[0], &7i32, &notes[0], &aids[1], &notes[1], &aids[2], &notes[2], &aids[3],
                ],
            )
            .await
            .unwrap();
        let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let want: Vec<(i64, String)> = vec![
            (aids[0], notes[0].clone()),
            (aids[1], notes[1].clone()),
            (aids[2], notes[2].clone()),
            (aids[3], "lit".into()),
        ];
        assert_eq!(got, want, "RETURNING rows in input order");
        // every row is on the shard that owns its key, exactly once
        let direct = direct_aids(&cluster, &format!("aid > {base} AND aid < {}", base + 10)).await;
        assert_eq!(direct, aids.iter().copied().collect());
    }
    // the rows really went to more than one shard
    let mut holders = 0;
    for i in 0..cluster.len() {
        let n: i64 = cluster
            .shard(i)
            .client("app")
            .await
            .query_one("SELECT count(*) FROM accounts WHERE aid > 1000", &[])
            .await
            .unwrap()
            .get(0);
        holders += usize::from(n > 0);
    }
    assert!(holders >= 2, "rows on {holders} shard(s)");
    // simple protocol: one summed tag
    let msgs = client
        .simple_query(
            "INSERT INTO accounts (aid, balance) VALUES (3001, 1), (3002, 1), (3003, 1), (3004, 1)",
        )
        .await
        .unwrap();
    assert_eq!(simple_rows(&msgs).1, Some(4));
    // a failing shard's error arrives once (duplicate key on one shard only)
    let err = client
        .simple_query("INSERT INTO accounts (aid, balance) VALUES (5001, 1), (3002, 1)")
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some(&SqlState::UNIQUE_VIOLATION), "{err}");
    // inside a transaction: part of it, undone by its ROLLBACK on every shard
    client.batch_execute("BEGIN").await.unwrap();
    client
        .simple_query(
            "INSERT INTO accounts (aid, balance) VALUES (6001, 1), (6002, 1), (6003, 1), (6004, 1)",
        )
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(direct_aids(&cluster, "aid > 6000").await.len(), 0);
}

/// Statements on the given shard still running `needle`.
async fn active_on(cluster: &Cluster, shard: usize, needle: &str) -> i64 {
    cluster
        .shard(shard)
        .client("app")
        .await
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' AND query LIKE $1 AND pid <> pg_backend_pid()",
            &[&format!("%{needle}%")],
        )
        .await
        .unwrap()
        .get(0)
}

/// Poll until no statement containing `needle` runs on any shard (or 3 s pass).
async fn settles(cluster: &Cluster, needle: &str) -> bool {
    for _ in 0..30 {
        let mut busy = 0;
        for i in 0..cluster.len() {
            busy += active_on(cluster, i, needle).await;
        }
        if busy == 0 {
            return true;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_shard_ends_the_statement_at_once_and_cancels_the_others() {
    let (cluster, proxy) = setup("").await;
    let first = *direct_aids_on(&cluster, 0).await.first().unwrap();
    let last = *direct_aids_on(&cluster, cluster.len() - 1)
        .await
        .first()
        .unwrap();
    let client = proxy.client().await;
    // the last shard fails at once, the first would sleep for 6 s: streamed (plain) and
    // collected (ORDER BY) merges both answer with the error right away
    for (n, order) in [(1, ""), (2, " ORDER BY aid")] {
        let sql = format!(
            "SELECT aid FROM accounts WHERE aid IN ({first}, {last}) AND CASE WHEN aid = {last} THEN 1 / (aid - {last}) = 0 ELSE pg_sleep(6.{n}) IS NOT NULL END{order}"
        );
        let started = std::time::Instant::now();
        let err = client.simple_query(&sql).await.unwrap_err();
        assert_eq!(err.code(), Some(&SqlState::DIVISION_BY_ZERO), "{err}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(3),
            "{sql}: waited {:?}",
            started.elapsed()
        );
        // and the sleeping shard was told to stop
        assert!(
            settles(&cluster, &format!("pg_sleep(6.{n})")).await,
            "{sql}: still running"
        );
    }
    // a client's cancel reaches every shard of a scatter
    let token = client.cancel_token();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let started = std::time::Instant::now();
    let err = client
        .simple_query(&format!(
            "SELECT pg_sleep(7.5) FROM accounts WHERE aid IN ({first}, {last})"
        ))
        .await
        .unwrap_err();
    canceller.await.unwrap().unwrap();
    assert_eq!(err.code(), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(4));
    assert!(settles(&cluster, "pg_sleep(7.5)").await);
    // the session and pools carry on
    let rows = client
        .query(
            "SELECT aid FROM accounts WHERE balance = 0 ORDER BY aid",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 42);
}

/// The aids stored on one shard, read directly.
async fn direct_aids_on(cluster: &Cluster, shard: usize) -> Vec<i64> {
    cluster
        .shard(shard)
        .client("app")
        .await
        .query("SELECT aid FROM accounts ORDER BY aid", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect()
}
