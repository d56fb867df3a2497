#!/usr/bin/env bash
# Everything CI checks: formatting, clippy, then unit and integration tests. The
# integration tests start their own Postgres servers (initdb/pg_ctl) on free ports, so
# the only requirement is an installed PostgreSQL, which this script installs if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/ensure-postgres.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

step "cargo test --all-targets (unit + integration)"
cargo test --all-targets

step "all checks passed"
