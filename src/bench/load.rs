//! The I/O side: connections, one measured round of N clients, and `--setup` loading.
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::task::JoinSet;
use tokio_postgres::{Client, NoTls};

use super::workload::{self, Prepared, Protocol};
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

/// Run `args.workload` against `target` with `args.clients` connections for
/// `args.duration`. All connections are opened (and statements prepared) before the clock
/// starts. Returns the round and the first error message seen, if any.
pub async fn round(
    target: &Target,
    args: &BenchArgs,
) -> Result<(RoundResult, Option<String>), BenchError> {
    let mut clients = Vec::with_capacity(args.clients);
    for _ in 0..args.clients {
        let client = connect(target).await?;
        let prepared = if args.protocol == Protocol::Prepared {
            let p = Prepared::new(&client)
                .await
                .map_err(|e| BenchError::Setup {
                    target: target.name.clone(),
                    what: "prepare the workload's statements".into(),
                    reason: error_text(&e),
                })?;
            Some(p)
        } else {
            None
        };
        clients.push((client, prepared));
    }
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = JoinSet::new();
    for (client, prepared) in clients {
        let (workload, protocol, rows) = (args.workload, args.protocol, args.rows);
        tasks.spawn(async move {
            let mut rng = StdRng::from_rng(&mut rand::rng());
            let mut out = ClientResult {
                transactions: 0,
                errors: 0,
                latency_us: histogram(),
                first_error: None,
            };
            while Instant::now() < deadline && !client.is_closed() {
                let t0 = Instant::now();
                let step = workload::step(
                    &client,
                    workload,
                    protocol,
                    prepared.as_ref(),
                    rows,
                    &mut rng,
                );
                match step.await {
                    Ok(()) => {
                        let us = t0.elapsed().as_micros().try_into().unwrap_or(u64::MAX);
                        out.latency_us.saturating_record(us.max(1));
                        out.transactions += 1;
                    }
                    Err(e) => {
                        out.errors += 1;
                        out.first_error.get_or_insert_with(|| error_text(&e));
                    }
                }
            }
            out
        });
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

/// Create `bench_accounts` through `target` if missing and fill it with keys 1..=rows,
/// unless it already holds exactly that many rows. A table with another row count is
/// refused rather than mixed with new rows.
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
        .query_one("SELECT count(*) FROM bench_accounts", &[])
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
                "the table has {have} rows, not 0 or --rows {rows}; drop it (DROP TABLE \
                 bench_accounts) or pass --rows {have}"
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
    fn insert_lists_every_key_once() {
        assert_eq!(
            insert_sql(3, 4),
            "INSERT INTO bench_accounts (aid, abalance, filler) VALUES \
             (3, 0, 'filler'), (4, 0, 'filler')"
        );
    }
}
