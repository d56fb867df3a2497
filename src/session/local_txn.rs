//! BEGIN / COMMIT / ROLLBACK that pgshard answers itself, when no backend is attached:
//! a BEGIN is deferred until a statement names a shard, and ending a transaction that
//! never reached a shard needs none. Used by both query protocols.

use bytes::BytesMut;
use std::collections::VecDeque;
use tokio::io::{AsyncRead, AsyncWrite};

use super::Session;
use super::relay::{Expect, relay};
use super::txn::Txn;
use crate::backend::{PooledConn, Pools};
use crate::protocol::SqlState;
use crate::protocol::reply::{self, ProxyError, TxnStatus};
use crate::sql::StatementKind;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// Apply BEGIN/COMMIT/ROLLBACK to a transaction with no backend attached (idle,
    /// deferred, or aborted by the proxy) and write its CommandComplete, with the
    /// warnings Postgres gives.
    pub(super) async fn transaction_control_locally(&mut self, kind: &StatementKind, sql: &str) {
        let tag = match (kind, &self.txn) {
            (StatementKind::Begin, Txn::Idle) => {
                // The client's own text (isolation level, READ ONLY…) is replayed on the
                // shard the first statement chooses.
                self.txn = Txn::Deferred {
                    begin: sql.to_owned(),
                };
                "BEGIN"
            }
            (StatementKind::Begin, _) => {
                ProxyError::error(
                    SqlState::ACTIVE_SQL_TRANSACTION,
                    "there is already a transaction in progress",
                )
                .encode_warning(&mut self.out);
                "BEGIN"
            }
            (StatementKind::Commit | StatementKind::Rollback, Txn::Idle) => {
                ProxyError::error(
                    SqlState::NO_ACTIVE_SQL_TRANSACTION,
                    "there is no transaction in progress",
                )
                .encode_warning(&mut self.out);
                if matches!(kind, StatementKind::Commit) {
                    "COMMIT"
                } else {
                    "ROLLBACK"
                }
            }
            (StatementKind::Commit, Txn::Deferred { .. }) => {
                self.txn = Txn::Idle;
                self.txn_done();
                "COMMIT"
            }
            (StatementKind::Commit | StatementKind::Rollback, Txn::Attached { .. })
                if self.distributed() =>
            {
                // (the extended protocol's transaction control arrives here)
                self.end_distributed_reply(matches!(kind, StatementKind::Commit))
                    .await;
                return;
            }
            _ => {
                // ROLLBACK of a deferred transaction, or the end of an aborted one
                // (COMMIT of an aborted transaction answers ROLLBACK, as in Postgres).
                if let Txn::Aborted { conn: Some(conn) } =
                    std::mem::replace(&mut self.txn, Txn::Idle)
                {
                    self.rollback_and_release(conn).await;
                }
                for conn in std::mem::take(&mut self.parked) {
                    self.rollback_and_release(conn).await;
                }
                self.txn = Txn::Idle;
                self.txn_done();
                "ROLLBACK"
            }
        };
        reply::command_complete(tag, &mut self.out);
    }

    /// Roll back a connection's transaction (swallowing the reply) and release it.
    pub(super) async fn rollback_and_release(&mut self, mut conn: PooledConn) {
        if conn.status == TxnStatus::Idle {
            Pools::release(conn);
            return;
        }
        let mut buf = BytesMut::new();
        let _ = postgres_protocol::message::frontend::query("ROLLBACK", &mut buf);
        conn.queue(&buf);
        let mut queue = VecDeque::from([Expect::Query { fwd: false }]);
        let mut scratch = BytesMut::new();
        let ok = match conn.flush().await {
            Ok(()) => relay::<S>(&mut conn, &mut queue, &mut scratch, None)
                .await
                .is_ok(),
            Err(_) => false,
        };
        if !ok {
            conn.broken = true;
        }
        Pools::release(conn);
    }
}
