//! Transactions on several shards: a transaction joins each shard its statements need
//! (the client's BEGIN replayed there), keeps one connection per shard, and ends with
//! two-phase commit (`crate::twophase`) when more than one shard took part.
//!
//! The connection running the current statement is the one in `Txn::Attached`; the
//! other participants wait in `Session::parked`. Savepoints are per shard in Postgres,
//! so a transaction that set one stays on the shards it has, and savepoint commands are
//! refused once it spans several shards.

use std::collections::VecDeque;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use super::relay::Expect;
use super::txn::Txn;
use crate::backend::{PooledConn, Pools};
use crate::protocol::reply::{self, ProxyError, TxnStatus};
use crate::sharding::ShardId;
use crate::twophase;

/// How a distributed transaction ended, for the client's CommandComplete.
pub(super) enum Ended {
    /// committed everywhere (`COMMIT`)
    Committed,
    /// rolled back everywhere (`ROLLBACK`)
    RolledBack,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// The transaction on `current`'s shard needs `shard` too: park `current`, and
    /// return the transaction's connection to `shard` (joining it with the client's
    /// BEGIN if it was not part of the transaction yet). On failure the transaction is
    /// left attached to `current`.
    pub(super) async fn join_shard(
        &mut self,
        current: PooledConn,
        shard: ShardId,
        queue: &mut VecDeque<Expect>,
    ) -> Result<PooledConn, ProxyError> {
        let map = self.shared.map.load();
        if !self.shared.config.transactions.two_phase {
            let e = ProxyError::cross_shard_unsupported(format!(
                "pgshard: this transaction is on shard \"{}\" but the statement needs shard \"{}\", and [transactions] two_phase = false",
                map.shard_name(current.shard),
                map.shard_name(shard)
            ));
            self.txn = Txn::Attached { conn: current };
            return Err(e);
        }
        if self.txn_savepoint {
            let e = ProxyError::cross_shard_unsupported(format!(
                "pgshard: this transaction set a savepoint on shard \"{}\" and cannot reach shard \"{}\" (savepoints are per shard)",
                map.shard_name(current.shard),
                map.shard_name(shard)
            ));
            self.txn = Txn::Attached { conn: current };
            return Err(e);
        }
        if let Some(i) = self.parked.iter().position(|c| c.shard == shard) {
            let conn = self.parked.swap_remove(i);
            self.parked.push(current);
            return Ok(conn);
        }
        let mut conn = match self.checkout(shard).await {
            Ok(conn) => conn,
            Err(e) => {
                self.txn = Txn::Attached { conn: current };
                return Err(e);
            }
        };
        self.parked.push(current);
        self.prepare_conn(&mut conn, queue);
        let begin = self.txn_begin.clone().unwrap_or_else(|| "BEGIN".to_owned());
        let mut buf = BytesMut::new();
        let _ = postgres_protocol::message::frontend::query(&begin, &mut buf);
        conn.queue(&buf);
        queue.push_back(Expect::Query { fwd: false });
        self.begin_in_flight = true;
        tracing::debug!(
            shard = map.shard_name(shard),
            "transaction joins another shard"
        );
        Ok(conn)
    }

    /// Run a statement on several shards inside the transaction block: every target
    /// shard joins the transaction (its BEGIN replayed), each runs `request` on the
    /// transaction's connection, and the replies are collected for the merge. The
    /// connections stay in the transaction; a shard's error leaves it aborted, as one
    /// failing statement would.
    pub(super) async fn gather_in_txn(
        &mut self,
        shards: &[ShardId],
        mut request: impl FnMut(&mut PooledConn, &mut VecDeque<Expect>),
    ) -> Result<super::scatter::Gathered, ProxyError> {
        let mut conns = self.take_txn_conns(shards).await?;
        let mut queues = Vec::with_capacity(conns.len());
        for conn in conns.iter_mut() {
            let mut queue = VecDeque::new();
            request(conn, &mut queue);
            if conn.flush().await.is_err() {
                conn.broken = true;
            }
            queues.push(queue);
        }
        let budget = self.shared.config.server.merge_memory / conns.len().max(1);
        let bytewise_text = conns.iter().all(|c| c.bytewise_text);
        let mut replies = Vec::with_capacity(conns.len());
        let mut failure: Option<ProxyError> = None;
        let mut failed_statement = false;
        for (conn, queue) in conns.iter_mut().zip(queues.iter_mut()) {
            let mut reply = BytesMut::new();
            match super::relay::relay_capped::<S>(conn, queue, &mut reply, None, budget).await {
                Ok(outcome) => {
                    failed_statement |= outcome.saw_error;
                    for name in outcome.failed_parses {
                        self.stmts.remove(&name);
                    }
                    replies.push(reply);
                }
                Err(e) => {
                    let name = self.shared.pools.shard_name(conn.shard);
                    failure.get_or_insert(ProxyError::shard_unavailable(&name, e));
                }
            }
        }
        let lost = conns.iter().any(|c| c.broken);
        self.restore_txn_conns(conns);
        if lost {
            // a participant is gone: the transaction cannot commit any more
            self.abort_txn();
        }
        if let Some(e) = failure {
            return Err(e);
        }
        if failed_statement {
            self.abort_txn();
        }
        Ok(super::scatter::Gathered {
            replies,
            shards: shards.to_vec(),
            bytewise_text,
        })
    }

    /// The transaction's connections to `shards` (in that order), joining the shards it
    /// has not used yet; the others stay parked.
    async fn take_txn_conns(&mut self, shards: &[ShardId]) -> Result<Vec<PooledConn>, ProxyError> {
        let mut pool: Vec<PooledConn> = std::mem::take(&mut self.parked);
        let mut deferred: Option<String> = None;
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Attached { conn } if conn.status == TxnStatus::Failed => {
                self.txn = Txn::Attached { conn };
                self.parked = pool;
                return Err(ProxyError::in_failed_transaction());
            }
            Txn::Attached { conn } => pool.push(conn),
            Txn::Deferred { begin } => {
                self.txn_begin = Some(begin.clone());
                deferred = Some(begin);
            }
            other => {
                self.txn = other;
                self.parked = pool;
                return Err(ProxyError::in_failed_transaction());
            }
        }
        let mut out: Vec<PooledConn> = Vec::with_capacity(shards.len());
        let mut error = None;
        for &shard in shards {
            if let Some(i) = pool.iter().position(|c| c.shard == shard) {
                out.push(pool.swap_remove(i));
                continue;
            }
            if self.txn_savepoint && !(pool.is_empty() && out.is_empty()) {
                error = Some(ProxyError::cross_shard_unsupported(
                    "pgshard: this transaction set a savepoint and cannot reach other shards (savepoints are per shard)",
                ));
                break;
            }
            let mut conn = match self.checkout(shard).await {
                Ok(conn) => conn,
                Err(e) => {
                    error = Some(e);
                    break;
                }
            };
            let mut queue = VecDeque::new();
            self.prepare_conn(&mut conn, &mut queue);
            let begin = self.txn_begin.clone().unwrap_or_else(|| "BEGIN".to_owned());
            let mut buf = BytesMut::new();
            let _ = postgres_protocol::message::frontend::query(&begin, &mut buf);
            conn.queue(&buf);
            queue.push_back(Expect::Query { fwd: false });
            let mut scratch = BytesMut::new();
            let joined = async {
                conn.flush().await?;
                super::relay::relay::<S>(&mut conn, &mut queue, &mut scratch, None).await
            }
            .await;
            match joined {
                Ok(outcome) if !outcome.saw_error && conn.status == TxnStatus::InBlock => {
                    out.push(conn)
                }
                other => {
                    let name = self.shared.pools.shard_name(shard);
                    conn.broken = true;
                    Pools::release(conn);
                    error = Some(ProxyError::shard_unavailable(
                        &name,
                        format!("could not begin the transaction there: {other:?}"),
                    ));
                    break;
                }
            }
        }
        if let Some(e) = error {
            pool.extend(out);
            if pool.is_empty() {
                // nothing joined yet: the client is still in its (deferred) transaction,
                // which the caller's refusal aborts
                self.txn = Txn::Deferred {
                    begin: deferred.unwrap_or_else(|| "BEGIN".to_owned()),
                };
            } else {
                self.restore_txn_conns(pool);
            }
            return Err(e);
        }
        self.parked = pool;
        Ok(out)
    }

    /// Give connections back to the transaction: one becomes the current one (a failed
    /// one if any, so the transaction reports failure), the rest are parked.
    fn restore_txn_conns(&mut self, mut conns: Vec<PooledConn>) {
        if let Txn::Attached { conn } = std::mem::replace(&mut self.txn, Txn::Idle) {
            conns.push(conn);
        }
        let current = conns
            .iter()
            .position(|c| c.status == TxnStatus::Failed)
            .unwrap_or(conns.len().saturating_sub(1));
        if conns.is_empty() {
            return;
        }
        let conn = conns.swap_remove(current);
        self.parked.extend(conns);
        self.txn = Txn::Attached { conn };
    }

    /// Whether the transaction spans several shards.
    pub(super) fn distributed(&self) -> bool {
        !self.parked.is_empty()
    }

    /// End a transaction spanning several shards. `commit`: two-phase commit (or, if
    /// any participant failed, roll back everywhere as Postgres does for COMMIT of a
    /// failed transaction); otherwise roll back everywhere.
    pub(super) async fn end_distributed(&mut self, commit: bool) -> Result<Ended, ProxyError> {
        let mut conns: Vec<PooledConn> = std::mem::take(&mut self.parked);
        let mut commit = commit;
        match std::mem::replace(&mut self.txn, Txn::Idle) {
            Txn::Attached { conn } => conns.push(conn),
            Txn::Aborted { conn } => {
                // a statement failed or was refused: the transaction is over on every
                // shard, and its COMMIT answers ROLLBACK
                conns.extend(conn);
                commit = false;
            }
            _ => {}
        }
        self.txn_done();
        conns.sort_by_key(|c| c.shard);
        let failed = conns.iter().any(|c| c.status != TxnStatus::InBlock);
        if !commit || failed {
            for conn in conns {
                self.rollback_and_release(conn).await;
            }
            return Ok(Ended::RolledBack);
        }
        self.two_phase_commit(conns).await
    }

    /// Prepare on every participant, record the decision, commit the prepared
    /// transactions. A failure before the decision rolls everything back and is the
    /// client's error; after it, the transaction is committed (stragglers are finished
    /// by recovery).
    async fn two_phase_commit(&mut self, mut conns: Vec<PooledConn>) -> Result<Ended, ProxyError> {
        let node = self.shared.config.transactions.node.clone();
        let base = twophase::new_base(&node);
        let names: Vec<String> = conns
            .iter()
            .map(|c| self.shared.pools.shard_name(c.shard))
            .collect();
        self.shared.in_flight.start(&base);
        // phase 1
        let mut prepared = vec![false; conns.len()];
        let mut failure: Option<ProxyError> = None;
        for (i, conn) in conns.iter_mut().enumerate() {
            let gid = twophase::gid(&base, &names[i]);
            match conn
                .simple_query(&format!("PREPARE TRANSACTION {}", twophase::literal(&gid)))
                .await
            {
                Ok(a) if a.error.is_none() && a.tag == "PREPARE TRANSACTION" => prepared[i] = true,
                Ok(a) => {
                    failure = Some(prepare_failed(
                        &names[i],
                        a.error.as_deref(),
                        a.sqlstate.as_deref(),
                    ));
                    break;
                }
                Err(e) => {
                    failure = Some(ProxyError::shard_unavailable(&names[i], e));
                    break;
                }
            }
        }
        if failure.is_none() {
            twophase::test_pause("after-prepare").await;
            if let Err(e) = self.decide(&base).await {
                failure = Some(e);
            }
        }
        if let Some(e) = failure {
            // no decision: roll back what was prepared, and the rest
            for (i, conn) in conns.into_iter().enumerate() {
                if prepared[i] {
                    let gid = twophase::gid(&base, &names[i]);
                    let mut conn = conn;
                    let sql = format!("ROLLBACK PREPARED {}", twophase::literal(&gid));
                    if !matches!(conn.simple_query(&sql).await, Ok(ref a) if a.error.is_none()) {
                        // recovery rolls it back (no decision exists)
                        conn.broken = true;
                    }
                    Pools::release(conn);
                } else {
                    self.rollback_and_release(conn).await;
                }
            }
            self.shared.in_flight.done(&base);
            return Err(e);
        }
        twophase::test_pause("after-decision").await;
        // phase 2: the transaction is committed; finish it everywhere
        let mut all = true;
        for (i, mut conn) in conns.into_iter().enumerate() {
            let gid = twophase::gid(&base, &names[i]);
            let sql = format!("COMMIT PREPARED {}", twophase::literal(&gid));
            match conn.simple_query(&sql).await {
                Ok(a) if a.error.is_none() => {}
                other => {
                    all = false;
                    conn.broken = true;
                    tracing::error!(gid, shard = %names[i], ?other, "COMMIT PREPARED failed; recovery will finish it");
                }
            }
            Pools::release(conn);
        }
        if all {
            self.forget_decision(&base).await;
        }
        self.shared.in_flight.done(&base);
        Ok(Ended::Committed)
    }

    /// Record the commit decision for `base` on the default shard (its own
    /// transaction): from now on the transaction is committed.
    async fn decide(&mut self, base: &str) -> Result<(), ProxyError> {
        let shard = self.shared.map.load().default_shard;
        let name = self.shared.pools.shard_name(shard);
        let mut conn = self.checkout(shard).await?;
        let insert = format!(
            "INSERT INTO {} (gid) VALUES ({})",
            twophase::DECISIONS,
            twophase::literal(base)
        );
        let mut result = conn.simple_query(&insert).await;
        if let Ok(a) = &result
            && matches!(a.sqlstate.as_deref(), Some("42P01" | "3F000"))
        {
            // first distributed commit against this shard: create the table
            let _ = conn.simple_query(twophase::CREATE_DECISIONS).await;
            result = conn.simple_query(&insert).await;
        }
        let outcome = match result {
            Ok(a) if a.error.is_none() => Ok(()),
            Ok(a) => Err(ProxyError::error(
                crate::protocol::SqlState::CONNECTION_FAILURE,
                format!(
                    "pgshard: could not record the commit decision on shard \"{name}\": {}",
                    a.error.unwrap_or_default()
                ),
            )),
            Err(e) => {
                conn.broken = true;
                Err(ProxyError::shard_unavailable(&name, e))
            }
        };
        Pools::release(conn);
        outcome
    }

    /// Delete the decision of a transaction committed everywhere (best effort: recovery
    /// deletes leftovers).
    async fn forget_decision(&mut self, base: &str) {
        let shard = self.shared.map.load().default_shard;
        if let Ok(mut conn) = self.checkout(shard).await {
            let sql = format!(
                "DELETE FROM {} WHERE gid = {}",
                twophase::DECISIONS,
                twophase::literal(base)
            );
            if conn.simple_query(&sql).await.is_err() {
                conn.broken = true;
            }
            Pools::release(conn);
        }
    }

    /// End the distributed transaction and write the client's answer: `COMMIT`,
    /// `ROLLBACK` (a failed transaction, as Postgres answers its COMMIT), or the error
    /// that rolled it back.
    pub(super) async fn end_distributed_reply(&mut self, commit: bool) {
        match self.end_distributed(commit).await {
            Ok(Ended::Committed) => reply::command_complete("COMMIT", &mut self.out),
            Ok(Ended::RolledBack) => reply::command_complete("ROLLBACK", &mut self.out),
            Err(e) => e.encode(&mut self.out),
        }
    }

    /// Forget the transaction's per-transaction state (its BEGIN text, savepoints).
    pub(super) fn txn_done(&mut self) {
        self.txn_begin = None;
        self.txn_savepoint = false;
    }
}

/// The client's error when a participant could not prepare.
fn prepare_failed(shard: &str, error: Option<&str>, sqlstate: Option<&str>) -> ProxyError {
    let code = crate::protocol::SqlState::from_shard(
        sqlstate,
        crate::protocol::SqlState::CONNECTION_FAILURE,
    );
    let e = ProxyError::error(
        code,
        format!(
            "pgshard: the transaction could not be prepared on shard \"{shard}\" and was rolled back: {}",
            error.unwrap_or("PREPARE TRANSACTION did not succeed")
        ),
    );
    if sqlstate == Some("55000") {
        e.with_hint("transactions on several shards need max_prepared_transactions > 0 on every shard, or set [transactions] two_phase = false")
    } else {
        e
    }
}
