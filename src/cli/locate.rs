//! `pgshard locate`: slot and shard of a key value.
use std::path::Path;
use std::process::ExitCode;

use crate::config::{self, ShardMap};

/// Run the subcommand: print `slot=<n> shard=<name>`, or the problem on stderr and exit 1
/// (2 if the file cannot be read).
pub fn run(config: &Path, table: &str, value: &str) -> ExitCode {
    let c = match config::load(config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return super::check::exit_code(&e);
        }
    };
    match locate(&c.map, table, value) {
        Ok(line) => {
            say!("{line}");
            ExitCode::SUCCESS
        }
        Err(msg) => {
            eprintln!("{msg}");
            ExitCode::FAILURE
        }
    }
}

/// `slot=<n> shard=<name>` for `value` as a key of `table`, or what is wrong.
pub(crate) fn locate(map: &ShardMap, table: &str, value: &str) -> Result<String, String> {
    // Fold the way Postgres folds an unquoted identifier, as the map's names are.
    let name = table.trim().to_ascii_lowercase();
    let rule = map.table(&name).ok_or_else(|| {
        let names = map.table_names();
        if names.is_empty() {
            format!("table \"{table}\" is not sharded: the map has no [[tables]]")
        } else {
            format!(
                "table \"{table}\" is not sharded (sharded tables: {})",
                names.join(", ")
            )
        }
    })?;
    let key = rule.key_type.parse_text(value).map_err(|e| e.to_string())?;
    let (slot, shard) = map.locate(&key);
    Ok(format!("slot={slot} shard={}", map.shard_name(shard)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map() -> ShardMap {
        config::parse(include_str!("../config/testdata/base.toml"), "t")
            .unwrap()
            .map
    }

    #[test]
    fn locates_like_postgres_hash_partitioning() {
        // Slots from a real server's hashint8extended (see sharding/testdata):
        // 1 → 952 and 42 → 610 for 1024 slots, so 8 and 2 for the test map's 16.
        assert_eq!(locate(&map(), "accounts", "1").unwrap(), "slot=8 shard=s1");
        assert_eq!(
            locate(&map(), "ACCOUNTS", " 42 ").unwrap(),
            "slot=2 shard=s0"
        );
    }

    #[test]
    fn invalid_value_is_the_key_error() {
        assert_eq!(
            locate(&map(), "accounts", "abc").unwrap_err(),
            "invalid input syntax for type bigint: \"abc\""
        );
    }

    #[test]
    fn unknown_table_names_the_sharded_ones() {
        assert_eq!(
            locate(&map(), "users", "1").unwrap_err(),
            "table \"users\" is not sharded (sharded tables: accounts)"
        );
    }
}
