//! Result fields decoded the way Postgres' btree operators see them.
//!
//! Merging rows from several shards (ORDER BY, min/max, GROUP BY, DISTINCT) needs to
//! compare field values exactly as a single Postgres would order them, in whichever
//! format (text or binary) the client asked for. [`decode`] turns one field of a known
//! [`Kind`] into a [`Value`], [`compare`] orders two values like the type's default
//! btree operator class. Text forms are read strictly as Postgres prints them with its
//! default settings (`DateStyle` ISO); anything else is an error, never a guess, so the
//! caller can refuse the statement instead of merging in a wrong order.

use std::cmp::Ordering;
use std::fmt::Write as _;

use super::numeric::Numeric;

/// Days from 4713-11-24 BC (Julian day 0) to 2000-01-01, Postgres' epoch.
const POSTGRES_EPOCH_JDATE: i64 = 2_451_545;
/// First valid date (`DATETIME_MIN_JULIAN`), as days since 2000-01-01.
const MIN_DATE: i64 = -POSTGRES_EPOCH_JDATE;
/// First date past the valid range (`DATE_END_JULIAN`), as days since 2000-01-01.
const END_DATE: i64 = 2_147_483_494 - POSTGRES_EPOCH_JDATE;
/// First valid timestamp (`MIN_TIMESTAMP`), µs since 2000-01-01.
const MIN_TIMESTAMP: i64 = -211_813_488_000_000_000;
/// First timestamp past the valid range (`END_TIMESTAMP`), µs since 2000-01-01.
const END_TIMESTAMP: i64 = 9_223_371_331_200_000_000;
const USECS_PER_SEC: i64 = 1_000_000;
const USECS_PER_DAY: i64 = 86_400 * USECS_PER_SEC;

/// The column types whose order the merge understands, named after Postgres' types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// `int2` (smallint)
    Int2,
    /// `int4` (integer)
    Int4,
    /// `int8` (bigint)
    Int8,
    /// `oid`, an unsigned 32-bit integer
    Oid,
    /// `float4` (real)
    Float4,
    /// `float8` (double precision)
    Float8,
    /// `numeric`
    Numeric,
    /// `bool`
    Bool,
    /// `date`
    Date,
    /// `time` (without time zone)
    Time,
    /// `timestamp` (without time zone)
    Timestamp,
    /// `timestamptz`
    Timestamptz,
    /// `uuid`
    Uuid,
    /// `text`, `varchar` and `name`: compared byte-wise (the "C" collation)
    Text,
    /// `bpchar` (`char(n)`): compared ignoring trailing spaces
    Bpchar,
}

impl Kind {
    /// The kind for a RowDescription type OID, or `None` for a type whose order the
    /// merge does not know (the caller then refuses to merge on it).
    pub fn from_oid(oid: u32) -> Option<Kind> {
        Some(match oid {
            21 => Kind::Int2,
            23 => Kind::Int4,
            20 => Kind::Int8,
            26 => Kind::Oid,
            700 => Kind::Float4,
            701 => Kind::Float8,
            1700 => Kind::Numeric,
            16 => Kind::Bool,
            1082 => Kind::Date,
            1083 => Kind::Time,
            1114 => Kind::Timestamp,
            1184 => Kind::Timestamptz,
            2950 => Kind::Uuid,
            25 | 1043 | 19 => Kind::Text,
            1042 => Kind::Bpchar,
            _ => return None,
        })
    }

    /// Whether the order depends on a collation: [`compare`] implements only the "C"
    /// collation, so the caller must check the column's collation for these kinds.
    pub fn is_collatable(self) -> bool {
        matches!(self, Kind::Text | Kind::Bpchar)
    }

    /// The Postgres type name, for error messages.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Int2 => "smallint",
            Kind::Int4 => "integer",
            Kind::Int8 => "bigint",
            Kind::Oid => "oid",
            Kind::Float4 => "real",
            Kind::Float8 => "double precision",
            Kind::Numeric => "numeric",
            Kind::Bool => "boolean",
            Kind::Date => "date",
            Kind::Time => "time",
            Kind::Timestamp => "timestamp",
            Kind::Timestamptz => "timestamptz",
            Kind::Uuid => "uuid",
            Kind::Text => "text",
            Kind::Bpchar => "character",
        }
    }
}

/// One decoded field, in a form whose natural order (via [`compare`]) is Postgres'.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    /// int2, int4, int8 and oid
    Int(i64),
    /// float4 (widened exactly) and float8
    Float(f64),
    /// numeric, exact
    Numeric(Numeric),
    /// bool
    Bool(bool),
    /// days since 2000-01-01; `i32::MAX`/`i32::MIN` are ±infinity
    Date(i32),
    /// microseconds since midnight
    Time(i64),
    /// µs since 2000-01-01 00:00 (UTC for timestamptz); `i64::MAX`/`i64::MIN` are
    /// ±infinity
    Timestamp(i64),
    /// the 16 bytes of a uuid
    Uuid([u8; 16]),
    /// text, varchar, name and bpchar bytes, as sent
    Text(&'a [u8]),
}

/// A field that cannot be read as its column's type; says what and why, so the caller
/// can refuse the statement with a clear reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    /// a text-format field that is not what Postgres prints for the type
    #[error("cannot read {type_name} value \"{shown}\": {reason}")]
    Text {
        /// the Postgres type name
        type_name: &'static str,
        /// the field, shortened and made printable
        shown: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// a binary-format field that is not what Postgres sends for the type
    #[error("cannot read binary {type_name} value {shown}: {reason}")]
    Binary {
        /// the Postgres type name
        type_name: &'static str,
        /// the field's leading bytes in hex
        shown: String,
        /// what is wrong with it
        reason: &'static str,
    },
    /// numeric division by zero (Postgres fails the same way)
    #[error("division by zero")]
    DivisionByZero,
    /// a numeric result beyond Postgres' numeric range
    #[error("value overflows numeric format")]
    NumericOverflow,
}

/// Longest prefix of a bad field quoted in an error.
const SHOWN_MAX: usize = 40;

impl ValueError {
    /// A bad text field; the field is quoted (shortened) in the message.
    pub fn text(type_name: &'static str, field: &[u8], reason: &'static str) -> ValueError {
        let end = field.len().min(SHOWN_MAX);
        let mut shown: String = String::from_utf8_lossy(&field[..end])
            .chars()
            .map(|c| if c.is_control() { '?' } else { c })
            .collect();
        if field.len() > SHOWN_MAX {
            shown.push('…');
        }
        ValueError::Text {
            type_name,
            shown,
            reason,
        }
    }

    /// A bad binary field; its leading bytes are shown in hex.
    pub fn binary(type_name: &'static str, field: &[u8], reason: &'static str) -> ValueError {
        let mut shown = String::from("\\x");
        for b in field.iter().take(SHOWN_MAX / 2) {
            let _ = write!(shown, "{b:02x}");
        }
        if field.len() > SHOWN_MAX / 2 {
            shown.push('…');
        }
        ValueError::Binary {
            type_name,
            shown,
            reason,
        }
    }
}

/// Decodes one non-NULL field of `kind`, sent in the binary format if `binary`, else in
/// the text format.
pub fn decode(kind: Kind, binary: bool, field: &[u8]) -> Result<Value<'_>, ValueError> {
    if binary {
        decode_binary(kind, field)
    } else {
        decode_text(kind, field)
    }
}

/// Postgres' default btree order for two values of the same `kind` (NULL ordering is
/// the caller's business). Values of different variants — a caller bug — get a fixed
/// order instead of a panic.
pub fn compare(kind: Kind, a: &Value, b: &Value) -> Ordering {
    match (a, b) {
        (Value::Int(x), Value::Int(y)) => x.cmp(y),
        (Value::Float(x), Value::Float(y)) => float_cmp(*x, *y),
        (Value::Numeric(x), Value::Numeric(y)) => x.cmp_pg(y),
        (Value::Bool(x), Value::Bool(y)) => x.cmp(y),
        (Value::Date(x), Value::Date(y)) => x.cmp(y),
        (Value::Time(x), Value::Time(y)) => x.cmp(y),
        (Value::Timestamp(x), Value::Timestamp(y)) => x.cmp(y),
        (Value::Uuid(x), Value::Uuid(y)) => x.cmp(y),
        (Value::Text(x), Value::Text(y)) if kind == Kind::Bpchar => {
            trim_spaces(x).cmp(trim_spaces(y))
        }
        (Value::Text(x), Value::Text(y)) => x.cmp(y),
        _ => variant_rank(a).cmp(&variant_rank(b)),
    }
}

fn variant_rank(v: &Value) -> u8 {
    match v {
        Value::Int(_) => 0,
        Value::Float(_) => 1,
        Value::Numeric(_) => 2,
        Value::Bool(_) => 3,
        Value::Date(_) => 4,
        Value::Time(_) => 5,
        Value::Timestamp(_) => 6,
        Value::Uuid(_) => 7,
        Value::Text(_) => 8,
    }
}

/// `float8_cmp_internal`: NaN equals NaN and is above everything else; `-0 = 0`.
fn float_cmp(a: f64, b: f64) -> Ordering {
    match (a.is_nan(), b.is_nan()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Greater,
        (false, true) => Ordering::Less,
        (false, false) => a.partial_cmp(&b).unwrap_or(Ordering::Equal),
    }
}

/// `bcTruelen`: bpchar ignores trailing spaces (only spaces) when comparing.
fn trim_spaces(s: &[u8]) -> &[u8] {
    let len = s.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
    &s[..len]
}

fn decode_binary(kind: Kind, f: &[u8]) -> Result<Value<'_>, ValueError> {
    let bad = |why| ValueError::binary(kind.name(), f, why);
    let wrong_len = || bad("wrong length");
    Ok(match kind {
        Kind::Int2 => Value::Int(i16::from_be_bytes(f.try_into().map_err(|_| wrong_len())?).into()),
        Kind::Int4 => Value::Int(i32::from_be_bytes(f.try_into().map_err(|_| wrong_len())?).into()),
        Kind::Int8 => Value::Int(i64::from_be_bytes(f.try_into().map_err(|_| wrong_len())?)),
        Kind::Oid => Value::Int(u32::from_be_bytes(f.try_into().map_err(|_| wrong_len())?).into()),
        Kind::Float4 => {
            Value::Float(f32::from_be_bytes(f.try_into().map_err(|_| wrong_len())?).into())
        }
        Kind::Float8 => Value::Float(f64::from_be_bytes(f.try_into().map_err(|_| wrong_len())?)),
        Kind::Numeric => Value::Numeric(Numeric::parse_binary(f)?),
        Kind::Bool => match f {
            [b] => Value::Bool(*b != 0),
            _ => return Err(wrong_len()),
        },
        Kind::Date => Value::Date(i32::from_be_bytes(f.try_into().map_err(|_| wrong_len())?)),
        Kind::Time => Value::Time(i64::from_be_bytes(f.try_into().map_err(|_| wrong_len())?)),
        Kind::Timestamp | Kind::Timestamptz => {
            Value::Timestamp(i64::from_be_bytes(f.try_into().map_err(|_| wrong_len())?))
        }
        Kind::Uuid => Value::Uuid(f.try_into().map_err(|_| wrong_len())?),
        Kind::Text | Kind::Bpchar => Value::Text(f),
    })
}

fn decode_text(kind: Kind, f: &[u8]) -> Result<Value<'_>, ValueError> {
    let bad = |why| ValueError::text(kind.name(), f, why);
    Ok(match kind {
        Kind::Int2 => Value::Int(
            parse_int(f, i16::MIN.into(), i16::MAX.into()).ok_or_else(|| bad("not a smallint"))?,
        ),
        Kind::Int4 => Value::Int(
            parse_int(f, i32::MIN.into(), i32::MAX.into()).ok_or_else(|| bad("not an integer"))?,
        ),
        Kind::Int8 => {
            Value::Int(parse_int(f, i64::MIN, i64::MAX).ok_or_else(|| bad("not a bigint"))?)
        }
        Kind::Oid => Value::Int(parse_int(f, 0, u32::MAX.into()).ok_or_else(|| bad("not an oid"))?),
        Kind::Float4 => Value::Float(parse_float4(f).ok_or_else(|| bad("not a real"))?),
        Kind::Float8 => Value::Float(parse_float8(f).ok_or_else(|| bad("not a double precision"))?),
        Kind::Numeric => Value::Numeric(Numeric::parse_text(f)?),
        Kind::Bool => match f {
            b"t" => Value::Bool(true),
            b"f" => Value::Bool(false),
            _ => return Err(bad("not t or f")),
        },
        Kind::Date => Value::Date(parse_date(f).map_err(bad)?),
        Kind::Time => Value::Time(parse_time_of_day(f).map_err(bad)?),
        Kind::Timestamp => Value::Timestamp(parse_timestamp(f, false).map_err(bad)?),
        Kind::Timestamptz => Value::Timestamp(parse_timestamp(f, true).map_err(bad)?),
        Kind::Uuid => Value::Uuid(parse_uuid(f).ok_or_else(|| bad("not a canonical uuid"))?),
        Kind::Text | Kind::Bpchar => Value::Text(f),
    })
}

/// A decimal integer with optional `-`, within `min..=max`.
fn parse_int(f: &[u8], min: i64, max: i64) -> Option<i64> {
    let (neg, digits) = match f.first() {
        Some(b'-') => (true, &f[1..]),
        _ => (false, f),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let mag = digits
        .iter()
        .fold(0i128, |acc, &c| acc * 10 + i128::from(c - b'0'));
    let v = if neg { -mag } else { mag };
    i64::try_from(v).ok().filter(|v| (min..=max).contains(v))
}

/// Whether `f` looks like a finite float as `float8out` prints it (digits, sign, point,
/// exponent) — keeps Rust's parser from accepting spellings Postgres never prints.
fn float_chars_ok(f: &[u8]) -> bool {
    !f.is_empty()
        && f.iter().any(u8::is_ascii_digit)
        && f.iter()
            .all(|c| c.is_ascii_digit() || matches!(c, b'-' | b'+' | b'.' | b'e' | b'E'))
}

/// Parses a special spelling (`NaN`, `Infinity`, `-Infinity`) of a float.
fn float_special(f: &[u8]) -> Option<f64> {
    match f {
        b"NaN" => Some(f64::NAN),
        b"Infinity" => Some(f64::INFINITY),
        b"-Infinity" => Some(f64::NEG_INFINITY),
        _ => None,
    }
}

fn parse_float8(f: &[u8]) -> Option<f64> {
    if let Some(v) = float_special(f) {
        return Some(v);
    }
    if !float_chars_ok(f) {
        return None;
    }
    let v: f64 = std::str::from_utf8(f).ok()?.parse().ok()?;
    v.is_finite().then_some(v)
}

/// float4 text is rounded to `f32` directly (as `strtof` does), not via `f64`, which
/// could round twice.
fn parse_float4(f: &[u8]) -> Option<f64> {
    if let Some(v) = float_special(f) {
        return Some(v);
    }
    if !float_chars_ok(f) {
        return None;
    }
    let v: f32 = std::str::from_utf8(f).ok()?.parse().ok()?;
    v.is_finite().then_some(f64::from(v))
}

/// Reads exactly `n` ASCII digits at the front of `s`.
fn take_digits(s: &[u8], n: usize) -> Option<(i64, &[u8])> {
    let head = s.get(..n)?;
    if !head.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = head
        .iter()
        .fold(0i64, |acc, &c| acc * 10 + i64::from(c - b'0'));
    Some((v, &s[n..]))
}

/// Expects `c` at the front of `s`.
fn take_byte(s: &[u8], c: u8) -> Option<&[u8]> {
    match s.split_first() {
        Some((&x, rest)) if x == c => Some(rest),
        _ => None,
    }
}

fn is_leap(year: i64) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// `date2j`: Julian day number of a proleptic Gregorian date (astronomical year).
fn date2j(year: i64, month: i64, day: i64) -> i64 {
    let (y, m) = if month > 2 {
        (year + 4800, month + 1)
    } else {
        (year + 4799, month + 13)
    };
    let century = y.div_euclid(100);
    y * 365 - 32167 + y.div_euclid(4) - century + century.div_euclid(4) + 7834 * m / 256 + day
}

/// Reads `YYYY-MM-DD` (four or more year digits, as ISO output gives) at the front of
/// `s`: year as written (not yet adjusted for BC), month, day, rest.
fn take_ymd(s: &[u8]) -> Result<(i64, i64, i64, &[u8]), &'static str> {
    const SHAPE: &str = "not an ISO date (DateStyle must be ISO)";
    let year_len = s.iter().take_while(|c| c.is_ascii_digit()).count();
    if !(4..=9).contains(&year_len) {
        return Err(SHAPE);
    }
    let (year, s) = take_digits(s, year_len).ok_or(SHAPE)?;
    let s = take_byte(s, b'-').ok_or(SHAPE)?;
    let (month, s) = take_digits(s, 2).ok_or(SHAPE)?;
    let s = take_byte(s, b'-').ok_or(SHAPE)?;
    let (day, s) = take_digits(s, 2).ok_or(SHAPE)?;
    Ok((year, month, day, s))
}

/// Days since 2000-01-01 of a written date, `bc` meaning the year is BC.
fn days_from_ymd(year: i64, month: i64, day: i64, bc: bool) -> Result<i64, &'static str> {
    if year == 0 {
        return Err("year zero does not exist");
    }
    let year = if bc { 1 - year } else { year };
    if !(1..=12).contains(&month) || day < 1 || day > days_in_month(year, month) {
        return Err("no such day");
    }
    Ok(date2j(year, month, day) - POSTGRES_EPOCH_JDATE)
}

/// Strips a trailing ` BC`.
fn strip_bc(s: &[u8]) -> (bool, &[u8]) {
    match s.strip_suffix(b" BC") {
        Some(rest) => (true, rest),
        None => (false, s),
    }
}

fn parse_date(f: &[u8]) -> Result<i32, &'static str> {
    match f {
        b"infinity" => return Ok(i32::MAX),
        b"-infinity" => return Ok(i32::MIN),
        _ => {}
    }
    let (bc, s) = strip_bc(f);
    let (y, m, d, rest) = take_ymd(s)?;
    if !rest.is_empty() {
        return Err("unexpected text after the date");
    }
    let days = days_from_ymd(y, m, d, bc)?;
    if !(MIN_DATE..END_DATE).contains(&days) {
        return Err("date out of range");
    }
    i32::try_from(days).map_err(|_| "date out of range")
}

/// Reads `HH:MM:SS[.f{1,6}]` at the front of `s`: µs since midnight and the rest.
/// `24:00:00` is allowed only if `allow_24`.
fn take_time(s: &[u8], allow_24: bool) -> Result<(i64, &[u8]), &'static str> {
    const SHAPE: &str = "not an ISO time";
    let (h, s) = take_digits(s, 2).ok_or(SHAPE)?;
    let s = take_byte(s, b':').ok_or(SHAPE)?;
    let (m, s) = take_digits(s, 2).ok_or(SHAPE)?;
    let s = take_byte(s, b':').ok_or(SHAPE)?;
    let (sec, mut s) = take_digits(s, 2).ok_or(SHAPE)?;
    let mut frac = 0i64;
    if let Some(rest) = take_byte(s, b'.') {
        let n = rest.iter().take_while(|c| c.is_ascii_digit()).count();
        if !(1..=6).contains(&n) {
            return Err(SHAPE);
        }
        let (v, rest) = take_digits(rest, n).ok_or(SHAPE)?;
        frac = v * 10i64.pow(6 - n as u32);
        s = rest;
    }
    let total = ((h * 60 + m) * 60 + sec) * USECS_PER_SEC + frac;
    let valid = if h == 24 {
        allow_24 && total == USECS_PER_DAY
    } else {
        h < 24 && m < 60 && sec < 60
    };
    if !valid {
        return Err("time out of range");
    }
    Ok((total, s))
}

fn parse_time_of_day(f: &[u8]) -> Result<i64, &'static str> {
    let (t, rest) = take_time(f, true)?;
    if !rest.is_empty() {
        return Err("unexpected text after the time");
    }
    Ok(t)
}

/// Reads a UTC offset `±HH[:MM[:SS]]` as `EncodeTimezone` prints it, in seconds east of
/// Greenwich.
fn parse_offset(s: &[u8]) -> Result<i64, &'static str> {
    const SHAPE: &str = "not an ISO UTC offset";
    let (neg, s) = match s.split_first() {
        Some((b'+', rest)) => (false, rest),
        Some((b'-', rest)) => (true, rest),
        _ => return Err(SHAPE),
    };
    let (h, mut s) = take_digits(s, 2).ok_or(SHAPE)?;
    let mut secs = h * 3600;
    for unit in [60, 1] {
        if s.is_empty() {
            break;
        }
        let rest = take_byte(s, b':').ok_or(SHAPE)?;
        let (v, rest) = take_digits(rest, 2).ok_or(SHAPE)?;
        if v >= 60 {
            return Err(SHAPE);
        }
        secs += v * unit;
        s = rest;
    }
    if !s.is_empty() {
        return Err(SHAPE);
    }
    Ok(if neg { -secs } else { secs })
}

/// `YYYY-MM-DD HH:MM:SS[.ffffff][±offset][ BC]`, the offset present iff `with_zone`;
/// timestamptz values are converted to UTC.
fn parse_timestamp(f: &[u8], with_zone: bool) -> Result<i64, &'static str> {
    match f {
        b"infinity" => return Ok(i64::MAX),
        b"-infinity" => return Ok(i64::MIN),
        _ => {}
    }
    let (bc, s) = strip_bc(f);
    let (y, m, d, s) = take_ymd(s)?;
    let s = take_byte(s, b' ').ok_or("not an ISO timestamp (DateStyle must be ISO)")?;
    let (time, s) = take_time(s, false)?;
    let offset = if with_zone {
        parse_offset(s)?
    } else if s.is_empty() {
        0
    } else {
        return Err("unexpected text after the timestamp");
    };
    let days = days_from_ymd(y, m, d, bc)?;
    // in i128: a 9-digit year overflows i64 microseconds before the range check
    let us = i128::from(days) * i128::from(USECS_PER_DAY) + i128::from(time)
        - i128::from(offset * USECS_PER_SEC);
    i64::try_from(us)
        .ok()
        .filter(|us| (MIN_TIMESTAMP..END_TIMESTAMP).contains(us))
        .ok_or("timestamp out of range")
}

/// The canonical `8-4-4-4-12` hex form (either case).
fn parse_uuid(f: &[u8]) -> Option<[u8; 16]> {
    if f.len() != 36 {
        return None;
    }
    let mut out = [0u8; 16];
    let mut hex = f
        .iter()
        .enumerate()
        .filter(|(i, _)| !matches!(i, 8 | 13 | 18 | 23));
    if [8, 13, 18, 23].iter().any(|&i| f[i] != b'-') {
        return None;
    }
    for byte in &mut out {
        let (_, hi) = hex.next()?;
        let (_, lo) = hex.next()?;
        *byte = (hex_val(*hi)? << 4) | hex_val(*lo)?;
    }
    Some(out)
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
#[path = "value_tests.rs"]
mod tests;
