//! Rebalance planning against real shards: the in-server slot expression agrees with
//! pgshard's own slot for every key type, and a plan's row counts are exactly the rows
//! of the moving slots.
use pgshard::config::Config;
use pgshard::rebalance::estimate::slot_of_literal;
use pgshard::rebalance::{Layout, ShardChange, estimate, plan};
use pgshard::sharding::{KeyType, KeyValue};

use tokio_postgres::Client;

use crate::harness::{Cluster, Proxy};

const TABLES: &str = r#"
[[tables]]
name = "items"
key = "id"
type = "bigint"

[[tables]]
name = "people"
key = "email"
type = "text"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slot_expression_matches_the_router_for_every_key_type() {
    let cluster = Cluster::start(1).await;
    let config = pgshard::config::parse(&cluster.shardmap_toml(TABLES, 2), "test").unwrap();
    let map = &config.map;
    let client = cluster.shard(0).client("app").await;
    let mut checked = 0;
    let ints: Vec<i64> = (-300..300)
        .chain([i64::MIN, i64::MAX, i32::MIN as i64, i32::MAX as i64])
        .chain((0..200).map(|i| i * 7_919_000_003))
        .collect();
    let texts: Vec<String> = (0..300)
        .map(|i| format!("user-{i}@example.com"))
        .chain(["".to_owned(), "ü∂ ß".to_owned(), "x".repeat(300)])
        .collect();
    let uuids: Vec<String> = (0..200u128)
        .map(|i| {
            let v = i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835);
            let h = format!("{v:032x}");
            format!(
                "{}-{}-{}-{}-{}",
                &h[..8],
                &h[8..12],
                &h[12..16],
                &h[16..20],
                &h[20..]
            )
        })
        .collect();
    let mut cases: Vec<(String, KeyType, KeyValue)> = Vec::new();
    for k in &ints {
        cases.push((k.to_string(), KeyType::BigInt, KeyValue::Int(*k)));
        if let Ok(k32) = i32::try_from(*k) {
            cases.push((k32.to_string(), KeyType::Integer, KeyValue::Int(*k)));
        }
        if let Ok(k16) = i16::try_from(*k) {
            cases.push((k16.to_string(), KeyType::SmallInt, KeyValue::Int(*k)));
        }
    }
    for t in &texts {
        cases.push((
            t.clone(),
            KeyType::Text,
            KeyType::Text.parse_text(t).unwrap(),
        ));
    }
    for u in &uuids {
        cases.push((
            u.clone(),
            KeyType::Uuid,
            KeyType::Uuid.parse_text(u).unwrap(),
        ));
    }
    for chunk in cases.chunks(200) {
        let exprs: Vec<String> = chunk
            .iter()
            .map(|(v, ty, _)| slot_of_literal(v, *ty, map.slots))
            .collect();
        let row = client
            .query_one(&format!("SELECT ARRAY[{}]::int8[]", exprs.join(", ")), &[])
            .await
            .unwrap();
        let slots: Vec<i64> = row.get(0);
        for ((v, ty, key), slot) in chunk.iter().zip(slots) {
            assert_eq!(slot as u32, map.locate(key).0, "{ty:?} {v}");
            checked += 1;
        }
    }
    assert!(checked > 1500, "{checked}");
}

/// Two shards behind a proxy, the sharded tables created through it.
async fn two_shards_with_tables() -> (Cluster, String, Config, Proxy, Client) {
    let cluster = Cluster::start(2).await;
    let toml = cluster.shardmap_toml(TABLES, 4);
    let config = pgshard::config::parse(&toml, "test").unwrap();
    let proxy = Proxy::start(&toml).await;
    let client = proxy.client().await;
    client
        .batch_execute(
            "CREATE TABLE items (id bigint PRIMARY KEY, note text);
             CREATE TABLE people (email text PRIMARY KEY, name text)",
        )
        .await
        .unwrap();
    (cluster, toml, config, proxy, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plan_counts_exactly_the_rows_of_the_moving_slots() {
    let (_cluster, _toml, config, proxy, client) = two_shards_with_tables().await;
    // rows through the proxy, so each lands on the shard owning its slot
    let ids: Vec<i64> = (1..=3000).map(|i| i * 37 - 1000).collect();
    for chunk in ids.chunks(500) {
        let values: Vec<String> = chunk.iter().map(|i| format!("({i}, 'n{i}')")).collect();
        client
            .batch_execute(&format!("INSERT INTO items VALUES {}", values.join(", ")))
            .await
            .unwrap();
    }
    let emails: Vec<String> = (0..800).map(|i| format!("p{i}@example.org")).collect();
    let values: Vec<String> = emails.iter().map(|e| format!("('{e}', 'x')")).collect();
    client
        .batch_execute(&format!("INSERT INTO people VALUES {}", values.join(", ")))
        .await
        .unwrap();

    let layout = Layout {
        shards: config.shards.iter().map(|s| (s.name.clone(), 1)).collect(),
        owner: config.map.slot_owner.clone(),
        vnodes: config.map.vnodes,
    };
    let plan = plan(
        &layout,
        &[ShardChange::Add {
            name: "s9".into(),
            weight: 1,
        }],
    )
    .unwrap();
    let counted = estimate(&config, &plan).await.unwrap();

    // expected, from pgshard's own slot of every key: the rows whose slot changes owner
    let mut expected = std::collections::BTreeMap::new();
    let keys = ids
        .iter()
        .map(|i| ("items", KeyValue::Int(*i)))
        .chain(emails.iter().map(|e| ("people", KeyValue::Text(e.clone()))));
    let mut total = 0u64;
    for (table, key) in keys {
        total += 1;
        let (slot, from) = config.map.locate(&key);
        let to = plan.owner[slot as usize];
        if plan.shards[to] != config.shards[from].name {
            *expected
                .entry((
                    config.shards[from].name.clone(),
                    plan.shards[to].clone(),
                    table,
                ))
                .or_insert(0u64) += 1;
        }
    }
    let got: std::collections::BTreeMap<_, _> = counted
        .moves
        .iter()
        .map(|m| ((m.from.clone(), m.to.clone(), m.table.as_str()), m.rows))
        .collect();
    assert_eq!(got, expected);
    assert_eq!(counted.total_rows, total);
    assert!(counted.moved_rows() > 0 && counted.moved_rows() < total);
    assert!(counted.moves.iter().all(|m| m.bytes > 0 && m.to == "s9"));
    proxy.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_finds_a_row_on_the_wrong_shard() {
    let (cluster, toml, config, proxy, client) = two_shards_with_tables().await;
    let values: Vec<String> = (1..=1000).map(|i| format!("({i}, 'n')")).collect();
    client
        .batch_execute(&format!("INSERT INTO items VALUES {}", values.join(", ")))
        .await
        .unwrap();
    let report = pgshard::rebalance::verify(&config).await.unwrap();
    assert!(report.ok(), "{report:?}");
    assert_eq!(report.rows, 1000);
    assert_eq!(report.tables_checked, 4);

    // a row written straight to the shard that does not own its key
    let key = 5_000_000i64;
    let (slot, owner) = config.map.locate(&KeyValue::Int(key));
    let wrong = 1 - owner;
    cluster
        .shard(wrong)
        .client("app")
        .await
        .batch_execute(&format!("INSERT INTO items VALUES ({key}, 'stray')"))
        .await
        .unwrap();
    let report = pgshard::rebalance::verify(&config).await.unwrap();
    assert_eq!(
        report.misplaced,
        vec![pgshard::rebalance::Misplaced {
            shard: format!("s{wrong}"),
            table: "items".into(),
            slot,
            owner: format!("s{owner}"),
            rows: 1,
        }]
    );

    // the binary: exit 1 with the report, 0 once the stray row is gone
    let dir = tempfile::tempdir().unwrap();
    let map_path = dir.path().join("shardmap.toml");
    std::fs::write(&map_path, &toml).unwrap();
    let run = || {
        std::process::Command::new(env!("CARGO_BIN_EXE_pgshard"))
            .args(["rebalance", "verify", "-c"])
            .arg(&map_path)
            .output()
            .unwrap()
    };
    let out = run();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "s{wrong} items: slot {slot} (1 rows) belongs to s{owner}"
        )),
        "{stdout}"
    );
    cluster
        .shard(wrong)
        .client("app")
        .await
        .batch_execute(&format!("DELETE FROM items WHERE id = {key}"))
        .await
        .unwrap();
    let out = run();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    proxy.stop().await.unwrap();
}
