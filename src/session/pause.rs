//! PAUSE / RESUME of shards from the admin console: new statements for a paused shard
//! wait (they do not fail) until it is resumed, while statements and transactions
//! already holding a connection to it finish normally. Operators use it around shard
//! maintenance (a restart, a failover) so clients see a delay instead of errors.
//!
//! Shards are named, not numbered: a reload that renumbers shards keeps them paused. A
//! wait is bounded by `[server] hold_timeout_ms` (then 55P03), so a forgotten PAUSE
//! cannot hang clients forever.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::Notify;
use tokio::time::Instant;

/// The paused shards.
#[derive(Debug, Default)]
pub struct Pauses {
    /// any shard paused: the data path checks only this while nothing is
    any: AtomicBool,
    paused: Mutex<BTreeSet<String>>,
    resumed: Notify,
}

/// A wait for a paused shard ran past its deadline.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shard \"{0}\" is paused by an administrator and was not resumed in time; retry")]
pub struct StillPaused(pub String);

impl Pauses {
    /// Whether any shard is paused (one atomic load).
    #[inline]
    pub fn any(&self) -> bool {
        self.any.load(Ordering::Acquire)
    }

    /// Pause these shards.
    pub fn pause(&self, shards: &[String]) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        paused.extend(shards.iter().cloned());
        self.any.store(!paused.is_empty(), Ordering::Release);
    }

    /// Resume these shards (`None`: all); waiting statements go on.
    pub fn resume(&self, shards: Option<&[String]>) {
        let mut paused = self.paused.lock().unwrap_or_else(|e| e.into_inner());
        match shards {
            None => paused.clear(),
            Some(names) => names.iter().for_each(|n| {
                paused.remove(n);
            }),
        }
        self.any.store(!paused.is_empty(), Ordering::Release);
        drop(paused);
        self.resumed.notify_waiters();
    }

    /// Whether `shard` is paused.
    pub fn is_paused(&self, shard: &str) -> bool {
        self.any()
            && self
                .paused
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .contains(shard)
    }

    /// The paused shards, sorted.
    pub fn list(&self) -> Vec<String> {
        self.paused
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    /// Wait until `shard` is not paused, at most until `deadline`.
    pub async fn wait(&self, shard: &str, deadline: Instant) -> Result<(), StillPaused> {
        loop {
            // registered before the check, so a RESUME between the two is not missed
            let resumed = self.resumed.notified();
            tokio::pin!(resumed);
            resumed.as_mut().enable();
            if !self.is_paused(shard) {
                return Ok(());
            }
            if tokio::time::timeout_at(deadline, resumed).await.is_err() {
                return Err(StillPaused(shard.to_owned()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn waits_until_resumed_or_deadline() {
        let p = Arc::new(Pauses::default());
        assert!(!p.any());
        p.pause(&["s1".to_owned()]);
        assert!(p.is_paused("s1") && !p.is_paused("s0"));
        assert_eq!(p.list(), ["s1"]);
        // not paused: no wait
        p.wait("s0", Instant::now()).await.unwrap();
        // past the deadline: refused
        let e = p
            .wait("s1", Instant::now() + Duration::from_millis(20))
            .await
            .unwrap_err();
        assert!(e.to_string().contains("\"s1\" is paused"));
        // resumed while waiting
        let waiter = {
            let p = p.clone();
            tokio::spawn(
                async move { p.wait("s1", Instant::now() + Duration::from_secs(10)).await },
            )
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        p.resume(None);
        waiter.await.unwrap().unwrap();
        assert!(!p.any());
    }
}
