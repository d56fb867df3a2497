use super::*;

fn text() -> CopyOptions {
    CopyOptions::defaults(CopyFormat::Text)
}

fn csv() -> CopyOptions {
    CopyOptions::defaults(CopyFormat::Csv)
}

/// Feed `chunks` and finish: every row (or the first error).
fn split_chunks(
    opts: &CopyOptions,
    key: Option<usize>,
    chunks: &[&[u8]],
) -> Result<Vec<Row>, CopyError> {
    let mut s = RowSplitter::new(opts.clone(), key);
    let mut rows = Vec::new();
    for chunk in chunks {
        s.push(chunk);
        while let Some(row) = s.next_row()? {
            rows.push(row);
        }
    }
    while let Some(row) = s.finish()? {
        rows.push(row);
    }
    Ok(rows)
}

fn split(opts: &CopyOptions, key: Option<usize>, data: &[u8]) -> Result<Vec<Row>, CopyError> {
    split_chunks(opts, key, &[data])
}

/// Rows as (bytes, key, line), checking that every way of cutting the data in two, and
/// byte by byte, gives the same answer as one piece.
fn rows(
    opts: &CopyOptions,
    key: Option<usize>,
    data: &[u8],
) -> Vec<(String, Option<KeyField>, u64)> {
    let whole = split(opts, key, data);
    for cut in 0..=data.len() {
        let (a, b) = data.split_at(cut);
        assert_eq!(split_chunks(opts, key, &[a, b]), whole, "cut at {cut}");
    }
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(split_chunks(opts, key, &bytes), whole, "byte by byte");
    whole
        .unwrap()
        .into_iter()
        .map(|r| {
            (
                String::from_utf8_lossy(&r.bytes).into_owned(),
                r.key,
                r.line,
            )
        })
        .collect()
}

fn v(s: &str) -> Option<KeyField> {
    Some(KeyField::Value(s.to_owned()))
}

const NULL: Option<KeyField> = Some(KeyField::Null);

#[test]
fn text_rows_and_key_positions() {
    let data = b"1\ta\n2\tb\n3\tc\n";
    assert_eq!(
        rows(&text(), Some(0), data),
        vec![
            ("1\ta\n".into(), v("1"), 1),
            ("2\tb\n".into(), v("2"), 2),
            ("3\tc\n".into(), v("3"), 3)
        ]
    );
    let keys: Vec<_> = rows(&text(), Some(1), data)
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(keys, vec![v("a"), v("b"), v("c")]);
    // no key position: rows only
    assert_eq!(rows(&text(), None, data)[1], ("2\tb\n".into(), None, 2));
}

#[test]
fn last_row_without_line_end() {
    assert_eq!(
        rows(&text(), Some(0), b"1\ta\n2\tb"),
        vec![("1\ta\n".into(), v("1"), 1), ("2\tb".into(), v("2"), 2)]
    );
    assert_eq!(rows(&text(), Some(0), b""), vec![]);
}

#[test]
fn text_escapes_in_the_key() {
    let cases: &[(&[u8], Option<KeyField>)] = &[
        (b"\\N\tx\n", NULL),
        // an escaped backslash then N is the text \N, not NULL
        (b"\\\\N\tx\n", v("\\N")),
        (b"a\\tb\tx\n", v("a\tb")),
        (b"\\101\\x42\\x4g\tx\n", v("AB\u{4}g")),
        (b"\\xg\tx\n", v("xg")),
        (b"\\1012\tx\n", v("A2")),
        (b"a\\\tb\tx\n", v("a\tb")),
        (b"\\b\\f\\n\\r\\v\\q\tx\n", v("\u{8}\u{c}\n\r\u{b}q")),
        (b"caf\xc3\xa9\tx\n", v("café")),
        (b"\t\n", v("")),
    ];
    for (data, key) in cases {
        let got = rows(&text(), Some(0), data);
        assert_eq!(&got[0].1, key, "{}", String::from_utf8_lossy(data));
    }
}

#[test]
fn escaped_newline_is_data_in_text() {
    let got = rows(&text(), Some(1), b"1\ta\\\nb\n2\tc\n");
    assert_eq!(got.len(), 2);
    assert_eq!(got[0], ("1\ta\\\nb\n".into(), v("a\nb"), 1));
    assert_eq!(got[1].2, 2);
}

#[test]
fn key_encoding_errors() {
    let cases: &[(&[u8], &[u8])] = &[
        (b"\\0\tx\n", b"\0"),
        (b"a\\x00\tx\n", b"\0"),
        (b"\xff\tx\n", b"\xff"),
        (b"\\377\tx\n", b"\xff"),
        (b"12\\303\tx\n", b"\xc3"),
        (b"\xe2\x82(\tx\n", b"\xe2\x82("),
    ];
    for (data, bad) in cases {
        let err = split(&text(), Some(0), data).unwrap_err();
        assert_eq!(err.kind, CopyErrorKind::Encoding(bad.to_vec()), "{data:?}");
        assert_eq!(err.line, 1);
    }
}

#[test]
fn missing_key_field_names_the_line() {
    let err = split(&text(), Some(2), b"1\t2\t3\n4\t5\n").unwrap_err();
    assert_eq!(err.kind, CopyErrorKind::MissingKey);
    assert_eq!(err.line, 2);
    assert_eq!(err.text, "4\t5");
    let err = split(&csv(), Some(1), b"1,2\n\"a,b\"\n").unwrap_err();
    assert_eq!(err.kind, CopyErrorKind::MissingKey);
    assert_eq!(err.line, 2);
}

#[test]
fn csv_quotes_newlines_and_doubled_quotes() {
    let data = b"\"1\",\"a\nb\"\n\"x\"\"y\",2\n\"p,q\",\"\"\n";
    assert_eq!(
        rows(&csv(), Some(0), data),
        vec![
            // (before the first line end fixes the newline style, Postgres counts
            // only carriage returns inside quotes as lines)
            ("\"1\",\"a\nb\"\n".into(), v("1"), 1),
            ("\"x\"\"y\",2\n".into(), v("x\"y"), 2),
            ("\"p,q\",\"\"\n".into(), v("p,q"), 3),
        ]
    );
    // the key after a quoted field holding the delimiter and a newline
    let got = rows(&csv(), Some(1), b"\"a,\nb\",7\n");
    assert_eq!(got[0].1, v("7"));
}

#[test]
fn csv_null_only_unquoted() {
    let got = rows(&csv(), Some(0), b",x\n\"\",x\n");
    assert_eq!(got[0].1, NULL);
    assert_eq!(got[1].1, v(""));
    let mut o = csv();
    o.null = b"NULL".to_vec();
    let got = rows(&o, Some(0), b"NULL,x\n\"NULL\",x\n,x\n");
    assert_eq!(got[0].1, NULL);
    assert_eq!(got[1].1, v("NULL"));
    assert_eq!(got[2].1, v(""));
}

#[test]
fn csv_force_null_and_force_not_null() {
    let mut o = csv();
    o.key_force_null = true;
    let got = rows(&o, Some(0), b"\"\",x\n,x\n");
    assert_eq!(got[0].1, NULL);
    assert_eq!(got[1].1, NULL);
    let mut o = csv();
    o.key_force_not_null = true;
    let got = rows(&o, Some(0), b",x\n");
    assert_eq!(got[0].1, v(""));
}

#[test]
fn csv_custom_quote_escape_delimiter() {
    let mut o = csv();
    o.delimiter = b';';
    o.quote = b'\'';
    o.escape = b'\\';
    let data = b"'a\\'b;c';1\n'x\\\\';2\n";
    let got = rows(&o, Some(0), data);
    assert_eq!(got[0].1, v("a'b;c"));
    assert_eq!(got[1].1, v("x\\"));
    let got = rows(&o, Some(1), data);
    assert_eq!(got[0].1, v("1"));
    assert_eq!(got[1].1, v("2"));
}

#[test]
fn text_custom_delimiter_and_null() {
    let mut o = text();
    o.delimiter = b'|';
    o.null = b"NULL".to_vec();
    let got = rows(&o, Some(1), b"a\\|b|NULL|c\nx|\\N|y\n");
    assert_eq!(got[0].1, NULL);
    assert_eq!(got[1].1, v("N"));
    let got = rows(&o, Some(0), b"a\\|b|NULL|c\n");
    assert_eq!(got[0].1, v("a|b"));
}

#[test]
fn header_is_the_first_line_once() {
    let mut o = csv();
    o.header = true;
    let mut s = RowSplitter::new(o, Some(0));
    s.push(b"id,name\n1,a\nid,name\n");
    let first = s.next_row().unwrap().unwrap();
    assert!(first.header);
    assert_eq!(first.key, None);
    assert_eq!(first.line, 1);
    let second = s.next_row().unwrap().unwrap();
    assert!(!second.header);
    assert_eq!((second.key, second.line), (v("1"), 2));
    let third = s.next_row().unwrap().unwrap();
    assert!(!third.header);
    assert_eq!(third.key, v("id"));
}

#[test]
fn end_marker_ends_the_data() {
    let got = rows(&text(), Some(0), b"1\ta\n\\.\n2\tb\n");
    assert_eq!(got, vec![("1\ta\n".into(), v("1"), 1)]);
    let got = rows(&csv(), Some(0), b"1,a\n\\.\n2,b\n");
    assert_eq!(got, vec![("1,a\n".into(), v("1"), 1)]);
    // text: `\.` after data on a line ends the data after that row
    let got = rows(&text(), Some(0), b"1\ta\\.\n2\tb\n");
    assert_eq!(got, vec![("1\ta\\.\n".into(), v("1"), 1)]);
    // CRLF data
    let got = rows(&text(), Some(0), b"1\r\n\\.\r\n2\r\n");
    assert_eq!(got, vec![("1\r\n".into(), v("1"), 1)]);
    // `\.` at the very end
    let got = rows(&text(), Some(0), b"1\n\\.");
    assert_eq!(got, vec![("1\n".into(), v("1"), 1)]);
}

#[test]
fn end_marker_lookalikes() {
    // CSV: `\.` that is not alone on its line is data
    let got = rows(&csv(), Some(0), b"\\.x,1\na\\.,2\n");
    assert_eq!(got[0].1, v("\\.x"));
    assert_eq!(got[1].1, v("a\\."));
    // text: a corrupt marker is an error, as in Postgres
    let err = split(&text(), Some(0), b"1\n\\.x\n").unwrap_err();
    assert_eq!(
        err.kind,
        CopyErrorKind::BadFormat("end-of-copy marker corrupt")
    );
    assert_eq!(err.line, 2);
    let err = split(&text(), Some(0), b"1\r\n\\.\n").unwrap_err();
    assert_eq!(
        err.kind,
        CopyErrorKind::BadFormat("end-of-copy marker does not match previous newline style")
    );
}

#[test]
fn crlf_and_cr_line_ends() {
    assert_eq!(
        rows(&text(), Some(0), b"1\ta\r\n2\tb\r\n"),
        vec![
            ("1\ta\r\n".into(), v("1"), 1),
            ("2\tb\r\n".into(), v("2"), 2)
        ]
    );
    assert_eq!(
        rows(&csv(), Some(1), b"x,1\ry,2\r"),
        vec![("x,1\r".into(), v("1"), 1), ("y,2\r".into(), v("2"), 2)]
    );
    // a CSV quoted field keeps its CRLF
    assert_eq!(rows(&csv(), Some(1), b"\"a\r\nb\",1\r\n")[0].1, v("1"));
}

#[test]
fn mixed_line_ends_are_errors() {
    let cases: &[(&CopyOptions, &[u8], &str, u64)] = &[
        (
            &text(),
            b"1\n2\r\n",
            "literal carriage return found in data",
            2,
        ),
        (&text(), b"1\r\n2\n", "literal newline found in data", 2),
        (&text(), b"1\r2\n", "literal newline found in data", 2),
        (
            &text(),
            b"1\r\n2\r3\r\n",
            "literal carriage return found in data",
            2,
        ),
        (
            &csv(),
            b"1\n2\r\n",
            "unquoted carriage return found in data",
            2,
        ),
        (&csv(), b"1\r\n2\n", "unquoted newline found in data", 2),
    ];
    for (opts, data, what, line) in cases {
        let err = split(opts, Some(0), data).unwrap_err();
        assert_eq!(err.kind, CopyErrorKind::BadFormat(what), "{data:?}");
        assert_eq!(err.line, *line, "{data:?}");
    }
}

#[test]
fn unterminated_quote() {
    let err = split(&csv(), Some(1), b"\"abc,1").unwrap_err();
    assert_eq!(
        err.kind,
        CopyErrorKind::BadFormat("unterminated CSV quoted field")
    );
}

#[test]
fn line_numbers_count_embedded_newlines() {
    let got = rows(&csv(), Some(0), b"0,z\n1,\"a\nb\nc\"\n2,x\n");
    assert_eq!(got[1].2, 4);
    assert_eq!(got[2].2, 5);
}

#[test]
fn display_truncates_at_100_bytes() {
    let long = "é".repeat(80);
    let row = Row {
        bytes: Bytes::from(long.clone()),
        content_len: long.len(),
        line: 1,
        header: false,
        key: None,
    };
    let shown = row.display();
    assert!(shown.ends_with("..."));
    assert!(shown.len() <= 103);
    assert!(shown.starts_with("éé"));
}

/// The bytes of every row put together are the input up to the end marker: nothing is
/// lost or duplicated, whatever the data.
#[test]
fn garbage_never_panics_and_keeps_every_byte() {
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let alphabet = b"ab1\t,\"'\\.\r\nNx0|";
    for round in 0..3000 {
        let len = (next() % 40) as usize;
        let data: Vec<u8> = (0..len)
            .map(|_| {
                let r = next();
                if r % 7 == 0 {
                    (r >> 8) as u8
                } else {
                    alphabet[(r >> 8) as usize % alphabet.len()]
                }
            })
            .collect();
        let mut opts = if round % 2 == 0 { text() } else { csv() };
        if round % 5 == 0 {
            opts.escape = b'\\';
        }
        if round % 3 == 0 {
            opts.header = true;
        }
        let key = Some((next() % 3) as usize);
        let cut = if len == 0 { 0 } else { (next() as usize) % len };
        let (a, b) = data.split_at(cut);
        let whole = split(&opts, key, &data);
        assert_eq!(split_chunks(&opts, key, &[a, b]), whole, "{data:?}");
        if let Ok(rows) = whole {
            let joined: Vec<u8> = rows.iter().flat_map(|r| r.bytes.to_vec()).collect();
            assert!(data.starts_with(&joined), "{data:?}");
            let lines: Vec<u64> = rows.iter().map(|r| r.line).collect();
            assert!(lines.windows(2).all(|w| w[0] < w[1]), "{data:?}");
        }
    }
}
