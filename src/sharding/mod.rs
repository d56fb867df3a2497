//! Where a row lives: Postgres-compatible hashing of shard keys, slots, and the
//! consistent-hash ring that assigns slots to shards.
//!
//! Nothing here does I/O; everything is pure and unit-tested.

pub mod copy;
pub mod hash;
pub mod key;
pub mod ring;

pub use key::{KeyError, KeyType, KeyValue};

/// Index of a shard in the shard map's `shards` list.
pub type ShardId = usize;

/// The slot of a partition hash: the remainder Postgres' `PARTITION BY HASH` uses for
/// `MODULUS slots`.
#[inline]
pub fn slot_of(partition_hash: u64, slots: u32) -> u32 {
    (partition_hash % u64::from(slots)) as u32
}
