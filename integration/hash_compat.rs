//! Proves the hash port against a real server: for every key type, thousands of keys
//! (extremes, non-ASCII text, pseudo-random values) must land in exactly the slot
//! Postgres' own `PARTITION BY HASH` puts them in, checked with `satisfies_hash_partition`.

use pgshard::sharding::hash::{
    HASH_PARTITION_SEED, hashint2extended, hashint4extended, hashint8extended, hashtextextended,
    uuid_hash_extended,
};
use pgshard::sharding::{KeyType, KeyValue, slot_of};
use tokio_postgres::Client;
use tokio_postgres::types::ToSql;

use crate::harness::PgServer;

/// The slot count the proxy uses by default; the check works for any modulus.
const SLOTS: u32 = 1024;
/// Keys checked per type against the server.
const KEYS_PER_TYPE: usize = 10_000;

/// splitmix64: a fixed-seed generator so a failure reproduces exactly.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A value with a random magnitude, so small and large numbers are both common.
    fn int(&mut self) -> i64 {
        (self.next() as i64) >> self.below(64)
    }
}

/// Integer keys: the extremes of every integer width, then pseudo-random values, all
/// clamped into `min..=max` of the key type being tested.
fn int_keys(min: i64, max: i64, seed: u64) -> Vec<i64> {
    let mut keys: Vec<i64> = [
        0,
        1,
        -1,
        2,
        -2,
        i64::from(i16::MIN),
        i64::from(i16::MAX),
        i64::from(i32::MIN),
        i64::from(i32::MAX),
        i64::MIN,
        i64::MAX,
        1 << 32,
        -(1 << 32),
        (1 << 32) - 1,
    ]
    .into_iter()
    .filter(|v| (min..=max).contains(v))
    .chain([min, max, min + 1, max - 1])
    .collect();
    let mut rng = SplitMix(seed);
    while keys.len() < KEYS_PER_TYPE {
        let v = rng.int();
        if (min..=max).contains(&v) {
            keys.push(v);
        } else {
            // Fold out-of-range values into range so every width gets random coverage.
            let span = (max as i128 - min as i128 + 1) as u128;
            keys.push((min as i128 + (v as i128 - min as i128).rem_euclid(span as i128)) as i64);
        }
    }
    keys
}

/// Text keys: empty, every lookup3 tail length, non-ASCII, then random strings mixing
/// ASCII and multi-byte characters (never NUL, which Postgres text cannot hold).
fn text_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "",
        "héllo",
        "日本語",
        "🦀 rust",
        "Ünïcödé ✓ 🎉",
        "  spaced  ",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    keys.extend((0..=40).map(|n| "abcdefghijklmnopqrstuvwxyz0123456789ABCDE"[..n].to_owned()));
    let mut rng = SplitMix(0x7e57);
    let pools: [&[char]; 4] = [
        &[
            'a', 'z', '0', '9', ' ', '-', '_', '\'', '"', '\\', '\t', '\n',
        ],
        &['é', 'ß', 'Ω', 'ж', 'ñ'],
        &['日', '本', '語', '€', '✓'],
        &['🦀', '🎉', '😀', '\u{10FFFF}'],
    ];
    while keys.len() < KEYS_PER_TYPE {
        let len = rng.below(48);
        let s: String = (0..len)
            .map(|_| {
                if rng.below(4) == 0 {
                    // any scalar value except NUL
                    char::from_u32(1 + rng.below(0x10FFFF) as u32).unwrap_or('?')
                } else {
                    let pool = pools[rng.below(4) as usize];
                    pool[rng.below(pool.len() as u64) as usize]
                }
            })
            .collect();
        keys.push(s);
    }
    keys
}

/// Uuid keys in the many spellings `uuid_in` accepts (case, braces, hyphens after any
/// group of four digits).
fn uuid_keys() -> Vec<String> {
    let mut keys: Vec<String> = [
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
        "{a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11}",
        "a0eebc999c0b4ef8bb6d6bb9bd380a11",
        "a0ee-bc99-9c0b-4ef8-bb6d-6bb9-bd38-0a11",
        "80000000-0000-0000-0000-000000000000",
        "00000000-0000-0000-0000-000000000001",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    let mut rng = SplitMix(0x0404);
    while keys.len() < KEYS_PER_TYPE {
        let mut s = String::new();
        let upper = rng.below(4) == 0;
        for i in 0..16 {
            let b = rng.next() as u8;
            s.push_str(&if upper {
                format!("{b:02X}")
            } else {
                format!("{b:02x}")
            });
            let canonical_dash = matches!(i, 3 | 5 | 7 | 9);
            if i % 2 == 1 && i < 15 && (canonical_dash || rng.below(8) == 0) {
                s.push('-');
            }
        }
        if rng.below(8) == 0 {
            s = format!("{{{s}}}");
        }
        keys.push(s);
    }
    keys
}

/// Our slot for a key given in its text form.
fn our_slot(ty: KeyType, text: &str) -> i32 {
    let key = ty
        .parse_text(text)
        .unwrap_or_else(|e| panic!("{ty:?} rejected {text:?}: {e}"));
    slot_of(key.partition_hash(), SLOTS) as i32
}

/// Creates the hash-partitioned parent `hc_<name>` and asks the server, in one query,
/// which keys are NOT in the slot we computed. Returns (rows checked, failing keys as text).
async fn check_slots(
    client: &Client,
    table: &str,
    sql_type: &str,
    keys: &(dyn ToSql + Sync),
    array_type: &str,
    key_expr: &str,
    slots: &[i32],
) -> (i64, Vec<String>) {
    client
        .batch_execute(&format!(
            "DROP TABLE IF EXISTS {table}; \
             CREATE TABLE {table} (k {sql_type}) PARTITION BY HASH (k)"
        ))
        .await
        .expect("create partitioned parent");
    let sql = format!(
        "SELECT count(*), \
                coalesce(array_agg(k::text) FILTER \
                    (WHERE NOT satisfies_hash_partition('{table}'::regclass, {SLOTS}, s, k)), \
                    '{{}}') \
         FROM (SELECT {key_expr} AS k, s FROM unnest($1::{array_type}, $2::int[]) AS t(raw, s)) AS q"
    );
    let row = client
        .query_one(&sql, &[keys, &slots])
        .await
        .expect("slot check query");
    (row.get(0), row.get(1))
}

fn assert_all_match(type_name: &str, sent: usize, (checked, wrong): (i64, Vec<String>)) {
    assert_eq!(
        checked, sent as i64,
        "{type_name}: server checked a different number of rows"
    );
    assert!(
        wrong.is_empty(),
        "{type_name}: {} of {sent} keys are in a different partition on the server, e.g. {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
}

async fn check_int_type(ty: KeyType, sql_type: &str, min: i64, max: i64, seed: u64) {
    let server = PgServer::start().await;
    let client = server.client("postgres").await;
    let keys = int_keys(min, max, seed);
    assert!(keys.len() >= KEYS_PER_TYPE);
    let slots: Vec<i32> = keys.iter().map(|k| our_slot(ty, &k.to_string())).collect();
    let table = format!("hc_{sql_type}");
    let result = match ty {
        KeyType::SmallInt => {
            let ks: Vec<i16> = keys.iter().map(|&k| k as i16).collect();
            check_slots(&client, &table, sql_type, &ks, "smallint[]", "raw", &slots).await
        }
        KeyType::Integer => {
            let ks: Vec<i32> = keys.iter().map(|&k| k as i32).collect();
            check_slots(&client, &table, sql_type, &ks, "integer[]", "raw", &slots).await
        }
        _ => check_slots(&client, &table, sql_type, &keys, "bigint[]", "raw", &slots).await,
    };
    assert_all_match(sql_type, keys.len(), result);
}

#[tokio::test]
async fn smallint_slots_match_postgres() {
    check_int_type(
        KeyType::SmallInt,
        "smallint",
        i16::MIN.into(),
        i16::MAX.into(),
        2,
    )
    .await;
}

#[tokio::test]
async fn integer_slots_match_postgres() {
    check_int_type(
        KeyType::Integer,
        "integer",
        i32::MIN.into(),
        i32::MAX.into(),
        4,
    )
    .await;
}

#[tokio::test]
async fn bigint_slots_match_postgres() {
    check_int_type(KeyType::BigInt, "bigint", i64::MIN, i64::MAX, 8).await;
}

#[tokio::test]
async fn text_slots_match_postgres() {
    let server = PgServer::start().await;
    let client = server.client("postgres").await;
    let keys = text_keys();
    let slots: Vec<i32> = keys.iter().map(|k| our_slot(KeyType::Text, k)).collect();
    let result = check_slots(&client, "hc_text", "text", &keys, "text[]", "raw", &slots).await;
    assert_all_match("text", keys.len(), result);
}

#[tokio::test]
async fn uuid_slots_match_postgres() {
    let server = PgServer::start().await;
    let client = server.client("postgres").await;
    let keys = uuid_keys();
    let slots: Vec<i32> = keys.iter().map(|k| our_slot(KeyType::Uuid, k)).collect();
    // Sent as text and converted by the server's own uuid_in, which also checks that our
    // parser reads every spelling the way Postgres does.
    let result = check_slots(
        &client,
        "hc_uuid",
        "uuid",
        &keys,
        "text[]",
        "raw::uuid",
        &slots,
    )
    .await;
    assert_all_match("uuid", keys.len(), result);
}

/// The raw per-type hash functions, with the partition seed and others (0 takes the
/// unseeded path), compared value by value on a sample of each key set.
#[tokio::test]
async fn hash_functions_match_postgres_directly() {
    let server = PgServer::start().await;
    let client = server.client("postgres").await;
    let seeds = [HASH_PARTITION_SEED, 0, 0x0123_4567_89ab_cdef, u64::MAX];
    let ints: Vec<i64> = int_keys(i64::MIN, i64::MAX, 99)
        .into_iter()
        .take(1000)
        .collect();
    let texts: Vec<String> = text_keys().into_iter().take(1000).collect();
    let uuids: Vec<String> = uuid_keys().into_iter().take(1000).collect();

    for seed in seeds {
        let pg_seed = &(seed as i64);
        // int4/int2 hashes are compared on the values that fit those types.
        let rows = client
            .query(
                "SELECT hashint8extended(k, $2), \
                        CASE WHEN k BETWEEN -2147483648 AND 2147483647 \
                             THEN hashint4extended(k::int4, $2) END, \
                        CASE WHEN k BETWEEN -32768 AND 32767 \
                             THEN hashint2extended(k::int2, $2) END \
                 FROM unnest($1::bigint[]) WITH ORDINALITY AS t(k, i) ORDER BY i",
                &[&ints, pg_seed],
            )
            .await
            .expect("integer hash query");
        assert_eq!(rows.len(), ints.len());
        for (row, &k) in rows.iter().zip(&ints) {
            let h8: i64 = row.get(0);
            assert_eq!(h8 as u64, hashint8extended(k, seed), "int8 {k} seed {seed}");
            if let Some(h4) = row.get::<_, Option<i64>>(1) {
                assert_eq!(h4 as u64, hashint4extended(k as i32, seed), "int4 {k}");
            }
            if let Some(h2) = row.get::<_, Option<i64>>(2) {
                assert_eq!(h2 as u64, hashint2extended(k as i16, seed), "int2 {k}");
            }
        }

        let rows = client
            .query(
                "SELECT hashtextextended(k, $2) \
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(k, i) ORDER BY i",
                &[&texts, pg_seed],
            )
            .await
            .expect("text hash query");
        assert_eq!(rows.len(), texts.len());
        for (row, k) in rows.iter().zip(&texts) {
            let h: i64 = row.get(0);
            assert_eq!(
                h as u64,
                hashtextextended(k, seed),
                "text {k:?} seed {seed}"
            );
        }

        let rows = client
            .query(
                "SELECT uuid_hash_extended(k::uuid, $2) \
                 FROM unnest($1::text[]) WITH ORDINALITY AS t(k, i) ORDER BY i",
                &[&uuids, pg_seed],
            )
            .await
            .expect("uuid hash query");
        assert_eq!(rows.len(), uuids.len());
        for (row, k) in rows.iter().zip(&uuids) {
            let h: i64 = row.get(0);
            let Ok(KeyValue::Uuid(bytes)) = KeyType::Uuid.parse_text(k) else {
                panic!("uuid {k:?} did not parse");
            };
            assert_eq!(
                h as u64,
                uuid_hash_extended(&bytes, seed),
                "uuid {k} seed {seed}"
            );
        }
    }
}
