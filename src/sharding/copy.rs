//! COPY … FROM STDIN data (CopyData, F), without I/O: split the client's byte stream into
//! rows exactly where Postgres' COPY would, and read each row's shard key field as the
//! server would decode it, so every row can be forwarded *unchanged* to the shard that
//! owns it.
//!
//! The rules follow Postgres 15's `CopyReadLineText` / `CopyReadAttributesText` /
//! `CopyReadAttributesCSV`: the first line end fixes the newline style (`\n`, `\r`,
//! `\r\n`) and a different one later is an error; in text format a backslash escapes
//! the next byte (a newline too) and `\.` ends the data; in CSV quoted fields may hold
//! delimiters, newlines and doubled quotes, and `\.` alone on a line ends the data. The
//! NULL string is compared with the field as written (before unescaping); in CSV only an
//! unquoted field can be NULL. Rows may arrive split across CopyData messages at any
//! byte: [`RowSplitter`] keeps the unfinished row and resumes its scan where it stopped.

use bytes::{Bytes, BytesMut};

/// The data format of a COPY (binary COPY FROM is not split: see the router).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CopyFormat {
    /// tab-separated text with backslash escapes
    Text,
    /// comma-separated values with quoting
    Csv,
}

/// The options of a COPY that decide where rows and fields begin and end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopyOptions {
    /// text or CSV
    pub format: CopyFormat,
    /// field separator (one byte)
    pub delimiter: u8,
    /// the string that means NULL, as written in the data
    pub null: Vec<u8>,
    /// CSV quote byte
    pub quote: u8,
    /// CSV escape byte inside quotes (defaults to the quote)
    pub escape: u8,
    /// the first line is a header, skipped
    pub header: bool,
    /// CSV `FORCE_NOT_NULL` names the key column: its NULL string is a value
    pub key_force_not_null: bool,
    /// CSV `FORCE_NULL` names the key column: a quoted NULL string is NULL too
    pub key_force_null: bool,
}

impl CopyOptions {
    /// Postgres' defaults for the format: tab and `\N` for text; comma, empty string
    /// and `"` for CSV.
    pub fn defaults(format: CopyFormat) -> CopyOptions {
        match format {
            CopyFormat::Text => CopyOptions {
                format,
                delimiter: b'\t',
                null: b"\\N".to_vec(),
                quote: b'"',
                escape: b'"',
                header: false,
                key_force_not_null: false,
                key_force_null: false,
            },
            CopyFormat::Csv => CopyOptions {
                format,
                delimiter: b',',
                null: Vec::new(),
                quote: b'"',
                escape: b'"',
                header: false,
                key_force_not_null: false,
                key_force_null: false,
            },
        }
    }

    fn csv(&self) -> bool {
        self.format == CopyFormat::Csv
    }
}

/// The shard key field of one row, decoded as the server's COPY would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyField {
    /// the field is NULL
    Null,
    /// the field's text (valid UTF-8, no NUL byte)
    Value(String),
}

/// One complete row of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Row {
    /// the row's bytes as the client sent them, line end included
    pub bytes: Bytes,
    /// length of the row without its line end
    pub content_len: usize,
    /// the line number Postgres reports for this row (1-based, header included)
    pub line: u64,
    /// this is the header line
    pub header: bool,
    /// the key field (None for the header, or when no key position was given)
    pub key: Option<KeyField>,
}

impl Row {
    /// The row's text for an error's CONTEXT, as Postgres shows it (at most 100 bytes,
    /// then "...").
    pub fn display(&self) -> String {
        display(&self.bytes[..self.content_len])
    }
}

/// What is wrong with the data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CopyErrorKind {
    /// line ends, end marker or quoting are malformed (22P04); the Postgres message
    BadFormat(&'static str),
    /// the row has fewer fields than the key's position needs (22P04)
    MissingKey,
    /// the key field is not valid UTF-8 or holds a NUL byte (22021): the offending
    /// bytes, as Postgres reports them
    Encoding(Vec<u8>),
}

/// A row Postgres' COPY would refuse, with where it is.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{kind:?} at line {line}")]
pub struct CopyError {
    /// what is wrong
    pub kind: CopyErrorKind,
    /// line number, as Postgres counts
    pub line: u64,
    /// the line's text for the CONTEXT (empty when Postgres shows none)
    pub text: String,
}

/// The newline style of the data, fixed by its first line end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Eol {
    Unknown,
    Nl,
    Cr,
    CrNl,
}

/// How a scan of the buffered bytes ended.
enum Scan {
    /// need more bytes (the scan resumes at `scan`)
    More,
    /// a row: content ends at `content`, the row (line end included) at `end`
    Row { content: usize, end: usize },
    /// the end-of-copy marker: the row before it (if any) ends at `content`, the
    /// marker at `end`
    EndMarker { content: usize, end: usize },
}

/// Splits a COPY FROM stream into rows and reads each row's key field.
#[derive(Debug)]
pub struct RowSplitter {
    opts: CopyOptions,
    key: Option<usize>,
    buf: BytesMut,
    /// bytes of `buf` already scanned for the current row
    scan: usize,
    in_quote: bool,
    last_was_esc: bool,
    /// newlines inside quotes in the current row (Postgres counts them as lines)
    embedded: u64,
    eol: Eol,
    line: u64,
    header_pending: bool,
    ended: bool,
}

impl RowSplitter {
    /// A splitter for data in `opts`' format whose key is field number `key` (0-based);
    /// `None` splits rows without reading any field.
    pub fn new(opts: CopyOptions, key: Option<usize>) -> RowSplitter {
        RowSplitter {
            header_pending: opts.header,
            opts,
            key,
            buf: BytesMut::new(),
            scan: 0,
            in_quote: false,
            last_was_esc: false,
            embedded: 0,
            eol: Eol::Unknown,
            line: 0,
            ended: false,
        }
    }

    /// Add the payload of one CopyData message. Data after the end-of-copy marker is
    /// ignored, as Postgres ignores it.
    pub fn push(&mut self, data: &[u8]) {
        if !self.ended {
            self.buf.extend_from_slice(data);
        }
    }

    /// The end-of-copy marker was seen: nothing more will be returned.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// Bytes buffered for the row being received.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }

    /// The next complete row, or `None` until more data arrives.
    pub fn next_row(&mut self) -> Result<Option<Row>, CopyError> {
        self.next(false)
    }

    /// At CopyDone: the last row, which may lack a line end. Call until it returns
    /// `None`.
    pub fn finish(&mut self) -> Result<Option<Row>, CopyError> {
        self.next(true)
    }

    fn next(&mut self, last: bool) -> Result<Option<Row>, CopyError> {
        if self.ended || self.buf.is_empty() {
            return Ok(None);
        }
        let (content, end, marker) = match self.scan(last)? {
            Scan::More if !last => return Ok(None),
            Scan::More => (self.buf.len(), self.buf.len(), false),
            Scan::Row { content, end } => (content, end, false),
            Scan::EndMarker { content, end } => (content, end, true),
        };
        let bytes = self.buf.split_to(end).freeze();
        let embedded = self.embedded;
        self.scan = 0;
        self.in_quote = false;
        self.last_was_esc = false;
        self.embedded = 0;
        if marker {
            self.ended = true;
            self.buf.clear();
            if content == 0 {
                return Ok(None);
            }
        }
        self.line += 1 + embedded;
        let header = std::mem::take(&mut self.header_pending);
        let key = match (header, self.key) {
            (false, Some(pos)) => Some(self.key_field(&bytes[..content], pos)?),
            _ => None,
        };
        Ok(Some(Row {
            bytes,
            content_len: content,
            line: self.line,
            header,
            key,
        }))
    }

    /// The line number of a row being reported before it is returned.
    fn current_line(&self) -> u64 {
        self.line + 1 + self.embedded
    }

    /// A malformed line end or end marker: Postgres shows no line text for these.
    fn format_error(&self, what: &'static str) -> CopyError {
        CopyError {
            kind: CopyErrorKind::BadFormat(what),
            line: self.current_line(),
            text: String::new(),
        }
    }

    /// Find the end of the current row, resuming at `self.scan`.
    fn scan(&mut self, last: bool) -> Result<Scan, CopyError> {
        let csv = self.opts.csv();
        let quote = self.opts.quote;
        // an escape equal to the quote is just the quote toggling twice
        let escape = (self.opts.escape != quote).then_some(self.opts.escape);
        let len = self.buf.len();
        let mut i = self.scan;
        loop {
            if i >= len {
                self.scan = i;
                return Ok(Scan::More);
            }
            let c = self.buf[i];
            let have_next = i + 1 < len;
            if csv {
                if (c == b'\\' || c == b'\r') && !have_next && !last {
                    self.scan = i;
                    return Ok(Scan::More);
                }
                if self.in_quote && Some(c) == escape {
                    self.last_was_esc = !self.last_was_esc;
                }
                if c == quote && !self.last_was_esc {
                    self.in_quote = !self.in_quote;
                }
                if Some(c) != escape {
                    self.last_was_esc = false;
                }
                let counted = if self.eol == Eol::Nl { b'\n' } else { b'\r' };
                if self.in_quote && c == counted {
                    self.embedded += 1;
                }
            }
            if c == b'\r' && !(csv && self.in_quote) {
                let end = match self.eol {
                    Eol::Unknown | Eol::CrNl => {
                        if !have_next && !last {
                            self.scan = i;
                            return Ok(Scan::More);
                        }
                        if have_next && self.buf[i + 1] == b'\n' {
                            self.eol = Eol::CrNl;
                            i + 2
                        } else if self.eol == Eol::CrNl {
                            return Err(self.format_error(cr_message(csv)));
                        } else {
                            self.eol = Eol::Cr;
                            i + 1
                        }
                    }
                    Eol::Nl => return Err(self.format_error(cr_message(csv))),
                    Eol::Cr => i + 1,
                };
                return Ok(Scan::Row { content: i, end });
            }
            if c == b'\n' && !(csv && self.in_quote) {
                if matches!(self.eol, Eol::Cr | Eol::CrNl) {
                    let what = if csv {
                        "unquoted newline found in data"
                    } else {
                        "literal newline found in data"
                    };
                    return Err(self.format_error(what));
                }
                self.eol = Eol::Nl;
                return Ok(Scan::Row {
                    content: i,
                    end: i + 1,
                });
            }
            if c == b'\\' && (!csv || i == 0) {
                if !have_next {
                    if !last {
                        self.scan = i;
                        return Ok(Scan::More);
                    }
                    i += 1;
                    continue;
                }
                if self.buf[i + 1] == b'.' {
                    match self.end_marker(i, last)? {
                        Some(Scan::More) => {
                            self.scan = i;
                            return Ok(Scan::More);
                        }
                        Some(found) => return Ok(found),
                        // (CSV) not a marker: the backslash is data
                        None => {
                            i += 1;
                            continue;
                        }
                    }
                }
                if !csv {
                    // the escaped byte is data, whatever it is
                    i += 2;
                    continue;
                }
            }
            i += 1;
        }
    }

    /// `\.` at `at`: the end-of-copy marker (`Some(EndMarker)`), more bytes needed
    /// (`Some(More)`), or (CSV) not a marker (`None`). Text format errors on a malformed
    /// marker, as Postgres 15 does.
    fn end_marker(&self, at: usize, last: bool) -> Result<Option<Scan>, CopyError> {
        let csv = self.opts.csv();
        let mut j = at + 2;
        let not_marker = |what: &'static str| {
            if csv {
                Ok(None)
            } else {
                Err(self.format_error(what))
            }
        };
        if self.eol == Eol::CrNl {
            let Some(&c) = self.buf.get(j) else {
                return Ok(if last {
                    Some(Scan::EndMarker {
                        content: at,
                        end: j,
                    })
                } else {
                    Some(Scan::More)
                });
            };
            j += 1;
            if c == b'\n' {
                return not_marker("end-of-copy marker does not match previous newline style");
            }
            if c != b'\r' {
                return not_marker("end-of-copy marker corrupt");
            }
        }
        let Some(&c) = self.buf.get(j) else {
            return Ok(if last {
                Some(Scan::EndMarker {
                    content: at,
                    end: j,
                })
            } else {
                Some(Scan::More)
            });
        };
        j += 1;
        if c != b'\r' && c != b'\n' {
            return not_marker("end-of-copy marker corrupt");
        }
        if (matches!(self.eol, Eol::Nl | Eol::CrNl) && c != b'\n')
            || (self.eol == Eol::Cr && c != b'\r')
        {
            return Err(
                self.format_error("end-of-copy marker does not match previous newline style")
            );
        }
        Ok(Some(Scan::EndMarker {
            content: at,
            end: j,
        }))
    }

    /// Field number `pos` of a row's content, decoded.
    fn key_field(&self, content: &[u8], pos: usize) -> Result<KeyField, CopyError> {
        let err = |kind| CopyError {
            kind,
            line: self.line,
            text: display(content),
        };
        let field = if self.opts.csv() {
            csv_field(content, pos, &self.opts)
        } else {
            text_field(content, pos, &self.opts)
        };
        let (raw, value, quoted) = match field {
            Ok(Some(f)) => f,
            Ok(None) => return Err(err(CopyErrorKind::MissingKey)),
            Err(what) => return Err(err(CopyErrorKind::BadFormat(what))),
        };
        let null_as_written = !quoted && raw == self.opts.null.as_slice();
        let is_null = if self.opts.csv() {
            !self.opts.key_force_not_null
                && (null_as_written || self.opts.key_force_null && value == self.opts.null)
        } else {
            null_as_written
        };
        if is_null {
            return Ok(KeyField::Null);
        }
        let value = if self.opts.csv() && self.opts.key_force_not_null && null_as_written {
            self.opts.null.clone()
        } else {
            value
        };
        match String::from_utf8(value) {
            Ok(s) if !s.contains('\0') => Ok(KeyField::Value(s)),
            Ok(s) => Err(err(CopyErrorKind::Encoding(invalid_sequence(s.as_bytes())))),
            Err(e) => Err(err(CopyErrorKind::Encoding(invalid_sequence(e.as_bytes())))),
        }
    }
}

/// The first byte sequence of `bytes` that is not valid UTF-8 (a NUL byte included),
/// as long as its first byte says (Postgres' `report_invalid_encoding`).
fn invalid_sequence(bytes: &[u8]) -> Vec<u8> {
    let valid = match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    };
    let at = bytes[..valid].iter().position(|&b| b == 0).unwrap_or(valid);
    let rest = &bytes[at.min(bytes.len())..];
    let len = match rest.first() {
        Some(b) if b & 0xe0 == 0xc0 => 2,
        Some(b) if b & 0xf0 == 0xe0 => 3,
        Some(b) if b & 0xf8 == 0xf0 => 4,
        _ => 1,
    };
    rest[..len.min(rest.len())].to_vec()
}

fn cr_message(csv: bool) -> &'static str {
    if csv {
        "unquoted carriage return found in data"
    } else {
        "literal carriage return found in data"
    }
}

/// A field: its bytes as written, its decoded value, and whether it was quoted.
type Field<'a> = (&'a [u8], Vec<u8>, bool);

/// Field `pos` of a text-format line (None: the line has fewer fields).
fn text_field<'a>(
    line: &'a [u8],
    pos: usize,
    opts: &CopyOptions,
) -> Result<Option<Field<'a>>, &'static str> {
    let mut start = 0;
    for _ in 0..pos {
        match text_field_end(line, start, opts.delimiter) {
            end if end < line.len() => start = end + 1,
            _ => return Ok(None),
        }
    }
    let end = text_field_end(line, start, opts.delimiter);
    let raw = &line[start..end];
    Ok(Some((raw, unescape_text(raw), false)))
}

/// Where the text-format field starting at `start` ends (its delimiter, or the line's
/// end). A backslash escapes the byte after it.
fn text_field_end(line: &[u8], start: usize, delimiter: u8) -> usize {
    let mut i = start;
    while i < line.len() {
        match line[i] {
            c if c == delimiter => return i,
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
    line.len()
}

/// Postgres' text-format escapes: `\b \f \n \r \t \v`, octal `\ooo`, hex `\xh[h]`, and
/// any other byte after a backslash standing for itself.
fn unescape_text(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let c = raw[i];
        i += 1;
        if c != b'\\' {
            out.push(c);
            continue;
        }
        let Some(&e) = raw.get(i) else {
            // a backslash at the end of the line is dropped
            break;
        };
        i += 1;
        let byte = match e {
            b'0'..=b'7' => {
                let mut v = u32::from(e - b'0');
                for _ in 0..2 {
                    match raw.get(i) {
                        Some(&d @ b'0'..=b'7') => {
                            v = (v << 3) + u32::from(d - b'0');
                            i += 1;
                        }
                        _ => break,
                    }
                }
                (v & 0xff) as u8
            }
            b'x' => match raw.get(i).and_then(|&h| hex(h)) {
                Some(first) => {
                    i += 1;
                    let mut v = first;
                    if let Some(second) = raw.get(i).and_then(|&h| hex(h)) {
                        i += 1;
                        v = (v << 4) + second;
                    }
                    v
                }
                None => b'x',
            },
            b'b' => 0x08,
            b'f' => 0x0c,
            b'n' => b'\n',
            b'r' => b'\r',
            b't' => b'\t',
            b'v' => 0x0b,
            other => other,
        };
        out.push(byte);
    }
    out
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Field `pos` of a CSV line (None: the line has fewer fields).
fn csv_field<'a>(
    line: &'a [u8],
    pos: usize,
    opts: &CopyOptions,
) -> Result<Option<Field<'a>>, &'static str> {
    let mut start = 0;
    let mut index = 0;
    loop {
        let (end, value, quoted) = csv_field_at(line, start, opts)?;
        if index == pos {
            return Ok(Some((&line[start..end], value, quoted)));
        }
        if end >= line.len() {
            return Ok(None);
        }
        start = end + 1;
        index += 1;
    }
}

/// The CSV field starting at `start`: where it ends (its delimiter or the line's end),
/// its value, and whether any part was quoted.
fn csv_field_at(
    line: &[u8],
    start: usize,
    opts: &CopyOptions,
) -> Result<(usize, Vec<u8>, bool), &'static str> {
    let mut value = Vec::new();
    let mut quoted = false;
    let mut i = start;
    loop {
        // outside quotes
        loop {
            let Some(&c) = line.get(i) else {
                return Ok((i, value, quoted));
            };
            if c == opts.delimiter {
                return Ok((i, value, quoted));
            }
            i += 1;
            if c == opts.quote {
                break;
            }
            value.push(c);
        }
        // inside quotes
        quoted = true;
        loop {
            let Some(&c) = line.get(i) else {
                return Err("unterminated CSV quoted field");
            };
            i += 1;
            if c == opts.escape
                && let Some(&next) = line.get(i)
                && (next == opts.escape || next == opts.quote)
            {
                value.push(next);
                i += 1;
                continue;
            }
            if c == opts.quote {
                break;
            }
            value.push(c);
        }
    }
}

/// At most 100 bytes of a line, lossily decoded, "..." when cut (Postgres'
/// `limit_printout_length`).
fn display(bytes: &[u8]) -> String {
    const MAX: usize = 100;
    if bytes.len() <= MAX {
        return String::from_utf8_lossy(bytes).into_owned();
    }
    let mut cut = MAX;
    while cut > 0 && (bytes[cut] & 0xc0) == 0x80 {
        cut -= 1;
    }
    format!("{}...", String::from_utf8_lossy(&bytes[..cut]))
}

#[cfg(test)]
#[path = "copy_tests.rs"]
mod tests;
