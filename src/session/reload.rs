//! Reloading the shard map file into a running proxy (RELOAD, SIGHUP).
//!
//! A reload installs the `[[shards]]` list, `[sharding]`, `[[tables]]` and `[slot_map]`
//! of the file, which must validate and carry an epoch no lower than the running one: a
//! changed map must carry a higher epoch, so an old file put back by mistake cannot undo
//! a rebalance. `[log] level` is applied by [`super::Shared`] when the process's log
//! subscriber allows it. `[server]`, `[[users]]`, `[transactions]`, `[health]`, `[tls]`
//! and `[log] format` are read at startup only; a change there is logged and otherwise
//! ignored.

use crate::config::{Config, ConfigError, ShardConfig, ShardMap, UserConfig, UserSecret};

/// Why a reload installed nothing. The running map is unchanged in every case.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// the proxy was started from a configuration without a file behind it
    #[error("pgshard was started without a shard map file; there is nothing to reload")]
    NoFile,
    /// the file is unreadable or invalid (the message names the line)
    #[error("{0}")]
    Config(#[from] ConfigError),
    /// the file is valid but may not replace the running map
    #[error("{0}")]
    Refused(String),
}

/// What a successful reload did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadOutcome {
    /// epoch before
    pub old_epoch: u64,
    /// epoch now
    pub new_epoch: u64,
    /// shards now
    pub shards: usize,
    /// false when the file held the running map already (same epoch, same contents)
    pub changed: bool,
    /// sections that differ from the running ones but are not applied by a reload
    pub ignored: Vec<&'static str>,
}

/// Whether `new` may replace the running map `old` with shard list `old_shards`:
/// `Ok(true)` to install, `Ok(false)` when nothing changed.
pub fn check(
    old: &ShardMap,
    old_shards: &[ShardConfig],
    new: &ShardMap,
    new_shards: &[ShardConfig],
) -> Result<bool, String> {
    if new.epoch < old.epoch {
        return Err(format!(
            "map epoch {} is older than the running epoch {}",
            new.epoch, old.epoch
        ));
    }
    if new.slots != old.slots {
        return Err(format!(
            "slots = {} differs from the running {}: the slot count is fixed for the life of a cluster",
            new.slots, old.slots
        ));
    }
    let same = same_map(old, new) && same_shards(old_shards, new_shards);
    if new.epoch == old.epoch && !same {
        return Err(format!(
            "the map differs from the running one but keeps epoch {}: a changed map must carry a higher epoch",
            old.epoch
        ));
    }
    Ok(!same || new.epoch != old.epoch)
}

fn same_map(a: &ShardMap, b: &ShardMap) -> bool {
    a.shard_names == b.shard_names
        && a.slot_owner == b.slot_owner
        && a.tables == b.tables
        && a.default_shard == b.default_shard
        && a.vnodes == b.vnodes
        && a.broadcast_writes == b.broadcast_writes
        && a.replicated == b.replicated
}

fn same_shards(a: &[ShardConfig], b: &[ShardConfig]) -> bool {
    a.len() == b.len()
        && a.iter()
            .zip(b)
            .all(|(x, y)| x.name == y.name && x.url == y.url && x.weight == y.weight)
}

/// Sections of `new` that differ from the running configuration but that a reload does
/// not apply.
pub fn ignored_sections(running: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    // Debug of these types shows every field (no secrets in them)
    if format!("{:?}", running.server) != format!("{:?}", new.server) {
        out.push("[server]");
    }
    if !same_users(&running.users, &new.users) {
        out.push("[[users]]");
    }
    if format!("{:?}", running.transactions) != format!("{:?}", new.transactions) {
        out.push("[transactions]");
    }
    if running.health != new.health {
        out.push("[health]");
    }
    if format!("{:?}", running.tls) != format!("{:?}", new.tls) {
        out.push("[tls]");
    }
    // `[log] level` is applied by the caller when it can
    if running.log.format != new.log.format {
        out.push("[log] format");
    }
    out
}

fn same_users(a: &[UserConfig], b: &[UserConfig]) -> bool {
    a.len() == b.len()
        && a.iter().zip(b).all(|(x, y)| {
            x.name == y.name
                && match (&x.secret, &y.secret) {
                    (UserSecret::Plain(p), UserSecret::Plain(q)) => p == q,
                    (
                        UserSecret::Scram {
                            stored_key: k1,
                            server_key: s1,
                            ..
                        },
                        UserSecret::Scram {
                            stored_key: k2,
                            server_key: s2,
                            ..
                        },
                    ) => k1 == k2 && s1 == s2,
                    _ => false,
                }
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = include_str!("../config/testdata/base.toml");

    fn config(text: &str) -> Config {
        crate::config::parse(text, "t").expect("test map parses")
    }

    fn with_epoch(text: &str, epoch: u64) -> String {
        text.replacen("vnodes = 8\n", &format!("vnodes = 8\nepoch = {epoch}\n"), 1)
    }

    fn check_texts(old: &str, new: &str) -> Result<bool, String> {
        let (a, b) = (config(old), config(new));
        check(&a.map, &a.shards, &b.map, &b.shards)
    }

    #[test]
    fn same_file_is_a_no_op() {
        assert_eq!(check_texts(BASE, BASE), Ok(false));
    }

    #[test]
    fn a_raised_epoch_alone_is_installed() {
        assert_eq!(check_texts(BASE, &with_epoch(BASE, 2)), Ok(true));
    }

    #[test]
    fn lower_epoch_is_refused() {
        let e = check_texts(&with_epoch(BASE, 3), &with_epoch(BASE, 2)).unwrap_err();
        assert_eq!(e, "map epoch 2 is older than the running epoch 3");
    }

    #[test]
    fn a_changed_map_needs_a_higher_epoch() {
        let moved = BASE.replacen(
            "s0 = [\"0-7\"]\ns1 = [\"8-14\", \"15\"]",
            "s0 = [\"0-6\"]\ns1 = [\"7-15\"]",
            1,
        );
        assert_ne!(moved, BASE);
        let e = check_texts(BASE, &moved).unwrap_err();
        assert!(e.contains("higher epoch"), "{e}");
        assert_eq!(check_texts(BASE, &with_epoch(&moved, 2)), Ok(true));
        // a new shard is a change too
        let added = BASE.replacen(
            "[sharding]",
            "[[shards]]\nname = \"s2\"\nurl = \"postgres://postgres@127.0.0.1:5603/app\"\n\n[sharding]",
            1,
        );
        assert!(check_texts(BASE, &added).is_err());
        assert_eq!(check_texts(BASE, &with_epoch(&added, 2)), Ok(true));
    }

    #[test]
    fn slot_count_cannot_change() {
        let more = with_epoch(&BASE.replacen("slots = 16", "slots = 32", 1), 2).replacen(
            "\"15\"]",
            "\"15-31\"]",
            1,
        );
        let e = check_texts(BASE, &more).unwrap_err();
        assert!(e.contains("fixed"), "{e}");
    }

    #[test]
    fn startup_only_sections_are_named() {
        let a = config(BASE);
        let b = config(
            &BASE
                .replacen("pool_size = 10", "pool_size = 11", 1)
                .replacen("password = \"app\"", "password = \"other\"", 1),
        );
        assert_eq!(ignored_sections(&a, &b), ["[server]", "[[users]]"]);
        assert!(ignored_sections(&a, &a).is_empty());
        let tls = config(&format!("{BASE}\n[tls]\nbackend = \"require\"\n"));
        assert_eq!(ignored_sections(&a, &tls), ["[tls]"]);
    }
}
