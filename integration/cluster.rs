//! The harness itself: shards start, hold database `app`, and go away when dropped.

use crate::harness::{Cluster, PgServer};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_shards_serve_the_app_database() {
    let cluster = Cluster::start(2).await;
    assert_eq!(cluster.len(), 2);
    assert_ne!(cluster.shard(0).port(), cluster.shard(1).port());
    for i in 0..cluster.len() {
        let client = cluster.shard(i).client("app").await;
        let row = client
            .query_one("SELECT 1::int4, current_database()::text", &[])
            .await
            .expect("query the shard");
        assert_eq!(row.get::<_, i32>(0), 1);
        assert_eq!(row.get::<_, String>(1), "app");
        assert_eq!(
            cluster.shard_url(i),
            format!(
                "postgres://postgres@127.0.0.1:{}/app",
                cluster.shard(i).port()
            )
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_are_independent_servers() {
    let cluster = Cluster::start(2).await;
    let s0 = cluster.shard(0).client("app").await;
    s0.batch_execute("CREATE TABLE only_here (id int)")
        .await
        .expect("create a table on s0");
    let s1 = cluster.shard(1).client("app").await;
    let row = s1
        .query_one("SELECT to_regclass('only_here') IS NULL", &[])
        .await
        .expect("look for the table on s1");
    assert!(row.get::<_, bool>(0), "s1 must not see s0's table");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dropped_server_is_stopped_and_removed() {
    let server = PgServer::start().await;
    let port = server.port();
    let dir = server.cluster().dir().to_path_buf();
    assert!(dir.join("data/PG_VERSION").is_file());
    drop(server);
    assert!(
        tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err(),
        "nothing may listen on {port} after drop"
    );
    assert!(!dir.exists(), "{} must be removed", dir.display());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_map_covers_every_slot_once() {
    let cluster = Cluster::start(2).await;
    let text = cluster.shardmap_toml(
        "[[tables]]\nname = \"accounts\"\nkey = \"aid\"\ntype = \"bigint\"\n",
        4,
    );
    let doc: toml::Table = text.parse().expect("valid TOML");
    assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:0"));
    assert_eq!(doc["server"]["pool_size"].as_integer(), Some(4));
    assert_eq!(
        doc["shards"][1]["url"].as_str(),
        Some(cluster.shard_url(1).as_str())
    );
    assert_eq!(doc["tables"][0]["name"].as_str(), Some("accounts"));
    assert_eq!(doc["slot_map"]["s0"][0].as_str(), Some("0-511"));
    assert_eq!(doc["slot_map"]["s1"][0].as_str(), Some("512-1023"));
}
