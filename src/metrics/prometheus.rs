//! The Prometheus text exposition format (version 0.0.4) of a proxy's [`Metrics`] and
//! of the gauges read from the pools and breakers at scrape time ([`Gauges`]).
//!
//! Written by hand: the format is a few lines per metric, and a registry crate would
//! either need a process-global recorder (several proxies share a test process) or a
//! second copy of every counter next to the one the admin console reads.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::{KindStats, LATENCY_BUCKETS, Metrics, RouteKind};

/// The content type of the exposition format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Gauges of one shard, read when scraped.
#[derive(Debug, Clone, Default)]
pub struct ShardGauges {
    /// shard name
    pub shard: String,
    /// backend connections checked out
    pub active: usize,
    /// backend connections idle in the pool
    pub idle: usize,
    /// pool size limit
    pub max: usize,
    /// checkouts waiting for a connection
    pub waiting: usize,
    /// longest checkout wait since start
    pub max_wait: Duration,
    /// breaker state: 0 closed, 1 half-open, 2 open
    pub breaker: i64,
    /// times the breaker opened
    pub breaker_opened: u64,
    /// PAUSEd from the admin console
    pub paused: bool,
}

/// Gauges of the whole proxy, read when scraped.
#[derive(Debug, Clone, Default)]
pub struct Gauges {
    /// epoch of the installed shard map
    pub epoch: u64,
    /// the installed shards
    pub shards: Vec<ShardGauges>,
}

/// `name{labels} value` lines under one HELP/TYPE header.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn new(out: &'a mut String, name: &str, kind: &str, help: &str) -> Family<'a> {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        Family { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: impl std::fmt::Display) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", escape(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {value}");
    }
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Render everything.
pub fn render(m: &Metrics, g: &Gauges) -> String {
    let mut out = String::with_capacity(8 * 1024);
    let draining = m.is_draining();
    Family::new(&mut out, "pgshard_up", "gauge", "1 while pgshard serves").sample(
        "pgshard_up",
        &[],
        1,
    );
    Family::new(
        &mut out,
        "pgshard_draining",
        "gauge",
        "1 once shutdown has begun (/health answers 503)",
    )
    .sample("pgshard_draining", &[], u8::from(draining));
    Family::new(
        &mut out,
        "pgshard_map_epoch",
        "gauge",
        "epoch of the installed shard map",
    )
    .sample("pgshard_map_epoch", &[], g.epoch);
    let mut f = Family::new(
        &mut out,
        "pgshard_reloads_total",
        "counter",
        "shard map reloads (RELOAD, SIGHUP) by result",
    );
    f.sample(
        "pgshard_reloads_total",
        &[("result", "ok")],
        m.reloads_ok.load(Ordering::Relaxed),
    );
    f.sample(
        "pgshard_reloads_total",
        &[("result", "error")],
        m.reloads_failed.load(Ordering::Relaxed),
    );
    Family::new(
        &mut out,
        "pgshard_clients",
        "gauge",
        "connected clients (admin console included)",
    )
    .sample("pgshard_clients", &[], m.clients.count());
    Family::new(
        &mut out,
        "pgshard_clients_accepted_total",
        "counter",
        "client connections accepted",
    )
    .sample(
        "pgshard_clients_accepted_total",
        &[],
        m.accepted.load(Ordering::Relaxed),
    );

    let shards = m.shards();
    let counters: [(&str, &str, KindCounter); 2] = [
        (
            "pgshard_queries_total",
            "statements sent to a shard, by route kind",
            |k| k.queries.load(Ordering::Relaxed),
        ),
        (
            "pgshard_query_errors_total",
            "statements that failed on a shard or could not reach it, by route kind",
            |k| k.errors.load(Ordering::Relaxed),
        ),
    ];
    for (metric, help, value) in counters {
        let mut f = Family::new(&mut out, metric, "counter", help);
        for (name, s) in &shards {
            for kind in RouteKind::ALL {
                f.sample(
                    metric,
                    &[("shard", name), ("route", kind.label())],
                    value(s.kind(kind)),
                );
            }
        }
    }
    let mut f = Family::new(
        &mut out,
        "pgshard_query_duration_seconds",
        "histogram",
        "time from sending a statement to a shard to its last reply",
    );
    for (name, s) in &shards {
        for kind in RouteKind::ALL {
            let h = s.kind(kind).latency.snapshot();
            let mut cumulative = 0;
            for (i, n) in h.buckets.iter().enumerate() {
                cumulative += n;
                let le = LATENCY_BUCKETS
                    .get(i)
                    .map_or_else(|| "+Inf".to_owned(), |b| b.to_string());
                f.sample(
                    "pgshard_query_duration_seconds_bucket",
                    &[("shard", name), ("route", kind.label()), ("le", &le)],
                    cumulative,
                );
            }
            let labels = [("shard", name.as_str()), ("route", kind.label())];
            f.sample(
                "pgshard_query_duration_seconds_sum",
                &labels,
                h.sum.as_secs_f64(),
            );
            f.sample("pgshard_query_duration_seconds_count", &labels, h.count);
        }
    }
    let mut f = Family::new(
        &mut out,
        "pgshard_bytes_total",
        "counter",
        "bytes exchanged with a shard's connections",
    );
    for (name, s) in &shards {
        f.sample(
            "pgshard_bytes_total",
            &[("shard", name), ("direction", "to_server")],
            s.bytes_to_server.load(Ordering::Relaxed),
        );
        f.sample(
            "pgshard_bytes_total",
            &[("shard", name), ("direction", "to_client")],
            s.bytes_to_client.load(Ordering::Relaxed),
        );
    }

    let mut f = Family::new(
        &mut out,
        "pgshard_pool_connections",
        "gauge",
        "backend connections by state",
    );
    for s in &g.shards {
        f.sample(
            "pgshard_pool_connections",
            &[("shard", &s.shard), ("state", "active")],
            s.active,
        );
        f.sample(
            "pgshard_pool_connections",
            &[("shard", &s.shard), ("state", "idle")],
            s.idle,
        );
    }
    gauge_per_shard(
        &mut out,
        g,
        "pgshard_pool_max_connections",
        "pool size limit",
        |s| s.max.to_string(),
    );
    gauge_per_shard(
        &mut out,
        g,
        "pgshard_pool_waiting",
        "checkouts waiting for a backend connection",
        |s| s.waiting.to_string(),
    );
    gauge_per_shard(
        &mut out,
        g,
        "pgshard_pool_max_wait_seconds",
        "longest wait for a backend connection since start",
        |s| s.max_wait.as_secs_f64().to_string(),
    );
    gauge_per_shard(
        &mut out,
        g,
        "pgshard_breaker_state",
        "circuit breaker: 0 closed, 1 half-open, 2 open",
        |s| s.breaker.to_string(),
    );
    per_shard(
        &mut out,
        g,
        "pgshard_breaker_opened_total",
        "counter",
        "times the circuit breaker opened",
        |s| s.breaker_opened.to_string(),
    );
    gauge_per_shard(
        &mut out,
        g,
        "pgshard_shard_paused",
        "1 while PAUSEd from the admin console",
        |s| u8::from(s.paused).to_string(),
    );
    out
}

/// Reads one counter of a route kind's stats.
type KindCounter = fn(&KindStats) -> u64;

fn gauge_per_shard(
    out: &mut String,
    g: &Gauges,
    name: &str,
    help: &str,
    value: impl Fn(&ShardGauges) -> String,
) {
    per_shard(out, g, name, "gauge", help, value);
}

/// One family of type `kind` with a sample per shard, labelled by shard.
fn per_shard(
    out: &mut String,
    g: &Gauges,
    name: &str,
    kind: &str,
    help: &str,
    value: impl Fn(&ShardGauges) -> String,
) {
    let mut f = Family::new(out, name, kind, help);
    for s in &g.shards {
        f.sample(name, &[("shard", &s.shard)], value(s));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_histograms_and_gauges() {
        let m = Metrics::default();
        m.shard("s0")
            .record(RouteKind::Single, Duration::from_micros(700), false);
        m.shard("s0")
            .record(RouteKind::Scatter, Duration::from_secs(20), true);
        m.reloads_ok.fetch_add(2, Ordering::Relaxed);
        let g = Gauges {
            epoch: 7,
            shards: vec![ShardGauges {
                shard: "s\"0".into(),
                active: 1,
                idle: 2,
                max: 10,
                breaker: 2,
                ..Default::default()
            }],
        };
        let text = render(&m, &g);
        for line in [
            "# TYPE pgshard_queries_total counter",
            "pgshard_queries_total{shard=\"s0\",route=\"single\"} 1",
            "pgshard_query_errors_total{shard=\"s0\",route=\"scatter\"} 1",
            "pgshard_query_duration_seconds_bucket{shard=\"s0\",route=\"single\",le=\"0.0005\"} 0",
            "pgshard_query_duration_seconds_bucket{shard=\"s0\",route=\"single\",le=\"0.001\"} 1",
            "pgshard_query_duration_seconds_bucket{shard=\"s0\",route=\"scatter\",le=\"+Inf\"} 1",
            "pgshard_query_duration_seconds_count{shard=\"s0\",route=\"scatter\"} 1",
            "pgshard_map_epoch 7",
            "pgshard_reloads_total{result=\"ok\"} 2",
            "pgshard_pool_connections{shard=\"s\\\"0\",state=\"idle\"} 2",
            "pgshard_breaker_state{shard=\"s\\\"0\"} 2",
            "pgshard_draining 0",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}\n{text}");
        }
        // every sample line is `name{…} number`
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
