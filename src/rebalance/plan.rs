//! What a rebalance moves: the target slot map after adding or removing shards, and the
//! slots that change owner, grouped by source and destination. Pure: no I/O.
//!
//! The target is *minimal movement*, not "whatever the ring says now": a slot moves only
//! when it must — its owner is being removed, or the ring over the new members gives it
//! to a shard being added. Every other slot keeps its current owner, even if the current
//! map was edited by hand and differs from the ring. So adding one shard to n moves
//! about 1/(n+1) of the slots, all of them *to* the new shard, and nothing ever moves
//! between two shards that stay.

use std::collections::BTreeMap;

use crate::config::slot_runs;
use crate::sharding::ring::{RingMember, assign_slots};

/// One requested change to the set of shards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ShardChange {
    /// a new shard, with its ring weight
    Add {
        /// shard name (must not exist yet)
        name: String,
        /// ring weight (1 unless told)
        weight: u32,
    },
    /// an existing shard whose slots all move to the others
    Remove {
        /// shard name (must exist)
        name: String,
    },
}

/// The shards and slot owners a plan starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// shard names with their ring weights, in map order
    pub shards: Vec<(String, u32)>,
    /// owner of every slot: index into `shards`
    pub owner: Vec<usize>,
    /// ring points per unit of weight
    pub vnodes: u32,
}

/// Slots moving from one shard to another.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Move {
    /// shard losing the slots
    pub from: String,
    /// shard gaining them
    pub to: String,
    /// how many slots
    pub slots: u32,
    /// the slots as inclusive ranges, ascending
    pub ranges: Vec<(u32, u32)>,
}

/// A computed rebalance.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Plan {
    /// shard names after the change, in map order (kept shards first, then added ones)
    pub shards: Vec<String>,
    /// owner of every slot after the change: index into `shards`
    pub owner: Vec<usize>,
    /// the moves, by source then destination (map order)
    pub moves: Vec<Move>,
    /// slots that change owner
    pub moved_slots: u32,
    /// all slots
    pub total_slots: u32,
}

impl Plan {
    /// Share of all slots that move (0.0 … 1.0).
    pub fn moved_share(&self) -> f64 {
        if self.total_slots == 0 {
            0.0
        } else {
            f64::from(self.moved_slots) / f64::from(self.total_slots)
        }
    }
}

/// Why no plan can be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// nothing to do
    #[error("no change requested: give --add-shard NAME=URL or --remove-shard NAME")]
    NoChange,
    /// `--add-shard` of a name the map already has (or given twice)
    #[error("shard \"{0}\" already exists in the map")]
    Exists(String),
    /// `--remove-shard` of a name the map does not have (or given twice)
    #[error("shard \"{0}\" is not in the map")]
    Unknown(String),
    /// removing every shard
    #[error("cannot remove every shard: the data would have nowhere to go")]
    NoShardLeft,
    /// a weight of 0 gives a shard no ring points, so no slots
    #[error("shard \"{0}\" has weight 0: it would own no slot")]
    ZeroWeight(String),
    /// the layout's owner table is inconsistent with its shards
    #[error("slot {slot} is owned by shard number {owner}, but the map has {shards} shards")]
    BadOwner {
        /// slot
        slot: u32,
        /// owner index
        owner: usize,
        /// number of shards
        shards: usize,
    },
}

/// Compute the target map and the moves for `changes` applied to `layout`.
pub fn plan(layout: &Layout, changes: &[ShardChange]) -> Result<Plan, PlanError> {
    if changes.is_empty() {
        return Err(PlanError::NoChange);
    }
    let n = layout.shards.len();
    if let Some((slot, &owner)) = layout.owner.iter().enumerate().find(|(_, o)| **o >= n) {
        return Err(PlanError::BadOwner {
            slot: slot as u32,
            owner,
            shards: n,
        });
    }
    let mut removed = vec![false; n];
    let mut added: Vec<(String, u32)> = Vec::new();
    for change in changes {
        match change {
            ShardChange::Add { name, weight } => {
                if layout.shards.iter().any(|(s, _)| s == name)
                    || added.iter().any(|(s, _)| s == name)
                {
                    return Err(PlanError::Exists(name.clone()));
                }
                if *weight == 0 {
                    return Err(PlanError::ZeroWeight(name.clone()));
                }
                added.push((name.clone(), *weight));
            }
            ShardChange::Remove { name } => {
                match layout.shards.iter().position(|(s, _)| s == name) {
                    Some(i) if !removed[i] => removed[i] = true,
                    _ => return Err(PlanError::Unknown(name.clone())),
                }
            }
        }
    }
    // new member list: kept shards in map order, then the added ones
    let mut index_after: Vec<Option<usize>> = vec![None; n];
    let mut members: Vec<(String, u32)> = Vec::new();
    for (i, shard) in layout.shards.iter().enumerate() {
        if !removed[i] {
            index_after[i] = Some(members.len());
            members.push(shard.clone());
        }
    }
    let first_added = members.len();
    members.extend(added);
    if members.is_empty() {
        return Err(PlanError::NoShardLeft);
    }
    if let Some((name, _)) = members.iter().find(|(_, w)| *w == 0) {
        return Err(PlanError::ZeroWeight(name.clone()));
    }
    let ring_members: Vec<RingMember<'_>> = members
        .iter()
        .map(|(name, weight)| RingMember {
            name,
            weight: *weight,
        })
        .collect();
    let slots = layout.owner.len() as u32;
    let ring = assign_slots(&ring_members, slots, layout.vnodes);
    let owner: Vec<usize> = layout
        .owner
        .iter()
        .enumerate()
        .map(|(slot, &old)| {
            let ring_owner = ring.get(slot).copied().unwrap_or(0);
            match index_after[old] {
                // a kept owner keeps the slot unless the ring hands it to a new shard
                Some(kept) if ring_owner < first_added => kept,
                Some(_) => ring_owner,
                // a removed owner's slot goes where the ring puts it among the new set
                None => ring_owner,
            }
        })
        .collect();

    let mut grouped: BTreeMap<(usize, usize), Vec<bool>> = BTreeMap::new();
    for (slot, (&old, &new)) in layout.owner.iter().zip(&owner).enumerate() {
        if index_after[old] != Some(new) {
            grouped
                .entry((old, new))
                .or_insert_with(|| vec![false; slots as usize])[slot] = true;
        }
    }
    let moves: Vec<Move> = grouped
        .into_iter()
        .map(|((from, to), selected)| Move {
            from: layout.shards[from].0.clone(),
            to: members[to].0.clone(),
            slots: selected.iter().filter(|s| **s).count() as u32,
            ranges: slot_runs(selected.into_iter()),
        })
        .collect();
    let moved_slots = moves.iter().map(|m| m.slots).sum();
    Ok(Plan {
        shards: members.into_iter().map(|(name, _)| name).collect(),
        owner,
        moves,
        moved_slots,
        total_slots: slots,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A layout as `map init` makes it: the ring over `names`.
    fn ring_layout(names: &[&str], slots: u32) -> Layout {
        let members: Vec<RingMember<'_>> = names
            .iter()
            .map(|name| RingMember { name, weight: 1 })
            .collect();
        Layout {
            shards: names.iter().map(|n| (n.to_string(), 1)).collect(),
            owner: assign_slots(&members, slots, 256),
            vnodes: 256,
        }
    }

    fn add(name: &str) -> ShardChange {
        ShardChange::Add {
            name: name.to_owned(),
            weight: 1,
        }
    }

    fn remove(name: &str) -> ShardChange {
        ShardChange::Remove {
            name: name.to_owned(),
        }
    }

    #[test]
    fn adding_one_shard_moves_its_share_and_only_to_it() {
        for n in 1..=6usize {
            let names: Vec<String> = (0..n).map(|i| format!("s{i}")).collect();
            let refs: Vec<&str> = names.iter().map(String::as_str).collect();
            let layout = ring_layout(&refs, 1024);
            let plan = plan(&layout, &[add("new")]).unwrap();
            let share = plan.moved_share();
            let expected = 1.0 / (n as f64 + 1.0);
            assert!(
                (share - expected).abs() < expected * 0.35,
                "{n} shards: moved {share:.3}, expected about {expected:.3}"
            );
            assert!(plan.moves.iter().all(|m| m.to == "new"), "{:?}", plan.moves);
            // the result is exactly the ring over the new set, as `map init` would make it
            let mut all = refs.clone();
            all.push("new");
            assert_eq!(plan.owner, ring_layout(&all, 1024).owner);
            assert_eq!(plan.shards.last().map(String::as_str), Some("new"));
        }
    }

    #[test]
    fn removing_a_shard_moves_only_its_slots() {
        let layout = ring_layout(&["a", "b", "c", "d"], 1024);
        let plan = plan(&layout, &[remove("b")]).unwrap();
        assert_eq!(plan.shards, vec!["a", "c", "d"]);
        let owned_by_b = layout.owner.iter().filter(|&&o| o == 1).count() as u32;
        assert_eq!(plan.moved_slots, owned_by_b);
        assert!(plan.moves.iter().all(|m| m.from == "b"));
        assert!(
            plan.moves.len() >= 2,
            "spread over the others: {:?}",
            plan.moves
        );
        assert_eq!(plan.owner, ring_layout(&["a", "c", "d"], 1024).owner);
    }

    #[test]
    fn a_hand_edited_map_keeps_its_slots_where_nothing_forces_a_move() {
        let mut layout = ring_layout(&["a", "b"], 64);
        // everything on a, by hand
        layout.owner = vec![0; 64];
        let plan = plan(&layout, &[add("c")]).unwrap();
        assert!(plan.moves.iter().all(|m| m.from == "a" && m.to == "c"));
        assert!(!plan.owner.contains(&1), "nothing moves between a and b");
    }

    #[test]
    fn moves_are_grouped_with_ranges_that_cover_exactly_the_moved_slots() {
        let layout = ring_layout(&["a", "b"], 256);
        let plan = plan(&layout, &[add("c"), remove("a")]).unwrap();
        let mut covered = vec![false; 256];
        for m in &plan.moves {
            let mut count = 0;
            for &(lo, hi) in &m.ranges {
                for slot in lo..=hi {
                    assert!(!covered[slot as usize], "slot {slot} in two moves");
                    covered[slot as usize] = true;
                    count += 1;
                }
            }
            assert_eq!(count, m.slots);
        }
        for (slot, moved) in covered.iter().enumerate() {
            let before = &layout.shards[layout.owner[slot]].0;
            let after = &plan.shards[plan.owner[slot]];
            assert_eq!(*moved, before != after, "slot {slot}");
        }
        assert!(plan.owner.iter().all(|&o| plan.shards[o] != "a"));
    }

    #[test]
    fn bad_requests_are_refused() {
        let layout = ring_layout(&["a", "b"], 16);
        assert_eq!(plan(&layout, &[]), Err(PlanError::NoChange));
        assert_eq!(
            plan(&layout, &[add("a")]),
            Err(PlanError::Exists("a".into()))
        );
        assert_eq!(
            plan(&layout, &[add("c"), add("c")]),
            Err(PlanError::Exists("c".into()))
        );
        assert_eq!(
            plan(&layout, &[remove("x")]),
            Err(PlanError::Unknown("x".into()))
        );
        assert_eq!(
            plan(&layout, &[remove("a"), remove("a")]),
            Err(PlanError::Unknown("a".into()))
        );
        assert_eq!(
            plan(&layout, &[remove("a"), remove("b")]),
            Err(PlanError::NoShardLeft)
        );
        assert_eq!(
            plan(
                &layout,
                &[ShardChange::Add {
                    name: "z".into(),
                    weight: 0
                }]
            ),
            Err(PlanError::ZeroWeight("z".into()))
        );
        let broken = Layout {
            owner: vec![0, 5],
            ..layout
        };
        assert!(matches!(
            plan(&broken, &[add("c")]),
            Err(PlanError::BadOwner { slot: 1, .. })
        ));
    }
}
