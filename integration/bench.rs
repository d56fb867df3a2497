//! `pgshard bench` against a 2-shard cluster: setup through the proxy, then the proxy and
//! shard 0 directly as two targets.
use std::time::Duration;

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
    let mut total = 0;
    for i in 0..2 {
        let n: i64 = cluster
            .shard(i)
            .client("app")
            .await
            .query_one("SELECT count(*) FROM bench_accounts", &[])
            .await
            .unwrap()
            .get(0);
        assert!(n > 0, "shard {i} got no rows");
        total += n;
    }
    assert_eq!(total, 1200);

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

#[tokio::test]
async fn unreachable_target_is_named() {
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
        clients: 1,
        duration: Duration::from_millis(100),
        rounds: 1,
        protocol: Protocol::Simple,
        rows: 10,
        setup: false,
    };
    let err = bench::run(&args).await.unwrap_err().to_string();
    assert!(
        err.starts_with("cannot connect to target nowhere:"),
        "{err}"
    );
}
