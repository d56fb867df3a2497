//! `pgshard bench`: load generator comparing targets (see [`crate::bench`]).
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Args;

use crate::bench::{self, BenchArgs, BenchError, Protocol, Target, Workload};

/// Arguments of `pgshard bench`.
#[derive(Debug, Args)]
#[command(after_long_help = AFTER_HELP)]
pub struct BenchCmd {
    /// where to send load, as NAME=URL (repeat for several; the first is the baseline of
    /// the ratio column and the target of --setup)
    #[arg(long = "target", required = true, value_name = "NAME=URL", value_parser = parse_target)]
    pub targets: Vec<Target>,
    /// which statements the clients run; several (comma-separated or repeated) run one
    /// after the other, each with all its rounds
    #[arg(
        long = "workload",
        value_name = "WORKLOAD",
        value_enum,
        value_delimiter = ',',
        default_value = "point-select"
    )]
    pub workloads: Vec<Workload>,
    /// concurrent connections per target
    #[arg(long, default_value_t = 8)]
    pub clients: usize,
    /// how long each target runs in each round (5s, 500ms, 1m)
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    pub duration: std::time::Duration,
    /// how many times each target runs; figures are medians over rounds
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// how statements are sent
    #[arg(long, value_enum, default_value = "extended")]
    pub protocol: Protocol,
    /// rows in bench_accounts; reads and updates draw keys uniformly from 1..=rows,
    /// inserts go above
    #[arg(long, default_value_t = 10_000)]
    pub rows: u64,
    /// create bench_accounts through the first target if missing and load keys 1..=rows
    /// (kept if all there; rows above --rows are ignored)
    #[arg(long)]
    pub setup: bool,
    /// also write the report as JSON to this file (an array of reports when several
    /// workloads run)
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// also draw TPS and p99 latency per target and workload as an SVG chart to this file
    #[arg(long, value_name = "FILE")]
    pub svg: Option<PathBuf>,
    /// no progress bar (it is drawn on stderr only when that is a terminal)
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

const AFTER_HELP: &str = "\
Table: bench_accounts (aid bigint PRIMARY KEY, abalance int NOT NULL DEFAULT 0, filler text).
Behind a proxy it must be in the shard map, sharded on aid:
    [[tables]]
    name = \"bench_accounts\"
    key = \"aid\"
    type = \"bigint\"
--setup creates it through the first target (the proxy broadcasts the DDL) and loads
keys 1..=rows with multi-row INSERTs of 500 rows, which the proxy splits by shard. A table
that holds all of 1..=rows is kept; one that holds only some is refused.

Workloads:
    point-select   SELECT abalance FROM bench_accounts WHERE aid = $1
    point-update   UPDATE bench_accounts SET abalance = abalance + 1 WHERE aid = $1
    scatter-count  SELECT count(*) FROM bench_accounts WHERE abalance >= 0 (all shards)
    mixed          90% point-select, 10% point-update
    insert         INSERT INTO bench_accounts (aid, abalance, filler) VALUES ($1, 0, 'insert')
    scatter-top-n  SELECT aid, abalance FROM bench_accounts
                   ORDER BY abalance DESC, aid LIMIT 10 (all shards, merged by the proxy)
Reads and updates pick aid uniformly in 1..=rows. Inserts never reuse a key: before each
run the largest aid is read through the target (max(aid), at least --rows), and client c
of n inserts base+1+c, base+1+c+n, ... so clients, rounds, targets and repeated
invocations cannot collide. Inserted rows lie above --rows and --setup ignores them.
Protocols: simple = Query with the key inlined; extended = an unnamed statement parsed
for every call; prepared = statements prepared once per connection.

Interleaving: targets run one after the other, round by round (A B C A B C ...), each for
--duration with --clients connections opened before its clock starts. Drifts of the
machine (warming caches, checkpoints, other load) are thus spread over all targets.

Numbers, per target: tps = successful transactions per second; p50/p95/p99/max =
latency percentiles in milliseconds (from a histogram in microseconds, 3 significant
digits); each is the median over rounds. xacts and errors are totals over rounds; the
first error message is printed when errors > 0. ratio = tps / tps of the first target.

Errors: a failed statement or connection attempt counts one error, then that client waits
10 ms, doubling up to 1 s (reset by a success), and reconnects if its connection is gone.
A target that is down thus shows a few errors per client and second, and the run still
takes --duration.

Output: the table on stdout; --json FILE and --svg FILE (two bar panels, TPS and p99
latency, one bar per target and workload) as well. A progress bar (current round, target
and workload) is drawn on stderr when it is a terminal, unless --quiet.";

fn parse_target(text: &str) -> Result<Target, String> {
    bench::parse_target(text).map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    bench::parse_duration(text).map_err(|e| e.to_string())
}

/// Run the subcommand: each workload in turn, then print the tables (and write `--json`,
/// `--svg`); exit 1 when the benchmark cannot run, 2 when a target had errors, so
/// scripts notice.
pub fn run(cmd: BenchCmd) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgshard bench: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let runs = (cmd.workloads.len() * cmd.rounds * cmd.targets.len()) as u64;
    let progress = bench::Progress::new(runs, cmd.duration, !cmd.quiet);
    let mut reports = Vec::with_capacity(cmd.workloads.len());
    for (i, &workload) in cmd.workloads.iter().enumerate() {
        let args = BenchArgs {
            targets: cmd.targets.clone(),
            workload,
            clients: cmd.clients,
            duration: cmd.duration,
            rounds: cmd.rounds,
            protocol: cmd.protocol,
            rows: cmd.rows,
            // the table is the same for every workload: load it once
            setup: cmd.setup && i == 0,
        };
        match runtime.block_on(bench::run_with_progress(&args, &progress)) {
            Ok(r) => reports.push(r),
            Err(e) => {
                progress.finish();
                eprintln!("pgshard bench: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    progress.finish();
    let tables: Vec<String> = reports
        .iter()
        .map(|r| bench::table::render(r).trim_end().to_string())
        .collect();
    say!("{}", tables.join("\n\n"));
    if let Some(path) = &cmd.json
        && let Err(e) = write_json(path, &reports)
    {
        eprintln!("pgshard bench: {e}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &cmd.svg
        && let Err(e) = write_svg(path, &reports)
    {
        eprintln!("pgshard bench: {e}");
        return ExitCode::FAILURE;
    }
    if reports
        .iter()
        .flat_map(|r| &r.targets)
        .any(|t| t.errors > 0)
    {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

/// One workload: the report object (as before several workloads existed); several: an
/// array of them in the order run.
fn write_json(path: &std::path::Path, reports: &[bench::Report]) -> Result<(), BenchError> {
    let encoded = match reports {
        [one] => serde_json::to_string_pretty(one),
        many => serde_json::to_string_pretty(many),
    };
    let text = encoded.map_err(|e| BenchError::Usage(format!("cannot encode the report: {e}")))?;
    std::fs::write(path, text + "\n")
        .map_err(|e| BenchError::Usage(format!("cannot write {}: {e}", path.display())))
}

fn write_svg(path: &std::path::Path, reports: &[bench::Report]) -> Result<(), BenchError> {
    let svg = bench::chart::render(reports)?;
    std::fs::write(path, svg)
        .map_err(|e| BenchError::Usage(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::super::{Cli, Command};
    use super::*;

    #[test]
    fn parses_targets_and_options() {
        let cli = Cli::try_parse_from([
            "pgshard",
            "bench",
            "--target",
            "proxy=postgres://app:app@127.0.0.1:6432/app",
            "--target",
            "direct=postgres://postgres@127.0.0.1:5432/app",
            "--workload",
            "mixed",
            "--protocol",
            "prepared",
            "--duration",
            "500ms",
            "--rounds",
            "2",
        ])
        .unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench: {:?}", cli.command)
        };
        assert_eq!(b.targets.len(), 2);
        assert_eq!(b.targets[1].name, "direct");
        assert_eq!(b.workloads, vec![Workload::Mixed]);
        assert_eq!((b.svg, b.quiet), (None, false));
        assert_eq!(b.protocol, Protocol::Prepared);
        assert_eq!(b.duration, std::time::Duration::from_millis(500));
        assert_eq!(
            (b.rounds, b.clients, b.rows, b.setup),
            (2, 8, 10_000, false)
        );
    }

    #[test]
    fn several_workloads_svg_and_quiet() {
        let cli = Cli::try_parse_from([
            "pgshard",
            "bench",
            "--target",
            "p=postgres://app@127.0.0.1:6432/app",
            "--workload",
            "insert,scatter-top-n",
            "--workload",
            "point-select",
            "--svg",
            "out.svg",
            "-q",
        ])
        .unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench: {:?}", cli.command)
        };
        assert_eq!(
            b.workloads,
            vec![
                Workload::Insert,
                Workload::ScatterTopN,
                Workload::PointSelect
            ]
        );
        assert_eq!(b.svg, Some(PathBuf::from("out.svg")));
        assert!(b.quiet);
    }

    #[test]
    fn default_workload_is_point_select() {
        let cli =
            Cli::try_parse_from(["pgshard", "bench", "--target", "p=postgres://x/app"]).unwrap();
        let Command::Bench(b) = cli.command else {
            panic!("not bench: {:?}", cli.command)
        };
        assert_eq!(b.workloads, vec![Workload::PointSelect]);
    }

    #[test]
    fn bad_target_is_a_usage_error_naming_it() {
        let err = Cli::try_parse_from(["pgshard", "bench", "--target", "nourl"]).unwrap_err();
        assert!(err.to_string().contains("bad --target \"nourl\""), "{err}");
    }

    #[test]
    fn a_target_is_required() {
        assert!(Cli::try_parse_from(["pgshard", "bench"]).is_err());
    }
}
