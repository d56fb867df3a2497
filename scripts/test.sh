#!/usr/bin/env bash
# Everything CI checks: formatting, clippy, then unit and integration tests. The
# integration tests start their own Postgres servers (initdb/pg_ctl) on free ports, so
# the only requirements are an installed PostgreSQL, and python3 (venv) and node (npm) for
# the driver tests; this script installs them if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/ensure-postgres.sh
source scripts/ensure-drivers.sh

step() { printf '\n==> %s\n' "$*"; }

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy --all-targets -- -D warnings"
cargo clippy --all-targets -- -D warnings

# --all-targets, split so that the driver matrix runs as its own step (criterion's bench
# binaries do not take --skip)
step "cargo test --tests (unit + integration, without the driver matrix)"
cargo test --tests -- --skip drivers::

step "deployment files (compose, Kubernetes, Dockerfile, Grafana dashboard): static checks"
bash scripts/lint-deploy.sh "${CARGO_TARGET_DIR:-target}/debug/pgshard"

step "cargo test --benches (each benchmark once, as a test)"
cargo test --benches

step "cargo test --test integration drivers (psycopg 3, node-postgres)"
cargo test --test integration drivers

step "all checks passed"
