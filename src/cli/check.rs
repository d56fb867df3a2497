//! `pgshard check`: validate a shard map.
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, Config, ConfigError};

/// Run the subcommand: exit 0 and a one-line summary if the map is valid; otherwise the
/// problem as `FILE:LINE: message` on stderr and exit 1 (2 if the file cannot be read).
pub fn run(config: &Path) -> ExitCode {
    match config::load(config) {
        Ok(c) => {
            say!("{}", summary(&config.display().to_string(), &c));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            exit_code(&e)
        }
    }
}

/// `FILE: ok (N shards, M slots, K sharded tables)`
pub(crate) fn summary(origin: &str, c: &Config) -> String {
    format!(
        "{origin}: ok ({} shards, {} slots, {} sharded tables)",
        c.map.shard_count(),
        c.map.slots,
        c.map.tables.len()
    )
}

/// 2 for a file that cannot be read, 1 for an invalid one: scripts can tell a typo in
/// the path from a bad map.
pub(crate) fn exit_code(e: &ConfigError) -> ExitCode {
    match e {
        ConfigError::Io { .. } => ExitCode::from(2),
        ConfigError::Invalid { .. } => ExitCode::FAILURE,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts() {
        let c = config::parse(include_str!("../config/testdata/base.toml"), "m.toml").unwrap();
        assert_eq!(
            summary("m.toml", &c),
            "m.toml: ok (2 shards, 16 slots, 1 sharded tables)"
        );
    }
}
