//! Integration tests against real Postgres shards (started by the harness).

mod harness;

mod clients;
mod cluster;
mod hash_compat;
mod proxy;
mod robustness;
mod scatter;
mod corpus;
mod differential;
