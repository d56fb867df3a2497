//! Render a shard map file for local shards, so `pgshard dev` and the integration tests
//! write the same format from one place.

use std::fmt::Write as _;

use crate::sharding::ShardId;

/// Slot ranges written per line of a `[slot_map]` entry, to keep lines readable.
const RANGES_PER_LINE: usize = 10;

/// Everything that goes into a generated shard map.
#[derive(Debug, Clone)]
pub struct ShardMapSpec<'a> {
    /// proxy listen address, e.g. `127.0.0.1:6432` (port 0 picks a free port)
    pub listen: &'a str,
    /// backend connections per shard
    pub pool_size: usize,
    /// proxy users as (name, plaintext password, may use the admin console)
    pub users: &'a [(&'a str, &'a str, bool)],
    /// shards as (name, connection URL), in order (index = ShardId)
    pub shards: &'a [(String, String)],
    /// slot count (a power of two)
    pub slots: u32,
    /// ring points per shard per unit of weight
    pub vnodes: u32,
    /// `[[tables]]` entries, as TOML text
    pub tables_toml: &'a str,
    /// owner of each slot (len == slots)
    pub slot_owner: &'a [ShardId],
}

/// Split `slots` into `shards` contiguous, equal-sized ranges (the last takes any
/// remainder): simple and deterministic, for tests that need a known layout.
pub fn contiguous_slots(shards: usize, slots: u32) -> Vec<ShardId> {
    let shards = shards.max(1);
    let per_shard = (slots as usize / shards).max(1);
    (0..slots as usize)
        .map(|slot| (slot / per_shard).min(shards - 1))
        .collect()
}

/// The shard map as TOML text.
pub fn render(spec: &ShardMapSpec<'_>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "[server]");
    let _ = writeln!(out, "listen = {}", toml_string(spec.listen));
    let _ = writeln!(out, "pool_size = {}", spec.pool_size);
    for (name, password, admin) in spec.users {
        let _ = writeln!(out, "\n[[users]]");
        let _ = writeln!(out, "name = {}", toml_string(name));
        let _ = writeln!(out, "password = {}", toml_string(password));
        if *admin {
            let _ = writeln!(out, "admin = true");
        }
    }
    for (name, url) in spec.shards {
        let _ = writeln!(out, "\n[[shards]]");
        let _ = writeln!(out, "name = {}", toml_string(name));
        let _ = writeln!(out, "url = {}", toml_string(url));
    }
    let _ = writeln!(out, "\n[sharding]");
    let _ = writeln!(out, "slots = {}", spec.slots);
    let _ = writeln!(out, "vnodes = {}", spec.vnodes);
    let tables = spec.tables_toml.trim();
    if !tables.is_empty() {
        let _ = writeln!(out, "\n{tables}");
    }
    let _ = writeln!(out, "\n[slot_map]");
    for (id, (name, _)) in spec.shards.iter().enumerate() {
        let ranges: Vec<String> = slot_ranges(spec.slot_owner, id)
            .into_iter()
            .map(|(first, last)| {
                let text = if first == last {
                    first.to_string()
                } else {
                    format!("{first}-{last}")
                };
                toml_string(&text)
            })
            .collect();
        if ranges.is_empty() {
            let _ = writeln!(out, "{} = []", toml_key(name));
            continue;
        }
        let _ = write!(out, "{} = [", toml_key(name));
        for (n, range) in ranges.iter().enumerate() {
            let sep = if n == 0 { "" } else { "," };
            if n % RANGES_PER_LINE == 0 {
                let _ = write!(out, "{sep}\n    {range}");
            } else {
                let _ = write!(out, "{sep} {range}");
            }
        }
        let _ = writeln!(out, ",\n]");
    }
    out
}

/// Inclusive ranges of the slots owned by `shard`, in order.
fn slot_ranges(slot_owner: &[ShardId], shard: ShardId) -> Vec<(usize, usize)> {
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    for (slot, &owner) in slot_owner.iter().enumerate() {
        if owner != shard {
            continue;
        }
        match ranges.last_mut() {
            Some((_, last)) if *last + 1 == slot => *last = slot,
            _ => ranges.push((slot, slot)),
        }
    }
    ranges
}

/// A TOML key: bare when it can be, quoted otherwise.
fn toml_key(s: &str) -> String {
    let bare = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    if bare { s.to_string() } else { toml_string(s) }
}

/// A TOML basic string.
fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_slots_are_equal_ranges() {
        let owners = contiguous_slots(2, 1024);
        assert_eq!(owners.len(), 1024);
        assert_eq!(owners[0], 0);
        assert_eq!(owners[511], 0);
        assert_eq!(owners[512], 1);
        assert_eq!(owners[1023], 1);
        let three = contiguous_slots(3, 1024);
        assert_eq!(three[340], 0);
        assert_eq!(three[341], 1);
        assert_eq!(three[1023], 2);
    }

    #[test]
    fn ranges_collapse_runs() {
        assert_eq!(slot_ranges(&[0, 0, 1, 0, 1, 1], 0), vec![(0, 1), (3, 3)]);
        assert_eq!(slot_ranges(&[0, 0, 1, 0, 1, 1], 1), vec![(2, 2), (4, 5)]);
    }

    #[test]
    fn renders_a_parseable_map() {
        let shards = vec![
            (
                "s0".to_string(),
                "postgres://postgres@127.0.0.1:1/app".to_string(),
            ),
            (
                "s1".to_string(),
                "postgres://postgres@127.0.0.1:2/app".to_string(),
            ),
        ];
        let owners = contiguous_slots(2, 8);
        let text = render(&ShardMapSpec {
            listen: "127.0.0.1:0",
            pool_size: 4,
            users: &[("app", "app", false), ("admin", "admin", true)],
            shards: &shards,
            slots: 8,
            vnodes: 256,
            tables_toml: "[[tables]]\nname = \"accounts\"\nkey = \"aid\"\ntype = \"bigint\"\n",
            slot_owner: &owners,
        });
        let doc: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(doc["server"]["listen"].as_str(), Some("127.0.0.1:0"));
        assert_eq!(doc["shards"][1]["name"].as_str(), Some("s1"));
        assert_eq!(doc["users"][0].get("admin"), None);
        assert_eq!(doc["users"][1]["admin"].as_bool(), Some(true));
        assert_eq!(doc["tables"][0]["key"].as_str(), Some("aid"));
        assert_eq!(doc["slot_map"]["s0"][0].as_str(), Some("0-3"));
        assert_eq!(doc["slot_map"]["s1"][0].as_str(), Some("4-7"));
        assert!(text.contains("\ns0 = [\n    \"0-3\",\n]\n"), "{text}");
    }

    fn spec<'a>(shards: &'a [(String, String)], owners: &'a [ShardId]) -> ShardMapSpec<'a> {
        ShardMapSpec {
            listen: "127.0.0.1:0",
            pool_size: 1,
            users: &[],
            shards,
            slots: owners.len() as u32,
            vnodes: 1,
            tables_toml: "",
            slot_owner: owners,
        }
    }

    #[test]
    fn long_slot_lists_wrap_and_odd_names_are_quoted() {
        let shards = vec![
            ("shard one".to_string(), "postgres://h/app".to_string()),
            ("s1".to_string(), "postgres://h/app".to_string()),
        ];
        let owners: Vec<ShardId> = (0..64).map(|slot| slot % 2).collect();
        let text = render(&spec(&shards, &owners));
        let doc: toml::Table = text.parse().expect("valid TOML");
        let ranges = doc["slot_map"]["shard one"].as_array().expect("array");
        assert_eq!(ranges.len(), 32);
        assert_eq!(ranges[31].as_str(), Some("62"));
        assert!(text.lines().all(|line| line.len() < 100), "{text}");
    }

    #[test]
    fn a_shard_without_slots_gets_an_empty_list() {
        let shards = vec![
            ("s0".to_string(), "postgres://h/app".to_string()),
            ("s1".to_string(), "postgres://h/app".to_string()),
        ];
        let text = render(&spec(&shards, &[0; 8]));
        let doc: toml::Table = text.parse().expect("valid TOML");
        assert_eq!(doc["slot_map"]["s0"][0].as_str(), Some("0-7"));
        assert_eq!(doc["slot_map"]["s1"].as_array().map(Vec::len), Some(0));
    }
}
