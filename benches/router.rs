//! Criterion benchmarks: the per-statement cost of routing, uncached (parse + route) and
//! from a cached analysis (the hot path once the plan cache is warm).
use std::collections::HashMap;
use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use pgshard::config::{ShardMap, TableRule, UnparsedPolicy};
use pgshard::router::{NoOrdinals, NoParams, Param, ParamSource, RouteInput, route};
use pgshard::sharding::KeyType;
use pgshard::sql::{PlanCache, analyze};

const SLOTS: u32 = 1024;

fn map() -> ShardMap {
    let mut tables = HashMap::new();
    for name in ["pgbench_accounts", "pgbench_history"] {
        tables.insert(
            name.to_owned(),
            TableRule {
                name: name.to_owned(),
                key: "aid".to_owned(),
                key_type: KeyType::Integer,
            },
        );
    }
    ShardMap {
        epoch: 1,
        slots: SLOTS,
        shard_names: (0..4).map(|i| format!("s{i}")).collect(),
        slot_owner: (0..SLOTS as usize).map(|s| s % 4).collect(),
        tables,
        default_shard: 0,
        vnodes: 64,
        broadcast_writes: false,
        replicated: Default::default(),
    }
}

/// One text-format parameter, as Bind delivers it.
struct OneParam<'a>(&'a [u8]);
impl ParamSource for OneParam<'_> {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        (n == 1).then_some(Param::Text(self.0))
    }
}

const POINT_SELECT: &str = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
const UPDATE: &str = "UPDATE pgbench_accounts SET abalance = abalance + $2 WHERE aid = $1";

fn bench(c: &mut Criterion) {
    let map = map();
    let params = OneParam(b"123456");

    c.bench_function("router/parse+route point select", |b| {
        b.iter(|| {
            let analysis = analyze(black_box(POINT_SELECT));
            let input = RouteInput {
                sql: POINT_SELECT,
                analysis: &analysis,
                params: &params,
                ordinals: &NoOrdinals,
            };
            route(&input, &map, UnparsedPolicy::Refuse).expect("routes")
        })
    });

    for (name, sql) in [("point select", POINT_SELECT), ("update", UPDATE)] {
        let analysis = analyze(sql);
        c.bench_function(&format!("router/route cached {name}"), |b| {
            b.iter(|| {
                let input = RouteInput {
                    sql,
                    analysis: black_box(&analysis),
                    params: &params,
                    ordinals: &NoOrdinals,
                };
                route(&input, &map, UnparsedPolicy::Refuse).expect("routes")
            })
        });
    }

    let cache = PlanCache::new(1024);
    cache.get(POINT_SELECT);
    c.bench_function("router/plan cache hit + route point select", |b| {
        b.iter(|| {
            let analysis = cache.get(black_box(POINT_SELECT));
            let input = RouteInput {
                sql: POINT_SELECT,
                analysis: &analysis,
                params: &params,
                ordinals: &NoOrdinals,
            };
            route(&input, &map, UnparsedPolicy::Refuse).expect("routes")
        })
    });

    // The simple protocol: a literal key, a different one each time (as pgbench -M
    // simple sends them). Without lifting every statement is a parse; with it, the
    // shape is a cache hit and the constant a parameter.
    let mut n = 0u64;
    c.bench_function("router/simple literal, lifted shape hit + route", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919) % 100_000;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n};");
            let (analysis, lifted) = cache.get_lifted(black_box(&sql)).expect("lifts");
            let input = RouteInput {
                sql: &sql,
                analysis: &analysis,
                params: &lifted,
                ordinals: &NoOrdinals,
            };
            route(&input, &map, UnparsedPolicy::Refuse).expect("routes")
        })
    });
    c.bench_function("router/simple literal, parse + route (no lifting)", |b| {
        b.iter(|| {
            n = n.wrapping_add(7919) % 100_000;
            let sql = format!("SELECT abalance FROM pgbench_accounts WHERE aid = {n};");
            let analysis = analyze(black_box(&sql));
            let input = RouteInput {
                sql: &sql,
                analysis: &analysis,
                params: &NoParams,
                ordinals: &NoOrdinals,
            };
            route(&input, &map, UnparsedPolicy::Refuse).expect("routes")
        })
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
