//! Streaming concatenation: the rows of several shards forwarded as they are read, in
//! bounded chunks, instead of collecting every reply first.
//!
//! The session reads a first chunk from every shard (each holds at least the shard's
//! RowDescription, or its whole reply), hands them to [`ConcatStream::start`], which
//! checks that all shards describe the same columns and writes the first shard's
//! preamble; then it feeds each shard's chunks in turn to [`ConcatStream::feed`], which
//! writes the rows (up to the limit) and tallies the counts, and ends with
//! [`ConcatStream::finish`] for the one summed CommandComplete. Pure: no sockets.

use super::merge::{MergeError, Merged, add_tag, messages as messages_of, same_columns};

/// The RowDescription among a chunk's messages.
fn description<'a>(msgs: &[(u8, &'a [u8])]) -> Option<&'a [u8]> {
    msgs.iter().find(|(t, _)| *t == b'T').map(|m| m.1)
}

/// State of one streamed concatenation.
#[derive(Debug)]
pub struct ConcatStream {
    limit: Option<u64>,
    emitted: u64,
    total: Option<(String, u64)>,
    empty_query: bool,
    failed: bool,
    notices: Vec<Vec<u8>>,
}

impl ConcatStream {
    /// A concatenation keeping at most `limit` rows (`LIMIT n` without ORDER BY).
    pub fn new(limit: Option<u64>) -> ConcatStream {
        ConcatStream {
            limit,
            emitted: 0,
            total: None,
            empty_query: false,
            failed: false,
            notices: Vec::new(),
        }
    }

    /// Check the first chunk of every shard and write the preamble (the first shard's
    /// ParseComplete/BindComplete/descriptions). A shard's error in a first chunk is the
    /// answer: it is written and [`Merged::Error`] returned (read no further).
    pub fn start(
        &mut self,
        firsts: &[&[u8]],
        out: &mut bytes::BytesMut,
    ) -> Result<Merged, MergeError> {
        let parsed = firsts
            .iter()
            .enumerate()
            .map(|(i, c)| messages_of(c, i))
            .collect::<Result<Vec<_>, _>>()?;
        for msgs in &parsed {
            if let Some((_, err)) = msgs.iter().find(|(t, _)| *t == b'E') {
                out.extend_from_slice(err);
                self.failed = true;
                return Ok(Merged::Error);
            }
        }
        let first = parsed.first().and_then(|m| description(m));
        for (i, msgs) in parsed.iter().enumerate().skip(1) {
            if !same_columns(description(msgs), first) {
                return Err(MergeError::RowDescriptionMismatch { first: 0, other: i });
            }
        }
        if let Some(msgs) = parsed.first() {
            for (tag, msg) in msgs {
                match tag {
                    b'1' | b'2' | b'3' | b't' | b'T' | b'n' | b'S' => out.extend_from_slice(msg),
                    b'D' | b'C' | b'I' => break,
                    _ => {}
                }
            }
        }
        Ok(Merged::Rows)
    }

    /// Write the rows of one chunk of shard `shard` (whole messages). Returns
    /// [`Merged::Error`] when the chunk holds an error: it was written, and the statement
    /// is over (stop reading the other shards).
    pub fn feed(
        &mut self,
        chunk: &[u8],
        shard: usize,
        out: &mut bytes::BytesMut,
    ) -> Result<Merged, MergeError> {
        if self.failed {
            return Ok(Merged::Error);
        }
        for (tag, msg) in messages_of(chunk, shard)? {
            match tag {
                b'D' if self.limit.is_none_or(|n| self.emitted < n) => {
                    out.extend_from_slice(msg);
                    self.emitted += 1;
                }
                b'C' => add_tag(&mut self.total, msg)?,
                b'I' => self.empty_query = true,
                b'E' => {
                    out.extend_from_slice(msg);
                    self.failed = true;
                    return Ok(Merged::Error);
                }
                b'N' if !self.notices.iter().any(|n| n == msg) => {
                    self.notices.push(msg.to_vec());
                    out.extend_from_slice(msg);
                }
                _ => {}
            }
        }
        Ok(Merged::Rows)
    }

    /// Whether the limit is reached (the remaining rows are read and dropped).
    pub fn full(&self) -> bool {
        self.limit.is_some_and(|n| self.emitted >= n)
    }

    /// Write the one CommandComplete (or EmptyQueryResponse) for the statement.
    pub fn finish(self, out: &mut bytes::BytesMut) {
        if self.failed {
            return;
        }
        match self.total {
            Some((prefix, count)) => {
                let count = if self.limit.is_some() {
                    self.emitted
                } else {
                    count
                };
                crate::protocol::reply::command_complete(&format!("{prefix} {count}"), out)
            }
            None if self.empty_query => out.extend_from_slice(b"I\0\0\0\x04"),
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;

    use super::*;
    use crate::protocol::reply;
    use crate::scatter::merge::command_tag;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    fn rows(rows: &[&[u8]]) -> Vec<u8> {
        rows.iter().flat_map(|r| msg(b'D', r)).collect()
    }

    fn tags(out: &[u8]) -> Vec<u8> {
        messages_of(out, 0).unwrap().iter().map(|m| m.0).collect()
    }

    #[test]
    fn chunks_stream_in_shard_order_with_one_summed_tag() {
        let mut s = ConcatStream::new(None);
        let mut first0 = msg(b'T', b"cols");
        first0.extend(rows(&[b"a", b"b"]));
        let mut first1 = msg(b'T', b"cols");
        first1.extend(rows(&[b"x"]));
        let mut out = BytesMut::new();
        assert_eq!(
            s.start(&[&first0, &first1], &mut out).unwrap(),
            Merged::Rows
        );
        s.feed(&first0, 0, &mut out).unwrap();
        let mut rest0 = rows(&[b"c"]);
        let mut tag = BytesMut::new();
        reply::command_complete("SELECT 3", &mut tag);
        rest0.extend_from_slice(&tag);
        s.feed(&rest0, 0, &mut out).unwrap();
        let mut rest1 = Vec::new();
        let mut tag = BytesMut::new();
        reply::command_complete("SELECT 1", &mut tag);
        rest1.extend_from_slice(&tag);
        s.feed(&first1, 1, &mut out).unwrap();
        s.feed(&rest1, 1, &mut out).unwrap();
        s.finish(&mut out);
        assert_eq!(tags(&out), b"TDDDDC");
        let got = messages_of(&out, 0).unwrap();
        assert_eq!(command_tag(got[5].1), "SELECT 4");
        assert_eq!(&got[4].1[5..], b"x");
    }

    #[test]
    fn limits_mismatches_and_errors() {
        // the limit keeps the first n rows and counts what was sent
        let mut s = ConcatStream::new(Some(1));
        let first = [msg(b'T', b"c"), rows(&[b"a", b"b"])].concat();
        let mut out = BytesMut::new();
        s.start(&[&first, &first], &mut out).unwrap();
        s.feed(&first, 0, &mut out).unwrap();
        assert!(s.full());
        s.feed(&first, 1, &mut out).unwrap();
        let mut tag = BytesMut::new();
        reply::command_complete("SELECT 2", &mut tag);
        s.feed(&tag, 0, &mut out).unwrap();
        s.finish(&mut out);
        let got = messages_of(&out, 0).unwrap();
        assert_eq!(tags(&out), b"TDC");
        assert_eq!(command_tag(got[2].1), "SELECT 1");
        // different descriptions are refused before any row is written
        let mut s = ConcatStream::new(None);
        let other = [msg(b'T', b"d"), rows(&[b"a"])].concat();
        let mut out = BytesMut::new();
        assert!(s.start(&[&first, &other], &mut out).is_err());
        // an error in a later chunk ends the statement, written once
        let mut s = ConcatStream::new(None);
        let mut out = BytesMut::new();
        s.start(&[&first, &first], &mut out).unwrap();
        s.feed(&first, 0, &mut out).unwrap();
        let err = msg(b'E', b"SERROR\0C22012\0Mdivision by zero\0\0");
        assert_eq!(s.feed(&err, 1, &mut out).unwrap(), Merged::Error);
        assert_eq!(s.feed(&first, 1, &mut out).unwrap(), Merged::Error);
        s.finish(&mut out);
        assert_eq!(tags(&out), b"TDDE");
        // a truncated chunk is an error, not a panic
        let mut s = ConcatStream::new(None);
        assert!(
            s.feed(&first[..first.len() - 1], 0, &mut BytesMut::new())
                .is_err()
        );
    }
}
