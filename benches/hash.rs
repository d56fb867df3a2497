//! Criterion benchmarks: key hashing and slot lookup, the per-query cost of routing a key.
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pgshard::sharding::{KeyValue, ShardId, slot_of};

const SLOTS: u32 = 1024;

/// A slot table like the shard map's: slot → shard, four shards.
fn slot_table() -> Vec<ShardId> {
    (0..SLOTS as usize).map(|s| s % 4).collect()
}

fn route(key: &KeyValue, table: &[ShardId]) -> ShardId {
    table[slot_of(key.partition_hash(), SLOTS) as usize]
}

fn bench(c: &mut Criterion) {
    let table = slot_table();
    let ints: Vec<KeyValue> = (0..64i64)
        .map(|i| KeyValue::Int(i.wrapping_mul(0x9e37_79b9_7f4a_7c15u64 as i64)))
        .collect();
    let texts: Vec<KeyValue> = (0..64)
        .map(|i| KeyValue::Text(format!("user-{i:011}")))
        .collect();
    assert!(
        texts
            .iter()
            .all(|k| matches!(k, KeyValue::Text(s) if s.len() == 16))
    );

    let mut group = c.benchmark_group("route_key");
    group.bench_function("bigint", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % ints.len();
            route(black_box(&ints[i]), &table)
        })
    });
    group.bench_function("text16", |b| {
        let mut i = 0;
        b.iter(|| {
            i = (i + 1) % texts.len();
            route(black_box(&texts[i]), &table)
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
