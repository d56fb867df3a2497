//! The listener: accepts clients, enforces the connection limit, drains on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::config::Config;
use crate::session::{self, LogLevelSetter, SessionEnd, Shared};

/// A bound, not yet running proxy. Binding first lets tests listen on port 0 and learn
/// the address before clients connect.
pub struct Server {
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    config: Arc<Config>,
    config_path: Option<PathBuf>,
    reload_on_sighup: bool,
    log_level_setter: Option<LogLevelSetter>,
}

impl Server {
    /// Bind the listen address of `config` (`[server] listen`; port 0 picks a free port).
    /// Also binds `[server] metrics_listen` when set.
    pub async fn bind(config: Arc<Config>) -> std::io::Result<Server> {
        let listener = TcpListener::bind(config.server.listen).await?;
        let metrics_listener = match config.server.metrics_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.map_err(|e| {
                std::io::Error::new(e.kind(), format!("metrics_listen {addr}: {e}"))
            })?),
            None => None,
        };
        Ok(Server {
            listener,
            metrics_listener,
            config,
            config_path: None,
            reload_on_sighup: false,
            log_level_setter: None,
        })
    }

    /// Let RELOAD change the log level through `setter` (`pgshard serve`, which owns
    /// the process's log subscriber).
    pub fn with_log_level_setter(mut self, setter: Option<LogLevelSetter>) -> Server {
        self.log_level_setter = setter;
        self
    }

    /// The shard map file `config` was read from: RELOAD (admin console) reads it
    /// again. Without it RELOAD is refused.
    pub fn with_config_path(mut self, path: impl Into<PathBuf>) -> Server {
        self.config_path = Some(path.into());
        self
    }

    /// Reload the shard map file on SIGHUP (what `pgshard serve` does; off by default,
    /// so servers inside tests ignore signals sent to the test process).
    pub fn reload_on_sighup(mut self) -> Server {
        self.reload_on_sighup = true;
        self
    }

    /// The address actually bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or(self.config.server.listen)
    }

    /// The address of the metrics endpoint, when `metrics_listen` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_listener
            .as_ref()
            .and_then(|l| l.local_addr().ok())
    }

    /// Serve clients until `stop` is cancelled (or the admin console's SHUTDOWN), then
    /// shut down gracefully: `/health` answers 503 at once; after `drain_delay` the
    /// listener closes and idle sessions are told the server is shutting down; sessions
    /// inside a transaction get up to `shutdown_timeout` to finish it.
    pub async fn run(self, stop: CancellationToken) -> std::io::Result<()> {
        let listen_addr = self.local_addr();
        // cancelled after the drain delay: sessions and the accept loop watch this one
        let shutdown = CancellationToken::new();
        let shared = Arc::new(
            Shared::new(self.config.clone(), shutdown.clone())
                .with_config_path(self.config_path.clone())
                .with_log_level_setter(self.log_level_setter.clone())
                .with_stop(stop.clone()),
        );
        let metrics_stop = CancellationToken::new();
        if let Some(listener) = self.metrics_listener {
            let addr = listener.local_addr()?;
            tracing::info!(%addr, "serving /metrics and /health");
            tokio::spawn(crate::metrics::http::serve(
                listener,
                shared.clone(),
                metrics_stop.clone(),
            ));
        }
        {
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tokio::spawn(async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = shutdown.cancelled() => return,
                }
                shared
                    .metrics
                    .draining
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                let delay = shared.config.server.drain_delay;
                tracing::info!(
                    delay_ms = delay.as_millis() as u64,
                    "shutdown requested: /health answers 503; closing the listener after the drain delay"
                );
                tokio::time::sleep(delay).await;
                shutdown.cancel();
            });
        }
        let limit = Arc::new(Semaphore::new(self.config.server.max_clients));
        let tracker = TaskTracker::new();
        if self.config.transactions.two_phase {
            // in-doubt prepared transactions of this proxy: at startup, then periodically
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tracker.spawn(async move {
                loop {
                    // the shards and map installed now (a reload may have changed them)
                    let mut config = (*shared.config).clone();
                    config.shards = shared.pools.current().shards.clone();
                    config.map = (**shared.map.load()).clone();
                    let r =
                        crate::twophase::recover(&config, &shared.pools, &shared.in_flight).await;
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
        if self.config.health.enabled {
            // per-shard health checks feeding the circuit breakers (see backend::health)
            let (shared, shutdown) = (shared.clone(), shutdown.clone());
            tracker.spawn(async move {
                let interval = shared.config.health.interval;
                loop {
                    shared.pools.start_health_checks();
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(interval) => {}
                    }
                }
            });
        }
        if self.reload_on_sighup {
            tracker.spawn(reload_on_sighup(shared.clone(), shutdown.clone()));
        }
        tracing::info!(
            listen = %listen_addr,
            shards = self.config.shards.len(),
            epoch = shared.map.load().epoch,
            client_tls = if self.config.tls.require_tls {
                "required"
            } else if self.config.tls.acceptor.is_some() {
                "offered"
            } else {
                "off"
            },
            backend_tls = self.config.tls.backend.mode(),
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
            shared
                .metrics
                .accepted
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let span = tracing::info_span!("client", %peer, user = tracing::field::Empty);
            tracker.spawn(
                async move {
                    let acceptor = shared.config.tls.acceptor.as_ref();
                    // Boxed: a TLS handshake's state is large and needed once; the task of
                    // an idle client stays small.
                    let login_timeout = shared.config.server.login_timeout;
                    let negotiated =
                        tokio::time::timeout(login_timeout, Box::pin(session::negotiate(stream, acceptor)))
                            .await
                            .unwrap_or_else(|_| {
                                Err(std::io::Error::new(
                                    std::io::ErrorKind::TimedOut,
                                    "no startup packet or TLS handshake within login_timeout_ms",
                                ))
                            });
                    let incoming = match negotiated {
                        Ok(incoming) => incoming,
                        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                            tracing::debug!("client gone before its startup packet");
                            drop(permit);
                            return;
                        }
                        Err(e) => {
                            tracing::info!(error = %e, "client connection failed in TLS negotiation");
                            drop(permit);
                            return;
                        }
                    };
                    let end = session::run(incoming, shared, Some(peer)).await;
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
        drop(self.listener);
        tracker.close();
        let limit = self.config.server.shutdown_timeout;
        tracing::info!(
            sessions = tracker.len(),
            timeout_ms = limit.as_millis() as u64,
            "shutting down: listener closed, waiting for open transactions"
        );
        if tokio::time::timeout(limit, tracker.wait()).await.is_err() {
            tracing::warn!(
                sessions = tracker.len(),
                "shutdown timeout: closing the remaining sessions"
            );
        }
        metrics_stop.cancel();
        Ok(())
    }
}

/// Reload the shard map file on each SIGHUP until shutdown.
async fn reload_on_sighup(shared: Arc<Shared>, shutdown: CancellationToken) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut hup = match signal(SignalKind::hangup()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGHUP; use the admin console's RELOAD");
                return;
            }
        };
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                got = hup.recv() => if got.is_none() { return },
            }
            tracing::info!("SIGHUP: reloading the shard map file");
            if let Err(e) = shared.reload() {
                tracing::error!(error = %e, "shard map reload failed; the running map is unchanged");
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (shared, shutdown);
    }
}

/// Bind and serve until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, shutdown: CancellationToken) -> std::io::Result<()> {
    Server::bind(config).await?.run(shutdown).await
}
