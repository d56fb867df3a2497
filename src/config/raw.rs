//! Raw serde types mirroring `shardmap.toml` (`deny_unknown_fields`, spans kept for
//! error messages).
//!
//! TODO(helper)
