//! TLS: clients over TLS (tokio-postgres with rustls, psql with libpq), `require_tls`,
//! and TLS from the proxy to shards that run with `ssl = on`. Certificates are made
//! here: a test CA, a server certificate for localhost / 127.0.0.1 signed by it, and an
//! unrelated CA that trusts nothing of ours.

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::ClientConfig;
use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use crate::harness::{ACCOUNTS, APP_DB, APP_USER, Cluster, PgServer, Proxy};

/// Certificate files in a temp dir.
struct Pki {
    dir: tempfile::TempDir,
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().expect("temp dir");
        let ca = test_ca("pgshard test CA");
        let other = test_ca("unrelated CA");
        let key = KeyPair::generate().expect("server key");
        let mut params =
            CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .expect("server params");
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        let cert = params.signed_by(&key, &ca).expect("sign server cert");
        let write = |name: &str, text: String| {
            std::fs::write(dir.path().join(name), text).expect("write certificate file");
        };
        write("ca.crt", ca.pem());
        write("other-ca.crt", other.pem());
        write("server.crt", cert.pem());
        write("server.key", key.serialize_pem());
        Pki { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// `[tls]` accepting clients with the server certificate, plus `extra` lines.
    fn section(&self, extra: &str) -> String {
        format!(
            "\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n{extra}",
            self.path("server.crt").display(),
            self.path("server.key").display()
        )
    }

    /// A client trusting the CA file `ca` (hostname checked).
    fn client_config(&self, ca: &str) -> ClientConfig {
        (*pgshard::tls::verify_full_config(&self.path(ca)).expect("client config")).clone()
    }
}

fn test_ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().expect("CA key")).expect("CA")
}

/// Connect through the proxy as app/app to `host` with TLS required.
async fn connect_tls(
    proxy: &Proxy,
    host: &str,
    tls: ClientConfig,
) -> Result<Client, tokio_postgres::Error> {
    connect_tls_mode(proxy, host, tls, SslMode::Require).await
}

/// Connect through the proxy as app/app to `host` with `mode`.
async fn connect_tls_mode(
    proxy: &Proxy,
    host: &str,
    tls: ClientConfig,
    mode: SslMode,
) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host(host)
        .port(proxy.addr().port())
        .user(APP_USER)
        .password(APP_USER)
        .dbname(APP_DB)
        .ssl_mode(mode)
        .connect_timeout(Duration::from_secs(10));
    let (client, connection) = config.connect(MakeRustlsConnect::new(tls)).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Connect through the proxy as app/app without TLS.
async fn connect_plain(proxy: &Proxy) -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    config
        .host("127.0.0.1")
        .port(proxy.addr().port())
        .user(APP_USER)
        .password(APP_USER)
        .dbname(APP_DB)
        .ssl_mode(SslMode::Disable);
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// Rows by key, written and read back through `client`.
async fn roundtrip(client: &Client) -> Vec<(i64, String)> {
    client
        .batch_execute("CREATE TABLE IF NOT EXISTS accounts (aid bigint PRIMARY KEY, owner text)")
        .await
        .expect("create table through the proxy");
    for aid in 1..=20i64 {
        client
            .execute(
                "INSERT INTO accounts VALUES ($1, $2)",
                &[&aid, &format!("owner-{aid}")],
            )
            .await
            .expect("insert through the proxy");
    }
    client
        .query("SELECT aid, owner FROM accounts ORDER BY aid", &[])
        .await
        .expect("select through the proxy")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
}

fn expected_rows() -> Vec<(i64, String)> {
    (1..=20).map(|aid| (aid, format!("owner-{aid}"))).collect()
}

/// The whole error text of a failed connect (the cause chain: rustls' reason is in
/// the source).
fn error_text(e: &tokio_postgres::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_postgres_over_tls() {
    let pki = Pki::new();
    let cluster = Cluster::start(2).await;
    let proxy = Proxy::start(&(cluster.shardmap_toml(ACCOUNTS, 4) + &pki.section(""))).await;

    // sslmode=require: encrypted, certificate not checked
    let require = (*pgshard::tls::require_config().expect("require config")).clone();
    let client = connect_tls(&proxy, "127.0.0.1", require)
        .await
        .unwrap_or_else(|e| panic!("sslmode=require: {}", error_text(&e)));
    assert_eq!(roundtrip(&client).await, expected_rows());

    // verify-full: the certificate chains to the test CA and names localhost
    let client = connect_tls(&proxy, "localhost", pki.client_config("ca.crt"))
        .await
        .unwrap_or_else(|e| panic!("verify-full with the test CA: {}", error_text(&e)));
    let n: i64 = client
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("count over TLS")
        .get(0);
    assert_eq!(n, 20);

    // a client trusting another CA refuses the proxy's certificate
    let e = match connect_tls(&proxy, "localhost", pki.client_config("other-ca.crt")).await {
        Ok(_) => panic!("a client trusting an unrelated CA connected"),
        Err(e) => error_text(&e),
    };
    assert!(
        e.contains("certificate") || e.contains("UnknownIssuer"),
        "wrong-CA failure should be a certificate error: {e}"
    );

    // without require_tls, plain clients still work
    let plain = connect_plain(&proxy).await.expect("plain client");
    let n: i64 = plain
        .query_one("SELECT count(*) FROM accounts", &[])
        .await
        .expect("count over plain TCP")
        .get(0);
    assert_eq!(n, 20);

    // a cancel request for a TLS client's statement works over TLS, and on a plain
    // connection (what libpq before Postgres 17 sends)
    expect_cancelled(&client, MakeRustlsConnect::new(pki.client_config("ca.crt"))).await;
    let prefer = connect_tls_mode(
        &proxy,
        "localhost",
        pki.client_config("ca.crt"),
        SslMode::Prefer,
    )
    .await
    .unwrap_or_else(|e| panic!("sslmode=prefer: {}", error_text(&e)));
    expect_cancelled(&prefer, NoTls).await;
}

/// Start `SELECT pg_sleep(30)` on `client`, cancel it through `tls`, and check that it
/// ends with 57014.
async fn expect_cancelled<T>(client: &Client, tls: T)
where
    T: tokio_postgres::tls::MakeTlsConnect<tokio_postgres::Socket>,
{
    let token = client.cancel_token();
    let sleep = client.simple_query("SELECT pg_sleep(30)");
    let cancel = async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        token.cancel_query(tls).await
    };
    let (result, sent) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(sleep, cancel)
    })
    .await
    .expect("the cancelled statement ends");
    sent.unwrap_or_else(|e| panic!("send cancel: {}", error_text(&e)));
    let e = result.expect_err("pg_sleep was cancelled");
    assert_eq!(
        e.code(),
        Some(&tokio_postgres::error::SqlState::QUERY_CANCELED),
        "{e}"
    );
}

/// psql from the Postgres installation, else from PATH.
fn psql_binary() -> PathBuf {
    let pg15 = Path::new("/usr/lib/postgresql/15/bin/psql");
    if pg15.is_file() {
        pg15.to_path_buf()
    } else {
        PathBuf::from("psql")
    }
}

/// Run psql with connection string `conninfo` and `args`, as app/app.
async fn psql(conninfo: &str, args: &[&str]) -> Output {
    let run = tokio::process::Command::new(psql_binary())
        .arg(conninfo)
        .args(["-X", "-A", "-t"])
        .args(args)
        .env("PGPASSWORD", APP_USER)
        .env("PGCONNECT_TIMEOUT", "10")
        .kill_on_drop(true)
        .output();
    tokio::time::timeout(Duration::from_secs(30), run)
        .await
        .expect("psql finishes")
        .expect("run psql")
}

fn conninfo(proxy: &Proxy, extra: &str) -> String {
    format!(
        "host=localhost port={} dbname={APP_DB} user={APP_USER} {extra}",
        proxy.addr().port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn psql_verify_full() {
    let pki = Pki::new();
    let cluster = Cluster::start(1).await;
    let proxy = Proxy::start(&(cluster.shardmap_toml(ACCOUNTS, 2) + &pki.section(""))).await;
    let ca = pki.path("ca.crt");

    let ok = psql(
        &conninfo(
            &proxy,
            &format!("sslmode=verify-full sslrootcert={}", ca.display()),
        ),
        &["-c", "SELECT 40 + 2", "-c", "\\conninfo"],
    )
    .await;
    let stdout = String::from_utf8_lossy(&ok.stdout);
    let stderr = String::from_utf8_lossy(&ok.stderr);
    assert!(ok.status.success(), "psql verify-full failed: {stderr}");
    assert_eq!(stdout.lines().next(), Some("42"), "{stdout}");
    assert!(stdout.contains("SSL connection"), "not encrypted: {stdout}");

    let wrong = psql(
        &conninfo(
            &proxy,
            &format!(
                "sslmode=verify-full sslrootcert={}",
                pki.path("other-ca.crt").display()
            ),
        ),
        &["-c", "SELECT 1"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&wrong.stderr);
    assert!(!wrong.status.success(), "psql trusted the wrong CA");
    assert!(stderr.contains("certificate verify failed"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn require_tls_refuses_plain_clients() {
    let pki = Pki::new();
    let cluster = Cluster::start(1).await;
    let proxy =
        Proxy::start(&(cluster.shardmap_toml(ACCOUNTS, 2) + &pki.section("require_tls = true\n")))
            .await;

    let e = match connect_plain(&proxy).await {
        Ok(_) => panic!("a plain client logged in despite require_tls"),
        Err(e) => e,
    };
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code().code(), "28000", "{db:?}");
    assert!(db.message().contains("requires TLS"), "{}", db.message());

    let refused = psql(&conninfo(&proxy, "sslmode=disable"), &["-c", "SELECT 1"]).await;
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "psql without TLS logged in");
    assert!(stderr.contains("requires TLS"), "{stderr}");

    let client = connect_tls(&proxy, "localhost", pki.client_config("ca.crt"))
        .await
        .unwrap_or_else(|e| panic!("TLS client under require_tls: {}", error_text(&e)));
    let row = client
        .query_one("SELECT 'over tls'", &[])
        .await
        .expect("query");
    assert_eq!(row.get::<_, &str>(0), "over tls");
}

/// Give `server` the PKI's certificate and turn on `ssl` (a reload is enough).
async fn enable_ssl(server: &PgServer, pki: &Pki) {
    for name in ["server.crt", "server.key"] {
        server.install_data_file(&pki.path(name), name);
    }
    // database app takes TLS connections only: whatever pgshard opens there must be
    // encrypted (the harness's own connections go to database postgres)
    let hba = server.cluster().data_dir().join("pg_hba.conf");
    let rules = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
    std::fs::write(&hba, format!("hostnossl {APP_DB} all all reject\n{rules}"))
        .expect("write pg_hba.conf");
    let admin = server.client("postgres").await;
    admin
        .batch_execute("ALTER SYSTEM SET ssl = on")
        .await
        .expect("ALTER SYSTEM SET ssl");
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .expect("reload");
    for _ in 0..100 {
        let row = server
            .client("postgres")
            .await
            .query_one("SHOW ssl", &[])
            .await
            .expect("SHOW ssl");
        if row.get::<_, &str>(0) == "on" {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("ssl did not turn on on port {}", server.port());
}

fn backend_section(pki: &Pki, mode: &str, ca: &str) -> String {
    format!(
        "\n[tls]\nbackend = \"{mode}\"\nbackend_ca = \"{}\"\n",
        pki.path(ca).display()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_verify_full() {
    let pki = Pki::new();
    let cluster = Cluster::start(2).await;
    for i in 0..cluster.len() {
        enable_ssl(cluster.shard(i), &pki).await;
    }
    let map = cluster.shardmap_toml(ACCOUNTS, 4);
    // (the shards really refuse plain connections to app)
    let plain =
        tokio_postgres::connect(&format!("{}?sslmode=disable", cluster.shard_url(0)), NoTls).await;
    let e = plain.err().expect("a plain connection to app was accepted");
    assert!(error_text(&e).contains("pg_hba.conf"), "{}", error_text(&e));

    let proxy =
        Proxy::start(&(map.clone() + &backend_section(&pki, "verify-full", "ca.crt"))).await;
    let client = proxy.client().await;
    assert_eq!(roundtrip(&client).await, expected_rows());
    // the shard sees its pgshard connection encrypted
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("pg_stat_ssl on the shard")
        .get(0);
    assert!(ssl, "the proxy's shard connection is not encrypted");
    // a cancel reaches the shard over TLS
    expect_cancelled(&client, NoTls).await;
    drop(proxy);

    // the rebalancer's own connections (tokio-postgres) use TLS too, and a wrong CA
    // fails them with the reason
    let text = map.clone() + &backend_section(&pki, "verify-full", "ca.crt");
    let config = pgshard::config::parse(&text, "test").expect("map");
    let shard = pgshard::rebalance::shard::ShardClient::connect(&config.shards[1])
        .await
        .expect("rebalance connection over TLS");
    let ssl = shard
        .value("SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .await
        .expect("pg_stat_ssl");
    assert_eq!(ssl.as_deref(), Some("true"));
    let text = map.clone() + &backend_section(&pki, "verify-full", "other-ca.crt");
    let config = pgshard::config::parse(&text, "test").expect("map");
    let e = match pgshard::rebalance::shard::ShardClient::connect(&config.shards[1]).await {
        Ok(_) => panic!("rebalance connection trusted the wrong CA"),
        Err(e) => e.to_string(),
    };
    assert!(e.contains("certificate"), "{e}");

    // backend = "require" encrypts without looking at the CA
    let proxy =
        Proxy::start(&(map.clone() + &backend_section(&pki, "require", "other-ca.crt"))).await;
    let client = proxy.client().await;
    let ssl: bool = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .expect("query with backend = require")
        .get(0);
    assert!(ssl, "backend = require left the connection unencrypted");
    drop(proxy);

    // a CA the shards' certificate does not chain to: the query fails, quickly
    let proxy = Proxy::start(&(map + &backend_section(&pki, "verify-full", "other-ca.crt"))).await;
    let client = proxy.client().await;
    let e = tokio::time::timeout(Duration::from_secs(20), client.simple_query("SELECT 1"))
        .await
        .expect("the query must fail, not hang")
        .expect_err("a shard with an untrusted certificate was used");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(
        db.message().contains("TLS handshake") && db.message().contains("certificate"),
        "{}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_tls_refused_by_plain_shard() {
    let pki = Pki::new();
    let cluster = Cluster::start(1).await;
    // ssl stays off on the shard: backend = "require" must not fall back to plain text
    let proxy = Proxy::start(
        &(cluster.shardmap_toml(ACCOUNTS, 2) + &backend_section(&pki, "require", "ca.crt")),
    )
    .await;
    let client = proxy.client().await;
    let e = tokio::time::timeout(Duration::from_secs(20), client.simple_query("SELECT 1"))
        .await
        .expect("the query must fail, not hang")
        .expect_err("a shard without TLS was used");
    let db = e
        .as_db_error()
        .unwrap_or_else(|| panic!("not a server error: {e}"));
    assert_eq!(db.code().code(), "08006", "{db:?}");
    assert!(
        db.message().contains("does not accept TLS"),
        "{}",
        db.message()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn encryption_requests_are_answered_in_order() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    const SSL: &[u8] = b"\0\0\0\x08\x04\xd2\x16\x2f";
    const GSSENC: &[u8] = b"\0\0\0\x08\x04\xd2\x16\x30";
    let pki = Pki::new();
    let cluster = Cluster::start(1).await;
    let proxy = Proxy::start(&(cluster.shardmap_toml(ACCOUNTS, 2) + &pki.section(""))).await;

    // GSSENCRequest → N, then SSLRequest on the same connection → S
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    let mut answer = [0u8; 1];
    s.write_all(GSSENC).await.unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"N");
    s.write_all(SSL).await.unwrap();
    s.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"S");

    // bytes pipelined behind the SSLRequest are refused: no S, the connection closes
    let mut s = tokio::net::TcpStream::connect(proxy.addr()).await.unwrap();
    s.write_all(&[SSL, b"\0\0\0\x08\0\x03\0\0"].concat())
        .await
        .unwrap();
    let mut reply = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut reply))
        .await
        .expect("the proxy closes the connection");
    assert!(read.is_err() || reply.is_empty(), "answered {reply:?}");

    // and the proxy still serves TLS clients
    let client = connect_tls(&proxy, "localhost", pki.client_config("ca.crt"))
        .await
        .unwrap_or_else(|e| panic!("TLS client: {}", error_text(&e)));
    let row = client.query_one("SELECT 7", &[]).await.expect("query");
    assert_eq!(row.get::<_, i32>(0), 7);
}
