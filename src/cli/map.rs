//! `pgshard map init|show`.
use std::path::Path;
use std::process::ExitCode;

/// `map init`: fill `[slot_map]` from the ring.
pub fn init(config: &Path) -> ExitCode {
    let _ = config;
    todo!("helper")
}

/// `map show`: per-shard slot summary.
pub fn show(config: &Path) -> ExitCode {
    let _ = config;
    todo!("helper")
}
