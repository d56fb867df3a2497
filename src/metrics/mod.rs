//! What the proxy counts while it serves: per-shard statement counts, errors, latency
//! histograms and bytes ([`ShardStats`]), the connected clients ([`clients`]), reloads
//! and the draining flag. The admin console's SHOW commands and the Prometheus endpoint
//! ([`prometheus`]) read the same numbers, so the two never disagree.
//!
//! Owned by one [`Metrics`] per proxy, passed as `Arc` (no global recorder): tests run
//! several proxies in one process, and each must count only its own traffic. Recording
//! is a few relaxed atomic adds on counters a connection already holds (its shard's
//! [`ShardStats`] is looked up once, when the connection is first used).

pub mod clients;
pub mod http;
pub mod prometheus;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

pub use clients::{ClientGuard, ClientInfo, ClientRegistry, ClientState};

/// Upper bounds of the latency histogram buckets, in seconds (Prometheus `le`).
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How a statement reached a shard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteKind {
    /// the statement ran on one shard
    Single = 0,
    /// the statement ran on several shards and the replies were merged
    Scatter = 1,
}

impl RouteKind {
    /// Both kinds, in label order.
    pub const ALL: [RouteKind; 2] = [RouteKind::Single, RouteKind::Scatter];

    /// The `route` label value.
    pub fn label(self) -> &'static str {
        match self {
            RouteKind::Single => "single",
            RouteKind::Scatter => "scatter",
        }
    }
}

/// A latency histogram with fixed buckets ([`LATENCY_BUCKETS`] plus +Inf).
#[derive(Debug, Default)]
pub struct Histogram {
    /// observations per bucket (not cumulative); the last is +Inf
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    sum_micros: AtomicU64,
    count: AtomicU64,
}

/// A consistent-enough copy of a [`Histogram`] for reporting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HistogramSnapshot {
    /// observations per bucket (not cumulative); the last is +Inf
    pub buckets: Vec<u64>,
    /// sum of all observations
    pub sum: Duration,
    /// number of observations
    pub count: u64,
}

impl Histogram {
    /// Record one observation.
    pub fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        let i = LATENCY_BUCKETS
            .iter()
            .position(|&le| secs <= le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add(elapsed.as_micros() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum: Duration::from_micros(self.sum_micros.load(Ordering::Relaxed)),
            count: self.count.load(Ordering::Relaxed),
        }
    }
}

impl HistogramSnapshot {
    /// Mean latency, or zero without observations.
    pub fn mean(&self) -> Duration {
        if self.count == 0 {
            Duration::ZERO
        } else {
            self.sum / self.count as u32
        }
    }

    /// An upper bound of quantile `q` (0..1): the upper edge of the bucket holding it,
    /// as Prometheus' `histogram_quantile` would place it at most. `None` without
    /// observations; for the +Inf bucket, the largest finite bound.
    pub fn quantile_bound(&self, q: f64) -> Option<Duration> {
        let total: u64 = self.buckets.iter().sum();
        if total == 0 {
            return None;
        }
        let rank = (q * total as f64).ceil().max(1.0) as u64;
        let mut seen = 0;
        for (i, n) in self.buckets.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let le = LATENCY_BUCKETS
                    .get(i)
                    .copied()
                    .unwrap_or(LATENCY_BUCKETS[LATENCY_BUCKETS.len() - 1]);
                return Some(Duration::from_secs_f64(le));
            }
        }
        None
    }
}

/// Counters of one route kind on one shard.
#[derive(Debug, Default)]
pub struct KindStats {
    /// statements sent to the shard (or that failed to reach it)
    pub queries: AtomicU64,
    /// statements that ended in an error on the shard, or could not reach it
    pub errors: AtomicU64,
    /// time from sending a statement to its last reply
    pub latency: Histogram,
}

/// Everything counted for one shard (by name: it survives reloads that renumber).
#[derive(Debug, Default)]
pub struct ShardStats {
    kinds: [KindStats; 2],
    /// bytes written to the shard's connections
    pub bytes_to_server: AtomicU64,
    /// bytes read from the shard's connections
    pub bytes_to_client: AtomicU64,
}

impl ShardStats {
    /// The counters of one route kind.
    pub fn kind(&self, kind: RouteKind) -> &KindStats {
        &self.kinds[kind as usize]
    }

    /// A statement that ran on the shard for `elapsed` and succeeded or failed.
    pub fn record(&self, kind: RouteKind, elapsed: Duration, failed: bool) {
        let k = self.kind(kind);
        k.queries.fetch_add(1, Ordering::Relaxed);
        if failed {
            k.errors.fetch_add(1, Ordering::Relaxed);
        }
        k.latency.observe(elapsed);
    }

    /// A statement that could not reach the shard (no connection, breaker open).
    pub fn record_unreached(&self, kind: RouteKind) {
        let k = self.kind(kind);
        k.queries.fetch_add(1, Ordering::Relaxed);
        k.errors.fetch_add(1, Ordering::Relaxed);
    }
}

/// All counters of one proxy.
#[derive(Debug, Default)]
pub struct Metrics {
    shards: RwLock<BTreeMap<String, Arc<ShardStats>>>,
    /// connected clients
    pub clients: Arc<ClientRegistry>,
    /// client connections accepted since start
    pub accepted: AtomicU64,
    /// successful shard map reloads
    pub reloads_ok: AtomicU64,
    /// refused shard map reloads
    pub reloads_failed: AtomicU64,
    /// shutdown has begun: /health answers 503
    pub draining: AtomicBool,
}

impl Metrics {
    /// The counters of shard `name`, created on first use.
    pub fn shard(&self, name: &str) -> Arc<ShardStats> {
        if let Some(s) = self
            .shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
        {
            return s.clone();
        }
        self.shards
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    /// Every shard counted so far, by name (shards removed by a reload stay, so their
    /// counters do not go backwards while a scraper still sees them).
    pub fn shards(&self) -> Vec<(String, Arc<ShardStats>)> {
        self.shards
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_and_quantiles() {
        let h = Histogram::default();
        assert_eq!(h.snapshot().quantile_bound(0.99), None);
        for _ in 0..98 {
            h.observe(Duration::from_micros(300)); // ≤ 0.5 ms
        }
        h.observe(Duration::from_millis(20)); // ≤ 25 ms
        h.observe(Duration::from_secs(30)); // +Inf
        let s = h.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.buckets[0], 98);
        assert_eq!(s.buckets[5], 1);
        assert_eq!(s.buckets[LATENCY_BUCKETS.len()], 1);
        assert_eq!(s.quantile_bound(0.5), Some(Duration::from_micros(500)));
        assert_eq!(s.quantile_bound(0.99), Some(Duration::from_millis(25)));
        assert_eq!(s.quantile_bound(1.0), Some(Duration::from_secs(10)));
        assert_eq!(
            s.mean(),
            (Duration::from_micros(300) * 98 + Duration::from_millis(20) + Duration::from_secs(30))
                / 100
        );
    }

    #[test]
    fn shard_counters_by_kind() {
        let m = Metrics::default();
        let s = m.shard("s1");
        s.record(RouteKind::Single, Duration::from_millis(1), false);
        s.record(RouteKind::Single, Duration::from_millis(1), true);
        s.record_unreached(RouteKind::Scatter);
        assert!(Arc::ptr_eq(&s, &m.shard("s1")));
        let single = s.kind(RouteKind::Single);
        assert_eq!(single.queries.load(Ordering::Relaxed), 2);
        assert_eq!(single.errors.load(Ordering::Relaxed), 1);
        assert_eq!(single.latency.snapshot().count, 2);
        let scatter = s.kind(RouteKind::Scatter);
        assert_eq!(scatter.queries.load(Ordering::Relaxed), 1);
        assert_eq!(scatter.latency.snapshot().count, 0);
        assert_eq!(m.shards().len(), 1);
    }
}
