//! Extended query protocol under transaction pooling.
//!
//! Parse/Bind/Describe/Execute/Close are collected until Sync (or Flush), because the
//! shard is only known at Bind, from the parameter values. Then the batch is translated
//! for the chosen connection: client statement names become server names derived from
//! the statement text (`pgshard_<hash>`), prepared lazily on connections that lack them,
//! and Parse/Close of statements the proxy keeps are answered by the proxy in order.
//! A statement the proxy refuses fails the batch as a server error would: the error is
//! sent at once, everything up to Sync is skipped, and work already sent for the batch
//! is aborted on the backend.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::{BufMut, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite};

use super::relay::Expect;
use super::settings::UNKNOWN_SIG;
use super::simple::{leaves_untracked_state, touches_settings};
use super::statements::{
    encode_bind_renamed, encode_describe_statement, encode_parse, ensure_prepared, server_name,
    statement_hash,
};
use super::txn::Txn;
use super::{ClientStmt, Session, SessionEnd};
use crate::backend::PooledConn;
use crate::protocol::frontend::{decode_bind, decode_execute, decode_parse, decode_target};
use crate::protocol::reply::{self, ProxyError, TxnStatus};
use crate::protocol::{Frame, SqlState};
use crate::router::{Merge, MergeRequest, Param, ParamSource, ShardSet, Target};
use crate::scatter::plan::MergePlan;
use crate::sharding::ShardId;
use crate::sql::{Analysis, StatementKind};

/// Text of a statement that fails to parse: sent to make a backend fail the current
/// batch on purpose (its error is swallowed), so the batch's implicit transaction rolls
/// back as it would have in Postgres.
const ABORT_STATEMENT: &str = "pgshard: abort batch";

/// One collected client message. Statements are captured when the message arrives, so
/// a later Close or re-Parse in the same batch cannot change what an earlier message
/// refers to.
enum Item {
    /// Parse of a client statement (already recorded in the session's statements)
    Parse {
        name: String,
        stmt: ClientStmt,
        frame: Frame,
    },
    /// Bind from a client statement
    Bind {
        frame: Frame,
        name: String,
        stmt: ClientStmt,
        rest_offset: usize,
    },
    /// Describe of a statement
    DescribeStmt { name: String, stmt: ClientStmt },
    /// Close of a statement: answered by the proxy
    CloseStmt,
    /// forwarded as is, with the reply it owes
    Raw {
        frame: Frame,
        expect: Option<Expect>,
    },
}

impl Item {
    /// The statement kind this message is about, if it names a statement.
    fn statement_kind(&self) -> Option<Option<StatementKind>> {
        match self {
            Item::Parse { stmt, .. }
            | Item::Bind { stmt, .. }
            | Item::DescribeStmt { stmt, .. } => Some(single_kind(&stmt.analysis)),
            _ => None,
        }
    }
}

/// The messages collected since the last Sync.
#[derive(Default)]
pub(super) struct Batch {
    items: Vec<Item>,
    /// shard required by the Binds so far
    shard: Option<ShardId>,
    /// an error was reported: the client's messages are dropped until Sync
    failed: bool,
    /// the attached backend itself hit an error and skips to Sync (no need to abort it)
    backend_skipping: bool,
    /// part of the batch was already flushed to the attached backend
    open: bool,
    /// kinds of the statements bound, in order (for transaction control and SET)
    bound: Vec<(StatementKind, Arc<str>)>,
    /// the batch's one Bind needs several shards: run it on each and merge at Sync
    scatter: Option<(ShardSet, MergeRequest)>,
    /// the batch's one Bind writes a reference table: run it on every shard at Sync,
    /// committed only where it succeeded everywhere
    copies: bool,
    /// the batch's Binds need different shards: it runs shard by shard in one
    /// transaction (implicit unless the client's own), see `run_multi_shard_batch`
    multi: bool,
    /// the shard of each Bind so far, in order (None: any shard)
    bind_shards: Vec<Option<ShardId>>,
    /// a COMMIT/ROLLBACK was bound in this batch
    has_control: bool,
    /// a multi-shard batch already ran part of its messages (at a Flush): its
    /// transaction is open, and `multi_implicit` says whether pgshard began it
    multi_begun: bool,
    /// the multi-shard batch's transaction is the batch's own (implicit), not the client's
    multi_implicit: bool,
    /// a shard for reads of reference tables when nothing else chooses one
    copy: Option<ShardId>,
}

impl Batch {
    /// True while a flushed batch waits for its Sync (a backend stays attached).
    pub(super) fn is_open(&self) -> bool {
        self.open
    }

    /// True while the client's messages are being dropped until Sync.
    pub(super) fn is_failed(&self) -> bool {
        self.failed
    }

    /// Forget everything (after Sync, or when the backend is lost).
    pub(super) fn close(&mut self) {
        *self = Batch::default();
    }

    /// Drop the client's messages until Sync.
    pub(super) fn fail(&mut self) {
        self.items.clear();
        self.failed = true;
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(super) async fn on_extended(&mut self, frame: Frame) -> Result<(), SessionEnd> {
        let tag = frame.tag();
        if self.batch.failed && tag != b'S' {
            return Ok(());
        }
        let bad = |e: crate::protocol::frontend::DecodeError| {
            SessionEnd::Fatal(ProxyError::protocol_violation(e))
        };
        match tag {
            b'P' => {
                let parse = decode_parse(frame.body()).map_err(bad)?;
                if !parse.name.is_empty() && self.stmts.contains_key(parse.name) {
                    let name = parse.name.to_owned();
                    self.fail_batch(ProxyError::error(
                        SqlState::DUPLICATE_PREPARED_STATEMENT,
                        format!("prepared statement \"{name}\" already exists"),
                    ));
                    return Ok(());
                }
                let stmt = ClientStmt {
                    analysis: self.shared.plans.get(parse.sql),
                    hash: statement_hash(parse.sql, parse.param_types),
                    sql: Arc::from(parse.sql),
                    param_types: Bytes::copy_from_slice(parse.param_types),
                };
                let name = parse.name.to_owned();
                self.stmts.insert(name.clone(), stmt.clone());
                self.batch.items.push(Item::Parse { name, stmt, frame });
            }
            b'B' => {
                let bind = decode_bind(frame.body()).map_err(bad)?;
                let Some(stmt) = self.stmts.get(bind.statement).cloned() else {
                    self.fail_batch(ProxyError::unknown_statement(bind.statement));
                    return Ok(());
                };
                let kind = single_kind(&stmt.analysis);
                let exits = matches!(kind, Some(StatementKind::Commit | StatementKind::Rollback));
                if matches!(self.txn, Txn::Aborted { .. }) && !exits {
                    self.fail_batch(ProxyError::in_failed_transaction());
                    return Ok(());
                }
                if matches!(kind, Some(StatementKind::Savepoint)) {
                    if self.distributed() {
                        self.fail_batch(ProxyError::cross_shard_unsupported(
                            "pgshard: a savepoint inside a transaction that spans several shards is not supported",
                        ));
                        return Ok(());
                    }
                    if self.txn.in_block() {
                        self.txn_savepoint = true;
                    }
                }
                if self.distributed() && stmt.analysis_unparsed() {
                    self.fail_batch(ProxyError::cross_shard_unsupported(
                        "pgshard: a statement pgshard cannot parse inside a transaction that spans several shards is not supported",
                    ));
                    return Ok(());
                }
                let params = DeclaredParams {
                    bind: &bind,
                    types: &stmt.param_types,
                };
                let route = match self.route(&stmt.sql, &stmt.analysis, &params).await {
                    Ok(route) => route,
                    Err(e) => {
                        self.fail_batch(e);
                        return Ok(());
                    }
                };
                let control = matches!(kind, Some(StatementKind::Commit | StatementKind::Rollback));
                if let Err(e) = self.transaction_control_fits(&route.target, control) {
                    self.fail_batch(e);
                    return Ok(());
                }
                if let Err(e) = self.add_target(route.target, bind.result_binary(0)) {
                    self.fail_batch(e);
                    return Ok(());
                }
                if let Some(kind) = kind {
                    self.batch.bound.push((kind, stmt.sql.clone()));
                }
                self.portal_epoch = self.route_epoch;
                let name = bind.statement.to_owned();
                let rest_offset = bind.rest_offset;
                self.batch.items.push(Item::Bind {
                    frame,
                    name,
                    stmt,
                    rest_offset,
                });
            }
            b'D' => {
                let target = decode_target(frame.body(), "Describe").map_err(bad)?;
                if target.kind == b'S' {
                    let Some(stmt) = self.stmts.get(target.name).cloned() else {
                        self.fail_batch(ProxyError::unknown_statement(target.name));
                        return Ok(());
                    };
                    let name = target.name.to_owned();
                    self.batch.items.push(Item::DescribeStmt { name, stmt });
                } else {
                    self.batch.items.push(Item::Raw {
                        frame,
                        expect: Some(Expect::Describe),
                    });
                }
            }
            b'E' => {
                let (_, max_rows) = decode_execute(frame.body()).map_err(bad)?;
                if !self
                    .batch
                    .items
                    .iter()
                    .any(|i| matches!(i, Item::Bind { .. }))
                {
                    // A portal bound in an earlier batch runs where it was routed then,
                    // unrouted now: counted for HOLD, and refused while slots are held or
                    // once the map changed, since its shard may have given the rows away.
                    self.in_flight.enter();
                    if self.shared.holds.any() || self.shared.map.load().epoch != self.portal_epoch
                    {
                        self.fail_batch(ProxyError::error(
                            SqlState::LOCK_NOT_AVAILABLE,
                            "pgshard: this portal was bound before slots moved to another shard; roll back and retry",
                        ));
                        return Ok(());
                    }
                }
                if max_rows != 0 && self.batch.scatter.is_some() {
                    self.fail_batch(ProxyError::cross_shard_unsupported(
                        "pgshard: fetching a statement on several shards in portions (Execute with a row limit) is not supported yet",
                    ));
                    return Ok(());
                }
                self.batch.items.push(Item::Raw {
                    frame,
                    expect: Some(Expect::Execute),
                });
            }
            b'C' => {
                let target = decode_target(frame.body(), "Close").map_err(bad)?;
                if target.kind == b'S' {
                    // Statements live in the proxy; server-side copies are shared by
                    // text and stay cached on their connections.
                    let name = target.name.to_owned();
                    self.stmts.remove(&name);
                    self.batch.items.push(Item::CloseStmt);
                } else {
                    self.batch.items.push(Item::Raw {
                        frame,
                        expect: Some(Expect::Close { fwd: true }),
                    });
                }
            }
            // a batch running shard by shard answers at Sync (drivers that pipeline
            // flush to read results early, and read them as they come)
            b'H' if self.batch.multi && !self.batch.failed => {
                return Box::pin(self.run_multi_shard_batch(false)).await;
            }
            b'H' if self.batch.multi => {}
            b'H' if (self.batch.scatter.is_some() || self.batch.copies) && !self.batch.failed => {
                // The merged answer exists only once every shard replied, at Sync.
                self.fail_batch(ProxyError::cross_shard_unsupported(
                    "pgshard: Flush inside a batch with a statement on several shards is not supported yet; send Sync",
                ));
            }
            b'H' => {
                if !self.batch.items.is_empty() && !self.batch.failed {
                    self.batch.items.push(Item::Raw {
                        frame,
                        expect: None,
                    });
                    return Box::pin(self.send_batch(false)).await;
                }
            }
            // Boxed: the exchange with the backends is by far the largest state; kept
            // out of line, the messages that only join the batch stay cheap to poll.
            b'S' => return Box::pin(self.send_batch(true)).await,
            _ => unreachable!("dispatched by tag"),
        }
        Ok(())
    }

    /// A batch whose Binds need different shards (a pipelined `executemany`): each run
    /// of messages for one shard goes to that shard's connection of one transaction —
    /// implicit, like the batch's own in Postgres, unless the client is in a transaction
    /// block — committed at the end (two-phase when several shards took part) or rolled
    /// back if a statement failed, which also skips the rest of the batch. One
    /// ReadyForQuery ends it.
    async fn run_multi_shard_batch(&mut self, sync: bool) -> Result<(), SessionEnd> {
        let items = std::mem::take(&mut self.batch.items);
        let bind_shards = std::mem::take(&mut self.batch.bind_shards);
        let first = self
            .batch
            .shard
            .unwrap_or_else(|| self.shared.map.load().default_shard);
        let failed_before = self.batch.failed;
        if !self.batch.multi_begun {
            self.batch.multi_begun = true;
            self.batch.multi_implicit = matches!(self.txn, Txn::Idle);
            if self.batch.multi_implicit {
                self.txn = Txn::Deferred {
                    begin: "BEGIN".to_owned(),
                };
            }
        }
        let implicit = self.batch.multi_implicit;
        // split into runs: a run starts at a Bind for another shard (with the Parse
        // messages just before it)
        let mut runs: Vec<(ShardId, Vec<Item>)> = Vec::new();
        let mut binds = bind_shards.into_iter();
        let mut pending: Vec<Item> = Vec::new();
        let mut current = first;
        for item in items {
            match &item {
                Item::Bind { .. } => {
                    let shard = binds.next().flatten().unwrap_or(current);
                    if runs.is_empty() || shard != current {
                        runs.push((shard, Vec::new()));
                        current = shard;
                    }
                    let run = &mut runs.last_mut().expect("pushed").1;
                    run.append(&mut pending);
                    run.push(item);
                }
                Item::Parse { .. } | Item::DescribeStmt { .. } | Item::CloseStmt => {
                    pending.push(item)
                }
                Item::Raw { .. } => match runs.last_mut() {
                    Some(run) if pending.is_empty() => run.1.push(item),
                    _ => pending.push(item),
                },
            }
        }
        if !pending.is_empty() {
            match runs.last_mut() {
                Some(run) => run.1.append(&mut pending),
                None => runs.push((current, pending)),
            }
        }
        self.suppress_ready = true;
        let mut result = Ok(());
        let mut failed = failed_before;
        if !failed {
            for (shard, run) in runs {
                let mut queue = VecDeque::new();
                let mut conn = match self.attach(shard, &mut queue).await {
                    Ok(conn) => conn,
                    Err(e) => {
                        e.encode(&mut self.out);
                        self.abort_txn();
                        failed = true;
                        break;
                    }
                };
                translate(&mut conn, &run, sync, &mut queue);
                if sync {
                    // the run's own Sync ends nothing: the transaction is explicit on
                    // the shards; the client gets one ReadyForQuery at the end
                    if let Some(Expect::Sync { fwd }) = queue.back_mut() {
                        *fwd = false;
                    }
                } else {
                    // at the client's Flush: the shard sends what it has
                    conn.queue(b"H\0\0\0\x04");
                }
                match self.exchange(conn, queue).await {
                    Ok(outcome) => {
                        for name in &outcome.failed_parses {
                            self.stmts.remove(name);
                        }
                        if outcome.saw_error {
                            failed = true;
                            if outcome.skipping {
                                // that shard skips to a Sync: give it one now
                                self.resync_attached().await;
                            }
                            break;
                        }
                    }
                    Err(end) => {
                        result = Err(end);
                        failed = true;
                        break;
                    }
                }
                if self.txn.status() == TxnStatus::Failed {
                    failed = true;
                    break;
                }
            }
        }
        self.suppress_ready = false;
        if result.is_err() {
            self.batch.close();
            return result;
        }
        if !sync {
            // more of the batch may follow; after a failure it is dropped until Sync
            self.batch.shard = Some(current);
            if failed {
                self.batch.fail();
            }
            return Ok(());
        }
        self.batch.close();
        if implicit {
            self.end_implicit().await;
        } else if failed {
            // the client's own transaction: a failure leaves it aborted
            self.abort_txn();
        }
        self.ready();
        Ok(())
    }

    /// Send a Sync to the attached connection after an error mid-batch (it skips
    /// everything until one) and swallow its ReadyForQuery.
    async fn resync_attached(&mut self) {
        if let Txn::Attached { conn } = std::mem::replace(&mut self.txn, Txn::Idle) {
            let mut conn = conn;
            conn.queue(b"S\0\0\0\x04");
            let queue = VecDeque::from([Expect::Sync { fwd: false }]);
            let _ = self.exchange(conn, queue).await;
            // exchange re-attaches it (its transaction is failed) or releases it
        }
    }

    /// Whether a Bind arriving now would be the batch's only statement, outside any
    /// transaction: a statement on several shards must be.
    fn alone_in_batch(&self) -> bool {
        let txn_ok = match &self.txn {
            Txn::Idle => true,
            // inside a transaction block it runs on the transaction's connections
            Txn::Deferred { .. } => self.shared.config.transactions.two_phase,
            Txn::Attached { conn } => {
                conn.status == TxnStatus::InBlock && self.shared.config.transactions.two_phase
            }
            Txn::Aborted { .. } => false,
        };
        txn_ok
            && self.batch.shard.is_none()
            && !self.batch.open
            && !self
                .batch
                .items
                .iter()
                .any(|i| matches!(i, Item::Bind { .. }))
    }

    /// COMMIT/ROLLBACK in a batch must end the transaction everywhere at once: refused in
    /// a batch that also runs statements on a shard other than the transaction's (it would
    /// end on that shard alone), and no statement for another shard may follow it.
    fn transaction_control_fits(
        &mut self,
        target: &Target,
        control: bool,
    ) -> Result<(), ProxyError> {
        let attached = match &self.txn {
            Txn::Attached { conn } if conn.status != TxnStatus::Idle => Some(conn.shard),
            _ => None,
        };
        let other_binds = self
            .batch
            .items
            .iter()
            .any(|i| matches!(i, Item::Bind { .. }));
        let elsewhere = |s: Option<ShardId>| s.is_some() && attached.is_some() && s != attached;
        let refused = || {
            ProxyError::cross_shard_unsupported(
                "pgshard: COMMIT/ROLLBACK in a batch with statements for other shards of the transaction; send it in a batch of its own",
            )
        };
        if control {
            if other_binds
                && (self.distributed() || self.batch.multi || elsewhere(self.batch.shard))
            {
                return Err(refused());
            }
            self.batch.has_control = true;
        } else if self.batch.has_control {
            let wanted = match target {
                Target::One(s) => Some(*s),
                _ => None,
            };
            if self.distributed() || elsewhere(wanted) {
                return Err(refused());
            }
        }
        Ok(())
    }

    /// Combine a Bind's target with the batch's.
    fn add_target(&mut self, target: Target, result_binary: bool) -> Result<(), ProxyError> {
        let map = self.shared.map.load();
        let pinned = match &self.txn {
            // a transaction block may reach another shard (it joins it at send time);
            // one batch still runs on one shard
            Txn::Attached { conn }
                if conn.status != TxnStatus::Idle && self.shared.config.transactions.two_phase =>
            {
                self.batch.shard
            }
            Txn::Attached { conn } => Some(conn.shard),
            _ => self.batch.shard,
        };
        if self.batch.scatter.is_some() || self.batch.copies {
            return Err(ProxyError::cross_shard_unsupported(
                "pgshard: a batch with a statement on several shards cannot hold other statements; send a Sync after it",
            ));
        }
        let wanted = match target {
            Target::Scatter(shards, merge) => {
                let alone = self.alone_in_batch();
                if !alone {
                    return Err(ProxyError::cross_shard_unsupported(
                        "pgshard: a statement on several shards must run alone, outside a transaction block (its own Sync)",
                    ));
                }
                self.batch.scatter = Some((
                    shards,
                    MergeRequest {
                        merge,
                        binary: result_binary,
                        added_portal_description: false,
                    },
                ));
                return Ok(());
            }
            Target::Any => {
                self.batch.bind_shards.push(None);
                return Ok(());
            }
            Target::OneCopy => {
                self.batch.bind_shards.push(None);
                if pinned.is_none() && matches!(self.txn, Txn::Idle) && self.batch.copy.is_none() {
                    self.batch.copy = Some(self.next_copy_shard(map.shard_count()));
                }
                return Ok(());
            }
            Target::One(s) => s,
            Target::All | Target::AllCopies if map.shard_count() == 1 => 0,
            Target::AllCopies => {
                // (its own transaction on every shard: not inside the client's)
                let alone = self.alone_in_batch() && matches!(self.txn, Txn::Idle);
                if !alone {
                    return Err(ProxyError::cross_shard_unsupported(
                        "pgshard: a write to a reference table runs on every shard: send it alone (its own Sync), outside a transaction block",
                    ));
                }
                self.batch.copies = true;
                return Ok(());
            }
            Target::All => {
                return Err(ProxyError::cross_shard_unsupported(
                    "pgshard: DDL through the extended query protocol is not supported; send it as a simple query (it then runs on every shard)",
                ));
            }
        };
        match pinned {
            // statements for several shards in one batch (a driver's pipelined
            // executemany): run shard by shard in one transaction at Sync
            Some(p)
                if p != wanted
                    && self.shared.config.transactions.two_phase
                    && !self.batch.open
                    && !self.batch.has_control
                    && !self.txn_savepoint =>
            {
                self.batch.multi = true;
                self.batch.bind_shards.push(Some(wanted));
                Ok(())
            }
            Some(p) if p != wanted => Err(ProxyError::cross_shard_unsupported(format!(
                "pgshard: statement needs shard \"{}\" but this {} is on shard \"{}\"; cross-shard transactions are not supported yet",
                map.shard_name(wanted),
                if self.txn.in_block() {
                    "transaction"
                } else {
                    "batch"
                },
                map.shard_name(p)
            ))),
            _ => {
                self.batch.shard = Some(wanted);
                self.batch.bind_shards.push(Some(wanted));
                Ok(())
            }
        }
    }

    /// Refuse the current message: the error goes out now, the rest of the batch up to
    /// Sync is skipped.
    fn fail_batch(&mut self, err: ProxyError) {
        tracing::debug!(code = err.code.0, message = %err.message, "extended-protocol message refused");
        // Parse messages before the refused one are answered: the statements exist.
        for item in &self.batch.items {
            if matches!(item, Item::Parse { .. }) {
                reply::parse_complete(&mut self.out);
            }
        }
        err.encode(&mut self.out);
        self.batch.fail();
    }

    /// Flush (`sync = false`) or Sync (`sync = true`) the batch.
    async fn send_batch(&mut self, sync: bool) -> Result<(), SessionEnd> {
        if self.batch.multi && sync {
            return self.run_multi_shard_batch(true).await;
        }
        if self.batch.failed {
            return if sync {
                self.finish_failed_batch().await
            } else {
                Ok(())
            };
        }
        if self.batch.copies {
            let items = std::mem::take(&mut self.batch.items);
            self.batch.close();
            return self
                .broadcast_request(false, |conn, queue| translate(conn, &items, true, queue))
                .await;
        }
        if let Some((shards, mut merge)) = self.batch.scatter.take() {
            let mut items = std::mem::take(&mut self.batch.items);
            self.batch.close();
            if matches!(merge.merge, Merge::CopyIn(_) | Merge::CopyOut { .. }) {
                // COPY on several shards: session/copy.rs
                let request = |conn: &mut PooledConn, queue: &mut VecDeque<Expect>| {
                    translate(conn, &items, true, queue)
                };
                return self
                    .copy_scatter(&shards, &merge.merge, true, request)
                    .await;
            }
            let parses = items
                .iter()
                .filter(|i| matches!(i, Item::Parse { .. }))
                .count();
            let planned = match &merge.merge {
                Merge::Plan(plan) => {
                    rewrite_for_plan(std::mem::take(&mut items), plan).map(|(rewritten, added)| {
                        items = rewritten;
                        merge.added_portal_description = added;
                        Vec::new()
                    })
                }
                Merge::InsertSplit(rows) => split_items(&items, &shards, rows),
                _ => Ok(Vec::new()),
            };
            let per_shard = match planned {
                Ok(per_shard) => per_shard,
                Err(e) => {
                    // the batch's Parse messages were accepted before the refusal
                    for _ in 0..parses {
                        reply::parse_complete(&mut self.out);
                    }
                    self.fail_batch(e);
                    return self.finish_failed_batch().await;
                }
            };
            let in_txn = !matches!(self.txn, Txn::Idle);
            let streamed = match merge.merge {
                Merge::Concatenate if !in_txn => Some(None),
                Merge::FirstRows(n) if !in_txn => Some(Some(n)),
                _ => None,
            };
            if let Some(limit) = streamed {
                self.stream_concatenated(
                    &shards,
                    |conn, queue| translate(conn, &items, true, queue),
                    limit,
                )
                .await?;
                self.ready();
                return Ok(());
            }
            let shard_list = shards.clone();
            let request = |conn: &mut PooledConn, queue: &mut VecDeque<Expect>| {
                let mine = shard_list
                    .iter()
                    .position(|&s| s == conn.shard)
                    .and_then(|i| per_shard.get(i))
                    .unwrap_or(&items);
                translate(conn, mine, true, queue)
            };
            let replies = if in_txn {
                self.gather_in_txn(&shards, request).await
            } else {
                self.gather(&shards, request).await
            };
            self.answer_merged(replies, merge);
            self.ready();
            return Ok(());
        }
        let attached = matches!(self.txn, Txn::Attached { .. });
        if !attached && self.batch.items.is_empty() && !self.batch.open {
            // Nothing for a backend (a lone Sync, or the end of a batch the proxy
            // answered itself).
            if sync {
                self.batch.close();
                self.ready();
            }
            return Ok(());
        }
        if (!attached || self.distributed()) && self.is_transaction_control_batch() {
            self.answer_transaction_control(sync).await;
            return Ok(());
        }
        if matches!(self.txn, Txn::Aborted { .. }) {
            self.fail_batch(ProxyError::in_failed_transaction());
            return if sync {
                self.finish_failed_batch().await
            } else {
                Ok(())
            };
        }
        // Describing statements (a driver's prepare) inside a transaction that has not
        // chosen a shard yet must not choose one: serve it outside the transaction.
        let parked = if sync
            && !self.batch.open
            && matches!(self.txn, Txn::Deferred { .. })
            && !self
                .batch
                .items
                .iter()
                .any(|i| matches!(i, Item::Bind { .. }))
        {
            Some(std::mem::replace(&mut self.txn, Txn::Idle))
        } else {
            None
        };
        let shard = match &self.txn {
            Txn::Attached { conn } => self.batch.shard.unwrap_or(conn.shard),
            _ => self
                .batch
                .shard
                .or(self.batch.copy)
                .unwrap_or_else(|| self.shared.map.load().default_shard),
        };
        let mut queue = VecDeque::new();
        let mut conn = match self.attach(shard, &mut queue).await {
            Ok(conn) => conn,
            Err(e) => {
                if let Some(parked) = parked {
                    self.txn = parked;
                }
                self.fail_batch(e);
                return if sync {
                    self.finish_failed_batch().await
                } else {
                    Ok(())
                };
            }
        };
        let items = std::mem::take(&mut self.batch.items);
        translate(&mut conn, &items, sync, &mut queue);
        self.batch.open = !sync;
        let bound = std::mem::take(&mut self.batch.bound);
        let outcome = self.exchange(conn, queue).await?;
        for name in &outcome.failed_parses {
            self.stmts.remove(name);
        }
        if let Some(parked) = parked {
            self.txn = match (&self.txn, outcome.saw_error) {
                // A failed prepare inside the transaction aborts it, as in Postgres.
                (Txn::Idle, true) => Txn::Aborted { conn: None },
                (Txn::Idle, false) => parked,
                _ => std::mem::replace(&mut self.txn, Txn::Idle),
            };
            // The ReadyForQuery relayed for the describe said idle; the client is in a
            // transaction block. Patch the status byte it will read.
            if let Some(last) = self.out.last_mut() {
                *last = self.txn.status().byte();
            }
        }
        if sync {
            self.batch.close();
            if !outcome.saw_error && !self.txn.in_block() {
                for (kind, sql) in bound {
                    if kind == (StatementKind::Set { local: false }) {
                        self.settings.record(&sql);
                    }
                }
            }
        } else {
            self.batch.bound = bound;
            if outcome.skipping {
                // The backend now ignores everything until Sync; so does the proxy.
                self.batch.fail();
                self.batch.backend_skipping = true;
            }
        }
        Ok(())
    }

    /// Sync after an error: make the backend (if any part of the batch reached one)
    /// fail too, so the batch's implicit transaction rolls back as Postgres would, then
    /// end with ReadyForQuery.
    async fn finish_failed_batch(&mut self) -> Result<(), SessionEnd> {
        let backend_skipping = self.batch.backend_skipping;
        self.batch.close();
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Attached { mut conn } => {
                let mut buf = BytesMut::new();
                let mut queue = VecDeque::new();
                if !backend_skipping {
                    encode_parse("", ABORT_STATEMENT, &[], &mut buf);
                    queue.push_back(Expect::Abort);
                }
                buf.extend_from_slice(b"S\0\0\0\x04");
                queue.push_back(Expect::Sync { fwd: true });
                conn.queue(&buf);
                self.exchange(conn, queue).await?;
            }
            other => {
                self.txn = other;
                self.abort_txn();
                self.ready();
            }
        }
        Ok(())
    }

    /// A batch about BEGIN/COMMIT/ROLLBACK only, with no backend attached: pgshard
    /// answers it itself, as for the simple protocol. Every statement the batch names
    /// must be transaction control, or the answers would describe the wrong statement.
    fn is_transaction_control_batch(&self) -> bool {
        let mut named = 0;
        for item in &self.batch.items {
            match item.statement_kind() {
                Some(Some(
                    StatementKind::Begin | StatementKind::Commit | StatementKind::Rollback,
                )) => named += 1,
                Some(_) => return false,
                None => {}
            }
        }
        named > 0 && !self.batch.bound.is_empty()
    }

    async fn answer_transaction_control(&mut self, sync: bool) {
        let items = std::mem::take(&mut self.batch.items);
        let mut bound = std::mem::take(&mut self.batch.bound).into_iter();
        let mut current: Option<(StatementKind, Arc<str>)> = None;
        for item in items {
            match item {
                Item::Parse { .. } => reply::parse_complete(&mut self.out),
                Item::Bind { .. } => {
                    current = bound.next();
                    self.out.extend_from_slice(b"2\0\0\0\x04");
                }
                Item::DescribeStmt { .. } => {
                    self.out.extend_from_slice(b"t\0\0\0\x06\0\0");
                    self.out.extend_from_slice(b"n\0\0\0\x04");
                }
                Item::CloseStmt => reply::close_complete(&mut self.out),
                Item::Raw { frame, .. } => match frame.tag() {
                    b'D' => self.out.extend_from_slice(b"n\0\0\0\x04"),
                    b'C' => reply::close_complete(&mut self.out),
                    b'E' => {
                        if let Some((kind, sql)) = &current {
                            self.transaction_control_locally(kind, sql).await;
                        }
                    }
                    _ => {}
                },
            }
        }
        if sync {
            self.batch.close();
            self.ready();
        }
    }
}

/// Translate a batch's messages for one connection: client statement names become
/// server names, statements the connection lacks are prepared first, and the replies
/// owed are pushed to `queue`. The bytes are queued on the connection; with `sync`, a
/// Sync ends them.
fn translate(conn: &mut PooledConn, items: &[Item], sync: bool, queue: &mut VecDeque<Expect>) {
    let mut unnamed_ready = false;
    let mut buf = BytesMut::with_capacity(256);
    let mut changes_settings = false;
    let mut untracked = false;
    for item in items {
        match item {
            Item::Parse { name, stmt, frame } => {
                changes_settings |= touches_settings(&stmt.analysis);
                let client = Some(name.clone());
                if name.is_empty() {
                    // (a merge plan may have replaced the statement's text)
                    let _ = frame;
                    encode_parse("", &stmt.sql, &stmt.param_types, &mut buf);
                    queue.push_back(Expect::Parse {
                        fwd: true,
                        cache: None,
                        client,
                    });
                    unnamed_ready = true;
                } else if conn.prepared.contains(&stmt.hash) {
                    queue.push_back(Expect::SynthParse { client });
                } else {
                    encode_parse(
                        &server_name(stmt.hash),
                        &stmt.sql,
                        &stmt.param_types,
                        &mut buf,
                    );
                    conn.prepared.insert(stmt.hash);
                    queue.push_back(Expect::Parse {
                        fwd: true,
                        cache: Some(stmt.hash),
                        client,
                    });
                }
            }
            Item::Bind {
                frame,
                name,
                stmt,
                rest_offset,
            } => {
                changes_settings |= touches_settings(&stmt.analysis);
                untracked |= leaves_untracked_state(&stmt.analysis)
                    || touches_settings(&stmt.analysis)
                        && super::settings::sets_sticky_state(&stmt.sql.to_ascii_lowercase());
                let server = ensure_prepared(conn, name, stmt, &mut unnamed_ready, &mut buf, queue);
                if name.is_empty() {
                    buf.extend_from_slice(frame.as_bytes());
                } else {
                    encode_bind_renamed(frame, &server, *rest_offset, &mut buf);
                }
                queue.push_back(Expect::Bind);
            }
            Item::DescribeStmt { name, stmt } => {
                let server = ensure_prepared(conn, name, stmt, &mut unnamed_ready, &mut buf, queue);
                encode_describe_statement(&server, &mut buf);
                queue.push_back(Expect::Describe);
            }
            Item::CloseStmt => queue.push_back(Expect::SynthClose),
            Item::Raw { frame, expect } => {
                buf.extend_from_slice(frame.as_bytes());
                if let Some(e) = expect {
                    queue.push_back(e.clone());
                }
            }
        }
    }
    if sync {
        buf.extend_from_slice(b"S\0\0\0\x04");
        queue.push_back(Expect::Sync { fwd: true });
    }
    if changes_settings {
        conn.settings_sig = UNKNOWN_SIG;
    }
    if untracked {
        conn.retire = true;
    }
    conn.queue(&buf);
}

/// A scatter batch for a merge plan: the shards run the plan's text instead of the
/// client's (same parameters), Binds that list per-column result formats get formats
/// for the hidden columns too, and a portal Describe follows the Bind when the client
/// sent none, so the merge learns the result's types and formats. Returns the items and
/// whether a Describe was added.
fn rewrite_for_plan(items: Vec<Item>, plan: &MergePlan) -> Result<(Vec<Item>, bool), ProxyError> {
    // Only the statement the Bind runs is rewritten; other statements prepared in the
    // same batch keep their text (their descriptions must be their own).
    let bound = items.iter().find_map(|i| match i {
        Item::Bind { stmt, .. } => Some(stmt.hash),
        _ => None,
    });
    if items
        .iter()
        .any(|i| matches!(i, Item::DescribeStmt { stmt, .. } if Some(stmt.hash) != bound))
    {
        return Err(ProxyError::cross_shard_unsupported(
            "pgshard: a batch with a statement on several shards cannot describe other statements; send a Sync before it",
        ));
    }
    let derive = |stmt: ClientStmt| match &plan.shard_sql {
        Some(sql) if Some(stmt.hash) == bound => ClientStmt {
            hash: statement_hash(sql, &stmt.param_types),
            sql: Arc::from(sql.as_str()),
            ..stmt
        },
        _ => stmt,
    };
    let described = items.iter().any(|i| {
        matches!(i, Item::Raw { frame, .. } if frame.tag() == b'D' && frame.body().first() == Some(&b'P'))
    });
    let mut out = Vec::with_capacity(items.len() + 1);
    let mut added = false;
    for item in items {
        match item {
            Item::Parse { name, stmt, frame } => out.push(Item::Parse {
                name,
                stmt: derive(stmt),
                frame,
            }),
            Item::DescribeStmt { name, stmt } => out.push(Item::DescribeStmt {
                name,
                stmt: derive(stmt),
            }),
            Item::Bind {
                frame,
                name,
                stmt,
                rest_offset,
            } => {
                let frame = with_hidden_formats(frame, plan.hidden);
                let portal = frame
                    .body()
                    .split(|&b| b == 0)
                    .next()
                    .unwrap_or_default()
                    .to_vec();
                out.push(Item::Bind {
                    frame,
                    name,
                    stmt: derive(stmt),
                    rest_offset,
                });
                if !described {
                    let mut m = BytesMut::with_capacity(portal.len() + 7);
                    m.put_u8(b'D');
                    m.put_i32((4 + 1 + portal.len() + 1) as i32);
                    m.put_u8(b'P');
                    m.put_slice(&portal);
                    m.put_u8(0);
                    out.push(Item::Raw {
                        frame: Frame::from_message(m.freeze()),
                        expect: Some(Expect::Describe),
                    });
                    added = true;
                }
            }
            other => out.push(other),
        }
    }
    Ok((out, added))
}

/// The items of a split INSERT's batch for each shard of `shards`: the shard's part of
/// the statement text, the Bind carrying only that part's parameters. A Describe of the
/// statement keeps the client's statement (its parameters are the client's).
fn split_items(
    items: &[Item],
    shards: &[ShardId],
    row_shards: &[ShardId],
) -> Result<Vec<Vec<Item>>, ProxyError> {
    let (sql, bound) = items
        .iter()
        .find_map(|i| match i {
            Item::Bind { stmt, .. } => Some((stmt.sql.clone(), stmt.hash)),
            _ => None,
        })
        .ok_or_else(|| ProxyError::cross_shard_unsupported("pgshard: split INSERT without Bind"))?;
    let parts =
        crate::sql::split::split_insert(&sql, &super::scatter::row_groups(shards, row_shards))
            .map_err(|e| ProxyError::cross_shard_unsupported(format!("pgshard: {e}")))?;
    let mut per_shard = Vec::with_capacity(parts.len());
    for part in &parts {
        let derive = |stmt: &ClientStmt| {
            let types: Vec<u8> = part
                .params
                .iter()
                .flat_map(|&n| {
                    let at = (n - 1) * 4;
                    stmt.param_types
                        .get(at..at + 4)
                        .map_or([0u8; 4], |b| [b[0], b[1], b[2], b[3]])
                })
                .collect();
            ClientStmt {
                hash: statement_hash(&part.sql, &types),
                sql: Arc::from(part.sql.as_str()),
                param_types: Bytes::from(types),
                analysis: stmt.analysis.clone(),
            }
        };
        let mut mine = Vec::with_capacity(items.len());
        for item in items {
            mine.push(match item {
                // other statements prepared in the same batch keep their own text
                Item::Parse { name, stmt, frame } => Item::Parse {
                    name: name.clone(),
                    stmt: if stmt.hash == bound {
                        derive(stmt)
                    } else {
                        stmt.clone()
                    },
                    frame: frame.clone(),
                },
                Item::Bind {
                    frame, name, stmt, ..
                } => {
                    let bind = decode_bind(frame.body()).map_err(|e| {
                        ProxyError::cross_shard_unsupported(format!("pgshard: {e}"))
                    })?;
                    let rebuilt =
                        Frame::from_message(Bytes::from(bind.encode_subset(&part.params)));
                    let rest_offset = bind.portal.len() + 1 + bind.statement.len() + 1;
                    Item::Bind {
                        frame: rebuilt,
                        name: name.clone(),
                        stmt: derive(stmt),
                        rest_offset,
                    }
                }
                Item::DescribeStmt { name, stmt } => Item::DescribeStmt {
                    name: name.clone(),
                    stmt: stmt.clone(),
                },
                Item::CloseStmt => Item::CloseStmt,
                Item::Raw { frame, expect } => Item::Raw {
                    frame: frame.clone(),
                    expect: expect.clone(),
                },
            });
        }
        per_shard.push(mine);
    }
    Ok(per_shard)
}

/// A Bind listing one result format per column, extended by binary formats for the
/// plan's `hidden` columns (a Bind with zero or one format code covers them already).
fn with_hidden_formats(frame: Frame, hidden: usize) -> Frame {
    if hidden == 0 {
        return frame;
    }
    let Ok(bind) = decode_bind(frame.body()) else {
        return frame;
    };
    let n = bind.result_format_count();
    if n < 2 {
        return frame;
    }
    let body = frame.body();
    let keep = &body[..body.len() - 2 - 2 * n];
    let mut m = BytesMut::with_capacity(frame.as_bytes().len() + 2 * hidden);
    m.put_u8(b'B');
    m.put_i32((4 + keep.len() + 2 + 2 * (n + hidden)) as i32);
    m.put_slice(keep);
    m.put_i16((n + hidden) as i16);
    m.put_slice(&body[body.len() - 2 * n..]);
    for _ in 0..hidden {
        m.put_i16(1);
    }
    Frame::from_message(m.freeze())
}

/// Bind parameters seen together with the types the client declared in Parse, so a
/// value is only read as a key when its declared type converts like the key's.
struct DeclaredParams<'a> {
    bind: &'a crate::protocol::frontend::Bind<'a>,
    types: &'a [u8],
}

impl ParamSource for DeclaredParams<'_> {
    fn param(&self, n: usize) -> Option<Param<'_>> {
        self.bind.param(n)
    }

    fn param_type(&self, n: usize) -> u32 {
        n.checked_sub(1)
            .and_then(|i| self.types.get(i * 4..i * 4 + 4))
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
            .unwrap_or(0)
    }
}

/// The kind of a one-statement analysis.
fn single_kind(analysis: &Analysis) -> Option<StatementKind> {
    match analysis {
        Analysis::Parsed(stmts) if stmts.len() == 1 => Some(stmts[0].kind.clone()),
        _ => None,
    }
}
