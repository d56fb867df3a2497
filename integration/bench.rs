//! `pgshard bench` against a 2-shard cluster: setup through the proxy, then the proxy and
//! shard 0 directly as two targets; the insert and scatter-top-n workloads; the binary's
//! --svg and --json files; a target that is down.
use std::time::{Duration, Instant};

use pgshard::bench::{self, BenchArgs, Protocol, Target, Workload};

use crate::harness::{Cluster, Proxy};

const BENCH_ACCOUNTS: &str = r#"
[[tables]]
name = "bench_accounts"
key = "aid"
type = "bigint"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_measures_proxy_and_direct_shard() {
    let cluster = Cluster::start(2).await;
    let proxy = Proxy::start(&cluster.shardmap_toml(BENCH_ACCOUNTS, 4)).await;
    let args = BenchArgs {
        targets: vec![
            Target {
                name: "proxy".into(),
                url: proxy.url("app", "app"),
            },
            Target {
                name: "s0".into(),
                url: cluster.shard_url(0),
            },
        ],
        workload: Workload::PointSelect,
        clients: 2,
        duration: Duration::from_secs(1),
        rounds: 1,
        protocol: Protocol::Extended,
        rows: 1200,
        setup: true,
    };
    let report = bench::run(&args).await.expect("bench runs");

    // setup went through the proxy: the DDL reached both shards and the rows were split
    let rows = shard_rows(&cluster).await;
    assert!(rows.iter().all(|&n| n > 0), "a shard got no rows: {rows:?}");
    assert_eq!(rows.iter().sum::<i64>(), 1200);

    assert_eq!(report.targets.len(), 2);
    for (t, name) in report.targets.iter().zip(["proxy", "s0"]) {
        assert_eq!(t.name, name);
        assert!(t.transactions > 0, "{name}: no transactions: {t:?}");
        assert_eq!(t.errors, 0, "{name}: {:?}", t.first_error);
        assert!(t.tps > 0.0 && t.p50_us > 0 && t.p50_us <= t.max_us, "{t:?}");
        assert_eq!(t.rounds.len(), 1);
    }
    assert_eq!(report.targets[0].ratio, 1.0);

    // a second --setup finds the table loaded and leaves it alone
    let again = BenchArgs {
        targets: vec![args.targets[0].clone()],
        workload: Workload::Mixed,
        protocol: Protocol::Prepared,
        duration: Duration::from_millis(300),
        ..args
    };
    let report = bench::run(&again).await.expect("second run");
    assert!(report.targets[0].transactions > 0);
    assert_eq!(
        report.targets[0].errors, 0,
        "{:?}",
        report.targets[0].first_error
    );

    // the scatter workload over the simple protocol, without setup
    let scatter = BenchArgs {
        workload: Workload::ScatterCount,
        protocol: Protocol::Simple,
        setup: false,
        ..again
    };
    let report = bench::run(&scatter).await.expect("scatter run");
    assert!(report.targets[0].transactions > 0);
    assert_eq!(
        report.targets[0].errors, 0,
        "{:?}",
        report.targets[0].first_error
    );
}

/// Rows of `bench_accounts` on each shard.
async fn shard_rows(cluster: &Cluster) -> Vec<i64> {
    let mut rows = Vec::new();
    for i in 0..cluster.len() {
        let n: i64 = cluster
            .shard(i)
            .client("app")
            .await
            .query_one("SELECT count(*) FROM bench_accounts", &[])
            .await
            .unwrap()
            .get(0);
        rows.push(n);
    }
    rows
}

/// Rows of `bench_accounts` over both shards.
async fn total_rows(cluster: &Cluster) -> i64 {
    shard_rows(cluster).await.iter().sum()
}

fn assert_clean(report: &bench::Report) {
    for t in &report.targets {
        assert!(t.transactions > 0, "{}: no transactions: {t:?}", t.name);
        assert_eq!(t.errors, 0, "{}: {:?}", t.name, t.first_error);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_insert_and_scatter_top_n() {
    let cluster = Cluster::start(2).await;
    let proxy = Proxy::start(&cluster.shardmap_toml(BENCH_ACCOUNTS, 4)).await;
    let proxy_target = Target {
        name: "proxy".into(),
        url: proxy.url("app", "app"),
    };
    let insert = BenchArgs {
        targets: vec![proxy_target.clone()],
        workload: Workload::Insert,
        clients: 3,
        duration: Duration::from_millis(400),
        rounds: 2,
        protocol: Protocol::Prepared,
        rows: 300,
        setup: true,
    };
    let report = bench::run(&insert).await.expect("insert run");
    assert_clean(&report);
    let inserted = report.targets[0].transactions as i64;
    assert_eq!(total_rows(&cluster).await, 300 + inserted);

    // a repeated run (other protocol, with --setup again) starts above the rows the first
    // one inserted: no duplicate keys, and --setup ignores rows above --rows
    let again = BenchArgs {
        protocol: Protocol::Simple,
        rounds: 1,
        ..insert.clone()
    };
    let report = bench::run(&again).await.expect("second insert run");
    assert_clean(&report);
    let inserted = inserted + report.targets[0].transactions as i64;
    assert_eq!(total_rows(&cluster).await, 300 + inserted);
    let client = proxy.client().await;
    let loaded: i64 = client
        .query_one("SELECT count(*) FROM bench_accounts WHERE aid <= 300", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(loaded, 300);

    // distinct balances, set on the shards directly, with ties so the key order counts
    for i in 0..2 {
        cluster
            .shard(i)
            .client("app")
            .await
            .simple_query("UPDATE bench_accounts SET abalance = (aid * 7919) % 97")
            .await
            .unwrap();
    }
    // the proxy's answer to the workload's exact text …
    let rows = client.simple_query(bench::workload::TOP_N).await.unwrap();
    let got: Vec<(i64, i32)> = rows
        .iter()
        .filter_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some((
                r.get(0).unwrap().parse().unwrap(),
                r.get(1).unwrap().parse().unwrap(),
            )),
            _ => None,
        })
        .collect();
    // … equals the same query on each shard, merged here
    let mut all: Vec<(i64, i32)> = Vec::new();
    for i in 0..2 {
        for r in cluster
            .shard(i)
            .client("app")
            .await
            .query(bench::workload::TOP_N, &[])
            .await
            .unwrap()
        {
            all.push((r.get(0), r.get(1)));
        }
    }
    all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    all.truncate(10);
    assert_eq!(got.len(), 10);
    assert_eq!(got, all);
    assert_eq!(got[0].1, 96, "{got:?}");

    // the workload itself, over each protocol
    for protocol in [Protocol::Simple, Protocol::Extended, Protocol::Prepared] {
        let top = BenchArgs {
            workload: Workload::ScatterTopN,
            protocol,
            duration: Duration::from_millis(300),
            rounds: 1,
            setup: false,
            ..insert.clone()
        };
        let report = bench::run(&top).await.expect("scatter-top-n run");
        assert_clean(&report);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_writes_svg_and_json() {
    let cluster = Cluster::start(2).await;
    let proxy = Proxy::start(&cluster.shardmap_toml(BENCH_ACCOUNTS, 4)).await;
    let dir = tempfile::tempdir().unwrap();
    let (svg, json) = (dir.path().join("bench.svg"), dir.path().join("bench.json"));
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_pgshard"));
    cmd.args(["bench", "--setup", "--rows", "200", "--clients", "2"])
        .args(["--duration", "300ms", "--rounds", "1", "--quiet"])
        .args(["--workload", "point-select,insert"])
        .arg("--target")
        .arg(format!("via-proxy={}", proxy.url("app", "app")))
        .arg("--target")
        .arg(format!("shard-zero={}", cluster.shard_url(0)))
        .arg("--svg")
        .arg(&svg)
        .arg("--json")
        .arg(&json);
    let out = cmd.output().await.expect("run pgshard bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{:?}\n{stdout}\n{stderr}", out.status);
    // no progress bar output when stderr is not a terminal
    assert!(stderr.is_empty(), "{stderr}");
    assert!(stdout.contains("workload point-select") && stdout.contains("workload insert"));

    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.starts_with("<svg"), "{}", &text[..text.len().min(200)]);
    assert!(text.trim_end().ends_with("</svg>"));
    let texts = bench::chart::texts(&text);
    for label in [
        "via-proxy / point-select",
        "shard-zero / point-select",
        "via-proxy / insert",
        "shard-zero / insert",
        "Throughput",
        "p99 latency",
    ] {
        assert!(texts.iter().any(|t| t == label), "no {label}: {texts:?}");
    }

    let reports: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(reports[0]["workload"], "point-select");
    assert_eq!(reports[1]["workload"], "insert");
    assert_eq!(reports[1]["targets"][1]["name"], "shard-zero");
    assert_eq!(reports[1]["targets"][0]["errors"], 0);
}

#[tokio::test]
async fn down_target_counts_errors_without_spinning() {
    // a port nobody listens on: bind, read the port, close
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let args = BenchArgs {
        targets: vec![Target {
            name: "nowhere".into(),
            url: format!("postgres://app:app@127.0.0.1:{port}/app"),
        }],
        workload: Workload::PointSelect,
        clients: 2,
        duration: Duration::from_secs(1),
        rounds: 1,
        protocol: Protocol::Prepared,
        rows: 10,
        setup: false,
    };
    let t0 = Instant::now();
    let report = bench::run(&args).await.expect("a down target is measured");
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "{took:?}"
    );
    let t = &report.targets[0];
    assert_eq!(t.transactions, 0);
    // backoff 10, 20, 40 … 640 ms: about 8 attempts per client in one second
    assert!((2..=40).contains(&t.errors), "{} errors", t.errors);
    let first = t.first_error.as_deref().unwrap_or_default();
    assert!(
        first.starts_with("cannot connect to target nowhere:"),
        "{first}"
    );
    assert!(bench::table::render(&report).contains("nowhere: first error: cannot connect"));

    // --setup needs the first target: that stays a hard error naming it
    let err = bench::run(&BenchArgs {
        setup: true,
        ..args
    })
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.starts_with("cannot connect to target nowhere:"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_reconnect_after_their_connections_are_killed() {
    let cluster = Cluster::start(1).await;
    let url = format!("{}?application_name=bench_reconnect", cluster.shard_url(0));
    let args = BenchArgs {
        targets: vec![Target {
            name: "s0".into(),
            url,
        }],
        workload: Workload::PointSelect,
        clients: 2,
        duration: Duration::from_millis(1500),
        rounds: 1,
        protocol: Protocol::Prepared,
        rows: 50,
        setup: true,
    };
    let run = tokio::spawn(async move { bench::run(&args).await });
    let admin = cluster.shard(0).client("app").await;
    let pids =
        |rows: Vec<tokio_postgres::Row>| -> Vec<i32> { rows.iter().map(|r| r.get(0)).collect() };
    let backends = "SELECT pid FROM pg_stat_activity WHERE application_name = 'bench_reconnect'";
    tokio::time::sleep(Duration::from_millis(400)).await;
    let before = pids(admin.query(backends, &[]).await.unwrap());
    assert_eq!(before.len(), 2, "{before:?}");
    admin
        .query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'bench_reconnect'",
            &[],
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = pids(admin.query(backends, &[]).await.unwrap());
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(
        after.iter().all(|p| !before.contains(p)),
        "{before:?} {after:?}"
    );

    let report = run.await.unwrap().expect("run");
    let t = &report.targets[0];
    assert!(t.transactions > 0);
    // at most the statements in flight when the connections died, and a few retries
    assert!(t.errors <= 10, "{} errors: {:?}", t.errors, t.first_error);
}
