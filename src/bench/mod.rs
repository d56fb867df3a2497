//! Load generator behind `pgshard bench`: runs one workload against several targets
//! (the proxy, a shard directly, another proxy build …) in interleaved rounds and reports
//! throughput and latency per target.
//!
//! - [`plan`]: parse `NAME=URL` and durations; the interleaved schedule.
//! - [`workload`]: the statements and how each protocol sends them.
//! - [`load`]: N concurrent clients for one round; `--setup` loading.
//! - [`summary`]: per-round numbers → medians and ratios.
//! - [`table`]: the printed table.
//! - [`chart`]: the SVG chart of `--svg`.
//! - [`progress`]: the progress bar on stderr.
pub mod chart;
pub mod load;
pub mod plan;
pub mod progress;
pub mod summary;
pub mod table;
pub mod workload;

use std::time::Duration;

use serde::Serialize;

pub use plan::{Target, parse_duration, parse_target, schedule};
pub use progress::Progress;
pub use summary::{RoundResult, TargetSummary};
pub use workload::{Protocol, Workload};

/// Everything that stops a benchmark from running (failed transactions during a round are
/// counted in the report instead).
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// `--target` is not `NAME=URL`.
    #[error("bad --target \"{text}\": {why}")]
    TargetSyntax {
        /// the argument as given
        text: String,
        /// what is wrong with it
        why: String,
    },
    /// `--duration` is not like `5s`.
    #[error("bad duration \"{0}\": use a whole number with s, ms or m, such as 5s or 500ms")]
    DurationSyntax(String),
    /// Nothing to measure, or a count of zero.
    #[error("{0}")]
    Usage(String),
    /// A target refused or did not answer the connection.
    #[error("cannot connect to target {target}: {reason}")]
    Connect {
        /// target name
        target: String,
        /// the driver's message
        reason: String,
    },
    /// The `--svg` chart could not be drawn.
    #[error("cannot draw the chart: {0}")]
    Chart(String),
    /// A statement of `--setup` or of the per-client preparation failed.
    #[error("target {target}: {what}: {reason}")]
    Setup {
        /// target name
        target: String,
        /// what was being done
        what: String,
        /// the server's message
        reason: String,
    },
}

/// What to run: the parsed `pgshard bench` arguments.
#[derive(Debug, Clone)]
pub struct BenchArgs {
    /// where to send load; the first is the baseline for ratios and the `--setup` target
    pub targets: Vec<Target>,
    /// which statements
    pub workload: Workload,
    /// concurrent connections per target
    pub clients: usize,
    /// how long each target runs per round
    pub duration: Duration,
    /// how many times each target runs
    pub rounds: usize,
    /// how statements are sent
    pub protocol: Protocol,
    /// rows in `bench_accounts` (keys are 1..=rows)
    pub rows: u64,
    /// create and load `bench_accounts` through the first target before measuring
    pub setup: bool,
}

/// The result of a benchmark: the settings and one summary per target, in the order given.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// workload name
    pub workload: Workload,
    /// protocol name
    pub protocol: Protocol,
    /// concurrent connections per target
    pub clients: usize,
    /// seconds per target per round
    pub duration_secs: f64,
    /// rounds run
    pub rounds: usize,
    /// keys 1..=rows
    pub rows: u64,
    /// per target, in the order given
    pub targets: Vec<TargetSummary>,
}

/// Run the benchmark without a progress bar; see [`run_with_progress`].
pub async fn run(args: &BenchArgs) -> Result<Report, BenchError> {
    run_with_progress(args, &Progress::hidden()).await
}

/// Run the benchmark: optional setup through the first target, then every target for
/// `duration` in interleaved rounds, moving `progress` along.
pub async fn run_with_progress(
    args: &BenchArgs,
    progress: &Progress,
) -> Result<Report, BenchError> {
    if args.targets.is_empty() {
        return Err(BenchError::Usage(
            "give at least one --target NAME=URL".into(),
        ));
    }
    if args.clients == 0 || args.rounds == 0 || args.rows == 0 {
        return Err(BenchError::Usage(
            "--clients, --rounds and --rows must be at least 1".into(),
        ));
    }
    if args.setup {
        load::setup(&args.targets[0], args.rows).await?;
    }
    let n = args.targets.len();
    let mut rounds: Vec<Vec<RoundResult>> = vec![Vec::new(); n];
    let mut first_errors: Vec<Option<String>> = vec![None; n];
    let workload = table::value_name(args.workload);
    for (r, t) in schedule(n, args.rounds) {
        progress.start_run(r, args.rounds, &args.targets[t].name, &workload);
        let (result, first_error) = load::round(&args.targets[t], args, progress).await?;
        rounds[t].push(result);
        if first_errors[t].is_none() {
            first_errors[t] = first_error;
        }
    }
    let names: Vec<String> = args.targets.iter().map(|t| t.name.clone()).collect();
    Ok(Report {
        workload: args.workload,
        protocol: args.protocol,
        clients: args.clients,
        duration_secs: args.duration.as_secs_f64(),
        rounds: args.rounds,
        rows: args.rows,
        targets: summary::summarize(&names, &rounds, &first_errors),
    })
}
