//! Moving slots between shards when shards are added or removed.
//!
//! [`plan`] decides what moves (pure). Copying, cutover, verification and the resumable
//! state of a running rebalance build on it.

pub mod estimate;
pub mod plan;

pub use estimate::{Estimate, EstimateError, TableMove, estimate, slot_expr};
pub use plan::{Layout, Move, Plan, PlanError, ShardChange, plan};
