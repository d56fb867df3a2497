//! Golden tables from a real Postgres 15 (text form, binary form and `ORDER BY` rank of
//! each value) and malformed-input checks.

use super::*;

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test table hex"))
        .collect()
}

/// Same value: floats by bit pattern (NaN has no `==`), the rest structurally.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Float(x), Value::Float(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

#[test]
fn text_and_binary_forms_decode_to_the_same_value() {
    let mut checked = 0;
    for (kind, ty, rows) in GOLDEN {
        for (_, text, hex) in *rows {
            let bin = unhex(hex);
            let t = decode(*kind, false, text)
                .unwrap_or_else(|e| panic!("{ty} text {:?}: {e}", String::from_utf8_lossy(text)));
            let b = decode(*kind, true, &bin).unwrap_or_else(|e| panic!("{ty} binary {hex}: {e}"));
            assert!(same(&t, &b), "{ty}: text {t:?} != binary {b:?}");
            assert_eq!(compare(*kind, &t, &b), Ordering::Equal, "{ty} {t:?}");
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} golden values");
}

/// Every pair of values compares as their `dense_rank() OVER (ORDER BY x)` from Postgres;
/// one side decoded from text, the other from binary.
#[test]
fn compare_orders_like_postgres_order_by() {
    for (kind, ty, rows) in GOLDEN {
        for (ra, ta, _) in *rows {
            let a = decode(*kind, false, ta).expect("golden text");
            for (rb, _, hb) in *rows {
                let bin = unhex(hb);
                let b = decode(*kind, true, &bin).expect("golden binary");
                assert_eq!(
                    compare(*kind, &a, &b),
                    ra.cmp(rb),
                    "{ty}: {:?} vs {hb}",
                    String::from_utf8_lossy(ta)
                );
            }
        }
    }
}

#[test]
fn golden_tables_cover_the_tricky_values() {
    let texts = |k: Kind| -> Vec<&[u8]> {
        GOLDEN
            .iter()
            .filter(|(kind, _, _)| *kind == k)
            .flat_map(|(_, _, rows)| rows.iter().map(|r| r.1))
            .collect()
    };
    for (k, needles) in [
        (
            Kind::Float8,
            &[&b"NaN"[..], b"-0", b"-Infinity", b"1e+20"][..],
        ),
        (Kind::Numeric, &[b"NaN", b"Infinity", b"1.00", b"0.000"]),
        (Kind::Date, &[b"0001-12-31 BC", b"10000-01-01", b"infinity"]),
        (Kind::Bpchar, &[b"a  ", b"a"]),
    ] {
        for n in needles {
            assert!(texts(k).contains(n), "{k:?} table lacks {n:?}");
        }
    }
}

/// A timestamptz printed under different time zones (so with different UTC offsets,
/// including LMT offsets with seconds) reads back as the same instant, and all of them
/// order like Postgres.
#[test]
fn timestamptz_offsets_convert_to_utc() {
    let mut all = Vec::new();
    for (zone, rows) in GOLDEN_TIMESTAMPTZ {
        for (rank, text, hex) in *rows {
            let t = decode(Kind::Timestamptz, false, text)
                .unwrap_or_else(|e| panic!("{zone}: {:?}: {e}", String::from_utf8_lossy(text)));
            let bin = unhex(hex);
            let b = decode(Kind::Timestamptz, true, &bin).expect("golden binary");
            assert_eq!(t, b, "{zone}: {:?}", String::from_utf8_lossy(text));
            all.push((*rank, t));
        }
    }
    assert!(all.len() > 80);
    for (ra, a) in &all {
        for (rb, b) in &all {
            assert_eq!(
                compare(Kind::Timestamptz, a, b),
                ra.cmp(rb),
                "{a:?} vs {b:?}"
            );
        }
    }
    let offsets: Vec<&[u8]> = GOLDEN_TIMESTAMPTZ
        .iter()
        .flat_map(|(_, rows)| rows.iter().map(|r| r.1))
        .collect();
    for needle in ["+05:30", "-02:30", "+00:19:32", "-00:43:08", "+14"] {
        assert!(
            offsets
                .iter()
                .any(|t| String::from_utf8_lossy(t).contains(needle)),
            "no {needle} offset in the table"
        );
    }
}

#[test]
fn oids_map_to_kinds() {
    for (oid, kind) in [
        (21, Kind::Int2),
        (23, Kind::Int4),
        (20, Kind::Int8),
        (26, Kind::Oid),
        (700, Kind::Float4),
        (701, Kind::Float8),
        (1700, Kind::Numeric),
        (16, Kind::Bool),
        (1082, Kind::Date),
        (1083, Kind::Time),
        (1114, Kind::Timestamp),
        (1184, Kind::Timestamptz),
        (2950, Kind::Uuid),
        (25, Kind::Text),
        (1043, Kind::Text),
        (19, Kind::Text),
        (1042, Kind::Bpchar),
    ] {
        assert_eq!(Kind::from_oid(oid), Some(kind), "oid {oid}");
    }
    for oid in [0, 17, 114, 1186, 1266, 3802] {
        assert_eq!(Kind::from_oid(oid), None, "oid {oid}");
    }
    assert!(Kind::Text.is_collatable() && Kind::Bpchar.is_collatable());
    assert!(!Kind::Int4.is_collatable() && !Kind::Uuid.is_collatable());
}

#[test]
fn other_datestyles_and_malformed_text_are_refused() {
    let cases: &[(Kind, &[&str])] = &[
        (
            Kind::Int2,
            &["", "-", "32768", "-32769", "1.0", " 1", "1 ", "+1", "0x10"],
        ),
        (Kind::Int4, &["2147483648", "abc", "1e3"]),
        (
            Kind::Int8,
            &[
                "9223372036854775808",
                "-9223372036854775809",
                "99999999999999999999",
            ],
        ),
        (Kind::Oid, &["-1", "4294967296"]),
        (
            Kind::Float8,
            &[
                "", "inf", "nan", "infinity", "1e400", "1,5", "e", "--1", "0x1p3",
            ],
        ),
        (Kind::Float4, &["1e40", "NAN", "abc"]),
        (
            Kind::Numeric,
            &["", "-", ".", "1.2.3", "1e", "1e1001", "abc", " 1", "1_000"],
        ),
        (Kind::Bool, &["true", "false", "1", "0", "T", ""]),
        (
            Kind::Date,
            &[
                "01/02/2024",
                "02.01.2024",
                "Tue Jan 02 2024",
                "2024-02-30",
                "2023-02-29",
                "2024-13-01",
                "2024-00-10",
                "0000-01-01",
                "24-01-02",
                "2024-1-2",
                "2024-01-02 AD",
                "2024-01-02 00:00:00",
                "4714-11-23 BC",
                "5874898-01-01",
                "Infinity",
                "",
            ],
        ),
        (
            Kind::Time,
            &[
                "24:00:01",
                "25:00:00",
                "12:60:00",
                "12:00:60",
                "12:00",
                "12:00:00.1234567",
                "12:00:00.",
                "12:00:00+01",
            ],
        ),
        (
            Kind::Timestamp,
            &[
                "2024-01-02T03:04:05",
                "2024-01-02 03:04:05+01",
                "01/02/2024 03:04:05",
                "Tue Jan 02 03:04:05 2024",
                "2024-01-02 24:00:00",
                "2024-01-02",
                "294277-01-01 00:00:00",
                "4714-11-23 23:59:59 BC",
            ],
        ),
        (
            Kind::Timestamptz,
            &[
                "2024-01-02 03:04:05",
                "2024-01-02 03:04:05 CET",
                "2024-01-02 03:04:05+1",
                "2024-01-02 03:04:05+01:60",
                "2024-01-02 03:04:05+01:00:00:00",
                "01/02/2024 03:04:05 CET",
            ],
        ),
        (
            Kind::Uuid,
            &[
                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
                "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
                "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1g",
                "a0eebc99-9c0b4-ef8-bb6d-6bb9bd380a11",
                "",
            ],
        ),
    ];
    for (kind, texts) in cases {
        for t in *texts {
            let err = decode(*kind, false, t.as_bytes());
            assert!(err.is_err(), "{kind:?} accepted {t:?}: {err:?}");
        }
    }
}

#[test]
fn error_messages_say_what_and_why() {
    let e = decode(Kind::Date, false, b"01/02/2024").expect_err("non-ISO date");
    assert_eq!(
        e.to_string(),
        "cannot read date value \"01/02/2024\": not an ISO date (DateStyle must be ISO)"
    );
    let e = decode(Kind::Int4, true, &[0, 1]).expect_err("short int4");
    assert_eq!(
        e.to_string(),
        "cannot read binary integer value \\x0001: wrong length"
    );
    let long = vec![b'x'; 100];
    let e = decode(Kind::Uuid, false, &long).expect_err("long uuid");
    assert!(
        e.to_string().contains(&format!("\"{}…\"", "x".repeat(40))),
        "{e}"
    );
}

/// Every truncation of every golden binary value, and every prefix of its text form,
/// is either read or refused — never a panic; fixed-size binary types refuse all
/// truncations.
#[test]
fn truncated_input_is_refused_without_panicking() {
    for (kind, ty, rows) in GOLDEN {
        for (_, text, hex) in *rows {
            let bin = unhex(hex);
            for n in 0..bin.len() {
                let r = decode(*kind, true, &bin[..n]);
                if !matches!(kind, Kind::Text | Kind::Bpchar) {
                    assert!(
                        r.is_err(),
                        "{ty}: truncated binary {:?} accepted: {r:?}",
                        &bin[..n]
                    );
                }
                let mut longer = bin.clone();
                longer.push(0);
                if !matches!(kind, Kind::Text | Kind::Bpchar) {
                    assert!(
                        decode(*kind, true, &longer).is_err(),
                        "{ty}: overlong binary accepted"
                    );
                }
            }
            for n in 0..text.len() {
                let _ = decode(*kind, false, &text[..n]);
            }
        }
    }
}

#[test]
fn arbitrary_bytes_never_panic() {
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let kinds = [
        Kind::Int2,
        Kind::Int4,
        Kind::Int8,
        Kind::Oid,
        Kind::Float4,
        Kind::Float8,
        Kind::Numeric,
        Kind::Bool,
        Kind::Date,
        Kind::Time,
        Kind::Timestamp,
        Kind::Timestamptz,
        Kind::Uuid,
        Kind::Text,
        Kind::Bpchar,
    ];
    let alphabet = b"0123456789-+:. eEBCNaIfinty";
    for _ in 0..20_000 {
        let len = (next() % 40) as usize;
        let field: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        let raw: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        for kind in kinds {
            let _ = decode(kind, false, &field);
            let _ = decode(kind, true, &raw);
        }
    }
}

#[test]
fn bpchar_ignores_only_trailing_spaces() {
    let cmp = |a: &[u8], b: &[u8]| compare(Kind::Bpchar, &Value::Text(a), &Value::Text(b));
    assert_eq!(cmp(b"ab  ", b"ab"), Ordering::Equal);
    assert_eq!(cmp(b"  ", b""), Ordering::Equal);
    assert_eq!(cmp(b"a\t", b"a"), Ordering::Greater);
    assert_eq!(cmp(b" a", b"a"), Ordering::Less);
    // as text the trailing space counts
    assert_eq!(
        compare(Kind::Text, &Value::Text(b"ab "), &Value::Text(b"ab")),
        Ordering::Greater
    );
}

#[test]
fn mismatched_values_do_not_panic() {
    let a = Value::Int(1);
    let b = Value::Text(b"1");
    assert_eq!(compare(Kind::Int4, &a, &b), Ordering::Less);
    assert_eq!(compare(Kind::Int4, &b, &a), Ordering::Greater);
}

#[test]
fn nonzero_binary_bool_is_true() {
    assert_eq!(decode(Kind::Bool, true, &[2]), Ok(Value::Bool(true)));
    assert_eq!(decode(Kind::Bool, true, &[0]), Ok(Value::Bool(false)));
}

// Generated from PostgreSQL 15.18 (initdb --no-locale, so C collation): for each type,
// `SELECT dense_rank() OVER (ORDER BY x), <type>out(x), <type>send(x) ... ORDER BY x`.
/// `(dense rank in ORDER BY, output-function text, send-function bytes in hex)`.
type Row = (u32, &'static [u8], &'static str);

pub(super) const GOLDEN: &[(Kind, &str, &[Row])] = &[
    (
        Kind::Int2,
        "int2",
        &[
            (1, b"-32768", "8000"),
            (2, b"-1", "ffff"),
            (3, b"0", "0000"),
            (4, b"1", "0001"),
            (5, b"7", "0007"),
            (6, b"32767", "7fff"),
        ],
    ),
    (
        Kind::Int4,
        "int4",
        &[
            (1, b"-2147483648", "80000000"),
            (2, b"-1", "ffffffff"),
            (3, b"0", "00000000"),
            (4, b"42", "0000002a"),
            (5, b"2147483647", "7fffffff"),
        ],
    ),
    (
        Kind::Int8,
        "int8",
        &[
            (1, b"-9223372036854775808", "8000000000000000"),
            (2, b"-1", "ffffffffffffffff"),
            (3, b"0", "0000000000000000"),
            (4, b"4294967296", "0000000100000000"),
            (5, b"9223372036854775807", "7fffffffffffffff"),
        ],
    ),
    (
        Kind::Oid,
        "oid",
        &[
            (1, b"0", "00000000"),
            (2, b"1", "00000001"),
            (3, b"2147483647", "7fffffff"),
            (4, b"2147483648", "80000000"),
            (5, b"4294967295", "ffffffff"),
        ],
    ),
    (
        Kind::Float4,
        "float4",
        &[
            (1, b"-Infinity", "ff800000"),
            (2, b"-3.4028235e+38", "ff7fffff"),
            (3, b"-0.1", "bdcccccd"),
            (4, b"0", "00000000"),
            (4, b"-0", "80000000"),
            (5, b"1e-45", "00000001"),
            (6, b"1.1754944e-38", "00800000"),
            (7, b"1.5e-07", "34210fb0"),
            (8, b"0.1", "3dcccccd"),
            (9, b"1.0000001", "3f800001"),
            (10, b"3.1415927", "40490fdb"),
            (11, b"1.6777216e+07", "4b800000"),
            (12, b"1e+20", "60ad78ec"),
            (13, b"3.4028235e+38", "7f7fffff"),
            (14, b"Infinity", "7f800000"),
            (15, b"NaN", "7fc00000"),
        ],
    ),
    (
        Kind::Float8,
        "float8",
        &[
            (1, b"-Infinity", "fff0000000000000"),
            (2, b"-0.1", "bfb999999999999a"),
            (3, b"-1e-300", "81a56e1fc2f8f359"),
            (4, b"0", "0000000000000000"),
            (4, b"-0", "8000000000000000"),
            (5, b"5e-324", "0000000000000001"),
            (6, b"2.2250738585072014e-308", "0010000000000000"),
            (7, b"1.5e-07", "3e8421f5f40d8376"),
            (8, b"0.1", "3fb999999999999a"),
            (9, b"0.30000000000000004", "3fd3333333333334"),
            (10, b"123456789.123", "419d6f34547df3b6"),
            (11, b"1e+15", "430c6bf526340000"),
            (12, b"1e+16", "4341c37937e08000"),
            (13, b"1e+20", "4415af1d78b58c40"),
            (14, b"1.2345678901234568e+20", "441ac53a7e04bcda"),
            (15, b"1.7976931348623157e+308", "7fefffffffffffff"),
            (16, b"Infinity", "7ff0000000000000"),
            (17, b"NaN", "7ff8000000000000"),
        ],
    ),
    (
        Kind::Numeric,
        "numeric",
        &[
            (1, b"-Infinity", "00000000f0000020"),
            (
                2,
                b"-123456789012345678901234567890",
                "0008000740000000000c0d801ed204d2162e23340d801ed2",
            ),
            (3, b"-9999.9999", "0002000040000004270f270f"),
            (4, b"-12.340", "0002000040000003000c0d48"),
            (5, b"-0.5", "0001ffff400000011388"),
            (6, b"-0.00000000000000000001", "0001fffb400000140001"),
            (7, b"0", "0000000000000000"),
            (7, b"0.0", "0000000000000001"),
            (7, b"0.000", "0000000000000003"),
            (8, b"0.00000000000000000001", "0001fffb000000140001"),
            (9, b"0.00000001", "0001fffe000000080001"),
            (10, b"0.0001", "0001ffff000000040001"),
            (10, b"0.00010000", "0001ffff000000080001"),
            (11, b"0.5", "0001ffff000000011388"),
            (12, b"1", "00010000000000000001"),
            (12, b"1.0", "00010000000000010001"),
            (12, b"1.00", "00010000000000020001"),
            (13, b"12.34", "0002000000000002000c0d48"),
            (14, b"1500", "000100000000000005dc"),
            (15, b"9999.9999", "0002000000000004270f270f"),
            (16, b"10000", "00010001000000000001"),
            (17, b"99999999", "0002000100000000270f270f"),
            (
                18,
                b"100000000.00000001",
                "000500020000000800010000000000000001",
            ),
            (
                19,
                b"123456789012345678901234567890.123456789",
                "000b000700000009000c0d801ed204d2162e23340d801ed204d2162e2328",
            ),
            (20, b"Infinity", "00000000d0000020"),
            (21, b"NaN", "00000000c0000000"),
        ],
    ),
    (Kind::Bool, "bool", &[(1, b"f", "00"), (2, b"t", "01")]),
    (
        Kind::Date,
        "date",
        &[
            (1, b"-infinity", "80000000"),
            (2, b"4713-11-24 BC", "ffda9915"),
            (3, b"0005-02-29 BC", "fff4d511"),
            (4, b"0001-01-01 BC", "fff4da8b"),
            (5, b"0001-12-31 BC", "fff4dbf8"),
            (6, b"0001-01-01", "fff4dbf9"),
            (7, b"1900-02-28", "ffff718e"),
            (8, b"1970-01-01", "ffffd533"),
            (9, b"1999-12-31", "ffffffff"),
            (10, b"2000-01-01", "00000000"),
            (11, b"2000-03-01", "0000003c"),
            (12, b"2024-02-29", "00002279"),
            (13, b"10000-01-01", "002c95d4"),
            (14, b"99999-12-31", "02222b64"),
            (15, b"5874897-12-31", "7fda970c"),
            (16, b"infinity", "7fffffff"),
        ],
    ),
    (
        Kind::Time,
        "time",
        &[
            (1, b"00:00:00", "0000000000000000"),
            (2, b"00:00:00.000001", "0000000000000001"),
            (3, b"12:00:00", "0000000a0eebb000"),
            (4, b"12:34:56.789", "0000000a8be62608"),
            (5, b"23:59:59.999999", "000000141dd75fff"),
            (6, b"24:00:00", "000000141dd76000"),
        ],
    ),
    (
        Kind::Timestamp,
        "timestamp",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 00:00:00 BC", "fd0f9983eb0ae000"),
            (3, b"0001-12-31 23:59:59 BC", "ff1fe2ffc58d1dc0"),
            (4, b"0001-01-01 00:00:00", "ff1fe2ffc59c6000"),
            (5, b"1970-01-01 00:00:00.000001", "fffca2fec4c82001"),
            (6, b"1999-12-31 23:59:59.999999", "ffffffffffffffff"),
            (7, b"2000-01-01 00:00:00", "0000000000000000"),
            (8, b"2024-02-29 12:30:00.5", "0002b5832fc98320"),
            (9, b"10000-01-01 12:00:00", "0380e715a0273000"),
            (10, b"294276-12-31 23:59:59.999999", "7fffff5bb3b29fff"),
            (11, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        Kind::Uuid,
        "uuid",
        &[
            (
                1,
                b"00000000-0000-0000-0000-000000000000",
                "00000000000000000000000000000000",
            ),
            (
                2,
                b"00000000-0000-0000-0000-000000000001",
                "00000000000000000000000000000001",
            ),
            (
                3,
                b"7fffffff-0000-0000-0000-000000000000",
                "7fffffff000000000000000000000000",
            ),
            (
                4,
                b"80000000-0000-0000-0000-000000000000",
                "80000000000000000000000000000000",
            ),
            (
                5,
                b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
                "a0eebc999c0b4ef8bb6d6bb9bd380a11",
            ),
            (
                6,
                b"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a12",
                "a0eebc999c0b4ef8bb6d6bb9bd380a12",
            ),
            (
                7,
                b"ffffffff-ffff-ffff-ffff-ffffffffffff",
                "ffffffffffffffffffffffffffffffff",
            ),
        ],
    ),
    (
        Kind::Text,
        "text",
        &[
            (1, b"", ""),
            (2, b"B", "42"),
            (3, b"Z", "5a"),
            (4, b"a", "61"),
            (5, b"a\x01", "6101"),
            (6, b"a\x09b", "610962"),
            (7, b"a ", "6120"),
            (8, b"aa", "6161"),
            (9, b"ab", "6162"),
            (10, b"a\xc2\xa0", "61c2a0"),
            (11, b"z", "7a"),
            (12, b"\xc3\xa9", "c3a9"),
        ],
    ),
    (
        Kind::Text,
        "varchar",
        &[
            (1, b"", ""),
            (2, b"ABC", "414243"),
            (3, b"abc", "616263"),
            (4, b"abc ", "61626320"),
            (5, b"abd", "616264"),
        ],
    ),
    (
        Kind::Text,
        "name",
        &[
            (1, b"", ""),
            (2, b"ABC", "414243"),
            (3, b"abc", "616263"),
            (4, b"abc ", "61626320"),
            (5, b"abd", "616264"),
        ],
    ),
    (
        Kind::Bpchar,
        "bpchar",
        &[
            (1, b"", ""),
            (1, b"  ", "2020"),
            (2, b"A", "41"),
            (3, b"a", "61"),
            (3, b"a  ", "612020"),
            (4, b"a\x01", "6101"),
            (5, b"a\x09", "6109"),
            (6, b"a b", "612062"),
            (7, b"ab", "6162"),
            (8, b"b", "62"),
        ],
    ),
];

// With `TimeZone` set to each zone, then the same query for timestamptz: one value printed
// with different UTC offsets (LMT offsets with seconds for old dates).
pub(super) const GOLDEN_TIMESTAMPTZ: &[(&str, &[Row])] = &[
    (
        "UTC",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 12:00:00+00 BC", "fd0f998df9f69000"),
            (3, b"1000-06-15 08:00:00+00 BC", "feafd31234f74000"),
            (4, b"0001-01-01 00:00:00+00", "ff1fe2ffc59c6000"),
            (5, b"1800-01-01 00:00:00+00", "ffe993dcf8170000"),
            (6, b"1999-12-31 23:59:59.999999+00", "ffffffffffffffff"),
            (7, b"2000-01-01 00:00:00+00", "0000000000000000"),
            (7, b"2000-01-01 00:00:00+00", "0000000000000000"),
            (8, b"2024-06-01 09:59:59.999999+00", "0002bccfee8ea7ff"),
            (9, b"2024-06-01 10:00:00+00", "0002bccfee8ea800"),
            (10, b"10000-01-01 00:00:00+00", "0380e70b913b8000"),
            (11, b"294276-12-31 23:59:59+00", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        "Asia/Kolkata",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 17:53:28+05:53:28 BC", "fd0f998df9f69000"),
            (3, b"1000-06-15 13:53:28+05:53:28 BC", "feafd31234f74000"),
            (4, b"0001-01-01 05:53:28+05:53:28", "ff1fe2ffc59c6000"),
            (5, b"1800-01-01 05:53:28+05:53:28", "ffe993dcf8170000"),
            (6, b"2000-01-01 05:29:59.999999+05:30", "ffffffffffffffff"),
            (7, b"2000-01-01 05:30:00+05:30", "0000000000000000"),
            (7, b"2000-01-01 05:30:00+05:30", "0000000000000000"),
            (8, b"2024-06-01 15:29:59.999999+05:30", "0002bccfee8ea7ff"),
            (9, b"2024-06-01 15:30:00+05:30", "0002bccfee8ea800"),
            (10, b"10000-01-01 05:30:00+05:30", "0380e70b913b8000"),
            (11, b"294277-01-01 05:29:59+05:30", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        "America/St_Johns",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 08:29:08-03:30:52 BC", "fd0f998df9f69000"),
            (3, b"1000-06-15 04:29:08-03:30:52 BC", "feafd31234f74000"),
            (4, b"0001-12-31 20:29:08-03:30:52 BC", "ff1fe2ffc59c6000"),
            (5, b"1799-12-31 20:29:08-03:30:52", "ffe993dcf8170000"),
            (6, b"1999-12-31 20:29:59.999999-03:30", "ffffffffffffffff"),
            (7, b"1999-12-31 20:30:00-03:30", "0000000000000000"),
            (7, b"1999-12-31 20:30:00-03:30", "0000000000000000"),
            (8, b"2024-06-01 07:29:59.999999-02:30", "0002bccfee8ea7ff"),
            (9, b"2024-06-01 07:30:00-02:30", "0002bccfee8ea800"),
            (10, b"9999-12-31 20:30:00-03:30", "0380e70b913b8000"),
            (11, b"294276-12-31 20:29:59-03:30", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        "Europe/Amsterdam",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 12:19:32+00:19:32 BC", "fd0f998df9f69000"),
            (3, b"1000-06-15 08:19:32+00:19:32 BC", "feafd31234f74000"),
            (4, b"0001-01-01 00:19:32+00:19:32", "ff1fe2ffc59c6000"),
            (5, b"1800-01-01 00:19:32+00:19:32", "ffe993dcf8170000"),
            (6, b"2000-01-01 00:59:59.999999+01", "ffffffffffffffff"),
            (7, b"2000-01-01 01:00:00+01", "0000000000000000"),
            (7, b"2000-01-01 01:00:00+01", "0000000000000000"),
            (8, b"2024-06-01 11:59:59.999999+02", "0002bccfee8ea7ff"),
            (9, b"2024-06-01 12:00:00+02", "0002bccfee8ea800"),
            (10, b"10000-01-01 01:00:00+01", "0380e70b913b8000"),
            (11, b"294277-01-01 00:59:59+01", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        "Africa/Monrovia",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 11:16:52-00:43:08 BC", "fd0f998df9f69000"),
            (3, b"1000-06-15 07:16:52-00:43:08 BC", "feafd31234f74000"),
            (4, b"0001-12-31 23:16:52-00:43:08 BC", "ff1fe2ffc59c6000"),
            (5, b"1799-12-31 23:16:52-00:43:08", "ffe993dcf8170000"),
            (6, b"1999-12-31 23:59:59.999999+00", "ffffffffffffffff"),
            (7, b"2000-01-01 00:00:00+00", "0000000000000000"),
            (7, b"2000-01-01 00:00:00+00", "0000000000000000"),
            (8, b"2024-06-01 09:59:59.999999+00", "0002bccfee8ea7ff"),
            (9, b"2024-06-01 10:00:00+00", "0002bccfee8ea800"),
            (10, b"10000-01-01 00:00:00+00", "0380e70b913b8000"),
            (11, b"294276-12-31 23:59:59+00", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        "Pacific/Kiritimati",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 01:30:40-10:29:20 BC", "fd0f998df9f69000"),
            (3, b"1000-06-14 21:30:40-10:29:20 BC", "feafd31234f74000"),
            (4, b"0001-12-31 13:30:40-10:29:20 BC", "ff1fe2ffc59c6000"),
            (5, b"1799-12-31 13:30:40-10:29:20", "ffe993dcf8170000"),
            (6, b"2000-01-01 13:59:59.999999+14", "ffffffffffffffff"),
            (7, b"2000-01-01 14:00:00+14", "0000000000000000"),
            (7, b"2000-01-01 14:00:00+14", "0000000000000000"),
            (8, b"2024-06-01 23:59:59.999999+14", "0002bccfee8ea7ff"),
            (9, b"2024-06-02 00:00:00+14", "0002bccfee8ea800"),
            (10, b"10000-01-01 14:00:00+14", "0380e70b913b8000"),
            (11, b"294277-01-01 13:59:59+14", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
    (
        "America/Los_Angeles",
        &[
            (1, b"-infinity", "8000000000000000"),
            (2, b"4713-11-24 04:07:02-07:52:58 BC", "fd0f998df9f69000"),
            (3, b"1000-06-15 00:07:02-07:52:58 BC", "feafd31234f74000"),
            (4, b"0001-12-31 16:07:02-07:52:58 BC", "ff1fe2ffc59c6000"),
            (5, b"1799-12-31 16:07:02-07:52:58", "ffe993dcf8170000"),
            (6, b"1999-12-31 15:59:59.999999-08", "ffffffffffffffff"),
            (7, b"1999-12-31 16:00:00-08", "0000000000000000"),
            (7, b"1999-12-31 16:00:00-08", "0000000000000000"),
            (8, b"2024-06-01 02:59:59.999999-07", "0002bccfee8ea7ff"),
            (9, b"2024-06-01 03:00:00-07", "0002bccfee8ea800"),
            (10, b"9999-12-31 16:00:00-08", "0380e70b913b8000"),
            (11, b"294276-12-31 15:59:59-08", "7fffff5bb3a35dc0"),
            (12, b"infinity", "7fffffffffffffff"),
        ],
    ),
];
