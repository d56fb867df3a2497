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

/// `FILE: ok (N shards, M slots, K sharded tables)`, and `, R reference tables` when
/// there are any
pub(crate) fn summary(origin: &str, c: &Config) -> String {
    let reference = match c.map.replicated.len() {
        0 => String::new(),
        n => format!(", {n} reference tables"),
    };
    format!(
        "{origin}: ok ({} shards, {} slots, {} sharded tables{reference})",
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
        let text = format!(
            "{}\n[[tables]]\nname = \"Kinds\"\nreplicated = true\n",
            include_str!("../config/testdata/base.toml")
        );
        let c = config::parse(&text, "m.toml").unwrap();
        assert_eq!(
            summary("m.toml", &c),
            "m.toml: ok (2 shards, 16 slots, 1 sharded tables, 1 reference tables)"
        );
        assert!(c.map.is_replicated("kinds"));
    }
}
