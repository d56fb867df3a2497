//! Operating pgshard against real shards: the admin console's status commands, the
//! Prometheus endpoint, PAUSE/RESUME, reload under load, and graceful shutdown (in
//! process and of the real binary on SIGTERM).
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, SimpleQueryMessage};

use crate::harness::{ACCOUNTS, Cluster, Proxy};
use crate::robustness::{has_code, raw_login, until_closed};

/// The rows of a simple query, as text (NULL as ""), with the column names.
pub(crate) async fn table(client: &Client, sql: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let messages = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    let mut columns = Vec::new();
    let mut rows = Vec::new();
    for m in messages {
        if let SimpleQueryMessage::Row(row) = m {
            if columns.is_empty() {
                columns = row.columns().iter().map(|c| c.name().to_owned()).collect();
            }
            rows.push(
                (0..row.len())
                    .map(|i| row.get(i).unwrap_or("").to_owned())
                    .collect(),
            );
        }
    }
    (columns, rows)
}

/// Rows of a table as column name → value maps.
pub(crate) async fn records(client: &Client, sql: &str) -> Vec<HashMap<String, String>> {
    let (columns, rows) = table(client, sql).await;
    rows.into_iter()
        .map(|r| columns.iter().cloned().zip(r).collect())
        .collect()
}

/// The shard map of `cluster` with the accounts table, metrics on a free port, a
/// non-admin user `reader`, and `extra_server` lines appended to `[server]`.
fn ops_map(cluster: &Cluster, extra_server: &str) -> String {
    cluster
        .shardmap_toml(ACCOUNTS, 4)
        .replacen(
            "[server]\n",
            &format!("[server]\nmetrics_listen = \"127.0.0.1:0\"\n{extra_server}"),
            1,
        )
        .replacen(
            "\n[[users]]",
            "\n[[users]]\nname = \"reader\"\npassword = \"reader\"\n\n[[users]]",
            1,
        )
}

/// `GET path` over plain HTTP/1.1: status code and body.
pub(crate) async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: test\r\n\r\n").as_bytes())
        .await
        .expect("send request");
    let mut response = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        stream.read_to_string(&mut response),
    )
    .await
    .expect("response within 10 s")
    .expect("read response");
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {response}"));
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Parse Prometheus text: `name{labels}` → value (labels kept verbatim).
pub(crate) fn parse_metrics(text: &str) -> HashMap<String, f64> {
    let mut out = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line
            .rsplit_once(' ')
            .unwrap_or_else(|| panic!("bad sample line: {line}"));
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad sample value: {line}"));
        assert!(
            out.insert(series.to_owned(), value).is_none(),
            "duplicate series {series}"
        );
    }
    out
}

/// Create `accounts` and insert keys 1..=n.
async fn load_accounts(client: &Client, n: i64) {
    client
        .batch_execute("CREATE TABLE accounts (aid bigint PRIMARY KEY, v text)")
        .await
        .expect("create accounts");
    let values: Vec<String> = (1..=n).map(|k| format!("({k}, 'v{k}')")).collect();
    client
        .batch_execute(&format!(
            "INSERT INTO accounts (aid, v) VALUES {}",
            values.join(", ")
        ))
        .await
        .expect("insert accounts");
}

/// A key of `accounts` owned by shard `shard` under the map text.
fn key_on(map_text: &str, shard: usize) -> i64 {
    let config = pgshard::config::parse(map_text, "test").expect("map parses");
    (1..)
        .find(|&k| config.map.locate(&pgshard::sharding::KeyValue::Int(k)).1 == shard)
        .expect("some key lands on the shard")
}

#[tokio::test]
async fn console_lists_shards_pools_clients_stats_config_and_refuses_non_admins() {
    let cluster = Cluster::start(2).await;
    let text = ops_map(&cluster, "");
    let proxy = Proxy::start(&text).await;
    let app = proxy.client().await;
    load_accounts(&app, 200).await;
    for k in 1..=20i64 {
        let row = app
            .query_one("SELECT v FROM accounts WHERE aid = $1", &[&k])
            .await
            .expect("point read");
        assert_eq!(row.get::<_, String>(0), format!("v{k}"));
    }
    let count: i64 = app
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("scatter count")
        .get(0);
    assert_eq!(count, 200);
    let _ = app
        .simple_query("SELECT * FROM no_such_table WHERE aid = 1")
        .await
        .expect_err("missing table");

    // non-admin users may use the proxy but not the console
    let reader = proxy
        .connect("reader", "reader")
        .await
        .expect("reader logs in");
    let one: i32 = reader.query_one("SELECT 1", &[]).await.unwrap().get(0);
    assert_eq!(one, 1);
    let err = proxy
        .admin("reader", "reader")
        .await
        .expect_err("non-admin refused");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code(), &SqlState::INSUFFICIENT_PRIVILEGE, "{db:?}");
    assert!(db.message().contains("admin = true"), "{}", db.message());

    let admin = proxy.admin("app", "app").await.expect("admin login");
    let shards = records(&admin, "SHOW SHARDS").await;
    assert_eq!(shards.len(), 2);
    let slots: i64 = shards
        .iter()
        .map(|r| r["slots"].parse::<i64>().unwrap())
        .sum();
    assert_eq!(slots, crate::harness::SLOTS as i64);
    for (i, r) in shards.iter().enumerate() {
        assert_eq!(r["shard"], format!("s{i}"));
        assert_eq!(r["state"], "serving");
        assert_eq!(r["breaker"], "closed");
        assert_eq!(r["epoch"], "1");
        assert_eq!(r["port"], cluster.shard(i).port().to_string());
        assert_eq!(r["database"], "app");
    }

    let pools = records(&admin, "SHOW POOLS").await;
    assert_eq!(pools.len(), 2);
    for r in &pools {
        assert_eq!(r["pool_size"], "4");
        assert_eq!(r["active"], "0", "{r:?}");
        assert_eq!(r["paused"], "f");
    }

    // the app client is idle, the reader too, the admin console active (itself)
    let clients = records(&admin, "SHOW CLIENTS").await;
    assert_eq!(clients.len(), 3, "{clients:?}");
    let app_row = clients
        .iter()
        .find(|r| r["user"] == "app" && r["database"] == "app");
    let app_row = app_row.unwrap_or_else(|| panic!("{clients:?}"));
    assert_eq!(app_row["state"], "idle");
    assert!(app_row["address"].starts_with("127.0.0.1:"), "{app_row:?}");
    assert!(
        app_row["statements"].parse::<u64>().unwrap() >= 23,
        "{app_row:?}"
    );
    assert!(clients.iter().any(|r| r["user"] == "reader"));
    assert!(
        clients
            .iter()
            .any(|r| r["database"] == "pgshard" && r["state"] == "active")
    );

    let stats = records(&admin, "SHOW STATS").await;
    assert_eq!(stats.len(), 2, "{stats:?}");
    let total: u64 = stats
        .iter()
        .map(|r| r["queries"].parse::<u64>().unwrap())
        .sum();
    assert!(total >= 24, "{stats:?}");
    for r in &stats {
        assert!(r["scatter"].parse::<u64>().unwrap() >= 1, "{r:?}");
        assert!(r["bytes_sent"].parse::<u64>().unwrap() > 0, "{r:?}");
        assert!(r["bytes_received"].parse::<u64>().unwrap() > 0, "{r:?}");
        assert!(r["avg_ms"].parse::<f64>().unwrap() > 0.0, "{r:?}");
        assert!(r["p99_ms"].parse::<f64>().unwrap() > 0.0, "{r:?}");
    }
    let errors: u64 = stats
        .iter()
        .map(|r| r["errors"].parse::<u64>().unwrap())
        .sum();
    assert_eq!(errors, 1, "the failed SELECT on a missing table: {stats:?}");

    let config = records(&admin, "SHOW CONFIG").await;
    let get = |k: &str| {
        config
            .iter()
            .find(|r| r["key"] == k)
            .unwrap_or_else(|| panic!("no {k} in {config:?}"))
            .clone()
    };
    assert_eq!(get("server.pool_size")["value"], "4");
    assert_eq!(get("sharding.epoch")["applies"], "reload");
    assert_eq!(get("users")["value"], "reader, app (admin)");
    assert!(get("shards.s0")["value"].contains(&cluster.shard(0).port().to_string()));

    let (_, version) = table(&admin, "SHOW VERSION").await;
    assert_eq!(
        version,
        [[format!("pgshard {}", env!("CARGO_PKG_VERSION"))]]
    );

    let err = admin
        .simple_query("SHOW NOTHING")
        .await
        .expect_err("unknown");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code(), &SqlState::SYNTAX_ERROR);
    assert!(db.message().contains("SHOW POOLS"), "{}", db.message());
}

#[tokio::test]
async fn metrics_endpoint_serves_prometheus_text_and_health() {
    let cluster = Cluster::start(2).await;
    let text = ops_map(&cluster, "");
    let proxy = Proxy::start(&text).await;
    let app = proxy.client().await;
    load_accounts(&app, 100).await;
    let k0 = key_on(&text, 0);
    let before = parse_metrics(&http_get(proxy.metrics_addr(), "/metrics").await.1);
    let single = "pgshard_queries_total{shard=\"s0\",route=\"single\"}";
    for _ in 0..25 {
        app.query_one("SELECT v FROM accounts WHERE aid = $1", &[&k0])
            .await
            .expect("point read");
    }
    app.query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("scatter");

    let (status, body) = http_get(proxy.metrics_addr(), "/metrics").await;
    assert_eq!(status, 200);
    let m = parse_metrics(&body);
    // 25 point reads on s0, each one statement (the extended protocol's batch)
    assert!(
        m[single] - before[single] >= 25.0,
        "{} → {}",
        before[single],
        m[single]
    );
    let count = "pgshard_query_duration_seconds_count{shard=\"s0\",route=\"single\"}";
    assert_eq!(
        m[count], m[single],
        "every statement that reached s0 is timed"
    );
    let inf = "pgshard_query_duration_seconds_bucket{shard=\"s0\",route=\"single\",le=\"+Inf\"}";
    assert_eq!(m[inf], m[count]);
    // buckets are cumulative
    let b1 = m["pgshard_query_duration_seconds_bucket{shard=\"s0\",route=\"single\",le=\"0.001\"}"];
    let b2 = m["pgshard_query_duration_seconds_bucket{shard=\"s0\",route=\"single\",le=\"0.01\"}"];
    assert!(b1 <= b2 && b2 <= m[inf]);
    for shard in ["s0", "s1"] {
        let scatter = format!("pgshard_queries_total{{shard=\"{shard}\",route=\"scatter\"}}");
        assert!(m[&scatter] >= 1.0, "{scatter}");
        assert_eq!(
            m[&format!("pgshard_pool_max_connections{{shard=\"{shard}\"}}")],
            4.0
        );
        assert_eq!(
            m[&format!("pgshard_breaker_state{{shard=\"{shard}\"}}")],
            0.0
        );
        assert!(
            m[&format!("pgshard_bytes_total{{shard=\"{shard}\",direction=\"to_client\"}}")] > 0.0
        );
    }
    assert_eq!(m["pgshard_map_epoch"], 1.0);
    assert_eq!(m["pgshard_up"], 1.0);
    assert_eq!(m["pgshard_draining"], 0.0);
    assert_eq!(m["pgshard_clients"], 1.0);
    assert!(m["pgshard_clients_accepted_total"] >= 1.0);
    assert_eq!(m["pgshard_reloads_total{result=\"ok\"}"], 0.0);

    assert_eq!(
        http_get(proxy.metrics_addr(), "/health").await,
        (200, "ok\n".into())
    );
    assert_eq!(http_get(proxy.metrics_addr(), "/nope").await.0, 404);
}

#[tokio::test]
async fn pause_holds_new_statements_of_one_shard_until_resume() {
    let cluster = Cluster::start(2).await;
    let text = ops_map(&cluster, "hold_timeout_ms = 1500\n");
    let proxy = Proxy::start(&text).await;
    let app = proxy.client().await;
    load_accounts(&app, 100).await;
    let (k0, k1) = (key_on(&text, 0), key_on(&text, 1));
    let admin = proxy.admin("app", "app").await.unwrap();

    let err = admin
        .simple_query("PAUSE s9")
        .await
        .expect_err("unknown shard");
    assert_eq!(
        err.as_db_error().unwrap().code(),
        &SqlState::INVALID_PARAMETER_VALUE
    );

    admin.simple_query("PAUSE s1").await.expect("pause");
    let (_, pools) = table(&admin, "SHOW POOLS").await;
    assert_eq!(pools[1][6], "t");
    assert_eq!(records(&admin, "SHOW SHARDS").await[1]["state"], "paused");
    // s0 still serves at once
    let started = Instant::now();
    app.query_one("SELECT v FROM accounts WHERE aid = $1", &[&k0])
        .await
        .expect("s0 serves");
    assert!(started.elapsed() < Duration::from_secs(1));
    // s1 waits, then goes on after RESUME
    let other = proxy.client().await;
    let waiting = tokio::spawn(async move {
        let started = Instant::now();
        let row = other
            .query_one("SELECT v FROM accounts WHERE aid = $1", &[&k1])
            .await;
        (row.map(|r| r.get::<_, String>(0)), started.elapsed())
    });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert!(
        !waiting.is_finished(),
        "a statement for a paused shard waits"
    );
    admin.simple_query("RESUME s1").await.expect("resume");
    let (value, waited) = waiting.await.unwrap();
    assert_eq!(value.expect("runs after RESUME"), format!("v{k1}"));
    assert!(waited >= Duration::from_millis(400), "{waited:?}");

    // never resumed: the wait ends at hold_timeout with 55P03 naming the shard
    admin.simple_query("PAUSE").await.expect("pause all");
    let started = Instant::now();
    let err = app
        .query_one("SELECT v FROM accounts WHERE aid = $1", &[&k0])
        .await
        .expect_err("times out");
    let db = err.as_db_error().expect("server error");
    assert_eq!(db.code(), &SqlState::LOCK_NOT_AVAILABLE);
    assert!(
        db.message().contains("\"s0\" is paused"),
        "{}",
        db.message()
    );
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(1400) && waited < Duration::from_secs(10),
        "{waited:?}"
    );
    admin.simple_query("RESUME").await.expect("resume all");
    app.query_one("SELECT v FROM accounts WHERE aid = $1", &[&k0])
        .await
        .expect("serves again");
}

#[tokio::test]
async fn reload_under_load_keeps_every_client_statement_working() {
    let cluster = Cluster::start(2).await;
    let text = ops_map(&cluster, "");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardmap.toml");
    std::fs::write(&path, &text).unwrap();
    let proxy = Proxy::start_file(&path).await;
    let setup = proxy.client().await;
    load_accounts(&setup, 200).await;

    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for w in 0..4i64 {
        let client = proxy.client().await;
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            let mut i = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let k = 1 + (w * 50 + i) % 200;
                let result = if i % 10 == 9 {
                    client
                        .query_one("SELECT count(*) FROM accounts", &[])
                        .await
                        .map(|r| r.get::<_, i64>(0) == 200)
                } else {
                    client
                        .query_one("SELECT v FROM accounts WHERE aid = $1", &[&k])
                        .await
                        .map(|r| r.get::<_, String>(0) == format!("v{k}"))
                };
                match result {
                    Ok(true) => {}
                    Ok(false) => errors.push(format!("wrong answer for key {k}")),
                    Err(e) => errors.push(e.to_string()),
                }
                done.fetch_add(1, Ordering::Relaxed);
                i += 1;
            }
            errors
        }));
    }
    let admin = proxy.admin("app", "app").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;

    // an invalid map: refused, the old one kept
    std::fs::write(&path, text.replacen("slots = 1024", "slots = 1000", 1)).unwrap();
    let err = admin.simple_query("RELOAD").await.expect_err("invalid map");
    let db = err.as_db_error().unwrap();
    assert_eq!(db.code().code(), "F0000", "{db:?}");
    tokio::time::sleep(Duration::from_millis(300)).await;

    // a valid one with a new epoch: installed
    std::fs::write(
        &path,
        text.replacen("[sharding]\n", "[sharding]\nepoch = 2\n", 1),
    )
    .unwrap();
    admin.simple_query("RELOAD").await.expect("valid map");
    tokio::time::sleep(Duration::from_millis(300)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        let errors = w.await.unwrap();
        assert!(errors.is_empty(), "clients saw errors: {errors:?}");
    }
    assert!(done.load(Ordering::Relaxed) > 50, "the load ran");
    assert_eq!(records(&admin, "SHOW SHARDS").await[0]["epoch"], "2");
    let m = parse_metrics(&http_get(proxy.metrics_addr(), "/metrics").await.1);
    assert_eq!(m["pgshard_reloads_total{result=\"ok\"}"], 1.0);
    assert_eq!(m["pgshard_reloads_total{result=\"error\"}"], 1.0);
    assert_eq!(m["pgshard_map_epoch"], 2.0);
}

#[tokio::test]
async fn shutdown_reports_draining_then_lets_an_open_transaction_commit() {
    let cluster = Cluster::start(2).await;
    let text = ops_map(
        &cluster,
        "drain_delay_ms = 800\nshutdown_timeout_ms = 20000\n",
    );
    let proxy = Proxy::start(&text).await;
    let app = proxy.client().await;
    load_accounts(&app, 10).await;
    let idle = proxy.client().await;
    // a raw idle connection too: tokio-postgres only reports "connection closed" for an
    // error sent between queries, the raw stream shows what the proxy actually sent
    let mut raw_idle = raw_login(&proxy).await;
    app.batch_execute("BEGIN; INSERT INTO accounts (aid, v) VALUES (1001, 'in flight')")
        .await
        .expect("open transaction");
    let admin = proxy.admin("app", "app").await.unwrap();
    admin.simple_query("SHUTDOWN").await.expect("shutdown");
    let metrics = proxy.metrics_addr();
    assert_eq!(
        http_get(metrics, "/health").await,
        (503, "draining\n".into())
    );
    // after the drain delay the listener closes and idle clients are told why
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let err = idle.simple_query("SELECT 1").await.expect_err("closed");
    assert!(
        err.as_db_error()
            .map(|d| d.code() == &SqlState::ADMIN_SHUTDOWN)
            .unwrap_or(true),
        "{err}"
    );
    let said = until_closed(&mut raw_idle).await;
    assert!(
        has_code(&said, "57P01"),
        "an idle client is told 57P01 before the close: {said:?}"
    );
    let refused = tokio_postgres::connect(&proxy.url("app", "app"), NoTls).await;
    assert!(refused.is_err(), "new clients are refused while draining");
    // the open transaction finishes
    app.batch_execute("INSERT INTO accounts (aid, v) VALUES (1002, 'in flight'); COMMIT")
        .await
        .expect("the open transaction commits");
    drop(app);
    let ended = tokio::time::timeout(Duration::from_secs(10), proxy.wait()).await;
    assert!(matches!(ended, Ok(Ok(()))), "{ended:?}");
    let mut found = 0i64;
    for i in 0..2 {
        let shard = cluster.shard(i).client("app").await;
        found += shard
            .query_one(
                "SELECT count(*) FROM accounts WHERE aid IN (1001, 1002)",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
    }
    assert_eq!(
        found, 2,
        "both rows of the drained transaction are committed"
    );
}

/// The real binary: SIGTERM makes /health answer 503, lets an open transaction commit,
/// and exits 0; SIGHUP reloads the map file.
#[tokio::test]
async fn the_binary_drains_on_sigterm_and_reloads_on_sighup() {
    let cluster = Cluster::start(2).await;
    let port = pgshard::devcluster::port::free_port().unwrap();
    let metrics_port = pgshard::devcluster::port::free_port().unwrap();
    let text = cluster
        .shardmap_toml(ACCOUNTS, 4)
        .replacen(
            "listen = \"127.0.0.1:0\"",
            &format!(
                "listen = \"127.0.0.1:{port}\"\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\ndrain_delay_ms = 500"
            ),
            1,
        )
        .replacen("[sharding]\n", "[log]\nformat = \"json\"\n\n[sharding]\n", 1)
        .replacen(
            "\n[[users]]",
            "\n[[users]]\nname = \"other\"\npassword = \"map-secret-6622\"\n\n[[users]]",
            1,
        );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("shardmap.toml");
    std::fs::write(&path, &text).unwrap();
    let log_path = dir.path().join("pgshard.log");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["serve", "-c"])
        .arg(&path)
        .env_remove("PGSHARD_LOG")
        .stderr(std::fs::File::create(&log_path).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("start pgshard serve");
    let metrics: SocketAddr = format!("127.0.0.1:{metrics_port}").parse().unwrap();
    let url = format!("postgres://app:app@127.0.0.1:{port}/app");
    let deadline = Instant::now() + Duration::from_secs(20);
    let app = loop {
        match tokio_postgres::connect(&url, NoTls).await {
            Ok((client, conn)) => {
                tokio::spawn(conn);
                break client;
            }
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("pgshard serve did not come up: {e}"),
        }
    };
    load_accounts(&app, 10).await;
    // what must not reach the log: passwords of the map, statement parameters (a
    // refused login is logged, with its user and address)
    let wrong = format!("postgres://app:hunter2-wrong@127.0.0.1:{port}/app");
    let refused = tokio_postgres::connect(&wrong, NoTls)
        .await
        .err()
        .expect("a wrong password is refused");
    assert_eq!(refused.code(), Some(&SqlState::INVALID_PASSWORD));
    let insert = "INSERT INTO accounts (aid, v) VALUES ($1, $2)";
    app.execute(insert, &[&3001i64, &"param-7731-secret"])
        .await
        .unwrap();
    let dup = app
        .execute(insert, &[&3001i64, &"param-7731-secret"])
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Some(&SqlState::UNIQUE_VIOLATION));
    let pid = child.id().expect("running") as i32;
    let signal = |sig: &str| {
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
    };

    // SIGHUP: a new epoch is installed, and the log level goes to debug
    std::fs::write(
        &path,
        text.replacen("[sharding]\n", "[sharding]\nepoch = 3\n", 1)
            .replacen(
                "format = \"json\"\n",
                "format = \"json\"\nlevel = \"debug\"\n",
                1,
            ),
    )
    .unwrap();
    signal("-HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let m = parse_metrics(&http_get(metrics, "/metrics").await.1);
        if m["pgshard_map_epoch"] == 3.0 {
            break;
        }
        assert!(Instant::now() < deadline, "SIGHUP did not reload the map");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // a client that comes and goes: logged at debug only
    let (brief, conn) = tokio_postgres::connect(&url, NoTls).await.unwrap();
    let conn = tokio::spawn(conn);
    brief.simple_query("SELECT 1").await.unwrap();
    drop(brief);
    let _ = conn.await;
    let admin = tokio_postgres::connect(
        &format!("postgres://app:app@127.0.0.1:{port}/pgshard"),
        NoTls,
    )
    .await
    .map(|(c, conn)| {
        tokio::spawn(conn);
        c
    })
    .expect("admin console");
    let config = records(&admin, "SHOW CONFIG").await;
    let level = config
        .iter()
        .find(|r| r["key"] == "log.level")
        .expect("log.level");
    assert_eq!(level["value"], "debug", "{level:?}");
    drop(admin);

    // SIGTERM with a transaction open
    app.batch_execute("BEGIN; INSERT INTO accounts (aid, v) VALUES (2001, 'x')")
        .await
        .unwrap();
    signal("-TERM");
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        if http_get(metrics, "/health").await.0 == 503 {
            break;
        }
        assert!(Instant::now() < deadline, "/health did not turn 503");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    app.batch_execute("COMMIT")
        .await
        .expect("commit while draining");
    drop(app);
    let status = tokio::time::timeout(Duration::from_secs(15), child.wait())
        .await
        .expect("pgshard exits after the drain")
        .unwrap();
    assert!(status.success(), "{status}");
    let shard_rows: i64 = {
        let mut n = 0;
        for i in 0..2 {
            n += cluster
                .shard(i)
                .client("app")
                .await
                .query_one("SELECT count(*) FROM accounts WHERE aid = 2001", &[])
                .await
                .unwrap()
                .get::<_, i64>(0);
        }
        n
    };
    assert_eq!(shard_rows, 1);
    // JSON logs, one object per line, with the client span and no password
    let log = std::fs::read_to_string(&log_path).unwrap();
    let lines: Vec<serde_json::Value> = log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    assert!(
        lines
            .iter()
            .any(|l| l["fields"]["message"] == "pgshard serving"),
        "{log}"
    );
    assert!(
        lines.iter().any(|l| l["fields"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("SIGHUP"))),
        "{log}"
    );
    assert!(!log.contains("password = "), "{log}");
    // info until the reload, debug after it
    let changed = lines
        .iter()
        .position(|l| l["fields"]["message"] == "log level changed")
        .unwrap_or_else(|| panic!("the level change is logged: {log}"));
    assert!(
        lines[..changed].iter().all(|l| l["level"] != "DEBUG"),
        "{log}"
    );
    assert!(
        lines[changed..].iter().any(|l| l["level"] == "DEBUG"),
        "{log}"
    );
    for secret in ["map-secret-6622", "param-7731-secret"] {
        assert!(!log.contains(secret), "{secret} in the log: {log}");
    }
    // the refused login is logged in its client's span: who and from where
    let refused = lines
        .iter()
        .find(|l| l["fields"]["code"] == "28P01")
        .unwrap_or_else(|| panic!("the refused login is logged: {log}"));
    assert_eq!(refused["span"]["name"], "client", "{refused}");
    assert_eq!(refused["span"]["user"], "app", "{refused}");
    assert!(
        refused["span"]["peer"]
            .as_str()
            .is_some_and(|p| p.starts_with("127.0.0.1:")),
        "{refused}"
    );
}
