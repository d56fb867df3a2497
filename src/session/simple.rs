//! Simple query protocol: Query (F) → route → one shard, or a broadcast for DDL.

use std::collections::VecDeque;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::relay::{Expect, relay};
use super::settings::UNKNOWN_SIG;
use super::txn::Txn;
use super::{Session, SessionEnd};
use crate::backend::{PooledConn, Pools};
use crate::protocol::Frame;
use crate::protocol::SqlState;
use crate::protocol::frontend::decode_query;
use crate::protocol::reply::{self, ProxyError, TxnStatus};
use crate::router::{Merge, NoParams, Route, Target};
use crate::sql::{Analysis, SharedAnalysis, StatementKind};

/// Why a write to a reference table is refused inside a transaction block.
const REFERENCE_WRITE_IN_TXN: &str = "pgshard: a write to a reference table runs on every shard and cannot run inside a transaction block yet (cross-shard transactions do not exist); run it outside BEGIN/COMMIT";

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn on_query(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        self.run_query(frame, true).await
    }

    /// One Query message. `whole`: it came from the client, and a string of several
    /// statements that cannot run on one shard as a whole may be run statement by
    /// statement (`run_split`).
    async fn run_query(&mut self, frame: Frame, whole: bool) -> Result<(), SessionEnd> {
        let sql = match decode_query(frame.body()) {
            Ok(sql) => sql.to_owned(),
            Err(e) if e.problem == "invalid UTF-8" => {
                self.refuse(ProxyError::error(
                    SqlState::CHARACTER_NOT_IN_REPERTOIRE,
                    "invalid byte sequence for encoding \"UTF8\"",
                ));
                self.ready();
                return Ok(());
            }
            Err(e) => return Err(SessionEnd::Fatal(ProxyError::protocol_violation(e))),
        };
        let (analysis, routed) = self.analyze_simple(&sql).await;
        let kind = match &*analysis {
            Analysis::Parsed(stmts) if stmts.len() == 1 => Some(stmts[0].kind.clone()),
            Analysis::Parsed(stmts) if stmts.is_empty() => {
                // Empty query: Postgres answers EmptyQueryResponse.
                self.out.extend_from_slice(b"I\0\0\0\x04");
                self.ready();
                return Ok(());
            }
            _ => None,
        };
        let several = matches!(&*analysis, Analysis::Parsed(stmts) if stmts.len() > 1);
        let controls = controls_transactions(&analysis);
        // a string that ends (or nests) transactions while one is open runs statement by
        // statement, so its COMMIT is the whole transaction's and never one shard's
        if whole && several && (self.distributed() || controls && self.txn.in_block()) {
            return Box::pin(self.run_split(&sql)).await;
        }
        if several && controls {
            // a BEGIN sent whole to one shard: its text is what the transaction replays on
            // the shards it joins later
            let begins = crate::sql::split::split_statements(&sql)
                .into_iter()
                .flatten()
                .rfind(|p| {
                    matches!(&*self.shared.plans.get(p), Analysis::Parsed(s)
                        if s.len() == 1 && s[0].kind == StatementKind::Begin)
                })
                .map(str::to_owned);
            if begins.is_some() {
                self.txn_begin = begins;
            }
        }
        // The rare paths below are boxed: their state stays out of the common
        // statement's future (which is polled, and was copied, for every statement).
        if self.distributed()
            && Box::pin(self.distributed_control(kind.as_ref(), &analysis, &sql)).await
        {
            return Ok(());
        }
        if self.local_transaction_control(kind.as_ref(), &sql).await? {
            return Ok(());
        }
        if matches!(kind, Some(StatementKind::SqlPrepared)) {
            return Box::pin(self.on_sql_prepared(&sql)).await;
        }
        if matches!(kind, Some(StatementKind::Savepoint)) && self.txn.in_block() {
            // savepoints are per shard: the transaction stays on the shards it has
            self.txn_savepoint = true;
        }
        let routed = match routed {
            Some(routed) => routed,
            None => self.route(&sql, &analysis, &NoParams).await,
        };
        let route = match routed {
            Ok(route) => route,
            // statements for different shards in one string: one at a time
            Err(e)
                if whole
                    && several
                    && e.code == SqlState::FEATURE_NOT_SUPPORTED
                    && self.shared.config.transactions.two_phase =>
            {
                return Box::pin(self.run_split(&sql)).await;
            }
            Err(e) => {
                self.refuse(e);
                self.ready();
                return Ok(());
            }
        };
        tracing::trace!(target = ?route.target, reason = %route.reason, "routed");
        let map = self.shared.map.load_full();
        if let Target::Scatter(shards, merge @ (Merge::CopyIn(_) | Merge::CopyOut { .. })) =
            &route.target
        {
            // COPY on several shards: session/copy.rs
            if kind.is_none() {
                self.refuse(ProxyError::cross_shard_unsupported(
                    "pgshard: a COPY on several shards must be sent alone, not in a multi-statement query string",
                ));
                self.ready();
                return Ok(());
            }
            let request = |conn: &mut PooledConn, queue: &mut VecDeque<Expect>| {
                conn.queue(frame.as_bytes());
                queue.push_back(Expect::Query { fwd: true });
            };
            return Box::pin(self.copy_scatter(shards, merge, false, request)).await;
        }
        if let Target::Scatter(shards, merge) = &route.target {
            return Box::pin(self.scatter_query(&frame, shards.clone(), merge.clone())).await;
        }
        let shard = match (route.target.clone(), &self.txn) {
            (_, Txn::Attached { conn }) => {
                let pinned = conn.shard;
                match route.target {
                    // another shard: the transaction joins it (attach)
                    Target::One(s) => s,
                    Target::All if map.shard_count() > 1 => {
                        self.refuse(ProxyError::cross_shard_unsupported(
                            "pgshard: DDL runs on every shard and cannot run inside a transaction block; run it outside BEGIN/COMMIT",
                        ));
                        self.ready();
                        return Ok(());
                    }
                    Target::AllCopies if map.shard_count() > 1 => {
                        self.refuse(ProxyError::cross_shard_unsupported(REFERENCE_WRITE_IN_TXN));
                        self.ready();
                        return Ok(());
                    }
                    _ => pinned,
                }
            }
            (Target::One(s), _) => s,
            (Target::Any, _) => map.default_shard,
            (Target::All, Txn::Idle) if map.shard_count() > 1 => {
                return Box::pin(self.broadcast(&frame, true)).await;
            }
            (Target::All, Txn::Deferred { .. }) if map.shard_count() > 1 => {
                self.refuse(ProxyError::cross_shard_unsupported(
                    "pgshard: DDL runs on every shard and cannot run inside a transaction block; run it outside BEGIN/COMMIT",
                ));
                self.ready();
                return Ok(());
            }
            (Target::All, _) => 0,
            (Target::OneCopy, Txn::Idle) => self.next_copy_shard(map.shard_count()),
            // a transaction that has not chosen a shard: the default shard, as for any
            // other statement that names no sharded table
            (Target::OneCopy, _) => map.default_shard,
            (Target::AllCopies, Txn::Idle) if map.shard_count() > 1 => {
                return Box::pin(self.broadcast(&frame, false)).await;
            }
            (Target::AllCopies, Txn::Deferred { .. }) if map.shard_count() > 1 => {
                self.refuse(ProxyError::cross_shard_unsupported(REFERENCE_WRITE_IN_TXN));
                self.ready();
                return Ok(());
            }
            (Target::AllCopies, _) => 0,
            (Target::Scatter(..), _) => unreachable!("handled above"),
        };
        if matches!(route.target, Target::All) {
            self.shared.forget_ordinals();
        }
        let mut queue = VecDeque::new();
        let Some(mut conn) = self.attach_or_refuse(shard, &mut queue).await else {
            return Ok(());
        };
        if touches_settings(&analysis) {
            // Whatever the statement did to session state, the next user of this
            // connection starts from a reset.
            conn.settings_sig = UNKNOWN_SIG;
        }
        if leaves_untracked_state(&analysis)
            || matches!(route.target, Target::All)
            || touches_settings(&analysis)
                && super::settings::sets_sticky_state(&sql.to_ascii_lowercase())
        {
            conn.retire = true;
        }
        conn.queue(frame.as_bytes());
        queue.push_back(if self.suppress_ready {
            Expect::Statement
        } else {
            Expect::Query { fwd: true }
        });
        let outcome = self.exchange(conn, queue).await?;
        let resets_session = matches!(kind, Some(StatementKind::Other))
            && sql
                .trim_start()
                .to_ascii_lowercase()
                .starts_with("discard all");
        if (matches!(kind, Some(StatementKind::Set { local: false })) || resets_session)
            && !outcome.saw_error
            && !self.txn.in_block()
        {
            // A session-level SET outside a transaction: it follows the client to
            // whichever connection serves it next. (Inside a transaction block it is
            // not recorded: see docs/ARCHITECTURE.md, "Session state".)
            self.settings.record(&sql);
        }
        Ok(())
    }

    /// The analysis of a simple query, and its route when it was found from the shape
    /// shared by statements differing only in constants ([`crate::sql::lift`]).
    ///
    /// The shape's analysis stands in for the statement's own only for a single plain
    /// SELECT/INSERT/UPDATE/DELETE that routes to one place: then the client's text runs
    /// there untouched, and nothing else the session does depends on the constants.
    /// Anything else (several shards, a refusal, another kind of statement) is analysed
    /// and routed from the client's own text, exactly as without the shortcut.
    ///
    /// A statement that waited for a held slot and timed out gets that error here, so it
    /// does not wait a second time on the slow path.
    async fn analyze_simple(
        &mut self,
        sql: &str,
    ) -> (SharedAnalysis, Option<Result<Route, ProxyError>>) {
        if let Some((analysis, lifted)) = self.shared.plans.get_lifted(sql) {
            let plain = matches!(&*analysis, Analysis::Parsed(stmts) if stmts.len() == 1
                && matches!(stmts[0].kind, StatementKind::Select | StatementKind::Insert
                    | StatementKind::Update | StatementKind::Delete));
            if plain {
                match self.route(sql, &analysis, &lifted).await {
                    Ok(route)
                        if matches!(
                            route.target,
                            Target::One(_) | Target::Any | Target::OneCopy
                        ) =>
                    {
                        return (analysis, Some(Ok(route)));
                    }
                    Err(e) if e.code == SqlState::LOCK_NOT_AVAILABLE => {
                        return (self.shared.plans.get(sql), Some(Err(e)));
                    }
                    _ => {}
                }
            }
        }
        (self.shared.plans.get(sql), None)
    }

    /// A query string whose statements need different shards, run one statement at a
    /// time with Postgres' semantics: outside a transaction block the whole string is one
    /// implicit transaction (committed at its end with two-phase commit when it used
    /// several shards, rolled back entirely if a statement fails); a BEGIN in the string
    /// turns it into an explicit one; a failed statement skips the rest of the string.
    /// One ReadyForQuery ends it.
    async fn run_split(&mut self, sql: &str) -> Result<(), SessionEnd> {
        let Some(parts) = crate::sql::split::split_statements(sql) else {
            self.refuse(ProxyError::cross_shard_unsupported(
                "pgshard: this query string could not be split into statements",
            ));
            self.ready();
            return Ok(());
        };
        let parts: Vec<String> = parts.into_iter().map(str::to_owned).collect();
        let mut implicit = matches!(self.txn, Txn::Idle);
        if implicit {
            self.txn = Txn::Deferred {
                begin: "BEGIN".to_owned(),
            };
        }
        self.suppress_ready = true;
        let mut result = Ok(());
        for part in parts {
            let analysis = self.shared.plans.get(&part);
            let kind = match &*analysis {
                Analysis::Parsed(stmts) if stmts.len() == 1 => Some(stmts[0].kind.clone()),
                _ => None,
            };
            if implicit && matches!(kind, Some(StatementKind::Begin)) {
                // the implicit block becomes the client's explicit transaction (its
                // options apply to the shards it joins from now on)
                implicit = false;
                self.txn_begin = Some(part.clone());
                if let Txn::Deferred { begin } = &mut self.txn {
                    *begin = part.clone();
                }
                reply::command_complete("BEGIN", &mut self.out);
                continue;
            }
            let mut m = BytesMut::with_capacity(part.len() + 6);
            m.extend_from_slice(b"Q");
            m.extend_from_slice(&((part.len() + 5) as i32).to_be_bytes());
            m.extend_from_slice(part.as_bytes());
            m.extend_from_slice(b"\0");
            result = Box::pin(self.run_query(Frame::from_message(m.freeze()), false)).await;
            if result.is_err() || self.txn.status() == TxnStatus::Failed {
                break;
            }
            if matches!(self.txn, Txn::Idle) {
                // after COMMIT/ROLLBACK the rest of the string is a new implicit block
                implicit = true;
                self.txn = Txn::Deferred {
                    begin: "BEGIN".to_owned(),
                };
            }
        }
        self.suppress_ready = false;
        if result.is_ok() && implicit {
            self.end_implicit().await;
        }
        self.ready();
        result
    }

    /// End the implicit transaction of a query string run statement by statement:
    /// commit it, or roll it back if a statement failed.
    pub(super) async fn end_implicit(&mut self) {
        let failed = self.txn.status() == TxnStatus::Failed;
        if self.distributed() {
            if let Err(e) = self.end_distributed(!failed).await {
                e.encode(&mut self.out);
            }
            return;
        }
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Attached { mut conn } if !failed => {
                // (a failed COMMIT's error reaches the client)
                match conn.simple_query("COMMIT").await {
                    Ok(a) => {
                        if let Some(message) = a.error {
                            ProxyError::error(
                                SqlState::from_shard(
                                    a.sqlstate.as_deref(),
                                    SqlState::INTERNAL_ERROR,
                                ),
                                message,
                            )
                            .encode(&mut self.out);
                        }
                    }
                    Err(e) => {
                        conn.broken = true;
                        let name = self.shared.pools.shard_name(conn.shard);
                        ProxyError::shard_unavailable(&name, e).encode(&mut self.out);
                    }
                }
                Pools::release(conn);
                self.txn = Txn::Idle;
            }
            Txn::Attached { conn } | Txn::Aborted { conn: Some(conn) } => {
                self.rollback_and_release(conn).await;
            }
            _ => {}
        }
        self.txn_done();
    }

    /// Transaction control while the transaction spans several shards: COMMIT runs
    /// two-phase commit, ROLLBACK rolls back every shard; savepoints, and query strings
    /// that could end the transaction on one shard only (several statements with
    /// transaction control, text pgshard cannot parse), are refused. Returns true when
    /// the statement was answered here.
    async fn distributed_control(
        &mut self,
        kind: Option<&StatementKind>,
        analysis: &Analysis,
        sql: &str,
    ) -> bool {
        let refuse = |what: &str| {
            ProxyError::cross_shard_unsupported(format!(
                "pgshard: {what} inside a transaction that spans several shards is not supported"
            ))
        };
        match kind {
            Some(StatementKind::Commit | StatementKind::Rollback)
                if !sql.to_ascii_lowercase().contains("chain") =>
            {
                let commit = matches!(kind, Some(StatementKind::Commit));
                self.end_distributed_reply(commit).await;
                self.ready();
                true
            }
            Some(StatementKind::Savepoint) => {
                self.refuse(refuse("a savepoint"));
                self.ready();
                true
            }
            None => {
                let controls = controls_transactions(analysis);
                if controls {
                    self.refuse(refuse(
                        "a query string with transaction control among several statements, or one pgshard cannot parse,",
                    ));
                    self.ready();
                }
                controls
            }
            _ => false,
        }
    }

    /// BEGIN / COMMIT / ROLLBACK that pgshard answers without a backend. Returns true
    /// when the statement was handled here.
    async fn local_transaction_control(
        &mut self,
        kind: Option<&StatementKind>,
        sql: &str,
    ) -> Result<bool, SessionEnd> {
        let Some(kind) = kind else {
            if matches!(self.txn, Txn::Aborted { .. }) {
                self.refuse(ProxyError::in_failed_transaction());
                self.ready();
                return Ok(true);
            }
            return Ok(false);
        };
        match (kind, &self.txn) {
            (
                StatementKind::Begin | StatementKind::Commit | StatementKind::Rollback,
                Txn::Idle | Txn::Deferred { .. } | Txn::Aborted { .. },
            ) if !(matches!(kind, StatementKind::Begin)
                && matches!(self.txn, Txn::Aborted { .. })) =>
            {
                Box::pin(self.transaction_control_locally(kind, sql)).await;
            }
            (StatementKind::Savepoint, Txn::Aborted { conn: Some(_) })
                if sql
                    .trim_start()
                    .to_ascii_lowercase()
                    .starts_with("rollback") =>
            {
                // pgshard refused a statement, the backend's transaction is intact:
                // ROLLBACK TO SAVEPOINT recovers it there, as it would in Postgres.
                if let Txn::Aborted { conn: Some(conn) } =
                    std::mem::replace(&mut self.txn, Txn::Idle)
                {
                    self.txn = Txn::Attached { conn };
                }
                return Ok(false);
            }
            (_, Txn::Aborted { .. }) => {
                self.refuse(ProxyError::in_failed_transaction());
            }
            _ => return Ok(false),
        }
        self.ready();
        Ok(true)
    }

    /// DDL (`ddl`) or a write to a reference table, outside a transaction: run on every
    /// shard inside a transaction each, commit everywhere only if it succeeded
    /// everywhere, otherwise roll back everywhere and report the first failure. The
    /// answer is the first shard's (for a reference table every copy holds the same
    /// rows). The commits are not atomic across shards: one may fail after another
    /// succeeded, which is logged and reported.
    async fn broadcast(&mut self, frame: &Frame, ddl: bool) -> Result<(), SessionEnd> {
        self.broadcast_request(ddl, |conn, queue| {
            conn.queue(frame.as_bytes());
            queue.push_back(Expect::Query { fwd: true });
        })
        .await
    }

    /// Run what `request` queues on every shard, each inside a transaction, committed
    /// only if it succeeded on all of them (DDL, reference-table writes); the answer is
    /// the first shard's, or the first error.
    pub(super) async fn broadcast_request(
        &mut self,
        ddl: bool,
        mut request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<(), SessionEnd> {
        let map = self.shared.map.load_full();
        if ddl {
            self.shared.forget_ordinals();
        }
        let mut conns = Vec::with_capacity(map.shard_count());
        // Always acquire in shard order, so two broadcasts cannot deadlock on pools.
        for shard in 0..map.shard_count() {
            match self.checkout(shard).await {
                Ok(conn) => conns.push(conn),
                Err(e) => {
                    conns.into_iter().for_each(Pools::release);
                    self.refuse(e);
                    self.ready();
                    return Ok(());
                }
            }
        }
        let mut begin = BytesMut::new();
        let _ = postgres_protocol::message::frontend::query("BEGIN", &mut begin);
        let mut outputs = Vec::with_capacity(conns.len());
        let mut queues = Vec::with_capacity(conns.len());
        for conn in conns.iter_mut() {
            // DDL may create temporary objects that live in the session.
            conn.retire |= ddl;
            let mut queue = VecDeque::new();
            self.prepare_conn(conn, &mut queue);
            conn.queue(&begin);
            queue.push_back(Expect::Query { fwd: false });
            request(conn, &mut queue);
            if conn.flush().await.is_err() {
                conn.broken = true;
            }
            queues.push(queue);
        }
        let mut failed: Option<usize> = None;
        let mut failed_parses: Vec<String> = Vec::new();
        for (i, (conn, queue)) in conns.iter_mut().zip(queues.iter_mut()).enumerate() {
            let mut out = BytesMut::new();
            let ok = if conn.broken {
                ProxyError::shard_unavailable(map.shard_name(i), "connection lost")
                    .encode(&mut out);
                false
            } else {
                match relay::<S>(conn, queue, &mut out, None).await {
                    Ok(outcome) => {
                        failed_parses.extend(outcome.failed_parses);
                        !outcome.saw_error
                    }
                    Err(e) => {
                        out.clear();
                        ProxyError::shard_unavailable(map.shard_name(i), e).encode(&mut out);
                        false
                    }
                }
            };
            if !ok && failed.is_none() {
                failed = Some(i);
            }
            outputs.push(out);
        }
        let finish = if failed.is_none() {
            "COMMIT"
        } else {
            "ROLLBACK"
        };
        let mut end = BytesMut::new();
        let _ = postgres_protocol::message::frontend::query(finish, &mut end);
        let mut commit_error: Option<BytesMut> = None;
        for (i, conn) in conns.iter_mut().enumerate() {
            if conn.broken {
                continue;
            }
            conn.queue(&end);
            let mut queue = VecDeque::from([Expect::Query { fwd: false }]);
            let mut out = BytesMut::new();
            let result = match conn.flush().await {
                Ok(()) => relay::<S>(conn, &mut queue, &mut out, None).await,
                Err(e) => Err(e.into()),
            };
            match result {
                Ok(outcome) if !outcome.saw_error => {}
                Ok(_) => commit_error = commit_error.or(Some(out)),
                Err(e) => {
                    let mut out = BytesMut::new();
                    ProxyError::shard_unavailable(map.shard_name(i), e).encode(&mut out);
                    commit_error = commit_error.or(Some(out));
                }
            }
        }
        conns.into_iter().for_each(Pools::release);
        for name in &failed_parses {
            self.stmts.remove(name);
        }
        // Again after the commit: a concurrent INSERT may have learned the old column
        // order while the DDL was in flight.
        if ddl {
            self.shared.forget_ordinals();
        }
        match (failed, commit_error) {
            (Some(i), _) => append_without_ready(&outputs[i], &mut self.out),
            (None, Some(e)) => {
                tracing::error!(
                    ddl,
                    "broadcast committed on some shards but failed to commit on another"
                );
                append_without_ready(&e, &mut self.out);
            }
            (None, None) => append_without_ready(&outputs[0], &mut self.out),
        }
        self.ready();
        Ok(())
    }
}

/// Whether a query string may begin or end a transaction or savepoint (text pgshard
/// cannot parse may).
fn controls_transactions(analysis: &Analysis) -> bool {
    match analysis {
        Analysis::Parsed(stmts) => stmts.iter().any(|s| {
            matches!(
                s.kind,
                StatementKind::Begin
                    | StatementKind::Commit
                    | StatementKind::Rollback
                    | StatementKind::Savepoint
            )
        }),
        Analysis::Unparsed { .. } => true,
    }
}

/// Whether a query string may change session state (SET, RESET, DISCARD, or a
/// statement pgshard cannot see into).
pub(super) fn touches_settings(analysis: &Analysis) -> bool {
    match analysis {
        Analysis::Parsed(stmts) => stmts.iter().any(|s| {
            matches!(
                s.kind,
                StatementKind::Set { local: false } | StatementKind::Other
            )
        }),
        Analysis::Unparsed { .. } => true,
    }
}

/// Whether a query string may leave session state that a settings reset does not undo
/// (DISCARD/DEALLOCATE dropping server-side statements, LISTEN, temporary objects
/// created by DDL, or anything pgshard cannot parse): its connection is not pooled again.
pub(super) fn leaves_untracked_state(analysis: &Analysis) -> bool {
    match analysis {
        Analysis::Parsed(stmts) => stmts.iter().any(|s| {
            matches!(
                s.kind,
                StatementKind::Other | StatementKind::SqlPrepared | StatementKind::Ddl
            )
        }),
        Analysis::Unparsed { .. } => true,
    }
}

/// Copy relayed messages, dropping ReadyForQuery (the session writes its own).
fn append_without_ready(buf: &[u8], out: &mut BytesMut) {
    let mut rest = buf;
    while rest.len() >= 5 {
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]) as usize;
        let Some(msg) = rest.get(..len + 1) else {
            break;
        };
        if msg[0] != b'Z' {
            out.extend_from_slice(msg);
        }
        rest = &rest[len + 1..];
    }
}
