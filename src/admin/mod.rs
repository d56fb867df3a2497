//! The admin console: what a client gets when it connects to the database `pgshard`.
//!
//! The rebalancer drives a cutover through it (HOLD the slots being moved, RELOAD the
//! new map, RELEASE), and operators inspect the running map with it. This module is the
//! pure part: command parsing and the result tables; the session serves it.

use crate::config::ShardMap;
use crate::session::holds::{HoldInfo, format_ranges};

/// The database name that selects the admin console.
pub const ADMIN_DATABASE: &str = "pgshard";

/// The commands, as listed in the error for anything else.
pub const COMMANDS: &str = "SHOW SHARDS, SHOW POOLS, SHOW CLIENTS, SHOW STATS, SHOW SLOTS, SHOW MAP, SHOW HOLDS, SHOW CONFIG, SHOW VERSION, RELOAD, PAUSE [shard], RESUME [shard], SHUTDOWN, HOLD SLOTS '<ranges>', RELEASE SLOTS '<ranges>', RELEASE ALL";

/// One admin command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// an empty query string
    Empty,
    /// `SHOW SLOTS`: the slots of each shard
    ShowSlots,
    /// `SHOW MAP`: epoch, counts, file, held slots
    ShowMap,
    /// `SHOW HOLDS`: the HOLD commands in effect
    ShowHolds,
    /// `RELOAD`: read the shard map file again
    Reload,
    /// `HOLD SLOTS '3-5,9'` (ranges not yet checked against the slot count)
    Hold(String),
    /// `RELEASE SLOTS '3-5,9'`, or `RELEASE ALL` (`None`)
    Release(Option<String>),
    /// `SHOW SHARDS`: each shard's address, state, breaker and slots
    ShowShards,
    /// `SHOW POOLS`: each shard's backend connections
    ShowPools,
    /// `SHOW CLIENTS`: the connected clients
    ShowClients,
    /// `SHOW STATS`: statement counts, errors, bytes and latency per shard
    ShowStats,
    /// `SHOW CONFIG`: the settings in effect
    ShowConfig,
    /// `SHOW VERSION`
    ShowVersion,
    /// `PAUSE [shard]`: new statements for the shard (all shards: `None`) wait
    Pause(Option<String>),
    /// `RESUME [shard]`: undo PAUSE
    Resume(Option<String>),
    /// `SHUTDOWN`: shut down gracefully, as on SIGTERM
    Shutdown,
}

/// Why a query string is not an admin command (42601).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown admin command \"{0}\"; commands: {COMMANDS}")]
pub struct UnknownCommand(pub String);

/// Parse one admin command: keywords are case-insensitive, a trailing `;` is optional.
pub fn parse(sql: &str) -> Result<Command, UnknownCommand> {
    let text = sql.trim();
    let text = text.strip_suffix(';').unwrap_or(text).trim_end();
    if text.is_empty() {
        return Ok(Command::Empty);
    }
    let unknown = || UnknownCommand(shorten(text));
    let words: Vec<&str> = text.split_whitespace().collect();
    let is = |i: usize, kw: &str| words.get(i).is_some_and(|w| w.eq_ignore_ascii_case(kw));
    match words.len() {
        1 if is(0, "RELOAD") => return Ok(Command::Reload),
        1 if is(0, "SHUTDOWN") => return Ok(Command::Shutdown),
        1 if is(0, "PAUSE") => return Ok(Command::Pause(None)),
        1 if is(0, "RESUME") => return Ok(Command::Resume(None)),
        2 if is(0, "PAUSE") => {
            return shard_name(words[1])
                .map(|n| Command::Pause(Some(n)))
                .ok_or_else(unknown);
        }
        2 if is(0, "RESUME") => {
            return shard_name(words[1])
                .map(|n| Command::Resume(Some(n)))
                .ok_or_else(unknown);
        }
        2 if is(0, "SHOW") && is(1, "SHARDS") => return Ok(Command::ShowShards),
        2 if is(0, "SHOW") && is(1, "POOLS") => return Ok(Command::ShowPools),
        2 if is(0, "SHOW") && is(1, "CLIENTS") => return Ok(Command::ShowClients),
        2 if is(0, "SHOW") && is(1, "STATS") => return Ok(Command::ShowStats),
        2 if is(0, "SHOW") && is(1, "CONFIG") => return Ok(Command::ShowConfig),
        2 if is(0, "SHOW") && is(1, "VERSION") => return Ok(Command::ShowVersion),
        2 if is(0, "SHOW") && is(1, "SLOTS") => return Ok(Command::ShowSlots),
        2 if is(0, "SHOW") && is(1, "MAP") => return Ok(Command::ShowMap),
        2 if is(0, "SHOW") && is(1, "HOLDS") => return Ok(Command::ShowHolds),
        2 if is(0, "RELEASE") && is(1, "ALL") => return Ok(Command::Release(None)),
        _ => {}
    }
    if !(words.len() >= 3 && is(1, "SLOTS") && (is(0, "HOLD") || is(0, "RELEASE"))) {
        return Err(unknown());
    }
    // the literal: everything after the second keyword, one single-quoted string
    // (text is trimmed, so it starts with the first keyword)
    let rest = text[words[0].len()..].trim_start()[words[1].len()..].trim();
    let ranges = rest
        .strip_prefix('\'')
        .and_then(|r| r.strip_suffix('\''))
        .filter(|r| !r.contains('\''))
        .ok_or_else(unknown)?
        .to_owned();
    Ok(if is(0, "HOLD") {
        Command::Hold(ranges)
    } else {
        Command::Release(Some(ranges))
    })
}

/// A shard name argument: a bare word, or one in single or double quotes.
fn shard_name(word: &str) -> Option<String> {
    let inner = ['\'', '"']
        .iter()
        .find_map(|&q| word.strip_prefix(q).and_then(|w| w.strip_suffix(q)))
        .unwrap_or(word);
    (!inner.is_empty() && !inner.contains(['\'', '"'])).then(|| inner.to_owned())
}

/// At most 80 characters of a query, for an error message.
fn shorten(text: &str) -> String {
    match text.char_indices().nth(80) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_owned(),
    }
}

/// Type of a result column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    /// `text` (OID 25)
    Text,
    /// `int8` (OID 20)
    Int8,
    /// `float8` (OID 701)
    Float8,
    /// `bool` (OID 16)
    Bool,
}

impl ColumnType {
    /// The type OID and size for RowDescription.
    pub fn oid_and_size(self) -> (u32, i16) {
        match self {
            ColumnType::Text => (25, -1),
            ColumnType::Int8 => (20, 8),
            ColumnType::Float8 => (701, 8),
            ColumnType::Bool => (16, 1),
        }
    }
}

/// A result set in text format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    /// column names and types
    pub columns: Vec<(&'static str, ColumnType)>,
    /// rows of text values
    pub rows: Vec<Vec<String>>,
}

/// `(a, b)` ∩ `held`, as ranges.
fn intersect(ranges: &[(u32, u32)], held: &[(u32, u32)]) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    for &(a, b) in ranges {
        for &(c, d) in held {
            let (lo, hi) = (a.max(c), b.min(d));
            if lo <= hi {
                out.push((lo, hi));
            }
        }
    }
    out.sort_unstable();
    out
}

/// `SHOW SLOTS`: one row per shard in map order.
pub fn slots_table(map: &ShardMap, held: &[(u32, u32)]) -> Table {
    let counts = map.slot_counts();
    let rows = (0..map.shard_count())
        .map(|shard| {
            let ranges = map.ranges_of(shard);
            vec![
                map.shard_name(shard).to_owned(),
                counts[shard].to_string(),
                format_ranges(&ranges),
                format_ranges(&intersect(&ranges, held)),
            ]
        })
        .collect();
    Table {
        columns: vec![
            ("shard", ColumnType::Text),
            ("slots", ColumnType::Int8),
            ("ranges", ColumnType::Text),
            ("held", ColumnType::Text),
        ],
        rows,
    }
}

/// `SHOW MAP`: one row.
pub fn map_table(map: &ShardMap, config: &str, held: &[(u32, u32)]) -> Table {
    Table {
        columns: vec![
            ("epoch", ColumnType::Int8),
            ("shards", ColumnType::Int8),
            ("slots", ColumnType::Int8),
            ("config", ColumnType::Text),
            ("held", ColumnType::Text),
        ],
        rows: vec![vec![
            map.epoch.to_string(),
            map.shard_count().to_string(),
            map.slots.to_string(),
            config.to_owned(),
            format_ranges(held),
        ]],
    }
}

/// `SHOW HOLDS`: one row per HOLD command in effect; `waiting` counts the statements
/// waiting on any held slot.
pub fn holds_table(holds: &[HoldInfo], waiting: usize) -> Table {
    Table {
        columns: vec![
            ("slots", ColumnType::Text),
            ("held_ms", ColumnType::Int8),
            ("waiting", ColumnType::Int8),
        ],
        rows: holds
            .iter()
            .map(|h| {
                vec![
                    format_ranges(&h.ranges),
                    h.held_for.as_millis().to_string(),
                    waiting.to_string(),
                ]
            })
            .collect(),
    }
}

mod status;
pub use status::{
    ShardStatus, clients_table, config_table, pools_table, shards_table, stats_table, version_table,
};

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn commands_parse_case_insensitively() {
        assert_eq!(parse("show slots"), Ok(Command::ShowSlots));
        assert_eq!(parse("  SHOW   Map ; "), Ok(Command::ShowMap));
        assert_eq!(parse("show holds;"), Ok(Command::ShowHolds));
        assert_eq!(parse("reload"), Ok(Command::Reload));
        assert_eq!(parse("RELEASE ALL;"), Ok(Command::Release(None)));
        assert_eq!(parse(""), Ok(Command::Empty));
        assert_eq!(parse(" ; "), Ok(Command::Empty));
        assert_eq!(
            parse("hold slots '3-5,9';"),
            Ok(Command::Hold("3-5,9".to_owned()))
        );
        assert_eq!(
            parse("Release Slots  ' 3 '"),
            Ok(Command::Release(Some(" 3 ".to_owned())))
        );
        assert_eq!(parse("show shards"), Ok(Command::ShowShards));
        assert_eq!(parse("SHOW POOLS;"), Ok(Command::ShowPools));
        assert_eq!(parse("show clients"), Ok(Command::ShowClients));
        assert_eq!(parse("show stats"), Ok(Command::ShowStats));
        assert_eq!(parse("show config"), Ok(Command::ShowConfig));
        assert_eq!(parse("show version"), Ok(Command::ShowVersion));
        assert_eq!(parse("pause"), Ok(Command::Pause(None)));
        assert_eq!(parse("PAUSE s1;"), Ok(Command::Pause(Some("s1".into()))));
        assert_eq!(
            parse("pause 's 1'"),
            Err(UnknownCommand("pause 's 1'".into()))
        );
        assert_eq!(
            parse("resume \"s1\""),
            Ok(Command::Resume(Some("s1".into())))
        );
        assert_eq!(parse("resume"), Ok(Command::Resume(None)));
        assert_eq!(parse("shutdown"), Ok(Command::Shutdown));
    }

    #[test]
    fn anything_else_is_refused_with_the_command_list() {
        for bad in [
            "select 1",
            "show",
            "show slots now",
            "hold slots 3-5",
            "hold slots '3'x'",
            "hold '3'",
            "release",
            "reload now",
            "pause a b",
            "pause ''",
            "shutdown now",
            "show everything",
        ] {
            let e = parse(bad).unwrap_err();
            assert!(e.to_string().contains("SHOW SLOTS"), "{bad}: {e}");
        }
    }

    fn map() -> ShardMap {
        crate::config::parse(include_str!("../config/testdata/base.toml"), "t")
            .expect("test map parses")
            .map
    }

    #[test]
    fn slots_table_lists_each_shard_with_held_ranges() {
        let t = slots_table(&map(), &[(6, 9), (15, 15)]);
        assert_eq!(t.columns.len(), 4);
        assert_eq!(
            t.rows,
            [["s0", "8", "0-7", "6-7"], ["s1", "8", "8-15", "8-9,15"]]
        );
    }

    #[test]
    fn map_and_holds_tables() {
        let t = map_table(&map(), "/x/shardmap.toml", &[(1, 2)]);
        assert_eq!(t.rows, [["1", "2", "16", "/x/shardmap.toml", "1-2"]]);
        let t = holds_table(
            &[HoldInfo {
                ranges: vec![(3, 5), (9, 9)],
                held_for: Duration::from_millis(1500),
            }],
            2,
        );
        assert_eq!(t.rows, [["3-5,9", "1500", "2"]]);
    }
}
