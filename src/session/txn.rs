//! The client's transaction state, as pgshard sees it.
//!
//! The backend's own status (from ReadyForQuery) is authoritative whenever a backend is
//! attached; the extra states exist because pgshard answers some statements itself: a
//! BEGIN is deferred until a statement names a shard, and a statement pgshard refuses
//! inside a transaction aborts it just as a failing statement would in Postgres.

use crate::backend::PooledConn;
use crate::protocol::reply::TxnStatus;

/// Transaction phase of one client.
pub enum Txn {
    /// no transaction, no backend held
    Idle,
    /// BEGIN received, no shard chosen yet; the text is replayed on the chosen shard
    Deferred {
        /// the client's BEGIN statement text (isolation level and all)
        begin: String,
    },
    /// a backend is attached: inside a transaction, or an extended-protocol batch that
    /// has been flushed but not yet synced
    Attached {
        /// the connection
        conn: PooledConn,
    },
    /// pgshard refused a statement inside the transaction: everything but
    /// COMMIT/ROLLBACK gets 25P02, as in Postgres; the backend (if any) is rolled back then
    Aborted {
        /// the transaction's connection, if a shard had been chosen
        conn: Option<PooledConn>,
    },
}

impl Txn {
    /// The status to report in a ReadyForQuery the proxy writes itself.
    pub fn status(&self) -> TxnStatus {
        match self {
            Txn::Idle => TxnStatus::Idle,
            Txn::Deferred { .. } => TxnStatus::InBlock,
            Txn::Attached { conn } => conn.status,
            Txn::Aborted { .. } => TxnStatus::Failed,
        }
    }

    /// True when the client is inside a transaction block.
    pub fn in_block(&self) -> bool {
        self.status() != TxnStatus::Idle
    }
}
