//! `pgshard locate`: slot and shard of a key value.
use std::path::Path;
use std::process::ExitCode;

/// Run the subcommand.
pub fn run(config: &Path, table: &str, value: &str) -> ExitCode {
    let _ = (config, table, value);
    todo!("helper")
}
