//! `pgshard serve`: run the proxy until SIGINT/SIGTERM.
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::{self, LogConfig, LogFormat};

/// Run the subcommand.
pub fn run(config_path: &Path) -> ExitCode {
    let config = match config::load(config_path) {
        Ok(config) => Arc::new(config),
        Err(e) => {
            eprintln!("pgshard: {e}");
            return ExitCode::from(1);
        }
    };
    init_logging(&config.log);
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

/// Logs to stderr, as text or one JSON object per line (`[log] format`). The level is
/// `[log] level`, overridden by the environment variable `PGSHARD_LOG` (e.g. `debug`,
/// `pgshard=trace,info`) so an operator can raise it without editing the map.
///
/// Statement texts and parameters are never logged at info; passwords never.
pub(crate) fn init_logging(log: &LogConfig) {
    let filter = match std::env::var("PGSHARD_LOG") {
        Ok(v) if !v.trim().is_empty() => {
            tracing_subscriber::EnvFilter::try_new(&v).unwrap_or_else(|e| {
                eprintln!(
                    "pgshard: PGSHARD_LOG={v:?} is not a log filter ({e}); using [log] level"
                );
                tracing_subscriber::EnvFilter::new(&log.level)
            })
        }
        _ => tracing_subscriber::EnvFilter::new(&log.level),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}
