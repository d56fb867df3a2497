//! Command line: one file per subcommand. `main()` parses arguments and dispatches.

/// Print a line to stdout, ignoring errors: output must not panic the process when its
/// reader goes away (`pgshard map show | head`, a playground whose log reader stopped).
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod bench;
mod check;
mod dev;
mod locate;
mod map;
mod rebalance;
mod route;
mod serve;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// pgshard: a sharding proxy for PostgreSQL.
///
/// Clients connect to pgshard with an ordinary Postgres connection string; pgshard routes
/// every statement to the shard that owns its key (Postgres hash-partition slots).
#[derive(Debug, Parser)]
#[command(name = "pgshard", version, about, long_about = None)]
pub struct Cli {
    /// what to do
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy with a shard map.
    Serve {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
    },
    /// Validate a shard map: exit 0 if good, else print the problem and its line.
    Check {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
    },
    /// Inspect or initialise the slot map.
    Map {
        /// what to do with the map
        #[command(subcommand)]
        action: MapAction,
    },
    /// Print the slot and shard that own a key value: `slot=<n> shard=<name>`.
    Locate {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
        /// sharded table whose key type to use
        #[arg(long)]
        table: String,
        /// the key value, as you would write it in SQL (without quotes)
        value: String,
    },
    /// Show how the proxy would route a statement: target shards and the reason.
    Route {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
        /// print `{"shards": [...], "reason": "..."}`
        #[arg(long)]
        json: bool,
        /// the SQL statement
        sql: String,
    },
    /// Local playground: start N Postgres shards, write a shard map, load demo rows and
    /// serve; Ctrl-C stops everything.
    Dev {
        /// number of shards
        #[arg(long, default_value_t = 2)]
        shards: usize,
        /// extra Postgres servers started outside the map, to add with
        /// `pgshard rebalance apply --add-shard`
        #[arg(long, default_value_t = 0)]
        spare: usize,
        /// proxy listen address
        #[arg(long, default_value = "127.0.0.1:6432")]
        listen: String,
        /// where the clusters and the generated shard map live (reused if present)
        #[arg(long, default_value = ".pgshard-dev")]
        dir: PathBuf,
    },
    /// Load generator: run a workload against targets (proxy, shards …) in interleaved
    /// rounds; print TPS and latency percentiles per target.
    Bench(bench::BenchCmd),
    /// Add or remove shards: `plan` shows what would move, `apply` moves it online,
    /// `status` shows where a rebalance stands, `verify` checks that every row is on the
    /// shard owning its slot.
    Rebalance {
        /// what to do
        #[command(subcommand)]
        action: rebalance::RebalanceAction,
    },
}

/// `pgshard map …`
#[derive(Debug, Subcommand)]
pub enum MapAction {
    /// Fill in `[slot_map]` from the consistent-hash ring (keeps the rest of the file).
    Init {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
    },
    /// Per shard: slot count, share of slots, and slot ranges.
    Show {
        /// shard map file
        #[arg(short, long, default_value = "shardmap.toml")]
        config: PathBuf,
    },
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { config } => serve::run(&config),
        Command::Check { config } => check::run(&config),
        Command::Map {
            action: MapAction::Init { config },
        } => map::init(&config),
        Command::Map {
            action: MapAction::Show { config },
        } => map::show(&config),
        Command::Locate {
            config,
            table,
            value,
        } => locate::run(&config, &table, &value),
        Command::Route { config, json, sql } => route::run(&config, json, &sql),
        Command::Dev {
            shards,
            spare,
            listen,
            dir,
        } => dev::run(shards, spare, &listen, &dir),
        Command::Bench(cmd) => bench::run(cmd),
        Command::Rebalance { action } => rebalance::run(action),
    }
}
