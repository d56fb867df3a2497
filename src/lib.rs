//! pgshard: a sharding proxy for PostgreSQL.
//!
//! Clients connect with an ordinary Postgres connection string. pgshard parses each
//! statement, finds the shard key, and relays the Postgres protocol messages to the shard
//! that owns the key's slot. Slots are Postgres hash-partition remainders, so every row
//! lives exactly where `PARTITION BY HASH (key) ... MODULUS slots` would put it.
//!
//! # Layout
//! Dependencies point one way, from the top of this list to the bottom:
//! - [`cli`]: one file per subcommand (`serve`, `check`, `map`, `locate`, `route`, `dev`, `bench`).
//! - [`server`]: the listener, connection limit and shutdown drain.
//! - [`admin`]: the admin console (database `pgshard`): command parsing and result
//!   tables (SHOW SHARDS/POOLS/CLIENTS/STATS/CONFIG, slot holds, RELOAD, PAUSE…).
//! - [`session`]: one client connection: startup/auth, simple and extended protocol,
//!   transaction state.
//! - [`bench`]: the load generator behind `pgshard bench`.
//! - [`backend`]: one raw server connection, the per-shard pool and its health checks
//!   and circuit breaker.
//! - [`router`]: pure routing of an analysed statement to a target shard set.
//! - [`sql`]: the only user of sqlparser: SQL text → [`sql::Statement`] summary, plan cache.
//! - [`config`]: the shard map file → validated [`config::Config`] / [`config::ShardMap`].
//! - [`sharding`]: Postgres-compatible hashing, key values, the consistent-hash ring,
//!   splitting COPY data into rows by key.
//! - [`protocol`]: sans-I/O frame splitting and message helpers, SQLSTATE codes.
//! - [`devcluster`]: start and stop local Postgres clusters (used by `pgshard dev` and tests).
//! - [`metrics`]: what the proxy counts (per shard and route kind), the connected
//!   clients, the Prometheus text and the `/metrics` + `/health` HTTP endpoint.
#![warn(missing_docs)]

pub mod admin;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod config;
pub mod devcluster;
pub mod metrics;
pub mod protocol;
pub mod rebalance;
pub mod router;
pub mod scatter;
pub mod server;
pub mod session;
pub mod sharding;
pub mod sql;
pub mod tls;
pub mod twophase;

pub use server::serve;
