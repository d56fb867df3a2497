//! `pgshard route`: explain the routing of a statement.
use std::path::Path;
use std::process::ExitCode;

/// Run the subcommand.
pub fn run(config: &Path, json: bool, sql: &str) -> ExitCode {
    let _ = (config, json, sql);
    todo!("helper")
}
