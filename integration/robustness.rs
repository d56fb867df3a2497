//! Bad input from a client after login: malformed or oversized messages get 08P01 and a
//! disconnect; the proxy and every other client carry on.

use bytes::{BufMut, BytesMut};
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::harness::{Cluster, Proxy};

/// Read one backend message: (tag, body).
pub(crate) async fn read_msg(s: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    let mut head = [0u8; 5];
    s.read_exact(&mut head).await.ok()?;
    let len = i32::from_be_bytes([head[1], head[2], head[3], head[4]]) as usize;
    let mut body = vec![0u8; len - 4];
    s.read_exact(&mut body).await.ok()?;
    Some((head[0], body))
}

/// A raw protocol connection logged in as app/app, positioned after ReadyForQuery.
pub(crate) async fn raw_login(proxy: &Proxy) -> TcpStream {
    let mut s = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut buf = BytesMut::new();
    frontend::startup_message([("user", "app"), ("database", "app")], &mut buf).unwrap();
    s.write_all(&buf).await.unwrap();
    let mut scram = ScramSha256::new(b"app", ChannelBinding::unsupported());
    loop {
        let (tag, body) = read_msg(&mut s).await.expect("login reply");
        let auth = if tag == b'R' {
            i32::from_be_bytes([body[0], body[1], body[2], body[3]])
        } else {
            -1
        };
        match (tag, auth) {
            (b'R', 10) => {
                let mut b = BytesMut::new();
                frontend::sasl_initial_response("SCRAM-SHA-256", scram.message(), &mut b).unwrap();
                s.write_all(&b).await.unwrap();
            }
            (b'R', 11) => {
                scram.update(&body[4..]).unwrap();
                let mut b = BytesMut::new();
                frontend::sasl_response(scram.message(), &mut b).unwrap();
                s.write_all(&b).await.unwrap();
            }
            (b'R', 12) => scram.finish(&body[4..]).unwrap(),
            (b'Z', _) => return s,
            (b'E', _) => panic!("login failed: {}", String::from_utf8_lossy(&body)),
            _ => {}
        }
    }
}

/// Everything the proxy sends until it closes the connection.
pub(crate) async fn until_closed(s: &mut TcpStream) -> Vec<(u8, Vec<u8>)> {
    let mut msgs = Vec::new();
    let read = async {
        while let Some(m) = read_msg(s).await {
            msgs.push(m);
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), read)
        .await
        .expect("proxy must close the connection");
    msgs
}

pub(crate) fn has_code(msgs: &[(u8, Vec<u8>)], code: &str) -> bool {
    let field = format!("C{code}");
    msgs.iter()
        .any(|(t, b)| *t == b'E' && b.windows(field.len()).any(|w| w == field.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_oversized_messages_disconnect_only_their_client() {
    let cluster = Cluster::start(1).await;
    let toml = cluster
        .shardmap_toml("", 2)
        .replace("pool_size = 2", "pool_size = 2\nmax_message_size = 4096");
    let proxy = Proxy::start(&toml).await;
    let bystander = proxy.client().await;
    bystander.batch_execute("BEGIN").await.unwrap();

    // a Bind truncated in the middle of a parameter
    let mut s = raw_login(&proxy).await;
    let mut b = BytesMut::new();
    frontend::parse("", "SELECT $1::int", [], &mut b).unwrap();
    let body: &[u8] = b"\0\0\0\0\0\x01\0\0\0\x08ab";
    b.put_u8(b'B');
    b.put_i32(4 + body.len() as i32);
    b.put_slice(body);
    frontend::sync(&mut b);
    s.write_all(&b).await.unwrap();
    let msgs = until_closed(&mut s).await;
    assert!(has_code(&msgs, "08P01"), "{msgs:?}");

    // a message larger than max_message_size: refused before it is buffered
    let mut s = raw_login(&proxy).await;
    let mut b = BytesMut::new();
    b.put_u8(b'Q');
    b.put_i32(1 << 20);
    s.write_all(&b).await.unwrap();
    let msgs = until_closed(&mut s).await;
    assert!(has_code(&msgs, "08P01"), "{msgs:?}");

    // an unknown message type
    let mut s = raw_login(&proxy).await;
    s.write_all(b"~\0\0\0\x04").await.unwrap();
    let msgs = until_closed(&mut s).await;
    assert!(has_code(&msgs, "08P01"), "{msgs:?}");

    // the other client's transaction is untouched, and new clients are served
    let v: i32 = bystander.query_one("SELECT 7", &[]).await.unwrap().get(0);
    assert_eq!(v, 7);
    bystander.batch_execute("COMMIT").await.unwrap();
    let fresh = proxy.client().await;
    let v: i32 = fresh.query_one("SELECT 8", &[]).await.unwrap().get(0);
    assert_eq!(v, 8);
}

/// Bind (F) of the unnamed statement to the unnamed portal, without parameters.
fn bind_unnamed(b: &mut BytesMut) {
    frontend::bind(
        "",
        "",
        [],
        [],
        |_: (), _| Ok(postgres_protocol::IsNull::No),
        [],
        b,
    )
    .map_err(|_| ())
    .unwrap();
}

/// Send raw messages and collect replies up to and including ReadyForQuery.
async fn exchange(s: &mut TcpStream, msgs: &BytesMut) -> Vec<(u8, Vec<u8>)> {
    s.write_all(msgs).await.unwrap();
    let mut out = Vec::new();
    let read = async {
        while let Some(m) = read_msg(s).await {
            let done = m.0 == b'Z';
            out.push(m);
            if done {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("no ReadyForQuery: the proxy hangs");
    out
}

fn tags(msgs: &[(u8, Vec<u8>)]) -> String {
    msgs.iter().map(|(t, _)| char::from(*t)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_protocol_edge_cases() {
    let cluster = Cluster::start(1).await;
    // one backend connection, so every client reuses the same one
    let proxy = Proxy::start(&cluster.shardmap_toml("", 1)).await;
    proxy
        .client()
        .await
        .batch_execute("CREATE TABLE notes (id int, body text)")
        .await
        .unwrap();

    // An error in a batch that ends with Flush: the proxy, like the server, skips to Sync.
    let mut s = raw_login(&proxy).await;
    let mut b = BytesMut::new();
    frontend::parse("", "SELEC 1", [], &mut b).unwrap();
    bind_unnamed(&mut b);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::flush(&mut b);
    s.write_all(&b).await.unwrap();
    let (tag, _) = read_msg(&mut s).await.unwrap();
    assert_eq!(tag, b'E');
    let mut b = BytesMut::new();
    frontend::parse("", "SELECT 2", [], &mut b).unwrap();
    frontend::execute("", 0, &mut b).unwrap();
    frontend::flush(&mut b);
    frontend::sync(&mut b);
    let replies = exchange(&mut s, &b).await;
    assert_eq!(tags(&replies), "Z", "{replies:?}");
    let mut b = BytesMut::new();
    frontend::query("SELECT 3", &mut b).unwrap();
    let replies = exchange(&mut s, &b).await;
    assert_eq!(tags(&replies), "TDCZ", "{replies:?}");

    // BEGIN / COMMIT through the extended protocol, answered by the proxy.
    let mut b = BytesMut::new();
    frontend::parse("", "BEGIN", [], &mut b).unwrap();
    bind_unnamed(&mut b);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    let replies = exchange(&mut s, &b).await;
    assert_eq!(tags(&replies), "12CZ", "{replies:?}");
    assert_eq!(replies.last().unwrap().1, b"T");

    // A client that vanishes between Flush and Sync: its write must not be committed by
    // the next user of the connection.
    let mut b = BytesMut::new();
    frontend::query("COMMIT", &mut b).unwrap();
    exchange(&mut s, &b).await;
    let mut b = BytesMut::new();
    frontend::parse("", "INSERT INTO notes VALUES (1, 'lost')", [], &mut b).unwrap();
    bind_unnamed(&mut b);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::flush(&mut b);
    s.write_all(&b).await.unwrap();
    let mut seen = Vec::new();
    while let Some(m) = read_msg(&mut s).await {
        let done = m.0 == b'C';
        seen.push(m.0);
        if done {
            break;
        }
    }
    assert_eq!(seen, b"12C");
    drop(s);
    let client = proxy.client().await;
    let n: i64 = client
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "an unsynced batch of a vanished client was committed");

    // COPY FROM STDIN through the extended protocol (tokio-postgres copy_in).
    use futures_util::SinkExt;
    let sink = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        client.copy_in::<_, bytes::Bytes>("COPY notes FROM STDIN"),
    )
    .await
    .expect("copy_in hangs")
    .unwrap();
    futures_util::pin_mut!(sink);
    sink.send(bytes::Bytes::from_static(b"1\tone\n2\ttwo\n"))
        .await
        .unwrap();
    let rows = tokio::time::timeout(std::time::Duration::from_secs(10), sink.finish())
        .await
        .expect("COPY through the extended protocol hangs")
        .unwrap();
    assert_eq!(rows, 2);
    let n: i64 = client
        .query_one("SELECT count(*) FROM notes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 2);
}

/// Messages received within `ms` milliseconds.
async fn drain_for(s: &mut TcpStream, ms: u64) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    let read = async {
        while let Some(m) = read_msg(s).await {
            out.push(m);
        }
    };
    let _ = tokio::time::timeout(std::time::Duration::from_millis(ms), read).await;
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn multi_shard_batches_keep_protocol_order_and_foreign_descriptions() {
    let cluster = Cluster::start(2).await;
    let extra = format!(
        "{}\n[[tables]]\nname = \"kinds\"\nreplicated = true\n",
        crate::harness::ACCOUNTS
    );
    let proxy = Proxy::start(&cluster.shardmap_toml(&extra, 2)).await;
    let c = proxy.client().await;
    c.batch_execute(
        "CREATE TABLE accounts (aid bigint PRIMARY KEY, kind int NOT NULL); \
         CREATE TABLE kinds (id int PRIMARY KEY, label text)",
    )
    .await
    .unwrap();
    for aid in 1..=20i64 {
        c.batch_execute(&format!("INSERT INTO accounts VALUES ({aid}, {})", aid % 3))
            .await
            .unwrap();
    }

    // A reference-table write ended by Flush: no ReadyForQuery before Sync (the write
    // on every shard is refused until Sync), exactly one after it, nothing written.
    let mut s = raw_login(&proxy).await;
    let mut b = BytesMut::new();
    frontend::parse("", "INSERT INTO kinds VALUES (7, 'x')", [], &mut b).unwrap();
    bind_unnamed(&mut b);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::flush(&mut b);
    s.write_all(&b).await.unwrap();
    let before_sync = drain_for(&mut s, 1000).await;
    let mut b = BytesMut::new();
    frontend::sync(&mut b);
    s.write_all(&b).await.unwrap();
    let after_sync = drain_for(&mut s, 1000).await;
    assert_eq!(
        before_sync.iter().filter(|m| m.0 == b'Z').count(),
        0,
        "ReadyForQuery in answer to Flush: {}",
        tags(&before_sync)
    );
    assert_eq!(
        after_sync.iter().filter(|m| m.0 == b'Z').count(),
        1,
        "{}",
        tags(&after_sync)
    );
    let n: i64 = c
        .query_one("SELECT count(*) FROM kinds", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0);

    // A batch with a merged statement and the Describe of another statement: refused
    // as a whole rather than describing the other statement with the merge's columns;
    // the other statement, described alone, is its own.
    let mut s = raw_login(&proxy).await;
    let mut b = BytesMut::new();
    frontend::parse("other", "SELECT $1::int AS just_one", [], &mut b).unwrap();
    frontend::describe(b'S', "other", &mut b).unwrap();
    frontend::parse(
        "",
        "SELECT kind, avg(aid) FROM accounts GROUP BY kind",
        [],
        &mut b,
    )
    .unwrap();
    bind_unnamed(&mut b);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    let replies = exchange(&mut s, &b).await;
    assert_eq!(tags(&replies), "11EZ", "{replies:?}");
    let mut b = BytesMut::new();
    frontend::describe(b'S', "other", &mut b).unwrap();
    frontend::sync(&mut b);
    let replies = exchange(&mut s, &b).await;
    assert_eq!(tags(&replies), "tTZ");
    let t = &replies[0].1;
    assert_eq!(i16::from_be_bytes([t[0], t[1]]), 1, "one parameter");
    assert!(String::from_utf8_lossy(&replies[1].1).contains("just_one"));
    // without the foreign Describe the merged statement runs: 3 groups
    let mut b = BytesMut::new();
    frontend::parse(
        "",
        "SELECT kind, avg(aid) FROM accounts GROUP BY kind",
        [],
        &mut b,
    )
    .unwrap();
    bind_unnamed(&mut b);
    frontend::execute("", 0, &mut b).unwrap();
    frontend::sync(&mut b);
    let replies = exchange(&mut s, &b).await;
    assert_eq!(tags(&replies), "12DDDCZ");

    // a named statement whose Parse failed on the shards does not exist afterwards,
    // for merged, streamed and reference-write batches alike
    for (i, sql) in [
        "SELECT kind, avg(nope) FROM accounts GROUP BY kind",
        "SELECT nope FROM accounts",
        "INSERT INTO kinds VALUES (nope)",
    ]
    .into_iter()
    .enumerate()
    {
        let name = format!("s{i}");
        let mut b = BytesMut::new();
        frontend::parse(&name, sql, [], &mut b).unwrap();
        frontend::bind(
            "",
            &name,
            [],
            [],
            |_: (), _| Ok(postgres_protocol::IsNull::No),
            [],
            &mut b,
        )
        .map_err(|_| ())
        .unwrap();
        frontend::execute("", 0, &mut b).unwrap();
        frontend::sync(&mut b);
        let replies = exchange(&mut s, &b).await;
        assert!(tags(&replies).ends_with("EZ"), "{sql}: {}", tags(&replies));
        let mut b = BytesMut::new();
        frontend::parse(&name, "SELECT 1", [], &mut b).unwrap();
        frontend::sync(&mut b);
        let replies = exchange(&mut s, &b).await;
        assert_eq!(tags(&replies), "1Z", "{sql}: re-Parse of {name}");
    }
}

/// Clients that stall before logging in are disconnected after `login_timeout_ms`: one
/// that never sends its startup packet (closed without a word, as Postgres does) and one
/// that stops in the middle of SCRAM (57014). Their `max_clients` places are freed: a
/// third client, queued behind them, logs in.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_stalled_in_login_are_dropped_and_free_their_place() {
    let cluster = Cluster::start(1).await;
    let toml = cluster.shardmap_toml("", 2).replace(
        "pool_size = 2",
        "pool_size = 2\nmax_clients = 2\nlogin_timeout_ms = 500",
    );
    let proxy = Proxy::start(&toml).await;
    let started = std::time::Instant::now();
    let mut silent = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut halfway = TcpStream::connect(proxy.addr()).await.unwrap();
    let mut b = BytesMut::new();
    frontend::startup_message([("user", "app"), ("database", "app")], &mut b).unwrap();
    halfway.write_all(&b).await.unwrap();
    let (tag, _) = read_msg(&mut halfway)
        .await
        .expect("authentication request");
    assert_eq!(tag, b'R');

    // both places are taken: this one waits to be accepted
    let third = tokio::spawn({
        let url = proxy.url("app", "app");
        async move {
            let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(conn);
            let row = client.query_one("SELECT 41 + 1", &[]).await?;
            Ok::<i32, tokio_postgres::Error>(row.get(0))
        }
    });

    let said = until_closed(&mut silent).await;
    assert!(said.is_empty(), "{said:?}");
    let said = until_closed(&mut halfway).await;
    assert!(has_code(&said, "57014"), "{said:?}");
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(450),
        "closed before the timeout: {:?}",
        started.elapsed()
    );
    let answer = tokio::time::timeout(std::time::Duration::from_secs(10), third)
        .await
        .expect("the queued client is served once the stalled ones are gone")
        .unwrap()
        .expect("the queued client logs in");
    assert_eq!(answer, 42);
}
