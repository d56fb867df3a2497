//! Exact `numeric` values, computed the way Postgres' `numeric.c` computes them.
//!
//! Recombining `sum` and `avg` across shards must give the very digits a single
//! Postgres would print, so this is not a float approximation: a [`Numeric`] holds the
//! exact decimal digits and the display scale (`dscale`, digits printed after the
//! point), and [`Numeric::add`] / [`Numeric::div`] follow `numeric_add` /
//! `numeric_div` (including `select_div_scale` and rounding half away from zero).
//! Text and binary forms follow `numeric_in`/`numeric_out` and
//! `numeric_recv`/`numeric_send`.

use std::cmp::Ordering;

use super::value::ValueError;

/// `DEC_DIGITS`: decimal digits per base-10000 digit of Postgres' storage format.
const DEC_DIGITS: i32 = 4;
/// `NUMERIC_MIN_SIG_DIGITS`: significant digits a quotient gets at least.
const MIN_SIG_DIGITS: i32 = 16;
/// `NUMERIC_MAX_DISPLAY_SCALE`: upper clamp of a computed result scale.
const MAX_DISPLAY_SCALE: i32 = 1000;
/// `NUMERIC_DSCALE_MAX`: largest display scale the format can carry.
const DSCALE_MAX: u16 = 0x3FFF;
/// `NUMERIC_MAX_PRECISION`: bound on a text exponent in `numeric_in`.
const MAX_EXPONENT: i32 = 1000;
/// Largest base-10000 weight (`NUMERIC_WEIGHT_MAX`, an int16).
const WEIGHT_MAX: i32 = i16::MAX as i32;

/// Sign words of the binary format.
const SIGN_POS: u16 = 0x0000;
const SIGN_NEG: u16 = 0x4000;
const SIGN_NAN: u16 = 0xC000;
const SIGN_PINF: u16 = 0xD000;
const SIGN_NINF: u16 = 0xF000;
/// `numeric_send` reads a special value's header as a short header, so infinities go out
/// with display scale 32 (and NaN with 0); reproduced byte for byte.
const INF_SEND_DSCALE: u16 = 32;

/// An exact Postgres `numeric`: NaN, ±Infinity, or a finite decimal with its display
/// scale.
///
/// `==` is equality of representation (same value *and* same display scale, i.e. the
/// same `numeric_out` text); use [`Numeric::cmp_pg`] for Postgres' ordering, where
/// `1.0` equals `1.00`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Numeric {
    repr: Repr,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Repr {
    NaN,
    PosInf,
    NegInf,
    Finite(Finite),
}

/// A finite value `±0.d1d2…dn × 10^point`, kept canonical: no leading or trailing zero
/// digits (zero is no digits, positive, point 0) and no digit beyond `dscale`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Finite {
    neg: bool,
    digits: Vec<u8>,
    point: i32,
    dscale: u16,
}

impl Finite {
    /// Builds the canonical form from possibly padded digits.
    fn new(neg: bool, mut digits: Vec<u8>, mut point: i32, dscale: u16) -> Finite {
        let lead = digits.iter().take_while(|&&d| d == 0).count();
        if lead == digits.len() {
            return Finite {
                neg: false,
                digits: Vec::new(),
                point: 0,
                dscale,
            };
        }
        digits.drain(..lead);
        point -= lead as i32;
        while digits.last() == Some(&0) {
            digits.pop();
        }
        Finite {
            neg,
            digits,
            point,
            dscale,
        }
    }

    /// Digits after the decimal point that are actually present.
    fn frac_len(&self) -> i32 {
        (self.digits.len() as i32 - self.point).max(0)
    }

    /// `|self| × 10^scale` as integer digits (most significant first); `scale` must be at
    /// least [`Finite::frac_len`] so nothing is lost.
    fn mantissa(&self, scale: i32) -> Vec<u8> {
        let len = (self.point + scale).max(0) as usize;
        let mut m = self.digits.clone();
        m.resize(len.max(self.digits.len()), 0);
        m
    }

    /// The base-10000 weight and digits Postgres stores (leading and trailing zero
    /// digits stripped; zero is weight 0 and no digits).
    fn base10000(&self) -> (i32, Vec<i16>) {
        if self.digits.is_empty() {
            return (0, Vec::new());
        }
        let first_exp = self.point - 1;
        let weight = first_exp.div_euclid(DEC_DIGITS);
        let pad = (weight * DEC_DIGITS + DEC_DIGITS - 1 - first_exp) as usize;
        let mut dec = vec![0u8; pad];
        dec.extend_from_slice(&self.digits);
        let groups = dec
            .chunks(DEC_DIGITS as usize)
            .map(|c| {
                let mut v: i16 = 0;
                for i in 0..DEC_DIGITS as usize {
                    v = v * 10 + i16::from(c.get(i).copied().unwrap_or(0));
                }
                v
            })
            .collect();
        (weight, groups)
    }

    /// Postgres rejects results whose base-10000 weight does not fit its int16.
    fn check_range(self) -> Result<Finite, ValueError> {
        if !self.digits.is_empty() && (self.point - 1).div_euclid(DEC_DIGITS) > WEIGHT_MAX {
            return Err(ValueError::NumericOverflow);
        }
        Ok(self)
    }

    fn cmp_abs(&self, other: &Finite) -> Ordering {
        match (self.digits.is_empty(), other.digits.is_empty()) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Less,
            (false, true) => Ordering::Greater,
            (false, false) => self
                .point
                .cmp(&other.point)
                .then_with(|| self.digits.cmp(&other.digits)),
        }
    }

    fn cmp_signed(&self, other: &Finite) -> Ordering {
        match (self.neg, other.neg) {
            (false, true) => Ordering::Greater,
            (true, false) => Ordering::Less,
            (false, false) => self.cmp_abs(other),
            (true, true) => other.cmp_abs(self),
        }
    }
}

impl Numeric {
    /// NaN, which Postgres sorts above every other numeric.
    pub const NAN: Numeric = Numeric { repr: Repr::NaN };
    /// `Infinity`.
    pub const INFINITY: Numeric = Numeric { repr: Repr::PosInf };
    /// `-Infinity`.
    pub const NEG_INFINITY: Numeric = Numeric { repr: Repr::NegInf };

    fn finite(f: Finite) -> Numeric {
        Numeric {
            repr: Repr::Finite(f),
        }
    }

    /// Reads `numeric_out` text (and `numeric_in`'s other finite spellings: a leading
    /// `+`, an exponent) so a shard's text-format field becomes an exact value.
    pub fn parse_text(s: &[u8]) -> Result<Numeric, ValueError> {
        let bad = |why| ValueError::text("numeric", s, why);
        let special = |name: &str| s.eq_ignore_ascii_case(name.as_bytes());
        if special("NaN") {
            return Ok(Numeric::NAN);
        }
        if special("Infinity") || special("+Infinity") {
            return Ok(Numeric::INFINITY);
        }
        if special("-Infinity") {
            return Ok(Numeric::NEG_INFINITY);
        }
        let (neg, rest) = match s.first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let (mantissa, exponent) = match rest.iter().position(|&c| c == b'e' || c == b'E') {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int_part, frac_part) = match mantissa.iter().position(|&c| c == b'.') {
            Some(i) => (&mantissa[..i], &mantissa[i + 1..]),
            None => (mantissa, &mantissa[..0]),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(bad("no digits"));
        }
        if !int_part.iter().chain(frac_part).all(u8::is_ascii_digit) {
            return Err(bad("not a number"));
        }
        let exp = match exponent {
            None => 0,
            Some(e) => parse_exponent(e).ok_or_else(|| bad("bad exponent"))?,
        };
        let dscale = (frac_part.len() as i64 - i64::from(exp)).max(0);
        let dscale = u16::try_from(dscale)
            .ok()
            .filter(|&d| d <= DSCALE_MAX)
            .ok_or_else(|| bad("too many digits after the decimal point"))?;
        let point = i32::try_from(int_part.len())
            .ok()
            .and_then(|p| p.checked_add(exp))
            .ok_or_else(|| bad("too many digits"))?;
        let digits = int_part.iter().chain(frac_part).map(|c| c - b'0').collect();
        let f = Finite::new(neg, digits, point, dscale)
            .check_range()
            .map_err(|_| bad("value overflows numeric format"))?;
        Ok(Numeric::finite(f))
    }

    /// Reads `numeric_send` bytes, validating them as `numeric_recv` does (sign word,
    /// scale, digits below 10000, exact length); digits hidden by the scale are
    /// truncated, as `numeric_recv` does.
    pub fn parse_binary(b: &[u8]) -> Result<Numeric, ValueError> {
        let bad = |why| ValueError::binary("numeric", b, why);
        if b.len() < 8 {
            return Err(bad("shorter than the 8-byte header"));
        }
        let word = |i: usize| u16::from_be_bytes([b[i], b[i + 1]]);
        let ndigits = usize::from(word(0));
        let weight = i32::from(word(2) as i16);
        let sign = word(4);
        let dscale = word(6);
        if b.len() != 8 + 2 * ndigits {
            return Err(bad("length does not match its digit count"));
        }
        if dscale > DSCALE_MAX {
            return Err(bad("invalid scale"));
        }
        let neg = match sign {
            SIGN_POS => false,
            SIGN_NEG => true,
            SIGN_NAN => return Ok(Numeric::NAN),
            SIGN_PINF => return Ok(Numeric::INFINITY),
            SIGN_NINF => return Ok(Numeric::NEG_INFINITY),
            _ => return Err(bad("invalid sign")),
        };
        let mut digits = Vec::with_capacity(ndigits * DEC_DIGITS as usize);
        for i in 0..ndigits {
            let d = word(8 + 2 * i);
            if d >= 10000 {
                return Err(bad("invalid digit"));
            }
            digits.extend_from_slice(&[
                (d / 1000) as u8,
                (d / 100 % 10) as u8,
                (d / 10 % 10) as u8,
                (d % 10) as u8,
            ]);
        }
        let point = (weight + 1) * DEC_DIGITS;
        // keep only digits at exponent >= -dscale (trunc_var)
        let keep = (point + i32::from(dscale)).clamp(0, digits.len() as i32) as usize;
        digits.truncate(keep);
        Ok(Numeric::finite(Finite::new(neg, digits, point, dscale)))
    }

    /// The numeric for an integer (display scale 0), as `int8_numeric` gives; used for
    /// the row count that `avg` divides by.
    pub fn from_i64(v: i64) -> Numeric {
        let digits = v
            .unsigned_abs()
            .to_string()
            .bytes()
            .map(|c| c - b'0')
            .collect::<Vec<_>>();
        let point = digits.len() as i32;
        Numeric::finite(Finite::new(v < 0, digits, point, 0))
    }

    /// Whether this is NaN.
    pub fn is_nan(&self) -> bool {
        matches!(self.repr, Repr::NaN)
    }

    /// Appends the text `numeric_out` prints: exactly `dscale` digits after the point,
    /// `NaN`, `Infinity`, `-Infinity`, never `-0`.
    pub fn write_text(&self, out: &mut Vec<u8>) {
        let f = match &self.repr {
            Repr::NaN => return out.extend_from_slice(b"NaN"),
            Repr::PosInf => return out.extend_from_slice(b"Infinity"),
            Repr::NegInf => return out.extend_from_slice(b"-Infinity"),
            Repr::Finite(f) => f,
        };
        if f.neg {
            out.push(b'-');
        }
        let digit = |i: i32| -> u8 {
            let d = usize::try_from(i)
                .ok()
                .and_then(|i| f.digits.get(i))
                .copied()
                .unwrap_or(0);
            b'0' + d
        };
        if f.point <= 0 {
            out.push(b'0');
        } else {
            out.extend((0..f.point).map(digit));
        }
        if f.dscale > 0 {
            out.push(b'.');
            out.extend((0..i32::from(f.dscale)).map(|j| digit(f.point + j)));
        }
    }

    /// The text [`Numeric::write_text`] appends, as a `String`.
    pub fn to_text(&self) -> String {
        let mut out = Vec::new();
        self.write_text(&mut out);
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Appends the bytes `numeric_send` sends: digit count, weight, sign word, display
    /// scale, then base-10000 digits (leading/trailing zero digits stripped).
    pub fn write_binary(&self, out: &mut Vec<u8>) {
        let (weight, sign, dscale, digits) = match &self.repr {
            Repr::NaN => (0, SIGN_NAN, 0, Vec::new()),
            Repr::PosInf => (0, SIGN_PINF, INF_SEND_DSCALE, Vec::new()),
            Repr::NegInf => (0, SIGN_NINF, INF_SEND_DSCALE, Vec::new()),
            Repr::Finite(f) => {
                let (w, d) = f.base10000();
                let sign = if f.neg { SIGN_NEG } else { SIGN_POS };
                (w, sign, f.dscale, d)
            }
        };
        out.extend_from_slice(&(digits.len() as u16).to_be_bytes());
        out.extend_from_slice(&(weight as i16).to_be_bytes());
        out.extend_from_slice(&sign.to_be_bytes());
        out.extend_from_slice(&dscale.to_be_bytes());
        for d in digits {
            out.extend_from_slice(&d.to_be_bytes());
        }
    }

    /// `numeric_add`: exact sum with the larger display scale; NaN absorbs, `Infinity +
    /// -Infinity` is NaN. Fails like Postgres when the sum leaves the numeric range.
    pub fn add(&self, other: &Numeric) -> Result<Numeric, ValueError> {
        let (a, b) = match (&self.repr, &other.repr) {
            (Repr::NaN, _) | (_, Repr::NaN) => return Ok(Numeric::NAN),
            (Repr::PosInf, Repr::NegInf) | (Repr::NegInf, Repr::PosInf) => {
                return Ok(Numeric::NAN);
            }
            (Repr::PosInf, _) | (_, Repr::PosInf) => return Ok(Numeric::INFINITY),
            (Repr::NegInf, _) | (_, Repr::NegInf) => return Ok(Numeric::NEG_INFINITY),
            (Repr::Finite(a), Repr::Finite(b)) => (a, b),
        };
        let scale = a.frac_len().max(b.frac_len());
        let (ma, mb) = (a.mantissa(scale), b.mantissa(scale));
        let dscale = a.dscale.max(b.dscale);
        let (neg, m) = if a.neg == b.neg {
            (a.neg, mag_add(&ma, &mb))
        } else if mag_cmp(&ma, &mb) != Ordering::Less {
            (a.neg, mag_sub(&ma, &mb))
        } else {
            (b.neg, mag_sub(&mb, &ma))
        };
        let point = m.len() as i32 - scale;
        Ok(Numeric::finite(
            Finite::new(neg, m, point, dscale).check_range()?,
        ))
    }

    /// `numeric_div`: the quotient to the scale `select_div_scale` picks, rounded half
    /// away from zero; how `avg` turns a sum and a count into the printed average.
    /// Dividing a finite value or an infinity by zero fails like Postgres.
    pub fn div(&self, other: &Numeric) -> Result<Numeric, ValueError> {
        let (a, b) = match (&self.repr, &other.repr) {
            (Repr::NaN, _) | (_, Repr::NaN) => return Ok(Numeric::NAN),
            (Repr::PosInf | Repr::NegInf, Repr::PosInf | Repr::NegInf) => {
                return Ok(Numeric::NAN);
            }
            (Repr::PosInf | Repr::NegInf, Repr::Finite(b)) => {
                if b.digits.is_empty() {
                    return Err(ValueError::DivisionByZero);
                }
                let pos = matches!(self.repr, Repr::PosInf) != b.neg;
                return Ok(if pos {
                    Numeric::INFINITY
                } else {
                    Numeric::NEG_INFINITY
                });
            }
            (Repr::Finite(_), Repr::PosInf | Repr::NegInf) => return Ok(Numeric::from_i64(0)),
            (Repr::Finite(a), Repr::Finite(b)) => (a, b),
        };
        if b.digits.is_empty() {
            return Err(ValueError::DivisionByZero);
        }
        let rscale = select_div_scale(a, b);
        let (sa, sb) = (a.frac_len(), b.frac_len());
        // quotient digits up to one past rscale, then round on that digit
        let shift = rscale + 1 + sb - sa;
        let mut n = a.mantissa(sa);
        let mut d = b.mantissa(sb);
        if shift >= 0 {
            n.resize(n.len() + shift as usize, 0);
        } else {
            d.resize(d.len() + (-shift) as usize, 0);
        }
        let mut q = mag_div(&n, &d);
        let round_up = q.pop().is_some_and(|last| last >= 5);
        if round_up {
            q = mag_add(&q, &[1]);
        }
        let point = q.len() as i32 - rscale;
        let dscale = rscale as u16; // select_div_scale keeps it in 0..=1000
        Ok(Numeric::finite(
            Finite::new(a.neg != b.neg, q, point, dscale).check_range()?,
        ))
    }

    /// Postgres' btree order (`cmp_numerics`): `-Infinity` < finite < `Infinity` < NaN,
    /// NaN equals NaN, and the display scale does not matter (`1.0 = 1.00`).
    pub fn cmp_pg(&self, other: &Numeric) -> Ordering {
        fn rank(r: &Repr) -> u8 {
            match r {
                Repr::NegInf => 0,
                Repr::Finite(_) => 1,
                Repr::PosInf => 2,
                Repr::NaN => 3,
            }
        }
        match (&self.repr, &other.repr) {
            (Repr::Finite(a), Repr::Finite(b)) => a.cmp_signed(b),
            (a, b) => rank(a).cmp(&rank(b)),
        }
    }
}

/// A text exponent: optional sign and decimal digits, within `numeric_in`'s bound.
fn parse_exponent(e: &[u8]) -> Option<i32> {
    let (neg, digits) = match e.first() {
        Some(b'-') => (true, &e[1..]),
        Some(b'+') => (false, &e[1..]),
        _ => (false, e),
    };
    if digits.is_empty() || digits.len() > 9 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let v = digits
        .iter()
        .fold(0i32, |acc, &c| acc * 10 + i32::from(c - b'0'));
    (v <= MAX_EXPONENT).then_some(if neg { -v } else { v })
}

/// `select_div_scale`: at least 16 significant digits in the quotient (estimated from
/// the first base-10000 digits), at least the inputs' display scales, within 0..=1000.
fn select_div_scale(a: &Finite, b: &Finite) -> i32 {
    let first = |f: &Finite| {
        let (w, d) = f.base10000();
        (w, d.first().copied().unwrap_or(0))
    };
    let (w1, d1) = first(a);
    let (w2, d2) = first(b);
    let mut qweight = w1 - w2;
    if d1 <= d2 {
        qweight -= 1;
    }
    (MIN_SIG_DIGITS - qweight * DEC_DIGITS)
        .max(i32::from(a.dscale))
        .max(i32::from(b.dscale))
        .clamp(0, MAX_DISPLAY_SCALE)
}

/// Magnitude comparison of decimal digit strings (most significant first; leading
/// zeros allowed).
fn mag_cmp(a: &[u8], b: &[u8]) -> Ordering {
    let a = strip_leading(a);
    let b = strip_leading(b);
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

fn strip_leading(a: &[u8]) -> &[u8] {
    let lead = a.iter().take_while(|&&d| d == 0).count();
    &a[lead..]
}

/// Sum of two decimal digit strings.
fn mag_add(a: &[u8], b: &[u8]) -> Vec<u8> {
    let len = a.len().max(b.len()) + 1;
    let mut out = vec![0u8; len];
    let mut carry = 0u8;
    for i in 0..len {
        let da = if i < a.len() { a[a.len() - 1 - i] } else { 0 };
        let db = if i < b.len() { b[b.len() - 1 - i] } else { 0 };
        let s = da + db + carry;
        out[len - 1 - i] = s % 10;
        carry = s / 10;
    }
    out
}

/// Difference `a - b` of decimal digit strings, `a >= b`.
fn mag_sub(a: &[u8], b: &[u8]) -> Vec<u8> {
    let mut out = a.to_vec();
    sub_in_place(&mut out, b);
    out
}

/// `a -= b` for decimal digit strings with `a >= b`.
fn sub_in_place(a: &mut [u8], b: &[u8]) {
    let mut borrow = 0u8;
    let n = a.len();
    for i in 0..n {
        let db = if i < b.len() { b[b.len() - 1 - i] } else { 0 };
        let sub = db + borrow;
        let da = &mut a[n - 1 - i];
        if *da >= sub {
            *da -= sub;
            borrow = 0;
        } else {
            *da = *da + 10 - sub;
            borrow = 1;
        }
    }
}

/// Truncated quotient of decimal digit strings by schoolbook long division; `d` is not
/// zero.
fn mag_div(n: &[u8], d: &[u8]) -> Vec<u8> {
    let d = strip_leading(d);
    let mut q = Vec::with_capacity(n.len());
    let mut rem: Vec<u8> = Vec::with_capacity(d.len() + 1);
    for &digit in n {
        if rem.is_empty() && digit == 0 {
            q.push(0);
            continue;
        }
        rem.push(digit);
        let mut count = 0u8;
        while mag_cmp(&rem, d) != Ordering::Less {
            sub_in_place(&mut rem, d);
            count += 1;
        }
        let lead = rem.iter().take_while(|&&x| x == 0).count();
        rem.drain(..lead);
        q.push(count);
    }
    q
}

#[cfg(test)]
#[path = "numeric_tests.rs"]
mod tests;
