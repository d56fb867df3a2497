//! Real client programs through the proxy: psql and pgbench.

use std::process::Command;

use pgshard::devcluster::PgInstall;

use crate::harness::{Cluster, Proxy};

const PGBENCH_TABLES: &str = r#"
[[tables]]
name = "pgbench_accounts"
key = "aid"
type = "integer"
"#;

fn bin(name: &str) -> std::path::PathBuf {
    PgInstall::discover()
        .map(|i| i.tool(name))
        .unwrap_or_else(|e| panic!("Postgres binaries: {e}"))
}

/// Run a client program against the proxy; returns stdout, panics with stderr on failure.
async fn run_client(program: &str, args: Vec<String>, password: &str) -> String {
    let program = bin(program);
    let password = password.to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(&program)
            .args(&args)
            .env("PGPASSWORD", password)
            .env("PGCONNECT_TIMEOUT", "10")
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", program.display()))
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(output.status.success(), "client failed: {stderr}\n{stdout}");
    stdout + &stderr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_creates_inserts_and_reads_by_key() {
    let cluster = Cluster::start(2).await;
    let toml = cluster.shardmap_toml(
        "[[tables]]\nname = \"accounts\"\nkey = \"aid\"\ntype = \"bigint\"\n",
        4,
    );
    let proxy = Proxy::start(&toml).await;
    let url = proxy.url("app", "app");
    // one -c per statement: psql sends each as its own Query
    let script = [
        "CREATE TABLE accounts (aid bigint PRIMARY KEY, name text)",
        "INSERT INTO accounts VALUES (1, 'one')",
        "INSERT INTO accounts (name, aid) VALUES ('two', 2)",
        "BEGIN",
        "UPDATE accounts SET name = 'uno' WHERE aid = 1",
        "COMMIT",
        "SELECT name FROM accounts WHERE aid = 1",
        "SELECT name FROM accounts WHERE aid = 2",
    ];
    let mut args: Vec<String> = vec![
        url.clone(),
        "-X".into(),
        "-q".into(),
        "-t".into(),
        "-A".into(),
        "-v".into(),
        "ON_ERROR_STOP=1".into(),
    ];
    for stmt in script {
        args.push("-c".into());
        args.push(stmt.into());
    }
    let out = run_client("psql", args, "app").await;
    let lines: Vec<&str> = out.lines().filter(|l| !l.is_empty()).collect();
    assert_eq!(lines, ["uno", "two"], "{out}");
    // without a key, and not mergeable across shards: refused with a message naming
    // table and key, psql exits non-zero
    let bad = tokio::task::spawn_blocking({
        let psql = bin("psql");
        move || {
            Command::new(psql)
                .args([
                    url.as_str(),
                    "-X",
                    "-c",
                    "SELECT string_agg(name, ',') FROM accounts",
                ])
                .env("PGPASSWORD", "app")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("accounts") && err.contains("aid"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_describe_commands_name_tables_and_columns() {
    let cluster = Cluster::start(2).await;
    let proxy = Proxy::start(&cluster.shardmap_toml(crate::harness::ACCOUNTS, 4)).await;
    proxy
        .client()
        .await
        .batch_execute(
            "CREATE TABLE accounts (aid bigint PRIMARY KEY, owner_name text NOT NULL, \
             opened_at timestamptz); CREATE TABLE kinds (kind_id int PRIMARY KEY, label text)",
        )
        .await
        .unwrap();
    let url = proxy.url("app", "app");
    // \d and \dt are catalog queries (simple protocol, regex operators, pg_catalog joins)
    let out = run_client(
        "psql",
        vec![
            url,
            "-X".into(),
            "-v".into(),
            "ON_ERROR_STOP=1".into(),
            "-c".into(),
            "\\dt".into(),
            "-c".into(),
            "\\d accounts".into(),
            "-c".into(),
            "\\d".into(),
        ],
        "app",
    )
    .await;
    for expected in [
        "List of relations",
        "accounts",
        "kinds",
        "Table \"public.accounts\"",
        "aid",
        "bigint",
        "owner_name",
        "opened_at",
        "timestamp with time zone",
        "not null",
        "accounts_pkey",
    ] {
        assert!(
            out.contains(expected),
            "psql output lacks {expected:?}:\n{out}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgbench_select_only_over_two_shards() {
    let cluster = Cluster::start(2).await;
    // pgbench tables on every shard; each shard keeps only the accounts it owns
    // (contiguous slot ranges of 512 in the generated map)
    for i in 0..2 {
        let port = cluster.shard(i).port().to_string();
        run_client(
            "pgbench",
            vec![
                "-i".into(),
                "-s".into(),
                "1".into(),
                "-I".into(),
                "dtgp".into(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port,
                "-U".into(),
                "postgres".into(),
                "app".into(),
            ],
            "",
        )
        .await;
        let lo = i as i64 * 512;
        cluster
            .shard(i)
            .client("app")
            .await
            .execute(
                "DELETE FROM pgbench_accounts WHERE NOT \
                 ((hashint4extended(aid, 8816678312871386365) & 1023) + 227) & 1023 BETWEEN $1 AND $2",
                &[&lo, &(lo + 511)],
            )
            .await
            .unwrap();
    }
    let mut remaining = 0i64;
    for i in 0..2 {
        let n: i64 = cluster
            .shard(i)
            .client("app")
            .await
            .query_one("SELECT count(*) FROM pgbench_accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert!(n > 30_000 && n < 70_000, "shard {i} keeps {n} accounts");
        remaining += n;
    }
    assert_eq!(remaining, 100_000);
    let proxy = Proxy::start(&cluster.shardmap_toml(PGBENCH_TABLES, 4)).await;
    let port = proxy.addr().port().to_string();
    for mode in ["simple", "extended", "prepared"] {
        let out = run_client(
            "pgbench",
            vec![
                "-S".into(),
                "-n".into(),
                "-M".into(),
                mode.into(),
                "-c".into(),
                "4".into(),
                "-j".into(),
                "2".into(),
                "-t".into(),
                "500".into(),
                "-h".into(),
                "127.0.0.1".into(),
                "-p".into(),
                port.clone(),
                "-U".into(),
                "app".into(),
                "app".into(),
            ],
            "app",
        )
        .await;
        assert!(
            out.contains("number of transactions actually processed: 2000/2000"),
            "pgbench -M {mode}:\n{out}"
        );
        assert!(
            out.contains("number of failed transactions: 0"),
            "pgbench -M {mode}:\n{out}"
        );
        let tps = out
            .lines()
            .find(|l| l.starts_with("tps"))
            .unwrap_or("tps = ?");
        eprintln!("pgbench -S -M {mode} through pgshard (2 shards): {tps}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pgshard_dev_prints_a_working_psql_line_and_stops_cleanly() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let dir = tempfile::tempdir().unwrap();
    let port = pgshard::devcluster::free_port().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_pgshard"))
        .args(["dev", "--shards", "2", "--listen"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("--dir")
        .arg(dir.path().join("dev"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let url = tokio::task::spawn_blocking(move || {
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(rest) = line.strip_prefix("connect:") {
                let url = rest
                    .trim()
                    .trim_start_matches("psql")
                    .trim()
                    .trim_matches('"');
                return url.to_owned();
            }
        }
        panic!("pgshard dev exited without printing the psql line");
    })
    .await
    .unwrap();
    let out = run_client(
        "psql",
        vec![
            url.clone(),
            "-X".into(),
            "-t".into(),
            "-A".into(),
            "-c".into(),
            "SELECT aid, name FROM accounts WHERE aid = 42".into(),
        ],
        "app",
    )
    .await;
    assert_eq!(out.trim(), "42|account 42", "{out}");
    // Ctrl-C: proxy and shards stop, exit status 0
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "pgshard dev exited with {status}");
    for shard in ["shard0", "shard1"] {
        let pidfile = dir
            .path()
            .join("dev")
            .join(shard)
            .join("data/postmaster.pid");
        assert!(!pidfile.exists(), "{shard} still running after Ctrl-C");
    }
}
