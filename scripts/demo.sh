#!/usr/bin/env bash
# Local playground: build pgshard and run `pgshard dev` (N Postgres shards + the proxy +
# a demo table). Arguments go to `pgshard dev`, e.g. `scripts/demo.sh --shards 3`.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/ensure-postgres.sh

echo "==> cargo build --release"
cargo build --release
exec "${CARGO_TARGET_DIR:-target}/release/pgshard" dev "$@"
