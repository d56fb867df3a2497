//! The I/O side: connections, one measured round of N clients, and `--setup` loading.
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

use super::progress::Progress;
use super::workload::{self, Keys, Op, Prepared, Protocol};
use super::{BenchArgs, BenchError, RoundResult, Target};

/// Give up on a connection attempt after this long, so an unreachable target fails
/// with its name instead of hanging.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Rows per INSERT statement of `--setup`.
const INSERT_BATCH: u64 = 500;
/// Latency histogram range: 1 µs to 60 s, 3 significant digits.
const MAX_LATENCY_US: u64 = 60_000_000;

/// Open one connection to `target`; its connection task runs on the current runtime.
pub async fn connect(target: &Target) -> Result<Client, BenchError> {
    let fail = |reason: String| BenchError::Connect {
        target: target.name.clone(),
        reason,
    };
    let connecting = tokio_postgres::connect(&target.url, NoTls);
    let (client, connection) = tokio::time::timeout(CONNECT_TIMEOUT, connecting)
        .await
        .map_err(|_| fail(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs())))?
        .map_err(|e| fail(error_text(&e)))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// The server's message when there is one, else the driver's message with its causes
/// (tokio-postgres' Display alone says only "db error" or "error connecting to server").
fn error_text(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = e.to_string();
    let mut cause = std::error::Error::source(e);
    while let Some(c) = cause {
        text.push_str(": ");
        text.push_str(&c.to_string());
        cause = c.source();
    }
    text
}

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts (low ≥ 1, high ≥ 2·low, 3 digits).
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// One client's share of a round.
struct ClientResult {
    transactions: u64,
    errors: u64,
    latency_us: Histogram<u64>,
    first_error: Option<String>,
}

impl ClientResult {
    fn new() -> ClientResult {
        ClientResult {
            transactions: 0,
            errors: 0,
            latency_us: histogram(),
            first_error: None,
        }
    }

    fn fail(&mut self, message: impl FnOnce() -> String) {
        self.errors += 1;
        self.first_error.get_or_insert_with(message);
    }
}

/// A client's wait after a failed statement or connection attempt: doubles from
/// [`Backoff::FIRST`] up to [`Backoff::CAP`] and starts over after a success, so a
/// target that is down sees a few attempts per second instead of a hot loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The wait after the first failure in a row.
    pub const FIRST: Duration = Duration::from_millis(10);
    /// The longest wait.
    pub const CAP: Duration = Duration::from_secs(1);

    /// No failure yet.
    pub fn new() -> Backoff {
        Backoff { next: None }
    }

    /// A failure: how long to wait before trying again.
    pub fn failed(&mut self) -> Duration {
        let wait = self.next.unwrap_or(Self::FIRST);
        self.next = Some((wait * 2).min(Self::CAP));
        wait
    }

    /// A success: the next failure waits [`Backoff::FIRST`] again.
    pub fn succeeded(&mut self) {
        self.next = None;
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::new()
    }
}

/// One client's connection with the statements it prepared.
struct Conn {
    client: Client,
    prepared: Option<Prepared>,
}

/// Connect and, for the prepared protocol, prepare the workload's statements. The error
/// is the message and whether preparing (not connecting) failed.
async fn open(target: &Target, args: &BenchArgs, limit: Duration) -> Result<Conn, (String, bool)> {
    let client = connect_within(target, limit)
        .await
        .map_err(|e| (e.to_string(), false))?;
    let prepared = if args.protocol == Protocol::Prepared {
        let p = Prepared::new(&client, args.workload)
            .await
            .map_err(|e| (error_text(&e), true))?;
        Some(p)
    } else {
        None
    };
    Ok(Conn { client, prepared })
}

/// [`connect`], but giving up after `limit` (at most [`CONNECT_TIMEOUT`]).
async fn connect_within(target: &Target, limit: Duration) -> Result<Client, BenchError> {
    let limit = limit.min(CONNECT_TIMEOUT);
    tokio::time::timeout(limit, connect(target))
        .await
        .unwrap_or_else(|_| {
            Err(BenchError::Connect {
                target: target.name.clone(),
                reason: format!("no answer within {} ms", limit.as_millis()),
            })
        })
}

/// The largest key in `bench_accounts` through `target` (0 for an empty table), read
/// before an insert run so that its keys start above every existing row.
async fn max_key(target: &Target) -> Result<i64, String> {
    let client = connect(target).await.map_err(|e| e.to_string())?;
    let row = client
        .query_one("SELECT max(aid) FROM bench_accounts", &[])
        .await
        .map_err(|e| format!("read max(aid) of bench_accounts: {}", error_text(&e)))?;
    let max: Option<i64> = row.try_get(0).map_err(|e| error_text(&e))?;
    Ok(max.unwrap_or(0))
}

/// Run `args.workload` against `target` with `args.clients` connections for
/// `args.duration`. All connections are opened (and statements prepared) before the clock
/// starts; an insert workload first reads the largest key (see [`Keys`]). A target that cannot be reached does not stop the benchmark: its clients count
/// an error per failed attempt, back off (see [`Backoff`]) and try to reconnect until
/// the time is up. Returns the round and the first error message seen, if any.
pub async fn round(
    target: &Target,
    args: &BenchArgs,
    progress: &Progress,
) -> Result<(RoundResult, Option<String>), BenchError> {
    let insert_base = if args.workload.ops().contains(&Op::Insert) {
        max_key(target).await
    } else {
        Ok(0)
    };
    // All at once, so a target that does not answer costs one timeout, not one per client.
    let opening = (0..args.clients).map(|_| open(target, args, CONNECT_TIMEOUT));
    let mut conns = Vec::with_capacity(args.clients);
    for opened in futures_util::future::join_all(opening).await {
        match opened {
            Ok(c) => conns.push(Ok(c)),
            // A reachable target that cannot prepare the workload will not do better
            // later: that is a setup problem, not a measurement.
            Err((reason, true)) => {
                return Err(BenchError::Setup {
                    target: target.name.clone(),
                    what: "prepare the workload's statements".into(),
                    reason,
                });
            }
            Err((reason, false)) => conns.push(Err(reason)),
        }
    }
    let _measuring = progress.measure(args.duration);
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = JoinSet::new();
    for (id, first) in conns.into_iter().enumerate() {
        let (target, args) = (target.clone(), args.clone());
        let base = insert_base.clone();
        tasks.spawn(async move { client_loop(&target, &args, id, base, first, deadline).await });
    }
    let mut total = RoundResult {
        transactions: 0,
        errors: 0,
        elapsed_secs: 0.0,
        latency_us: histogram(),
    };
    let mut first_error = None;
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(c) => {
                total.transactions += c.transactions;
                total.errors += c.errors;
                // Same bounds on both sides, so adding cannot fail.
                let _ = total.latency_us.add(&c.latency_us);
                if first_error.is_none() {
                    first_error = c.first_error;
                }
            }
            Err(e) => {
                total.errors += 1;
                first_error.get_or_insert_with(|| format!("client task failed: {e}"));
            }
        }
    }
    total.elapsed_secs = start.elapsed().as_secs_f64();
    Ok((total, first_error))
}

/// One client until `deadline`: run statements, and after each failure wait, reconnect
/// when the connection is gone, and try again.
async fn client_loop(
    target: &Target,
    args: &BenchArgs,
    id: usize,
    insert_base: Result<i64, String>,
    first: Result<Conn, String>,
    deadline: Instant,
) -> ClientResult {
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let mut out = ClientResult::new();
    let mut backoff = Backoff::new();
    let wait = |d: Duration| {
        let until = (Instant::now() + d).min(deadline);
        tokio::time::sleep_until(until.into())
    };
    let base = match insert_base {
        Ok(b) => b,
        Err(e) => {
            // Without a safe starting key, inserting could only collide: count one
            // error and leave the round to the other targets.
            out.fail(|| e);
            tokio::time::sleep_until(deadline.into()).await;
            return out;
        }
    };
    let mut keys = Keys::new(args.rows, base, id, args.clients);
    let mut conn = match first {
        Ok(c) => Some(c),
        Err(e) => {
            out.fail(|| e);
            wait(backoff.failed()).await;
            None
        }
    };
    while Instant::now() < deadline {
        let c = match conn.take() {
            Some(c) if !c.client.is_closed() => c,
            _ => {
                let left = deadline.saturating_duration_since(Instant::now());
                match open(target, args, left).await {
                    Ok(c) => c,
                    Err((e, _)) => {
                        out.fail(|| e);
                        wait(backoff.failed()).await;
                        continue;
                    }
                }
            }
        };
        let t0 = Instant::now();
        let step = workload::step(
            &c.client,
            args.workload,
            args.protocol,
            c.prepared.as_ref(),
            &mut keys,
            &mut rng,
        );
        match step.await {
            Ok(()) => {
                let us = t0.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
                out.latency_us.saturating_record(us.max(1));
                out.transactions += 1;
                backoff.succeeded();
            }
            Err(e) => {
                out.fail(|| error_text(&e));
                wait(backoff.failed()).await;
            }
        }
        conn = Some(c);
    }
    out
}

/// Create `bench_accounts` through `target` if missing and fill it with keys 1..=rows,
/// unless it already holds exactly those. Rows above `rows` (left by the insert
/// workload) are ignored; a table with some but not all of 1..=rows is refused rather
/// than mixed with new rows.
pub async fn setup(target: &Target, rows: u64) -> Result<(), BenchError> {
    let client = connect(target).await?;
    let fail = |what: &str, e: tokio_postgres::Error| BenchError::Setup {
        target: target.name.clone(),
        what: what.to_string(),
        reason: error_text(&e),
    };
    client
        .simple_query(
            "CREATE TABLE IF NOT EXISTS bench_accounts \
             (aid bigint PRIMARY KEY, abalance int NOT NULL DEFAULT 0, filler text)",
        )
        .await
        .map_err(|e| fail("create table bench_accounts", e))?;
    let count = client
        .query_one(
            &format!("SELECT count(*) FROM bench_accounts WHERE aid <= {rows}"),
            &[],
        )
        .await
        .map_err(|e| fail("count bench_accounts", e))?;
    let have: i64 = count
        .try_get(0)
        .map_err(|e| fail("count bench_accounts", e))?;
    if have == rows as i64 {
        return Ok(());
    }
    if have != 0 {
        return Err(BenchError::Setup {
            target: target.name.clone(),
            what: "load bench_accounts".into(),
            reason: format!(
                "the table has {have} rows with aid <= {rows}, not 0 or all {rows}; drop \
                 it (DROP TABLE bench_accounts) and run --setup again"
            ),
        });
    }
    let mut first = 1;
    while first <= rows {
        let last = (first + INSERT_BATCH - 1).min(rows);
        client
            .simple_query(&insert_sql(first, last))
            .await
            .map_err(|e| fail("load bench_accounts", e))?;
        first = last + 1;
    }
    Ok(())
}

/// One multi-row INSERT of keys `first..=last`; the proxy splits it by shard.
fn insert_sql(first: u64, last: u64) -> String {
    let values: Vec<String> = (first..=last)
        .map(|aid| format!("({aid}, 0, 'filler')"))
        .collect();
    format!(
        "INSERT INTO bench_accounts (aid, abalance, filler) VALUES {}",
        values.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_a_cap_and_resets_on_success() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..9).map(|_| b.failed().as_millis() as u64).collect();
        assert_eq!(waits, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.succeeded();
        assert_eq!(b.failed(), Backoff::FIRST);
    }

    #[test]
    fn insert_lists_every_key_once() {
        assert_eq!(
            insert_sql(3, 4),
            "INSERT INTO bench_accounts (aid, abalance, filler) VALUES \
             (3, 0, 'filler'), (4, 0, 'filler')"
        );
    }
}
