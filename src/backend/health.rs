//! Per-shard health checks and circuit breaker.
//!
//! A shard that is down should cost each client one quick, clear error, not a wait for
//! the connect or pool timeout while more clients queue up behind it. So each shard's
//! pool carries a breaker ([`ShardBreaker`]): a checker task probes every shard each
//! `[health] interval_ms` with its own short connection (connect, login, `SELECT 1`);
//! refused data-path connects count too. After `failure_threshold` consecutive failures
//! the breaker opens and every checkout for that shard fails at once
//! ([`BackendError::BreakerOpen`], 08006 to the client). After the `open_ms` cool-down
//! the next probe runs half-open; `success_threshold` consecutive good probes close it.
//!
//! The state machine itself ([`Breaker`]) is pure: callers pass the clock, so it is
//! tested without sleeping.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{BackendConn, BackendError};
use crate::config::{HealthConfig, ShardConfig};
use crate::sharding::ShardId;

/// Where a shard's circuit breaker stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum BreakerState {
    /// the shard serves clients
    #[default]
    Closed,
    /// the shard failed `failure_threshold` checks in a row: checkouts fail at once
    Open,
    /// the cool-down is over and probes are testing the shard; clients still fail fast
    HalfOpen,
}

impl BreakerState {
    /// Name for listings: `"closed"`, `"open"` or `"half-open"`.
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half-open",
        }
    }

    /// Value for a metrics gauge: 0 closed, 1 half-open, 2 open (higher is worse).
    pub fn gauge(self) -> i64 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    fn to_u8(self) -> u8 {
        self.gauge() as u8
    }

    fn from_u8(v: u8) -> BreakerState {
        match v {
            0 => BreakerState::Closed,
            1 => BreakerState::HalfOpen,
            _ => BreakerState::Open,
        }
    }
}

/// One shard's health, for the admin console and metrics.
#[derive(Debug, Clone)]
pub struct ShardHealth {
    /// shard name
    pub shard: String,
    /// breaker state
    pub state: BreakerState,
    /// failed checks (and refused connects) since the last success
    pub consecutive_failures: u32,
    /// how often the breaker opened from closed (one per outage; failed half-open
    /// probes that re-open it do not count again)
    pub opened_total: u64,
    /// the most recent failure, kept after recovery so an operator can see what happened
    pub last_error: Option<String>,
    /// age of the last health check (None: not checked yet)
    pub last_check: Option<Duration>,
}

/// The breaker of one shard as a pure state machine; every call gets the time.
///
/// Half-open does not admit client traffic: the checker's probes are the trial
/// requests. Letting clients in while the shard has not yet proved itself would send
/// every queued client at it at once, the pile-up the breaker exists to prevent; the
/// price is that recovery takes the cool-down plus `success_threshold` probe intervals.
#[derive(Debug, Clone)]
pub struct Breaker {
    state: BreakerState,
    consecutive_failures: u32,
    consecutive_successes: u32,
    opened_at: Option<Instant>,
    opened_total: u64,
    last_error: Option<String>,
    last_check: Option<Instant>,
}

impl Default for Breaker {
    fn default() -> Breaker {
        Breaker::new()
    }
}

impl Breaker {
    /// A closed breaker with no history.
    pub fn new() -> Breaker {
        Breaker {
            state: BreakerState::Closed,
            consecutive_failures: 0,
            consecutive_successes: 0,
            opened_at: None,
            opened_total: 0,
            last_error: None,
            last_check: None,
        }
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        self.state
    }

    /// Whether clients may use the shard (only when closed, see the type's docs).
    pub fn admits(&self) -> bool {
        self.state == BreakerState::Closed
    }

    /// Whether the checker should probe now. An open breaker skips probes until its
    /// cool-down has passed (a restarting server gets room to come up); then it turns
    /// half-open and the probe decides.
    pub fn begin_probe(&mut self, now: Instant, cfg: &HealthConfig) -> bool {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => true,
            BreakerState::Open => {
                let since = self
                    .opened_at
                    .map_or(Duration::MAX, |at| now.saturating_duration_since(at));
                if since >= cfg.open {
                    self.state = BreakerState::HalfOpen;
                    self.consecutive_successes = 0;
                    true
                } else {
                    false
                }
            }
        }
    }

    /// A health check succeeded. Returns the new state if it changed.
    pub fn probe_succeeded(&mut self, now: Instant, cfg: &HealthConfig) -> Option<BreakerState> {
        self.last_check = Some(now);
        self.succeeded(cfg)
    }

    /// A health check failed with `error`. Returns the new state if it changed.
    pub fn probe_failed(
        &mut self,
        now: Instant,
        error: String,
        cfg: &HealthConfig,
    ) -> Option<BreakerState> {
        self.last_check = Some(now);
        self.failed(now, error, cfg)
    }

    /// A health check failed while the shard was answering clients: remembered as the
    /// last error, not counted towards opening, and it ends a run of failures (the
    /// answers prove the shard was alive in between).
    pub fn probe_inconclusive(&mut self, now: Instant, error: String) {
        self.last_check = Some(now);
        self.consecutive_failures = 0;
        self.last_error = Some(format!(
            "{error} (not counted: the shard was answering queries)"
        ));
    }

    /// A data-path connection was made: like a successful check, except that it cannot
    /// end the cool-down of an open breaker (it was started before the breaker opened).
    pub fn connect_succeeded(&mut self, cfg: &HealthConfig) -> Option<BreakerState> {
        self.succeeded(cfg)
    }

    /// A data-path connect failed: counts like a failed check (a refused connect is a
    /// failure whoever sees it), so a dead shard is noticed between two checks.
    pub fn connect_failed(
        &mut self,
        now: Instant,
        error: String,
        cfg: &HealthConfig,
    ) -> Option<BreakerState> {
        self.failed(now, error, cfg)
    }

    fn succeeded(&mut self, cfg: &HealthConfig) -> Option<BreakerState> {
        match self.state {
            BreakerState::Closed => {
                self.consecutive_failures = 0;
                None
            }
            BreakerState::HalfOpen => {
                self.consecutive_failures = 0;
                self.consecutive_successes += 1;
                if self.consecutive_successes >= cfg.success_threshold {
                    self.state = BreakerState::Closed;
                    self.opened_at = None;
                    Some(BreakerState::Closed)
                } else {
                    None
                }
            }
            // only a half-open probe may close an open breaker
            BreakerState::Open => None,
        }
    }

    fn failed(&mut self, now: Instant, error: String, cfg: &HealthConfig) -> Option<BreakerState> {
        self.last_error = Some(error);
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.consecutive_successes = 0;
        match self.state {
            BreakerState::Closed if self.consecutive_failures >= cfg.failure_threshold => {
                self.opened_total += 1;
                self.open(now)
            }
            BreakerState::HalfOpen => self.open(now),
            BreakerState::Closed | BreakerState::Open => None,
        }
    }

    fn open(&mut self, now: Instant) -> Option<BreakerState> {
        self.state = BreakerState::Open;
        self.opened_at = Some(now);
        Some(BreakerState::Open)
    }

    /// This breaker as seen at `now`, for listings.
    pub fn snapshot(&self, shard: &str, now: Instant) -> ShardHealth {
        ShardHealth {
            shard: shard.to_owned(),
            state: self.state,
            consecutive_failures: self.consecutive_failures,
            opened_total: self.opened_total,
            last_error: self.last_error.clone(),
            last_check: self.last_check.map(|t| now.saturating_duration_since(t)),
        }
    }
}

/// When a shard last answered a client's statement (a ReadyForQuery came back, error
/// or not): the evidence that a shard whose health check failed is serving anyway.
/// Shared by the breaker and every connection of the shard's pool.
#[derive(Debug)]
pub struct Answered {
    base: Instant,
    /// µs after `base` of the last answer, +1 (0: never)
    last_us: AtomicU64,
}

impl Answered {
    fn new() -> Answered {
        Answered {
            base: Instant::now(),
            last_us: AtomicU64::new(0),
        }
    }

    /// The shard answered a statement now. Called for every ReadyForQuery from every
    /// session, so the shared word is written at most once a millisecond (far finer
    /// than any check interval): reading a line other cores only read stays cheap.
    pub fn now(&self) {
        let us = u64::try_from(self.base.elapsed().as_micros()).unwrap_or(u64::MAX - 1) + 1;
        let last = self.last_us.load(Ordering::Relaxed);
        if last == 0 || us > last.saturating_add(1_000) {
            self.last_us.fetch_max(us, Ordering::Relaxed);
        }
    }

    /// Whether the shard answered a statement at or after `t`.
    pub fn since(&self, t: Instant) -> bool {
        let last = self.last_us.load(Ordering::Relaxed);
        let t_us = t
            .checked_duration_since(self.base)
            .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        last != 0 && last > t_us
    }
}

/// The breaker of one shard as shared by its pool manager, the checker and
/// `Pools::get`. Kept with the pool across a reload that keeps the pool.
pub struct ShardBreaker {
    cfg: HealthConfig,
    /// answers seen by the shard's connections
    answered: Arc<Answered>,
    /// a check is running (at most one per shard)
    checking: AtomicBool,
    /// mirror of the state for the data path: one atomic load per checkout
    state: AtomicU8,
    inner: Mutex<Breaker>,
    /// woken when the breaker leaves closed, so checkouts already waiting fail too
    opened: Notify,
}

impl ShardBreaker {
    /// A closed breaker under `cfg`.
    pub fn new(cfg: HealthConfig) -> ShardBreaker {
        ShardBreaker {
            cfg,
            answered: Arc::new(Answered::new()),
            checking: AtomicBool::new(false),
            state: AtomicU8::new(BreakerState::Closed.to_u8()),
            inner: Mutex::new(Breaker::new()),
            opened: Notify::new(),
        }
    }

    /// Whether a check of the shard is running.
    pub fn checking(&self) -> bool {
        self.checking.load(Ordering::Acquire)
    }

    /// The handle a new connection of the shard records its answers in.
    pub fn answered(&self) -> Arc<Answered> {
        self.answered.clone()
    }

    /// Whether a failure seen now should be set aside: the breaker is closed and the
    /// shard answered clients since about one check interval ago.
    fn serving(&self, now: Instant) -> bool {
        let window = now.checked_sub(self.cfg.interval).unwrap_or(now);
        self.state() == BreakerState::Closed && self.answered.since(window)
    }

    /// Whether clients may use the shard now.
    #[inline]
    pub fn admits(&self) -> bool {
        self.state.load(Ordering::Acquire) == BreakerState::Closed.to_u8()
    }

    /// The current state.
    pub fn state(&self) -> BreakerState {
        BreakerState::from_u8(self.state.load(Ordering::Acquire))
    }

    /// Resolves when the breaker leaves closed. Create it (and `enable` it) before
    /// checking [`admits`](Self::admits) so a transition in between is not missed.
    pub fn opened(&self) -> tokio::sync::futures::Notified<'_> {
        self.opened.notified()
    }

    /// The error a checkout gets while the breaker refuses clients.
    pub fn open_error(&self, shard: &str) -> BackendError {
        let b = self.lock();
        BackendError::BreakerOpen {
            shard: shard.to_owned(),
            failures: b.consecutive_failures,
            last_error: b.last_error.clone().unwrap_or_else(|| "none".to_owned()),
        }
    }

    /// Apply `f` to the state machine, publish the new state, wake waiting checkouts
    /// if it left closed, and return what `f` returned.
    pub fn update<R>(&self, f: impl FnOnce(&mut Breaker, &HealthConfig) -> R) -> R {
        let mut b = self.lock();
        let r = f(&mut b, &self.cfg);
        let state = b.state();
        drop(b);
        self.state.store(state.to_u8(), Ordering::Release);
        if state != BreakerState::Closed {
            self.opened.notify_waiters();
        }
        r
    }

    /// Record the outcome of a data-path connect (nothing when checks are disabled:
    /// then the breaker never opens).
    pub fn record_connect(&self, shard: &str, result: Result<(), &BackendError>) {
        if !self.cfg.enabled {
            return;
        }
        let now = Instant::now();
        let changed = match result {
            Ok(()) => self.update(|b, cfg| b.connect_succeeded(cfg)),
            // e.g. max_connections reached while the pool's other connections serve
            Err(e) if self.serving(now) => {
                tracing::info!(shard, error = %e,
                    "connect failed but the shard is answering queries: not counted");
                self.update(|b, _| b.probe_inconclusive(now, e.to_string()));
                None
            }
            Err(e) => self.update(|b, cfg| b.connect_failed(now, e.to_string(), cfg)),
        };
        if let Some(state) = changed {
            log_transition(shard, state, &self.snapshot(shard));
        }
    }

    /// Run one health check if one is due: probe the shard, record the result, and
    /// return the new state if it changed.
    ///
    /// A failed check of a closed breaker is not counted when the shard answered
    /// clients' statements since about the previous check (this check's start −
    /// `interval_ms`): a check is a fresh connection and login, which a busy but healthy
    /// server can be slow to grant (seen: > 1 s on a saturated 2-core host) or refuse
    /// (max_connections), and opening the breaker then would take a serving shard away
    /// from every client. A shard that is down or hung answers nothing, so its failed
    /// checks count.
    pub async fn check(&self, shard: ShardId, cfg: &ShardConfig) -> Option<BreakerState> {
        if self.checking.swap(true, Ordering::AcqRel) {
            return None;
        }
        let _running = Checking(&self.checking);
        if !self.update(|b, c| b.begin_probe(Instant::now(), c)) {
            return None;
        }
        let began = Instant::now();
        let result = probe(shard, cfg, self.cfg.timeout).await;
        let now = Instant::now();
        let changed = match result {
            Ok(()) => self.update(|b, c| b.probe_succeeded(now, c)),
            Err(e) if self.serving(began) => {
                tracing::info!(shard = %cfg.name, error = %e,
                    "health check failed but the shard is answering queries: not counted");
                self.update(|b, _| b.probe_inconclusive(now, e.to_string()));
                None
            }
            Err(e) => self.update(|b, c| b.probe_failed(now, e.to_string(), c)),
        };
        if let Some(state) = changed {
            log_transition(&cfg.name, state, &self.snapshot(&cfg.name));
        }
        changed
    }

    /// The current health, for listings.
    pub fn snapshot(&self, shard: &str) -> ShardHealth {
        self.lock().snapshot(shard, Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Breaker> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Clears [`ShardBreaker::checking`] when a check ends, however it ends.
struct Checking<'a>(&'a AtomicBool);

impl Drop for Checking<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

fn log_transition(shard: &str, state: BreakerState, h: &ShardHealth) {
    match state {
        BreakerState::Open => tracing::warn!(
            shard,
            failures = h.consecutive_failures,
            last_error = h.last_error.as_deref().unwrap_or(""),
            "circuit breaker open: queries for this shard fail fast"
        ),
        BreakerState::HalfOpen => tracing::info!(shard, "circuit breaker half-open"),
        BreakerState::Closed => tracing::info!(shard, "circuit breaker closed: shard is back"),
    }
}

/// One health check: a fresh connection (so a server that is up but refuses logins
/// fails too, and a full pool cannot delay the check), `SELECT 1`, Terminate.
async fn probe(shard: ShardId, cfg: &ShardConfig, timeout: Duration) -> Result<(), BackendError> {
    let check = async {
        let mut conn = BackendConn::connect_as(shard, cfg, timeout, "pgshard health check").await?;
        let answer = conn.simple_query("SELECT 1").await?;
        if let Some(e) = answer.error {
            return Err(BackendError::Protocol(format!("SELECT 1 failed: {e}")));
        }
        // Terminate (F), so the server does not log a lost connection every interval
        conn.queue(&[b'X', 0, 0, 0, 4]);
        let _ = conn.flush().await;
        Ok(())
    };
    match tokio::time::timeout(timeout, check).await {
        Ok(result) => result,
        Err(_) => Err(BackendError::CheckTimeout(timeout)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> HealthConfig {
        HealthConfig {
            enabled: true,
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            failure_threshold: 3,
            success_threshold: 2,
            open: Duration::from_millis(500),
        }
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A breaker opened by three failed probes at `t0`.
    fn opened(t0: Instant) -> Breaker {
        let mut b = Breaker::new();
        for _ in 0..3 {
            assert!(b.begin_probe(t0, &cfg()));
            b.probe_failed(t0, "refused".into(), &cfg());
        }
        assert_eq!(b.state(), BreakerState::Open);
        b
    }

    #[test]
    fn opens_after_threshold_consecutive_failures() {
        let t0 = Instant::now();
        let c = cfg();
        let mut b = Breaker::new();
        assert!(b.admits());
        assert_eq!(b.probe_failed(t0, "e1".into(), &c), None);
        assert_eq!(b.probe_failed(t0, "e2".into(), &c), None);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(
            b.probe_failed(t0, "e3".into(), &c),
            Some(BreakerState::Open)
        );
        assert!(!b.admits());
        let h = b.snapshot("s1", t0 + ms(10));
        assert_eq!(h.shard, "s1");
        assert_eq!(h.state, BreakerState::Open);
        assert_eq!(h.consecutive_failures, 3);
        assert_eq!(h.opened_total, 1);
        assert_eq!(h.last_error.as_deref(), Some("e3"));
        assert_eq!(h.last_check, Some(ms(10)));
    }

    #[test]
    fn a_success_resets_the_failure_count() {
        let t0 = Instant::now();
        let c = cfg();
        let mut b = Breaker::new();
        b.probe_failed(t0, "e".into(), &c);
        b.probe_failed(t0, "e".into(), &c);
        b.probe_succeeded(t0, &c);
        assert_eq!(b.snapshot("s", t0).consecutive_failures, 0);
        b.probe_failed(t0, "e".into(), &c);
        b.probe_failed(t0, "e".into(), &c);
        assert_eq!(b.state(), BreakerState::Closed);
        // a data-path connect failure counts like a failed check
        assert_eq!(
            b.connect_failed(t0, "refused".into(), &c),
            Some(BreakerState::Open)
        );
    }

    #[test]
    fn open_waits_out_the_cool_down() {
        let t0 = Instant::now();
        let c = cfg();
        let mut b = opened(t0);
        assert!(!b.begin_probe(t0 + ms(100), &c));
        assert!(!b.begin_probe(t0 + ms(499), &c));
        assert_eq!(b.state(), BreakerState::Open);
        // successes seen while open (a late data-path connect) do not close it
        assert_eq!(b.connect_succeeded(&c), None);
        assert_eq!(b.state(), BreakerState::Open);
        assert!(b.begin_probe(t0 + ms(500), &c));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(!b.admits(), "half-open does not admit clients");
    }

    #[test]
    fn half_open_closes_after_success_threshold() {
        let t0 = Instant::now();
        let c = cfg();
        let mut b = opened(t0);
        assert!(b.begin_probe(t0 + ms(600), &c));
        assert_eq!(b.probe_succeeded(t0 + ms(600), &c), None);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert!(b.begin_probe(t0 + ms(700), &c));
        assert_eq!(
            b.probe_succeeded(t0 + ms(700), &c),
            Some(BreakerState::Closed)
        );
        assert!(b.admits());
        let h = b.snapshot("s", t0 + ms(700));
        assert_eq!(h.consecutive_failures, 0);
        assert_eq!(h.opened_total, 1);
        assert_eq!(
            h.last_error.as_deref(),
            Some("refused"),
            "kept after recovery"
        );
        // a later outage needs the full threshold again
        b.probe_failed(t0 + ms(800), "x".into(), &c);
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn half_open_failure_reopens_with_a_new_cool_down() {
        let t0 = Instant::now();
        let c = cfg();
        let mut b = opened(t0);
        assert!(b.begin_probe(t0 + ms(600), &c));
        b.probe_succeeded(t0 + ms(600), &c);
        assert!(b.begin_probe(t0 + ms(700), &c));
        assert_eq!(
            b.probe_failed(t0 + ms(700), "still down".into(), &c),
            Some(BreakerState::Open)
        );
        // the cool-down restarts from the failed probe
        assert!(!b.begin_probe(t0 + ms(1100), &c));
        assert!(b.begin_probe(t0 + ms(1200), &c));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        // one success is not enough after a failure reset the count
        b.probe_succeeded(t0 + ms(1200), &c);
        assert_eq!(b.state(), BreakerState::HalfOpen);
        let h = b.snapshot("s", t0 + ms(1200));
        assert_eq!(
            h.opened_total, 1,
            "re-opening from half-open is the same outage"
        );
        assert_eq!(h.last_error.as_deref(), Some("still down"));
    }

    #[test]
    fn state_names_and_gauges() {
        assert_eq!(BreakerState::Closed.as_str(), "closed");
        assert_eq!(BreakerState::Open.as_str(), "open");
        assert_eq!(BreakerState::HalfOpen.as_str(), "half-open");
        assert_eq!(BreakerState::Closed.gauge(), 0);
        assert_eq!(BreakerState::HalfOpen.gauge(), 1);
        assert_eq!(BreakerState::Open.gauge(), 2);
        for s in [
            BreakerState::Closed,
            BreakerState::Open,
            BreakerState::HalfOpen,
        ] {
            assert_eq!(BreakerState::from_u8(s.to_u8()), s);
        }
    }

    /// A shard config whose port refuses connections.
    fn refusing_shard() -> ShardConfig {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let config = crate::config::parse(include_str!("../config/testdata/base.toml"), "t")
            .expect("test map parses");
        let mut shard = config.shards[0].clone();
        shard.port = port;
        shard
    }

    #[test]
    fn answered_since_compares_with_the_last_answer() {
        let a = Answered::new();
        let before = Instant::now();
        assert!(!a.since(before), "never answered");
        std::thread::sleep(Duration::from_millis(2));
        a.now();
        assert!(a.since(before));
        std::thread::sleep(Duration::from_millis(2));
        assert!(!a.since(Instant::now()));
        assert!(
            a.since(before - Duration::from_secs(1)),
            "before the handle existed"
        );
    }

    #[tokio::test]
    async fn failed_checks_of_a_shard_answering_queries_are_not_counted() {
        let shard = refusing_shard();
        let b = ShardBreaker::new(cfg());
        let answered = b.answered();
        for _ in 0..5 {
            answered.now();
            assert_eq!(b.check(0, &shard).await, None);
        }
        // a refused data-path connect neither
        answered.now();
        b.record_connect("s0", Err(&BackendError::Closed));
        assert_eq!(b.state(), BreakerState::Closed);
        let h = b.snapshot("s0");
        assert_eq!(h.consecutive_failures, 0);
        let last = h.last_error.expect("the failure is shown");
        assert!(last.contains("not counted"), "{last}");

        // the evidence window is the interval before the check: older answers do not count
        tokio::time::sleep(cfg().interval * 2).await;
        for _ in 0..cfg().failure_threshold - 1 {
            assert_eq!(b.check(0, &shard).await, None);
        }
        assert_eq!(b.check(0, &shard).await, Some(BreakerState::Open));
        // once open, answers (from connections checked out before it opened) are no
        // evidence: a failed half-open check reopens it
        answered.now();
        assert!(!b.serving(Instant::now()));
        tokio::time::sleep(cfg().open).await;
        assert_eq!(b.check(0, &shard).await, Some(BreakerState::Open));
        assert_eq!(b.snapshot("s0").opened_total, 1);
    }

    #[tokio::test]
    async fn an_answer_between_failures_ends_the_run() {
        let shard = refusing_shard();
        let b = ShardBreaker::new(cfg());
        // failure, then a failure set aside (answers seen), then failures again: the
        // breaker needs failure_threshold failures in a row after the answers
        assert_eq!(b.check(0, &shard).await, None);
        b.answered().now();
        assert_eq!(b.check(0, &shard).await, None);
        assert_eq!(b.snapshot("s0").consecutive_failures, 0);
        tokio::time::sleep(cfg().interval * 2).await;
        assert_eq!(b.check(0, &shard).await, None);
        assert_eq!(b.check(0, &shard).await, None);
        assert_eq!(b.check(0, &shard).await, Some(BreakerState::Open));
    }

    #[tokio::test]
    async fn shared_breaker_wakes_waiting_checkouts() {
        let mut c = cfg();
        c.failure_threshold = 1;
        let b = std::sync::Arc::new(ShardBreaker::new(c));
        let (ready, waiting) = tokio::sync::oneshot::channel();
        let waiter = {
            let b = b.clone();
            tokio::spawn(async move {
                let opened = b.opened();
                tokio::pin!(opened);
                opened.as_mut().enable();
                assert!(b.admits());
                ready.send(()).unwrap();
                opened.await;
            })
        };
        waiting.await.unwrap();
        b.record_connect("s1", Err(&BackendError::Closed));
        assert!(!b.admits());
        assert_eq!(b.state(), BreakerState::Open);
        tokio::time::timeout(Duration::from_secs(5), waiter)
            .await
            .expect("waiter woken")
            .unwrap();
        match b.open_error("s1") {
            BackendError::BreakerOpen {
                shard,
                failures,
                last_error,
            } => {
                assert_eq!(shard, "s1");
                assert_eq!(failures, 1);
                assert_eq!(last_error, "server closed the connection");
            }
            other => panic!("{other:?}"),
        }
    }
}
