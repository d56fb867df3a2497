//! Splitting a multi-row `INSERT … VALUES` into one statement per shard.
//!
//! Each shard receives the same statement with only the rows it owns, in their original
//! order. Parameters are renumbered so every shard's statement uses `$1…$m` densely (a
//! Postgres statement may not skip a parameter number without declaring its type), and
//! the caller gets, for each new number, the client's parameter it stands for.

use std::collections::HashMap;
use std::ops::ControlFlow;

use sqlparser::ast::{Expr, SetExpr, Statement as Ast, Value, visit_expressions_mut};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::parser::Parser;

/// The statements of a query string as the client wrote them (texts between top-level
/// semicolons, as Postgres' lexer sees them: not inside strings, quoted names, comments
/// or dollar quotes), without empty ones. `None` if the text cannot be tokenized.
pub fn split_statements(sql: &str) -> Option<Vec<&str>> {
    use sqlparser::tokenizer::{Token, Tokenizer};
    let tokens = Tokenizer::new(&PostgreSqlDialect {}, sql)
        .tokenize_with_location()
        .ok()?;
    // byte offset of each line start (lines and columns are 1-based, columns in chars)
    let mut line_starts = vec![0usize];
    line_starts.extend(sql.match_indices('\n').map(|(i, _)| i + 1));
    let offset = |line: u64, column: u64| -> Option<usize> {
        let start = *line_starts.get(usize::try_from(line).ok()?.checked_sub(1)?)?;
        let chars = usize::try_from(column).ok()?.checked_sub(1)?;
        let rest = sql.get(start..)?;
        Some(
            start
                + rest
                    .char_indices()
                    .nth(chars)
                    .map_or(rest.len(), |(i, _)| i),
        )
    };
    let mut parts = Vec::new();
    let mut from = 0;
    for t in &tokens {
        if t.token == Token::SemiColon {
            let at = offset(t.span.start.line, t.span.start.column)?;
            parts.push(sql.get(from..at)?);
            from = at + 1;
        }
    }
    parts.push(sql.get(from..)?);
    Some(
        parts
            .into_iter()
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .collect(),
    )
}

/// One shard's part of a split INSERT.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InsertPart {
    /// the statement text with only this shard's rows
    pub sql: String,
    /// `params[k]` is the client's 1-based parameter number that `$(k+1)` stands for
    pub params: Vec<usize>,
}

/// Why an INSERT could not be split (the router checked the shape already, so this is
/// a bug or a statement that changed meaning on re-parsing).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pgshard cannot split this INSERT per shard: {0}")]
pub struct SplitError(String);

/// Split `sql` (one `INSERT … VALUES` statement) into one statement per entry of
/// `groups`, each keeping the VALUES rows whose 0-based indexes it lists (ascending).
pub fn split_insert(sql: &str, groups: &[Vec<usize>]) -> Result<Vec<InsertPart>, SplitError> {
    let err = |m: &str| SplitError(m.to_owned());
    let mut parsed =
        Parser::parse_sql(&PostgreSqlDialect {}, sql).map_err(|e| SplitError(e.to_string()))?;
    let [Ast::Insert(insert)] = parsed.as_mut_slice() else {
        return Err(err("not one INSERT statement"));
    };
    let rows = match insert.source.as_deref() {
        Some(q) => match q.body.as_ref() {
            SetExpr::Values(v) => v.rows.clone(),
            _ => return Err(err("not INSERT … VALUES")),
        },
        None => return Err(err("not INSERT … VALUES")),
    };
    let mut parts = Vec::with_capacity(groups.len());
    for group in groups {
        let mut ins = insert.clone();
        let Some(q) = ins.source.as_deref_mut() else {
            return Err(err("not INSERT … VALUES"));
        };
        let SetExpr::Values(v) = q.body.as_mut() else {
            return Err(err("not INSERT … VALUES"));
        };
        v.rows = group
            .iter()
            .map(|&i| {
                rows.get(i)
                    .cloned()
                    .ok_or_else(|| err("row index out of range"))
            })
            .collect::<Result<_, _>>()?;
        let mut stmt = Ast::Insert(ins);
        let params = renumber(&mut stmt)?;
        parts.push(InsertPart {
            sql: stmt.to_string(),
            params,
        });
    }
    Ok(parts)
}

/// Renumber `$n` placeholders densely in the order they first appear; returns the old
/// number of each new one.
fn renumber(stmt: &mut Ast) -> Result<Vec<usize>, SplitError> {
    let mut new_of_old: HashMap<usize, usize> = HashMap::new();
    let mut old_of_new: Vec<usize> = Vec::new();
    let flow = visit_expressions_mut(stmt, |e| {
        if let Expr::Value(v) = e
            && let Value::Placeholder(p) = &mut v.value
        {
            let Some(old) = p.strip_prefix('$').and_then(|n| n.parse::<usize>().ok()) else {
                return ControlFlow::Break(());
            };
            let new = *new_of_old.entry(old).or_insert_with(|| {
                old_of_new.push(old);
                old_of_new.len()
            });
            *p = format!("${new}");
        }
        ControlFlow::Continue(())
    });
    if flow.is_break() {
        return Err(SplitError("a placeholder that is not $n".to_owned()));
    }
    Ok(old_of_new)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_go_to_their_groups_in_order() {
        let parts = split_insert(
            "INSERT INTO t (k, v) VALUES (1, 'a'), (2, 'b'), (3, 'c') RETURNING k",
            &[vec![0, 2], vec![1]],
        )
        .unwrap();
        assert_eq!(
            parts,
            vec![
                InsertPart {
                    sql: "INSERT INTO t (k, v) VALUES (1, 'a'), (3, 'c') RETURNING k".into(),
                    params: vec![],
                },
                InsertPart {
                    sql: "INSERT INTO t (k, v) VALUES (2, 'b') RETURNING k".into(),
                    params: vec![],
                },
            ]
        );
    }

    #[test]
    fn parameters_are_renumbered_densely_and_mapped_back() {
        let parts = split_insert(
            "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $4), ($5, $2) ON CONFLICT (k) DO UPDATE SET v = $6",
            &[vec![1], vec![0, 2]],
        )
        .unwrap();
        assert_eq!(
            parts[0].sql,
            "INSERT INTO t (k, v) VALUES ($1, $2) ON CONFLICT(k) DO UPDATE SET v = $3"
        );
        assert_eq!(parts[0].params, vec![3, 4, 6]);
        assert_eq!(
            parts[1].sql,
            "INSERT INTO t (k, v) VALUES ($1, $2), ($3, $2) ON CONFLICT(k) DO UPDATE SET v = $4"
        );
        assert_eq!(parts[1].params, vec![1, 2, 5, 6]);
    }

    #[test]
    fn statements_split_at_top_level_semicolons_only() {
        assert_eq!(
            split_statements("BEGIN; UPDATE t SET a = ';' WHERE k = 1;\nSELECT $$;$$, \"x;y\" -- c;\n FROM t; COMMIT;").unwrap(),
            vec![
                "BEGIN",
                "UPDATE t SET a = ';' WHERE k = 1",
                "SELECT $$;$$, \"x;y\" -- c;\n FROM t",
                "COMMIT"
            ]
        );
        assert_eq!(
            split_statements("SELECT 'é;'; /* ; */ SELECT 2").unwrap(),
            vec!["SELECT 'é;'", "/* ; */ SELECT 2"]
        );
        assert_eq!(split_statements(" ; ;").unwrap(), Vec::<&str>::new());
    }

    #[test]
    fn other_statements_are_not_split() {
        assert!(split_insert("SELECT 1", &[vec![0]]).is_err());
        assert!(split_insert("INSERT INTO t SELECT 1", &[vec![0]]).is_err());
        assert!(split_insert("INSERT INTO t VALUES (1)", &[vec![3]]).is_err());
    }
}
