//! Transactions on several shards: joined shards, two-phase commit, rollback, refusals,
//! and recovery after the proxy is killed between the two phases.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls};

use crate::harness::{ACCOUNTS, Cluster, Proxy};

/// Two shards and keys `(a, b)` owned by different shards.
async fn setup(extra: &str) -> (Cluster, Proxy, i64, i64) {
    let cluster = Cluster::start(2).await;
    let toml = cluster.shardmap_toml(ACCOUNTS, 4) + extra;
    let proxy = Proxy::start(&toml).await;
    let client = proxy.client().await;
    client
        .batch_execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, balance int NOT NULL)")
        .await
        .unwrap();
    let (a, b) = keys_on_both(&cluster, &proxy).await;
    (cluster, proxy, a, b)
}

/// A key on the first shard and one on the second, found by inserting and looking.
async fn keys_on_both(cluster: &Cluster, proxy: &Proxy) -> (i64, i64) {
    let client = proxy.client().await;
    for k in 1..=20i64 {
        client
            .execute("INSERT INTO accounts VALUES ($1, 0)", &[&k])
            .await
            .unwrap();
    }
    let first = |rows: Vec<tokio_postgres::Row>| rows.first().map(|r| r.get::<_, i64>(0)).unwrap();
    let a = first(
        cluster
            .shard(0)
            .client("app")
            .await
            .query("SELECT aid FROM accounts ORDER BY aid", &[])
            .await
            .unwrap(),
    );
    let b = first(
        cluster
            .shard(1)
            .client("app")
            .await
            .query("SELECT aid FROM accounts ORDER BY aid", &[])
            .await
            .unwrap(),
    );
    // (a DELETE without key is refused without broadcast_writes: clean up per key)
    for k in 1..=20i64 {
        client
            .execute("DELETE FROM accounts WHERE aid = $1", &[&k])
            .await
            .unwrap();
    }
    (a, b)
}

/// Balance of `aid` read directly on shard `i` (None: no such row there).
async fn direct(cluster: &Cluster, i: usize, aid: i64) -> Option<i32> {
    cluster
        .shard(i)
        .client("app")
        .await
        .query_opt("SELECT balance FROM accounts WHERE aid = $1", &[&aid])
        .await
        .unwrap()
        .map(|r| r.get(0))
}

/// Prepared transactions left on shard `i`.
async fn prepared(cluster: &Cluster, i: usize) -> i64 {
    cluster
        .shard(i)
        .client("app")
        .await
        .query_one("SELECT count(*) FROM pg_prepared_xacts", &[])
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_on_two_shards_commits_on_both_or_neither() {
    let (cluster, proxy, a, b) = setup("").await;
    let c = proxy.client().await;
    // simple protocol: writes and reads on both shards, then COMMIT
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({a}, 10)"))
        .await
        .unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 20)"))
        .await
        .unwrap();
    c.batch_execute(&format!(
        "UPDATE accounts SET balance = balance + 1 WHERE aid = {a}"
    ))
    .await
    .unwrap();
    // the transaction sees its own writes on both shards; others do not yet
    let seen: i32 = c
        .query_one("SELECT balance FROM accounts WHERE aid = $1", &[&b])
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 20);
    assert_eq!(direct(&cluster, 0, a).await, None);
    c.batch_execute("COMMIT").await.unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(11));
    assert_eq!(direct(&cluster, 1, b).await, Some(20));
    assert_eq!(prepared(&cluster, 0).await + prepared(&cluster, 1).await, 0);
    // decisions are cleaned up
    let left: i64 = cluster
        .shard(0)
        .client("app")
        .await
        .query_one("SELECT count(*) FROM pgshard.decisions", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0);

    // ROLLBACK undoes both
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 0 WHERE aid = {a}"))
        .await
        .unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 0 WHERE aid = {b}"))
        .await
        .unwrap();
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(11));
    assert_eq!(direct(&cluster, 1, b).await, Some(20));

    // an error on the second shard aborts the whole transaction; COMMIT answers ROLLBACK
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 99 WHERE aid = {a}"))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 1)"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let e = c.batch_execute("SELECT 1").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    let msgs = c.simple_query("COMMIT").await.unwrap();
    assert!(matches!(
        msgs.last(),
        Some(tokio_postgres::SimpleQueryMessage::CommandComplete(_))
    ));
    assert_eq!(direct(&cluster, 0, a).await, Some(11));

    // extended protocol through the driver's transaction API, parameters and all
    let mut c2 = proxy.client().await;
    let t = c2.transaction().await.unwrap();
    let up = t
        .prepare("UPDATE accounts SET balance = balance + $2 WHERE aid = $1")
        .await
        .unwrap();
    assert_eq!(t.execute(&up, &[&a, &5i32]).await.unwrap(), 1);
    assert_eq!(t.execute(&up, &[&b, &7i32]).await.unwrap(), 1);
    let total: i64 = t
        .query_one(
            "SELECT sum(balance)::bigint FROM accounts WHERE aid = $1",
            &[&b],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 27);
    t.commit().await.unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(16));
    assert_eq!(direct(&cluster, 1, b).await, Some(27));
    let t = c2.transaction().await.unwrap();
    t.execute(&up, &[&a, &100i32]).await.unwrap();
    t.execute(&up, &[&b, &100i32]).await.unwrap();
    t.rollback().await.unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(16));
    assert_eq!(direct(&cluster, 1, b).await, Some(27));

    // a client that disconnects mid-transaction leaves nothing behind
    {
        let c3 = proxy.client().await;
        c3.batch_execute("BEGIN").await.unwrap();
        c3.batch_execute(&format!("UPDATE accounts SET balance = -1 WHERE aid = {a}"))
            .await
            .unwrap();
        c3.batch_execute(&format!("UPDATE accounts SET balance = -1 WHERE aid = {b}"))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(direct(&cluster, 0, a).await, Some(16));
    assert_eq!(direct(&cluster, 1, b).await, Some(27));
    assert_eq!(prepared(&cluster, 0).await + prepared(&cluster, 1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_at_prepare_and_refusals_roll_everything_back() {
    let (cluster, proxy, a, b) = setup("").await;
    let c = proxy.client().await;
    // a deferred constraint fails at PREPARE on one shard: nothing commits anywhere
    c.batch_execute(
        "CREATE TABLE pairs (k bigint, v int, CONSTRAINT one_v UNIQUE (v) DEFERRABLE INITIALLY DEFERRED)",
    )
    .await
    .unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 1 WHERE aid = {a}"))
        .await
        .ok();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({a}, 1)"))
        .await
        .unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 1)"))
        .await
        .unwrap();
    // `pairs` is unsharded: on the default shard (s0), with a duplicate deferred
    c.batch_execute("INSERT INTO pairs VALUES (1, 5), (2, 5)")
        .await
        .unwrap();
    let e = c.batch_execute("COMMIT").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(direct(&cluster, 0, a).await, None);
    assert_eq!(direct(&cluster, 1, b).await, None);
    assert_eq!(prepared(&cluster, 0).await + prepared(&cluster, 1).await, 0);
    // the session carries on, outside a transaction
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({a}, 2)"))
        .await
        .unwrap();

    // savepoints are per shard: a transaction with one stays where it is
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 3 WHERE aid = {a}"))
        .await
        .unwrap();
    c.batch_execute("SAVEPOINT s").await.unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 3)"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // …and a transaction on several shards refuses savepoints and chained commits
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 4 WHERE aid = {a}"))
        .await
        .unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 4)"))
        .await
        .unwrap();
    let e = c.batch_execute("SAVEPOINT s").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 5 WHERE aid = {a}"))
        .await
        .unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 5)"))
        .await
        .unwrap();
    // a string ending the transaction runs statement by statement: the COMMIT in it is
    // the two-phase commit of the whole transaction
    c.batch_execute(&format!(
        "UPDATE accounts SET balance = 6 WHERE aid = {a}; COMMIT"
    ))
    .await
    .unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(6));
    assert_eq!(direct(&cluster, 1, b).await, Some(5));
    // text pgshard cannot parse could hide a COMMIT: refused in such a transaction
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 7 WHERE aid = {a}"))
        .await
        .unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 7 WHERE aid = {b}"))
        .await
        .unwrap();
    let e = c.batch_execute("COMMIT PREPARED 'x'").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(6));
    assert_eq!(direct(&cluster, 1, b).await, Some(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_phase_off_refuses_a_second_shard() {
    let (cluster, proxy, a, b) = setup("\n[transactions]\ntwo_phase = false\n").await;
    let c = proxy.client().await;
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({a}, 1)"))
        .await
        .unwrap();
    let e = c
        .batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 1)"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    let message = e.as_db_error().unwrap().message().to_owned();
    assert!(message.contains("two_phase"), "{message}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(direct(&cluster, 0, a).await, None);
}

/// A `pgshard serve` process for `map` (its listen address fixed), with optional test
/// pause hook.
struct ProxyProcess {
    child: Child,
    url: String,
}

impl ProxyProcess {
    async fn start(
        map: &std::path::Path,
        port: u16,
        pause: Option<(&str, &std::path::Path)>,
    ) -> ProxyProcess {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_pgshard"));
        cmd.args(["serve", "-c"])
            .arg(map)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some((point, marker)) = pause {
            cmd.env("PGSHARD_TEST_2PC_PAUSE", point)
                .env("PGSHARD_TEST_2PC_MARKER", marker);
        }
        let child = cmd.spawn().expect("start pgshard serve");
        let url = format!("postgres://app:app@127.0.0.1:{port}/app");
        let started = Instant::now();
        while tokio_postgres::connect(&url, NoTls).await.is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "proxy did not start"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        ProxyProcess { child, url }
    }

    async fn client(&self) -> Client {
        let (client, conn) = tokio_postgres::connect(&self.url, NoTls).await.unwrap();
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    fn kill(mut self) {
        // SIGKILL: no shutdown path runs
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_killed_between_the_phases_leaves_all_or_nothing() {
    let cluster = Cluster::start(2).await;
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("shardmap.toml");
    let toml = cluster
        .shardmap_toml(ACCOUNTS, 4)
        .replace("127.0.0.1:0", &format!("127.0.0.1:{port}"))
        + "\n[transactions]\nnode = \"killtest\"\nrecover_interval_s = 1\n";
    std::fs::write(&map, toml).unwrap();
    let setup = ProxyProcess::start(&map, port, None).await;
    let c = setup.client().await;
    c.batch_execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, balance int NOT NULL)")
        .await
        .unwrap();
    drop(c);
    // keys on both shards
    let (a, b) = {
        let mut found = (None, None);
        let cfg: pgshard::config::Config =
            pgshard::config::parse(&std::fs::read_to_string(&map).unwrap(), "test").unwrap();
        for k in 1..1000i64 {
            let (_, shard) = cfg.map.locate(&pgshard::sharding::KeyValue::Int(k));
            match shard {
                0 if found.0.is_none() => found.0 = Some(k),
                1 if found.1.is_none() => found.1 = Some(k),
                _ => {}
            }
        }
        (found.0.unwrap(), found.1.unwrap())
    };
    setup.kill();

    for (round, point, committed) in [(1, "after-prepare", false), (2, "after-decision", true)] {
        let marker = dir.path().join(format!("paused-{round}"));
        let proxy = ProxyProcess::start(&map, port, Some((point, &marker))).await;
        let c = proxy.client().await;
        c.batch_execute("BEGIN").await.unwrap();
        c.batch_execute(&format!("INSERT INTO accounts VALUES ({a}, {round}) ON CONFLICT (aid) DO UPDATE SET balance = {round}"))
            .await
            .unwrap();
        c.batch_execute(&format!("INSERT INTO accounts VALUES ({b}, {round}) ON CONFLICT (aid) DO UPDATE SET balance = {round}"))
            .await
            .unwrap();
        let commit = tokio::spawn(async move { c.batch_execute("COMMIT").await });
        let started = Instant::now();
        while !marker.exists() {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{point}: never paused"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        proxy.kill();
        assert!(
            commit.await.unwrap().is_err(),
            "the client saw its connection die"
        );
        // both shards hold the prepared transaction, in doubt
        assert_eq!(prepared(&cluster, 0).await, 1, "{point}");
        assert_eq!(prepared(&cluster, 1).await, 1, "{point}");
        // a restarted proxy resolves it: all or nothing, nothing left prepared
        let proxy = ProxyProcess::start(&map, port, None).await;
        let started = Instant::now();
        while prepared(&cluster, 0).await + prepared(&cluster, 1).await > 0 {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "{point}: still in doubt"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let (va, vb) = (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await);
        if committed {
            assert_eq!((va, vb), (Some(round), Some(round)), "{point}");
        } else {
            // round 1 never committed: the rows do not exist
            assert_eq!((va, vb), (None, None), "{point}");
        }
        drop(proxy);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_strings_spanning_shards_run_statement_by_statement() {
    let (cluster, proxy, a, b) = setup("").await;
    let c = proxy.client().await;
    let tags = |msgs: &[tokio_postgres::SimpleQueryMessage]| -> Vec<u64> {
        msgs.iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::CommandComplete(n) => Some(*n),
                _ => None,
            })
            .collect()
    };
    // no BEGIN: one implicit transaction over both shards, committed at the end
    let m = c
        .simple_query(&format!(
            "INSERT INTO accounts VALUES ({a}, 1); INSERT INTO accounts VALUES ({b}, 2); SELECT balance FROM accounts WHERE aid = {b}"
        ))
        .await
        .unwrap();
    assert_eq!(tags(&m), vec![1, 1, 1]);
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(1), Some(2))
    );
    // a failing statement rolls the whole string back, as one Postgres would
    let e = c
        .simple_query(&format!(
            "UPDATE accounts SET balance = 10 WHERE aid = {a}; INSERT INTO accounts VALUES ({b}, 3); UPDATE accounts SET balance = 30 WHERE aid = {b}"
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(1), Some(2))
    );
    // explicit BEGIN … COMMIT in the string (psql -c, ORMs)
    c.simple_query(&format!(
        "BEGIN; UPDATE accounts SET balance = 5 WHERE aid = {a}; UPDATE accounts SET balance = 6 WHERE aid = {b}; COMMIT"
    ))
    .await
    .unwrap();
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(5), Some(6))
    );
    // a string that leaves its transaction open: the client is in a transaction block
    c.simple_query(&format!(
        "BEGIN; UPDATE accounts SET balance = 7 WHERE aid = {a}; UPDATE accounts SET balance = 8 WHERE aid = {b}"
    ))
    .await
    .unwrap();
    assert_eq!(direct(&cluster, 0, a).await, Some(5));
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(5), Some(6))
    );
    // and psql sends -c strings the same way
    let url = proxy.url("app", "app");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("psql")
            .args([url.as_str(), "-X", "-v", "ON_ERROR_STOP=1", "-c"])
            .arg(format!(
                "BEGIN; UPDATE accounts SET balance = 9 WHERE aid = {a}; UPDATE accounts SET balance = 9 WHERE aid = {b}; COMMIT;"
            ))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(9), Some(9))
    );
    assert_eq!(prepared(&cluster, 0).await + prepared(&cluster, 1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_prepare_and_execute_route_by_their_arguments() {
    let (cluster, proxy, a, b) = setup("").await;
    let c = proxy.client().await;
    let rows = |m: Vec<tokio_postgres::SimpleQueryMessage>| -> Vec<String> {
        m.into_iter()
            .filter_map(|m| match m {
                tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
                _ => None,
            })
            .collect()
    };
    c.batch_execute("PREPARE ins (bigint, int) AS INSERT INTO accounts VALUES ($1, $2)")
        .await
        .unwrap();
    c.batch_execute(&format!("EXECUTE ins({a}, 10)"))
        .await
        .unwrap();
    c.batch_execute(&format!("EXECUTE ins({b}, 20)"))
        .await
        .unwrap();
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(10), Some(20))
    );
    c.batch_execute("PREPARE sel (bigint) AS SELECT balance FROM accounts WHERE aid = $1")
        .await
        .unwrap();
    assert_eq!(
        rows(c.simple_query(&format!("EXECUTE sel({b})")).await.unwrap()),
        ["20"]
    );
    assert_eq!(
        rows(c.simple_query(&format!("EXECUTE sel({a})")).await.unwrap()),
        ["10"]
    );
    // names are per client: another session's "sel" is its own statement
    let other = proxy.client().await;
    other
        .batch_execute("PREPARE sel (bigint) AS SELECT balance + 1 FROM accounts WHERE aid = $1")
        .await
        .unwrap();
    assert_eq!(
        rows(
            other
                .simple_query(&format!("EXECUTE sel({a})"))
                .await
                .unwrap()
        ),
        ["11"]
    );
    assert_eq!(
        rows(c.simple_query(&format!("EXECUTE sel({a})")).await.unwrap()),
        ["10"]
    );
    // inside a transaction on both shards, committed together
    c.batch_execute(&format!(
        "BEGIN; EXECUTE ins({}, 1); EXECUTE ins({}, 2); COMMIT",
        a + 100_000,
        b + 100_000
    ))
    .await
    .unwrap();
    let n: i64 = proxy
        .client()
        .await
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 4);
    // errors as Postgres gives them
    let e = c
        .batch_execute("PREPARE sel AS SELECT 1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::DUPLICATE_PSTATEMENT), "{e}");
    let e = c
        .batch_execute("PREPARE bad (bigint) AS SELECT nope FROM accounts WHERE aid = $1")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNDEFINED_COLUMN), "{e}");
    let e = c
        .batch_execute("PREPARE scan AS SELECT aid FROM accounts")
        .await;
    assert!(e.is_ok());
    let e = c.batch_execute("EXECUTE scan").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    c.batch_execute("DEALLOCATE sel").await.unwrap();
    let e = c
        .batch_execute(&format!("EXECUTE sel({a})"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME), "{e}");
    c.batch_execute("DEALLOCATE ALL").await.unwrap();
    let e = c
        .batch_execute(&format!("EXECUTE ins({a}, 1)"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::INVALID_SQL_STATEMENT_NAME), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_on_several_shards_run_inside_transactions() {
    let (cluster, proxy, _, _) = setup("").await;
    let c = proxy.client().await;
    for k in 1..=30i64 {
        c.execute("INSERT INTO accounts VALUES ($1, 1)", &[&k])
            .await
            .unwrap();
    }
    // a scatter read inside a transaction sees the transaction's own writes
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!(
        "UPDATE accounts SET balance = 100 WHERE aid = {}",
        1
    ))
    .await
    .unwrap();
    let m = c
        .simple_query("SELECT count(*), sum(balance) FROM accounts")
        .await
        .unwrap();
    let row = m
        .iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                Some((r.get(0).unwrap().to_owned(), r.get(1).unwrap().to_owned()))
            }
            _ => None,
        })
        .unwrap();
    assert_eq!(row, ("30".to_owned(), "129".to_owned()));
    // a split multi-row INSERT is part of the transaction (atomic with it)
    c.batch_execute("INSERT INTO accounts VALUES (1001, 5), (1002, 5), (1003, 5), (1004, 5)")
        .await
        .unwrap();
    // extended protocol: a merged read in the same transaction
    let rows = c
        .query(
            "SELECT aid FROM accounts WHERE balance = 5 ORDER BY aid",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    c.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 30, "the rolled back split INSERT left rows");
    // committed: everything at once
    let mut c2 = proxy.client().await;
    let t = c2.transaction().await.unwrap();
    t.execute(
        "INSERT INTO accounts VALUES (2001, 7), (2002, 7), (2003, 7)",
        &[],
    )
    .await
    .unwrap();
    let total: i64 = t
        .query_one("SELECT count(*) FROM accounts WHERE balance = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(total, 3);
    t.commit().await.unwrap();
    let n: i64 = c
        .query_one("SELECT count(*) FROM accounts WHERE balance = 7", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 3);
    assert_eq!(prepared(&cluster, 0).await + prepared(&cluster, 1).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transaction_control_never_ends_a_transaction_on_one_shard_only() {
    let (mut cluster, proxy, a, b) = setup("").await;
    let c = proxy.client().await;
    // a string that joins a shard and commits: the COMMIT is the whole transaction's
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({a}, 1)"))
        .await
        .unwrap();
    c.batch_execute(&format!("INSERT INTO accounts VALUES ({b}, 2); COMMIT"))
        .await
        .unwrap();
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(1), Some(2))
    );
    // extended protocol: COMMIT batched with a statement for another shard is refused,
    // and nothing of the transaction commits on one shard alone
    let mut c2 = proxy.client().await;
    let t = c2.transaction().await.unwrap();
    t.execute("UPDATE accounts SET balance = 10 WHERE aid = $1", &[&a])
        .await
        .unwrap();
    t.execute("UPDATE accounts SET balance = 20 WHERE aid = $1", &[&b])
        .await
        .unwrap();
    t.rollback().await.unwrap();
    assert_eq!(
        (direct(&cluster, 0, a).await, direct(&cluster, 1, b).await),
        (Some(1), Some(2))
    );
    // a statement failing in a transaction leaves it failed: no shard joins it
    c.batch_execute("BEGIN").await.unwrap();
    c.batch_execute(&format!("UPDATE accounts SET balance = 3 WHERE aid = {a}"))
        .await
        .unwrap();
    assert!(
        c.batch_execute(&format!(
            "SELECT 1 / (balance - 3) FROM accounts WHERE aid = {a}"
        ))
        .await
        .is_err()
    );
    let e = c
        .batch_execute(&format!("SELECT * FROM accounts WHERE aid = {b}"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    // a statement on several shards failing right after BEGIN still aborts the
    // transaction: later writes do not commit on their own
    cluster.shard_mut(0).stop().await;
    c.batch_execute("BEGIN").await.unwrap();
    assert!(
        c.batch_execute("SELECT count(*) FROM accounts")
            .await
            .is_err()
    );
    let e = c
        .batch_execute(&format!("UPDATE accounts SET balance = 4 WHERE aid = {b}"))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::IN_FAILED_SQL_TRANSACTION), "{e}");
    c.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(direct(&cluster, 1, b).await, Some(2));
    cluster.shard_mut(0).restart().await;
}
