//! Integration tests against real Postgres shards (started by the harness).

mod harness;

mod cluster;
