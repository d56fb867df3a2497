//! Per-shard health checks and circuit breaker: once a stopped shard has failed its
//! checks, queries that need it fail at once with 08006 naming it (single-shard, in a
//! transaction, scatter), the other shard carries on, and the shard is served again
//! after it comes back.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use pgshard::sharding::KeyValue;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::harness::{ACCOUNTS, Cluster, Proxy, wait_until_served};
use crate::ops::{http_get, parse_metrics, records};

/// Checks every 100 ms, open after 2 failures, half-open probe after 200 ms. The pool
/// and connect timeouts are long, so a checkout that waits instead of failing fast shows.
const HEALTH: &str = "
[health]
interval_ms = 100
timeout_ms = 500
failure_threshold = 2
success_threshold = 1
open_ms = 200
";

/// Longest a fail-fast error may take (a debug build on a busy machine included).
const FAST: Duration = Duration::from_millis(200);

/// A 2-shard cluster with `accounts` holding one row on each shard, its proxy with
/// [`HEALTH`], a key on each shard, and the shard map text.
async fn setup(pool_size: usize) -> (Cluster, Proxy, i64, i64, String) {
    setup_with(pool_size, HEALTH).await
}

/// [`setup`] with another `[health]` section.
async fn setup_with(pool_size: usize, health: &str) -> (Cluster, Proxy, i64, i64, String) {
    let cluster = Cluster::start(2).await;
    let toml = cluster
        .shardmap_toml(ACCOUNTS, pool_size)
        .replacen(
            &format!("pool_size = {pool_size}\n"),
            &format!(
                "pool_size = {pool_size}\npool_timeout_ms = 5000\nconnect_timeout_ms = 5000\n"
            ),
            1,
        )
        .replacen(
            "[server]\n",
            "[server]\nmetrics_listen = \"127.0.0.1:0\"\n",
            1,
        )
        + health;
    let map = pgshard::config::parse(&toml, "test").unwrap().map;
    let shard_of = |aid: i64| map.locate(&KeyValue::Int(aid)).1;
    let on0: i64 = (1..).find(|k| shard_of(*k) == 0).unwrap();
    let on1: i64 = (1..).find(|k| shard_of(*k) == 1).unwrap();
    let proxy = Proxy::start(&toml).await;
    let client = proxy.client().await;
    client
        .batch_execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, name text)")
        .await
        .unwrap();
    for aid in [on0, on1] {
        client
            .execute("INSERT INTO accounts (aid) VALUES ($1)", &[&aid])
            .await
            .unwrap();
    }
    (cluster, proxy, on0, on1, toml)
}

/// Assert `err` is the breaker's 08006 naming shard s1.
fn assert_breaker_error(err: &tokio_postgres::Error, what: &str) {
    assert_eq!(
        err.code(),
        Some(&SqlState::CONNECTION_FAILURE),
        "{what}: {err:?}"
    );
    let msg = err.as_db_error().unwrap().message();
    assert!(
        msg.contains("shard \"s1\" is unavailable") && msg.contains("circuit breaker open"),
        "{what}: {msg}"
    );
}

/// Query the key on shard 1 until the error says the breaker is open.
async fn wait_for_open_breaker(client: &Client, on1: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let result = client
            .query("SELECT aid FROM accounts WHERE aid = $1", &[&on1])
            .await;
        match result {
            Err(e)
                if e.as_db_error()
                    .is_some_and(|d| d.message().contains("circuit breaker open")) =>
            {
                return;
            }
            other => {
                assert!(
                    Instant::now() < deadline,
                    "breaker did not open within 10 s: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_breaker_fails_fast_and_closes_when_the_shard_is_back() {
    let (mut cluster, proxy, on0, on1, _) = setup(4).await;
    let client = proxy.client().await;
    let by_key = "SELECT aid FROM accounts WHERE aid = $1";
    cluster.shard_mut(1).stop().await;
    wait_for_open_breaker(&client, on1).await;

    // single-shard query for s1: fails at once, naming s1
    let started = Instant::now();
    let err = client.query(by_key, &[&on1]).await.unwrap_err();
    let took = started.elapsed();
    assert_breaker_error(&err, "query on s1");
    assert!(took < FAST, "query on s1 took {took:?}");

    // s0 carries on, on the same client connection
    let rows = client.query(by_key, &[&on0]).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].get::<_, i64>(0), on0);

    // a scatter query needs s1 too: fails at once
    let started = Instant::now();
    let err = client
        .query("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap_err();
    let took = started.elapsed();
    assert_breaker_error(&err, "scatter");
    assert!(took < FAST, "scatter took {took:?}");

    // inside a transaction that already uses s0: the same code
    client.batch_execute("BEGIN").await.unwrap();
    assert_eq!(client.query(by_key, &[&on0]).await.unwrap().len(), 1);
    let started = Instant::now();
    let err = client.query(by_key, &[&on1]).await.unwrap_err();
    let took = started.elapsed();
    assert_breaker_error(&err, "in a transaction");
    assert!(took < FAST, "in a transaction took {took:?}");
    client.batch_execute("ROLLBACK").await.unwrap();

    // shard back: a half-open probe closes the breaker and s1 is served again
    cluster.shard_mut(1).restart().await;
    wait_until_served(&client, on1, "s1").await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

/// s1's row of SHOW SHARDS and its breaker gauge from /metrics.
async fn s1_breaker(proxy: &Proxy, admin: &Client) -> (HashMap<String, String>, f64, f64) {
    let shards = records(admin, "SHOW SHARDS").await;
    let s1 = shards
        .into_iter()
        .find(|r| r["shard"] == "s1")
        .expect("SHOW SHARDS lists s1");
    let (status, body) = http_get(proxy.metrics_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&body);
    (
        s1,
        m["pgshard_breaker_state{shard=\"s1\"}"],
        m["pgshard_breaker_opened_total{shard=\"s1\"}"],
    )
}

/// [`s1_breaker`] polled until the breaker is `state` (at most 10 s; the caller's
/// assertions report a miss).
async fn s1_breaker_once(
    proxy: &Proxy,
    admin: &Client,
    state: &str,
) -> (HashMap<String, String>, f64, f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let seen = s1_breaker(proxy, admin).await;
        if seen.0["breaker"] == state || Instant::now() > deadline {
            return seen;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The breaker's state is what an operator sees: SHOW SHARDS says s1 is unavailable
/// with an open breaker, its failures and last error, /metrics has the gauge at 2 (open)
/// and the opened counter up; once s1 is back both say closed and s0 was never touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_state_shows_in_the_console_and_metrics() {
    let (mut cluster, proxy, _, on1, _) = setup(2).await;
    let client = proxy.client().await;
    let admin = proxy.admin("app", "app").await.expect("admin console");
    let (s1, gauge, opened) = s1_breaker(&proxy, &admin).await;
    assert_eq!(
        (s1["state"].as_str(), s1["breaker"].as_str()),
        ("serving", "closed")
    );
    assert_eq!((gauge, opened), (0.0, 0.0));

    cluster.shard_mut(1).stop().await;
    wait_for_open_breaker(&client, on1).await;
    // while the shard is down the breaker cycles open → half-open (one failing probe)
    // → open; catch it open
    let (s1, gauge, opened) = s1_breaker_once(&proxy, &admin, "open").await;
    assert_eq!(s1["breaker"], "open", "{s1:?}");
    assert_eq!(s1["state"], "unavailable", "{s1:?}");
    assert!(s1["failures"].parse::<u32>().unwrap() >= 2, "{s1:?}");
    assert!(!s1["last_error"].is_empty(), "{s1:?}");
    assert!(gauge >= 1.0, "gauge {gauge} while s1 is down");
    assert!(opened >= 1.0, "opened {opened}");
    let shards = records(&admin, "SHOW SHARDS").await;
    let s0 = shards.iter().find(|r| r["shard"] == "s0").unwrap();
    assert_eq!(
        (s0["state"].as_str(), s0["breaker"].as_str()),
        ("serving", "closed")
    );

    cluster.shard_mut(1).restart().await;
    let (s1, gauge, _) = s1_breaker_once(&proxy, &admin, "closed").await;
    assert_eq!(
        (s1["state"].as_str(), s1["breaker"].as_str()),
        ("serving", "closed")
    );
    assert_eq!(s1["failures"], "0", "{s1:?}");
    assert_eq!(gauge, 0.0);
    let rows = client
        .query("SELECT aid FROM accounts WHERE aid = $1", &[&on1])
        .await
        .expect("s1 is served again");
    assert_eq!(rows.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_clients_on_a_down_shard_all_fail_fast() {
    // a pool of 2 for 50 clients: had they to queue for connections, it would show
    let (mut cluster, proxy, on0, on1, _) = setup(2).await;
    let mut clients = Vec::new();
    for _ in 0..50 {
        clients.push(proxy.client().await);
    }
    cluster.shard_mut(1).stop().await;
    wait_for_open_breaker(&clients[0], on1).await;

    let started = Instant::now();
    let queries = clients.iter().map(|c| async move {
        let started = Instant::now();
        let result = c
            .query("SELECT aid FROM accounts WHERE aid = $1", &[&on1])
            .await;
        (result, started.elapsed())
    });
    let results = futures_util::future::join_all(queries).await;
    let total = started.elapsed();
    assert_eq!(results.len(), 50);
    for (result, took) in &results {
        assert_breaker_error(result.as_ref().unwrap_err(), "concurrent client");
        assert!(*took < Duration::from_secs(1), "a client waited {took:?}");
    }
    assert!(total < Duration::from_secs(2), "50 clients took {total:?}");

    // the clients are fine for the other shard
    let rows = clients[49]
        .query("SELECT aid FROM accounts WHERE aid = $1", &[&on0])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);
}

/// Sends SIGCONT to a stopped process when dropped, so a failing test still lets the
/// server shut down.
struct Resume(String);

impl Drop for Resume {
    fn drop(&mut self) {
        signal(&self.0, "-CONT");
    }
}

fn signal(pid: &str, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([sig, pid])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {pid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_waiting_on_a_hanging_shard_fail_when_the_breaker_opens() {
    // A stopped (SIGSTOP) postmaster accepts TCP connections but never answers a login:
    // without the breaker, every checkout needing a new connection to s1 would wait the
    // 5 s connect timeout. The checks time out (500 ms) twice, the breaker opens, and
    // the waiting checkouts fail at that moment.
    let (cluster, proxy, on0, on1, toml) = setup(2).await;
    // a fresh proxy without the two-phase recovery pass (which checks out a connection
    // to every shard at startup): no pooled connection to s1 that could still serve
    drop(proxy);
    let proxy = Proxy::start(&(toml + "\n[transactions]\ntwo_phase = false\n")).await;
    let mut clients = Vec::new();
    for _ in 0..20 {
        clients.push(proxy.client().await);
    }
    let pid_file = cluster.shard(1).cluster().data_dir().join("postmaster.pid");
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .trim()
        .to_owned();
    signal(&pid, "-STOP");
    let resume = Resume(pid);

    let started = Instant::now();
    let queries = clients.iter().map(|c| async move {
        c.query("SELECT aid FROM accounts WHERE aid = $1", &[&on1])
            .await
    });
    let results = futures_util::future::join_all(queries).await;
    let total = started.elapsed();
    assert_eq!(results.len(), 20);
    for result in &results {
        assert_breaker_error(result.as_ref().unwrap_err(), "waiting client");
    }
    assert!(
        total < Duration::from_secs(4),
        "clients waited {total:?} (connect timeout is 5 s)"
    );
    // s0 is unaffected
    let rows = clients[0]
        .query("SELECT aid FROM accounts WHERE aid = $1", &[&on0])
        .await
        .unwrap();
    assert_eq!(rows.len(), 1);

    drop(resume);
    wait_until_served(&clients[1], on1, "s1").await;
}

/// A shard that refuses new logins (pg_hba `reject`, as when it is out of connection
/// slots) while its pooled connections serve: the failed checks are not counted, so the
/// breaker stays closed and the client sees no error; SHOW SHARDS shows the failure as
/// "not counted". Once the client stops, the same failures open the breaker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_refusing_new_logins_but_serving_queries_stays_in_service() {
    // checks every 300 ms: a client statement within 300 ms before a check vouches for
    // the shard, a margin a busy debug build keeps easily at one statement per 5 ms
    let health = HEALTH.replace("interval_ms = 100", "interval_ms = 300");
    let (cluster, proxy, on0, _, _) = setup_with(2, &health).await;
    let admin = proxy.admin("app", "app").await.expect("admin console");
    let by_key = "SELECT aid FROM accounts WHERE aid = $1";

    // traffic on s0 from before the shard starts refusing logins until told to stop
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let traffic = {
        let client = proxy.client().await;
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut answered = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let rows = client
                    .query(by_key, &[&on0])
                    .await
                    .map_err(|e| format!("a client saw an error after {answered} answers: {e}"))?;
                assert_eq!(rows.len(), 1);
                answered += 1;
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Ok::<u64, String>(answered)
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    let direct = cluster.shard(0).client("app").await;
    let dir = tempfile::tempdir().unwrap();
    let hba = dir.path().join("pg_hba.conf");
    std::fs::write(&hba, "host all all 0.0.0.0/0 reject\nlocal all all trust\n").unwrap();
    cluster.shard(0).install_data_file(&hba, "pg_hba.conf");
    direct
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio_postgres::Config::new()
            .host("127.0.0.1")
            .port(cluster.shard(0).port())
            .user("postgres")
            .dbname("app")
            .connect(tokio_postgres::NoTls)
            .await
            .is_err(),
        "s0 refuses new logins"
    );

    // 3 s of traffic while s0 refuses logins: 10 check intervals, failure_threshold 2
    tokio::time::sleep(Duration::from_secs(3)).await;
    let shards = records(&admin, "SHOW SHARDS").await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let answered = traffic.await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    assert!(answered > 50, "the traffic ran: {answered}");
    let s0 = shards.iter().find(|r| r["shard"] == "s0").unwrap();
    assert_eq!(s0["breaker"], "closed", "{s0:?}");
    assert!(s0["last_error"].contains("not counted"), "{s0:?}");

    // no traffic: nothing vouches for s0 and its failed checks open the breaker
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let shards = records(&admin, "SHOW SHARDS").await;
        let s0 = shards.iter().find(|r| r["shard"] == "s0").unwrap().clone();
        if s0["breaker"] != "closed" {
            break;
        }
        assert!(Instant::now() < deadline, "s0 never opened: {s0:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
