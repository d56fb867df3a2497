//! Criterion benchmarks: rows per second through the scatter merges — concatenation,
//! the k-way ORDER BY merge (int8 in text and binary, text), and GROUP BY recombining
//! count and sum — over three shards' replies of 10,000 rows each.
use std::hint::black_box;

use bytes::BytesMut;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use pgshard::scatter::combine::{Options, merge_by_plan};
use pgshard::scatter::concatenate;
use pgshard::scatter::plan::{AggFunc, Aggregate, Col, MergePlan, SortKey};

const SHARDS: usize = 3;
const ROWS: usize = 10_000;

fn message(tag: u8, body: &[u8], out: &mut BytesMut) {
    out.extend_from_slice(&[tag]);
    out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    out.extend_from_slice(body);
}

/// RowDescription of `(name, oid, typlen)` columns in `format`.
fn describe(cols: &[(&str, u32, i16)], format: i16, out: &mut BytesMut) {
    let mut body = (cols.len() as i16).to_be_bytes().to_vec();
    for (name, oid, typlen) in cols {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&[0; 6]);
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&typlen.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
    }
    message(b'T', &body, out);
}

fn data_row(fields: &[&[u8]], out: &mut BytesMut) {
    let mut body = (fields.len() as i16).to_be_bytes().to_vec();
    for f in fields {
        body.extend_from_slice(&(f.len() as i32).to_be_bytes());
        body.extend_from_slice(f);
    }
    message(b'D', &body, out);
}

fn complete(rows: usize, out: &mut BytesMut) {
    message(b'C', format!("SELECT {rows}\0").as_bytes(), out);
}

/// Three shards' replies: `row(shard, i)` gives the fields of row `i`.
fn replies(
    cols: &[(&str, u32, i16)],
    format: i16,
    row: impl Fn(usize, usize) -> Vec<Vec<u8>>,
) -> Vec<BytesMut> {
    (0..SHARDS)
        .map(|s| {
            let mut b = BytesMut::new();
            describe(cols, format, &mut b);
            for i in 0..ROWS {
                let fields = row(s, i);
                let refs: Vec<&[u8]> = fields.iter().map(Vec::as_slice).collect();
                data_row(&refs, &mut b);
            }
            complete(ROWS, &mut b);
            b
        })
        .collect()
}

fn ordered_by_first_column() -> MergePlan {
    MergePlan {
        order_by: vec![SortKey {
            col: Col::Visible(0),
            descending: false,
            nulls_first: false,
            collate_c: false,
        }],
        ..MergePlan::default()
    }
}

const OPTIONS: Options = Options {
    bytewise_text: true,
    added_portal_description: false,
};

/// int8 keys interleaved across shards (each shard sorted), a text and an int4 column.
fn int8_rows(binary: bool) -> Vec<BytesMut> {
    let cols = [("id", 20, 8), ("name", 25, -1), ("n", 23, 4)];
    replies(&cols, i16::from(binary), |s, i| {
        let id = (i * SHARDS + s) as i64;
        let name = format!("name-{id}").into_bytes();
        if binary {
            vec![
                id.to_be_bytes().to_vec(),
                name,
                ((id % 1000) as i32).to_be_bytes().to_vec(),
            ]
        } else {
            vec![
                id.to_string().into_bytes(),
                name,
                (id % 1000).to_string().into_bytes(),
            ]
        }
    })
}

fn merge(c: &mut Criterion) {
    let total = (SHARDS * ROWS) as u64;
    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(total));

    let text = int8_rows(false);
    g.bench_function("concatenate_3x10k_3cols", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            concatenate(black_box(&text), None, &mut out).unwrap();
            out
        })
    });

    let sorted = ordered_by_first_column();
    g.bench_function("order_by_int8_text", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            merge_by_plan(black_box(&text), &sorted, OPTIONS, &mut out).unwrap();
            out
        })
    });

    let binary = int8_rows(true);
    g.bench_function("order_by_int8_binary", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            merge_by_plan(black_box(&binary), &sorted, OPTIONS, &mut out).unwrap();
            out
        })
    });

    // SELECT k, count(*), sum(x) FROM t GROUP BY k: 100 groups, partials on every shard
    let partials = replies(
        &[("k", 23, 4), ("count", 20, 8), ("sum", 20, 8)],
        0,
        |s, i| {
            vec![
                (i % 100).to_string().into_bytes(),
                ((i + s) % 7).to_string().into_bytes(),
                (i as i64 * 1000 - 7).to_string().into_bytes(),
            ]
        },
    );
    let grouped = MergePlan {
        group_by: Some(vec![Col::Visible(0)]),
        aggregates: vec![
            Aggregate {
                col: Col::Visible(1),
                func: AggFunc::Count,
                collate_c: false,
            },
            Aggregate {
                col: Col::Visible(2),
                func: AggFunc::Sum,
                collate_c: false,
            },
        ],
        shards_sorted: false,
        ..MergePlan::default()
    };
    g.bench_function("group_by_int4_count_sum_100_groups", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            merge_by_plan(black_box(&partials), &grouped, OPTIONS, &mut out).unwrap();
            out
        })
    });

    // text keys, each shard sorted bytewise
    let names = replies(&[("name", 25, -1), ("id", 20, 8)], 0, |s, i| {
        let id = i * SHARDS + s;
        vec![
            format!("customer-{id:08}").into_bytes(),
            id.to_string().into_bytes(),
        ]
    });
    g.bench_function("order_by_text", |b| {
        b.iter(|| {
            let mut out = BytesMut::new();
            merge_by_plan(black_box(&names), &sorted, OPTIONS, &mut out).unwrap();
            out
        })
    });
    g.finish();
}

criterion_group!(benches, merge);
criterion_main!(benches);
