//! Shard key types and values: parsing from SQL literals and from protocol parameters.

use std::str::FromStr;

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
    pub fn parse_text(self, text: &str) -> Result<KeyValue, KeyError> {
        let _ = text;
        todo!("helper")
    }

    /// Interpret a binary-format protocol parameter (big-endian integers of 2, 4 or 8
    /// bytes for integer keys, raw UTF-8 for text, 16 bytes for uuid).
    pub fn parse_binary(self, bytes: &[u8]) -> Result<KeyValue, KeyError> {
        let _ = bytes;
        todo!("helper")
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
        todo!("helper")
    }
}
