//! Unit tests of `merge_by_plan`: per-shard replies built from RowDescription, DataRow
//! and CommandComplete messages, merged by hand-built plans, checked message by message.

use bytes::BytesMut;

use super::*;
use crate::protocol::reply;
use crate::scatter::plan::Condition;

const BOOL: u32 = 16;
const INT8: u32 = 20;
const INT4: u32 = 23;
const TEXT: u32 = 25;
const JSON: u32 = 114;
const NUMERIC: u32 = 1700;

/// A test field: NULL or bytes.
type F = Option<Vec<u8>>;

fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut m = vec![tag];
    m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
    m.extend_from_slice(body);
    m
}

/// RowDescription of `(name, type oid, typlen)` columns, all in `format`.
fn describe(cols: &[(&str, u32, i16)], format: i16) -> Vec<u8> {
    let mut body = (cols.len() as i16).to_be_bytes().to_vec();
    for (name, oid, typlen) in cols {
        body.extend_from_slice(name.as_bytes());
        body.push(0);
        body.extend_from_slice(&16384u32.to_be_bytes());
        body.extend_from_slice(&1i16.to_be_bytes());
        body.extend_from_slice(&oid.to_be_bytes());
        body.extend_from_slice(&typlen.to_be_bytes());
        body.extend_from_slice(&(-1i32).to_be_bytes());
        body.extend_from_slice(&format.to_be_bytes());
    }
    msg(b'T', &body)
}

fn data_row_msg(fields: &[F]) -> Vec<u8> {
    let mut body = (fields.len() as i16).to_be_bytes().to_vec();
    for f in fields {
        match f {
            None => body.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                body.extend_from_slice(&(v.len() as i32).to_be_bytes());
                body.extend_from_slice(v);
            }
        }
    }
    msg(b'D', &body)
}

/// One shard's reply: RowDescription, rows, `SELECT n`, ReadyForQuery.
fn reply_of(desc: &[u8], rows: &[Vec<F>]) -> BytesMut {
    let mut b = BytesMut::from(desc);
    for r in rows {
        b.extend_from_slice(&data_row_msg(r));
    }
    reply::command_complete(&format!("SELECT {}", rows.len()), &mut b);
    reply::ready_for_query(reply::TxnStatus::Idle, &mut b);
    b
}

fn t(s: &str) -> F {
    Some(s.as_bytes().to_vec())
}

fn b8(v: i64) -> F {
    Some(v.to_be_bytes().to_vec())
}

fn b4(v: i32) -> F {
    Some(v.to_be_bytes().to_vec())
}

fn bnum(s: &str) -> F {
    let mut out = Vec::new();
    Numeric::parse_text(s.as_bytes())
        .expect("valid numeric literal")
        .write_binary(&mut out);
    Some(out)
}

fn bbool(b: bool) -> F {
    Some(vec![u8::from(b)])
}

/// Split a buffer of whole messages.
fn split(out: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut msgs = Vec::new();
    let mut rest = out;
    while !rest.is_empty() {
        let len = i32::from_be_bytes(rest[1..5].try_into().unwrap()) as usize;
        msgs.push((rest[0], rest[5..1 + len].to_vec()));
        rest = &rest[1 + len..];
    }
    msgs
}

fn tags(out: &[u8]) -> String {
    split(out).iter().map(|m| m.0 as char).collect()
}

/// The fields of every DataRow of `out` (checking each row's own length fields).
fn rows(out: &[u8]) -> Vec<Vec<F>> {
    split(out)
        .into_iter()
        .filter(|m| m.0 == b'D')
        .map(|(_, body)| {
            let n = i16::from_be_bytes([body[0], body[1]]) as usize;
            let mut rest = &body[2..];
            let mut fields = Vec::new();
            for _ in 0..n {
                let len = i32::from_be_bytes(rest[..4].try_into().unwrap());
                rest = &rest[4..];
                if len < 0 {
                    fields.push(None);
                } else {
                    fields.push(Some(rest[..len as usize].to_vec()));
                    rest = &rest[len as usize..];
                }
            }
            assert!(rest.is_empty(), "DataRow longer than its fields");
            fields
        })
        .collect()
}

/// Text rows as strings, NULL as "NULL".
fn text_rows(out: &[u8]) -> Vec<Vec<String>> {
    rows(out)
        .into_iter()
        .map(|r| {
            r.into_iter()
                .map(|f| f.map_or("NULL".to_owned(), |v| String::from_utf8(v).unwrap()))
                .collect()
        })
        .collect()
}

/// `(name, oid, typlen, typmod, format)` of the RowDescription in `out`.
fn out_description(out: &[u8]) -> Vec<(String, u32, i16, i32, i16)> {
    let (_, body) = split(out)
        .into_iter()
        .find(|m| m.0 == b'T')
        .expect("a RowDescription");
    describe_fields(&msg(b'T', &body))
        .expect("a well-formed RowDescription")
        .into_iter()
        .map(|f| {
            (
                String::from_utf8(f.name.to_vec()).unwrap(),
                f.oid,
                f.typlen,
                f.typmod,
                f.format,
            )
        })
        .collect()
}

fn command(out: &[u8]) -> String {
    let (_, body) = split(out)
        .into_iter()
        .rfind(|m| m.0 == b'C')
        .expect("a CommandComplete");
    String::from_utf8(body[..body.len() - 1].to_vec()).unwrap()
}

/// A plain concatenation plan, for the tests to adjust field by field.
fn plan() -> MergePlan {
    MergePlan::default()
}

fn key(col: Col, descending: bool, nulls_first: bool) -> SortKey {
    SortKey {
        col,
        descending,
        nulls_first,
        collate_c: false,
    }
}

fn agg(col: Col, func: AggFunc) -> Aggregate {
    Aggregate {
        col,
        func,
        collate_c: false,
    }
}

const OPTS: Options = Options {
    bytewise_text: false,
    added_portal_description: false,
};

fn run(replies: &[BytesMut], plan: &MergePlan) -> Result<BytesMut, MergeError> {
    run_with(replies, plan, OPTS)
}

fn run_with(
    replies: &[BytesMut],
    plan: &MergePlan,
    options: Options,
) -> Result<BytesMut, MergeError> {
    let mut out = BytesMut::new();
    assert_eq!(
        merge_by_plan(replies, plan, options, &mut out)?,
        Merged::Rows
    );
    Ok(out)
}

// ---- ORDER BY ----

/// `(n int8, tag text)` rows in text.
fn nt_shard(rows: &[(Option<i64>, &str)]) -> BytesMut {
    let desc = describe(&[("n", INT8, 8), ("tag", TEXT, -1)], 0);
    let rows: Vec<Vec<F>> = rows
        .iter()
        .map(|(n, tag)| vec![n.map(|n| n.to_string().into_bytes()), t(tag)])
        .collect();
    reply_of(&desc, &rows)
}

#[test]
fn k_way_merge_ascending_nulls_last_keeps_shard_order_on_ties() {
    let replies = [
        nt_shard(&[(Some(1), "a"), (Some(4), "b"), (None, "c")]),
        nt_shard(&[(Some(1), "d"), (Some(3), "e"), (None, "f")]),
        nt_shard(&[]),
        nt_shard(&[(Some(-7), "g"), (Some(4), "h")]),
    ];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    let out = run(&replies, &p).unwrap();
    assert_eq!(tags(&out), "TDDDDDDDDC");
    assert_eq!(
        text_rows(&out),
        [
            ["-7", "g"],
            ["1", "a"],
            ["1", "d"],
            ["3", "e"],
            ["4", "b"],
            ["4", "h"],
            ["NULL", "c"],
            ["NULL", "f"],
        ]
    );
    assert_eq!(command(&out), "SELECT 8");
    // the client's RowDescription is the shards' own when nothing is hidden
    assert_eq!(&split(&out)[0].1, &split(&replies[0])[0].1);
}

#[test]
fn k_way_merge_descending_with_nulls_first_and_last() {
    // DESC (NULLS FIRST is Postgres' default for DESC)
    let replies = [
        nt_shard(&[(None, "a"), (Some(9), "b"), (Some(5), "c"), (Some(1), "d")]),
        nt_shard(&[(None, "e"), (Some(8), "f"), (Some(5), "g"), (Some(-2), "h")]),
    ];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), true, true)];
    let out = run(&replies, &p).unwrap();
    let got: Vec<String> = text_rows(&out).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(got, ["a", "e", "b", "f", "c", "g", "d", "h"]);

    // DESC NULLS LAST
    let replies = [
        nt_shard(&[(Some(9), "b"), (Some(1), "d"), (None, "a")]),
        nt_shard(&[(Some(8), "f"), (None, "e")]),
    ];
    p.order_by = vec![key(Col::Visible(0), true, false)];
    let out = run(&replies, &p).unwrap();
    let got: Vec<String> = text_rows(&out).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(got, ["b", "f", "d", "a", "e"]);

    // ASC NULLS FIRST
    let replies = [
        nt_shard(&[(None, "a"), (Some(2), "b")]),
        nt_shard(&[(None, "c"), (Some(1), "d"), (Some(3), "e")]),
    ];
    p.order_by = vec![key(Col::Visible(0), false, true)];
    let out = run(&replies, &p).unwrap();
    let got: Vec<String> = text_rows(&out).into_iter().map(|r| r[1].clone()).collect();
    assert_eq!(got, ["a", "c", "d", "b", "e"]);
}

#[test]
fn binary_int8_merge_compares_values_not_bytes() {
    // big-endian two's complement: -1 sorts after 1 bytewise, before it by value
    let desc = describe(&[("n", INT8, 8)], 1);
    let replies = [
        reply_of(&desc, &[vec![b8(i64::MIN)], vec![b8(1)], vec![None]]),
        reply_of(&desc, &[vec![b8(-1)], vec![b8(i64::MAX)]]),
    ];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    let out = run(&replies, &p).unwrap();
    assert_eq!(
        rows(&out),
        [
            vec![b8(i64::MIN)],
            vec![b8(-1)],
            vec![b8(1)],
            vec![b8(i64::MAX)],
            vec![None]
        ]
    );
    assert_eq!(command(&out), "SELECT 5");
}

#[test]
fn unsorted_shards_are_sorted_stably_on_two_keys() {
    let replies = [
        nt_shard(&[(Some(2), "x"), (None, "y"), (Some(1), "z")]),
        nt_shard(&[(Some(1), "x"), (Some(2), "x"), (Some(1), "a")]),
    ];
    let mut p = plan();
    p.shards_sorted = false;
    p.order_by = vec![
        key(Col::Visible(0), true, false),
        key(Col::Visible(1), false, false),
    ];
    let out = run_with(
        &replies,
        &p,
        Options {
            bytewise_text: true,
            ..OPTS
        },
    )
    .unwrap();
    assert_eq!(
        text_rows(&out),
        [
            ["2", "x"],
            ["2", "x"],
            ["1", "a"],
            ["1", "x"],
            ["1", "z"],
            ["NULL", "y"],
        ]
    );
}

#[test]
fn hidden_sort_column_is_stripped_from_description_and_rows() {
    // SELECT name FROM t ORDER BY n: n is appended as a hidden column
    let desc = describe(&[("name", TEXT, -1), ("pgshard_hidden_0", INT4, 4)], 0);
    let replies = [
        reply_of(&desc, &[vec![t("b"), t("2")], vec![t("d"), t("4")]]),
        reply_of(&desc, &[vec![t("a"), t("1")], vec![t("c"), t("3")]]),
    ];
    let mut p = plan();
    p.hidden = 1;
    p.order_by = vec![key(Col::Hidden(0), false, false)];
    let out = run(&replies, &p).unwrap();
    assert_eq!(tags(&out), "TDDDDC");
    assert_eq!(
        out_description(&out),
        [("name".to_owned(), TEXT, -1, -1, 0)]
    );
    assert_eq!(text_rows(&out), [["a"], ["b"], ["c"], ["d"]]);
    assert_eq!(command(&out), "SELECT 4");
}

#[test]
fn text_order_needs_bytewise_collation_and_json_cannot_be_ordered() {
    let replies = [nt_shard(&[(Some(1), "b")]), nt_shard(&[(Some(2), "a")])];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(1), false, false)];
    assert!(matches!(run(&replies, &p), Err(MergeError::Unsupported(_))));
    // explicitly collated "C"
    p.order_by[0].collate_c = true;
    let out = run(&replies, &p).unwrap();
    assert_eq!(text_rows(&out), [["2", "a"], ["1", "b"]]);

    let desc = describe(&[("doc", JSON, -1)], 0);
    let replies = [
        reply_of(&desc, &[vec![t("{\"a\":1}")]]),
        reply_of(&desc, &[vec![t("[]")]]),
    ];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    match run(&replies, &p) {
        Err(MergeError::Unsupported(m)) => assert!(m.contains("oid 114"), "{m}"),
        other => panic!("expected Unsupported, got {other:?}"),
    }
    // DISTINCT and GROUP BY on json are refused as well
    let mut p = plan();
    p.distinct = true;
    assert!(matches!(run(&replies, &p), Err(MergeError::Unsupported(_))));
    let mut p = plan();
    p.group_by = Some(vec![Col::Visible(0)]);
    assert!(matches!(run(&replies, &p), Err(MergeError::Unsupported(_))));
}

#[test]
fn text_order_by_bytewise() {
    let desc = describe(&[("s", TEXT, -1)], 0);
    let replies = [
        reply_of(&desc, &[vec![t("B")], vec![t("a")], vec![t("ab")]]),
        reply_of(&desc, &[vec![t("")], vec![t("Z")], vec![t("a\u{e9}")]]),
    ];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    let options = Options {
        bytewise_text: true,
        ..OPTS
    };
    let out = run_with(&replies, &p, options).unwrap();
    assert_eq!(
        text_rows(&out),
        [[""], ["B"], ["Z"], ["a"], ["ab"], ["a\u{e9}"]]
    );
}

// ---- GROUP BY ----

/// `SELECT k, count(*), sum(i4), sum(num), avg(i4), min(i4), max(i4), bool_and(b),
/// bool_or(b) FROM t GROUP BY k`: avg runs as sum plus the hidden count.
fn group_plan() -> MergePlan {
    let mut p = plan();
    p.hidden = 1;
    p.group_by = Some(vec![Col::Visible(0)]);
    p.shards_sorted = false;
    p.aggregates = vec![
        agg(Col::Visible(1), AggFunc::Count),
        agg(Col::Visible(2), AggFunc::Sum),
        agg(Col::Visible(3), AggFunc::Sum),
        agg(
            Col::Visible(4),
            AggFunc::Avg {
                count: Col::Hidden(0),
            },
        ),
        agg(Col::Visible(5), AggFunc::Min),
        agg(Col::Visible(6), AggFunc::Max),
        agg(Col::Visible(7), AggFunc::BoolAnd),
        agg(Col::Visible(8), AggFunc::BoolOr),
    ];
    p
}

fn group_description(format: i16) -> Vec<u8> {
    describe(
        &[
            ("k", INT4, 4),
            ("count", INT8, 8),
            ("sum", INT8, 8),
            ("sum", NUMERIC, -1),
            ("avg", INT8, 8),
            ("min", INT4, 4),
            ("max", INT4, 4),
            ("bool_and", BOOL, 1),
            ("bool_or", BOOL, 1),
            ("pgshard_hidden_0", INT8, 8),
        ],
        format,
    )
}

/// One partial group: k, count, sum int8, sum numeric, avg's sum, min, max, bool_and,
/// bool_or, avg's count.
type Partial<'a> = (
    Option<i32>,
    i64,
    Option<i64>,
    Option<&'a str>,
    Option<i64>,
    Option<i32>,
    Option<i32>,
    Option<bool>,
    Option<bool>,
    i64,
);

fn group_shard(partials: &[Partial<'_>], binary: bool) -> BytesMut {
    let rows: Vec<Vec<F>> = partials
        .iter()
        .map(
            |&(k, count, sum, num, avg_sum, min, max, and, or, avg_count)| {
                if binary {
                    vec![
                        k.and_then(b4),
                        b8(count),
                        sum.and_then(b8),
                        num.and_then(bnum),
                        avg_sum.and_then(b8),
                        min.and_then(b4),
                        max.and_then(b4),
                        and.and_then(bbool),
                        or.and_then(bbool),
                        b8(avg_count),
                    ]
                } else {
                    let s = |v: Option<String>| v.map(String::into_bytes);
                    let b =
                        |v: Option<bool>| v.map(|b| if b { b"t".to_vec() } else { b"f".to_vec() });
                    vec![
                        s(k.map(|v| v.to_string())),
                        s(Some(count.to_string())),
                        s(sum.map(|v| v.to_string())),
                        s(num.map(str::to_owned)),
                        s(avg_sum.map(|v| v.to_string())),
                        s(min.map(|v| v.to_string())),
                        s(max.map(|v| v.to_string())),
                        b(and),
                        b(or),
                        s(Some(avg_count.to_string())),
                    ]
                }
            },
        )
        .collect();
    reply_of(&group_description(i16::from(binary)), &rows)
}

/// Partial groups of three shards: k=1 on all three, k=2 on the first only, k=NULL on
/// the second and third.
fn group_replies(binary: bool) -> [BytesMut; 3] {
    [
        group_shard(
            &[
                (
                    Some(1),
                    2,
                    Some(5),
                    Some("1.5"),
                    Some(1),
                    Some(3),
                    Some(3),
                    Some(true),
                    Some(false),
                    1,
                ),
                (
                    Some(2),
                    1,
                    Some(10),
                    None,
                    Some(10),
                    Some(10),
                    Some(10),
                    Some(true),
                    Some(true),
                    1,
                ),
            ],
            binary,
        ),
        group_shard(
            &[
                (
                    None,
                    1,
                    None,
                    Some("-1"),
                    None,
                    None,
                    None,
                    None,
                    Some(true),
                    0,
                ),
                (
                    Some(1),
                    1,
                    None,
                    Some("2.25"),
                    Some(2),
                    Some(-1),
                    Some(-1),
                    Some(false),
                    Some(false),
                    1,
                ),
            ],
            binary,
        ),
        group_shard(
            &[
                (Some(1), 0, Some(7), None, None, None, None, None, None, 0),
                (
                    None,
                    2,
                    None,
                    Some("0.001"),
                    None,
                    None,
                    None,
                    None,
                    None,
                    0,
                ),
            ],
            binary,
        ),
    ]
}

#[test]
fn groups_of_three_shards_recombine_in_text() {
    let out = run(&group_replies(false), &group_plan()).unwrap();
    assert_eq!(tags(&out), "TDDDC");
    let desc = out_description(&out);
    assert_eq!(desc.len(), 9, "the hidden count is not described");
    assert_eq!(desc[4], ("avg".to_owned(), NUMERIC, -1, -1, 0));
    assert_eq!(desc[2], ("sum".to_owned(), INT8, 8, -1, 0));
    // groups in the order they first arrived
    assert_eq!(
        text_rows(&out),
        [
            [
                "1",
                "3",
                "12",
                "3.75",
                "1.5000000000000000",
                "-1",
                "3",
                "f",
                "f"
            ],
            [
                "2",
                "1",
                "10",
                "NULL",
                "10.0000000000000000",
                "10",
                "10",
                "t",
                "t"
            ],
            [
                "NULL", "3", "NULL", "-0.999", "NULL", "NULL", "NULL", "NULL", "t"
            ],
        ]
    );
    assert_eq!(command(&out), "SELECT 3");
}

#[test]
fn groups_of_three_shards_recombine_in_binary() {
    let mut p = group_plan();
    p.order_by = vec![key(Col::Visible(0), true, true)];
    let out = run(&group_replies(true), &p).unwrap();
    let desc = out_description(&out);
    assert_eq!(desc[4], ("avg".to_owned(), NUMERIC, -1, -1, 1));
    // numeric binary: ndigits, weight, sign, dscale, base-10000 digits
    let num = |words: &[u16]| Some(words.iter().flat_map(|w| w.to_be_bytes()).collect());
    let avg_1_5: F = num(&[2, 0, 0, 16, 1, 5000]);
    let avg_10: F = num(&[1, 0, 0, 16, 10]);
    let sum_3_75: F = num(&[2, 0, 0, 2, 3, 7500]);
    let sum_neg: F = num(&[1, 0xffff, 0x4000, 3, 9990]);
    assert_eq!(
        rows(&out),
        [
            vec![
                None,
                b8(3),
                None,
                sum_neg,
                None,
                None,
                None,
                None,
                bbool(true)
            ],
            vec![
                b4(2),
                b8(1),
                b8(10),
                None,
                avg_10,
                b4(10),
                b4(10),
                bbool(true),
                bbool(true)
            ],
            vec![
                b4(1),
                b8(3),
                b8(12),
                sum_3_75,
                avg_1_5,
                b4(-1),
                b4(3),
                bbool(false),
                bbool(false)
            ],
        ]
    );
    assert_eq!(command(&out), "SELECT 3");
}

#[test]
fn avg_of_numeric_partials_and_of_an_all_null_group() {
    // avg(bigint) runs as sum(bigint), which is numeric
    let desc = describe(&[("avg", NUMERIC, -1), ("pgshard_hidden_0", INT8, 8)], 0);
    let replies = [
        reply_of(&desc, &[vec![t("10"), t("3")]]),
        reply_of(&desc, &[vec![t("0.5"), t("1")]]),
        reply_of(&desc, &[vec![None, t("0")]]),
    ];
    let mut p = plan();
    p.hidden = 1;
    p.group_by = Some(vec![]);
    p.single_group = true;
    p.aggregates = vec![agg(
        Col::Visible(0),
        AggFunc::Avg {
            count: Col::Hidden(0),
        },
    )];
    let out = run(&replies, &p).unwrap();
    // 10.5 / 4
    assert_eq!(text_rows(&out), [["2.6250000000000000"]]);

    let replies = [
        reply_of(&desc, &[vec![None, t("0")]]),
        reply_of(&desc, &[vec![None, t("0")]]),
    ];
    let out = run(&replies, &p).unwrap();
    assert_eq!(text_rows(&out), [["NULL"]]);
    assert_eq!(command(&out), "SELECT 1");
}

#[test]
fn sums_and_counts_that_overflow_bigint_fail() {
    let desc = describe(&[("sum", INT8, 8)], 1);
    let replies = [
        reply_of(&desc, &[vec![b8(i64::MAX)]]),
        reply_of(&desc, &[vec![b8(1)]]),
    ];
    let mut p = plan();
    p.group_by = Some(vec![]);
    p.single_group = true;
    p.aggregates = vec![agg(Col::Visible(0), AggFunc::Sum)];
    assert!(matches!(run(&replies, &p), Err(MergeError::OutOfRange(_))));
    p.aggregates = vec![agg(Col::Visible(0), AggFunc::Count)];
    assert!(matches!(run(&replies, &p), Err(MergeError::OutOfRange(_))));
    // negative sums reach the bottom of the range exactly
    let replies = [
        reply_of(&desc, &[vec![b8(i64::MIN + 1)]]),
        reply_of(&desc, &[vec![b8(-1)]]),
    ];
    p.aggregates = vec![agg(Col::Visible(0), AggFunc::Sum)];
    let out = run(&replies, &p).unwrap();
    assert_eq!(rows(&out), [vec![b8(i64::MIN)]]);
}

#[test]
fn sum_of_a_float_column_is_refused() {
    let desc = describe(&[("sum", 701, 8)], 0);
    let replies = [
        reply_of(&desc, &[vec![t("0.1")]]),
        reply_of(&desc, &[vec![t("0.2")]]),
    ];
    let mut p = plan();
    p.group_by = Some(vec![]);
    p.aggregates = vec![agg(Col::Visible(0), AggFunc::Sum)];
    assert!(matches!(run(&replies, &p), Err(MergeError::Unsupported(_))));
}

// ---- HAVING ----

fn text_count_sum_shard(rows: &[(Option<&str>, i64, Option<i64>)]) -> BytesMut {
    let desc = describe(&[("k", TEXT, -1), ("count", INT8, 8), ("sum", INT8, 8)], 0);
    let rows: Vec<Vec<F>> = rows
        .iter()
        .map(|&(k, c, s)| {
            vec![
                k.and_then(t),
                t(&c.to_string()),
                s.map(|s| s.to_string().into_bytes()),
            ]
        })
        .collect();
    reply_of(&desc, &rows)
}

fn having_plan(having: Vec<Condition>) -> MergePlan {
    let mut p = plan();
    p.group_by = Some(vec![Col::Visible(0)]);
    p.shards_sorted = false;
    p.aggregates = vec![
        agg(Col::Visible(1), AggFunc::Count),
        agg(Col::Visible(2), AggFunc::Sum),
    ];
    p.having = having;
    p
}

fn cond(col: usize, op: CmpOp, literal: &str) -> Condition {
    Condition {
        col: Col::Visible(col),
        op,
        literal: literal.to_owned(),
    }
}

#[test]
fn having_is_evaluated_on_merged_groups_and_null_fails_it() {
    let replies = [
        text_count_sum_shard(&[
            (Some("a"), 1, Some(5)),
            (Some("b"), 2, None),
            (Some("c"), 1, Some(100)),
        ]),
        text_count_sum_shard(&[
            (Some("a"), 1, None),
            (Some("b"), 1, None),
            (None, 4, Some(1)),
        ]),
    ];
    // count(*) >= 2 AND sum(x) > 0: "a" (2, 5) and NULL (4, 1); "b"'s sum is NULL; "c" has 1 row
    let p = having_plan(vec![cond(1, CmpOp::Ge, "2"), cond(2, CmpOp::Gt, "0")]);
    let out = run(&replies, &p).unwrap();
    assert_eq!(text_rows(&out), [["a", "2", "5"], ["NULL", "4", "1"]]);
    assert_eq!(command(&out), "SELECT 2");

    // a single shard's partial count says nothing: count(*) = 3 holds for "b" only merged
    let p = having_plan(vec![cond(1, CmpOp::Eq, "3")]);
    assert_eq!(text_rows(&run(&replies, &p).unwrap()), [["b", "3", "NULL"]]);

    // k <> 'a': NULL <> 'a' is NULL, not true
    let p = having_plan(vec![cond(0, CmpOp::Ne, "a")]);
    assert_eq!(
        text_rows(&run(&replies, &p).unwrap()),
        [["b", "3", "NULL"], ["c", "1", "100"]]
    );

    // the remaining operators on the count
    for (op, expect) in [
        (CmpOp::Lt, vec!["c"]),
        (CmpOp::Le, vec!["a", "c"]),
        (CmpOp::Gt, vec!["b", "NULL"]),
    ] {
        let p = having_plan(vec![cond(1, op, "2")]);
        let got: Vec<String> = text_rows(&run(&replies, &p).unwrap())
            .into_iter()
            .map(|r| r[0].clone())
            .collect();
        assert_eq!(got, expect, "{op:?}");
    }

    // ordering text needs the "C" collation
    let p = having_plan(vec![cond(0, CmpOp::Lt, "b")]);
    assert!(matches!(run(&replies, &p), Err(MergeError::Unsupported(_))));
    // a literal that is not of the column's type is refused, not guessed
    let p = having_plan(vec![cond(1, CmpOp::Gt, "1.5")]);
    assert!(matches!(run(&replies, &p), Err(MergeError::Unsupported(_))));
}

#[test]
fn having_on_avg_compares_the_numeric_average() {
    // SELECT k, avg(x) FROM t GROUP BY k HAVING avg(x) > 1.5
    let desc = describe(
        &[
            ("k", INT4, 4),
            ("avg", INT8, 8),
            ("pgshard_hidden_0", INT8, 8),
        ],
        0,
    );
    let replies = [
        reply_of(
            &desc,
            &[vec![t("1"), t("1"), t("1")], vec![t("2"), t("4"), t("2")]],
        ),
        reply_of(
            &desc,
            &[vec![t("1"), t("2"), t("1")], vec![t("2"), t("0"), t("1")]],
        ),
    ];
    let mut p = plan();
    p.hidden = 1;
    p.group_by = Some(vec![Col::Visible(0)]);
    p.aggregates = vec![agg(
        Col::Visible(1),
        AggFunc::Avg {
            count: Col::Hidden(0),
        },
    )];
    p.having = vec![cond(1, CmpOp::Ge, "1.5")];
    let out = run(&replies, &p).unwrap();
    // group 1: 3/2 = 1.5 (kept by >=); group 2: 4/3
    assert_eq!(text_rows(&out), [["1", "1.5000000000000000"]]);
}

// ---- DISTINCT ----

#[test]
fn distinct_across_shards_keeps_first_occurrences_and_nulls_once() {
    let replies = [
        nt_shard(&[(Some(1), "a"), (None, "n"), (Some(2), "b")]),
        nt_shard(&[(Some(2), "b"), (None, "n"), (Some(1), "A"), (Some(1), "a")]),
    ];
    let mut p = plan();
    p.distinct = true;
    let out = run(&replies, &p).unwrap();
    assert_eq!(
        text_rows(&out),
        [["1", "a"], ["NULL", "n"], ["2", "b"], ["1", "A"]]
    );
    assert_eq!(command(&out), "SELECT 4");

    // with ORDER BY: the order survives the dedupe
    p.order_by = vec![key(Col::Visible(0), true, false)];
    let replies = [
        nt_shard(&[(Some(2), "b"), (Some(1), "a"), (None, "n")]),
        nt_shard(&[(Some(2), "b"), (Some(1), "A"), (None, "n")]),
    ];
    let out = run(&replies, &p).unwrap();
    assert_eq!(
        text_rows(&out),
        [["2", "b"], ["1", "a"], ["1", "A"], ["NULL", "n"]]
    );
}

#[test]
fn distinct_after_grouping_compares_visible_columns_and_merged_types() {
    // SELECT DISTINCT avg(x) FROM t GROUP BY k: k and avg's count are hidden
    for binary in [false, true] {
        let format = i16::from(binary);
        let desc = describe(
            &[
                ("avg", INT8, 8),
                ("pgshard_hidden_0", INT4, 4),
                ("pgshard_hidden_1", INT8, 8),
            ],
            format,
        );
        let f8 = |v: i64| if binary { b8(v) } else { t(&v.to_string()) };
        let f4 = |v: i32| if binary { b4(v) } else { t(&v.to_string()) };
        let replies = [
            reply_of(
                &desc,
                &[vec![f8(1), f4(1), f8(1)], vec![f8(3), f4(2), f8(2)]],
            ),
            reply_of(
                &desc,
                &[vec![f8(2), f4(1), f8(1)], vec![f8(4), f4(3), f8(2)]],
            ),
        ];
        let mut p = plan();
        p.hidden = 2;
        p.distinct = true;
        p.group_by = Some(vec![Col::Hidden(0)]);
        p.aggregates = vec![agg(
            Col::Visible(0),
            AggFunc::Avg {
                count: Col::Hidden(1),
            },
        )];
        let out = run(&replies, &p).unwrap();
        // groups 1 and 2 both average 1.5; group 3 averages 2
        let got: Vec<String> = rows(&out)
            .into_iter()
            .map(|r| {
                let v = r[0].as_ref().unwrap();
                if binary {
                    Numeric::parse_binary(v).unwrap().to_text()
                } else {
                    String::from_utf8(v.clone()).unwrap()
                }
            })
            .collect();
        assert_eq!(
            got,
            ["1.5000000000000000", "2.0000000000000000"],
            "binary: {binary}"
        );
        assert_eq!(out_description(&out).len(), 1);
    }
}

// ---- OFFSET / LIMIT ----

#[test]
fn offset_and_limit_after_ordering() {
    let replies = [
        nt_shard(&[(Some(1), "a"), (Some(3), "c"), (Some(5), "e")]),
        nt_shard(&[(Some(2), "b"), (Some(4), "d")]),
    ];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    p.offset = 1;
    p.limit = Some(2);
    let out = run(&replies, &p).unwrap();
    assert_eq!(text_rows(&out), [["2", "b"], ["3", "c"]]);
    assert_eq!(command(&out), "SELECT 2");

    p.offset = 4;
    p.limit = Some(10);
    assert_eq!(text_rows(&run(&replies, &p).unwrap()), [["5", "e"]]);

    for (offset, limit) in [
        (5, None),
        (6, Some(1)),
        (u64::MAX, Some(u64::MAX)),
        (0, Some(0)),
    ] {
        p.offset = offset;
        p.limit = limit;
        let out = run(&replies, &p).unwrap();
        assert_eq!(tags(&out), "TC", "offset {offset} limit {limit:?}");
        assert_eq!(command(&out), "SELECT 0");
    }

    p.offset = 0;
    p.limit = Some(u64::MAX);
    assert_eq!(command(&run(&replies, &p).unwrap()), "SELECT 5");
}

// ---- errors, preamble, malformed replies ----

#[test]
fn a_shard_error_is_the_answer_once() {
    let error = |text: &str| {
        let mut b =
            BytesMut::from(&msg(b'E', format!("SERROR\0C42P01\0M{text}\0\0").as_bytes())[..]);
        reply::ready_for_query(reply::TxnStatus::Idle, &mut b);
        b
    };
    let replies = [nt_shard(&[(Some(1), "a")]), error("first"), error("second")];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    let mut out = BytesMut::new();
    assert_eq!(
        merge_by_plan(&replies, &p, OPTS, &mut out).unwrap(),
        Merged::Error
    );
    let got = split(&out);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].0, b'E');
    assert!(String::from_utf8_lossy(&got[0].1).contains("Mfirst\0"));
}

#[test]
fn extended_preamble_and_the_added_portal_description() {
    let mut shard = BytesMut::new();
    shard.extend_from_slice(&msg(b'1', b""));
    shard.extend_from_slice(&msg(b'2', b""));
    shard.extend_from_slice(&nt_shard(&[(Some(1), "a")]));
    let replies = [shard.clone(), shard];
    let mut p = plan();
    p.order_by = vec![key(Col::Visible(0), false, false)];
    let out = run(&replies, &p).unwrap();
    assert_eq!(tags(&out), "12TDDC");
    let out = run_with(
        &replies,
        &p,
        Options {
            added_portal_description: true,
            ..OPTS
        },
    )
    .unwrap();
    assert_eq!(tags(&out), "12DDC");
    assert_eq!(text_rows(&out), [["1", "a"], ["1", "a"]]);
}

#[test]
fn describe_only_batch_answers_with_the_preamble() {
    let desc = describe(&[("n", INT8, 8), ("pgshard_hidden_0", INT8, 8)], 0);
    let mut shard = BytesMut::from(&msg(b't', b"\0\0")[..]);
    shard.extend_from_slice(&desc);
    let replies = [shard.clone(), shard];
    let mut p = plan();
    p.hidden = 1;
    let out = run(&replies, &p).unwrap();
    assert_eq!(tags(&out), "tT");
    assert_eq!(out_description(&out), [("n".to_owned(), INT8, 8, -1, 0)]);
}

#[test]
fn rows_wider_or_narrower_than_the_description_are_malformed() {
    let desc = describe(&[("n", INT8, 8), ("tag", TEXT, -1)], 0);
    let replies = [
        reply_of(&desc, &[vec![t("1"), t("a")]]),
        reply_of(&desc, &[vec![t("2")]]),
    ];
    assert_eq!(run(&replies, &plan()), Err(MergeError::Malformed(1)));
    let replies = [reply_of(&desc, &[vec![t("1"), t("a"), t("x")]])];
    assert_eq!(run(&replies, &plan()), Err(MergeError::Malformed(0)));
}

#[test]
fn more_hidden_columns_than_the_row_has_is_an_error() {
    let desc = describe(&[("n", INT8, 8)], 0);
    let mut p = plan();
    p.hidden = 3;
    // the client's description is rewritten: refused there
    let replies = [reply_of(&desc, &[vec![t("1")]])];
    assert_eq!(run(&replies, &p), Err(MergeError::Malformed(0)));
    // the portal description is pgshard's own and dropped: refused at the rows
    let mut shard = BytesMut::from(&msg(b'2', b"")[..]);
    shard.extend_from_slice(&reply_of(&desc, &[vec![t("1")]]));
    let options = Options {
        added_portal_description: true,
        ..OPTS
    };
    assert_eq!(
        run_with(&[shard.clone()], &p, options),
        Err(MergeError::Malformed(0))
    );
    p.distinct = true;
    assert_eq!(
        run_with(&[shard], &p, options),
        Err(MergeError::Malformed(0))
    );
}

#[test]
fn a_field_length_below_minus_one_is_malformed() {
    let desc = describe(&[("n", INT8, 8)], 0);
    let mut shard = BytesMut::from(&desc[..]);
    let mut body = 1i16.to_be_bytes().to_vec();
    body.extend_from_slice(&(-2i32).to_be_bytes());
    shard.extend_from_slice(&msg(b'D', &body));
    reply::command_complete("SELECT 1", &mut shard);
    assert_eq!(run(&[shard], &plan()), Err(MergeError::Malformed(0)));
}

#[test]
fn a_non_select_command_tag_is_refused() {
    let desc = describe(&[("n", INT8, 8)], 0);
    let mut shard = BytesMut::from(&desc[..]);
    shard.extend_from_slice(&data_row_msg(&[t("1")]));
    reply::command_complete("INSERT 0 1", &mut shard);
    assert!(matches!(
        run(&[shard], &plan()),
        Err(MergeError::CommandTag(..))
    ));
}

/// Plans exercising every path over the group replies' columns.
fn plans_for_garbage() -> Vec<MergePlan> {
    let mut sorted = group_plan();
    sorted.group_by = None;
    sorted.aggregates.clear();
    sorted.shards_sorted = true;
    sorted.order_by = vec![
        key(Col::Visible(0), false, false),
        key(Col::Visible(3), true, true),
    ];
    let mut unsorted = sorted.clone();
    unsorted.shards_sorted = false;
    let mut distinct = sorted.clone();
    distinct.distinct = true;
    distinct.order_by.clear();
    let mut grouped = group_plan();
    grouped.having = vec![cond(1, CmpOp::Gt, "0"), cond(4, CmpOp::Lt, "100")];
    grouped.order_by = vec![key(Col::Visible(4), false, false)];
    grouped.distinct = true;
    grouped.offset = 1;
    vec![plan(), sorted, unsorted, distinct, grouped]
}

#[test]
fn truncated_replies_are_errors_never_panics() {
    for binary in [false, true] {
        let replies = group_replies(binary);
        for p in plans_for_garbage() {
            // the untouched replies merge
            run(&replies, &p).unwrap();
            let whole = replies[1].clone();
            // everything up to the CommandComplete is needed (ReadyForQuery is not)
            let msgs = split(&whole);
            let needed = whole.len() - 5 - msgs.last().unwrap().1.len();
            for cut in 0..whole.len() {
                let mut r = replies.clone();
                r[1] = BytesMut::from(&whole[..cut]);
                let got = run(&r, &p);
                match cut {
                    // no RowDescription at all
                    0 => assert_eq!(
                        got,
                        Err(MergeError::RowDescriptionMismatch { first: 0, other: 1 })
                    ),
                    c if c == needed => assert_eq!(got, run(&replies, &p)),
                    _ => assert_eq!(got, Err(MergeError::Malformed(1)), "cut at {cut}"),
                }
            }
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    for binary in [false, true] {
        let replies = group_replies(binary);
        for p in plans_for_garbage() {
            let whole = replies[2].clone();
            for i in 0..whole.len() {
                for garbage in [0x00, 0x7f, 0x80, 0xff] {
                    let mut r = replies.clone();
                    let mut bad = whole.clone();
                    bad[i] = garbage;
                    r[2] = bad;
                    let mut out = BytesMut::new();
                    // any answer or error will do, as long as it does not panic
                    let _ = merge_by_plan(&r, &p, OPTS, &mut out);
                }
            }
        }
    }
}

#[test]
fn garbage_row_bodies_are_malformed() {
    let desc = describe(&[("n", INT8, 8), ("tag", TEXT, -1)], 0);
    for body in [
        &b""[..],
        b"\0",
        b"\xff\xff",
        b"\0\x02\0\0\0\x05ab",
        b"\0\x02\x7f\xff\xff\xff",
        b"\0\x01\0\0\0\x01a\0",
    ] {
        let mut shard = BytesMut::from(&desc[..]);
        shard.extend_from_slice(&msg(b'D', body));
        reply::command_complete("SELECT 1", &mut shard);
        assert_eq!(
            run(&[shard], &plan()),
            Err(MergeError::Malformed(0)),
            "{body:?}"
        );
    }
    for body in [
        &b""[..],
        b"\0",
        b"\0\x01n\0",
        b"\xff\xff",
        b"\0\x01n\0\0\0\0\0",
    ] {
        let mut shard = BytesMut::from(&msg(b'T', body)[..]);
        reply::command_complete("SELECT 0", &mut shard);
        assert_eq!(
            run(&[shard], &plan()),
            Err(MergeError::Malformed(0)),
            "{body:?}"
        );
    }
}
