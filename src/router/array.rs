//! The elements of the array in `key = ANY(array)`: from its text form (`{1,2,NULL}`, a
//! literal or a text-format parameter) or from a binary-format array parameter.
//!
//! Only the plain one-dimensional forms are read. Anything else (dimension decorations,
//! nested arrays, backslash escapes, malformed input) gives `None`, and the router then
//! does not route by the array: the statement runs wherever rows may be, and a malformed
//! array fails there exactly as Postgres reports it.

/// The element texts of a one-dimensional array in text form; `None` for a NULL element.
pub(super) fn parse_text(text: &str) -> Option<Vec<Option<String>>> {
    let body = text
        .trim_matches(is_array_space)
        .strip_prefix('{')?
        .strip_suffix('}')?;
    if body.contains('\\') {
        return None;
    }
    let mut out = Vec::new();
    if body.trim_matches(is_array_space).is_empty() {
        return Some(out);
    }
    let mut rest = body;
    loop {
        let trimmed = rest.trim_start_matches(is_array_space);
        let (element, after) = if let Some(quoted) = trimmed.strip_prefix('"') {
            let end = quoted.find('"')?;
            (
                Some(quoted[..end].to_owned()),
                quoted[end + 1..].trim_start_matches(is_array_space),
            )
        } else {
            let end = trimmed.find(',').unwrap_or(trimmed.len());
            let raw = trimmed[..end].trim_end_matches(is_array_space);
            if raw.is_empty() || raw.contains(['"', '{', '}']) {
                return None;
            }
            let element = (!raw.eq_ignore_ascii_case("null")).then(|| raw.to_owned());
            (element, &trimmed[end..])
        };
        out.push(element);
        match after.strip_prefix(',') {
            Some(next) => rest = next,
            None if after.is_empty() => return Some(out),
            None => return None,
        }
    }
}

/// Whitespace as Postgres' array reader skips it (`scanner_isspace`).
fn is_array_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0b' | '\x0c')
}

/// A one-dimensional (or empty) array in binary format: its element type OID and
/// elements (`None` for NULL). The whole input must be consumed.
pub(super) fn parse_binary(bytes: &[u8]) -> Option<(u32, Vec<Option<&[u8]>>)> {
    let mut r = Reader(bytes);
    let ndim = r.i32()?;
    let _has_nulls = r.i32()?;
    let elem_oid = r.i32()? as u32;
    let count = match ndim {
        0 => 0,
        1 => {
            let n = usize::try_from(r.i32()?).ok()?;
            let _lower_bound = r.i32()?;
            n
        }
        _ => return None,
    };
    let mut out = Vec::with_capacity(count.min(1024));
    for _ in 0..count {
        let len = r.i32()?;
        if len < 0 {
            out.push(None);
        } else {
            out.push(Some(r.take(len as usize)?));
        }
    }
    r.0.is_empty().then_some((elem_oid, out))
}

/// A cursor over big-endian protocol bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Some(head)
    }

    fn i32(&mut self) -> Option<i32> {
        self.take(4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_be_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[Option<&str>]) -> Option<Vec<Option<String>>> {
        Some(v.iter().map(|e| e.map(str::to_owned)).collect())
    }

    #[test]
    fn text_forms() {
        assert_eq!(parse_text("{1,2,NULL}"), s(&[Some("1"), Some("2"), None]));
        assert_eq!(parse_text(" { 1 , 2 } "), s(&[Some("1"), Some("2")]));
        assert_eq!(parse_text("{}"), s(&[]));
        assert_eq!(parse_text("{ }"), s(&[]));
        assert_eq!(
            parse_text(r#"{"a b","NULL",null, x }"#),
            s(&[Some("a b"), Some("NULL"), None, Some("x")])
        );
        assert_eq!(parse_text(r#"{"",a}"#), s(&[Some(""), Some("a")]));
        for bad in [
            "1,2",
            "{1,,2}",
            "{1,2",
            "{{1,2},{3,4}}",
            "[1:2]={1,2}",
            r#"{"a\"b"}"#,
            r#"{a\,b}"#,
            r#"{"a"b}"#,
            "{,}",
            "{1,}",
        ] {
            assert_eq!(parse_text(bad), None, "{bad}");
        }
    }

    fn binary(oid: u32, elems: &[Option<&[u8]>]) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend_from_slice(&1i32.to_be_bytes());
        b.extend_from_slice(&(elems.iter().any(Option::is_none) as i32).to_be_bytes());
        b.extend_from_slice(&oid.to_be_bytes());
        b.extend_from_slice(&(elems.len() as i32).to_be_bytes());
        b.extend_from_slice(&1i32.to_be_bytes());
        for e in elems {
            match e {
                None => b.extend_from_slice(&(-1i32).to_be_bytes()),
                Some(v) => {
                    b.extend_from_slice(&(v.len() as i32).to_be_bytes());
                    b.extend_from_slice(v);
                }
            }
        }
        b
    }

    #[test]
    fn binary_forms() {
        let one = 1i64.to_be_bytes();
        let two = 2i64.to_be_bytes();
        let b = binary(20, &[Some(&one), None, Some(&two)]);
        assert_eq!(
            parse_binary(&b),
            Some((20, vec![Some(&one[..]), None, Some(&two[..])]))
        );
        // empty array: ndim 0
        let mut empty = Vec::new();
        empty.extend_from_slice(&0i32.to_be_bytes());
        empty.extend_from_slice(&0i32.to_be_bytes());
        empty.extend_from_slice(&20u32.to_be_bytes());
        assert_eq!(parse_binary(&empty), Some((20, vec![])));
        // truncated, trailing bytes, two dimensions
        assert_eq!(parse_binary(&b[..b.len() - 1]), None);
        let mut long = b.clone();
        long.push(0);
        assert_eq!(parse_binary(&long), None);
        let mut two_dim = b.clone();
        two_dim[3] = 2;
        assert_eq!(parse_binary(&two_dim), None);
        assert_eq!(parse_binary(&[0, 0]), None);
    }
}
