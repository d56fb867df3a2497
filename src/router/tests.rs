//! Router tests by statement kind: SQL text → analysis → route, against a small map.

use std::collections::HashMap;

use super::*;
use crate::config::TableRule;
use crate::sharding::{KeyType, KeyValue, ShardId};
use crate::sql::analyze;

const SLOTS: u32 = 64;

fn map() -> ShardMap {
    let mut tables = HashMap::new();
    for (name, key, key_type) in [
        ("accounts", "aid", KeyType::BigInt),
        ("pgbench_accounts", "aid", KeyType::Integer),
        ("history", "aid", KeyType::BigInt),
        ("users", "email", KeyType::Text),
        ("devices", "id", KeyType::Uuid),
        ("Quoted", "Key", KeyType::BigInt),
    ] {
        tables.insert(
            name.to_owned(),
            TableRule {
                name: name.to_owned(),
                key: key.to_owned(),
                key_type,
            },
        );
    }
    let mut map = ShardMap {
        epoch: 1,
        slots: SLOTS,
        shard_names: vec!["s0".into(), "s1".into(), "s2".into()],
        slot_owner: (0..SLOTS).map(|s| (s % 3) as ShardId).collect(),
        tables,
        default_shard: 0,
        vnodes: 1,
        broadcast_writes: false,
        replicated: ["kinds".to_owned(), "currencies".to_owned()]
            .into_iter()
            .collect(),
    };
    // Key 5 lives on the default shard, so the joins of keyed rows with unsharded tables
    // below are single-shard.
    map.default_shard = map.locate(&KeyValue::Int(5)).1;
    map
}

/// Where unsharded tables live.
fn default() -> Target {
    Target::One(map().default_shard)
}

fn shard_of(key: KeyValue) -> ShardId {
    map().locate(&key).1
}

fn one(k: i64) -> Target {
    Target::One(shard_of(KeyValue::Int(k)))
}

/// Two integer keys owned by different shards.
fn split_keys() -> (i64, i64) {
    let first = shard_of(KeyValue::Int(1));
    let other = (2..1000)
        .find(|k| shard_of(KeyValue::Int(*k)) != first)
        .expect("keys on two shards");
    (1, other)
}

/// A key on the same shard as `k`, but a different value.
fn same_shard_as(k: i64) -> i64 {
    let s = shard_of(KeyValue::Int(k));
    (k + 1..k + 1000)
        .find(|x| shard_of(KeyValue::Int(*x)) == s)
        .expect("another key on the shard")
}

struct Params<'a>(Vec<Param<'a>>);
impl ParamSource for Params<'_> {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        self.0.get(n.checked_sub(1)?).copied()
    }
}

struct Ordinals(&'static str, usize);
impl KeyOrdinals for Ordinals {
    fn key_ordinal(&self, table: &str) -> Option<usize> {
        (table == self.0).then_some(self.1)
    }
}

fn route_with(
    sql: &str,
    params: &dyn ParamSource,
    ordinals: &dyn KeyOrdinals,
    policy: UnparsedPolicy,
) -> Result<Route, RouteError> {
    let analysis = analyze(sql);
    let input = RouteInput {
        sql,
        analysis: &analysis,
        params,
        ordinals,
    };
    route(&input, &map(), policy)
}

fn run(sql: &str) -> Result<Route, RouteError> {
    route_with(sql, &NoParams, &NoOrdinals, UnparsedPolicy::Refuse)
}

fn target(sql: &str) -> Result<Target, RouteError> {
    run(sql).map(|r| r.target)
}

fn target_p(sql: &str, params: &[Param<'_>]) -> Result<Target, RouteError> {
    route_with(
        sql,
        &Params(params.to_vec()),
        &NoOrdinals,
        UnparsedPolicy::Refuse,
    )
    .map(|r| r.target)
}

/// The key of `table` does not pin the statement: it is refused for lack of a key, or
/// (a SELECT whose only sharded table is `table`) runs on every shard.
#[track_caller]
fn assert_no_key(sql: &str, table: &str) {
    match run(sql) {
        Err(RouteError::NoShardKey { table: t, .. })
        | Err(RouteError::ScatterUnsupported { table: t, .. }) => assert_eq!(t, table, "{sql}"),
        Ok(Route {
            target: Target::Scatter(shards, Merge::Concatenate),
            reason: Reason::Scatter { table: t, why, .. },
        }) => {
            assert_eq!(t, table, "{sql}");
            assert_eq!(why, "no key", "{sql}");
            assert_eq!(shards, all_shards(), "{sql}");
        }
        other => panic!("{sql}: expected no usable key of {table}, got {other:?}"),
    }
}

/// Strictly refused for lack of a key (writes, joins of several sharded tables).
#[track_caller]
fn assert_refused_no_key(sql: &str, table: &str) {
    match run(sql) {
        Err(RouteError::NoShardKey { table: t, .. }) => assert_eq!(t, table, "{sql}"),
        other => panic!("{sql}: expected NoShardKey({table}), got {other:?}"),
    }
}

/// Refused because the statement would need several shards and `construct` prevents
/// concatenating their rows.
#[track_caller]
fn assert_scatter_blocked(sql: &str, construct: &str) {
    match run(sql) {
        Err(e @ RouteError::ScatterUnsupported { .. }) => {
            let RouteError::ScatterUnsupported { construct: c, .. } = &e else {
                unreachable!()
            };
            assert_eq!(*c, construct, "{sql}");
            assert!(e.to_string().contains(construct), "{sql}: {e}");
            assert_eq!(e.sqlstate().0, "0A000");
        }
        other => panic!("{sql}: expected ScatterUnsupported({construct}), got {other:?}"),
    }
}

fn all_shards() -> Vec<ShardId> {
    (0..map().shard_count()).collect()
}

#[track_caller]
fn assert_unsupported(sql: &str) {
    match run(sql) {
        Err(RouteError::Unsupported { .. }) => {}
        other => panic!("{sql}: expected Unsupported, got {other:?}"),
    }
}

#[track_caller]
fn assert_cross(sql: &str) {
    match run(sql) {
        Err(RouteError::CrossShard { .. }) => {}
        other => panic!("{sql}: expected CrossShard, got {other:?}"),
    }
}

// ---------------------------------------------------------------- routed by key

#[test]
fn point_select_literal() {
    let r = run("SELECT * FROM accounts WHERE aid = 5").unwrap();
    assert_eq!(r.target, one(5));
    let slot = map().locate(&KeyValue::Int(5)).0;
    assert_eq!(
        r.reason,
        Reason::ShardKey {
            table: "accounts".into(),
            column: "aid".into(),
            slot
        }
    );
    assert_eq!(
        r.reason.to_string(),
        format!("accounts.aid = value in slot {slot}")
    );
}

#[test]
fn point_select_param_text_and_binary() {
    let sql = "SELECT * FROM accounts WHERE aid = $1";
    assert_eq!(target_p(sql, &[Param::Text(b"5")]).unwrap(), one(5));
    assert_eq!(
        target_p(sql, &[Param::Binary(&5i64.to_be_bytes())]).unwrap(),
        one(5)
    );
    // an int4 parameter for a bigint key
    assert_eq!(
        target_p(sql, &[Param::Binary(&5i32.to_be_bytes())]).unwrap(),
        one(5)
    );
}

#[test]
fn literal_forms() {
    for sql in [
        "SELECT * FROM accounts WHERE aid = '5'",
        "SELECT * FROM accounts WHERE aid = 5::bigint",
        "SELECT * FROM accounts WHERE aid = '5'::bigint",
        "SELECT * FROM accounts WHERE aid = '5'::int8",
        "SELECT * FROM accounts WHERE CAST('5' AS bigint) = aid",
        "SELECT * FROM accounts WHERE aid = CAST(5 AS integer)",
        "SELECT * FROM accounts WHERE 5 = aid",
        "SELECT * FROM accounts WHERE (aid) = (5)",
        "SELECT * FROM accounts WHERE aid = bigint '5'",
        "SELECT * FROM accounts WHERE aid = ' 5 '",
        "SELECT * FROM accounts WHERE aid = 005",
        "SELECT * FROM accounts WHERE aid IN (5)",
    ] {
        assert_eq!(target(sql).unwrap(), one(5), "{sql}");
    }
}

#[test]
fn negative_literal_and_negated_param() {
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid = -5").unwrap(),
        one(-5)
    );
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid = '-5'").unwrap(),
        one(-5)
    );
    assert_eq!(
        target_p(
            "SELECT * FROM accounts WHERE aid = -$1",
            &[Param::Text(b"5")]
        ),
        Ok(Target::Scatter(all_shards(), Merge::Concatenate))
    );
    assert_eq!(
        run("UPDATE accounts SET abalance = 0 WHERE aid = -$1"),
        Err(RouteError::NoShardKey {
            table: "accounts".into(),
            column: "aid".into()
        })
    );
}

#[test]
fn extra_conjuncts_qualified_and_aliased() {
    assert_eq!(
        target("SELECT * FROM accounts WHERE accounts.aid = 5 AND abalance > 0").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM accounts a WHERE a.aid = 5").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM accounts AS a WHERE abalance > 0 AND (a.aid = 5 AND true)").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM public.accounts WHERE public.accounts.aid = 5").unwrap(),
        one(5)
    );
}

#[test]
fn identifier_folding() {
    for sql in [
        "SELECT * FROM \"accounts\" WHERE \"aid\" = 5",
        "SELECT * FROM public.accounts WHERE aid = 5",
        "SELECT * FROM ACCOUNTS WHERE AID = 5",
        "select * from Accounts where Aid = 5",
    ] {
        assert_eq!(target(sql).unwrap(), one(5), "{sql}");
    }
    // quoted names keep their case: "ACCOUNTS" is another (unsharded) table
    assert_eq!(target("SELECT * FROM \"ACCOUNTS\"").unwrap(), default());
    // a table whose map name is mixed case matches only when quoted
    assert_eq!(
        target("SELECT * FROM \"Quoted\" WHERE \"Key\" = 5").unwrap(),
        one(5)
    );
    assert_eq!(target("SELECT * FROM Quoted").unwrap(), default());
    // unquoted key column folds to "key", not the map's "Key"
    assert_no_key("SELECT * FROM \"Quoted\" WHERE Key = 5", "Quoted");
}

#[test]
fn pgbench_statements() {
    let p = [Param::Text(b"7"), Param::Text(b"42")];
    assert_eq!(
        target_p(
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1",
            &p[..1]
        )
        .unwrap(),
        Target::One(shard_of(KeyValue::Int(7)))
    );
    assert_eq!(
        target_p(
            "UPDATE pgbench_accounts SET abalance = abalance + $1 WHERE aid = $2",
            &p
        )
        .unwrap(),
        one(42)
    );
    assert_eq!(
        target_p(
            "UPDATE accounts SET abalance = abalance + $1 WHERE aid = $2",
            &p
        )
        .unwrap(),
        one(42)
    );
    // unsharded pgbench tables
    assert_eq!(
        target_p(
            "UPDATE pgbench_tellers SET tbalance = tbalance + $1 WHERE tid = $2",
            &p
        )
        .unwrap(),
        default()
    );
}

#[test]
fn delete_and_insert() {
    assert_eq!(
        target("DELETE FROM accounts WHERE aid = 7").unwrap(),
        one(7)
    );
    assert_eq!(
        target("INSERT INTO accounts (aid, abalance) VALUES (5, 0)").unwrap(),
        one(5)
    );
    assert_eq!(
        target("INSERT INTO accounts (abalance, aid) VALUES (0, '5')").unwrap(),
        one(5)
    );
    assert_eq!(
        target("INSERT INTO accounts (aid, abalance) VALUES (5, 0) RETURNING *").unwrap(),
        one(5)
    );
    assert_eq!(
        target(
            "INSERT INTO accounts (aid, abalance) VALUES (5, 0) \
             ON CONFLICT (aid) DO UPDATE SET abalance = EXCLUDED.abalance"
        )
        .unwrap(),
        one(5)
    );
    assert_eq!(
        target("INSERT INTO accounts (aid) VALUES (5) ON CONFLICT DO NOTHING").unwrap(),
        one(5)
    );
}

#[test]
fn insert_without_column_list_asks_for_key_position() {
    let sql = "INSERT INTO accounts VALUES ($1, $2)";
    let p = Params(vec![Param::Text(b"5"), Param::Text(b"0")]);
    assert_eq!(
        route_with(sql, &p, &NoOrdinals, UnparsedPolicy::Refuse),
        Err(RouteError::KeyOrdinalUnknown {
            table: "accounts".into()
        })
    );
    let r = route_with(sql, &p, &Ordinals("accounts", 0), UnparsedPolicy::Refuse).unwrap();
    assert_eq!(r.target, one(5));
    let r = route_with(sql, &p, &Ordinals("accounts", 1), UnparsedPolicy::Refuse).unwrap();
    assert_eq!(r.target, one(0));
    // key position beyond the supplied values: the key would be its default
    assert!(matches!(
        route_with(sql, &p, &Ordinals("accounts", 2), UnparsedPolicy::Refuse),
        Err(RouteError::InsertKey { .. })
    ));
}

#[test]
fn multi_row_insert() {
    let (a, b) = split_keys();
    let same = same_shard_as(a);
    assert_eq!(
        target(&format!(
            "INSERT INTO accounts (aid) VALUES ({a}), ({same})"
        ))
        .unwrap(),
        one(a)
    );
    // rows on several shards: split, each row to its own shard, in input order
    let sql = format!("INSERT INTO accounts (aid) VALUES ({a}), ({b}), ({same})");
    let r = target(&sql).unwrap();
    let (sa, sb) = match (one(a), one(b)) {
        (Target::One(x), Target::One(y)) => (x, y),
        other => panic!("{other:?}"),
    };
    let mut shards = vec![sa, sb];
    shards.sort_unstable();
    assert_eq!(
        r,
        Target::Scatter(
            shards,
            Merge::InsertSplit(std::sync::Arc::new(vec![sa, sb, sa]))
        )
    );
    // unless rows could vanish from RETURNING, or the statement reads other tables
    for sql in [
        format!(
            "INSERT INTO accounts (aid) VALUES ({a}), ({b}) ON CONFLICT DO NOTHING RETURNING aid"
        ),
        format!("INSERT INTO accounts (aid, bid) VALUES ({a}, (SELECT 1 FROM branches)), ({b}, 2)"),
    ] {
        assert!(
            matches!(target(&sql), Err(RouteError::Unsupported { .. })),
            "{sql}: {:?}",
            target(&sql)
        );
    }
    // DO NOTHING without RETURNING is fine
    assert!(matches!(
        target(&format!(
            "INSERT INTO accounts (aid) VALUES ({a}), ({b}) ON CONFLICT DO NOTHING"
        )),
        Ok(Target::Scatter(_, Merge::InsertSplit(_)))
    ));
}

#[test]
fn insert_key_missing_or_not_a_value() {
    for sql in [
        "INSERT INTO accounts (abalance) VALUES (0)",
        "INSERT INTO accounts DEFAULT VALUES",
        "INSERT INTO accounts (aid) VALUES (DEFAULT)",
        "INSERT INTO accounts (aid) VALUES (2 + 3)",
        "INSERT INTO accounts (aid) VALUES (nextval('s'))",
        "INSERT INTO accounts (aid) VALUES (-$1)",
    ] {
        assert!(
            matches!(run(sql), Err(RouteError::InsertKey { .. })),
            "{sql}: {:?}",
            run(sql)
        );
    }
}

#[test]
fn for_update_and_share() {
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid = 5 FOR UPDATE").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid = 5 FOR SHARE").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid = 5 FOR UPDATE OF accounts SKIP LOCKED").unwrap(),
        one(5)
    );
}

#[test]
fn join_of_two_keyed_sharded_tables() {
    let (a, b) = split_keys();
    let same = same_shard_as(a);
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts a JOIN history h ON h.aid = {same} WHERE a.aid = {a}"
        ))
        .unwrap(),
        one(a)
    );
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts a, history h WHERE a.aid = {a} AND h.aid = {a}"
        ))
        .unwrap(),
        one(a)
    );
    assert_cross(&format!(
        "SELECT * FROM accounts a, history h WHERE a.aid = {a} AND h.aid = {b}"
    ));
}

#[test]
fn join_with_unsharded_tables() {
    assert_eq!(
        target(
            "SELECT * FROM accounts a JOIN branches b ON b.bid = a.bid \
             LEFT JOIN tellers t ON t.bid = b.bid WHERE a.aid = 5"
        )
        .unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM branches b LEFT JOIN accounts a ON a.bid = b.bid WHERE a.aid = 5")
            .unwrap(),
        one(5)
    );
}

#[test]
fn subqueries_with_their_own_keys() {
    assert_eq!(
        target(
            "SELECT * FROM accounts WHERE aid = 5 AND abalance > \
             (SELECT avg(delta) FROM history WHERE aid = 5)"
        )
        .unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM (SELECT * FROM accounts WHERE aid = 5) s").unwrap(),
        one(5)
    );
    assert_eq!(
        target("WITH x AS (SELECT * FROM accounts WHERE aid = 5) SELECT * FROM x").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM branches WHERE bid IN (SELECT bid FROM accounts WHERE aid = 5)")
            .unwrap(),
        one(5)
    );
    assert_eq!(
        target(
            "SELECT * FROM accounts WHERE aid = 5 UNION ALL SELECT * FROM accounts WHERE aid = 5"
        )
        .unwrap(),
        one(5)
    );
}

#[test]
fn text_and_uuid_keys() {
    assert_eq!(
        target("SELECT * FROM users WHERE email = 'a@b.c'").unwrap(),
        Target::One(shard_of(KeyValue::Text("a@b.c".into())))
    );
    let id = "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11";
    let mut bytes = [0u8; 16];
    for (i, chunk) in id.replace('-', "").as_bytes().chunks(2).enumerate() {
        bytes[i] = u8::from_str_radix(std::str::from_utf8(chunk).unwrap(), 16).unwrap();
    }
    assert_eq!(
        target(&format!("SELECT * FROM devices WHERE id = '{id}'::uuid")).unwrap(),
        Target::One(shard_of(KeyValue::Uuid(bytes)))
    );
    // a bounded varchar cast could truncate: not treated as the key's value
    assert_no_key(
        "SELECT * FROM users WHERE email = 'abc'::varchar(2)",
        "users",
    );
    // backslashes depend on standard_conforming_strings
    assert_no_key("SELECT * FROM users WHERE email = 'a\\b'", "users");
}

// ---------------------------------------------------------------- must not route by key

#[test]
fn or_and_not_do_not_constrain() {
    assert_no_key(
        "SELECT * FROM accounts WHERE aid = 1 OR bid = 2",
        "accounts",
    );
    // (an OR of equalities on the key alone is a key list: see or_of_key_equalities)
    assert_no_key("SELECT * FROM accounts WHERE NOT (aid = 1)", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE aid <> 1", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE (aid = 1) IS TRUE", "accounts");
    assert_no_key(
        "SELECT * FROM accounts WHERE aid IS NOT DISTINCT FROM 1",
        "accounts",
    );
    assert_no_key("SELECT * FROM accounts", "accounts");
    assert_no_key(
        "SELECT * FROM accounts WHERE aid BETWEEN 1 AND 1",
        "accounts",
    );
    assert_no_key("SELECT * FROM accounts WHERE aid::int4 = 1", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE aid = 1 + 0", "accounts");
}

#[test]
fn subquery_key_does_not_pin_outer_scan() {
    assert_no_key(
        "SELECT * FROM accounts WHERE abalance > (SELECT abalance FROM accounts WHERE aid = 1)",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM accounts WHERE EXISTS (SELECT 1 FROM accounts b WHERE b.aid = 1)",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM (SELECT * FROM accounts) s WHERE aid = 5",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM accounts a WHERE a.aid = 5 AND a.bid IN (SELECT bid FROM accounts WHERE bid = 1)",
        "accounts",
    );
    assert_no_key(
        "SELECT (SELECT count(*) FROM history) FROM accounts WHERE aid = 5",
        "history",
    );
    assert_no_key(
        "WITH accounts AS (SELECT * FROM accounts) SELECT * FROM accounts WHERE aid = 5",
        "accounts",
    );
}

#[test]
fn outer_join_nullable_side_on_only() {
    // the ON clause of an outer join constrains the rows of its nullable side only
    assert_eq!(
        target("SELECT * FROM branches b LEFT JOIN accounts a ON a.aid = 5").unwrap(),
        one(5)
    );
    assert_eq!(
        target("SELECT * FROM accounts a RIGHT JOIN branches b ON a.aid = 5").unwrap(),
        one(5)
    );
    assert_no_key(
        "SELECT * FROM accounts a LEFT JOIN branches b ON a.aid = 5",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM branches b RIGHT JOIN accounts a ON a.aid = 5",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM accounts a FULL JOIN branches b ON a.aid = 5 AND a.bid = b.bid",
        "accounts",
    );
    // unqualified: attributed to the nullable side only
    assert_no_key(
        "SELECT * FROM accounts LEFT JOIN branches b ON aid = 5",
        "accounts",
    );
    // but the inner join's ON does constrain
    assert_eq!(
        target("SELECT * FROM branches b JOIN accounts a ON a.aid = 5").unwrap(),
        one(5)
    );
}

#[test]
fn column_of_another_table_or_other_column() {
    // (a join on the keys carries the value: see keys_joined_on_equal_keys)
    assert_no_key(
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.bid WHERE h.aid = 5",
        "accounts",
    );
    assert_no_key("SELECT * FROM accounts WHERE aid = bid", "accounts");
    assert_no_key(
        "SELECT * FROM accounts a, branches b WHERE b.aid = 5",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM accounts a WHERE accounts.aid = 5",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM accounts WHERE other.accounts.aid = 5",
        "accounts",
    );
    assert_no_key("SELECT * FROM accounts a(x, y) WHERE a.aid = 5", "accounts");
    assert_no_key(
        "SELECT * FROM accounts a JOIN history h USING (aid) WHERE aid = 5",
        "accounts",
    );
    assert_no_key(
        "SELECT * FROM accounts NATURAL JOIN history WHERE aid = 5",
        "accounts",
    );
    // unqualified key of one sharded table in a block with a nested join aliased away
    assert_no_key(
        "SELECT * FROM (accounts JOIN branches USING (bid)) j WHERE j.aid = 5",
        "accounts",
    );
}

#[test]
fn on_clause_of_nested_join_sees_only_its_tables() {
    // `aid` in the nested ON cannot name `a` (outside the nested join)
    assert_no_key(
        "SELECT * FROM accounts a LEFT JOIN (history h JOIN branches b ON aid = 5) ON true",
        "accounts",
    );
}

#[test]
fn any_and_not_in_do_not_constrain() {
    assert_no_key("SELECT * FROM accounts WHERE aid NOT IN (1)", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE aid NOT IN (1, 2)", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE aid IN (1, bid)", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE aid IN (1, 2 + 0)", "accounts");
    // two sharded tables: each needs its own key equality, as before
    assert_refused_no_key(
        "SELECT * FROM accounts WHERE aid IN (SELECT aid FROM history)",
        "accounts",
    );
}

#[test]
fn key_update_is_refused() {
    assert_eq!(
        run("UPDATE accounts SET aid = 5 WHERE aid = 1"),
        Err(RouteError::KeyUpdate {
            table: "accounts".into(),
            column: "aid".into()
        })
    );
    assert!(matches!(
        run("UPDATE accounts SET (abalance, aid) = (0, 5) WHERE aid = 1"),
        Err(RouteError::KeyUpdate { .. })
    ));
    assert!(matches!(
        run("INSERT INTO accounts (aid) VALUES (1) ON CONFLICT (aid) DO UPDATE SET aid = 2"),
        Err(RouteError::KeyUpdate { .. })
    ));
}

#[test]
fn insert_select_and_writing_ctes_are_refused() {
    assert_unsupported("INSERT INTO accounts SELECT * FROM accounts_old");
    assert_unsupported("INSERT INTO accounts (aid) SELECT 5");
    assert_unsupported("INSERT INTO log SELECT * FROM accounts WHERE aid = 5");
    assert_unsupported(
        "WITH d AS (DELETE FROM accounts WHERE aid = 5 RETURNING *) SELECT * FROM d",
    );
    assert_unsupported(
        "WITH d AS (INSERT INTO log VALUES (1) RETURNING *) SELECT * FROM accounts WHERE aid = 5",
    );
    assert_unsupported(
        "WITH u AS (UPDATE accounts SET abalance = 0 WHERE aid = 5 RETURNING *) \
         UPDATE accounts SET abalance = 1 WHERE aid = 5",
    );
    // writes to unsharded tables only: nothing to refuse
    assert_eq!(
        target("WITH d AS (DELETE FROM log RETURNING *) SELECT * FROM d").unwrap(),
        default()
    );
    assert_eq!(
        target("INSERT INTO log SELECT * FROM log_old").unwrap(),
        default()
    );
}

#[test]
fn table_command_inside_a_query_is_seen() {
    assert_unsupported("SELECT * FROM branches UNION TABLE accounts");
    assert_unsupported("SELECT * FROM accounts WHERE aid = 5 UNION ALL TABLE public.accounts");
    assert_eq!(target("SELECT 1 UNION TABLE branches").unwrap(), default());
}

#[test]
fn update_from_and_delete_using() {
    assert_eq!(
        target(
            "UPDATE accounts a SET abalance = 0 FROM branches b WHERE a.aid = 5 AND b.bid = a.bid"
        )
        .unwrap(),
        one(5)
    );
    assert_no_key(
        "UPDATE branches b SET bbalance = 0 FROM accounts a WHERE b.bid = a.bid",
        "accounts",
    );
    assert_eq!(
        target("DELETE FROM accounts a USING history h WHERE a.aid = 5 AND h.aid = 5").unwrap(),
        one(5)
    );
    assert_no_key(
        "DELETE FROM branches USING accounts WHERE branches.bid = accounts.bid",
        "accounts",
    );
}

// ---------------------------------------------------------------- value problems

#[test]
fn bad_null_and_missing_keys() {
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid = 'x'"),
        Err(RouteError::BadKey { .. })
    ));
    // a literal no key can equal, or `= NULL`: the occurrence contributes no rows and
    // needs no shard; any shard evaluates the comparison (and finds nothing)
    for sql in [
        "SELECT * FROM accounts WHERE aid = 99999999999999999999",
        "SELECT * FROM accounts WHERE aid = NULL",
        "SELECT * FROM accounts WHERE aid IN (NULL)",
        "UPDATE accounts SET abalance = 1 WHERE aid = NULL",
        "DELETE FROM accounts WHERE aid = -99999999999999999999",
    ] {
        assert_eq!(run(sql).unwrap().target, Target::Any, "{sql}");
    }
    assert!(matches!(
        target_p(
            "SELECT * FROM accounts WHERE aid = $1",
            &[Param::Text(b"abc")]
        ),
        Err(RouteError::BadKey { .. })
    ));
    assert!(matches!(
        target_p(
            "SELECT * FROM accounts WHERE aid = $1",
            &[Param::Text(&[0xff, 0x35])]
        ),
        Err(RouteError::BadKey { .. })
    ));
    assert!(matches!(
        target_p(
            "SELECT * FROM accounts WHERE aid = $1",
            &[Param::Binary(&[1, 2, 3])]
        ),
        Err(RouteError::BadKey { .. })
    ));
    assert_eq!(
        target_p("SELECT * FROM accounts WHERE aid = $1", &[Param::Null]),
        Ok(Target::Any)
    );
    assert!(matches!(
        run("INSERT INTO accounts (aid) VALUES (NULL)"),
        Err(RouteError::NullKey { .. })
    ));
    assert_eq!(
        target_p(
            "SELECT * FROM accounts WHERE abalance = $1 AND aid = $2",
            &[Param::Text(b"0")]
        ),
        Err(RouteError::MissingParam(2))
    );
    // an integer-key literal that is not a plain integer is refused, not guessed
    assert_no_key("SELECT * FROM accounts WHERE aid = 5.0", "accounts");
    assert_no_key("SELECT * FROM accounts WHERE aid = 1e3", "accounts");
}

// ---------------------------------------------------------------- statement kinds

#[test]
fn no_table_is_any_and_unsharded_tables_are_on_the_default_shard() {
    let r = run("SELECT * FROM branches WHERE bid = 1").unwrap();
    assert_eq!(
        r,
        Route {
            target: default(),
            reason: Reason::UnshardedTable {
                table: "branches".into()
            }
        }
    );
    // system catalogs are the same everywhere
    assert_eq!(
        target("SELECT * FROM pg_catalog.pg_class").unwrap(),
        Target::Any
    );
    assert_eq!(target("SELECT * FROM pg_type").unwrap(), Target::Any);
    assert_eq!(
        target("SELECT * FROM information_schema.tables").unwrap(),
        Target::Any
    );
    // CTE names are not tables
    assert_eq!(
        target("WITH x AS (SELECT 1) SELECT * FROM x").unwrap(),
        Target::Any
    );
    // a keyed row on another shard joined with an unsharded table: refused, never
    // answered from the empty copy of the table on that shard
    let elsewhere = (1..1000)
        .find(|k| one(*k) != default())
        .expect("a key off the default shard");
    assert!(matches!(
        run(&format!(
            "SELECT * FROM accounts a JOIN branches b ON b.bid = a.bid WHERE a.aid = {elsewhere}"
        )),
        Err(RouteError::CrossShard { .. })
    ));
    assert!(matches!(
        run(&format!(
            "UPDATE accounts SET abalance = 1 WHERE aid = {elsewhere}; INSERT INTO log VALUES (1)"
        )),
        Err(RouteError::CrossShard { .. })
    ));
    assert_eq!(target("SELECT 1").unwrap(), Target::Any);
    assert_eq!(target("SELECT now()").unwrap(), Target::Any);
    assert_eq!(target("").unwrap(), Target::Any);
}

#[test]
fn ddl_is_broadcast() {
    for sql in [
        "CREATE TABLE t (a bigint primary key)",
        "ALTER TABLE accounts ADD COLUMN note text",
        "DROP TABLE t",
        "TRUNCATE accounts",
        "TRUNCATE TABLE accounts, history CASCADE",
        "COMMENT ON TABLE accounts IS 'x'",
        "CREATE INDEX ON accounts (abalance)",
        "CREATE INDEX CONCURRENTLY i ON accounts (abalance)",
        "GRANT SELECT ON accounts TO app",
        "REVOKE SELECT ON accounts FROM app",
        "CREATE VIEW v AS SELECT * FROM branches",
        "CREATE SEQUENCE s",
        "CREATE SCHEMA s",
        "CREATE EXTENSION pgcrypto",
        "CREATE FUNCTION f() RETURNS int LANGUAGE sql AS 'select 1'",
        "CREATE TYPE mood AS ENUM ('a', 'b')",
        "DROP INDEX i",
    ] {
        let r = run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            r,
            Route {
                target: Target::All,
                reason: Reason::Ddl
            },
            "{sql}"
        );
    }
}

#[test]
fn ddl_reading_sharded_data_is_refused() {
    assert_unsupported("CREATE VIEW v AS SELECT * FROM accounts");
    assert_unsupported("CREATE TABLE t AS SELECT * FROM accounts WHERE aid = 5");
    assert_unsupported("SELECT * INTO t FROM accounts WHERE aid = 5");
    assert_eq!(
        target("SELECT * INTO t FROM branches").unwrap(),
        Target::All
    );
}

#[test]
fn session_statements_are_any() {
    for sql in [
        "BEGIN",
        "BEGIN ISOLATION LEVEL SERIALIZABLE",
        "START TRANSACTION READ ONLY",
        "COMMIT",
        "END",
        "ROLLBACK",
        "ABORT",
        "SAVEPOINT a",
        "RELEASE a",
        "ROLLBACK TO SAVEPOINT a",
        "SET search_path TO app",
        "SET LOCAL statement_timeout = 0",
        "RESET ALL",
        "SHOW search_path",
        "DISCARD ALL",
        "LISTEN c",
        "NOTIFY c, 'x'",
        "UNLISTEN *",
        "DEALLOCATE p",
        "DEALLOCATE ALL",
    ] {
        let r = run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(
            r,
            Route {
                target: Target::Any,
                reason: Reason::Session
            },
            "{sql}"
        );
    }
    assert_unsupported("COMMIT AND CHAIN");
}

/// Key positions of COPY rows: accounts' key is field 1 (a generated column before it
/// would make INSERT's position differ).
struct CopyOrdinals;
impl KeyOrdinals for CopyOrdinals {
    fn key_ordinal(&self, _table: &str) -> Option<usize> {
        Some(2)
    }
    fn copy_key_ordinal(&self, table: &str) -> Option<usize> {
        (table == "accounts").then_some(1)
    }
}

fn copy_route(sql: &str) -> Result<Route, RouteError> {
    route_with(sql, &NoParams, &CopyOrdinals, UnparsedPolicy::Refuse)
}

fn copy_in(sql: &str) -> std::sync::Arc<CopyIn> {
    match copy_route(sql).map(|r| r.target) {
        Ok(Target::Scatter(shards, Merge::CopyIn(plan))) => {
            assert_eq!(shards, vec![0, 1, 2], "{sql}");
            plan
        }
        other => panic!("{sql}: {other:?}"),
    }
}

#[test]
fn copy_from_stdin_into_a_sharded_table() {
    use crate::sharding::copy::CopyFormat;
    // without a column list the position comes from the catalog
    assert_eq!(
        run("COPY accounts FROM STDIN"),
        Err(RouteError::KeyOrdinalUnknown {
            table: "accounts".into()
        })
    );
    let plan = copy_in("COPY accounts FROM STDIN");
    let key = plan.key.clone().unwrap();
    assert_eq!((key.column.as_str(), key.position), ("aid", 1));
    assert_eq!(key.key_type, KeyType::BigInt);
    assert_eq!(plan.options.format, CopyFormat::Text);
    assert_eq!(plan.options.delimiter, b'\t');
    // a column list gives it
    let plan = copy_in(
        r"COPY accounts (filler, bid, aid) FROM STDIN WITH (FORMAT csv, HEADER, DELIMITER ';', NULL 'x', QUOTE '''', ESCAPE '\', FORCE_NULL (aid))",
    );
    let o = &plan.options;
    assert_eq!(plan.key.as_ref().unwrap().position, 2);
    assert_eq!(o.format, CopyFormat::Csv);
    assert!(o.header && o.key_force_null && !o.key_force_not_null);
    assert_eq!((o.delimiter, o.quote, o.escape), (b';', b'\'', b'\\'));
    assert_eq!(o.null, b"x");
    // old syntax
    let plan = copy_in("COPY accounts (aid) FROM STDIN WITH CSV HEADER");
    assert_eq!(plan.options.format, CopyFormat::Csv);
    assert!(plan.options.header);
    let plan = copy_in("COPY accounts FROM STDIN DELIMITER '|' NULL 'none'");
    assert_eq!(
        (plan.options.delimiter, &plan.options.null[..]),
        (b'|', &b"none"[..])
    );
    // QUOTE alone sets the escape too
    let plan = copy_in("COPY accounts FROM STDIN WITH (FORMAT csv, QUOTE '|')");
    assert_eq!((plan.options.quote, plan.options.escape), (b'|', b'|'));
    // refused: no key column, binary, server files, other encodings
    for sql in [
        "COPY accounts (filler) FROM STDIN",
        "COPY accounts FROM STDIN WITH (FORMAT binary)",
        "COPY accounts FROM STDIN BINARY",
        "COPY accounts FROM '/tmp/accounts.csv'",
        "COPY accounts TO '/tmp/accounts.csv'",
        "COPY accounts FROM STDIN WITH (ENCODING 'LATIN1')",
        "COPY accounts FROM STDIN WITH (DELIMITER 'é')",
    ] {
        let e = copy_route(sql).unwrap_err();
        assert_eq!(e.sqlstate(), SqlState::FEATURE_NOT_SUPPORTED, "{sql}: {e}");
    }
    copy_in("COPY accounts FROM STDIN WITH (ENCODING 'UTF8')");
}

#[test]
fn copy_to_stdout_and_reference_tables() {
    let all = || vec![0, 1, 2];
    assert_eq!(
        target("COPY accounts TO STDOUT").unwrap(),
        Target::Scatter(all(), Merge::CopyOut { skip_header: false })
    );
    assert_eq!(
        target("COPY accounts (aid, bid) TO STDOUT WITH (FORMAT csv, HEADER)").unwrap(),
        Target::Scatter(all(), Merge::CopyOut { skip_header: true })
    );
    assert_eq!(
        target("COPY (SELECT * FROM accounts WHERE aid = 5) TO STDOUT").unwrap(),
        one(5)
    );
    assert_eq!(
        target("COPY (SELECT aid FROM accounts WHERE bid > 3) TO STDOUT WITH CSV").unwrap(),
        Target::Scatter(all(), Merge::CopyOut { skip_header: false })
    );
    for sql in [
        "COPY accounts TO STDOUT WITH (FORMAT binary)",
        "COPY (SELECT aid FROM accounts) TO STDOUT WITH (FORMAT binary)",
        "COPY (SELECT aid FROM accounts ORDER BY aid) TO STDOUT",
        "COPY (SELECT count(*) FROM accounts) TO STDOUT",
        "COPY (SELECT a.aid FROM accounts a JOIN history h ON h.aid = a.aid) TO STDOUT",
    ] {
        let e = run(sql).unwrap_err();
        assert_eq!(e.sqlstate(), SqlState::FEATURE_NOT_SUPPORTED, "{sql}: {e}");
    }
    // unsharded and reference tables
    assert_eq!(target("COPY branches FROM STDIN").unwrap(), default());
    assert_eq!(target("COPY (SELECT 1) TO STDOUT").unwrap(), Target::Any);
    assert_eq!(target("COPY kinds TO STDOUT").unwrap(), Target::OneCopy);
    match target("COPY kinds FROM STDIN WITH (FORMAT binary)").unwrap() {
        Target::Scatter(shards, Merge::CopyIn(plan)) => {
            assert_eq!(shards, all());
            assert_eq!(plan.key, None);
        }
        other => panic!("{other:?}"),
    }
    assert_unsupported("COPY kinds FROM '/tmp/kinds'");
}

#[test]
fn sql_prepare_execute() {
    assert_unsupported("PREPARE p AS SELECT * FROM accounts WHERE aid = $1");
    assert_eq!(
        target("PREPARE p AS SELECT * FROM branches").unwrap(),
        Target::Any
    );
    assert_unsupported("EXECUTE p(1)");
}

#[test]
fn explain_routes_like_the_statement() {
    assert_eq!(
        target("EXPLAIN SELECT * FROM accounts WHERE aid = 5").unwrap(),
        one(5)
    );
    assert_eq!(
        target("EXPLAIN ANALYZE UPDATE accounts SET abalance = 0 WHERE aid = 5").unwrap(),
        one(5)
    );
    assert_no_key("EXPLAIN SELECT * FROM accounts", "accounts");
    assert_eq!(
        target("EXPLAIN (ANALYZE, BUFFERS) SELECT 1").unwrap(),
        Target::Any
    );
}

#[test]
fn other_statements_on_sharded_tables_are_refused() {
    assert_unsupported("LOCK TABLE accounts IN ACCESS EXCLUSIVE MODE");
    assert_unsupported("VACUUM accounts");
    assert_unsupported("ANALYZE accounts");
    assert_unsupported(
        "MERGE INTO accounts a USING branches b ON a.bid = b.bid WHEN MATCHED THEN DELETE",
    );
    assert_eq!(target("VACUUM").unwrap(), Target::Any);
    assert_eq!(target("LOCK TABLE branches").unwrap(), default());
}

#[test]
fn multi_statement_strings() {
    let (a, b) = split_keys();
    assert_eq!(
        target(&format!(
            "BEGIN; UPDATE accounts SET abalance = 0 WHERE aid = {a}; COMMIT"
        ))
        .unwrap(),
        one(a)
    );
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts WHERE aid = {a}; SELECT * FROM history WHERE aid = {a}"
        ))
        .unwrap(),
        one(a)
    );
    assert_cross(&format!(
        "SELECT * FROM accounts WHERE aid = {a}; SELECT * FROM accounts WHERE aid = {b}"
    ));
    assert_eq!(
        target("CREATE TABLE t (a int); SET x = 1").unwrap(),
        Target::All
    );
    assert_cross(&format!(
        "CREATE TABLE t (a int); SELECT * FROM accounts WHERE aid = {a}"
    ));
    assert_eq!(target("BEGIN; SELECT 1; COMMIT").unwrap(), Target::Any);
    assert_no_key(
        &format!("BEGIN; SELECT * FROM accounts WHERE aid = {a}; DELETE FROM accounts; COMMIT"),
        "accounts",
    );
}

// ---------------------------------------------------------------- unparseable text

#[test]
fn unparsed_policy() {
    for sql in [
        "VACUUM ANALYZE accounts",
        "CHECKPOINT",
        "DO $$ BEGIN END $$",
        "TABLE accounts",
        "SELECT * FROM accounts WHERE aid = 5 FOR NO KEY UPDATE",
        "ALTER SYSTEM SET work_mem = '1MB'",
    ] {
        assert!(
            matches!(run(sql), Err(RouteError::Unparsed { ref hint, .. }) if hint.is_empty()),
            "{sql}"
        );
    }
    let on_default =
        |sql: &str| route_with(sql, &NoParams, &NoOrdinals, UnparsedPolicy::DefaultShard);
    assert_eq!(
        on_default("CHECKPOINT").unwrap(),
        Route {
            target: default(),
            reason: Reason::UnparsedNoShardedTable
        }
    );
    assert_eq!(on_default("TABLE branches").unwrap().target, default());
    assert!(on_default("DO $$ BEGIN EXECUTE 'TRUNCATE acc' || 'ounts'; END $$").is_err());
    for sql in [
        "TABLE accounts",
        "VACUUM ANALYZE public.\"accounts\"",
        "DO $$ BEGIN DELETE FROM Accounts; END $$",
        "SELECT * FROM history h FOR NO KEY UPDATE",
    ] {
        match on_default(sql) {
            Err(RouteError::Unparsed { hint, .. }) => {
                assert!(
                    hint.contains("sharded table") || hint.contains("DO block"),
                    "{hint}"
                )
            }
            other => panic!("{sql}: {other:?}"),
        }
    }
    assert_eq!(
        on_default("VACUUM ANALYZE accounts_archive")
            .unwrap()
            .target,
        default()
    );
}

#[test]
fn sqlstates() {
    assert_eq!(
        run("SELECT string_agg(filler, ',') FROM accounts")
            .unwrap_err()
            .sqlstate()
            .0,
        "0A000"
    );
    assert_eq!(
        run("DELETE FROM accounts").unwrap_err().sqlstate().0,
        "0A000"
    );
    assert_eq!(
        run("SELECT * FROM accounts WHERE aid = 'x'")
            .unwrap_err()
            .sqlstate()
            .0,
        "22P02"
    );
    assert_eq!(RouteError::MissingParam(1).sqlstate().0, "08P01");
}

#[test]
fn values_whose_conversion_differs_from_the_key_type_are_refused() {
    // a text key (users.email in the test map) given integer or uuid syntax
    for sql in [
        "INSERT INTO users (email) VALUES (05)",
        "INSERT INTO users (email) VALUES ('05'::int)",
        "SELECT * FROM users WHERE email = 5",
        "INSERT INTO users (email) VALUES ('A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'::uuid)",
        "INSERT INTO users (email) VALUES ($1::int)",
    ] {
        assert!(
            matches!(run(sql), Err(RouteError::Unsupported { .. })),
            "{sql} → {:?}",
            run(sql)
        );
    }
    // an integer cast to text is canonical decimal, as in Postgres
    assert_eq!(
        run("SELECT * FROM users WHERE email = 05::text").map(|r| r.target),
        run("SELECT * FROM users WHERE email = '5'").map(|r| r.target)
    );
    // integer keys accept integer syntax, quoted strings and integer casts
    for sql in [
        "SELECT * FROM accounts WHERE aid = '05'::int",
        "SELECT * FROM accounts WHERE aid = ' 5'",
        "SELECT * FROM accounts WHERE aid = 5::bigint",
    ] {
        assert_eq!(
            run(sql).map(|r| r.target),
            run("SELECT * FROM accounts WHERE aid = 5").map(|r| r.target),
            "{sql}"
        );
    }
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid = '5'::text"),
        Err(RouteError::Unsupported { .. })
    ));
}

#[test]
fn declared_parameter_types_must_convert_like_the_key() {
    struct Declared<'a>(Param<'a>, u32);
    impl ParamSource for Declared<'_> {
        fn param(&self, n: usize) -> Option<Param<'_>> {
            (n == 1).then_some(self.0)
        }
        fn param_type(&self, n: usize) -> u32 {
            if n == 1 { self.1 } else { 0 }
        }
    }
    let sql = "SELECT * FROM accounts WHERE aid = $1";
    let go = |p: Param<'_>, oid: u32| {
        route_with(sql, &Declared(p, oid), &NoOrdinals, UnparsedPolicy::Refuse)
    };
    // text bytes declared as text, in binary: Postgres casts '42' to 42; reading the
    // bytes as a big-endian integer would pick another shard
    assert!(matches!(
        go(Param::Binary(b"42"), 25),
        Err(RouteError::Unsupported { .. })
    ));
    assert!(matches!(
        go(Param::Text(b"42"), 1700),
        Err(RouteError::Unsupported { .. })
    ));
    let expected = target("SELECT * FROM accounts WHERE aid = 42").unwrap();
    for (p, oid) in [
        (Param::Binary(&42i64.to_be_bytes()[..]), 20),
        (Param::Binary(&42i32.to_be_bytes()[..]), 23),
        (Param::Binary(&42i64.to_be_bytes()[..]), 0),
        (Param::Text(b"42"), 0),
        (Param::Text(b"42"), 705),
        (Param::Text(b"42"), 23),
    ] {
        assert_eq!(go(p, oid).unwrap().target, expected, "{p:?} as OID {oid}");
    }
}

#[test]
fn settings_that_change_how_text_is_read_are_refused() {
    for sql in [
        "SET standard_conforming_strings = off",
        "set Standard_Conforming_Strings to 'off'",
        "SELECT set_config('standard_conforming_strings', 'off', false)",
        "SET client_encoding = 'LATIN1'",
        "SET NAMES 'WIN1252'",
    ] {
        assert!(
            matches!(run(sql), Err(RouteError::Unsupported { .. })),
            "{sql}"
        );
    }
    for sql in [
        "SHOW standard_conforming_strings",
        "SET client_encoding = 'UTF8'",
        "SET NAMES 'utf8'",
        "SHOW client_encoding",
    ] {
        assert!(run(sql).is_ok(), "{sql}");
    }
}

// ---------------------------------------------------------------- scatter reads

/// `n` integer keys, one on each of `n` different shards (n ≤ 3).
fn keys_on_distinct_shards(n: usize) -> Vec<i64> {
    let mut keys: Vec<i64> = Vec::new();
    for k in 1..1000 {
        if keys.len() == n {
            break;
        }
        if keys.iter().all(|x| one(*x) != one(k)) {
            keys.push(k);
        }
    }
    assert_eq!(keys.len(), n);
    keys
}

fn sorted_shards(keys: &[i64]) -> Vec<ShardId> {
    let mut s: Vec<ShardId> = keys.iter().map(|k| shard_of(KeyValue::Int(*k))).collect();
    s.sort_unstable();
    s.dedup();
    s
}

#[test]
fn plain_select_without_key_scatters_to_every_shard() {
    let r = run("SELECT * FROM accounts").unwrap();
    assert_eq!(r.target, Target::Scatter(vec![0, 1, 2], Merge::Concatenate));
    assert_eq!(
        r.reason,
        Reason::Scatter {
            table: "accounts".into(),
            column: "aid".into(),
            shards: 3,
            why: "no key"
        }
    );
    assert_eq!(
        r.reason.to_string(),
        "accounts.aid: no key, runs on 3 shards, replies merged"
    );
    for sql in [
        "SELECT aid, abalance * 2, lower(filler), now() FROM accounts WHERE abalance > 0",
        "SELECT ALL * FROM accounts",
        "SELECT * FROM ONLY accounts",
        "SELECT * FROM public.accounts a WHERE a.abalance = 0",
        "(SELECT * FROM accounts)",
        "SELECT * FROM accounts WHERE aid > 5",
        "SELECT * FROM accounts WHERE aid IN (1, 2) OR abalance = 0",
        "SELECT * FROM accounts WHERE NOT (aid IN (1, 2))",
        "SELECT * FROM accounts a WHERE other.aid IN (1, 2)",
        "SELECT * FROM users WHERE email LIKE 'a%'",
        // ORs that are not all key equalities of one occurrence
        "SELECT * FROM accounts WHERE aid = 5 OR bid = 6",
        "SELECT * FROM accounts a WHERE a.aid = 5 OR aid = 6",
        "SELECT * FROM accounts WHERE aid = 5 OR aid > 6",
        "SELECT * FROM accounts WHERE aid = 5 OR (aid = 6 AND bid = 1)",
        "SELECT * FROM accounts WHERE NOT (aid = 5 OR aid = 6)",
        "SELECT * FROM accounts WHERE (aid = 5 OR aid = 6) IS NOT FALSE",
        "SELECT * FROM accounts WHERE abalance = 0 OR (aid = 5 OR aid = 6)",
        // = ANY of something that is not a plain array
        "SELECT * FROM accounts WHERE aid = ANY(ARRAY[1, bid])",
        "SELECT * FROM accounts WHERE aid <> ANY(ARRAY[1, 2])",
        "SELECT * FROM accounts WHERE aid = ALL(ARRAY[1, 2])",
        "SELECT * FROM accounts WHERE aid = ANY('{{1,2},{3,4}}')",
        "SELECT * FROM accounts WHERE aid = ANY('[1:2]={1,2}')",
        "SELECT * FROM accounts WHERE aid = ANY('{1,2}'::text[])",
        "SELECT * FROM accounts WHERE aid = ANY(string_to_array('1,2', ',')::bigint[])",
    ] {
        assert_eq!(
            target(sql).unwrap(),
            Target::Scatter(all_shards(), Merge::Concatenate),
            "{sql}"
        );
    }
}

#[test]
fn in_list_scatters_to_the_shards_owning_its_values() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    let expected = Target::Scatter(sorted_shards(&keys), Merge::Concatenate);
    let r = run(&format!("SELECT * FROM accounts WHERE aid IN ({a}, {b})")).unwrap();
    assert_eq!(r.target, expected);
    assert_eq!(
        r.reason,
        Reason::Scatter {
            table: "accounts".into(),
            column: "aid".into(),
            shards: 2,
            why: "key IN list"
        }
    );
    for sql in [
        format!(
            "SELECT * FROM accounts WHERE aid IN ({b}, {a}, {})",
            same_shard_as(a)
        ),
        format!("SELECT * FROM accounts a WHERE a.aid IN ('{a}', {b}::bigint) AND abalance > 0"),
        format!("SELECT * FROM accounts WHERE (aid IN ({a}, {b}))"),
        format!("SELECT * FROM accounts WHERE aid IN ({a}, {b}, NULL)"),
        // the first list on the key decides (every row satisfies each of them)
        format!("SELECT * FROM accounts WHERE aid IN ({a}, {b}) AND aid IN (1, 2, 3)"),
    ] {
        assert_eq!(target(&sql).unwrap(), expected, "{sql}");
    }
    // all three shards
    let three = keys_on_distinct_shards(3);
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts WHERE aid IN ({}, {}, {})",
            three[0], three[1], three[2]
        ))
        .unwrap(),
        Target::Scatter(vec![0, 1, 2], Merge::Concatenate)
    );
    // a key equality wins over a list
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts WHERE aid IN ({a}, {b}) AND aid = {a}"
        ))
        .unwrap(),
        one(a)
    );
}

#[test]
fn in_list_on_one_shard_is_routed_there() {
    let a = 7;
    let same = same_shard_as(a);
    let r = run(&format!(
        "SELECT * FROM accounts WHERE aid IN ({a}, {same}, {a})"
    ))
    .unwrap();
    assert_eq!(r.target, one(a));
    assert!(matches!(r.reason, Reason::ShardKey { .. }), "{r:?}");
    // not plain, but one shard: no merge needed
    assert_eq!(
        target(&format!(
            "SELECT count(*) FROM accounts WHERE aid IN ({a}, {same}) ORDER BY 1"
        ))
        .unwrap(),
        one(a)
    );
    // with an unsharded table on another shard: refused as for an equality
    let elsewhere = (1..1000)
        .find(|k| one(*k) != default())
        .expect("a key off the default shard");
    let same = same_shard_as(elsewhere);
    assert!(matches!(
        run(&format!(
            "SELECT * FROM accounts a JOIN branches b ON b.bid = a.bid WHERE a.aid IN ({elsewhere}, {same})"
        )),
        Err(RouteError::CrossShard { .. })
    ));
}

#[test]
fn in_list_with_parameters() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    let sql = "SELECT * FROM accounts WHERE aid IN ($1, $2)";
    let (ta, tb) = (a.to_string(), b.to_string());
    let bb = b.to_be_bytes();
    assert_eq!(
        target_p(sql, &[Param::Text(ta.as_bytes()), Param::Binary(&bb)]).unwrap(),
        Target::Scatter(sorted_shards(&keys), Merge::Concatenate)
    );
    let same = same_shard_as(a).to_string();
    assert_eq!(
        target_p(
            sql,
            &[Param::Text(ta.as_bytes()), Param::Text(same.as_bytes())]
        )
        .unwrap(),
        one(a)
    );
    assert_eq!(
        target_p(sql, &[Param::Text(ta.as_bytes())]),
        Err(RouteError::MissingParam(2))
    );
    assert!(matches!(
        target_p(sql, &[Param::Text(ta.as_bytes()), Param::Text(b"x")]),
        Err(RouteError::BadKey { .. })
    ));
    // a NULL parameter matches nothing
    assert_eq!(
        target_p(sql, &[Param::Null, Param::Text(ta.as_bytes())]).unwrap(),
        one(a)
    );
    assert_eq!(
        target_p(sql, &[Param::Null, Param::Null]).unwrap(),
        default()
    );
    // mixed literal and parameter
    assert_eq!(
        target_p(
            &format!("SELECT * FROM accounts WHERE aid IN ({a}, $1::bigint)"),
            &[Param::Text(tb.as_bytes())]
        )
        .unwrap(),
        Target::Scatter(sorted_shards(&keys), Merge::Concatenate)
    );
}

#[test]
fn in_list_of_nulls_matches_nothing() {
    let r = run("SELECT * FROM accounts WHERE aid IN (NULL, NULL::bigint)").unwrap();
    assert_eq!(
        r,
        Route {
            target: default(),
            reason: Reason::EmptyKeyList {
                table: "accounts".into(),
                column: "aid".into()
            }
        }
    );
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid IN (NULL, 5)").unwrap(),
        one(5)
    );
    // `IN (NULL)` is the equality `= NULL`: no rows, any shard
    assert_eq!(
        target("SELECT * FROM accounts WHERE aid IN (NULL)"),
        Ok(Target::Any)
    );
}

#[test]
fn in_list_values_are_checked_like_equalities() {
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid IN (1, 'x')"),
        Err(RouteError::BadKey { .. })
    ));
    assert!(matches!(
        run("SELECT * FROM users WHERE email IN ('a', 5)"),
        Err(RouteError::Unsupported { .. })
    ));
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid IN (1, '2'::text)"),
        Err(RouteError::Unsupported { .. })
    ));
    let a = KeyValue::Text("a@b.c".into());
    let b = (0..1000)
        .map(|i| format!("u{i}@x"))
        .find(|e| shard_of(KeyValue::Text(e.clone())) != shard_of(a.clone()))
        .expect("an email on another shard");
    let mut expected = vec![shard_of(a), shard_of(KeyValue::Text(b.clone()))];
    expected.sort_unstable();
    assert_eq!(
        target(&format!(
            "SELECT * FROM users WHERE email IN ('a@b.c', '{b}')"
        ))
        .unwrap(),
        Target::Scatter(expected, Merge::Concatenate)
    );
}

#[test]
fn constructs_that_cannot_be_concatenated_are_named() {
    let keys = keys_on_distinct_shards(2);
    let list = format!("aid IN ({}, {})", keys[0], keys[1]);
    for (sql, construct) in [
        (
            "SELECT * FROM accounts FETCH FIRST 3 ROWS ONLY".to_owned(),
            "FETCH FIRST (write it as LIMIT)",
        ),
        (
            "SELECT stddev_pop(abalance) FROM accounts".to_owned(),
            "aggregate function stddev_pop()",
        ),
        (
            "SELECT array_agg(aid) FROM accounts".to_owned(),
            "aggregate function array_agg()",
        ),
        (
            "SELECT jsonb_object_agg_strict(aid, abalance) FROM accounts".to_owned(),
            "aggregate function",
        ),
        (
            "SELECT my_agg(abalance) FROM accounts".to_owned(),
            "aggregate function",
        ),
        (
            "SELECT 1 + count(*) FROM accounts".to_owned(),
            "an expression over an aggregate",
        ),
        (
            "SELECT count(*) FILTER (WHERE abalance > 0) FROM accounts".to_owned(),
            "aggregate function with FILTER",
        ),
        (
            "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY abalance) FROM accounts".to_owned(),
            "aggregate function with WITHIN GROUP",
        ),
        (
            "SELECT f(DISTINCT abalance) FROM accounts".to_owned(),
            "aggregate function with DISTINCT",
        ),
        (
            "SELECT f(abalance ORDER BY aid) FROM accounts".to_owned(),
            "aggregate function with ORDER BY",
        ),
        (
            "SELECT row_number() OVER () FROM accounts".to_owned(),
            "window function",
        ),
        (
            "SELECT f(aid) OVER (PARTITION BY bid) FROM accounts".to_owned(),
            "window function",
        ),
        (
            "SELECT aid FROM accounts WINDOW w AS (ORDER BY aid)".to_owned(),
            "WINDOW",
        ),
        (
            "SELECT 1 FROM accounts HAVING true".to_owned(),
            "HAVING other than AND-ed comparisons of an aggregate or group key with a literal",
        ),
        (
            "SELECT DISTINCT ON (bid) * FROM accounts".to_owned(),
            "DISTINCT ON",
        ),
        (
            "SELECT aid FROM accounts UNION ALL SELECT 1".to_owned(),
            "UNION/INTERSECT/EXCEPT",
        ),
        (
            "SELECT aid FROM accounts EXCEPT SELECT 1".to_owned(),
            "UNION/INTERSECT/EXCEPT",
        ),
        (
            "SELECT * FROM accounts WHERE abalance > (SELECT 1)".to_owned(),
            "subquery",
        ),
        ("SELECT (SELECT 1) FROM accounts".to_owned(), "subquery"),
        (
            "SELECT * FROM accounts WHERE EXISTS (SELECT 1)".to_owned(),
            "subquery",
        ),
        (
            "SELECT * FROM branches WHERE bid IN (SELECT bid FROM accounts)".to_owned(),
            "subquery",
        ),
        (
            "SELECT * FROM (SELECT * FROM accounts) s".to_owned(),
            "subquery",
        ),
        (
            "WITH x AS (SELECT * FROM accounts) SELECT * FROM x".to_owned(),
            "WITH",
        ),
        (
            "WITH x AS (SELECT 1) SELECT * FROM accounts".to_owned(),
            "WITH",
        ),
        (
            "SELECT * FROM accounts a JOIN branches b ON a.bid = b.bid".to_owned(),
            "join",
        ),
        (
            "SELECT * FROM accounts a LEFT JOIN branches b ON a.bid = b.bid".to_owned(),
            "join",
        ),
        ("SELECT * FROM accounts, pg_class".to_owned(), "join"),
        (
            "SELECT * FROM generate_series(1, 3) g, accounts".to_owned(),
            "table function",
        ),
        (
            "SELECT * FROM accounts FOR UPDATE".to_owned(),
            "FOR UPDATE/SHARE",
        ),
        (
            format!("SELECT * FROM accounts WHERE {list} FOR SHARE"),
            "FOR UPDATE/SHARE",
        ),
        ("EXPLAIN SELECT * FROM accounts".to_owned(), "EXPLAIN"),
        (
            format!("EXPLAIN ANALYZE SELECT * FROM accounts WHERE {list}"),
            "EXPLAIN",
        ),
        (
            "DECLARE c CURSOR FOR SELECT * FROM accounts".to_owned(),
            "DECLARE … CURSOR",
        ),
    ] {
        assert_scatter_blocked(&sql, construct);
    }
    // one count(…) alone: summed across shards
    assert_eq!(
        target("SELECT count(*) FROM accounts WHERE abalance > 0").unwrap(),
        Target::Scatter(all_shards(), Merge::SumCounts)
    );
    // the message names table, construct and key
    assert_eq!(
        run("SELECT rank() OVER (ORDER BY aid) FROM accounts")
            .unwrap_err()
            .to_string(),
        "statement on sharded table \"accounts\" without a single shard key needs several shards, and window function across shards is not supported yet: add \"WHERE aid = <value>\""
    );
    // ORDER BY, LIMIT/OFFSET, DISTINCT, GROUP BY, HAVING and recombinable aggregates
    // are merged by a plan, on the shards the key list allows
    for sql in [
        "SELECT * FROM accounts ORDER BY aid".to_owned(),
        format!("SELECT * FROM accounts WHERE {list} ORDER BY aid"),
        "SELECT * FROM accounts LIMIT 10 OFFSET 1".to_owned(),
        "SELECT count(*), min(aid) FROM accounts".to_owned(),
        format!("SELECT sum(abalance) FROM accounts WHERE {list}"),
        "SELECT pg_catalog.MAX(aid) FROM accounts".to_owned(),
        "SELECT bid, bool_and(abalance > 0) FROM accounts GROUP BY bid HAVING count(*) > 2"
            .to_owned(),
        "SELECT DISTINCT bid FROM accounts".to_owned(),
    ] {
        match target(&sql) {
            Ok(Target::Scatter(shards, Merge::Plan(_))) => assert!(shards.len() >= 2, "{sql}"),
            other => panic!("{sql}: {other:?}"),
        }
    }
    // SELECT … INTO is DDL reading sharded data, refused as before
    assert_unsupported("SELECT * INTO t FROM accounts");
}

#[test]
fn several_sharded_tables_keep_needing_equalities() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    assert_refused_no_key(
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid",
        "accounts",
    );
    assert_refused_no_key(
        &format!("SELECT * FROM accounts a, history h WHERE a.aid IN ({a}, {b}) AND h.aid = {a}"),
        "accounts",
    );
    assert_refused_no_key(
        &format!(
            "SELECT * FROM accounts WHERE aid = {a} UNION ALL SELECT * FROM accounts WHERE aid IN ({a}, {b})"
        ),
        "accounts",
    );
}

#[test]
fn writes_with_in_lists_are_refused() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    let same = same_shard_as(a);
    for sql in [
        format!("UPDATE accounts SET abalance = 0 WHERE aid IN ({a}, {b})"),
        format!("UPDATE accounts SET abalance = 0 WHERE aid IN ({a}, {same})"),
        format!("DELETE FROM accounts WHERE aid IN ({a}, {b})"),
        "DELETE FROM accounts".to_owned(),
        "UPDATE accounts SET abalance = 0".to_owned(),
    ] {
        assert_refused_no_key(&sql, "accounts");
    }
    assert_unsupported(&format!(
        "INSERT INTO log SELECT * FROM accounts WHERE aid IN ({a}, {b})"
    ));
    assert_unsupported("INSERT INTO log SELECT * FROM accounts");
}

#[test]
fn scatter_is_alone_in_its_query_string() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    for sql in [
        format!("SELECT * FROM accounts; SELECT * FROM accounts WHERE aid = {a}"),
        format!("SELECT * FROM accounts WHERE aid = {a}; SELECT * FROM accounts"),
        "SELECT * FROM accounts; SELECT * FROM accounts".to_owned(),
        format!("SELECT * FROM accounts WHERE aid IN ({a}, {b}); SELECT * FROM history"),
        "SELECT * FROM accounts; CREATE TABLE t (a int)".to_owned(),
        "SELECT * FROM accounts; SELECT * FROM branches".to_owned(),
    ] {
        assert_cross(&sql);
    }
    // not even with statements that run anywhere: their replies would be merged too
    assert_cross("BEGIN; SELECT * FROM accounts; COMMIT");
    assert_cross("SELECT 1; SELECT * FROM accounts");
}

#[test]
fn one_shard_map_runs_everything_there() {
    let mut m = map();
    m.shard_names.truncate(1);
    m.slot_owner = vec![0; SLOTS as usize];
    m.default_shard = 0;
    for sql in [
        "SELECT * FROM accounts",
        "SELECT count(*) FROM accounts ORDER BY 1",
        "SELECT * FROM accounts WHERE aid IN (1, 2, 3)",
    ] {
        let analysis = analyze(sql);
        let input = RouteInput {
            sql,
            analysis: &analysis,
            params: &NoParams,
            ordinals: &NoOrdinals,
        };
        assert_eq!(
            route(&input, &m, UnparsedPolicy::Refuse).unwrap().target,
            Target::One(0),
            "{sql}"
        );
    }
}

#[test]
fn writes_without_a_single_key_need_broadcast_writes() {
    let keys = keys_on_distinct_shards(2);
    let list = format!("aid IN ({}, {})", keys[0], keys[1]);
    // off by default
    assert_refused_no_key("UPDATE accounts SET abalance = 0", "accounts");
    assert_refused_no_key(&format!("DELETE FROM accounts WHERE {list}"), "accounts");
    let mut m = map();
    m.broadcast_writes = true;
    let go = |sql: &str| {
        let analysis = analyze(sql);
        route(
            &RouteInput {
                sql,
                analysis: &analysis,
                params: &NoParams,
                ordinals: &NoOrdinals,
            },
            &m,
            UnparsedPolicy::Refuse,
        )
    };
    assert_eq!(
        go("UPDATE accounts SET abalance = 0 WHERE abalance < 0")
            .unwrap()
            .target,
        Target::Scatter(all_shards(), Merge::Concatenate)
    );
    let mut two: Vec<ShardId> = keys.iter().map(|k| shard_of(KeyValue::Int(*k))).collect();
    two.sort_unstable();
    assert_eq!(
        go(&format!("DELETE FROM accounts WHERE {list} RETURNING aid"))
            .unwrap()
            .target,
        Target::Scatter(two, Merge::Concatenate)
    );
    // still one shard with a key, and never a key change or a second table
    assert_eq!(
        go("DELETE FROM accounts WHERE aid = 5").unwrap().target,
        one(5)
    );
    assert!(matches!(
        go("UPDATE accounts SET aid = aid + 1"),
        Err(RouteError::KeyUpdate { .. })
    ));
    assert!(go("UPDATE accounts a SET abalance = 0 FROM branches b WHERE a.bid = b.bid").is_err());
    assert!(go("DELETE FROM accounts WHERE bid IN (SELECT bid FROM branches)").is_err());
}

// ---------------------------------------------------------------- key = ANY(array), OR

/// A one-dimensional binary array of `oid` elements.
fn binary_array(oid: u32, elems: &[Option<Vec<u8>>]) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&1i32.to_be_bytes());
    b.extend_from_slice(&i32::from(elems.iter().any(Option::is_none)).to_be_bytes());
    b.extend_from_slice(&oid.to_be_bytes());
    b.extend_from_slice(&(elems.len() as i32).to_be_bytes());
    b.extend_from_slice(&1i32.to_be_bytes());
    for e in elems {
        match e {
            None => b.extend_from_slice(&(-1i32).to_be_bytes()),
            Some(v) => {
                b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                b.extend_from_slice(v);
            }
        }
    }
    b
}

/// One parameter with a declared type.
struct Typed<'a>(Param<'a>, u32);
impl ParamSource for Typed<'_> {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        (n == 1).then_some(self.0)
    }
    fn param_type(&self, n: usize) -> u32 {
        if n == 1 { self.1 } else { 0 }
    }
}

fn target_typed(sql: &str, p: Param<'_>, oid: u32) -> Result<Target, RouteError> {
    route_with(sql, &Typed(p, oid), &NoOrdinals, UnparsedPolicy::Refuse).map(|r| r.target)
}

#[test]
fn key_equals_any_array_literal() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    let both = Target::Scatter(sorted_shards(&keys), Merge::Concatenate);
    let r = run(&format!(
        "SELECT * FROM accounts WHERE aid = ANY(ARRAY[{a}, {b}])"
    ))
    .unwrap();
    assert_eq!(r.target, both);
    assert!(
        matches!(
            r.reason,
            Reason::Scatter {
                why: "key IN list",
                ..
            }
        ),
        "{r:?}"
    );
    for sql in [
        format!("SELECT * FROM accounts WHERE aid = ANY('{{{a},{b}}}')"),
        format!("SELECT * FROM accounts WHERE aid = ANY('{{ {a} , \"{b}\", NULL }}')"),
        format!("SELECT * FROM accounts WHERE aid = ANY('{{{a},{b}}}'::bigint[])"),
        format!("SELECT * FROM accounts WHERE aid = ANY('{{{a},{b}}}'::int8[])"),
        format!("SELECT * FROM accounts WHERE aid = SOME(ARRAY[{a}, {b}]::bigint[])"),
        format!("SELECT * FROM accounts a WHERE a.aid = ANY(ARRAY[{a}, '{b}']) AND abalance > 0"),
    ] {
        assert_eq!(target(&sql).unwrap(), both, "{sql}");
    }
    let r = run(&format!(
        "SELECT * FROM accounts WHERE aid = ANY('{{{a},{b}}}')"
    ))
    .unwrap();
    assert!(
        matches!(
            r.reason,
            Reason::Scatter {
                why: "key = ANY(array)",
                ..
            }
        ),
        "{r:?}"
    );
    // one shard
    let same = same_shard_as(a);
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts WHERE aid = ANY('{{{a},{same},NULL}}')"
        ))
        .unwrap(),
        one(a)
    );
    // only NULLs or empty: no row matches
    for sql in [
        "SELECT * FROM accounts WHERE aid = ANY('{NULL}')",
        "SELECT * FROM accounts WHERE aid = ANY('{}')",
    ] {
        assert_eq!(target(sql).unwrap(), default(), "{sql}");
    }
    // text keys
    assert_eq!(
        target("SELECT * FROM users WHERE email = ANY('{a@b.c}')").unwrap(),
        Target::One(shard_of(KeyValue::Text("a@b.c".into())))
    );
    // bad elements are refused like bad equalities
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid = ANY('{1,x}')"),
        Err(RouteError::BadKey { .. })
    ));
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid = ANY(ARRAY[1, '2'::text])"),
        Err(RouteError::Unsupported { .. })
    ));
}

#[test]
fn key_equals_any_array_parameter() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    let both = Target::Scatter(sorted_shards(&keys), Merge::Concatenate);
    let sql = "SELECT * FROM accounts WHERE aid = ANY($1)";
    let text = format!("{{{a},{b},NULL}}");
    assert_eq!(
        target_typed(sql, Param::Text(text.as_bytes()), 0).unwrap(),
        both
    );
    assert_eq!(
        target_typed(sql, Param::Text(text.as_bytes()), 1016).unwrap(),
        both
    );
    let bin = binary_array(
        20,
        &[
            Some(a.to_be_bytes().to_vec()),
            None,
            Some(b.to_be_bytes().to_vec()),
        ],
    );
    assert_eq!(target_typed(sql, Param::Binary(&bin), 0).unwrap(), both);
    assert_eq!(target_typed(sql, Param::Binary(&bin), 1016).unwrap(), both);
    assert_eq!(
        target_typed(
            "SELECT * FROM accounts WHERE aid = ANY($1::bigint[])",
            Param::Binary(&bin),
            0
        )
        .unwrap(),
        both
    );
    // one shard, NULL, empty
    let same = same_shard_as(a);
    let one_shard = binary_array(
        20,
        &[
            Some(a.to_be_bytes().to_vec()),
            Some(same.to_be_bytes().to_vec()),
        ],
    );
    assert_eq!(
        target_typed(sql, Param::Binary(&one_shard), 0).unwrap(),
        one(a)
    );
    assert_eq!(target_typed(sql, Param::Null, 0).unwrap(), default());
    assert_eq!(target_typed(sql, Param::Text(b"{}"), 0).unwrap(), default());
    // not the key's array type: not used for routing (every shard)
    let everywhere = Target::Scatter(all_shards(), Merge::Concatenate);
    for (p, oid) in [
        (Param::Text(text.as_bytes()), 1007), // int4[] declared for a bigint key
        (Param::Text(text.as_bytes()), 1009), // text[]
        (Param::Text(text.as_bytes()), 25),   // not an array type
        (Param::Binary(&bin), 1007),
        (Param::Text(b"{{1,2},{3,4}}"), 0),
    ] {
        assert_eq!(
            target_typed(sql, p, oid).unwrap(),
            everywhere,
            "{p:?} as {oid}"
        );
    }
    let int4_elems = binary_array(23, &[Some(1i32.to_be_bytes().to_vec())]);
    assert_eq!(
        target_typed(sql, Param::Binary(&int4_elems), 0).unwrap(),
        everywhere
    );
    assert_eq!(
        target_typed(sql, Param::Binary(&bin[..bin.len() - 2]), 0).unwrap(),
        everywhere
    );
    // a cast to another key family: not used either
    assert_eq!(
        target_typed(
            "SELECT * FROM accounts WHERE aid = ANY($1::text[])",
            Param::Text(text.as_bytes()),
            0
        )
        .unwrap(),
        everywhere
    );
    // bad elements and missing parameters
    assert!(matches!(
        target_typed(sql, Param::Text(b"{1,x}"), 0),
        Err(RouteError::BadKey { .. })
    ));
    assert_eq!(
        route_with(sql, &NoParams, &NoOrdinals, UnparsedPolicy::Refuse),
        Err(RouteError::MissingParam(1))
    );
    // uuid keys in binary
    let id = [7u8; 16];
    let uuids = binary_array(2950, &[Some(id.to_vec())]);
    assert_eq!(
        target_typed(
            "SELECT * FROM devices WHERE id = ANY($1)",
            Param::Binary(&uuids),
            2951
        )
        .unwrap(),
        Target::One(shard_of(KeyValue::Uuid(id)))
    );
}

#[test]
fn or_of_key_equalities() {
    let keys = keys_on_distinct_shards(2);
    let (a, b) = (keys[0], keys[1]);
    let both = Target::Scatter(sorted_shards(&keys), Merge::Concatenate);
    for sql in [
        format!("SELECT * FROM accounts WHERE aid = {a} OR aid = {b}"),
        format!("SELECT * FROM accounts WHERE (aid = {a} OR {b} = aid) AND abalance > 0"),
        format!("SELECT * FROM accounts a WHERE a.aid = {a} OR a.aid IN ({b}, NULL)"),
        format!("SELECT * FROM accounts WHERE aid = {a} OR aid = NULL OR aid = {b}"),
    ] {
        assert_eq!(target(&sql).unwrap(), both, "{sql}");
    }
    assert_eq!(
        target_p(
            "SELECT * FROM accounts WHERE aid = $1 OR aid = $2",
            &[
                Param::Text(a.to_string().as_bytes()),
                Param::Text(b.to_string().as_bytes())
            ]
        )
        .unwrap(),
        both
    );
    let same = same_shard_as(a);
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts WHERE aid = {a} OR aid = {same}"
        ))
        .unwrap(),
        one(a)
    );
    assert!(matches!(
        run("SELECT * FROM accounts WHERE aid = 1 OR aid = 'x'"),
        Err(RouteError::BadKey { .. })
    ));
    // a count is summed, an ORDER BY merged, as for IN lists
    assert_eq!(
        target(&format!(
            "SELECT count(*) FROM accounts WHERE aid = {a} OR aid = {b}"
        ))
        .unwrap(),
        Target::Scatter(sorted_shards(&keys), Merge::SumCounts)
    );
    // shows in pgshard route
    let r = run(&format!(
        "SELECT * FROM accounts WHERE aid = {a} OR aid = {b}"
    ))
    .unwrap();
    assert_eq!(
        r.reason.to_string(),
        "accounts.aid: key IN list, runs on 2 shards, replies merged"
    );
}

// ---------------------------------------------------------------- joins on equal keys

#[test]
fn keys_joined_on_equal_keys() {
    for sql in [
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid WHERE h.aid = 5",
        "SELECT * FROM accounts a JOIN history h ON a.aid = h.aid AND a.aid = 5",
        "SELECT * FROM accounts a, history h WHERE h.aid = a.aid AND a.aid = '5'",
        "SELECT * FROM history h, accounts a WHERE a.aid = 5 AND a.aid = h.aid",
        // through a third sharded table
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid \
         JOIN history g ON g.aid = h.aid WHERE a.aid = 5",
        // with an unsharded table
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid \
         JOIN branches b ON b.bid = a.bid WHERE a.aid = 5",
        // into the nullable side of an outer join
        "SELECT * FROM accounts a LEFT JOIN history h ON h.aid = a.aid WHERE a.aid = 5",
        "SELECT * FROM history h RIGHT JOIN accounts a ON h.aid = a.aid WHERE a.aid = 5",
        // writes reading another sharded table
        "UPDATE accounts SET abalance = 0 FROM history h WHERE h.aid = accounts.aid AND h.aid = 5",
        "DELETE FROM history h USING accounts a WHERE a.aid = h.aid AND a.aid = 5",
    ] {
        let route = run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(route.target, one(5), "{sql}");
    }
    assert_eq!(
        target_p(
            "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid WHERE a.aid = $1",
            &[Param::Text(b"5")]
        )
        .unwrap(),
        one(5)
    );
    // not carried: out of an outer join's nullable side, a FULL JOIN, other columns,
    // keys of different types, unqualified columns, OR
    for sql in [
        "SELECT * FROM accounts a LEFT JOIN history h ON h.aid = a.aid WHERE h.aid = 5",
        "SELECT * FROM accounts a FULL JOIN history h ON h.aid = a.aid WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.bid WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN pgbench_accounts p ON p.aid = a.aid WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN users u ON u.email = a.filler WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid OR h.aid = 1 WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN history h ON h.aid::bigint = a.aid WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN history h USING (aid) WHERE a.aid = 5",
        "SELECT * FROM accounts a JOIN history h ON h.aid = a.aid \
         WHERE a.aid IN (SELECT aid FROM history)",
    ] {
        assert!(
            matches!(run(sql), Err(RouteError::NoShardKey { .. })),
            "{sql}: {:?}",
            run(sql)
        );
    }
    // a different value on each side stays cross-shard
    let (a, b) = split_keys();
    assert_cross(&format!(
        "SELECT * FROM accounts x JOIN history h ON h.aid = x.aid WHERE x.aid = {a} AND h.aid = {b}"
    ));
    // a value in another query block does not cross into this one
    assert!(matches!(
        run("SELECT * FROM accounts a JOIN history h ON h.aid = a.aid \
             WHERE a.abalance = (SELECT 1 FROM accounts WHERE aid = 5)"),
        Err(RouteError::NoShardKey { .. })
    ));
}

// ---------------------------------------------------------------- reference tables

fn copy_read(table: &str) -> Route {
    Route {
        target: Target::OneCopy,
        reason: Reason::ReferenceRead {
            table: table.to_owned(),
        },
    }
}

#[test]
fn reads_of_reference_tables_go_to_one_copy() {
    for sql in [
        "SELECT * FROM kinds",
        "SELECT * FROM kinds k JOIN currencies c ON c.id = k.cur ORDER BY 1",
        "SELECT count(*) FROM kinds WHERE id IN (SELECT id FROM currencies)",
        "SELECT k.*, c.relname FROM kinds k, pg_class c",
        "SELECT * FROM public.KINDS FOR UPDATE",
        "WITH x AS (SELECT * FROM kinds) SELECT * FROM x",
        "COPY kinds TO STDOUT",
        "EXPLAIN SELECT * FROM kinds",
    ] {
        assert_eq!(run(sql).unwrap(), copy_read("kinds"), "{sql}");
    }
    assert_eq!(
        run("SELECT * FROM kinds").unwrap().reason.to_string(),
        "reference table \"kinds\": every shard holds a copy, one answers"
    );
    // with an unsharded table: the default shard, which also holds a copy
    assert_eq!(
        target("SELECT * FROM kinds k JOIN branches b ON b.bid = k.id").unwrap(),
        default()
    );
    // with one keyed sharded table: its shard
    for k in [1, 5, 600] {
        assert_eq!(
            target(&format!(
                "SELECT * FROM accounts a JOIN kinds k ON k.id = a.bid WHERE a.aid = {k}"
            ))
            .unwrap(),
            one(k)
        );
        assert_eq!(
            target(&format!(
                "SELECT * FROM accounts a WHERE a.aid = {k} AND a.bid IN (SELECT id FROM kinds)"
            ))
            .unwrap(),
            one(k)
        );
    }
    // in one query string: joins whatever the others need
    assert_eq!(
        target("SELECT * FROM kinds; SELECT * FROM accounts WHERE aid = 600").unwrap(),
        one(600)
    );
    assert_eq!(
        target("SELECT * FROM kinds; SELECT * FROM currencies").unwrap(),
        Target::OneCopy
    );
}

#[test]
fn scatter_joined_with_reference_tables() {
    let everywhere = |m: Merge| Target::Scatter(all_shards(), m);
    for sql in [
        "SELECT * FROM accounts a JOIN kinds k ON k.id = a.bid",
        "SELECT * FROM accounts a, kinds k WHERE k.id = a.bid AND k.label = 'x'",
        "SELECT * FROM kinds k JOIN accounts a ON k.id = a.bid",
        "SELECT * FROM accounts a LEFT JOIN kinds k ON k.id = a.bid",
        "SELECT * FROM kinds k RIGHT JOIN accounts a ON k.id = a.bid",
        "SELECT * FROM accounts a JOIN kinds k USING (bid) JOIN currencies c ON c.id = k.cur",
        "SELECT * FROM kinds k LEFT JOIN currencies c ON c.id = k.cur JOIN accounts a ON a.bid = k.id",
    ] {
        assert_eq!(
            target(sql).unwrap(),
            everywhere(Merge::Concatenate),
            "{sql}"
        );
    }
    assert_eq!(
        target("SELECT count(*) FROM accounts a JOIN kinds k ON k.id = a.bid").unwrap(),
        everywhere(Merge::SumCounts)
    );
    assert!(matches!(
        target("SELECT k.label, count(*) FROM accounts a JOIN kinds k ON k.id = a.bid GROUP BY k.label ORDER BY 1")
            .unwrap(),
        Target::Scatter(_, Merge::Plan(_))
    ));
    let keys = keys_on_distinct_shards(2);
    assert_eq!(
        target(&format!(
            "SELECT * FROM accounts a JOIN kinds k ON k.id = a.bid WHERE a.aid IN ({}, {})",
            keys[0], keys[1]
        ))
        .unwrap(),
        Target::Scatter(sorted_shards(&keys), Merge::Concatenate)
    );
    // unmatched reference rows would be padded once per shard; other tables are not
    // complete on every shard
    for (sql, construct) in [
        (
            "SELECT * FROM kinds k LEFT JOIN accounts a ON k.id = a.bid",
            "an outer join that keeps unmatched rows of a reference table (reference LEFT JOIN sharded, or FULL JOIN)",
        ),
        (
            "SELECT * FROM accounts a RIGHT JOIN kinds k ON k.id = a.bid",
            "an outer join that keeps unmatched rows of a reference table (reference LEFT JOIN sharded, or FULL JOIN)",
        ),
        (
            "SELECT * FROM accounts a FULL JOIN kinds k ON k.id = a.bid",
            "an outer join that keeps unmatched rows of a reference table (reference LEFT JOIN sharded, or FULL JOIN)",
        ),
        (
            "SELECT * FROM accounts a JOIN kinds k ON k.id = a.bid JOIN branches b ON true",
            "join",
        ),
        (
            "SELECT * FROM accounts a JOIN kinds k ON k.id = a.bid JOIN pg_class c ON true",
            "join",
        ),
        (
            "SELECT * FROM accounts a JOIN kinds k ON k.id = (SELECT 1)",
            "subquery",
        ),
        (
            "SELECT * FROM accounts a WHERE a.bid IN (SELECT id FROM kinds)",
            "subquery",
        ),
    ] {
        assert_scatter_blocked(sql, construct);
    }
}

#[test]
fn writes_to_reference_tables_go_to_every_copy() {
    for sql in [
        "INSERT INTO kinds (id, label) VALUES (1, 'a'), (2, 'b')",
        "INSERT INTO kinds SELECT id + 100, label FROM kinds",
        "UPDATE kinds SET label = 'x' WHERE id = 1",
        "UPDATE kinds k SET label = c.name FROM currencies c WHERE c.id = k.cur",
        "DELETE FROM kinds WHERE id IN (SELECT id FROM currencies) RETURNING *",
        "INSERT INTO kinds (id) VALUES (1) ON CONFLICT (id) DO UPDATE SET label = 'y'",
        "WITH d AS (DELETE FROM kinds RETURNING id) SELECT count(*) FROM d",
        "INSERT INTO kinds SELECT oid::int, relname FROM pg_class LIMIT 1",
    ] {
        let r = run(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        assert_eq!(r.target, Target::AllCopies, "{sql}");
        assert_eq!(
            r.reason,
            Reason::ReferenceWrite {
                table: "kinds".into()
            },
            "{sql}"
        );
    }
    // reading sharded or unsharded rows: every shard would compute another change
    for sql in [
        "INSERT INTO kinds SELECT aid, filler FROM accounts WHERE aid = 5",
        "UPDATE kinds SET label = 'x' WHERE id IN (SELECT bid FROM accounts WHERE aid = 5)",
        "DELETE FROM kinds k USING branches b WHERE b.bid = k.id",
        "WITH d AS (DELETE FROM kinds RETURNING id) SELECT * FROM accounts WHERE aid = 5",
    ] {
        let e = run(sql).unwrap_err();
        assert!(matches!(e, RouteError::Unsupported { .. }), "{sql}: {e:?}");
        assert!(e.to_string().contains("reference table \"kinds\""), "{e}");
    }
    // writes to sharded tables reading reference tables route like the sharded table
    assert_eq!(
        target(
            "UPDATE accounts a SET bid = k.id FROM kinds k WHERE k.label = a.filler AND a.aid = 5"
        )
        .unwrap(),
        one(5)
    );
    assert_eq!(
        target("DELETE FROM accounts a USING kinds k WHERE k.id = a.bid AND a.aid = 600").unwrap(),
        one(600)
    );
    assert!(matches!(
        run("INSERT INTO accounts (aid, bid) SELECT 5, id FROM kinds"),
        Err(RouteError::Unsupported { .. })
    ));
    assert!(matches!(
        run("UPDATE accounts a SET bid = k.id FROM kinds k WHERE k.label = a.filler"),
        Err(RouteError::NoShardKey { .. })
    ));
    let mut m = map();
    m.broadcast_writes = true;
    let sql = "UPDATE accounts a SET bid = k.id FROM kinds k WHERE k.label = a.filler";
    let analysis = analyze(sql);
    let input = RouteInput {
        sql,
        analysis: &analysis,
        params: &NoParams,
        ordinals: &NoOrdinals,
    };
    assert_eq!(
        route(&input, &m, UnparsedPolicy::Refuse).unwrap().target,
        Target::Scatter(all_shards(), Merge::Concatenate)
    );
    // in one query string with other writes of reference tables, or DDL
    assert_eq!(
        target("UPDATE kinds SET label = 'a'; DELETE FROM currencies").unwrap(),
        Target::AllCopies
    );
    assert_eq!(
        target("CREATE TABLE x (a int); INSERT INTO kinds VALUES (1)").unwrap(),
        Target::All
    );
    assert_cross("INSERT INTO kinds VALUES (1); SELECT * FROM accounts WHERE aid = 5");
    // unparseable text naming a reference table is not sent to the default shard only
    assert!(matches!(
        route_with(
            "VACUUM ANALYZE kinds",
            &NoParams,
            &NoOrdinals,
            UnparsedPolicy::DefaultShard
        ),
        Err(RouteError::Unparsed { .. })
    ));
}

/// The session routes a simple query from its lifted shape only when that gives one
/// place to run; wherever it does, the statement's own text must route to the very
/// same place (otherwise the lifted route is not used, and the text is routed as is).
#[test]
fn lifted_constants_route_like_the_literals() {
    let mut statements = Vec::new();
    for k in [
        0i64,
        1,
        5,
        42,
        77,
        1000,
        65_535,
        2_147_483_647,
        2_147_483_648,
    ] {
        statements.extend([
            format!("SELECT * FROM accounts WHERE aid = {k}"),
            format!("SELECT * FROM accounts WHERE aid = '{k}'"),
            format!("SELECT * FROM accounts WHERE aid = '{k}'::bigint"),
            format!("SELECT * FROM accounts WHERE aid = {k}::int8 LIMIT 10"),
            format!("SELECT abalance FROM pgbench_accounts WHERE aid = {k};"),
            format!("UPDATE accounts SET abalance = abalance + 7 WHERE aid = {k}"),
            format!("DELETE FROM accounts WHERE aid = {k} AND abalance > 3"),
            format!("INSERT INTO accounts (aid, abalance) VALUES ({k}, 10)"),
            format!(
                "INSERT INTO accounts (aid, abalance) VALUES ({k}, 1), ({}, 2)",
                k + 1
            ),
            format!("SELECT * FROM accounts WHERE aid IN ({k}, {k})"),
            format!("SELECT * FROM accounts WHERE aid = ANY('{{{k}}}')"),
            format!("SELECT * FROM accounts WHERE aid = {k} OR aid = {}", k + 3),
            format!("SELECT * FROM users WHERE email = {k}"),
            format!("SELECT * FROM users WHERE email = '{k}'"),
            format!("SELECT * FROM users WHERE email = 'u{k}@example.com' AND {k} = {k}"),
            format!("SELECT * FROM users WHERE email = 'it''s {k}'"),
            format!("SELECT * FROM devices WHERE id = '00000000-0000-0000-0000-{k:012}'"),
            format!("SELECT * FROM devices WHERE id = '{k}'"),
            format!("SELECT * FROM accounts a JOIN history h ON h.aid = a.aid WHERE a.aid = {k}"),
            format!("SELECT {k}, 'x' FROM kinds WHERE id = {k}"),
            format!("SELECT {k} + 1"),
        ]);
    }
    // out of range for the key type, or not a number at all
    statements.extend([
        "SELECT * FROM pgbench_accounts WHERE aid = 99999999999".to_owned(),
        "SELECT * FROM accounts WHERE aid = 99999999999999999999".to_owned(),
        "SELECT * FROM accounts WHERE aid = 'abc'".to_owned(),
        "SELECT * FROM accounts WHERE aid = ' 42 '".to_owned(),
    ]);
    let cache = crate::sql::PlanCache::new(64);
    let mut used = 0;
    for sql in &statements {
        let Some((analysis, lifted)) = cache.get_lifted(sql) else {
            continue;
        };
        let input = RouteInput {
            sql,
            analysis: &analysis,
            params: &lifted,
            ordinals: &NoOrdinals,
        };
        let Ok(route) = route(&input, &map(), UnparsedPolicy::Refuse) else {
            continue;
        };
        if !matches!(route.target, Target::One(_) | Target::Any | Target::OneCopy) {
            continue;
        }
        used += 1;
        assert_eq!(
            target(sql).as_ref(),
            Ok(&route.target),
            "{sql} (shape {})",
            lifted.shape
        );
    }
    assert!(used > statements.len() / 2, "only {used} used the shape");
}
