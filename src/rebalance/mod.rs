//! Moving slots between shards when shards are added or removed.
//!
//! [`plan`] decides what moves (pure), [`estimate`] counts what that means in rows,
//! [`verify`] proves every row is on the shard owning its slot. [`apply`] runs a plan
//! online: [`copy`] (change capture + snapshot copy into staging + catch-up),
//! [`cutover`] (hold, move in one two-phase transaction pair, flip the map), with
//! [`state`] making it resumable and [`mapfile`] editing the map file; [`proxies`]
//! drives the proxies' admin database and [`sql`] builds the statements run on shards.

pub mod apply;
pub mod copy;
pub mod cutover;
pub mod estimate;
pub mod mapfile;
pub mod plan;
pub mod progress;
pub mod proxies;
pub mod shard;
pub mod sql;
pub mod state;
pub mod verify;

pub use apply::{ApplyError, Options, Summary, apply, teardown};
pub use estimate::{Estimate, EstimateError, TableMove, estimate, slot_expr};
pub use plan::{Layout, Move, Plan, PlanError, ShardChange, plan};
pub use verify::{Misplaced, VerifyReport, verify};
