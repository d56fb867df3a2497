//! The consistent-hash ring that assigns slots to shards.
//!
//! TODO(helper): build a `consistent_hash::StaticHashRing` with a stable hasher over
//! explicit little-endian bytes.

use super::ShardId;

/// One shard as a ring member. Ring points are derived from the *name*, so a shard keeps
/// its points when others are added or removed.
#[derive(Debug, Clone, Copy)]
pub struct RingMember<'a> {
    /// shard name from the map
    pub name: &'a str,
    /// relative weight (ring points = vnodes × weight)
    pub weight: u32,
}

/// Owner of every slot `0..slots` (index into `members`), as the ring assigns them.
pub fn assign_slots(members: &[RingMember<'_>], slots: u32, vnodes: u32) -> Vec<ShardId> {
    let _ = (members, slots, vnodes);
    todo!("helper")
}
