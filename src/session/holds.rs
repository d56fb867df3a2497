//! Slot holds: the proxy side of a rebalance cutover.
//!
//! While a slot is held, statements whose route touches it wait instead of running, and
//! are routed again once it is released. The rebalancer holds the slots it is moving,
//! copies their last rows, installs the new map (RELOAD) and releases them, so the
//! waiting statements run on the new owner and none of them ever sees the rows half
//! moved.
//!
//! Holds belong to the proxy, not to the admin connection that set them: if the
//! rebalancer dies mid-cutover the slots stay held until `RELEASE` or a restart. Failing
//! statements with 55P03 after `hold_timeout_ms` is safe; serving them from a shard that
//! may already have given its rows away is not.
//!
//! The fast path (nothing held) is one atomic load; everything else (the held set, the
//! per-command records) is behind a mutex that only admin commands and waiting
//! statements take.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::ShardMap;
use crate::config::validate::{format_range, parse_range};
use crate::router::{Reason, Route};

/// Bit of [`SlotHolds::state`] set while any slot is held.
pub const HELD: u64 = 1;

/// The slots a routed statement touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Touch {
    /// no sharded table: never waits
    Nothing,
    /// one slot (a statement routed by its shard key)
    Slot(u32),
    /// every slot (a statement on a sharded table that runs on several shards)
    All,
}

impl Touch {
    /// What a route touches. Routes by key touch their key's slot; scatter reads,
    /// broadcast and split writes and COPY of a sharded table touch every slot;
    /// everything else (unsharded and reference tables, session statements, DDL) none.
    pub fn of(route: &Route, map: &ShardMap) -> Touch {
        match &route.reason {
            Reason::ShardKey { slot, .. } => Touch::Slot(*slot),
            Reason::Scatter { .. } | Reason::SplitInsert { .. } => Touch::All,
            Reason::Copy { table, .. } if map.table(table).is_some() => Touch::All,
            _ => Touch::Nothing,
        }
    }
}

/// A statement waited longer than `hold_timeout_ms` for a held slot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "slot {slot} is being moved to another shard and the move did not finish within {ms} ms; retry"
)]
pub struct HoldTimeout {
    /// a held slot the statement needed
    pub slot: u32,
    /// the timeout that passed
    pub ms: u128,
}

/// One HOLD command still (partly) in effect.
#[derive(Debug, Clone)]
struct HoldEntry {
    slots: BTreeSet<u32>,
    since: Instant,
}

/// What `SHOW HOLDS` reports for one HOLD command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldInfo {
    /// its slots still held, as ranges
    pub ranges: Vec<(u32, u32)>,
    /// how long it has been in effect
    pub held_for: Duration,
}

/// The held slots of one proxy.
#[derive(Debug)]
pub struct SlotHolds {
    /// The one word the data path reads per statement: bit 0 is set while any slot is
    /// held; the bits above count reloads that renumbered the shards (see
    /// [`SlotHolds::renumbered`]).
    state: AtomicU64,
    entries: Mutex<Vec<HoldEntry>>,
    /// bumped on every release, waking waiters to check again
    changed: watch::Sender<u64>,
    /// statements waiting right now
    waiting: AtomicUsize,
    /// statements routed and not yet finished, for [`SlotHolds::quiesce`]
    in_flight: Arc<InFlightCounters>,
    /// one `quiesce` at a time
    quiescing: tokio::sync::Mutex<()>,
}

/// Statements between routing and completion, counted in two phases: `quiesce` moves
/// new statements to the other phase and waits for the old one to empty.
#[derive(Debug, Default)]
struct InFlightCounters {
    phase: AtomicUsize,
    count: [AtomicUsize; 2],
}

/// A session's mark "a statement I routed is still running" (one per session).
///
/// Why: `HOLD` must not return while a statement routed *before* it can still reach the
/// old owner of a held slot — the rebalancer would drain and move the slot while that
/// statement writes behind it. A session enters before it looks at the holds and leaves
/// when the statement (or unsynced batch) is finished; `HOLD` sets the held bit, then
/// waits for every statement that entered before. Both sides use SeqCst (increment,
/// then load the held bit; set the held bit, then load the count), so a statement either
/// sees the hold or is counted by it.
#[derive(Debug)]
pub struct InFlight {
    counters: Arc<InFlightCounters>,
    entered: Option<usize>,
}

impl InFlight {
    /// Count a statement from now (no-op when one of this session's is still counted,
    /// e.g. a pipelined batch); true when this call entered.
    #[inline]
    pub fn enter(&mut self) -> bool {
        if self.entered.is_some() {
            return false;
        }
        let phase = self.counters.phase.load(Ordering::SeqCst) & 1;
        self.counters.count[phase].fetch_add(1, Ordering::SeqCst);
        self.entered = Some(phase);
        true
    }

    /// The statement (batch) is finished.
    #[inline]
    pub fn leave(&mut self) {
        if let Some(phase) = self.entered.take() {
            self.counters.count[phase].fetch_sub(1, Ordering::SeqCst);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.leave();
    }
}

impl Default for SlotHolds {
    fn default() -> Self {
        SlotHolds {
            state: AtomicU64::new(0),
            entries: Mutex::new(Vec::new()),
            changed: watch::Sender::new(0),
            waiting: AtomicUsize::new(0),
            in_flight: Arc::default(),
            quiescing: tokio::sync::Mutex::new(()),
        }
    }
}

/// Parse `"3-5,9"` into inclusive ranges within `0..slots`.
pub fn parse_ranges(text: &str, slots: u32) -> Result<Vec<(u32, u32)>, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("no slots given (expected e.g. '3-5,9')".to_owned());
    }
    text.split(',')
        .map(|part| parse_range(part, slots))
        .collect()
}

/// Ranges as `"0-1,4-5,8"`.
pub fn format_ranges(ranges: &[(u32, u32)]) -> String {
    ranges
        .iter()
        .map(|&(a, b)| format_range(a, b))
        .collect::<Vec<_>>()
        .join(",")
}

fn runs(set: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = Vec::new();
    for &slot in set {
        match out.last_mut() {
            Some((_, hi)) if *hi + 1 == slot => *hi = slot,
            _ => out.push((slot, slot)),
        }
    }
    out
}

impl SlotHolds {
    /// Whether any slot is held.
    #[inline]
    pub fn any(&self) -> bool {
        self.state() & HELD != 0
    }

    /// The data path's word: [`HELD`] bit | shard-numbering generation << 1. A session
    /// compares it with `generation << 1` and is done when equal (nothing held, shards
    /// numbered as when it took its connections): one atomic load.
    #[inline]
    pub fn state(&self) -> u64 {
        // SeqCst: pairs with `hold`, see [`InFlight`]
        self.state.load(Ordering::SeqCst)
    }

    /// A reload removed or reordered shards, so a ShardId may now name another shard:
    /// sessions holding connections numbered the old way must not route with the new
    /// numbers (they fail their transaction, see `Session::route`).
    pub fn renumbered(&self) {
        self.state.fetch_add(2, Ordering::AcqRel);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<HoldEntry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hold the slots of `ranges` (already validated against the slot count).
    pub fn hold(&self, ranges: &[(u32, u32)]) {
        let slots: BTreeSet<u32> = ranges.iter().flat_map(|&(a, b)| a..=b).collect();
        if slots.is_empty() {
            return;
        }
        let mut entries = self.lock();
        entries.push(HoldEntry {
            slots,
            since: Instant::now(),
        });
        self.state.fetch_or(HELD, Ordering::SeqCst);
    }

    /// A session's in-flight mark.
    pub fn in_flight(&self) -> InFlight {
        InFlight {
            counters: self.in_flight.clone(),
            entered: None,
        }
    }

    /// After [`hold`](Self::hold): wait until every statement routed before it has
    /// finished, at most `limit`. Err: how many are still running.
    ///
    /// New statements count in the current phase. First the other phase must be empty
    /// (it may still count stragglers of an earlier HOLD that gave up); then new
    /// statements are switched to it and the current phase is waited for. One HOLD at a
    /// time does this.
    pub async fn quiesce(&self, limit: Duration) -> Result<(), usize> {
        let _one_at_a_time = self.quiescing.lock().await;
        let c = &self.in_flight;
        let deadline = Instant::now() + limit;
        let current = c.phase.load(Ordering::SeqCst) & 1;
        drained(&c.count[current ^ 1], deadline).await?;
        c.phase.fetch_add(1, Ordering::SeqCst);
        drained(&c.count[current], deadline).await
    }

    /// Release the slots of `ranges` (`None`: every slot), whichever HOLD set them, and
    /// wake the waiting statements so they route again.
    pub fn release(&self, ranges: Option<&[(u32, u32)]>) {
        {
            let mut entries = self.lock();
            match ranges {
                None => entries.clear(),
                Some(ranges) => {
                    for entry in entries.iter_mut() {
                        for &(a, b) in ranges {
                            entry.slots.retain(|s| !(a..=b).contains(s));
                        }
                    }
                    entries.retain(|e| !e.slots.is_empty());
                }
            }
            if entries.is_empty() {
                self.state.fetch_and(!HELD, Ordering::AcqRel);
            }
        }
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// A held slot among those `touch` needs, if any.
    pub fn blocking(&self, touch: Touch) -> Option<u32> {
        if !self.any() {
            return None;
        }
        let entries = self.lock();
        match touch {
            Touch::Nothing => None,
            Touch::Slot(slot) => entries
                .iter()
                .any(|e| e.slots.contains(&slot))
                .then_some(slot),
            Touch::All => entries
                .iter()
                .filter_map(|e| e.slots.first())
                .min()
                .copied(),
        }
    }

    /// Wait until none of the slots `touch` needs is held, at most until `deadline`
    /// (`limit` is the configured timeout, for the message). Returns at once when
    /// nothing blocks; the caller routes again afterwards, against the map current then.
    pub async fn wait(
        &self,
        touch: Touch,
        deadline: tokio::time::Instant,
        limit: Duration,
    ) -> Result<(), HoldTimeout> {
        // subscribe before looking, so a release between the look and the wait is seen
        let mut rx = self.changed.subscribe();
        let Some(mut slot) = self.blocking(touch) else {
            return Ok(());
        };
        self.waiting.fetch_add(1, Ordering::Relaxed);
        let _waiting = WaitingGuard(&self.waiting);
        loop {
            match tokio::time::timeout_at(deadline, rx.changed()).await {
                Ok(Ok(())) => {}
                // the sender lives as long as self: cannot happen, but never spin
                Ok(Err(_)) | Err(_) => {
                    return Err(HoldTimeout {
                        slot,
                        ms: limit.as_millis(),
                    });
                }
            }
            match self.blocking(touch) {
                None => return Ok(()),
                Some(s) => slot = s,
            }
        }
    }

    /// Statements waiting for a held slot right now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The held slots as ranges (all HOLD commands together).
    pub fn held_ranges(&self) -> Vec<(u32, u32)> {
        let entries = self.lock();
        let all: BTreeSet<u32> = entries
            .iter()
            .flat_map(|e| e.slots.iter().copied())
            .collect();
        runs(&all)
    }

    /// The HOLD commands still in effect, oldest first.
    pub fn list(&self) -> Vec<HoldInfo> {
        let now = Instant::now();
        self.lock()
            .iter()
            .map(|e| HoldInfo {
                ranges: runs(&e.slots),
                held_for: now.saturating_duration_since(e.since),
            })
            .collect()
    }
}

/// Wait until `count` is zero, at most until `deadline`. Err: the count then.
async fn drained(count: &AtomicUsize, deadline: Instant) -> Result<(), usize> {
    loop {
        let running = count.load(Ordering::SeqCst);
        if running == 0 {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(running);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Keeps the waiting count right even when a waiting statement is dropped (client gone).
struct WaitingGuard<'a>(&'a AtomicUsize);

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::router::Target;

    #[test]
    fn ranges_parse_and_format() {
        assert_eq!(parse_ranges("3-5, 9", 16).unwrap(), [(3, 5), (9, 9)]);
        assert_eq!(format_ranges(&[(0, 1), (4, 5), (8, 8)]), "0-1,4-5,8");
        assert!(parse_ranges("", 16).is_err());
        assert!(parse_ranges("3-x", 16).is_err());
        assert!(parse_ranges("16", 16).unwrap_err().contains("0-15"));
        assert!(parse_ranges("5-3", 16).is_err());
    }

    #[test]
    fn routes_touch_their_slot_every_slot_or_none() {
        let map = crate::config::parse(include_str!("../config/testdata/base.toml"), "t")
            .expect("test map parses")
            .map;
        let route = |target, reason| Route { target, reason };
        let key = route(
            Target::One(1),
            Reason::ShardKey {
                table: "accounts".into(),
                column: "aid".into(),
                slot: 9,
            },
        );
        assert_eq!(Touch::of(&key, &map), Touch::Slot(9));
        let scatter = route(
            Target::All,
            Reason::Scatter {
                table: "accounts".into(),
                column: "aid".into(),
                shards: 2,
                why: "no key",
            },
        );
        assert_eq!(Touch::of(&scatter, &map), Touch::All);
        let copy = |table: &str| {
            route(
                Target::All,
                Reason::Copy {
                    table: table.into(),
                    shards: 2,
                    how: "",
                },
            )
        };
        assert_eq!(Touch::of(&copy("accounts"), &map), Touch::All);
        assert_eq!(Touch::of(&copy("reference"), &map), Touch::Nothing);
        for reason in [Reason::NoShardedTable, Reason::Session, Reason::Ddl] {
            assert_eq!(Touch::of(&route(Target::Any, reason), &map), Touch::Nothing);
        }
    }

    #[test]
    fn hold_and_release_by_range() {
        let h = SlotHolds::default();
        assert!(!h.any());
        h.hold(&[(3, 5), (9, 9)]);
        h.hold(&[(12, 12)]);
        assert!(h.any());
        assert_eq!(h.held_ranges(), [(3, 5), (9, 9), (12, 12)]);
        assert_eq!(h.blocking(Touch::Slot(4)), Some(4));
        assert_eq!(h.blocking(Touch::Slot(6)), None);
        assert_eq!(h.blocking(Touch::Nothing), None);
        assert_eq!(h.blocking(Touch::All), Some(3));
        h.release(Some(&[(4, 9)]));
        assert_eq!(h.held_ranges(), [(3, 3), (12, 12)]);
        let list = h.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].ranges, [(3, 3)]);
        h.release(Some(&[(3, 3)]));
        assert_eq!(h.list().len(), 1);
        h.renumbered();
        assert_eq!(h.state(), 2 | HELD);
        h.release(None);
        assert!(!h.any());
        assert_eq!(h.state(), 2);
        assert_eq!(h.blocking(Touch::All), None);
    }

    #[tokio::test]
    async fn waiters_wake_on_release_and_time_out_otherwise() {
        let h = std::sync::Arc::new(SlotHolds::default());
        h.hold(&[(7, 7)]);
        let soon = |ms| tokio::time::Instant::now() + Duration::from_millis(ms);
        let limit = Duration::from_millis(30);
        let err = h.wait(Touch::Slot(7), soon(30), limit).await.unwrap_err();
        assert_eq!(err.slot, 7);
        assert!(err.to_string().contains("within 30 ms"), "{err}");
        assert_eq!(h.waiting(), 0);
        // another slot never waits
        h.wait(Touch::Slot(8), soon(1), limit).await.unwrap();
        let waiter = {
            let h = h.clone();
            tokio::spawn(async move { h.wait(Touch::All, soon(10_000), limit).await })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!waiter.is_finished());
        assert_eq!(h.waiting(), 1);
        h.release(None);
        waiter.await.unwrap().unwrap();
        assert_eq!(h.waiting(), 0);
    }
}
