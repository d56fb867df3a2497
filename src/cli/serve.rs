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
    let log_level_setter = init_logging(&config.log);
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
            Ok(server) => server
                .with_config_path(config_path)
                .with_log_level_setter(log_level_setter)
                .reload_on_sighup(),
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
///
/// Returns how a reload changes the level: `None` while `PGSHARD_LOG` is in force (the
/// environment outranks the file) or when a subscriber was installed before.
pub(crate) fn init_logging(log: &LogConfig) -> Option<crate::session::LogLevelSetter> {
    let (filter, from_env) = match std::env::var("PGSHARD_LOG") {
        Ok(v) if !v.trim().is_empty() => match tracing_subscriber::EnvFilter::try_new(&v) {
            Ok(filter) => (filter, true),
            Err(e) => {
                eprintln!(
                    "pgshard: PGSHARD_LOG={v:?} is not a log filter ({e}); using [log] level"
                );
                (tracing_subscriber::EnvFilter::new(&log.level), false)
            }
        },
        _ => (tracing_subscriber::EnvFilter::new(&log.level), false),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let setter = match log.format {
        LogFormat::Text => {
            let builder = builder.with_filter_reloading();
            let setter = level_setter(builder.reload_handle());
            builder.try_init().ok().map(|()| setter)
        }
        LogFormat::Json => {
            let builder = builder
                .json()
                .with_current_span(true)
                .with_span_list(false)
                .with_filter_reloading();
            let setter = level_setter(builder.reload_handle());
            builder.try_init().ok().map(|()| setter)
        }
    };
    setter.filter(|_| !from_env)
}

/// A [`crate::session::LogLevelSetter`] over a subscriber's reloadable filter.
fn level_setter<S>(
    handle: tracing_subscriber::reload::Handle<tracing_subscriber::EnvFilter, S>,
) -> crate::session::LogLevelSetter
where
    S: tracing::Subscriber + Send + Sync + 'static,
{
    Arc::new(move |level: &str| {
        let filter = tracing_subscriber::EnvFilter::try_new(level).map_err(|e| e.to_string())?;
        handle.reload(filter).map_err(|e| e.to_string())
    })
}
