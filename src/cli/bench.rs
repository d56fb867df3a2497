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
    /// which statements the clients run
    #[arg(long, value_enum, default_value = "point-select")]
    pub workload: Workload,
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
    /// rows in bench_accounts; keys are drawn uniformly from 1..=rows
    #[arg(long, default_value_t = 10_000)]
    pub rows: u64,
    /// create bench_accounts through the first target if missing and load --rows rows
    #[arg(long)]
    pub setup: bool,
    /// also write the report as JSON to this file
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

const AFTER_HELP: &str = "\
Table: bench_accounts (aid bigint PRIMARY KEY, abalance int NOT NULL DEFAULT 0, filler text).
Behind a proxy it must be in the shard map, sharded on aid:
    [[tables]]
    name = \"bench_accounts\"
    key = \"aid\"
    type = \"bigint\"
--setup creates it through the first target (the proxy broadcasts the DDL) and loads
--rows rows with multi-row INSERTs of 500 rows, which the proxy splits by shard.

Workloads:
    point-select   SELECT abalance FROM bench_accounts WHERE aid = $1
    point-update   UPDATE bench_accounts SET abalance = abalance + 1 WHERE aid = $1
    scatter-count  SELECT count(*) FROM bench_accounts WHERE abalance >= 0 (all shards)
    mixed          90% point-select, 10% point-update
Protocols: simple = Query with the key inlined; extended = an unnamed statement parsed
for every call; prepared = statements prepared once per connection.

Interleaving: targets run one after the other, round by round (A B C A B C ...), each for
--duration with --clients connections opened before its clock starts. Drifts of the
machine (warming caches, checkpoints, other load) are thus spread over all targets.

Numbers, per target: tps = successful transactions per second; p50/p95/p99/max =
latency percentiles in milliseconds (from a histogram in microseconds, 3 significant
digits); each is the median over rounds. xacts and errors are totals over rounds; the
first error message is printed when errors > 0. ratio = tps / tps of the first target.";

fn parse_target(text: &str) -> Result<Target, String> {
    bench::parse_target(text).map_err(|e| e.to_string())
}

fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    bench::parse_duration(text).map_err(|e| e.to_string())
}

/// Run the subcommand: print the table (and write `--json`); exit 1 when the benchmark
/// cannot run, 2 when a target had errors, so scripts notice.
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
    let args = BenchArgs {
        targets: cmd.targets,
        workload: cmd.workload,
        clients: cmd.clients,
        duration: cmd.duration,
        rounds: cmd.rounds,
        protocol: cmd.protocol,
        rows: cmd.rows,
        setup: cmd.setup,
    };
    let report = match runtime.block_on(bench::run(&args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("pgshard bench: {e}");
            return ExitCode::FAILURE;
        }
    };
    say!("{}", bench::table::render(&report).trim_end());
    if let Some(path) = &cmd.json
        && let Err(e) = write_json(path, &report)
    {
        eprintln!("pgshard bench: {e}");
        return ExitCode::FAILURE;
    }
    if report.targets.iter().any(|t| t.errors > 0) {
        return ExitCode::from(2);
    }
    ExitCode::SUCCESS
}

fn write_json(path: &std::path::Path, report: &bench::Report) -> Result<(), BenchError> {
    let text = serde_json::to_string_pretty(report)
        .map_err(|e| BenchError::Usage(format!("cannot encode the report: {e}")))?;
    std::fs::write(path, text + "\n")
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
        assert_eq!(b.workload, Workload::Mixed);
        assert_eq!(b.protocol, Protocol::Prepared);
        assert_eq!(b.duration, std::time::Duration::from_millis(500));
        assert_eq!(
            (b.rounds, b.clients, b.rows, b.setup),
            (2, 8, 10_000, false)
        );
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
