//! Bit-exact ports of the Postgres hash functions used by hash partitioning.
//!
//! TODO(helper): hash_bytes_extended (lookup3), hash_uint32_extended, hashint8extended,
//! uuid and text hashing, hash_combine64 and the partition seed.

/// `HASH_PARTITION_SEED` from Postgres' `partbounds.c`.
pub const HASH_PARTITION_SEED: u64 = 0x7A5B_2236_7996_DCFD;
