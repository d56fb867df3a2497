//! Tests of the statement summary.

use super::*;

fn one(sql: &str) -> Statement {
    match analyze(sql) {
        Analysis::Parsed(mut v) if v.len() == 1 => v.remove(0),
        other => panic!("{sql}: {other:?}"),
    }
}

fn kind(sql: &str) -> StatementKind {
    one(sql).kind
}

/// A literal as the analysis records it: digits are integer literals, anything else a
/// quoted string.
fn lit(s: &str) -> ValueExpr {
    let ty = if s
        .trim_start_matches('-')
        .bytes()
        .all(|b| b.is_ascii_digit())
    {
        crate::sql::ValueType::Integer
    } else {
        crate::sql::ValueType::Unknown
    };
    ValueExpr::Literal(s.to_owned(), ty)
}

/// What sqlparser 0.64 (Postgres dialect) cannot parse, as measured. If an upgrade makes
/// one parse, this test fails: move it to the parsed list and check its summary.
#[test]
fn sqlparser_failures() {
    for sql in [
        "VACUUM ANALYZE accounts",
        "VACUUM (VERBOSE) accounts",
        "CHECKPOINT",
        "DO $$ BEGIN END $$",
        "TABLE t",
        "SELECT * FROM t FOR NO KEY UPDATE",
        "SELECT * FROM t FOR KEY SHARE",
        "ALTER SYSTEM SET work_mem = '1MB'",
        "ALTER SEQUENCE s RESTART",
        "CLUSTER t",
        "REINDEX TABLE t",
        "SECURITY LABEL ON TABLE t IS 'x'",
        "IMPORT FOREIGN SCHEMA x FROM SERVER s INTO y",
        "PREPARE TRANSACTION 'x'",
        "COMMIT PREPARED 'x'",
    ] {
        assert!(
            matches!(analyze(sql), Analysis::Unparsed { .. }),
            "{sql} now parses: {:?}",
            analyze(sql)
        );
    }
    // these do parse
    for sql in [
        "VACUUM",
        "VACUUM accounts",
        "ANALYZE accounts",
        "SELECT * FROM t FOR UPDATE",
    ] {
        assert!(matches!(analyze(sql), Analysis::Parsed(_)), "{sql}");
    }
}

#[test]
fn transaction_kinds() {
    assert_eq!(kind("BEGIN"), StatementKind::Begin);
    assert_eq!(
        kind("begin isolation level serializable"),
        StatementKind::Begin
    );
    assert_eq!(kind("START TRANSACTION READ ONLY"), StatementKind::Begin);
    assert_eq!(kind("COMMIT"), StatementKind::Commit);
    assert_eq!(kind("END"), StatementKind::Commit);
    assert_eq!(kind("ROLLBACK"), StatementKind::Rollback);
    assert_eq!(kind("ABORT"), StatementKind::Rollback);
    assert_eq!(kind("SAVEPOINT a"), StatementKind::Savepoint);
    assert_eq!(kind("RELEASE a"), StatementKind::Savepoint);
    assert_eq!(kind("ROLLBACK TO a"), StatementKind::Savepoint);
    assert_eq!(one("COMMIT AND CHAIN").limitation, Some(Limitation::Chain));
    assert_eq!(one("COMMIT").limitation, None);
}

#[test]
fn set_local_is_distinguished() {
    let local = StatementKind::Set { local: true };
    let session = StatementKind::Set { local: false };
    assert_eq!(kind("SET LOCAL statement_timeout = 0"), local);
    assert_eq!(kind("SET LOCAL TIME ZONE 'UTC'"), local);
    assert_eq!(kind("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE"), local);
    assert_eq!(kind("SET statement_timeout = 0"), session);
    assert_eq!(kind("SET SESSION statement_timeout = 0"), session);
    assert_eq!(kind("SET search_path TO a, b"), session);
    assert_eq!(kind("SET TIME ZONE 'UTC'"), session);
    assert_eq!(
        kind("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
        session
    );
    assert_eq!(kind("RESET ALL"), session);
    assert_eq!(kind("SHOW x"), StatementKind::Show);
}

#[test]
fn other_kinds() {
    assert_eq!(
        kind("COPY t FROM STDIN"),
        StatementKind::Copy { from: true }
    );
    assert_eq!(
        kind("COPY t TO STDOUT"),
        StatementKind::Copy { from: false }
    );
    assert_eq!(kind("TRUNCATE t"), StatementKind::Ddl);
    assert_eq!(kind("CREATE INDEX ON t (a)"), StatementKind::Ddl);
    assert_eq!(kind("PREPARE p AS SELECT 1"), StatementKind::SqlPrepared);
    assert_eq!(kind("EXECUTE p(1)"), StatementKind::SqlPrepared);
    assert_eq!(kind("DISCARD ALL"), StatementKind::Other);
    assert_eq!(kind("SELECT 1"), StatementKind::Select);
    assert_eq!(kind("VALUES (1)"), StatementKind::Select);
    let w = one("WITH v AS (SELECT 1) UPDATE t SET a = 1 WHERE k = 1");
    assert_eq!(w.kind, StatementKind::Update);
    assert_eq!(w.limitation, Some(Limitation::NestedWrite));
    let e = one("EXPLAIN ANALYZE DELETE FROM t WHERE a = 1");
    assert_eq!((e.kind, e.explain), (StatementKind::Delete, true));
    assert!(matches!(analyze(""), Analysis::Parsed(v) if v.is_empty()));
    assert!(matches!(analyze("BEGIN; SELECT 1; COMMIT"), Analysis::Parsed(v) if v.len() == 3));
}

#[test]
fn occurrences_and_equalities() {
    let s = one(
        "SELECT * FROM public.Accounts a JOIN \"History\" h ON h.aid = $1 WHERE a.aid = '5' AND x = -3",
    );
    assert_eq!(s.tables.len(), 2);
    assert_eq!(s.tables[0].name, "accounts");
    assert_eq!(s.tables[0].schema.as_deref(), Some("public"));
    assert_eq!(
        s.tables[0].equalities,
        vec![
            (
                "aid".into(),
                ValueExpr::Literal("5".into(), crate::sql::ValueType::Unknown)
            ),
            ("x".into(), lit("-3"))
        ]
    );
    assert_eq!(s.tables[1].name, "History");
    // the ON conjunct is h's; unqualified x (WHERE) may be either table's
    assert_eq!(
        s.tables[1].equalities,
        vec![
            (
                "aid".into(),
                ValueExpr::Param(1, crate::sql::ValueType::Unknown)
            ),
            ("x".into(), lit("-3"))
        ]
    );
}

#[test]
fn string_literals_are_unescaped_once() {
    let s = one("SELECT * FROM t WHERE k = 'it''s'");
    assert_eq!(s.tables[0].equalities, vec![("k".into(), lit("it's"))]);
    let s = one("SELECT * FROM t WHERE k = E'a\\nb'");
    assert!(s.tables[0].equalities.is_empty());
}

#[test]
fn safety_net_adds_unreached_relations() {
    // a LATERAL function's subquery argument and a table in ORDER BY subquery are found
    let s = one("SELECT * FROM t WHERE k = 1 ORDER BY (SELECT max(x) FROM u)");
    let names: Vec<_> = s.tables.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, ["t", "u"]);
    let s = one("SELECT * FROM t, LATERAL (SELECT * FROM u WHERE u.k = t.k) s WHERE t.k = 1");
    assert_eq!(s.tables.len(), 2);
    assert!(s.tables[1].equalities.is_empty(), "{:?}", s.tables[1]);
}

#[test]
fn insert_summary() {
    let s = one("INSERT INTO t (a, B, \"C\") VALUES (1, 'x', $2), (DEFAULT, f(), NULL)");
    let ins = s.insert.expect("insert rows");
    assert_eq!(ins.table, "t");
    assert_eq!(
        ins.columns,
        Some(vec!["a".to_owned(), "b".to_owned(), "C".to_owned()])
    );
    assert_eq!(
        ins.rows,
        vec![
            vec![
                Some(lit("1")),
                Some(lit("x")),
                Some(ValueExpr::Param(2, crate::sql::ValueType::Unknown))
            ],
            vec![None, None, Some(ValueExpr::Null)],
        ]
    );
    assert_eq!(s.tables[0].role, Role::Insert);
    let s = one("INSERT INTO t SELECT 1");
    assert_eq!(s.limitation, Some(Limitation::InsertSelect));
    let s = one("UPDATE t SET a = 1, (b, c) = (2, 3) WHERE k = 1");
    assert_eq!(s.assigned_columns, ["a", "b", "c"]);
    assert_eq!(s.tables[0].role, Role::Write);
}

#[test]
fn plan_cache_returns_the_same_analysis() {
    let cache = PlanCache::new(2);
    let a = cache.get("SELECT 1");
    let b = cache.get("SELECT 1");
    assert!(Arc::ptr_eq(&a, &b));
    assert!(matches!(a.as_ref(), Analysis::Parsed(_)));
}

#[test]
fn cte_names_are_recorded() {
    let s = one("WITH t AS (SELECT * FROM accounts WHERE aid = 5) SELECT * FROM t");
    assert_eq!(s.cte_names, vec!["t".to_string()]);
}

#[test]
fn key_lists_follow_the_equality_attribution_rules() {
    use crate::sql::ValueType;
    let s = one("SELECT * FROM t a WHERE a.k IN (1, '2', $3, NULL, 4::bigint) AND x > 0");
    assert_eq!(
        s.tables[0].key_lists,
        vec![(
            "k".into(),
            vec![
                lit("1"),
                ValueExpr::Literal("2".into(), ValueType::Unknown),
                ValueExpr::Param(3, ValueType::Unknown),
                ValueExpr::Null,
                ValueExpr::Literal("4".into(), ValueType::Integer),
            ]
        )]
    );
    assert!(s.tables[0].equalities.is_empty());
    // one value: an equality, not repeated as a list
    let s = one("SELECT * FROM t WHERE k IN (1)");
    assert_eq!(s.tables[0].equalities, vec![("k".into(), lit("1"))]);
    assert!(s.tables[0].key_lists.is_empty());
    // inner join ON conjunct is the named table's; WHERE unqualified goes to both
    let s = one("SELECT * FROM t JOIN u ON u.k IN (1, 2) WHERE j IN (3, 4)");
    assert_eq!(
        s.tables[0].key_lists,
        vec![("j".into(), vec![lit("3"), lit("4")])]
    );
    assert_eq!(
        s.tables[1].key_lists,
        vec![
            ("k".into(), vec![lit("1"), lit("2")]),
            ("j".into(), vec![lit("3"), lit("4")])
        ]
    );
    // not recorded: negated, under OR/NOT, an element that is not a value, outer join ON,
    // a subquery's list for the outer table
    for sql in [
        "SELECT * FROM t WHERE k NOT IN (1, 2)",
        "SELECT * FROM t WHERE k IN (1, 2) OR x = 1",
        "SELECT * FROM t WHERE NOT (k IN (1, 2))",
        "SELECT * FROM t WHERE k IN (1, f())",
        "SELECT * FROM t WHERE k IN (1, 2 + 3)",
        "SELECT * FROM t WHERE k IN (1, 'a\\b')",
        "SELECT * FROM t LEFT JOIN v ON t.k IN (1, 2)",
        "SELECT * FROM t FULL JOIN v ON t.k IN (1, 2)",
        "SELECT * FROM t WHERE x IN (SELECT 1 FROM u WHERE k IN (1, 2))",
        "SELECT * FROM t JOIN u USING (id) WHERE k IN (1, 2)",
    ] {
        let s = one(sql);
        let t = s.tables.iter().find(|o| o.name == "t").expect("t");
        assert!(t.key_lists.is_empty(), "{sql}: {t:?}");
    }
    // the subquery's own table gets its list
    let s = one("SELECT * FROM t WHERE x IN (SELECT 1 FROM u WHERE k IN (1, 2))");
    let u = s.tables.iter().find(|o| o.name == "u").expect("u");
    assert_eq!(u.key_lists, vec![("k".into(), vec![lit("1"), lit("2")])]);
}

#[test]
fn scatter_plain_only_for_one_table_without_combining_clauses() {
    for sql in [
        "SELECT * FROM t",
        "SELECT a, b + 1, lower(c), now() FROM t WHERE a > 0 AND k IN (1, 2)",
        "SELECT * FROM ONLY s.t x",
        "(SELECT * FROM t)",
        "SELECT 1",
        "SELECT coalesce(a, 0), upper(b) FROM t",
    ] {
        assert_eq!(one(sql).scatter, Scatter::Plain, "{sql}");
    }
    for (sql, construct) in [
        ("SELECT * FROM t LIMIT $1", "LIMIT that is not a number"),
        (
            "SELECT sum(DISTINCT a) FROM t",
            "aggregate function with DISTINCT",
        ),
        (
            "SELECT count(DISTINCT a), count(*) FROM t",
            "count(DISTINCT …) with other aggregates",
        ),
        (
            "SELECT count(*) + 1 FROM t",
            "an expression over an aggregate",
        ),
        (
            "SELECT regr_slope(a, b) FROM t",
            "aggregate function regr_slope()",
        ),
        ("SELECT regr_new(a, b) FROM t", "aggregate function"),
        (
            "SELECT a FROM t HAVING true",
            "HAVING other than AND-ed comparisons of an aggregate or group key with a literal",
        ),
        ("SELECT DISTINCT ON (a) a FROM t", "DISTINCT ON"),
        ("SELECT rank() OVER (ORDER BY a) FROM t", "window function"),
        (
            "SELECT a FROM t UNION SELECT a FROM t",
            "UNION/INTERSECT/EXCEPT",
        ),
        ("SELECT * FROM t WHERE a IN (SELECT 1)", "subquery"),
        (
            "SELECT * FROM t WHERE a = ANY (ARRAY(SELECT 1))",
            "subquery",
        ),
        ("SELECT * FROM (t JOIN u ON true)", "join"),
        ("SELECT * FROM t JOIN (SELECT 1) s ON true", "subquery"),
        ("SELECT * FROM t JOIN u ON u.a IN (SELECT 1)", "subquery"),
        (
            "SELECT * FROM t LEFT JOIN LATERAL f(t.a) x ON true",
            "table function",
        ),
        ("SELECT * FROM f(1)", "table function"),
        ("WITH x AS (SELECT 1) SELECT * FROM t", "WITH"),
        ("SELECT * FROM t FOR UPDATE", "FOR UPDATE/SHARE"),
        ("EXPLAIN SELECT * FROM t", "EXPLAIN"),
        ("DECLARE c CURSOR FOR SELECT * FROM t", "DECLARE … CURSOR"),
        ("VALUES (1)", "VALUES"),
    ] {
        assert_eq!(one(sql).scatter, Scatter::Blocked(construct), "{sql}");
    }
    // LIMIT n without ORDER BY: any n rows are the answer
    assert_eq!(
        one("SELECT * FROM t LIMIT 5").scatter,
        Scatter::FirstRows(5)
    );
    assert_eq!(one("SELECT * FROM t LIMIT ALL").scatter, Scatter::Plain);
    // one count(…) alone is summed across shards
    for sql in [
        "SELECT count(*) FROM t",
        "SELECT count(a) AS n FROM t WHERE b > 1",
        "SELECT pg_catalog.count(*) FROM t",
    ] {
        assert_eq!(one(sql).scatter, Scatter::Count, "{sql}");
    }
    // other kinds are never scattered
    for sql in [
        "UPDATE t SET a = 1",
        "DELETE FROM t",
        "INSERT INTO t VALUES (1)",
        "SELECT * INTO x FROM t",
        "CREATE TABLE x (a int)",
        "BEGIN",
        "PREPARE p AS SELECT * FROM t",
    ] {
        assert!(
            matches!(one(sql).scatter, Scatter::Blocked(_)),
            "{sql}: {:?}",
            one(sql).scatter
        );
    }
}

#[test]
fn any_arrays_and_disjunctions_of_key_equalities() {
    use crate::sql::ValueType;
    let s = one("SELECT * FROM t WHERE k = ANY('{1,2}') AND j = ANY($1::bigint[])");
    assert_eq!(
        s.tables[0].key_arrays,
        vec![
            (
                "k".into(),
                KeyArray::Literal("{1,2}".into(), ValueType::Unknown)
            ),
            ("j".into(), KeyArray::Param(1, ValueType::Integer)),
        ]
    );
    let s = one("SELECT * FROM t WHERE k = ANY(ARRAY[1, '2']::text[]) AND j = SOME(ARRAY[3])");
    assert_eq!(
        s.tables[0].key_lists,
        vec![
            (
                "k".into(),
                vec![
                    ValueExpr::Literal("1".into(), ValueType::Text),
                    ValueExpr::Literal("2".into(), ValueType::Text)
                ]
            ),
            ("j".into(), vec![lit("3")]),
        ]
    );
    let s = one("SELECT * FROM t x WHERE x.k = 1 OR x.k IN (2, 3) OR (x.k = $1)");
    assert_eq!(
        s.tables[0].key_lists,
        vec![(
            "k".into(),
            vec![
                lit("1"),
                lit("2"),
                lit("3"),
                ValueExpr::Param(1, ValueType::Unknown)
            ]
        )]
    );
    for sql in [
        "SELECT * FROM t WHERE k = 1 OR j = 2",
        "SELECT * FROM t x WHERE x.k = 1 OR k = 2",
        "SELECT * FROM t WHERE k = 1 OR k > 2",
        "SELECT * FROM t WHERE NOT (k = 1 OR k = 2)",
        "SELECT * FROM t WHERE k = ANY(ARRAY[1, f()])",
        "SELECT * FROM t WHERE k = ANY(ARRAY(SELECT 1))",
        "SELECT * FROM t WHERE k = ANY(f())",
        "SELECT * FROM t WHERE k = ANY('{1}'::varchar(3)[])",
        "SELECT * FROM t WHERE k > ANY('{1}')",
        "SELECT * FROM t WHERE k = ALL('{1}')",
        "SELECT * FROM t WHERE k = ANY('{1}') IS TRUE",
    ] {
        let s = one(sql);
        let t = &s.tables[0];
        assert!(
            t.key_lists.is_empty() && t.key_arrays.is_empty(),
            "{sql}: {t:?}"
        );
    }
}

#[test]
fn links_between_join_columns() {
    let link = |from: usize, fc: &str, to: usize, tc: &str| KeyLink {
        from,
        from_column: fc.into(),
        to,
        to_column: tc.into(),
    };
    let s = one("SELECT * FROM t JOIN u ON u.k = t.k WHERE t.k = 1");
    assert_eq!(s.links, vec![link(1, "k", 0, "k"), link(0, "k", 1, "k")]);
    let s = one("SELECT * FROM t, u WHERE t.a = u.b");
    assert_eq!(s.links, vec![link(0, "a", 1, "b"), link(1, "b", 0, "a")]);
    // the ON of an outer join carries values into its nullable side only
    let s = one("SELECT * FROM t LEFT JOIN u ON u.k = t.k");
    assert_eq!(s.links, vec![link(0, "k", 1, "k")]);
    let s = one("SELECT * FROM t RIGHT JOIN u ON u.k = t.k");
    assert_eq!(s.links, vec![link(1, "k", 0, "k")]);
    for sql in [
        "SELECT * FROM t FULL JOIN u ON u.k = t.k",
        "SELECT * FROM t JOIN u ON k = j",
        "SELECT * FROM t JOIN u ON u.k = t.k OR true",
        "SELECT * FROM t JOIN u USING (k)",
        "SELECT * FROM t x JOIN t y ON x.k = x.j",
        "SELECT * FROM t JOIN (SELECT 1 AS k) s ON s.k = t.k",
        "SELECT * FROM t JOIN u ON u.k::int = t.k",
    ] {
        assert!(one(sql).links.is_empty(), "{sql}: {:?}", one(sql).links);
    }
}

#[test]
fn partitionable_tables_of_a_join() {
    for (sql, flags) in [
        ("SELECT * FROM t", vec![true]),
        ("SELECT * FROM t, u", vec![true, true]),
        ("SELECT * FROM t JOIN u ON u.a = t.a", vec![true, true]),
        (
            "SELECT * FROM t LEFT JOIN u ON u.a = t.a",
            vec![true, false],
        ),
        (
            "SELECT * FROM t RIGHT JOIN u ON u.a = t.a",
            vec![false, true],
        ),
        (
            "SELECT * FROM t FULL JOIN u ON u.a = t.a",
            vec![false, false],
        ),
        (
            "SELECT * FROM t JOIN u USING (a) LEFT JOIN v ON v.a = t.a",
            vec![true, true, false],
        ),
        (
            "SELECT * FROM t LEFT JOIN u ON true JOIN v ON true",
            vec![true, false, true],
        ),
        ("SELECT * FROM t WHERE a IN (SELECT 1)", vec![true]),
        ("SELECT * FROM (t JOIN u ON true)", vec![]),
        ("SELECT * FROM t UNION SELECT * FROM u", vec![]),
    ] {
        assert_eq!(one(sql).partitionable, flags, "{sql}");
    }
    assert_eq!(one("SELECT * FROM t, u").scatter, Scatter::Plain);
    assert!(matches!(
        one("SELECT t.b, count(*) FROM t JOIN u ON u.a = t.a GROUP BY t.b ORDER BY t.b").scatter,
        Scatter::Merge(_)
    ));
}

#[path = "plan_tests.rs"]
mod plan_tests;
