//! Bit-exact ports of the Postgres hash functions used by hash partitioning.
//!
//! A row's partition under `PARTITION BY HASH` is decided by these functions inside the
//! server (Postgres 15, `src/common/hashfn.c` and the per-type `*hashextended` support
//! functions). The proxy must reproduce them bit for bit, or it would route a key to a
//! shard that does not hold it. The results match an x86-64 (little-endian) server build;
//! input bytes are always read as little-endian 32-bit words so the port gives the same
//! answer on any host.

/// `HASH_PARTITION_SEED` from Postgres' `partbounds.c`.
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;

/// The 64 random bits Postgres' `hash_combine64` adds; kept by name so the rebalancer can
/// build the same in-server slot expression.
pub const HASH_COMBINE64_CONST: u64 = 0x49a0_f4dd_15e5_a8e3;

/// lookup3's `mix()`: reversibly stirs the three 32-bit state words.
#[inline(always)]
fn mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(4);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(6);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(8);
    *b = b.wrapping_add(*a);
    *a = a.wrapping_sub(*c);
    *a ^= c.rotate_left(16);
    *c = c.wrapping_add(*b);
    *b = b.wrapping_sub(*a);
    *b ^= a.rotate_left(19);
    *a = a.wrapping_add(*c);
    *c = c.wrapping_sub(*b);
    *c ^= b.rotate_left(4);
    *b = b.wrapping_add(*a);
}

/// lookup3's `final()`: the last avalanche of the state words before reporting.
#[inline(always)]
fn final_mix(a: &mut u32, b: &mut u32, c: &mut u32) {
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(14));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(11));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(25));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(16));
    *a ^= *c;
    *a = a.wrapping_sub(c.rotate_left(4));
    *b ^= *a;
    *b = b.wrapping_sub(a.rotate_left(14));
    *c ^= *b;
    *c = c.wrapping_sub(b.rotate_left(24));
}

/// Initial state words for a key of `len` bytes, perturbed by `seed` the way Postgres does
/// it: the seed is treated as an extra 12-byte chunk (high half, low half, zero).
#[inline(always)]
fn init_state(len: u32, seed: u64) -> (u32, u32, u32) {
    let init = 0x9e37_79b9_u32.wrapping_add(len).wrapping_add(3_923_095);
    let (mut a, mut b, mut c) = (init, init, init);
    if seed != 0 {
        a = a.wrapping_add((seed >> 32) as u32);
        b = b.wrapping_add(seed as u32);
        mix(&mut a, &mut b, &mut c);
    }
    (a, b, c)
}

/// Little-endian value of up to four bytes (missing high bytes are zero), which is what
/// the little-endian tail `switch` of lookup3 adds byte by byte.
#[inline(always)]
fn le_partial(bytes: &[u8]) -> u32 {
    bytes
        .iter()
        .enumerate()
        .fold(0u32, |acc, (i, &b)| acc | (u32::from(b) << (8 * i)))
}

/// Postgres' `hash_bytes_extended`: Bob Jenkins' lookup3 over `k` with a 64-bit seed,
/// returning `(b << 32) | c`. This is `hashtextextended` for deterministic collations and
/// `uuid_hash_extended` for the 16 uuid bytes.
///
/// Postgres takes the length as a C `int`; keys longer than `u32::MAX` bytes cannot reach
/// it, and here only the low 32 bits of the length enter the state, as in the C code.
pub fn hash_bytes_extended(k: &[u8], seed: u64) -> u64 {
    let (mut a, mut b, mut c) = init_state(k.len() as u32, seed);

    let mut chunks = k.chunks_exact(12);
    for chunk in &mut chunks {
        a = a.wrapping_add(le_partial(&chunk[0..4]));
        b = b.wrapping_add(le_partial(&chunk[4..8]));
        c = c.wrapping_add(le_partial(&chunk[8..12]));
        mix(&mut a, &mut b, &mut c);
    }

    // The last 0..=11 bytes. The lowest byte of `c` is reserved (historically for the
    // length), so the bytes destined for `c` are shifted up by one byte.
    let tail = chunks.remainder();
    let n = tail.len();
    a = a.wrapping_add(le_partial(&tail[..n.min(4)]));
    if n > 4 {
        b = b.wrapping_add(le_partial(&tail[4..n.min(8)]));
    }
    if n > 8 {
        c = c.wrapping_add(le_partial(&tail[8..n]) << 8);
    }

    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// Postgres' `hash_uint32_extended`: lookup3 specialised to one 32-bit word. This is
/// `hashint4extended` (the int4 reinterpreted as unsigned) and the core of
/// `hashint8extended`.
pub fn hash_uint32_extended(k: u32, seed: u64) -> u64 {
    let (mut a, mut b, mut c) = init_state(4, seed);
    a = a.wrapping_add(k);
    final_mix(&mut a, &mut b, &mut c);
    (u64::from(b) << 32) | u64::from(c)
}

/// Postgres' `hashint8extended`. The high half is folded into the low half (inverted for
/// negatives) so that an int8 hashes like the int4/int2 of the same value, which is what
/// lets the integer types share one hash opfamily.
pub fn hashint8extended(v: i64, seed: u64) -> u64 {
    let lohalf = v as u32;
    let hihalf = (v >> 32) as u32;
    let folded = lohalf ^ if v >= 0 { hihalf } else { !hihalf };
    hash_uint32_extended(folded, seed)
}

/// Postgres' `hashint4extended` (equal to [`hashint8extended`] of the same value).
pub fn hashint4extended(v: i32, seed: u64) -> u64 {
    hash_uint32_extended(v as u32, seed)
}

/// Postgres' `hashint2extended` (equal to [`hashint8extended`] of the same value).
pub fn hashint2extended(v: i16, seed: u64) -> u64 {
    hash_uint32_extended(i32::from(v) as u32, seed)
}

/// Postgres' `hashtextextended` for a deterministic collation: the hash of the UTF-8 bytes.
pub fn hashtextextended(s: &str, seed: u64) -> u64 {
    hash_bytes_extended(s.as_bytes(), seed)
}

/// Postgres' `uuid_hash_extended`: the hash of the 16 uuid bytes in network order.
pub fn uuid_hash_extended(u: &[u8; 16], seed: u64) -> u64 {
    hash_bytes_extended(u, seed)
}

/// Postgres' `hash_combine64`, which folds each key column's hash into the row hash.
/// For a single-column key the row hash is `hash_combine64(0, h)`.
#[inline]
pub fn hash_combine64(a: u64, b: u64) -> u64 {
    a ^ b
        .wrapping_add(HASH_COMBINE64_CONST)
        .wrapping_add(a << 54)
        .wrapping_add(a >> 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Vectors produced by a real Postgres 15 server; see the generator script next to it.
    const PG15_VECTORS: &str = include_str!("testdata/pg15_hash_vectors.txt");

    fn hex(s: &str) -> Vec<u8> {
        assert!(s.len().is_multiple_of(2), "odd hex length: {s}");
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex digit"))
            .collect()
    }

    fn uuid_bytes(s: &str) -> [u8; 16] {
        hex(&s.replace('-', "")).try_into().expect("16 bytes")
    }

    /// Postgres prints the hash as a signed bigint; the bit pattern is what matters.
    fn pg(v: i64) -> u64 {
        v as u64
    }

    #[test]
    fn matches_every_postgres15_vector() {
        let mut checked = 0;
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for line in PG15_VECTORS
            .lines()
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
        {
            let f: Vec<&str> = line.split(' ').collect();
            assert_eq!(f.len(), 4, "bad vector line: {line}");
            let seed: u64 = f[1].parse().expect("seed");
            let want = pg(f[3].parse().expect("hash"));
            let got = match f[0] {
                "int8" => hashint8extended(f[2].parse().expect("int8"), seed),
                "int4" => hashint4extended(f[2].parse().expect("int4"), seed),
                "int2" => hashint2extended(f[2].parse().expect("int2"), seed),
                "text" => {
                    let bytes = if f[2] == "-" { Vec::new() } else { hex(f[2]) };
                    let text = std::str::from_utf8(&bytes).expect("utf8");
                    hashtextextended(text, seed)
                }
                "uuid" => uuid_hash_extended(&uuid_bytes(f[2]), seed),
                other => panic!("unknown function {other}"),
            };
            assert_eq!(got, want, "{line}");
            *kinds.entry(f[0]).or_default() += 1;
            checked += 1;
        }
        assert!(checked >= 150, "only {checked} vectors");
        for kind in ["int8", "int4", "int2", "text", "uuid"] {
            assert!(
                kinds.get(kind).copied().unwrap_or(0) >= 8,
                "{kind}: {kinds:?}"
            );
        }
    }

    #[test]
    fn known_integer_vectors() {
        let s = HASH_PARTITION_SEED;
        assert_eq!(hashint8extended(0, s), pg(-4403592609991167795));
        assert_eq!(hashint8extended(1, s), pg(5968994663651403477));
        assert_eq!(hashint8extended(-1, s), pg(-5017072347659237694));
    }

    #[test]
    fn known_text_and_uuid_vectors() {
        let s = HASH_PARTITION_SEED;
        assert_eq!(hashtextextended("", s), pg(-5700645584453517373));
        assert_eq!(hashtextextended("a", s), pg(-6705225459120232837));
        let zero = [0u8; 16];
        assert_eq!(uuid_hash_extended(&zero, s), pg(-5281082146396728638));
    }

    #[test]
    fn integer_widths_hash_alike() {
        for v in [0i64, 1, -1, 42, -42, 32767, -32768] {
            let h8 = hashint8extended(v, HASH_PARTITION_SEED);
            assert_eq!(hashint4extended(v as i32, HASH_PARTITION_SEED), h8, "{v}");
            assert_eq!(hashint2extended(v as i16, HASH_PARTITION_SEED), h8, "{v}");
        }
        for v in [i32::MIN, i32::MAX, 123_456_789] {
            assert_eq!(
                hashint4extended(v, 7),
                hashint8extended(i64::from(v), 7),
                "{v}"
            );
        }
    }

    #[test]
    fn hash_bytes_extended_reads_little_endian_words() {
        // Four bytes hash exactly like the u32 they spell in little-endian order.
        for v in [0u32, 1, 0xdead_beef, u32::MAX] {
            for seed in [0, HASH_PARTITION_SEED] {
                assert_eq!(
                    hash_bytes_extended(&v.to_le_bytes(), seed),
                    hash_uint32_extended(v, seed)
                );
            }
        }
    }

    #[test]
    fn hash_bytes_extended_does_not_depend_on_alignment() {
        let data: Vec<u8> = (0u8..64).map(|i| i.wrapping_mul(37)).collect();
        for len in 0..=data.len() {
            for off in 1..=3 {
                let mut buf = vec![0u8; off];
                buf.extend_from_slice(&data[..len]);
                assert_eq!(
                    hash_bytes_extended(&buf[off..], 99),
                    hash_bytes_extended(&data[..len], 99),
                    "len {len} offset {off}"
                );
            }
        }
    }

    #[test]
    fn combine_with_zero_adds_the_constant() {
        assert_eq!(hash_combine64(0, 0), HASH_COMBINE64_CONST);
        assert_eq!(
            hash_combine64(0, u64::MAX),
            HASH_COMBINE64_CONST.wrapping_sub(1)
        );
        // Non-zero accumulators use the shifted terms (Postgres formula).
        let a = 0x0123_4567_89ab_cdefu64;
        let b = 0xfedc_ba98_7654_3210u64;
        let want = a
            ^ (b.wrapping_add(HASH_COMBINE64_CONST)
                .wrapping_add(a << 54)
                .wrapping_add(a >> 7));
        assert_eq!(hash_combine64(a, b), want);
    }
}
