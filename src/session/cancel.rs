//! CancelRequest under transaction pooling.
//!
//! Each client gets its own process id and secret from pgshard. While one of its
//! statements runs, its session records which backend process runs it; a CancelRequest
//! carrying the client's key is forwarded to exactly that backend process, with that
//! backend's own key. The session cannot release the connection while a cancel for it is
//! being delivered, so the cancel cannot land on the connection's next user (a
//! statement that finishes at the same moment may still be cancelled, as in Postgres).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;

use crate::config::ShardConfig;
use crate::sharding::ShardId;

/// The backend processes running a client's statement (several for a statement on
/// several shards; none when idle): shard, process id, secret key.
pub type RunningOn = Vec<(ShardId, i32, i32)>;

/// What a session shares with cancel requests for it.
pub type CancelSlot = Arc<tokio::sync::Mutex<RunningOn>>;

/// Client key (process id, secret) → the session's slot.
#[derive(Default)]
pub struct CancelRegistry {
    sessions: Mutex<HashMap<(i32, i32), CancelSlot>>,
}

impl CancelRegistry {
    /// Register a new session under a fresh random key; returns the key and its slot.
    pub fn register(&self) -> ((i32, i32), CancelSlot) {
        let slot = CancelSlot::default();
        let mut sessions = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            let key = (rand::random::<i32>() & i32::MAX, rand::random::<i32>());
            if let std::collections::hash_map::Entry::Vacant(v) = sessions.entry(key) {
                v.insert(slot.clone());
                return (key, slot);
            }
        }
    }

    /// Forget a session.
    pub fn unregister(&self, key: (i32, i32)) {
        self.sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    /// Forward a client's CancelRequest to the backend process running its statement,
    /// if any. Unknown keys and idle sessions are ignored, as Postgres does.
    pub async fn cancel(&self, key: (i32, i32), shards: &[ShardConfig], timeout: Duration) {
        let slot = self
            .sessions
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned();
        let Some(slot) = slot else {
            tracing::debug!("cancel request with an unknown key ignored");
            return;
        };
        // Held until the request is written: the session cannot hand the connection to
        // another client meanwhile.
        let running = slot.lock().await;
        for &(shard, pid, secret) in running.iter() {
            if let Some(cfg) = shards.get(shard) {
                send_cancel(cfg, pid, secret, timeout).await;
            }
        }
    }
}

/// Ask shard `cfg` to cancel the statement of backend process `pid` (CancelRequest on a
/// new connection, as Postgres clients do; over TLS when the shards use TLS). Best
/// effort, within `timeout`.
pub async fn send_cancel(cfg: &ShardConfig, pid: i32, secret: i32, timeout: Duration) {
    let mut msg = BytesMut::new();
    postgres_protocol::message::frontend::cancel_request(pid, secret, &mut msg);
    let send = async {
        let mut stream = crate::backend::conn::open(cfg).await?;
        stream.write_all(&msg).await?;
        stream.shutdown().await?;
        Ok::<_, crate::backend::BackendError>(())
    };
    match tokio::time::timeout(timeout, send).await {
        Ok(Ok(())) => {
            tracing::info!(shard = %cfg.name, backend_pid = pid, "query cancel forwarded")
        }
        Ok(Err(e)) => tracing::warn!(shard = %cfg.name, error = %e, "cancel request failed"),
        Err(_) => tracing::warn!(shard = %cfg.name, "cancel request timed out"),
    }
}
