//! `pgshard serve`: run the proxy until SIGINT/SIGTERM.
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config;

/// Run the subcommand.
pub fn run(config_path: &Path) -> ExitCode {
    init_logging();
    let config = match config::load(config_path) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("pgshard: {e}");
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pgshard: cannot start runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let server = match crate::server::Server::bind(config.clone()).await {
            Ok(server) => server.with_config_path(config_path).reload_on_sighup(),
            Err(e) => {
                eprintln!("pgshard: cannot listen on {}: {e}", config.server.listen);
                return ExitCode::from(1);
            }
        };
        let signal_token = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutdown signal received");
            signal_token.cancel();
        });
        match server.run(shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("pgshard: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// Ctrl-C or SIGTERM.
pub(crate) async fn wait_for_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Logs to stderr; level from `PGSHARD_LOG` (e.g. `debug`, `pgshard=trace`), default info.
pub(crate) fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGSHARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
