//! Unit tests of `key`.
use super::*;
use crate::sharding::slot_of;

const UUID: [u8; 16] = [
    0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11,
];

fn int(ty: KeyType, s: &str) -> Result<i64, KeyError> {
    match ty.parse_text(s)? {
        KeyValue::Int(v) => Ok(v),
        other => panic!("{s:?} parsed as {other:?}"),
    }
}

fn is_invalid(r: Result<impl std::fmt::Debug, KeyError>) -> bool {
    matches!(r, Err(KeyError::InvalidText { .. }))
}

fn is_out_of_range(r: Result<impl std::fmt::Debug, KeyError>) -> bool {
    matches!(r, Err(KeyError::OutOfRange { .. }))
}

#[test]
fn integers_accept_what_postgres_accepts() {
    for ty in [KeyType::SmallInt, KeyType::Integer, KeyType::BigInt] {
        assert_eq!(int(ty, "0"), Ok(0));
        assert_eq!(int(ty, "-0"), Ok(0));
        assert_eq!(int(ty, "+7"), Ok(7));
        assert_eq!(int(ty, " 42 "), Ok(42));
        assert_eq!(int(ty, "\t\n\x0b\x0c\r-12\t"), Ok(-12));
        assert_eq!(int(ty, "000123"), Ok(123));
    }
    assert_eq!(int(KeyType::SmallInt, "-32768"), Ok(-32768));
    assert_eq!(int(KeyType::SmallInt, "32767"), Ok(32767));
    assert_eq!(
        int(KeyType::Integer, "-2147483648"),
        Ok(i64::from(i32::MIN))
    );
    assert_eq!(int(KeyType::Integer, "2147483647"), Ok(i64::from(i32::MAX)));
    assert_eq!(int(KeyType::BigInt, "-9223372036854775808"), Ok(i64::MIN));
    assert_eq!(int(KeyType::BigInt, "9223372036854775807"), Ok(i64::MAX));
}

#[test]
fn integers_reject_garbage_as_postgres_15_does() {
    for ty in [KeyType::SmallInt, KeyType::Integer, KeyType::BigInt] {
        for bad in [
            "", " ", "-", "+", "--1", "+-1", "1 2", "1_000", "0x10", "1e3", "1.0", "١", "\u{a0}5",
            "5\u{85}", "abc", "5\0", "\x00",
        ] {
            assert!(is_invalid(ty.parse_text(bad)), "{ty:?} {bad:?}");
        }
    }
}

#[test]
fn integers_reject_out_of_range_per_type() {
    let cases = [
        (KeyType::SmallInt, "32768"),
        (KeyType::SmallInt, "-32769"),
        (KeyType::Integer, "2147483648"),
        (KeyType::Integer, "-2147483649"),
        (KeyType::BigInt, "9223372036854775808"),
        (KeyType::BigInt, "-9223372036854775809"),
        (KeyType::BigInt, "99999999999999999999999999"),
        // Postgres reports the overflow before it notices trailing garbage.
        (KeyType::SmallInt, "99999x"),
        (KeyType::BigInt, "99999999999999999999x"),
    ];
    for (ty, s) in cases {
        let err = ty.parse_text(s).expect_err(s);
        assert_eq!(
            err,
            KeyError::OutOfRange {
                ty: ty.sql_name(),
                value: s.to_owned()
            }
        );
    }
    // Overflow is only detected in digits; garbage before them is a syntax error.
    assert!(is_invalid(KeyType::SmallInt.parse_text("x99999")));
}

#[test]
fn text_keeps_the_string_verbatim() {
    for s in ["", " padded ", "héllo", "日本語", "🦀"] {
        assert_eq!(KeyType::Text.parse_text(s), Ok(KeyValue::Text(s.into())));
    }
    assert!(is_invalid(KeyType::Text.parse_text("nul\0inside")));
}

#[test]
fn uuid_accepts_postgres_spellings() {
    for s in [
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "{a0eebc99-9c0b4ef8-bb6d6bb9-bd380a11}",
    ] {
        assert_eq!(KeyType::Uuid.parse_text(s), Ok(KeyValue::Uuid(UUID)), "{s}");
    }
}

#[test]
fn uuid_rejects_what_postgres_rejects() {
    for s in [
        "",
        "{}",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a1",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a111",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11-",
        "-a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99--9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eeb-c99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        " a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11 ",
        "g0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380aé",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11\0",
    ] {
        assert!(is_invalid(KeyType::Uuid.parse_text(s)), "{s:?}");
    }
}

#[test]
fn binary_integers_of_any_width_are_range_checked() {
    assert_eq!(
        KeyType::BigInt.parse_binary(&(-2i16).to_be_bytes()),
        Ok(KeyValue::Int(-2))
    );
    assert_eq!(
        KeyType::SmallInt.parse_binary(&7i64.to_be_bytes()),
        Ok(KeyValue::Int(7))
    );
    assert_eq!(
        KeyType::BigInt.parse_binary(&i64::MIN.to_be_bytes()),
        Ok(KeyValue::Int(i64::MIN))
    );
    assert_eq!(
        KeyType::Integer.parse_binary(&i32::MIN.to_be_bytes()),
        Ok(KeyValue::Int(i32::MIN.into()))
    );
    assert_eq!(
        KeyType::SmallInt.parse_binary(&40_000i32.to_be_bytes()),
        Err(KeyError::OutOfRange {
            ty: "smallint",
            value: "40000".into()
        })
    );
    assert!(is_out_of_range(
        KeyType::Integer.parse_binary(&(1i64 << 31).to_be_bytes())
    ));
    for len in [0, 1, 3, 5, 7, 9, 16] {
        assert_eq!(
            KeyType::Integer.parse_binary(&vec![0; len]),
            Err(KeyError::InvalidBinary { ty: "integer", len })
        );
    }
}

#[test]
fn binary_text_and_uuid() {
    assert_eq!(
        KeyType::Text.parse_binary("日本".as_bytes()),
        Ok(KeyValue::Text("日本".into()))
    );
    assert_eq!(
        KeyType::Text.parse_binary(b""),
        Ok(KeyValue::Text(String::new()))
    );
    assert!(is_invalid(KeyType::Text.parse_binary(&[0xff, 0xfe])));
    assert!(is_invalid(KeyType::Text.parse_binary(b"a\0b")));
    assert_eq!(KeyType::Uuid.parse_binary(&UUID), Ok(KeyValue::Uuid(UUID)));
    assert_eq!(
        KeyType::Uuid.parse_binary(&UUID[..15]),
        Err(KeyError::InvalidBinary {
            ty: "uuid",
            len: 15
        })
    );
}

#[test]
fn errors_truncate_long_values() {
    let long = "é".repeat(1000);
    let Err(KeyError::InvalidText { value, .. }) = KeyType::Uuid.parse_text(&long) else {
        panic!("expected invalid text");
    };
    assert_eq!(value.chars().count(), MAX_SHOWN_CHARS + 3);
    assert!(value.ends_with("..."));
}

/// Slots observed on a real Postgres 15 with `satisfies_hash_partition(.., 1024, r, k)`.
#[test]
fn partition_hash_gives_postgres_slots() {
    let cases = [
        (KeyType::BigInt, "0", 432),
        (KeyType::BigInt, "1", 952),
        (KeyType::BigInt, "-1", 933),
        (KeyType::BigInt, "9223372036854775807", 630),
        (KeyType::BigInt, "-9223372036854775808", 383),
        (KeyType::SmallInt, "-32768", 125),
        (KeyType::SmallInt, "32767", 718),
        (KeyType::Text, "", 166),
        (KeyType::Text, "héllo", 931),
        (KeyType::Text, "日本語", 190),
        (KeyType::Uuid, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", 464),
    ];
    for (ty, s, slot) in cases {
        let key = ty.parse_text(s).expect(s);
        assert_eq!(slot_of(key.partition_hash(), 1024), slot, "{ty:?} {s:?}");
    }
    // The same integer value lands in the same slot whatever the column width.
    let h = KeyType::SmallInt
        .parse_text("0")
        .map(|k| k.partition_hash());
    assert_eq!(
        h,
        KeyType::BigInt.parse_text("0").map(|k| k.partition_hash())
    );
    assert_eq!(
        KeyValue::Int(0).partition_hash(),
        hash::hashint8extended(0, hash::HASH_PARTITION_SEED)
            .wrapping_add(hash::HASH_COMBINE64_CONST)
    );
}

/// splitmix64: a tiny deterministic generator for the randomized tests.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

const ALL: [KeyType; 5] = [
    KeyType::SmallInt,
    KeyType::Integer,
    KeyType::BigInt,
    KeyType::Text,
    KeyType::Uuid,
];

#[test]
fn arbitrary_input_never_panics() {
    let mut rng = SplitMix(0x5eed);
    let alphabet: Vec<char> = "0123456789abcdefABCDEF-+{} \t\n\x0b\r\0xé日🦀"
        .chars()
        .collect();
    for _ in 0..20_000 {
        let len = rng.below(48);
        let bytes: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        let text: String = (0..len)
            .map(|_| alphabet[rng.below(alphabet.len())])
            .collect();
        for ty in ALL {
            let _ = ty.parse_binary(&bytes);
            if let Ok(v) = ty.parse_text(&text) {
                let _ = v.partition_hash();
            }
            if let Ok(s) = std::str::from_utf8(&bytes) {
                let _ = ty.parse_text(s);
            }
        }
    }
}

#[test]
fn random_integers_round_trip_through_every_spelling() {
    let mut rng = SplitMix(42);
    let pad = [" ", "\t", "\n", "\x0b", "\x0c", "\r", ""];
    for _ in 0..20_000 {
        let v = rng.next() as i64 >> rng.below(64);
        let lead = pad[rng.below(pad.len())].repeat(rng.below(3));
        let trail = pad[rng.below(pad.len())].repeat(rng.below(3));
        let zeros = "0".repeat(rng.below(3));
        let body = if v < 0 {
            format!("-{zeros}{}", v.unsigned_abs())
        } else if rng.below(2) == 0 {
            format!("+{zeros}{v}")
        } else {
            format!("{zeros}{v}")
        };
        let s = format!("{lead}{body}{trail}");
        for ty in [KeyType::SmallInt, KeyType::Integer, KeyType::BigInt] {
            let (min, max) = ty.int_range();
            let want_ok = (min..=max).contains(&v);
            match ty.parse_text(&s) {
                Ok(KeyValue::Int(got)) => assert!(want_ok && got == v, "{ty:?} {s:?}"),
                Err(KeyError::OutOfRange { .. }) => assert!(!want_ok, "{ty:?} {s:?}"),
                other => panic!("{ty:?} {s:?}: {other:?}"),
            }
            let bin = ty.parse_binary(&v.to_be_bytes());
            assert_eq!(bin.is_ok(), want_ok, "{ty:?} {v}");
        }
    }
}

#[test]
fn random_uuids_round_trip_through_every_spelling() {
    let mut rng = SplitMix(7);
    for _ in 0..5_000 {
        let mut u = [0u8; 16];
        u[..8].copy_from_slice(&rng.next().to_le_bytes());
        u[8..].copy_from_slice(&rng.next().to_le_bytes());
        let mut s = String::new();
        for (i, b) in u.iter().enumerate() {
            if rng.below(2) == 0 {
                s.push_str(&format!("{b:02x}"));
            } else {
                s.push_str(&format!("{b:02X}"));
            }
            if i % 2 == 1 && i < 15 && rng.below(3) == 0 {
                s.push('-');
            }
        }
        if rng.below(2) == 0 {
            s = format!("{{{s}}}");
        }
        assert_eq!(KeyType::Uuid.parse_text(&s), Ok(KeyValue::Uuid(u)), "{s}");
    }
}
