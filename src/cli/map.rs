//! `pgshard map init|show`.
//!
//! `init` appends a `[slot_map]` computed by the consistent-hash ring to the end of the
//! file. The table is rendered with `toml_edit` (key quoting, string escaping) and
//! appended after the untouched original bytes, so every comment and blank line of the
//! hand-written part stays exactly as it was.
use std::fs;
use std::path::Path;
use std::process::ExitCode;

use toml_edit::DocumentMut;

use crate::config::validate::format_range;
use crate::config::{self, ConfigError, ShardMap, SlotMapSource};
use crate::rebalance::mapfile::{render_slot_map, write_atomically};

/// Ranges listed per shard by `map show` before abbreviating.
const SHOWN_RANGES: usize = 6;

/// Why `map init` did not write the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum InitError {
    /// the file already has a slot map: regenerating it would silently move data
    #[error(
        "{0}: already has a [slot_map]; `map init` only fills in a missing one \
         (changing the map of a live cluster is a rebalance)"
    )]
    AlreadyMapped(String),
    /// the file (without a slot map) is invalid, or the result failed validation
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// the generated map did not validate back to the ring's assignment
    #[error("{0}: internal error: the generated [slot_map] does not match the ring")]
    Mismatch(String),
    /// writing the file failed
    #[error("cannot write {path}: {source}")]
    Write {
        /// file path
        path: String,
        /// the I/O error
        source: std::io::Error,
    },
}

/// `map init`: fill `[slot_map]` from the ring.
pub fn init(config: &Path) -> ExitCode {
    let origin = config.display().to_string();
    let text = match fs::read_to_string(config) {
        Ok(t) => t,
        Err(source) => {
            eprintln!(
                "{}",
                ConfigError::Io {
                    path: origin,
                    source
                }
            );
            return ExitCode::from(2);
        }
    };
    let result = init_text(&text, &origin).and_then(|(new_text, map)| {
        write_atomically(config, &new_text).map_err(|source| InitError::Write {
            path: origin.clone(),
            source,
        })?;
        Ok(map)
    });
    match result {
        Ok(map) => {
            say!(
                "{origin}: wrote [slot_map] ({} slots over {} shards)",
                map.slots,
                map.shard_count()
            );
            say!("{}", render_show(&map).trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// `map show`: per-shard slot summary.
pub fn show(config: &Path) -> ExitCode {
    match config::load(config) {
        Ok(c) => {
            say!("{}", render_show(&c.map).trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            super::check::exit_code(&e)
        }
    }
}

/// The file text with a ring-generated `[slot_map]` appended, validated, and the map it
/// yields. Refuses a text that already has a slot map.
pub(crate) fn init_text(text: &str, origin: &str) -> Result<(String, ShardMap), InitError> {
    if let Ok(doc) = text.parse::<DocumentMut>()
        && doc.contains_key("slot_map")
    {
        return Err(InitError::AlreadyMapped(origin.to_string()));
    }
    // Validates everything but the slot map (a TOML syntax error surfaces here too).
    let ring = config::parse_with(text, origin, SlotMapSource::Ring)?;
    let mut out = String::with_capacity(text.len() + 64 * ring.map.shard_count());
    out.push_str(text);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&render_slot_map(&ring.map));
    let written = config::parse(&out, origin)?;
    if written.map.slot_owner != ring.map.slot_owner {
        return Err(InitError::Mismatch(origin.to_string()));
    }
    Ok((out, written.map))
}

/// A table per shard: name, slots, share of all slots, ranges (long lists abbreviated).
pub(crate) fn render_show(map: &ShardMap) -> String {
    let counts = map.slot_counts();
    let name_width = map
        .shard_names
        .iter()
        .map(|n| n.chars().count())
        .max()
        .unwrap_or(0)
        .max("shard".len());
    let mut out = format!(
        "{:<name_width$}  {:>6}  {:>6}  ranges\n",
        "shard", "slots", "share"
    );
    for (id, name) in map.shard_names.iter().enumerate() {
        let ranges = map.ranges_of(id);
        let mut listed: Vec<String> = ranges
            .iter()
            .take(SHOWN_RANGES)
            .map(|&(a, b)| format_range(a, b))
            .collect();
        if ranges.len() > SHOWN_RANGES {
            listed.push(format!("… ({} ranges)", ranges.len()));
        }
        let share = if map.slots == 0 {
            0.0
        } else {
            100.0 * f64::from(counts[id]) / f64::from(map.slots)
        };
        let list = if listed.is_empty() {
            "-".to_string()
        } else {
            listed.join(", ")
        };
        out.push_str(&format!(
            "{name:<name_width$}  {:>6}  {:>5.1}%  {list}\n",
            counts[id], share
        ));
    }
    if !map.replicated.is_empty() {
        let names: Vec<&str> = map.replicated.iter().map(String::as_str).collect();
        out.push_str(&format!(
            "reference tables (a copy on every shard): {}\n",
            names.join(", ")
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../config/testdata/base.toml");
    const UNMAPPED: &str = include_str!("../config/testdata/unmapped.toml");

    #[test]
    fn init_keeps_the_file_and_appends_a_valid_map() {
        let (out, map) = init_text(UNMAPPED, "u.toml").unwrap();
        assert!(out.starts_with(UNMAPPED), "original bytes must be kept");
        let tail = &out[UNMAPPED.len()..];
        assert!(tail.contains("\n[slot_map]\n"), "{tail}");
        assert!(tail.contains("\"odd name\" = ["), "{tail}");
        assert_eq!(map.slots, 256);
        assert_eq!(map.slot_owner.len(), 256);
        let ring = config::parse_with(UNMAPPED, "u", SlotMapSource::Ring).unwrap();
        assert_eq!(map.slot_owner, ring.map.slot_owner);
        // The trailing comment of the original stays before the new table.
        assert!(
            out.find("# end of hand-written part").unwrap() < out.find("\n[slot_map]\n").unwrap()
        );
    }

    #[test]
    fn init_refuses_an_existing_map() {
        let e = init_text(BASE, "b.toml").unwrap_err();
        assert!(matches!(e, InitError::AlreadyMapped(_)));
        assert!(
            e.to_string()
                .starts_with("b.toml: already has a [slot_map]"),
            "{e}"
        );
    }

    #[test]
    fn init_reports_other_errors_with_lines() {
        let bad = UNMAPPED.replace("pool_size = 4", "pool_size = 0");
        let e = init_text(&bad, "u.toml").unwrap_err();
        assert!(
            e.to_string()
                .starts_with("u.toml:5: pool_size must be at least 1"),
            "{e}"
        );
    }

    #[test]
    fn init_handles_missing_final_newline() {
        let text = UNMAPPED.trim_end();
        let (out, _) = init_text(text, "u").unwrap();
        assert!(out.starts_with(text));
        assert!(out[text.len()..].starts_with('\n'));
    }

    #[test]
    fn rendered_map_round_trips() {
        let c = config::parse(BASE, "b").unwrap();
        let rendered = render_slot_map(&c.map);
        assert!(rendered.contains("s0 = [\n    \"0-7\",\n]"), "{rendered}");
        assert!(rendered.contains("s1 = [\n    \"8-15\",\n]"), "{rendered}");
    }

    #[test]
    fn show_lists_shares_and_abbreviates() {
        let mut map = config::parse(BASE, "b").unwrap().map;
        // alternate owners: s0 gets 8 single-slot ranges
        map.slot_owner = (0..16).map(|s| s % 2).collect();
        let shown = render_show(&map);
        let lines: Vec<&str> = shown.lines().collect();
        assert_eq!(lines[0], "shard   slots   share  ranges");
        assert_eq!(
            lines[1],
            "s0          8   50.0%  0, 2, 4, 6, 8, 10, … (8 ranges)"
        );
        assert_eq!(lines.len(), 3);
        map.slot_owner = vec![1; 16];
        let shown = render_show(&map);
        assert!(shown.contains("s0          0    0.0%  -\n"), "{shown}");
        assert!(shown.contains("s1         16  100.0%  0-15\n"), "{shown}");
        map.replicated.insert("kinds".into());
        assert!(
            render_show(&map).ends_with("reference tables (a copy on every shard): kinds\n"),
            "{}",
            render_show(&map)
        );
    }
}
