//! Constants lifted out of a simple-protocol query, so statements that differ only in
//! their constants share one parse.
//!
//! Drivers that do not use the extended protocol (and pgbench `-M simple`) send the same
//! statement again and again with a different key literal in it: `… WHERE aid = 42`,
//! then `… WHERE aid = 97`. Keyed by text, every one of them is a plan-cache miss and a
//! full sqlparser parse, the largest cost of the proxy's simple-protocol path. Lifting
//! replaces plain integer and string constants with `$1…$n`, so the *shape* is parsed
//! once and the constants are handed to the router as parameters.
//!
//! The scanner is deliberately conservative: anything it cannot lex with certainty
//! (comments, dollar quotes, `$n` already present, prefixed strings such as `E'…'`,
//! backslashes in strings, decimals and exponents, several statements) makes [`lift`]
//! return `None`, and the statement takes the ordinary path. The caller uses the lifted
//! analysis only when it routes the statement to one shard, where the client's original
//! text is what runs, so the lifted text is never executed.

use std::fmt::Write;

/// The most constants lifted from one statement: a statement with more (bulk INSERTs)
/// is usually unique and gains nothing from a shared shape.
const MAX_LITERALS: usize = 32;

/// What kind of constant a lifted value was, so the router checks its type exactly as it
/// would check the literal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LiteralKind {
    /// an unsigned integer literal (`42`)
    Integer,
    /// a standard quoted string (`'abc'`), which takes the type of its context
    String,
}

/// A statement with its constants lifted out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifted {
    /// the text with each constant replaced by `$1`, `$2`, … in order
    pub shape: String,
    /// the constants' values (strings unescaped), `$n` is `values[n - 1]`
    pub values: Vec<(LiteralKind, String)>,
}

/// Lift the constants out of `sql`, or `None` when there are none or the text holds
/// anything the scanner does not lex with certainty.
pub fn lift(sql: &str) -> Option<Lifted> {
    let bytes = sql.as_bytes();
    let mut shape = String::with_capacity(sql.len() + 8);
    let mut values: Vec<(LiteralKind, String)> = Vec::new();
    let mut i = 0;
    // start of the verbatim run not yet copied into `shape`
    let mut copied = 0;
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                // a prefix glued to the quote (E'', B'', X'', N'', U&'') changes its meaning
                if i > 0 && (is_ident_byte(bytes[i - 1]) || bytes[i - 1] == b'&') {
                    return None;
                }
                let (value, end) = scan_string(bytes, i)?;
                // 'a' 'b' across a newline is one literal in Postgres
                let next = bytes[end..].iter().find(|c| !c.is_ascii_whitespace());
                if next == Some(&b'\'') {
                    return None;
                }
                shape.push_str(&sql[copied..i]);
                push_param(&mut shape, &mut values, LiteralKind::String, value)?;
                i = end;
                copied = end;
            }
            b'"' => {
                // quoted identifier: verbatim, `""` inside
                i += 1;
                loop {
                    match bytes.get(i) {
                        None => return None,
                        Some(b'"') if bytes.get(i + 1) == Some(&b'"') => i += 2,
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(_) => i += 1,
                    }
                }
            }
            b'0'..=b'9' => {
                if i > 0 && bytes[i - 1] == b'.' {
                    return None; // `.5`
                }
                let start = i;
                while i < bytes.len() && bytes[i].is_ascii_digit() {
                    i += 1;
                }
                // decimals, exponents, `1_000`, `0x1F`, `1abc`: not a plain integer
                if i < bytes.len() && (bytes[i] == b'.' || is_ident_byte(bytes[i])) {
                    return None;
                }
                shape.push_str(&sql[copied..start]);
                push_param(
                    &mut shape,
                    &mut values,
                    LiteralKind::Integer,
                    sql[start..i].to_owned(),
                )?;
                copied = i;
            }
            b'$' => return None,
            b'-' if bytes.get(i + 1) == Some(&b'-') => return None,
            b'/' if bytes.get(i + 1) == Some(&b'*') => return None,
            b';' => {
                if bytes[i + 1..]
                    .iter()
                    .any(|c| !c.is_ascii_whitespace() && *c != b';')
                {
                    return None;
                }
                i += 1;
            }
            _ if is_ident_start(b) => {
                // identifiers and keywords, digits and `$` inside them included
                while i < bytes.len() && (is_ident_byte(bytes[i]) || bytes[i] == b'$') {
                    i += 1;
                }
            }
            _ => i += 1,
        }
    }
    if values.is_empty() {
        return None;
    }
    shape.push_str(&sql[copied..]);
    Some(Lifted { shape, values })
}

fn push_param(
    shape: &mut String,
    values: &mut Vec<(LiteralKind, String)>,
    kind: LiteralKind,
    value: String,
) -> Option<()> {
    if values.len() == MAX_LITERALS {
        return None;
    }
    values.push((kind, value));
    // writing to a String cannot fail
    let _ = write!(shape, "${}", values.len());
    Some(())
}

/// A standard-conforming string starting at the quote at `start`: its value and the
/// index after the closing quote. Backslashes are refused: their meaning depends on
/// `standard_conforming_strings`.
fn scan_string(bytes: &[u8], start: usize) -> Option<(String, usize)> {
    let mut value = Vec::new();
    let mut i = start + 1;
    loop {
        match *bytes.get(i)? {
            b'\'' if bytes.get(i + 1) == Some(&b'\'') => {
                value.push(b'\'');
                i += 2;
            }
            b'\'' => return Some((String::from_utf8(value).ok()?, i + 1)),
            b'\\' => return None,
            c => {
                value.push(c);
                i += 1;
            }
        }
    }
}

fn is_ident_start(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_ident_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b >= 0x80
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(sql: &str) -> Option<String> {
        lift(sql).map(|l| l.shape)
    }

    #[test]
    fn lifts_integers_and_strings_in_order() {
        let l = lift("SELECT abalance FROM pgbench_accounts WHERE aid = 42 AND name = 'o''k';")
            .unwrap();
        assert_eq!(
            l.shape,
            "SELECT abalance FROM pgbench_accounts WHERE aid = $1 AND name = $2;"
        );
        assert_eq!(
            l.values,
            vec![
                (LiteralKind::Integer, "42".to_owned()),
                (LiteralKind::String, "o'k".to_owned())
            ]
        );
    }

    #[test]
    fn same_shape_for_different_constants() {
        assert_eq!(
            shape("UPDATE t SET v = v + 1 WHERE k = 7"),
            shape("UPDATE t SET v = v + 100 WHERE k = 123456789")
        );
    }

    #[test]
    fn identifiers_with_digits_and_quoted_identifiers_stay() {
        assert_eq!(
            shape(r#"SELECT c1, "x 2""y" FROM t2 WHERE "k3" = 3"#).as_deref(),
            Some(r#"SELECT c1, "x 2""y" FROM t2 WHERE "k3" = $1"#)
        );
        assert_eq!(
            shape("SELECT a$1 FROM t WHERE k = 1").as_deref(),
            Some("SELECT a$1 FROM t WHERE k = $1")
        );
    }

    #[test]
    fn no_constants_is_none() {
        assert_eq!(lift("SELECT now()"), None);
        assert_eq!(lift(""), None);
    }

    #[test]
    fn uncertain_text_is_refused() {
        for sql in [
            "SELECT 1.5",
            "SELECT .5",
            "SELECT 1e5",
            "SELECT 1_000",
            "SELECT 0x1F",
            "SELECT E'a'",
            "SELECT e'a'",
            "SELECT B'101'",
            "SELECT X'1F'",
            "SELECT U&'d\\0061t'",
            "SELECT 'a\\'",
            "SELECT 'a'\n'b'",
            "SELECT $1 + 1",
            "SELECT $$x$$, 1",
            "SELECT 1 -- c",
            "SELECT /* c */ 1",
            "SELECT 1; SELECT 2",
            "SELECT 'unterminated",
            "SELECT \"unterminated",
        ] {
            assert_eq!(lift(sql), None, "{sql}");
        }
    }

    #[test]
    fn trailing_semicolons_and_blanks_are_one_statement() {
        assert_eq!(shape("SELECT 1 ;; \n").as_deref(), Some("SELECT $1 ;; \n"));
    }

    #[test]
    fn casts_and_arrays_keep_their_syntax() {
        assert_eq!(
            shape("SELECT * FROM t WHERE k = '5'::bigint OR k = ANY('{1,2}')").as_deref(),
            Some("SELECT * FROM t WHERE k = $1::bigint OR k = ANY($2)")
        );
    }

    #[test]
    fn too_many_constants_is_none() {
        let values: Vec<String> = (0..=MAX_LITERALS).map(|i| format!("({i})")).collect();
        assert_eq!(
            lift(&format!("INSERT INTO t VALUES {}", values.join(", "))),
            None
        );
        let values: Vec<String> = (0..MAX_LITERALS).map(|i| format!("({i})")).collect();
        assert!(lift(&format!("INSERT INTO t VALUES {}", values.join(", "))).is_some());
    }

    #[test]
    fn non_ascii_identifiers_and_strings() {
        let l = lift("SELECT * FROM tä WHERE k = 'ü' AND n = 1").unwrap();
        assert_eq!(l.shape, "SELECT * FROM tä WHERE k = $1 AND n = $2");
        assert_eq!(l.values[0].1, "ü");
    }
}
