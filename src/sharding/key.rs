//! Shard key types and values: parsing from SQL literals and from protocol parameters.

use std::str::FromStr;

use super::hash;

/// The Postgres type of a sharded table's key column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyType {
    /// `smallint` / `int2`
    SmallInt,
    /// `integer` / `int4`
    Integer,
    /// `bigint` / `int8`
    BigInt,
    /// `text` / `varchar`
    Text,
    /// `uuid`
    Uuid,
}

/// A key value, normalised so that equal Postgres values compare equal here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyValue {
    /// Any integer key (int2/int4/int8 hash identically for the same value).
    Int(i64),
    /// A text key (hashed as its UTF-8 bytes).
    Text(String),
    /// A uuid key.
    Uuid([u8; 16]),
}

/// Why a key value could not be interpreted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// The text is not a valid value of the key type.
    #[error("invalid input syntax for type {ty}: \"{value}\"")]
    InvalidText {
        /// the key type's SQL name
        ty: &'static str,
        /// the offending text (truncated)
        value: String,
    },
    /// The value is out of range for the key type.
    #[error("value \"{value}\" is out of range for type {ty}")]
    OutOfRange {
        /// the key type's SQL name
        ty: &'static str,
        /// the offending text (truncated)
        value: String,
    },
    /// A binary parameter has a length that does not fit the key type.
    #[error("binary value of {len} bytes is not a valid {ty}")]
    InvalidBinary {
        /// the key type's SQL name
        ty: &'static str,
        /// the length received
        len: usize,
    },
}

impl KeyType {
    /// The SQL name, as used in the shard map and in error messages.
    pub fn sql_name(self) -> &'static str {
        match self {
            KeyType::SmallInt => "smallint",
            KeyType::Integer => "integer",
            KeyType::BigInt => "bigint",
            KeyType::Text => "text",
            KeyType::Uuid => "uuid",
        }
    }

    /// Parse the text form of a value exactly as the type's Postgres input function would
    /// accept it (e.g. `' 42 '` for integers, upper-case or brace-wrapped uuids).
    ///
    /// Postgres text can never contain a NUL byte, so any input with one is rejected as
    /// invalid rather than hashed into a slot no real row could have.
    pub fn parse_text(self, text: &str) -> Result<KeyValue, KeyError> {
        if text.contains('\0') {
            return Err(self.invalid_text(text));
        }
        match self {
            KeyType::SmallInt | KeyType::Integer | KeyType::BigInt => {
                let (min, max) = self.int_range();
                match parse_pg_int(text.as_bytes(), min) {
                    Ok(v) if v <= max => Ok(KeyValue::Int(v)),
                    Ok(_) | Err(IntSyntax::OutOfRange) => Err(self.out_of_range(text)),
                    Err(IntSyntax::Invalid) => Err(self.invalid_text(text)),
                }
            }
            KeyType::Text => Ok(KeyValue::Text(text.to_owned())),
            KeyType::Uuid => parse_pg_uuid(text.as_bytes())
                .map(KeyValue::Uuid)
                .ok_or_else(|| self.invalid_text(text)),
        }
    }

    /// Interpret a binary-format protocol parameter (big-endian integers of 2, 4 or 8
    /// bytes for integer keys, raw UTF-8 for text, 16 bytes for uuid).
    ///
    /// Integer keys accept any of the three widths because a client may bind an `int8`
    /// parameter against an `int4` column (Postgres casts it); the value must still fit the
    /// key type.
    pub fn parse_binary(self, bytes: &[u8]) -> Result<KeyValue, KeyError> {
        let ty = self.sql_name();
        match self {
            KeyType::SmallInt | KeyType::Integer | KeyType::BigInt => {
                let v = match *bytes {
                    [a, b] => i64::from(i16::from_be_bytes([a, b])),
                    [a, b, c, d] => i64::from(i32::from_be_bytes([a, b, c, d])),
                    [a, b, c, d, e, f, g, h] => i64::from_be_bytes([a, b, c, d, e, f, g, h]),
                    _ => {
                        return Err(KeyError::InvalidBinary {
                            ty,
                            len: bytes.len(),
                        });
                    }
                };
                let (min, max) = self.int_range();
                if (min..=max).contains(&v) {
                    Ok(KeyValue::Int(v))
                } else {
                    Err(self.out_of_range(&v.to_string()))
                }
            }
            KeyType::Text => match std::str::from_utf8(bytes) {
                Ok(text) if !text.contains('\0') => Ok(KeyValue::Text(text.to_owned())),
                _ => Err(self.invalid_text(&String::from_utf8_lossy(bytes))),
            },
            KeyType::Uuid => <[u8; 16]>::try_from(bytes)
                .map(KeyValue::Uuid)
                .map_err(|_| KeyError::InvalidBinary {
                    ty,
                    len: bytes.len(),
                }),
        }
    }

    /// Inclusive value range of an integer key type.
    fn int_range(self) -> (i64, i64) {
        match self {
            KeyType::SmallInt => (i16::MIN.into(), i16::MAX.into()),
            KeyType::Integer => (i32::MIN.into(), i32::MAX.into()),
            _ => (i64::MIN, i64::MAX),
        }
    }

    fn invalid_text(self, value: &str) -> KeyError {
        KeyError::InvalidText {
            ty: self.sql_name(),
            value: shown(value),
        }
    }

    fn out_of_range(self, value: &str) -> KeyError {
        KeyError::OutOfRange {
            ty: self.sql_name(),
            value: shown(value),
        }
    }
}

/// Longest piece of a rejected value echoed back in an error, in characters.
const MAX_SHOWN_CHARS: usize = 64;

/// The offending value as shown in errors: cut short so a huge parameter cannot bloat
/// an error message.
fn shown(value: &str) -> String {
    match value.char_indices().nth(MAX_SHOWN_CHARS) {
        Some((cut, _)) => format!("{}...", &value[..cut]),
        None => value.to_owned(),
    }
}

/// Why integer text was rejected, before the key type's upper bound is applied.
enum IntSyntax {
    Invalid,
    OutOfRange,
}

/// The C-locale `isspace` that Postgres' integer input skips around the digits.
fn is_pg_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

/// Postgres 15 `pg_strtoint16/32/64`: optional whitespace, one optional sign, decimal
/// digits, optional whitespace. Like Postgres it accumulates the value negatively (so the
/// type minimum is reachable) and reports overflow at the first digit that leaves the
/// range `min..` — even if garbage follows, as Postgres does. The caller checks the upper
/// bound.
fn parse_pg_int(s: &[u8], min: i64) -> Result<i64, IntSyntax> {
    let mut i = 0;
    while i < s.len() && is_pg_space(s[i]) {
        i += 1;
    }
    let neg = match s.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    if !s.get(i).is_some_and(u8::is_ascii_digit) {
        return Err(IntSyntax::Invalid);
    }
    let mut acc: i64 = 0;
    while let Some(&d) = s.get(i).filter(|d| d.is_ascii_digit()) {
        acc = acc
            .checked_mul(10)
            .and_then(|v| v.checked_sub(i64::from(d - b'0')))
            .filter(|&v| v >= min)
            .ok_or(IntSyntax::OutOfRange)?;
        i += 1;
    }
    while i < s.len() && is_pg_space(s[i]) {
        i += 1;
    }
    if i != s.len() {
        return Err(IntSyntax::Invalid);
    }
    if neg {
        Ok(acc)
    } else {
        acc.checked_neg().ok_or(IntSyntax::OutOfRange)
    }
}

/// Postgres 15 `string_to_uuid`: an optional `{` (which then requires a closing `}`),
/// 32 hex digits in either case, with at most one `-` allowed after each group of four
/// digits except the last; nothing else, not even whitespace.
fn parse_pg_uuid(s: &[u8]) -> Option<[u8; 16]> {
    let (braces, mut rest) = match s.split_first() {
        Some((b'{', rest)) => (true, rest),
        _ => (false, s),
    };
    let mut out = [0u8; 16];
    for (i, byte) in out.iter_mut().enumerate() {
        let [hi, lo, tail @ ..] = rest else {
            return None;
        };
        *byte = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
        rest = tail;
        if i % 2 == 1
            && i < 15
            && let Some((b'-', tail)) = rest.split_first()
        {
            rest = tail;
        }
    }
    if braces {
        rest = rest.strip_prefix(b"}")?;
    }
    rest.is_empty().then_some(out)
}

fn hex_digit(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

impl FromStr for KeyType {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "smallint" | "int2" => Ok(KeyType::SmallInt),
            "integer" | "int" | "int4" => Ok(KeyType::Integer),
            "bigint" | "int8" => Ok(KeyType::BigInt),
            "text" | "varchar" => Ok(KeyType::Text),
            "uuid" => Ok(KeyType::Uuid),
            other => Err(format!(
                "unsupported key type \"{other}\" (expected smallint, integer, bigint, text or uuid)"
            )),
        }
    }
}

impl KeyValue {
    /// The row hash Postgres' hash partitioning computes for this single-column key:
    /// `hash_combine64(0, <type>hashextended(value, HASH_PARTITION_SEED))`.
    pub fn partition_hash(&self) -> u64 {
        let h = match self {
            KeyValue::Int(v) => hash::hashint8extended(*v, hash::HASH_PARTITION_SEED),
            KeyValue::Text(s) => hash::hashtextextended(s, hash::HASH_PARTITION_SEED),
            KeyValue::Uuid(u) => hash::uuid_hash_extended(u, hash::HASH_PARTITION_SEED),
        };
        hash::hash_combine64(0, h)
    }
}

#[cfg(test)]
#[path = "key_tests.rs"]
mod tests;
