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
    /// a count merge whose shards did not return one int8 count each
    #[error("the shards did not return one int8 count each")]
    NotACount,
    /// the merge cannot combine these values exactly (a type it cannot compare or add,
    /// text in a collation it cannot reproduce)
    #[error("{0}")]
    Unsupported(String),
    /// a recombined value does not fit its type, as Postgres would have reported
    #[error("{0}")]
    OutOfRange(String),
}

impl MergeError {
    /// The SQLSTATE a client gets for this failure.
    pub fn sqlstate(&self) -> crate::protocol::SqlState {
        use crate::protocol::SqlState;
        match self {
            MergeError::OutOfRange(_) => SqlState::NUMERIC_VALUE_OUT_OF_RANGE,
            _ => SqlState::FEATURE_NOT_SUPPORTED,
        }
    }
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
pub(super) fn messages(reply: &[u8], shard: usize) -> Result<Vec<(u8, &[u8])>, MergeError> {
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

/// Each shard's reply as `(tag, message)` pairs.
pub(super) type Parsed<'a> = Vec<Vec<(u8, &'a [u8])>>;

/// Parsed replies, after the checks every merge shares. `None` when a shard's error
/// was written as the answer.
fn checked<'a>(
    replies: &'a [BytesMut],
    out: &mut BytesMut,
) -> Result<Option<Parsed<'a>>, MergeError> {
    checked_with(replies, out, true)
}

/// [`checked`], writing the first shard's preamble only if `preamble`.
pub(super) fn checked_with<'a>(
    replies: &'a [BytesMut],
    out: &mut BytesMut,
    preamble: bool,
) -> Result<Option<Parsed<'a>>, MergeError> {
    let parsed: Vec<Vec<(u8, &[u8])>> = replies
        .iter()
        .enumerate()
        .map(|(i, r)| messages(r, i))
        .collect::<Result<_, _>>()?;
    // A failure anywhere is the statement's answer: the first shard's error, once.
    for msgs in &parsed {
        if let Some((_, err)) = msgs.iter().find(|(t, _)| *t == b'E') {
            out.extend_from_slice(err);
            return Ok(None);
        }
    }
    // Every shard must describe the same columns.
    let first = parsed.first().and_then(|m| row_description(m));
    for (i, msgs) in parsed.iter().enumerate().skip(1) {
        if !same_columns(row_description(msgs), first) {
            return Err(MergeError::RowDescriptionMismatch { first: 0, other: i });
        }
    }
    // Notices from any shard (each once), then the first shard's preamble.
    let mut seen_notices: Vec<&[u8]> = Vec::new();
    for msgs in &parsed {
        for (tag, msg) in msgs {
            if *tag == b'N' && !seen_notices.contains(msg) {
                seen_notices.push(msg);
                out.extend_from_slice(msg);
            }
        }
    }
    if let Some(msgs) = parsed.first().filter(|_| preamble) {
        for (tag, msg) in msgs {
            if matches!(tag, b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'S') {
                out.extend_from_slice(msg);
            }
        }
    }
    Ok(Some(parsed))
}

/// Merge per-shard replies (each the messages one shard sent for the statement, with or
/// without its ReadyForQuery) by concatenating their rows, keeping at most `limit` rows.
/// Writes the client's reply, without ReadyForQuery, to `out`.
pub fn concatenate(
    replies: &[BytesMut],
    limit: Option<u64>,
    out: &mut BytesMut,
) -> Result<Merged, MergeError> {
    let Some(parsed) = checked(replies, out)? else {
        return Ok(Merged::Error);
    };
    let mut emitted: u64 = 0;
    let mut total: Option<(String, u64)> = None;
    let mut empty_query = false;
    for msgs in &parsed {
        for (tag, msg) in msgs {
            match tag {
                b'D' if limit.is_none_or(|n| emitted < n) => {
                    out.extend_from_slice(msg);
                    emitted += 1;
                }
                b'C' => add_tag(&mut total, msg)?,
                b'I' => empty_query = true,
                _ => {}
            }
        }
    }
    match total {
        Some((prefix, count)) => {
            let count = if limit.is_some() { emitted } else { count };
            crate::protocol::reply::command_complete(&format!("{prefix} {count}"), out)
        }
        None if empty_query => out.extend_from_slice(b"I\0\0\0\x04"),
        None => {}
    }
    Ok(Merged::Rows)
}

/// Merge the replies of a multi-row INSERT split per shard: `replies[i]` answers shard
/// `reply_shards[i]`, `row_shards[r]` is the shard VALUES row `r` went to. RETURNING rows
/// are put back in input order (each shard returns its rows in the order it received
/// them), the counts are summed into one `INSERT 0 n`.
pub fn interleave(
    replies: &[BytesMut],
    reply_shards: &[crate::sharding::ShardId],
    row_shards: &[crate::sharding::ShardId],
    out: &mut BytesMut,
) -> Result<Merged, MergeError> {
    let Some(parsed) = checked(replies, out)? else {
        return Ok(Merged::Error);
    };
    let mut rows: Vec<std::collections::VecDeque<&[u8]>> = Vec::with_capacity(parsed.len());
    let mut total: Option<(String, u64)> = None;
    for msgs in &parsed {
        rows.push(
            msgs.iter()
                .filter(|(t, _)| *t == b'D')
                .map(|m| m.1)
                .collect(),
        );
        for (tag, msg) in msgs {
            if *tag == b'C' {
                add_tag(&mut total, msg)?;
            }
        }
    }
    let sent = |i: usize| {
        row_shards
            .iter()
            .filter(|&&s| reply_shards.get(i) == Some(&s))
            .count()
    };
    let exact = rows.iter().enumerate().all(|(i, r)| r.len() == sent(i));
    if exact {
        for shard in row_shards {
            let i = reply_shards
                .iter()
                .position(|s| s == shard)
                .ok_or(MergeError::Malformed(0))?;
            if let Some(row) = rows[i].pop_front() {
                out.extend_from_slice(row);
            }
        }
    } else {
        // a shard returned fewer rows than it was sent (a trigger skipped some): which
        // row is which cannot be told, so they come shard by shard
        tracing::warn!(
            "split INSERT: a shard returned fewer RETURNING rows than rows sent; returning them in shard order"
        );
        for r in &rows {
            r.iter().for_each(|row| out.extend_from_slice(row));
        }
    }
    if let Some((prefix, count)) = total {
        crate::protocol::reply::command_complete(&format!("{prefix} {count}"), out);
    }
    Ok(Merged::Rows)
}

/// Merge the replies of `SELECT count(…) FROM t …` run on every shard: one row whose
/// value is the sum of the shards' counts, in the format the client asked for (`binary`:
/// from Bind; a simple query's results are text), and `SELECT 1`.
pub fn sum_counts(
    replies: &[BytesMut],
    binary: bool,
    out: &mut BytesMut,
) -> Result<Merged, MergeError> {
    let Some(parsed) = checked(replies, out)? else {
        return Ok(Merged::Error);
    };
    // (A statement Describe reports format 0 whatever Bind asks: only the type counts.)
    if let Some(desc) = parsed.first().and_then(|m| row_description(m))
        && count_column_is_binary(desc).is_none()
    {
        return Err(MergeError::NotACount);
    }
    let mut total: i64 = 0;
    let mut rows = 0;
    for (shard, msgs) in parsed.iter().enumerate() {
        for (tag, msg) in msgs {
            if *tag == b'D' {
                rows += 1;
                let value = single_value(msg).ok_or(MergeError::Malformed(shard))?;
                let n = if binary {
                    i64::from_be_bytes(value.try_into().map_err(|_| MergeError::Malformed(shard))?)
                } else {
                    std::str::from_utf8(value)
                        .ok()
                        .and_then(|t| t.parse().ok())
                        .ok_or(MergeError::Malformed(shard))?
                };
                total = total.checked_add(n).ok_or(MergeError::NotACount)?;
            }
        }
    }
    if rows == 0 {
        return Ok(Merged::Rows);
    }
    let value = if binary {
        total.to_be_bytes().to_vec()
    } else {
        total.to_string().into_bytes()
    };
    out.extend_from_slice(b"D");
    out.extend_from_slice(&((4 + 2 + 4 + value.len()) as i32).to_be_bytes());
    out.extend_from_slice(&1i16.to_be_bytes());
    out.extend_from_slice(&(value.len() as i32).to_be_bytes());
    out.extend_from_slice(&value);
    crate::protocol::reply::command_complete("SELECT 1", out);
    Ok(Merged::Rows)
}

/// For a RowDescription of exactly one int8 column: whether it is sent in binary.
fn count_column_is_binary(desc: &[u8]) -> Option<bool> {
    let body = desc.get(5..)?;
    if i16::from_be_bytes([*body.first()?, *body.get(1)?]) != 1 {
        return None;
    }
    let field = &body[2..];
    let name_end = field.iter().position(|&b| b == 0)?;
    let rest = field.get(name_end + 1..name_end + 1 + 18)?;
    // table oid (4), attnum (2), type oid (4), typlen (2), typmod (4), format (2)
    let type_oid = u32::from_be_bytes(rest[6..10].try_into().ok()?);
    let format = i16::from_be_bytes(rest[16..18].try_into().ok()?);
    (type_oid == 20).then_some(format == 1)
}

/// The only field of a one-column DataRow (None when NULL or not one column).
fn single_value(msg: &[u8]) -> Option<&[u8]> {
    let body = msg.get(5..)?;
    if i16::from_be_bytes([*body.first()?, *body.get(1)?]) != 1 {
        return None;
    }
    let len = i32::from_be_bytes(body.get(2..6)?.try_into().ok()?);
    let len = usize::try_from(len).ok()?;
    body.get(6..6 + len)
}

/// Whether two RowDescriptions describe the same columns: names, types, type modifiers
/// and formats. The table OID and column number of each field are ignored: they are
/// each shard's own catalog numbers, which differ between shards for the same table.
pub(super) fn same_columns(a: Option<&[u8]>, b: Option<&[u8]>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(a), Some(b)) => match (columns_of(a), columns_of(b)) {
            (Some(x), Some(y)) => x == y,
            // not a well-formed description: only identical bytes are the same
            _ => a == b,
        },
        _ => false,
    }
}

/// Each field of a RowDescription without its table OID and column number.
fn columns_of(desc: &[u8]) -> Option<Vec<(&[u8], &[u8])>> {
    let body = desc.get(5..)?;
    let n = i16::from_be_bytes([*body.first()?, *body.get(1)?]);
    let mut rest = body.get(2..)?;
    let mut fields = Vec::with_capacity(usize::try_from(n).ok()?);
    for _ in 0..n {
        let end = rest.iter().position(|&b| b == 0)?;
        // name, then table oid (4) and attnum (2), then type oid, typlen, typmod, format
        let field = rest.get(end + 1..end + 19)?;
        fields.push((&rest[..end], &field[6..]));
        rest = &rest[end + 19..];
    }
    rest.is_empty().then_some(fields)
}

/// The RowDescription among a reply's messages.
fn row_description<'a>(msgs: &[(u8, &'a [u8])]) -> Option<&'a [u8]> {
    msgs.iter().find(|(t, _)| *t == b'T').map(|m| m.1)
}

/// Add one shard's CommandComplete to the running `(prefix, count)` total: `SELECT 3`
/// and `SELECT 4` make `SELECT 7`; different commands cannot be combined.
pub(super) fn add_tag(total: &mut Option<(String, u64)>, msg: &[u8]) -> Result<(), MergeError> {
    let text = command_tag(msg);
    let (prefix, count) =
        split_count(&text).ok_or_else(|| MergeError::CommandTag(text.clone(), text.clone()))?;
    match total {
        None => *total = Some((prefix.to_owned(), count)),
        Some((p, c)) if p == prefix => *c += count,
        Some((p, c)) => return Err(MergeError::CommandTag(format!("{p} {c}"), text)),
    }
    Ok(())
}

/// The text of a CommandComplete message.
pub(super) fn command_tag(msg: &[u8]) -> String {
    let body = &msg[5..];
    let end = body.iter().position(|&b| b == 0).unwrap_or(body.len());
    String::from_utf8_lossy(&body[..end]).into_owned()
}

/// `"SELECT 5"` → `("SELECT", 5)`, `"INSERT 0 3"` → `("INSERT 0", 3)`.
pub(super) fn split_count(tag: &str) -> Option<(&str, u64)> {
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
        assert_eq!(concatenate(&replies, None, &mut out).unwrap(), Merged::Rows);
        let got = messages(&out, 0).unwrap();
        let tags: Vec<u8> = got.iter().map(|m| m.0).collect();
        assert_eq!(tags, b"TDDDC");
        assert_eq!(command_tag(got[4].1), "SELECT 3");
        assert_eq!(&got[1].1[5..], b"a");
        assert_eq!(&got[3].1[5..], b"c");
    }

    #[test]
    fn first_rows_keeps_the_limit_and_counts_what_it_sent() {
        let replies = [reply(&[b"a", b"b"], b"cols"), reply(&[b"c", b"d"], b"cols")];
        let mut out = BytesMut::new();
        concatenate(&replies, Some(3), &mut out).unwrap();
        let got = messages(&out, 0).unwrap();
        let tags: Vec<u8> = got.iter().map(|m| m.0).collect();
        assert_eq!(tags, b"TDDDC");
        assert_eq!(command_tag(got[4].1), "SELECT 3");
        let mut out = BytesMut::new();
        concatenate(&replies, Some(0), &mut out).unwrap();
        assert_eq!(command_tag(messages(&out, 0).unwrap()[1].1), "SELECT 0");
    }

    #[test]
    fn an_error_anywhere_is_the_answer_once() {
        let mut failing = BytesMut::from(&msg(b'E', b"SERROR\0C42P01\0Mboom\0\0")[..]);
        reply::ready_for_query(reply::TxnStatus::Idle, &mut failing);
        let replies = [reply(&[b"a"], b"cols"), failing.clone(), failing];
        let mut out = BytesMut::new();
        assert_eq!(
            concatenate(&replies, None, &mut out).unwrap(),
            Merged::Error
        );
        let got = messages(&out, 0).unwrap();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, b'E');
    }

    #[test]
    fn columns_are_compared_without_catalog_numbers() {
        // name "a", table oid, attnum, int4, typlen 4, typmod -1, text
        let field = |table: u32, attnum: i16, oid: u32| {
            let mut d = 1i16.to_be_bytes().to_vec();
            d.extend_from_slice(b"a\0");
            d.extend_from_slice(&table.to_be_bytes());
            d.extend_from_slice(&attnum.to_be_bytes());
            d.extend_from_slice(&oid.to_be_bytes());
            d.extend_from_slice(&4i16.to_be_bytes());
            d.extend_from_slice(&(-1i32).to_be_bytes());
            d.extend_from_slice(&0i16.to_be_bytes());
            msg(b'T', &d)
        };
        assert!(same_columns(
            Some(&field(16384, 1, 23)),
            Some(&field(16999, 3, 23))
        ));
        assert!(!same_columns(
            Some(&field(16384, 1, 23)),
            Some(&field(16384, 1, 20))
        ));
        assert!(!same_columns(Some(&field(16384, 1, 23)), None));
    }

    #[test]
    fn different_columns_are_refused() {
        let replies = [reply(&[b"a"], b"cols"), reply(&[b"b"], b"other")];
        let mut out = BytesMut::new();
        assert_eq!(
            concatenate(&replies, None, &mut out),
            Err(MergeError::RowDescriptionMismatch { first: 0, other: 1 })
        );
    }

    fn count_reply(n: i64, binary: bool) -> BytesMut {
        let mut desc = Vec::new();
        desc.extend_from_slice(&1i16.to_be_bytes());
        desc.extend_from_slice(b"count\0");
        desc.extend_from_slice(&0u32.to_be_bytes());
        desc.extend_from_slice(&0i16.to_be_bytes());
        desc.extend_from_slice(&20u32.to_be_bytes());
        desc.extend_from_slice(&8i16.to_be_bytes());
        desc.extend_from_slice(&(-1i32).to_be_bytes());
        desc.extend_from_slice(&(binary as i16).to_be_bytes());
        let value = if binary {
            n.to_be_bytes().to_vec()
        } else {
            n.to_string().into_bytes()
        };
        let mut row = 1i16.to_be_bytes().to_vec();
        row.extend_from_slice(&(value.len() as i32).to_be_bytes());
        row.extend_from_slice(&value);
        let mut b = BytesMut::from(&msg(b'T', &desc)[..]);
        b.extend_from_slice(&msg(b'D', &row));
        reply::command_complete("SELECT 1", &mut b);
        b
    }

    #[test]
    fn counts_are_summed_in_text_and_binary() {
        for binary in [false, true] {
            let replies = [
                count_reply(5, binary),
                count_reply(0, binary),
                count_reply(37, binary),
            ];
            let mut out = BytesMut::new();
            assert_eq!(
                sum_counts(&replies, binary, &mut out).unwrap(),
                Merged::Rows
            );
            let got = messages(&out, 0).unwrap();
            let tags: Vec<u8> = got.iter().map(|m| m.0).collect();
            assert_eq!(tags, b"TDC");
            let v = single_value(got[1].1).unwrap();
            if binary {
                assert_eq!(v, 42i64.to_be_bytes());
            } else {
                assert_eq!(v, b"42");
            }
            assert_eq!(command_tag(got[2].1), "SELECT 1");
        }
        // a column that is not int8 is not summed
        let replies = [reply(&[b"\0\x01\0\0\0\x015"], b"\0\x01x\0")];
        let mut out = BytesMut::new();
        assert!(sum_counts(&replies, false, &mut out).is_err());
    }

    #[test]
    fn tags_with_two_numbers_and_malformed_replies() {
        assert_eq!(split_count("INSERT 0 3"), Some(("INSERT 0", 3)));
        assert_eq!(split_count("SELECT 10"), Some(("SELECT", 10)));
        assert_eq!(split_count("BEGIN"), None);
        let mut out = BytesMut::new();
        let bad = [BytesMut::from(&b"D\0\0\0\x09ab"[..])];
        assert_eq!(
            concatenate(&bad, None, &mut out),
            Err(MergeError::Malformed(0))
        );
    }
}

#[cfg(test)]
mod interleave_tests {
    use super::*;
    use crate::protocol::reply;

    fn shard_reply(rows: &[&[u8]]) -> BytesMut {
        let mut b = BytesMut::new();
        b.extend_from_slice(b"T\0\0\0\x06\0\0");
        for r in rows {
            b.extend_from_slice(b"D");
            b.extend_from_slice(&((r.len() + 4) as i32).to_be_bytes());
            b.extend_from_slice(r);
        }
        reply::command_complete(&format!("INSERT 0 {}", rows.len()), &mut b);
        b
    }

    #[test]
    fn returning_rows_come_back_in_input_order_and_counts_add_up() {
        // rows 0..5 went to shards 2, 0, 2, 1, 0
        let row_shards = [2, 0, 2, 1, 0];
        let replies = [
            shard_reply(&[b"r1", b"r4"]),
            shard_reply(&[b"r3"]),
            shard_reply(&[b"r0", b"r2"]),
        ];
        let mut out = BytesMut::new();
        assert_eq!(
            interleave(&replies, &[0, 1, 2], &row_shards, &mut out).unwrap(),
            Merged::Rows
        );
        let got = messages(&out, 0).unwrap();
        let rows: Vec<&[u8]> = got
            .iter()
            .filter(|m| m.0 == b'D')
            .map(|m| &m.1[5..])
            .collect();
        assert_eq!(rows, vec![&b"r0"[..], b"r1", b"r2", b"r3", b"r4"]);
        assert_eq!(got.iter().filter(|m| m.0 == b'T').count(), 1);
        assert_eq!(command_tag(got.last().unwrap().1), "INSERT 0 5");
    }
}
