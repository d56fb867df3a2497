//! Merge plans: what the shards run and how their rows combine.

use super::*;
use crate::scatter::plan::{AggFunc, Aggregate, Col, MergePlan, SortKey};

fn plan(sql: &str) -> MergePlan {
    match one(sql).scatter {
        Scatter::Merge(p) => (*p).clone(),
        other => panic!("{sql}: expected a merge plan, got {other:?}"),
    }
}

fn blocked(sql: &str) -> &'static str {
    match one(sql).scatter {
        Scatter::Blocked(c) => c,
        other => panic!("{sql}: expected a refusal, got {other:?}"),
    }
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

#[test]
fn order_by_keeps_the_text_and_merges_sorted_streams() {
    let p = plan("SELECT a, b FROM t ORDER BY b DESC, 1 NULLS FIRST");
    assert_eq!(p.shard_sql, None);
    assert!(p.shards_sorted);
    assert_eq!(
        p.order_by,
        vec![
            key(Col::Visible(1), true, true),
            key(Col::Visible(0), false, true)
        ]
    );
    // an output alias, and an expression repeated from the select list
    let p = plan("SELECT a + 1 AS x, lower(b) FROM t ORDER BY x, lower(b) DESC NULLS LAST");
    assert_eq!(
        p.order_by,
        vec![
            key(Col::Visible(0), false, false),
            key(Col::Visible(1), true, false)
        ]
    );
}

#[test]
fn order_by_columns_not_selected_become_hidden_columns() {
    let p = plan("SELECT a FROM t ORDER BY c, a");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT a, c AS pgshard_hidden_0 FROM t ORDER BY c, a")
    );
    assert_eq!(p.hidden, 1);
    assert_eq!(p.order_by[0].col, Col::Hidden(0));
    // with * the hidden column follows every table column
    let p = plan("SELECT * FROM t ORDER BY a + b");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT *, a + b AS pgshard_hidden_0 FROM t ORDER BY a + b")
    );
}

#[test]
fn limit_and_offset_are_pushed_down_as_limit_plus_offset() {
    let p = plan("SELECT a FROM t ORDER BY a LIMIT 10 OFFSET 5");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT a FROM t ORDER BY a LIMIT 15")
    );
    assert_eq!((p.limit, p.offset), (Some(10), 5));
    let p = plan("SELECT a FROM t OFFSET 3");
    assert_eq!(p.shard_sql.as_deref(), Some("SELECT a FROM t"));
    assert_eq!((p.limit, p.offset), (None, 3));
}

#[test]
fn aggregates_run_as_partials_and_avg_as_sum_and_count() {
    let p = plan(
        "SELECT count(*), sum(x), avg(x), min(y), max(y), bool_and(f), every(f), bool_or(f) FROM t WHERE k > 1",
    );
    assert_eq!(
        p.shard_sql.as_deref(),
        Some(
            "SELECT count(*), sum(x), sum(x) AS avg, min(y), max(y), bool_and(f), every(f), bool_or(f), count(x) AS pgshard_hidden_0 FROM t WHERE k > 1"
        )
    );
    assert_eq!(p.group_by, Some(vec![]));
    assert!(p.single_group);
    assert_eq!(
        p.aggregates,
        vec![
            agg(Col::Visible(0), AggFunc::Count),
            agg(Col::Visible(1), AggFunc::Sum),
            agg(
                Col::Visible(2),
                AggFunc::Avg {
                    count: Col::Hidden(0)
                }
            ),
            agg(Col::Visible(3), AggFunc::Min),
            agg(Col::Visible(4), AggFunc::Max),
            agg(Col::Visible(5), AggFunc::BoolAnd),
            agg(Col::Visible(6), AggFunc::BoolAnd),
            agg(Col::Visible(7), AggFunc::BoolOr),
        ]
    );
    // an alias names the avg column
    let p = plan("SELECT avg(x) AS mean FROM t");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT sum(x) AS mean, count(x) AS pgshard_hidden_0 FROM t")
    );
}

#[test]
fn group_by_keys_are_found_or_hidden_and_ordering_moves_to_the_merge() {
    let p = plan("SELECT g, count(*) FROM t GROUP BY g ORDER BY 2 DESC LIMIT 3");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT g, count(*) FROM t GROUP BY g")
    );
    assert_eq!(p.group_by, Some(vec![Col::Visible(0)]));
    assert!(!p.shards_sorted);
    assert_eq!(p.order_by, vec![key(Col::Visible(1), true, true)]);
    assert_eq!(p.limit, Some(3));
    // a key that is not selected, by position, and an ORDER BY aggregate not selected
    let p = plan("SELECT sum(x) FROM t GROUP BY g, h ORDER BY max(y)");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some(
            "SELECT sum(x), g AS pgshard_hidden_0, h AS pgshard_hidden_1, max(y) AS pgshard_hidden_2 FROM t GROUP BY g, h"
        )
    );
    assert_eq!(p.group_by, Some(vec![Col::Hidden(0), Col::Hidden(1)]));
    assert_eq!(p.aggregates[1], agg(Col::Hidden(2), AggFunc::Max));
    let p = plan("SELECT a % 3, count(*) FROM t GROUP BY 1");
    assert_eq!(p.group_by, Some(vec![Col::Visible(0)]));
}

#[test]
fn distinct_is_removed_after_the_merge() {
    let p = plan("SELECT DISTINCT a, b FROM t ORDER BY b LIMIT 4");
    assert!(p.distinct);
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT DISTINCT a, b FROM t ORDER BY b LIMIT 4")
    );
    let p = plan("SELECT DISTINCT count(*) FROM t GROUP BY g");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT count(*), g AS pgshard_hidden_0 FROM t GROUP BY g")
    );
}

#[test]
fn constructs_the_merge_cannot_reproduce_are_refused_by_name() {
    for (sql, construct) in [
        (
            "SELECT sum(x) / count(x) FROM t",
            "an expression over an aggregate",
        ),
        (
            "SELECT round(avg(x), 2) FROM t",
            "an expression over an aggregate",
        ),
        (
            "SELECT g, count(*) FROM t GROUP BY g HAVING count(*) > sum(x)",
            "HAVING other than AND-ed comparisons of an aggregate or group key with a literal",
        ),
        (
            "SELECT g FROM t GROUP BY g HAVING count(*) > 1 OR g = 2",
            "HAVING other than AND-ed comparisons of an aggregate or group key with a literal",
        ),
        (
            "SELECT string_agg(a, ',') FROM t",
            "aggregate function string_agg()",
        ),
        (
            "SELECT DISTINCT a FROM t ORDER BY b",
            "ORDER BY an expression that is not in the DISTINCT select list",
        ),
        (
            "SELECT a FROM t ORDER BY a COLLATE \"en_US\"",
            "a COLLATE other than \"C\" in ORDER BY, min() or max()",
        ),
        (
            "SELECT a FROM t ORDER BY 3",
            "ORDER BY position beyond the select list or after *",
        ),
        ("SELECT a FROM t ORDER BY a USING <", "ORDER BY … USING"),
        (
            "SELECT a FROM t ORDER BY a FETCH FIRST 3 ROWS ONLY",
            "FETCH FIRST (write it as LIMIT)",
        ),
        (
            "SELECT a AS g, count(*) FROM t GROUP BY g",
            "GROUP BY an output column name (repeat the expression or use its position)",
        ),
        (
            "SELECT count(*) FROM t GROUP BY ROLLUP (a)",
            "GROUPING SETS/ROLLUP/CUBE",
        ),
        (
            "SELECT *, count(*) FROM t GROUP BY a",
            "select items after *",
        ),
        (
            "SELECT count(*), * FROM t GROUP BY a",
            "* with GROUP BY or aggregates",
        ),
    ] {
        assert_eq!(blocked(sql), construct, "{sql}");
    }
    // an ORDER BY name that Postgres would read as the output column of an unaliased call
    assert_eq!(
        blocked("SELECT count(*) FROM t GROUP BY a ORDER BY count"),
        "ORDER BY a name that is both an output and an input column"
    );
    // explicitly collated "C" keys are marked
    let p = plan("SELECT a FROM t ORDER BY a COLLATE \"C\"");
    assert!(p.order_by[0].collate_c);
}

#[test]
fn having_becomes_conditions_on_merged_groups() {
    use crate::scatter::plan::{CmpOp, Condition};
    let p = plan(
        "SELECT g, count(*) FROM t GROUP BY g HAVING count(*) > 1 AND 10 >= sum(x) AND g <> 'a'",
    );
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT g, count(*), sum(x) AS pgshard_hidden_0 FROM t GROUP BY g")
    );
    assert_eq!(
        p.having,
        vec![
            Condition {
                col: Col::Visible(1),
                op: CmpOp::Gt,
                literal: "1".into()
            },
            Condition {
                col: Col::Hidden(0),
                op: CmpOp::Le,
                literal: "10".into()
            },
            Condition {
                col: Col::Visible(0),
                op: CmpOp::Ne,
                literal: "a".into()
            },
        ]
    );
    // without GROUP BY: one group, which HAVING may remove
    let p = plan("SELECT count(*) FROM t HAVING count(*) > -1");
    assert!(p.single_group);
    assert_eq!(p.having[0].literal, "-1");
}

#[test]
fn count_distinct_fetches_distinct_values_per_group() {
    let p = plan("SELECT g, count(DISTINCT x) FROM t GROUP BY g ORDER BY 2 DESC");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT g, x AS count FROM t GROUP BY g, x")
    );
    assert_eq!(
        p.aggregates,
        vec![agg(Col::Visible(1), AggFunc::CountDistinct)]
    );
    assert_eq!(p.group_by, Some(vec![Col::Visible(0)]));
    let p = plan("SELECT count(DISTINCT x) AS n FROM t WHERE y > 0");
    assert_eq!(
        p.shard_sql.as_deref(),
        Some("SELECT x AS n FROM t WHERE y > 0 GROUP BY x")
    );
    assert!(p.single_group);
    for (sql, construct) in [
        (
            "SELECT count(DISTINCT x), count(DISTINCT y) FROM t",
            "count(DISTINCT …) of different expressions",
        ),
        (
            "SELECT count(DISTINCT x), sum(y) FROM t",
            "count(DISTINCT …) with other aggregates",
        ),
        (
            "SELECT count(DISTINCT x) FROM t ORDER BY max(y)",
            "count(DISTINCT …) with other aggregates",
        ),
        (
            "SELECT count(DISTINCT (x, y)) FROM t",
            "count(DISTINCT …) of several arguments",
        ),
    ] {
        assert_eq!(blocked(sql), construct, "{sql}");
    }
}
