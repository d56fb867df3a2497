//! Local Postgres clusters for `pgshard dev` and the integration tests: find the
//! binaries, initdb, start on a free port (as the `postgres` user when running as root),
//! stop cleanly.
//!
//! TODO(helper)
