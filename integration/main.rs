//! Integration tests against real Postgres shards (started by the harness).
