//! `pgshard serve`: run the proxy until SIGINT/SIGTERM.
use std::path::Path;
use std::process::ExitCode;

/// Run the subcommand.
pub fn run(config: &Path) -> ExitCode {
    let _ = config;
    todo!()
}
