//! Moving slots between shards when shards are added or removed.
//!
//! [`plan`] decides what moves (pure), [`estimate`] counts what that means in rows,
//! [`verify`] proves every row is on the shard owning its slot. Copying, cutover and the
//! resumable state of a running rebalance build on these.

pub mod estimate;
pub mod plan;
pub mod verify;

pub use estimate::{Estimate, EstimateError, TableMove, estimate, slot_expr};
pub use plan::{Layout, Move, Plan, PlanError, ShardChange, plan};
pub use verify::{Misplaced, VerifyReport, verify};
