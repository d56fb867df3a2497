//! `pgshard dev`: the local playground.
use std::path::Path;
use std::process::ExitCode;

/// Run the subcommand.
pub fn run(shards: usize, listen: &str, dir: &Path) -> ExitCode {
    let _ = (shards, listen, dir);
    todo!("helper")
}
