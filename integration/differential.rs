//! Differential test: every statement of [`crate::corpus`] runs through the proxy (three
//! shards) and on one plain Postgres holding the same rows; the answers must be identical,
//! or the proxy must refuse (0A000) where the corpus allows it. A different answer is the
//! worst bug a sharding proxy can have, so every mismatch is collected and reported at
//! once, with the SQL, the protocol and both answers.
//!
//! Both protocols are compared:
//! - simple Query, through a minimal raw protocol client ([`RawClient`]): column names,
//!   column type OIDs, text values and the full CommandComplete tag (`INSERT 0 3`,
//!   `SELECT 7`). tokio-postgres exposes only the count of a tag, hence the raw client;
//!   it speaks SCRAM-SHA-256 (the proxy always asks for it) and trust (the plain server).
//! - extended (Parse/Describe/Bind/Execute, binary results) through tokio-postgres:
//!   column names, type OIDs, the raw binary bytes of every value, and the affected-row
//!   count.

use std::fmt::Write as _;

use bytes::BytesMut;
use futures_util::StreamExt;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_postgres::Client;
use tokio_postgres::fallible_iterator::FallibleIterator;
use tokio_postgres::types::{FromSql, ToSql, Type};

use crate::corpus::{Expect, Q, READS, WRITES};
use crate::harness::{APP_DB, APP_USER, Cluster, PgServer, Proxy};

/// Rows in `items` (ids 1..=ITEMS).
const ITEMS: i64 = 600;
/// Rows in `orders`.
const ORDERS: i64 = 900;

const TABLES: &str = r#"
[[tables]]
name = "items"
key = "id"
type = "bigint"

[[tables]]
name = "orders"
key = "item_id"
type = "bigint"

[[tables]]
name = "kinds"
replicated = true
"#;

const SCHEMA: [&str; 3] = [
    "CREATE TABLE items (id bigint PRIMARY KEY, grp int, name text, code char(4), \
     price numeric(10,2), qty int, big bigint, score float8, flag bool, day date, \
     ts timestamp, tstz timestamptz, u uuid, small smallint)",
    "CREATE TABLE orders (item_id bigint NOT NULL, n int, amount numeric(12,3))",
    "CREATE TABLE kinds (id int PRIMARY KEY, label text)",
];

const ITEM_COLUMNS: &str = "INSERT INTO items (id, grp, name, code, price, qty, big, score, flag, day, ts, tstz, u, small)";

// ---------------------------------------------------------------------------------------
// data: deterministic arithmetic on the id, many NULLs, edge values of every type

fn lit(v: Option<String>) -> String {
    match v {
        Some(s) => format!("'{s}'"),
        None => "NULL".to_owned(),
    }
}

fn when(cond: bool, f: impl FnOnce() -> String) -> Option<String> {
    cond.then(f)
}

/// The VALUES tuple of item `id`.
fn item_values(id: i64) -> String {
    const NAMES: [&str; 10] = [
        "apple", "Apple", "banana", "_x", "Zed", "ärger", "a b", "ab", "", "b",
    ];
    const CODES: [&str; 7] = ["ab", "ab  ", "x", "abcd", " a", "Ab", "zz"];
    let grp = when(id % 17 != 0, || (id % 5).to_string());
    let name = when(id % 11 != 0, || {
        let base = NAMES[(id % 10) as usize];
        if id % 3 == 0 {
            base.to_owned()
        } else {
            format!("{base}{}", (id * 7) % 13)
        }
    });
    let code = when(id % 13 != 0, || CODES[(id % 7) as usize].to_owned());
    let price = when(id % 7 != 0, || {
        let cents = (id * 7919) % 100_000 - 30_000;
        let sign = if cents < 0 { "-" } else { "" };
        format!("{sign}{}.{:02}", cents.abs() / 100, cents.abs() % 100)
    });
    let qty = when(id % 9 != 0, || ((id * 31) % 50 - 10).to_string());
    let big = when(id % 10 != 0, || match id {
        1 => i64::MAX.to_string(),
        2 => i64::MIN.to_string(),
        _ => {
            let v = id.wrapping_mul(2_654_435_761) % 4_000_000_000_000_000_000;
            (if id % 2 == 1 { -v } else { v }).to_string()
        }
    });
    let score = when(id % 8 != 0, || match id % 50 {
        1 => "NaN".to_owned(),
        2 => "Infinity".to_owned(),
        3 => "-Infinity".to_owned(),
        4 => "-0".to_owned(),
        5 => "0".to_owned(),
        6 => "1e300".to_owned(),
        7 => "1e-300".to_owned(),
        _ => format!("{}", ((id * 13) % 1000) as f64 / 7.0),
    });
    let flag = when(id % 6 != 0, || (id % 3 == 0).to_string());
    let day = when(id % 12 != 0, || match id % 100 {
        7 => "infinity".to_owned(),
        8 => "-infinity".to_owned(),
        _ => format!(
            "{:04}-{:02}-{:02}",
            2000 + id % 30,
            1 + (id * 7) % 12,
            1 + (id * 11) % 28
        ),
    });
    let stamp = |id: i64| {
        format!(
            "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
            1999 + (id * 3) % 25,
            1 + id % 12,
            1 + (id * 5) % 28,
            (id * 7) % 24,
            (id * 13) % 60,
            (id * 17) % 60,
            (id * 7919) % 1_000_000
        )
    };
    let ts = when(id % 14 != 0, || stamp(id));
    let tstz = when(id % 15 != 1, || {
        let offset = (id % 18) - 8;
        let sign = if offset < 0 { '-' } else { '+' };
        format!("{}{sign}{:02}:30", stamp(id * 3 + 1), offset.abs())
    });
    let u = when(id % 9 != 4, || {
        let x = (id as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835);
        let h = format!("{x:032x}");
        format!(
            "{}-{}-{}-{}-{}",
            &h[0..8],
            &h[8..12],
            &h[12..16],
            &h[16..20],
            &h[20..32]
        )
    });
    let small = when(id % 15 != 0, || ((id * 7) % 200 - 100).to_string());
    let rest: Vec<String> = [
        grp, name, code, price, qty, big, score, flag, day, ts, tstz, u, small,
    ]
    .into_iter()
    .map(lit)
    .collect();
    format!("({id}, {})", rest.join(", "))
}

/// The VALUES tuple of order `k`.
fn order_values(k: i64) -> String {
    let amount = when(k % 10 != 0, || {
        format!("{}.{:03}", (k * 37) % 200, (k * 13) % 1000)
    });
    format!("({}, {}, {})", k % ITEMS + 1, k % 4, lit(amount))
}

const KINDS: &str = "INSERT INTO kinds (id, label) VALUES (0, 'zero'), (1, 'one'), (2, 'two'), (3, 'three'), (4, 'four'), (9, 'nine')";

/// Schema and rows through the proxy (DDL reaches every shard; each INSERT names one
/// key, so it is routed) and on the plain server (one multi-row INSERT per table).
async fn load(proxy: &Client, plain: &Client) {
    for ddl in SCHEMA {
        proxy
            .batch_execute(ddl)
            .await
            .unwrap_or_else(|e| panic!("{ddl} through the proxy: {e}"));
        plain.batch_execute(ddl).await.unwrap();
    }
    let items: Vec<String> = (1..=ITEMS).map(item_values).collect();
    let orders: Vec<String> = (1..=ORDERS).map(order_values).collect();
    for row in &items {
        let sql = format!("{ITEM_COLUMNS} VALUES {row}");
        proxy
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} through the proxy: {e}"));
    }
    for row in &orders {
        let sql = format!("INSERT INTO orders (item_id, n, amount) VALUES {row}");
        proxy
            .batch_execute(&sql)
            .await
            .unwrap_or_else(|e| panic!("{sql} through the proxy: {e}"));
    }
    proxy.batch_execute(KINDS).await.unwrap();
    plain
        .batch_execute(&format!("{ITEM_COLUMNS} VALUES {}", items.join(", ")))
        .await
        .unwrap_or_else(|e| panic!("load items on the plain server: {e}"));
    plain
        .batch_execute(&format!(
            "INSERT INTO orders (item_id, n, amount) VALUES {}",
            orders.join(", ")
        ))
        .await
        .unwrap();
    plain.batch_execute(KINDS).await.unwrap();
    for sql in ["ANALYZE items", "ANALYZE orders", "ANALYZE kinds"] {
        plain.batch_execute(sql).await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------
// answers

/// One statement's answer, reduced to what is compared.
#[derive(Debug, Clone, PartialEq)]
struct Answer {
    columns: Vec<String>,
    types: Vec<u32>,
    /// text (simple protocol) or binary (extended protocol) values
    rows: Vec<Vec<Option<Vec<u8>>>>,
    /// simple: the CommandComplete tags; extended: the affected-row count
    tag: String,
}

/// A refusal or error: SQLSTATE and message.
#[derive(Debug, Clone, PartialEq)]
struct Failure {
    code: String,
    message: String,
}

type Outcome = Result<Answer, Failure>;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Protocol {
    Simple,
    Extended,
}

// ---------------------------------------------------------------------------------------
// simple protocol: a raw client, to see the full CommandComplete tag

/// A minimal frontend for the simple Query protocol.
struct RawClient {
    stream: TcpStream,
    buf: BytesMut,
}

impl RawClient {
    /// Connect and authenticate (trust or SCRAM-SHA-256) as `user`.
    async fn connect(port: u16, user: &str, password: &str) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap_or_else(|e| panic!("raw connect to port {port}: {e}"));
        let mut client = RawClient {
            stream,
            buf: BytesMut::new(),
        };
        let mut out = BytesMut::new();
        frontend::startup_message(
            [
                ("user", user),
                ("database", APP_DB),
                ("client_encoding", "UTF8"),
            ],
            &mut out,
        )
        .unwrap();
        client.send(&out).await;
        let mut scram: Option<ScramSha256> = None;
        loop {
            match client.next().await {
                Message::AuthenticationOk => {}
                Message::AuthenticationSasl(_) => {
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    let mut out = BytesMut::new();
                    frontend::sasl_initial_response("SCRAM-SHA-256", s.message(), &mut out)
                        .unwrap();
                    client.send(&out).await;
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(body) => {
                    let s = scram.as_mut().expect("SASL continue before SASL start");
                    s.update(body.data()).unwrap();
                    let mut out = BytesMut::new();
                    frontend::sasl_response(s.message(), &mut out).unwrap();
                    client.send(&out).await;
                }
                Message::AuthenticationSaslFinal(body) => {
                    let s = scram.as_mut().expect("SASL final before SASL start");
                    s.finish(body.data()).unwrap();
                }
                Message::ErrorResponse(body) => {
                    panic!("raw login refused: {:?}", error_of(body.fields()))
                }
                Message::ReadyForQuery(_) => return client,
                _ => {}
            }
        }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next backend message.
    async fn next(&mut self) -> Message {
        loop {
            if let Some(m) = Message::parse(&mut self.buf).unwrap() {
                return m;
            }
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "raw client: connection closed");
        }
    }

    /// Run `sql` as one Query message; read everything up to ReadyForQuery.
    async fn query(&mut self, sql: &str) -> Outcome {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await;
        let mut answer = Answer {
            columns: Vec::new(),
            types: Vec::new(),
            rows: Vec::new(),
            tag: String::new(),
        };
        let mut failure = None;
        let mut tags = Vec::new();
        loop {
            match self.next().await {
                Message::RowDescription(body) => {
                    let mut fields = body.fields();
                    while let Some(f) = fields.next().unwrap() {
                        answer.columns.push(f.name().to_owned());
                        answer.types.push(f.type_oid());
                    }
                }
                Message::DataRow(body) => {
                    let buf = body.buffer();
                    let mut ranges = body.ranges();
                    let mut row = Vec::new();
                    while let Some(r) = ranges.next().unwrap() {
                        row.push(r.map(|r| buf[r].to_vec()));
                    }
                    answer.rows.push(row);
                }
                Message::CommandComplete(body) => tags.push(body.tag().unwrap().to_owned()),
                Message::EmptyQueryResponse => tags.push("(empty)".to_owned()),
                Message::ErrorResponse(body) => {
                    failure.get_or_insert(error_of(body.fields()));
                }
                Message::ReadyForQuery(_) => break,
                _ => {}
            }
        }
        answer.tag = tags.join("; ");
        match failure {
            Some(f) => Err(f),
            None => Ok(answer),
        }
    }
}

fn error_of(mut fields: postgres_protocol::message::backend::ErrorFields<'_>) -> Failure {
    let mut f = Failure {
        code: String::new(),
        message: String::new(),
    };
    while let Ok(Some(field)) = fields.next() {
        match field.type_() {
            b'C' => f.code = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            b'M' => f.message = String::from_utf8_lossy(field.value_bytes()).into_owned(),
            _ => {}
        }
    }
    f
}

// ---------------------------------------------------------------------------------------
// extended protocol: tokio-postgres, binary results read as raw bytes

/// Any value, as the bytes the server sent.
struct Raw(Vec<u8>);

impl<'a> FromSql<'a> for Raw {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        Ok(Raw(raw.to_vec()))
    }

    fn accepts(_: &Type) -> bool {
        true
    }
}

async fn extended(client: &Client, sql: &str) -> Outcome {
    let failure = |e: tokio_postgres::Error| Failure {
        code: e
            .code()
            .map_or_else(|| "(no sqlstate)".to_owned(), |c| c.code().to_owned()),
        message: e
            .as_db_error()
            .map_or_else(|| e.to_string(), |d| d.message().to_owned()),
    };
    // Parse + Describe: the columns, even when no row comes back
    let statement = client.prepare(sql).await.map_err(failure)?;
    let mut answer = Answer {
        columns: statement
            .columns()
            .iter()
            .map(|c| c.name().to_owned())
            .collect(),
        types: statement
            .columns()
            .iter()
            .map(|c| c.type_().oid())
            .collect(),
        rows: Vec::new(),
        tag: String::new(),
    };
    let none: [&(dyn ToSql + Sync); 0] = [];
    let stream = client.query_raw(&statement, none).await.map_err(failure)?;
    let mut stream = std::pin::pin!(stream);
    while let Some(row) = stream.next().await {
        let row = row.map_err(failure)?;
        let values = (0..row.len())
            .map(|i| {
                row.try_get::<_, Option<Raw>>(i)
                    .map(|v| v.map(|r| r.0))
                    .map_err(failure)
            })
            .collect::<Result<Vec<_>, _>>()?;
        answer.rows.push(values);
    }
    answer.tag = format!("{:?} rows affected", stream.rows_affected());
    Ok(answer)
}

// ---------------------------------------------------------------------------------------
// comparison

/// Both sides' connections for one protocol.
struct Side {
    raw: RawClient,
    client: Client,
}

impl Side {
    async fn run(&mut self, protocol: Protocol, sql: &str) -> Outcome {
        match protocol {
            Protocol::Simple => self.raw.query(sql).await,
            Protocol::Extended => extended(&self.client, sql).await,
        }
    }
}

fn show_value(v: &Option<Vec<u8>>, protocol: Protocol) -> String {
    match v {
        None => "NULL".to_owned(),
        Some(b) if protocol == Protocol::Simple => format!("{:?}", String::from_utf8_lossy(b)),
        Some(b) => {
            let mut s = String::from("\\x");
            for byte in b.iter().take(24) {
                let _ = write!(s, "{byte:02x}");
            }
            if b.len() > 24 {
                s.push('…');
            }
            s
        }
    }
}

fn show(outcome: &Outcome, protocol: Protocol) -> String {
    match outcome {
        Err(f) => format!("ERROR {}: {}", f.code, f.message),
        Ok(a) => {
            let mut s = format!(
                "columns {:?} types {:?}, {} rows, tag {:?}",
                a.columns,
                a.types,
                a.rows.len(),
                a.tag
            );
            for row in a.rows.iter().take(6) {
                let cells: Vec<String> = row.iter().map(|v| show_value(v, protocol)).collect();
                let _ = write!(s, "\n        ({})", cells.join(", "));
            }
            if a.rows.len() > 6 {
                s.push_str("\n        …");
            }
            s
        }
    }
}

fn sorted(rows: &[Vec<Option<Vec<u8>>>]) -> Vec<Vec<Option<Vec<u8>>>> {
    let mut rows = rows.to_vec();
    rows.sort();
    rows
}

/// Why `proxy` is not the answer `expect` asks for, given the plain server's `plain`.
fn differs(expect: Expect, plain: &Answer, proxy: &Answer) -> Option<String> {
    if plain.columns != proxy.columns {
        return Some("column names differ".into());
    }
    if plain.types != proxy.types {
        return Some("column types differ".into());
    }
    if plain.tag != proxy.tag {
        return Some("command tags differ".into());
    }
    match expect {
        Expect::Rows if sorted(&plain.rows) != sorted(&proxy.rows) => {
            Some("rows differ (as multisets)".into())
        }
        Expect::Ordered if plain.rows != proxy.rows => Some("rows or their order differ".into()),
        Expect::OrderedBy(n) => {
            let keys = |rows: &[Vec<Option<Vec<u8>>>]| -> Vec<Vec<Option<Vec<u8>>>> {
                rows.iter().map(|r| r[..n.min(r.len())].to_vec()).collect()
            };
            if keys(&plain.rows) != keys(&proxy.rows) {
                Some(format!("order of the first {n} columns differs"))
            } else if sorted(&plain.rows) != sorted(&proxy.rows) {
                Some("rows differ (as multisets)".into())
            } else {
                None
            }
        }
        Expect::SameCount if plain.rows.len() != proxy.rows.len() => {
            Some("row counts differ".into())
        }
        _ => None,
    }
}

/// Tallies for the summary.
#[derive(Debug, Default)]
struct Tally {
    rows: usize,
    ordered: usize,
    ordered_by: usize,
    same_count: usize,
    refused: usize,
    fails: usize,
    /// Later entries answered identically (candidates to flip)
    later_identical: Vec<String>,
    /// Later entries refused with 0A000, with the proxy's message
    later_refused: Vec<String>,
    failures: Vec<String>,
}

impl Tally {
    fn pass(&mut self, expect: Expect) {
        match expect {
            Expect::Rows => self.rows += 1,
            Expect::Ordered => self.ordered += 1,
            Expect::OrderedBy(_) => self.ordered_by += 1,
            Expect::SameCount => self.same_count += 1,
            Expect::Refused(_) => self.refused += 1,
            Expect::Fails(_) => self.fails += 1,
            Expect::Later(_) => {}
        }
    }
}

/// Run one statement on both sides and check the proxy's answer. Writes run on the plain
/// server only when the proxy did not refuse, so the data stays the same on both.
async fn check(
    q: &Q,
    protocol: Protocol,
    write: bool,
    plain: &mut Side,
    proxy: &mut Side,
    tally: &mut Tally,
) {
    let got = proxy.run(protocol, q.sql).await;
    let refused_as_allowed = match (&got, q.expect) {
        (Err(f), Expect::Refused(code)) => f.code == code,
        (Err(f), Expect::Later(_)) => f.code == "0A000",
        (Err(f), Expect::Fails(code)) => f.code == code,
        _ => false,
    };
    let want = if write && got.is_err() && !matches!(q.expect, Expect::Fails(_)) {
        None
    } else {
        Some(plain.run(protocol, q.sql).await)
    };
    let mut fail = |why: String| {
        tally.failures.push(format!(
            "[{protocol:?}] {why}\n    SQL:      {}\n    expected: {:?}\n    postgres: {}\n    pgshard:  {}",
            q.sql,
            q.expect,
            want.as_ref()
                .map_or_else(|| "(not run)".to_owned(), |w| show(w, protocol)),
            show(&got, protocol),
        ));
    };
    if let (Some(Err(f)), Expect::Fails(code)) = (&want, q.expect) {
        if f.code != code || !refused_as_allowed {
            fail(format!("both sides must fail with SQLSTATE {code}"));
        } else {
            tally.fails += 1;
        }
    } else if let Some(Err(f)) = &want {
        fail(format!(
            "the plain server rejects this statement ({}): fix the corpus",
            f.code
        ));
    } else if refused_as_allowed {
        match q.expect {
            Expect::Later(_) => {
                let message = match &got {
                    Err(f) => f.message.clone(),
                    Ok(_) => String::new(),
                };
                tally
                    .later_refused
                    .push(format!("[{protocol:?}] {}  -- {message}", q.sql))
            }
            e => tally.pass(e),
        }
    } else {
        match (&got, &want, q.expect) {
            (Err(_), _, Expect::Refused(code)) => {
                fail(format!("refused, but not with SQLSTATE {code}"))
            }
            (Ok(_), _, Expect::Refused(_)) => fail("answered, but must be refused".into()),
            (Err(_), _, _) => fail("refused or failed, but must be answered".into()),
            (Ok(p), Some(Ok(w)), e) => {
                let inner = match e {
                    Expect::Later(inner) => *inner,
                    e => e,
                };
                match differs(inner, w, p) {
                    Some(why) => fail(format!("WRONG ANSWER: {why}")),
                    None if matches!(e, Expect::Later(_)) => tally
                        .later_identical
                        .push(format!("[{protocol:?}] {}", q.sql)),
                    None => tally.pass(e),
                }
            }
            (Ok(_), _, _) => fail("plain server not run".into()),
        }
    }
    // after a refusal or error the session must still work
    if got.is_err() {
        match proxy.run(protocol, "SELECT 1 AS one").await {
            Ok(a) if a.rows.len() == 1 => {}
            other => tally.failures.push(format!(
                "[{protocol:?}] the session does not work after an error\n    SQL:      {}\n    SELECT 1: {}",
                q.sql,
                show(&other, protocol)
            )),
        }
    }
}

async fn sides(cluster_proxy: &Proxy, plain: &PgServer) -> (Side, Side) {
    let proxy_side = Side {
        raw: RawClient::connect(cluster_proxy.addr().port(), APP_USER, APP_USER).await,
        client: cluster_proxy.client().await,
    };
    let plain_side = Side {
        raw: RawClient::connect(plain.port(), "postgres", "").await,
        client: plain.client(APP_DB).await,
    };
    (plain_side, proxy_side)
}

/// Three shards behind the proxy and one plain server, loaded with the same rows.
async fn setup() -> (Cluster, Proxy, PgServer) {
    let (cluster, plain) = tokio::join!(Cluster::start(3), PgServer::start());
    plain
        .client("postgres")
        .await
        .batch_execute(&format!("CREATE DATABASE {APP_DB}"))
        .await
        .unwrap();
    let toml = cluster
        .shardmap_toml(TABLES, 4)
        .replace("[sharding]", "[sharding]\nbroadcast_writes = true");
    let proxy = Proxy::start(&toml).await;
    load(&proxy.client().await, &plain.client(APP_DB).await).await;
    (cluster, proxy, plain)
}

const TABLE_CHECKS: [Q; 3] = [
    Q {
        sql: "SELECT * FROM items",
        expect: Expect::Rows,
    },
    Q {
        sql: "SELECT * FROM orders",
        expect: Expect::Rows,
    },
    Q {
        sql: "SELECT * FROM kinds",
        expect: Expect::Rows,
    },
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_answers_like_one_postgres_or_refuses() {
    let started = std::time::Instant::now();
    let (_cluster, proxy, plain_server) = setup().await;
    let loaded = started.elapsed();
    let (mut plain, mut through) = sides(&proxy, &plain_server).await;
    let mut tally = Tally::default();
    for protocol in [Protocol::Simple, Protocol::Extended] {
        for q in READS {
            check(q, protocol, false, &mut plain, &mut through, &mut tally).await;
        }
    }
    // writes: once per protocol; the sequence restores the data it changes
    for protocol in [Protocol::Simple, Protocol::Extended] {
        for q in WRITES {
            check(q, protocol, true, &mut plain, &mut through, &mut tally).await;
        }
        for q in &TABLE_CHECKS {
            check(q, protocol, false, &mut plain, &mut through, &mut tally).await;
        }
    }
    let summary = format!(
        "differential: {} statements x 2 protocols in {:?} (setup {loaded:?}); passed: \
         Rows {}, Ordered {}, OrderedBy {}, SameCount {}, Refused {}, Fails {}; Later answered \
         identically {}, Later refused (0A000) {}; failures {}",
        READS.len() + WRITES.len() + TABLE_CHECKS.len(),
        started.elapsed(),
        tally.rows,
        tally.ordered,
        tally.ordered_by,
        tally.same_count,
        tally.refused,
        tally.fails,
        tally.later_identical.len(),
        tally.later_refused.len(),
        tally.failures.len()
    );
    println!("{summary}");
    println!(
        "Later, answered identically:\n  {}",
        tally.later_identical.join("\n  ")
    );
    println!(
        "Later, refused (0A000):\n  {}",
        tally.later_refused.join("\n  ")
    );
    assert!(
        tally.failures.is_empty(),
        "{summary}\n\n{}",
        tally.failures.join("\n\n")
    );
}

#[test]
fn corpus_is_large_enough() {
    let all = READS.len() + WRITES.len();
    let not_later = READS
        .iter()
        .chain(WRITES)
        .filter(|q| !matches!(q.expect, Expect::Later(_)))
        .count();
    println!("corpus: {all} statements, {not_later} expected to be answered or refused today");
    // at least 150 statements must be answered exactly (or refused by design) today
    assert!(
        not_later >= 150,
        "only {not_later} of {all} statements have a firm expectation"
    );
    let mut seen = std::collections::HashSet::new();
    for q in READS.iter().chain(WRITES) {
        assert!(
            seen.insert(q.sql)
                || q.sql.starts_with("UPDATE items SET flag")
                || q.sql.contains("DO NOTHING"),
            "duplicate: {}",
            q.sql
        );
    }
}

#[test]
fn comparison_sees_order_multiset_and_shape() {
    let v = |s: &str| Some(s.as_bytes().to_vec());
    let answer = |rows: Vec<Vec<Option<Vec<u8>>>>| Answer {
        columns: vec!["k".into(), "v".into()],
        types: vec![23, 25],
        tag: format!("SELECT {}", rows.len()),
        rows,
    };
    let base = answer(vec![
        vec![v("1"), v("a")],
        vec![v("1"), v("b")],
        vec![v("2"), None],
    ]);
    let ties_swapped = answer(vec![
        vec![v("1"), v("b")],
        vec![v("1"), v("a")],
        vec![v("2"), None],
    ]);
    let keys_swapped = answer(vec![
        vec![v("2"), None],
        vec![v("1"), v("a")],
        vec![v("1"), v("b")],
    ]);
    let other = answer(vec![
        vec![v("1"), v("a")],
        vec![v("1"), v("a")],
        vec![v("2"), None],
    ]);
    assert_eq!(differs(Expect::Rows, &base, &keys_swapped), None);
    assert!(differs(Expect::Rows, &base, &other).is_some());
    assert!(differs(Expect::Ordered, &base, &ties_swapped).is_some());
    assert_eq!(differs(Expect::OrderedBy(1), &base, &ties_swapped), None);
    assert!(differs(Expect::OrderedBy(1), &base, &keys_swapped).is_some());
    assert!(differs(Expect::OrderedBy(1), &base, &other).is_some());
    assert_eq!(differs(Expect::SameCount, &base, &other), None);
    let fewer = answer(vec![vec![v("1"), v("a")]]);
    assert!(differs(Expect::SameCount, &base, &fewer).is_some());
    let mut renamed = base.clone();
    renamed.columns[1] = "w".into();
    assert!(differs(Expect::Rows, &base, &renamed).is_some());
    let mut retyped = base.clone();
    retyped.types[0] = 20;
    assert!(differs(Expect::Rows, &base, &retyped).is_some());
    let mut retagged = base.clone();
    retagged.tag = "SELECT 4".into();
    assert!(differs(Expect::Rows, &base, &retagged).is_some());
}
