//! Server side: one raw connection to a shard ([`conn`]) and the per-shard pools
//! ([`pool`]). Connections speak the Postgres protocol as raw frames so result bytes can
//! be relayed to clients untouched.

pub mod conn;
pub mod health;
pub mod pool;

pub use conn::{BackendConn, SimpleAnswer};
pub use health::{BreakerState, ShardHealth};
pub use pool::{PoolStatus, PooledConn, Pools};

/// Why a backend connection could not be made or used.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// TCP connect, read or write failed
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// connect + login took longer than the connect timeout
    #[error("timed out connecting after {0:?}")]
    ConnectTimeout(std::time::Duration),
    /// TLS to the server could not be set up (refused, or the handshake failed: e.g. a
    /// certificate that does not chain to `backend_ca` or does not name the host)
    #[error("{0}")]
    Tls(String),
    /// the server refused the login or spoke out of turn during startup
    #[error("login failed: {0}")]
    Login(String),
    /// the server asked for an authentication method pgshard does not implement
    #[error("unsupported authentication request {0} from server")]
    UnsupportedAuth(i32),
    /// the server sent something that is not valid protocol
    #[error("protocol error from server: {0}")]
    Protocol(String),
    /// the server closed the connection
    #[error("server closed the connection")]
    Closed,
    /// no connection became free within the pool timeout
    #[error("timed out after {0:?} waiting for a free connection")]
    PoolTimeout(std::time::Duration),
    /// a health check (connect, login, `SELECT 1`) did not finish in time
    #[error("health check timed out after {0:?}")]
    CheckTimeout(std::time::Duration),
    /// the shard's circuit breaker is open (or half-open): the checkout fails at once
    /// instead of waiting for a shard that is known to be down
    #[error(
        "circuit breaker open after {failures} consecutive failed checks; last error: {last_error}"
    )]
    BreakerOpen {
        /// shard name
        shard: String,
        /// failed checks and connects in a row
        failures: u32,
        /// the most recent failure
        last_error: String,
    },
}
