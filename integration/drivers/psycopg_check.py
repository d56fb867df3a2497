"""psycopg 3 through pgshard, checked value by value.

Usage: psycopg_check.py URL ITEMS_TABLE TOKENS_TABLE ONE_SHARD_KEYS

ITEMS_TABLE is sharded on `id bigint` and TOKENS_TABLE on `token uuid`; both exist and
are empty (the caller creates them through the proxy). ONE_SHARD_KEYS is a comma-separated
list of ids that all live on one shard (for executemany, see below).

psycopg's executemany() sends every row in one pipeline ending with a single Sync: one
implicit transaction, which pgshard runs only when all rows are on one shard (rows on
several shards are refused with 0A000). The step that checks rows on several shards runs
only with PGSHARD_KNOWN_LIMITS=1. Every step runs on its own
connection, so a failing step does not hide the others. Prints `ok <step>` or
`FAIL <step>: <why>` per step, then `KEYS <table> <key,...>` for the rows left behind
(the caller checks on the shards that each sits where its key belongs), and exits 1 if
any step failed.
"""

import datetime as dt
import sys
import threading
import time
import traceback
import uuid
from decimal import Decimal

import psycopg
from psycopg import errors

import os

URL, ITEMS, TOKENS = sys.argv[1], sys.argv[2], sys.argv[3]
ONE_SHARD_KEYS = [int(k) for k in sys.argv[4].split(",")]
KNOWN_LIMITS = os.environ.get("PGSHARD_KNOWN_LIMITS") == "1"
COLUMNS = "id, n, big, label, amount, at, token, flag"
UTC = dt.timezone.utc


class Mismatch(Exception):
    """A value read back differs from the one expected."""


def check(what, got, want):
    if got != want:
        raise Mismatch(f"{what}: got {got!r}, want {want!r}")


def item(i):
    """A row for key i; some columns are NULL on some rows, the extremes on others."""
    return (
        i,
        None if i % 5 == 0 else (i * 7) % 2_147_483_647 - 1_000,
        None if i % 6 == 0 else (i % 1_000_003) * 3_000_000_000,
        None if i % 4 == 0 else f"label {i} 'quoted' \u00e9\u2603",
        None if i % 7 == 0 else Decimal(f"{i % 1_000_000_007}.125") * (-1 if i % 2 else 1),
        None if i % 3 == 0 else dt.datetime(2024, 2, 29, 12, 30, 45, 123456, tzinfo=UTC)
        + dt.timedelta(days=i % 3000, microseconds=i % 999_983),
        None if i % 8 == 0 else uuid.UUID(int=(i * 0x1234567890ABCDEF) % 2**128),
        None if i % 9 == 0 else i % 2 == 0,
    )


# keys of every row inserted and kept, by table
ITEM_KEYS = set()
TOKEN_KEYS = set()


def connect(**kwargs):
    kwargs.setdefault("autocommit", True)
    return psycopg.connect(URL, connect_timeout=10, **kwargs)


def insert_items(conn, keys):
    for i in keys:
        conn.execute(
            f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            item(i),
        )
        ITEM_KEYS.add(i)


def read_item(conn, i, binary=False):
    cur = conn.cursor(binary=binary)
    rows = cur.execute(f"SELECT {COLUMNS} FROM {ITEMS} WHERE id = %s", (i,)).fetchall()
    check(f"rows for id {i}", len(rows), 1)
    return rows[0]


def step_types_by_key():
    # small, int4-sized and int8-sized keys (psycopg declares the smallest integer type
    # that holds the value), negative keys and an extreme
    keys = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 40_000, 3_000_000_000, -17, 2**63 - 1, -(2**63)]
    with connect() as conn:
        insert_items(conn, keys)
        for i in keys:
            check(f"text result for id {i}", read_item(conn, i), item(i))
            check(f"binary result for id {i}", read_item(conn, i, binary=True), item(i))
        # binary parameters (%b) route like text ones
        row = conn.execute(
            f"SELECT label, flag FROM {ITEMS} WHERE id = %b", (3_000_000_000,)
        ).fetchone()
        check("binary key parameter", row, item(3_000_000_000)[3:4] + item(3_000_000_000)[7:8])
        check(
            "missing key",
            conn.execute(f"SELECT id FROM {ITEMS} WHERE id = %s", (999_999,)).fetchall(),
            [],
        )
        # UPDATE and DELETE by key, with RETURNING
        row = conn.execute(
            f"UPDATE {ITEMS} SET label = %s WHERE id = %s RETURNING id, label", ("changed", 2)
        ).fetchone()
        check("UPDATE … RETURNING", row, (2, "changed"))
        cur = conn.execute(f"DELETE FROM {ITEMS} WHERE id = %s", (12,))
        check("DELETE rowcount", cur.rowcount, 1)
        ITEM_KEYS.discard(12)
        check(
            "deleted row",
            conn.execute(f"SELECT id FROM {ITEMS} WHERE id = %s", (12,)).fetchall(),
            [],
        )
        conn.execute(f"UPDATE {ITEMS} SET label = %s WHERE id = %s", (item(2)[3], 2))


def step_executemany():
    executemany(ONE_SHARD_KEYS)


def step_executemany_across_shards():
    executemany(list(range(100, 160)))


def executemany(keys):
    with connect() as conn:
        with conn.cursor() as cur:
            cur.executemany(
                f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                [item(i) for i in keys],
            )
            check("executemany rowcount", cur.rowcount, len(keys))
        ITEM_KEYS.update(keys)
        with conn.cursor() as cur:
            cur.executemany(
                f"SELECT {COLUMNS} FROM {ITEMS} WHERE id = %s",
                [(i,) for i in keys],
                returning=True,
            )
            got = []
            while True:
                got.extend(cur.fetchall())
                if not cur.nextset():
                    break
            check("executemany SELECT … returning=True", got, [item(i) for i in keys])
        # a key list as one array parameter
        some = [keys[0], keys[-1], 3_000_000_000, 7]
        got = conn.execute(
            f"SELECT id FROM {ITEMS} WHERE id = ANY(%s) ORDER BY id", (some,)
        ).fetchall()
        check("id = ANY(%s)", [r[0] for r in got], sorted(some))


def step_scatter():
    with connect() as conn:
        want = sorted(ITEM_KEYS)
        got = [r[0] for r in conn.execute(f"SELECT id FROM {ITEMS} ORDER BY id").fetchall()]
        check("ORDER BY id over all shards", got, want)
        got = [
            r[0]
            for r in conn.execute(
                f"SELECT id FROM {ITEMS} ORDER BY id DESC LIMIT %s OFFSET 2" % 5
            ).fetchall()
        ]
        check("ORDER BY id DESC LIMIT 5 OFFSET 2", got, want[::-1][2:7])
        rows = [item(i) for i in ITEM_KEYS]
        bigs = [r[2] for r in rows if r[2] is not None]
        amounts = [r[4] for r in rows if r[4] is not None]
        got = conn.execute(
            f"SELECT count(*), sum(big), min(id), max(id), count(label), sum(amount) FROM {ITEMS}"
        ).fetchone()
        check(
            "count(*), sum(big), min, max, count(label), sum(amount)",
            got,
            (
                len(rows),
                Decimal(sum(bigs)),
                min(ITEM_KEYS),
                max(ITEM_KEYS),
                sum(1 for r in rows if r[3] is not None),
                sum(amounts),
            ),
        )
        got = conn.execute(
            f"SELECT flag, count(*) FROM {ITEMS} GROUP BY flag ORDER BY flag NULLS LAST"
        ).fetchall()
        counts = {}
        for r in rows:
            counts[r[7]] = counts.get(r[7], 0) + 1
        check(
            "GROUP BY flag",
            got,
            [(k, counts[k]) for k in (False, True, None) if k in counts],
        )
        # the same through the binary result format
        got = conn.cursor(binary=True).execute(f"SELECT count(*) FROM {ITEMS}").fetchone()
        check("binary count(*)", got, (len(rows),))


def visible(conn, i):
    return conn.execute(f"SELECT count(*) FROM {ITEMS} WHERE id = %s", (i,)).fetchone()[0] == 1


def step_transactions():
    with connect() as conn, connect() as other:
        # commit: invisible to others until COMMIT
        with conn.transaction():
            conn.execute(f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", item(503))
            check("own insert visible inside the transaction", visible(conn, 503), True)
            conn.execute(f"UPDATE {ITEMS} SET n = n + 1 WHERE id = %s", (503,))
            check("uncommitted insert seen by another session", visible(other, 503), False)
        ITEM_KEYS.add(503)
        check("committed insert seen by another session", visible(other, 503), True)
        check(
            "committed update",
            conn.execute(f"SELECT n FROM {ITEMS} WHERE id = %s", (503,)).fetchone(),
            (item(503)[1] + 1,),
        )
        conn.execute(f"UPDATE {ITEMS} SET n = n - 1 WHERE id = %s", (503,))
        # rollback: the row never appears
        with conn.transaction(force_rollback=True):
            conn.execute(f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", item(501))
            check("own insert visible before ROLLBACK", visible(conn, 501), True)
        check("rolled-back insert", visible(conn, 501), False)
        check("rolled-back insert, other session", visible(other, 501), False)
    # psycopg's default mode: an implicit BEGIN before the first statement
    with connect(autocommit=False) as conn, connect() as other:
        conn.execute(f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", item(502))
        check("transaction status after a statement", conn.info.transaction_status.name, "INTRANS")
        check("uncommitted insert (implicit BEGIN)", visible(other, 502), False)
        conn.commit()
        ITEM_KEYS.add(502)
        check("insert after commit()", visible(other, 502), True)
        conn.execute(f"DELETE FROM {ITEMS} WHERE id = %s", (502,))
        conn.rollback()
        check("DELETE undone by rollback()", visible(other, 502), True)
        # an error inside a transaction aborts it; rollback() recovers the session
        try:
            conn.execute(f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)", item(502))
            raise Mismatch("duplicate key accepted")
        except errors.UniqueViolation:
            pass
        check("status after an error", conn.info.transaction_status.name, "INERROR")
        conn.rollback()
        check("session usable after rollback()", visible(conn, 502), True)
        conn.commit()


def step_prepared():
    keys = sorted(ITEM_KEYS)[:12]
    with connect() as conn:
        for i in keys:
            check(
                f"prepare=True, id {i}",
                conn.execute(f"SELECT {COLUMNS} FROM {ITEMS} WHERE id = %s", (i,), prepare=True).fetchone(),
                item(i),
            )
        # automatic preparation after prepare_threshold executions of the same query
        conn.prepare_threshold = 2
        for i in keys:
            check(
                f"auto-prepared, id {i}",
                conn.execute(f"SELECT label FROM {ITEMS} WHERE id = %s", (i,)).fetchone(),
                (item(i)[3],),
            )
        # a prepared write, then the same statement inside a transaction
        for i in (600, 601, 602):
            conn.execute(
                f"INSERT INTO {ITEMS} ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                item(i),
                prepare=True,
            )
            ITEM_KEYS.add(i)
        with conn.transaction():
            for i in (600, 601):
                check(
                    f"prepared inside a transaction, id {i}",
                    conn.execute(f"SELECT {COLUMNS} FROM {ITEMS} WHERE id = %s", (i,), prepare=True).fetchone(),
                    item(i),
                )
        # a scatter query prepared and reused
        for _ in range(3):
            got = conn.execute(
                f"SELECT count(*) FROM {ITEMS} WHERE id BETWEEN %s AND %s", (600, 699), prepare=True
            ).fetchone()
            check("prepared scatter count", got, (3,))


def cancel_after(conn, seconds, how):
    def run():
        time.sleep(seconds)
        getattr(conn, how)()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def step_cancel():
    cancels = ["cancel"] + (["cancel_safe"] if hasattr(psycopg.Connection, "cancel_safe") else [])
    with connect() as conn:
        for how in cancels:
            for sql, params in (
                (f"SELECT pg_sleep(20) FROM {ITEMS} WHERE id = %s", (1,)),
                ("SELECT pg_sleep(20)", None),
            ):
                thread = cancel_after(conn, 0.5, how)
                start = time.monotonic()
                try:
                    conn.execute(sql, params)
                    raise Mismatch(f"{how}(): {sql} finished without being cancelled")
                except errors.QueryCanceled:
                    pass
                finally:
                    thread.join()
                elapsed = time.monotonic() - start
                if elapsed > 10:
                    raise Mismatch(f"{how}(): cancelled only after {elapsed:.1f}s: {sql}")
                check(f"session usable after {how}()", conn.execute("SELECT 1").fetchone(), (1,))
        # in a transaction: the transaction is aborted, ROLLBACK recovers
        conn.autocommit = False
        conn.execute(f"SELECT id FROM {ITEMS} WHERE id = %s", (1,))
        thread = cancel_after(conn, 0.5, "cancel")
        try:
            conn.execute(f"SELECT pg_sleep(20) FROM {ITEMS} WHERE id = %s", (1,))
            raise Mismatch("cancel() inside a transaction: not cancelled")
        except errors.QueryCanceled:
            pass
        finally:
            thread.join()
        check("status after a cancel in a transaction", conn.info.transaction_status.name, "INERROR")
        conn.rollback()
        check("usable after rollback", conn.execute(f"SELECT id FROM {ITEMS} WHERE id = %s", (1,)).fetchone(), (1,))
        conn.rollback()


def step_uuid_keys():
    tokens = [uuid.UUID(int=k * 0x9E3779B97F4A7C15) for k in range(1, 25)] + [
        uuid.UUID(int=0),
        uuid.UUID(int=2**128 - 1),
    ]
    with connect() as conn:
        for n, t in enumerate(tokens):
            conn.execute(f"INSERT INTO {TOKENS} (token, note) VALUES (%s, %s)", (t, f"t{n}"))
            TOKEN_KEYS.add(t)
        for n, t in enumerate(tokens):
            check(
                f"note for token {t}",
                conn.execute(f"SELECT token, note FROM {TOKENS} WHERE token = %s", (t,)).fetchone(),
                (t, f"t{n}"),
            )
        # as text: the literal is routed like the typed parameter
        got = conn.execute(f"SELECT note FROM {TOKENS} WHERE token = '{tokens[3]}'").fetchone()
        check("uuid literal key", got, ("t3",))
        got = conn.execute(f"SELECT count(*) FROM {TOKENS}").fetchone()
        check("count(*) of tokens", got, (len(tokens),))


STEPS = [
    step_types_by_key,
    step_executemany,
    step_scatter,
    step_transactions,
    step_prepared,
    step_cancel,
    step_uuid_keys,
] + ([step_executemany_across_shards] if KNOWN_LIMITS else [])


def main():
    print(f"psycopg {psycopg.__version__}, libpq {psycopg.pq.version()}, impl {psycopg.pq.__impl__}")
    failed = 0
    for step in STEPS:
        name = step.__name__.removeprefix("step_")
        try:
            step()
            print(f"ok {name}", flush=True)
        except Exception as e:  # noqa: BLE001 - every failure is reported, then the next step runs
            failed += 1
            sqlstate = getattr(getattr(e, "diag", None), "sqlstate", None)
            print(f"FAIL {name}: {type(e).__name__}{f' [{sqlstate}]' if sqlstate else ''}: {e}", flush=True)
            traceback.print_exc()
    print(f"KEYS {ITEMS} " + ",".join(str(k) for k in sorted(ITEM_KEYS)))
    print(f"KEYS {TOKENS} " + ",".join(str(k) for k in sorted(TOKEN_KEYS)))
    print(f"psycopg checks: {len(STEPS)} steps, {failed} failed")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
