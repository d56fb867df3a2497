//! Merging per-shard replies.
//!
//! [`concatenate`] is the merge for statements whose result is the union of the shards'
//! results in any order (the router only plans it for plain SELECTs: one table, no ORDER
//! BY, LIMIT, aggregates, DISTINCT…): the first shard's preamble (ParseComplete,
//! BindComplete, ParameterDescription, RowDescription), every shard's rows, and one
//! CommandComplete with the summed count. Every shard must describe the same columns, or
//! the merge is refused rather than mixing rows of different shapes.

use bytes::BytesMut;

/// Why replies could not be merged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MergeError {
    /// two shards described different result columns (their schemas differ)
    #[error(
        "shards {first} and {other} return different columns for this statement (their table definitions differ)"
    )]
    RowDescriptionMismatch {
        /// index of the first shard's reply
        first: usize,
        /// index of the differing shard's reply
        other: usize,
    },
    /// command tags that cannot be summed (different commands, or no count)
    #[error("shards returned command tags that cannot be combined: \"{0}\" and \"{1}\"")]
    CommandTag(String, String),
    /// a reply that is not a sequence of whole messages
    #[error("malformed reply from shard {0}")]
    Malformed(usize),
}

/// What [`concatenate`] wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Merged {
    /// the merged result
    Rows,
    /// a shard failed: its ErrorResponse was written instead of any result
    Error,
}

/// Split a reply buffer into `(tag, whole message)` pairs.
fn messages(reply: &[u8], shard: usize) -> Result<Vec<(u8, &[u8])>, MergeError> {
    let mut out = Vec::new();
    let mut rest = reply;
    while !rest.is_empty() {
        if rest.len() < 5 {
            return Err(MergeError::Malformed(shard));
        }
        let len = i32::from_be_bytes([rest[1], rest[2], rest[3], rest[4]]);
        let total = usize::try_from(len)
            .ok()
            .filter(|l| *l >= 4)
            .and_then(|l| l.checked_add(1))
            .filter(|t| *t <= rest.len())
            .ok_or(MergeError::Malformed(shard))?;
        out.push((rest[0], &rest[..total]));
        rest = &rest[total..];
    }
    Ok(out)
}

/// Merge per-shard replies (each the messages one shard sent for the statement, with or
/// without its ReadyForQuery) by concatenating their rows. Writes the client's reply,
/// without ReadyForQuery, to `out`.
pub fn concatenate(replies: &[BytesMut], out: &mut BytesMut) -> Result<Merged, MergeError> {
    let parsed: Vec<Vec<(u8, &[u8])>> = replies
        .iter()
        .enumerate()
        .map(|(i, r)| messages(r, i))
        .collect::<Result<_, _>>()?;
    // A failure anywhere is the statement's answer: the first shard's error, once.
    for msgs in &parsed {
        if let Some((_, err)) = msgs.iter().find(|(t, _)| *t == b'E') {
            out.extend_from_slice(err);
            return Ok(Merged::Error);
        }
    }
    // Every shard must describe the same columns.
    let first = parsed.first().and_then(|m| row_description(m));
    for (i, msgs) in parsed.iter().enumerate().skip(1) {
        if row_description(msgs) != first {
            return Err(MergeError::RowDescriptionMismatch { first: 0, other: i });
        }
    }
    // Notices from any shard (each once), the first shard's preamble, all rows, one tag.
    let mut seen_notices: Vec<&[u8]> = Vec::new();
    for msgs in &parsed {
        for (tag, msg) in msgs {
            if *tag == b'N' && !seen_notices.contains(msg) {
                seen_notices.push(msg);
                out.extend_from_slice(msg);
            }
        }
    }
    if let Some(msgs) = parsed.first() {
        for (tag, msg) in msgs {
            match tag {
                b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'S' => out.extend_from_slice(msg),
                _ => {}
            }
        }
    }
    let mut total: Option<(String, u64)> = None;
    let mut empty_query = false;
    for msgs in &parsed {
        for (tag, msg) in msgs {
            match tag {
                b'D' => out.extend_from_slice(msg),
                b'C' => {
                    let text = command_tag(msg);
                    let (prefix, count) = split_count(&text)
                        .ok_or_else(|| MergeError::CommandTag(text.clone(), text.clone()))?;
                    total = match total {
                        None => Some((prefix.to_owned(), count)),
                        Some((p, c)) if p == prefix => Some((p, c + count)),
                        Some((p, c)) => {
                            return Err(MergeError::CommandTag(format!("{p} {c}"), text.clone()));
                        }
                    };
                }
                b'I' => empty_query = true,
                _ => {}
            }
        }
    }
    match total {
        Some((prefix, count)) => {
            crate::protocol::reply::command_complete(&format!("{prefix} {count}"), out)
        }
        None if empty_query => out.extend_from_slice(b"I\0\0\0\x04"),
        None => {}
    }
    Ok(Merged::Rows)
}

/// The RowDescription among a reply's messages.
fn row_description<'a>(msgs: &[(u8, &'a [u8])]) -> Option<&'a [u8]> {
    msgs.iter().find(|(t, _)| *t == b'T').map(|m| m.1)
}

/// The text of a CommandComplete message.
fn command_tag(msg: &[u8]) -> String {
    let body = &msg[5..];
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// `"SELECT 5"` → `("SELECT", 5)`, `"INSERT 0 3"` → `("INSERT 0", 3)`.
fn split_count(tag: &str) -> Option<(&str, u64)> {
    let (prefix, count) = tag.rsplit_once(' ')?;
    Some((prefix, count.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::reply;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn reply(rows: &[&[u8]], description: &[u8]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(&msg(b'T', description));
        for r in rows {
            b.extend_from_slice(&msg(b'D', r));
        }
        reply::command_complete(&format!("SELECT {}", rows.len()), &mut b);
        reply::ready_for_query(reply::TxnStatus::Idle, &mut b);
        b
    }

    #[test]
    fn rows_of_all_shards_and_one_summed_tag() {
        let replies = [
            reply(&[b"a", b"b"], b"cols"),
            reply(&[], b"cols"),
            reply(&[b"c"], b"cols"),
        ];
        let mut out = BytesMut::new();
        assert_eq!(concatenate(&replies, &mut out).unwrap(), Merged::Rows);
        let got = messages(&out, 0).unwrap();
        let tags: Vec<u8> = got.iter().map(|m| m.0).collect();
        assert_eq!(tags, b"TDDDC");
        assert_eq!(command_tag(got[4].1), "SELECT 3");
        assert_eq!(&got[1].1[5..], b"a");
        assert_eq!(&got[3].1[5..], b"c");
    }

    #[test]
    fn an_error_anywhere_is_the_answer_once() {
        let mut failing = BytesMut::from(&msg(b'E', b"SERROR\0C42P01\0Mboom\0\0")[..]);
        reply::ready_for_query(reply::TxnStatus::Idle, &mut failing);
        let replies = [reply(&[b"a"], b"cols"), failing.clone(), failing];
        let mut out = BytesMut::new();
        assert_eq!(concatenate(&replies, &mut out).unwrap(), Merged::Error);
        let got = messages(&out, 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b'E');
    }

    #[test]
    fn different_columns_are_refused() {
        let replies = [reply(&[b"a"], b"cols"), reply(&[b"b"], b"other")];
        let mut out = BytesMut::new();
        assert_eq!(
            concatenate(&replies, &mut out),
            Err(MergeError::RowDescriptionMismatch { first: 0, other: 1 })
        );
    }

    #[test]
    fn tags_with_two_numbers_and_malformed_replies() {
        assert_eq!(split_count("INSERT 0 3"), Some(("INSERT 0", 3)));
        assert_eq!(split_count("SELECT 10"), Some(("SELECT", 10)));
        assert_eq!(split_count("BEGIN"), None);
        let mut out = BytesMut::new();
        let bad = [BytesMut::from(&b"D\0\0\0\x09ab"[..])];
        assert_eq!(concatenate(&bad, &mut out), Err(MergeError::Malformed(0)));
    }
}
