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
        UnparsedPolicy::DefaultShard => match named_sharded_table(sql, map) {
            Some(table) => Err(RouteError::Unparsed {
                error: error.to_owned(),
                hint: format!(
                    "; it names sharded table \"{table}\", so it cannot be sent to the default shard"
                ),
            }),
            None => Ok(Route {
                target: Target::Any,
                reason: Reason::UnparsedNoShardedTable,
            }),
        },
    }
}

/// The first sharded table whose name occurs in `sql` as a whole identifier, compared
/// case-insensitively and also inside quotes or comments: over-matching only refuses more.
pub(super) fn named_sharded_table<'m>(sql: &str, map: &'m ShardMap) -> Option<&'m str> {
    let text = sql.to_ascii_lowercase();
    let mut names: Vec<&str> = map.tables.keys().map(String::as_str).collect();
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
    use super::contains_word;

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
