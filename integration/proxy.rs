//! The proxy end to end over real shards: placement, point statements in both query
//! protocols, transactions, DDL broadcast, authentication, shard failure, pooling limits.

use std::time::{Duration, Instant};

use pgshard::config::ShardMap;
use pgshard::sharding::KeyValue;
use tokio_postgres::error::SqlState;

use crate::harness::{ACCOUNTS, Cluster, Proxy, wait_until_served};

const CREATE_ACCOUNTS: &str =
    "CREATE TABLE accounts (aid bigint PRIMARY KEY, name text, balance numeric NOT NULL DEFAULT 0)";

/// A 2-shard cluster, its proxy, and the map the proxy routes by.
async fn setup(pool_size: usize) -> (Cluster, Proxy, ShardMap) {
    let cluster = Cluster::start(2).await;
    let toml = cluster.shardmap_toml(ACCOUNTS, pool_size);
    let map = pgshard::config::parse(&toml, "test").unwrap().map;
    let proxy = Proxy::start(&toml).await;
    (cluster, proxy, map)
}

fn shard_of(map: &ShardMap, aid: i64) -> usize {
    map.locate(&KeyValue::Int(aid)).1
}

/// A single bigint from a query run directly on shard `i`.
async fn scalar(cluster: &Cluster, i: usize, sql: &str) -> i64 {
    cluster
        .shard(i)
        .client("app")
        .await
        .query_one(sql, &[])
        .await
        .unwrap()
        .get(0)
}

fn code(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_land_on_the_shard_that_owns_their_slot() {
    let (cluster, proxy, map) = setup(4).await;
    let client = proxy.client().await;
    client.batch_execute(CREATE_ACCOUNTS).await.unwrap();
    // DDL reached every shard.
    for i in 0..2 {
        let n: i64 = scalar(
            &cluster,
            i,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'accounts'",
        )
        .await;
        assert_eq!(n, 1, "table missing on shard {i}");
    }
    let keys: Vec<i64> = (-50..150).chain([i64::MIN, i64::MAX]).collect();
    for aid in &keys {
        client
            .batch_execute(&format!(
                "INSERT INTO accounts (aid, name) VALUES ({aid}, 'n{aid}')"
            ))
            .await
            .unwrap();
    }
    let mut total = 0;
    for i in 0..2 {
        let direct = cluster.shard(i).client("app").await;
        let rows = direct.query("SELECT aid FROM accounts", &[]).await.unwrap();
        assert!(
            !rows.is_empty(),
            "shard {i} got no rows: routing ignores the key"
        );
        for row in &rows {
            let aid: i64 = row.get(0);
            assert_eq!(shard_of(&map, aid), i, "row {aid} is on the wrong shard");
        }
        // And the slot agrees with the one Postgres computes for hash partitioning.
        let misplaced: i64 = direct
            .query_one(
                "SELECT count(*) FROM accounts WHERE NOT \
                 ((hashint8extended(aid, 8816678312871386365) & 1023) + 227) & 1023 \
                 BETWEEN $1 AND $2",
                &[&(i as i64 * 512), &(i as i64 * 512 + 511)],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(misplaced, 0);
        total += rows.len();
    }
    assert_eq!(total, keys.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn point_statements_in_simple_and_extended_protocol() {
    let (cluster, proxy, map) = setup(4).await;
    let client = proxy.client().await;
    client.batch_execute(CREATE_ACCOUNTS).await.unwrap();

    // extended protocol, binary parameters (tokio-postgres)
    for aid in 1..=40i64 {
        let n = client
            .execute(
                "INSERT INTO accounts (aid, name, balance) VALUES ($1, $2, 10)",
                &[&aid, &format!("a{aid}")],
            )
            .await
            .unwrap();
        assert_eq!(n, 1);
    }
    let row = client
        .query_one("SELECT name FROM accounts WHERE aid = $1", &[&7i64])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "a7");
    // a parameter of a narrower type than the key still routes by value
    let row = client
        .query_one("SELECT name FROM accounts WHERE aid = $1::int4", &[&8i32])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "a8");
    let n = client
        .execute(
            "UPDATE accounts SET balance = balance + $1::int WHERE aid = $2",
            &[&5i32, &9i64],
        )
        .await
        .unwrap();
    assert_eq!(n, 1);
    let n = client
        .execute("DELETE FROM accounts WHERE aid = $1", &[&10i64])
        .await
        .unwrap();
    assert_eq!(n, 1);

    // simple protocol with literals, casts and quoting
    let rows = client
        .simple_query("SELECT balance FROM accounts WHERE aid = '9'::bigint")
        .await
        .unwrap();
    let balance = rows.iter().find_map(|m| match m {
        tokio_postgres::SimpleQueryMessage::Row(r) => r.get(0).map(str::to_owned),
        _ => None,
    });
    assert_eq!(balance.as_deref(), Some("15"));
    let rows = client
        .query("SELECT aid FROM accounts WHERE aid = 10", &[])
        .await
        .unwrap();
    assert!(rows.is_empty(), "deleted row still visible");

    // the same prepared statement is reused across shards and connections
    let stmt = client
        .prepare("SELECT name FROM accounts WHERE aid = $1")
        .await
        .unwrap();
    for aid in 1..=40i64 {
        let rows = client.query(&stmt, &[&aid]).await.unwrap();
        if aid == 10 {
            assert!(rows.is_empty());
        } else {
            assert_eq!(rows[0].get::<_, String>(0), format!("a{aid}"));
        }
    }

    // every row is where its key says, checked directly on the shards
    for i in 0..2 {
        let direct = cluster.shard(i).client("app").await;
        for row in direct.query("SELECT aid FROM accounts", &[]).await.unwrap() {
            assert_eq!(shard_of(&map, row.get(0)), i);
        }
    }

    // statements without a usable key that cannot be merged across shards are refused
    // with 0A000, naming table and key
    let err = client
        .query(
            "SELECT aid, rank() OVER (ORDER BY aid) FROM accounts WHERE balance > 0",
            &[],
        )
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(msg.contains("accounts") && msg.contains("aid"), "{msg}");
    let err = client
        .simple_query("UPDATE accounts SET balance = 0")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    // the session carries on
    let n: i64 = client
        .query_one("SELECT count(*) FROM accounts WHERE aid = 1", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // statements on no sharded table go to one shard
    let v: i32 = client.query_one("SELECT 41 + 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 42);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transactions_commit_roll_back_and_refuse_a_second_shard() {
    let (cluster, proxy, map) = setup(4).await;
    let client = proxy.client().await;
    client.batch_execute(CREATE_ACCOUNTS).await.unwrap();
    // two keys on shard 0 and one on shard 1
    let on0: Vec<i64> = (1..).filter(|k| shard_of(&map, *k) == 0).take(2).collect();
    let on1: i64 = (1..).find(|k| shard_of(&map, *k) == 1).unwrap();

    client
        .batch_execute(&format!(
            "BEGIN; INSERT INTO accounts (aid) VALUES ({}); INSERT INTO accounts (aid) VALUES ({}); ROLLBACK;",
            on0[0], on0[1]
        ))
        .await
        .unwrap();
    let direct0 = cluster.shard(0).client("app").await;
    let n: i64 = direct0
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "rolled back rows are visible");

    // separate statements, deferred BEGIN, COMMIT
    client
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on0[0]])
        .await
        .unwrap();
    let iso: String = client
        .query_one("SHOW transaction_isolation", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(iso, "repeatable read", "BEGIN options were not replayed");
    client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on0[1]])
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    let n: i64 = direct0
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);

    // a statement for another shard inside a transaction that set a savepoint (which
    // keeps it on its shard): 0A000, then 25P02 until ROLLBACK. (Without a savepoint the
    // transaction joins the other shard: integration/twophase.rs.)
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("UPDATE accounts SET balance = 1 WHERE aid = $1", &[&on0[0]])
        .await
        .unwrap();
    client.batch_execute("SAVEPOINT s").await.unwrap();
    let err = client
        .execute("UPDATE accounts SET balance = 1 WHERE aid = $1", &[&on1])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{err}");
    let err = client
        .execute("UPDATE accounts SET balance = 2 WHERE aid = $1", &[&on0[0]])
        .await
        .unwrap_err();
    assert_eq!(
        code(&err),
        Some(&SqlState::IN_FAILED_SQL_TRANSACTION),
        "{err}"
    );
    client.batch_execute("ROLLBACK").await.unwrap();
    let balance: String = direct0
        .query_one(
            "SELECT balance::text FROM accounts WHERE aid = $1",
            &[&on0[0]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        balance, "0",
        "update of an aborted transaction was committed"
    );

    // a backend error inside a transaction behaves as in Postgres
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on1])
        .await
        .unwrap();
    let err = client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on1])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::UNIQUE_VIOLATION));
    let err = client.simple_query("SELECT 1").await.unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::IN_FAILED_SQL_TRANSACTION));
    client.batch_execute("ROLLBACK").await.unwrap();
    let n: i64 = client
        .query_one("SELECT count(*) FROM accounts WHERE aid = $1", &[&on1])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // tokio-postgres' own transaction API
    let mut client = client;
    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on1])
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let direct1 = cluster.shard(1).client("app").await;
    let n: i64 = direct1
        .query_one("SELECT count(*) FROM accounts WHERE aid = $1", &[&on1])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ddl_runs_everywhere_or_nowhere() {
    let (cluster, proxy, _map) = setup(4).await;
    let client = proxy.client().await;
    // make the DDL fail on shard 1 only
    cluster
        .shard(1)
        .client("app")
        .await
        .batch_execute("CREATE TABLE clash (id int)")
        .await
        .unwrap();
    let err = client
        .batch_execute("CREATE TABLE fresh (id int); CREATE TABLE clash (id int)")
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::DUPLICATE_TABLE), "{err}");
    for i in 0..2 {
        let n: i64 = scalar(
            &cluster,
            i,
            "SELECT count(*) FROM pg_tables WHERE tablename = 'fresh'",
        )
        .await;
        assert_eq!(n, 0, "DDL half-applied on shard {i}");
    }
    client
        .batch_execute("CREATE TABLE fresh (id int); CREATE INDEX fresh_id ON fresh (id)")
        .await
        .unwrap();
    for i in 0..2 {
        let n: i64 = scalar(
            &cluster,
            i,
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'fresh_id'",
        )
        .await;
        assert_eq!(n, 1, "index missing on shard {i}");
    }
    // DDL inside a transaction block cannot span shards
    client.batch_execute("BEGIN").await.unwrap();
    let err = client.batch_execute("DROP TABLE fresh").await.unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    client.batch_execute("ROLLBACK").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authentication_failures() {
    let (_cluster, proxy, _map) = setup(2).await;
    let err = proxy.connect("app", "wrong").await.unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::INVALID_PASSWORD), "{err}");
    let err = proxy.connect("nobody", "app").await.unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::INVALID_PASSWORD), "{err}");
    let url = format!(
        "{}/otherdb",
        proxy.url("app", "app").rsplit_once('/').unwrap().0
    );
    let err = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .err()
        .expect("unknown database must be refused");
    assert_eq!(code(&err), Some(&SqlState::INVALID_CATALOG_NAME), "{err}");
    // the right password still works
    let client = proxy.client().await;
    let v: i32 = client.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(v, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_startup_gets_08p01_not_a_crash() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (_cluster, proxy, _map) = setup(2).await;
    for garbage in [
        &b"\0\0\0\x03"[..],
        &b"\x7f\xff\xff\xffxxxx"[..],
        &b"\0\0\0\x08\0\x09\0\0"[..],
    ] {
        let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
        s.write_all(garbage).await.unwrap();
        let mut reply = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
            .await
            .expect("proxy must close the connection")
            .unwrap();
        assert_eq!(reply.first(), Some(&b'E'), "{garbage:?} → {reply:?}");
        assert!(reply.windows(6).any(|w| w == b"C08P01"), "{reply:?}");
    }
    // and the proxy still serves
    let client = proxy.client().await;
    assert_eq!(
        client
            .query_one("SELECT 2", &[])
            .await
            .unwrap()
            .get::<_, i32>(0),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_clients_share_a_pool_of_five() {
    let (cluster, proxy, _map) = setup(5).await;
    proxy
        .client()
        .await
        .batch_execute(CREATE_ACCOUNTS)
        .await
        .unwrap();
    let proxy = std::sync::Arc::new(proxy);
    let stop = tokio_util::sync::CancellationToken::new();
    // watch the shards' connection counts while the load runs
    let mut watchers = Vec::new();
    for i in 0..2 {
        let direct = cluster.shard(i).client("app").await;
        let stop = stop.clone();
        watchers.push(tokio::spawn(async move {
            let mut max = 0i64;
            while !stop.is_cancelled() {
                let n: i64 = direct
                    .query_one(
                        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshard'",
                        &[],
                    )
                    .await
                    .unwrap()
                    .get(0);
                max = max.max(n);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            max
        }));
    }
    let mut clients = Vec::new();
    for c in 0..50i64 {
        let proxy = proxy.clone();
        clients.push(tokio::spawn(async move {
            let client = proxy.client().await;
            for j in 0..20i64 {
                let aid = c * 1000 + j;
                client
                    .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&aid])
                    .await
                    .unwrap();
                let n: i64 = client
                    .query_one("SELECT count(*) FROM accounts WHERE aid = $1", &[&aid])
                    .await
                    .unwrap()
                    .get(0);
                assert_eq!(n, 1);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    stop.cancel();
    for (i, w) in watchers.into_iter().enumerate() {
        let max = w.await.unwrap();
        assert!(
            max <= 5,
            "shard {i} saw {max} proxy connections with pool_size 5"
        );
        assert!(
            max >= 1,
            "watcher on shard {i} saw no proxy connection at all"
        );
    }
    let mut total = 0i64;
    for i in 0..2 {
        let n: i64 = scalar(&cluster, i, "SELECT count(*) FROM accounts").await;
        total += n;
    }
    assert_eq!(total, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_vanishing_mid_transaction_leaves_nothing_behind() {
    let (cluster, proxy, map) = setup(2).await;
    proxy
        .client()
        .await
        .batch_execute(CREATE_ACCOUNTS)
        .await
        .unwrap();
    let aid: i64 = (1..).find(|k| shard_of(&map, *k) == 1).unwrap();
    {
        let client = proxy.client().await;
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&aid])
            .await
            .unwrap();
        // dropped here without COMMIT
    }
    let direct = cluster.shard(1).client("app").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let open: i64 = direct
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgshard' \
                 AND state LIKE 'idle in transaction%'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if open == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "backend left idle in transaction"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let n: i64 = direct
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "uncommitted row survived the client");
    // the pool still works for the next client
    let client = proxy.client().await;
    client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&aid])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_down_fails_fast_and_the_others_carry_on() {
    let (mut cluster, proxy, map) = setup(2).await;
    let client = proxy.client().await;
    client.batch_execute(CREATE_ACCOUNTS).await.unwrap();
    let on0: i64 = (1..).find(|k| shard_of(&map, *k) == 0).unwrap();
    let on1: i64 = (1..).find(|k| shard_of(&map, *k) == 1).unwrap();
    for aid in [on0, on1] {
        client
            .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&aid])
            .await
            .unwrap();
    }
    cluster.shard_mut(1).stop().await;
    let started = Instant::now();
    let err = client
        .query("SELECT aid FROM accounts WHERE aid = $1", &[&on1])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::CONNECTION_FAILURE), "{err}");
    let msg = err.as_db_error().unwrap().message().to_owned();
    assert!(msg.contains("\"s1\""), "error must name the shard: {msg}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "took {:?}",
        started.elapsed()
    );
    // shard 0 keeps working, on the same client connection
    let rows = client
        .query("SELECT aid FROM accounts WHERE aid = $1", &[&on0])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
    // the pool reconnects once the shard is back
    cluster.shard_mut(1).restart().await;
    wait_until_served(&client, on1, "shard 1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_for_a_busy_pool_times_out_with_a_clear_error() {
    let cluster = Cluster::start(1).await;
    let toml = cluster
        .shardmap_toml(ACCOUNTS, 1)
        .replace("pool_size = 1", "pool_size = 1\npool_timeout_ms = 300");
    let proxy = Proxy::start(&toml).await;
    let holder = proxy.client().await;
    holder.batch_execute("BEGIN; SELECT 1").await.unwrap(); // holds the only connection
    let other = proxy.client().await;
    let started = Instant::now();
    let err = other.simple_query("SELECT 2").await.unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::TOO_MANY_CONNECTIONS), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
    holder.batch_execute("COMMIT").await.unwrap();
    let rows = other.simple_query("SELECT 3").await.unwrap();
    assert!(rows.len() >= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_settings_follow_their_client_and_never_leak() {
    // one shard, one backend connection: both clients must share it
    let cluster = Cluster::start(1).await;
    let proxy = Proxy::start(&cluster.shardmap_toml(ACCOUNTS, 1)).await;
    let a = proxy.client().await;
    let b = proxy.client().await;
    a.batch_execute("SET statement_timeout = '4711ms'")
        .await
        .unwrap();
    a.batch_execute("SET application_name = 'client-a'")
        .await
        .unwrap();
    for _ in 0..3 {
        let mine: String = a
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(mine, "4711ms");
        let theirs: String = b
            .query_one("SHOW statement_timeout", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(theirs, "0", "a SET leaked to another client");
        let name: String = b
            .query_one("SHOW application_name", &[])
            .await
            .unwrap()
            .get(0);
        assert_ne!(name, "client-a");
    }
    a.batch_execute("RESET ALL").await.unwrap();
    let mine: String = a
        .query_one("SHOW statement_timeout", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(mine, "0");
    // DISCARD ALL drops server-side statements: prepared statements keep working
    let stmt = b.prepare("SELECT $1::int + 1").await.unwrap();
    assert_eq!(
        b.query_one(&stmt, &[&1i32]).await.unwrap().get::<_, i32>(0),
        2
    );
    a.batch_execute("DISCARD ALL").await.unwrap();
    assert_eq!(
        b.query_one(&stmt, &[&2i32]).await.unwrap().get::<_, i32>(0),
        3
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_to_savepoint_recovers_from_a_refused_statement() {
    let (cluster, proxy, map) = setup(2).await;
    let client = proxy.client().await;
    client.batch_execute(CREATE_ACCOUNTS).await.unwrap();
    let on0: Vec<i64> = (1..).filter(|k| shard_of(&map, *k) == 0).take(2).collect();
    let on1: i64 = (1..).find(|k| shard_of(&map, *k) == 1).unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on0[0]])
        .await
        .unwrap();
    client.batch_execute("SAVEPOINT sp").await.unwrap();
    let err = client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on1])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::FEATURE_NOT_SUPPORTED));
    client
        .batch_execute("ROLLBACK TO SAVEPOINT sp")
        .await
        .unwrap();
    client
        .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&on0[1]])
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        scalar(&cluster, 0, "SELECT count(*) FROM accounts").await,
        2
    );
    assert_eq!(
        scalar(&cluster, 1, "SELECT count(*) FROM accounts").await,
        0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_request_stops_only_the_clients_own_query() {
    let (_cluster, proxy, _map) = setup(2).await;
    let victim = proxy.client().await;
    let bystander = proxy.client().await;
    let token = victim.cancel_token();
    let bystander_sleep = tokio::spawn(async move {
        bystander
            .query_one("SELECT pg_sleep(1.5)::text", &[])
            .await
            .map(|_| ())
    });
    let started = Instant::now();
    let canceller = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        token.cancel_query(tokio_postgres::NoTls).await
    });
    let err = victim
        .query_one("SELECT pg_sleep(30)::text", &[])
        .await
        .unwrap_err();
    assert_eq!(code(&err), Some(&SqlState::QUERY_CANCELED), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
    canceller.await.unwrap().unwrap();
    bystander_sleep
        .await
        .unwrap()
        .expect("another client's query was cancelled");
    // the cancelled client carries on
    let v: i32 = victim.query_one("SELECT 5", &[]).await.unwrap().get(0);
    assert_eq!(v, 5);
}
