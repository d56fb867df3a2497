//! One raw connection to a shard: login with the proxy's own credentials, then frame
//! I/O. The connection tracks the transaction status from ReadyForQuery itself (never a
//! library's cached flag): a connection is only reusable when the last ReadyForQuery said
//! idle and nothing is left unread.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256};
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::BackendError;
use crate::config::ShardConfig;
use crate::metrics::ShardStats;
use crate::protocol::reply::TxnStatus;
use crate::protocol::{Frame, split_frame};
use crate::sharding::ShardId;
use crate::tls::Stream;

/// Largest message accepted from a backend (Postgres' own limit for a DataRow is 1 GB).
const MAX_BACKEND_MESSAGE: usize = 1 << 30;

/// The answer to a [`BackendConn::simple_query`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SimpleAnswer {
    /// every row, fields as text (None = NULL)
    pub rows: Vec<Vec<Option<String>>>,
    /// the last CommandComplete tag
    pub tag: String,
    /// the server's error message, if the statement failed
    pub error: Option<String>,
    /// the error's SQLSTATE
    pub sqlstate: Option<String>,
}

/// The fields of a DataRow as text.
fn text_fields(body: &[u8]) -> Option<Vec<Option<String>>> {
    let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut rest = body.get(2..)?;
    let mut fields = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let len = i32::from_be_bytes(rest.get(..4)?.try_into().ok()?);
        rest = &rest[4..];
        if len < 0 {
            fields.push(None);
        } else {
            let len = usize::try_from(len).ok()?;
            fields.push(Some(String::from_utf8_lossy(rest.get(..len)?).into_owned()));
            rest = &rest[len..];
        }
    }
    Some(fields)
}

/// One field (by its type byte) of an ErrorResponse body.
fn error_field(body: &[u8], field: u8) -> Option<String> {
    body.split(|&b| b == 0)
        .find(|f| f.first() == Some(&field))
        .map(|f| String::from_utf8_lossy(&f[1..]).into_owned())
}

/// A logged-in connection to one shard.
pub struct BackendConn {
    stream: Stream,
    rbuf: BytesMut,
    wbuf: BytesMut,
    /// which shard this is
    pub shard: ShardId,
    /// transaction status from the last ReadyForQuery
    pub status: TxnStatus,
    /// set when the connection must not be reused (I/O error, protocol desync)
    pub broken: bool,
    /// set when a statement may have left session state pgshard does not track
    /// (DISCARD, DEALLOCATE, LISTEN, temporary tables…): closed instead of pooled
    pub retire: bool,
    /// ParameterStatus values received at login
    pub server_params: Vec<(String, String)>,
    /// process id and secret key of the server process (for cancel)
    pub key: (i32, i32),
    /// server-side prepared statements (by statement hash) that exist on this connection
    pub prepared: HashSet<u64>,
    /// signature of the session settings applied on this connection (0 = server defaults)
    pub settings_sig: u64,
    /// the database orders text bytewise: its default collation is "C"/"POSIX" (libc)
    /// and no user column has another collation, as seen when the connection opened.
    /// Merges compare text across shards only when every shard's connection says so.
    pub bytewise_text: bool,
    /// the shard's traffic counters, attached by the session at first checkout (the
    /// pool manager knows the shard only by index, which a reload may renumber)
    pub stats: Option<Arc<ShardStats>>,
    /// the shard's [`super::health::Answered`], set by the pool manager: answers seen
    /// here keep a slow health check from opening the shard's breaker
    pub answered: Option<Arc<super::health::Answered>>,
}

impl BackendConn {
    /// The shard answered a statement on this connection (see [`Self::answered`]).
    #[inline]
    pub fn note_answered(&self) {
        if let Some(a) = &self.answered {
            a.now();
        }
    }

    /// Connect and log in, within `timeout`.
    pub async fn connect(
        shard: ShardId,
        cfg: &ShardConfig,
        timeout: Duration,
    ) -> Result<BackendConn, BackendError> {
        Self::connect_as(shard, cfg, timeout, "pgshard").await
    }

    /// [`connect`](Self::connect) with another `application_name`, so connections that
    /// are not data-path ones (health checks) can be told apart in `pg_stat_activity`.
    pub async fn connect_as(
        shard: ShardId,
        cfg: &ShardConfig,
        timeout: Duration,
        application_name: &str,
    ) -> Result<BackendConn, BackendError> {
        match tokio::time::timeout(timeout, Self::connect_inner(shard, cfg, application_name)).await
        {
            Ok(result) => result,
            Err(_) => Err(BackendError::ConnectTimeout(timeout)),
        }
    }

    async fn connect_inner(
        shard: ShardId,
        cfg: &ShardConfig,
        application_name: &str,
    ) -> Result<BackendConn, BackendError> {
        let stream = open(cfg).await?;
        let mut conn = BackendConn {
            stream,
            rbuf: BytesMut::with_capacity(16 * 1024),
            wbuf: BytesMut::with_capacity(4 * 1024),
            shard,
            status: TxnStatus::Idle,
            broken: false,
            retire: false,
            server_params: Vec::new(),
            key: (0, 0),
            prepared: HashSet::new(),
            settings_sig: 0,
            bytewise_text: false,
            stats: None,
            answered: None,
        };
        let params = [
            ("user", cfg.user.as_str()),
            ("database", cfg.dbname.as_str()),
            ("application_name", application_name),
            ("client_encoding", "UTF8"),
            // pgshard parses string literals with this on; a role or database default
            // of off must not apply to its connections
            ("standard_conforming_strings", "on"),
        ];
        frontend::startup_message(params.iter().copied(), &mut conn.wbuf)?;
        conn.flush().await?;
        conn.login(cfg).await?;
        conn.bytewise_text = conn.probe_collation().await?;
        Ok(conn)
    }

    /// Whether text in this database compares bytewise (see [`Self::bytewise_text`]).
    /// One query per new connection; `to_jsonb` reads `datlocprovider` where the server
    /// has it (15+: an ICU default collation is not bytewise even with datcollate C).
    async fn probe_collation(&mut self) -> Result<bool, BackendError> {
        const PROBE: &str = "SELECT (SELECT d.datcollate IN ('C', 'POSIX') \
            AND coalesce(to_jsonb(d) ->> 'datlocprovider', 'c') = 'c' \
            FROM pg_catalog.pg_database d WHERE d.datname = pg_catalog.current_database()) \
            AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid >= 16384 \
            AND a.attcollation NOT IN (0, 100, 950, 951) AND NOT a.attisdropped)";
        let answer = self.simple_query(PROBE).await?;
        match answer.error {
            Some(e) => Err(BackendError::Protocol(format!(
                "collation probe failed: {e}"
            ))),
            None => Ok(answer.rows.first().and_then(|r| r.first()) == Some(&Some("t".to_owned()))),
        }
    }

    /// Run one simple query that pgshard itself issues (catalog probes, two-phase commit
    /// control) and read its whole answer: text rows, the last command tag, or the
    /// server's error. Only for statements without COPY.
    pub async fn simple_query(&mut self, sql: &str) -> Result<SimpleAnswer, BackendError> {
        frontend::query(sql, &mut self.wbuf)?;
        self.flush().await?;
        let mut answer = SimpleAnswer::default();
        loop {
            let frame = self.read_frame().await?;
            let body = frame.body();
            match frame.tag() {
                b'D' => answer
                    .rows
                    .push(text_fields(body).ok_or_else(|| proto("bad DataRow"))?),
                b'C' => {
                    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
                    answer.tag = String::from_utf8_lossy(&body[..end]).into_owned();
                }
                b'E' => {
                    answer.error = Some(error_message(body));
                    answer.sqlstate = error_field(body, b'C');
                }
                b'Z' => {
                    self.status = body
                        .first()
                        .and_then(|&b| TxnStatus::from_byte(b))
                        .ok_or_else(|| proto("bad ReadyForQuery"))?;
                    return Ok(answer);
                }
                b'G' | b'H' | b'W' => {
                    self.broken = true;
                    return Err(proto("COPY in an internal query"));
                }
                _ => {}
            }
        }
    }

    async fn login(&mut self, cfg: &ShardConfig) -> Result<(), BackendError> {
        let mut scram: Option<ScramSha256> = None;
        loop {
            let frame = self.read_frame().await?;
            let body = frame.body();
            match frame.tag() {
                b'R' => {
                    let code = be_i32(body).ok_or_else(|| proto("short Authentication"))?;
                    let data = &body[4..];
                    match code {
                        0 => {}
                        3 => {
                            let pw = password(cfg)?;
                            frontend::password_message(pw.as_bytes(), &mut self.wbuf)?;
                            self.flush().await?;
                        }
                        5 => {
                            let pw = password(cfg)?;
                            let salt: [u8; 4] = data
                                .get(..4)
                                .and_then(|s| s.try_into().ok())
                                .ok_or_else(|| proto("short MD5 salt"))?;
                            let hash = md5_hash(cfg.user.as_bytes(), pw.as_bytes(), salt);
                            frontend::password_message(hash.as_bytes(), &mut self.wbuf)?;
                            self.flush().await?;
                        }
                        10 => {
                            let pw = password(cfg)?;
                            let offers_scram =
                                data.split(|&b| b == 0).any(|m| m == b"SCRAM-SHA-256");
                            if !offers_scram {
                                return Err(BackendError::Login(
                                    "server offers no SCRAM-SHA-256 mechanism".into(),
                                ));
                            }
                            let s = ScramSha256::new(pw.as_bytes(), ChannelBinding::unsupported());
                            frontend::sasl_initial_response(
                                "SCRAM-SHA-256",
                                s.message(),
                                &mut self.wbuf,
                            )?;
                            self.flush().await?;
                            scram = Some(s);
                        }
                        11 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| proto("unexpected SASLContinue"))?;
                            s.update(data)
                                .map_err(|e| BackendError::Login(e.to_string()))?;
                            frontend::sasl_response(s.message(), &mut self.wbuf)?;
                            self.flush().await?;
                        }
                        12 => {
                            let s = scram
                                .as_mut()
                                .ok_or_else(|| proto("unexpected SASLFinal"))?;
                            s.finish(data)
                                .map_err(|e| BackendError::Login(e.to_string()))?;
                        }
                        other => return Err(BackendError::UnsupportedAuth(other)),
                    }
                }
                b'S' => {
                    let mut parts = body.split(|&b| b == 0);
                    let name = parts.next().unwrap_or_default();
                    let value = parts.next().unwrap_or_default();
                    self.server_params.push((
                        String::from_utf8_lossy(name).into_owned(),
                        String::from_utf8_lossy(value).into_owned(),
                    ));
                }
                b'K' => {
                    let pid = be_i32(body).ok_or_else(|| proto("short BackendKeyData"))?;
                    let secret = be_i32(&body[4..]).ok_or_else(|| proto("short BackendKeyData"))?;
                    self.key = (pid, secret);
                }
                b'Z' => {
                    self.status = body
                        .first()
                        .and_then(|&b| TxnStatus::from_byte(b))
                        .ok_or_else(|| proto("bad ReadyForQuery"))?;
                    return Ok(());
                }
                b'E' => return Err(BackendError::Login(error_message(body))),
                b'N' | b'v' => {}
                other => {
                    return Err(proto(&format!(
                        "unexpected message '{}' during login",
                        char::from(other)
                    )));
                }
            }
        }
    }

    /// Queue bytes to send; nothing is written until [`flush`](Self::flush).
    #[inline]
    pub fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Write everything queued.
    pub async fn flush(&mut self) -> Result<(), BackendError> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let result = self.stream.write_all(&self.wbuf).await;
        if let Some(stats) = &self.stats {
            stats
                .bytes_to_server
                .fetch_add(self.wbuf.len() as u64, Ordering::Relaxed);
        }
        self.wbuf.clear();
        if let Err(e) = result {
            self.broken = true;
            return Err(e.into());
        }
        Ok(())
    }

    /// Read the next whole message.
    pub async fn read_frame(&mut self) -> Result<Frame, BackendError> {
        loop {
            match split_frame(&mut self.rbuf, MAX_BACKEND_MESSAGE) {
                Ok(Some(frame)) => return Ok(frame),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(BackendError::Protocol(e.to_string()));
                }
            }
            if self.rbuf.capacity() - self.rbuf.len() < 8 * 1024 {
                self.rbuf.reserve(16 * 1024);
            }
            match self.stream.read_buf(&mut self.rbuf).await {
                Ok(0) => {
                    self.broken = true;
                    return Err(BackendError::Closed);
                }
                Ok(n) => {
                    if let Some(stats) = &self.stats {
                        stats.bytes_to_client.fetch_add(n as u64, Ordering::Relaxed);
                    }
                }
                Err(e) => {
                    self.broken = true;
                    return Err(e.into());
                }
            }
        }
    }

    /// True when a whole message is already buffered, i.e. the next
    /// [`read_frame`](Self::read_frame) will not wait. Used to batch client writes.
    pub fn has_buffered_frame(&self) -> bool {
        if self.rbuf.len() < 5 {
            return false;
        }
        let len = i32::from_be_bytes([self.rbuf[1], self.rbuf[2], self.rbuf[3], self.rbuf[4]]);
        len >= 4 && self.rbuf.len() > len as usize
    }

    /// Whether this connection may go back to the pool: the last ReadyForQuery said
    /// idle, nothing is left unread, and nothing marked it broken or retired.
    pub fn is_clean(&self) -> bool {
        !self.broken && !self.retire && self.status == TxnStatus::Idle && self.rbuf.is_empty()
    }

    /// [`is_clean`](Self::is_clean), and the server has not closed it meanwhile: checked
    /// when a pooled connection is handed out again.
    pub fn is_reusable(&self) -> bool {
        if !self.is_clean() {
            return false;
        }
        // An idle server only speaks up to say goodbye (admin shutdown, idle timeout):
        // anything readable, or EOF, means the connection is gone.
        let mut probe = [0u8; 1];
        // (under TLS the socket is probed directly: any record from an idle server is
        // a goodbye too, so consuming it costs nothing)
        matches!(self.stream.tcp().try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

/// Open a connection to a shard: TCP, then TLS when `[tls] backend` asks for it
/// (SSLRequest first, as libpq does; a server answering `N` is an error, never a silent
/// fall back to plain text).
pub async fn open(cfg: &ShardConfig) -> Result<Stream, BackendError> {
    let mut tcp = TcpStream::connect((cfg.host.as_str(), cfg.port)).await?;
    tcp.set_nodelay(true)?;
    let Some(tls) = cfg.tls.client_config() else {
        return Ok(Stream::Plain(tcp));
    };
    let mut request = BytesMut::new();
    frontend::ssl_request(&mut request);
    tcp.write_all(&request).await?;
    let mut answer = [0u8; 1];
    if tcp.read(&mut answer).await? == 0 {
        return Err(BackendError::Closed);
    }
    match answer[0] {
        b'S' => crate::tls::connect(tcp, tls, &cfg.host).await.map_err(|e| {
            BackendError::Tls(format!(
                "TLS handshake with {}:{} ({} mode) failed: {e}",
                cfg.host,
                cfg.port,
                cfg.tls.mode()
            ))
        }),
        b'N' => Err(BackendError::Tls(format!(
            "server {}:{} does not accept TLS (ssl = off) but [tls] backend = \"{}\"",
            cfg.host,
            cfg.port,
            cfg.tls.mode()
        ))),
        other => Err(BackendError::Protocol(format!(
            "unexpected answer {other:#04x} to SSLRequest"
        ))),
    }
}

fn password(cfg: &ShardConfig) -> Result<&str, BackendError> {
    cfg.password.as_deref().ok_or_else(|| {
        BackendError::Login("server requires a password but the shard URL has none".into())
    })
}

fn proto(what: &str) -> BackendError {
    BackendError::Protocol(what.to_owned())
}

fn be_i32(b: &[u8]) -> Option<i32> {
    Some(i32::from_be_bytes(b.get(..4)?.try_into().ok()?))
}

/// The `M` (message) and `C` (code) fields of an ErrorResponse body, for logs and errors.
pub fn error_message(body: &[u8]) -> String {
    let mut message = String::new();
    let mut code = String::new();
    for field in body.split(|&b| b == 0) {
        match field.first() {
            Some(b'M') => message = String::from_utf8_lossy(&field[1..]).into_owned(),
            Some(b'C') => code = String::from_utf8_lossy(&field[1..]).into_owned(),
            _ => {}
        }
    }
    if code.is_empty() {
        message
    } else {
        format!("{message} (SQLSTATE {code})")
    }
}
