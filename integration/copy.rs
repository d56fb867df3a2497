//! COPY across shards: FROM STDIN splits rows by key (psql `\copy` and tokio-postgres
//! `copy_in`, text and CSV), bad rows and shard errors commit nothing anywhere, TO STDOUT
//! concatenates every shard's rows, reference tables get every row on every shard.

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Instant;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use pgshard::devcluster::PgInstall;
use pgshard::sharding::KeyValue;
use tokio_postgres::Client;
use tokio_postgres::error::SqlState;

use crate::harness::{ACCOUNTS, Cluster, Proxy};

const KINDS: &str = "\n[[tables]]\nname = \"kinds\"\nreplicated = true\n";

/// Three shards with `accounts (aid bigint PRIMARY KEY, name text, note text)` sharded
/// on aid and `kinds` replicated, both empty.
async fn setup() -> (Cluster, Proxy, String) {
    let cluster = Cluster::start(3).await;
    let toml = cluster.shardmap_toml(&format!("{ACCOUNTS}{KINDS}"), 4);
    let proxy = Proxy::start(&toml).await;
    proxy
        .client()
        .await
        .batch_execute(
            "CREATE TABLE accounts (aid bigint PRIMARY KEY, name text, note text); \
             CREATE TABLE kinds (id int PRIMARY KEY, label text)",
        )
        .await
        .unwrap();
    (cluster, proxy, toml)
}

/// The shard owning `aid`, by the proxy's own map.
fn owner(toml: &str, aid: i64) -> usize {
    let config = pgshard::config::parse(toml, "test").unwrap();
    config.map.locate(&KeyValue::Int(aid)).1
}

/// The aids stored on each shard, read directly.
async fn aids_by_shard(cluster: &Cluster) -> Vec<Vec<i64>> {
    let mut all = Vec::new();
    for i in 0..cluster.len() {
        let rows = cluster
            .shard(i)
            .client("app")
            .await
            .query("SELECT aid FROM accounts ORDER BY aid", &[])
            .await
            .unwrap();
        all.push(rows.iter().map(|r| r.get(0)).collect());
    }
    all
}

/// Every stored row is on the shard owning its key; returns how many there are.
async fn assert_placed(cluster: &Cluster, toml: &str) -> usize {
    let config = pgshard::config::parse(toml, "test").unwrap();
    let mut n = 0;
    for (shard, aids) in aids_by_shard(cluster).await.iter().enumerate() {
        for &aid in aids {
            assert_eq!(
                config.map.locate(&KeyValue::Int(aid)).1,
                shard,
                "aid {aid} on the wrong shard"
            );
        }
        n += aids.len();
    }
    n
}

/// `COPY … FROM STDIN` of `data` in one CopyData message.
async fn copy_data(client: &Client, sql: &str, data: &str) -> Result<u64, tokio_postgres::Error> {
    let sink = client.copy_in::<_, Bytes>(sql).await?;
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from(data.to_owned())).await?;
    sink.finish().await
}

async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// Run psql against the proxy with `-c` commands; (success, stdout, stderr).
async fn psql(url: &str, commands: &[String]) -> (bool, String, String) {
    let psql = PgInstall::discover()
        .map(|i| i.tool("psql"))
        .unwrap_or_else(|e| panic!("Postgres binaries: {e}"));
    let mut args: Vec<String> = vec![
        url.to_owned(),
        "-X".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
    ];
    for c in commands {
        args.push("-c".into());
        args.push(c.clone());
    }
    let out = tokio::task::spawn_blocking(move || {
        Command::new(psql)
            .args(&args)
            .env("PGPASSWORD", "app")
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_copy_in_and_out_text_and_csv() {
    let (cluster, proxy, toml) = setup().await;
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).display().to_string();
    // text, no column list (the key's position comes from the catalog), escapes
    let mut text = String::new();
    for aid in 1..=300 {
        text.push_str(&format!("{aid}\tname {aid}\tnote\\twith tab\n"));
    }
    text.push_str("301\t\\N\tback\\\\slash\n");
    std::fs::write(path("a.txt"), &text).unwrap();
    // CSV with a header and a column list: the key is the second field; quoted fields
    // with delimiters, newlines and doubled quotes
    let csv =
        "name,aid,note\n\"x, \"\"quoted\"\"\",1001,\"two\nlines\"\nplain,1002,\n\"\",1003,\"\"\n";
    std::fs::write(path("b.csv"), csv).unwrap();
    let url = proxy.url("app", "app");
    let (ok, out, err) = psql(
        &url,
        &[
            format!("\\copy accounts FROM '{}'", path("a.txt")),
            format!(
                "\\copy accounts (name, aid, note) FROM '{}' WITH (FORMAT csv, HEADER)",
                path("b.csv")
            ),
        ],
    )
    .await;
    assert!(ok, "{err}");
    assert!(out.contains("COPY 301") && out.contains("COPY 3"), "{out}");
    assert_eq!(assert_placed(&cluster, &toml).await, 304);
    // rows on several shards
    assert!(aids_by_shard(&cluster).await.iter().all(|a| !a.is_empty()));
    let client = proxy.client().await;
    let row = client
        .query_one("SELECT name, note FROM accounts WHERE aid = 1001", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, &str>(0), "x, \"quoted\"");
    assert_eq!(row.get::<_, &str>(1), "two\nlines");
    let row = client
        .query_one(
            "SELECT name IS NULL, note FROM accounts WHERE aid = 301",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    assert_eq!(row.get::<_, &str>(1), "back\\slash");

    // out: text, CSV with a header (once), and a plain SELECT
    let (ok, _, err) = psql(
        &url,
        &[
            format!("\\copy accounts TO '{}'", path("out.txt")),
            format!(
                "\\copy accounts (aid, name) TO '{}' WITH (FORMAT csv, HEADER)",
                path("out.csv")
            ),
            format!(
                "\\copy (SELECT aid FROM accounts WHERE aid > 1000) TO '{}'",
                path("sel.txt")
            ),
        ],
    )
    .await;
    assert!(ok, "{err}");
    let out_txt = std::fs::read_to_string(path("out.txt")).unwrap();
    let lines: BTreeSet<&str> = out_txt.lines().collect();
    assert_eq!(out_txt.lines().count(), 304);
    assert!(lines.contains("7\tname 7\tnote\\twith tab"), "{out_txt}");
    assert!(lines.contains("1001\tx, \"quoted\"\ttwo\\nlines"));
    let out_csv = std::fs::read_to_string(path("out.csv")).unwrap();
    assert_eq!(
        out_csv.lines().filter(|l| *l == "aid,name").count(),
        1,
        "one header"
    );
    assert!(out_csv.starts_with("aid,name\n"));
    let sel: BTreeSet<String> = std::fs::read_to_string(path("sel.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        sel,
        ["1001", "1002", "1003"]
            .map(str::to_owned)
            .into_iter()
            .collect()
    );
    // a bad key on line 3 names the line; nothing is committed anywhere
    std::fs::write(
        path("bad.txt"),
        "5000\ta\tb\n5001\ta\tb\nnope\ta\tb\n5002\ta\tb\n",
    )
    .unwrap();
    let (ok, _, err) = psql(
        &url,
        &[format!("\\copy accounts FROM '{}'", path("bad.txt"))],
    )
    .await;
    assert!(!ok);
    assert!(
        err.contains("invalid input syntax for type bigint: \"nope\"")
            && err.contains("COPY accounts, line 3, column aid: \"nope\""),
        "{err}"
    );
    assert_eq!(assert_placed(&cluster, &toml).await, 304);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_copy_in_and_out_100k_rows() {
    let (cluster, proxy, toml) = setup().await;
    let client = proxy.client().await;
    const N: i64 = 100_000;
    let chunk = |from: i64| -> Bytes {
        let mut s = String::new();
        for aid in from..(from + 1000).min(N + 1) {
            s.push_str(&format!("{aid},name {aid},\"a, b\"\n"));
        }
        Bytes::from(s)
    };
    // through pgshard
    let started = Instant::now();
    let sink = client
        .copy_in::<_, Bytes>("COPY accounts (aid, name, note) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut aid = 1;
    while aid <= N {
        sink.send(chunk(aid)).await.unwrap();
        aid += 1000;
    }
    let n = sink.finish().await.unwrap();
    let proxied = started.elapsed();
    assert_eq!(n, N as u64);
    assert_eq!(assert_placed(&cluster, &toml).await, N as usize);
    // the same data straight into one shard, for comparison
    let direct = cluster.shard(0).client("app").await;
    direct
        .batch_execute("CREATE TABLE direct (aid bigint PRIMARY KEY, name text, note text)")
        .await
        .unwrap();
    let started = Instant::now();
    let sink = direct
        .copy_in::<_, Bytes>("COPY direct (aid, name, note) FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    let mut aid = 1;
    while aid <= N {
        sink.send(chunk(aid)).await.unwrap();
        aid += 1000;
    }
    assert_eq!(sink.finish().await.unwrap(), N as u64);
    let straight = started.elapsed();
    eprintln!(
        "COPY of {N} rows: through pgshard (3 shards) {:.0} rows/s, direct to one shard {:.0} rows/s",
        N as f64 / proxied.as_secs_f64(),
        N as f64 / straight.as_secs_f64()
    );

    // out: every shard's rows once, streamed
    let stream = client
        .copy_out("COPY accounts TO STDOUT WITH (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(stream);
    let mut lines = 0usize;
    let mut keys = BTreeSet::new();
    let mut rest = Vec::new();
    while let Some(chunk) = stream.next().await {
        rest.extend_from_slice(&chunk.unwrap());
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = rest.drain(..=end).collect();
            let aid = String::from_utf8_lossy(&line);
            keys.insert(aid.split(',').next().unwrap().parse::<i64>().unwrap());
            lines += 1;
        }
    }
    assert_eq!(lines, N as usize);
    assert_eq!(keys.len(), N as usize);
    // binary COPY out of several shards is refused
    let e = client
        .copy_out("COPY accounts TO STDOUT WITH (FORMAT binary)")
        .await
        .err()
        .expect("binary COPY TO refused");
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    // the session goes on
    assert_eq!(count(&client, "SELECT count(*) FROM accounts").await, N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_commit_nothing_anywhere() {
    let (cluster, proxy, toml) = setup().await;
    let client = proxy.client().await;
    client
        .batch_execute("INSERT INTO accounts VALUES (7, 'seven', NULL)")
        .await
        .unwrap();
    let copy = |data: &'static str| {
        let client = &client;
        async move {
            let sink = client
                .copy_in::<_, Bytes>("COPY accounts (aid, name) FROM STDIN")
                .await?;
            futures_util::pin_mut!(sink);
            sink.send(Bytes::from_static(data.as_bytes())).await?;
            sink.finish().await
        }
    };
    // rows for every shard, then a bad one: 22P02 naming line 4, nothing committed
    let mut many = String::new();
    for aid in 100..130 {
        many.push_str(&format!("{aid}\tx\n"));
    }
    let many: &'static str =
        Box::leak(format!("1\ta\n2\tb\n3\tc\nabc\td\n{many}").into_boxed_str());
    let e = copy(many).await.unwrap_err();
    let db = e.as_db_error().expect("server error");
    assert_eq!(db.code(), &SqlState::INVALID_TEXT_REPRESENTATION);
    assert_eq!(
        db.where_(),
        Some("COPY accounts, line 4, column aid: \"abc\"")
    );
    // a NULL key
    let e = copy("1\ta\n\\N\tb\n").await.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::NOT_NULL_VIOLATION);
    assert_eq!(db.where_(), Some("COPY accounts, line 2: \"\\N\tb\""));
    // too few fields for the key
    let e = client
        .copy_in::<_, Bytes>("COPY accounts (name, aid) FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(e);
    e.send(Bytes::from_static(b"a\t1\nlonely\n")).await.unwrap();
    let e = e.finish().await.unwrap_err();
    let db = e.as_db_error().unwrap();
    assert_eq!(db.code(), &SqlState::BAD_COPY_FILE_FORMAT);
    assert_eq!(db.message(), "missing data for column \"aid\"");
    assert_eq!(db.where_(), Some("COPY accounts, line 2: \"lonely\""));
    // the same refusals as Postgres itself gives (code, message, CONTEXT)
    let direct = cluster.shard(0).client("app").await;
    for (sql, data) in [
        (
            "COPY accounts (aid, name) FROM STDIN",
            "1\ta\n2\tb\n3\tc\nabc\td\n",
        ),
        ("COPY accounts (aid, name) FROM STDIN", "1\ta\n\\N\tb\n"),
        ("COPY accounts (name, aid) FROM STDIN", "a\t1\nlonely\n"),
        (
            "COPY accounts (aid, name) FROM STDIN",
            "99999999999999999999\tx\n",
        ),
        ("COPY accounts (aid, name) FROM STDIN", "1\ta\r\n2\tb\n"),
        ("COPY accounts (aid, name) FROM STDIN", "1\ta\n\\.x\n"),
        ("COPY accounts (aid, name) FROM STDIN", "1\ta\n12\\303\tx\n"),
        ("COPY accounts (aid, name) FROM STDIN", "1\ta\n\\0\tx\n"),
        (
            "COPY accounts (name, aid) FROM STDIN WITH (FORMAT csv, HEADER)",
            "name,aid\nx,1\n\"a\nb\",2\n\"unterminated,3\n",
        ),
        (
            "COPY accounts (name, aid) FROM STDIN WITH (FORMAT csv)",
            "x,1\ny,\n",
        ),
    ] {
        let theirs = copy_data(&direct, sql, data).await.unwrap_err();
        let ours = copy_data(&proxy.client().await, sql, data)
            .await
            .unwrap_err();
        let (t, o) = (theirs.as_db_error().unwrap(), ours.as_db_error().unwrap());
        assert_eq!(
            (o.code(), o.message(), o.where_()),
            (t.code(), t.message(), t.where_()),
            "{data:?}"
        );
    }
    // an out-of-range key
    let e = copy("99999999999999999999\tx\n").await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::NUMERIC_VALUE_OUT_OF_RANGE));
    // a unique violation on the shard of 7: the other shards' rows are rolled back too
    let e = copy(Box::leak(
        format!("{many}7\tdup\n")
            .replace("abc\td\n", "")
            .into_boxed_str(),
    ))
    .await
    .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION), "{e}");
    // the client gives up (tokio-postgres sends CopyFail when the sink is dropped)
    {
        let sink = client
            .copy_in::<_, Bytes>("COPY accounts (aid, name) FROM STDIN")
            .await
            .unwrap();
        futures_util::pin_mut!(sink);
        sink.send(Bytes::from_static(b"500\tx\n501\ty\n"))
            .await
            .unwrap();
    }
    // nothing but the first row anywhere
    assert_eq!(aids_by_shard(&cluster).await.concat(), vec![7]);
    assert_eq!(assert_placed(&cluster, &toml).await, 1);
    // inside a transaction block: refused (on its own client: after a failed copy_in
    // tokio-postgres mistakes the replies to its CopyFail for the next statement's, with
    // plain Postgres too)
    let other = proxy.client().await;
    other.batch_execute("BEGIN").await.unwrap();
    let e = other
        .copy_in::<_, Bytes>("COPY accounts (aid, name) FROM STDIN")
        .await
        .err()
        .expect("COPY in a transaction block refused");
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    // simple protocol too
    let e = client
        .batch_execute("BEGIN; COPY accounts FROM STDIN")
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::FEATURE_NOT_SUPPORTED), "{e}");
    client.batch_execute("ROLLBACK").await.unwrap();
    // the session still works and a good COPY succeeds
    assert_eq!(copy("8\teight\n9\tnine\n").await.unwrap(), 2);
    assert_eq!(count(&client, "SELECT count(*) FROM accounts").await, 3);
    assert_eq!(
        owner(&toml, 8),
        aids_by_shard(&cluster)
            .await
            .iter()
            .position(|a| a.contains(&8))
            .unwrap()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copy_into_a_reference_table_reaches_every_copy() {
    let (cluster, proxy, _) = setup().await;
    let client = proxy.client().await;
    let sink = client
        .copy_in::<_, Bytes>("COPY kinds FROM STDIN WITH (FORMAT csv)")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"1,one\n2,\"t,wo\"\n"))
        .await
        .unwrap();
    sink.send(Bytes::from_static(b"3,three\n")).await.unwrap();
    // counted once, as one Postgres would
    assert_eq!(sink.finish().await.unwrap(), 3);
    for i in 0..cluster.len() {
        let rows = cluster
            .shard(i)
            .client("app")
            .await
            .query("SELECT id, label FROM kinds ORDER BY id", &[])
            .await
            .unwrap();
        let got: Vec<(i32, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        assert_eq!(
            got,
            vec![
                (1, "one".to_owned()),
                (2, "t,wo".to_owned()),
                (3, "three".to_owned())
            ],
            "shard {i}"
        );
    }
    // a duplicate fails everywhere
    let sink = client
        .copy_in::<_, Bytes>("COPY kinds FROM STDIN")
        .await
        .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(Bytes::from_static(b"4\tfour\n1\tagain\n"))
        .await
        .unwrap();
    let e = sink.finish().await.unwrap_err();
    assert_eq!(e.code(), Some(&SqlState::UNIQUE_VIOLATION));
    assert_eq!(count(&client, "SELECT count(*) FROM kinds").await, 3);
    // psql's COPY out of a reference table: one copy
    let (ok, out, err) = psql(
        &proxy.url("app", "app"),
        &["COPY kinds TO STDOUT".to_owned()],
    )
    .await;
    assert!(ok, "{err}");
    assert_eq!(out.lines().count(), 3, "{out}");
}
