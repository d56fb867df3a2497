//! The listener: accepts clients, enforces the connection limit, drains on shutdown.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use crate::config::Config;

/// Serve clients until `shutdown` is cancelled.
pub async fn serve(config: Arc<Config>, shutdown: CancellationToken) -> std::io::Result<()> {
    let _ = (config, shutdown);
    todo!()
}
