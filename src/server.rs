//! The listener: accepts clients, enforces the connection limit, drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// A bound, not yet running proxy. Binding first lets tests listen on port 0 and learn
/// the address before clients connect.
pub struct Server {
    _config: Arc<Config>,
}

impl Server {
    /// Bind the listen address of `config` (`[server] listen`; port 0 picks a free port).
    pub async fn bind(config: Arc<Config>) -> std::io::Result<Server> {
        let _ = config;
        todo!()
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        todo!()
    }

    /// Serve clients until `shutdown` is cancelled, then drain.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let _ = shutdown;
        todo!()
    }
}

/// Bind and serve until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, shutdown: CancellationToken) -> std::io::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
