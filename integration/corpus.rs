//! The statements of the differential test ([`crate::differential`]) and what the proxy
//! must answer for each, compared with one plain Postgres holding the same rows.
//!
//! Tables (created by the differential test): `items` sharded on `id bigint`, `orders`
//! sharded on `item_id bigint` (co-located with `items`: same key values, same shard),
//! and `kinds`, a reference table (`replicated = true`: a full copy on every shard).
//!
//! An entry's expectation is what must hold *today*. [`Expect::Later`] marks constructs
//! whose merge is not built yet: the proxy may refuse them with 0A000 or answer exactly
//! as Postgres would, never differently; the expectation it carries is the one the entry
//! gets once the merge exists.

/// What the proxy's answer must be, compared with the plain server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// the same rows as a multiset (no ORDER BY: any order is right)
    Rows,
    /// the same rows in the same order (a total ORDER BY)
    Ordered,
    /// the first n columns in the same order (the ORDER BY keys, with ties), the rows
    /// the same multiset
    OrderedBy(usize),
    /// the same columns and the same number of rows (LIMIT without ORDER BY: any n
    /// matching rows are right)
    SameCount,
    /// refused with this SQLSTATE (and the session still works)
    Refused(&'static str),
    /// an error from Postgres itself, on both sides with this SQLSTATE (passed through)
    Fails(&'static str),
    /// not merged yet: refused with 0A000, or answered as the carried expectation says
    // no entry is waiting for a merge right now; the variant stays for the next ones
    #[allow(dead_code)]
    Later(&'static Expect),
}

/// One statement and its expectation.
#[derive(Debug, Clone, Copy)]
pub struct Q {
    /// the SQL text (one statement)
    pub sql: &'static str,
    /// what the proxy must answer
    pub expect: Expect,
}

use Expect::{Fails, Ordered, OrderedBy, Refused, Rows, SameCount};

const fn q(sql: &'static str, expect: Expect) -> Q {
    Q { sql, expect }
}

/// Cross-shard construct not supported (the proxy's refusal).
const UNSUPPORTED: &str = "0A000";

/// Read-only statements, run in order with both protocols.
pub const READS: &[Q] = &[
    // --- point lookups: one shard answers -------------------------------------------
    q("SELECT * FROM items WHERE id = 1", Rows),
    q("SELECT * FROM items WHERE id = 600", Rows),
    q("SELECT id, name, code FROM items WHERE id = 17", Rows),
    q("SELECT * FROM items WHERE id = 9999", Rows),
    q("SELECT * FROM items WHERE id = 42 AND grp = 2", Rows),
    q("SELECT id, score, price FROM items WHERE id = 51", Rows),
    q("SELECT id, score FROM items WHERE id = 54", Rows),
    q("SELECT u, tstz, ts, day FROM items WHERE id = 100", Rows),
    q(
        "SELECT code, length(code), code = 'ab' FROM items WHERE id = 3",
        Rows,
    ),
    q(
        "SELECT id, price * 2 AS p2, name || '!' AS bang FROM items WHERE id = 33",
        Rows,
    ),
    q("SELECT id FROM items WHERE id = 12 AND false", Rows),
    q("SELECT count(*) FROM items WHERE id = 7", Rows),
    q(
        "SELECT sum(qty), max(name), avg(price) FROM items WHERE id = 8",
        Rows,
    ),
    q("SELECT avg(price), avg(qty) FROM items WHERE id = 7", Rows),
    q(
        "SELECT grp, count(*) FROM items WHERE id = 3 GROUP BY grp",
        Rows,
    ),
    q("SELECT * FROM orders WHERE item_id = 3", Rows),
    q(
        "SELECT n, amount FROM orders WHERE item_id = 3 ORDER BY n, amount",
        Ordered,
    ),
    q(
        "SELECT sum(amount), count(*) FROM orders WHERE item_id = 10",
        Rows,
    ),
    q(
        "SELECT id, lag(id) OVER (ORDER BY id) FROM items WHERE id = 5",
        Rows,
    ),
    q(
        "SELECT string_agg(name, ',' ORDER BY name) FROM items WHERE id = 5",
        Rows,
    ),
    q(
        "SELECT array_agg(n ORDER BY n) FROM orders WHERE item_id = 5",
        Rows,
    ),
    q(
        "SELECT DISTINCT n FROM orders WHERE item_id = 9 ORDER BY n",
        Ordered,
    ),
    // key conditions that do not pin one shard: a router that took them for an
    // equality would answer from one shard only
    q("SELECT id FROM items WHERE id = 5 OR id = 600", Rows),
    q("SELECT id FROM items WHERE id = 5 OR grp = 1", Rows),
    q("SELECT id FROM items WHERE id = 5 OR true", Rows),
    q("SELECT id FROM items WHERE NOT (id = 5)", Rows),
    q("SELECT id FROM items WHERE id <> 5", Rows),
    q("SELECT id FROM items WHERE id IN (5) OR id IN (600)", Rows),
    q("SELECT id FROM items WHERE id IN (5, 6) OR grp = 1", Rows),
    q("SELECT id FROM items WHERE id NOT IN (1, 2, 3)", Rows),
    q("SELECT id FROM items WHERE NOT id IN (1, 2, 3)", Rows),
    q(
        "SELECT id FROM items WHERE CASE WHEN id = 5 THEN true ELSE grp = 1 END",
        Rows,
    ),
    q("SELECT id FROM items WHERE (id = 5) IS NOT TRUE", Rows),
    q("SELECT id FROM items WHERE id = 5 IS NOT FALSE", Rows),
    q("SELECT id FROM items WHERE id = ANY(ARRAY[5, 600])", Rows),
    // key = ANY(array) and ORs of key equalities: the shards owning the values
    q("SELECT id FROM items WHERE id = ANY('{5,600,NULL}')", Rows),
    q(
        "SELECT count(*) FROM items WHERE id = ANY('{1,2,3}'::bigint[])",
        Rows,
    ),
    q("SELECT id FROM items WHERE id = ANY('{}')", Rows),
    q("SELECT id FROM items WHERE id = ANY('{NULL}')", Rows),
    q(
        "SELECT id FROM items WHERE id = ANY(ARRAY[7]) AND grp = 2",
        Rows,
    ),
    q(
        "SELECT id FROM items WHERE id = ANY('{{1,2},{600,3}}')",
        Rows,
    ),
    q(
        "SELECT id FROM items WHERE id = ANY('{1,x}')",
        Fails("22P02"),
    ),
    q("SELECT id FROM items WHERE id = 5 OR id IN (7, 600)", Rows),
    q(
        "SELECT id, name FROM items WHERE (id = 3 OR id = 4) AND qty > 0 ORDER BY id",
        Ordered,
    ),
    q("SELECT id FROM items WHERE id = 5 OR id = NULL", Rows),
    q("SELECT id FROM items WHERE id BETWEEN 1 AND 10", Rows),
    q("SELECT id FROM items WHERE id IS DISTINCT FROM 5", Rows),
    q("SELECT id FROM items WHERE id::text = '5'", Rows),
    q("SELECT count(*) FROM items WHERE id = 5 OR id = 600", Rows),
    q("SELECT id FROM items WHERE id IN (1, 2) IS NOT TRUE", Rows),
    q("SELECT id FROM items WHERE (id = 5) = false", Rows),
    q("SELECT id FROM items WHERE coalesce(id = 5, true)", Rows),
    q(
        "SELECT id FROM items WHERE (id = 5 AND grp = 0) OR grp = 1",
        Rows,
    ),
    q(
        "SELECT id FROM items WHERE id IN (1, 2) OR id IN (600)",
        Rows,
    ),
    q(
        "SELECT count(*) FROM items WHERE id IN (1, 2) AND id IN (2, 600)",
        Rows,
    ),
    // refused today (a subquery), although every shard could answer for its rows
    q(
        "SELECT id FROM items WHERE (SELECT id = 5)",
        Refused("0A000"),
    ),
    q("SELECT id FROM items WHERE id IS NULL", Rows),
    // refused today (a NULL-only key list is taken for a NULL key); Postgres: no rows
    q("SELECT * FROM items WHERE id IN (NULL)", Rows),
    q("SELECT count(*) FROM items WHERE id IN (NULL)", Rows),
    q("SELECT count(*) FROM items WHERE id IN (1, NULL)", Rows),
    q("SELECT id FROM items WHERE id = NULL", Rows),
    // the table spelled differently must still be the sharded table
    q("SELECT count(*) FROM ITEMS", Rows),
    q("SELECT count(*) FROM \"items\"", Rows),
    q("SELECT count(*) FROM public.items", Rows),
    q("SELECT id, name FROM public.items WHERE grp = 4", Rows),
    q("SELECT id FROM Items WHERE ID = 600", Rows),
    q("SELECT id FROM ONLY items WHERE grp = 0", Rows),
    q("SELECT x.id FROM items AS x WHERE x.id = 5", Rows),
    // a CTE named like a sharded table shadows it
    q(
        "WITH items AS (SELECT 1 AS id) SELECT * FROM items",
        Refused("0A000"),
    ),
    q(
        "WITH k AS (SELECT * FROM kinds) SELECT count(*) FROM k",
        Rows,
    ),
    q(
        "WITH x AS (SELECT 1) SELECT count(*) FROM items",
        Refused("0A000"),
    ),
    // key equalities in other spellings
    q("SELECT id FROM items WHERE 5 = id", Rows),
    q("SELECT id FROM items i WHERE i.id = 5", Rows),
    q("SELECT id FROM items WHERE items.id = 5", Rows),
    q("SELECT id FROM items WHERE id = '5'", Rows),
    q("SELECT id FROM items WHERE id = -5", Rows),
    q("SELECT id FROM items WHERE id = 5 AND id = 6", Rows),
    q("SELECT id FROM items WHERE id IS NOT DISTINCT FROM 5", Rows),
    q("SELECT id FROM items WHERE (id, grp) = (5, 0)", Rows),
    q("SELECT id FROM items WHERE id = 9223372036854775807", Rows),
    q("SELECT id FROM items WHERE id = 5::int", Rows),
    q("SELECT id FROM items WHERE id = 5.0", Rows),
    q("SELECT id FROM items WHERE id = 1e2", Rows),
    q("SELECT id FROM items WHERE id = 2 + 3", Rows),
    // Postgres compares bigint with numeric and finds no row: so must the proxy
    q("SELECT id FROM items WHERE id = 99999999999999999999", Rows),
    q(
        "SELECT * FROM items WHERE id = (SELECT 5)",
        Refused("0A000"),
    ),
    q(
        "SELECT * FROM items WHERE id = (SELECT max(item_id) FROM orders)",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items WHERE id IN (SELECT 5)",
        Refused("0A000"),
    ),
    q(
        "SELECT * FROM items WHERE id = 5 UNION ALL SELECT * FROM items WHERE id = 600",
        Rows,
    ),
    // errors from Postgres pass through
    q("SELECT 1 / (id - 5) FROM items", Fails("22012")),
    q("SELECT id / 0 FROM items WHERE id = 5", Fails("22012")),
    q("SELECT nosuch FROM items", Fails("42703")),
    q("SELECT nosuch FROM items WHERE id = 5", Fails("42703")),
    q("SELECT * FROM nosuch_table", Fails("42P01")),
    q("SELECT id::smallint * 1000 FROM items", Fails("22003")),
    // --- key IN lists: the shards owning the listed keys ------------------------------
    q("SELECT * FROM items WHERE id IN (1, 2, 3, 4, 5)", Rows),
    q(
        "SELECT id, name FROM items WHERE id IN (10, 200, 300, 599, 700)",
        Rows,
    ),
    q("SELECT id FROM items WHERE id IN (NULL, 4)", Rows),
    q(
        "SELECT id, qty FROM items WHERE id IN (1, 2, 3) AND qty > 5",
        Rows,
    ),
    q("SELECT * FROM orders WHERE item_id IN (1, 2, 3, 4)", Rows),
    q(
        "SELECT count(*) FROM items WHERE id IN (1, 2, 3, 1000)",
        Rows,
    ),
    q("SELECT id FROM items WHERE id IN (5000, 6000)", Rows),
    q(
        "SELECT id, score FROM items WHERE id IN (1, 2, 3, 4, 5, 51, 52, 53, 54, 55)",
        Rows,
    ),
    // --- full scans with filters: concatenated -------------------------------------
    q("SELECT * FROM items", Rows),
    q("SELECT id, grp FROM items WHERE grp = 3", Rows),
    q("SELECT id, grp FROM items WHERE grp IS NULL", Rows),
    q("SELECT id, name FROM items WHERE name LIKE 'a%'", Rows),
    q("SELECT id, code FROM items WHERE code = 'ab'", Rows),
    q("SELECT id, price FROM items WHERE price > 100", Rows),
    q("SELECT id FROM items WHERE price IS NULL", Rows),
    q("SELECT id, score FROM items WHERE score = 'NaN'", Rows),
    q("SELECT id, score FROM items WHERE score > 100", Rows),
    q("SELECT id, score FROM items WHERE score = 0", Rows),
    q("SELECT id, flag FROM items WHERE flag", Rows),
    q("SELECT id, flag FROM items WHERE flag IS NOT TRUE", Rows),
    q(
        "SELECT id, day FROM items WHERE day BETWEEN '2005-01-01' AND '2010-12-31'",
        Rows,
    ),
    q("SELECT id, ts FROM items WHERE ts > '2015-06-01'", Rows),
    q(
        "SELECT id, tstz FROM items WHERE tstz < '2010-01-01 00:00:00+00'",
        Rows,
    ),
    q(
        "SELECT id, u FROM items WHERE u > '80000000-0000-0000-0000-000000000000'",
        Rows,
    ),
    q("SELECT id, small FROM items WHERE small < 0", Rows),
    q("SELECT id, big FROM items WHERE big > 0", Rows),
    q(
        "SELECT id, name, upper(name), coalesce(code, '----') FROM items WHERE qty BETWEEN 3 AND 9",
        Rows,
    ),
    q("SELECT * FROM items WHERE false", Rows),
    q(
        "SELECT id, price, qty, price * qty AS total FROM items WHERE grp = 1",
        Rows,
    ),
    q(
        "SELECT id::text || ':' || coalesce(name, '?') AS label FROM items WHERE small > 50",
        Rows,
    ),
    q("SELECT * FROM orders", Rows),
    q("SELECT * FROM orders WHERE amount > 50", Rows),
    q("SELECT * FROM kinds", Rows),
    q("SELECT * FROM kinds ORDER BY id", Ordered),
    // --- count alone: summed ----------------------------------------------------------
    q("SELECT count(*) FROM items", Rows),
    q("SELECT count(*) FROM items WHERE grp = 2", Rows),
    q("SELECT count(name) FROM items", Rows),
    q("SELECT count(score) FROM items WHERE score > 0", Rows),
    q("SELECT count(*) FROM items WHERE false", Rows),
    q("SELECT count(name) FROM items WHERE false", Rows),
    q("SELECT count(*) AS n FROM orders", Rows),
    q("SELECT count(u) FROM items", Rows),
    q("SELECT count(*) FROM items WHERE name IS NULL", Rows),
    q("SELECT count(1) FROM items", Rows),
    q(
        "SELECT count(*) FROM items WHERE id BETWEEN 1 AND 100",
        Rows,
    ),
    q("SELECT count(NULL) FROM items", Rows),
    q("SELECT count(*) FROM items i WHERE i.grp = 2", Rows),
    q("SELECT 1 FROM items", Rows),
    q("SELECT count(*) FROM items GROUP BY ()", Rows),
    q("SELECT count(*) AS c FROM items ORDER BY 1", Rows),
    q("SELECT DISTINCT count(*) FROM items", Rows),
    q("SELECT count(*), 1 FROM items", Rows),
    q("SELECT count(*) FROM items, kinds", Rows),
    q("SELECT count(*)::int FROM items", Refused("0A000")),
    q("SELECT count(*)::text AS t FROM items", Refused("0A000")),
    q("SELECT -count(*) FROM items", Refused("0A000")),
    q("SELECT count(*) OVER () FROM items", Refused(UNSUPPORTED)),
    q("SELECT count(*) FROM items LIMIT 0", Rows),
    q("SELECT count(qty) FROM items WHERE qty IS NULL", Rows),
    q("SELECT count(*) FROM kinds", Rows),
    // --- LIMIT without ORDER BY: any n matching rows ------------------------------------
    q("SELECT * FROM items LIMIT 5", SameCount),
    q("SELECT id FROM items WHERE grp = 1 LIMIT 10", SameCount),
    q("SELECT id FROM items LIMIT 0", SameCount),
    q("SELECT id FROM items WHERE grp = 1 LIMIT 1000", SameCount),
    q("SELECT item_id FROM orders LIMIT 3", SameCount),
    q("SELECT 1 FROM items LIMIT 1", SameCount),
    q("SELECT id FROM items LIMIT ALL", Rows),
    q("SELECT id FROM items LIMIT NULL", Rows),
    q("SELECT id FROM items LIMIT 2 + 3", Refused("0A000")),
    q("SELECT id FROM items LIMIT 5 OFFSET 2", SameCount),
    q("SELECT DISTINCT grp FROM items LIMIT 2", SameCount),
    // --- ORDER BY on every type ---------------------------------------------------------
    q("SELECT grp, id FROM items ORDER BY grp", OrderedBy(1)),
    q("SELECT id, grp FROM items ORDER BY grp, id", Ordered),
    q("SELECT id, grp FROM items ORDER BY grp DESC, id", Ordered),
    q(
        "SELECT id, grp FROM items ORDER BY grp NULLS FIRST, id DESC",
        Ordered,
    ),
    q(
        "SELECT id, grp FROM items ORDER BY grp DESC NULLS LAST, id",
        Ordered,
    ),
    q("SELECT id, name FROM items ORDER BY name, id", Ordered),
    q("SELECT id, name FROM items ORDER BY name DESC, id", Ordered),
    q(
        "SELECT id, name FROM items ORDER BY name NULLS FIRST, id",
        Ordered,
    ),
    q(
        "SELECT name, id FROM items ORDER BY name COLLATE \"C\", id",
        Ordered,
    ),
    q("SELECT code, id FROM items ORDER BY code, id", Ordered),
    q(
        "SELECT code, id FROM items ORDER BY code DESC NULLS LAST, id",
        Ordered,
    ),
    q("SELECT price, id FROM items ORDER BY price, id", Ordered),
    q(
        "SELECT price, id FROM items ORDER BY price DESC, id",
        Ordered,
    ),
    q(
        "SELECT qty, id FROM items ORDER BY qty NULLS FIRST, id",
        Ordered,
    ),
    q(
        "SELECT qty, id FROM items ORDER BY qty DESC, id DESC",
        Ordered,
    ),
    q("SELECT big, id FROM items ORDER BY big, id", Ordered),
    q(
        "SELECT big, id FROM items ORDER BY big DESC NULLS LAST, id",
        Ordered,
    ),
    q("SELECT score, id FROM items ORDER BY score, id", Ordered),
    q(
        "SELECT score, id FROM items ORDER BY score DESC NULLS LAST, id",
        Ordered,
    ),
    q("SELECT flag, id FROM items ORDER BY flag, id", Ordered),
    q("SELECT flag, id FROM items ORDER BY flag DESC, id", Ordered),
    q("SELECT day, id FROM items ORDER BY day, id", Ordered),
    q(
        "SELECT day, id FROM items ORDER BY day DESC NULLS LAST, id",
        Ordered,
    ),
    q("SELECT ts, id FROM items ORDER BY ts, id", Ordered),
    q("SELECT ts, id FROM items ORDER BY ts DESC, id", Ordered),
    q("SELECT tstz, id FROM items ORDER BY tstz, id", Ordered),
    q(
        "SELECT tstz, id FROM items ORDER BY tstz DESC NULLS FIRST, id",
        Ordered,
    ),
    q("SELECT u, id FROM items ORDER BY u, id", Ordered),
    q("SELECT u, id FROM items ORDER BY u DESC, id", Ordered),
    q("SELECT small, id FROM items ORDER BY small, id", Ordered),
    q(
        "SELECT small, id FROM items ORDER BY small DESC, id",
        Ordered,
    ),
    q(
        "SELECT grp, flag, name, id FROM items ORDER BY grp, flag DESC, name, id",
        Ordered,
    ),
    q(
        "SELECT qty, id FROM items WHERE grp = 1 ORDER BY qty",
        OrderedBy(1),
    ),
    q("SELECT flag, id FROM items ORDER BY flag", OrderedBy(1)),
    q("SELECT day, name FROM items ORDER BY day", OrderedBy(1)),
    q(
        "SELECT code, grp, id FROM items ORDER BY code, grp",
        OrderedBy(2),
    ),
    // ORDER BY a column not in the select list, by ordinal, alias, expression
    q("SELECT id FROM items ORDER BY name, id", Ordered),
    q("SELECT id, qty FROM items ORDER BY price DESC, id", Ordered),
    q("SELECT id, name FROM items ORDER BY 2, 1", Ordered),
    q(
        "SELECT name, grp, id FROM items ORDER BY 2 DESC, 3",
        Ordered,
    ),
    q(
        "SELECT id AS k, name AS nm FROM items ORDER BY nm, k",
        Ordered,
    ),
    q("SELECT id, qty FROM items ORDER BY qty * -1, id", Ordered),
    q(
        "SELECT id, name FROM items ORDER BY lower(name), id",
        Ordered,
    ),
    q(
        "SELECT id, price FROM items ORDER BY coalesce(price, 0), id",
        Ordered,
    ),
    q("SELECT id FROM items ORDER BY id", Ordered),
    q("SELECT id FROM items ORDER BY id DESC", Ordered),
    q("SELECT * FROM items ORDER BY id", Ordered),
    q(
        "SELECT id, name FROM items WHERE id IN (1, 2, 3, 4, 5, 6) ORDER BY id",
        Ordered,
    ),
    q(
        "SELECT * FROM orders ORDER BY item_id, n, amount",
        OrderedBy(3),
    ),
    // --- LIMIT / OFFSET with a total order ------------------------------------------------
    q("SELECT id, name FROM items ORDER BY id LIMIT 10", Ordered),
    q(
        "SELECT id, name FROM items ORDER BY id LIMIT 10 OFFSET 20",
        Ordered,
    ),
    q(
        "SELECT id FROM items ORDER BY id DESC LIMIT 5 OFFSET 595",
        Ordered,
    ),
    q(
        "SELECT id FROM items ORDER BY id LIMIT 5 OFFSET 1000",
        Ordered,
    ),
    q("SELECT id FROM items ORDER BY id OFFSET 590", Ordered),
    q("SELECT id FROM items ORDER BY id LIMIT 0", Ordered),
    q(
        "SELECT id FROM items ORDER BY id FETCH FIRST 3 ROWS ONLY",
        Refused("0A000"),
    ),
    q(
        "SELECT name, id FROM items ORDER BY name NULLS FIRST, id LIMIT 15",
        Ordered,
    ),
    q(
        "SELECT price, id FROM items ORDER BY price DESC NULLS LAST, id LIMIT 7 OFFSET 3",
        Ordered,
    ),
    q(
        "SELECT score, id FROM items ORDER BY score DESC, id LIMIT 12",
        Ordered,
    ),
    q(
        "SELECT tstz, id FROM items ORDER BY tstz, id LIMIT 4 OFFSET 10",
        Ordered,
    ),
    // --- aggregates without GROUP BY -------------------------------------------------------
    q("SELECT sum(qty) FROM items", Rows),
    q("SELECT sum(big) FROM items", Rows),
    q("SELECT sum(small) FROM items", Rows),
    q("SELECT sum(price) FROM items", Rows),
    q(
        "SELECT avg(qty), avg(big), avg(small), avg(price) FROM items",
        Rows,
    ),
    q(
        "SELECT min(qty), max(qty), min(big), max(big) FROM items",
        Rows,
    ),
    q(
        "SELECT min(small), max(small), min(price), max(price) FROM items",
        Rows,
    ),
    q("SELECT min(name), max(name) FROM items", Rows),
    q("SELECT min(code), max(code) FROM items", Rows),
    q("SELECT min(day), max(day) FROM items", Rows),
    q(
        "SELECT min(ts), max(ts), min(tstz), max(tstz) FROM items",
        Rows,
    ),
    q("SELECT min(u::text), max(u::text) FROM items", Rows),
    q("SELECT min(score), max(score) FROM items", Rows),
    q(
        "SELECT bool_and(flag), bool_or(flag), every(flag) FROM items",
        Rows,
    ),
    q("SELECT bool_and(flag) FROM items WHERE flag", Rows),
    q("SELECT count(*), sum(qty) FROM items", Rows),
    q(
        "SELECT count(*), count(name), count(DISTINCT grp) FROM items",
        Refused("0A000"),
    ),
    q("SELECT sum(qty) + 1 AS s1 FROM items", Refused("0A000")),
    q(
        "SELECT max(price) - min(price) FROM items",
        Refused("0A000"),
    ),
    q(
        "SELECT count(*) FILTER (WHERE flag) FROM items",
        Refused("0A000"),
    ),
    q("SELECT sum(price) FROM items WHERE grp = 1", Rows),
    q("SELECT avg(price) FROM items WHERE id IN (7, 8)", Rows),
    // floating-point sums depend on the order of addition: merged partial sums may
    // differ from one server's sum in the last bits; such a merge must be refused
    q(
        "SELECT sum(score) FROM items WHERE score > 0 AND score < 1000",
        Refused("0A000"),
    ),
    q(
        "SELECT avg(score) FROM items WHERE score > 0 AND score < 1000",
        Refused("0A000"),
    ),
    // empty input
    q("SELECT sum(qty) FROM items WHERE false", Rows),
    q("SELECT avg(price) FROM items WHERE false", Rows),
    q("SELECT min(name), max(name) FROM items WHERE false", Rows),
    q("SELECT max(tstz), min(day) FROM items WHERE false", Rows),
    q(
        "SELECT bool_and(flag), bool_or(flag) FROM items WHERE false",
        Rows,
    ),
    q("SELECT count(*), sum(big) FROM items WHERE false", Rows),
    // only NULLs
    q(
        "SELECT sum(qty), avg(qty), min(qty), max(qty) FROM items WHERE qty IS NULL",
        Rows,
    ),
    q(
        "SELECT avg(price), min(name), max(day), bool_or(flag) FROM items WHERE grp IS NULL AND price IS NULL AND name IS NULL AND day IS NULL AND flag IS NULL",
        Rows,
    ),
    // --- GROUP BY, HAVING ----------------------------------------------------------------
    q("SELECT grp, count(*) FROM items GROUP BY grp", Rows),
    q("SELECT count(*) FROM items GROUP BY grp", Rows),
    q(
        "SELECT grp, sum(qty), min(name), max(price) FROM items GROUP BY grp",
        Rows,
    ),
    q(
        "SELECT grp, flag, count(*) FROM items GROUP BY grp, flag",
        Rows,
    ),
    q("SELECT grp, count(*) FROM items GROUP BY 1", Rows),
    q(
        "SELECT qty % 3 AS m, count(*) FROM items GROUP BY qty % 3",
        Rows,
    ),
    q(
        "SELECT grp, count(*) AS n FROM items GROUP BY grp ORDER BY n DESC, grp",
        Ordered,
    ),
    q(
        "SELECT grp, sum(qty) FROM items GROUP BY grp ORDER BY sum(qty), grp",
        Ordered,
    ),
    q(
        "SELECT grp, sum(qty) FROM items GROUP BY grp HAVING sum(qty) > 100",
        Rows,
    ),
    q(
        "SELECT grp, count(*) FROM items GROUP BY grp HAVING count(*) > 1000",
        Rows,
    ),
    q(
        "SELECT grp FROM items GROUP BY grp HAVING min(qty) < 0",
        Rows,
    ),
    q("SELECT code, avg(price) FROM items GROUP BY code", Rows),
    q(
        "SELECT day, count(*) FROM items GROUP BY day ORDER BY day",
        Ordered,
    ),
    q(
        "SELECT flag, bool_and(qty > 0), bool_or(qty > 30), every(price > 0) FROM items GROUP BY flag",
        Rows,
    ),
    q(
        "SELECT grp, avg(qty), avg(small), avg(big) FROM items GROUP BY grp",
        Rows,
    ),
    q(
        "SELECT grp, min(u::text), max(tstz), min(ts), max(day) FROM items GROUP BY grp",
        Rows,
    ),
    q(
        "SELECT grp, count(DISTINCT flag) FROM items GROUP BY grp",
        Rows,
    ),
    q("SELECT grp FROM items GROUP BY grp", Rows),
    q(
        "SELECT grp, count(*) FROM items WHERE false GROUP BY grp",
        Rows,
    ),
    q(
        "SELECT id, avg(price) FROM items WHERE id IN (3, 4, 5, 6) GROUP BY id",
        Rows,
    ),
    q(
        "SELECT name, count(*) FROM items GROUP BY name ORDER BY count(*) DESC, name LIMIT 5",
        Ordered,
    ),
    q(
        "SELECT grp, max(score), min(score) FROM items GROUP BY grp",
        Rows,
    ),
    q(
        "SELECT item_id, sum(amount), count(*) FROM orders GROUP BY item_id",
        Rows,
    ),
    q(
        "SELECT n, sum(amount) FROM orders GROUP BY n ORDER BY n",
        Ordered,
    ),
    q(
        "SELECT grp, flag, sum(price) FROM items GROUP BY 1, 2 ORDER BY 1, 2",
        Ordered,
    ),
    q(
        "SELECT grp, count(*) FROM items GROUP BY ROLLUP (grp)",
        Refused("0A000"),
    ),
    q(
        "SELECT extract(year FROM day) AS y, count(*) FROM items GROUP BY 1",
        Rows,
    ),
    // --- DISTINCT -----------------------------------------------------------------------
    q("SELECT DISTINCT grp FROM items", Rows),
    q("SELECT DISTINCT grp, flag FROM items", Rows),
    q("SELECT DISTINCT code FROM items", Rows),
    q("SELECT DISTINCT score FROM items WHERE score <> 0", Rows),
    q("SELECT DISTINCT name FROM items ORDER BY name", Ordered),
    q("SELECT DISTINCT day FROM items WHERE day IS NOT NULL", Rows),
    q(
        "SELECT DISTINCT ON (grp) grp, id FROM items ORDER BY grp, id",
        Refused("0A000"),
    ),
    q("SELECT count(DISTINCT grp) FROM items", Rows),
    q("SELECT count(DISTINCT grp) FROM items WHERE false", Rows),
    q(
        "SELECT count(DISTINCT day) AS n FROM items WHERE id < 300",
        Rows,
    ),
    q(
        "SELECT grp, count(DISTINCT code) FROM items GROUP BY grp HAVING count(DISTINCT code) > 2 ORDER BY grp",
        Ordered,
    ),
    q(
        "SELECT flag, count(DISTINCT tstz) FROM items GROUP BY flag ORDER BY count(DISTINCT tstz) DESC, flag",
        Ordered,
    ),
    q("SELECT count(DISTINCT code) FROM items", Rows),
    q("SELECT count(DISTINCT score) FROM items", Rows),
    q(
        "SELECT count(DISTINCT name), count(DISTINCT flag) FROM items",
        Refused("0A000"),
    ),
    // --- count in expressions: a per-shard answer would be wrong ---------------------------
    q("SELECT count(*) + 1 FROM items", Refused("0A000")),
    q("SELECT count(*) * 2 AS twice FROM items", Refused("0A000")),
    q("SELECT count(*), count(*) FROM items", Rows),
    q("SELECT count(*) FROM items HAVING count(*) > 10", Rows),
    q("SELECT count(*) FROM items OFFSET 1", Rows),
    q("SELECT count(*) FROM items LIMIT 1", Rows),
    q("SELECT count(*) > 300 FROM items", Refused("0A000")),
    // --- joins -----------------------------------------------------------------------------
    q(
        "SELECT i.id, i.name, o.n, o.amount FROM items i JOIN orders o ON o.item_id = i.id WHERE i.id = 7 AND o.item_id = 7",
        Rows,
    ),
    // the key equality of an outer join's nullable side in its ON clause pins that side
    q(
        "SELECT i.id, o.n FROM items i LEFT JOIN orders o ON o.item_id = i.id AND o.item_id = 13 WHERE i.id = 13",
        Rows,
    ),
    q(
        "SELECT count(*) FROM items i JOIN orders o ON o.item_id = i.id WHERE i.id = 21 AND o.item_id = 21",
        Rows,
    ),
    q(
        "SELECT i.id, o.n FROM items i JOIN orders o ON o.item_id = i.id WHERE i.id = 8",
        Rows,
    ),
    // the key value crosses inner-join key equalities (and outer joins into their
    // nullable side); anything else joining two sharded tables stays refused
    q(
        "SELECT i.id, o.n, o.amount FROM items i, orders o WHERE o.item_id = i.id AND i.id = 600",
        Rows,
    ),
    q(
        "SELECT o.n, i.name FROM orders o JOIN items i ON i.id = o.item_id WHERE o.item_id = 17",
        Rows,
    ),
    q(
        "SELECT i.id, count(o.n) FROM items i LEFT JOIN orders o ON o.item_id = i.id WHERE i.id = 14 GROUP BY i.id",
        Rows,
    ),
    q(
        "SELECT i.id, o.n FROM orders o RIGHT JOIN items i ON o.item_id = i.id WHERE i.id = 599",
        Rows,
    ),
    q(
        "SELECT i.id, o.n FROM items i LEFT JOIN orders o ON o.item_id = i.id WHERE o.item_id = 13",
        Refused("0A000"),
    ),
    q(
        "SELECT i.id, o.n FROM items i FULL JOIN orders o ON o.item_id = i.id WHERE i.id = 13",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT i.id, o.n FROM items i JOIN orders o ON o.item_id = i.grp WHERE i.id = 13",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT i.id, o.n FROM items i, orders o WHERE i.id = 5 AND o.item_id = 6",
        Refused("0A000"),
    ),
    q(
        "SELECT count(*) FROM items i JOIN orders o ON o.item_id = i.id",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT i.id, o.n FROM items i JOIN orders o ON o.item_id = i.id WHERE i.grp = 1",
        Refused(UNSUPPORTED),
    ),
    // joins with the reference table: like the sharded table alone
    q(
        "SELECT i.id, k.label FROM items i JOIN kinds k ON k.id = i.grp",
        Rows,
    ),
    q(
        "SELECT i.id, k.label FROM items i JOIN kinds k ON k.id = i.grp WHERE i.id = 5",
        Rows,
    ),
    q(
        "SELECT i.id, k.label FROM items i JOIN kinds k ON k.id = i.grp WHERE i.id IN (1, 2, 3, 4)",
        Rows,
    ),
    q(
        "SELECT i.id, k.label FROM items i LEFT JOIN kinds k ON k.id = i.grp WHERE i.qty > 30",
        Rows,
    ),
    q(
        "SELECT i.id, k.label FROM kinds k RIGHT JOIN items i ON k.id = i.grp WHERE i.grp IS NULL",
        Rows,
    ),
    q(
        "SELECT count(*) FROM items i, kinds k WHERE k.id = i.grp AND k.label <> 'zero'",
        Rows,
    ),
    q(
        "SELECT k.label, count(*), sum(i.qty) FROM items i JOIN kinds k ON k.id = i.grp GROUP BY k.label ORDER BY k.label",
        Ordered,
    ),
    q(
        "SELECT i.id, k.label FROM items i JOIN kinds k ON k.id = i.grp ORDER BY i.id LIMIT 5",
        Ordered,
    ),
    q(
        "SELECT o.n, k.label FROM orders o JOIN items i ON i.id = o.item_id JOIN kinds k ON k.id = i.grp WHERE i.id = 44",
        Rows,
    ),
    q(
        "SELECT k.id, k.label, i.id FROM kinds k LEFT JOIN items i ON i.grp = k.id",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT k.id, i.id FROM items i FULL JOIN kinds k ON i.grp = k.id",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT i.id, o.n, k.label FROM items i JOIN orders o ON o.item_id = i.id JOIN kinds k ON k.id = i.grp",
        Refused(UNSUPPORTED),
    ),
    q("SELECT k.label FROM kinds k WHERE k.id = 2", Rows),
    q(
        "SELECT count(*) FROM kinds k JOIN kinds j ON j.id = k.id + 1",
        Rows,
    ),
    // --- subqueries, CTEs, set operations ------------------------------------------------
    q(
        "SELECT id FROM items WHERE grp IN (SELECT id FROM kinds)",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items WHERE id IN (SELECT item_id FROM orders WHERE n = 1)",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items i WHERE EXISTS (SELECT 1 FROM orders o WHERE o.item_id = i.id)",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items WHERE qty > (SELECT avg(qty) FROM items)",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items WHERE price = (SELECT max(price) FROM items)",
        Refused("0A000"),
    ),
    q(
        "SELECT (SELECT count(*) FROM orders) AS n",
        Refused("0A000"),
    ),
    q(
        "SELECT * FROM (SELECT grp, count(*) AS c FROM items GROUP BY grp) s",
        Refused("0A000"),
    ),
    q(
        "SELECT count(*) FROM (SELECT DISTINCT grp FROM items) s",
        Refused("0A000"),
    ),
    q(
        "WITH x AS (SELECT id FROM items WHERE grp = 1) SELECT count(*) FROM x",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items UNION SELECT item_id FROM orders",
        Refused("0A000"),
    ),
    q(
        "SELECT id FROM items WHERE grp = 1 UNION ALL SELECT id FROM items WHERE grp = 2",
        Refused("0A000"),
    ),
    q(
        "SELECT grp FROM items INTERSECT SELECT n FROM orders",
        Refused("0A000"),
    ),
    q(
        "SELECT item_id FROM orders EXCEPT SELECT id FROM items WHERE grp = 0",
        Refused("0A000"),
    ),
    // --- what is never merged: refused ------------------------------------------------------
    q(
        "SELECT id, row_number() OVER (ORDER BY id) FROM items",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT id, sum(qty) OVER (PARTITION BY grp) FROM items",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT id, rank() OVER (ORDER BY price) FROM items WHERE id IN (1, 2, 3)",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT string_agg(name, ',') FROM items",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT grp, string_agg(name, ',' ORDER BY name) FROM items GROUP BY grp",
        Refused(UNSUPPORTED),
    ),
    q("SELECT stddev(qty) FROM items", Refused(UNSUPPORTED)),
    q("SELECT variance(price) FROM items", Refused(UNSUPPORTED)),
    q("SELECT array_agg(id) FROM items", Refused(UNSUPPORTED)),
    q("SELECT json_agg(id) FROM items", Refused(UNSUPPORTED)),
    q(
        "SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY qty) FROM items",
        Refused(UNSUPPORTED),
    ),
    q(
        "SELECT mode() WITHIN GROUP (ORDER BY grp) FROM items",
        Refused(UNSUPPORTED),
    ),
];

/// Writes, run in this order through the proxy and on the plain server (the plain
/// server only when the proxy did not refuse). The sequence leaves the data as it found
/// it, so it runs once with each protocol.
pub const WRITES: &[Q] = &[
    // several keys on several shards in one INSERT
    q(
        "INSERT INTO items (id, grp, name, qty) VALUES (1001, 1, 'w1', 5), (1002, 2, 'w2', 6), (1003, 3, 'w3', 7), (1004, NULL, NULL, NULL) RETURNING id, grp, name, qty",
        Ordered,
    ),
    q(
        "DELETE FROM items WHERE id IN (1001, 1002, 1003, 1004) RETURNING id",
        Rows,
    ),
    // RETURNING in input order, keys interleaved across shards, ON CONFLICT per shard
    q(
        "INSERT INTO items (id, name) VALUES (1010, 'a'), (1001, 'b'), (1011, 'c'), (1002, 'd'), (1012, 'e'), (1003, 'f') RETURNING id, name",
        Ordered,
    ),
    q(
        "INSERT INTO items (id, name) VALUES (1010, 'x'), (1001, 'y'), (1013, 'z') ON CONFLICT (id) DO UPDATE SET name = excluded.name RETURNING id, name",
        Ordered,
    ),
    q(
        "INSERT INTO items (id, name) VALUES (1014, 'p'), (1001, 'q') ON CONFLICT DO NOTHING",
        Rows,
    ),
    q(
        "INSERT INTO items (id, name) VALUES (1015, 'p'), (1002, 'q') ON CONFLICT DO NOTHING RETURNING id",
        Refused("0A000"),
    ),
    q(
        "DELETE FROM items WHERE id IN (1001, 1002, 1003, 1010, 1011, 1012, 1013, 1014) RETURNING id",
        Rows,
    ),
    q(
        "INSERT INTO items (id, grp, name, qty) VALUES (1001, 1, 'w1', 5), (1002, 2, 'w2', 6), (1003, 3, 'w3', 7), (1004, NULL, NULL, NULL) RETURNING qty, name, id",
        Ordered,
    ),
    q(
        "DELETE FROM items WHERE id IN (1001, 1002, 1003, 1004) RETURNING id, name",
        Rows,
    ),
    q(
        "INSERT INTO items (id, grp, name, price) VALUES (1005, 4, 'w5', 12.5) RETURNING *",
        Rows,
    ),
    q(
        "INSERT INTO orders (item_id, n, amount) VALUES (1005, 1, 1.250)",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty + 1000 WHERE grp = 2 RETURNING id, qty",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty - 1000 WHERE grp = 2 RETURNING id, qty",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty WHERE id = 5 OR id = 600 RETURNING id, qty",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty WHERE id = ANY('{5,600}') RETURNING id, qty",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty WHERE id NOT IN (1, 2, 3) AND grp = 4 RETURNING id",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty WHERE id = 5 RETURNING id, qty",
        Rows,
    ),
    q(
        "UPDATE public.items SET qty = qty WHERE grp = 3 RETURNING id",
        Rows,
    ),
    q(
        "UPDATE ITEMS SET qty = qty WHERE grp = 0 RETURNING id",
        Rows,
    ),
    // refused today, like the SELECT with a NULL-only key list
    q(
        "UPDATE items SET qty = qty WHERE id IN (NULL) RETURNING id",
        Rows,
    ),
    q("DELETE FROM Items WHERE false", Rows),
    q("DELETE FROM items WHERE id = NULL", Rows),
    q(
        "INSERT INTO items (name, id) VALUES ('w6', 1006) RETURNING id, name",
        Rows,
    ),
    q(
        "INSERT INTO items VALUES (1007, 1, 'w7') RETURNING id, grp, name",
        Rows,
    ),
    q(
        "INSERT INTO items (id) VALUES (1008) ON CONFLICT (id) DO NOTHING RETURNING id",
        Rows,
    ),
    q(
        "INSERT INTO items (id) VALUES (1008) ON CONFLICT (id) DO NOTHING RETURNING id",
        Rows,
    ),
    q(
        "INSERT INTO items (id, name) VALUES (1, 'dup') ON CONFLICT (id) DO UPDATE SET name = items.name RETURNING id, name",
        Rows,
    ),
    q("INSERT INTO items (id) VALUES (1)", Fails("23505")),
    q(
        "INSERT INTO items (id, name) SELECT 2001, 'x'",
        Refused(UNSUPPORTED),
    ),
    q(
        "DELETE FROM items WHERE id IN (1006, 1007, 1008) RETURNING id, name",
        Rows,
    ),
    q(
        "INSERT INTO orders (item_id, n, amount) VALUES (1009, 1, 1), (1009, 2, 2.5) RETURNING *",
        Rows,
    ),
    q(
        "UPDATE orders SET amount = amount FROM items i WHERE i.id = orders.item_id AND i.id = 7 RETURNING n, amount",
        Rows,
    ),
    q(
        "DELETE FROM orders o USING items i WHERE i.id = o.item_id AND i.id = 7 AND o.amount < 0 RETURNING o.n",
        Rows,
    ),
    q(
        "DELETE FROM orders WHERE item_id = 1009 RETURNING n, amount",
        Rows,
    ),
    q("UPDATE items SET name = name WHERE name LIKE 'b%'", Rows),
    q(
        "UPDATE items SET flag = NOT flag WHERE id IN (1, 2, 3, 4, 5) RETURNING id, flag",
        Rows,
    ),
    q(
        "UPDATE items SET flag = NOT flag WHERE id IN (1, 2, 3, 4, 5) RETURNING id, flag",
        Rows,
    ),
    q("UPDATE items SET price = price WHERE false", Rows),
    // the key column: moving a row to another slot is refused (today: 0A000)
    q(
        "UPDATE items SET id = id + 10000 WHERE id = 5",
        Refused(UNSUPPORTED),
    ),
    q(
        "UPDATE items SET id = 2000 WHERE grp = 1",
        Refused(UNSUPPORTED),
    ),
    q(
        "DELETE FROM orders WHERE item_id = 1005 RETURNING item_id, n, amount",
        Rows,
    ),
    q("DELETE FROM items WHERE name = 'w5' RETURNING *", Rows),
    q("DELETE FROM items WHERE false RETURNING id", Rows),
    // writes of the reference table reach every copy (simple protocol; the extended
    // protocol refuses them with 0A000 for now)
    q(
        "INSERT INTO kinds (id, label) VALUES (50, 'fifty'), (51, NULL) RETURNING *",
        Rows,
    ),
    q(
        "UPDATE kinds SET label = upper(label) WHERE id >= 50 RETURNING id, label",
        Rows,
    ),
    q(
        "UPDATE items SET qty = qty FROM kinds k WHERE k.id = items.grp AND items.id = 8 RETURNING items.id, k.label",
        Rows,
    ),
    q("DELETE FROM kinds WHERE id >= 50 RETURNING id", Rows),
    q(
        "INSERT INTO kinds (id, label) SELECT id, name FROM items WHERE id = 1",
        Refused(UNSUPPORTED),
    ),
];
