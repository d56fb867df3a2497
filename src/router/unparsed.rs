//! Statements sqlparser cannot parse: refuse, or (policy `default_shard`) send them to the
//! default shard when their text names no sharded table.

use crate::config::{ShardMap, UnparsedPolicy};

use super::{Reason, Route, RouteError, Target};

/// Route unparseable text under `policy`.
pub(super) fn route(
    sql: &str,
    error: &str,
    map: &ShardMap,
    policy: UnparsedPolicy,
) -> Result<Route, RouteError> {
    match policy {
        UnparsedPolicy::Refuse => Err(RouteError::Unparsed {
            error: error.to_owned(),
            hint: String::new(),
        }),
        UnparsedPolicy::DefaultShard => {
            if let Some(why) = opaque(sql) {
                return Err(RouteError::Unparsed {
                    error: error.to_owned(),
                    hint: format!("; it {why}, so pgshard cannot tell which tables it uses"),
                });
            }
            match named_sharded_table(sql, map) {
                Some(table) => Err(RouteError::Unparsed {
                    error: error.to_owned(),
                    hint: format!(
                        "; it names {} table \"{table}\", so it cannot be sent to the default shard",
                        if map.table(table).is_some() {
                            "sharded"
                        } else {
                            "reference"
                        }
                    ),
                }),
                // It may use unsharded tables, whose rows live on the default shard.
                None => Ok(Route {
                    target: Target::One(map.default_shard),
                    reason: Reason::UnparsedNoShardedTable,
                }),
            }
        }
    }
}

/// Text whose table names a scan cannot see: Unicode-escaped identifiers (`U&"…"`),
/// procedural blocks (`DO`), dynamic SQL (`EXECUTE`).
fn opaque(sql: &str) -> Option<&'static str> {
    let text = sql.to_ascii_lowercase();
    if text.contains("u&\"") {
        Some("uses a Unicode-escaped identifier")
    } else if text.trim_start().starts_with("do") && contains_word(&text, "do") {
        Some("is a DO block")
    } else if contains_word(&text, "execute") {
        Some("runs dynamic SQL")
    } else {
        None
    }
}

/// The first sharded table whose name occurs in `sql` as a whole identifier, compared
/// case-insensitively and also inside quotes or comments: over-matching only refuses more.
pub(super) fn named_sharded_table<'m>(sql: &str, map: &'m ShardMap) -> Option<&'m str> {
    let text = sql.to_ascii_lowercase();
    // reference tables too: sent to the default shard only, a write would change one
    // copy of several
    let mut names: Vec<&str> = map
        .tables
        .keys()
        .chain(&map.replicated)
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names
        .into_iter()
        .find(|name| contains_word(&text, &name.to_ascii_lowercase()))
}

/// `word` occurs in `text` with no identifier character (`[a-z0-9_]`; `$` counts as a boundary, over-matching) on either side.
fn contains_word(text: &str, word: &str) -> bool {
    if word.is_empty() {
        return false;
    }
    let bytes = text.as_bytes();
    let ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    text.match_indices(word).any(|(at, _)| {
        let before = at.checked_sub(1).map(|i| bytes[i]);
        let after = bytes.get(at + word.len()).copied();
        !before.is_some_and(ident) && !after.is_some_and(ident)
    })
}

#[cfg(test)]
mod tests {
    use super::{contains_word, opaque};

    #[test]
    fn opaque_text_is_recognised() {
        assert!(opaque("SELECT * FROM U&\"\\0061ccounts\" WHERE aid = 5").is_some());
        assert!(opaque("DO $$ BEGIN EXECUTE 'DELETE FROM acc' || 'ounts'; END $$").is_some());
        assert!(opaque("do language plpgsql $$ begin perform 1; end $$").is_some());
        assert!(opaque("VACUUM ANALYZE config").is_none());
        assert!(opaque("CHECKPOINT").is_none());
    }

    #[test]
    fn whole_words_only() {
        assert!(contains_word("vacuum accounts", "accounts"));
        assert!(contains_word("vacuum \"accounts\";", "accounts"));
        assert!(contains_word("vacuum public.accounts", "accounts"));
        assert!(contains_word(
            "do $$ update accounts set x = 1 $$",
            "accounts"
        ));
        assert!(!contains_word("vacuum accounts_archive", "accounts"));
        assert!(!contains_word("vacuum my_accounts", "accounts"));
        assert!(!contains_word("vacuum accounts2", "accounts"));
        assert!(!contains_word("checkpoint", "accounts"));
        assert!(contains_word("x accounts_archive accounts", "accounts"));
    }
}
