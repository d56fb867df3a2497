//! Statements on several shards (scatter-gather): send to every target shard, merge the
//! replies (`crate::scatter`), answer the client once.

use tokio::io::{AsyncRead, AsyncWrite};

use super::{Session, SessionEnd};
use crate::protocol::Frame;
use crate::protocol::reply::ProxyError;
use crate::router::ShardSet;

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    /// A simple Query on several shards.
    pub(super) async fn scatter_query(
        &mut self,
        _frame: &Frame,
        _shards: ShardSet,
    ) -> Result<(), SessionEnd> {
        self.refuse(ProxyError::cross_shard_unsupported(
            "pgshard: statements across shards are not supported yet",
        ));
        self.ready();
        Ok(())
    }
}
