//! Sans-I/O Postgres protocol layer: frame splitting with size limits, decoding of the
//! frontend messages the proxy must look into, and encoding of the few backend messages
//! the proxy originates itself. Nothing here touches a socket or tokio, so every function
//! is tested with plain byte buffers (including truncated and garbage input).

pub mod frame;
pub mod frontend;
pub mod reply;
pub mod sqlstate;

pub use frame::{Frame, FrameError, split_frame, split_startup};
pub use sqlstate::SqlState;
