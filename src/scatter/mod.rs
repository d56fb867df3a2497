//! Scatter-gather: one statement on several shards, their replies merged into the one
//! answer a single Postgres would give. The session sends the statement to every target
//! shard and collects each shard's reply messages; [`merge`] turns them into the client's
//! reply. Pure functions over protocol messages, tested without sockets.

pub mod combine;
pub mod merge;
pub mod numeric;
pub mod plan;
pub mod stream;
pub mod value;

pub use merge::{MergeError, concatenate, interleave, sum_counts};
