//! `pgshard check`: validate a shard map.
use std::path::Path;
use std::process::ExitCode;

/// Run the subcommand.
pub fn run(config: &Path) -> ExitCode {
    let _ = config;
    todo!("helper")
}
