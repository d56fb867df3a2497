// node-postgres (`pg`) through pgshard, checked value by value.
//
// Usage: node pg_check.js URL ITEMS_TABLE TOKENS_TABLE
//
// ITEMS_TABLE is sharded on `id bigint` and TOKENS_TABLE on `token uuid`; both exist and
// are empty (the caller creates them through the proxy). node-postgres sends every query
// with parameters through the extended protocol (text parameters of unspecified type, so
// the server infers them), and one without parameters as a simple Query. Every step uses
// its own connections, so a failing step does not hide the others. Prints `ok <step>` or
// `FAIL <step>: <why>` per step, then `KEYS <table> <key,...>` for the rows left behind
// (the caller checks on the shards that each sits where its key belongs), and exits 1 if
// any step failed.
'use strict';

const { Client, Pool } = require('pg');

const [URL, ITEMS, TOKENS] = process.argv.slice(2);
const COLUMNS = 'id, n, big, label, amount, at, token, flag';
const INSERT = `INSERT INTO ${ITEMS} (${COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`;
const SELECT = `SELECT ${COLUMNS} FROM ${ITEMS} WHERE id = $1`;

class Mismatch extends Error {}

// Dates compare by instant; everything else as JSON (bigint and numeric arrive as strings).
function show(v) {
  return JSON.stringify(v, (_, x) => (x instanceof Date ? `Date(${x.toISOString()})` : x));
}

function check(what, got, want) {
  const g = show(got);
  const w = show(want);
  if (g !== w) throw new Mismatch(`${what}: got ${g}, want ${w}`);
}

function uuidOf(n) {
  const hex = (((n % (1n << 128n)) + (1n << 128n)) % (1n << 128n)).toString(16).padStart(32, '0');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

// The amount of row i in thousandths (numeric(30,3)), or null.
function amountMillis(i) {
  if (i % 7n === 0n) return null;
  let a = i % 1000000007n;
  if (i % 2n !== 0n) a = -a;
  return a < 0n || (a === 0n && i % 2n !== 0n) ? a * 1000n - 125n : a * 1000n + 125n;
}

function formatMillis(m) {
  const neg = m < 0n;
  const abs = neg ? -m : m;
  return `${neg ? '-' : ''}${abs / 1000n}.${(abs % 1000n).toString().padStart(3, '0')}`;
}

// The row for key i (a BigInt), as node-postgres returns it; some columns NULL.
function item(i) {
  const millis = amountMillis(i);
  return [
    i.toString(),
    i % 5n === 0n ? null : Number(i % 100000n),
    i % 6n === 0n ? null : ((i % 1000003n) * 3000000000n).toString(),
    i % 4n === 0n ? null : `label ${i} 'quoted' \u00e9\u2603`,
    millis === null ? null : formatMillis(millis),
    i % 3n === 0n ? null : new Date(Date.UTC(2024, 1, 29, 12, 30, 45, 123) + Number(i % 3000n) * 86400000),
    i % 8n === 0n ? null : uuidOf(i * 0x1234567890abcdefn),
    i % 9n === 0n ? null : i % 2n === 0n,
  ];
}

function values(row) {
  return Object.values(row);
}

const itemKeys = new Set();
const tokenKeys = new Set();

async function connect() {
  const client = new Client({ connectionString: URL, connectionTimeoutMillis: 10000 });
  await client.connect();
  return client;
}

async function withClients(n, f) {
  const clients = [];
  try {
    for (let k = 0; k < n; k++) clients.push(await connect());
    await f(...clients);
  } finally {
    for (const c of clients) await c.end().catch(() => {});
  }
}

async function insertItems(client, keys) {
  for (const i of keys) {
    await client.query(INSERT, item(i));
    itemKeys.add(i);
  }
}

async function readItem(client, i) {
  const res = await client.query(SELECT, [i.toString()]);
  check(`rows for id ${i}`, res.rowCount, 1);
  return values(res.rows[0]);
}

async function visible(client, i) {
  const res = await client.query(`SELECT count(*) FROM ${ITEMS} WHERE id = $1`, [i.toString()]);
  return res.rows[0].count === '1';
}

const steps = {
  async types_by_key() {
    const keys = [1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n, 10n, 11n, 12n, 40000n, 3000000000n, -17n,
      (1n << 63n) - 1n, -(1n << 63n)];
    await withClients(1, async (c) => {
      await insertItems(c, keys);
      for (const i of keys) check(`row for id ${i}`, await readItem(c, i), item(i));
      // a JavaScript number as the key parameter
      const res = await c.query(`SELECT label FROM ${ITEMS} WHERE id = $1`, [40000]);
      check('number key parameter', res.rows, [{ label: item(40000n)[3] }]);
      // no parameters: the simple query protocol, literal key
      const simple = await c.query(`SELECT ${COLUMNS} FROM ${ITEMS} WHERE id = 3000000000`);
      check('simple query by key', simple.rows.map(values), [item(3000000000n)]);
      check('missing key', (await c.query(SELECT, ['999999'])).rows, []);
      const upd = await c.query(`UPDATE ${ITEMS} SET label = $1 WHERE id = $2 RETURNING id, label`, ['changed', '2']);
      check('UPDATE … RETURNING', upd.rows, [{ id: '2', label: 'changed' }]);
      const del = await c.query(`DELETE FROM ${ITEMS} WHERE id = $1`, ['12']);
      check('DELETE rowCount', del.rowCount, 1);
      itemKeys.delete(12n);
      await c.query(`UPDATE ${ITEMS} SET label = $1 WHERE id = $2`, [item(2n)[3], '2']);
      // column types as the driver saw them
      const types = (await c.query(SELECT, ['1'])).fields.map((f) => f.dataTypeID);
      check('column type OIDs', types, [20, 23, 20, 25, 1700, 1184, 2950, 16]);
    });
  },

  async pool_concurrent() {
    const pool = new Pool({ connectionString: URL, max: 8 });
    try {
      const keys = [];
      for (let i = 200n; i < 280n; i++) keys.push(i);
      await Promise.all(keys.map((i) => pool.query(INSERT, item(i))));
      for (const i of keys) itemKeys.add(i);
      const rows = await Promise.all(keys.map((i) => pool.query(SELECT, [i.toString()])));
      rows.forEach((res, n) => check(`pooled read of ${keys[n]}`, res.rows.map(values), [item(keys[n])]));
    } finally {
      await pool.end();
    }
  },

  async scatter() {
    await withClients(1, async (c) => {
      const want = [...itemKeys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
      const ids = (await c.query(`SELECT id FROM ${ITEMS} ORDER BY id`)).rows.map((r) => r.id);
      check('ORDER BY id over all shards', ids, want.map(String));
      const top = await c.query(`SELECT id FROM ${ITEMS} ORDER BY id DESC LIMIT 5 OFFSET 2`);
      check('ORDER BY id DESC LIMIT 5 OFFSET 2', top.rows.map((r) => r.id), want.slice().reverse().slice(2, 7).map(String));
      const rows = want.map(item);
      let sumBig = 0n;
      let sumAmount = 0n;
      for (const i of want) {
        const r = item(i);
        if (r[2] !== null) sumBig += BigInt(r[2]);
        const m = amountMillis(i);
        if (m !== null) sumAmount += m;
      }
      // with a parameter: the extended protocol
      const agg = await c.query(
        `SELECT count(*) AS rows, sum(big) AS big, min(id), max(id), count(label) AS labels, sum(amount) AS amount
         FROM ${ITEMS} WHERE id <> $1`, ['0']);
      check('aggregates over all shards', values(agg.rows[0]), [
        String(rows.length), sumBig.toString(), want[0].toString(), want[want.length - 1].toString(),
        String(rows.filter((r) => r[3] !== null).length), formatMillis(sumAmount),
      ]);
      const groups = await c.query(`SELECT flag, count(*) FROM ${ITEMS} GROUP BY flag ORDER BY flag NULLS LAST`);
      const counts = new Map();
      for (const r of rows) counts.set(r[7], (counts.get(r[7]) || 0) + 1);
      check('GROUP BY flag', groups.rows.map(values),
        [false, true, null].filter((k) => counts.has(k)).map((k) => [k, String(counts.get(k))]));
      const avg = await c.query(`SELECT avg(n) FROM ${ITEMS} WHERE id BETWEEN $1 AND $2`, ['200', '209']);
      const ns = [];
      for (let i = 200n; i < 210n; i++) if (item(i)[1] !== null) ns.push(item(i)[1]);
      const mean = ns.reduce((a, b) => a + b, 0) / ns.length;
      if (Math.abs(Number(avg.rows[0].avg) - mean) > 1e-9) throw new Mismatch(`avg(n): got ${avg.rows[0].avg}, want ${mean}`);
    });
  },

  async transactions() {
    await withClients(2, async (c, other) => {
      await c.query('BEGIN');
      await c.query(INSERT, item(503n));
      check('own insert visible inside the transaction', await visible(c, 503n), true);
      check('uncommitted insert seen by another session', await visible(other, 503n), false);
      await c.query('COMMIT');
      itemKeys.add(503n);
      check('committed insert seen by another session', await visible(other, 503n), true);

      await c.query('BEGIN');
      await c.query(INSERT, item(505n));
      check('own insert visible before ROLLBACK', await visible(c, 505n), true);
      await c.query('ROLLBACK');
      check('rolled-back insert', await visible(other, 505n), false);
      check('rolled-back insert, same session', await visible(c, 505n), false);

      await c.query('BEGIN');
      await c.query(`UPDATE ${ITEMS} SET label = 'gone' WHERE id = $1`, ['503']);
      const inside = await c.query(`SELECT label FROM ${ITEMS} WHERE id = $1`, ['503']);
      check('own update inside the transaction', inside.rows, [{ label: 'gone' }]);
      await c.query('ROLLBACK');
      check('rolled-back update', (await other.query(SELECT, ['503'])).rows.map(values), [item(503n)]);

      // an error aborts the transaction until ROLLBACK
      await c.query('BEGIN');
      await c.query(SELECT, ['503']);
      let code = null;
      try { await c.query(INSERT, item(503n)); } catch (e) { code = e.code; }
      check('duplicate key in a transaction', code, '23505');
      code = null;
      try { await c.query(SELECT, ['503']); } catch (e) { code = e.code; }
      check('statement after an error in a transaction', code, '25P02');
      await c.query('ROLLBACK');
      check('usable after ROLLBACK', await visible(c, 503n), true);

      // a session setting, replayed on whichever backend serves the next statement
      await c.query("SET statement_timeout = '300ms'");
      code = null;
      try { await c.query(`SELECT pg_sleep(5) FROM ${ITEMS} WHERE id = $1`, ['503']); } catch (e) { code = e.code; }
      check('statement_timeout set earlier in the session', code, '57014');
      await c.query('RESET statement_timeout');
      check('usable after a timeout', await visible(c, 503n), true);
    });
  },

  async prepared() {
    await withClients(1, async (c) => {
      const keys = [...itemKeys].slice(0, 12);
      for (const i of keys) {
        const res = await c.query({ name: 'item_by_id', text: SELECT, values: [i.toString()] });
        check(`named prepared statement, id ${i}`, res.rows.map(values), [item(i)]);
      }
      for (const i of [600n, 601n, 602n]) {
        await c.query({ name: 'insert_item', text: INSERT, values: item(i) });
        itemKeys.add(i);
      }
      // the same names inside a transaction, then a prepared scatter count
      await c.query('BEGIN');
      for (const i of [600n, 601n]) {
        const res = await c.query({ name: 'item_by_id', text: SELECT, values: [i.toString()] });
        check(`prepared inside a transaction, id ${i}`, res.rows.map(values), [item(i)]);
      }
      await c.query('COMMIT');
      for (let k = 0; k < 3; k++) {
        const res = await c.query({
          name: 'count_between', text: `SELECT count(*) FROM ${ITEMS} WHERE id BETWEEN $1 AND $2`, values: ['600', '699'],
        });
        check('prepared scatter count', res.rows, [{ count: '3' }]);
      }
      // rows as arrays
      const res = await c.query({ name: 'item_by_id', text: SELECT, values: ['601'], rowMode: 'array' });
      check('rowMode array', res.rows, [item(601n)]);
    });
  },

  async uuid_keys() {
    const tokens = [];
    for (let k = 1n; k < 25n; k++) tokens.push(uuidOf(k * 0x9e3779b97f4a7c15n));
    tokens.push(uuidOf(0n), uuidOf((1n << 128n) - 1n));
    await withClients(1, async (c) => {
      for (const [n, t] of tokens.entries()) {
        await c.query(`INSERT INTO ${TOKENS} (token, note) VALUES ($1, $2)`, [t, `t${n}`]);
        tokenKeys.add(t);
      }
      for (const [n, t] of tokens.entries()) {
        // upper case: the same uuid value, so the same shard
        const res = await c.query(`SELECT token, note FROM ${TOKENS} WHERE token = $1`, [t.toUpperCase()]);
        check(`note for token ${t}`, res.rows, [{ token: t, note: `t${n}` }]);
      }
      const count = await c.query(`SELECT count(*) FROM ${TOKENS}`);
      check('count(*) of tokens', count.rows, [{ count: String(tokens.length) }]);
    });
  },
};

async function main() {
  const version = require('pg/package.json').version;
  console.log(`node-postgres ${version}, node ${process.version}`);
  let failed = 0;
  for (const [name, step] of Object.entries(steps)) {
    try {
      await step();
      console.log(`ok ${name}`);
    } catch (e) {
      failed += 1;
      console.log(`FAIL ${name}: ${e.constructor.name}${e.code ? ` [${e.code}]` : ''}: ${e.message}`);
      console.error(e.stack);
    }
  }
  const sorted = [...itemKeys].sort((a, b) => (a < b ? -1 : a > b ? 1 : 0));
  console.log(`KEYS ${ITEMS} ${sorted.join(',')}`);
  console.log(`KEYS ${TOKENS} ${[...tokenKeys].sort().join(',')}`);
  console.log(`node-postgres checks: ${Object.keys(steps).length} steps, ${failed} failed`);
  process.exitCode = failed ? 1 : 0;
}

main().catch((e) => {
  console.log(`FAIL: ${e.stack}`);
  process.exitCode = 1;
});
