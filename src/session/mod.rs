//! One client connection: startup and authentication ([`startup`]), then a loop over
//! client messages: simple queries ([`simple`]) and the extended protocol ([`extended`]).
//! The transaction phase is an explicit state machine ([`txn::Txn`]); backend replies are
//! relayed by an expected-reply queue ([`relay`]).

mod admin;
pub mod auth;
pub mod cancel;
pub mod client;
mod copy;
mod distributed;
mod extended;
pub mod holds;
mod local_txn;
pub mod negotiate;
pub mod pause;
pub mod relay;
pub mod reload;
mod scatter;
pub mod settings;
pub mod shared;
mod simple;
mod sql_prepared;
mod startup;
mod statements;
pub mod txn;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::backend::{BackendError, PooledConn, Pools};
use crate::metrics::{ClientGuard, ClientState, RouteKind};
use crate::protocol::reply::{self, ProxyError, TxnStatus};
use crate::protocol::{Frame, SqlState};
use crate::router::{self, ParamSource, Route, RouteError, RouteInput};
use crate::sharding::ShardId;
use crate::sql::{Analysis, SharedAnalysis};
use client::{ClientError, ClientIo};
use holds::Touch;
pub use negotiate::{Incoming, negotiate};
use relay::{Expect, RelayError, RelayOutcome, relay};
use settings::Settings;
use shared::OrdinalSnapshot;
pub use shared::{LogLevelSetter, Shared};
use txn::Txn;

/// Largest buffer capacity an idle session keeps (bytes).
const IDLE_BUFFER_KEEP: usize = 16 * 1024;

/// How a session ended, for the log.
#[derive(Debug)]
pub enum SessionEnd {
    /// Terminate or EOF
    ClientGone,
    /// pgshard closed the connection after sending this FATAL error
    Fatal(ProxyError),
}

/// A statement the client prepared (Parse), kept by pgshard under transaction pooling.
#[derive(Debug, Clone)]
pub(crate) struct ClientStmt {
    sql: Arc<str>,
    param_types: bytes::Bytes,
    analysis: SharedAnalysis,
    /// identity of (text, parameter types): names the statement on backends
    hash: u64,
}

impl ClientStmt {
    /// Whether pgshard could not parse the statement (it may hide transaction control).
    fn analysis_unparsed(&self) -> bool {
        matches!(*self.analysis, Analysis::Unparsed { .. })
    }
}

/// One client session.
pub struct Session<S> {
    client: ClientIo<S>,
    shared: Arc<Shared>,
    out: BytesMut,
    txn: Txn,
    stmts: HashMap<String, ClientStmt>,
    batch: extended::Batch,
    settings: Settings,
    user: String,
    /// a deferred BEGIN was sent with the statement being relayed: if the backend fails
    /// now, the client was inside a transaction
    begin_in_flight: bool,
    /// this client's cancel key and the backend process running its statement
    cancel_key: (i32, i32),
    running: cancel::CancelSlot,
    /// turn counter spreading reads of reference tables over the shards
    copy_turn: usize,
    /// the other shards' connections of a transaction spanning several shards (the
    /// current statement's is in `txn`)
    parked: Vec<PooledConn>,
    /// the client's BEGIN text, replayed on each shard the transaction joins
    txn_begin: Option<String>,
    /// the transaction set a savepoint: it must stay on the shards it has
    txn_savepoint: bool,
    /// a query string is being run statement by statement: no ReadyForQuery until it
    /// ends
    suppress_ready: bool,
    /// statements prepared with SQL PREPARE, by name
    sql_stmts: HashMap<String, sql_prepared::SqlStmt>,
    /// logged in to the admin console (database `pgshard`), not to the shards
    admin: bool,
    /// shard numbering the session's connections were taken under (see
    /// [`holds::SlotHolds::renumbered`])
    shard_generation: u64,
    /// counted by `HOLD` while a statement this session routed is running
    in_flight: holds::InFlight,
    /// map epoch of the last route; of the last Bind, for portals executed later
    route_epoch: u64,
    portal_epoch: u64,
    /// this client in SHOW CLIENTS (unlisted when the session ends)
    registration: ClientGuard,
    /// when the statement on several shards being run was sent (for its latency)
    scatter_started: Option<std::time::Instant>,
    /// the client connection is encrypted
    tls: bool,
}

/// Longest the last error of a closing session may take to reach its client.
const FATAL_SEND_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Serve one client connection to the end (after [`negotiate`]); `peer` is its
/// address, for SHOW CLIENTS.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    incoming: Incoming<S>,
    shared: Arc<Shared>,
    peer: Option<std::net::SocketAddr>,
) -> SessionEnd {
    let max = shared.config.server.max_message_size;
    let registration = shared.metrics.clients.register(peer);
    if incoming.tls {
        registration.info.set_tls();
    }
    let (cancel_key, running) = shared.cancels.register();
    let shared_in_flight = shared.holds.in_flight();
    let mut session = Session {
        client: ClientIo::with_buffered(incoming.stream, incoming.buffered, max),
        shared,
        out: BytesMut::new(),
        txn: Txn::Idle,
        stmts: HashMap::new(),
        batch: extended::Batch::default(),
        settings: Settings::default(),
        user: String::new(),
        begin_in_flight: false,
        cancel_key,
        running,
        // sessions start at different shards (the key is random)
        copy_turn: cancel_key.0.unsigned_abs() as usize,
        parked: Vec::new(),
        txn_begin: None,
        txn_savepoint: false,
        suppress_ready: false,
        sql_stmts: HashMap::new(),
        admin: false,
        shard_generation: 0,
        in_flight: shared_in_flight,
        route_epoch: 0,
        portal_epoch: 0,
        registration,
        scatter_started: None,
        tls: incoming.tls,
    };
    session.shard_generation = session.shared.holds.state() >> 1;
    // Boxed: the login exchange runs once, and its state need not stay in the task of
    // a client that then sits idle for hours.
    let login_timeout = session.shared.config.server.login_timeout;
    let end = match tokio::time::timeout(login_timeout, Box::pin(session.startup())).await {
        Ok(Ok(())) if session.admin => Box::pin(session.serve_admin()).await,
        Ok(Ok(())) => {
            session.release_idle_buffers();
            session.serve().await
        }
        Ok(Err(end)) => end,
        // Postgres's own words for its authentication_timeout. A reply cut off mid-send
        // is dropped, not sent again in front of the error.
        Err(_) => {
            session.out.clear();
            SessionEnd::Fatal(ProxyError::fatal(
                SqlState::QUERY_CANCELED,
                format!(
                    "canceling authentication due to timeout ([server] login_timeout_ms = {})",
                    login_timeout.as_millis()
                ),
            ))
        }
    };
    if let SessionEnd::Fatal(e) = &end {
        e.encode(&mut session.out);
        // a client that stopped reading must not keep its task (and max_clients place)
        let _ =
            tokio::time::timeout(FATAL_SEND_TIMEOUT, session.client.send(&mut session.out)).await;
    }
    session.finish();
    session.shared.cancels.unregister(session.cancel_key);
    end
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    async fn serve(&mut self) -> SessionEnd {
        let shutdown = self.shared.shutdown.clone();
        // one registration for the whole session, not one per message
        let mut shutting_down = std::pin::pin!(shutdown.cancelled());
        loop {
            let idle = matches!(self.txn, Txn::Idle) && !self.batch.is_open();
            let frame = tokio::select! {
                biased;
                _ = &mut shutting_down, if idle => {
                    return SessionEnd::Fatal(ProxyError::fatal(
                        SqlState::ADMIN_SHUTDOWN,
                        "terminating connection: pgshard is shutting down",
                    ));
                }
                frame = self.client.read_frame() => frame,
            };
            let frame = match frame {
                Ok(Some(frame)) => frame,
                Ok(None) => return SessionEnd::ClientGone,
                Err(ClientError::Frame(e)) => {
                    return SessionEnd::Fatal(ProxyError::protocol_violation(e));
                }
                Err(ClientError::Io(_)) => return SessionEnd::ClientGone,
            };
            self.registration.info.set_state(ClientState::Active);
            if matches!(frame.tag(), b'Q' | b'S') {
                (self.registration.info.statements)
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            self.scatter_started = None;
            let result = match frame.tag() {
                // After an error in the extended protocol everything up to Sync is
                // dropped, simple queries included, as Postgres does.
                b'Q' | b'F' if self.batch.is_failed() => Ok(()),
                // A statement's state lives on the heap only while it runs (one
                // allocation per query; its large, rare parts are boxed again where they
                // are called, so this copy stays small), and an idle client's task stays
                // under 2 KiB (10,000 idle clients: scripts/bench-idle.sh). The
                // extended-protocol messages box their exchange themselves, at Sync.
                b'Q' => Box::pin(self.on_query(frame)).await,
                b'P' | b'B' | b'D' | b'E' | b'C' | b'H' | b'S' => self.on_extended(frame).await,
                b'F' => Box::pin(self.on_function_call(frame)).await,
                b'X' => return SessionEnd::ClientGone,
                // Outside COPY these are ignored, as Postgres does.
                b'd' | b'c' | b'f' => Ok(()),
                other => Err(SessionEnd::Fatal(ProxyError::protocol_violation(format!(
                    "invalid frontend message type {}",
                    other
                )))),
            };
            if let Err(end) = result {
                return end;
            }
            if !self.batch.is_open() {
                // the statement, or the batch up to Sync, is finished
                self.in_flight.leave();
            }
            if !self.client.has_buffered_frame() {
                if self.client.send(&mut self.out).await.is_err() {
                    return SessionEnd::ClientGone;
                }
                self.release_idle_buffers();
                self.registration.info.set_state(match self.txn {
                    Txn::Idle if !self.batch.is_open() => ClientState::Idle,
                    Txn::Aborted { .. } => ClientState::FailedTransaction,
                    _ => ClientState::InTransaction,
                });
            }
        }
    }

    /// Between statements: buffers that grew for a large message are given back, so an
    /// idle client does not keep the memory of the biggest result it ever read.
    /// Small buffers are kept, so the common statement allocates nothing for them.
    fn release_idle_buffers(&mut self) {
        if self.out.is_empty() && self.out.capacity() > IDLE_BUFFER_KEEP {
            self.out = BytesMut::new();
        }
        self.client.release_idle(IDLE_BUFFER_KEEP);
    }

    /// The shard for the next read of reference tables outside a transaction: each in
    /// turn.
    fn next_copy_shard(&mut self, shards: usize) -> ShardId {
        let shard = self.copy_turn % shards.max(1);
        self.copy_turn = self.copy_turn.wrapping_add(1);
        shard
    }

    /// Whether the session keeps backend connections between statements (a transaction
    /// or an unsynced batch), whose ShardIds a renumbering reload would invalidate.
    fn holds_connections(&self) -> bool {
        matches!(
            self.txn,
            Txn::Attached { .. } | Txn::Aborted { conn: Some(_) }
        ) || !self.parked.is_empty()
    }

    /// Release whatever the session holds. A connection still inside a transaction is
    /// not reusable and is closed by [`Pools::release`], which rolls it back server-side.
    fn finish(&mut self) {
        // the other shards of a transaction: closed, so their servers roll back
        for mut conn in std::mem::take(&mut self.parked) {
            conn.broken = true;
            Pools::release(conn);
        }
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Attached { mut conn }
            | Txn::Aborted {
                conn: Some(mut conn),
            } => {
                if self.batch.is_open() {
                    // The backend is inside the batch's implicit transaction (or skipping
                    // to Sync) even though its last ReadyForQuery said idle.
                    conn.broken = true;
                }
                Pools::release(conn)
            }
            _ => {}
        }
    }

    /// Send a proxy error and, for a simple query, the ReadyForQuery that ends it. Inside
    /// a transaction the transaction becomes aborted, as Postgres would leave it.
    fn refuse(&mut self, err: ProxyError) {
        tracing::debug!(code = err.code.0, message = %err.message, "statement refused");
        err.encode(&mut self.out);
        self.abort_txn();
    }

    /// Move an open transaction to the aborted state (no-op outside a transaction).
    fn abort_txn(&mut self) {
        self.txn = match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Idle => Txn::Idle,
            Txn::Deferred { .. } => Txn::Aborted { conn: None },
            Txn::Attached { conn } if conn.status == TxnStatus::Idle => {
                // only a flushed batch outside a transaction: stays attached until Sync
                Txn::Attached { conn }
            }
            Txn::Attached { conn } => Txn::Aborted { conn: Some(conn) },
            aborted @ Txn::Aborted { .. } => aborted,
        };
    }

    fn ready(&mut self) {
        // inside a query string run statement by statement, one ReadyForQuery ends it
        if self.suppress_ready {
            return;
        }
        reply::ready_for_query(self.txn.status(), &mut self.out);
    }

    /// Route a query string with parameters against the current map, learning key
    /// positions from the catalog when an INSERT needs one.
    async fn route(
        &mut self,
        sql: &str,
        analysis: &Analysis,
        params: &(dyn ParamSource + Sync),
    ) -> Result<Route, ProxyError> {
        let mut learned = 0;
        // set at the first wait for a held slot: the whole statement waits at most
        // hold_timeout, however many releases it sees
        let mut hold_deadline = None;
        loop {
            let map = self.shared.map.load();
            let result = {
                let ordinals = self
                    .shared
                    .ordinals
                    .read()
                    .unwrap_or_else(|e| e.into_inner());
                router::route(
                    &RouteInput {
                        sql,
                        analysis,
                        params,
                        ordinals: &OrdinalSnapshot(&ordinals),
                    },
                    &map,
                    self.shared.config.server.unparsed,
                )
            };
            match result {
                Err(RouteError::KeyOrdinalUnknown { table }) if learned < 2 => {
                    learned += 1;
                    let key = map.table(&table).map(|t| t.key.clone()).unwrap_or_default();
                    // boxed: a catalog query, rare, and large to keep inline
                    Box::pin(self.learn_ordinal(&table, &key)).await?;
                }
                Err(RouteError::KeyOrdinalUnknown { .. }) => {
                    return Err(ProxyError::cross_shard_unsupported(
                        "could not determine the shard key position; name the columns in INSERT",
                    ));
                }
                Ok(route) => {
                    self.route_epoch = map.epoch;
                    // counted before looking at the holds: see holds::InFlight
                    let entered = self.in_flight.enter();
                    let state = self.shared.holds.state();
                    // nothing held, shards numbered as before: one atomic load
                    if state == self.shard_generation << 1 {
                        return Ok(route);
                    }
                    if state >> 1 != self.shard_generation {
                        // statements that name no shard (transaction control, SET,
                        // reads any copy answers) run on the connection already held
                        let names_shards =
                            !matches!(route.target, router::Target::Any | router::Target::OneCopy);
                        if names_shards && self.holds_connections() {
                            return Err(ProxyError::error(
                                SqlState::SERIALIZATION_FAILURE,
                                "pgshard: the shard list was reloaded during this transaction and its shards were renumbered; roll back and retry",
                            ));
                        }
                        if !self.holds_connections() {
                            self.shard_generation = state >> 1;
                        }
                    }
                    if state & holds::HELD == 0 {
                        return Ok(route);
                    }
                    let touch = Touch::of(&route, &map);
                    if self.shared.holds.blocking(touch).is_none() {
                        return Ok(route);
                    }
                    drop(map);
                    if entered {
                        // not running yet: HOLD need not wait for this statement. (A
                        // batch with an earlier statement stays counted; the rebalancer's
                        // hold timeout then breaks the wait.)
                        self.in_flight.leave();
                    }
                    let limit = self.shared.config.server.hold_timeout;
                    let deadline =
                        *hold_deadline.get_or_insert_with(|| tokio::time::Instant::now() + limit);
                    // boxed: rare, and the wait's state need not live in every session
                    Box::pin(self.shared.holds.wait(touch, deadline, limit))
                        .await
                        .map_err(|e| {
                            ProxyError::error(SqlState::LOCK_NOT_AVAILABLE, format!("pgshard: {e}"))
                        })?;
                    // released: route again, against the map installed meanwhile
                }
                Err(e) => return Err(route_error(e)),
            }
        }
    }

    /// Look up the position of `key` among the columns of `table` on the default shard.
    async fn learn_ordinal(&mut self, table: &str, key: &str) -> Result<(), ProxyError> {
        // INSERT … VALUES counts every column; COPY rows skip generated ones
        let sql = format!(
            "SELECT (n - 1) || ',' || (n - 1 - g) FROM (SELECT attname, \
             row_number() OVER (ORDER BY attnum) AS n, \
             count(*) FILTER (WHERE attgenerated <> '') OVER (ORDER BY attnum) AS g \
             FROM pg_attribute WHERE attrelid = to_regclass({}) AND attnum > 0 \
             AND NOT attisdropped) c WHERE attname = {}",
            settings::quote_literal(&settings::quote_ident(table)),
            settings::quote_literal(key)
        );
        let shard = self.shared.map.load().default_shard;
        let mut conn = self.checkout(shard).await?;
        // The client's settings (search_path above all) decide which table the name means.
        let mut queue = VecDeque::new();
        self.prepare_conn(&mut conn, &mut queue);
        let mut q = BytesMut::new();
        postgres_protocol::message::frontend::query(&sql, &mut q)
            .map_err(|e| ProxyError::error(SqlState::INTERNAL_ERROR, e.to_string()))?;
        conn.queue(&q);
        let mut scratch = BytesMut::new();
        queue.push_back(Expect::Query { fwd: true });
        let result = async {
            conn.flush().await?;
            relay::<S>(&mut conn, &mut queue, &mut scratch, None).await
        }
        .await;
        let shard_name = self.shared.pools.shard_name(shard);
        Pools::release(conn);
        result.map_err(|e| ProxyError::shard_unavailable(&shard_name, e))?;
        let value = first_data_value(&scratch).ok_or_else(|| {
            ProxyError::cross_shard_unsupported(format!(
                "cannot find shard key column \"{key}\" of table \"{table}\" on shard \"{shard_name}\"; name the columns in INSERT"
            ))
        })?;
        let ordinal: (usize, usize) = value
            .split_once(',')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| ProxyError::error(SqlState::INTERNAL_ERROR, "bad catalog answer"))?;
        self.shared
            .ordinals
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(table.to_owned(), ordinal);
        Ok(())
    }

    /// Check out a connection to `shard`, mapping failures to client errors. A shard
    /// PAUSEd from the admin console is waited for (up to `hold_timeout`).
    async fn checkout(&self, shard: ShardId) -> Result<PooledConn, ProxyError> {
        if self.shared.pauses.any() {
            let name = self.shared.pools.shard_name(shard);
            let deadline = tokio::time::Instant::now() + self.shared.config.server.hold_timeout;
            // boxed: rare, and the wait's state need not live in every session
            if let Err(e) = Box::pin(self.shared.pauses.wait(&name, deadline)).await {
                self.count_unreached(&name);
                return Err(ProxyError::error(
                    SqlState::LOCK_NOT_AVAILABLE,
                    format!("pgshard: {e}"),
                ));
            }
        }
        match self.shared.pools.get(shard).await {
            Ok(mut conn) => {
                if conn.stats.is_none() {
                    // once per backend connection
                    conn.stats = Some(
                        self.shared
                            .metrics
                            .shard(&self.shared.pools.shard_name(shard)),
                    );
                }
                Ok(conn)
            }
            Err(e) => Err(self.checkout_error(shard, e)),
        }
    }

    /// Single-shard or scatter, for the statement being run.
    fn route_kind(&self) -> RouteKind {
        if self.scatter_started.is_some() {
            RouteKind::Scatter
        } else {
            RouteKind::Single
        }
    }

    /// The client's error for a failed checkout (counted as an error of the shard).
    fn checkout_error(&self, shard: ShardId, e: BackendError) -> ProxyError {
        let name = self.shared.pools.shard_name(shard);
        self.count_unreached(&name);
        match e {
            BackendError::PoolTimeout(d) => ProxyError::error(
                SqlState::TOO_MANY_CONNECTIONS,
                format!(
                    "pgshard: no connection to shard \"{name}\" became free within {} ms",
                    d.as_millis()
                ),
            )
            .with_hint("raise [server] pool_size or pool_timeout_ms, or shorten transactions"),
            e @ BackendError::BreakerOpen { .. } => ProxyError::shard_unavailable(&name, e)
                .with_hint(
                    "pgshard keeps checking the shard and serves it again once checks pass ([health])",
                ),
            other => ProxyError::shard_unavailable(&name, other),
        }
    }

    /// Count a statement that could not reach shard `name` as one of its errors.
    fn count_unreached(&self, name: &str) {
        self.shared
            .metrics
            .shard(name)
            .record_unreached(self.route_kind());
    }

    /// Queue what a connection needs before serving this client: its settings.
    fn prepare_conn(&self, conn: &mut PooledConn, queue: &mut VecDeque<Expect>) {
        if self.settings.is_sticky() {
            // role / session authorization survive RESET ALL: never pool this one again
            conn.retire = true;
        }
        if conn.settings_sig == self.settings.sig() {
            return;
        }
        let mut buf = BytesMut::new();
        if conn.settings_sig != 0 {
            let _ = postgres_protocol::message::frontend::query("RESET ALL", &mut buf);
            queue.push_back(Expect::Query { fwd: false });
        }
        for stmt in self.settings.statements() {
            let _ = postgres_protocol::message::frontend::query(stmt, &mut buf);
            queue.push_back(Expect::Query { fwd: false });
        }
        conn.queue(&buf);
        conn.settings_sig = self.settings.sig();
    }

    /// Get the connection for a statement on `shard`: the attached one (which must be on
    /// that shard), or a fresh checkout with settings and any deferred BEGIN queued.
    async fn attach(
        &mut self,
        shard: ShardId,
        queue: &mut VecDeque<Expect>,
    ) -> Result<PooledConn, ProxyError> {
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Attached { conn } if conn.shard == shard || conn.status == TxnStatus::Idle => {
                Ok(conn)
            }
            // a failed transaction goes nowhere else: 25P02 until ROLLBACK
            Txn::Attached { conn } if conn.status == TxnStatus::Failed => {
                self.txn = Txn::Attached { conn };
                Err(ProxyError::in_failed_transaction())
            }
            // a transaction block reaching another shard
            Txn::Attached { conn } => self.join_shard(conn, shard, queue).await,
            Txn::Deferred { begin } => {
                self.txn_begin = Some(begin.clone());
                let mut conn = match self.checkout(shard).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        self.txn = Txn::Deferred { begin };
                        return Err(e);
                    }
                };
                self.prepare_conn(&mut conn, queue);
                let mut buf = BytesMut::new();
                let _ = postgres_protocol::message::frontend::query(&begin, &mut buf);
                conn.queue(&buf);
                queue.push_back(Expect::Query { fwd: false });
                self.begin_in_flight = true;
                Ok(conn)
            }
            Txn::Idle => {
                let mut conn = self.checkout(shard).await?;
                self.prepare_conn(&mut conn, queue);
                Ok(conn)
            }
            aborted @ Txn::Aborted { .. } => {
                self.txn = aborted;
                Err(ProxyError::in_failed_transaction())
            }
        }
    }

    /// [`attach`](Self::attach) for a simple query or FunctionCall: on failure the error
    /// and the ReadyForQuery that ends the statement are written, and None returned.
    async fn attach_or_refuse(
        &mut self,
        shard: ShardId,
        queue: &mut VecDeque<Expect>,
    ) -> Option<PooledConn> {
        match self.attach(shard, queue).await {
            Ok(conn) => Some(conn),
            Err(e) => {
                self.refuse(e);
                self.ready();
                None
            }
        }
    }

    /// Send what is queued on `conn`, relay the replies to the client, then keep or
    /// release the connection according to the backend's transaction status.
    async fn exchange(
        &mut self,
        mut conn: PooledConn,
        mut queue: VecDeque<Expect>,
    ) -> Result<RelayOutcome, SessionEnd> {
        *self.running.lock().await = vec![(conn.shard, conn.key.0, conn.key.1)];
        let started = std::time::Instant::now();
        let result = match conn.flush().await {
            Ok(()) => relay(&mut conn, &mut queue, &mut self.out, Some(&mut self.client)).await,
            Err(e) => Err(RelayError::Backend(e)),
        };
        if let Some(stats) = &conn.stats {
            let failed = !matches!(&result, Ok(outcome) if !outcome.saw_error);
            stats.record(RouteKind::Single, started.elapsed(), failed);
        }
        // Waits for a cancel being delivered right now, so it cannot reach the
        // connection's next user.
        self.running.lock().await.clear();
        match result {
            Ok(outcome) => {
                self.begin_in_flight = false;
                self.settle(conn);
                Ok(outcome)
            }
            Err(RelayError::Client(_)) | Err(RelayError::TooLarge(_)) => {
                // (no cap is set when relaying to the client)
                self.begin_in_flight = false;
                conn.broken = true;
                Pools::release(conn);
                Err(SessionEnd::ClientGone)
            }
            Err(RelayError::Backend(e)) => {
                let name = self.shared.pools.shard_name(conn.shard);
                tracing::warn!(shard = %name, error = %e, "backend connection failed mid-statement");
                let was_in_txn = conn.status != TxnStatus::Idle
                    || self.begin_in_flight
                    || !self.parked.is_empty();
                self.begin_in_flight = false;
                conn.broken = true;
                Pools::release(conn);
                ProxyError::shard_unavailable(&name, format!("connection lost: {e}"))
                    .encode(&mut self.out);
                self.txn = if was_in_txn {
                    Txn::Aborted { conn: None }
                } else {
                    Txn::Idle
                };
                self.batch.close();
                if queue.iter().any(|e| {
                    matches!(
                        e,
                        Expect::Query { fwd: true }
                            | Expect::Sync { fwd: true }
                            | Expect::Statement
                    )
                }) {
                    self.ready();
                } else {
                    // A flushed batch: the client's messages up to its Sync are dropped.
                    self.batch.fail();
                }
                Ok(RelayOutcome {
                    saw_error: true,
                    ..RelayOutcome::default()
                })
            }
        }
    }

    /// After a relay: keep the connection while a transaction or an unsynced batch
    /// needs it, else give it back.
    fn settle(&mut self, conn: PooledConn) {
        if conn.status == TxnStatus::Idle && !self.batch.is_open() {
            Pools::release(conn);
            self.txn = Txn::Idle;
            if !self.parked.is_empty() {
                // the transaction ended on one shard without pgshard's COMMIT/ROLLBACK
                // (statements that end transactions are refused while it spans
                // several shards): the others must not commit on their own
                tracing::error!(
                    "a transaction on several shards ended on one shard only; rolling back the others"
                );
                for mut other in std::mem::take(&mut self.parked) {
                    other.broken = true;
                    Pools::release(other);
                }
            }
            self.txn_done();
        } else {
            self.txn = Txn::Attached { conn };
        }
    }

    /// FunctionCall (F): pgshard cannot see which shard it touches; it runs on the
    /// transaction's shard, or the default shard outside a transaction.
    async fn on_function_call(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        if matches!(self.txn, Txn::Aborted { .. }) {
            self.refuse(ProxyError::in_failed_transaction());
            self.ready();
            return Ok(());
        }
        // A function call is not routed, so pgshard cannot tell which slots it writes:
        // counted like any statement, and refused while slots are being moved.
        self.in_flight.enter();
        if self.shared.holds.any() {
            self.refuse(ProxyError::error(
                SqlState::LOCK_NOT_AVAILABLE,
                "pgshard: function calls are refused while slots are being moved to another shard; retry",
            ));
            self.ready();
            return Ok(());
        }
        let shard = match &self.txn {
            Txn::Attached { conn } => conn.shard,
            _ => self.shared.map.load().default_shard,
        };
        let mut queue = VecDeque::new();
        let Some(mut conn) = self.attach_or_refuse(shard, &mut queue).await else {
            return Ok(());
        };
        conn.queue(frame.as_bytes());
        queue.push_back(Expect::Query { fwd: true });
        self.exchange(conn, queue).await.map(|_| ())
    }
}

/// Map a routing refusal to the error the client sees.
fn route_error(e: RouteError) -> ProxyError {
    ProxyError::error(e.sqlstate(), format!("pgshard: {e}"))
}

/// The first column of the first DataRow in a buffer of relayed messages.
fn first_data_value(buf: &[u8]) -> Option<String> {
    let mut rest = buf;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let msg = rest.get(..len + 1)?;
        if msg[0] == b'D' {
            let body = &msg[5..];
            let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
            if n < 1 {
                return None;
            }
            let flen = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
            if flen < 0 {
                return None;
            }
            let value = body.get(6..6 + flen as usize)?;
            return Some(String::from_utf8_lossy(value).into_owned());
        }
        rest = &rest[len + 1..];
    }
    None
}

#[cfg(test)]
mod size_tests {
    use std::sync::Arc;

    use tokio_util::sync::CancellationToken;

    use super::{Shared, run};

    /// An idle client costs its task (the session future) plus its buffers; with
    /// thousands of idle clients the future's size is most of the proxy's memory, so a
    /// change that makes it grow past this bound should be a deliberate one.
    #[test]
    fn session_future_stays_small() {
        let config =
            crate::config::parse(include_str!("../config/testdata/base.toml"), "base.toml")
                .expect("test map parses");
        let shared = Arc::new(Shared::new(Arc::new(config), CancellationToken::new()));
        let (stream, _other) = tokio::io::duplex(64);
        let future = run(super::Incoming::plain(stream), shared, None);
        let size = std::mem::size_of_val(&future);
        println!("session future: {size} bytes");
        assert!(size < 4 * 1024, "session future is {size} bytes");
    }

    /// The same with the stream type the server uses (plain or TLS).
    #[test]
    fn session_future_over_a_socket_stays_small() {
        let config =
            crate::config::parse(include_str!("../config/testdata/base.toml"), "base.toml")
                .expect("test map parses");
        let shared = Arc::new(Shared::new(Arc::new(config), CancellationToken::new()));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .expect("bind");
            let stream = tokio::net::TcpStream::connect(listener.local_addr().expect("addr"))
                .await
                .expect("connect");
            let incoming = super::Incoming::plain(crate::tls::Stream::Plain(stream));
            let future = run(incoming, shared, None);
            let size = std::mem::size_of_val(&future);
            println!("session future over a socket: {size} bytes");
            assert!(size < 4 * 1024, "session future is {size} bytes");
        });
    }
}
