//! Integration tests against real Postgres shards (started by the harness).

mod harness;

mod admin;
mod bench;
mod clients;
mod cluster;
mod copy;
mod corpus;
mod differential;
mod drivers;
mod hash_compat;
mod health;
mod ops;
mod proxy;
mod rebalance;
mod rebalance_online;
mod reference;
mod robustness;
mod scatter;
mod tls;
mod twophase;
