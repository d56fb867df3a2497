//! The listener: accepts clients, enforces the connection limit, drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::session::{self, SessionEnd, Shared};

/// How long shutdown waits for sessions in a transaction to finish.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// A bound, not yet running proxy. Binding first lets tests listen on port 0 and learn
/// the address before clients connect.
pub struct Server {
    listener: TcpListener,
    config: Arc<Config>,
}

impl Server {
    /// Bind the listen address of `config` (`[server] listen`; port 0 picks a free port).
    pub async fn bind(config: Arc<Config>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.server.listen).await?;
        Ok(Server { listener, config })
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    /// Serve clients until `shutdown` is cancelled, then drain: idle sessions are told
    /// the server is shutting down, sessions inside a transaction get up to 30 s.
    pub async fn run(self, shutdown: CancellationToken) -> std::io::Result<()> {
        let shared = Arc::new(Shared::new(self.config.clone(), shutdown.clone()));
        let limit = Arc::new(Semaphore::new(self.config.server.max_clients));
        let tracker = TaskTracker::new();
        if self.config.transactions.two_phase {
            // in-doubt prepared transactions of this proxy: at startup, then periodically
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tracker.spawn(async move {
                loop {
                    let r =
                        crate::twophase::recover(&shared.config, &shared.pools, &shared.in_flight)
                            .await;
                    if r.committed + r.rolled_back > 0 || !r.unreachable.is_empty() {
                        tracing::warn!(
                            committed = r.committed,
                            rolled_back = r.rolled_back,
                            unreachable = ?r.unreachable,
                            "two-phase commit recovery pass"
                        );
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(shared.config.transactions.recover_interval) => {}
                    }
                }
            });
        }
        tracing::info!(
            listen = %self.local_addr(),
            shards = self.config.shards.len(),
            epoch = shared.map.load().epoch,
            "pgshard serving"
        );
        loop {
            let permit = tokio::select! {
                _ = shutdown.cancelled() => break,
                permit = limit.clone().acquire_owned() => permit.expect("semaphore never closed"),
            };
            let (stream, peer) = tokio::select! {
                _ = shutdown.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(pair) => pair,
                    Err(e) => {
                        // EMFILE and friends: back off instead of spinning.
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = stream.set_nodelay(true);
            let shared = shared.clone();
            let span = tracing::info_span!("client", %peer);
            tracker.spawn(
                async move {
                    let end = session::run(stream, shared).await;
                    match end {
                        SessionEnd::ClientGone => tracing::debug!("client disconnected"),
                        SessionEnd::Fatal(e) => {
                            tracing::info!(code = e.code.0, message = %e.message, "client connection closed")
                        }
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        tracker.close();
        tracing::info!(sessions = tracker.len(), "shutting down: draining sessions");
        if tokio::time::timeout(DRAIN_TIMEOUT, tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain timeout: closing remaining sessions");
        }
        Ok(())
    }
}

/// Bind and serve until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, shutdown: CancellationToken) -> std::io::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
